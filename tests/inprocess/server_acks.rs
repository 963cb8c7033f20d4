//! The server's own acknowledged emits: `socket.emit_with_ack` and a
//! broadcast's `emit_with_ack` reach each transport with an id, the answers
//! come back over `POST /ack`, and an answer nobody owes, a flood of them or
//! an emit nobody answers harms no session and leaves nothing behind.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::support::*;
use ssio::{AckError, Config, Socket};

type Sockets = Arc<Mutex<Vec<Socket>>>;

async fn start(config: Config) -> (Server, Sockets) {
    let sockets = Sockets::default();
    let kept = sockets.clone();
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config, move |io| {
        ssio::app::install(io);
        io.on_connection(move |socket| kept.lock().push(socket.clone()));
    })
    .await;
    (server, sockets)
}

/// The socket of session `sid`, once its connection handlers have run.
async fn socket(sockets: &Sockets, sid: &str) -> Socket {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(s) = sockets.lock().iter().find(|s| s.id().to_string() == sid) {
            return s.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no socket {sid}");
        tokio::task::yield_now().await;
    }
}

async fn answer(addr: std::net::SocketAddr, sid: &str, body: &str) -> Resp {
    post(addr, &format!("/ack?sid={sid}"), body.as_bytes()).await
}

fn config() -> Config {
    Config {
        ack_timeout_ms: 5_000,
        ..fast_config()
    }
}

