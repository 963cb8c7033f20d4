// Presence in Chromium: two browsers, one with three tabs, are four users
// online and two people on every page; when the three-tab browser closes,
// the other page shows one and one within a second.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, connected, eventually, newContext, statsEqual, useBrowser, withServer,
} from './helpers.mjs';

const browser = useBrowser();

/** What a page shows: "N users online" and "M people". */
function shown(page) {
  return page.evaluate(() => [
    document.getElementById('num-users').textContent,
    document.getElementById('num-people').textContent,
  ]);
}

test('four users online are two people, and one browser leaving leaves one and one within a second',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const three = await newContext(browser, { viewport: { width: 720, height: 560 } });
  const one = await newContext(browser, { viewport: { width: 720, height: 560 } });
  const tabs = [];
  for (let i = 0; i < 3; i++) {
    const page = await three.newPage();
    await page.goto(server.url + '/');
    await connected(page, 'sse');
    tabs.push(page);
  }
  const alone = await one.newPage();
  await alone.goto(server.url + '/');
  await connected(alone, 'sse');
  await statsEqual(server, { count: 4, polling: 0, sessions: 4, sse: 4 });
  for (const page of [...tabs, alone]) {
    await eventually(() => shown(page), (s) => s[0] === '4 users online' && s[1] === '2 people', SLOW,
      'four users and two people');
  }

  const t0 = Date.now();
  await three.close();
  await eventually(() => shown(alone), (s) => s[0] === '1 users online' && s[1] === '1 people', SLOW,
    'one user and one person');
  const took = Date.now() - t0;
  assert.ok(took <= 1000, `the page showed one and one after ${took} ms`);
  await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });
  await one.close();
}));
