// Blips are invisible: behind a proxy that cuts idle streams every few
// seconds, two pages keep showing the same count, every chat message
// arrives once and in order, and the pages stay on their transport. A page
// that really goes away still leaves every count within the grace (killed)
// or at once (closed).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { startNginx } from './daemons.mjs';
import {
  FEATURES_BIN, SLOW, TEST_TIMEOUT, allShow, connected, eventually, openPage, socketState, useBrowser,
  withServer,
} from './helpers.mjs';

const browser = useBrowser();

/** The server's default grace, in ms. */
const GRACE = 500;
/** How long each page sends for. */
const SEND_MS = 10_000;

/** Records, in the page, every count text shown, every lifecycle event,
 * every shout received and the transport every 50 ms. */
function record(page) {
  return page.evaluate(() => {
    const el = document.getElementById('num-users');
    window.seen = { counts: [el.textContent], reasons: [], connects: 0, shouts: [], transports: new Set() };
    new MutationObserver(() => window.seen.counts.push(el.textContent))
      .observe(el, { childList: true, characterData: true, subtree: true });
    socket.on('connect', () => { window.seen.connects++; });
    socket.on('disconnect', (r) => { window.seen.reasons.push(r); });
    socket.on('shouted', (m) => { window.seen.shouts.push(m); });
    window.seen.timer = setInterval(() => {
      window.seen.transports.add(socket.connected ? socket.transport : 'down');
    }, 50);
  });
}

function seen(page) {
  return page.evaluate(() => ({ ...window.seen, transports: [...window.seen.transports], timer: undefined }));
}

/** Sends a shout (to every other socket) every 500 ms for `ms`. */
function shout(page, from, ms) {
  return page.evaluate(([from, ms]) => new Promise((done) => {
    let n = 0;
    const t = setInterval(() => {
      socket.emit('shout', `${from}${n++}`);
      if (n * 500 >= ms) {
        clearInterval(t);
        done(n);
      }
    }, 500);
  }), [from, ms]);
}

async function blips(options, transport) {
  await withServer({ bin: FEATURES_BIN, pingInterval: 10_000, pingTimeout: 20_000 }, async (server) => {
    // Streams pass through unbuffered, but any response idle for 3 s is cut.
    const proxy = await startNginx(server.port, { readTimeout: '3s' });
    const pages = [];
    try {
      for (let i = 0; i < 2; i++) pages.push(await openPage(browser, proxy.url + '/', options));
      for (const p of pages) await connected(p.page, transport);
      await allShow(pages.map((p) => p.page), 2);
      const ids = await Promise.all(pages.map((p) => socketState(p.page)));
      // Every cut: a stream opened again, or a poll the proxy answered
      // with its own 504.
      const cuts = [0, 0];
      pages.forEach((p, i) => {
        p.page.on('request', (req) => { if (new URL(req.url()).pathname === '/events') cuts[i]++; });
        p.page.on('response', (res) => { if (res.status() === 504) cuts[i]++; });
      });
      for (const p of pages) await record(p.page);

      // Each page in turn sends while the other listens: the sender's own
      // stream is idle, so the proxy cuts it every 3 s while it sends.
      const sentA = await shout(pages[0].page, 'a', SEND_MS);
      const sentB = await shout(pages[1].page, 'b', SEND_MS);
      const [a, b] = await Promise.all(pages.map((p) => eventually(() => seen(p.page),
        (s) => s.shouts.length >= (p === pages[0] ? sentB : sentA), SLOW, 'every shout')));
      console.log(`${transport}: cuts ${JSON.stringify(cuts)}; counts shown `
        + `${JSON.stringify([a.counts, b.counts].map((c) => [...new Set(c)]))}`);

      assert.deepEqual(b.shouts, Array.from({ length: sentA }, (_, n) => `a${n}`));
      assert.deepEqual(a.shouts, Array.from({ length: sentB }, (_, n) => `b${n}`));
      for (const s of [a, b]) {
        assert.deepEqual([...new Set(s.counts)], ['2 users online']);
        assert.deepEqual({ reasons: s.reasons, connects: s.connects, transports: s.transports },
          { reasons: [], connects: 0, transports: [transport] });
      }
      assert.deepEqual(await Promise.all(pages.map((p) => socketState(p.page))), ids);
      // The proxy did cut: each page's transport at least twice.
      assert.ok(cuts.every((n) => n >= 2), `cuts ${JSON.stringify(cuts)}`);
      for (const p of pages) assert.deepEqual(p.errors, []);
      // And the server's handlers saw no disconnect and no second connect
      // (a count the pages cannot see when it flickers between two polls).
      const metrics = await (await fetch(server.url + '/metrics')).text();
      const total = (name) => metrics.split('\n').filter((l) => l.startsWith(name))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
      assert.deepEqual({ connects: total('ssio_connects_total'), disconnects: total('ssio_disconnects_total') },
        { connects: 2, disconnects: 0 });
    } finally {
      for (const p of pages) await p.context.close();
      await proxy.stop();
    }
  });
}

