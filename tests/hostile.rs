//! Hostile clients, tried as an attacker would: polls left unread to
//! amplify memory, emit floods to evict honest readers, handshake floods to
//! lock others out, handshake tickets asked for and never redeemed (to
//! amplify memory, to get round the per-address limits, to lock others
//! out), a slowloris with a late first byte, junk after a raw `GET /events`
//! head, and heads hyper would have refused on its own.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ssio::Config;
use support::procfs;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// A connection from `source` (any 127.0.0.0/8 address is loopback).
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    let ip: IpAddr = source.parse().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    timeout(WAIT, socket.connect(to))
        .await
        .expect("connect timed out")
        .unwrap()
}

/// One response read off a keep-alive connection: status, head, body.
async fn read_one<R: AsyncBufReadExt + Unpin>(r: &mut R) -> (u16, String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).await.unwrap() > 0, "closed in head");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = header_in(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).await.unwrap();
    (status, head, body)
}

/// `n` copies of `request` pipelined on one connection from `source`; the
/// answers in order.
async fn pipelined(
    source: &str,
    to: SocketAddr,
    request: Vec<u8>,
    n: usize,
) -> Vec<(u16, String, Vec<u8>)> {
    let s = connect_from(source, to).await;
    let (r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..n {
            if w.write_all(&request).await.is_err() {
                break;
            }
        }
        w
    });
    let mut r = BufReader::new(r);
    let mut out = Vec::with_capacity(n);
    let all = async {
        for _ in 0..n {
            out.push(read_one(&mut r).await);
        }
    };
    timeout(Duration::from_secs(30), all)
        .await
        .expect("pipelined answers timed out");
    drop(writer.await.unwrap());
    out
}

