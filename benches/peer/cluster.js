'use strict';
// socket.io with its Redis adapter: the user-count app of server.js plus a
// chat, as one node of several on one Redis. The count lives in Redis
// (INCR/DECR), since each node's own counter sees only its own sockets; every
// node then emits the value its own change produced, through the adapter.
//
// Usage: node cluster.js <port> [redis url]   (0 picks a free port; without
// a url: one node alone, no adapter, a local counter)
// WebSocket only: socket.io's long-polling needs sticky sessions (each of a
// session's polls must reach the node that holds it), and the nodes here
// are reached directly, with no balancer in front.
// Prints "listening on http://127.0.0.1:PORT" once it accepts connections.

const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] ?? 0);
const url = process.argv[3];

async function main() {
  const options = { transports: ['websocket'] };
  let change;
  if (url) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pub = createClient({ url });
    const sub = pub.duplicate();
    const store = pub.duplicate();
    await Promise.all([pub.connect(), sub.connect(), store.connect()]);
    options.adapter = createAdapter(pub, sub);
    change = (d) => (d > 0 ? store.incr('{sio}:count') : store.decr('{sio}:count'));
  } else {
    let currentUsers = 0;
    change = async (d) => (currentUsers += d);
  }
  const httpServer = http.createServer((req, res) => {
    if (!req.url.startsWith('/socket.io/')) {
      res.writeHead(404);
      res.end();
    }
  });
  const io = new Server(httpServer, options);
  io.on('connection', async (socket) => {
    socket.on('chat message', (msg) => io.emit('chat message', msg));
    socket.on('disconnect', async () => io.emit('user count', await change(-1)));
    io.emit('user count', await change(1));
  });
  httpServer.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
    console.log(`listening on http://127.0.0.1:${httpServer.address().port}`);
  });
  const stop = () => {
    io.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
