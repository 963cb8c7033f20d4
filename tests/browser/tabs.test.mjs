// Many tabs of one browser: over HTTP/1.1 they share one stream (a browser
// keeps six connections per host), over HTTP/2 they need not. Every tab
// stays its own socket, counted once, exact within 1 s as tabs come and go.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { withNginx } from './daemons.mjs';
import {
  SLOW, TEST_TIMEOUT, allShow, eventually, messageTexts, newContext, overCounts, sampleCounts,
  sendMessage, shownCount, socketState, stats, statsEqual, useBrowser, withServer,
} from './helpers.mjs';

const TABS = 20;
// The bound the count must settle within after a tab leaves.
const SETTLE_MS = 1000;

const browser = useBrowser();

/**
 * Opens `n` tabs of the demo in one browser context (one connection pool,
 * as a user's browser), recording which tab opened a shared stream.
 */
async function openTabs(context, url, n) {
  const tabs = [];
  for (let i = 0; i < n; i++) {
    const page = await context.newPage();
    const tab = { page, errors: [], carried: 0 };
    page.on('pageerror', (e) => tab.errors.push(e));
    page.on('request', (req) => {
      const u = new URL(req.url());
      if (u.searchParams.get('mux') === '1') tab.carried++;
    });
    await page.goto(url + '/', { timeout: SLOW });
    tabs.push(tab);
  }
  return tabs;
}

/** /stats as one of the pages sees it (no certificate trouble over TLS):
 * its live counts, as `stats` in helpers.mjs gives them. */
async function pageStats(page) {
  const { away, ...live } = await page.evaluate(() => fetch('/stats').then((r) => r.json()));
  if (!Number.isInteger(away)) throw new Error(`/stats without "away": ${JSON.stringify(live)}`);
  return live;
}

async function everyTabShows(tabs, n, ms) {
  await allShow(tabs.map((t) => t.page), n, ms);
}

async function distinctSessions(tabs) {
  const states = await Promise.all(tabs.map((t) => socketState(t.page)));
  assert.ok(states.every((s) => s.connected), JSON.stringify(states));
  assert.equal(new Set(states.map((s) => s.id)).size, tabs.length, 'every tab has a session of its own');
  return states;
}

test(`${TABS} tabs over HTTP/1.1 share one stream: all exact, the origin stays usable, the carrier can leave`,
  { timeout: 3 * TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const context = await newContext(browser);
  const tabs = await openTabs(context, server.url, TABS);
  const t0 = Date.now();
  await everyTabShows(tabs, TABS, 5000);
  console.log(`all ${TABS} tabs exact ${Date.now() - t0} ms after the last one loaded`);
  await distinctSessions(tabs);
  assert.deepEqual(await pageStats(tabs[0].page), { count: TABS, polling: 0, sessions: TABS, sse: TABS });
  const carriers = tabs.filter((t) => t.carried > 0);
  assert.equal(carriers.length, 1, 'one tab carries the stream');
  assert.equal(carriers[0], tabs[0], 'the first tab carries it');

  // The origin is not starved: a 21st tab loads a static file at once.
  const extra = await context.newPage();
  const s0 = Date.now();
  const res = await extra.goto(server.url + '/public/style.css', { timeout: 1000 });
  const took = Date.now() - s0;
  assert.equal(res.status(), 200);
  assert.ok(took <= 1000, `style.css took ${took} ms`);
  console.log(`a ${TABS + 1}st tab loaded style.css in ${took} ms`);
  await extra.close();

  // The carrier leaves; another tab takes the stream over.
  let open = tabs.slice(1);
  const t1 = Date.now();
  await tabs[0].page.close();
  await everyTabShows(open, TABS - 1, SETTLE_MS);
  console.log(`after the carrier closed, every tab exact in ${Date.now() - t1} ms`);
  await eventually(() => pageStats(open[0].page), (s) => s.count === TABS - 1, SETTLE_MS,
    'the server to count the tabs left');

  // Five more leave, one after another.
  for (const tab of open.slice(0, 5)) {
    const t2 = Date.now();
    await tab.page.close();
    open = open.filter((t) => t !== tab);
    await everyTabShows(open, open.length, SETTLE_MS);
    console.log(`a tab closed: every tab exact in ${Date.now() - t2} ms`);
  }
  assert.equal(open.length, TABS - 6);
  await distinctSessions(open);
  assert.deepEqual(await pageStats(open[0].page),
    { count: TABS - 6, polling: 0, sessions: TABS - 6, sse: TABS - 6 });
  // Every feed is still live: a message from one tab reaches every other.
  await sendMessage(open[3].page, 'still here');
  for (const { page } of open) {
    await eventually(() => messageTexts(page),
      (texts) => texts.includes('still here'), SLOW, 'the message on every tab');
  }
  assert.deepEqual(tabs.flatMap((t) => t.errors), []);
  await context.close();
  await eventually(() => stats(server), (s) => s.count === 0, SLOW, 'every session to end with the browser');
}));

