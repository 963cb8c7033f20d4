//! The `ssio` binary itself: flags, the startup line, signals, and memory
//! reclaimed after a flood of abandoned sessions.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a free port and reads the address from its log line.
fn spawn(args: &[&str]) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssio"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx.recv_timeout(Duration::from_secs(10)).expect("no startup line");
    let url = line.split("listening on http://").nth(1).unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: SocketAddr = url.trim().parse().unwrap();
    assert_ne!(addr.port(), 0, "the log line must name the bound port");
    Proc { child, addr }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn help_lists_every_flag_with_its_env_and_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssio")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        ("--host", "HOST", "0.0.0.0"),
        ("--port", "PORT", "3000"),
        ("--ping-interval", "PING_INTERVAL", "25000"),
        ("--ping-timeout", "PING_TIMEOUT", "20000"),
        ("--max-payload", "MAX_PAYLOAD", "65536"),
        ("--max-sessions", "MAX_SESSIONS", "200000"),
        ("--max-event-name", "MAX_EVENT_NAME", "256"),
        ("--max-pending-events", "MAX_PENDING_EVENTS", "1024"),
        ("--max-header-bytes", "MAX_HEADER_BYTES", "16384"),
        ("--header-timeout", "HEADER_TIMEOUT", "10000"),
        ("--body-timeout", "BODY_TIMEOUT", "10000"),
        ("--shutdown-timeout", "SHUTDOWN_TIMEOUT", "10000"),
        ("--backlog", "BACKLOG", "4096"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(help.contains(&format!("[env: {env}=")), "{env} missing from --help");
        assert!(help.contains(&format!("[default: {default}]")), "default {default} missing for {flag}");
    }
}

#[test]
fn env_fallbacks_apply() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ssio"))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("PING_INTERVAL", "1234")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn sigterm_ends_streams_with_disconnect_and_the_process_exits() {
    let mut p = spawn(&["--shutdown-timeout", "3000"]);
    let mut a = Sse::connect(p.addr).await;
    a.wait_count(1, WAIT).await;
    let t = Instant::now();
    unsafe_kill(p.child.id(), "TERM");
    assert_eq!(a.next_event().await, ("disconnect".into(), r#""server shutdown""#.into()));
    assert_eq!(a.next_chunk_within(WAIT).await, None);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "process did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(t.elapsed() < Duration::from_secs(3));
}

fn unsafe_kill(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_abandoned_handshakes_are_reclaimed() {
    let p = spawn(&["--ping-interval", "500", "--ping-timeout", "6000"]);
    let pid = p.child.id();
    // Warm up allocator and runtime, then take the baseline.
    flood(p.addr, 8, 1_000).await;
    wait_stats_zero(p.addr).await;
    let base = rss_kib(pid);
    let t = Instant::now();
    flood(p.addr, 8, 12_500).await;
    let peak = rss_kib(pid);
    let r = get(p.addr, "/stats").await;
    eprintln!("100000 handshakes in {:?}; stats right after: {}", t.elapsed(), r.text());
    wait_stats_zero(p.addr).await;
    let after = rss_kib(pid);
    eprintln!("RSS KiB: baseline {base}, peak {peak}, after reclaim {after}");
    assert!(after <= base + base / 10 + 1024, "RSS {after} KiB not back near baseline {base} KiB (peak {peak})");
}

async fn wait_stats_zero(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(addr, "/stats").await;
        if r.text() == r#"{"sessions":0,"sse":0,"polling":0,"count":0}"# {
            return;
        }
        assert!(Instant::now() < deadline, "sessions never reclaimed: {}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `conns` keep-alive connections, each pipelining `n` handshakes.
async fn flood(addr: SocketAddr, conns: usize, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(pipelined_handshakes(addr, n)));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t).await.expect("flood timed out").unwrap();
    }
}

async fn pipelined_handshakes(addr: SocketAddr, n: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..n {
            w.write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        }
        w
    });
    let mut r = BufReader::new(r);
    for _ in 0..n {
        let mut len = 0;
        let mut first = true;
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if first {
                assert!(line.starts_with("HTTP/1.1 200"), "{line}");
                first = false;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
    }
    drop(writer.await.unwrap());
}
