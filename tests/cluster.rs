//! Several nodes on one Redis: three ssio processes, a real `redis-server`
//! and a real nginx balancing round-robin with no affinity, all started on
//! free loopback ports. One exact count everywhere, broadcasts exactly once,
//! polls and emits on any node, a killed node's clients gone within the
//! heartbeat bound, and a Redis restart or a killed subscription repaired.
//!
//! Needs `redis-server` and `nginx`; without them the tests skip, unless
//! SSIO_REQUIRE_CLUSTER=1 (the full test command sets it) makes that a
//! failure. The tests run one at a time: each starts five processes.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::support::cluster::{self, Freezer, Nginx, Redis, Subscriber};
use common::support::process::Spawned;
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Short heartbeats, so a dead node must be gone within 2 s.
const PING_INTERVAL: u64 = 1000;
const PING_TIMEOUT: u64 = 1000;
const BOUND: Duration = Duration::from_millis(PING_INTERVAL + PING_TIMEOUT);
/// How soon after churn stops every client must show the exact count.
const CONVERGE: Duration = Duration::from_millis(250);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tools_or_skip() -> bool {
    let ok = cluster::have("redis-server") && cluster::have("nginx");
    if !ok && std::env::var("SSIO_REQUIRE_CLUSTER").as_deref() == Ok("1") {
        panic!("redis-server and nginx are required");
    }
    if !ok {
        eprintln!("skipping: redis-server or nginx missing");
    }
    ok
}

struct Cluster {
    redis: Redis,
    nodes: Vec<Option<Spawned>>,
    nginx: Nginx,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let redis = Redis::start().await;
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("n{i}");
            nodes.push(Some(
                cluster::node(&redis, &id, PING_INTERVAL, PING_TIMEOUT).await,
            ));
        }
        let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
        let nginx = Nginx::start(&addrs).await;
        let c = Cluster {
            redis,
            nodes,
            nginx,
        };
        // Every node registered and subscribed before a client arrives.
        for addr in c.addrs() {
            wait_healthy(addr, true).await;
        }
        c
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().flatten().map(|n| n.addr).collect()
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().unwrap().addr
    }

    async fn kill(&mut self, i: usize) {
        let mut node = self.nodes[i].take().unwrap();
        node.child.start_kill().unwrap();
        let _ = node.child.wait().await;
    }
}

