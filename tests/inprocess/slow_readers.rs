//! Slow readers cannot grow memory or slow anyone else: one that stops
//! reading is dropped by the kernel's user timeout, one that falls more than
//! `--max-pending-events` behind is told `slow reader`.

use std::time::{Duration, Instant};

use crate::support::*;
use ssio::Config;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_dropped_and_nobody_else_is_slowed() {
    let server = Server::start(Config {
        ping_interval_ms: 500,
        ping_timeout_ms: 1_000,
        max_pending_events: 256,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    // The stalled client: a tiny receive buffer, and it never reads.
    let stalled = {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        s
    };
    let mut reader = Sse::connect(addr).await;
    reader.wait_count(2, WAIT).await;

    // 40 bursts of 100 one-kilobyte messages; the reader keeps up.
    let payload = "x".repeat(1000);
    let t = Instant::now();
    // On a loaded machine the stalled client can be dropped while the bursts
    // are still going, so the count seen on the way is kept.
    let mut last_count = 2;
    for burst in 0..40 {
        for i in 0..100 {
            server.io.emit(
                "chat message",
                serde_json::json!({ "n": burst * 100 + i, "p": payload }),
            );
        }
        loop {
            let (event, data) = reader.next_event().await;
            if event == "user count" {
                last_count = data.parse().unwrap();
            }
            if event == "chat message" {
                let v: serde_json::Value = serde_json::from_str(&data).unwrap();
                if v["n"] == burst * 100 + 99 {
                    break;
                }
            }
        }
    }
    let elapsed = t.elapsed();
    eprintln!("4000 x 1 KB delivered to the live reader in {elapsed:?}");
    // The stalled one is gone within pingTimeout of its window closing, and
    // the reader learns the count fell.
    if last_count != 1 {
        reader.wait_count(1, Duration::from_secs(5)).await;
    }
    server.wait_sessions(1, WAIT).await;
    drop(stalled);
}

// Single-threaded on purpose: while this task emits without awaiting, the
// server cannot poll the stream, which is exactly what falling behind means.
#[tokio::test]
async fn a_reader_that_falls_too_far_behind_is_told_why() {
    // The reader reads, but only after 600 events went out with room for 100.
    let server = Server::start(Config {
        max_pending_events: 100,
        ..fast_config()
    })
    .await;
    let mut behind = Sse::connect(server.addr).await;
    behind.wait_count(1, WAIT).await;
    for n in 0..600 {
        server.io.emit("chat message", n);
    }
    let mut got = Vec::new();
    loop {
        let (event, data) = behind.next_event().await;
        if event == "disconnect" {
            assert_eq!(data, r#""slow reader""#);
            break;
        }
        if event == "chat message" {
            got.push(data.parse::<i64>().unwrap());
        }
    }
    // Whatever arrived before the drop arrived in order, without gaps.
    assert_eq!(got, (0..got.len() as i64).collect::<Vec<_>>());
    server.wait_sessions(0, WAIT).await;
}
