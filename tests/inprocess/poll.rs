//! The long-polling transport over real HTTP: the handshake, held polls,
//! conflated counts, ordered events across polls, one pending poll per
//! session, and a poller that stops polling timing out.

use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use ssio::Config;

#[tokio::test]
async fn handshake_then_count_at_once_then_a_held_poll_released_by_a_connect() {
    let server = Server::start(Config {
        ping_interval_ms: 5_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let r = get(server.addr, "/poll").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let sid = r.json()["sid"].as_str().unwrap().to_string();
    assert_eq!(
        r.text(),
        format!(r#"{{"sid":"{sid}","pingInterval":5000,"pingTimeout":5000}}"#)
    );
    assert_eq!(uuid::Uuid::parse_str(&sid).unwrap().get_version_num(), 4);
    let p = Poller {
        addr: server.addr,
        sid,
    };

    assert_eq!(
        p.poll().await.text(),
        r#"[{"event":"user count","data":1}]"#
    );

    let addr = server.addr;
    let held = tokio::spawn(async move {
        let t = Instant::now();
        let r = p.poll().await;
        (t.elapsed(), r.text())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !held.is_finished(),
        "the poll must wait while nothing is queued"
    );
    let _other = Poller::handshake(addr).await;
    let (waited, body) = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(body, r#"[{"event":"user count","data":2}]"#);
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn an_idle_poll_answers_empty_after_ping_interval() {
    let server = Server::start(Config {
        ping_interval_ms: 300,
        ping_timeout_ms: 2_000,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    p.events().await;
    let t = Instant::now();
    assert_eq!(p.poll().await.text(), "[]");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test]
async fn counts_are_conflated_not_queued() {
    let server = Server::start(Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    p.events().await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(Poller::handshake(server.addr).await);
    }
    // Five changes happened; the poll returns only the newest.
    assert_eq!(
        p.poll().await.text(),
        r#"[{"event":"user count","data":6}]"#
    );
}

#[tokio::test]
async fn mixed_transports_share_one_count_and_a_silent_poller_times_out() {
    let server = Server::start(Config {
        ping_interval_ms: 200,
        ping_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let mut a = Sse::connect(server.addr).await;
    let mut b = Sse::connect(server.addr).await;
    let p1 = Poller::handshake(server.addr).await;
    let p2 = Poller::handshake(server.addr).await;
    a.wait_count(4, WAIT).await;
    b.wait_count(4, WAIT).await;
    p1.wait_count(4, WAIT).await;
    p2.wait_count(4, WAIT).await;

    // p2 stops polling; p1 keeps polling in the background.
    let t = Instant::now();
    let keep = tokio::spawn(async move {
        p1.wait_count(3, Duration::from_secs(3)).await;
        p1
    });
    a.wait_count(3, Duration::from_secs(2)).await;
    let gone = t.elapsed();
    // No poll pending and none for pingTimeout (300 ms) since the last ended.
    assert!(
        gone >= Duration::from_millis(250) && gone < Duration::from_millis(1_300),
        "{gone:?}"
    );
    b.wait_count(3, WAIT).await;
    let p1 = keep.await.unwrap();
    let r = p2.poll().await;
    assert_eq!(
        (r.status, r.text()),
        (400, r#"{"error":"unknown session"}"#.to_string())
    );
    // A poller that keeps polling is never cut off.
    for _ in 0..5 {
        assert_eq!(p1.poll().await.status, 200);
    }
    server.wait_sessions(3, WAIT).await;
}

#[tokio::test]
async fn ordinary_events_arrive_in_order_none_lost_none_twice_across_polls() {
    // The sender only emits and never polls: its session lives a
    // pingTimeout from its first emit, longer than a loaded machine takes
    // to send the 200.
    let server = Server::start(Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 30_000,
        first_poll_timeout_ms: 30_000,
        ..fast_config()
    })
    .await;
    let sender = Poller::handshake(server.addr).await;
    let p = Poller::handshake(server.addr).await;
    p.events().await;
    let addr = server.addr;
    let sid = sender.sid.clone();
    let send = tokio::spawn(async move {
        for i in 0..200 {
            let body = json!({"event": "chat message", "data": i}).to_string();
            let r = post(addr, &format!("/emit?sid={sid}"), body.as_bytes()).await;
            assert_eq!(r.status, 204);
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 200 && Instant::now() < deadline {
        for e in p.events().await {
            if e["event"] == "chat message" {
                got.push(e["data"]["message"].as_i64().unwrap());
            }
        }
    }
    send.await.unwrap();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_second_concurrent_poll_is_refused_and_the_first_keeps_waiting() {
    let server = Server::start(Config {
        ping_interval_ms: 3_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    let (first, mut held) = p.hold().await;
    assert_eq!(first.text(), r#"[{"event":"user count","data":1}]"#);

    let second = p.poll().await;
    assert_eq!(second.status, 400);
    assert_eq!(
        second.text(),
        r#"{"error":"a poll is already pending for this session"}"#
    );
    // The held poll has not answered: nothing to read on its connection.
    assert!(held.buffer().is_empty());
    let mut probe = [0u8; 1];
    assert!(matches!(
        held.get_ref().try_read(&mut probe),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    ));
    let _other = Sse::connect(server.addr).await;
    let r = tokio::time::timeout(WAIT, read_response(&mut held))
        .await
        .unwrap();
    assert_eq!(r.text(), r#"[{"event":"user count","data":2}]"#);
    // The session is intact.
    assert_eq!(p.poll().await.status, 200);
}

#[tokio::test]
async fn a_poll_for_an_sse_session_is_refused() {
    let server = Server::start(fast_config()).await;
    let mut a = Sse::connect(server.addr).await;
    let r = get(server.addr, &format!("/poll?sid={}", a.sid)).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        r#"{"error":"session uses the sse transport, not polling"}"#
    );
    // The stream is unharmed.
    a.wait_count(1, WAIT).await;
    server.wait_sessions(1, WAIT).await;
}
