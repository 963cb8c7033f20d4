//! Blips are invisible: a stream that drops without a close stays counted
//! for `--reconnect-grace`, and a client that comes back in time with its
//! cursor, on either transport, continues the very same session: no count
//! change, no `disconnect`/`connect` for the handlers, every event missed
//! in between delivered once, in order. Past the grace the session ends
//! with `transport close`; deliberate closes stay instant; a resume that
//! presents a cursor the session was never sent, or a sid whose stream is
//! still open, is refused and harms nobody.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use ssio::{Config, Io};
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};

/// Every lifecycle call the handlers saw, in order: `connect <tag>` and
/// `disconnect <tag> <reason>`.
type Log = Arc<Mutex<Vec<String>>>;

fn install(io: &Io) -> Log {
    let log: Log = Arc::default();
    io.latest_value("user count");
    let l = log.clone();
    io.on_connection(move |socket| {
        l.lock().push(format!("connect {}", socket.public_id()));
        socket.io().emit("user count", socket.io().count());
        let l = l.clone();
        socket.on("disconnect", move |socket, reason| {
            l.lock().push(format!(
                "disconnect {} {}",
                socket.public_id(),
                reason.as_str().unwrap_or("")
            ));
            socket.io().emit("user count", socket.io().count());
        });
        socket.on("direct", |socket, d| socket.emit("direct", d.clone()));
    });
    log
}

fn config() -> Config {
    Config {
        ping_interval_ms: 2_000,
        ping_timeout_ms: 2_000,
        ..fast_config()
    }
}

async fn start(config: Config) -> (Server, Log) {
    let mut log = None;
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config, |io| {
        log = Some(install(io))
    })
    .await;
    (server, log.unwrap())
}

/// Opens a stream resuming from `id`; returns it with its connect data.
async fn resume(server: &Server, id: &str) -> (Reader, Value) {
    let mut r = Reader::new(Sse::open_with(server.addr, "/events", &[("Last-Event-ID", id)]).await);
    let c = r.next().await;
    assert_eq!(c.event, "connect");
    (r, serde_json::from_str(&c.data).unwrap())
}

/// Opens a stream and reads its `connect`; returns it with the connect's id.
async fn open(server: &Server) -> (Reader, String) {
    let mut r = Reader::new(Sse::open(server.addr).await);
    let c = r.next().await;
    assert_eq!(c.event, "connect");
    let id = c.id.expect("the connect event carries a cursor");
    (r, id)
}

