//! Abandoned sessions are reclaimed without any request, memory included:
//! 20,000 handshakes in process, and 100,000 against the binary, whose RSS
//! must come back to its baseline; away sessions that expire give their
//! memory back too.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ssio::Config;
use support::procfs;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_poll_sessions_are_reclaimed_without_any_request() {
    let server = Server::start(Config {
        ping_interval_ms: 200,
        ping_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    // 20,000 handshakes over 8 keep-alive connections; none polls again.
    flood(addr, 8, 2_500).await;
    assert!(server.io.stats().sessions > 0);
    server.wait_sessions(0, Duration::from_secs(10)).await;
    let r = get(addr, "/stats").await;
    assert_eq!(
        r.text(),
        r#"{"sessions":0,"sse":0,"polling":0,"count":0,"away":0}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_abandoned_handshakes_are_reclaimed() {
    let p = spawn_ssio(
        &[],
        0,
        &["--ping-interval", "500", "--ping-timeout", "6000"],
    )
    .await;
    let pid = p.pid;
    // Warm up allocator and runtime, then take the baseline.
    flood(p.addr, 8, 1_000).await;
    wait_stats_zero(p.addr).await;
    let base = procfs::rss_kib(pid).expect("server gone");
    let t = Instant::now();
    flood(p.addr, 8, 12_500).await;
    let peak = procfs::rss_kib(pid).expect("server gone");
    let r = get(p.addr, "/stats").await;
    eprintln!(
        "100000 handshakes in {:?}; stats right after: {}",
        t.elapsed(),
        r.text()
    );
    wait_stats_zero(p.addr).await;
    // The server trims once when its table empties and once more half a
    // second later, for what the last connections free on other threads.
    // Both must have happened within a few seconds of the last session.
    let bound = base + base / 10;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = procfs::rss_kib(pid).expect("server gone");
    while after > bound && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = procfs::rss_kib(pid).expect("server gone");
    }
    eprintln!("RSS KiB: baseline {base}, peak {peak}, after reclaim {after}");
    assert!(
        after <= bound,
        "RSS {after} KiB not back within 10% of baseline {base} KiB \
         5 s after the last session ended (peak {peak})"
    );
}

async fn wait_stats_zero(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(addr, "/stats").await;
        if r.text() == r#"{"sessions":0,"sse":0,"polling":0,"count":0,"away":0}"# {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sessions never reclaimed: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `total` streams with a browser-sized head from 8 tasks, resetting
/// each as soon as its head came back: each leaves an away session.
async fn open_and_reset(addr: SocketAddr, total: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let opened = Arc::new(AtomicUsize::new(0));
    let head = format!(
        "GET /events HTTP/1.1\r\nHost: localhost\r\nCookie: s={}\r\n\r\n",
        "c".repeat(2_000)
    );
    let mut tasks = Vec::new();
    for salt in 0..8 {
        let (opened, head) = (opened.clone(), head.clone());
        tasks.push(tokio::spawn(async move {
            while opened.load(Ordering::Relaxed) < total {
                let Ok(mut s) = loopback::connect(addr, salt).await else {
                    continue;
                };
                if s.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let mut buf = [0u8; 512];
                if let Ok(Ok(n)) = tokio::time::timeout(WAIT, s.read(&mut buf)).await {
                    if buf[..n].starts_with(b"HTTP/1.1 200") {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("the flood took over 30 s");
}

async fn wait_nothing_away(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(addr, "/stats").await;
        if r.text() == r#"{"sessions":0,"sse":0,"polling":0,"count":0,"away":0}"# {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "away sessions never expired: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_sessions_that_expire_give_their_memory_back() {
    // A window long enough for the whole flood to be away at once, however
    // busy the machine is.
    let p = spawn_ssio(
        &[],
        0,
        &["--recovery-window", "15000", "--max-sessions", "100000"],
    )
    .await;
    let pid = p.pid;
    // Warm up allocator and runtime, then take the baseline.
    open_and_reset(p.addr, 200).await;
    wait_nothing_away(p.addr).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let base = procfs::rss_kib(pid).expect("server gone");
    open_and_reset(p.addr, 4_000).await;
    // Once every reset stream's reconnect grace is over, all are away.
    let deadline = Instant::now() + WAIT;
    let away = loop {
        let s = get(p.addr, "/stats").await.json();
        if s["sessions"] == serde_json::json!(0) {
            break s["away"].clone();
        }
        assert!(Instant::now() < deadline, "sessions still live: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let peak = procfs::rss_kib(pid).expect("server gone");
    wait_nothing_away(p.addr).await;
    // At least three quarters of what the flood took must come back.
    let bound = base + peak.saturating_sub(base) / 4;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = procfs::rss_kib(pid).expect("server gone");
    while after > bound && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = procfs::rss_kib(pid).expect("server gone");
    }
    eprintln!("{away} away sessions; RSS KiB: baseline {base}, peak {peak}, after expiry {after}");
    assert!(
        away.as_u64().is_some_and(|n| n >= 4_000),
        "the flood's sessions were not all away at once: {away}"
    );
    assert!(
        after <= bound,
        "RSS {after} KiB still holds more than a quarter of the flood's \
         {base} -> {peak} KiB 5 s after the last away session expired"
    );
}
