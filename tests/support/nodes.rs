//! A cluster as the cluster tests set one up: ssio nodes on one Redis,
//! either processes of the binary behind nginx ([`Cluster`]) or nodes in
//! this process running the feature-test app ([`Embedded`]); clients whose
//! events a task records ([`Watched`]); and the waits for what every node,
//! every client and Redis must come to show, each bounded.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::cluster::{self, Nginx, Redis};
use super::features;
use super::harness::{fast_config, get, header_in, post, Poller, Reader, Sse, WAIT};
use super::process::Spawned;

/// Short heartbeats, so a dead node must be gone within 2 s.
pub const PING_INTERVAL: u64 = 1000;
/// See [`PING_INTERVAL`].
pub const PING_TIMEOUT: u64 = 1000;
/// How soon a dead node's sessions must leave the count.
pub const BOUND: Duration = Duration::from_millis(PING_INTERVAL + PING_TIMEOUT);

/// Taken by each test for its whole run: every test starts several
/// processes on the one machine, and a test's timings hold only alone.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for this test's turn and returns it, to hold until the test ends;
/// `None` (the test skips) when redis-server or nginx is missing, unless
/// SSIO_REQUIRE_CLUSTER=1 makes that a failure.
pub async fn one_at_a_time() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    let ok = cluster::have("redis-server") && cluster::have("nginx");
    if !ok && std::env::var("SSIO_REQUIRE_CLUSTER").as_deref() == Ok("1") {
        panic!("redis-server and nginx are required");
    }
    if !ok {
        eprintln!("skipping: redis-server or nginx missing");
        return None;
    }
    Some(SERIAL.lock().await)
}

/// Nodes of the binary on the Redis at `url`, one per id, each ready
/// (registered and subscribed) before this returns.
pub async fn spawn_nodes(url: &str, ids: &[&str]) -> Vec<Spawned> {
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(cluster::node_at(url, id, PING_INTERVAL, PING_TIMEOUT).await);
    }
    for node in &nodes {
        wait_healthy(node.addr, true).await;
    }
    nodes
}

/// Nodes of the binary on one Redis, behind one nginx.
pub struct Cluster {
    /// The Redis every node uses.
    pub redis: Redis,
    /// The nodes, `n0` first; a killed one is `None`.
    pub nodes: Vec<Option<Spawned>>,
    /// Round-robin over every node, with no affinity.
    pub nginx: Nginx,
}

impl Cluster {
    /// A new Redis, `n` nodes on it (`n0`, `n1`, ...) and nginx in front,
    /// every node ready before a client arrives.
    pub async fn start(n: usize) -> Cluster {
        let redis = Redis::start().await;
        let ids: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let nodes: Vec<Option<Spawned>> = spawn_nodes(&redis.url(), &ids)
            .await
            .into_iter()
            .map(Some)
            .collect();
        let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
        let nginx = Nginx::start(&addrs).await;
        Cluster {
            redis,
            nodes,
            nginx,
        }
    }

    /// The addresses of the nodes still running, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().flatten().map(|n| n.addr).collect()
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().unwrap().addr
    }

    /// Kills node `i` (SIGKILL) and waits for it to exit.
    pub async fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().unwrap();
        node.child.start_kill().unwrap();
        let _ = node.child.wait().await;
    }

    /// Waits until every running node says it is ready.
    pub async fn wait_ready(&self) {
        for addr in self.addrs() {
            wait_healthy(addr, true).await;
        }
    }
}

