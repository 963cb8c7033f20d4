//! Acknowledgements over the `/emit` response: an answer, a late answer, a
//! timeout, a handler that drops its answer or panics, and bad `ack`
//! fields, none of which harms another session.

use crate::support::*;
use serde_json::{json, Value};
use ssio::Config;

async fn ack(p: &Poller, event: &str, data: Value) -> Resp {
    let body = json!({ "event": event, "data": data, "ack": true }).to_string();
    post(p.addr, &format!("/emit?sid={}", p.sid), body.as_bytes()).await
}

async fn start() -> (Server, std::sync::Arc<features::Seen>) {
    let mut seen = None;
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            ack_timeout_ms: 300,
            max_payload: 1024,
            // The pollers here never poll: a handler's panic report on a
            // loaded machine must not outlast their first-poll deadline.
            ping_timeout_ms: 5000,
            ..fast_config()
        },
        |io| seen = Some(features::install(io)),
    )
    .await;
    (server, seen.unwrap())
}

#[tokio::test]
async fn a_handler_answers_at_once_or_later_in_the_emit_response() {
    let (server, _) = start().await;
    let p = Poller::handshake(server.addr).await;
    let r = ack(&p, "echo", json!({ "x": [1, 2] })).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.text(), r#"{"data":{"x":[1,2]}}"#);
    let r = ack(&p, "later", json!("soon")).await;
    assert_eq!((r.status, r.text()), (200, r#"{"data":"soon"}"#.into()));
    // Without "ack", the same event is a plain 204.
    assert_eq!(p.emit("echo", json!(1)).await.status, 204);
}

#[tokio::test]
async fn an_unanswered_ack_fails_with_an_error_and_never_hangs() {
    let (server, seen) = start().await;
    let p = Poller::handshake(server.addr).await;
    let r = ack(&p, "never", json!(null)).await;
    assert_eq!(
        (r.status, r.text()),
        (200, r#"{"error":"acknowledgement timed out"}"#.into())
    );
    assert_eq!(seen.kept.lock().len(), 1);
    for event in ["drop", "no such event"] {
        let r = ack(&p, event, json!(null)).await;
        assert_eq!(
            (r.status, r.text()),
            (200, r#"{"error":"no acknowledgement"}"#.into()),
            "{event}"
        );
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_harms_no_session() {
    let (server, _) = start().await;
    let p = Poller::handshake(server.addr).await;
    let other = Poller::handshake(server.addr).await;
    let r = ack(&p, "panic", json!(null)).await;
    assert_eq!(
        (r.status, r.text()),
        (500, r#"{"error":"handler failed"}"#.into())
    );
    assert_eq!(ack(&p, "echo", json!(2)).await.text(), r#"{"data":2}"#);
    assert_eq!(ack(&other, "echo", json!(3)).await.text(), r#"{"data":3}"#);
    server.wait_sessions(2, WAIT).await;
}

#[tokio::test]
async fn malformed_or_huge_acks_get_a_clear_4xx() {
    let (server, _) = start().await;
    let p = Poller::handshake(server.addr).await;
    for bad in [
        r#"{"event":"echo","ack":1}"#,
        r#"{"event":"echo","ack":"yes"}"#,
        r#"{"event":"echo","ack":{}}"#,
    ] {
        let r = post(server.addr, &format!("/emit?sid={}", p.sid), bad.as_bytes()).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(
            r.json(),
            json!({ "error": "invalid ack: \"ack\" must be true or false" })
        );
    }
    let huge = ack(&p, "echo", json!("x".repeat(2000))).await;
    assert_eq!(huge.status, 413);
    // An ack for a session that does not exist.
    let r = post(
        server.addr,
        "/emit?sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10",
        br#"{"event":"echo","ack":true}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({ "error": "unknown session" }))
    );
    assert_eq!(ack(&p, "echo", json!(4)).await.text(), r#"{"data":4}"#);
    server.wait_sessions(1, WAIT).await;
}
