// The check an outside page runs against the demo: from another origin it
// loads jQuery and chai, fetches the server's handlers and the page script,
// and matches them against the socket.io patterns it expects. Everything it
// needs is served locally, by a second small server on another port.

import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';

import { SLOW, TEST_TIMEOUT, openPage, useBrowser, withServer, withTimeout } from './helpers.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ASSETS = {
  '/jquery.min.js': join(HERE, 'node_modules', 'jquery', 'dist', 'jquery.min.js'),
  '/chai.js': join(HERE, 'node_modules', 'chai', 'chai.js'),
};
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8">
<script src="/jquery.min.js"></script>
<script src="/chai.js"></script>
</head><body>checker</body></html>`;

const browser = useBrowser();
let checker;
let checkerUrl;

before(async () => {
  checker = createServer(async (req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (ASSETS[req.url]) {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(await readFile(ASSETS[req.url]));
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  checker.listen(0, '127.0.0.1');
  await once(checker, 'listening');
  checkerUrl = `http://127.0.0.1:${checker.address().port}`;
});

after(() => {
  checker?.close();
});

test('a page on another origin fetches the sources with jQuery and fetch, and the patterns match',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const { page, context, errors } = await openPage(browser, checkerUrl + '/');
  assert.notEqual(new URL(checkerUrl).origin, new URL(server.url).origin);
  const libraries = await page.evaluate(() => [typeof $.fn.jquery, typeof chai.assert.match]);
  assert.deepEqual(libraries, ['string', 'function']);
  assert.match(await page.evaluate(() => $.fn.jquery), /^3\.7\./);

  const results = await withTimeout(page.evaluate(async (url) => {
    const { assert } = chai;
    const outcome = async (name, check) => {
      try {
        await check();
        return [name, 'passed'];
      } catch (e) {
        return [name, 'failed: ' + (e && e.message)];
      }
    };
    const get = (path) => new Promise((resolve, reject) => {
      $.get(url + path).then((data) => resolve(data), (xhr, status, err) => reject(new Error(`${status} ${err}`)));
    });
    return [
      await outcome('jQuery: disconnect handler in server.js', async () => {
        const data = await get('/_api/server.js');
        assert.match(data, /socket.on.*('|")disconnect('|")/gi, 'server.js registers a disconnect handler');
      }),
      await outcome('jQuery: user count listener in client.js', async () => {
        const data = await get('/public/client.js');
        assert.match(data, /socket.on.*('|")user count('|")/gi, 'client.js listens for "user count"');
      }),
      await outcome('fetch: disconnect handler in server.js', async () => {
        const res = await fetch(url + '/_api/server.js', { credentials: 'omit' });
        const data = await res.text();
        assert.match(data, /socket.on.*('|")disconnect('|")/gis, 'server.js registers a disconnect handler');
      }),
      await outcome('fetch: user count listener in client.js', async () => {
        const res = await fetch(url + '/public/client.js', { credentials: 'omit' });
        const data = await res.text();
        assert.match(data, /socket.on.*('|")user count('|")/gis, 'client.js listens for "user count"');
      }),
    ];
  }, server.url), SLOW, 'the checks in the page did not finish');

  assert.deepEqual(results, [
    ['jQuery: disconnect handler in server.js', 'passed'],
    ['jQuery: user count listener in client.js', 'passed'],
    ['fetch: disconnect handler in server.js', 'passed'],
    ['fetch: user count listener in client.js', 'passed'],
  ]);

  // jQuery must have handed the script back as text, not run it here: a
  // second socket on this page would have connected to this page's origin.
  assert.equal(await page.evaluate(() => typeof window.socket), 'undefined');
  await context.close();
  assert.deepEqual(errors, []);
}));
