// Shared fixtures for the browser tests: a real ssio process, Debian's
// Chromium driven through playwright-core, and bounded waits that fail with
// what they last saw. nginx and redis-server are in daemons.mjs.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { chromium } from 'playwright-core';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = join(ROOT, 'target', 'release', 'ssio');
// The feature-test app (rooms, acks, middleware) as its own server.
export const FEATURES_BIN = join(ROOT, 'target', 'release', 'examples', 'features_server');
export const OUTPUT = join(ROOT, 'test-output');

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Generous where the machine's speed is not what is being tested: other
// work may be compiling on the same two cores.
export const SLOW = 15_000;

// Every test's outer bound, for the waits that have no bound of their own
// (a page.evaluate that never returns, say).
export const TEST_TIMEOUT = 90_000;

/**
 * Starts `target/release/ssio` on 127.0.0.1 and resolves once its log line
 * names the port. `port` 0 picks a free one; `extra` flags are appended.
 */
export async function startServer({ port = 0, pingInterval = 25_000, pingTimeout = 20_000, bin = BIN, args: extraArgs = [], extra = [] } = {}) {
  const args = [
    '--host', '127.0.0.1',
    '--port', String(port),
    '--ping-interval', String(pingInterval),
    '--ping-timeout', String(pingTimeout),
    '--shutdown-timeout', '3000',
    ...extraArgs,
    ...extra,
  ];
  // The log line is how the port is learned, so no outside filter may hide it.
  const child = spawn(bin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
  });
  let log = '';
  const exited = once(child, 'exit');
  const found = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      log += chunk;
      const m = /listening on (https?):\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (m) resolve({ scheme: m[1], port: Number(m[2]) });
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { log += chunk; });
    exited.then(
      ([code, signal]) => reject(new Error(`ssio exited (${code ?? signal}) before listening:\n${log}`)),
      () => {},
    );
    child.on('error', reject);
  });
  const { scheme, port: actual } = await withTimeout(found, SLOW, () => `ssio did not log its port:\n${log}`);
  const server = {
    port: actual,
    url: `${scheme}://127.0.0.1:${actual}`,
    get log() { return log; },
    /** SIGTERM (a graceful shutdown) and wait for the exit status. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      try {
        const [code] = await withTimeout(exited, SLOW, () => `ssio did not exit after SIGTERM:\n${log}`);
        return code;
      } catch (e) {
        child.kill('SIGKILL');
        throw e;
      }
    },
  };
  return server;
}

/**
 * Runs `body` against a server of its own, then stops the server and
 * checks that it shut down cleanly (unless `body` already failed).
 */
export async function withServer(options, body) {
  const server = await startServer(options);
  let ok = false;
  try {
    const result = await body(server);
    ok = true;
    return result;
  } finally {
    const code = await server.stop().catch((e) => e);
    if (ok && code !== 0) throw new Error(`ssio exit status after SIGTERM: ${code}\n${server.log}`);
  }
}

export async function stats(server) {
  const res = await fetch(server.url + '/stats');
  if (res.status !== 200) throw new Error(`/stats answered ${res.status}`);
  // The live counts: a page that closed leaves a session in the recovery
  // window for as long as the window lasts, which the Rust suites check.
  const { away, ...live } = await res.json();
  if (!Number.isInteger(away)) throw new Error(`/stats without "away": ${JSON.stringify(live)}`);
  return live;
}

/** Waits until /stats is exactly `expected`. */
export function statsEqual(server, expected, ms = SLOW) {
  return eventually(() => stats(server), (s) => isDeepStrictEqual(s, expected), ms,
    `/stats to be ${JSON.stringify(expected)}`);
}

/** A port nothing listens on right now, for servers that cannot pick their own. */
export async function freePort() {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

export function launchBrowser() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
}

/**
 * One Chromium for every test in the calling file: launched before the
 * first test, closed after the last. What it returns stands for the
 * browser in `openPage` and `newContext` once the tests run.
 */
export function useBrowser() {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });
  return {
    newContext(options) {
      if (!browser) throw new Error('the browser is launched before the first test: use it inside one');
      return browser.newContext(options);
    },
  };
}

/**
 * A browser context of its own (a connection pool and storage, as one
 * user's browser), whose waits are bounded by SLOW.
 */
export async function newContext(browser, options) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(SLOW);
  return context;
}