/// Waits until the node's `/readyz` says ready (or, with `false`, that its
/// backend is unreachable).
pub async fn wait_healthy(addr: SocketAddr, healthy: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = get(addr, "/readyz").await;
        let want = if healthy {
            (200, json!({"status": "ready"}))
        } else {
            (
                503,
                json!({"status": "not ready", "reason": "backend unreachable"}),
            )
        };
        if (r.status, r.json()) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never became ready={healthy}: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts what Redis answers to each `(command, key, reply)`.
pub async fn assert_redis(redis: &Redis, want: &[(&str, &str, &str)]) {
    for (cmd, key, reply) in want {
        assert_eq!(redis.cmd(&[cmd, key]).await.unwrap(), *reply, "{key}");
    }
}

/// What one client saw, in order, with when it saw it.
#[derive(Default)]
pub struct Seen {
    /// Every `user count`, with when it arrived.
    pub counts: Vec<(i64, Instant)>,
    /// Every chat message's `message`.
    pub chats: Vec<Value>,
    /// Every node that answered one of this client's requests.
    pub nodes: HashSet<String>,
    /// Told `disconnect`, or its polls refused.
    pub disconnected: bool,
}

/// A client whose events a background task records.
pub struct Watched {
    /// What it saw so far.
    pub seen: Arc<Mutex<Seen>>,
    /// Its session.
    pub sid: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watched {
    /// An SSE client on `addr` (a node, or nginx).
    pub async fn sse(addr: SocketAddr) -> Watched {
        let mut s = Sse::connect(addr).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        if let Some(node) = header_in(&s.head, "x-ssio-node") {
            seen.lock().nodes.insert(node);
        }
        let sid = s.sid.clone();
        let rec = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let (event, data) = s.next_event_within(Duration::from_secs(3600)).await;
                record(&rec, &event, serde_json::from_str(&data).unwrap());
            }
        });
        Watched { seen, sid, task }
    }

    /// One SSE client on each of `addrs`, in order.
    pub async fn sse_on(addrs: &[SocketAddr]) -> Vec<Watched> {
        let mut clients = Vec::new();
        for addr in addrs {
            clients.push(Watched::sse(*addr).await);
        }
        clients
    }

    /// A long-polling client, every request through `addr`.
    pub async fn poll(addr: SocketAddr) -> Watched {
        let r = get(addr, "/poll").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let sid = r.json()["sid"].as_str().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        seen.lock().nodes.extend(r.header("x-ssio-node"));
        let rec = seen.clone();
        let path = format!("/poll?sid={sid}");
        let task = tokio::spawn(async move {
            loop {
                let r = get(addr, &path).await;
                rec.lock().nodes.extend(r.header("x-ssio-node"));
                if r.status != 200 {
                    rec.lock().disconnected = true;
                    return;
                }
                for e in r.json().as_array().unwrap() {
                    record(&rec, e["event"].as_str().unwrap(), e["data"].clone());
                }
            }
        });
        Watched { seen, sid, task }
    }

    /// The newest count it saw, and when.
    pub fn last_count(&self) -> Option<(i64, Instant)> {
        self.seen.lock().counts.last().copied()
    }

    /// Every chat message it saw, in order.
    pub fn chats(&self) -> Vec<Value> {
        self.seen.lock().chats.clone()
    }

    /// Whether it was told to go, or its task ended.
    pub fn disconnected(&self) -> bool {
        self.seen.lock().disconnected || self.task.is_finished()
    }
}

fn record(seen: &Mutex<Seen>, event: &str, data: Value) {
    let mut s = seen.lock();
    match event {
        "user count" => s.counts.push((data.as_i64().unwrap(), Instant::now())),
        "chat message" => s.chats.push(data["message"].clone()),
        "disconnect" => s.disconnected = true,
        _ => {}
    }
}

