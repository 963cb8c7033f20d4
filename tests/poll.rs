//! The long-polling transport and client→server events, over real HTTP.

mod common;

use std::time::{Duration, Instant};

use common::*;
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
async fn ordinary_events_arrive_in_order_none_lost_none_twice_across_polls() {
    let server = Server::start(Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
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
async fn a_second_concurrent_poll_is_refused_and_the_first_keeps_waiting() {
    let server = Server::start(Config {
        ping_interval_ms: 3_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    p.events().await;
    let (addr, sid) = (server.addr, p.sid.clone());
    let first = tokio::spawn(async move { Poller { addr, sid }.poll().await.text() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = p.poll().await;
    assert_eq!(second.status, 400);
    assert_eq!(
        second.text(),
        r#"{"error":"a poll is already pending for this session"}"#
    );
    assert!(!first.is_finished());
    let _other = Sse::connect(server.addr).await;
    let body = tokio::time::timeout(Duration::from_secs(1), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, r#"[{"event":"user count","data":2}]"#);
    // The session is intact.
    assert_eq!(p.poll().await.status, 200);
}

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
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move { handshakes(addr, 2_500).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(server.io.stats().sessions > 0);
    server.wait_sessions(0, Duration::from_secs(10)).await;
    let r = get(addr, "/stats").await;
    assert_eq!(r.text(), r#"{"sessions":0,"sse":0,"polling":0,"count":0}"#);
}

/// `n` handshakes pipelined on one keep-alive connection.
async fn handshakes(addr: std::net::SocketAddr, n: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let req = b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..n {
            w.write_all(req).await.unwrap();
        }
        w
    });
    let mut r = BufReader::new(r);
    for _ in 0..n {
        let mut len = 0;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            assert!(
                !line.is_empty() && !line.starts_with("HTTP/1.1 5"),
                "{line}"
            );
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
    }
    drop(writer.await.unwrap());
}
