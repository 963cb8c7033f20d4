//! Resume without loss: a stream cut in the middle of a burst of 1,000
//! chat messages comes back with `Last-Event-ID` and reads each exactly once
//! and in order, with its sid, rooms and data; past the window or past the
//! log it gets a fresh session that says it missed events; a forged cursor
//! never reads anyone's events; polling resumes the same way.

use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};
use ssio::Config;

fn config() -> Config {
    Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 2_000,
        ..fast_config()
    }
}

async fn start(config: Config) -> (Server, std::sync::Arc<features::Seen>) {
    let mut seen = None;
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config, |io| {
        seen = Some(features::install(io))
    })
    .await;
    (server, seen.unwrap())
}

async fn whoami(server: &Server, sid: &str) -> Value {
    post(
        server.addr,
        &format!("/emit?sid={sid}"),
        br#"{"event":"whoami","ack":true}"#,
    )
    .await
    .json()["data"]
        .clone()
}

/// Opens a stream resuming from `id`; returns it with its connect data.
async fn resume(server: &Server, id: &str) -> (Reader, Value) {
    let mut r = Reader::new(Sse::open_with(server.addr, "/events", &[("Last-Event-ID", id)]).await);
    let c = r.next().await;
    assert_eq!(c.event, "connect");
    (r, serde_json::from_str(&c.data).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_mid_burst_resumes_with_every_message_once_in_order() {
    let (server, seen) = start(config()).await;
    let watcher = Poller::handshake(server.addr).await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    let connect = r.next().await;
    let sid = r.sse.sid.clone();
    assert_eq!(connect.id, Some(format!("{sid}:0:0")));
    // Rooms and data to keep across the cut.
    let p = Poller {
        addr: server.addr,
        sid: sid.clone(),
    };
    p.emit("join", json!("r")).await;
    p.emit("set", json!({ "name": "ann" })).await;

    let io = server.io.clone();
    let burst = tokio::spawn(async move {
        for n in 0..1000 {
            io.emit("chat message", n);
            if n == 400 {
                io.to("r").emit("room note", "while away, maybe");
            }
            if n % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut got: Vec<i64> = Vec::new();
    let mut last = connect.id.unwrap();
    while got.len() < 150 {
        let b = r.next_ordinary().await;
        last = b.id.expect("ordinary events carry an id");
        if b.event == "chat message" {
            got.push(b.data.parse().unwrap());
        }
    }
    // Cut the stream mid-burst, as a dead network would.
    r.sse.set_reset_on_drop();
    drop(r);
    tokio::time::timeout(WAIT, async {
        while server.io.stats().away != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the session never went away");
    // Away is not counted.
    watcher.wait_count(1, WAIT).await;

    let (mut r, hs) = resume(&server, &last).await;
    assert_eq!(hs["sid"], json!(sid));
    assert_eq!(hs["recovered"], json!(true));
    assert_eq!(hs.get("missed"), None);
    let mut room_notes = 0;
    while got.len() < 1000 {
        let b = r.next_ordinary().await;
        match b.event.as_str() {
            "chat message" => got.push(b.data.parse().unwrap()),
            "room note" => room_notes += 1,
            other => panic!("unexpected {other}"),
        }
    }
    burst.await.unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<i64>>());
    assert_eq!(room_notes, 1);
    watcher.wait_count(2, WAIT).await;
    let who = whoami(&server, &sid).await;
    assert_eq!(who["rooms"], json!(["r"]));
    assert_eq!(who["data"], json!({ "name": "ann" }));
    assert_eq!(who["recovered"], json!(true));
    let conns = seen.connections.lock().clone();
    assert_eq!(conns.last().map(|c| c.1), Some(true));
    assert_eq!(server.io.stats().away, 0);
}

#[tokio::test]
async fn past_the_window_a_client_gets_a_fresh_session_marked_missed() {
    let (server, _) = start(Config {
        recovery_window_ms: 200,
        ..config()
    })
    .await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    let id = r.next().await.id.unwrap();
    let old = r.sse.sid.clone();
    Poller {
        addr: server.addr,
        sid: old.clone(),
    }
    .emit("join", json!("r"))
    .await;
    drop(r);
    tokio::time::timeout(WAIT, async {
        while server.io.room_count() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the away session never ended");
    let (_r, hs) = resume(&server, &id).await;
    assert_ne!(hs["sid"], json!(old));
    assert_eq!(
        (hs["recovered"].clone(), hs["missed"].clone()),
        (json!(false), json!(true))
    );
}

#[tokio::test]
async fn past_the_log_a_client_gets_a_fresh_session_marked_missed() {
    let (server, _) = start(Config {
        recovery_max_events: 16,
        max_pending_events: 16,
        ..config()
    })
    .await;
    let mut r = Reader::new(Sse::open(server.addr).await);
    let id = r.next().await.id.unwrap();
    drop(r);
    tokio::time::timeout(WAIT, async {
        while server.io.stats().away != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    for n in 0..100 {
        server.io.emit("chat message", n);
    }
    let (mut r, hs) = resume(&server, &id).await;
    assert_eq!(
        (hs["recovered"].clone(), hs["missed"].clone()),
        (json!(false), json!(true))
    );
    // A fresh session starts from now: none of the old burst.
    server.io.emit("chat message", "new");
    assert_eq!(r.next_ordinary().await.data, "\"new\"");
    assert_eq!(server.io.stats().away, 0);
}

#[tokio::test]
async fn a_forged_or_foreign_cursor_never_reads_anyones_events() {
    let (server, _) = start(config()).await;
    // A victim with history, away.
    let mut v = Reader::new(Sse::open(server.addr).await);
    v.next().await;
    let victim = v.sse.sid.clone();
    for n in 0..5 {
        server.io.emit("chat message", n);
    }
    for _ in 0..5 {
        v.next_ordinary().await;
    }
    drop(v);
    tokio::time::timeout(WAIT, async {
        while server.io.stats().away != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    // Not the victim's sid: a fresh session and nothing from the log.
    let stranger = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";
    let (mut r, hs) = resume(&server, &format!("{stranger}:0:0")).await;
    assert_ne!(hs["sid"], json!(stranger));
    assert_eq!(hs["recovered"], json!(false));
    server.io.emit("chat message", "live");
    assert_eq!(r.next_ordinary().await.data, "\"live\"");
    // Well-formed but impossible positions (past what was sent) are
    // refused too, even with the right sid.
    let (_r2, hs) = resume(&server, &format!("{victim}:999:0")).await;
    assert_eq!(hs["recovered"], json!(false));
    assert_ne!(hs["sid"], json!(victim));
    // Malformed cursors are a 400, by header or query, on both transports.
    for bad in [
        "x",
        "1:2:3",
        &format!("{victim}:01:0"),
        &format!("{victim}:1:2:3"),
    ] {
        let r = request(
            server.addr,
            "GET",
            "/events",
            &[("Last-Event-ID", bad)],
            b"",
        )
        .await;
        assert_eq!(
            (r.status, r.json()),
            (400, json!({ "error": "invalid resume cursor" })),
            "{bad}"
        );
        let r = get(server.addr, &format!("/poll?resume={bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
    }
    server.wait_sessions(2, WAIT).await;
}

#[tokio::test]
async fn a_polling_client_resumes_with_its_cursor_and_gets_what_it_missed() {
    let (server, _) = start(Config {
        ping_interval_ms: 200,
        ping_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let hs = get(server.addr, "/poll").await;
    let sid = hs.json()["sid"].as_str().unwrap().to_string();
    let p = Poller {
        addr: server.addr,
        sid: sid.clone(),
    };
    p.emit("direct", json!("one")).await;
    let r = p.poll().await;
    let cursor = r.header("x-ssio-cursor").unwrap();
    assert!(cursor.starts_with(&format!("{sid}:")), "{cursor}");
    // The client stops polling: ping timeout, away.
    tokio::time::timeout(WAIT, async {
        while server.io.stats().away != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    server.io.emit("chat message", "missed 1");
    server.io.emit("chat message", "missed 2");
    let back = get(
        server.addr,
        &format!("/poll?resume={}", cursor.replace(':', "%3A")),
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(back.json()["sid"], json!(sid));
    assert_eq!(back.json()["recovered"], json!(true));
    let events = p.events().await;
    let chats: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "chat message")
        .map(|e| &e["data"])
        .collect();
    assert_eq!(chats, vec![&json!("missed 1"), &json!("missed 2")]);
}

/// Query values are read as a form decodes them, on every route: a sid
/// with its hyphens escaped names the same session, a cursor's colons may
/// be escaped in either case, and a malformed escape or bytes that are not
/// UTF-8 make a malformed value, refused as one.
#[tokio::test]
async fn query_values_are_percent_decoded_on_every_route() {
    let (server, _) = start(Config {
        ping_interval_ms: 200,
        ping_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let hs = get(server.addr, "/poll").await;
    let sid = hs.json()["sid"].as_str().unwrap().to_string();
    let escaped = Poller {
        addr: server.addr,
        sid: sid.replace('-', "%2D"),
    };
    assert_eq!(escaped.emit("direct", json!("one")).await.status, 204);
    let r = escaped.poll().await;
    assert_eq!(r.status, 200, "{}", r.text());
    let directs: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&r.body)
        .unwrap()
        .into_iter()
        .filter(|e| e["event"] == "direct")
        .collect();
    assert_eq!(directs, vec![json!({"event": "direct", "data": "one"})]);
    let cursor = r.header("x-ssio-cursor").unwrap();
    tokio::time::timeout(WAIT, async {
        while server.io.stats().away != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the session went away within WAIT");
    server.io.emit("chat message", "missed");
    let lower = cursor.replace(':', "%3a").replace('-', "%2d");
    let back = get(server.addr, &format!("/poll?resume={lower}")).await;
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(back.json()["sid"], json!(sid));
    assert_eq!(back.json()["recovered"], json!(true));
    let p = Poller {
        addr: server.addr,
        sid: sid.replace('-', "%2d"),
    };
    let chats: Vec<Value> = p
        .events()
        .await
        .into_iter()
        .filter(|e| e["event"] == "chat message")
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(chats, vec![json!("missed")]);
    for bad in ["%ZZ", "%3A", &format!("{}%FF", &cursor[..cursor.len() - 1])] {
        for path in ["/poll", "/events"] {
            let r = get(server.addr, &format!("{path}?resume={bad}")).await;
            assert_eq!(
                (r.status, r.json()),
                (400, json!({ "error": "invalid resume cursor" })),
                "{path} {bad}"
            );
        }
    }
}
