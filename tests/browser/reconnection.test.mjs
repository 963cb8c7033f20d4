// Getting a session back: after a server restart on the same port, and
// after the server has forgotten a polling session.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, allShow, closePages, connected, eventually, openPage, shownCount, socketState,
  startServer, stats, useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

/** Counts the page's connect and disconnect events from now on. */
function recordLifecycle(page) {
  return page.evaluate(() => {
    // The first connect already happened.
    window.lifecycle = { connects: 1, reasons: [] };
    window.connectErrors = 0;
    socket.on('connect', () => { window.lifecycle.connects++; });
    socket.on('disconnect', (reason) => { window.lifecycle.reasons.push(reason); });
    // How many depends on how long the restart takes; not part of the lifecycle.
    socket.on('connect_error', () => { window.connectErrors++; });
  });
}

function lifecycle(page) {
  return page.evaluate(() => window.lifecycle);
}

test('pages reconnect to a restarted server, fire connect again and show the right count',
  { timeout: TEST_TIMEOUT }, async () => {
  let server = await startServer();
  const port = server.port;
  const pages = [];
  try {
    const sse = await openPage(browser, server.url + '/');
    pages.push(sse);
    await connected(sse.page, 'sse');
    const poll = await openPage(browser, server.url + '/', { polling: true });
    pages.push(poll);
    await connected(poll.page, 'polling');
    await allShow([sse.page, poll.page], 2);
    const before = [await socketState(sse.page), await socketState(poll.page)];
    for (const p of pages) await recordLifecycle(p.page);

    assert.equal(await server.stop(), 0, 'ssio exit status after SIGTERM');
    for (const p of pages) {
      await eventually(() => lifecycle(p.page), (l) => l.reasons.length === 1, SLOW,
        'the disconnect event');
      assert.deepEqual(await lifecycle(p.page), { connects: 1, reasons: ['server shutdown'] });
    }

    server = await startServer({ port });
    assert.equal(server.port, port);
    // Backoff with jitter: up to 0.5-1.5 s, 1-3 s, 2-5 s between attempts.
    await connected(sse.page, 'sse', 20_000);
    await connected(poll.page, 'polling', 20_000);
    await allShow([sse.page, poll.page], 2);
    assert.deepEqual(await stats(server), { count: 2, polling: 1, sessions: 2, sse: 1 });

    for (const [i, p] of pages.entries()) {
      assert.deepEqual(await lifecycle(p.page), { connects: 2, reasons: ['server shutdown'] });
      const now = await socketState(p.page);
      assert.notEqual(now.id, before[i].id, 'a new session after the restart');
    }
    for (const p of pages) assert.deepEqual(p.errors, []);
  } finally {
    for (const p of pages) await p.context.close();
    assert.equal(await server.stop(), 0, 'ssio exit status after SIGTERM');
  }
});

test('a poll answered "unknown session" leads to one fresh handshake, not an error loop',
  { timeout: TEST_TIMEOUT }, async () => {
  // The server forgets a polling session that has not polled for
  // pingTimeout; pingInterval + pingTimeout is how long the client lets a
  // poll take, so a poll held past pingTimeout still reaches the server.
  await withServer({ pingInterval: 1500, pingTimeout: 1000 }, async (server) => {
    // The plain polling protocol: `/poll?sid=` is what is held below.
    const handle = await openPage(browser, 'about:blank', { polling: true, alone: true });
    const { page } = handle;
    const handshakes = [];
    const polls = [];
    page.on('request', (req) => {
      const url = new URL(req.url());
      if (url.pathname !== '/poll') return;
      const sid = url.searchParams.get('sid');
      if (sid) polls.push(sid);
      else handshakes.push(Date.now());
    });
    // Hold the first poll in the browser until the test is recording the
    // page's events and the server has expired the session, then let it
    // through: the answer is "unknown session".
    let held = false;
    let recording = false;
    let answer;
    await page.route('**/poll?sid=*', async (route) => {
      if (held) return route.continue();
      held = true;
      try {
        await eventually(async () => recording && (await stats(server)).polling, (n) => n === 0, SLOW,
          'the session to expire');
        const res = await route.fetch();
        answer = [res.status(), await res.text()];
        await route.fulfill({ response: res });
      } catch (e) {
        answer = e.message;
        await route.abort().catch(() => {});
      }
    });

    await page.goto(server.url + '/', { timeout: SLOW });
    await connected(page, 'polling');
    await recordLifecycle(page);
    recording = true;
    const first = (await socketState(page)).id;

    await eventually(() => lifecycle(page), (l) => l.connects === 2, SLOW, 'a second connect');
    const second = (await socketState(page)).id;
    assert.equal(held, true, 'the first poll was held');
    assert.deepEqual(answer, [400, '{"error":"unknown session"}']);
    assert.notEqual(second, first);
    // The new session keeps polling: three polls go out on it.
    const start = polls.length;
    await eventually(async () => polls.slice(start).filter((sid) => sid === second).length, (n) => n >= 3,
      SLOW, 'three polls on the new session');
    assert.equal(handshakes.length, 2, 'one handshake per session');
    assert.deepEqual(await lifecycle(page), { connects: 2, reasons: ['transport close'] });
    assert.equal(await page.evaluate(() => window.connectErrors), 0);
    assert.deepEqual(await stats(server), { count: 1, polling: 1, sessions: 1, sse: 0 });
    assert.equal(await shownCount(page), 1);
    assert.deepEqual(handle.errors, []);
    await closePages(server, [handle]);
  });
});
