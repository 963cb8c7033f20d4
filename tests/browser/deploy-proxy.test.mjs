// Behind nginx with the site config shipped in deploy/, the stream is not
// buffered: pages stay on SSE, pollers work, and counts and chat are right.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { startNginxWith } from './daemons.mjs';
import {
  ROOT, SLOW, TEST_TIMEOUT, allShow, closePages, eventually, messageTexts, openConnected, sendMessage,
  socketState, statsEqual, useBrowser, withServer,
} from './helpers.mjs';

/** nginx with deploy/nginx-ssio.conf, pointed at this test's ports. */
function startNginx(upstream) {
  return startNginxWith(async (port) => {
    const site = (await readFile(join(ROOT, 'deploy', 'nginx-ssio.conf'), 'utf8'))
      .replace('server 127.0.0.1:3000;', `server 127.0.0.1:${upstream};`)
      .replace('listen 80;', `listen 127.0.0.1:${port};`);
    assert.match(site, new RegExp(`server 127.0.0.1:${upstream};`));
    assert.match(site, new RegExp(`listen 127.0.0.1:${port};`));
    return `${site}\n`;
  }, { connections: 256 });
}

const browser = useBrowser();

test('behind the deploy nginx config pages stream over SSE, pollers work, and chat crosses both',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const proxy = await startNginx(server.port);
  try {
    // /metrics stays inside.
    assert.equal((await fetch(proxy.url + '/metrics')).status, 404);
    assert.equal((await fetch(proxy.url + '/readyz')).status, 200);

    const t0 = Date.now();
    // A buffering proxy would have sent the page to polling after
    // connectTimeout (3 s); this one must not.
    const sse = await openConnected(browser, proxy.url + '/');
    console.log(`SSE through the proxy connected ${Date.now() - t0} ms after opening the page`);
    const poller = await openConnected(browser, proxy.url + '/', { polling: true });
    await allShow([sse.page, poller.page], 2);
    await statsEqual(server, { count: 2, polling: 1, sessions: 2, sse: 1 });
    assert.equal((await socketState(sse.page)).transport, 'sse');

    await sendMessage(poller.page, 'through the deploy proxy');
    for (const { page } of [sse, poller]) {
      await eventually(() => messageTexts(page),
        (texts) => JSON.stringify(texts) === '["through the deploy proxy"]', SLOW, 'the message on both pages');
    }
    await closePages(server, [sse, poller]);
    assert.deepEqual([...sse.errors, ...poller.errors], []);
  } finally {
    await proxy.stop();
  }
}));
