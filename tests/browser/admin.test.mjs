// The admin page at /admin, in Chromium.
//
// The first tests run the page against a real ssio whose /api/* answers
// are stood in for by the browser (page routes that answer exactly as
// docs/protocol.md's server API does), so that what the page does with
// each answer can be driven and checked: refused keys, counts, rates,
// rooms, what the forms send. The last tests run it against the real
// server API, with a demo page joining, leaving and receiving.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, eventually, messageTexts, newContext, openConnected, socketState, useBrowser,
  withServer,
} from './helpers.mjs';

const browser = useBrowser();

const KEY = 'k3y-for-the-admin-test_0123456789';

// The page polls /api/info twice a second: a change on the server shows
// within that period plus one request's round trip, within one second.
const INFO_EVERY_MS = 500;
const SHOWN_WITHIN_MS = 1000;

/**
 * Opens /admin in a context of its own and records every request the page
 * makes (URL, method, headers, body), so that a test can say what the page
 * sent and what it did not.
 */
async function openAdmin(server, { setup } = {}) {
  const context = await newContext(browser, { viewport: { width: 1000, height: 900 } });
  if (setup) await setup(context);
  const page = await context.newPage();
  const requests = [];
  page.on('request', (r) => requests.push({
    url: r.url(), method: r.method(), headers: r.headers(), body: r.postData(),
  }));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(server.url + '/admin', { timeout: SLOW });
  const apiRequests = () => requests.filter((r) => new URL(r.url).pathname.startsWith('/api/'));
  return { context, page, requests, apiRequests, errors };
}

/** Types `key` into the key form and submits it, as a user does. */
async function enterKey(page, key) {
  await page.fill('#key', key);
  await page.click('#key-form button');
}

const visible = (page, selector) => page.isVisible(selector);

/**
 * A stand-in for the server API, answering as the contract says: 401
 * `{"error"}` without the right key, `/api/info` and `/api/rooms` from
 * `state`, and every POST recorded in `state.posts`.
 */
async function mockApi(context, state) {
  await context.route('**/api/**', async (route) => {
    const req = route.request();
    const path = new URL(req.url()).pathname;
    const json = (status, body) => route.fulfill({
      status, contentType: 'application/json', body: JSON.stringify(body),
    });
    if (state.off) return json(404, { error: 'not found' });
    if (req.headers().authorization !== 'Bearer ' + state.key) return json(401, { error: 'invalid api key' });
    if (req.method() === 'GET' && path === '/api/info') return json(200, state.info());
    if (req.method() === 'GET' && path === '/api/rooms') return json(200, { rooms: state.rooms });
    if (req.method() === 'GET' && path === '/api/presence') return json(200, state.presence);
    if (req.method() === 'POST') {
      state.posts.push({ path, body: JSON.parse(req.postData()) });
      if (path === '/api/publish') return json(200, { cursor: 'c-42' });
      if (path === '/api/disconnect') {
        if (!state.sids.includes(JSON.parse(req.postData()).sid)) return json(404, { error: 'unknown session' });
        return json(200, {});
      }
    }
    return json(404, { error: 'not found' });
  });
}

const SID_A = '0b6f3a4e-5c1d-4c8e-9a77-3f1e2d4c5b6a';
const SID_B = 'f1e2d3c4-b5a6-4978-8a1b-2c3d4e5f6a7b';

function mockState() {
  const started = Date.now();
  return {
    key: KEY,
    off: false,
    posts: [],
    sids: [SID_A, SID_B],
    rooms: [
      { room: 'lobby', members: [SID_A, SID_B] },
      { room: 'ops', members: [SID_B] },
    ],
    presence: {
      clients: 3,
      users: 2,
      members: [
        { sid: SID_A, id: SID_A.slice(0, 8), user: 'ada', node: 'n1', joinedAt: 0 },
        { sid: SID_B, id: SID_B.slice(0, 8), user: null, node: 'n2', joinedAt: 0 },
      ],
      next: SID_B,
    },
    // 200 deliveries a second, as a counter read at each request.
    info: () => ({
      version: '0.1.0',
      node: 'n1',
      count: 3,
      sessions: 3,
      sse: 2,
      polling: 1,
      deliveries: Math.floor(((Date.now() - started) * 200) / 1000),
      nodes: [
        { node: 'n1', sessions: 2, sse: 2, polling: 0 },
        { node: 'n2', sessions: 1, sse: 0, polling: 1 },
      ],
    }),
  };
}

