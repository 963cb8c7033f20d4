// Behind a proxy that buffers responses, an SSE stream never delivers its
// first event: the client must notice and fall back to long-polling on its
// own, and the server must not keep counting the abandoned stream.

import assert from 'node:assert/strict';
import { request } from 'node:http';
import { test } from 'node:test';

import { withNginx } from './daemons.mjs';
import {
  SLOW, TEST_TIMEOUT, allShow, closePages, eventually, messageTexts, openConnected,
  sendMessage, socketState, statsEqual, useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

/** A server of its own behind a proxy of its own. */
function withProxy(body) {
  // A long pingTimeout, so that only the client's own close message can
  // explain a session that ends promptly.
  return withServer({ pingTimeout: 20_000 }, (server) =>
    withNginx(server.port, { buffering: true }, (proxy) => body(server, proxy)));
}

test('the proxy really holds an SSE stream back, and lets go of it upstream when the client leaves',
  { timeout: TEST_TIMEOUT }, () => withProxy(async (server, proxy) => {
  let bytes = 0;
  let responded = false;
  const req = request(proxy.url + '/events', (res) => {
    responded = true;
    res.on('data', (c) => { bytes += c.length; });
  });
  req.on('error', () => {});
  req.end();
  // The server has produced the stream: the connect event is written.
  await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });
  // Proving that something does not arrive takes a window: an unbuffered
  // proxy passes these few bytes on within milliseconds.
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual({ responded, bytes }, { responded: false, bytes: 0 });
  req.destroy();
  await statsEqual(server, { count: 0, polling: 0, sessions: 0, sse: 0 });
}));

test('a page behind the proxy falls back to polling by itself and shows the right count',
  { timeout: TEST_TIMEOUT }, () => withProxy(async (server, proxy) => {
  const direct = await openConnected(browser, server.url + '/');

  const t0 = Date.now();
  // connectTimeout (3 s) plus a handshake; bounded well inside "a few seconds".
  const proxied = await openConnected(browser, proxy.url + '/', { transport: 'polling', ms: 8000 });
  console.log(`fell back to polling ${Date.now() - t0} ms after opening the page`);
  // Watched from the fallback on: the page's first stream attempt may start
  // before or after the page has loaded (a shared stream waits for its lock).
  const streams = [];
  proxied.page.on('request', (req) => {
    if (new URL(req.url()).pathname === '/events') streams.push(req.url());
  });

  await allShow([direct.page, proxied.page], 2);
  // The abandoned stream was counted while it lasted; it must not linger.
  await statsEqual(server, { count: 2, polling: 1, sessions: 2, sse: 1 });
  await allShow([direct.page, proxied.page], 2);
  assert.equal((await socketState(proxied.page)).transport, 'polling');

  // Chat goes through the proxy on the fallback transport: out as an emit,
  // back in a poll.
  await sendMessage(proxied.page, 'through the proxy');
  for (const { page } of [direct, proxied]) {
    await eventually(() => messageTexts(page),
      (texts) => JSON.stringify(texts) === '["through the proxy"]', SLOW, 'the message on both pages');
  }

  // Losing the session later does not send the page back to SSE.
  const { id } = await socketState(proxied.page);
  assert.equal((await fetch(`${server.url}/close?sid=${id}`, { method: 'POST' })).status, 204);
  await eventually(() => socketState(proxied.page), (s) => s.connected && s.id !== id, SLOW, 'a new session');
  assert.equal((await socketState(proxied.page)).transport, 'polling');
  await allShow([direct.page, proxied.page], 2);
  assert.deepEqual(streams, [], 'no stream attempt after the first');

  const t1 = Date.now();
  await proxied.page.close();
  await allShow([direct.page], 1, Math.max(0, 1000 - (Date.now() - t1)));
  await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });

  await proxied.context.close();
  await closePages(server, [direct]);
  assert.deepEqual([...direct.errors, ...proxied.errors], []);
}));
