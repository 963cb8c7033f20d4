'use strict';
// The socket.io server ssio is compared with: the same user-count app and
// chat, so the two differ only in the transport stack underneath.
//
// Usage: node server.js [port]   (or PORT=...; 0 picks a free port)
// PING_INTERVAL / PING_TIMEOUT (ms) override socket.io's heartbeat, so that
// abandoned sessions expire as quickly as ssio's do in the same scenario.
// Prints "listening on http://127.0.0.1:PORT" once it accepts connections.
// GET /heap answers {"heapUsed":..,"rss":..,"sessions":..} so the bench can
// read Node's own view of memory next to the RSS it reads from /proc.
// GET / is a page showing the live user count (index.html), for the benches
// that open real browser pages.

const fs = require('fs');
const http = require('http');
const path = require('path');
const { Server } = require('socket.io');

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
const page = fs.readFileSync(path.join(__dirname, 'index.html'));

const httpServer = http.createServer((req, res) => {
  if (req.url === '/heap') {
    // A forced collection first when available, so the figure is live data
    // rather than whatever garbage the last sweep left behind.
    if (typeof global.gc === 'function') global.gc();
    const m = process.memoryUsage();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ heapUsed: m.heapUsed, rss: m.rss, sessions: io.engine.clientsCount }));
    return;
  }
  if (req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page);
    return;
  }
  // socket.io answers its own paths before this handler runs; anything else
  // is not part of the app.
  if (!req.url.startsWith('/socket.io/')) {
    res.writeHead(404);
    res.end();
  }
});

const heartbeat = {};
if (process.env.PING_INTERVAL) heartbeat.pingInterval = Number(process.env.PING_INTERVAL);
if (process.env.PING_TIMEOUT) heartbeat.pingTimeout = Number(process.env.PING_TIMEOUT);
const io = new Server(httpServer, heartbeat);

let currentUsers = 0;
io.on('connection', (socket) => {
  ++currentUsers;
  io.emit('user count', currentUsers);
  socket.on('chat message', (msg) => io.emit('chat message', msg));
  socket.on('disconnect', () => {
    --currentUsers;
    io.emit('user count', currentUsers);
  });
});

// The same backlog ssio gets, so connection bursts meet the same kernel queue.
httpServer.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
  console.log(`listening on http://127.0.0.1:${httpServer.address().port}`);
});

const stop = () => {
  io.close();
  process.exit(0);
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