/** The table's rows as arrays of cell texts. */
function rows(page, selector) {
  return page.$$eval(`${selector} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
}

/** What a page keeps where a key could leak: storage, cookies, its URL. */
function keyPlaces(page) {
  return page.evaluate(() => ({
    local: Object.keys(localStorage).map((k) => [k, localStorage.getItem(k)]),
    session: Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)]),
    cookie: document.cookie,
    url: location.href,
  }));
}

/** Checks that the key left the page only as the Authorization header. */
function assertKeyOnlyInHeaders(requests) {
  for (const r of requests) {
    assert.ok(!r.url.includes(KEY), `the key is in a URL: ${r.url}`);
    assert.ok(!(r.body ?? '').includes(KEY), `the key is in a body: ${r.url}`);
    if (new URL(r.url).pathname.startsWith('/api/')) {
      assert.equal(r.headers.authorization, 'Bearer ' + KEY, r.url);
    } else {
      assert.equal(r.headers.authorization, undefined, r.url);
    }
  }
}

test('opened without a key, the page shows only the key form and asks the server nothing',
  { timeout: TEST_TIMEOUT }, () => withServer({ extra: ['--api-key', KEY] }, async (server) => {
  const admin = await openAdmin(server);
  assert.equal(await visible(admin.page, '#key-form'), true);
  assert.equal(await visible(admin.page, '#dashboard'), false);
  assert.equal(await visible(admin.page, '#sign-out'), false);
  // Absence can only be checked over a span: three of the page's poll
  // periods, in which a polling page would have asked at least twice.
  await new Promise((r) => setTimeout(r, 3 * INFO_EVERY_MS));
  assert.deepEqual(admin.apiRequests(), []);
  assert.deepEqual(admin.requests.map((r) => new URL(r.url).pathname).sort(),
    ['/admin', '/public/admin.css', '/public/admin.js']);
  assert.deepEqual(await keyPlaces(admin.page),
    { local: [], session: [], cookie: '', url: server.url + '/admin' });
  assert.deepEqual(admin.errors, []);
  await admin.context.close();
}));

test('a refused key is said so and asked for again; the right one is kept for the tab and only sent as a header',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const state = mockState();
  const admin = await openAdmin(server, { setup: (c) => mockApi(c, state) });
  const { page } = admin;

  await enterKey(page, 'wrong-key');
  await eventually(() => page.textContent('#message'), (t) => /refused this key \(invalid api key\)/.test(t),
    SLOW, 'the refusal to be shown');
  assert.equal(await visible(page, '#key-form'), true);
  assert.equal(await visible(page, '#dashboard'), false);
  assert.equal(await page.inputValue('#key'), '');
  assert.deepEqual((await keyPlaces(page)).session, []);
  // Refused once, the page stops asking until another key is entered: at
  // most one request of each of its three polls (info, rooms, presence).
  const refused = admin.apiRequests().length;
  assert.ok(refused >= 1 && refused <= 3, `${refused} requests with the wrong key`);

  await enterKey(page, KEY);
  await page.waitForSelector('#dashboard', { state: 'visible' });
  assert.equal(await visible(page, '#key-section'), false);
  assert.equal(await visible(page, '#message'), false);
  assert.equal(admin.apiRequests().length >= refused + 1, true);
  assert.deepEqual(await keyPlaces(page),
    { local: [], session: [['ssio.admin.key', KEY]], cookie: '', url: server.url + '/admin' });
  assertKeyOnlyInHeaders(admin.requests.filter((r) => r.headers.authorization !== 'Bearer wrong-key'));

  // A reload in the same tab goes straight to the dashboard.
  await page.reload();
  await page.waitForSelector('#dashboard', { state: 'visible' });
  assert.equal(await visible(page, '#key-section'), false);

  // A key revoked on the server sends the page back to the form.
  state.key = 'rotated';
  await page.waitForSelector('#key-form', { state: 'visible', timeout: SHOWN_WITHIN_MS * 2 });
  assert.match(await page.textContent('#message'), /refused this key/);
  assert.equal(await visible(page, '#dashboard'), false);
  assert.deepEqual((await keyPlaces(page)).session, []);
  assert.deepEqual(admin.errors, []);
  await admin.context.close();
}));

test('a server with no API is said so and nothing more is asked',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const state = { ...mockState(), off: true };
  const admin = await openAdmin(server, { setup: (c) => mockApi(c, state) });
  await enterKey(admin.page, KEY);
  await eventually(() => admin.page.textContent('#message'), (t) => /--api-key/.test(t), SLOW,
    'the page to say the API is off');
  assert.equal(await visible(admin.page, '#key-form'), true);
  assert.equal(await visible(admin.page, '#dashboard'), false);
  assert.deepEqual((await keyPlaces(admin.page)).session, []);
  await admin.context.close();
}));

test('the dashboard shows counts by transport and node, rooms with members, and both charts',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const state = mockState();
  const admin = await openAdmin(server, { setup: (c) => mockApi(c, state) });
  const { page } = admin;
  await enterKey(page, KEY);
  await page.waitForSelector('#dashboard', { state: 'visible' });

  await eventually(() => page.textContent('#count'), (t) => t === '3', SLOW, 'the count');
  assert.equal(await page.textContent('#server'), 'ssio 0.1.0 · node n1');
  assert.deepEqual(await rows(page, '#nodes'), [
    ['n1', '2', '2', '0'],
    ['n2', '1', '0', '1'],
    ['all', '3', '2', '1'],
  ]);
  await eventually(() => rows(page, '#rooms'), (r) => r.length === 2, SLOW, 'the rooms');
  assert.deepEqual(await rows(page, '#rooms'), [
    ['lobby', `2: ${SID_A}, ${SID_B}`],
    ['ops', `1: ${SID_B}`],
  ]);
  assert.deepEqual(await page.$$eval('#members li', (lis) => lis.map((li) => li.textContent)), [
    `${SID_A} in lobby Disconnect`,
    `${SID_B} in lobby, ops Disconnect`,
  ]);
  // Presence: people and sessions, and the first page of members, by tag.
  await eventually(() => page.textContent('#people'), (t) => t === '2', SLOW, 'the people');
  assert.equal(await page.textContent('#clients'), '3');
  const presence = (await rows(page, '#presence')).map((r) => r.join('|'));
  const timeOf = await page.evaluate(() => new Date(0).toLocaleTimeString());
  assert.deepEqual(presence, [
    `${SID_A.slice(0, 8)}|ada|n1|${timeOf}`,
    `${SID_B.slice(0, 8)}||n2|${timeOf}`,
  ]);
  assert.equal(await visible(page, '#presence-more'), true);

  // Three answers make two rates; the counter rises 200 a second.
  const points = (id) => page.$eval(`#${id} polyline`, (p) => p.getAttribute('points').split(' ').filter(Boolean));
  await eventually(() => points('rate-chart'), (p) => p.length >= 2, SLOW, 'two rate samples');
  assert.ok((await points('count-chart')).length >= 3);
  const rate = Number(await page.textContent('#rate-now'));
  assert.ok(rate >= 150 && rate <= 250, `deliveries/s shown as ${rate}, counter rises 200 a second`);
  assert.equal(await page.textContent('#count-now'), '3');
  assert.equal(await page.textContent('#count-max'), '3');
  // The newest sample is at the right edge; every point is inside the box.
  for (const p of await points('count-chart')) {
    const [x, y] = p.split(',').map(Number);
    assert.ok(x >= 0 && x <= 300 && y >= 0 && y <= 80, p);
  }
  assert.equal((await points('count-chart')).at(-1), '300.0,1.0');

  // Rooms are polled less often than the count.
  await eventually(() => admin.apiRequests().length, (n) => n >= 6, SLOW, 'six requests');
  const paths = admin.apiRequests().map((r) => new URL(r.url).pathname);
  const info = paths.filter((p) => p === '/api/info').length;
  const roomsAsked = paths.filter((p) => p === '/api/rooms').length;
  assert.ok(roomsAsked < info, `${roomsAsked} /api/rooms for ${info} /api/info`);
  assertKeyOnlyInHeaders(admin.requests);
  assert.deepEqual(admin.errors, []);
  await admin.context.close();
}));

