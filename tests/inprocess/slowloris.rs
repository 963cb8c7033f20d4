//! Slow senders: a request head slower than `--header-timeout` or a body
//! slower than `--body-timeout` is cut off, and everyone else is served.

use std::time::{Duration, Instant};

use crate::support::*;
use ssio::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
async fn a_body_that_never_finishes_gets_408() {
    let server = Server::start(Config {
        body_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    let raw = format!(
        "POST /emit?sid={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{{\"event\"",
        p.sid
    );
    let t = Instant::now();
    let r = request_raw(server.addr, raw.as_bytes()).await;
    assert_eq!(
        (r.status, r.text()),
        (408, r#"{"error":"request body timed out"}"#.to_string())
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let server = Server::start(Config {
        header_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("never closed");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}
