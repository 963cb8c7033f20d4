//! Presence: who is connected, to the server and to each room; people
//! counted once per user id or per browser; pages through a room of 100k
//! members; join and leave events for tracked rooms, in count order and
//! within their rate; and `GET /api/presence` with its hostile queries.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;
use ssio::{Config, Io};

const KEY: &str = "presence-key";

fn config() -> Config {
    Config {
        api_keys: vec![KEY.into()],
        // Polling sessions here do not poll again.
        ping_interval_ms: 30_000,
        ping_timeout_ms: 30_000,
        first_poll_timeout_ms: 30_000,
        ..fast_config()
    }
}

async fn api(addr: SocketAddr, path: &str) -> Resp {
    let auth = format!("Bearer {KEY}");
    request(addr, "GET", path, &[("Authorization", auth.as_str())], b"").await
}

/// Opens a shared stream (a browser's first tab) and returns it with its id.
async fn browser(addr: SocketAddr) -> (Sse, String) {
    let mut s = Sse::open_path(addr, "/events?mux=1").await;
    let first = String::from_utf8(s.next_chunk_within(WAIT).await.unwrap()).unwrap();
    let json = first
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let connect: Value = serde_json::from_str(json).unwrap();
    let id = connect["data"]["mux"].as_str().unwrap().to_string();
    (s, id)
}

