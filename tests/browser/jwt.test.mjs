// JWT sessions in a real browser: the page's `auth` function mints
// 4-second HS256 tokens with WebCrypto, and the client refreshes each one
// in-band before it expires, so the session outlives several tokens; a page
// whose `auth` stops giving fresh tokens is ended with "token expired", and
// shows it.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SLOW, TEST_TIMEOUT, eventually, openPage, statsEqual, useBrowser, withServer } from './helpers.mjs';

const browser = useBrowser();

const SECRET = 'a browser test secret of no importance';
// Short enough that three refreshes take seconds, long enough that a
// refresh is never late on a loaded machine: `iat` is a whole second, so a
// token may have as little as 3 s left when minted, and the client asks for
// the next one at (4 - 1) * 2/3 = 2 s, leaving a second for the round trip.
const LIFE = 4;

/**
 * A page of the server's origin (so WebCrypto and same-origin fetches
 * work) with the client loaded and no socket yet; `fresh` says whether its
 * `auth` keeps minting new tokens or, after the first, gives the same one.
 */
async function jwtPage(server, fresh) {
  const handle = await openPage(browser, server.url + '/public/style.css');
  await handle.page.addScriptTag({ url: server.url + '/public/ssio.min.js' });
  await handle.page.evaluate(async ({ secret, life, fresh }) => {
    const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
      .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
    const text = (value) => b64(new TextEncoder().encode(JSON.stringify(value)));
    const key = await crypto.subtle.importKey('raw', new TextEncoder().encode(secret),
      { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
    async function mint() {
      const iat = Math.floor(Date.now() / 1000);
      const body = text({ alg: 'HS256', typ: 'JWT' }) + '.' + text({ sub: 'ann', iat, exp: iat + life });
      const signature = await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(body));
      return body + '.' + b64(signature);
    }
    window.log = { minted: 0, connects: 0, ids: [], reasons: [], errors: [], refreshes: [] };
    // The status of every in-band refresh, so a refused one shows.
    const plain = window.fetch;
    window.fetch = async (url, init) => {
      const answer = await plain(url, init);
      if (String(url).includes('/refresh?')) window.log.refreshes.push(answer.status);
      return answer;
    };
    let first;
    const shown = document.createElement('p');
    shown.id = 'state';
    document.body.append(shown);
    window.jwtSocket = io('', {
      async auth() {
        window.log.minted++;
        if (!first || fresh) first = await mint();
        return { token: first };
      },
    });
    jwtSocket.on('connect', () => {
      window.log.connects++;
      window.log.ids.push(jwtSocket.id);
      shown.textContent = 'connected';
    });
    jwtSocket.on('disconnect', (reason) => {
      window.log.reasons.push(reason);
      shown.textContent = 'disconnected: ' + reason;
    });
    jwtSocket.on('connect_error', (e) => { window.log.errors.push([e.status, e.message]); });
  }, { secret: SECRET, life: LIFE, fresh });
  return handle;
}

function log(page) {
  return page.evaluate(() => ({ ...window.log, connected: jwtSocket.connected }));
}

test('a page stays connected, as one session, through three refreshes of 4-second tokens',
  { timeout: TEST_TIMEOUT }, async () => {
  await withServer({ extra: ['--jwt-secret', SECRET] }, async (server) => {
    const { context, page, errors } = await jwtPage(server, true);
    try {
      await eventually(() => log(page), (l) => l.connected, SLOW, 'the page to connect');
      const started = Date.now();
      await eventually(() => log(page), (l) => l.refreshes.length >= 3, 30_000, 'three refreshes');
      // The first token expired at most LIFE seconds after it was minted,
      // which was before `started`.
      assert.ok(Date.now() - started > LIFE * 1000, 'the session outlived its first token');
      const l = await log(page);
      assert.deepEqual({ connects: l.connects, reasons: l.reasons, errors: l.errors, connected: l.connected,
        refreshes: l.refreshes.slice(0, 3) },
      { connects: 1, reasons: [], errors: [], connected: true, refreshes: [200, 200, 200] });
      assert.equal(l.ids.length, 1);
      assert.equal(await page.textContent('#state'), 'connected');
      await statsEqual(server, { count: 1, sessions: 1, sse: 1, polling: 0 });
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
});

test('a page whose auth stops giving fresh tokens is ended with "token expired" and shows it',
  { timeout: TEST_TIMEOUT }, async () => {
  await withServer({ extra: ['--jwt-secret', SECRET] }, async (server) => {
    const { context, page, errors } = await jwtPage(server, false);
    try {
      await eventually(() => log(page), (l) => l.connected, SLOW, 'the page to connect');
      await statsEqual(server, { count: 1, sessions: 1, sse: 1, polling: 0 });
      await eventually(() => page.textContent('#state'), (t) => t === 'disconnected: token expired',
        LIFE * 1000 + SLOW, 'the page to show "token expired"');
      await statsEqual(server, { count: 0, sessions: 0, sse: 0, polling: 0 });
      // The reconnection asks auth again, gets the expired token, and is
      // refused: a 401 that the client does not retry by itself.
      await eventually(() => log(page), (l) => l.errors.length === 1, SLOW, 'the refused reconnection');
      const l = await log(page);
      assert.deepEqual({ connects: l.connects, reasons: l.reasons, errors: l.errors, connected: l.connected },
        { connects: 1, reasons: ['token expired'], errors: [[401, 'token expired']], connected: false });
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
});
