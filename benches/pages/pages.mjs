// The browser side of the `pages` bench: opens N pages of one server's
// user-count page in Debian's Chromium, each in a browser context of its
// own (its own connection pool and storage, as N users' browsers), one
// after another, and records every count each page shows.
//
// Usage: node pages.mjs URL N [W]
//
// Page i is opened only once every page before it shows i - 1, and the
// next one only once all i show i, so no count can reach a page behind a
// newer one and be conflated away: page i must show exactly i, i + 1, ...,
// N. Prints one JSON line, {"counts": [[...], ...], "ms": M} (page 1
// first; M the time from the first page's load until all showed N, less
// any pause for the bench), then
// keeps every page open until its stdin closes or gives a line, so that
// the bench can read the server's memory meanwhile. With W (0 < W < N) it
// also stops once W pages show W: it prints {"warm": W} and goes on when
// stdin gives a line, so that the bench can read the memory there too,
// past what the first pages cost the server once. Every wait is bounded;
// on a timeout it prints {"error": "..."} and exits 1.

import { createInterface } from 'node:readline';

import { launchBrowser, newContext, SLOW } from '../../tests/browser/helpers.mjs';

const [url, n, warm] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4] ?? 0)];
if (!url || !Number.isInteger(n) || n < 1 || !Number.isInteger(warm) || warm < 0 || warm >= n) {
  console.error('usage: node pages.mjs URL N [W], 0 <= W < N');
  process.exit(2);
}

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
// Resolves on the bench's next line, or when it closes our stdin.
async function nextLine() {
  await lines.next();
}

// Runs before any of the page's scripts: every count the page writes into
// its count element, in order. A script's write replaces the element's
// text (a record that removes a node); the parser's insertion of the
// markup's own "0 users online" removes none and is not a count received.
function recordCounts() {
  window.shownCounts = [];
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.target.id !== 'num-users' || r.removedNodes.length === 0 || r.addedNodes.length === 0) continue;
      const m = /^(\d+) users online$/.exec(r.addedNodes[0].textContent);
      window.shownCounts.push(m ? Number(m[1]) : r.addedNodes[0].textContent);
    }
  }).observe(document, { childList: true, subtree: true });
}

// Waits inside the page, which checks every 50 ms: polling forty pages
// from here would keep the one core they share busy with the polling.
function shows(page, n) {
  return page.waitForFunction(
    (want) => document.getElementById('num-users')?.textContent === `${want} users online`,
    n,
    { polling: 50, timeout: SLOW },
  );
}

const browser = await launchBrowser();
let failed = false;
try {
  // Every context and its blank page first, which the server never sees,
  // so that opening the pages on it takes no longer than it must: a page
  // load's idle connections stay open only as long as the server's (and
  // the browser's) idle timeout.
  const blank = [];
  for (let i = 0; i < n; i++) {
    const context = await newContext(browser);
    await context.addInitScript(recordCounts);
    blank.push(await context.newPage());
  }
  const start = Date.now();
  let paused = 0;
  const pages = [];
  for (const page of blank) {
    await page.goto(url, { timeout: SLOW });
    pages.push(page);
    const i = pages.length;
    await Promise.all(pages.map((p, k) => shows(p, i).catch(async (e) => {
      const now = await p.textContent('#num-users').catch(() => 'nothing');
      throw new Error(`page ${k + 1} of ${i} did not show ${i} users online within ${SLOW} ms; it shows ${JSON.stringify(now)} (${e.message.split('\n')[0]})`);
    })));
    if (i === warm) {
      console.log(JSON.stringify({ warm }));
      const t = Date.now();
      await nextLine();
      paused += Date.now() - t;
    }
  }
  const ms = Date.now() - start - paused;
  const counts = await Promise.all(pages.map((p) => p.evaluate(() => window.shownCounts)));
  console.log(JSON.stringify({ counts, ms }));
  await nextLine();
} catch (e) {
  failed = true;
  console.log(JSON.stringify({ error: String(e?.message ?? e) }));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