/// Another tab on the browser whose stream is `id`; its sid.
async fn tab(addr: SocketAddr, id: &str) -> String {
    let r = post(addr, &format!("/mux/attach?mux={id}"), b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["sid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_browser_with_three_tabs_is_one_person_and_presence_lists_every_session() {
    let server = Server::start(config()).await;
    let addr = server.addr;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (a, a_id) = browser(addr).await;
    let a2 = tab(addr, &a_id).await;
    let _a3 = tab(addr, &a_id).await;
    let (b, _) = browser(addr).await;
    let curl = Sse::connect(addr).await;
    let poller = Poller::handshake(addr).await;
    server.wait_sessions(6, WAIT).await;
    assert_eq!(server.io.users(), Some(4));

    let all = server.io.presence(None).await;
    assert_eq!((all.clients, all.users), (6, 4));
    let mut sids: Vec<String> = [&a.sid, &b.sid, &curl.sid, &poller.sid, &a2]
        .iter()
        .map(|s| s.to_string())
        .collect();
    sids.push(_a3.clone());
    sids.sort();
    let listed: Vec<String> = all.members.iter().map(|m| m.sid.to_string()).collect();
    assert_eq!(listed, sids);
    for m in &all.members {
        assert_eq!(m.public_id, m.sid.to_string()[..8]);
        assert_eq!((m.user.as_deref(), m.node.as_deref()), (None, None));
        assert!(
            m.joined_at >= before && m.joined_at < before + 60_000,
            "{m:?}"
        );
    }
    assert_eq!(all.next, None);

    // A tab of the three closes: one session less, the same people.
    assert_eq!(
        post(addr, &format!("/close?sid={a2}"), b"").await.status,
        204
    );
    server.wait_sessions(5, WAIT).await;
    assert_eq!(server.io.users(), Some(4));
    // The one-tab browser goes: one person less.
    drop(b);
    server.wait_sessions(4, WAIT).await;
    assert_eq!(server.io.users(), Some(3));
    drop(a);
    // The carrier's own session ends with its stream; the third tab waits
    // for a new carrier (--mux-grace), still counted, then goes.
    server.wait_sessions(2, WAIT).await;
    assert_eq!(server.io.users(), Some(2));
}

/// The demo page's figures as a shared stream carries them to key 0.
async fn page_counts(s: &mut Sse, users: i64, people: Option<i64>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut u, mut p) = (None, None);
    let mut seen = String::new();
    while u != Some(users) || p != people {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let chunk = s.next_chunk_within(left).await.expect("stream ended");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
        for line in seen.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let f: Value = serde_json::from_str(line).unwrap();
            if f["k"] != 0 {
                continue;
            }
            match f["event"].as_str() {
                Some("user count") => u = f["data"].as_i64(),
                Some("people count") => p = f["data"].as_i64(),
                _ => {}
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "saw {seen:?}");
    }
}

#[tokio::test]
async fn the_demo_app_tells_people_only_while_they_differ_from_the_user_count() {
    let server = Server::start(config()).await;
    let addr = server.addr;
    let mut lone = Sse::connect(addr).await;
    lone.wait_count(1, WAIT).await;
    let (mut a, id) = browser(addr).await;
    page_counts(&mut a, 2, None).await;
    let t = tab(addr, &id).await;
    page_counts(&mut a, 3, Some(2)).await;
    // Back to one session per person: `null`, the page shows the count.
    assert_eq!(
        post(addr, &format!("/close?sid={t}"), b"").await.status,
        204
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = String::new();
    while !seen.contains(r#""event":"people count","data":null"#) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let chunk = a.next_chunk_within(left).await.expect("stream ended");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        seen.contains(r#"{"k":0,"event":"user count","data":2}"#),
        "{seen:?}"
    );
    // A lone client never heard of people at all.
    lone.wait_count(2, WAIT).await;
    let (mut new, _) = browser(addr).await;
    page_counts(&mut new, 3, None).await;
}

#[tokio::test]
async fn a_room_of_a_hundred_thousand_members_is_read_in_pages_in_sid_order() {
    const N: usize = 100_000;
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            max_sessions_per_ip: N + 10,
            max_new_sessions_per_ip: 0,
            max_sessions: N + 10,
            ping_interval_ms: 120_000,
            ping_timeout_ms: 120_000,
            first_poll_timeout_ms: 120_000,
            ..config()
        },
        |io: &Io| {
            io.on_connection(|socket| {
                socket.join("big").unwrap();
            })
        },
    )
    .await;
    // Handshakes pipelined on a few keep-alive connections.
    let per = N / 10;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET /poll HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            let batch = req.repeat(100);
            let mut buf = vec![0u8; 1 << 16];
            let mut answers = 0;
            let mut tail = Vec::new();
            for _ in 0..per / 100 {
                s.write_all(batch.as_bytes()).await.unwrap();
                let want = answers + 100;
                while answers < want {
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(n > 0, "connection closed");
                    tail.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&tail);
                    let heads = text.matches("HTTP/1.1 200 OK").count();
                    if text.contains("HTTP/1.1 ") && heads == 0 {
                        panic!("refused: {text}");
                    }
                    // Whole answers only: each ends with its JSON's `}`.
                    if let Some(end) = text.rfind("\"pingTimeout\":120000}") {
                        let whole = text[..end].matches("HTTP/1.1 200 OK").count();
                        answers += whole;
                        tail.drain(..end + "\"pingTimeout\":120000}".len());
                    }
                }
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("handshakes took too long")
            .unwrap();
    }
    assert_eq!(server.io.stats().count, N);

    let mut after: Option<String> = None;
    let mut seen = 0;
    let mut last = String::new();
    let mut pages = 0;
    loop {
        let mut path = "/api/presence?room=big&limit=10000".to_string();
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let r = api(server.addr, &path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        assert_eq!(
            (page["clients"].as_u64(), page["users"].as_u64()),
            (Some(N as u64), Some(N as u64))
        );
        let members = page["members"].as_array().unwrap();
        for m in members {
            let sid = m["sid"].as_str().unwrap().to_string();
            assert!(sid > last, "out of order: {sid} after {last}");
            last = sid;
        }
        seen += members.len();
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(next, last);
                after = Some(next.to_string());
            }
            None => break,
        }
    }
    assert_eq!((seen, pages), (N, 10));
}

