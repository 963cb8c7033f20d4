// Three ssio nodes on one redis-server behind a round-robin nginx with no
// affinity: Chromium pages over SSE and forced long-polling all show the
// same exact count and chat with each other, whichever node each request
// lands on.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startNginx, startRedis } from './daemons.mjs';
import {
  SLOW, TEST_TIMEOUT, allShow, eventually, messageTexts, openConnected, socketState, startServer,
  useBrowser,
} from './helpers.mjs';

const browser = useBrowser();

test('pages behind round-robin nginx on three nodes show one exact count and chat across nodes',
  { timeout: TEST_TIMEOUT }, async () => {
  const redis = await startRedis();
  const nodes = [];
  let proxy;
  const pages = [];
  try {
    for (const id of ['a', 'b', 'c']) {
      nodes.push(await startServer({ extra: ['--redis', redis.url, '--node-id', id] }));
    }
    proxy = await startNginx(nodes.map((n) => n.port), { connections: 1024, master: false });
    for (const polling of [false, true, false, true]) {
      pages.push(await openConnected(browser, proxy.url + '/', { polling }));
    }
    await allShow(pages.map((h) => h.page), 4);

    // A message from a polling page reaches every page, once.
    await pages[1].page.evaluate(() => socket.emit('chat message', 'across nodes'));
    for (const h of pages) {
      await eventually(() => messageTexts(h.page), (t) => t.includes('across nodes'), SLOW, 'the message');
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const h of pages) {
      assert.deepEqual(await messageTexts(h.page), ['across nodes']);
    }

    // Requests landed on more than one node.
    const seen = new Set();
    for (let i = 0; i < 6; i++) {
      const res = await fetch(proxy.url + '/stats');
      seen.add(res.headers.get('x-ssio-node'));
    }
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);

    // A polling page closes: its beacon may land on any node.
    const closing = pages.splice(1, 1)[0];
    const closingId = (await socketState(closing.page)).id;
    assert.ok(closingId);
    await closing.page.close();
    await allShow(pages.map((h) => h.page), 3);
    await closing.context.close();
    for (const h of pages) assert.deepEqual(h.errors, []);
  } finally {
    for (const h of pages) await h.context.close().catch(() => {});
    await proxy?.stop();
    for (const n of nodes) await n.stop().catch(() => {});
    await redis.stop();
  }
});
