// The live user count as pages come and go, over both transports.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  TEST_TIMEOUT, allShow, closePages, connected, openConnected, overCounts, sampleCounts, shownCount,
  socketState, statsEqual, useBrowser, withServer,
} from './helpers.mjs';

// The bound the count must settle within after a page leaves.
const SETTLE_MS = 1000;

const browser = useBrowser();

/** Waits for a count that must appear within `SETTLE_MS` of `t0`. */
function settledBy(t0, pages, n) {
  return allShow(pages, n, Math.max(0, SETTLE_MS - (Date.now() - t0)));
}

test('a second page makes both show 2; closing it brings the first back to 1 within 1 s',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const a = await openConnected(browser, server.url + '/');
  await allShow([a.page], 1);

  const b = await openConnected(browser, server.url + '/');
  await allShow([a.page, b.page], 2);
  await statsEqual(server, { count: 2, polling: 0, sessions: 2, sse: 2 });

  const t0 = Date.now();
  await b.page.close();
  await settledBy(t0, [a.page], 1);
  console.log(`count back to 1 ${Date.now() - t0} ms after the second page closed`);
  await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });

  await b.context.close();
  await closePages(server, [a]);
  assert.deepEqual([...a.errors, ...b.errors], []);
}));

// A long pingTimeout: only the page's own close message can explain a
// prompt drop.
test('forced polling pages count alongside SSE pages; closing one lowers the count at once',
  { timeout: TEST_TIMEOUT }, () => withServer({ pingTimeout: 20_000 }, async (server) => {
  const sse = await openConnected(browser, server.url + '/');
  const p1 = await openConnected(browser, server.url + '/', { polling: true });
  const p2 = await openConnected(browser, server.url + '/', { polling: true });

  await allShow([sse.page, p1.page, p2.page], 3);
  await statsEqual(server, { count: 3, polling: 2, sessions: 3, sse: 1 });
  assert.equal(await p1.page.evaluate(() => typeof window.EventSource), 'undefined');

  const t0 = Date.now();
  await p1.page.close();
  await settledBy(t0, [sse.page, p2.page], 2);
  console.log(`count back to 2 ${Date.now() - t0} ms after a polling page closed`);
  await statsEqual(server, { count: 2, polling: 1, sessions: 2, sse: 1 });

  const t1 = Date.now();
  await sse.page.close();
  await settledBy(t1, [p2.page], 1);
  await statsEqual(server, { count: 1, polling: 1, sessions: 1, sse: 0 });

  await sse.context.close();
  await p1.context.close();
  await closePages(server, [p2]);
  assert.deepEqual([...sse.errors, ...p1.errors, ...p2.errors], []);
}));

for (const polling of [false, true]) {
  const transport = polling ? 'polling' : 'sse';
  test(`reloading a ${transport} page five times never leaves the count high for more than 1 s`,
    { timeout: TEST_TIMEOUT }, () => withServer({ pingTimeout: 20_000 }, async (server) => {
    const watcher = await openConnected(browser, server.url + '/');
    const reloader = await openConnected(browser, server.url + '/', { polling });
    await allShow([watcher.page, reloader.page], 2);

    // What the watching page shows, with page-clock times.
    await watcher.page.evaluate(() => {
      window.countTimeline = [];
      socket.on('user count', (n) => window.countTimeline.push([performance.now(), n]));
    });
    // And what the server counts, sampled from here.
    const sampler = sampleCounts(server);
    const serverTimeline = sampler.timeline;

    const sids = new Set([(await socketState(reloader.page)).id]);
    try {
      for (let i = 0; i < 5; i++) {
        await reloader.page.reload();
        await connected(reloader.page, transport);
        sids.add((await socketState(reloader.page)).id);
        await allShow([watcher.page, reloader.page], 2);
      }
    } finally {
      await sampler.stop();
    }

    assert.equal(sids.size, 6, 'every load is a new session');
    const end = await watcher.page.evaluate(() => performance.now());
    const shown = await watcher.page.evaluate(() => window.countTimeline);
    assert.deepEqual(overCounts(shown, 2, end).filter((s) => s.ms > SETTLE_MS), [],
      `the watching page showed more than 2 users for over 1 s: ${JSON.stringify(shown)}`);
    assert.deepEqual(overCounts(serverTimeline, 2, Date.now()).filter((s) => s.ms > SETTLE_MS), [],
      'the server counted more than 2 users for over 1 s');
    assert.equal(shown.at(-1)[1], 2);
    assert.equal(await shownCount(watcher.page), 2);
    await statsEqual(server, { count: 2, polling: polling ? 1 : 0, sessions: 2, sse: polling ? 1 : 2 });
    console.log(`${transport} reloads: watcher saw ${JSON.stringify(shown.map(([, n]) => n))}`);

    await closePages(server, [reloader, watcher]);
    assert.deepEqual([...watcher.errors, ...reloader.errors], []);
  }));
}