#[tokio::test]
async fn the_presence_api_answers_its_shape_and_refuses_bad_queries() {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config(), |io: &Io| {
        io.on_connection(|socket| {
            socket.on("join", |socket, room| {
                let _ = socket.join(room.as_str().unwrap_or(""));
            });
        });
    })
    .await;
    let addr = server.addr;
    let p = Poller::handshake(addr).await;
    let q = Poller::handshake(addr).await;
    assert_eq!(
        p.emit("join", json!("a room/with ?&= in it")).await.status,
        204
    );
    let r = api(
        addr,
        "/api/presence?room=a%20room%2Fwith%20%3F%26%3D%20in%20it",
    )
    .await;
    let member = |sid: &str| {
        json!({"sid": sid, "id": &sid[..8], "user": null, "node": null,
               "joinedAt": r.json()["members"][0]["joinedAt"]})
    };
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"clients": 1, "users": 1, "members": [member(&p.sid)], "next": null})
    );
    let r = api(addr, "/api/presence?limit=1").await;
    let first = std::cmp::min(&p.sid, &q.sid).clone();
    assert_eq!(
        (r.json()["clients"].clone(), r.json()["next"].clone()),
        (json!(2), json!(first))
    );
    let r = api(addr, "/api/presence?room=nobody").await;
    assert_eq!(
        r.json(),
        json!({"clients": 0, "users": 0, "members": [], "next": null})
    );

    let bad = [
        ("limit=0", "limit must be 1 to 10000"),
        ("limit=10001", "limit must be 1 to 10000"),
        ("limit=-1", "limit must be 1 to 10000"),
        ("limit=ten", "limit must be 1 to 10000"),
        ("after=not-a-sid", "after is not a sid"),
        ("after=", "after is not a sid"),
        ("room=", "room is empty"),
    ];
    for (query, error) in bad {
        let r = api(addr, &format!("/api/presence?{query}")).await;
        let want = json!({ "error": format!("invalid query: {error}") });
        assert_eq!((r.status, r.json()), (400, want), "{query}");
    }
    let r = request(addr, "GET", "/api/presence", &[], b"").await;
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {KEY}");
    let r = request(
        addr,
        "POST",
        "/api/presence",
        &[("Authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 405);
    // Another session's sid as a cursor pages past it, nothing more.
    let r = api(addr, &format!("/api/presence?after={first}")).await;
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 1);
}

/// [`config`] with polls held for 300 ms at most, so that a watcher's
/// empty poll comes back soon.
fn quick() -> Config {
    Config {
        ping_interval_ms: 300,
        ..config()
    }
}

/// An app whose clients join and leave rooms by event, with `lobby`
/// tracked.
fn lobby(io: &Io) {
    ssio::app::install(io);
    io.track_presence("lobby");
    io.on_connection(|socket| {
        socket.on("join", |socket, room| {
            let _ = socket.join(room.as_str().unwrap_or(""));
        });
        socket.on("leave", |socket, room| {
            socket.leave(room.as_str().unwrap_or(""))
        });
    });
}

/// A poller's presence events and counts, in the order they came, kept
/// across polls.
struct Watch {
    p: Poller,
    buf: std::collections::VecDeque<(String, Value)>,
}

impl Watch {
    fn new(p: Poller) -> Watch {
        Watch {
            p,
            buf: Default::default(),
        }
    }

    /// The next `n` events, latest values other than the count and chat
    /// left out.
    async fn next(&mut self, n: usize) -> Vec<(String, Value)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.buf.len() < n {
            for e in self.p.events().await {
                let name = e["event"].as_str().unwrap().to_string();
                if name.starts_with("presence") || name == "user count" {
                    self.buf.push_back((name, e["data"].clone()));
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {:?}",
                self.buf
            );
        }
        self.buf.drain(..n).collect()
    }
}

fn names(seen: &[(String, Value)]) -> Vec<&str> {
    seen.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn a_tracked_room_hears_joins_and_leaves_in_count_order_and_no_blip() {
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), quick(), lobby).await;
    let addr = server.addr;
    let watcher = Poller::handshake(addr).await;
    assert_eq!(watcher.emit("join", json!("lobby")).await.status, 204);
    let mut watch = Watch::new(watcher);
    assert_eq!(watch.next(1).await, [("user count".to_string(), json!(1))]);

    // A member arrives and joins, leaves the room, joins again, then ends.
    let mut s = Sse::connect(addr).await;
    let tag = s.sid[..8].to_string();
    let b = Poller {
        addr,
        sid: s.sid.clone(),
    };
    assert_eq!(b.emit("join", json!("lobby")).await.status, 204);
    // Untracked rooms say nothing.
    assert_eq!(b.emit("join", json!("quiet")).await.status, 204);
    assert_eq!(b.emit("leave", json!("lobby")).await.status, 204);
    assert_eq!(b.emit("join", json!("lobby")).await.status, 204);
    let seen = watch.next(4).await;
    assert_eq!(
        names(&seen),
        [
            "user count",
            "presence join",
            "presence leave",
            "presence join"
        ]
    );
    assert_eq!(seen[0].1, json!(2));
    let member = &seen[1].1;
    assert_eq!(
        (member["id"].as_str(), member["user"].clone()),
        (Some(tag.as_str()), Value::Null)
    );
    assert!(member["joinedAt"].as_u64().unwrap() > 0);
    assert_eq!((&seen[2].1, &seen[3].1), (member, member));

    // A blip inside the reconnect grace: neither leave nor join.
    let connect = s.next_event().await;
    let _ = connect;
    s.set_reset_on_drop();
    drop(s);
    let cursor = format!("{}%3A0%3A0", b.sid);
    // Until the server has seen the reset, the old stream holds the sid.
    let deadline = tokio::time::Instant::now() + WAIT;
    let _back = loop {
        match Sse::try_open(addr, &format!("/events?resume={cursor}")).await {
            Ok(s) => break s,
            Err(r) => assert_eq!(r.status, 409, "{}", r.text()),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reset was never seen"
        );
        tokio::task::yield_now().await;
    };
    // The next event the watcher hears is the one a close causes.
    assert_eq!(b.close().await.status, 204);
    // A latest value (the count) reaches a poll before ordinary events,
    // so only the presence events' own order is kept.
    let mut seen = watch.next(2).await;
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(names(&seen), ["presence leave", "user count"], "{seen:?}");
    assert_eq!((&seen[0].1, &seen[1].1), (member, &json!(1)));
    let tail = watch.p.events().await;
    assert!(
        tail.iter()
            .all(|e| !e["event"].as_str().unwrap().starts_with("presence")),
        "{tail:?}"
    );
}

