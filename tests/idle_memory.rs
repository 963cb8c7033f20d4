//! What an idle stream costs the server, by the way it came: a stream a
//! browser opens on the connection that already served its page, its own
//! or `ssio.js`'s shared one, must cost what a stream opened as a
//! connection's first request costs. A held long-poll, what a polling
//! client is nearly all its life, must cost little more.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::procfs;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Streams per measurement: enough that a few KiB each stands well above
/// the allocator's noise.
const STREAMS: usize = 2_000;

/// The page's `index.html`, as `GET /` serves it.
const PAGE: &[u8] = include_bytes!("../public/index.html");

/// Opens one idle stream at `target` on a new connection, after `GET /` on
/// the same connection if `after_page`; returns the open connection.
async fn open(addr: SocketAddr, after_page: bool, target: &str) -> TcpStream {
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    if after_page {
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let res = read_response(&mut r).await;
        assert_eq!((res.status, res.body.as_slice()), (200, PAGE));
    }
    r.get_mut()
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(r.read(&mut b).await.unwrap(), 1, "the stream closed");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
    r.into_inner()
}

/// Waits until `read` (a figure the server reports) is `n`.
async fn wait_for<F, Fut>(what: &str, n: u64, read: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = read().await;
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "{now} {what}, never {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/stats` counts `n` SSE sessions.
async fn wait_sse(addr: SocketAddr, n: u64) {
    let sse = || async move { get(addr, "/stats").await.json()["sse"].as_u64().unwrap() };
    wait_for("SSE sessions", n, sse).await;
}

/// Warms up the allocator and the runtime with 50 streams at `target`,
/// opened after the page and closed, then reads the baseline RSS in KiB.
async fn warm_baseline(p: &support::process::Spawned, target: &str) -> u64 {
    let warm: Vec<TcpStream> =
        futures_util::future::join_all((0..50).map(|_| open(p.addr, true, target))).await;
    drop(warm);
    wait_sse(p.addr, 0).await;
    procfs::rss_kib(p.pid).expect("server gone")
}

/// KiB of server RSS per idle stream: `STREAMS` streams, each opened as
/// `open` opens it, on a server of its own.
async fn per_stream(after_page: bool, target: &str) -> f64 {
    let p = quiet_server().await;
    let base = warm_baseline(&p, target).await;
    let started = Instant::now();
    let mut streams = Vec::with_capacity(STREAMS);
    while streams.len() < STREAMS {
        let batch = (STREAMS - streams.len()).min(100);
        let opening = (0..batch).map(|_| open(p.addr, after_page, target));
        streams.extend(futures_util::future::join_all(opening).await);
    }
    wait_sse(p.addr, STREAMS as u64).await;
    let rss = procfs::rss_kib(p.pid).expect("server gone");
    drop(streams);
    let per = (rss.saturating_sub(base)) as f64 / STREAMS as f64;
    eprintln!(
        "{STREAMS} idle streams at {target} {} in {:?}: RSS {base} -> {rss} KiB, {per:.2} KiB each",
        if after_page {
            "after GET / on the same connection"
        } else {
            "as the first request"
        },
        started.elapsed()
    );
    per
}

// A stream opened after the page, on its connection, is served raw too:
// it costs what a first-request stream costs (hyper would keep its two
// 8 KiB buffers for the stream's life, several times that).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_after_the_page_costs_what_a_first_request_stream_costs() {
    let first = per_stream(false, "/events").await;
    let after_page = per_stream(true, "/events").await;
    assert!(
        after_page <= first * 1.5 + 1.0,
        "{after_page:.2} KiB per stream after the page, {first:.2} as a first request"
    );
    // The shared stream `ssio.js` opens carries one session here, as a
    // browser with one tab does.
    let shared = per_stream(true, "/events?mux=1").await;
    assert!(
        shared <= first * 1.5 + 1.0,
        "{shared:.2} KiB per shared stream after the page, {first:.2} per stream"
    );
}

/// Spawns a server with the heartbeats and per-address limits out of the
/// way of a memory measurement.
async fn quiet_server() -> support::process::Spawned {
    spawn_ssio(
        &[],
        0,
        &[
            "--ping-interval",
            "60000",
            "--ping-timeout",
            "60000",
            "--max-sessions-per-ip",
            "0",
            "--max-new-sessions-per-ip",
            "0",
        ],
    )
    .await
}

/// A polling client's handshake on a new connection: the connection, kept
/// alive for its polls, and the sid.
async fn poller(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    r.get_mut()
        .write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let res = read_response(&mut r).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let sid = res.json()["sid"].as_str().unwrap().to_string();
    (r, sid)
}

/// Sends one poll on `r`'s connection.
async fn send_poll(r: &mut BufReader<TcpStream>, sid: &str) {
    r.get_mut()
        .write_all(format!("GET /poll?sid={sid} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
}

/// The `ssio_polls_held` gauge.
async fn polls_held(addr: SocketAddr) -> u64 {
    let text = get(addr, "/metrics").await.text();
    let line = text
        .lines()
        .find(|l| l.starts_with("ssio_polls_held "))
        .unwrap_or_else(|| panic!("no ssio_polls_held in /metrics:\n{text}"));
    line["ssio_polls_held ".len()..].parse().unwrap()
}

/// Waits until `ssio_polls_held` is `n`.
async fn wait_held(addr: SocketAddr, n: u64) {
    wait_for("polls held", n, || polls_held(addr)).await;
}

/// KiB of server RSS per held poll: `STREAMS` polling clients, each with
/// its handshake and then its polls on one kept-alive connection, as
/// `ssio.js` polls where no stream gets through.
async fn per_held_poll() -> f64 {
    let p = quiet_server().await;
    let base = warm_baseline(&p, "/events").await;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(STREAMS);
    while clients.len() < STREAMS {
        let batch = (STREAMS - clients.len()).min(100);
        clients.extend(futures_util::future::join_all((0..batch).map(|_| poller(p.addr))).await);
    }
    // Every session is in, so the count holds still: each first poll is
    // answered at once with it, and each second one is held.
    futures_util::future::join_all(clients.iter_mut().map(|(r, sid)| async move {
        send_poll(r, sid).await;
        let res = read_response(r).await;
        assert_eq!(res.status, 200, "{}", res.text());
        let batch = res.json();
        let counts: Vec<_> = batch
            .as_array()
            .expect("a poll answers an array")
            .iter()
            .filter(|e| e["event"] == "user count")
            .map(|e| e["data"].clone())
            .collect();
        assert_eq!(counts, [serde_json::json!(STREAMS)], "{batch}");
        send_poll(r, sid).await;
    }))
    .await;
    wait_held(p.addr, STREAMS as u64).await;
    let rss = procfs::rss_kib(p.pid).expect("server gone");
    // A client that leaves ends its held poll at once.
    drop(clients);
    wait_held(p.addr, 0).await;
    let per = (rss.saturating_sub(base)) as f64 / STREAMS as f64;
    eprintln!(
        "{STREAMS} held polls in {:?}: RSS {base} -> {rss} KiB, {per:.2} KiB each",
        started.elapsed()
    );
    per
}

// A held poll waits in its connection's task, which holds only the poll in
// place: it costs little more than a stream, whose task holds its socket,
// cursor and keep-alive. (Boxed beside a task that kept room for the head
// it had read, it cost half as much again as a stream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_poll_costs_little_more_than_a_stream() {
    let stream = per_stream(false, "/events").await;
    let held = per_held_poll().await;
    assert!(
        held <= stream * 1.25,
        "{held:.2} KiB per held poll, {stream:.2} per stream"
    );
}
