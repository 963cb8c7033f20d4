// Three ssio nodes on one redis-server behind a round-robin nginx with no
// affinity: Chromium pages over SSE and forced long-polling all show the
// same exact count and chat with each other, whichever node each request
// lands on.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, allShow, connected, eventually, freePort, launchBrowser, openPage,
  nginxPrelude, socketState, startServer, withTimeout,
} from './helpers.mjs';

const NGINX = '/usr/sbin/nginx';

/** Resolves once something accepts connections on 127.0.0.1:`port`. */
function listening(port) {
  return eventually(() => new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), (ok) => ok, SLOW, `something listening on ${port}`);
}

/** A process of our own in a temp dir; `stop` kills it and removes the dir. */
async function daemon(program, args, dir, port) {
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (c) => { log += c; });
  child.stderr.on('data', (c) => { log += c; });
  const exited = once(child, 'exit').catch(() => {});
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await withTimeout(exited, SLOW, () => `${program} did not exit:\n${log}`);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await listening(port);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n${log}`);
  }
  return { stop };
}

async function startRedis() {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-redis-'));
  const port = await freePort();
  const d = await daemon('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', dir], dir, port);
  return { ...d, url: `redis://127.0.0.1:${port}/` };
}

async function startNginx(upstreams) {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-nginx-'));
  const port = await freePort();
  const servers = upstreams.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join('\n');
  await writeFile(join(dir, 'nginx.conf'), `${nginxPrelude(dir, { connections: 1024, master: false })}  upstream ssio {
${servers}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://ssio;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
`);
  const d = await daemon(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], dir, port);
  return { ...d, url: `http://127.0.0.1:${port}` };
}

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

test('pages behind round-robin nginx on three nodes show one exact count and chat across nodes',
  { timeout: TEST_TIMEOUT }, async () => {
  const redis = await startRedis();
  const nodes = [];
  let proxy;
  const pages = [];
  try {
    for (const id of ['a', 'b', 'c']) {
      nodes.push(await startServer({ extra: ['--redis', redis.url, '--node-id', id] }));
    }
    proxy = await startNginx(nodes.map((n) => n.port));
    for (const polling of [false, true, false, true]) {
      const h = await openPage(browser, proxy.url + '/', { polling });
      await connected(h.page, polling ? 'polling' : 'sse');
      pages.push(h);
    }
    await allShow(pages.map((h) => h.page), 4);

    // A message from a polling page reaches every page, once.
    await pages[1].page.evaluate(() => socket.emit('chat message', 'across nodes'));
    const texts = (page) => page.$$eval('#messages li .text', (els) => els.map((e) => e.textContent));
    for (const h of pages) {
      await eventually(() => texts(h.page), (t) => t.includes('across nodes'), SLOW, 'the message');
    }
    await new Promise((r) => setTimeout(r, 300));
    for (const h of pages) {
      assert.deepEqual(await texts(h.page), ['across nodes']);
    }

    // Requests landed on more than one node.
    const seen = new Set();
    for (let i = 0; i < 6; i++) {
      const res = await fetch(proxy.url + '/stats');
      seen.add(res.headers.get('x-ssio-node'));
    }
    assert.deepEqual([...seen].sort(), ['a', 'b', 'c']);

    // A polling page closes: its beacon may land on any node.
    const closing = pages.splice(1, 1)[0];
    const closingId = (await socketState(closing.page)).id;
    assert.ok(closingId);
    await closing.page.close();
    await allShow(pages.map((h) => h.page), 3);
    await closing.context.close();
    for (const h of pages) assert.deepEqual(h.errors, []);
  } finally {
    for (const h of pages) await h.context.close().catch(() => {});
    await proxy?.stop();
    for (const n of nodes) await n.stop().catch(() => {});
    await redis.stop();
  }
});
