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

/// Opens a stream from source address `from`, reads its connect event and
/// returns the stream with its cursor; dropping it resets the connection.
async fn open_from(server: &Server, from: [u8; 4]) -> (Reader, String) {
    let (r, _) = stream_from(server, from, &[]).await;
    let id = r.1;
    (r.0, id)
}

/// Opens a stream from source address `from` with `headers`; returns it
/// with its first cursor, and its connect data.
async fn stream_from(
    server: &Server,
    from: [u8; 4],
    headers: &[(&str, &str)],
) -> ((Reader, String), Value) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    let tcp = tokio::time::timeout(WAIT, socket.connect(server.addr))
        .await
        .expect("connect in time")
        .unwrap();
    let mut sse = Sse::open_on(tcp, server.addr, "/events", headers).await;
    sse.set_reset_on_drop();
    let mut r = Reader::new(sse);
    let c = r.next().await;
    assert_eq!(c.event, "connect");
    let id = c.id.expect("a cursor");
    ((r, id), serde_json::from_str(&c.data).unwrap())
}

/// [`resume`] from source address `from`: each address has its own cap.
async fn resume_from(server: &Server, from: [u8; 4], id: &str) -> (Reader, Value) {
    let ((r, _), hs) = stream_from(server, from, &[("Last-Event-ID", id)]).await;
    (r, hs)
}

/// Waits until `/stats` says `sessions` live and `away` away, checking on
/// the way that the away table never held more than `most`.
async fn wait_stats(server: &Server, sessions: u64, away: u64, most: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = get(server.addr, "/stats").await.json();
        assert!(s["away"].as_u64().unwrap() <= most, "over the bound: {s}");
        if s["sessions"] == json!(sessions)
            && s["count"] == json!(sessions)
            && s["away"] == json!(away)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {sessions} live and {away} away, have {s}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_flood_of_reset_streams_keeps_no_more_away_sessions_than_the_bound_and_the_newest_resume()
{
    let (server, _) = start(Config {
        max_away_sessions: 5,
        reconnect_grace_ms: 0,
        ..config()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        let (r, id) = open_from(&server, [127, 0, 0, 1]).await;
        ids.push((r.sse.sid.clone(), id));
        drop(r);
        wait_stats(&server, 0, (ids.len() as u64).min(5), 5).await;
    }
    // The newest away session comes back whole; the oldest was ended to
    // make room, and its client gets a fresh session that says so.
    let (sid, id) = ids.last().unwrap().clone();
    let (_back, hs) = resume(&server, &id).await;
    assert_eq!(
        (hs["sid"].clone(), hs["recovered"].clone()),
        (json!(sid), json!(true))
    );
    let (sid, id) = ids[0].clone();
    let (_fresh, hs) = resume(&server, &id).await;
    assert_ne!(hs["sid"], json!(sid));
    assert_eq!(
        (hs["recovered"].clone(), hs["missed"].clone()),
        (json!(false), json!(true))
    );
    wait_stats(&server, 2, 4, 5).await;
    assert_eq!(server.io.stats().away, 4);
}

#[tokio::test]
async fn one_address_s_away_sessions_count_against_its_cap_and_no_other_s() {
    let (server, _) = start(Config {
        max_sessions_per_ip: 3,
        reconnect_grace_ms: 0,
        ..config()
    })
    .await;
    let (a, b) = ([127, 0, 0, 2], [127, 0, 0, 3]);
    let mut of_b = Vec::new();
    for n in 0..2u64 {
        let (r, id) = open_from(&server, b).await;
        of_b.push((r.sse.sid.clone(), id));
        drop(r);
        wait_stats(&server, 0, n + 1, 2).await;
    }
    let mut of_a = Vec::new();
    for n in 0..6u64 {
        let (r, id) = open_from(&server, a).await;
        of_a.push((r.sse.sid.clone(), id));
        drop(r);
        wait_stats(&server, 0, 2 + (n + 1).min(3), 5).await;
    }
    // The other address lost nothing to the flood.
    let mut back = Vec::new();
    for (n, (sid, id)) in of_b.iter().enumerate() {
        let (r, hs) = resume_from(&server, [127, 0, 0, 10 + n as u8], id).await;
        back.push(r);
        assert_eq!(
            (hs["sid"].clone(), hs["recovered"].clone()),
            (json!(sid), json!(true))
        );
    }
    // The flooding address kept its newest three.
    let (sid, id) = of_a[5].clone();
    let (_newest, hs) = resume_from(&server, [127, 0, 0, 20], &id).await;
    assert_eq!(
        (hs["sid"].clone(), hs["recovered"].clone()),
        (json!(sid), json!(true))
    );
    let (sid, id) = of_a[3].clone();
    let (_oldest_kept, hs) = resume_from(&server, [127, 0, 0, 21], &id).await;
    assert_eq!(
        (hs["sid"].clone(), hs["recovered"].clone()),
        (json!(sid), json!(true))
    );
    let (sid, id) = of_a[2].clone();
    let (_gone, hs) = resume_from(&server, [127, 0, 0, 22], &id).await;
    assert_ne!(hs["sid"], json!(sid));
    assert_eq!(hs["missed"], json!(true));
    // Two of b's, two of a's and one fresh live; a's fifth still away.
    wait_stats(&server, 5, 1, 5).await;
}