/// Waits until `f` holds of the server's stats, or fails loudly.
async fn until(server: &Server, what: &str, f: impl Fn(&ssio::Stats) -> bool) {
    timeout(WAIT, async {
        while !f(&server.io.stats()) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}; stats {:?}", server.io.stats()));
}

/// Cuts a stream as a dead network or a proxy's timeout would: a reset,
/// no `/close`.
fn cut(r: Reader) {
    let mut r = r;
    r.sse.set_reset_on_drop();
    drop(r);
}

/// Every `user count` a watcher reads until it has been quiet for `quiet`.
async fn counts_until_quiet(w: &mut Sse, quiet: Duration) -> Vec<i64> {
    let mut counts = Vec::new();
    while let Ok((event, data)) = timeout(quiet, w.next_event_within(quiet + WAIT)).await {
        if event == "user count" {
            counts.push(data.parse().unwrap());
        }
    }
    counts
}

fn tag(sid: &str) -> String {
    sid.replace('-', "")[..8].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_and_resumed_within_the_grace_changes_no_count_and_loses_nothing() {
    let (server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    watcher.wait_count(1, WAIT).await;
    let (mut a, _) = open(&server).await;
    let sid = a.sse.sid.clone();
    watcher.wait_count(2, WAIT).await;

    for n in 0..50 {
        server.io.emit("chat message", n);
    }
    let mut got: Vec<Value> = Vec::new();
    let mut last = String::new();
    while got.len() < 20 {
        let b = a.next_ordinary().await;
        last = b.id.expect("ordinary events carry an id");
        got.push(serde_json::from_str(&b.data).unwrap());
    }
    cut(a);
    until(&server, "the cut stream never started its grace", |s| {
        s.graced == 1
    })
    .await;
    // Still counted, and still able to emit: the session never ended.
    assert_eq!(server.io.count(), 2);
    for n in 50..75 {
        server.io.emit("chat message", n);
    }
    let r = post(
        server.addr,
        &format!("/emit?sid={sid}"),
        br#"{"event":"direct","data":"while away"}"#,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    for n in 75..100 {
        server.io.emit("chat message", n);
    }

    let (mut a, hs) = resume(&server, &last).await;
    assert_eq!(hs["sid"], json!(sid));
    assert_eq!(hs["recovered"], json!(true));
    assert_eq!(hs.get("missed"), None);
    while got.len() < 101 {
        got.push(serde_json::from_str(&a.next_ordinary().await.data).unwrap());
    }
    let mut want: Vec<Value> = (0..75).map(|n| json!(n)).collect();
    want.push(json!("while away"));
    want.extend((75..100).map(|n| json!(n)));
    assert_eq!(got, want);
    assert_eq!(server.io.stats().graced, 0);

    // The watcher saw the chat and never a count other than 2.
    assert_eq!(
        counts_until_quiet(&mut watcher, Duration::from_millis(300)).await,
        Vec::<i64>::new()
    );
    assert_eq!(server.io.count(), 2);
    let log = log.lock().clone();
    assert_eq!(
        log,
        vec![
            format!("connect {}", tag(&watcher.sid)),
            format!("connect {}", tag(&sid)),
        ]
    );
    // And the continued stream is live: new events arrive.
    server.io.emit("chat message", "after");
    assert_eq!(a.next_ordinary().await.data, "\"after\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_continues_on_polling_within_the_grace() {
    let (server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, id) = open(&server).await;
    let sid = a.sse.sid.clone();
    watcher.wait_count(2, WAIT).await;
    cut(a);
    until(&server, "no grace", |s| s.graced == 1).await;
    server.io.emit("chat message", "missed");
    let back = get(
        server.addr,
        &format!("/poll?resume={}", id.replace(':', "%3A")),
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(back.json()["sid"], json!(sid));
    assert_eq!(back.json()["recovered"], json!(true));
    let p = Poller {
        addr: server.addr,
        sid: sid.clone(),
    };
    let chats: Vec<Value> = p
        .events()
        .await
        .into_iter()
        .filter(|e| e["event"] == "chat message")
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(chats, vec![json!("missed")]);
    let s = server.io.stats();
    assert_eq!((s.sse, s.polling, s.count, s.graced), (1, 1, 2, 0));
    assert_eq!(
        counts_until_quiet(&mut watcher, Duration::from_millis(300)).await,
        Vec::<i64>::new()
    );
    assert_eq!(log.lock().len(), 2, "{:?}", log.lock());
}

/// A poll held on its own connection, reset when dropped.
async fn held_poll(addr: std::net::SocketAddr, sid: &str) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    s.write_all(format!("GET /poll?sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_client_whose_poll_was_cut_continues_its_session() {
    let (server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    let hs = get(server.addr, "/poll").await;
    let sid = hs.json()["sid"].as_str().unwrap().to_string();
    let p = Poller {
        addr: server.addr,
        sid: sid.clone(),
    };
    let r = p.poll().await;
    let cursor = r.header("x-ssio-cursor").expect("a poll names its cursor");
    watcher.wait_count(2, WAIT).await;
    // A poll the server holds, then cut (a proxy's read timeout): the
    // server may or may not have noticed when the client comes back.
    let held = timeout(WAIT, async {
        loop {
            let held = held_poll(server.addr, &sid).await;
            let probe = p.poll().await;
            if probe.status == 400 {
                assert_eq!(
                    probe.json(),
                    json!({ "error": "a poll is already pending for this session" })
                );
                return held;
            }
            // The probe came first and was the held one: try again.
        }
    })
    .await
    .expect("the held poll never became pending");
    drop(held);
    for n in 0..10 {
        server.io.emit("chat message", n);
    }
    let back = get(
        server.addr,
        &format!("/poll?resume={}", cursor.replace(':', "%3A")),
    )
    .await;
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(back.json()["sid"], json!(sid));
    assert_eq!(back.json()["recovered"], json!(true));
    let mut chats = Vec::new();
    timeout(WAIT, async {
        while chats.len() < 10 {
            chats.extend(
                p.events()
                    .await
                    .into_iter()
                    .filter(|e| e["event"] == "chat message")
                    .map(|e| e["data"].clone()),
            );
        }
    })
    .await
    .expect("the missed chat never arrived");
    assert_eq!(chats, (0..10).map(|n| json!(n)).collect::<Vec<_>>());
    assert_eq!(server.io.count(), 2);
    assert_eq!(
        counts_until_quiet(&mut watcher, Duration::from_millis(300)).await,
        Vec::<i64>::new()
    );
    assert_eq!(log.lock().len(), 2, "{:?}", log.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_the_session_ends_with_transport_close_and_a_resume_starts_anew() {
    let grace = 300;
    let (server, log) = start(Config {
        reconnect_grace_ms: grace,
        recovery_window_ms: 0,
        ..config()
    })
    .await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, id) = open(&server).await;
    let sid = a.sse.sid.clone();
    watcher.wait_count(2, WAIT).await;
    let t0 = Instant::now();
    cut(a);
    watcher.wait_count(1, WAIT).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(grace - 20) && took <= Duration::from_millis(grace + 200),
        "the count dropped after {took:?}, grace {grace} ms"
    );
    assert_eq!(
        log.lock().last().cloned(),
        Some(format!("disconnect {} transport close", tag(&sid)))
    );
    let (_r, hs) = resume(&server, &id).await;
    assert_ne!(hs["sid"], json!(sid));
    assert_eq!(
        (hs["recovered"].clone(), hs["missed"].clone()),
        (json!(false), json!(true))
    );
    watcher.wait_count(2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_the_recovery_window_still_brings_the_session_back() {
    let (server, log) = start(Config {
        reconnect_grace_ms: 100,
        ..config()
    })
    .await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, id) = open(&server).await;
    let sid = a.sse.sid.clone();
    watcher.wait_count(2, WAIT).await;
    cut(a);
    watcher.wait_count(1, WAIT).await;
    until(&server, "never away", |s| s.away == 1 && s.graced == 0).await;
    let (_r, hs) = resume(&server, &id).await;
    assert_eq!(hs["sid"], json!(sid));
    assert_eq!(hs["recovered"], json!(true));
    watcher.wait_count(2, WAIT).await;
    let log = log.lock().clone();
    assert_eq!(
        &log[1..],
        &[
            format!("connect {}", tag(&sid)),
            format!("disconnect {} transport close", tag(&sid)),
            format!("connect {}", tag(&sid)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliberate_closes_are_counted_at_once_even_within_a_grace() {
    let (server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, _) = open(&server).await;
    let (b, _) = open(&server).await;
    let a_sid = a.sse.sid.clone();
    let b_sid = b.sse.sid.clone();
    watcher.wait_count(3, WAIT).await;

    let t0 = Instant::now();
    let r = post(server.addr, &format!("/close?sid={a_sid}"), b"").await;
    assert_eq!(r.status, 204);
    watcher.wait_count(2, WAIT).await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );

    // A close (the pagehide beacon) after the stream was already cut.
    cut(b);
    until(&server, "no grace", |s| s.graced == 1).await;
    let t0 = Instant::now();
    let r = post(server.addr, &format!("/close?sid={b_sid}"), b"").await;
    assert_eq!(r.status, 204);
    watcher.wait_count(1, WAIT).await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(server.io.stats().graced, 0);
    assert_eq!(
        log.lock().last().cloned(),
        Some(format!("disconnect {} client close", tag(&b_sid)))
    );
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_of_zero_ends_a_cut_stream_at_once() {
    let (server, _) = start(Config {
        reconnect_grace_ms: 0,
        ..config()
    })
    .await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, _) = open(&server).await;
    watcher.wait_count(2, WAIT).await;
    let t0 = Instant::now();
    cut(a);
    watcher.wait_count(1, WAIT).await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(server.io.stats().graced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_with_a_cursor_the_session_was_never_sent_is_refused_and_harms_nobody() {
    let (server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, id) = open(&server).await;
    let sid = a.sse.sid.clone();
    // Another session, opened later: its positions start after `a`'s.
    let (b, b_id) = open(&server).await;
    watcher.wait_count(3, WAIT).await;
    cut(a);
    until(&server, "no grace", |s| s.graced == 1).await;
    let end = b_id.split(':').nth(1).unwrap().parse::<u64>().unwrap();
    for bad in [
        // Past anything its mailbox handed out.
        format!("{sid}:0:7"),
        // Past the log's end.
        format!("{sid}:{}:0", end + 1000),
    ] {
        for (path, headers) in [
            ("/events".to_string(), vec![("Last-Event-ID", bad.as_str())]),
            (format!("/poll?resume={}", bad.replace(':', "%3A")), vec![]),
        ] {
            let r = request(server.addr, "GET", &path, &headers, b"").await;
            assert_eq!(
                (r.status, r.json()),
                (
                    409,
                    json!({ "error": "resume cursor does not match the session" })
                ),
                "{path} {bad}"
            );
        }
    }
    // Before the session began: `b`'s sid with a position from before it.
    let before = format!("{}:0:0", b.sse.sid);
    // (b's stream is open: that is refused first, as held.)
    let r = request(
        server.addr,
        "GET",
        "/events",
        &[("Last-Event-ID", before.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    // The session is untouched: its real cursor still continues it.
    let (_a, hs) = resume(&server, &id).await;
    assert_eq!(hs["sid"], json!(sid));
    assert_eq!(hs["recovered"], json!(true));
    assert_eq!(server.io.count(), 3);
    assert_eq!(
        counts_until_quiet(&mut watcher, Duration::from_millis(300)).await,
        Vec::<i64>::new()
    );
    assert_eq!(log.lock().len(), 3, "{:?}", log.lock());
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sid_held_by_an_open_stream_cannot_be_taken_and_a_replayed_cursor_is_refused() {
    let (server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    let (mut a, id) = open(&server).await;
    let sid = a.sse.sid.clone();
    watcher.wait_count(2, WAIT).await;
    // The stream is open: someone else presenting its cursor is refused,
    // on either transport, and the stream carries on.
    let r = request(
        server.addr,
        "GET",
        "/events",
        &[("Last-Event-ID", id.as_str())],
        b"",
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            409,
            json!({ "error": "session is connected on another stream" })
        )
    );
    let r = get(
        server.addr,
        &format!("/poll?resume={}", id.replace(':', "%3A")),
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    server.io.emit("chat message", "still here");
    assert_eq!(a.next_ordinary().await.data, "\"still here\"");

    // Cut, continued once; the same cursor replayed is then refused: the
    // grace is held by the connection that took it.
    cut(a);
    until(&server, "no grace", |s| s.graced == 1).await;
    let (mut a, hs) = resume(&server, &id).await;
    assert_eq!(hs["sid"], json!(sid));
    let r = request(
        server.addr,
        "GET",
        "/events",
        &[("Last-Event-ID", id.as_str())],
        b"",
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    server.io.emit("chat message", "after");
    assert_eq!(a.next_ordinary().await.data, "\"still here\"");
    assert_eq!(a.next_ordinary().await.data, "\"after\"");
    assert_eq!(server.io.count(), 2);
    assert_eq!(
        counts_until_quiet(&mut watcher, Duration::from_millis(300)).await,
        Vec::<i64>::new()
    );
    assert_eq!(log.lock().len(), 2, "{:?}", log.lock());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_within_its_grace_at_shutdown_ends_with_the_transport_close_it_had() {
    let (mut server, log) = start(config()).await;
    let mut watcher = Sse::connect(server.addr).await;
    let (a, _) = open(&server).await;
    let sid = a.sse.sid.clone();
    watcher.wait_count(2, WAIT).await;
    cut(a);
    until(&server, "no grace", |s| s.graced == 1).await;
    server.shutdown(WAIT).await;
    let log = log.lock().clone();
    assert!(
        log.contains(&format!("disconnect {} transport close", tag(&sid))),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("disconnect {} server shutdown", tag(&watcher.sid))),
        "{log:?}"
    );
}
