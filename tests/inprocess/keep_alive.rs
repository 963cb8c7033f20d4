//! Polls on one keep-alive connection, as a polling client sends them.
//!
//! A plain held poll is answered straight on the socket and the connection
//! stays open for the next request: another poll is answered the same way,
//! anything else goes to the full HTTP stack with the bytes already read.
//! These tests hold the wire to that: exact heads and bodies, requests in
//! turn and pipelined, and every hostile turn a client can take while its
//! poll is held (leaving, flooding, sending junk, polling twice).

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use ssio::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// One keep-alive connection, read as responses come.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        Conn {
            r: BufReader::new(s),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).await.unwrap();
    }

    async fn poll(&mut self, sid: &str) {
        let req = format!("GET /poll?sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n");
        self.send(req.as_bytes()).await;
    }

    async fn response(&mut self) -> Resp {
        timeout(WAIT, read_response(&mut self.r))
            .await
            .expect("no response in time")
    }

    /// Whether the server closed the connection (EOF) within `WAIT`.
    async fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(timeout(WAIT, self.r.read(&mut b)).await, Ok(Ok(0) | Err(_)))
    }
}

fn config() -> Config {
    Config {
        // Long enough that only an event, never the interval, answers a
        // held poll within a test's waits.
        ping_interval_ms: 20_000,
        ping_timeout_ms: 20_000,
        ..fast_config()
    }
}

/// A polling session with a poll held on its own connection (see
/// `Poller::hold`); a third poll proves it is held.
async fn held(addr: SocketAddr) -> (Poller, Conn) {
    let p = Poller::handshake(addr).await;
    let (first, r) = p.hold().await;
    assert_eq!(first.text(), r#"[{"event":"user count","data":1}]"#);
    let c = Conn { r };
    let r = p.poll().await;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            r#"{"error":"a poll is already pending for this session"}"#.to_string()
        )
    );
    (p, c)
}

#[tokio::test]
async fn polls_on_one_connection_are_answered_in_turn_with_an_emit_between() {
    let server = Server::start(config()).await;
    let p = Poller::handshake(server.addr).await;
    let mut c = Conn::open(server.addr).await;

    c.poll(&p.sid).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"[{"event":"user count","data":1}]"#);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(r.header("content-length").as_deref(), Some("33"));
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(r.header("connection"), None);

    // An emit on the same connection, then a poll that reads it.
    let body = json!({"event": "chat message", "data": "hi"}).to_string();
    let emit = format!(
        "POST /emit?sid={} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        p.sid,
        body.len()
    );
    c.send(emit.as_bytes()).await;
    assert_eq!(c.response().await.status, 204);
    c.poll(&p.sid).await;
    let expected = format!(
        r#"[{{"event":"chat message","data":{{"sid":"{}","message":"hi"}}}}]"#,
        &p.sid[..8]
    );
    assert_eq!(c.response().await.text(), expected);

    // A held poll on the same connection, answered by a connect.
    c.poll(&p.sid).await;
    let _other = Sse::connect(server.addr).await;
    assert_eq!(
        c.response().await.text(),
        r#"[{"event":"user count","data":2}]"#
    );

    // Asking to close gets the answer, then the close.
    let req = format!(
        "GET /poll?sid={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        p.sid
    );
    c.send(req.as_bytes()).await;
    drop(_other);
    let r = c.response().await;
    assert_eq!(r.text(), r#"[{"event":"user count","data":1}]"#);
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed().await, "the connection stayed open after close");
}

#[tokio::test]
async fn a_poll_pipelined_behind_a_held_one_is_answered_after_it() {
    let server = Server::start(config()).await;
    let p = Poller::handshake(server.addr).await;
    p.events().await;
    let mut c = Conn::open(server.addr).await;
    let one = format!("GET /poll?sid={} HTTP/1.1\r\nHost: x\r\n\r\n", p.sid);
    c.send(format!("{one}{one}").as_bytes()).await;
    let _a = Sse::connect(server.addr).await;
    assert_eq!(
        c.response().await.text(),
        r#"[{"event":"user count","data":2}]"#
    );
    let _b = Sse::connect(server.addr).await;
    assert_eq!(
        c.response().await.text(),
        r#"[{"event":"user count","data":3}]"#
    );
}

