/*
 * The admin page: the server API (/api/*) seen from a browser tab.
 *
 * The API key is asked for once per tab and kept in sessionStorage, which
 * dies with the tab; it is never written to localStorage, a cookie or a
 * URL, and leaves the page only as an Authorization header. Until a key is
 * entered the page fetches nothing.
 *
 * Everything shown comes from the server, so it is written with
 * textContent, never as markup.
 */
(function () {
  'use strict';

  const KEY_SLOT = 'ssio.admin.key';
  // /api/info's counts are what an operator watches: twice a second shows
  // a page arriving or leaving within a second, round trip included, for
  // one small JSON answer each time.
  const INFO_EVERY_MS = 500;
  // Room lists can be long and change less often than the count.
  const ROOMS_EVERY_MS = 2000;
  // A request that takes this long is given up, so one stalled answer
  // cannot stop the page from polling.
  const REQUEST_TIMEOUT_MS = 5000;
  // The charts show the last five minutes, one sample per poll.
  const CHART_SPAN_MS = 5 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  const message = $('message');
  const keySection = $('key-section');
  const keyForm = $('key-form');
  const keyInput = $('key');
  const dashboard = $('dashboard');
  const signOut = $('sign-out');

  let key = sessionStorage.getItem(KEY_SLOT);
  // Bumped whenever polling stops, so that answers to requests made before
  // then are dropped rather than drawn over the key form.
  let generation = 0;
  let timers = [];
  const samples = []; // { at, count, rate } oldest first
  let last = null; // { at, deliveries } of the previous /api/info answer

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  /** Thrown for any answer but a 2xx, with the status and the server's `error`. */
  class ApiError extends Error {
    constructor(status, text) {
      super(text);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const init = {
      method,
      headers: { Authorization: 'Bearer ' + key },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
      signal: controller.signal,
    };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    try {
      const res = await fetch(path, init);
      const text = await res.text();
      let json = null;
      try { json = JSON.parse(text); } catch (_) { /* not JSON: reported below */ }
      if (!res.ok) {
        const why = json && typeof json.error === 'string' ? json.error : text.slice(0, 200);
        throw new ApiError(res.status, why);
      }
      if (json === null) throw new ApiError(res.status, 'the answer was not JSON');
      return json;
    } finally {
      clearTimeout(timer);
    }
  }

  // The key form.

  function showKeyForm(why) {
    stopPolling();
    key = null;
    sessionStorage.removeItem(KEY_SLOT);
    dashboard.hidden = true;
    signOut.hidden = true;
    keySection.hidden = false;
    keyInput.value = '';
    say(why || '');
    keyInput.focus();
  }

  keyForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const entered = keyInput.value.trim();
    if (!entered) return;
    key = entered;
    keyInput.value = '';
    say('Checking the key…');
    startPolling();
  });

  signOut.addEventListener('click', () => showKeyForm('The key is forgotten.'));

  /**
   * What a failed request means for the page: a refused key or a server
   * with no API send the user back to the key form; anything else is shown
   * and polling goes on, so a server restart heals by itself.
   */
  function failed(error, what) {
    if (error instanceof ApiError && error.status === 401) {
      showKeyForm('The server refused this key (' + error.message + '). Enter it again.');
    } else if (error instanceof ApiError && error.status === 404 && what === 'poll') {
      showKeyForm('This address has no server API (/api answered 404). '
        + 'The server API is on only when ssio runs with --api-key; with --api-listen it is on its own address.');
    } else {
      const text = error instanceof ApiError ? error.status + ' ' + error.message
        : error.name === 'AbortError' ? 'no answer within ' + REQUEST_TIMEOUT_MS / 1000 + ' s'
          : error.message;
      return text;
    }
    return null;
  }

  // Polling.

  function stopPolling() {
    generation++;
    for (const t of timers) clearTimeout(t);
    timers = [];
  }

  function startPolling() {
    stopPolling();
    samples.length = 0;
    last = null;
    const mine = generation;
    // Each loop is scheduled from the start of its request, so a slow
    // answer does not stretch the period, and never overlaps itself.
    const loop = (every, tick) => {
      const run = async () => {
        const started = Date.now();
        await tick(mine);
        if (mine !== generation) return;
        timers.push(setTimeout(run, Math.max(0, started + every - Date.now())));
      };
      run();
    };
    loop(INFO_EVERY_MS, pollInfo);
    loop(ROOMS_EVERY_MS, pollRooms);
    loop(ROOMS_EVERY_MS, pollPresence);
  }

  async function pollPresence(mine) {
    let presence;
    try {
      presence = await api('GET', '/api/presence?limit=100');
    } catch (e) {
      if (mine !== generation) return;
      failed(e, 'poll');
      return;
    }
    if (mine !== generation) return;
    showPresence(presence);
  }

  async function pollInfo(mine) {
    let info;
    try {
      info = await api('GET', '/api/info');
    } catch (e) {
      if (mine !== generation) return;
      const text = failed(e, 'poll');
      if (text) $('server').textContent = 'Could not read /api/info: ' + text;
      return;
    }
    if (mine !== generation) return;
    if (dashboard.hidden) {
      // The first answer proves the key: only now is it kept for the tab.
      sessionStorage.setItem(KEY_SLOT, key);
      keySection.hidden = true;
      dashboard.hidden = false;
      signOut.hidden = false;
      say('');
    }
    showInfo(info);
  }

  async function pollRooms(mine) {
    let rooms;
    try {
      rooms = await api('GET', '/api/rooms');
    } catch (e) {
      if (mine !== generation) return;
      failed(e, 'poll');
      return;
    }
    if (mine !== generation) return;
    showRooms(Array.isArray(rooms.rooms) ? rooms.rooms : []);
  }

  // Drawing.

  const num = (n) => (Number.isFinite(n) ? n : 0);

  function cell(row, text) {
    const td = document.createElement('td');
    td.textContent = String(text);
    row.append(td);
  }

  function showInfo(info) {
    const at = Date.now();
    $('server').textContent = 'ssio ' + info.version + (info.node == null ? '' : ' · node ' + info.node);
    $('count').textContent = String(num(info.count));

    const body = $('nodes').tBodies[0];
    body.replaceChildren();
    for (const n of Array.isArray(info.nodes) ? info.nodes : []) {
      const row = document.createElement('tr');
      cell(row, n.node == null ? '(this server)' : n.node);
      cell(row, num(n.sessions));
      cell(row, num(n.sse));
      cell(row, num(n.polling));
      body.append(row);
    }
    const total = document.createElement('tr');
    total.className = 'total';
    cell(total, 'all');
    cell(total, num(info.sessions));
    cell(total, num(info.sse));
    cell(total, num(info.polling));
    body.append(total);

    // The rate is the counter's rise over the time between two answers; a
    // counter that went down means the server restarted, and that
    // interval has no rate.
    const deliveries = num(info.deliveries);
    let rate = null;
    if (last && deliveries >= last.deliveries && at > last.at) {
      rate = ((deliveries - last.deliveries) * 1000) / (at - last.at);
    }
    last = { at, deliveries };
    samples.push({ at, count: num(info.count), rate });
    while (samples.length && samples[0].at < at - CHART_SPAN_MS) samples.shift();

    drawChart($('count-chart'), samples.map((s) => [s.at, s.count]), at, $('count-now'), $('count-max'));
    drawChart($('rate-chart'), samples.filter((s) => s.rate !== null).map((s) => [s.at, s.rate]), at,
      $('rate-now'), $('rate-max'));
  }

  /** Draws [time, value] points into the SVG's polyline, newest at the right edge. */
  function drawChart(svg, points, now, nowLabel, maxLabel) {
    const [width, height] = [300, 80];
    const max = Math.max(1, ...points.map(([, v]) => v));
    const line = svg.querySelector('polyline');
    line.setAttribute('points', points.map(([t, v]) => {
      const x = width - ((now - t) / CHART_SPAN_MS) * width;
      const y = height - (v / max) * (height - 2) - 1;
      return x.toFixed(1) + ',' + y.toFixed(1);
    }).join(' '));
    const newest = points.length ? points[points.length - 1][1] : 0;
    nowLabel.textContent = String(Math.round(newest));
    maxLabel.textContent = String(Math.round(points.length ? max : 0));
  }

  function showPresence(presence) {
    $('people').textContent = String(num(presence.users));
    $('clients').textContent = String(num(presence.clients));
    const body = $('presence').tBodies[0];
    body.replaceChildren();
    for (const m of Array.isArray(presence.members) ? presence.members : []) {
      const row = document.createElement('tr');
      cell(row, m.id);
      cell(row, m.user == null ? '' : m.user);
      cell(row, m.node == null ? '' : m.node);
      cell(row, new Date(num(m.joinedAt)).toLocaleTimeString());
      body.append(row);
    }
    $('presence-more').hidden = presence.next == null;
  }

  function showRooms(rooms) {
    const body = $('rooms').tBodies[0];
    body.replaceChildren();
    const roomsOf = new Map();
    for (const r of rooms) {
      const members = Array.isArray(r.members) ? r.members : [];
      const row = document.createElement('tr');
      cell(row, r.room);
      cell(row, members.length + (members.length ? ': ' + members.join(', ') : ''));
      body.append(row);
      for (const sid of members) {
        if (!roomsOf.has(sid)) roomsOf.set(sid, []);
        roomsOf.get(sid).push(r.room);
      }
    }
    $('no-rooms').hidden = rooms.length > 0;
    $('rooms').hidden = rooms.length === 0;

    const list = $('members');
    list.replaceChildren();
    for (const [sid, in_] of [...roomsOf].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const item = document.createElement('li');
      item.dataset.sid = sid;
      const id = document.createElement('code');
      id.textContent = sid;
      const where = document.createElement('span');
      where.className = 'muted';
      where.textContent = ' in ' + in_.join(', ') + ' ';
      const button = document.createElement('button');
      button.type = 'button';
      button.textContent = 'Disconnect';
      button.addEventListener('click', () => disconnect(sid));
      item.append(id, where, button);
      list.append(item);
    }
  }

  // Actions.

  async function disconnect(sid) {
    const result = $('disconnect-result');
    result.textContent = 'Disconnecting ' + sid + '…';
    try {
      await api('POST', '/api/disconnect', { sid });
      result.textContent = 'Disconnected ' + sid + '.';
      pollRooms(generation);
    } catch (e) {
      const text = failed(e, 'action');
      if (text) result.textContent = 'Could not disconnect ' + sid + ': ' + text;
    }
  }

  $('disconnect-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const sid = $('disconnect-sid').value.trim();
    if (sid) disconnect(sid);
  });

  $('publish-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const result = $('publish-result');
    let data;
    try {
      data = JSON.parse($('data').value);
    } catch (e) {
      result.textContent = 'The data is not JSON: ' + e.message;
      return;
    }
    const command = { event: $('event').value, data };
    const room = $('room').value.trim();
    const sid = $('sid').value.trim();
    if (room) command.room = room;
    if (sid) command.sid = sid;
    result.textContent = 'Publishing…';
    try {
      const reply = await api('POST', '/api/publish', command);
      result.textContent = 'Published at cursor ' + reply.cursor + '.';
    } catch (e) {
      const text = failed(e, 'action');
      if (text) result.textContent = 'Could not publish: ' + text;
    }
  });

  if (key) {
    // A reload in the same tab: the key was accepted before, so the form
    // is not shown unless the server now refuses it.
    keySection.hidden = true;
    startPolling();
  } else {
    showKeyForm('');
  }
})();
