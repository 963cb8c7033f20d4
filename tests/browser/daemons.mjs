// nginx and redis-server for the browser tests that need them: each in a
// temporary directory of its own, on a free port, ready when started, and
// gone (directory included) when stopped.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { SLOW, eventually, freePort, withTimeout } from './helpers.mjs';

const NGINX = '/usr/sbin/nginx';

/**
 * The part of an nginx config every test nginx shares: in the foreground,
 * its pid, logs and temporary files in `dir`, then an open `http` block for
 * the caller's upstreams and servers (and the closing brace).
 */
function nginxPrelude(dir, { connections = 512, master = true } = {}) {
  return `daemon off;
master_process ${master ? 'on' : 'off'};
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections ${connections}; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
`;
}

/**
 * Starts nginx on a free port with `site(port)` (the `upstream` and
 * `server` blocks, listening on `port`) inside the shared prelude, whose
 * options it takes (`connections`, `master`), and waits until `/stats`
 * answers through it. `stop` ends it and removes its directory.
 */
export async function startNginxWith(site, prelude = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-nginx-'));
  const port = await freePort();
  try {
    await writeFile(join(dir, 'nginx.conf'), `${nginxPrelude(dir, prelude)}${await site(port)}}\n`);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
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
    await eventually(async () => (await fetch(url + '/stats')).status, (st) => st === 200, SLOW,
      `nginx on port ${port} to proxy /stats (log: ${log})`);
  } catch (e) {
    child.kill('SIGKILL');
    await stop();
    throw e;
  }
  return { url, stop };
}

/**
 * nginx in front of ssio on `upstream`: one port, or several behind one
 * round-robin `upstream` with no affinity, no node ever marked down, and
 * kept-alive connections to them. Speaks HTTP/1.1 to the browser.
 *
 * `buffering` true makes it a buffering proxy as corporate ones are: nginx's
 * own defaults for proxying, spelled out. The upstream request is HTTP/1.0,
 * so the SSE response comes back close-delimited, and a buffered proxy then
 * holds it (headers included) until a buffer fills, which a trickle of small
 * events never does. Over HTTP/1.1 the response would be chunked and nginx
 * forwards each complete chunk even with buffering on, so that would not be
 * a buffering proxy at all. X-Accel-Buffering is ignored so that the
 * server's "no" cannot switch buffering off.
 *
 * `buffering` false passes streams through (HTTP/1.1 upstream, unbuffered),
 * and cuts any response idle for `readTimeout`.
 *
 * The other options go to the prelude (`connections`, `master`).
 */
export function startNginx(upstream, { buffering = false, readTimeout = '1h', ...prelude } = {}) {
  const proxying = buffering
    ? 'proxy_http_version 1.0; proxy_buffering on; proxy_ignore_headers X-Accel-Buffering;'
    : `proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout ${readTimeout};`;
  const nodes = Array.isArray(upstream)
    ? `  upstream ssio {
${upstream.map((p) => `    server 127.0.0.1:${p} max_fails=0;`).join('\n')}
    keepalive 64;
  }
`
    : '';
  const target = Array.isArray(upstream) ? 'ssio' : `127.0.0.1:${upstream}`;
  return startNginxWith((port) => `${nodes}  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://${target};
      ${proxying}
    }
  }
`, prelude);
}

/** Runs `body` with nginx in front of `upstream` (as `startNginx`), then stops it. */
export async function withNginx(upstream, options, body) {
  const proxy = await startNginx(upstream, options);
  try {
    return await body(proxy);
  } finally {
    await proxy.stop();
  }
}

/** Resolves once something accepts connections on 127.0.0.1:`port`. */
function listening(port) {
  return eventually(() => new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.on('error', () => resolve(false));
  }), (ok) => ok, SLOW, `something listening on ${port}`);
}

/**
 * A redis-server of its own on a free port, keeping nothing on disk.
 * `stop` kills it (SIGKILL: nothing to save) and removes its directory.
 */
export async function startRedis() {
  const dir = await mkdtemp(join(tmpdir(), 'ssio-redis-'));
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1',
    '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (c) => { log += c; });
  child.stderr.on('data', (c) => { log += c; });
  const exited = once(child, 'exit').catch(() => {});
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await withTimeout(exited, SLOW, () => `redis-server did not exit:\n${log}`);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await listening(port);
  } catch (e) {
    await stop();
    throw new Error(`${e.message}\n${log}`);
  }
  return { url: `redis://127.0.0.1:${port}/`, stop };
}
