//! The server API (`/api/*`): keys, every endpoint and its errors, the
//! publish cursor a fresh page subscribes from, idempotent publishes and
//! the bound on remembered keys.

use std::net::SocketAddr;

use crate::support::*;
use serde_json::{json, Value};
use ssio::Config;

const KEY: &str = "test-key-1";
const NIL: &str = "00000000-0000-0000-0000-000000000000";

fn config() -> Config {
    Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 2_000,
        api_keys: vec!["old-key".into(), KEY.into()],
        ..fast_config()
    }
}

/// A server with no app: a stream sees only `connect` and what the API
/// sends.
async fn start(config: Config) -> Server {
    Server::start_with("127.0.0.1:0".parse().unwrap(), config, |_| {}).await
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    let auth = format!("Bearer {KEY}");
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    request(addr, method, path, &headers, body.as_bytes()).await
}

fn assert_answer(r: &Resp, status: u16, body: Value) {
    assert_eq!((r.status, r.json()), (status, body), "{}", r.head);
}

#[tokio::test]
async fn without_a_key_the_api_does_not_exist() {
    let server = start(fast_config()).await;
    let r = api(server.addr, "GET", "/api/info", "").await;
    assert_answer(&r, 404, json!({ "error": "not found" }));
    let r = api(server.addr, "POST", "/api/publish", r#"{"event":"a"}"#).await;
    assert_answer(&r, 404, json!({ "error": "not found" }));
}

#[tokio::test]
async fn only_one_bearer_header_with_a_configured_key_opens_the_api() {
    let server = start(config()).await;
    let refused = json!({ "error": "missing or invalid API key" });
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Bearer ")],
        vec![("Authorization", "Bearer")],
        vec![("Authorization", "")],
        vec![("Authorization", KEY)],
        vec![("Authorization", "Basic dGVzdC1rZXktMTo=")],
        vec![("Authorization", "Bearer test-key-")],
        // Two headers, one of them right: refused, not guessed between.
        vec![
            ("Authorization", "Bearer test-key-1"),
            ("Authorization", "Bearer wrong"),
        ],
        vec![
            ("Authorization", "Bearer test-key-1"),
            ("Authorization", "Bearer test-key-1"),
        ],
    ] {
        let r = request(server.addr, "GET", "/api/info", &headers, b"").await;
        assert_answer(&r, 401, refused.clone());
    }
    // Either key of a rotation, and the scheme in any case.
    for auth in ["Bearer old-key", "Bearer test-key-1", "bearer test-key-1"] {
        let r = request(
            server.addr,
            "GET",
            "/api/info",
            &[("Authorization", auth)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{auth}");
    }
}

#[tokio::test]
async fn publish_reaches_every_stream_and_answers_a_cursor_a_new_page_resumes_from() {
    let server = start(config()).await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let a = api(
        server.addr,
        "POST",
        "/api/publish",
        r#"{"event":"news","data":{"n":1}}"#,
    )
    .await;
    assert_answer(&a, 200, json!({ "cursor": format!("{NIL}:1:0") }));
    let b = r.next().await;
    assert_eq!((b.event.as_str(), b.data.as_str()), ("news", r#"{"n":1}"#));
    // A page rendered now subscribes from the cursor: it gets what came
    // after, once, and not what it was rendered with.
    let b2 = api(
        server.addr,
        "POST",
        "/api/publish",
        r#"{"event":"news","data":{"n":2}}"#,
    )
    .await;
    assert_answer(&b2, 200, json!({ "cursor": format!("{NIL}:2:0") }));
    let cursor = format!("{NIL}:1:0");
    let mut page =
        Reader::new(Sse::open_with(server.addr, "/events", &[("Last-Event-ID", &cursor)]).await);
    let c = page.next().await;
    assert_eq!(c.event, "connect");
    let hs: Value = serde_json::from_str(&c.data).unwrap();
    assert_eq!(hs.get("missed"), None, "{hs}");
    api(
        server.addr,
        "POST",
        "/api/publish",
        r#"{"event":"news","data":{"n":3}}"#,
    )
    .await;
    let got = [page.next().await, page.next().await];
    assert_eq!(
        got.iter().map(|b| b.data.as_str()).collect::<Vec<_>>(),
        [r#"{"n":2}"#, r#"{"n":3}"#]
    );
    page.sse
        .assert_quiet(std::time::Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn join_leave_rooms_publish_to_a_room_and_to_a_sid() {
    let server = start(config()).await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let sid = r.sse.sid.clone();
    let join = format!(r#"{{"sid":"{sid}","room":"lobby"}}"#);
    assert_answer(
        &api(server.addr, "POST", "/api/join", &join).await,
        200,
        json!({}),
    );
    assert_answer(
        &api(server.addr, "GET", "/api/rooms", "").await,
        200,
        json!({ "rooms": [{ "room": "lobby", "members": [sid] }] }),
    );
    let to_room = r#"{"event":"hi","data":"room","room":"lobby"}"#;
    assert_eq!(
        api(server.addr, "POST", "/api/publish", to_room)
            .await
            .status,
        200
    );
    assert_eq!(r.next().await.data, r#""room""#);
    let to_sid = format!(r#"{{"event":"hi","data":"you","sid":"{sid}"}}"#);
    assert_eq!(
        api(server.addr, "POST", "/api/publish", &to_sid)
            .await
            .status,
        200
    );
    assert_eq!(r.next().await.data, r#""you""#);
    assert_answer(
        &api(server.addr, "POST", "/api/leave", &join).await,
        200,
        json!({}),
    );
    assert_answer(
        &api(server.addr, "GET", "/api/rooms", "").await,
        200,
        json!({ "rooms": [] }),
    );
    // Now outside the room: nothing comes.
    api(server.addr, "POST", "/api/publish", to_room).await;
    r.sse
        .assert_quiet(std::time::Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn disconnect_ends_the_session_with_server_disconnect() {
    let server = start(config()).await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let body = format!(r#"{{"sid":"{}"}}"#, r.sse.sid);
    assert_answer(
        &api(server.addr, "POST", "/api/disconnect", &body).await,
        200,
        json!({}),
    );
    let d = r.next().await;
    assert_eq!(
        (d.event.as_str(), d.data.as_str()),
        ("disconnect", r#""server disconnect""#)
    );
    // Gone: the same command now names an unknown session.
    let again = api(server.addr, "POST", "/api/disconnect", &body).await;
    assert_answer(&again, 404, json!({ "error": "unknown session" }));
}

#[tokio::test]
async fn unknown_sessions_bad_json_and_wrong_methods_get_their_status() {
    let server = start(config()).await;
    let unknown = json!({ "error": "unknown session" });
    let sid = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";
    for (path, body) in [
        ("/api/disconnect", format!(r#"{{"sid":"{sid}"}}"#)),
        ("/api/join", format!(r#"{{"sid":"{sid}","room":"r"}}"#)),
        ("/api/leave", format!(r#"{{"sid":"{sid}","room":"r"}}"#)),
        ("/api/publish", format!(r#"{{"event":"a","sid":"{sid}"}}"#)),
        ("/api/disconnect", r#"{"sid":"not-a-sid"}"#.to_string()),
    ] {
        assert_answer(
            &api(server.addr, "POST", path, &body).await,
            404,
            unknown.clone(),
        );
    }
    for body in [
        "",
        "{",
        "[]",
        r#"{"event":5}"#,
        r#"{"event":"a\nb"}"#,
        r#"{"event":"connect"}"#,
    ] {
        let r = api(server.addr, "POST", "/api/publish", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["error"].is_string());
    }
    let r = api(server.addr, "GET", "/api/publish", "").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST".into())));
    let r = api(server.addr, "POST", "/api/info", "").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET".into())));
    assert_answer(
        &api(server.addr, "GET", "/api/nope", "").await,
        404,
        json!({ "error": "not found" }),
    );
}

#[tokio::test]
async fn oversized_and_deeply_nested_bodies_are_refused() {
    let server = start(Config {
        max_payload: 1024,
        ..config()
    })
    .await;
    let big = format!(r#"{{"event":"a","data":"{}"}}"#, "x".repeat(2000));
    let r = api(server.addr, "POST", "/api/publish", &big).await;
    assert_answer(
        &r,
        413,
        json!({ "error": "payload too large (limit 1024 bytes)" }),
    );
    let deep = format!(
        r#"{{"event":"a","data":{}{}}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );
    let r = api(server.addr, "POST", "/api/publish", &deep).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("recursion limit"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn batch_answers_each_command_in_order() {
    let server = start(Config {
        api_max_batch: 3,
        ..config()
    })
    .await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let sid = r.sse.sid.clone();
    let body = json!({ "commands": [
        { "method": "join", "params": { "sid": sid, "room": "r" } },
        { "method": "publish", "params": { "event": "e", "data": 7, "room": "r" } },
        { "method": "frobnicate", "params": {} },
    ]});
    let res = api(server.addr, "POST", "/api/batch", &body.to_string()).await;
    assert_answer(
        &res,
        200,
        json!({ "replies": [
            { "result": {} },
            { "result": { "cursor": format!("{NIL}:0:0") } },
            { "error": "invalid JSON: unknown method \"frobnicate\"" },
        ]}),
    );
    assert_eq!(r.next().await.data, "7");
    let four = json!({ "commands": [{ "method": "publish" }, { "method": "publish" }, { "method": "publish" }, { "method": "publish" }] });
    let res = api(server.addr, "POST", "/api/batch", &four.to_string()).await;
    assert_answer(
        &res,
        413,
        json!({ "error": "too many commands in one batch (limit 3)" }),
    );
}

#[tokio::test]
async fn info_counts_sessions_by_transport_and_deliveries() {
    let server = start(config()).await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let _p = Poller::handshake(server.addr).await;
    let info = api(server.addr, "GET", "/api/info", "").await.json();
    assert_eq!(
        info,
        json!({
            "version": env!("CARGO_PKG_VERSION"), "node": null, "count": 2, "sessions": 2,
            "sse": 1, "polling": 1, "deliveries": info["deliveries"],
            "nodes": [{ "node": null, "sessions": 2, "sse": 1, "polling": 1 }],
        })
    );
    let before = info["deliveries"].as_u64().unwrap();
    api(server.addr, "POST", "/api/publish", r#"{"event":"e"}"#).await;
    r.next().await;
    let after = api(server.addr, "GET", "/api/info", "").await.json()["deliveries"]
        .as_u64()
        .unwrap();
    assert!(after > before, "{before} -> {after}");
}

#[tokio::test]
async fn a_replayed_idempotency_key_answers_the_same_cursor_without_a_second_delivery() {
    let server = start(config()).await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let body = r#"{"event":"pay","data":1,"idempotency_key":"order-17"}"#;
    let first = api(server.addr, "POST", "/api/publish", body).await;
    let again = api(server.addr, "POST", "/api/publish", body).await;
    assert_answer(&first, 200, json!({ "cursor": format!("{NIL}:1:0") }));
    assert_answer(&again, 200, json!({ "cursor": format!("{NIL}:1:0") }));
    assert_eq!(r.next().await.event, "pay");
    r.sse
        .assert_quiet(std::time::Duration::from_millis(200))
        .await;
    let long = format!(
        r#"{{"event":"pay","idempotency_key":"{}"}}"#,
        "k".repeat(129)
    );
    assert_eq!(
        api(server.addr, "POST", "/api/publish", &long).await.status,
        400
    );
}

#[tokio::test]
async fn a_flood_of_distinct_keys_keeps_only_the_newest_limit_of_them() {
    let server = start(Config {
        api_max_idempotency_keys: 5,
        ..config()
    })
    .await;
    let publish = |key: usize| {
        let body = format!(r#"{{"event":"e","data":{key},"idempotency_key":"k{key}"}}"#);
        async move { api(server.addr, "POST", "/api/publish", &body).await.json()["cursor"].clone() }
    };
    for key in 0..200 {
        assert_eq!(publish(key).await, json!(format!("{NIL}:{}:0", key + 1)));
    }
    // The newest five are remembered; the first was forgotten, so it
    // publishes again.
    assert_eq!(publish(199).await, json!(format!("{NIL}:200:0")));
    assert_eq!(publish(195).await, json!(format!("{NIL}:196:0")));
    assert_eq!(publish(0).await, json!(format!("{NIL}:201:0")));
}

#[tokio::test]
async fn api_listen_moves_the_api_off_the_public_address() {
    let internal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = internal.local_addr().unwrap();
    drop(internal);
    let server = start(Config {
        api_listen: Some(at),
        ..config()
    })
    .await;
    let r = api(server.addr, "GET", "/api/info", "").await;
    assert_answer(&r, 404, json!({ "error": "not found" }));
    let r = api(at, "GET", "/api/info", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_answer(
        &api(at, "GET", "/events", "").await,
        404,
        json!({ "error": "not found" }),
    );
    // The admin page calls the API where it was loaded from, so it is on
    // the API's address too; nothing else of the public table is.
    for path in ["/admin", "/public/admin.js", "/public/admin.css"] {
        let here = get(at, path).await;
        assert_eq!(here.status, 200, "{path}");
        assert_eq!(here.body, get(server.addr, path).await.body, "{path}");
    }
    let r = get(at, "/public/ssio.js").await;
    assert_answer(&r, 404, json!({ "error": "not found" }));
    let r = request(at, "POST", "/admin", &[], b"").await;
    assert_answer(&r, 404, json!({ "error": "not found" }));
}