#[tokio::test]
async fn a_join_flood_sends_the_rate_then_one_sync_with_the_counts() {
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            max_presence_events: 5,
            ..quick()
        },
        lobby,
    )
    .await;
    let addr = server.addr;
    let watcher = Poller::handshake(addr).await;
    assert_eq!(watcher.emit("join", json!("lobby")).await.status, 204);
    let mut watch = Watch::new(watcher);
    let mut commands = Vec::new();
    for _ in 0..30 {
        let p = Poller::handshake(addr).await;
        commands.push(json!({"method": "join", "params": {"sid": p.sid, "room": "lobby"}}));
    }
    // Thirty joins at once, through one batch.
    let auth = format!("Bearer {KEY}");
    let body = json!({ "commands": commands }).to_string();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let r = request(addr, "POST", "/api/batch", &headers, body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The watcher's own join used one of the five: four joins, then one
    // sync once the budget allows, and nothing piled up behind it.
    let mut presence = Vec::new();
    loop {
        let (name, data) = watch.next(1).await.remove(0);
        if name == "presence sync" {
            assert_eq!(data, json!({"clients": 31, "users": 31}));
            break;
        }
        if name != "user count" {
            presence.push(name);
        }
    }
    assert_eq!(presence, ["presence join"; 4]);
    let tail = watch.p.events().await;
    assert!(
        tail.iter()
            .all(|e| !e["event"].as_str().unwrap().starts_with("presence")),
        "{tail:?}"
    );
}
