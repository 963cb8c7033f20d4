//! Three ssio nodes on one Redis next to one node alone, in the same run.
//!
//! `cargo bench --bench cluster -- [--cycles 3000] [--messages 300]`
//!
//! For each setup it measures: the connect+disconnect rate reached by
//! concurrent clients (each cycle a poll handshake and a close on one node,
//! nodes taken in turn) and whether every watching client ends on the exact
//! count; the Redis commands per connect, per disconnect and per broadcast
//! (from `INFO commandstats`, scripts' inner commands listed apart); and the
//! time from an emit to its arrival on another client, on one node, across
//! nodes, and with the emit forwarded from a node that does not hold the
//! sender's session. Writes target/bench/cluster.md.
//!
//! `--forwarded-only` runs one more measurement alone: two nodes on one
//! Redis, a session on the first, and `--forwarded` (2000) emits sent to the
//! second one after another, each replayed on the first before the second
//! answers. It gives the answer's p50/p99 and the TCP connections opened
//! between the two nodes meanwhile (from `ss`), and writes
//! target/bench/forwarded.md.
//!
//! Then the same for socket.io 4.8 with its Redis adapter
//! (`benches/peer/cluster.js`, installed by `npm ci` the first time): one
//! node alone next to three on one Redis, over WebSocket, each client
//! straight to its node. socket.io's long-polling needs sticky sessions,
//! which ssio's setup does not have, so only its WebSocket transport is
//! measured. Its count lives in Redis (INCR/DECR) and each node emits the
//! value its own change produced, so "every client exact" is checked, not
//! asserted: the last count each watcher shows, once the counts stop.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::cluster::{self, Redis};
use support::http::HttpConn;
use support::process::{self, Spawned};
use support::*;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Parser)]
#[command(name = "cluster", bin_name = "cargo bench --bench cluster --")]
struct Flags {
    /// Connect+disconnect cycles per setup.
    #[arg(long, default_value_t = 3000)]
    cycles: usize,
    /// Concurrent clients doing the cycles.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Broadcasts timed per path.
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Leave socket.io out.
    #[arg(long)]
    no_socketio: bool,
    /// Emits timed one after another through a node that forwards each.
    #[arg(long, default_value_t = 2000)]
    forwarded: usize,
    /// Measure only the forwarded emits, on two nodes of their own.
    #[arg(long)]
    forwarded_only: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Calls per Redis command since the server started.
async fn commandstats(redis: &Redis) -> BTreeMap<String, u64> {
    let info = redis.cmd(&["INFO", "commandstats"]).await.unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

fn per_op(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, ops: usize) -> String {
    // A script's inner commands are counted too: EVALSHA is what a node
    // sends, the rest of a join or leave runs inside it.
    let mut calls = Vec::new();
    for (name, n) in after {
        let d = (n - before.get(name).copied().unwrap_or(0)) as f64 / ops as f64;
        if d >= 0.01 && name != "info" {
            calls.push(format!("{name} {d:.2}"));
        }
    }
    calls.join(", ")
}

async fn churn(nodes: &[SocketAddr], flags: &Flags) -> (f64, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..flags.concurrency {
        let nodes = nodes.to_vec();
        let n = flags.cycles / flags.concurrency;
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                let addr = nodes[(t + i) % nodes.len()];
                let p = Poller::handshake(addr).await;
                assert_eq!(p.close().await.status, 204);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    let done = flags.cycles / flags.concurrency * flags.concurrency;
    (done as f64 / took.as_secs_f64(), took)
}

/// As [`churn`], each cycle an SSE stream opened (its `connect` read) and
/// dropped: the same work as a socket.io WebSocket cycle.
async fn churn_sse(nodes: &[SocketAddr], flags: &Flags) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..flags.concurrency {
        let nodes = nodes.to_vec();
        let n = flags.cycles / flags.concurrency;
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                drop(Sse::connect(nodes[(t + i) % nodes.len()]).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = flags.cycles / flags.concurrency * flags.concurrency;
    done as f64 / start.elapsed().as_secs_f64()
}

/// Emits from a poller through `via` and times the arrival on `watcher`.
/// Each call's messages carry their own `tag`, so that a watcher never
/// takes an earlier call's message, still unread, for this one's.
async fn latency(
    sender: &Poller,
    via: SocketAddr,
    watcher: &mut Sse,
    n: usize,
    tag: &str,
) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"event": "chat message", "data": format!("{tag}{i}")}).to_string();
        let t0 = Instant::now();
        let r = post(via, &format!("/emit?sid={}", sender.sid), body.as_bytes()).await;
        assert_eq!(r.status, 204, "{}", r.text());
        loop {
            let (event, data) = watcher.next_event().await;
            if event == "chat message" && data.contains(&format!("\"{tag}{i}\"")) {
                break;
            }
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples[n / 2], samples[n * 99 / 100])
}

/// The far ends of every TCP connection to or from `addr` in any state but
/// listening; TIME-WAIT included, so a connection closed within the last
/// minute still counts.
fn tcp_peers(addr: SocketAddr) -> HashSet<String> {
    let out = std::process::Command::new("ss")
        .arg("-Htan")
        .output()
        .expect("run ss (iproute2)");
    let me = addr.to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["LISTEN", ..] => None,
                [_, _, _, local, peer, ..] if *local == me => Some(peer.to_string()),
                [_, _, _, local, peer, ..] if *peer == me => Some(local.to_string()),
                _ => None,
            }
        })
        .collect()
}