async fn handshake_from(source: &str, to: SocketAddr, extra: &str) -> Resp {
    let mut s = connect_from(source, to).await;
    let raw = format!("GET /poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let (status, head, body) = timeout(WAIT, read_one(&mut r)).await.expect("no answer");
    Resp {
        status,
        head: format!("HTTP/1.1 {status}\r\n{head}"),
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_polls_hold_references_to_shared_events_not_copies() {
    const SESSIONS: usize = 8;
    const CONNS: usize = 8;
    const EVENTS: usize = 300;
    let p = spawn_ssio(&[], 0, &["--max-emit-rate", "0", "--max-payload", "200000"]).await;
    let addr = p.addr;
    let mut pollers = Vec::new();
    for _ in 0..SESSIONS {
        let poller = Poller::handshake(addr).await;
        poller.events().await;
        pollers.push(poller);
    }
    let sender = Poller::handshake(addr).await;
    sender.events().await;
    // 300 chat messages of 64 KiB each, over one keep-alive connection.
    let message = "m".repeat(64 * 1024);
    let body = json!({"event": "chat message", "data": message}).to_string();
    let emit = format!(
        "POST /emit?sid={} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        sender.sid,
        body.len()
    );
    let answers = pipelined("127.0.0.1", addr, emit.into_bytes(), EVENTS).await;
    assert!(answers.iter().all(|(s, _, _)| *s == 204));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = procfs::rss_kib(p.pid).expect("server gone");

    // Every session: 8 polls on 8 connections whose answers are never read.
    let mut unread = Vec::new();
    for poller in &pollers {
        for _ in 0..CONNS {
            let sock = TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let mut s = timeout(WAIT, sock.connect(addr)).await.unwrap().unwrap();
            let req = format!("GET /poll?sid={} HTTP/1.1\r\nHost: x\r\n\r\n", poller.sid);
            s.write_all(req.as_bytes()).await.unwrap();
            unread.push(s);
        }
    }
    // RSS while the answers sit unread, sampled for a while.
    let mut peak = base;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(procfs::rss_kib(p.pid).expect("server gone"));
    }
    let growth = peak.saturating_sub(base);
    eprintln!(
        "{SESSIONS} sessions x {CONNS} unread polls after {EVENTS} x 64 KiB events: \
         RSS {base} KiB -> peak {peak} KiB, growth {growth} KiB"
    );
    assert!(growth <= 32 * 1024, "unread polls grew RSS by {growth} KiB");
    // Session 0's polls really carry events, each answer bounded in bytes.
    // Its 8 connections reach the server in no set order: each poll that
    // finds the cursor free is answered at once with the next batch, and one
    // that arrives while another holds it is told "a poll is already
    // pending" (400).
    let mut statuses = Vec::new();
    for s in unread.drain(..CONNS) {
        let mut r = BufReader::new(s);
        let (status, head, _) = timeout(WAIT, read_one(&mut r)).await.unwrap();
        statuses.push(status);
        if status == 200 {
            let len: usize = header_in(&head, "content-length").unwrap().parse().unwrap();
            assert!(len > 64 * 1024 && len <= 1024 * 1024 + 64, "{len}");
        }
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 400),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_flood_is_rate_limited_and_evicts_no_honest_reader() {
    let server = Server::start(Config {
        ping_interval_ms: 1_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let mut reader = Sse::connect(addr).await;
    let honest = Poller::handshake(addr).await;
    honest.events().await;
    let flooder = Poller::handshake(addr).await;
    flooder.events().await;

    // The honest poller polls all along, until it has every accepted
    // message; `usize::MAX` until the flood's outcome is known.
    let target = Arc::new(AtomicUsize::new(usize::MAX));
    let polled = {
        let target = target.clone();
        let honest = Poller {
            addr,
            sid: honest.sid.clone(),
        };
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut got = Vec::new();
            while got.len() < target.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "poller got {}", got.len());
                for e in honest.events().await {
                    assert_ne!(e["event"], "disconnect", "honest poller dropped: {e}");
                    if e["event"] == "chat message" {
                        got.push(e["data"]["message"].as_i64().unwrap());
                    }
                }
            }
            got
        })
    };

    let n = 2_000;
    let mut raw = Vec::new();
    for i in 0..n {
        let body = json!({"event": "chat message", "data": i}).to_string();
        raw.extend_from_slice(
            format!(
                "POST /emit?sid={} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                flooder.sid,
                body.len()
            )
            .as_bytes(),
        );
    }
    // Pipelined: one write of all 2,000, then every answer in order.
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let writer = tokio::spawn(async move { w.write_all(&raw).await.map(|_| w) });
    let mut r = BufReader::new(r);
    let mut accepted = Vec::new();
    let mut refused = 0;
    let t = Instant::now();
    for i in 0..n {
        let (status, head, body) = timeout(WAIT, read_one(&mut r)).await.expect("answer");
        match status {
            204 => accepted.push(i as i64),
            429 => {
                refused += 1;
                assert_eq!(header_in(&head, "retry-after").as_deref(), Some("1"));
                assert_eq!(
                    header_in(&head, "access-control-allow-origin").as_deref(),
                    Some("*")
                );
                assert_eq!(body, br#"{"error":"too many events, slow down"}"#);
            }
            other => panic!("emit {i} answered {other}"),
        }
    }
    let took = t.elapsed();
    drop(writer.await.unwrap().unwrap());
    eprintln!(
        "{n} pipelined emits in {took:?}: {} accepted (204), {refused} refused (429)",
        accepted.len()
    );
    assert!(refused > 0, "no emit was refused");
    assert!(
        accepted.len() >= ssio::config::DEFAULT_MAX_EMIT_BURST as usize,
        "{}",
        accepted.len()
    );
    target.store(accepted.len(), Ordering::SeqCst);

    // Each honest reader received exactly the accepted messages, in order.
    let got = timeout(Duration::from_secs(25), polled)
        .await
        .expect("poller timed out")
        .unwrap();
    assert_eq!(got, accepted);
    let mut streamed = Vec::new();
    while streamed.len() < accepted.len() {
        let (event, data) = reader.next_event().await;
        assert_ne!(event, "disconnect", "honest SSE reader dropped: {data}");
        if event == "chat message" {
            let v: Value = serde_json::from_str(&data).unwrap();
            streamed.push(v["message"].as_i64().unwrap());
        }
    }
    assert_eq!(streamed, accepted);
    server.wait_sessions(3, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_flood_from_one_address_locks_nobody_out() {
    let server = Server::start(Config {
        max_sessions: 2_000,
        ping_interval_ms: 25_000,
        ping_timeout_ms: 20_000,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let t0 = Instant::now();
    let answers = pipelined(
        "127.0.0.2",
        addr,
        b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        2_000,
    )
    .await;
    let flooded = t0.elapsed();
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert_eq!(ok, 2_000);
    assert_eq!(server.io.stats().sessions, 2_000);
    // Meanwhile the server is full: another address is refused for now...
    assert_eq!(handshake_from("127.0.0.3", addr, "").await.status, 503);
    // ...and let in within the first-poll deadline (2 s) of the flood's
    // end (and a second's slack for a loaded machine), and counted.
    let bound = flooded + Duration::from_secs(3);
    let other = loop {
        let r = handshake_from("127.0.0.3", addr, "").await;
        if r.status == 200 {
            break r;
        }
        assert_eq!(r.status, 503);
        assert!(
            t0.elapsed() < bound,
            "locked out for {bound:?} (the flood took {flooded:?})"
        );
        // The count never shows more than the real sessions plus the
        // unpolled handshakes of the last 2 s (plus the reaper's slack).
        let s = server.io.stats();
        assert!(
            s.sessions <= 2_000 && s.count == s.sessions,
            "{s:?} at {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let let_in = t0.elapsed();
    let sid = support::poll::handshake_sid(&other.body).unwrap();
    let other = Poller { addr, sid };
    // Its first answer may already hold its count, when the ghosts went
    // before it was polled.
    let first = support::poll::counts(&other.events().await).unwrap();
    // Every ghost is gone well before a pingTimeout; the real one stays.
    // The last ghosts were made up to `flooded` after the first.
    server
        .wait_sessions(1, flooded + Duration::from_secs(1))
        .await;
    let ghosts_gone = t0.elapsed();
    eprintln!(
        "2000 pipelined handshakes in {flooded:?}; another address let in at {let_in:?}; \
         ghosts gone by {ghosts_gone:?}"
    );
    assert!(ghosts_gone < Duration::from_millis(2_000) + flooded + Duration::from_millis(900));
    if first.last() != Some(&1) {
        other.wait_count(1, WAIT).await;
    }
}

#[tokio::test]
async fn a_session_that_never_polls_ends_with_ping_timeout_and_one_that_does_stays() {
    let server = Server::start(Config {
        first_poll_timeout_ms: 300,
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let reasons = Arc::new(Mutex::new(Vec::new()));
    {
        let reasons = reasons.clone();
        server.io.on_connection(move |socket| {
            let reasons = reasons.clone();
            socket.on("disconnect", move |_, reason| {
                reasons
                    .lock()
                    .unwrap()
                    .push(reason.as_str().unwrap().to_string());
            });
        });
    }
    let t = Instant::now();
    let silent = Poller::handshake(server.addr).await;
    let active = Poller::handshake(server.addr).await;
    active.events().await;
    let emitter = Poller::handshake(server.addr).await;
    assert_eq!(emitter.emit("chat message", json!("hi")).await.status, 204);
    server.wait_sessions(2, Duration::from_secs(2)).await;
    let gone = t.elapsed();
    eprintln!("an unpolled session ended {gone:?} after its handshake (limit 300 ms)");
    assert!(gone >= Duration::from_millis(250), "{gone:?}");
    assert_eq!(*reasons.lock().unwrap(), ["ping timeout"]);
    assert_eq!(silent.poll().await.status, 400);
    // Past the first-poll deadline, both live ones keep their sessions.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(active.poll().await.status, 200);
    assert_eq!(emitter.poll().await.status, 200);
    server.wait_sessions(2, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limits_refuse_only_the_flooding_address() {
    let server = Server::start(Config {
        max_sessions_per_ip: 100,
        ping_interval_ms: 25_000,
        ping_timeout_ms: 20_000,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let answers = pipelined(
        "127.0.0.2",
        addr,
        b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        300,
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses[..100], [200; 100]);
    assert_eq!(statuses[100..], [429; 200]);
    let (_, head, body) = &answers[150];
    assert_eq!(header_in(head, "retry-after").as_deref(), Some("5"));
    assert_eq!(body, br#"{"error":"too many sessions from this address"}"#);
    // Another address is let in at once, on both transports.
    assert_eq!(handshake_from("127.0.0.3", addr, "").await.status, 200);
    let mut s = connect_from("127.0.0.3", addr).await;
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(&mut s).read_line(&mut line).await.unwrap();
    assert_eq!(line, "HTTP/1.1 200 OK\r\n");
    server.wait_sessions(102, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_sessions_per_address_are_rate_limited() {
    let server = Server::start(Config {
        max_new_sessions_per_ip: 50,
        ping_interval_ms: 25_000,
        ping_timeout_ms: 20_000,
        ..fast_config()
    })
    .await;
    let t0 = Instant::now();
    let answers = pipelined(
        "127.0.0.2",
        server.addr,
        b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        200,
    )
    .await;
    let took = t0.elapsed();
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let (_, head, body) = answers.iter().find(|(s, _, _)| *s == 429).expect("a 429");
    assert_eq!(header_in(head, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        body,
        br#"{"error":"too many new sessions from this address, retry later"}"#
    );
    // The burst, plus whatever the rate (50 a second) refilled while the
    // flood ran: slow on a loaded machine.
    let refilled = (took.as_secs_f64() * 50.0).ceil() as usize;
    assert!(ok >= 50 && ok <= 51 + refilled, "{ok} accepted in {took:?}");
    assert_eq!(
        handshake_from("127.0.0.3", server.addr, "").await.status,
        200
    );
    // A second later the address may start sessions again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(
        handshake_from("127.0.0.2", server.addr, "").await.status,
        200
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_a_trusted_proxy_and_flags_fall_back_to_env() {
    // Through the binary, with both limits set from the environment.
    let mut cmd = support::process::ssio(&[], 0);
    cmd.env("SSIO_MAX_SESSIONS_PER_IP", "1")
        .env("SSIO_TRUSTED_PROXY", "127.0.0.1,10.0.0.0/8");
    let p = support::process::spawn(cmd, Duration::from_secs(10))
        .await
        .unwrap();
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    // From the trusted proxy, each forwarded client has its own allowance.
    assert_eq!(
        handshake_from("127.0.0.1", p.addr, &xff("198.51.100.1"))
            .await
            .status,
        200
    );
    assert_eq!(
        handshake_from("127.0.0.1", p.addr, &xff("198.51.100.2"))
            .await
            .status,
        200
    );
    let again = handshake_from("127.0.0.1", p.addr, &xff("198.51.100.1")).await;
    assert_eq!(again.status, 429);
    assert_eq!(again.header("retry-after").as_deref(), Some("5"));
    let fwd = "Forwarded: for=\"198.51.100.3:1234\"\r\n";
    assert_eq!(handshake_from("127.0.0.1", p.addr, fwd).await.status, 200);
    // From anyone else the header is ignored: the peer is the client.
    assert_eq!(
        handshake_from("127.0.0.4", p.addr, &xff("198.51.100.7"))
            .await
            .status,
        200
    );
    assert_eq!(
        handshake_from("127.0.0.4", p.addr, &xff("198.51.100.8"))
            .await
            .status,
        429
    );
}

#[test]
fn help_lists_every_hostile_input_flag_with_its_env_and_default() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssio"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        (
            "--max-pending-bytes",
            "SSIO_MAX_PENDING_BYTES",
            Some("67108864"),
        ),
        ("--max-poll-bytes", "SSIO_MAX_POLL_BYTES", Some("1048576")),
        ("--max-emit-rate", "SSIO_MAX_EMIT_RATE", Some("50")),
        ("--max-emit-burst", "SSIO_MAX_EMIT_BURST", Some("200")),
        (
            "--first-poll-timeout",
            "SSIO_FIRST_POLL_TIMEOUT",
            Some("2000"),
        ),
        (
            "--max-sessions-per-ip",
            "SSIO_MAX_SESSIONS_PER_IP",
            Some("0"),
        ),
        (
            "--max-new-sessions-per-ip",
            "SSIO_MAX_NEW_SESSIONS_PER_IP",
            Some("0"),
        ),
        (
            "--max-tickets-per-ip",
            "SSIO_MAX_TICKETS_PER_IP",
            Some("256"),
        ),
        ("--trusted-proxy", "SSIO_TRUSTED_PROXY", None),
        (
            "--forward-max-inflight",
            "SSIO_FORWARD_MAX_INFLIGHT",
            Some("1024"),
        ),
        ("--max-away-sessions", "SSIO_MAX_AWAY_SESSIONS", Some("0")),
        ("--idle-timeout", "SSIO_IDLE_TIMEOUT", Some("60000")),
        ("--max-resets", "SSIO_MAX_RESETS", Some("100")),
        ("--h2-stream-buffer", "SSIO_H2_STREAM_BUFFER", Some("1")),
    ] {
        let line = help
            .split("\n\n")
            .find(|block| block.contains(flag))
            .unwrap_or_else(|| panic!("{flag} missing from --help"));
        assert!(line.contains(&format!("[env: {env}=")), "{env}: {line}");
        if let Some(d) = default {
            assert!(line.contains(&format!("[default: {d}]")), "{flag}: {line}");
        }
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ssio"))
        .args(["--trusted-proxy", "10.0.0.0/33"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // h2 cannot send with no buffer at all, so 0 is refused at the door.
    let none = std::process::Command::new(env!("CARGO_BIN_EXE_ssio"))
        .args(["--h2-stream-buffer", "0"])
        .output()
        .unwrap();
    assert!(!none.status.success());
    let said = String::from_utf8_lossy(&none.stderr);
    assert!(
        said.contains("invalid value '0' for '--h2-stream-buffer <BYTES>'"),
        "{said}"
    );
}

#[tokio::test]
async fn max_poll_bytes_bounds_an_answer_and_the_rest_follows() {
    let server = Server::start(Config {
        max_poll_bytes: 200,
        ping_interval_ms: 2_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let p = Poller::handshake(server.addr).await;
    p.events().await;
    for n in 0..20 {
        server
            .io
            .emit("chat message", "x".repeat(40) + &n.to_string());
    }
    let mut got = Vec::new();
    let mut answers = 0;
    while got.len() < 20 {
        let r = p.poll().await;
        assert!(r.body.len() <= 200 + 64, "{}", r.body.len());
        answers += 1;
        for e in support::poll::batch(&r.body).unwrap() {
            got.push(e["data"].as_str().unwrap().to_string());
        }
    }
    assert!(answers >= 5, "{answers}");
    assert_eq!(
        got,
        (0..20)
            .map(|n| "x".repeat(40) + &n.to_string())
            .collect::<Vec<_>>()
    );
    // One event larger than the bound still goes, alone.
    server.io.emit("chat message", "y".repeat(500));
    let events = p.events().await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_slowloris_with_a_late_first_byte_gets_one_header_timeout() {
    let server = Server::start(Config {
        header_timeout_ms: 2_000,
        ..fast_config()
    })
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(1_900)).await;
    let mut cut = None;
    for b in b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
        .take(60)
    {
        if s.write_all(&[*b]).await.is_err() {
            cut = Some(t.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        match timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(t.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!("answered: {:?}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    let cut = cut.expect("never cut off");
    eprintln!("slowloris with a late first byte cut after {cut:?} (header timeout 2 s)");
    assert!(cut <= Duration::from_millis(2_500), "{cut:?}");
    assert!(cut >= Duration::from_millis(1_900), "{cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_after_a_raw_events_head_costs_no_cpu() {
    let p = spawn_ssio(&[], 0, &[]).await;
    let before = procfs::cpu_time(p.pid).unwrap();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    let mut junk = b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    junk.extend(std::iter::repeat_n(b'j', 10 * 1024 * 1024));
    let sent = timeout(Duration::from_secs(3), s.write_all(&junk)).await;
    let outcome = match sent {
        Err(_) => "unread (the write stalled)",
        Ok(Err(_)) => "closed by the server",
        Ok(Ok(())) => "written",
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = procfs::cpu_time(p.pid).unwrap() - before;
    let stats = get(p.addr, "/stats").await.text();
    eprintln!("10 MB of junk after a raw /events head: {outcome}; server CPU {cpu:?}; {stats}");
    assert!(cpu < Duration::from_millis(50), "{cpu:?}");
    assert_ne!(outcome, "written", "10 MB was read");
    assert_eq!(
        stats,
        r#"{"sessions":0,"sse":0,"polling":0,"count":0,"away":0}"#
    );
}

/// Everything the server sends on a connection until it closes it.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the server never closed the connection after {:?}",
                String::from_utf8_lossy(raw)
            )
        })
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn heads_whose_body_length_cannot_be_told_get_the_json_error_first_or_later() {
    let server = Server::start(fast_config()).await;
    let refused = |status: &str, error: &str| {
        let body = format!(r#"{{"error":"{error}"}}"#);
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
             access-control-allow-origin: *\r\ncontent-length: {}\r\nconnection: close\r\n\
             date: D\r\n\r\n{body}",
            body.len()
        )
    };
    // Every answer carries a `date` as hyper writes one: 29 bytes that move.
    let undated = |answer: String| match answer.find("\r\ndate: ") {
        Some(at) => {
            let start = at + "\r\ndate: ".len();
            format!("{}D{}", &answer[..start], &answer[start + 29..])
        }
        None => answer,
    };
    let malformed = refused("400 Bad Request", "malformed request");
    let cases: [&[u8]; 4] = [
        b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /emit?sid=x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /emit?sid=x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /emit?sid=x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for raw in cases {
        let case = String::from_utf8_lossy(raw);
        // As a connection's first request: the edge reads it.
        assert_eq!(
            undated(exchange(server.addr, raw).await),
            malformed,
            "first: {case}"
        );
        // After another on the same connection: hyper reads it.
        let answer = exchange(server.addr, &[&health[..], raw].concat()).await;
        let (first, second) = answer
            .split_once("{\"status\":\"ok\"}")
            .unwrap_or_else(|| panic!("no health answer for {case}: {answer}"));
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(undated(second.to_string()), malformed, "later: {case}");
    }
    assert_eq!(
        get(server.addr, "/stats").await.text(),
        r#"{"sessions":0,"sse":0,"polling":0,"count":0,"away":0}"#
    );
}

#[tokio::test]
async fn a_later_head_over_the_header_limit_gets_431_however_it_arrives() {
    let server = Server::start(fast_config()).await;
    let mut a = Sse::connect(server.addr).await;
    a.wait_count(1, WAIT).await;
    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    // 20 KB against the default 16 KiB: hyper's read buffer alone lets it
    // through when it arrives with the head before it.
    let big = format!(
        "GET /stats HTTP/1.1\r\nHost: x\r\nCookie: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(20_000)
    );
    let body = r#"{"error":"request head too large"}"#;
    // Pipelined behind a first request, and sent after its answer was read.
    for pipelined in [true, false] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        if pipelined {
            s.write_all(&[&health[..], big.as_bytes()].concat())
                .await
                .unwrap();
        } else {
            s.write_all(&health).await.unwrap();
            let mut first = [0u8; 512];
            let n = timeout(WAIT, s.read(&mut first)).await.unwrap().unwrap();
            assert!(first[..n].ends_with(b"{\"status\":\"ok\"}"), "{n}");
            s.write_all(big.as_bytes()).await.unwrap();
        }
        let mut out = Vec::new();
        timeout(WAIT, s.read_to_end(&mut out))
            .await
            .expect("the server never closed the connection")
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        let last = out.rfind("HTTP/1.1 ").unwrap();
        let answer = &out[last..];
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "pipelined {pipelined}: {answer}"
        );
        assert!(answer.ends_with(body), "pipelined {pipelined}: {answer}");
    }
    // Nobody else noticed.
    a.assert_quiet(Duration::from_millis(100)).await;
    assert_eq!(
        get(server.addr, "/stats").await.text(),
        r#"{"sessions":1,"sse":1,"polling":0,"count":1,"away":0}"#
    );
}

#[tokio::test]
async fn heads_hyper_would_refuse_get_the_json_error_with_cors() {
    let server = Server::start(fast_config()).await;
    let cases: [(Vec<u8>, u16, &str); 4] = [
        (
            b"GET /stats\0 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
            r#"{"error":"malformed request"}"#,
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            400,
            r#"{"error":"malformed request"}"#,
        ),
        (
            format!(
                "GET /stats HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "x".repeat(20_000)
            )
            .into_bytes(),
            431,
            r#"{"error":"request head too large"}"#,
        ),
        (
            format!("GET /events HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(150)).into_bytes(),
            431,
            r#"{"error":"request head too large"}"#,
        ),
    ];
    for (raw, status, body) in cases {
        let r = request_raw(server.addr, &raw).await;
        assert_eq!((r.status, r.text().as_str()), (status, body));
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
    }
    assert_eq!(
        get(server.addr, "/stats").await.text(),
        r#"{"sessions":0,"sse":0,"polling":0,"count":0,"away":0}"#
    );
}

/// Sessions that live through a test unpolled.
fn patient() -> Config {
    Config {
        ping_interval_ms: 25_000,
        ping_timeout_ms: 20_000,
        first_poll_timeout_ms: 20_000,
        ..fast_config()
    }
}

/// `POST /handshake` with `auth` as its body, ready to pipeline.
fn ticket_request(auth: &str) -> Vec<u8> {
    format!(
        "POST /handshake HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{auth}",
        auth.len()
    )
    .into_bytes()
}

/// A ticket for `auth` asked for from `source`.
async fn ticket_from(source: &str, to: SocketAddr, auth: &str) -> (u16, String, Vec<u8>) {
    let mut answers = pipelined(source, to, ticket_request(auth), 1).await;
    answers.pop().unwrap()
}

/// The ticket in a `POST /handshake` answer.
fn ticket_in(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap();
    v["ticket"].as_str().unwrap().to_string()
}

/// A session started from `source` with `ticket`: the poll handshake's
/// status and, on 200, its sid.
async fn redeem_from(source: &str, to: SocketAddr, ticket: &str) -> (u16, Option<String>) {
    let mut s = connect_from(source, to).await;
    let raw = format!("GET /poll?ticket={ticket} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let (status, _, body) = timeout(WAIT, read_one(&mut r)).await.expect("no answer");
    (status, support::poll::handshake_sid(&body).ok())
}

/// The value of the `ssio_tickets` gauge at `/metrics`.
async fn tickets_gauge(addr: SocketAddr) -> u64 {
    let m = get(addr, "/metrics").await.text();
    m.lines()
        .find_map(|l| l.strip_prefix("ssio_tickets "))
        .unwrap_or_else(|| panic!("no ssio_tickets in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// A 4 KiB `auth` object that parses into about 100 KiB: 2,000 numbers.
fn dense_auth() -> String {
    format!("{{\"a\":[{}]}}", vec!["0"; 2_000].join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_cost_about_their_body_and_their_memory_is_given_back_when_they_expire() {
    const SOURCES: usize = 8;
    const PER_SOURCE: usize = 250;
    const TICKETS: u64 = (SOURCES * PER_SOURCE) as u64;
    // Long enough for a loaded machine to issue them all in one life.
    let p = spawn_ssio(&[], 0, &["--ticket-ttl", "8000"]).await;
    let pid = p.pid;
    let auth = dense_auth();
    assert!((4_000..=4_096).contains(&auth.len()), "{}", auth.len());
    // Warm up the connection paths from every source with refused
    // payloads, which leave no ticket behind.
    let warm = ticket_request("[]");
    let sources: Vec<String> = (2..2 + SOURCES).map(|i| format!("127.0.0.{i}")).collect();
    for s in &sources {
        let answers = pipelined(s, p.addr, warm.clone(), 50).await;
        assert!(answers.iter().all(|(s, _, _)| *s == 400));
    }
    let base = procfs::rss_kib(pid).expect("server gone");
    let t0 = Instant::now();
    let floods = sources.iter().map(|s| {
        let (s, request) = (s.clone(), ticket_request(&auth));
        let to = p.addr;
        tokio::spawn(async move { pipelined(&s, to, request, PER_SOURCE).await })
    });
    for f in floods.collect::<Vec<_>>() {
        let answers = f.await.unwrap();
        assert!(
            answers.iter().all(|(s, _, _)| *s == 200),
            "a ticket refused"
        );
    }
    let issued_in = t0.elapsed();
    let peak = procfs::rss_kib(pid).expect("server gone");
    assert!(
        issued_in < Duration::from_secs(8),
        "issuing took {issued_in:?}, longer than the tickets live"
    );
    let per_ticket = peak.saturating_sub(base) as f64 / TICKETS as f64;
    eprintln!(
        "{TICKETS} tickets of {} bytes in {issued_in:?}: RSS {base} -> {peak} KiB, \
         {per_ticket:.2} KiB per ticket",
        auth.len()
    );
    assert!(
        per_ticket <= 12.0,
        "{per_ticket:.2} KiB per ticket for a {} byte body",
        auth.len()
    );
    // The sweeper removes every ticket once its life is over, with no
    // request to prompt it, and hands the memory back.
    let deadline = Instant::now() + Duration::from_secs(15);
    while tickets_gauge(p.addr).await != 0 {
        assert!(Instant::now() < deadline, "tickets never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bound = base + base / 10;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = procfs::rss_kib(pid).expect("server gone");
    while after > bound && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = procfs::rss_kib(pid).expect("server gone");
    }
    eprintln!("RSS after the tickets expired: {after} KiB (bound {bound})");
    assert!(
        after <= bound,
        "RSS {after} KiB not back within 10% of {base} KiB after the tickets expired (peak {peak})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_count_against_the_per_address_limits() {
    // The session cap: tickets and sessions together.
    let server = Server::start(Config {
        max_sessions_per_ip: 5,
        ..patient()
    })
    .await;
    let addr = server.addr;
    let answers = pipelined("127.0.0.2", addr, ticket_request("{}"), 8).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let (_, head, body) = &answers[5];
    assert_eq!(header_in(head, "retry-after").as_deref(), Some("5"));
    assert_eq!(body, br#"{"error":"too many sessions from this address"}"#);
    // Nor may the address start a session without one.
    assert_eq!(handshake_from("127.0.0.2", addr, "").await.status, 429);
    // A redeemed ticket becomes its session and takes no second slot: the
    // address still holds five.
    let (status, sid) = redeem_from("127.0.0.2", addr, &ticket_in(&answers[0].2)).await;
    assert_eq!(status, 200);
    let sid = sid.unwrap();
    let s = server.io.stats();
    assert_eq!((s.sessions, s.count, s.tickets), (1, 1, 4));
    assert_eq!(ticket_from("127.0.0.2", addr, "{}").await.0, 429);
    // Its session ends: one slot comes back.
    assert_eq!(
        post(addr, &format!("/close?sid={sid}"), b"").await.status,
        204
    );
    server.wait_sessions(0, WAIT).await;
    assert_eq!(ticket_from("127.0.0.2", addr, "{}").await.0, 200);
    assert_eq!(ticket_from("127.0.0.2", addr, "{}").await.0, 429);
    // Another address is not affected.
    assert_eq!(ticket_from("127.0.0.3", addr, "{}").await.0, 200);
    assert_eq!(server.io.stats().tickets, 6);

    // The new-session rate: a ticket takes the token, its session does not.
    let server = Server::start(Config {
        max_new_sessions_per_ip: 3,
        ..patient()
    })
    .await;
    let addr = server.addr;
    let answers = pipelined("127.0.0.2", addr, ticket_request("{}"), 4).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let (_, head, body) = &answers[3];
    assert_eq!(header_in(head, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        body,
        br#"{"error":"too many new sessions from this address, retry later"}"#
    );
    for (_, _, body) in &answers[..3] {
        assert_eq!(
            redeem_from("127.0.0.2", addr, &ticket_in(body)).await.0,
            200
        );
    }
    let s = server.io.stats();
    assert_eq!((s.sessions, s.count, s.tickets), (3, 3, 0));

    // The ticket cap, which is on with every other per-address limit off.
    let server = Server::start(Config {
        max_tickets_per_ip: 3,
        ticket_ttl_ms: 1_000,
        ..patient()
    })
    .await;
    let addr = server.addr;
    let answers = pipelined("127.0.0.2", addr, ticket_request("{}"), 5).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (_, head, body) = &answers[3];
    assert_eq!(header_in(head, "retry-after").as_deref(), Some("1"));
    assert_eq!(
        body,
        br#"{"error":"too many handshake tickets from this address, retry later"}"#
    );
    // Redeeming one frees its place; sessions are not capped here.
    assert_eq!(
        redeem_from("127.0.0.2", addr, &ticket_in(&answers[0].2))
            .await
            .0,
        200
    );
    assert_eq!(ticket_from("127.0.0.2", addr, "{}").await.0, 200);
    assert_eq!(ticket_from("127.0.0.2", addr, "{}").await.0, 429);
    assert_eq!(handshake_from("127.0.0.2", addr, "").await.status, 200);
    // Expiry frees the rest, with no request to prompt it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.io.stats().tickets != 0 {
        assert!(Instant::now() < deadline, "tickets never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = pipelined("127.0.0.2", addr, ticket_request("{}"), 4).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
}

#[tokio::test]
async fn the_ticket_cap_falls_back_to_its_env_var() {
    let mut cmd = support::process::ssio(&[], 0);
    cmd.env("SSIO_MAX_TICKETS_PER_IP", "2");
    let p = support::process::spawn(cmd, Duration::from_secs(10))
        .await
        .unwrap();
    let answers = pipelined("127.0.0.2", p.addr, ticket_request("{}"), 3).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(tickets_gauge(p.addr).await, 2);
}

/// One address floods `POST /handshake` until the server stops giving it
/// tickets, then goes on flooding while another address asks for one.
async fn ticket_flood_spares_others(config: Config, label: &str) {
    let server = Server::start(Config {
        max_sessions: 2_000,
        ..config
    })
    .await;
    let addr = server.addr;
    let flood = ticket_request(r#"{"token":"flood"}"#);
    let first = pipelined("127.0.0.2", addr, flood.clone(), 3_000).await;
    let held = first.iter().filter(|(s, _, _)| *s == 200).count();
    assert_eq!(server.io.stats().tickets, held, "{label}");
    let second = tokio::spawn(async move { pipelined("127.0.0.2", addr, flood, 3_000).await });
    let t0 = Instant::now();
    let ticket = loop {
        let (status, _, body) = ticket_from("127.0.0.3", addr, r#"{"token":"other"}"#).await;
        if status == 200 {
            break ticket_in(&body);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{label}: another address still refused ({status}) after 2 s, \
             the flooder holding {held} tickets"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "{label}: the flooder holds {held} tickets; another address got one after {:?}",
        t0.elapsed()
    );
    let second = second.await.unwrap();
    let more = second.iter().filter(|(s, _, _)| *s == 200).count();
    let refused = second.iter().find(|(s, _, _)| *s != 200).unwrap();
    assert_eq!(refused.0, 429, "{label}");
    // The counts are exact: the other address's ticket becomes one session,
    // counted once, and every unredeemed ticket is still outstanding.
    assert_eq!(redeem_from("127.0.0.3", addr, &ticket).await.0, 200);
    let s = server.io.stats();
    assert_eq!(
        (s.sessions, s.count, s.tickets),
        (1, 1, held + more),
        "{label}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_flood_from_one_address_locks_nobody_out_at_default_settings() {
    ticket_flood_spares_others(patient(), "default limits").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_flood_from_one_address_locks_nobody_out_with_per_address_limits() {
    let config = Config {
        max_sessions_per_ip: 100,
        max_new_sessions_per_ip: 50,
        ..patient()
    };
    ticket_flood_spares_others(config, "per-address limits on").await;
}

/// A browser-sized `GET /events` head: what each reset stream of a flood
/// leaves behind, if anything keeps it.
fn browser_head() -> String {
    let mut head = String::from("GET /events HTTP/1.1\r\nHost: localhost\r\n");
    head.push_str("User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n");
    head.push_str("Accept: text/event-stream\r\nAccept-Language: en-US,en;q=0.9\r\nCache-Control: no-cache\r\n");
    head.push_str(&format!("Cookie: session={}\r\n", "c".repeat(1_500)));
    head.push_str("\r\n");
    head
}

/// Opens `total` streams from `conns` tasks at once, resetting each as soon
/// as its head arrives.
async fn open_and_reset(addr: SocketAddr, conns: u32, total: usize) {
    let opened = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for salt in 0..conns {
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let head = browser_head();
            while opened.load(Ordering::Relaxed) < total {
                let Ok(mut s) = loopback::connect(addr, salt).await else {
                    continue;
                };
                if s.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                let mut buf = [0u8; 512];
                if let Ok(Ok(n)) = timeout(WAIT, s.read(&mut buf)).await {
                    if buf[..n].starts_with(b"HTTP/1.1 200") {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    timeout(Duration::from_secs(30), all)
        .await
        .expect("the flood took over 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_and_reset_flood_keeps_the_away_table_bounded_and_an_innocent_client_resumes() {
    let p = spawn_ssio(&[], 0, &["--max-sessions", "1000"]).await;
    let pid = p.pid;
    // Warm up: a full away table once, so what is measured next is growth.
    open_and_reset(p.addr, 8, 1_000).await;
    let base = procfs::rss_kib(pid).expect("server gone");
    let most = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (most, addr) = (most.clone(), p.addr);
        tokio::spawn(async move {
            loop {
                let s = get(addr, "/stats").await.json();
                let away = s["away"].as_u64().expect("/stats shows away") as usize;
                most.fetch_max(away, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let t = Instant::now();
    let opened = 3_000;
    open_and_reset(p.addr, 8, opened).await;
    let took = t.elapsed();
    watcher.abort();
    let peak = procfs::rss_kib(pid).expect("server gone");
    let most = most.load(Ordering::Relaxed);
    eprintln!(
        "{opened} streams opened and reset in {took:?}: most away {most}; \
         RSS KiB {base} -> {peak}"
    );
    assert!(most <= 1_000, "{most} away sessions at --max-sessions 1000");
    assert!(
        peak < base + 32 * 1024,
        "RSS grew from {base} to {peak} KiB"
    );

    // Streams reset in the last reconnect grace are still live and counted
    // (and at this rate fill --max-sessions); then they are away too.
    let deadline = Instant::now() + WAIT;
    loop {
        let s = get(p.addr, "/stats").await.json();
        if s["sessions"] == json!(0) {
            assert_eq!(s["away"], json!(1_000), "{s}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flood's sessions stayed live: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An innocent client gets in, goes, and comes back to its own session.
    let mut r = Reader::new(Sse::open(p.addr).await);
    let first = r.next().await;
    let id = first.id.expect("a cursor");
    let sid = r.sse.sid.clone();
    r.sse.set_reset_on_drop();
    drop(r);
    let deadline = Instant::now() + WAIT;
    loop {
        let s = get(p.addr, "/stats").await.json();
        if s["sessions"] == json!(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the innocent stream never went away: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut back = Reader::new(Sse::open_with(p.addr, "/events", &[("Last-Event-ID", &id)]).await);
    let c = back.next().await;
    let data: Value = serde_json::from_str(&c.data).unwrap();
    assert_eq!(
        (data["sid"].clone(), data["recovered"].clone()),
        (json!(sid), json!(true))
    );
    let s = get(p.addr, "/stats").await.json();
    assert_eq!(
        (s["sessions"].clone(), s["count"].clone()),
        (json!(1), json!(1))
    );
    // The table was full of the flood's sessions: the innocent one took
    // the place of the oldest, and left it again by resuming.
    assert_eq!(s["away"], json!(999), "{s}");
}

/// The server API as an attacker or a runaway backend pushes on it: keys
/// from the variable (two, comma-separated, as a rotation has them) and
/// nothing else opens it, and 20,000 distinct idempotency keys leave only
/// the newest `--api-max-idempotency-keys` remembered.
#[tokio::test]
async fn the_server_api_opens_only_to_its_keys_and_forgets_the_oldest_idempotency_keys() {
    let mut cmd = support::process::ssio(&[], 0);
    cmd.env("SSIO_API_KEY", "first,second")
        .args(["--api-max-idempotency-keys", "100"]);
    let p = support::process::spawn(cmd, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let call = |key: &'static str, body: String| async move {
        let auth = format!("Bearer {key}");
        request(
            p.addr,
            "POST",
            "/api/batch",
            &[("Authorization", &auth)],
            body.as_bytes(),
        )
        .await
    };
    let none = r#"{"commands":[]}"#.to_string();
    assert_eq!(call("first", none.clone()).await.status, 200);
    assert_eq!(call("second", none.clone()).await.status, 200);
    for wrong in ["first,second", "firs", "third", ""] {
        let r = call(wrong, none.clone()).await;
        assert_eq!(
            (r.status, r.json()),
            (401, json!({ "error": "missing or invalid API key" })),
            "{wrong:?}"
        );
    }
    let batch = |from: usize| {
        let commands: Vec<Value> = (from..from + 100)
            .map(|k| {
                json!({ "method": "publish",
                        "params": { "event": "e", "idempotency_key": format!("k{k}") } })
            })
            .collect();
        json!({ "commands": commands }).to_string()
    };
    let cursor = |r: &Resp, i: usize| r.json()["replies"][i]["result"]["cursor"].clone();
    for from in (0..20_000).step_by(100) {
        let r = call("first", batch(from)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            cursor(&r, 99),
            json!(format!(
                "00000000-0000-0000-0000-000000000000:{}:0",
                from + 100
            ))
        );
    }
    // The last hundred are answered from the table, the rest publish anew.
    let r = call("first", batch(19_900)).await;
    assert_eq!(
        cursor(&r, 0),
        json!("00000000-0000-0000-0000-000000000000:19901:0")
    );
    let r = call("first", batch(0)).await;
    assert_eq!(
        cursor(&r, 99),
        json!("00000000-0000-0000-0000-000000000000:20100:0")
    );
}

/// The admin page as a client with no key gets it: only the key form is
/// shown, the dashboard is hidden until a key is accepted, and nothing in
/// the page can carry the key anywhere but an `Authorization` header.
#[tokio::test]
async fn the_admin_page_without_a_key_serves_only_the_key_form_and_never_puts_the_key_in_a_url_or_local_storage(
) {
    let s = Server::start(fast_config()).await;
    let page = get(s.addr, "/admin").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control").as_deref(), Some("no-cache"));
    let html = page.text();
    // One form is shown, the key form; every other form is inside the
    // dashboard, which starts hidden.
    let (before, dashboard) = html
        .split_once("<div id=\"dashboard\" hidden>")
        .expect("the dashboard starts hidden");
    assert_eq!(before.matches("<form").count(), 1, "{before}");
    assert!(before.contains("<form id=\"key-form\" method=\"post\""));
    assert_eq!(dashboard.matches("<form").count(), 2);
    // The key input has no name, so no form submission can carry it, and
    // the policy lets no form navigate at all: with scripts off, a
    // submitted key still cannot land in a query string.
    let input = html
        .split("<input")
        .find(|i| i.contains("id=\"key\""))
        .expect("the key input");
    let input = &input[..input.find('>').unwrap()];
    assert!(!input.contains("name="), "{input}");
    assert!(input.contains("type=\"password\""), "{input}");
    assert!(html.contains("form-action 'none'"));
    assert!(html.contains("connect-src 'self'"));
    assert!(html.contains("<meta name=\"referrer\" content=\"no-referrer\">"));
    assert!(!html.contains("<script>"), "no inline script");

    let js = get(s.addr, "/public/admin.js").await;
    assert_eq!(js.status, 200);
    let js = js.text();
    // The key is kept in the tab's sessionStorage and nowhere else.
    for leak in [
        "localStorage.",
        "localStorage[",
        "document.cookie",
        "location.search",
        "location.href =",
        "history.",
        "URLSearchParams",
        "?key",
    ] {
        assert!(!js.contains(leak), "admin.js uses {leak}");
    }
    assert_eq!(js.matches("sessionStorage.setItem(").count(), 1);
    // The only way the key leaves: the Authorization header.
    assert_eq!(js.matches("'Bearer ' + key").count(), 1);
    assert_eq!(get(s.addr, "/public/admin.css").await.status, 200);
}
