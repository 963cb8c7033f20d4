//! The page's own requests on a kept-alive connection, answered on the raw
//! path, so that the `EventSource` a browser then opens on the same
//! connection is a raw stream too.
//!
//! The raw path claims to write the bytes hyper writes. These tests hold it
//! to that against hyper itself: the same `Io`, mounted in a bare hyper
//! server through [`ssio::Io::handle`], is sent the same bytes, and the
//! answers must match byte for byte (every `date` value aside), however the
//! requests are pipelined or split.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ssio::{Config, Io};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{timeout, Instant};

/// No keep-alive within a test, so every byte on a stream is an event.
fn quiet_config() -> Config {
    Config {
        ping_interval_ms: 60_000,
        ping_timeout_ms: 60_000,
        ..fast_config()
    }
}

/// `io` served by plain hyper, as an application that mounts ssio serves it:
/// the answers the raw path must match.
async fn hyper_oracle(io: Io) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let io = io.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let io = io.clone();
                    async move { Ok::<_, Infallible>(io.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Sends `parts` one write each on a new connection, letting the server
/// run between them, and reads until the server closes.
async fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for part in parts {
        // A server that closed early has answered all it will: the
        // comparison shows what is missing.
        if s.write_all(part).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut out = Vec::new();
    let read = timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection");
    if let Err(e) = read {
        out.extend_from_slice(format!("<{e}>").as_bytes());
    }
    out
}

/// `bytes` as text with every `date` value (29 bytes) replaced by `D`.
fn dateless(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    let mut from = 0;
    while let Some(at) = text[from..].find("\r\ndate: ") {
        let start = from + at + "\r\ndate: ".len();
        text.replace_range(start..start + 29, "D");
        from = start;
    }
    text
}

/// The page a browser loads before its stream, one request at a time on
/// `r`, each answered whole.
async fn load_page(r: &mut BufReader<TcpStream>, addr: SocketAddr) {
    for (path, len) in [
        ("/", include_bytes!("../../public/index.html").len()),
        (
            "/public/style.css",
            include_bytes!("../../public/style.css").len(),
        ),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
        r.get_mut().write_all(req.as_bytes()).await.unwrap();
        let res = timeout(WAIT, read_response(r))
            .await
            .expect("no answer in time");
        assert_eq!((path, res.status, res.body.len()), (path, 200, len));
    }
}

// The stream a page opens after loading is served raw, as a first request
// is: the fan-out's sweeper writes it a new count (it writes only raw
// streams), in the exact bytes.
#[tokio::test]
async fn a_stream_opened_after_the_page_on_the_same_connection_is_served_raw() {
    let server = Server::start(quiet_config()).await;
    let addr = server.addr;
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    load_page(&mut r, addr).await;
    assert!(r.buffer().is_empty());
    let mut page = Sse::open_on(r.into_inner(), addr, "/events", &[]).await;
    assert!(page.head.contains("\r\ntransfer-encoding: chunked\r\n"));
    assert_eq!(page.next_event().await.0, "connect");
    page.wait_count(1, WAIT).await;
    let swept = metric(addr, "ssio_fanout_swept_total").await;
    let mut other = Sse::connect(addr).await;
    other.wait_count(2, WAIT).await;
    let chunk = page
        .next_chunk_within(WAIT)
        .await
        .expect("count 2 never came");
    assert_eq!(chunk, b"event: user count\ndata: 2\n\n");
    // The other stream wrote its own count; the page's was swept.
    wait_metric(addr, "ssio_fanout_swept_total", swept + 1).await;
    assert_eq!(server.io.stats().sse, 2);
}

/// Requests the raw path answers, and some it hands to hyper, each ending
/// its sequence with `Connection: close` so that the answer is complete
/// when the server closes.
const SEQUENCES: &[&[&str]] = &[
    &[
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "HEAD /public/style.css HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /stats HTTP/1.1\r\nHost: a\r\nOrigin: http://x.test\r\n\r\n",
        "GET /nowhere?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        "HEAD /stats HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        "GET /public/ssio.min.js HTTP/1.1\r\nAccept-Encoding: gzip, br\r\n\r\n",
        "HEAD / HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
        "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ],
    // HTTP/1.0 is hyper's, from the first request on.
    &["GET / HTTP/1.0\r\n\r\n"],
    &[
        "GET /stats HTTP/1.1\r\n\r\n",
        "GET /stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    ],
    // A body on a GET, or a `Connection` token the raw path does not know:
    // hyper's too, after a raw answer.
    &[
        "GET /healthz HTTP/1.1\r\n\r\n",
        "GET /stats HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        "GET /healthz HTTP/1.1\r\nConnection: close, te\r\nTE: trailers\r\n\r\n",
    ],
    // A length and chunks at once: the chunks frame the body, and the
    // connection closes after it, so nothing is smuggled in the length.
    &[
        "GET / HTTP/1.1\r\n\r\n",
        "GET /stats HTTP/1.1\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET /healthz HTTP/1.1\r\n\r\n",
    ],
];

// Every sequence pipelined in one write, and one request per write: the
// raw path answers as hyper does, byte for byte.
#[tokio::test]
async fn answers_match_hyper_byte_for_byte_pipelined_or_not() {
    let server = Server::start(quiet_config()).await;
    let oracle = hyper_oracle(server.io.clone()).await;
    for sequence in SEQUENCES {
        let whole = sequence.concat();
        let want = dateless(&exchange(oracle, &[whole.as_bytes()]).await);
        assert!(want.contains(" 200 OK\r\n"), "{want}");
        let got = dateless(&exchange(server.addr, &[whole.as_bytes()]).await);
        assert_eq!(got, want, "pipelined: {sequence:?}");
        let parts: Vec<&[u8]> = sequence.iter().map(|r| r.as_bytes()).collect();
        let got = dateless(&exchange(server.addr, &parts).await);
        assert_eq!(got, want, "one per write: {sequence:?}");
    }
}

/// `bytes` cut at up to 23 random places.
fn random_split<'a>(rng: &mut fastrand::Rng, bytes: &'a [u8]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = (0..rng.usize(1..24))
        .map(|_| rng.usize(1..bytes.len()))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parts = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parts.push(&bytes[from..cut]);
        from = cut;
    }
    parts
}

// Split anywhere, in any number of pieces, a sequence gets the same
// answers.
#[tokio::test]
async fn random_splits_of_a_request_sequence_get_the_same_answers() {
    let server = Server::start(quiet_config()).await;
    let oracle = hyper_oracle(server.io.clone()).await;
    let whole = SEQUENCES[0].concat();
    let bytes = whole.as_bytes();
    let want = dateless(&exchange(oracle, &[bytes]).await);
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..40 {
        let parts = random_split(&mut rng, bytes);
        let got = dateless(&exchange(server.addr, &parts).await);
        assert_eq!(got, want, "round {round}, split {parts:?}");
    }
}

/// Requests a page may send on one connection, in any order: each keeps
/// the connection open, and none changes what another answers. (A body a
/// route leaves unread makes hyper's own answer depend on timing; those
/// are `post_sequences`'.)
const POOL: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: gzip\r\n\r\n",
    "GET /public/style.css HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
    "HEAD /public/ssio.min.js HTTP/1.1\r\n\r\n",
    "GET /public/ssio.min.js HTTP/1.1\r\nAccept-Encoding: gzip\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nOrigin: http://x.test\r\n\r\n",
    "GET /readyz HTTP/1.1\r\n\r\n",
    "GET /nowhere HTTP/1.1\r\n\r\n",
    "DELETE /healthz HTTP/1.1\r\n\r\n",
    "GET /%zz HTTP/1.1\r\n\r\n",
    "POST /close?sid=nope HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "OPTIONS /emit HTTP/1.1\r\nOrigin: http://x.test\r\nAccess-Control-Request-Method: POST\r\n\r\n",
];

/// The request that ends every random sequence, so the answer is whole
/// once the server closes.
const LAST: &str = "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";

// Random sequences from the pool, pipelined in one write and then split
// at random places: the raw path answers every one as hyper does, byte
// for byte, in order.
#[tokio::test]
async fn random_pipelined_sequences_get_hyper_s_answers() {
    let server = Server::start(quiet_config()).await;
    let oracle = hyper_oracle(server.io.clone()).await;
    let mut rng = fastrand::Rng::with_seed(23);
    for round in 0..60 {
        let len = rng.usize(1..12);
        let mut sequence: Vec<&str> = (0..len).map(|_| POOL[rng.usize(..POOL.len())]).collect();
        sequence.push(LAST);
        let whole = sequence.concat();
        let bytes = whole.as_bytes();
        let want = dateless(&exchange(oracle, &[bytes]).await);
        assert_eq!(
            want.matches("HTTP/1.1 ").count(),
            sequence.len(),
            "round {round}: hyper answered {want}"
        );
        let got = dateless(&exchange(server.addr, &[bytes]).await);
        assert_eq!(got, want, "round {round}, pipelined: {sequence:?}");
        let parts = random_split(&mut rng, bytes);
        let got = dateless(&exchange(server.addr, &parts).await);
        if got != want {
            let same = got
                .bytes()
                .zip(want.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            let parts: Vec<String> = parts
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            panic!(
                "round {round}, split {parts:?}: after {same} equal bytes, got {:?}, want {:?}",
                &got[same..],
                &want[same..]
            );
        }
    }
}

/// Reads one response from `r` and then expects the server to close.
async fn last_response(r: &mut BufReader<TcpStream>) -> Resp {
    let res = timeout(WAIT, read_response(r))
        .await
        .expect("no answer in time");
    let mut more = Vec::new();
    timeout(WAIT, r.read_to_end(&mut more))
        .await
        .expect("the connection stayed open")
        .unwrap();
    assert!(more.is_empty(), "{:?}", String::from_utf8_lossy(&more));
    res
}

// After raw answers, an oversized head, an unreadable length or a bad
// chunk is refused with the JSON error, and the connection closes.
#[tokio::test]
async fn a_bad_head_after_raw_answers_gets_the_json_error_and_a_close() {
    let server = Server::start(Config {
        max_header_bytes: 1024,
        ..quiet_config()
    })
    .await;
    let addr = server.addr;
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(1100));
    for (bad, status, error) in [
        (big.as_str(), 431, "request head too large"),
        (
            "POST /emit HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
            "malformed request",
        ),
        (
            "GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            "malformed request",
        ),
        (
            "POST /handshake HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            400,
            "could not read request body",
        ),
    ] {
        let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
        load_page(&mut r, addr).await;
        r.get_mut().write_all(bad.as_bytes()).await.unwrap();
        let res = last_response(&mut r).await;
        assert_eq!(
            (res.status, res.text()),
            (status, format!(r#"{{"error":"{error}"}}"#)),
            "{bad}"
        );
        assert_eq!(
            res.header("content-type").as_deref(),
            Some("application/json")
        );
    }
}

// A kept-alive connection idle after a raw answer is closed once the
// header timeout passes, as hyper closes one.
#[tokio::test]
async fn an_idle_connection_after_a_raw_answer_closes_at_the_header_timeout() {
    let server = Server::start(Config {
        header_timeout_ms: 300,
        ..quiet_config()
    })
    .await;
    let mut r = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    load_page(&mut r, server.addr).await;
    let idle = Instant::now();
    let mut more = Vec::new();
    timeout(WAIT, r.read_to_end(&mut more))
        .await
        .expect("the idle connection stayed open")
        .unwrap();
    assert!(more.is_empty());
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
}

/// A `POST` of `body` to `target`, with `extra` header lines.
fn post_req(target: &str, extra: &str, body: &str) -> String {
    format!(
        "POST {target} HTTP/1.1\r\nHost: a\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A config whose emit limits no comparison reaches, and whose body limit
/// a test can pass.
fn post_config() -> Config {
    Config {
        max_payload: 64,
        max_emit_rate: 10_000,
        max_emit_burst: 10_000,
        ..quiet_config()
    }
}

/// The sid no session has.
const NOBODY: &str = "00000000-0000-4000-8000-000000000000";

/// A page's `POST`s, and some that hyper keeps, each sequence ending with
/// `Connection: close`; `sid` is a live polling session's.
fn post_sequences(sid: &str) -> Vec<Vec<String>> {
    let emit = format!("/emit?sid={sid}");
    let close = "Connection: close\r\n";
    vec![
        vec![
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            post_req(&emit, "Content-Type: application/json\r\n", r#"{"event":"chat message","data":"hi"}"#),
            post_req(&emit, "Origin: http://x.test\r\n", r#"{"event":"nobody","data":1,"ack":true}"#),
            post_req(&emit, "", "{"),
            post_req(&emit, "", ""),
            post_req("/handshake", "", "nope"),
            format!("GET /healthz HTTP/1.1\r\n{close}\r\n"),
        ],
        // Answered without reading the body: kept alive when the body came
        // with the head, as hyper drains what it has.
        vec![
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            post_req(&format!("/emit?sid={NOBODY}"), "", r#"{"event":"x"}"#),
            post_req(&format!("/close?sid={NOBODY}"), "", "{}"),
            post_req("/stats", "", "hi"),
            format!("POST /close?sid={NOBODY} HTTP/1.1\r\n\r\n"),
            format!("GET /healthz HTTP/1.1\r\n{close}\r\n"),
        ],
        // Over the limit: hyper's 413, after a raw answer.
        vec![
            "GET / HTTP/1.1\r\n\r\n".into(),
            post_req(&emit, "", &format!(r#"{{"event":"x","data":"{}"}}"#, "a".repeat(60))),
            format!("GET /healthz HTTP/1.1\r\n{close}\r\n"),
        ],
        // A length and chunks: the chunks frame the body, and the
        // connection closes after it.
        vec![
            "GET / HTTP/1.1\r\n\r\n".into(),
            format!("POST {emit} HTTP/1.1\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "GET /healthz HTTP/1.1\r\n\r\n".into(),
        ],
        // An expectation is hyper's to answer.
        vec![
            "GET / HTTP/1.1\r\n\r\n".into(),
            post_req(&emit, "Expect: 100-continue\r\n", r#"{"event":"x"}"#),
            format!("GET /healthz HTTP/1.1\r\n{close}\r\n"),
        ],
        // Closing with the POST itself.
        vec![
            "GET / HTTP/1.1\r\n\r\n".into(),
            post_req(&emit, close, r#"{"event":"x"}"#),
        ],
    ]
}

// A page's emits, handshakes and closes, pipelined or one per write, get
// the bytes hyper writes for them; bodies the router reads, split
// anywhere, too. (A body the router does not read, split from its head,
// closes the connection on either path, as the rest may come later.)
#[tokio::test]
async fn posts_are_answered_as_hyper_answers_them_however_they_arrive() {
    let server = Server::start(post_config()).await;
    let oracle = hyper_oracle(server.io.clone()).await;
    let poller = Poller::handshake(server.addr).await;
    let sequences = post_sequences(&poller.sid);
    for sequence in &sequences {
        let whole = sequence.concat();
        let want = dateless(&exchange(oracle, &[whole.as_bytes()]).await);
        assert!(want.contains(" 200 OK\r\n"), "{want}");
        let got = dateless(&exchange(server.addr, &[whole.as_bytes()]).await);
        assert_eq!(got, want, "pipelined: {sequence:?}");
        let parts: Vec<&[u8]> = sequence.iter().map(|r| r.as_bytes()).collect();
        let got = dateless(&exchange(server.addr, &parts).await);
        assert_eq!(got, want, "one per write: {sequence:?}");
    }
    let whole = sequences[0].concat();
    let bytes = whole.as_bytes();
    let want = dateless(&exchange(oracle, &[bytes]).await);
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..20 {
        let parts = random_split(&mut rng, bytes);
        let got = dateless(&exchange(server.addr, &parts).await);
        assert_eq!(got, want, "round {round}, split {parts:?}");
    }
}

// A body that stops short is answered at the body timeout with hyper's
// bytes, and the connection closes: what is left of it cannot be told
// from a next request.
#[tokio::test]
async fn a_body_slower_than_the_body_timeout_is_answered_as_hyper_answers_it() {
    let server = Server::start(Config {
        body_timeout_ms: 300,
        ..post_config()
    })
    .await;
    let oracle = hyper_oracle(server.io.clone()).await;
    let poller = Poller::handshake(server.addr).await;
    let head = format!(
        "POST /emit?sid={} HTTP/1.1\r\nContent-Length: 30\r\n\r\n{{\"ev",
        poller.sid
    );
    let parts: [&[u8]; 2] = [b"GET /healthz HTTP/1.1\r\n\r\n", head.as_bytes()];
    let want = dateless(&exchange(oracle, &parts).await);
    assert!(want.contains("408 Request Timeout"), "{want}");
    let got = dateless(&exchange(server.addr, &parts).await);
    assert_eq!(got, want);
}

// The page's requests, its emit among them, then its stream, on one
// socket: the stream is raw, and the emit reaches another client once.
#[tokio::test]
async fn a_page_that_posts_before_its_stream_keeps_the_stream_raw() {
    let server = Server::start(quiet_config()).await;
    let addr = server.addr;
    let mut other = Sse::connect(addr).await;
    other.wait_count(1, WAIT).await;
    let poller = Poller::handshake(addr).await;
    other.wait_count(2, WAIT).await;
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    load_page(&mut r, addr).await;
    for (req, status) in [
        (post_req("/handshake", "", "{}"), 200),
        (
            post_req(
                &format!("/emit?sid={}", poller.sid),
                "Content-Type: application/json\r\n",
                r#"{"event":"chat message","data":"hi"}"#,
            ),
            204,
        ),
    ] {
        r.get_mut().write_all(req.as_bytes()).await.unwrap();
        let res = timeout(WAIT, read_response(&mut r))
            .await
            .expect("no answer in time");
        assert_eq!(res.status, status, "{req}: {}", res.text());
    }
    assert!(r.buffer().is_empty());
    let (event, data) = other.next_event_within(WAIT).await;
    assert_eq!(event, "chat message");
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["message"], "hi");
    let mut page = Sse::open_on(r.into_inner(), addr, "/events", &[]).await;
    assert!(page.head.contains("\r\ntransfer-encoding: chunked\r\n"));
    assert_eq!(page.next_event().await.0, "connect");
    page.wait_count(3, WAIT).await;
    other.wait_count(3, WAIT).await;
    let swept = metric(addr, "ssio_fanout_swept_total").await;
    let mut third = Sse::connect(addr).await;
    third.wait_count(4, WAIT).await;
    let chunk = page
        .next_chunk_within(WAIT)
        .await
        .expect("count 4 never came");
    assert_eq!(chunk, b"event: user count\ndata: 4\n\n");
    // Only raw streams are swept: the other's and the page's.
    wait_metric(addr, "ssio_fanout_swept_total", swept + 2).await;
    // A later emit comes next after the counts: the first came once.
    assert_eq!(poller.emit("chat message", "bye".into()).await.status, 204);
    loop {
        let (event, data) = other.next_event_within(WAIT).await;
        if event == "chat message" {
            let data: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data["message"], "bye");
            break;
        }
        assert_eq!(event, "user count");
    }
}

/// Every response on `r` until the server closes, dateless.
async fn all_responses(r: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let at_end = timeout(WAIT, r.fill_buf())
            .await
            .expect("the connection stayed open")
            .unwrap()
            .is_empty();
        if at_end {
            return out;
        }
        let res = timeout(WAIT, read_response(r))
            .await
            .expect("no answer in time");
        let mut bytes = res.head.into_bytes();
        bytes.extend_from_slice(&res.body);
        out.push(dateless(&bytes));
    }
}

/// A flood of `n` emits as `sid`, pipelined after a page's first request
/// on one connection to `addr`, then an unknown session's close and emit:
/// every answer, and how long the flood took to answer.
async fn flood_emits(addr: SocketAddr, sid: &str, n: usize) -> (Vec<String>, Duration) {
    let mut all = String::from("GET / HTTP/1.1\r\n\r\n");
    for i in 0..n {
        let body = format!(r#"{{"event":"chat message","data":"flood {i}"}}"#);
        all.push_str(&post_req(&format!("/emit?sid={sid}"), "", &body));
    }
    all.push_str(&post_req(&format!("/close?sid={NOBODY}"), "", ""));
    all.push_str(&post_req(
        &format!("/emit?sid={NOBODY}"),
        "Connection: close\r\n",
        r#"{"event":"x"}"#,
    ));
    let started = Instant::now();
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    r.get_mut().write_all(all.as_bytes()).await.unwrap();
    let answers = all_responses(&mut r).await;
    (answers, started.elapsed())
}

// A flood of pipelined emits on one kept-alive connection meets the same
// rate limit, with the same JSON refusals, as on hyper's path; a session
// that is not there is refused as there; and another session's emits and
// stream go on untouched.
#[tokio::test]
async fn a_flood_of_pipelined_posts_is_limited_as_on_hyper_and_harms_no_other_session() {
    let server = Server::start(Config {
        max_emit_rate: 1,
        max_emit_burst: 5,
        ..quiet_config()
    })
    .await;
    let addr = server.addr;
    let oracle = hyper_oracle(server.io.clone()).await;
    let mut watcher = Sse::connect(addr).await;
    watcher.wait_count(1, WAIT).await;
    let (flooder, victim) = (Poller::handshake(addr).await, Poller::handshake(addr).await);
    let other_flooder = Poller::handshake(addr).await;
    watcher.wait_count(4, WAIT).await;
    let n = 200;
    let (raw, took) = flood_emits(addr, &flooder.sid, n).await;
    let (hyper, _) = flood_emits(oracle, &other_flooder.sid, n).await;
    for answers in [&raw, &hyper] {
        assert_eq!(answers.len(), n + 3);
        assert!(answers[0].starts_with("HTTP/1.1 200 OK\r\n"));
        let tail = &answers[n + 1..];
        assert!(
            tail[0].starts_with("HTTP/1.1 204 No Content\r\n"),
            "{tail:?}"
        );
        assert!(
            tail[1].starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{tail:?}"
        );
        assert!(
            tail[1].ends_with(r#"{"error":"unknown session"}"#),
            "{tail:?}"
        );
        assert!(tail[1].contains("\r\nconnection: close\r\n"), "{tail:?}");
    }
    // The tail's answers, byte for byte.
    assert_eq!(raw[n + 1..], hyper[n + 1..]);
    let accepted = raw[1..=n]
        .iter()
        .take_while(|a| a.starts_with("HTTP/1.1 204 No Content\r\n"))
        .count();
    let refill = took.as_secs() as usize + 1;
    assert!(
        (5..=5 + refill).contains(&accepted),
        "{accepted} accepted in {took:?}"
    );
    let refusal = raw[1..=n]
        .iter()
        .find(|a| !a.starts_with("HTTP/1.1 204"))
        .expect("the flood was never refused");
    let hyper_refusal = hyper[1..=n]
        .iter()
        .find(|a| !a.starts_with("HTTP/1.1 204"))
        .expect("hyper never refused the flood");
    assert_eq!(refusal, hyper_refusal);
    assert!(
        refusal.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{refusal}"
    );
    assert!(refusal.contains("\r\nretry-after: 1\r\n"), "{refusal}");
    assert!(
        refusal.ends_with(r#"{"error":"too many events, slow down"}"#),
        "{refusal}"
    );
    for a in &raw[1..=n] {
        assert!(a.starts_with("HTTP/1.1 204") || a == refusal, "{a}");
    }
    let accepted_total = accepted
        + raw[1..=n]
            .iter()
            .skip(accepted)
            .filter(|a| a.starts_with("HTTP/1.1 204"))
            .count();
    // The victim emits as before, and the watcher sees every accepted
    // flood message once, then the victim's.
    assert_eq!(victim.emit("chat message", "mine".into()).await.status, 204);
    let mut flood_seen = 0;
    loop {
        let (event, data) = watcher.next_event_within(WAIT).await;
        if event != "chat message" {
            continue;
        }
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        if data["message"] == "mine" {
            break;
        }
        flood_seen += 1;
    }
    let hyper_accepted = hyper[1..=n]
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 204"))
        .count();
    assert_eq!(flood_seen, accepted_total + hyper_accepted);
    assert_eq!(server.io.stats().sessions, 4);
}

// An acknowledgement answered later goes out as hyper sends it: the head
// at once, the answer in chunks, and the next request after it.
#[tokio::test]
async fn late_acknowledgements_are_chunked_as_hyper_chunks_them() {
    let server = Server::start_with(
        "127.0.0.1:0".parse().unwrap(),
        Config {
            ack_timeout_ms: 300,
            ..post_config()
        },
        |io| drop(features::install(io)),
    )
    .await;
    let oracle = hyper_oracle(server.io.clone()).await;
    let poller = Poller::handshake(server.addr).await;
    let emit = format!("/emit?sid={}", poller.sid);
    let sequence = [
        "GET / HTTP/1.1\r\n\r\n".to_string(),
        post_req(&emit, "", r#"{"event":"echo","data":1,"ack":true}"#),
        post_req(&emit, "", r#"{"event":"later","data":"soon","ack":true}"#),
        post_req(&emit, "", r#"{"event":"never","ack":true}"#),
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
    ];
    let whole = sequence.concat();
    let want = dateless(&exchange(oracle, &[whole.as_bytes()]).await);
    assert!(
        want.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{want}"
    );
    assert!(want.contains("acknowledgement timed out"), "{want}");
    let got = dateless(&exchange(server.addr, &[whole.as_bytes()]).await);
    assert_eq!(got, want, "pipelined");
    let parts: Vec<&[u8]> = sequence.iter().map(|r| r.as_bytes()).collect();
    let got = dateless(&exchange(server.addr, &parts).await);
    assert_eq!(got, want, "one per write");
}

/// `text` with every UUID (a sid, a stream's id) replaced by `U`.
fn uuidless(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if rest.len() >= 36 && uuid::Uuid::try_parse(&rest[..36]).is_ok() {
            out.push('U');
            rest = &rest[36..];
            continue;
        }
        let c = rest.chars().next().unwrap();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Opens `GET target` on `s` (after whatever it served) and reads the
/// response head and its first chunk: the stream's opening bytes, with
/// every date and UUID masked, and the bytes read after them.
async fn stream_opening(mut s: TcpStream, target: &str) -> (String, Vec<u8>, TcpStream) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\nOrigin: http://x.test\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    // The head, then one chunk: size line, data, CRLF.
    let end = loop {
        if let Some(h) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = &got[h + 4..];
            if let Some(l) = body.windows(2).position(|w| w == b"\r\n") {
                let size = std::str::from_utf8(&body[..l]).unwrap();
                let end = h + 4 + l + 2 + usize::from_str_radix(size, 16).unwrap() + 2;
                if got.len() >= end {
                    break end;
                }
            }
        }
        let mut buf = [0u8; 4096];
        let n = timeout(deadline - Instant::now(), s.read(&mut buf))
            .await
            .expect("the stream's opening never came whole")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let rest = got.split_off(end);
    (uuidless(&dateless(&got)), rest, s)
}

/// A shared stream's event as its chunk carries it, framed as HTTP/1.1
/// chunks are.
fn mux_chunk(json: &str) -> Vec<u8> {
    let frame = mux_frame(json);
    let mut chunk = format!("{:X}\r\n", frame.len()).into_bytes();
    chunk.extend_from_slice(&frame);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// A shared stream's event, as its chunk's data.
fn mux_frame(json: &str) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

/// Reads exactly `want`'s length, from `rest` (bytes already read) and
/// then off `s`, and compares.
async fn expect_bytes(s: &mut TcpStream, rest: &mut Vec<u8>, want: &[u8]) {
    let had = rest.len().min(want.len());
    let mut got: Vec<u8> = rest.drain(..had).collect();
    got.resize(want.len(), 0);
    timeout(WAIT, s.read_exact(&mut got[had..]))
        .await
        .unwrap_or_else(|_| panic!("{:?} never came", String::from_utf8_lossy(want)))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

// `ssio.js` opens a shared stream (`/events?mux=1`) after the page on the
// same connection: it is served raw, opening with the bytes hyper writes
// for it, and while it carries only its own session the sweeper writes
// its counts, in the exact bytes, and the broadcast is timed once written.
#[tokio::test]
async fn a_shared_stream_after_the_page_is_served_raw_and_its_counts_swept() {
    let server = Server::start(quiet_config()).await;
    let addr = server.addr;
    let oracle = hyper_oracle(server.io.clone()).await;
    let (want, mut rest, mut hyper_stream) =
        stream_opening(TcpStream::connect(oracle).await.unwrap(), "/events?mux=1").await;
    assert!(want.starts_with("HTTP/1.1 200 OK\r\n"), "{want}");
    assert!(want.contains("\"event\":\"connect\""), "{want}");
    let count = |n: u32| mux_chunk(&format!(r#"{{"k":0,"event":"user count","data":{n}}}"#));
    expect_bytes(&mut hyper_stream, &mut rest, &count(1)).await;
    drop(hyper_stream);
    let mut r = BufReader::new(TcpStream::connect(addr).await.unwrap());
    load_page(&mut r, addr).await;
    let (got, mut rest, mut page) = stream_opening(r.into_inner(), "/events?mux=1").await;
    assert_eq!(got, want);
    // The hyper stream's session may not have ended yet: its count of 2,
    // then 1.
    let mut first = vec![0u8; count(1).len()];
    expect_len(&mut page, &mut rest, &mut first).await;
    if first != count(1) {
        assert_eq!(
            String::from_utf8_lossy(&first),
            String::from_utf8_lossy(&count(2))
        );
        expect_bytes(&mut page, &mut rest, &count(1)).await;
    }
    let swept = metric(addr, "ssio_fanout_swept_total").await;
    let timed = metric(addr, "ssio_fanout_seconds_count").await;
    let delivered = metric(addr, "ssio_deliveries_total").await;
    let mut other = Sse::connect(addr).await;
    other.wait_count(2, WAIT).await;
    expect_bytes(&mut page, &mut rest, &count(2)).await;
    wait_metric(addr, "ssio_fanout_swept_total", swept + 1).await;
    wait_metric(addr, "ssio_fanout_seconds_count", timed + 1).await;
    // Both counts of 2 are deliveries, the swept one included.
    wait_metric(addr, "ssio_deliveries_total", delivered + 2).await;
    drop(other);
    expect_bytes(&mut page, &mut rest, &count(1)).await;
    wait_metric(addr, "ssio_fanout_swept_total", swept + 2).await;
}

/// Fills `out` from `rest` and then from `s`.
async fn expect_len(s: &mut TcpStream, rest: &mut Vec<u8>, out: &mut [u8]) {
    let had = rest.len().min(out.len());
    out[..had].copy_from_slice(&rest[..had]);
    rest.drain(..had);
    timeout(WAIT, s.read_exact(&mut out[had..]))
        .await
        .expect("the stream's bytes never came")
        .unwrap();
}

// Both streams a browser opens, as the first request or after the page,
// start with the bytes hyper writes for them (sids, dates aside).
#[tokio::test]
async fn stream_openings_match_hyper_byte_for_byte() {
    let server = Server::start(quiet_config()).await;
    let oracle = hyper_oracle(server.io.clone()).await;
    for target in ["/events", "/events?mux=1"] {
        let (want, _, _) = stream_opening(TcpStream::connect(oracle).await.unwrap(), target).await;
        assert!(want.starts_with("HTTP/1.1 200 OK\r\n"), "{want}");
        let (first, _, _) =
            stream_opening(TcpStream::connect(server.addr).await.unwrap(), target).await;
        assert_eq!(first, want, "{target} as a first request");
        let mut r = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
        load_page(&mut r, server.addr).await;
        let (after, _, _) = stream_opening(r.into_inner(), target).await;
        assert_eq!(after, want, "{target} after the page");
    }
}

/// Reads the next frames of a shared stream carrying keys 0 and 1 until
/// there are four, which must be each key's count of `n` and its count of
/// `people`, in any order.
async fn both_counts(page: &mut Sse, n: u32, people: u32) {
    let mut frames = Vec::new();
    while frames.len() < 4 {
        let chunk = page
            .next_chunk_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("count {n} never came"));
        frames.extend(
            String::from_utf8(chunk)
                .unwrap()
                .split_terminator("\n\n")
                .map(str::to_string),
        );
    }
    frames.sort();
    let want = |k: u32| format!(r#"data: {{"k":{k},"event":"user count","data":{n}}}"#);
    let people = |k: u32| format!(r#"data: {{"k":{k},"event":"people count","data":{people}}}"#);
    assert_eq!(frames, [people(0), want(0), people(1), want(1)]);
}

// A shared stream that carries a second tab's session is not written
// past: its task writes both sessions' counts, tagged, each exactly once.
#[tokio::test]
async fn a_shared_stream_with_two_sessions_writes_both_counts_itself() {
    let server = Server::start(quiet_config()).await;
    let addr = server.addr;
    let mut page = Sse::open_path(addr, "/events?mux=1").await;
    let first = page.next_chunk_within(WAIT).await.expect("no connect");
    let text = String::from_utf8(first).unwrap();
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let connect: serde_json::Value = serde_json::from_str(json).unwrap();
    let id = connect["data"]["mux"].as_str().unwrap().to_string();
    let one = page
        .next_chunk_within(WAIT)
        .await
        .expect("count 1 never came");
    assert_eq!(one, mux_frame(r#"{"k":0,"event":"user count","data":1}"#));
    let attached = post(addr, &format!("/mux/attach?mux={id}"), b"").await;
    assert_eq!(attached.status, 200, "{}", attached.text());
    // The attached session's count of 2 reaches both sessions on the
    // stream, and so does the count of people: both tabs are one browser.
    both_counts(&mut page, 2, 1).await;
    let swept = metric(addr, "ssio_fanout_swept_total").await;
    let mut other = Sse::connect(addr).await;
    other.wait_count(3, WAIT).await;
    both_counts(&mut page, 3, 2).await;
    page.assert_quiet(Duration::from_millis(50)).await;
    // The other stream wrote its own count; nothing was swept.
    assert_eq!(metric(addr, "ssio_fanout_swept_total").await, swept);
}

// An application that mounts ssio in hyper serves shared streams through
// hyper: their broadcasts are still timed once every session wrote them.
#[tokio::test]
async fn a_shared_stream_served_by_hyper_settles_its_broadcasts() {
    let server = Server::start(quiet_config()).await;
    let oracle = hyper_oracle(server.io.clone()).await;
    let mut page = Sse::open_path(oracle, "/events?mux=1").await;
    page.next_chunk_within(WAIT).await.expect("no connect");
    let one = page
        .next_chunk_within(WAIT)
        .await
        .expect("count 1 never came");
    assert_eq!(one, mux_frame(r#"{"k":0,"event":"user count","data":1}"#));
    let timed = metric(server.addr, "ssio_fanout_seconds_count").await;
    let mut other = Sse::connect(server.addr).await;
    other.wait_count(2, WAIT).await;
    let chunk = page
        .next_chunk_within(WAIT)
        .await
        .expect("count 2 never came");
    assert_eq!(chunk, mux_frame(r#"{"k":0,"event":"user count","data":2}"#));
    wait_metric(server.addr, "ssio_fanout_seconds_count", timed + 1).await;
}
