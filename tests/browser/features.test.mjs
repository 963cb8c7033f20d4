// Rooms, acknowledgements, middleware and resume, in Chromium, against the
// feature-test app (examples/features_server.rs).

import assert from 'node:assert/strict';
import { createServer, connect } from 'node:net';
import { once } from 'node:events';
import { test } from 'node:test';

import {
  FEATURES_BIN, SLOW, TEST_TIMEOUT, connected, eventually, messageTexts, openConnected, openPage,
  useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

const opts = { bin: FEATURES_BIN };

test('a chat in a room reaches the other member and not the sender',
  { timeout: TEST_TIMEOUT }, () => withServer(opts, async (server) => {
  const a = await openPage(browser, server.url + '/');
  const b = await openPage(browser, server.url + '/');
  for (const { page } of [a, b]) {
    await connected(page, 'sse');
    await page.evaluate(() => new Promise((resolve) => {
      window.got = [];
      socket.on('said', (m) => window.got.push(m));
      socket.emit('join?', 'room 1', resolve);
    }));
  }
  await a.page.evaluate(() => socket.emit('say', { room: 'room 1', text: 'hello room' }));
  await eventually(() => b.page.evaluate(() => window.got), (g) => g.length === 1, SLOW, 'b to get the message');
  assert.deepEqual(await b.page.evaluate(() => window.got), ['hello room']);
  assert.deepEqual(await a.page.evaluate(() => window.got), []);
  for (const h of [a, b]) await h.context.close();
}));

test('an ack comes back to its callback, and an unanswered one times out',
  { timeout: TEST_TIMEOUT }, () => withServer(opts, async (server) => {
  const { page, context } = await openConnected(browser, server.url + '/');
  const answered = await page.evaluate(() => new Promise((resolve) => {
    socket.emit('echo', { x: 1 }, (err, reply) => resolve([err && err.message, reply]));
  }));
  assert.deepEqual(answered, [null, { x: 1 }]);
  const t0 = Date.now();
  const timedOut = await page.evaluate(() => new Promise((resolve) => {
    socket.timeout(300).emit('never', null, (err, reply) => resolve([err && err.message, reply ?? null]));
  }));
  assert.deepEqual(timedOut, ['operation has timed out', null]);
  assert.ok(Date.now() - t0 < 5000);
  // The channel still works after a timeout.
  const again = await page.evaluate(() => new Promise((resolve) => {
    socket.emit('echo', 2, (err, reply) => resolve(reply));
  }));
  assert.equal(again, 2);
  await context.close();
}));

test('a page refused by middleware shows the error once and does not retry by itself',
  { timeout: TEST_TIMEOUT }, () => withServer(opts, async (server) => {
  const { page, context } = await openPage(browser, server.url + '/');
  let handshakes = 0;
  page.on('request', (r) => { if (r.url().endsWith('/handshake')) handshakes++; });
  await page.evaluate(() => {
    window.errors = [];
    window.refused = io('', { auth: { token: 'bad' }, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    window.refused.on('connect_error', (e) => window.errors.push([e.message, e.data]));
  });
  await eventually(() => page.evaluate(() => window.errors), (e) => e.length === 1, SLOW, 'one connect_error');
  assert.deepEqual(await page.evaluate(() => window.errors), [['not allowed', { code: 42 }]]);
  // Well past many reconnection delays: no retry loop.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await page.evaluate(() => window.errors.length), 1);
  assert.equal(handshakes, 1);
  // connect() tries again, on request.
  await page.evaluate(() => window.refused.connect());
  await eventually(() => page.evaluate(() => window.errors.length), (n) => n === 2, SLOW, 'a second connect_error');
  assert.equal(handshakes, 2);
  await context.close();
}));

/** A TCP proxy whose connections can be cut at once, as a dead network would. */
async function cuttableProxy(port) {
  const sockets = new Set();
  const proxy = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  return {
    url: `http://127.0.0.1:${proxy.address().port}`,
    cut() { for (const s of sockets) s.destroy(); },
    close() { this.cut(); proxy.close(); },
  };
}

test('a page whose stream is cut mid-conversation shows every message once, recovered',
  { timeout: TEST_TIMEOUT }, () => withServer(opts, async (server) => {
  const proxy = await cuttableProxy(server.port);
  // A page alone: a shared tab stream re-attaches its sessions instead
  // (see "Many tabs"), and this test is about the resume.
  const cutOff = await openPage(browser, proxy.url + '/', { alone: true });
  const sender = await openPage(browser, server.url + '/');
  await connected(cutOff.page, 'sse');
  await connected(sender.page, 'sse');
  const say = (n) => sender.page.evaluate((m) => socket.emit('chat message', m), 'm' + n);
  for (let n = 1; n <= 5; n++) await say(n);
  await eventually(() => messageTexts(cutOff.page), (t) => t.length === 5, SLOW, 'the first five');
  const sid = await cutOff.page.evaluate(() => socket.id);
  proxy.cut();
  for (let n = 6; n <= 20; n++) {
    await say(n);
    await new Promise((r) => setTimeout(r, 40));
  }
  const all = Array.from({ length: 20 }, (_, i) => 'm' + (i + 1));
  await eventually(() => messageTexts(cutOff.page), (t) => t.length >= 20, SLOW, 'all twenty messages');
  assert.deepEqual(await messageTexts(cutOff.page), all);
  assert.deepEqual(await cutOff.page.evaluate(() => [socket.recovered, socket.id]), [true, sid]);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await messageTexts(cutOff.page), all);
  for (const h of [cutOff, sender]) await h.context.close();
  proxy.close();
}));
