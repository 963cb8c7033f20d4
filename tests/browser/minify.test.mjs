// The committed public/ssio.min.js is exactly what minify.mjs makes from
// public/ssio.js today, so the page never runs an older client than the
// source it ships next to.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';

import { TEST_TIMEOUT } from './helpers.mjs';
import { MINIFIED, SOURCE, minify } from './minify.mjs';

test('public/ssio.min.js is public/ssio.js minified, byte for byte', { timeout: TEST_TIMEOUT }, async () => {
  const made = await minify(await readFile(SOURCE, 'utf8'));
  const committed = await readFile(MINIFIED, 'utf8');
  // Not assert.equal: a diff of two 9 KB lines says less than this.
  assert.ok(made === committed, 'public/ssio.min.js is out of date with public/ssio.js: '
    + 'run `npm ci` in tests/browser, then `node tests/browser/minify.mjs`, and commit the result');
});
