// Standard EventSource clients, which nobody here wrote, ride through a
// proxy's cuts: the `retry:` each stream opens with brings them back within
// the reconnect grace (their own default, 3 s, is far past it), and the
// `Last-Event-ID` they send resumes their session. Behind nginx cutting
// every stream idle for 2 s, with a chat going on, each client sees every
// message once and in order and a count that never changes.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EventSource } from 'eventsource';

import { startNginx } from './daemons.mjs';
import { SLOW, TEST_TIMEOUT, eventually, newContext, useBrowser, withServer } from './helpers.mjs';

const browser = useBrowser();

/** Chat messages sent, one every `EVERY_MS`: each leaves every stream idle
 * long enough for the proxy to cut it before the next. */
const MESSAGES = 7;
const EVERY_MS = 2_500;
/** The proxy cuts a stream idle for this long. */
const READ_TIMEOUT = '2s';

/**
 * A polling session talking to the server directly, not through the proxy:
 * it keeps polling so that it stays alive (and counted), and sends the chat.
 */
async function chatter(server) {
  const hs = await (await fetch(server.url + '/poll')).json();
  let open = true;
  const polling = (async () => {
    while (open) {
      const res = await fetch(`${server.url}/poll?sid=${hs.sid}`);
      assert.equal(res.status, 200, `poll answered ${res.status}`);
      await res.arrayBuffer();
    }
  })();
  return {
    /** Sends the whole chat, one message every EVERY_MS; resolves to what was sent. */
    async chat() {
      const sent = [];
      for (let n = 0; n < MESSAGES; n++) {
        await new Promise((r) => setTimeout(r, EVERY_MS));
        const res = await fetch(`${server.url}/emit?sid=${hs.sid}`, {
          method: 'POST',
          body: JSON.stringify({ event: 'chat message', data: `m${n}` }),
        });
        assert.equal(res.status, 204, `emit answered ${res.status}`);
        sent.push(`m${n}`);
      }
      return sent;
    },
    async close() {
      open = false;
      await fetch(`${server.url}/close?sid=${hs.sid}`, { method: 'POST' });
      await polling;
    },
  };
}

/**
 * What one client saw: every count, every chat message, every connect's
 * sid and how many times its stream opened. Runs in the page as well, as
 * the source of a function, so it uses nothing from this module.
 */
function listen(es, seen) {
  es.onopen = () => { seen.opens++; };
  es.addEventListener('connect', (e) => { seen.sids.push(JSON.parse(e.data).sid); });
  es.addEventListener('user count', (e) => { seen.counts.push(JSON.parse(e.data)); });
  es.addEventListener('chat message', (e) => { seen.messages.push(JSON.parse(e.data).message); });
}

function fresh() {
  return { opens: 0, sids: [], counts: [], messages: [] };
}

/** Checks what each client saw from the moment all showed `sessions`. */
function check(all, sent, sessions) {
  for (const [i, s] of all.entries()) {
    const what = `client ${i}: ${JSON.stringify(s)}`;
    assert.deepEqual(s.messages, sent, what);
    assert.deepEqual([...new Set(s.counts)], [sessions], what);
    // The proxy did cut it, and each time it came back to its own session.
    assert.ok(s.opens >= 3, what);
    assert.equal(new Set(s.sids).size, 1, what);
  }
}

/** Runs `body(proxy, chat)` against a server behind the cutting proxy. */
function behindCuttingProxy(body) {
  return withServer({ pingInterval: 10_000, pingTimeout: 20_000 }, async (server) => {
    const proxy = await startNginx(server.port, { readTimeout: READ_TIMEOUT });
    const chat = await chatter(server);
    try {
      await body(proxy, chat);
    } finally {
      await chat.close();
      await proxy.stop();
    }
  });
}

test('three standard EventSource clients behind a cutting proxy see every message once and a count that never drops',
  { timeout: TEST_TIMEOUT }, () => behindCuttingProxy(async (proxy, chat) => {
    const clients = Array.from({ length: 3 }, () => {
      const es = new EventSource(proxy.url + '/events');
      const seen = fresh();
      listen(es, seen);
      return { es, seen };
    });
    try {
      const sessions = clients.length + 1;
      await eventually(() => clients.map((c) => c.seen.counts.at(-1)),
        (last) => last.every((n) => n === sessions), SLOW, `every client showing ${sessions}`);
      // From here on, nothing may change.
      for (const c of clients) Object.assign(c.seen, { opens: 0, counts: [], messages: [] });
      const sent = await chat.chat();
      const all = await eventually(() => clients.map((c) => c.seen),
        (all) => all.every((s) => s.messages.length >= sent.length), SLOW, 'every message');
      console.log(`EventSource clients: opens ${JSON.stringify(all.map((s) => s.opens))}, `
        + `counts seen ${JSON.stringify(all.map((s) => [...new Set(s.counts)]))}`);
      check(all, sent, sessions);
    } finally {
      for (const c of clients) c.es.close();
    }
  }));

test('the same for Chromium pages with a native EventSource and no ssio.js',
  { timeout: TEST_TIMEOUT }, () => behindCuttingProxy(async (proxy, chat) => {
    const pages = [];
    try {
      for (let i = 0; i < 2; i++) {
        const context = await newContext(browser);
        const page = await context.newPage();
        // Any page of the server's own origin will do; this one runs no script.
        await page.goto(proxy.url + '/healthz');
        await page.evaluate(([listen, fresh]) => {
          window.seen = (0, eval)(`(${fresh})`)();
          (0, eval)(`(${listen})`)(new EventSource('/events'), window.seen);
        }, [listen.toString(), fresh.toString()]);
        pages.push({ context, page });
      }
      const sessions = pages.length + 1;
      const read = () => Promise.all(pages.map((p) => p.page.evaluate(() => window.seen)));
      await eventually(async () => (await read()).map((s) => s.counts.at(-1)),
        (last) => last.every((n) => n === sessions), SLOW, `every page showing ${sessions}`);
      for (const p of pages) {
        await p.page.evaluate(() => Object.assign(window.seen, { opens: 0, counts: [], messages: [] }));
      }
      const sent = await chat.chat();
      const all = await eventually(read,
        (all) => all.every((s) => s.messages.length >= sent.length), SLOW, 'every message');
      console.log(`Chromium EventSource: opens ${JSON.stringify(all.map((s) => s.opens))}, `
        + `counts seen ${JSON.stringify(all.map((s) => [...new Set(s.counts)]))}`);
      check(all, sent, sessions);
    } finally {
      for (const p of pages) await p.context.close();
    }
  }));
