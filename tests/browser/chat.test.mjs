// The demo chat between pages on different transports, and the screenshot
// of the demo page.

import assert from 'node:assert/strict';
import { access, copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  ROOT, SLOW, TEST_TIMEOUT, allShow, closePages, eventually, openConnected, outputDir, socketState,
  useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

/** The chat list as [who, text] pairs. */
function chatLog(page) {
  return page.$$eval('#messages li', (items) =>
    items.map((li) => [li.querySelector('.who').textContent, li.querySelector('.text').textContent]));
}

async function send(page, text) {
  await page.fill('#m', text);
  await page.press('#m', 'Enter');
}

function logIs(page, expected) {
  return eventually(() => chatLog(page), (log) => JSON.stringify(log) === JSON.stringify(expected), SLOW,
    `chat log ${JSON.stringify(expected)}`);
}

test('messages cross from SSE to polling and from polling to SSE, as text',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const sse = await openConnected(browser, server.url + '/');
  const poll = await openConnected(browser, server.url + '/', { polling: true });
  await allShow([sse.page, poll.page], 2);
  const sseName = 'user ' + (await socketState(sse.page)).id.slice(0, 4);
  const pollName = 'user ' + (await socketState(poll.page)).id.slice(0, 4);

  await send(sse.page, 'hello from SSE');
  await logIs(poll.page, [[sseName, 'hello from SSE']]);
  await logIs(sse.page, [['you', 'hello from SSE']]);

  await send(poll.page, 'hello from polling');
  await logIs(sse.page, [['you', 'hello from SSE'], [pollName, 'hello from polling']]);
  await logIs(poll.page, [[sseName, 'hello from SSE'], ['you', 'hello from polling']]);

  // Markup from another user is shown, never rendered.
  const markup = '<img src=x onerror="window.injected=1"><b>bold</b>';
  await send(poll.page, markup);
  await logIs(sse.page, [['you', 'hello from SSE'], [pollName, 'hello from polling'], [pollName, markup]]);
  assert.equal(await sse.page.$$eval('#messages b, #messages img', (els) => els.length), 0);
  assert.equal(await sse.page.evaluate(() => window.injected), undefined);

  // Sent in a burst from one page, messages arrive in the order sent.
  for (const text of ['one', 'two', 'three']) {
    await poll.page.evaluate((t) => socket.emit('chat message', t), text);
  }
  const texts = (log) => log.map(([, text]) => text);
  await eventually(() => chatLog(sse.page).then(texts), (t) => t.length === 6, SLOW, 'six messages');
  assert.deepEqual(texts(await chatLog(sse.page)).slice(3), ['one', 'two', 'three']);

  await closePages(server, [sse, poll]);
  assert.deepEqual([...sse.errors, ...poll.errors], []);
}));

test('screenshot of the demo page with two users chatting',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const a = await openConnected(browser, server.url + '/');
  const b = await openConnected(browser, server.url + '/', { polling: true });
  await allShow([a.page, b.page], 2);

  const lines = [
    [b.page, 'Hi! Is anyone here?'],
    [a.page, 'Yes, hello. I am on SSE.'],
    [b.page, 'My network blocks streams, so I am long-polling.'],
    [a.page, 'Same chat either way.'],
  ];
  for (const [i, [page, text]] of lines.entries()) {
    await send(page, text);
    await eventually(() => chatLog(a.page), (log) => log.length === i + 1, SLOW, `${i + 1} messages`);
  }

  const file = join(await outputDir(), 'demo.png');
  await a.page.screenshot({ path: file });
  // The committed copy changes only when asked, so that a test run leaves
  // the work tree clean.
  const docs = join(ROOT, 'docs', 'screenshot.png');
  const missing = await access(docs).then(() => false, () => true);
  if (missing || process.env.UPDATE_SCREENSHOT === '1') {
    await mkdir(join(ROOT, 'docs'), { recursive: true });
    await copyFile(file, docs);
  }

  await closePages(server, [a, b]);
  assert.deepEqual([...a.errors, ...b.errors], []);
}));

test('a burst over the emit rate is slowed down, not lost: every message arrives once, in order',
  { timeout: TEST_TIMEOUT }, () => withServer({ args: ['--max-emit-rate', '10', '--max-emit-burst', '5'] }, async (server) => {
  const from = await openConnected(browser, server.url + '/');
  const to = await openConnected(browser, server.url + '/', { polling: true });
  await allShow([from.page, to.page], 2);
  // 25 emits at once: 5 pass on the burst, the rest are refused with 429
  // and sent again after Retry-After, at 10 a second.
  const sent = await from.page.evaluate(() => {
    const texts = [];
    for (let i = 0; i < 25; i++) {
      texts.push('burst ' + i);
      socket.emit('chat message', 'burst ' + i);
    }
    return texts;
  });
  const fromName = 'user ' + (await socketState(from.page)).id.slice(0, 4);
  await logIs(to.page, sent.map((t) => [fromName, t]));
}));
