/* ssio browser client: socket.io-style events over Server-Sent Events, with
 * long-polling where a stream cannot get through. No build step.
 *
 * Two layers. The socket's lifecycle (up, down, fail, retry) owns the
 * session: id, connected, backoff, the outbox. A transport (sse, polling) is
 * an object with open and close that only reports to that lifecycle, and
 * every callback it leaves with the browser goes through `live`, so a
 * transport that has been replaced or closed can never act again. */
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
    // The transport in use, or null between attempts. Being this is what
    // lets a transport's callbacks run.
    var current = null;
    // The pending reconnection.
    var timer;
    // The server's "come back in ms" before a shutdown, used once.
    var hint = null;

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

    // ---- lifecycle ----

    function open() {
      stop();
      if (allowed('sse') && !broken[base] && typeof EventSource == 'function') start('sse', sse);
      else if (allowed('polling')) start('polling', polling);
      else fire('connect_error', new Error('no usable transport'));
    }

    // The one staleness check. A transport wraps every callback it hands to
    // the browser (stream events, timers, responses) and every step it takes
    // later (the next poll) in `live`; once the transport is no longer
    // current, whether closed, replaced or given up on, those calls do
    // nothing, even when a late event was already queued.
    function start(name, make) {
      var t = make(function live(fn) {
        return function (arg) {
          if (current == t) fn(arg);
        };
      });
      socket.transport = name;
      t.open();
      // Current only once open, so one that could not open is never closed.
      current = t;
    }

    function stop() {
      clearTimeout(timer);
      var t = current;
      // Cleared first: the transport is stale before it is closed.
      current = null;
      if (t) t.close();
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

    // A transport broke. A live session tells the server and ends; an
    // attempt has failed. Covers "unknown session" (expired, or a restarted
    // server): the session is gone, so the next attempt is a new handshake.
    function lost(err) {
      if (socket.connected) {
        bye();
        down('transport close');
      } else {
        fail(err);
      }
    }

    // SSE did not get through before it ever worked: poll from now on.
    function fallback() {
      if (!allowed('polling')) return fail(new Error('sse unavailable'));
      broken[base] = 1;
      open();
    }

    // socket.io's backoff: doubling from reconnectionDelay, +/-50% jitter so
    // that clients dropped together do not return together, capped.
    function retry() {
      if (!reconnection || stopped || hidden) return;
      var ms = hint != null ? hint : Math.min(minDelay * Math.pow(2, attempts++) * (0.5 + Math.random()), maxDelay);
      hint = null;
      timer = setTimeout(open, ms);
    }

    // Tells the server at once instead of letting it wait for a timeout.
    // sendBeacon still goes out while the page is being torn down.
    function bye() {
      if (socket.id && navigator.sendBeacon) navigator.sendBeacon(base + '/close?sid=' + socket.id);
    }

    // ---- transports ----

    // One EventSource per session; the server's named events are the
    // socket's events.
    function sse(live) {
      var s, deadline;
      var names = Object.create(null);

      // EventSource only delivers named events that have a listener.
      function listen(name) {
        if (!names[name] && !RESERVED.test(name)) {
          names[name] = 1;
          s.addEventListener(name, live(function (e) {
            fire(name, JSON.parse(e.data));
          }));
        }
      }

      return {
        open: function () {
          s = new EventSource(base + '/events');
          // A buffering proxy holds the stream back without failing it, so
          // only a deadline on the first event can tell.
          deadline = setTimeout(live(fallback), connectTimeout);
          s.addEventListener('connect', live(function (e) {
            clearTimeout(deadline);
            sseWorked = true;
            up(JSON.parse(e.data));
          }));
          s.addEventListener('retry', live(function (e) {
            hint = JSON.parse(e.data);
          }));
          s.addEventListener('disconnect', live(function (e) {
            down(JSON.parse(e.data));
          }));
          // EventSource would reconnect by itself, but every stream is a new
          // session, so reconnection is ours to pace. Once SSE has worked
          // here, a failure is an outage, not a blocked path.
          s.onerror = live(function () {
            if (socket.connected || sseWorked) lost(new Error('sse stream failed'));
            else fallback();
          });
          for (var name in handlers) listen(name);
        },
        close: function () {
          clearTimeout(deadline);
          s.close();
        },
        listen: listen
      };
    }

    // A handshake, then one outstanding poll at a time on its session.
    function polling(live) {
      var ctl;

      function get(path, ok) {
        var c = (ctl = new AbortController());
        var t = setTimeout(function () { c.abort(); }, pollLimit);
        fetch(base + path, { cache: 'no-store', signal: c.signal })
          .then(function (r) {
            return r.json().then(function (body) {
              if (!r.ok) throw new Error(body.error || 'HTTP ' + r.status);
              return body;
            });
          })
          .then(live(ok), live(lost))
          .then(function () { clearTimeout(t); });
      }

      // Live, like each packet's delivery: once a handler closes the socket
      // or a packet ends the session, the rest of the batch and the next
      // poll are dropped.
      var poll = live(function (sid) {
        get('/poll?sid=' + sid, function (packets) {
          var deliver = live(function (p) {
            if (p.event == 'retry') hint = p.data;
            else if (p.event == 'disconnect') down(p.data);
            else fire(p.event, p.data);
          });
          for (var i = 0; i < packets.length; i++) deliver(packets[i]);
          poll(sid);
        });
      });

      return {
        open: function () {
          get('/poll', function (hs) {
            up(hs);
            poll(hs.sid);
          });
        },
        close: function () {
          ctl.abort();
        }
      };
    }

    // ---- the socket ----

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
      if (current && current.listen) current.listen(name);
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