/// `n` emits sent one after another to node `via` for a session on node
/// `owner`, each replayed on the owner before `via` answers. The event has
/// no handler, so what is timed is the hop: p50 and p99 of the answer (ms),
/// on the bench's own keep-alive connection to `via`, and the TCP
/// connections opened to the owner meanwhile (none are the bench's own).
async fn forwarded(owner: SocketAddr, via: SocketAddr, n: usize) -> (f64, f64, usize) {
    let session = Sse::connect(owner).await;
    let before = tcp_peers(owner);
    let mut conn = HttpConn::open(via, 0).await.unwrap();
    let path = format!("/emit?sid={}", session.sid);
    let body = br#"{"event":"hop","data":0}"#;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let (status, answer) = conn.request("POST", &path, body).await.unwrap();
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&answer));
    }
    let opened = tcp_peers(owner).difference(&before).count();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples[n / 2], samples[n * 99 / 100], opened)
}

/// Two nodes of their own on one Redis, for [`forwarded`].
async fn forwarded_only(flags: &Flags) -> String {
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for id in ["owner", "via"] {
        nodes.push(
            cluster::node_with(&redis.url(), id, 25_000, 20_000, &["--max-emit-rate", "0"]).await,
        );
    }
    let (p50, p99, opened) = forwarded(nodes[0].addr, nodes[1].addr, flags.forwarded).await;
    format!(
        "| emits forwarded one after another | answer p50 / p99 (ms) | TCP connections opened to the owner |\n|---|---|---|\n| {} | {p50:.3} / {p99:.3} | {opened} |\n",
        flags.forwarded
    )
}

async fn exact_after(watchers: &mut [Sse], n: i64) -> Duration {
    let t = Instant::now();
    for w in watchers.iter_mut() {
        w.drain_to_latest_count(n).await;
    }
    t.elapsed()
}

