//! Client→server requests for both transports: `/emit` broadcasts with a
//! public tag, never a sid, and `/close` ends a session at once.

use std::time::Duration;

use crate::support::*;
use serde_json::json;
use ssio::Config;

#[tokio::test]
async fn chat_message_reaches_sse_clients_and_other_pollers() {
    let server = Server::start(Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let mut s = Sse::connect(server.addr).await;
    let p1 = Poller::handshake(server.addr).await;
    let p2 = Poller::handshake(server.addr).await;
    s.wait_count(3, WAIT).await;
    p2.events().await;

    let r = p1.emit("chat message", json!("hello")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let expected = format!(r#"{{"sid":"{}","message":"hello"}}"#, &p1.sid[..8]);
    assert_eq!(
        s.next_event().await,
        ("chat message".to_string(), expected.clone())
    );
    assert_eq!(
        p2.poll().await.text(),
        format!(r#"[{{"event":"chat message","data":{expected}}}]"#)
    );

    // SSE sessions emit with the sid from their connect event.
    let r = post(
        server.addr,
        &format!("/emit?sid={}", s.sid),
        br#"{"event":"chat message","data":"from sse"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    let expected = format!(r#"{{"sid":"{}","message":"from sse"}}"#, &s.sid[..8]);
    assert_eq!(
        s.next_event().await,
        ("chat message".to_string(), expected.clone())
    );
    let got = p1.events().await;
    assert_eq!(
        got.last().unwrap(),
        &json!({"event": "chat message", "data": {"sid": &s.sid[..8], "message": "from sse"}})
    );
}

#[tokio::test]
async fn close_ends_the_session_at_once_and_is_harmless_twice() {
    let server = Server::start(Config {
        ping_interval_ms: 5_000,
        ping_timeout_ms: 20_000,
        ..fast_config()
    })
    .await;
    let mut a = Sse::connect(server.addr).await;
    let p = Poller::handshake(server.addr).await;
    a.wait_count(2, WAIT).await;
    p.events().await;
    // A pending poll is released by the close.
    let addr = server.addr;
    let sid = p.sid.clone();
    let pending = tokio::spawn(async move { Poller { addr, sid }.poll().await.text() });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // As navigator.sendBeacon sends it: a body of any type.
    let r = request(
        server.addr,
        "POST",
        &format!("/close?sid={}", p.sid),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        b"bye",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(1), pending)
            .await
            .unwrap()
            .unwrap(),
        r#"[{"event":"disconnect","data":"client close"}]"#
    );
    a.wait_count(1, Duration::from_secs(1)).await;
    assert_eq!(p.close().await.status, 204);
    let r = request(
        server.addr,
        "POST",
        &format!("/close?sid={}", p.sid),
        &[("Content-Type", "multipart/form-data; boundary=x")],
        b"--x--",
    )
    .await;
    assert_eq!(r.status, 204);
    a.assert_quiet(Duration::from_millis(100)).await;
    server.wait_sessions(1, WAIT).await;

    // An SSE session can be closed the same way; its stream says why.
    assert_eq!(
        post(server.addr, &format!("/close?sid={}", a.sid), b"")
            .await
            .status,
        204
    );
    assert_eq!(
        a.next_event().await,
        ("disconnect".into(), r#""client close""#.into())
    );
    server.wait_sessions(0, WAIT).await;
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
