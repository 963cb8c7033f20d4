// The browser client stays small enough to inline anywhere.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';

import { transform } from 'esbuild';

import { ROOT, TEST_TIMEOUT } from './helpers.mjs';

// 3 KB held the core client (transports, fallback, reconnection). The
// acknowledgements, auth tickets, resume cursors, shared tab streams and
// restart hints took it to about 3.5 KB; 4 KB keeps the budget tight, still
// a fraction of socket.io's own client.
const LIMIT = 4096;

test('public/ssio.js is under 4 KB minified and gzipped', { timeout: TEST_TIMEOUT }, async () => {
  const source = await readFile(join(ROOT, 'public', 'ssio.js'), 'utf8');
  const { code } = await transform(source, { minify: true, target: 'es2017' });
  const size = gzipSync(code, { level: 9 }).length;
  console.log(`ssio.js: ${source.length} bytes source, ${code.length} minified, `
    + `${size} minified+gzipped (limit ${LIMIT})`);
  assert.ok(size < LIMIT, `${size} bytes minified+gzipped, limit ${LIMIT}`);
});
