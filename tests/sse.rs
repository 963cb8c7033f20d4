//! The SSE transport over real TCP on 127.0.0.1:0: exact headers and
//! bytes, keep-alives only when idle, and a closed or reset stream as a
//! prompt disconnect.

mod common;

use std::time::{Duration, Instant};

use common::*;
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
    // The id is the resume cursor: `<sid>:<next broadcast>:<next direct>`.
    let expected = format!(
        "id: {sid}:0:0\nevent: connect\ndata: {{\"sid\":\"{sid}\",\"pingInterval\":25000,\"pingTimeout\":20000}}\n\n",
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
        "id: {sid}:0:0\nevent: connect\ndata: {{\"sid\":\"{sid}\",\"pingInterval\":300,\"pingTimeout\":400}}\n\n"
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