#[tokio::main]
async fn main() {
    let flags = Flags::parse();
    if flags.forwarded_only {
        let out = forwarded_only(&flags).await;
        println!("{out}");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("forwarded.md"), &out).unwrap();
        return;
    }
    let mut out = String::from(
        "| setup | connect+disconnect /s, poll / SSE | every client exact | Redis commands per connect | per disconnect | per broadcast | emit→other client p50 / p99 (ms) |\n|---|---|---|---|---|---|---|\n",
    );

    // One node alone.
    let mut cmd = process::ssio(&[], 0);
    // The timed emits come faster than a client may send by default.
    cmd.args(["--max-sessions", "1000000", "--max-emit-rate", "0"]);
    let single: Spawned = process::spawn(cmd, Duration::from_secs(10)).await.unwrap();
    let mut watchers = vec![Sse::connect(single.addr).await];
    let (rate, _) = churn(&[single.addr], &flags).await;
    exact_after(&mut watchers, 1).await;
    let sse_rate = churn_sse(&[single.addr], &flags).await;
    exact_after(&mut watchers, 1).await;
    let sender = Poller::handshake(single.addr).await;
    let (p50, p99) = latency(&sender, single.addr, &mut watchers[0], flags.messages, "s").await;
    out.push_str(&format!(
        "| 1 node, no Redis | {rate:.0} / {sse_rate:.0} | yes | – | – | – | {p50:.2} / {p99:.2} |\n"
    ));
    drop(single);

    // Three nodes on one Redis (default heartbeats: renewals every 7.5 s,
    // so they barely show in the command counts).
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(
            cluster::node_with(
                &redis.url(),
                &format!("b{i}"),
                25_000,
                20_000,
                &["--max-emit-rate", "0"],
            )
            .await,
        );
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let mut watchers = Vec::new();
    for a in &addrs {
        watchers.push(Sse::connect(*a).await);
    }
    exact_after(&mut watchers, 3).await;

    let before = commandstats(&redis).await;
    let (rate, _) = churn(&addrs, &flags).await;
    let after = commandstats(&redis).await;
    exact_after(&mut watchers, 3).await;
    let sse_rate = churn_sse(&addrs, &flags).await;
    exact_after(&mut watchers, 3).await;
    // Connects and disconnects apart, for the per-op figures.
    let s0 = commandstats(&redis).await;
    let mut held = Vec::new();
    for i in 0..200 {
        held.push(Poller::handshake(addrs[i % 3]).await);
    }
    let s1 = commandstats(&redis).await;
    for p in &held {
        assert_eq!(p.close().await.status, 204);
    }
    let s2 = commandstats(&redis).await;
    exact_after(&mut watchers, 3).await;
    let sender = Poller::handshake(addrs[0]).await;
    let b0 = commandstats(&redis).await;
    let (x50, x99) = latency(&sender, addrs[0], &mut watchers[1], flags.messages, "x").await;
    let b1 = commandstats(&redis).await;
    let (f50, f99) = latency(&sender, addrs[2], &mut watchers[1], flags.messages, "f").await;
    let (l50, l99) = latency(&sender, addrs[0], &mut watchers[0], flags.messages, "l").await;
    out.push_str(&format!(
        "| 3 nodes, one Redis | {rate:.0} / {sse_rate:.0} | yes | {} | {} | {} | across nodes {x50:.2} / {x99:.2}; same node {l50:.2} / {l99:.2}; emit forwarded {f50:.2} / {f99:.2} |\n",
        per_op(&s0, &s1, 200),
        per_op(&s1, &s2, 200),
        per_op(&b0, &b1, flags.messages),
    ));
    out.push_str(&format!(
        "\nChurn: {} cycles by {} clients; Redis commands over the whole churn: {}.\n",
        flags.cycles,
        flags.concurrency,
        per_op(&before, &after, flags.cycles)
    ));
    if !flags.no_socketio {
        out.push_str(&socketio(&flags).await);
    }
    println!("{out}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.md"), &out).unwrap();
}

/// One socket.io client over WebSocket (engine.io v4), answering pings.
struct Sio {
    ws: WebSocketStream<TcpStream>,
}

impl Sio {
    async fn connect(addr: SocketAddr) -> Sio {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tcp.set_nodelay(true);
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        let mut c = Sio { ws };
        let open = c.recv().await;
        assert!(
            open.starts_with('0'),
            "expected engine.io open, got {open:?}"
        );
        c.send("40").await;
        loop {
            let m = c.recv().await;
            if m.starts_with("40") {
                return c;
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next engine.io message that is not a ping.
    async fn recv(&mut self) -> String {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("socket.io said nothing")
                .expect("socket.io closed")
                .unwrap();
            if let Message::Text(t) = m {
                if t.as_str() == "2" {
                    self.send("3").await;
                    continue;
                }
                return t.as_str().to_owned();
            }
        }
    }

    /// The next event: its name and data.
    async fn next_event(&mut self) -> (String, serde_json::Value) {
        loop {
            let m = self.recv().await;
            if let Some(body) = m.strip_prefix("42") {
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                return (v[0].as_str().unwrap().to_string(), v[1].clone());
            }
        }
    }

    async fn emit(&mut self, event: &str, data: &str) {
        self.send(&format!("42{}", json!([event, data]))).await;
    }

    async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A socket.io node: `cluster.js` alone, or on `redis`.
async fn sio_node(redis: Option<&Redis>) -> Spawned {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/cluster.js");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script).arg("0");
    if let Some(r) = redis {
        cmd.arg(r.url());
    }
    process::spawn(cmd, Duration::from_secs(20)).await.unwrap()
}

/// Watchers that record every count they see, one per node.
struct SioWatchers {
    last: Vec<std::sync::Arc<std::sync::Mutex<(i64, Instant)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SioWatchers {
    async fn start(addrs: &[SocketAddr]) -> SioWatchers {
        let mut last = Vec::new();
        let mut tasks = Vec::new();
        for a in addrs {
            let mut c = Sio::connect(*a).await;
            let slot = std::sync::Arc::new(std::sync::Mutex::new((0, Instant::now())));
            let rec = slot.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let (event, data) = c.next_event().await;
                    if event == "user count" {
                        *rec.lock().unwrap() = (data.as_i64().unwrap(), Instant::now());
                    }
                }
            }));
            last.push(slot);
        }
        SioWatchers { last, tasks }
    }