test(`${TABS} tabs over HTTPS speak HTTP/2 and are all live and exact`,
  { timeout: 3 * TEST_TIMEOUT }, () => withServer({ args: ['--tls-self-signed'] }, async (server) => {
  assert.match(server.url, /^https:/);
  // The certificate is made at start by the server; the browser is told to
  // accept it for this context only.
  const context = await newContext(browser, { ignoreHTTPSErrors: true });
  const tabs = await openTabs(context, server.url, TABS);
  const t0 = Date.now();
  await everyTabShows(tabs, TABS, 5000);
  console.log(`all ${TABS} tabs over h2 exact ${Date.now() - t0} ms after the last one loaded`);
  for (const { page } of tabs) {
    const proto = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
    assert.equal(proto, 'h2');
  }
  await distinctSessions(tabs);
  assert.deepEqual(await pageStats(tabs[0].page), { count: TABS, polling: 0, sessions: TABS, sse: TABS });
  const t1 = Date.now();
  await tabs[0].page.close();
  await everyTabShows(tabs.slice(1), TABS - 1, SETTLE_MS);
  console.log(`h2: a tab closed, every tab exact in ${Date.now() - t1} ms`);
  assert.deepEqual(tabs.flatMap((t) => t.errors), []);
  await context.close();
}));

// A new page binds the lock manager lazily, so its own "I am alive" lock
// may reach it after the carrier, having attached the page's session,
// asks for the same lock to learn when the page goes. The carrier must not
// take that free lock for a page that went.
test('a tab whose own lock request arrives late keeps its session', { timeout: TEST_TIMEOUT }, () =>
  withServer({}, async (server) => {
    const context = await newContext(browser);
    try {
      const carrier = await context.newPage();
      await carrier.goto(server.url + '/');
      await allShow([carrier], 1);
      const late = await context.newPage();
      await late.addInitScript(() => {
        const request = navigator.locks.request.bind(navigator.locks);
        navigator.locks.request = (name, ...rest) => (name.startsWith('ssio tab ')
          ? new Promise((r) => setTimeout(r, 1000)).then(() => request(name, ...rest))
          : request(name, ...rest));
      });
      await late.goto(server.url + '/');
      await allShow([carrier, late], 2);
      const first = await socketState(late);
      assert.ok(first.connected, JSON.stringify(first));
      // Well past the late lock and the carrier's 3 s wait for it.
      await late.waitForTimeout(4000);
      assert.deepEqual(await socketState(late), first, 'the late tab kept its one session');
      assert.equal(await shownCount(late), 2);
      assert.equal(await shownCount(carrier), 2);
      await statsEqual(server, { count: 2, polling: 0, sessions: 2, sse: 2 });
      // Its lock now held, the tab leaving is still seen without a beacon:
      // the carrier gets the lock and closes the session.
      await late.evaluate(() => window.addEventListener('pagehide', (e) => e.stopImmediatePropagation(), true));
      await late.close();
      await allShow([carrier], 1, 2000);
      await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });
    } finally {
      await context.close();
    }
  }));