/**
 * Opens `url` in a browser context of its own, so that every page has its
 * own connection pool and no page waits behind another's held requests.
 * `polling` removes EventSource before any page script runs; `alone`
 * removes the Web Locks API, so that the page never shares a stream with
 * other tabs and speaks the plain per-session protocol.
 */
export async function openPage(browser, url, { polling = false, alone = false } = {}) {
  const context = await newContext(browser, { viewport: { width: 720, height: 560 } });
  if (polling) await context.addInitScript(() => { delete window.EventSource; });
  if (alone) {
    await context.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'locks', { get: () => undefined });
    });
  }
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  await page.goto(url, { timeout: SLOW });
  return { context, page, errors };
}

/**
 * Opens a page as `openPage` does, then waits until its socket is
 * connected on `transport` (by default the one `polling` leaves it:
 * polling if forced, else SSE), within `ms`.
 */
export async function openConnected(browser, url, { polling = false, alone = false, transport, ms = SLOW } = {}) {
  const handle = await openPage(browser, url, { polling, alone });
  await connected(handle.page, transport ?? (polling ? 'polling' : 'sse'), ms);
  return handle;
}

/**
 * Closes pages the way a user closes tabs, waits until the server has let
 * their sessions go (`remaining` left), then closes their contexts. Closing
 * a context at once would also cancel a page's in-flight close beacon, and
 * a polling session would then linger until pingTimeout.
 */
export async function closePages(server, handles, remaining = 0) {
  for (const h of handles) await h.page.close();
  await eventually(() => stats(server), (s) => s.count === remaining, SLOW,
    `the server to count ${remaining} after the pages closed`);
  for (const h of handles) await h.context.close();
}

/** The page's socket, as plain data. */
export function socketState(page) {
  return page.evaluate(() => ({ connected: socket.connected, transport: socket.transport, id: socket.id }));
}

/** The number in the page's "N users online". */
export async function shownCount(page) {
  const text = await page.textContent('#num-users');
  const m = /^(\d+) users online$/.exec(text);
  if (!m) throw new Error(`unexpected user count text: ${JSON.stringify(text)}`);
  return Number(m[1]);
}

/** Waits until the page's socket is connected on `transport`. */
export async function connected(page, transport, ms = SLOW) {
  await eventually(() => socketState(page), (s) => s.connected && s.transport === transport, ms,
    `socket connected over ${transport}`);
}

/**
 * Polls `read` until `check` accepts its value or `ms` pass; on timeout
 * fails with the last value read, so the failure says what was wrong.
 */
export async function eventually(read, check, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await read();
      lastError = undefined;
      if (check(last)) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const seen = lastError ? `error: ${lastError.message}` : JSON.stringify(last);
      throw new Error(`timed out after ${ms} ms waiting for ${what}; last seen ${seen}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The texts of the chat messages the page shows, oldest first. */
export function messageTexts(page) {
  return page.$$eval('#messages li .text', (els) => els.map((e) => e.textContent));
}

/** Sends `text` through the page's chat form, as a user does. */
export async function sendMessage(page, text) {
  await page.fill('#m', text);
  await page.click('#chat-form button');
}

/** Waits until every page shows `n` users online. */
export function allShow(pages, n, ms = SLOW) {
  return eventually(() => Promise.all(pages.map(shownCount)), (counts) => counts.every((c) => c === n), ms,
    `every page to show ${n} users online`);
}

export async function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(typeof message === 'function' ? message() : message)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Samples the server's count every 20 ms from now until `stop`, as
 * [ms, count] pairs in `timeline`.
 */
export function sampleCounts(server) {
  const timeline = [];
  let sampling = true;
  const done = (async () => {
    while (sampling) {
      timeline.push([Date.now(), (await stats(server)).count]);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return {
    timeline,
    async stop() {
      sampling = false;
      await done;
    },
  };
}

/**
 * Every stretch in `timeline` ([ms, count] pairs, in order, ending at
 * `end`) where the count was above `limit`, with how long it lasted.
 */
export function overCounts(timeline, limit, end) {
  const stretches = [];
  for (let i = 0; i < timeline.length; i++) {
    const [at, n] = timeline[i];
    if (n > limit) {
      const until = i + 1 < timeline.length ? timeline[i + 1][0] : end;
      stretches.push({ count: n, ms: Math.round(until - at) });
    }
  }
  return stretches;
}

export async function outputDir() {
  await mkdir(OUTPUT, { recursive: true });
  return OUTPUT;
}
