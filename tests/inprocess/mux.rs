//! Shared streams: one stream carrying several tabs' sessions, each event
//! tagged with its session's key; every session counted once, closed on
//! its own, kept for `--mux-grace` when its carrier goes; and every new
//! route and parameter refused cleanly when hostile.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::{json, Value};
use ssio::Config;

/// A shared stream read frame by frame (unnamed SSE events, JSON data).
struct Mux {
    sse: Sse,
    buf: String,
    id: String,
    sid: String,
    /// The `retry:` field the stream opened with.
    retry: Option<u64>,
}

impl Mux {
    async fn open(addr: SocketAddr, query: &str) -> Mux {
        let sse = Sse::open_path(addr, &format!("/events?mux=1{query}")).await;
        let sid = sse.sid.clone();
        let mut m = Mux {
            sse,
            buf: String::new(),
            id: String::new(),
            sid,
            retry: None,
        };
        let first = m.next().await;
        // A shared stream opens with `retry:` too, like any other.
        assert_eq!(m.retry, Some(250));
        assert_eq!(first["k"], 0);
        assert_eq!(first["event"], "connect");
        assert_eq!(first["data"]["sid"], m.sid.as_str());
        m.id = first["data"]["mux"].as_str().unwrap().to_string();
        m
    }

    async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                let block = match block.strip_prefix("retry: ") {
                    Some(rest) => {
                        let (ms, rest) = rest.split_once('\n').unwrap();
                        self.retry = Some(ms.parse().unwrap());
                        rest.to_string()
                    }
                    None => block,
                };
                let data = block
                    .trim_end()
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("not a data line: {block:?}"));
                return serde_json::from_str(data).unwrap();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.sse.next_chunk_within(left).await {
                Some(c) => self.buf.push_str(std::str::from_utf8(&c).unwrap()),
                None => panic!("mux stream ended"),
            }
        }
    }

    /// Reads frames until one for `key` with `event`; returns its data.
    async fn wait_for(&mut self, key: u64, event: &str, data: Value) {
        let deadline = Instant::now() + WAIT;
        loop {
            let f = self.next().await;
            if f["k"] == key && f["event"] == event && f["data"] == data {
                return;
            }
            assert!(Instant::now() < deadline, "no {event} {data} for key {key}");
        }
    }

    /// Reads frames until each of `want` has arrived, in any order.
    async fn expect(&mut self, mut want: Vec<Value>) {
        while !want.is_empty() {
            let f = self.next().await;
            want.retain(|w| *w != f);
        }
    }

    /// Reads frames until every key in `keys` had `event` with `data`.
    async fn wait_all(&mut self, keys: &[u64], event: &str, data: Value) {
        let mut left: Vec<u64> = keys.to_vec();
        while !left.is_empty() {
            let f = self.next().await;
            if f["event"] == event && f["data"] == data {
                left.retain(|k| f["k"] != *k);
            }
        }
    }

    async fn attach(&self, addr: SocketAddr, extra: &str) -> Resp {
        post(addr, &format!("/mux/attach?mux={}{extra}", self.id), b"").await
    }
}

fn config() -> Config {
    Config {
        ping_interval_ms: 5_000,
        ping_timeout_ms: 20_000,
        ..fast_config()
    }
}

