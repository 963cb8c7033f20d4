// The socket API beyond the demo page: options, buffered emits, off() and
// close().

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, allShow, closePages, eventually, openConnected, socketState, stats, statsEqual,
  useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

/** Opens a second socket on `page`, recording everything it sees. */
function extraSocket(page, url, options) {
  return page.evaluate(([u, o]) => {
    const s = io(u, o);
    window.extra = s;
    window.seen = [];
    for (const name of ['connect', 'disconnect', 'connect_error', 'chat message']) {
      s.on(name, (data) => window.seen.push(name === 'connect_error' ? [name] : [name, data ?? null]));
    }
    // The first attempt starts once this script has run.
    const before = s.transport;
    return Promise.resolve().then(() => [before, s.transport]);
  }, [url, options]);
}

const seen = (page) => page.evaluate(() => window.seen);

test('emits before connect are sent in order once connected; transports picks polling',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const a = await openConnected(browser, server.url + '/');
  await allShow([a.page], 1);

  assert.deepEqual(await extraSocket(a.page, server.url, { transports: ['polling'] }), [null, 'polling']);
  await a.page.evaluate(() => {
    window.extra.emit('chat message', 'first').emit('chat message', 'second');
  });
  await allShow([a.page], 2);
  // Broadcasts name a sender by its public tag: the sid's first 8 hex digits.
  const tag = (await a.page.evaluate(() => window.extra.id)).slice(0, 8);
  await eventually(() => seen(a.page), (s) => s.length === 3, SLOW, 'connect and two messages');
  assert.deepEqual(await seen(a.page), [
    ['connect', null],
    ['chat message', { sid: tag, message: 'first' }],
    ['chat message', { sid: tag, message: 'second' }],
  ]);
  await statsEqual(server, { count: 2, polling: 1, sessions: 2, sse: 1 });
  await closePages(server, [a]);
}));

test('off() removes one handler or all of an event',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const a = await openConnected(browser, server.url + '/');
  await a.page.evaluate(() => {
    window.calls = [];
    window.h1 = (m) => window.calls.push(['h1', m.message]);
    window.h2 = (m) => window.calls.push(['h2', m.message]);
    socket.on('chat message', window.h1).on('chat message', window.h2);
  });
  const calls = () => a.page.evaluate(() => window.calls);
  await a.page.evaluate(() => socket.emit('chat message', 'both'));
  await eventually(calls, (c) => c.length === 2, SLOW, 'two handler calls');

  await a.page.evaluate(() => socket.off('chat message', window.h1).emit('chat message', 'one'));
  await eventually(calls, (c) => c.length === 3, SLOW, 'a third handler call');

  // Re-adding after removing every handler must not subscribe twice.
  await a.page.evaluate(() => {
    socket.off('chat message').on('chat message', window.h1).emit('chat message', 'again');
  });
  await eventually(calls, (c) => c.length === 4, SLOW, 'a fourth handler call');
  // Sent after everything above: once it is in, nothing else can be late.
  await a.page.evaluate(() => socket.emit('chat message', 'last'));
  await eventually(calls, (c) => c.length === 5, SLOW, 'a fifth handler call');
  assert.deepEqual(await calls(), [
    ['h1', 'both'], ['h2', 'both'], ['h2', 'one'], ['h1', 'again'], ['h1', 'last'],
  ]);
  await closePages(server, [a]);
}));

for (const transport of ['sse', 'polling']) {
  // A long pingTimeout: only the close message can explain a prompt drop.
  test(`close() on ${transport} ends the session at once and does not reconnect`,
    { timeout: TEST_TIMEOUT }, () => withServer({ pingTimeout: 20_000 }, async (server) => {
    const a = await openConnected(browser, server.url + '/', { polling: transport === 'polling' });
    const watcher = await openConnected(browser, server.url + '/');
    await allShow([a.page, watcher.page], 2);

    const requests = [];
    a.page.on('request', (req) => requests.push(new URL(req.url()).pathname));
    await a.page.evaluate(() => {
      window.reasons = [];
      socket.on('disconnect', (r) => window.reasons.push(r));
    });
    const t0 = Date.now();
    await a.page.evaluate(() => socket.close());
    await allShow([watcher.page], 1, 1000);
    console.log(`${transport}: count back to 1 ${Date.now() - t0} ms after close()`);
    assert.deepEqual(await socketState(a.page), { connected: false, id: null, transport });
    assert.deepEqual(await a.page.evaluate(() => window.reasons), ['client close']);
    await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });

    // A reconnection would come within reconnectionDelay * 1.5; wait out
    // twice that and check that none was tried.
    await new Promise((r) => setTimeout(r, 3000));
    assert.deepEqual(requests.filter((p) => p === '/events' || p === '/poll'), []);
    assert.deepEqual(await stats(server), { count: 1, polling: 0, sessions: 1, sse: 1 });
    await a.context.close();
    await closePages(server, [watcher]);
    assert.deepEqual([...a.errors, ...watcher.errors], []);
  }));
}