test('behind a proxy that cuts idle streams, two SSE pages never see the count change or lose a message',
  { timeout: TEST_TIMEOUT }, () => blips({}, 'sse'));

test('the same over forced long-polling', { timeout: TEST_TIMEOUT }, () => blips({ polling: true }, 'polling'));

test('the same for pages with a stream of their own (no tab sharing)',
  { timeout: TEST_TIMEOUT }, () => blips({ alone: true }, 'sse'));

test('the same for polling pages of their own', { timeout: TEST_TIMEOUT },
  () => blips({ alone: true, polling: true }, 'polling'));

/** When the watching page shows `n`, by its own clock (the same as ours). */
function shownAt(page, n) {
  return eventually(() => page.evaluate((text) => {
    const hit = window.when.find((w) => w[1] === text);
    return hit ? hit[0] : null;
  }, `${n} users online`), (t) => t !== null, SLOW, `the page to show ${n}`);
}

function watch(page) {
  return page.evaluate(() => {
    const el = document.getElementById('num-users');
    window.when = [];
    new MutationObserver(() => window.when.push([Date.now(), el.textContent]))
      .observe(el, { childList: true, characterData: true, subtree: true });
  });
}

for (const options of [{}, { alone: true }]) {
  const kind = options.alone ? 'a page with a stream of its own' : 'a page';
  test(`${kind} killed without a beacon leaves the count after the grace; one closed normally at once`,
    { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
    const watcher = await openPage(browser, server.url + '/', options);
    const pages = [watcher];
    try {
      await connected(watcher.page, 'sse');
      const killed = await openPage(browser, server.url + '/', options);
      pages.push(killed);
      await allShow([watcher.page, killed.page], 2);
      await watch(watcher.page);
      // No goodbye of any kind can get out, as when the browser is killed.
      await killed.page.evaluate(() => { navigator.sendBeacon = () => true; });
      await killed.context.route('**/close*', (r) => r.abort());
      const t0 = Date.now();
      await killed.context.close();
      const dropped = (await shownAt(watcher.page, 1)) - t0;
      console.log(`killed: the count dropped ${dropped} ms after the page died (grace ${GRACE} ms)`);
      // Seen 506–591 ms on a quiet machine, and once 737 ms in a full run.
      assert.ok(dropped >= GRACE - 50 && dropped <= GRACE + 400, `${dropped} ms`);

      const closed = await openPage(browser, server.url + '/', options);
      pages.push(closed);
      await allShow([watcher.page, closed.page], 2);
      await watch(watcher.page);
      const t1 = Date.now();
      await closed.page.close();
      const left = (await shownAt(watcher.page, 1)) - t1;
      console.log(`closed: the count dropped ${left} ms after the page closed`);
      assert.ok(left <= 100, `${left} ms`);
    } finally {
      for (const p of pages) await p.context.close().catch(() => {});
    }
  }));
}