#[tokio::test]
async fn a_shared_stream_carries_each_session_tagged_and_counted_once() {
    let mut server = Server::start(config()).await;
    let mut m = Mux::open(server.addr, "").await;
    assert!(m.sse.head.contains("content-type: text/event-stream"));
    m.wait_for(0, "user count", json!(1)).await;

    let a = m.attach(server.addr, "").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = a.json();
    assert_eq!(a["k"], 1);
    assert_eq!(a["pingInterval"], 5000);
    let a_sid = a["sid"].as_str().unwrap().to_string();
    let b = m.attach(server.addr, "").await.json();
    assert_eq!(b["k"], 2);
    let b_sid = b["sid"].as_str().unwrap().to_string();
    assert_ne!(a_sid, b_sid);
    server.wait_sessions(3, WAIT).await;
    assert_eq!(server.io.stats().sse, 3);
    // Every session gets its own copy of the count, tagged with its key.
    m.wait_all(&[0, 1, 2], "user count", json!(3)).await;

    // An emit from one attached session reaches every session on the stream.
    let r = post(
        server.addr,
        &format!("/emit?sid={a_sid}"),
        br#"{"event":"chat message","data":"hi"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    let msg = json!({ "sid": &a_sid[..8], "message": "hi" });
    m.wait_all(&[0, 1, 2], "chat message", msg).await;

    // Closing one session ends that one only, with its own reason.
    assert_eq!(
        post(server.addr, &format!("/close?sid={b_sid}"), b"")
            .await
            .status,
        204
    );
    m.expect(vec![
        json!({"k": 2, "event": "disconnect", "data": "client close"}),
        json!({"k": 1, "event": "user count", "data": 2}),
        json!({"k": 0, "event": "user count", "data": 2}),
    ])
    .await;
    server.wait_sessions(2, WAIT).await;
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn hostile_mux_requests_get_their_error_and_harm_nobody() {
    let mut server = Server::start(config()).await;
    let mut m = Mux::open(server.addr, "").await;
    let a = m.attach(server.addr, "").await.json();
    let plain = Sse::connect(server.addr).await;
    let poller = Poller::handshake(server.addr).await;
    server.wait_sessions(4, WAIT).await;

    let unknown_mux = r#"{"error":"unknown mux stream"}"#;
    let not_detached = r#"{"error":"session is not waiting to be re-attached"}"#;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("POST", "/mux/attach".into(), 400, unknown_mux),
        ("POST", "/mux/attach?mux=1".into(), 400, unknown_mux),
        ("POST", "/mux/attach?mux=zzz".into(), 400, unknown_mux),
        (
            "POST",
            format!("/mux/attach?mux={}", uuid::Uuid::new_v4()),
            400,
            unknown_mux,
        ),
        (
            "POST",
            format!("/mux/attach?mux={}x", m.id),
            400,
            unknown_mux,
        ),
        ("GET", "/events?mux=2".into(), 400, unknown_mux),
        ("GET", format!("/events?mux={}", m.id), 400, unknown_mux),
        ("GET", "/poll?mux=".into(), 400, unknown_mux),
        (
            "GET",
            format!("/poll?mux={}", uuid::Uuid::new_v4()),
            400,
            unknown_mux,
        ),
        // Someone else's plain sessions cannot be pulled onto a stream.
        (
            "POST",
            format!("/mux/attach?mux={}&sid={}", m.id, plain.sid),
            400,
            not_detached,
        ),
        (
            "POST",
            format!("/mux/attach?mux={}&sid={}", m.id, poller.sid),
            400,
            not_detached,
        ),
        (
            "GET",
            format!("/events?mux=1&sid={}", plain.sid),
            400,
            not_detached,
        ),
        // Nor the carrier of a live stream, nor a sid never issued.
        (
            "POST",
            format!("/mux/attach?mux={}&sid={}", m.id, m.sid),
            400,
            not_detached,
        ),
        (
            "POST",
            format!("/mux/attach?mux={}&sid={}", m.id, uuid::Uuid::new_v4()),
            400,
            not_detached,
        ),
        (
            "POST",
            format!("/mux/attach?mux={}&sid=nope", m.id),
            400,
            r#"{"error":"unknown session"}"#,
        ),
        // A polled read of a streamed group is the wrong transport.
        (
            "GET",
            format!("/poll?mux={}", m.id),
            400,
            r#"{"error":"session uses the sse transport, not polling"}"#,
        ),
        (
            "GET",
            "/mux/attach".into(),
            405,
            r#"{"error":"method not allowed"}"#,
        ),
    ];
    for (method, path, status, body) in cases {
        let r = request(server.addr, method, &path, &[], b"").await;
        assert_eq!(
            (r.status, r.text()),
            (status, body.to_string()),
            "{method} {path}"
        );
    }
    // Nothing changed: same sessions, the stream still live and exact.
    server.wait_sessions(4, WAIT).await;
    let r = post(
        server.addr,
        &format!("/emit?sid={}", a["sid"].as_str().unwrap()),
        br#"{"event":"chat message","data":"still"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    m.wait_for(
        1,
        "chat message",
        json!({"sid": &a["sid"].as_str().unwrap()[..8], "message": "still"}),
    )
    .await;
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn attachments_are_capped_per_stream_even_when_flooded() {
    let mut server = Server::start(Config {
        max_mux_sessions: 4,
        ..config()
    })
    .await;
    let m = Mux::open(server.addr, "").await;
    for k in 1..4 {
        assert_eq!(m.attach(server.addr, "").await.json()["k"], k);
    }
    let r = m.attach(server.addr, "").await;
    assert_eq!(
        (r.status, r.text()),
        (
            429,
            r#"{"error":"too many sessions on this stream"}"#.to_string()
        )
    );
    // A flood of concurrent attachments: every one refused, none counted.
    let addr = server.addr;
    let path = format!("/mux/attach?mux={}", m.id);
    let floods: Vec<_> = (0..100)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { post(addr, &path, b"").await.status })
        })
        .collect();
    for f in floods {
        assert_eq!(f.await.unwrap(), 429);
    }
    server.wait_sessions(4, WAIT).await;
    // Another stream has a cap of its own.
    let other = Mux::open(server.addr, "").await;
    assert_eq!(other.attach(server.addr, "").await.status, 200);
    server.wait_sessions(6, WAIT).await;
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn when_the_carrier_goes_its_sessions_wait_and_a_new_carrier_takes_them_with_their_sids() {
    let mut server = Server::start(Config {
        mux_grace_ms: 3_000,
        ..config()
    })
    .await;
    let first = Mux::open(server.addr, "").await;
    let a = first.attach(server.addr, "").await.json();
    let b = first.attach(server.addr, "").await.json();
    let (a_sid, b_sid) = (a["sid"].as_str().unwrap(), b["sid"].as_str().unwrap());
    server.wait_sessions(3, WAIT).await;

    // The carrier's tab dies: its session ends after the reconnect grace;
    // the others wait for the mux grace.
    drop(first);
    server.wait_sessions(2, WAIT).await;

    // A tab that was carried now carries, resuming its own session, and
    // re-attaches the other: same sids, nothing re-counted.
    let mut second = Mux::open(server.addr, &format!("&sid={a_sid}")).await;
    assert_eq!(second.sid, a_sid);
    let r = second.attach(server.addr, &format!("&sid={b_sid}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["sid"], b_sid);
    assert_eq!(r.json()["k"], 1);
    // The newest count is replayed to each: what the old stream last
    // wrote may have died with it.
    second.wait_all(&[0, 1], "user count", json!(2)).await;
    server.wait_sessions(2, WAIT).await;
    // Re-attaching twice is refused: it is on a stream now... of its own
    // carrier, which may move it, but never as someone else's carrier.
    let r = get(server.addr, &format!("/events?mux=1&sid={a_sid}")).await;
    assert_eq!(r.status, 400);
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn sessions_not_reattached_within_the_grace_end_with_transport_close() {
    let mut server = Server::start(Config {
        mux_grace_ms: 300,
        ..config()
    })
    .await;
    let mut watcher = Sse::connect(server.addr).await;
    let m = Mux::open(server.addr, "").await;
    let a = m.attach(server.addr, "").await.json();
    server.wait_sessions(3, WAIT).await;
    let t0 = Instant::now();
    drop(m);
    server.wait_sessions(2, WAIT).await;
    server.wait_sessions(1, WAIT).await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1_500),
        "{took:?}"
    );
    watcher.wait_count(1, WAIT).await;
    let r = post(
        server.addr,
        &format!(
            "/mux/attach?mux={}&sid={}",
            uuid::Uuid::new_v4(),
            a["sid"].as_str().unwrap()
        ),
        b"",
    )
    .await;
    assert_eq!(r.status, 400);
    server.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_polled_shared_stream_carries_tagged_batches_and_a_carrier_that_never_polls_ends_within_2_s(
) {
    let mut server = Server::start(config()).await;
    let hs = get(server.addr, "/poll?mux=1").await;
    assert_eq!(hs.status, 200);
    let hs = hs.json();
    let sid = hs["sid"].as_str().unwrap();
    let id = hs["mux"].as_str().unwrap().to_string();
    assert_eq!(
        hs,
        json!({"sid": sid, "pingInterval": 5000, "pingTimeout": 20000, "mux": id, "k": 0})
    );
    let a = post(server.addr, &format!("/mux/attach?mux={id}"), b"")
        .await
        .json();
    assert_eq!(a["k"], 1);
    let batch = get(server.addr, &format!("/poll?mux={id}")).await;
    assert_eq!(
        batch.text(),
        // One browser's two tabs: two users online, one person.
        r#"[{"k":0,"event":"user count","data":2},{"k":0,"event":"people count","data":1},{"k":1,"event":"user count","data":2},{"k":1,"event":"people count","data":1}]"#
    );
    server.wait_sessions(2, WAIT).await;
    assert_eq!(server.io.stats().polling, 2);

    // A carrier that never polls after its handshake (a page that left
    // before reading it) ends within 2 s, though pingTimeout is 20 s.
    let t0 = Instant::now();
    let ghost = get(server.addr, "/poll?mux=1").await;
    assert_eq!(ghost.status, 200);
    server.wait_sessions(3, WAIT).await;
    server.wait_sessions(2, WAIT).await;
    assert!(
        t0.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        t0.elapsed()
    );
    server.shutdown(WAIT).await;
}
