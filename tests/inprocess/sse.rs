//! The SSE transport over real TCP on 127.0.0.1:0: exact headers and
//! bytes, keep-alives only when idle, and a closed or reset stream as a
//! prompt disconnect.

use std::time::{Duration, Instant};

use crate::support::*;
use ssio::Config;

#[tokio::test]
async fn stream_headers_and_first_events_are_exact() {
    let server = Server::start(Config {
        host: "127.0.0.1".into(),
        port: 0,
        ..Config::default()
    })
    .await;
    let mut s = Sse::open(server.addr).await;
    assert_eq!(
        header_in(&s.head, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        header_in(&s.head, "cache-control").as_deref(),
        Some("no-cache")
    );
    assert_eq!(
        header_in(&s.head, "x-accel-buffering").as_deref(),
        Some("no")
    );
    assert_eq!(
        header_in(&s.head, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(header_in(&s.head, "content-encoding"), None);
    let sid = uuid::Uuid::parse_str(&s.sid).unwrap();
    assert_eq!(sid.get_version_num(), 4);

    let connect = s.next_chunk_within(WAIT).await.unwrap();
    // `retry:` brings a standard `EventSource` back within the 500 ms
    // reconnect grace; the id is the resume cursor: `<sid>:<next
    // broadcast>:<next direct>`.
    let expected = format!(
        "retry: 250\nid: {sid}:0:0\nevent: connect\ndata: {{\"sid\":\"{sid}\",\"pingInterval\":25000,\"pingTimeout\":20000}}\n\n",
        sid = s.sid
    );
    assert_eq!(String::from_utf8(connect).unwrap(), expected);
    let count = s.next_chunk_within(WAIT).await.unwrap();
    assert_eq!(count, b"event: user count\ndata: 1\n\n");
}

#[tokio::test]
async fn keep_alive_is_a_comment_sent_only_when_idle() {
    let server = Server::start(Config {
        ping_interval_ms: 200,
        ..fast_config()
    })
    .await;
    let mut s = Sse::connect(server.addr).await;
    assert_eq!(
        s.next_chunk_within(WAIT).await.unwrap(),
        b"event: user count\ndata: 1\n\n"
    );
    let t = Instant::now();
    assert_eq!(
        s.next_chunk_within(WAIT).await.unwrap(),
        b": keep-alive\n\n"
    );
    let idle = t.elapsed();
    assert!(
        idle >= Duration::from_millis(150),
        "keep-alive after only {idle:?}"
    );
    assert!(
        idle < Duration::from_millis(1000),
        "keep-alive late: {idle:?}"
    );

    // A real event resets the idle timer: traffic every 100 ms means no
    // keep-alive at all in between.
    let mut other = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        other.push(Sse::connect(server.addr).await);
        let chunk = s.next_chunk_within(WAIT).await.unwrap();
        assert!(
            chunk.starts_with(b"event: user count\n"),
            "{:?}",
            String::from_utf8_lossy(&chunk)
        );
    }
}

#[tokio::test]
async fn two_clients_see_one_then_two_then_one() {
    let server = Server::start(fast_config()).await;
    let mut a = Sse::connect(server.addr).await;
    a.wait_count(1, WAIT).await;
    let mut b = Sse::connect(server.addr).await;
    b.wait_count(2, WAIT).await;
    a.wait_count(2, WAIT).await;
    drop(b);
    let t = Instant::now();
    a.wait_count(1, Duration::from_secs(1)).await;
    eprintln!("disconnect seen after {:?}", t.elapsed());
    server.wait_sessions(1, WAIT).await;
}

#[tokio::test]
async fn a_reset_connection_is_a_prompt_disconnect() {
    let server = Server::start(fast_config()).await;
    let mut a = Sse::connect(server.addr).await;
    a.wait_count(1, WAIT).await;
    // SO_LINGER 0 makes close send RST, as a killed process or a dropped
    // laptop connection does.
    let std = std::net::TcpStream::connect(server.addr).unwrap();
    socket2::SockRef::from(&std)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    std::io::Write::write_all(&mut &std, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    a.wait_count(2, WAIT).await;
    drop(std);
    a.wait_count(1, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_head_that_arrives_in_pieces_gets_the_same_stream() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let server = Server::start(fast_config()).await;
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Half a head first: not answerable from a first look, so hyper serves it.
    s.write_all(b"GET /events HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(b"st: x\r\n\r\n").await.unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        tokio::time::timeout(WAIT, r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(
        header_in(&head, "content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(
        header_in(&head, "transfer-encoding").as_deref(),
        Some("chunked")
    );
    let sid = header_in(&head, "x-session-id").unwrap();
    let expected = format!(
        "retry: 250\nid: {sid}:0:0\nevent: connect\ndata: {{\"sid\":\"{sid}\",\"pingInterval\":300,\"pingTimeout\":2000}}\n\n"
    );
    let mut size = String::new();
    r.read_line(&mut size).await.unwrap();
    assert_eq!(
        usize::from_str_radix(size.trim(), 16).unwrap(),
        expected.len()
    );
    let mut chunk = vec![0; expected.len() + 2];
    r.read_exact(&mut chunk).await.unwrap();
    assert_eq!(&chunk[..expected.len()], expected.as_bytes());
    server.wait_sessions(1, WAIT).await;
    drop(r);
    server.wait_sessions(0, Duration::from_secs(1)).await;
}

/// No keep-alive within a test, so every byte on a stream is an event.
fn quiet_config() -> Config {
    Config {
        ping_interval_ms: 60_000,
        ping_timeout_ms: 60_000,
        ..fast_config()
    }
}

// One thread, as the binary runs on one core: idle streams then take a
// new count from the fan-out's sweeper instead of each waking its task.
#[tokio::test]
async fn idle_streams_take_a_new_count_from_the_sweeper_in_the_same_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(quiet_config()).await;
    let addr = server.addr;
    // One stream read byte for byte.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let one = b"1B\r\nevent: user count\ndata: 1\n\n\r\n";
    tokio::time::timeout(WAIT, async {
        while !seen.ends_with(one) {
            let mut buf = [0u8; 4096];
            let n = raw.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream ended");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("count 1 never came");
    let mut streams = Vec::new();
    for n in 2..=3 {
        let mut s = Sse::connect(addr).await;
        s.wait_count(n, WAIT).await;
        streams.push(s);
    }
    streams[0].wait_count(3, WAIT).await;
    let mut exact = [0u8; 2 * 33];
    tokio::time::timeout(WAIT, raw.read_exact(&mut exact))
        .await
        .expect("counts 2 and 3 never came")
        .unwrap();
    assert_eq!(
        &exact[..],
        b"1B\r\nevent: user count\ndata: 2\n\n\r\n1B\r\nevent: user count\ndata: 3\n\n\r\n"
    );
    // Every stream is idle now; a fourth session is one publish.
    let swept = metric(addr, "ssio_fanout_swept_total").await;
    let timed = metric(addr, "ssio_fanout_seconds_count").await;
    let delivered = metric(addr, "ssio_deliveries_total").await;
    let mut fourth = Sse::connect(addr).await;
    fourth.wait_count(4, WAIT).await;
    let mut exact = [0u8; 33];
    tokio::time::timeout(WAIT, raw.read_exact(&mut exact))
        .await
        .expect("count 4 never came")
        .unwrap();
    assert_eq!(&exact[..], b"1B\r\nevent: user count\ndata: 4\n\n\r\n");
    for s in streams.iter_mut() {
        assert_eq!(s.next_event().await, ("user count".into(), "4".into()));
        s.assert_quiet(Duration::from_millis(50)).await;
    }
    // The three earlier streams were written by the sweeper; each write is
    // counted once, and the broadcast is timed once all four wrote it.
    wait_metric(addr, "ssio_fanout_swept_total", swept + 3).await;
    wait_metric(addr, "ssio_fanout_seconds_count", timed + 1).await;
    // And the fourth wrote the count itself (its connect event is not a
    // delivery).
    wait_metric(addr, "ssio_deliveries_total", delivered + 4).await;
}

// A stream that stops reading fills its socket: the sweeper cannot write to
// it and wakes its task instead, which holds the rest; once the client
// reads again it gets every byte in order, intact, and then the newest value.
#[tokio::test]
async fn a_stream_whose_socket_is_full_is_woken_instead_and_loses_nothing() {
    let server = Server::start(quiet_config()).await;
    let addr = server.addr;
    server.io.latest_value("ticker");
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    let stalled = sock.connect(addr).await.unwrap();
    let mut stalled = Sse::open_on(stalled, addr, "/events", &[]).await;
    assert_eq!(stalled.next_event().await.0, "connect");
    stalled.wait_count(1, WAIT).await;
    let mut reader = Sse::connect(addr).await;
    reader.wait_count(2, WAIT).await;
    stalled.wait_count(2, WAIT).await;

    let payload = "x".repeat(16_000);
    let mut last = 0;
    let mut full_at = None;
    for n in 1..=2_000u64 {
        let swept = metric(addr, "ssio_fanout_swept_total").await;
        server
            .io
            .emit("ticker", serde_json::json!({ "n": n, "p": payload }));
        loop {
            let (event, data) = reader.next_event().await;
            if event == "ticker" {
                let v: serde_json::Value = serde_json::from_str(&data).unwrap();
                assert_eq!(v["n"], n);
                break;
            }
        }
        last = n;
        // The reader is always swept; the stalled one until its socket fills.
        let now = metric(addr, "ssio_fanout_swept_total").await;
        if now - swept < 2 && full_at.is_none() {
            full_at = Some(n);
        }
        if full_at.is_some_and(|f| n >= f + 5) {
            break;
        }
    }
    let full_at = full_at.expect("the stalled socket never filled");
    eprintln!("the stalled socket was full at ticker {full_at}");
    assert!(full_at > 1, "the stalled stream was never swept");
    // Reading again: every ticker in order, none garbled, ending on the
    // newest (those published while it was full are conflated to it).
    let mut n_seen = Vec::new();
    while n_seen.last() != Some(&last) {
        let (event, data) = stalled.next_event().await;
        assert_eq!(event, "ticker", "{data}");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["p"], payload);
        n_seen.push(v["n"].as_u64().unwrap());
    }
    assert!(n_seen.windows(2).all(|w| w[0] < w[1]), "{n_seen:?}");
    assert!(n_seen.len() as u64 >= full_at - 1, "{n_seen:?}");
    stalled.assert_quiet(Duration::from_millis(50)).await;
    assert_eq!(server.io.stats().sessions, 2);
}
