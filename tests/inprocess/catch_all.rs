//! Catch-all listeners: a stream framed as JSON (`frames=json`), which
//! lets a page see events it has no listener for, and `socket.on_any` on
//! the server.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::support::*;
use ssio::Io;

#[tokio::test]
async fn a_json_framed_stream_carries_every_event_unnamed_in_exact_bytes() {
    let server = Server::start(fast_config()).await;
    let mut s = Sse::open_path(server.addr, "/events?frames=json").await;
    let connect = s.next_chunk_within(WAIT).await.unwrap();
    let expected = format!(
        "retry: 250\nid: {sid}:0:0\ndata: {{\"event\":\"connect\",\"data\":{{\"sid\":\"{sid}\",\"pingInterval\":300,\"pingTimeout\":2000}}}}\n\n",
        sid = s.sid
    );
    assert_eq!(String::from_utf8(connect).unwrap(), expected);
    assert_eq!(
        s.read_until("user count").await,
        "data: {\"event\":\"user count\",\"data\":1}\n\n"
    );

    // An ordinary event keeps its `id:` line, the resume cursor.
    let p = Poller::handshake(server.addr).await;
    assert_eq!(
        s.read_until("user count").await,
        "data: {\"event\":\"user count\",\"data\":2}\n\n"
    );
    assert_eq!(p.emit("chat message", json!("a\nb")).await.status, 204);
    let tag = &p.sid[..8];
    assert_eq!(
        s.read_until("chat message").await,
        format!(
            "id: {}:1:0\ndata: {{\"event\":\"chat message\",\"data\":{{\"sid\":\"{tag}\",\"message\":\"a\\nb\"}}}}\n\n",
            s.sid
        )
    );

    // A shutdown's hint keeps the standard `retry:` field.
    server.io.shutdown();
    let bye = s.read_until("disconnect").await;
    let ms: u64 = bye
        .strip_prefix("retry: ")
        .and_then(|rest| rest.split('\n').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no retry field: {bye:?}"));
    assert_eq!(
        bye,
        format!(
            "retry: {ms}\ndata: {{\"event\":\"retry\",\"data\":{ms}}}\n\ndata: {{\"event\":\"disconnect\",\"data\":\"server shutdown\"}}\n\n"
        )
    );
}

#[tokio::test]
async fn frames_is_json_or_absent_and_a_bad_value_makes_no_session() {
    let server = Server::start(fast_config()).await;
    let long = format!("frames={}", "j".repeat(4000));
    let bad = [
        "frames=xml",
        "frames=",
        "frames",
        "frames=JSON",
        "frames=%zz",
        "frames=json%00",
        long.as_str(),
        // The first pair of a name counts.
        "frames=xml&frames=json",
    ];
    for query in bad {
        let r = get(server.addr, &format!("/events?{query}")).await;
        assert_eq!(r.status, 400, "{query}");
        assert_eq!(
            r.text(),
            r#"{"error":"invalid frames: only \"json\" is known"}"#,
            "{query}"
        );
    }
    assert_eq!(server.io.stats().sessions, 0);

    // Replayed, the first pair wins; escaped, it is read decoded.
    for query in ["frames=json&frames=xml", "frames=%6Aso%6E"] {
        let mut s = Sse::open_path(server.addr, &format!("/events?{query}")).await;
        let connect = String::from_utf8(s.next_chunk_within(WAIT).await.unwrap()).unwrap();
        assert!(
            connect.contains("\ndata: {\"event\":\"connect\","),
            "{query}: {connect:?}"
        );
    }
    server.wait_sessions(2, WAIT).await;
}

#[tokio::test]
async fn a_named_stream_is_taken_over_by_a_json_framed_resume_without_a_count_change() {
    let server = Server::start(fast_config()).await;
    let mut named = Sse::open(server.addr).await;
    let connect = String::from_utf8(named.next_chunk_within(WAIT).await.unwrap()).unwrap();
    let cursor = connect
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_string();
    let watcher = Poller::handshake(server.addr).await;
    server.wait_sessions(2, WAIT).await;

    let query = format!("/events?resume={}&frames=json", cursor.replace(':', "%3A"));
    // While the named stream is open it holds the sid: a second holder
    // is refused, and the first carries on.
    let held = Sse::try_open(server.addr, &query).await.err().unwrap();
    assert_eq!(
        (held.status, held.text()),
        (
            409,
            r#"{"error":"session is connected on another stream"}"#.into()
        )
    );
    // Once it has closed (as a page closes it), the resume takes over.
    drop(named);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut json = loop {
        match Sse::try_open(server.addr, &query).await {
            Ok(s) => break s,
            Err(r) => assert_eq!(r.status, 409, "{}", r.text()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the named stream's close was never seen"
        );
        tokio::task::yield_now().await;
    };
    let sid = json.sid.clone();
    assert_eq!(cursor.split(':').next(), Some(sid.as_str()));
    let first = json.read_until("connect").await;
    assert!(
        first.contains(&format!(
            "data: {{\"event\":\"connect\",\"data\":{{\"sid\":\"{sid}\",\"pingInterval\":300,\"pingTimeout\":2000,\"recovered\":true}}}}\n\n"
        )),
        "{first:?}"
    );
    // Same session, same count: nobody saw it leave or arrive. The
    // latest values come again, since the old stream may have lost them.
    assert_eq!(server.io.stats().count, 2);
    assert_eq!(
        json.read_until("user count").await,
        "data: {\"event\":\"user count\",\"data\":2}\n\n"
    );
    assert_eq!(watcher.close().await.status, 204);
    assert_eq!(
        json.read_until("user count").await,
        "data: {\"event\":\"user count\",\"data\":1}\n\n"
    );
    server.wait_sessions(1, WAIT).await;
}

type Log = Arc<Mutex<Vec<String>>>;

/// An app whose sockets log what their handlers see, in order.
fn install(io: &Io, log: &Log) {
    let log = log.clone();
    io.on_connection(move |socket| {
        let (a, b, c, d) = (log.clone(), log.clone(), log.clone(), log.clone());
        socket.on_any(move |_, event, data| a.lock().push(format!("any {event} {data}")));
        socket.on("chat", move |_, data| {
            b.lock().push(format!("on chat {data}"))
        });
        socket.on("stop", |socket, _| socket.off_any());
        socket.on("disconnect", move |_, reason| {
            c.lock().push(format!("disconnect {reason}"))
        });
        socket.on_ack("ask", move |_, data, ack| {
            d.lock().push(format!("on_ack ask {data}"));
            ack.send(json!("answer"));
        });
    });
}

#[tokio::test]
async fn on_any_sees_every_client_event_first_and_off_any_stops_it() {
    let log = Log::default();
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), fast_config(), |io| {
        install(io, &log)
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    assert_eq!(p.emit("chat", json!(1)).await.status, 204);
    assert_eq!(p.emit("no handler", json!({ "x": 2 })).await.status, 204);
    let body = json!({ "event": "ask", "data": 3, "ack": true }).to_string();
    let r = post(
        server.addr,
        &format!("/emit?sid={}", p.sid),
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.text(), r#"{"data":"answer"}"#);
    assert_eq!(p.emit("stop", Value::Null).await.status, 204);
    assert_eq!(p.emit("chat", json!(4)).await.status, 204);
    assert_eq!(p.close().await.status, 204);
    server.wait_sessions(0, WAIT).await;
    assert_eq!(
        *log.lock(),
        [
            "any chat 1",
            "on chat 1",
            "any no handler {\"x\":2}",
            "any ask 3",
            "on_ack ask 3",
            "any stop null",
            "on chat 4",
            "disconnect \"client close\"",
        ]
    );
}

#[tokio::test]
async fn a_panicking_catch_all_handler_answers_500_and_the_event_handlers_still_run() {
    let log = Log::default();
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), fast_config(), |io| {
        install(io, &log);
        io.on_connection(|socket| socket.on_any(|_, _, _| panic!("catch-all handler")));
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    let r = p.emit("chat", json!(1)).await;
    assert_eq!(
        (r.status, r.text()),
        (500, r#"{"error":"handler failed"}"#.into())
    );
    assert_eq!(*log.lock(), ["any chat 1", "on chat 1"]);
    // The session is unharmed.
    assert_eq!(p.emit("stop", Value::Null).await.status, 500);
    assert_eq!(server.io.stats().count, 1);
}
