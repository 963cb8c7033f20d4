//! Shutdown: streams end with `event: disconnect` / `"server shutdown"`,
//! a stream that is never read cannot hold shutdown past its deadline,
//! SIGTERM makes the binary exit, and a new process on the same port takes
//! the clients back with an exact count.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use ssio::Config;
use support::*;

#[tokio::test]
async fn graceful_shutdown_ends_streams_with_the_disconnect_event() {
    let mut server = Server::start(fast_config()).await;
    let mut a = Sse::connect(server.addr).await;
    a.wait_count(1, WAIT).await;
    let t = Instant::now();
    server.shutdown(Duration::from_secs(5)).await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        t.elapsed()
    );
    // One write: the retry hint (the SSE field and a `retry` event with
    // the same delay, below --reconnect-spread), then the disconnect.
    let chunk = String::from_utf8(a.next_chunk_within(WAIT).await.unwrap()).unwrap();
    let re = regex::Regex::new(
        r#"^retry: (\d+)\nevent: retry\ndata: (\d+)\n\nevent: disconnect\ndata: "server shutdown"\n\n$"#,
    )
    .unwrap();
    let caps = re.captures(&chunk).unwrap_or_else(|| panic!("{chunk:?}"));
    assert_eq!(caps[1], caps[2]);
    assert!(caps[1].parse::<u64>().unwrap() <= ssio::config::DEFAULT_RECONNECT_SPREAD_MS);
    assert_eq!(
        a.next_chunk_within(WAIT).await,
        None,
        "stream must end after disconnect"
    );
    assert!(a.ended);
    assert_eq!(server.io.stats().sessions, 0);
}

#[tokio::test]
async fn a_stream_that_never_finishes_cannot_delay_shutdown_past_the_deadline() {
    // A client that stops reading keeps its response from completing; the
    // deadline still bounds shutdown.
    let mut server = Server::start(Config {
        shutdown_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let s = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(&mut &s, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    server.wait_sessions(1, WAIT).await;
    let t = Instant::now();
    server.shutdown(Duration::from_secs(3)).await;
    assert!(t.elapsed() < Duration::from_secs(2));
    drop(s);
}

#[tokio::test]
async fn sigterm_ends_streams_with_disconnect_and_the_process_exits() {
    let mut p = spawn_ssio(&[], 0, &["--shutdown-timeout", "3000"]).await;
    let mut a = Sse::connect(p.addr).await;
    a.wait_count(1, WAIT).await;
    let t = Instant::now();
    unsafe_kill(p.pid, "TERM");
    assert_eq!(a.next_event().await.0, "retry");
    assert_eq!(
        a.next_event().await,
        ("disconnect".into(), r#""server shutdown""#.into())
    );
    assert_eq!(a.next_chunk_within(WAIT).await, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(t.elapsed() < Duration::from_secs(3));
}

fn unsafe_kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_on_the_same_port_takes_the_clients_back() {
    let mut first = spawn_ssio(&[], 0, &["--shutdown-timeout", "3000"]).await;
    let port = first.addr.port();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Sse::connect(first.addr).await);
    }
    for c in clients.iter_mut() {
        c.wait_count(20, WAIT).await;
    }
    unsafe_kill(first.pid, "TERM");
    for c in clients.iter_mut() {
        // Counts of those ended first may come before the hint.
        let mut event = c.next_event().await;
        while event.0 == "user count" {
            event = c.next_event().await;
        }
        assert_eq!(event.0, "retry");
        assert_eq!(
            c.next_event().await,
            ("disconnect".into(), r#""server shutdown""#.into())
        );
    }
    let status = first.child.wait().await.unwrap();
    assert!(status.success());
    let second = spawn_ssio(&[], port, &[]).await;
    assert_eq!(second.addr, first.addr);
    // Everyone reconnects, as the browser client does.
    let mut back = Vec::new();
    for _ in 0..20 {
        back.push(Sse::connect(second.addr).await);
    }
    for c in back.iter_mut() {
        c.wait_count(20, WAIT).await;
    }
    let r = get(second.addr, "/stats").await;
    assert_eq!(
        r.text(),
        r#"{"sessions":20,"sse":20,"polling":0,"count":20,"away":0}"#
    );
}
