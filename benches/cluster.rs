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

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use common::support::cluster::{self, Redis};
use common::support::process::{self, Spawned};
use common::*;
use serde_json::json;
use tokio::time::Instant;

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

/// Emits from a poller through `via` and times the arrival on `watcher`.
async fn latency(sender: &Poller, via: SocketAddr, watcher: &mut Sse, n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"event": "chat message", "data": format!("m{i}")}).to_string();
        let t0 = Instant::now();
        let r = post(via, &format!("/emit?sid={}", sender.sid), body.as_bytes()).await;
        assert_eq!(r.status, 204, "{}", r.text());
        loop {
            let (event, data) = watcher.next_event().await;
            if event == "chat message" && data.contains(&format!("\"m{i}\"")) {
                break;
            }
        }
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples[n / 2], samples[n * 99 / 100])
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
    let mut out = String::from(
        "| setup | connect+disconnect /s | every client exact | Redis commands per connect | per disconnect | per broadcast | emit→other client p50 / p99 (ms) |\n|---|---|---|---|---|---|---|\n",
    );

    // One node alone.
    let mut cmd = process::ssio(&[], 0);
    cmd.args(["--max-sessions", "1000000"]);
    let single: Spawned = process::spawn(cmd, Duration::from_secs(10)).await.unwrap();
    let mut watchers = vec![Sse::connect(single.addr).await];
    let (rate, _) = churn(&[single.addr], &flags).await;
    exact_after(&mut watchers, 1).await;
    let sender = Poller::handshake(single.addr).await;
    let (p50, p99) = latency(&sender, single.addr, &mut watchers[0], flags.messages).await;
    out.push_str(&format!(
        "| 1 node, no Redis | {rate:.0} | yes | – | – | – | {p50:.2} / {p99:.2} |\n"
    ));
    drop(single);

    // Three nodes on one Redis (default heartbeats: renewals every 7.5 s,
    // so they barely show in the command counts).
    let redis = Redis::start().await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(cluster::node(&redis, &format!("b{i}"), 25_000, 20_000).await);
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
    let (x50, x99) = latency(&sender, addrs[0], &mut watchers[1], flags.messages).await;
    let b1 = commandstats(&redis).await;
    let (f50, f99) = latency(&sender, addrs[2], &mut watchers[1], flags.messages).await;
    let (l50, l99) = latency(&sender, addrs[0], &mut watchers[0], flags.messages).await;
    out.push_str(&format!(
        "| 3 nodes, one Redis | {rate:.0} | yes | {} | {} | {} | across nodes {x50:.2} / {x99:.2}; same node {l50:.2} / {l99:.2}; emit forwarded {f50:.2} / {f99:.2} |\n",
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
    println!("{out}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.md"), &out).unwrap();
}
