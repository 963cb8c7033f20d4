// The browser client stays small enough to inline anywhere: the page's
// minified copy, gzipped as the server sends it, fits in 5,000 bytes.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { get } from 'node:http';
import { test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';

import { SLOW, TEST_TIMEOUT, withServer, withTimeout } from './helpers.mjs';
import { MINIFIED, SOURCE } from './minify.mjs';

// 3 KB held the core client (transports, fallback, reconnection). The
// acknowledgements, auth tickets, resume cursors, shared tab streams,
// restart hints and JWT refresh took it to 4 KB; catch-all listeners and
// the server's acknowledgements past that. 5,000 bytes keeps the budget
// tight: socket.io's minified client is 14,626 bytes gzipped the same way.
const LIMIT = 5000;

/** GET `path` with `headers`, as the bytes on the wire (never decoded). */
function rawGet(url, headers) {
  return withTimeout(new Promise((resolve, reject) => {
    get(url, { headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    }).on('error', reject);
  }), SLOW, `no response from ${url}`);
}

test('public/ssio.min.js is at most 5,000 bytes gzipped', { timeout: TEST_TIMEOUT }, async () => {
  const source = await readFile(SOURCE);
  const minified = await readFile(MINIFIED);
  const size = gzipSync(minified, { level: 9 }).length;
  console.log(`ssio.js: ${source.length} bytes source, ${minified.length} minified (ssio.min.js), `
    + `${size} minified+gzipped (limit ${LIMIT})`);
  assert.ok(size <= LIMIT, `${size} bytes minified+gzipped, limit ${LIMIT}`);
});

test('the server sends the page its client in at most 5,000 bytes', { timeout: TEST_TIMEOUT },
  () => withServer({}, async (server) => {
  const minified = await readFile(MINIFIED);
  const url = server.url + '/public/ssio.min.js';
  const gzipped = await rawGet(url, { 'accept-encoding': 'gzip, deflate, br, zstd' });
  assert.equal(gzipped.status, 200);
  assert.equal(gzipped.headers['content-encoding'], 'gzip');
  assert.equal(gzipped.headers.vary, 'Accept-Encoding');
  assert.equal(Number(gzipped.headers['content-length']), gzipped.body.length);
  assert.ok(gunzipSync(gzipped.body).equals(minified), 'the gzipped body is public/ssio.min.js');
  const plain = await rawGet(url, {});
  assert.equal(plain.headers['content-encoding'], undefined);
  assert.ok(plain.body.equals(minified), 'the plain body is public/ssio.min.js');
  console.log(`/public/ssio.min.js on the wire: ${gzipped.body.length} bytes gzipped, ${plain.body.length} plain`);
  assert.ok(gzipped.body.length <= LIMIT, `${gzipped.body.length} bytes on the wire, limit ${LIMIT}`);
}));