test('names from the server are shown as text, never as markup',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const state = mockState();
  const evil = '<img src=x onerror="window.owned=1">';
  state.rooms = [{ room: evil, members: [evil] }];
  const admin = await openAdmin(server, { setup: (c) => mockApi(c, state) });
  await enterKey(admin.page, KEY);
  await eventually(() => rows(admin.page, '#rooms'), (r) => r.length === 1, SLOW, 'the room');
  assert.deepEqual(await rows(admin.page, '#rooms'), [[evil, `1: ${evil}`]]);
  assert.equal(await admin.page.$$eval('main img', (imgs) => imgs.length), 0);
  assert.equal(await admin.page.evaluate(() => window.owned), undefined);
  await admin.context.close();
}));

test('the publish form and the disconnect buttons send exactly the contract\'s JSON',
  { timeout: TEST_TIMEOUT }, () => withServer({}, async (server) => {
  const state = mockState();
  const admin = await openAdmin(server, { setup: (c) => mockApi(c, state) });
  const { page } = admin;
  await enterKey(page, KEY);
  await page.waitForSelector('#dashboard', { state: 'visible' });

  // Data that is not JSON is caught before anything is sent.
  await page.fill('#event', 'news');
  await page.fill('#data', '{oops');
  await page.click('#publish-form button');
  await eventually(() => page.textContent('#publish-result'), (t) => t.startsWith('The data is not JSON'),
    SLOW, 'the JSON error');
  assert.deepEqual(state.posts, []);

  await page.fill('#data', '{"headline": "ssio 1.0", "n": [1, 2]}');
  await page.fill('#room', ' lobby ');
  await page.click('#publish-form button');
  await eventually(() => page.textContent('#publish-result'), (t) => t === 'Published at cursor c-42.',
    SLOW, 'the cursor');
  await page.fill('#room', '');
  await page.fill('#sid', SID_B);
  await page.fill('#data', '"just text"');
  await page.click('#publish-form button');
  await eventually(() => state.posts.length, (n) => n === 2, SLOW, 'the second publish');
  assert.deepEqual(state.posts, [
    { path: '/api/publish', body: { event: 'news', data: { headline: 'ssio 1.0', n: [1, 2] }, room: 'lobby' } },
    { path: '/api/publish', body: { event: 'news', data: 'just text', sid: SID_B } },
  ]);
  for (const r of admin.apiRequests().filter((r) => r.method === 'POST')) {
    assert.equal(r.headers['content-type'], 'application/json');
  }

  await page.waitForSelector(`#members li[data-sid="${SID_B}"] button`);
  await page.click(`#members li[data-sid="${SID_B}"] button`);
  await eventually(() => page.textContent('#disconnect-result'), (t) => t === `Disconnected ${SID_B}.`,
    SLOW, 'the disconnect');
  assert.deepEqual(state.posts.at(-1), { path: '/api/disconnect', body: { sid: SID_B } });

  // An unknown session is the server's own words.
  await page.fill('#disconnect-sid', 'no-such-session');
  await page.click('#disconnect-form button');
  await eventually(() => page.textContent('#disconnect-result'), (t) => t.startsWith('Could not'), SLOW,
    'the refusal');
  assert.equal(await page.textContent('#disconnect-result'),
    'Could not disconnect no-such-session: 404 unknown session');
  assert.equal(await visible(page, '#dashboard'), true);
  assertKeyOnlyInHeaders(admin.requests);
  assert.deepEqual(admin.errors, []);
  await admin.context.close();
}));

