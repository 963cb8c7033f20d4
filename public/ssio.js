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
    // Catch-all listeners: of every event from the server, and of every
    // event this socket sends.
    var anyIn = [];
    var anyOut = [];
    var outbox = [];
    var sending = Promise.resolve();
    var attempts = 0;
    // Quick attempts since a working transport dropped (a blip); the page
    // stays connected meanwhile.
    var blips = 0;
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
    // Bumped by every open and stop: a ticket that arrives for an older
    // attempt is dropped.
    var gen = 0;
    // ---- recovery: the cursor of the last ordinary event read, sent back
    // on the next connection so the server can replay what was missed ----
    var lastId = '';
    // ---- JWT sessions: the payload the session began with, and the timer
    // that asks `auth` for a fresh token before this one expires ----
    var auth, since, renewal;

    var socket = { id: null, connected: false, transport: null, recovered: false };

    // One throwing handler must not stall the transport or its siblings.
    function call(fn, args) {
      try { fn.apply(socket, args); } catch (e) { setTimeout(function () { throw e; }); }
    }

    function fire(name, arg, cb) {
      var args = cb ? [arg, cb] : [arg];
      (handlers[name] || []).slice().forEach(function (fn) { call(fn, args); });
    }

    // An event from the server: the catch-all listeners first, as in
    // socket.io, then the event's own. One that asks for an answer (an
    // `ack` id) gives each listener a callback; the first call answers,
    // for the session that got the event.
    function event(name, data, id) {
      var cb, sid = socket.id, done;
      if (id != null) {
        cb = function (reply) {
          if (done) return;
          done = 1;
          fetch(base + '/ack?sid=' + sid, { method: 'POST', body: JSON.stringify({ id: id, data: reply }) })
            .catch(function () {});
        };
      }
      anyIn.slice().forEach(function (fn) { call(fn, cb ? [name, data, cb] : [name, data]); });
      fire(name, data, cb);
    }

    function allowed(t) {
      return transports.indexOf(t) >= 0;
    }

    // ---- lifecycle ----

    function open() {
      stop();
      var my = gen;
      if (!opts.auth) return begin('');
      // ---- auth: EventSource can send no body, so the payload goes in a
      // POST that answers with a one-time ticket; a refusal is readable. A
      // function is asked again for every handshake, so a token is fresh ----
      Promise.resolve(typeof opts.auth == 'function' ? opts.auth() : opts.auth)
        .then(function (a) {
          auth = a;
          since = Date.now();
          return fetch(base + '/handshake', { method: 'POST', body: JSON.stringify(a) });
        })
        .then(answer)
        .then(function (b) { if (my == gen) begin('ticket=' + b.ticket); },
          function (e) { if (my == gen) fail(e); });
    }

    function begin(q) {
      if (lastId) q += (q && '&') + 'resume=' + encodeURIComponent(lastId);
      q = q && '?' + q;
      // A shared stream carries neither a ticket nor a resume cursor: a tab
      // with either connects on its own.
      var link = !q && tabs(base, opts);
      if (link) start(link.tr || 'sse', link.member, q);
      else if (allowed('sse') && !broken[base] && typeof EventSource == 'function') start('sse', sse, q);
      else if (allowed('polling')) start('polling', polling, q);
      else fire('connect_error', new Error('no usable transport'));
    }

    // A fetch's JSON body, or an error carrying the server's message, its
    // `data` and the status.
    function answer(r) {
      return r.json().then(function (body) {
        if (r.ok) return body;
        var e = new Error(body.error || 'HTTP ' + r.status);
        e.data = body.data;
        e.status = r.status;
        throw e;
      });
    }

    // The one staleness check. A transport wraps every callback it hands to
    // the browser (stream events, timers, responses) and every step it takes
    // later (the next poll) in `live`; once the transport is no longer
    // current, whether closed, replaced or given up on, those calls do
    // nothing, even when a late event was already queued.
    function start(name, make, q) {
      var t = make(function live(fn) {
        return function (arg, more) {
          if (current == t) fn(arg, more);
        };
      }, q, { up: up, down: down, fail: fail, lost: lost, event: event, allowed: allowed, connectTimeout: connectTimeout,
        hint: function (ms) { hint = ms; } });
      socket.transport = name;
      t.open();
      // Current only once open, so one that could not open is never closed.
      current = t;
    }

    function stop() {
      gen++;
      clearTimeout(timer);
      clearTimeout(renewal);
      var t = current;
      // Cleared first: the transport is stale before it is closed.
      current = null;
      if (t) t.close();
    }

    function up(hs, tr) {
      if (tr) socket.transport = tr;
      attempts = 0;
      renew();
      pollLimit = hs.pingInterval + hs.pingTimeout || pollLimit;
      // The server continued the session: nothing happened, as far as the
      // page can tell.
      if (blips && hs.sid == socket.id) {
        blips = 0;
        socket.recovered = !!hs.recovered;
        return reframe();
      }
      // Back too late: that session ended, this is a new one.
      if (blips) fire('disconnect', 'transport close');
      blips = 0;
      socket.id = hs.sid;
      socket.connected = true;
      socket.recovered = !!hs.recovered;
      var queued = outbox;
      outbox = [];
      queued.forEach(post);
      fire('connect');
      reframe();
    }

    // A stream framed by name cannot show events that have no listener, so
    // a catch-all listener moves the session to a stream framed as JSON,
    // resuming it there as a blip does: same sid, nothing missed, no
    // connect or disconnect. Without a resume cursor (recovery off on the
    // server) that waits for the next connection.
    function reframe() {
      if (current && current.named && anyIn.length && socket.connected && lastId) {
        stop();
        blips++;
        open();
      }
    }

    // Two thirds into the token's life (`exp - iat`, so a page whose clock
    // is off still refreshes in time), less the second that `iat` may have
    // been rounded down by, counted from when `auth` gave the token, `auth`
    // is asked for a fresh one, sent in-band; a refusal (too soon, a lost
    // request) is asked again a second later. Without one the server ends
    // the session with "token expired", and the reconnection asks `auth`
    // again.
    function renew() {
      var my = gen, c;
      try {
        c = JSON.parse(atob(auth.token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
      } catch (e) { return; }
      if (typeof opts.auth != 'function' || !c.exp) return;
      function ask() {
        since = Date.now();
        Promise.resolve(opts.auth()).then(function (a) {
          return fetch(base + '/refresh?sid=' + socket.id,
            { method: 'POST', body: JSON.stringify({ token: a.token }) }).then(answer).then(function () {
            auth = a;
          });
        }).then(function () { if (my == gen) renew(); }, function () { if (my == gen) renewal = setTimeout(ask, 1e3); });
      }
      // setTimeout fires at once past 2^31 ms.
      renewal = setTimeout(ask, Math.min((c.exp - (c.iat || since / 1e3) - 1) * 667 - Date.now() + since, 2e9));
    }

    // The session is over, whoever noticed first.
    function down(reason) {
      stop();
      blips = 0;
      var was = socket.connected;
      socket.connected = false;
      socket.id = null;
      // Only a dropped transport can be resumed; any other end is final.
      if (reason != 'transport close' && reason != 'ping timeout') lastId = '';
      if (was) fire('disconnect', reason);
      if (reason != 'server disconnect') retry();
    }

    // An attempt to start a session failed before it began. Middleware
    // said no (401/403): retrying would hammer it, so only connect() does.
    function fail(err) {
      stop();
      fire('connect_error', err);
      if (err.status != 401 && err.status != 403) retry();
    }

    // A transport broke. A live session tells the server and ends; an
    // attempt has failed. Covers "unknown session" (expired, or a restarted
    // server): the session is gone, so the next attempt is a new handshake.
    // No goodbye: the session stays resumable, and the next handshake's
    // cursor takes it over at once. A transport that worked and dropped (a
    // proxy's cut, a reset) is a blip: the server keeps the session for a
    // short grace, so come back at once, a few times, with the cursor.
    function lost(err) {
      if (socket.connected && lastId && blips < 3) {
        stop();
        blips++;
        timer = setTimeout(open, Math.random() * 100);
      } else if (socket.connected) {
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
    // socket's events. With catch-all listeners the stream is asked to
    // frame every event unnamed, as JSON (`frames=json`): EventSource hands
    // a named event only to listeners of that name. An event that asks for
    // an answer always comes unnamed, with its id in the JSON.
    function sse(live, q) {
      var s, deadline;
      var names = Object.create(null);
      var json = anyIn.length > 0;

      function got(name, e, data, id) {
        if (name == 'connect') {
          clearTimeout(deadline);
          sseWorked = true;
          lastId = e.lastEventId || lastId;
          up(data);
        } else if (name == 'retry') hint = data;
        else if (name == 'disconnect') down(data);
        else {
          lastId = e.lastEventId || lastId;
          event(name, data, id);
        }
      }

      // EventSource only delivers named events that have a listener.
      function listen(name) {
        if (!json && !names[name] && !RESERVED.test(name)) {
          names[name] = 1;
          s.addEventListener(name, live(function (e) {
            got(name, e, JSON.parse(e.data));
          }));
        }
      }

      return {
        open: function () {
          s = new EventSource(base + '/events' + (json ? q + (q ? '&' : '?') + 'frames=json' : q));
          // A buffering proxy holds the stream back without failing it, so
          // only a deadline on the first event can tell.
          deadline = setTimeout(live(fallback), connectTimeout);
          ['connect', 'retry', 'disconnect'].forEach(function (name) {
            s.addEventListener(name, live(function (e) {
              got(name, e, JSON.parse(e.data));
            }));
          });
          s.onmessage = live(function (e) {
            var f = JSON.parse(e.data);
            got(f.event, e, f.data, f.ack);
          });
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
        listen: listen,
        named: !json
      };
    }

    // A handshake, then one outstanding poll at a time on its session.
    function polling(live, q) {
      var ctl;

      // The cursor of a response is taken only once its events are read.
      function get(path, ok) {
        var c = (ctl = new AbortController());
        var t = setTimeout(function () { c.abort(); }, pollLimit);
        var id;
        fetch(base + path, { cache: 'no-store', signal: c.signal })
          .then(function (r) {
            id = r.headers.get('x-ssio-cursor');
            return answer(r);
          })
          .then(live(function (body) {
            ok(body);
            if (id) lastId = id;
          }), live(lost))
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
            else event(p.event, p.data, p.ack);
          });
          for (var i = 0; i < packets.length; i++) deliver(packets[i]);
          poll(sid);
        });
      });

      return {
        open: function () {
          get('/poll' + q, function (hs) {
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

    // Emits leave one at a time so that they arrive in the order sent: the
    // next goes once the server has run this one's handlers (the head of
    // its response), not once an acknowledgement has come.
    function post(item) {
      var sid = socket.id;
      var ack = item[1];
      anyOut.slice().forEach(function (fn) { call(fn, item[2]); });
      function send() {
        // A string body is sent as text/plain: a simple request, no preflight.
        return fetch(base + '/emit?sid=' + sid, { method: 'POST', body: item[0] }).then(function (r) {
          // Over the server's emit rate: wait as told and send it again, so
          // nothing is lost and the order holds.
          if (r.status == 429) {
            return new Promise(function (ok) {
              setTimeout(ok, (+r.headers.get('retry-after') || 1) * 1e3);
            }).then(send);
          }
          if (ack) answer(r).then(function (b) {
            if (b.error) throw new Error(b.error);
            ack(null, b.data);
          }).catch(ack);
        }, function (e) { if (ack) ack(e); });
      }
      sending = sending.then(send);
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

    // ---- catch-all listeners, as socket.io has them: `fn(event, data)`
    // for every event from the server (onAny) or sent by this socket
    // (onAnyOutgoing, called as the event leaves) ----
    function without(list, fn) {
      return fn ? list.filter(function (f) { return f != fn; }) : [];
    }
    socket.onAny = function (fn) {
      anyIn.push(fn);
      reframe();
      return socket;
    };
    socket.prependAny = function (fn) {
      anyIn.unshift(fn);
      reframe();
      return socket;
    };
    socket.offAny = function (fn) {
      anyIn = without(anyIn, fn);
      return socket;
    };
    socket.listenersAny = function () {
      return anyIn.slice();
    };
    socket.onAnyOutgoing = function (fn) {
      anyOut.push(fn);
      return socket;
    };
    socket.prependAnyOutgoing = function (fn) {
      anyOut.unshift(fn);
      return socket;
    };
    socket.offAnyOutgoing = function (fn) {
      anyOut = without(anyOut, fn);
      return socket;
    };
    socket.listenersAnyOutgoing = function () {
      return anyOut.slice();
    };

    // ---- acknowledgements: the answer is the body of the emit's own
    // response; a callback is called once, with an error on timeout ----
    function emit(name, data, cb, ms) {
      var ack;
      if (typeof cb == 'function') {
        var timer2;
        ack = function (err, reply) {
          if (!cb) return;
          var f = cb;
          cb = null;
          clearTimeout(timer2);
          f.call(socket, err, reply);
        };
        if (ms != null) timer2 = setTimeout(function () { ack(new Error('operation has timed out')); }, ms);
      }
      var item = [JSON.stringify({ event: name, data: data, ack: !!ack || undefined }), ack, [name, data]];
      if (socket.connected) post(item);
      else outbox.push(item);
      return socket;
    }

    socket.emit = function (name, data, cb) {
      return emit(name, data, cb);
    };

    socket.timeout = function (ms) {
      return { emit: function (name, data, cb) { return emit(name, data, cb, ms); } };
    };

    // After a refusal, or close(): try again, now.
    socket.connect = socket.open = function () {
      stopped = false;
      if (!socket.connected) open();
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

    // The first connection waits until the script that called io() has
    // run, so that the listeners it adds right away (onAny among them)
    // shape the stream.
    var first = gen;
    Promise.resolve().then(function () {
      if (gen == first && !stopped) open();
    });
    return socket;
  }

  // ---- tab sharing ----
  //
  // Over HTTP/1.1 a browser holds six connections per host and every open
  // stream keeps one, so the tabs of one origin share one stream. The tab
  // holding the Web Lock "ssio lead <base>" carries it: it opens
  // /events?mux=1 (or polls /poll?mux=1), its own session is key 0, and it
  // attaches the other tabs' sessions with POST /mux/attach, each tagged by
  // a key. Every tab stays its own socket with its own sid. Tabs talk over
  // a BroadcastChannel: "who" asks for the stream, "mux" names it, "attach"
  // asks the carrier to attach (or re-attach, with a sid), "attached" and
  // "refused" answer, "frame" is one tagged event from the stream. Each tab
  // holds a lock named after itself from the start, so the carrier learns
  // of a tab that died (even mid-attach) when that lock becomes free, and
  // closes its session. When the carrier tab goes, the lock passes to the
  // oldest waiting tab, which re-opens the stream with its own sid; the
  // server keeps the other sessions for --mux-grace, and each tab
  // re-attaches with its sid, losing nothing.
  var links = {};

  function tabs(base, opts) {
    var nav = global.performance && performance.getEntriesByType && performance.getEntriesByType('navigation')[0];
    // Over HTTP/2 or 3 streams share one connection already.
    // A socket that picks its own transports gets a stream of its own.
    if (opts.share === false || opts.transports || (nav && /^h[23]/.test(nav.nextHopProtocol))) return null;
    if (!(global.navigator && navigator.locks && typeof BroadcastChannel == 'function')) return null;
    return links[base] || (links[base] = link(base));
  }

  function link(base) {
    var chan = new BroadcastChannel('ssio ' + base);
    var self = { tr: null };
    var members = [];
    var leading = false;
    var asked = false;
    var resign;
    var carrier = null;
    var mux = null;
    var watched = {};

    function uid() {
      return Math.random().toString(36).slice(2) + Date.now().toString(36);
    }
    function send(msg) {
      chan.postMessage(msg);
    }
    function ask() {
      if (asked) return;
      asked = true;
      navigator.locks.request('ssio lead ' + base, function () {
        leading = true;
        if (!members.length) return quit();
        carry();
        return new Promise(function (r) { resign = r; });
      });
    }
    function quit() {
      leading = asked = false;
      if (resign) resign();
      resign = null;
    }
    function named(id, tr) {
      mux = id;
      self.tr = tr;
      members.forEach(function (m) { m.attach(); });
    }
    // A frame for the stream `id`, from our carrier or another tab's.
    function frame(id, f) {
      members.forEach(function (m) { m.frame(id, f); });
    }

    // The carrier: the stream itself, owned by `owner`, key 0. `tries`:
    // quick attempts to bring back a stream that worked and dropped.
    function carry(tries) {
      tries = tries || 0;
      var owner = members[0];
      var t = owner.api;
      var sid = owner.sid ? '&sid=' + owner.sid : '';
      var c = (carrier = { owner: owner, closed: false });
      var deadline, es, ctl;
      function named0(hs, tr) {
        if (c.closed) return;
        clearTimeout(deadline);
        owner.own(hs, tr);
        named(hs.mux, tr);
        send({ t: 'mux', mux: hs.mux, tr: tr });
      }
      function got(f) {
        if (c.closed) return;
        frame(mux, f);
        send({ t: 'frame', mux: mux, f: f });
      }
      function failed(err) {
        if (c.closed) return;
        close();
        owner.lost(err);
      }
      // A poll that a proxy cut is a blip: the stream lives on, so poll
      // again at once, a few times, before giving up on it.
      function poll(tries) {
        ctl = new AbortController();
        fetch(base + '/poll?mux=' + mux, { cache: 'no-store', signal: ctl.signal }).then(function (r) {
          return r.json().then(function (b) {
            if (!r.ok) throw new Error(b.error);
            b.forEach(got);
            if (!c.closed) poll(0);
          });
        }).catch(function (e) {
          if (c.closed || tries > 2) return failed(e);
          setTimeout(function () { if (!c.closed) poll(tries + 1); }, Math.random() * 100);
        });
      }
      function polling() {
        if (c.closed) return;
        if (!t.allowed('polling')) return failed(new Error('sse unavailable'));
        broken[base] = 1;
        ctl = new AbortController();
        fetch(base + '/poll?mux=1' + sid, { cache: 'no-store', signal: ctl.signal }).then(function (r) {
          return r.json().then(function (hs) {
            if (!r.ok) throw new Error(hs.error);
            named0(hs, 'polling');
            poll(0);
          });
        }).catch(failed);
      }
      function close() {
        c.closed = true;
        clearTimeout(deadline);
        if (es) es.close();
        if (ctl) ctl.abort();
        if (carrier == c) carrier = null;
      }
      c.close = close;
      // The stream was polled before: SSE does not get through here.
      if (self.tr == 'polling') broken[base] = 1;
      if (t.allowed('sse') && !broken[base] && typeof EventSource == 'function') {
        var worked = false;
        es = new EventSource(base + '/events?mux=1' + sid);
        deadline = setTimeout(function () {
          if (!c.closed) { es.close(); polling(); }
        }, t.connectTimeout);
        es.onmessage = function (e) {
          var f = JSON.parse(e.data);
          if (!worked && f.k == 0 && f.event == 'connect') {
            worked = self.sse = true;
            named0(f.data, 'sse');
          } else got(f);
        };
        es.onerror = function () {
          if (c.closed) return;
          // A stream that worked and dropped (a proxy's cut) is a blip: the
          // server keeps the owner's session for a short grace, so open a
          // new one with its sid at once, a few times.
          var n = worked ? 0 : tries;
          if ((worked || tries) && n < 3 && owner.sid) {
            close();
            return setTimeout(function () {
              if (leading && !carrier && members.length) carry(members[0] == owner ? n + 1 : 0);
            }, Math.random() * 100);
          }
          // Once SSE worked here, or for a session being resumed, an error
          // is an outage or a lost session, not a blocked path.
          if (worked || self.sse || owner.sid) failed(new Error('sse stream failed'));
          else { clearTimeout(deadline); es.close(); polling(); }
        };
      } else polling();
    }

    // Answers a tab, wherever it is (this page's own sockets included).
    function reply(msg) {
      send(msg);
      members.forEach(function (m) { m.answer(msg); });
    }

    // The carrier attaches a tab's session and watches that tab.
    function attach(msg) {
      var at = mux;
      fetch(base + '/mux/attach?mux=' + at + (msg.sid ? '&sid=' + msg.sid : ''), { method: 'POST' }).then(function (r) {
        return r.json().then(function (hs) {
          if (!r.ok) return reply({ t: 'refused', tab: msg.tab, mux: at, error: hs.error });
          reply({ t: 'attached', tab: msg.tab, mux: at, hs: hs });
          if (!watched[msg.tab]) {
            watched[msg.tab] = 1;
            watch(msg.tab, hs.sid, 0);
          }
        });
      }).catch(function () {});
    }

    // Closes `sid` once tab `tab` is gone. The tab's own lock request may
    // reach the lock manager after ours (a new page binds it lazily), and a
    // free lock would then read as a dead tab: so wait until the tab's
    // request is seen, held or pending, before queueing behind it. A tab
    // never seen in 3 s went away mid-attach.
    function watch(tab, sid, tries) {
      var name = 'ssio tab ' + tab;
      function gone() {
        delete watched[tab];
        navigator.sendBeacon(base + '/close?sid=' + sid);
      }
      navigator.locks.query().then(function (s) {
        if (s.held.concat(s.pending).some(function (l) { return l.name == name; })) {
          navigator.locks.request(name, gone);
        } else if (tries < 30) {
          setTimeout(function () { watch(tab, sid, tries + 1); }, 100);
        } else gone();
      });
    }

    chan.onmessage = function (e) {
      var msg = e.data;
      if (msg.t == 'frame') frame(msg.mux, msg.f);
      else if (msg.t == 'mux') named(msg.mux, msg.tr);
      else if (leading && mux && carrier) {
        if (msg.t == 'who') send({ t: 'mux', mux: mux, tr: self.tr });
        if (msg.t == 'attach' && msg.mux == mux) attach(msg);
      }
      if (msg.t == 'attached' || msg.t == 'refused') {
        members.forEach(function (m) { m.answer(msg); });
      }
    };

    // One socket's transport on this link.
    self.member = function (live, q, t) {
      var m = { api: t, sid: null, key: null, at: null, queue: [], tab: uid() };
      var release, timer;
      m.own = live(function (hs, tr) {
        m.at = hs.mux;
        m.key = 0;
        if (hs.sid != m.sid) {
          m.sid = hs.sid;
          t.up(hs, tr);
        }
      });
      m.lost = live(function (err) {
        t.lost(err);
      });
      m.attach = live(function () {
        if (m.key === 0 && carrier && carrier.owner == m) return;
        if (m.at == mux || !mux) return;
        m.at = mux;
        m.key = null;
        m.queue = [];
        var msg = { t: 'attach', tab: m.tab, mux: mux, sid: m.sid };
        if (leading && carrier) attach(msg);
        else send(msg);
      });
      m.answer = live(function (msg) {
        if (msg.tab != m.tab || msg.mux != m.at) return;
        if (msg.t == 'refused') {
          // A session that could not be re-attached is over.
          t.lost(new Error(msg.error));
          return;
        }
        m.key = msg.hs.k;
        if (msg.hs.sid != m.sid) {
          m.sid = msg.hs.sid;
          t.up(msg.hs, self.tr);
        }
        var queued = m.queue;
        m.queue = [];
        queued.forEach(function (f) { m.frame(m.at, f); });
      });
      m.frame = live(function (id, f) {
        if (id != m.at) return;
        if (m.key == null) return m.queue.push(f);
        if (f.k !== m.key || f.event == 'connect') return;
        if (f.event == 'disconnect') t.down(f.data);
        else if (f.event == 'retry') t.hint(f.data);
        else t.event(f.event, f.data, f.ack);
      });
      return {
        open: function () {
          members.push(m);
          navigator.locks.request('ssio tab ' + m.tab, function () {
            return new Promise(function (r) { release = r; });
          });
          // No stream named in time (no carrier yet, or one that is
          // falling back): an attempt that failed, retried as usual.
          timer = setTimeout(live(function () {
            if (!m.sid) t.fail(new Error('no shared stream'));
          }), t.connectTimeout * 2 + 1000);
          ask();
          if (leading && !carrier) carry();
          else if (mux) m.attach();
          else send({ t: 'who' });
        },
        close: function () {
          clearTimeout(timer);
          if (release) release();
          members = members.filter(function (x) { return x != m; });
          if (carrier && carrier.owner == m) {
            carrier.close();
            mux = null;
            if (members.length) carry();
          }
          if (!members.length) quit();
        },
        listen: null
      };
    };
    return self;
  }

  global.io = io;
})(this);
