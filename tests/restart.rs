//! A storm-safe restart: 2,000 SSE clients of a node that gets SIGTERM all
//! receive the `retry` hint and `disconnect` / `"server shutdown"`, and when
//! each waits its hint before reconnecting to a second node, their arrivals
//! spread over `--reconnect-spread` instead of landing in one burst.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 2_000;
const SPREAD_MS: u64 = 2_000;
const BUCKET_MS: u64 = 250;

/// Reads from `s` into `buf` until it holds `needle`; `false` on EOF.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> bool {
    let mut chunk = [0u8; 4096];
    while support::http::find(buf, needle).is_none() {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

async fn open_stream(server: SocketAddr, salt: u32) -> (TcpStream, Vec<u8>) {
    let mut s = support::loopback::connect(server, salt).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert!(read_until(&mut s, &mut buf, b"event: connect\n").await);
    (s, buf)
}

/// The last `retry:` field's value in an SSE byte stream: the shutdown's,
/// which overrides the one every stream opens with.
fn retry_field(buf: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(buf);
    let at = text
        .rfind("\nretry: ")
        .or_else(|| text.find("retry: ").filter(|i| *i == 0))?;
    let rest = &text[at..].trim_start_matches('\n')["retry: ".len()..];
    rest.split('\n').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_spreads_two_thousand_reconnections_over_the_stated_window() {
    let spread = SPREAD_MS.to_string();
    let mut first = spawn_ssio(
        &[],
        0,
        &["--reconnect-spread", &spread, "--shutdown-timeout", "5000"],
    )
    .await;
    let second = Server::start(fast_config()).await;
    let (node1, node2) = (first.addr, second.addr);

    let opened = Arc::new(AtomicUsize::new(0));
    let (go_tx, go_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let opened = opened.clone();
        let mut go = go_rx.clone();
        tasks.push(tokio::spawn(async move {
            let (mut s, mut buf) = open_stream(node1, i as u32).await;
            opened.fetch_add(1, Ordering::SeqCst);
            let ended = read_until(
                &mut s,
                &mut buf,
                b"event: disconnect\ndata: \"server shutdown\"\n\n",
            )
            .await;
            assert!(ended, "client {i}: stream ended without the disconnect");
            let hint = retry_field(&buf).unwrap_or_else(|| {
                panic!(
                    "client {i}: no retry hint in {:?}",
                    String::from_utf8_lossy(&buf)
                )
            });
            assert!(
                support::http::find(&buf, format!("event: retry\ndata: {hint}\n\n").as_bytes())
                    .is_some(),
                "client {i}: the retry event must carry the same delay"
            );
            drop(s);
            tokio::time::sleep(Duration::from_millis(hint)).await;
            let back = open_stream(node2, i as u32 + 7).await;
            let t0 = go.wait_for(Option::is_some).await.unwrap().unwrap();
            (hint, t0.elapsed(), back)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while opened.load(Ordering::SeqCst) < CLIENTS {
        assert!(
            Instant::now() < deadline,
            "only {} streams opened",
            opened.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_node_sessions(node1, CLIENTS).await;

    let t0 = Instant::now();
    go_tx.send(Some(t0)).unwrap();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &first.pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());

    let mut hints = Vec::with_capacity(CLIENTS);
    let mut arrivals = Vec::with_capacity(CLIENTS);
    let mut streams = Vec::with_capacity(CLIENTS);
    for t in tasks {
        let (hint, at, stream) = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a client never came back")
            .unwrap();
        hints.push(hint);
        arrivals.push(at);
        streams.push(stream);
    }
    assert!(first.child.wait().await.unwrap().success());
    second.wait_sessions(CLIENTS, WAIT).await;

    // The hints cover the window.
    hints.sort_unstable();
    assert!(hints[hints.len() - 1] <= SPREAD_MS);
    assert!(hints[0] < SPREAD_MS / 10, "smallest hint {}", hints[0]);
    assert!(
        hints[hints.len() - 1] > SPREAD_MS * 9 / 10,
        "largest hint {}",
        hints[hints.len() - 1]
    );

    // Arrivals at the second node, per 250 ms after SIGTERM.
    let last = *arrivals.iter().max().unwrap();
    let buckets = (last.as_millis() as u64 / BUCKET_MS) as usize + 1;
    let mut histogram = vec![0usize; buckets];
    for a in &arrivals {
        histogram[(a.as_millis() as u64 / BUCKET_MS) as usize] += 1;
    }
    println!("reconnections at the second node after SIGTERM ({CLIENTS} clients, --reconnect-spread {SPREAD_MS}):");
    for (i, n) in histogram.iter().enumerate() {
        println!(
            "  {:>5}-{:<5} ms {:>5} {}",
            i as u64 * BUCKET_MS,
            (i as u64 + 1) * BUCKET_MS,
            n,
            "#".repeat(n / 10)
        );
    }
    arrivals.sort_unstable();
    let (p10, p90) = (arrivals[CLIENTS / 10], arrivals[CLIENTS * 9 / 10]);
    println!("last arrival {last:?} after SIGTERM; p10 {p10:?}, p90 {p90:?}");
    // Uniform over the window would put CLIENTS / 8 = 250 in each bucket;
    // reconnecting at once would put all 2,000 in one. A loaded machine
    // delivers the shutdown late to some, so allow three times the share.
    let uniform = CLIENTS as u64 * BUCKET_MS / SPREAD_MS;
    let peak = *histogram.iter().max().unwrap() as u64;
    assert!(
        peak <= 3 * uniform,
        "a burst of {peak} in one {BUCKET_MS} ms bucket: {histogram:?}"
    );
    // The middle 80% of arrivals take most of the window.
    assert!(
        p90 - p10 >= Duration::from_millis(SPREAD_MS * 6 / 10),
        "arrivals between p10 {p10:?} and p90 {p90:?}: not spread"
    );
    assert!(
        last < Duration::from_millis(SPREAD_MS + 5_000),
        "last arrival {last:?}"
    );
}

/// Waits until the server process at `addr` reports `n` sessions.
async fn wait_node_sessions(addr: SocketAddr, n: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = get(addr, "/stats").await.json();
        if stats["sessions"] == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node has {stats}, want {n} sessions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
