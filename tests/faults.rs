//! Faults: killed clients, stalled readers, slow senders, descriptor
//! exhaustion. Counts must stay exact and nobody else may be harmed.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ssio::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_of_500_clients_killed_survivors_converge_exactly() {
    // Heartbeats long enough that 250 live pollers keep up on a busy machine.
    let server = Server::start(Config {
        ping_interval_ms: 1_000,
        ping_timeout_ms: 2_000,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let mut sse = Vec::new();
    let mut polls = Vec::new();
    for i in 0..500 {
        if i % 2 == 0 {
            let mut s = Sse::connect(addr).await;
            s.set_reset_on_drop();
            sse.push(s);
        } else {
            polls.push(LivePoller::start(addr).await);
        }
    }
    server.wait_sessions(500, WAIT).await;
    // Read up to 500 first, so a count seen later comes from the kills.
    for s in sse.iter_mut() {
        s.wait_count(500, WAIT).await;
    }
    // A pseudo-random third of each kind dies without a goodbye.
    let mut seed = 0x9e37_79b9_u32;
    let mut pick = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % 3 == 0
    };
    let (mut killed_sse, mut killed_poll) = (0, 0);
    let mut survivors_sse = Vec::new();
    for s in sse {
        if pick() {
            killed_sse += 1;
            drop(s);
        } else {
            survivors_sse.push(s);
        }
    }
    let mut survivors_poll = Vec::new();
    for p in polls {
        if pick() {
            killed_poll += 1;
            p.kill();
        } else {
            survivors_poll.push(p);
        }
    }
    let live = (500 - killed_sse - killed_poll) as i64;
    eprintln!("killed {killed_sse} SSE and {killed_poll} polling clients; {live} remain");
    assert!(killed_sse > 50 && killed_poll > 50);

    server
        .wait_sessions(live as usize, Duration::from_secs(8))
        .await;
    for s in survivors_sse.iter_mut() {
        s.wait_count(live, Duration::from_secs(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in &survivors_poll {
        while p.last.load(Ordering::SeqCst) != live {
            assert!(
                Instant::now() < deadline,
                "poller {} stuck at {}",
                p.poller.sid,
                p.last.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for s in survivors_sse.iter_mut() {
        s.assert_quiet(Duration::from_millis(5)).await;
    }
    let stats = server.io.stats();
    assert_eq!(
        (stats.sessions, stats.count),
        (live as usize, live as usize)
    );
    assert_eq!(stats.sse, survivors_sse.len());
    assert_eq!(stats.polling, survivors_poll.len());
}

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
    for burst in 0..40 {
        for i in 0..100 {
            server.io.emit(
                "chat message",
                serde_json::json!({ "n": burst * 100 + i, "p": payload }),
            );
        }
        loop {
            let (event, data) = reader.next_event().await;
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
    reader.wait_count(1, Duration::from_secs(5)).await;
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

#[tokio::test]
async fn slowloris_headers_are_cut_off_and_others_are_served() {
    let server = Server::start(Config {
        header_timeout_ms: 500,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let slow = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = Instant::now();
        for b in b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(100)
        {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if t.elapsed() > Duration::from_secs(4) {
                break;
            }
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        (t.elapsed(), String::from_utf8_lossy(&buf).to_string())
    });
    // Meanwhile everyone else is served at once.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(get(addr, "/stats").await.status, 200);
        assert!(t.elapsed() < Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (took, answer) = slow.await.unwrap();
    assert!(
        took < Duration::from_secs(2),
        "slow client kept its connection for {took:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn every_live_session_id_stays_private() {
    let server = Server::start(Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let mut a = Sse::connect(server.addr).await;
    let p = Poller::handshake(server.addr).await;
    a.wait_count(2, WAIT).await;
    p.emit("chat message", serde_json::json!("hi")).await;
    let (_, data) = a.next_event().await;
    assert!(!data.contains(&p.sid), "a broadcast leaked a sid: {data}");
    let polled = p.poll().await.text();
    assert!(!polled.contains(&a.sid), "a poll leaked a sid: {polled}");
    let stats = get(server.addr, "/stats").await.text();
    assert!(!stats.contains(&a.sid) && !stats.contains(&p.sid));
}
