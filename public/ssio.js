/* ssio browser client: a socket.io-style API over EventSource. */
(function (global) {
  'use strict';
  function io(url) {
    var base = url || '';
    var handlers = {};
    var socket = { id: null, connected: false, transport: 'sse' };
    function fire(event, data) {
      (handlers[event] || []).slice().forEach(function (fn) { fn(data); });
    }
    socket.on = function (event, fn) { (handlers[event] = handlers[event] || []).push(fn); return socket; };
    socket.emit = function (event, data) {
      if (!socket.id) return socket;
      fetch(base + '/emit?sid=' + socket.id, { method: 'POST', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ event: event, data: data }) });
      return socket;
    };
    var es = new EventSource(base + '/events');
    es.addEventListener('connect', function (e) {
      var hs = JSON.parse(e.data);
      socket.id = hs.sid; socket.connected = true; fire('connect');
    });
    es.onmessage = null;
    var origAdd = socket.on;
    socket.on = function (event, fn) {
      if (!handlers[event] && event !== 'connect' && event !== 'disconnect') {
        es.addEventListener(event, function (e) { fire(event, JSON.parse(e.data)); });
      }
      return origAdd(event, fn);
    };
    return socket;
  }
  global.io = io;
})(this);