for (const buffering of [false, true]) {
  const transport = buffering ? 'polling' : 'sse';
  test(`${TABS} tabs through nginx ${buffering ? 'with' : 'without'} proxy buffering are all live and exact, on ${transport}`,
    { timeout: 3 * TEST_TIMEOUT }, () => withServer({}, async (server) => {
    await withNginx(server.port, { buffering }, async (proxy) => {
      const context = await newContext(browser);
      try {
        const tabs = await openTabs(context, proxy.url, TABS);
        const t0 = Date.now();
        // Through buffering the carrier first waits out connectTimeout (3 s).
        await everyTabShows(tabs, TABS, buffering ? SLOW : 5000);
        console.log(`nginx ${buffering ? 'buffering' : 'streaming'}: all ${TABS} tabs exact ${Date.now() - t0} ms `
          + 'after the last one loaded');
        const states = await distinctSessions(tabs);
        assert.ok(states.every((st) => st.transport === transport), JSON.stringify(states));
        await statsEqual(server, {
          count: TABS, polling: buffering ? TABS : 0, sessions: TABS, sse: buffering ? 0 : TABS,
        });
        const t1 = Date.now();
        await tabs[0].page.close();
        await everyTabShows(tabs.slice(1), TABS - 1, SETTLE_MS);
        console.log(`nginx ${buffering ? 'buffering' : 'streaming'}: carrier closed, every tab exact in ${Date.now() - t1} ms`);
        assert.deepEqual(tabs.flatMap((t) => t.errors), []);
      } finally {
        await context.close();
      }
    });
    await eventually(() => stats(server), (st) => st.count === 0, SLOW, 'every session to end with the browser');
  }));
}

// A page reloaded at once, before its handshake was read: a session it
// never polls. `shared` false takes the sharing away (no Web Locks), so the
// page uses a plain /poll session, whose bound is the server's rule for
// sessions that never poll after their handshake.
for (const shared of [true, false]) {
  test(`${shared ? 'a shared' : 'a plain'} polling page reloaded 20 times at once never leaves the count high for more than 2 s`,
    { timeout: 3 * TEST_TIMEOUT }, () => withServer({ pingTimeout: 20_000 }, async (server) => {
    const watcherContext = await browser.newContext();
    const watcher = await watcherContext.newPage();
    await watcher.goto(server.url + '/');
    await allShow([watcher], 1);
    const context = await browser.newContext();
    await context.addInitScript((keepLocks) => {
      delete window.EventSource;
      if (!keepLocks) Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined });
    }, shared);
    const page = await context.newPage();
    const sampler = sampleCounts(server);
    const { timeline } = sampler;
    try {
      for (let i = 0; i < 20; i++) {
        // Navigate without waiting for the page's own requests to finish.
        await page.goto(server.url + '/', { waitUntil: 'commit' });
      }
      await page.goto(server.url + '/');
      await eventually(() => socketState(page), (s) => s.connected && s.transport === 'polling', SLOW,
        'the last load to connect over polling');
      await allShow([watcher, page], 2);
      // Long enough for any ghost to show: every stretch must end by 2 s.
      await new Promise((r) => setTimeout(r, 2500));
    } finally {
      await sampler.stop();
    }
    const high = overCounts(timeline, 2, Date.now()).filter((s) => s.ms > 2000);
    console.log(`${shared ? 'shared' : 'plain'} reloads: highest count ${Math.max(...timeline.map(([, n]) => n))}, `
      + `longest stretch above 2: ${Math.max(0, ...overCounts(timeline, 2, Date.now()).map((s) => s.ms))} ms`);
    assert.deepEqual(high, [], 'the server counted a ghost for over 2 s');
    assert.equal(await shownCount(watcher), 2);
    await context.close();
    await watcherContext.close();
  }));
}
