// Behind nginx with the site config shipped in deploy/, the stream is not
// buffered: pages stay on SSE, pollers work, and counts and chat are right.

import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  ROOT, SLOW, TEST_TIMEOUT, allShow, closePages, connected, eventually, freePort, launchBrowser,
  launchNginx, nginxPrelude, openPage, socketState, statsEqual, withServer,
} from './helpers.mjs';

/** nginx with deploy/nginx-ssio.conf, pointed at this test's ports. */
async function startNginx(upstream) {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-deploy-nginx-'));
  const port = await freePort();
  const site = (await readFile(join(ROOT, 'deploy', 'nginx-ssio.conf'), 'utf8'))
    .replace('server 127.0.0.1:3000;', `server 127.0.0.1:${upstream};`)
    .replace('listen 80;', `listen 127.0.0.1:${port};`);
  assert.match(site, new RegExp(`server 127.0.0.1:${upstream};`));
  assert.match(site, new RegExp(`listen 127.0.0.1:${port};`));
  return launchNginx(dir, port, `${nginxPrelude(dir, { connections: 256 })}${site}
}
`);
}

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

test('behind the deploy nginx config pages stream over SSE, pollers work, and chat crosses both',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const proxy = await startNginx(server.port);
  try {
    // /metrics stays inside.
    assert.equal((await fetch(proxy.url + '/metrics')).status, 404);
    assert.equal((await fetch(proxy.url + '/readyz')).status, 200);

    const t0 = Date.now();
    const sse = await openPage(browser, proxy.url + '/');
    // A buffering proxy would have sent the page to polling after
    // connectTimeout (3 s); this one must not.
    await connected(sse.page, 'sse');
    console.log(`SSE through the proxy connected ${Date.now() - t0} ms after opening the page`);
    const poller = await openPage(browser, proxy.url + '/', { polling: true });
    await connected(poller.page, 'polling');
    await allShow([sse.page, poller.page], 2);
    await statsEqual(server, { count: 2, polling: 1, sessions: 2, sse: 1 });
    assert.equal((await socketState(sse.page)).transport, 'sse');

    await poller.page.fill('#m', 'through the deploy proxy');
    await poller.page.click('#chat-form button');
    for (const { page } of [sse, poller]) {
      await eventually(() => page.$$eval('#messages .text', (els) => els.map((e) => e.textContent)),
        (texts) => JSON.stringify(texts) === '["through the deploy proxy"]', SLOW, 'the message on both pages');
    }
    await closePages(server, [sse, poller]);
    assert.deepEqual([...sse.errors, ...poller.errors], []);
  } finally {
    await proxy.stop();
  }
}));
