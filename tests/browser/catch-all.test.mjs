// Catch-all listeners: onAny sees every event from the server, with or
// without a handler of its own, on every transport; onAnyOutgoing sees
// every emit; a live SSE session takes up a catch-all listener without a
// reconnection.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, closePages, eventually, openConnected, statsEqual, useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

/**
 * Opens a socket of its own on `page`, on `transports` (none: the page's
 * shared stream), logging what its catch-all listeners and its lifecycle
 * see, with the catch-all listener added at once or once connected.
 */
function catchAll(page, url, { transports, late = false }) {
  return page.evaluate(([u, t, late]) => {
    const s = io(u, t ? { transports: t } : {});
    window.any = [];
    window.out = [];
    window.life = [];
    const add = () => s.onAny((event, data) => window.any.push([event, data]));
    s.on('connect', () => {
      window.life.push(['connect', s.id]);
      if (late && window.any.length === 0 && !window.added) {
        window.added = true;
        add();
      }
    });
    s.on('disconnect', (r) => window.life.push(['disconnect', r]));
    s.onAnyOutgoing((event, data) => window.out.push([event, data]));
    if (!late) add();
    window.s = s;
  }, [url, transports ?? null, late]);
}

const read = (page, name) => page.evaluate((n) => window[n], name);

for (const [name, transports] of [['sse', ['sse']], ['polling', ['polling']], ['a shared stream', null]]) {
  test(`onAny sees every server event and onAnyOutgoing every emit, on ${name}`,
    { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
    const a = await openConnected(browser, server.url + '/');
    await catchAll(a.page, server.url, { transports });
    await statsEqual(server, { count: 2, polling: transports?.[0] === 'polling' ? 1 : 0, sessions: 2,
      sse: transports?.[0] === 'polling' ? 1 : 2 });
    // The socket has no handler for either event: only onAny can see them.
    await eventually(() => read(a.page, 'any'), (l) => l.some(([e, d]) => e === 'user count' && d === 2),
      SLOW, 'the count through onAny');
    await a.page.evaluate(() => window.s.emit('chat message', 'hi'));
    const tag = (await a.page.evaluate(() => window.s.id)).slice(0, 8);
    await eventually(() => read(a.page, 'any'), (l) => l.some(([e]) => e === 'chat message'), SLOW,
      'the chat message through onAny');
    const any = await read(a.page, 'any');
    assert.deepEqual(any.filter(([e]) => e === 'chat message'), [['chat message', { sid: tag, message: 'hi' }]]);
    assert.deepEqual(await read(a.page, 'out'), [['chat message', 'hi']]);

    // offAny with the listener removes it; listenersAny says what is left.
    await a.page.evaluate(() => {
      const l = window.s.listenersAny()[0];
      window.calls = [];
      window.s.prependAny(() => window.calls.push('first')).offAny(l);
      window.s.onAny(() => window.calls.push('second'));
      window.s.emit('chat message', 'again');
    });
    await eventually(() => read(a.page, 'calls'), (c) => c.length >= 2, SLOW, 'both new listeners');
    assert.deepEqual((await read(a.page, 'calls')).slice(0, 2), ['first', 'second']);
    assert.equal(await a.page.evaluate(() => window.s.offAny().listenersAny().length), 0);
    assert.deepEqual((await read(a.page, 'life')).map(([e]) => e), ['connect']);
    await closePages(server, [a]);
  }));
}

test('a catch-all listener added to a live SSE session moves it to JSON frames without a reconnection',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const a = await openConnected(browser, server.url + '/');
  await catchAll(a.page, server.url, { transports: ['sse'], late: true });
  await eventually(() => read(a.page, 'added'), (x) => x === true, SLOW, 'the late listener');
  // The page's own socket sends a message the other socket has no handler for.
  await eventually(async () => {
    await a.page.evaluate(() => socket.emit('chat message', 'probe'));
    return read(a.page, 'any');
  }, (l) => l.some(([e]) => e === 'chat message'), SLOW, 'a chat message through the late onAny');
  const life = await read(a.page, 'life');
  assert.equal(life.length, 1, JSON.stringify(life));
  assert.equal(await a.page.evaluate(() => window.s.id), life[0][1]);
  await statsEqual(server, { count: 2, polling: 0, sessions: 2, sse: 2 });
  await closePages(server, [a]);
}));