// Against the real server API.

test('with the real API, the page shows a page joining and leaving within one poll, and its publish form and disconnect button reach that page',
  { timeout: TEST_TIMEOUT }, () => withServer({ extra: ['--api-key', KEY] }, async (server) => {
  const admin = await openAdmin(server);
  const { page } = admin;
  await enterKey(page, KEY);
  await page.waitForSelector('#dashboard', { state: 'visible' });
  await eventually(() => page.textContent('#count'), (t) => t === '0', SLOW, 'a count of 0');
  assert.deepEqual(await rows(page, '#nodes'), [['(this server)', '0', '0', '0'], ['all', '0', '0', '0']]);

  const demo = await openConnected(browser, server.url + '/');
  const joined = Date.now();
  await eventually(() => page.textContent('#count'), (t) => t === '1', SHOWN_WITHIN_MS, 'the page joining');
  console.log(`admin page showed the join ${Date.now() - joined} ms after the page connected`);
  await eventually(() => rows(page, '#nodes'), (r) => r.at(-1).join() === 'all,1,1,0', SHOWN_WITHIN_MS,
    'the page counted on SSE');

  // The publish form reaches the page.
  await page.fill('#event', 'chat message');
  await page.fill('#data', '{"sid": "admin", "message": "hello from the admin page"}');
  await page.click('#publish-form button');
  await eventually(() => page.textContent('#publish-result'), (t) => /^Published at cursor \S+\.$/.test(t),
    SLOW, 'a cursor');
  await eventually(() => messageTexts(demo.page), (m) => m.includes('hello from the admin page'), SLOW,
    'the message on the demo page');

  // A room the page is put in shows with its member and a button.
  const { id } = await socketState(demo.page);
  const res = await fetch(server.url + '/api/join', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ sid: id, room: 'lobby' }),
  });
  assert.equal(res.status, 200, await res.text());
  await eventually(() => rows(page, '#rooms'), (r) => r.length === 1, SLOW, 'the room');
  assert.deepEqual(await rows(page, '#rooms'), [['lobby', `1: ${id}`]]);

  // The page leaves: closed, it is gone from the count within one poll.
  await demo.page.close();
  const left = Date.now();
  await eventually(() => page.textContent('#count'), (t) => t === '0', SHOWN_WITHIN_MS, 'the page leaving');
  console.log(`admin page showed the leave ${Date.now() - left} ms after the page closed`);
  await demo.context.close();

  // The disconnect button ends a session for good.
  const other = await openConnected(browser, server.url + '/');
  const reasons = [];
  await other.page.exposeFunction('sawDisconnect', (r) => reasons.push(r));
  await other.page.evaluate(() => socket.on('disconnect', (r) => window.sawDisconnect(r)));
  const otherId = (await socketState(other.page)).id;
  await fetch(server.url + '/api/join', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ sid: otherId, room: 'lobby' }),
  });
  await page.waitForSelector(`#members li[data-sid="${otherId}"] button`, { timeout: SLOW });
  await page.click(`#members li[data-sid="${otherId}"] button`);
  await eventually(() => reasons, (r) => r.length === 1, SLOW, 'the disconnect on the page');
  assert.deepEqual(reasons, ['server disconnect']);
  await eventually(() => page.textContent('#count'), (t) => t === '0', SHOWN_WITHIN_MS, 'the count after');
  assert.equal((await socketState(other.page)).connected, false);
  await other.context.close();

  assertKeyOnlyInHeaders(admin.requests);
  assert.deepEqual(await keyPlaces(page),
    { local: [], session: [['ssio.admin.key', KEY]], cookie: '', url: server.url + '/admin' });
  assert.deepEqual(admin.errors, []);
  await admin.context.close();
}));
