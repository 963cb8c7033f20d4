//! Connection middleware and `auth`: accepted with the payload visible to
//! the app, refused with a status and data and no session, a panicking
//! middleware, and every bad ticket or payload.

use crate::support::*;
use serde_json::json;
use ssio::Config;

async fn start() -> Server {
    Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            max_auth_bytes: 256,
            ..fast_config()
        },
        |io| {
            features::install(io);
        },
    )
    .await
}

async fn ticket(server: &Server, auth: &str) -> Resp {
    request(
        server.addr,
        "POST",
        "/handshake",
        &[("Content-Type", "text/plain")],
        auth.as_bytes(),
    )
    .await
}

fn stats_json(server: &Server) -> (usize, usize) {
    let s = server.io.stats();
    (s.sessions, s.count)
}

#[tokio::test]
async fn an_accepted_auth_payload_reaches_the_app_through_a_one_time_ticket() {
    let server = start().await;
    let r = ticket(&server, r#"{"token":"good","name":"ann"}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["ticket"].as_str().unwrap().to_string();
    let hs = get(server.addr, &format!("/poll?ticket={t}")).await;
    assert_eq!(hs.status, 200, "{}", hs.text());
    let sid = hs.json()["sid"].as_str().unwrap().to_string();
    let who = post(
        server.addr,
        &format!("/emit?sid={sid}"),
        br#"{"event":"whoami","ack":true}"#,
    )
    .await
    .json();
    assert_eq!(
        who["data"]["auth"],
        json!({ "token": "good", "name": "ann" })
    );
    assert_eq!(who["data"]["peer_is_loopback"], json!(true));
    // Spent: the same ticket again is refused, and makes no session.
    let again = get(server.addr, &format!("/poll?ticket={t}")).await;
    assert_eq!(again.status, 400);
    assert_eq!(
        again.json(),
        json!({ "error": "invalid auth: unknown, used or expired ticket" })
    );
    // Over SSE too.
    let t = ticket(&server, r#"{"token":"good"}"#).await.json()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let _s = Sse::open_with(server.addr, &format!("/events?ticket={t}"), &[]).await;
    server.wait_sessions(2, WAIT).await;
}

#[tokio::test]
async fn a_refusal_has_its_status_message_and_data_and_makes_no_session() {
    let server = start().await;
    let r = ticket(&server, r#"{"token":"bad"}"#).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({ "error": "not allowed", "data": { "code": 42 } })
    );
    // Without auth, on both transports and both SSE paths (raw, hyper).
    let poll = request(server.addr, "GET", "/poll", &[("X-Deny", "1")], b"").await;
    assert_eq!(
        (poll.status, poll.json()),
        (401, json!({ "error": "no entry" }))
    );
    let raw = request_raw(
        server.addr,
        b"GET /events HTTP/1.1\r\nHost: x\r\nX-Deny: 1\r\n\r\n",
    )
    .await;
    assert_eq!(
        (raw.status, raw.json()),
        (401, json!({ "error": "no entry" }))
    );
    let hyper_path = request(
        server.addr,
        "GET",
        "/events",
        &[("X-Deny", "1"), ("Content-Length", "0")],
        b"",
    )
    .await;
    assert_eq!(hyper_path.status, 401);
    assert_eq!(stats_json(&server), (0, 0));
}

#[tokio::test]
async fn a_panicking_middleware_is_a_500_and_the_server_goes_on() {
    let server = start().await;
    let r = ticket(&server, r#"{"token":"panic"}"#).await;
    assert_eq!(
        (r.status, r.json()),
        (500, json!({ "error": "handler failed" }))
    );
    assert_eq!(stats_json(&server), (0, 0));
    Poller::handshake(server.addr).await;
    server.wait_sessions(1, WAIT).await;
}

#[tokio::test]
async fn bad_auth_payloads_and_tickets_get_a_clear_4xx() {
    let server = start().await;
    for (body, status, error) in [
        ("[1,2]", 400, "invalid auth: expected a JSON object"),
        ("\"token\"", 400, "invalid auth: expected a JSON object"),
        ("{nope", 400, "invalid auth: not JSON"),
        ("", 400, "invalid auth: not JSON"),
    ] {
        let r = ticket(&server, body).await;
        assert_eq!(
            (r.status, r.json()),
            (status, json!({ "error": error })),
            "{body}"
        );
    }
    let big = format!(r#"{{"token":"{}"}}"#, "x".repeat(300));
    let r = ticket(&server, &big).await;
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json(),
        json!({ "error": "auth payload too large (limit 256 bytes)" })
    );
    for t in [
        "nope",
        "0b9c3f3e8a3c4c1e9f552f1c0b7d9a10",
        "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10",
    ] {
        for path in ["/poll", "/events"] {
            let r = get(server.addr, &format!("{path}?ticket={t}")).await;
            assert_eq!(r.status, 400, "{path} {t}");
            assert!(r.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid auth"));
        }
    }
    assert_eq!(stats_json(&server), (0, 0));
}
