/* ssio browser client: socket.io-style events over Server-Sent Events, with
 * long-polling where a stream cannot get through. No build step. */
(function (global) {
  'use strict';

  // Bases whose SSE stream never got through on this page. Whatever blocked
  // it (a buffering proxy, a missing EventSource) will not change while the
  // page lives, so later attempts and later sockets go straight to polling.
  var broken = {};
  // Internal to the session's lifecycle; never a stream listener or a packet.
  var RESERVED = /^(connect|disconnect|connect_error)$/;

  function pick(value, fallback) {
    return value == null ? fallback : value;
  }

  function io(url, opts) {
    opts = opts || {};
    var base = (url || '').replace(/\/+$/, '');
    var transports = opts.transports || ['sse', 'polling'];
    var reconnection = opts.reconnection !== false;
    var minDelay = pick(opts.reconnectionDelay, 1000);
    var maxDelay = pick(opts.reconnectionDelayMax, 5000);
    var connectTimeout = pick(opts.connectTimeout, 3000);
    // A poll answers within pingInterval; no answer by pingInterval +
    // pingTimeout means the server or the path to it is gone. Until a
    // handshake says otherwise, assume the server defaults.
    var pollLimit = 45000;
    // No prototype, so an event called "constructor" is just an event.
    var handlers = Object.create(null);
    var outbox = [];
    var sending = Promise.resolve();
    var attempts = 0;
    var sseWorked = false;
    var stopped = false;
    var hidden = false;
    // Bumped whenever a transport is dropped, so that late callbacks of an
    // abandoned stream or request recognise themselves and do nothing.
    var gen = 0;
    var es, ctl, timer;

    var socket = { id: null, connected: false, transport: null };

    function fire(name, arg) {
      (handlers[name] || []).slice().forEach(function (fn) {
        // One throwing handler must not stall the transport or its siblings.
        try { fn.call(socket, arg); } catch (e) { setTimeout(function () { throw e; }); }
      });
    }

    function allowed(t) {
      return transports.indexOf(t) >= 0;
    }

    function open() {
      stop();
      var my = gen;
      if (allowed('sse') && !broken[base] && typeof EventSource == 'function') sse(my);
      else if (allowed('polling')) handshake(my);
      else fire('connect_error', new Error('no usable transport'));
    }

    function stop() {
      gen++;
      clearTimeout(timer);
      if (es) es.close();
      if (ctl) ctl.abort();
      es = ctl = null;
    }

    function up(hs) {
      socket.id = hs.sid;
      socket.connected = true;
      attempts = 0;
      pollLimit = hs.pingInterval + hs.pingTimeout || pollLimit;
      var queued = outbox;
      outbox = [];
      queued.forEach(post);
      fire('connect');
    }

    // The session is over, whoever noticed first.
    function down(reason) {
      stop();
      var was = socket.connected;
      socket.connected = false;
      socket.id = null;
      if (was) fire('disconnect', reason);
      if (reason != 'server disconnect') retry();
    }

    // An attempt to start a session failed before it began.
    function fail(err) {
      stop();
      fire('connect_error', err);
      retry();
    }

    // socket.io's backoff: doubling from reconnectionDelay, +/-50% jitter so
    // that clients dropped together do not return together, capped.
    function retry() {
      if (!reconnection || stopped || hidden) return;
      var ms = Math.min(minDelay * Math.pow(2, attempts++) * (0.5 + Math.random()), maxDelay);
      timer = setTimeout(open, ms);
    }

    // Tells the server at once instead of letting it wait for a timeout.
    // sendBeacon still goes out while the page is being torn down.
    function bye() {
      if (socket.id && navigator.sendBeacon) navigator.sendBeacon(base + '/close?sid=' + socket.id);
    }

    function fallback(my) {
      if (my != gen) return;
      if (!allowed('polling')) return fail(new Error('sse unavailable'));
      broken[base] = 1;
      open();
    }

    function sse(my) {
      socket.transport = 'sse';
      var s = (es = new EventSource(base + '/events'));
      s.names = Object.create(null);
      // A buffering proxy holds the stream back without failing it, so only
      // a deadline on the first event can tell.
      timer = setTimeout(function () { fallback(my); }, connectTimeout);
      s.addEventListener('connect', function (e) {
        if (my != gen) return;
        clearTimeout(timer);
        sseWorked = true;
        up(JSON.parse(e.data));
      });
      s.addEventListener('disconnect', function (e) {
        if (my == gen) down(JSON.parse(e.data));
      });
      // EventSource would reconnect by itself, but every stream is a new
      // session, so reconnection is ours to pace.
      s.onerror = function () {
        if (my != gen) return;
        if (socket.connected) {
          bye();
          down('transport close');
        } else if (sseWorked) {
          fail(new Error('sse stream failed'));
        } else {
          fallback(my);
        }
      };
      for (var name in handlers) listen(name);
    }

    // EventSource only delivers named events that have a listener.
    function listen(name) {
      var s = es;
      if (s && !s.names[name] && !RESERVED.test(name)) {
        s.names[name] = 1;
        s.addEventListener(name, function (e) {
          if (s == es) fire(name, JSON.parse(e.data));
        });
      }
    }

    function handshake(my) {
      socket.transport = 'polling';
      get('/poll', my, function (hs) {
        up(hs);
        poll(my, hs.sid);
      });
    }

    function poll(my, sid) {
      get('/poll?sid=' + sid, my, function (packets) {
        for (var i = 0; i < packets.length && my == gen; i++) {
          var p = packets[i];
          if (p.event == 'disconnect') return down(p.data);
          fire(p.event, p.data);
        }
        poll(my, sid);
      });
    }

    function get(path, my, ok) {
      if (my != gen) return;
      var c = (ctl = new AbortController());
      var t = setTimeout(function () { c.abort(); }, pollLimit);
      fetch(base + path, { cache: 'no-store', signal: c.signal })
        .then(function (r) {
          return r.json().then(function (body) {
            if (!r.ok) throw new Error(body.error || 'HTTP ' + r.status);
            return body;
          });
        })
        .then(
          function (body) {
            clearTimeout(t);
            if (my == gen) ok(body);
          },
          function (err) {
            clearTimeout(t);
            if (my != gen) return;
            // Covers "unknown session" (expired, or a restarted server):
            // the session is gone, so the next attempt is a new handshake.
            if (socket.connected) {
              bye();
              down('transport close');
            } else {
              fail(err);
            }
          }
        );
    }

    // Emits leave one at a time so that they arrive in the order sent.
    function post(body) {
      var sid = socket.id;
      sending = sending.then(function () {
        // A string body is sent as text/plain: a simple request, no preflight.
        return fetch(base + '/emit?sid=' + sid, { method: 'POST', body: body }).catch(function () {});
      });
    }

    socket.on = function (name, fn) {
      (handlers[name] = handlers[name] || []).push(fn);
      listen(name);
      return socket;
    };

    socket.off = function (name, fn) {
      if (!name) handlers = Object.create(null);
      else if (!fn) delete handlers[name];
      else handlers[name] = (handlers[name] || []).filter(function (f) { return f != fn; });
      return socket;
    };

    socket.emit = function (name, data) {
      var body = JSON.stringify({ event: name, data: data });
      if (socket.connected) post(body);
      else outbox.push(body);
      return socket;
    };

    socket.close = socket.disconnect = function () {
      stopped = true;
      bye();
      down('client close');
      return socket;
    };

    // A page going away (or into the back/forward cache) leaves now; a
    // polling session would otherwise be counted until pingTimeout.
    addEventListener('pagehide', function () {
      if (stopped) return;
      hidden = true;
      bye();
      down('transport close');
    });
    addEventListener('pageshow', function () {
      if (hidden && !stopped) {
        hidden = false;
        open();
      }
    });

    open();
    return socket;
  }

  global.io = io;
})(this);