#[tokio::test]
async fn an_acknowledged_emit_carries_its_id_on_each_transport_and_gets_the_answer() {
    let (server, sockets) = start(config()).await;

    // A stream framed by name gets the event unnamed, with its id.
    let mut stream = Sse::connect(server.addr).await;
    let s = socket(&sockets, &stream.sid).await;
    let asked = tokio::spawn(async move { s.emit_with_ack("question", json!({"n": 1})).await });
    let read = stream.read_until("question").await;
    // The count may have come in the same read.
    let event = &read[read.rfind("id: ").unwrap()..];
    assert_eq!(
        event,
        format!(
            "id: {}:0:1\ndata: {{\"event\":\"question\",\"data\":{{\"n\":1}},\"ack\":1}}\n\n",
            stream.sid
        )
    );
    let r = answer(server.addr, &stream.sid, r#"{"id":1,"data":"yes"}"#).await;
    assert_eq!((r.status, r.text()), (204, String::new()));
    assert_eq!(asked.await.unwrap(), Ok(json!("yes")));

    // A poll's array carries the same JSON.
    let p = Poller::handshake(server.addr).await;
    let s = socket(&sockets, &p.sid).await;
    let asked = tokio::spawn(async move { s.emit_with_ack("question", 2).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    let question = loop {
        let events = p.events().await;
        if let Some(q) = events.into_iter().find(|e| e["event"] == "question") {
            break q;
        }
        assert!(tokio::time::Instant::now() < deadline, "no question polled");
    };
    assert_eq!(question, json!({"event": "question", "data": 2, "ack": 2}));
    // `data` left out answers `null`.
    assert_eq!(answer(server.addr, &p.sid, r#"{"id":2}"#).await.status, 204);
    assert_eq!(asked.await.unwrap(), Ok(Value::Null));
    assert_eq!(metric(server.addr, "ssio_acks_owed").await, 0);
}

#[tokio::test]
async fn a_broadcast_collects_every_answer_and_names_who_never_answered() {
    let (server, sockets) = start(Config {
        ack_timeout_ms: 400,
        ..fast_config()
    })
    .await;
    let pollers = [
        Poller::handshake(server.addr).await,
        Poller::handshake(server.addr).await,
        Poller::handshake(server.addr).await,
    ];
    for p in &pollers {
        socket(&sockets, &p.sid).await;
    }
    let io = server.io.clone();
    let asked = tokio::spawn(async move { io.emit_with_ack("vote", "up or down?").await });
    let mut ids = Vec::new();
    for p in &pollers {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let events = p.events().await;
            if let Some(q) = events.iter().find(|e| e["event"] == "vote") {
                assert_eq!(q["data"], "up or down?");
                ids.push(q["ack"].as_u64().unwrap());
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no vote polled");
        }
    }
    // One id for the whole broadcast: the event is encoded once.
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    for (p, vote) in pollers[..2].iter().zip(["up", "down"]) {
        let body = json!({"id": ids[0], "data": vote}).to_string();
        assert_eq!(answer(server.addr, &p.sid, &body).await.status, 204);
    }
    let replies = asked.await.unwrap().unwrap();
    let sid = |p: &Poller| p.sid.parse::<ssio::Sid>().unwrap();
    assert_eq!(
        replies.replies,
        [
            (sid(&pollers[0]), json!("up")),
            (sid(&pollers[1]), json!("down"))
        ]
    );
    assert_eq!(replies.timed_out, [sid(&pollers[2])]);
    // Too late: the broadcast has given up on it.
    let body = json!({"id": ids[0], "data": "late"}).to_string();
    let r = answer(server.addr, &pollers[2].sid, &body).await;
    assert_eq!(
        (r.status, r.text()),
        (400, r#"{"error":"unknown acknowledgement"}"#.into())
    );

    // A room broadcast asks its members only, less the sender.
    let s0 = socket(&sockets, &pollers[0].sid).await;
    let s1 = socket(&sockets, &pollers[1].sid).await;
    s0.join("r").unwrap();
    s1.join("r").unwrap();
    let replies = s0
        .to("r")
        .emit_with_ack_within("ping", 1, Duration::from_millis(200))
        .await;
    assert_eq!(replies.unwrap().timed_out, [sid(&pollers[1])]);
    assert_eq!(metric(server.addr, "ssio_acks_owed").await, 0);
}

#[tokio::test]
async fn answers_nobody_owes_are_refused_and_harm_no_session() {
    let (server, sockets) = start(Config {
        max_payload: 1024,
        ..config()
    })
    .await;
    let a = Poller::handshake(server.addr).await;
    let b = Poller::handshake(server.addr).await;
    let sa = socket(&sockets, &a.sid).await;
    let asked = tokio::spawn(async move { sa.emit_with_ack("question", 1).await });
    let deadline = tokio::time::Instant::now() + WAIT;
    while !a.events().await.iter().any(|e| e["event"] == "question") {
        assert!(tokio::time::Instant::now() < deadline, "no question polled");
    }
    let unknown = (400, r#"{"error":"unknown acknowledgement"}"#.to_string());
    let cases = [
        // An id never sent.
        (&b.sid, r#"{"id":99,"data":0}"#, unknown.clone()),
        // Another session's.
        (&b.sid, r#"{"id":1,"data":"b"}"#, unknown.clone()),
        (
            &a.sid,
            "not json",
            (
                400,
                r#"{"error":"invalid ack answer: body is not JSON"}"#.into(),
            ),
        ),
        (
            &a.sid,
            "[1]",
            (
                400,
                r#"{"error":"invalid ack answer: body is not a JSON object"}"#.into(),
            ),
        ),
        (
            &a.sid,
            r#"{"data":1}"#,
            (400, r#"{"error":"invalid ack answer: missing id"}"#.into()),
        ),
        (
            &a.sid,
            r#"{"id":"1"}"#,
            (
                400,
                r#"{"error":"invalid ack answer: id is not a whole number"}"#.into(),
            ),
        ),
        (
            &a.sid,
            r#"{"id":-1}"#,
            (
                400,
                r#"{"error":"invalid ack answer: id is not a whole number"}"#.into(),
            ),
        ),
    ];
    for (sid, body, want) in cases {
        let r = answer(server.addr, sid, body).await;
        assert_eq!((r.status, r.text()), want, "{body}");
    }
    let big = format!(r#"{{"id":1,"data":"{}"}}"#, "x".repeat(2000));
    assert_eq!(answer(server.addr, &a.sid, &big).await.status, 413);
    let r = answer(server.addr, "not-a-sid", r#"{"id":1}"#).await;
    assert_eq!(r.status, 400);
    let r = answer(
        server.addr,
        &uuid::Uuid::new_v4().to_string(),
        r#"{"id":1}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (400, r#"{"error":"unknown session"}"#.into())
    );

    // None of that answered for `a`, which still can, once.
    assert_eq!(
        answer(server.addr, &a.sid, r#"{"id":1,"data":"a"}"#)
            .await
            .status,
        204
    );
    assert_eq!(asked.await.unwrap(), Ok(json!("a")));
    let replayed = answer(server.addr, &a.sid, r#"{"id":1,"data":"again"}"#).await;
    assert_eq!((replayed.status, replayed.text()), unknown);
    assert_eq!(server.io.stats().count, 2);
}

#[tokio::test]
async fn a_flood_of_answers_is_held_to_the_emit_rate() {
    let (server, _) = start(Config {
        max_emit_rate: 20,
        max_emit_burst: 20,
        ..config()
    })
    .await;
    let a = Poller::handshake(server.addr).await;
    let b = Poller::handshake(server.addr).await;
    let mut statuses = std::collections::BTreeMap::new();
    for id in 0..200 {
        let r = answer(server.addr, &a.sid, &format!(r#"{{"id":{id}}}"#)).await;
        *statuses.entry(r.status).or_insert(0) += 1;
    }
    // The burst's tokens are spent on refusals, then the rest waits.
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [400, 429],
        "{statuses:?}"
    );
    assert!(statuses[&429] >= 150, "{statuses:?}");
    // The other session is untouched.
    assert_eq!(
        b.emit("chat message", json!("still here")).await.status,
        204
    );
    assert_eq!(server.io.stats().count, 2);
}

#[tokio::test]
async fn unanswered_emits_are_let_go_and_the_cap_refuses_more() {
    let (server, sockets) = start(Config {
        max_pending_acks: 2,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    let s = socket(&sockets, &p.sid).await;
    let within = Duration::from_millis(300);
    let (s1, s2) = (s.clone(), s.clone());
    let first = tokio::spawn(async move { s1.emit_with_ack_within("q", 1, within).await });
    let second = tokio::spawn(async move {
        s2.emit_with_ack_within("q", 2, Duration::from_secs(30))
            .await
    });
    wait_metric(server.addr, "ssio_acks_owed", 2).await;
    // At the cap, nothing more is sent, to anyone.
    assert_eq!(s.emit_with_ack("q", 3).await, Err(AckError::TooMany));
    assert_eq!(
        server.io.emit_with_ack("q", 3).await,
        Err(AckError::TooMany)
    );
    assert_eq!(first.await.unwrap(), Err(AckError::Timeout));
    wait_metric(server.addr, "ssio_acks_owed", 1).await;
    // A caller that stops waiting leaves nothing behind either.
    second.abort();
    wait_metric(server.addr, "ssio_acks_owed", 0).await;
    let events = p.events().await;
    let asked: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "q")
        .map(|e| &e["data"])
        .collect();
    assert_eq!(asked, [&json!(1), &json!(2)]);
    assert_eq!(server.io.stats().count, 1);
}