#[tokio::test]
async fn a_client_that_leaves_a_held_poll_gets_its_cursor_back_at_once() {
    let server = Server::start(config()).await;
    let (p, c) = held(server.addr).await;
    drop(c);
    // Not after the 20 s interval: as soon as the close is read.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut other = Conn::open(server.addr).await;
    loop {
        other.poll(&p.sid).await;
        if tokio::time::Instant::now() > deadline {
            panic!("the cursor stayed with the closed connection");
        }
        let r = timeout(Duration::from_millis(300), read_response(&mut other.r)).await;
        match r {
            // Held: this poll has the cursor. Let an event answer it.
            Err(_) => {
                let _s = Sse::connect(server.addr).await;
                let r = other.response().await;
                assert_eq!(r.text(), r#"[{"event":"user count","data":2}]"#);
                break;
            }
            Ok(r) => assert_eq!(r.status, 400, "{}", r.text()),
        }
    }
    server.wait_sessions(1, WAIT).await;
}

#[tokio::test]
async fn a_flood_behind_a_held_poll_closes_that_connection_only() {
    let server = Server::start(config()).await;
    let (p, mut c) = held(server.addr).await;
    let junk = vec![b'a'; server_max_header_bytes() + 1];
    // The server may close before reading it all.
    let _ = c.r.get_mut().write_all(&junk).await;
    assert!(c.closed().await, "a flood kept the connection open");
    // The session is whole: its next poll holds the cursor.
    let mut other = Conn::open(server.addr).await;
    other.poll(&p.sid).await;
    let _s = Sse::connect(server.addr).await;
    assert_eq!(
        other.response().await.text(),
        r#"[{"event":"user count","data":2}]"#
    );
}

/// `--max-header-bytes` as the test servers run with it.
fn server_max_header_bytes() -> usize {
    config().max_header_bytes
}

#[tokio::test]
async fn junk_pipelined_behind_a_held_poll_gets_a_json_error_after_the_answer() {
    let server = Server::start(config()).await;
    let (_p, mut c) = held(server.addr).await;
    c.send(b"\x00\x01garbage\r\n\r\n").await;
    let _s = Sse::connect(server.addr).await;
    let first = c.response().await;
    assert_eq!(first.text(), r#"[{"event":"user count","data":2}]"#);
    let second = c.response().await;
    assert_eq!(second.status, 400);
    assert_eq!(second.text(), r#"{"error":"malformed request"}"#);
    assert!(c.closed().await);
}

#[tokio::test]
async fn refused_polls_leave_the_connection_open_for_the_next_request() {
    let server = Server::start(config()).await;
    let mut c = Conn::open(server.addr).await;
    for sid in ["00000000-0000-4000-8000-000000000000", "not-a-sid"] {
        c.poll(sid).await;
        let r = c.response().await;
        assert_eq!(
            (r.status, r.text()),
            (400, r#"{"error":"unknown session"}"#.to_string()),
            "{sid}"
        );
    }
    // A second poll while one is held on another connection.
    let (p, mut holder) = held(server.addr).await;
    c.poll(&p.sid).await;
    let r = c.response().await;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            r#"{"error":"a poll is already pending for this session"}"#.to_string()
        )
    );
    let sse = Sse::connect(server.addr).await;
    assert_eq!(
        holder.response().await.text(),
        r#"[{"event":"user count","data":2}]"#
    );
    // Another transport's session.
    c.poll(&sse.sid).await;
    let r = c.response().await;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            r#"{"error":"session uses the sse transport, not polling"}"#.to_string()
        )
    );
    // And after all that, a held poll answered on the same connection.
    c.poll(&p.sid).await;
    let _s = Sse::connect(server.addr).await;
    assert_eq!(
        c.response().await.text(),
        r#"[{"event":"user count","data":3}]"#
    );
}

/// A head without its `date` and `x-ssio-cursor` lines, which change from
/// one answer to the next.
fn steady_head(r: &Resp) -> String {
    r.head
        .lines()
        .filter(|l| !l.starts_with("date: ") && !l.starts_with("x-ssio-cursor: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

// One thread, as the binary runs on one core: held polls owed only a new
// count are answered by the fan-out's sweeper, in the bytes their own task
// would write, and each connection then goes on to its next poll.
#[tokio::test]
async fn held_polls_take_a_new_count_from_the_sweeper_in_the_same_bytes() {
    let server = Server::start(config()).await;
    let addr = server.addr;
    let mut polls = Vec::new();
    for n in 1..=2u64 {
        let p = Poller::handshake(addr).await;
        let mut c = Conn::open(addr).await;
        c.poll(&p.sid).await;
        let first = c.response().await;
        assert_eq!(
            first.text(),
            format!(r#"[{{"event":"user count","data":{n}}}]"#)
        );
        polls.push((p, c, first));
    }
    // The first poller's first answer said 1; its next poll owes 2 and is
    // answered at once. Every poll held after this owes nothing.
    let (p, c, _) = &mut polls[0];
    c.poll(&p.sid).await;
    assert_eq!(
        c.response().await.text(),
        r#"[{"event":"user count","data":2}]"#
    );
    for (p, c, _) in polls.iter_mut() {
        c.poll(&p.sid).await;
    }
    wait_metric(addr, "ssio_polls_held", 2).await;
    let swept = metric(addr, "ssio_fanout_swept_total").await;
    let delivered = metric(addr, "ssio_deliveries_total").await;

    let third = Sse::connect(addr).await;
    for (_, c, first) in polls.iter_mut() {
        let r = c.response().await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), r#"[{"event":"user count","data":3}]"#);
        assert_eq!(steady_head(&r), steady_head(first));
        assert_eq!(r.header("content-length").as_deref(), Some("33"));
    }
    // Both answers were the sweeper's, each a delivery counted once.
    wait_metric(addr, "ssio_fanout_swept_total", swept + 2).await;
    wait_metric(addr, "ssio_deliveries_total", delivered + 3).await;

    // Each connection carries its next poll, held and answered again.
    for (p, c, _) in polls.iter_mut() {
        c.poll(&p.sid).await;
    }
    wait_metric(addr, "ssio_polls_held", 2).await;
    drop(third);
    for (_, c, _) in polls.iter_mut() {
        assert_eq!(
            c.response().await.text(),
            r#"[{"event":"user count","data":2}]"#
        );
    }
}
