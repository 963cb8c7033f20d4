// The server's own acknowledged emits in Chromium: a handler's callback
// answers `emit_with_ack`, on each transport and on a shared stream, and a
// broadcast collects one answer per page and counts the page that never
// answers. Against the feature-test app (examples/features_server.rs).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  FEATURES_BIN, SLOW, TEST_TIMEOUT, eventually, openConnected, useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();
const opts = { bin: FEATURES_BIN };

/** Opens a socket on `page` that answers `question` and `vote` as told. */
function answering(page, url, transports) {
  return page.evaluate(([u, t]) => new Promise((resolve) => {
    const s = io(u, t ? { transports: t } : {});
    window.got = [];
    s.on('question', (q, reply) => reply({ echo: q, transport: s.transport }));
    s.on('answered', (a) => window.got.push(a));
    s.on('connect', () => resolve(s.transport));
    window.s = s;
  }), [url, transports]);
}

for (const [name, transports] of [['sse', ['sse']], ['polling', ['polling']], ['a shared stream', null]]) {
  test(`a handler's callback answers the server's emit_with_ack, on ${name}`,
    { timeout: TEST_TIMEOUT }, () => withServer(opts, async (server) => {
    const a = await openConnected(browser, server.url + '/');
    const transport = await answering(a.page, server.url, transports);
    await a.page.evaluate(() => window.s.emit('ask me', { q: 'ping' }));
    await eventually(() => a.page.evaluate(() => window.got), (g) => g.length === 1, SLOW, 'the answer');
    assert.deepEqual(await a.page.evaluate(() => window.got), [{ answer: { echo: 'ping', transport } }]);

    // A listener that never calls back: the server's wait times out.
    await a.page.evaluate(() => {
      window.s.off('question').on('question', () => {});
      window.s.emit('ask me', { q: 'again', ms: 300 });
    });
    await eventually(() => a.page.evaluate(() => window.got), (g) => g.length === 2, SLOW, 'the timeout');
    assert.deepEqual((await a.page.evaluate(() => window.got))[1], { error: 'acknowledgement timed out' });
    await a.context.close();
  }));
}

test('a broadcast with acks gets one answer per page and counts the one that never answers',
  { timeout: TEST_TIMEOUT }, () => withServer(opts, async (server) => {
  const pages = [];
  for (let i = 0; i < 3; i++) pages.push(await openConnected(browser, server.url + '/'));
  for (const [i, { page }] of pages.entries()) {
    await page.evaluate((i) => new Promise((resolve) => {
      window.tally = [];
      socket.on('tally', (t) => window.tally.push(t));
      // The third page hears the vote through onAny and never answers.
      if (i < 2) socket.on('vote', (q, reply) => reply(`page ${i}`));
      else socket.onAny((event, q, reply) => { window.unanswered = [event, q, typeof reply]; });
      socket.emit('join?', 'voters', resolve);
    }), i);
  }
  await pages[0].page.evaluate(() => socket.emit('ask all', { q: 'which?', ms: 1500 }));
  const tally = await eventually(() => pages[0].page.evaluate(() => window.tally), (t) => t.length === 1,
    SLOW, 'the tally');
  assert.deepEqual(tally[0].answers.sort(), ['page 0', 'page 1']);
  assert.equal(tally[0].timed_out, 1);
  assert.deepEqual(await pages[2].page.evaluate(() => window.unanswered), ['vote', 'which?', 'function']);
  for (const h of pages) await h.context.close();
}));