/// Waits until the node's `/readyz` says ready (or, with `false`, that its
/// backend is unreachable).
async fn wait_healthy(addr: SocketAddr, healthy: bool) {
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

/// What one client saw, in order, with when it saw it.
#[derive(Default)]
struct Seen {
    counts: Vec<(i64, Instant)>,
    chats: Vec<Value>,
    /// Every node that answered one of this client's requests.
    nodes: HashSet<String>,
    disconnected: bool,
}

/// A client whose events a background task records.
struct Watched {
    seen: Arc<Mutex<Seen>>,
    sid: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watched {
    /// An SSE client on `addr` (a node, or nginx).
    async fn sse(addr: SocketAddr) -> Watched {
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

    /// A long-polling client, every request through `addr`.
    async fn poll(addr: SocketAddr) -> Watched {
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

    fn last_count(&self) -> Option<(i64, Instant)> {
        self.seen.lock().counts.last().copied()
    }

    fn chats(&self) -> Vec<Value> {
        self.seen.lock().chats.clone()
    }

    fn disconnected(&self) -> bool {
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
async fn converge(clients: &[&Watched], n: i64, within: Duration) -> Instant {
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

async fn emit_through(addr: SocketAddr, sid: &str, message: &str) {
    let body = json!({"event": "chat message", "data": message}).to_string();
    let r = post(addr, &format!("/emit?sid={sid}"), body.as_bytes()).await;
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Waits until each client saw `message` once, then a moment more, and
/// asserts none saw it twice.
async fn exactly_once(clients: &[&Watched], message: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_on_every_node_shows_the_same_exact_count_and_polls_need_no_affinity() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(3).await;
    let mut clients = Vec::new();
    for addr in c.addrs() {
        clients.push(Watched::sse(addr).await);
    }
    for _ in 0..3 {
        clients.push(Watched::sse(c.nginx.addr).await);
        clients.push(Watched::poll(c.nginx.addr).await);
    }
    let churn_stopped = Instant::now();
    let all: Vec<&Watched> = clients.iter().collect();
    let reached = converge(&all, 9, WAIT).await;
    assert!(
        reached.saturating_duration_since(churn_stopped) <= CONVERGE,
        "exact only {:?} after churn stopped",
        reached - churn_stopped
    );

    // Round-robin spread the three nginx SSE streams over the three nodes.
    let nodes: HashSet<String> = clients
        .iter()
        .flat_map(|w| w.seen.lock().nodes.clone())
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");

    // A chat message emitted by a poller through nginx (so through any
    // node) reaches every client on every node exactly once.
    let poller = &clients[4];
    emit_through(c.nginx.addr, &poller.sid, "hello from anywhere").await;
    exactly_once(&all, "hello from anywhere").await;
    // And one emitted on node 0 for a session held elsewhere.
    emit_through(c.addr(0), &clients[2].sid, "forwarded").await;
    exactly_once(&all, "forwarded").await;

    // Each polling session's requests were answered by at least two nodes.
    for p in [&clients[4], &clients[6], &clients[8]] {
        let deadline = Instant::now() + WAIT;
        while p.seen.lock().nodes.len() < 2 {
            assert!(Instant::now() < deadline, "a poller saw one node only");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!p.disconnected());
    }

    // A close through nginx ends a session wherever it lives.
    let closing = clients.remove(4);
    let r = post(c.nginx.addr, &format!("/close?sid={}", closing.sid), b"").await;
    assert_eq!(r.status, 204);
    let churn_stopped = Instant::now();
    let all: Vec<&Watched> = clients.iter().collect();
    let reached = converge(&all, 8, WAIT).await;
    assert!(reached.saturating_duration_since(churn_stopped) <= CONVERGE);
}

/// `(version, count)` announcements as Redis delivered them.
type Announced = Arc<Mutex<Vec<(u64, i64)>>>;

/// Reads every count announcement from Redis, in version order.
fn announcements(sub: Subscriber) -> (Announced, tokio::task::JoinHandle<()>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let rec = log.clone();
    let task = tokio::spawn(async move {
        let mut sub = sub;
        while let Ok(m) = sub.next().await {
            let (v, c) = m.split_once(' ').unwrap();
            rec.lock().push((v.parse().unwrap(), c.parse().unwrap()));
        }
    });
    (log, task)
}

/// True if `counts` can be read off `announced` in increasing version
/// order: the client never saw an older count after a newer one.
fn follows_versions(counts: &[i64], announced: &[(u64, i64)]) -> bool {
    let mut at = 0;
    for &c in counts {
        match announced[at..].iter().position(|&(_, a)| a == c) {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_racing_across_nodes_never_shows_a_stale_count_and_ends_exact() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(3).await;
    let sub = Subscriber::open(&c.redis, "{ssio}:count").await.unwrap();
    let (announced, sub_task) = announcements(sub);
    let mut watchers = Vec::new();
    for addr in c.addrs() {
        watchers.push(Watched::sse(addr).await);
    }
    let before = 3;
    // 60 sessions come and go at once, on all three nodes, over both
    // transports; 15 of them stay.
    let addrs = c.addrs();
    let mut tasks = Vec::new();
    for i in 0..60usize {
        let addr = addrs[i % 3];
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let s = Sse::connect(addr).await;
                if i % 4 == 0 {
                    Some(s)
                } else {
                    None
                }
            } else {
                let p = Poller::handshake(addr).await;
                let other = addrs[(i + 1) % 3];
                // Closed through another node than the one holding it.
                assert_eq!(
                    post(other, &format!("/close?sid={}", p.sid), b"")
                        .await
                        .status,
                    204
                );
                None
            }
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.extend(t.await.unwrap());
    }
    let churn_stopped = Instant::now();
    let expected = before + kept.len() as i64;
    assert_eq!(expected, 3 + 15);
    let all: Vec<&Watched> = watchers.iter().collect();
    let reached = converge(&all, expected, WAIT).await;
    // The streams dropped without a close leave once their reconnect grace
    // is over; from then on, the same bound.
    let grace = Duration::from_millis(ssio::config::DEFAULT_RECONNECT_GRACE_MS);
    assert!(
        reached.saturating_duration_since(churn_stopped) <= grace + CONVERGE,
        "exact only {:?} after churn stopped",
        reached - churn_stopped
    );
    sub_task.abort();
    let announced = announced.lock().clone();
    for w in 1..announced.len() {
        assert!(announced[w].0 > announced[w - 1].0, "versions out of order");
    }
    for (i, w) in watchers.iter().enumerate() {
        let counts: Vec<i64> = w.seen.lock().counts.iter().map(|(c, _)| *c).collect();
        assert!(
            follows_versions(&counts, &announced),
            "client {i} saw {counts:?}, not in version order of {announced:?}"
        );
    }
    // What Redis holds agrees.
    assert_eq!(
        c.redis.cmd(&["ZCARD", "{ssio}:members"]).await.unwrap(),
        expected.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_the_count_within_the_heartbeat_bound_and_its_clients_return_once() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(3).await;
    let mut per_node: Vec<Vec<Watched>> = Vec::new();
    for addr in c.addrs() {
        let mut here = Vec::new();
        for _ in 0..3 {
            here.push(Watched::sse(addr).await);
        }
        per_node.push(here);
    }
    let survivors: Vec<&Watched> = per_node[..2].iter().flatten().collect();
    converge(&survivors, 9, WAIT).await;

    let killed_at = Instant::now();
    c.kill(2).await;
    let reached = converge(&survivors, 6, BOUND + Duration::from_secs(3)).await;
    let took = reached - killed_at;
    eprintln!("killed node's sessions left the count after {took:?}");
    assert!(took <= BOUND, "took {took:?}, bound {BOUND:?}");

    // Its clients come back through nginx (which skips the dead node) and
    // are counted once.
    let mut back = Vec::new();
    for _ in 0..3 {
        back.push(Watched::sse(c.nginx.addr).await);
    }
    let all: Vec<&Watched> = survivors.iter().copied().chain(back.iter()).collect();
    converge(&all, 9, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in &all {
        assert_eq!(w.last_count().unwrap().0, 9);
        assert!(!w.disconnected());
    }
    // Nothing of the dead node is left in Redis.
    for (cmd, key, want) in [
        ("ZCARD", "{ssio}:members", "9"),
        ("HLEN", "{ssio}:owners", "9"),
        ("HLEN", "{ssio}:addrs", "2"),
        ("ZCARD", "{ssio}:nodes", "2"),
    ] {
        assert_eq!(c.redis.cmd(&[cmd, key]).await.unwrap(), want, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_uncounts_its_sessions_at_once_and_leaves_no_trace() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(2).await;
    let watcher = Watched::sse(c.addr(0)).await;
    let leaving = [
        Watched::sse(c.addr(1)).await,
        Watched::poll(c.addr(1)).await,
    ];
    converge(&[&watcher], 3, WAIT).await;

    let node = c.nodes[1].as_mut().unwrap();
    let stopped_at = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &node.pid.to_string()])
        .status()
        .unwrap()
        .success());
    // Its sessions leave explicitly, well before any lease could run out.
    let reached = converge(&[&watcher], 1, WAIT).await;
    assert!(
        reached - stopped_at < BOUND / 2,
        "{:?}",
        reached - stopped_at
    );
    let status = tokio::time::timeout(WAIT, node.child.wait())
        .await
        .expect("node did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    for w in &leaving {
        let deadline = Instant::now() + WAIT;
        while !w.disconnected() {
            assert!(
                Instant::now() < deadline,
                "a client of the stopped node was not told"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for (cmd, key, want) in [
        ("ZCARD", "{ssio}:members", "1"),
        ("HLEN", "{ssio}:owners", "1"),
        ("HLEN", "{ssio}:addrs", "1"),
        ("ZCARD", "{ssio}:nodes", "1"),
    ] {
        assert_eq!(c.redis.cmd(&[cmd, key]).await.unwrap(), want, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_and_a_killed_subscription_are_repaired_without_dropping_anyone() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(3).await;
    let mut clients = Vec::new();
    for addr in c.addrs() {
        clients.push(Watched::sse(addr).await);
        clients.push(Watched::poll(addr).await);
    }
    let all: Vec<&Watched> = clients.iter().collect();
    converge(&all, 6, WAIT).await;
    emit_through(c.addr(0), &clients[1].sid, "before").await;
    exactly_once(&all, "before").await;

    // Redis loses everything.
    let restarted = Instant::now();
    c.redis.restart().await;
    for addr in c.addrs() {
        wait_healthy(addr, true).await;
    }
    // A change after the restart shows the exact count everywhere.
    let extra = Watched::sse(c.addr(1)).await;
    let all: Vec<&Watched> = clients.iter().chain([&extra]).collect();
    let reached = converge(&all, 7, WAIT).await;
    eprintln!("exact again {:?} after the restart", reached - restarted);
    assert!(
        reached - restarted <= BOUND + BOUND,
        "{:?}",
        reached - restarted
    );
    assert_eq!(
        c.redis.cmd(&["ZCARD", "{ssio}:members"]).await.unwrap(),
        "7"
    );
    emit_through(c.addr(2), &clients[3].sid, "after restart").await;
    exactly_once(&all, "after restart").await;

    // Every subscription is cut; the nodes notice, resubscribe and repair.
    let killed = c
        .redis
        .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await
        .unwrap();
    assert_eq!(killed, "3", "one subscription per node");
    for addr in c.addrs() {
        wait_healthy(addr, true).await;
    }
    let more = Watched::poll(c.addr(2)).await;
    let all: Vec<&Watched> = clients.iter().chain([&extra, &more]).collect();
    converge(&all, 8, WAIT).await;
    emit_through(c.addr(1), &more.sid, "after kill").await;
    exactly_once(&all, "after kill").await;

    for w in &all {
        assert!(!w.disconnected(), "a client was disconnected");
        assert_eq!(
            w.chats().len(),
            w.chats().iter().collect::<HashSet<_>>().len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_subscription_is_detected_by_its_probe_and_replaced() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let redis = Redis::start().await;
    let relay = Freezer::start(&redis).await;
    let a = cluster::node_at(&relay.url(), "a", PING_INTERVAL, PING_TIMEOUT).await;
    let b = cluster::node_at(&relay.url(), "b", PING_INTERVAL, PING_TIMEOUT).await;
    wait_healthy(a.addr, true).await;
    wait_healthy(b.addr, true).await;
    let on_a = Watched::sse(a.addr).await;
    let on_b = Watched::poll(b.addr).await;
    converge(&[&on_a, &on_b], 2, WAIT).await;

    // Both subscriptions go silent without closing.
    let frozen_at = Instant::now();
    assert_eq!(relay.freeze_subscriptions(), 2);
    // A's subscription carries nothing now; once A notices the silence and
    // resubscribes, B's broadcasts reach A's client again.
    let mut n = 0;
    loop {
        n += 1;
        emit_through(b.addr, &on_b.sid, &format!("m{n}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !on_a.chats().is_empty() {
            break;
        }
        assert!(
            frozen_at.elapsed() < BOUND + Duration::from_secs(2),
            "A never heard B again after its subscription went silent"
        );
    }
    eprintln!(
        "subscription replaced {:?} after it went silent",
        frozen_at.elapsed()
    );
    // The count is exact on both, and nobody was dropped.
    let on_a2 = Watched::sse(b.addr).await;
    converge(&[&on_a, &on_b, &on_a2], 3, WAIT).await;
    assert!(!on_a.disconnected() && !on_b.disconnected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_node_id_stops_the_binary_with_its_reason_and_node_id_needs_redis() {
    let exe = env!("CARGO_BIN_EXE_ssio");
    let out = std::process::Command::new(exe)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--redis", "redis://127.0.0.1:1/", "--node-id", "a|b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node id \"a|b\" must be"), "{err}");
    let out = std::process::Command::new(exe)
        .args(["--port", "0", "--node-id", "a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_a_node_keeps_its_sessions_refuses_new_ones_and_says_so() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(2).await;
    let a = Watched::sse(c.addr(0)).await;
    let b = Watched::sse(c.addr(0)).await;
    let d = Watched::sse(c.addr(1)).await;
    converge(&[&a, &b, &d], 3, WAIT).await;

    c.redis.stop().await;
    wait_healthy(c.addr(0), false).await;
    // Sessions it has keep working among themselves.
    emit_through(c.addr(0), &a.sid, "local only").await;
    exactly_once(&[&a, &b], "local only").await;
    // A new session cannot be counted: refused with a retry hint.
    let r = get(c.addr(0), "/poll").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after").as_deref(), Some("5"));
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("backend unavailable"));
    // The count it shows is the last one it could vouch for.
    assert_eq!(get(c.addr(0), "/stats").await.json()["count"], json!(3));

    c.redis.restart().await;
    for addr in c.addrs() {
        wait_healthy(addr, true).await;
    }
    let e = Watched::sse(c.addr(1)).await;
    converge(&[&a, &b, &d, &e], 4, WAIT).await;
    for w in [&a, &b, &d, &e] {
        assert!(!w.disconnected());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_unknown_or_forged_sessions_are_refused_by_every_node() {
    if !tools_or_skip() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let c = Cluster::start(2).await;
    let p = Watched::poll(c.addr(0)).await;
    let unknown = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";
    for addr in c.addrs() {
        let r = get(addr, &format!("/poll?sid={unknown}")).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.json(), json!({"error": "unknown session"}));
        assert!(r.header("x-ssio-node").is_some());
    }
    // A client claiming to be a forwarding node is simply not forwarded:
    // the node answers for itself.
    let r = request(
        c.addr(1),
        "GET",
        &format!("/poll?sid={}", p.sid),
        &[("X-Ssio-Forwarded", "n0")],
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "unknown session"}));
    // A bad body forwarded is refused by the owner as it would be directly,
    // and harms nothing.
    let r = post(c.addr(1), &format!("/emit?sid={}", p.sid), b"{not json").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));
    let big = vec![b'x'; ssio::config::DEFAULT_MAX_PAYLOAD + 1];
    let r = post(c.addr(1), &format!("/emit?sid={}", p.sid), &big).await;
    assert_eq!(r.status, 413);
    assert!(!p.disconnected());
    assert_eq!(get(c.addr(1), "/stats").await.json()["count"], json!(1));

    // A close through the other node ends it; the same close replayed on
    // either node changes nothing.
    let watcher = Watched::sse(c.addr(1)).await;
    converge(&[&watcher], 2, WAIT).await;
    for addr in [c.addr(1), c.addr(1), c.addr(0)] {
        let r = post(addr, &format!("/close?sid={}", p.sid), b"").await;
        assert_eq!(r.status, 204);
    }
    converge(&[&watcher], 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watcher.last_count().unwrap().0, 1);
    assert_eq!(
        c.redis.cmd(&["ZCARD", "{ssio}:members"]).await.unwrap(),
        "1"
    );
    assert_eq!(c.redis.cmd(&["HLEN", "{ssio}:owners"]).await.unwrap(), "1");
}

#[tokio::test]
async fn a_single_node_names_no_node_and_has_no_cluster_fields() {
    let server = Server::start(fast_config()).await;
    let r = get(server.addr, "/poll").await;
    assert_eq!(r.header("x-ssio-node"), None);
    let s = Sse::connect(server.addr).await;
    assert_eq!(header_in(&s.head, "x-ssio-node"), None);
    let stats = get(server.addr, "/stats").await.json();
    assert_eq!(stats.get("node"), None);
}
