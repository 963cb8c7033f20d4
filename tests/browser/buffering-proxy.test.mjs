// Behind a proxy that buffers responses, an SSE stream never delivers its
// first event: the client must notice and fall back to long-polling on its
// own, and the server must not keep counting the abandoned stream.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import {
  SLOW, TEST_TIMEOUT, allShow, closePages, connected, eventually, freePort, launchBrowser,
  openPage, socketState, statsEqual, withServer, withTimeout,
} from './helpers.mjs';

const NGINX = '/usr/sbin/nginx';

// nginx's own defaults for proxying, spelled out. The upstream request is
// HTTP/1.0, so the SSE response comes back close-delimited, and a buffered
// proxy then holds it (headers included) until a buffer fills, which a
// trickle of small events never does. Over HTTP/1.1 the response would be
// chunked and nginx forwards each complete chunk even with buffering on, so
// that would not be a buffering proxy at all. X-Accel-Buffering is ignored
// so that the server's "no" cannot switch buffering off.
function nginxConf(dir, port, upstream) {
  return `daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://127.0.0.1:${upstream};
      proxy_http_version 1.0;
      proxy_buffering on;
      proxy_ignore_headers X-Accel-Buffering;
    }
  }
}
`;
}

async function startNginx(upstreamPort) {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-nginx-'));
  const port = await freePort();
  await writeFile(join(dir, 'nginx.conf'), nginxConf(dir, port, upstreamPort));
  const child = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (c) => { log += c; });
  child.stderr.on('data', (c) => { log += c; });
  const exited = once(child, 'exit').catch(() => {});
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await withTimeout(exited, SLOW, () => `nginx did not exit after SIGTERM:\n${log}`);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await eventually(async () => (await fetch(url + '/stats')).status, (s) => s === 200, SLOW,
      `nginx on port ${port} to proxy /stats (log: ${log})`);
  } catch (e) {
    child.kill('SIGKILL');
    await stop();
    throw e;
  }
  return { url, stop };
}

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** A server of its own behind a proxy of its own. */
function withProxy(body) {
  // A long pingTimeout, so that only the client's own close message can
  // explain a session that ends promptly.
  return withServer({ pingTimeout: 20_000 }, async (server) => {
    const proxy = await startNginx(server.port);
    try {
      await body(server, proxy);
    } finally {
      await proxy.stop();
    }
  });
}

test('the proxy really holds an SSE stream back, and lets go of it upstream when the client leaves',
  { timeout: TEST_TIMEOUT }, () => withProxy(async (server, proxy) => {
  let bytes = 0;
  let responded = false;
  const req = request(proxy.url + '/events', (res) => {
    responded = true;
    res.on('data', (c) => { bytes += c.length; });
  });
  req.on('error', () => {});
  req.end();
  // The server has produced the stream: the connect event is written.
  await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });
  // Proving that something does not arrive takes a window: an unbuffered
  // proxy passes these few bytes on within milliseconds.
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual({ responded, bytes }, { responded: false, bytes: 0 });
  req.destroy();
  await statsEqual(server, { count: 0, polling: 0, sessions: 0, sse: 0 });
}));

test('a page behind the proxy falls back to polling by itself and shows the right count',
  { timeout: TEST_TIMEOUT }, () => withProxy(async (server, proxy) => {
  const direct = await openPage(browser, server.url + '/');
  await connected(direct.page, 'sse');

  const t0 = Date.now();
  const proxied = await openPage(browser, proxy.url + '/');
  // connectTimeout (3 s) plus a handshake; bounded well inside "a few seconds".
  await connected(proxied.page, 'polling', 8000);
  console.log(`fell back to polling ${Date.now() - t0} ms after opening the page`);
  // Watched from the fallback on: the page's first stream attempt may start
  // before or after the page has loaded (a shared stream waits for its lock).
  const streams = [];
  proxied.page.on('request', (req) => {
    if (new URL(req.url()).pathname === '/events') streams.push(req.url());
  });

  await allShow([direct.page, proxied.page], 2);
  // The abandoned stream was counted while it lasted; it must not linger.
  await statsEqual(server, { count: 2, polling: 1, sessions: 2, sse: 1 });
  await allShow([direct.page, proxied.page], 2);
  assert.equal((await socketState(proxied.page)).transport, 'polling');

  // Chat goes through the proxy on the fallback transport: out as an emit,
  // back in a poll.
  await proxied.page.fill('#m', 'through the proxy');
  await proxied.page.click('#chat-form button');
  for (const { page } of [direct, proxied]) {
    await eventually(() => page.$$eval('#messages .text', (els) => els.map((e) => e.textContent)),
      (texts) => JSON.stringify(texts) === '["through the proxy"]', SLOW, 'the message on both pages');
  }

  // Losing the session later does not send the page back to SSE.
  const { id } = await socketState(proxied.page);
  assert.equal((await fetch(`${server.url}/close?sid=${id}`, { method: 'POST' })).status, 204);
  await eventually(() => socketState(proxied.page), (s) => s.connected && s.id !== id, SLOW, 'a new session');
  assert.equal((await socketState(proxied.page)).transport, 'polling');
  await allShow([direct.page, proxied.page], 2);
  assert.deepEqual(streams, [], 'no stream attempt after the first');

  const t1 = Date.now();
  await proxied.page.close();
  await allShow([direct.page], 1, Math.max(0, 1000 - (Date.now() - t1)));
  await statsEqual(server, { count: 1, polling: 0, sessions: 1, sse: 1 });

  await proxied.context.close();
  await closePages(server, [direct]);
  assert.deepEqual([...direct.errors, ...proxied.errors], []);
}));