    /// Waits until no count has arrived for a second, then returns the
    /// last count each watcher shows.
    async fn settled(&self) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let newest = self.last.iter().map(|l| l.lock().unwrap().1).max().unwrap();
            if newest.elapsed() > Duration::from_secs(1) || Instant::now() > deadline {
                return self.last.iter().map(|l| l.lock().unwrap().0).collect();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SioWatchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn sio_churn(nodes: &[SocketAddr], flags: &Flags) -> f64 {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..flags.concurrency {
        let nodes = nodes.to_vec();
        let n = flags.cycles / flags.concurrency;
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                Sio::connect(nodes[(t + i) % nodes.len()])
                    .await
                    .close()
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let done = flags.cycles / flags.concurrency * flags.concurrency;
    done as f64 / start.elapsed().as_secs_f64()
}

/// Emits from `sender` and times the arrival on `watcher`.
/// Tagged as [`latency`] is.
async fn sio_latency(sender: &mut Sio, watcher: &mut Sio, n: usize, tag: &str) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let want = format!("{tag}{i}");
        let t0 = Instant::now();
        sender.emit("chat message", &want).await;
        loop {
            let (event, data) = watcher.next_event().await;
            if event == "chat message" && data == json!(want) {
                break;
            }
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples[n / 2], samples[n * 99 / 100])
}

/// Drains what a sender gets back (its own broadcasts) so its socket never
/// backs up; returns it when told.
async fn drained<T>(c: &mut Sio, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = c.ws.next() => {}
        }
    }
}

/// socket.io alone and with its Redis adapter on three nodes: table rows.
async fn socketio(flags: &Flags) -> String {
    if let Err(e) = process::ensure_peer() {
        return format!("\nsocket.io not measured: {e}\n");
    }
    let mut out = String::from(
        "\n| socket.io 4.8, WebSocket | connect+disconnect /s | every client exact (last counts, want 3) | emit→other client p50 / p99 (ms) |\n|---|---|---|---|\n",
    );
    // One node alone: the three watchers on it.
    let single = sio_node(None).await;
    let addrs = vec![single.addr; 3];
    let watchers = SioWatchers::start(&addrs).await;
    let rate = sio_churn(&[single.addr], flags).await;
    let lasts = watchers.settled().await;
    drop(watchers);
    let mut sender = Sio::connect(single.addr).await;
    let mut watcher = Sio::connect(single.addr).await;
    let (p50, p99) = sio_latency(&mut sender, &mut watcher, flags.messages, "s").await;
    out.push_str(&format!(
        "| 1 node, no adapter | {rate:.0} | {} {lasts:?} | {p50:.2} / {p99:.2} |\n",
        if lasts.iter().all(|&l| l == 3) {
            "yes"
        } else {
            "no"
        }
    ));
    drop(single);

    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(sio_node(Some(&redis)).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let watchers = SioWatchers::start(&addrs).await;
    let rate = sio_churn(&addrs, flags).await;
    let lasts = watchers.settled().await;
    drop(watchers);
    let mut sender = Sio::connect(addrs[0]).await;
    let mut across = Sio::connect(addrs[1]).await;
    let mut same = Sio::connect(addrs[0]).await;
    let (x50, x99) = sio_latency(&mut sender, &mut across, flags.messages, "x").await;
    let (l50, l99) = {
        let work = sio_latency(&mut sender, &mut same, flags.messages, "l");
        drained(&mut across, work).await
    };
    out.push_str(&format!(
        "| 3 nodes, Redis adapter | {rate:.0} | {} {lasts:?} | across nodes {x50:.2} / {x99:.2}; same node {l50:.2} / {l99:.2} |\n",
        if lasts.iter().all(|&l| l == 3) { "yes" } else { "no" }
    ));
    out
}
