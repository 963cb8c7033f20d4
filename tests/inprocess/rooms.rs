//! Rooms: membership, `to` (sender left out), `broadcast`, leaving on
//! disconnect, bad room names, and a room emit that reaches 10 of 10,000
//! sessions and nobody else.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use ssio::Config;

fn config() -> Config {
    Config {
        ping_interval_ms: 300,
        ping_timeout_ms: 5_000,
        ..fast_config()
    }
}

/// Polls until an event named `name` arrives; returns its data.
async fn expect(p: &Poller, name: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for e in p.events().await {
            if e["event"] == name {
                return e["data"].clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no {name}");
    }
}

/// Polls once (waits out the poll) and returns the event names.
async fn names(p: &Poller) -> Vec<String> {
    p.events()
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

async fn ack(p: &Poller, event: &str, data: Value) -> Value {
    let body = json!({ "event": event, "data": data, "ack": true }).to_string();
    let r = post(p.addr, &format!("/emit?sid={}", p.sid), body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn to_reaches_the_other_members_only_and_broadcast_everyone_but_the_sender() {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config(), |io| {
        features::install(io);
    })
    .await;
    let (a, b, c) = (
        Poller::handshake(server.addr).await,
        Poller::handshake(server.addr).await,
        Poller::handshake(server.addr).await,
    );
    for p in [&a, &b, &c] {
        p.events().await; // the counts so far
    }
    assert_eq!(
        ack(&a, "join?", json!("lobby")).await,
        json!({ "data": "ok" })
    );
    assert_eq!(
        ack(&b, "join?", json!("lobby")).await,
        json!({ "data": "ok" })
    );
    assert_eq!(server.io.in_("lobby").count(), 2);
    assert_eq!(server.io.in_("nowhere").count(), 0);
    assert_eq!(
        ack(&a, "whoami", json!(null)).await["data"]["rooms"],
        json!(["lobby"])
    );

    a.emit("say", json!({ "room": "lobby", "text": "hi" }))
        .await;
    assert_eq!(expect(&b, "said").await, json!("hi"));
    c.emit("shout", json!("hey")).await;
    assert_eq!(expect(&a, "shouted").await, json!("hey"));
    assert_eq!(expect(&b, "shouted").await, json!("hey"));
    server.io.to("lobby").emit("from server", 1);
    assert_eq!(expect(&a, "from server").await, json!(1));
    assert_eq!(expect(&b, "from server").await, json!(1));
    // Nothing else for anyone: the sender got neither its own room message
    // nor its own shout, and c is in no room.
    assert_eq!(names(&a).await, Vec::<String>::new());
    assert_eq!(names(&c).await, Vec::<String>::new());

    b.emit("leave", json!("lobby")).await;
    assert_eq!(server.io.in_("lobby").count(), 1);
    // A socket leaves every room when its session ends for good.
    assert_eq!(a.close().await.status, 204);
    assert_eq!(server.io.in_("lobby").count(), 0);
    assert_eq!(server.io.room_count(), 0);
}

#[tokio::test]
async fn bad_room_names_are_refused_and_harm_nobody() {
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            max_rooms_per_socket: 2,
            max_room_name: 8,
            ..config()
        },
        |io| {
            features::install(io);
        },
    )
    .await;
    let a = Poller::handshake(server.addr).await;
    for (room, why) in [
        (json!(""), "invalid room: empty"),
        (json!("123456789"), "invalid room: too long"),
    ] {
        assert_eq!(ack(&a, "join?", room).await, json!({ "data": why }));
    }
    assert_eq!(ack(&a, "join?", json!("1")).await, json!({ "data": "ok" }));
    assert_eq!(ack(&a, "join?", json!("2")).await, json!({ "data": "ok" }));
    assert_eq!(
        ack(&a, "join?", json!("3")).await,
        json!({ "data": "invalid room: too many rooms" })
    );
    assert_eq!(server.io.room_count(), 2);
    assert_eq!(server.io.stats().sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_emit_to_10_of_10000_sessions_reaches_those_10_and_nobody_else() {
    let members: Arc<Mutex<Vec<String>>> = Arc::default();
    let others: Arc<Mutex<Vec<String>>> = Arc::default();
    let (m, o) = (members.clone(), others.clone());
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            ping_interval_ms: 300,
            ping_timeout_ms: 60_000,
            // None of the 10,000 polls before all exist: the first of them
            // must outlive a flood slowed by a busy machine (the flood's
            // own bound is 60 s).
            first_poll_timeout_ms: 60_000,
            ..fast_config()
        },
        move |io| {
            let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            io.on_connection(move |socket| {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i % 1000 == 999 {
                    socket.join("few").unwrap();
                    m.lock().push(socket.id().to_string());
                } else if i % 100 == 0 {
                    o.lock().push(socket.id().to_string());
                }
            });
        },
    )
    .await;
    flood(server.addr, 8, 1250).await;
    server.wait_sessions(10_000, Duration::from_secs(20)).await;
    assert_eq!(server.io.in_("few").count(), 10);
    server.io.to("few").emit("few only", "hello");

    let poll_all = |sids: Vec<String>| {
        let addr = server.addr;
        async move {
            let tasks: Vec<_> = sids
                .into_iter()
                .map(|sid| tokio::spawn(async move { Poller { addr, sid }.events().await }))
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let member_sids = members.lock().clone();
    let got = poll_all(member_sids).await;
    assert_eq!(got.len(), 10);
    for events in got {
        assert_eq!(
            events,
            vec![json!({ "event": "few only", "data": "hello" })]
        );
    }
    let sample = others.lock().clone();
    assert_eq!(sample.len(), 100);
    for events in poll_all(sample).await {
        assert_eq!(events, Vec::<Value>::new());
    }
}
