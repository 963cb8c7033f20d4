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
    spawn_with(
        Command::new(env!("CARGO_BIN_EXE_ssio"))
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args),
    )
}

/// Starts the binary with at most `nofile` open descriptors.
fn spawn_limited(nofile: u32, args: &[&str]) -> Proc {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ssio"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args);
    spawn_with(&mut c)
}

fn spawn_with(cmd: &mut Command) -> Proc {
    let mut child = cmd
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
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no startup line");
    let url = line
        .split("listening on http://")
        .nth(1)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr: SocketAddr = url.trim().parse().unwrap();
    assert_ne!(addr.port(), 0, "the log line must name the bound port");
    Proc { child, addr }
}

/// CPU time (user + system) the process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15, in clock ticks of 10 ms.
    Duration::from_millis((f[11] + f[12]) * 10)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn help_lists_every_flag_with_its_env_and_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssio"))
        .arg("--help")
        .output()
        .unwrap();
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
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{env} missing from --help"
        );
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing for {flag}"
        );
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
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
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
    eprintln!(
        "100000 handshakes in {:?}; stats right after: {}",
        t.elapsed(),
        r.text()
    );
    wait_stats_zero(p.addr).await;
    let after = rss_kib(pid);
    eprintln!("RSS KiB: baseline {base}, peak {peak}, after reclaim {after}");
    assert!(
        after <= base + base / 10,
        "RSS {after} KiB not back within 10% of baseline {base} KiB (peak {peak})"
    );
}

async fn wait_stats_zero(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = get(addr, "/stats").await;
        if r.text() == r#"{"sessions":0,"sse":0,"polling":0,"count":0}"# {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sessions never reclaimed: {}",
            r.text()
        );
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
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("flood timed out")
            .unwrap();
    }
}

async fn pipelined_handshakes(addr: SocketAddr, n: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..n {
            w.write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_keeps_serving_does_not_spin_and_recovers() {
    let p = spawn_limited(64, &["--header-timeout", "60000"]);
    let pid = p.child.id();
    let mut a = Sse::connect(p.addr).await;
    a.wait_count(1, WAIT).await;
    // A keep-alive connection opened before the flood.
    let mut kept = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    keep_alive_get(&mut kept, "/stats").await;

    // Flood: far more connections than the server has descriptors for.
    let mut flood = Vec::new();
    for _ in 0..150 {
        flood.push(tokio::net::TcpStream::connect(p.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(
        open >= 60,
        "the flood should exhaust the 64 descriptors, {open} open"
    );
    let before = cpu_time(pid);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_time(pid) - before;
    let share = used.as_secs_f64() / t.elapsed().as_secs_f64();
    eprintln!(
        "server CPU while out of descriptors: {used:?} over {:?} ({:.1}%)",
        t.elapsed(),
        share * 100.0
    );
    assert!(share < 0.15, "accept loop spins: {:.1}% CPU", share * 100.0);

    // Existing connections are still served.
    let body = keep_alive_get(&mut kept, "/stats").await;
    assert!(body.contains(r#""sessions":1"#), "{body}");
    assert!(cpu_time(pid) >= before);

    // Descriptors free up: new clients are accepted again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut b = loop {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), try_sse(p.addr)).await {
            break s;
        }
        assert!(Instant::now() < deadline, "server never accepted again");
    };
    b.wait_count(2, WAIT).await;
    a.wait_count(2, WAIT).await;
}

async fn try_sse(addr: SocketAddr) -> Result<Sse, ()> {
    tokio::spawn(async move { Sse::connect(addr).await })
        .await
        .map_err(|_| ())
}

/// One GET on an open keep-alive connection; returns the body.
async fn keep_alive_get(s: &mut tokio::net::TcpStream, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let fut = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = header_in(head, "content-length").unwrap().parse().unwrap();
                if body.len() >= len {
                    return body.to_string();
                }
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("keep-alive request timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_on_the_same_port_takes_the_clients_back() {
    let mut first = spawn(&["--shutdown-timeout", "3000"]);
    let port = first.addr.port().to_string();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Sse::connect(first.addr).await);
    }
    for c in clients.iter_mut() {
        c.wait_count(20, WAIT).await;
    }
    unsafe_kill(first.child.id(), "TERM");
    for c in clients.iter_mut() {
        assert_eq!(
            c.next_event().await,
            ("disconnect".into(), r#""server shutdown""#.into())
        );
    }
    let status = first.child.wait().unwrap();
    assert!(status.success());
    let second = spawn_with(Command::new(env!("CARGO_BIN_EXE_ssio")).args([
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]));
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
        r#"{"sessions":20,"sse":20,"polling":0,"count":20}"#
    );
}