/// Waits until every client's newest count is `n`; returns when the last
/// of them got there.
pub async fn converge(clients: &[&Watched], n: i64, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let lasts: Vec<Option<i64>> = clients
            .iter()
            .map(|c| c.last_count().map(|(v, _)| v))
            .collect();
        if lasts.iter().all(|l| *l == Some(n)) {
            return clients
                .iter()
                .map(|c| c.last_count().unwrap().1)
                .max()
                .unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "counts never all reached {n} within {within:?}: {lasts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until each client saw `message` once, then a moment more, and
/// asserts none saw it twice.
pub async fn exactly_once(clients: &[&Watched], message: &str) {
    let deadline = Instant::now() + WAIT;
    let times = |c: &Watched| c.chats().iter().filter(|m| *m == message).count();
    while !clients.iter().all(|c| times(c) >= 1) {
        assert!(
            Instant::now() < deadline,
            "{message:?} did not reach every client"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in clients {
        assert_eq!(times(c), 1, "{message:?} arrived {} times", times(c));
    }
}

/// A task aborted when this is dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A polling session on `addr` that polls again and again until the
/// returned task is dropped, so that a talker that only emits stays live
/// through waits longer than pingTimeout (a reconnect grace, an away
/// session settling).
pub async fn polling_talker(addr: SocketAddr) -> (Poller, AbortOnDrop) {
    let talker = Poller::handshake(addr).await;
    let p = Poller {
        addr: talker.addr,
        sid: talker.sid.clone(),
    };
    let polling = AbortOnDrop(tokio::spawn(async move {
        loop {
            let r = p.poll().await;
            assert_eq!(r.status, 200, "the talker's poll: {}", r.text());
        }
    }));
    (talker, polling)
}

/// A chat message from session `sid`, sent through `addr`.
pub async fn emit_through(addr: SocketAddr, sid: &str, message: &str) {
    let body = json!({"event": "chat message", "data": message}).to_string();
    let r = post(addr, &format!("/emit?sid={sid}"), body.as_bytes()).await;
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Any event from session `sid`, sent through `addr`.
pub async fn emit_event(addr: SocketAddr, sid: &str, event: &str, data: Value) {
    let body = json!({ "event": event, "data": data }).to_string();
    let r = post(addr, &format!("/emit?sid={sid}"), body.as_bytes()).await;
    assert_eq!(r.status, 204, "{}", r.text());
}

/// An event with an acknowledgement, sent through `addr`; returns its data.
pub async fn ack_through(addr: SocketAddr, sid: &str, event: &str, data: Value) -> Value {
    let body = json!({ "event": event, "data": data, "ack": true }).to_string();
    let r = post(addr, &format!("/emit?sid={sid}"), body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].clone()
}

/// The server API key of every [`Embedded`] node.
pub const API_KEY: &str = "cluster-api-key";

/// Nodes in this process, each running the feature-test app (rooms, acks,
/// `whoami`) on the Redis backend, with a recovery window: what the room
/// and resume tests need, which the demo binary does not serve.
pub struct Embedded {
    /// The Redis every node uses.
    pub redis: Redis,
    nodes: Vec<(SocketAddr, ssio::Io)>,
    stops: Vec<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Embedded {
    /// A new Redis and `n` nodes on it (`n0`, `n1`, ...), each ready.
    pub async fn start(n: usize) -> Embedded {
        let redis = Redis::start().await;
        let mut nodes = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n {
            let id = format!("n{i}");
            let config = ssio::Config {
                redis: Some(redis.url()),
                node_id: Some(id.clone()),
                ping_interval_ms: PING_INTERVAL,
                ping_timeout_ms: PING_TIMEOUT,
                recovery_window_ms: 30_000,
                api_keys: vec![API_KEY.into()],
                ..fast_config()
            };
            let listener = ssio::bind("127.0.0.1:0".parse().unwrap(), config.backlog).unwrap();
            let addr = listener.local_addr().unwrap();
            let settings = ssio::ClusterSettings::new(&redis.url(), &id, &addr.to_string(), BOUND)
                .unwrap()
                .count_event("user count")
                .people_event("people count");
            let io =
                ssio::Io::with_backend(config, |fanout| ssio::RedisBackend::new(fanout, settings));
            features::install(&io);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(ssio::run(listener, io.clone(), async move {
                let _ = rx.await;
            }));
            nodes.push((addr, io));
            stops.push(Some(tx));
        }
        for (addr, _) in &nodes {
            wait_healthy(*addr, true).await;
        }
        Embedded {
            redis,
            nodes,
            stops,
        }
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].0
    }

    /// Node `i`'s server handle.
    pub fn io(&self, i: usize) -> &ssio::Io {
        &self.nodes[i].1
    }

    /// Shuts node `i` down, as SIGTERM would.
    pub fn stop(&mut self, i: usize) {
        if let Some(tx) = self.stops[i].take() {
            let _ = tx.send(());
        }
    }

    /// Waits until every node shows `count` and the sessions, live and
    /// away, are where the test expects them.
    pub async fn settle(&self, count: usize, sessions: &[usize], away: &[usize]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats: Vec<_> = self.nodes.iter().map(|(_, io)| io.stats()).collect();
            let ok = stats
                .iter()
                .enumerate()
                .all(|(i, s)| s.count == count && s.sessions == sessions[i] && s.away == away[i]);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "want count {count}, sessions {sessions:?}, away {away:?}; have {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asserts that Redis counts exactly `members` sessions and holds an
    /// owner record for exactly `owners` (live plus away) sessions.
    pub async fn records(&self, members: usize, owners: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.redis.cmd(&["ZCARD", "{ssio}:members"]).await.unwrap();
            let o = self.redis.cmd(&["HLEN", "{ssio}:owners"]).await.unwrap();
            if (m.as_str(), o.as_str()) == (&*members.to_string(), &*owners.to_string()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis holds {m} members and {o} owners, want {members} and {owners}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until node `i` holds `n` away sessions.
    pub async fn wait_away(&self, i: usize, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.io(i).stats().away != n {
            assert!(
                Instant::now() < deadline,
                "node {i} never had {n} away: {:?}",
                self.io(i).stats()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drops `stream` as a dead network would (a reset, no close) and
    /// waits until its session, held on node `i`, is that node's one away
    /// session.
    pub async fn cut_away(&self, stream: Reader, i: usize) {
        let mut stream = stream;
        stream.sse.set_reset_on_drop();
        drop(stream);
        self.wait_away(i, 1).await;
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        for (_, io) in &self.nodes {
            io.shutdown();
        }
        for tx in self.stops.drain(..).flatten() {
            let _ = tx.send(());
        }
    }
}

impl Reader {
    /// Opens a stream on `addr` with `headers` (a `Last-Event-ID`, say) and
    /// reads its `connect`; returns the reader and the handshake.
    pub async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> (Reader, Value) {
        let mut r = Reader::new(Sse::open_with(addr, "/events", headers).await);
        let c = r.next().await;
        assert_eq!(c.event, "connect");
        (r, serde_json::from_str(&c.data).unwrap())
    }

    /// Every ordinary event up to the chat message `sentinel`, which ends
    /// the list (without it).
    pub async fn until(&mut self, sentinel: &str) -> Vec<(String, String)> {
        let mut got = Vec::new();
        loop {
            let b = self.next_ordinary().await;
            let v: Value = serde_json::from_str(&b.data).unwrap();
            if b.event == "chat message" && v["message"] == json!(sentinel) {
                return got;
            }
            got.push((b.event, b.data));
        }
    }
}
