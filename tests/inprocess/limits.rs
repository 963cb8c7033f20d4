//! Every limit and request error gives its status with `{"error": ...}` and
//! harms no other session: 400 for bad sids and event names, 413 for a body
//! over `--max-payload`, 431 for a head over `--max-header-bytes`, 503 with
//! `Retry-After` over `--max-sessions`.

use std::time::Duration;

use crate::support::*;
use serde_json::json;
use ssio::Config;

#[tokio::test]
async fn bad_sids_are_unknown_sessions() {
    let server = Server::start(fast_config()).await;
    let unknown = uuid::Uuid::new_v4();
    let paths = [
        format!("/poll?sid={unknown}"),
        "/poll?sid=".to_string(),
        "/poll?sid=not-a-uuid".to_string(),
        format!("/poll?sid={}", unknown.simple()),
        format!("/poll?sid={unknown}x"),
        "/poll?sid=%00".to_string(),
    ];
    for path in &paths {
        let r = get(server.addr, path).await;
        assert_eq!(
            (r.status, r.text()),
            (400, r#"{"error":"unknown session"}"#.to_string()),
            "{path}"
        );
    }
    for path in [
        format!("/emit?sid={unknown}"),
        "/emit".into(),
        "/emit?sid=zzz".into(),
        "/close".into(),
        "/close?sid=1".into(),
    ] {
        let r = post(server.addr, &path, br#"{"event":"x","data":1}"#).await;
        assert_eq!(
            (r.status, r.text()),
            (400, r#"{"error":"unknown session"}"#.to_string()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn bad_emit_bodies_get_400_and_harm_no_one() {
    let server = Server::start(Config {
        max_payload: 1024,
        ..fast_config()
    })
    .await;
    let mut a = Sse::connect(server.addr).await;
    a.wait_count(1, WAIT).await;
    let p = Poller::handshake(server.addr).await;
    a.wait_count(2, WAIT).await;
    let emit = |body: Vec<u8>| {
        let path = format!("/emit?sid={}", p.sid);
        async move { post(server.addr, &path, &body).await }
    };
    let long = "e".repeat(257);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{not json".to_vec(),
            "invalid JSON: key must be a string at line 1 column 2",
        ),
        (
            b"".to_vec(),
            "invalid JSON: EOF while parsing a value at line 1 column 0",
        ),
        (b"[1,2]".to_vec(), "invalid JSON: expected an object"),
        (br#"{"data":1}"#.to_vec(), "invalid JSON: missing \"event\""),
        (
            br#"{"event":3}"#.to_vec(),
            "invalid JSON: \"event\" must be a string",
        ),
        (br#"{"event":""}"#.to_vec(), "invalid event name: empty"),
        (
            format!(r#"{{"event":"{long}"}}"#).into_bytes(),
            "invalid event name: too long",
        ),
        (
            br#"{"event":"a\nb"}"#.to_vec(),
            "invalid event name: contains a newline",
        ),
        (
            br#"{"event":"a\rb"}"#.to_vec(),
            "invalid event name: contains a newline",
        ),
        (
            br#"{"event":"connect"}"#.to_vec(),
            "invalid event name: reserved",
        ),
        (
            br#"{"event":"disconnect"}"#.to_vec(),
            "invalid event name: reserved",
        ),
    ];
    for (body, error) in cases {
        let r = emit(body.clone()).await;
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&body));
        assert_eq!(r.json(), json!({ "error": error }));
    }
    // Exactly 256 bytes is fine.
    let ok = format!(r#"{{"event":"{}","data":1}}"#, "e".repeat(256));
    assert_eq!(emit(ok.into_bytes()).await.status, 204);

    // Over the payload limit: declared, and undeclared (chunked).
    let big = format!(
        r#"{{"event":"chat message","data":"{}"}}"#,
        "x".repeat(2000)
    );
    let r = emit(big.clone().into_bytes()).await;
    assert_eq!(
        (r.status, r.text()),
        (
            413,
            r#"{"error":"payload too large (limit 1024 bytes)"}"#.to_string()
        )
    );
    let chunked = format!(
        "POST /emit?sid={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        p.sid,
        big.len(),
        big
    );
    let r = request_raw(server.addr, chunked.as_bytes()).await;
    assert_eq!(r.status, 413);

    // Nobody was harmed: no event leaked, both sessions live.
    a.assert_quiet(Duration::from_millis(100)).await;
    server.wait_sessions(2, WAIT).await;
    assert_eq!(p.poll().await.status, 200);
}

#[tokio::test]
async fn oversized_headers_get_431_and_harm_nobody() {
    let server = Server::start(fast_config()).await;
    let mut a = Sse::connect(server.addr).await;
    a.wait_count(1, WAIT).await;
    let big = "x".repeat(64 * 1024);
    let r = request(server.addr, "GET", "/stats", &[("X-Big", &big)], b"").await;
    assert_eq!(r.status, 431);
    // The open stream is untouched and the server still answers.
    assert_eq!(get(server.addr, "/stats").await.status, 200);
    let _b = Sse::connect(server.addr).await;
    a.wait_count(2, WAIT).await;
}

#[tokio::test]
async fn the_session_cap_returns_503_with_retry_after_and_spares_existing_sessions() {
    let server = Server::start(Config {
        max_sessions: 3,
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let mut a = Sse::connect(server.addr).await;
    let p = Poller::handshake(server.addr).await;
    let _b = Sse::connect(server.addr).await;
    a.wait_count(3, WAIT).await;
    for path in ["/poll", "/events"] {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.header("retry-after").as_deref(), Some("5"));
        assert_eq!(r.text(), r#"{"error":"server is full, retry later"}"#);
    }
    a.assert_quiet(Duration::from_millis(100)).await;
    assert_eq!(
        p.events().await,
        vec![json!({"event": "user count", "data": 3})]
    );
    // Room again once one leaves.
    p.close().await;
    a.wait_count(2, WAIT).await;
    assert_eq!(get(server.addr, "/poll").await.status, 200);
}
