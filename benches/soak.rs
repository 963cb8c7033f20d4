//! Soak: thousands of clients on both transports under random churn for ten
//! minutes, against the release server in its own process.
//!
//! `cargo bench --bench soak -- [--seconds 600] [--clients 5000]`
//!
//! Pass criteria, checked at the end and printed with the figures:
//! - RSS is flat during churn after warm-up: the trend over the second half
//!   adds less than 2% of the mean per minute;
//! - every live client's last `user count` equals the number of live clients,
//!   and the server's `/stats` agrees;
//! - zero errors (a refused request, a stream that ended unasked, a live
//!   poller told its session is unknown).
//!
//! Writes `target/bench/soak.json`, `target/bench/soak.csv` (RSS samples) and
//! `target/bench/soak.svg` (the RSS curve).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;
use tokio::sync::oneshot;

const PING_INTERVAL_MS: u64 = 5_000;
const PING_TIMEOUT_MS: u64 = 5_000;
/// Churn: this share of clients is replaced every tick.
const TICK: Duration = Duration::from_millis(100);
const CHURN_PER_TICK_PERMILLE: usize = 4;
/// Samples before this are warm-up and not judged for flatness.
const WARM_UP: Duration = Duration::from_secs(60);

struct Args {
    seconds: u64,
    clients: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 600,
        clients: 5_000,
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--seconds" => {
                a.seconds = v[i + 1].parse().expect("--seconds N");
                i += 1;
            }
            "--clients" => {
                a.clients = v[i + 1].parse().expect("--clients N");
                i += 1;
            }
            _ => {} // cargo passes --bench
        }
        i += 1;
    }
    a
}

/// Shared tallies.
#[derive(Default)]
struct Tally {
    errors: AtomicU64,
    connects: AtomicU64,
    leaves: AtomicU64,
}

/// A running client: its newest count and how to stop it.
struct Client {
    last: Arc<AtomicI64>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Source addresses 127.0.0.2 and up, so no single source runs out of ports.
fn source(n: u64) -> SocketAddr {
    let host = 2 + (n % 200) as u8;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0)
}

async fn connect(server: SocketAddr, n: u64) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(source(n))?;
    s.connect(server).await
}

/// Finds complete `user count` events in `buf`, returns the newest count and
/// drops what was consumed. Chunk-size lines between events are skipped.
fn scan_counts(buf: &mut Vec<u8>) -> Option<i64> {
    const KEY: &[u8] = b"event: user count\ndata: ";
    let mut newest = None;
    let mut consumed = 0;
    let mut from = 0;
    while let Some(pos) = buf[from..].windows(KEY.len()).position(|w| w == KEY) {
        let start = from + pos + KEY.len();
        let Some(end) = buf[start..].iter().position(|b| *b == b'\n') else {
            break;
        };
        newest = std::str::from_utf8(&buf[start..start + end])
            .ok()?
            .parse()
            .ok();
        consumed = start + end;
        from = consumed;
    }
    if consumed > 0 {
        buf.drain(..consumed);
    } else if buf.len() > 4096 {
        let keep = buf.len() - KEY.len();
        buf.drain(..keep);
    }
    newest
}

fn spawn_sse(server: SocketAddr, n: u64, tally: Arc<Tally>) -> Client {
    let last = Arc::new(AtomicI64::new(-1));
    let (tx, mut rx) = oneshot::channel::<()>();
    let l = last.clone();
    let task = tokio::spawn(async move {
        let Ok(mut s) = connect(server, n).await else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if s.write_all(b"GET /events HTTP/1.1\r\nHost: soak\r\n\r\n")
            .await
            .is_err()
        {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tally.connects.fetch_add(1, Ordering::Relaxed);
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        loop {
            tokio::select! {
                _ = &mut rx => {
                    // Half the leavers vanish with a reset, like a killed tab.
                    if n % 2 == 0 {
                        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                    }
                    tally.leaves.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                r = s.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(k) => {
                        buf.extend_from_slice(&chunk[..k]);
                        if let Some(c) = scan_counts(&mut buf) {
                            l.store(c, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    });
    Client {
        last,
        stop: Some(tx),
        task,
    }
}

/// One request on a fresh connection; (status, body).
async fn http(server: SocketAddr, n: u64, method: &str, path: &str) -> Option<(u16, String)> {
    let s = connect(server, n).await.ok()?;
    let mut r = BufReader::new(s);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    r.get_mut().write_all(req.as_bytes()).await.ok()?;
    let mut status = String::new();
    r.read_line(&mut status).await.ok()?;
    let code = status.split(' ').nth(1)?.parse().ok()?;
    let mut rest = String::new();
    r.read_to_string(&mut rest).await.ok()?;
    let body = rest
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

fn spawn_poller(server: SocketAddr, n: u64, tally: Arc<Tally>) -> Client {
    let last = Arc::new(AtomicI64::new(-1));
    let (tx, mut rx) = oneshot::channel::<()>();
    let l = last.clone();
    let task = tokio::spawn(async move {
        let sid = match http(server, n, "GET", "/poll").await {
            Some((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                v["sid"].as_str().unwrap_or_default().to_string()
            }
            _ => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        tally.connects.fetch_add(1, Ordering::Relaxed);
        let path = format!("/poll?sid={sid}");
        loop {
            tokio::select! {
                _ = &mut rx => {
                    // Half the leavers say goodbye, half just stop polling.
                    if n % 2 == 0 && http(server, n, "POST", &format!("/close?sid={sid}")).await.map(|r| r.0) != Some(204) {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.leaves.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                r = http(server, n, "GET", &path) => match r {
                    Some((200, body)) => {
                        if let Ok(serde_json::Value::Array(events)) = serde_json::from_str(&body) {
                            for e in events {
                                if e["event"] == "user count" {
                                    l.store(e["data"].as_i64().unwrap_or(-1), Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    _ => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    });
    Client {
        last,
        stop: Some(tx),
        task,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Least-squares slope of (seconds, KiB) samples, in KiB per minute.
fn slope_kib_per_min(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let cov: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let var: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

fn svg(samples: &[(f64, u64)], title: &str) -> String {
    let (w, h, pad) = (720.0, 320.0, 50.0);
    let tmax = samples.last().map(|s| s.0).unwrap_or(1.0).max(1.0);
    let rmax = samples.iter().map(|s| s.1).max().unwrap_or(1).max(1) as f64 / 1024.0 * 1.1;
    let pts: Vec<String> = samples
        .iter()
        .map(|(t, r)| {
            let x = pad + t / tmax * (w - 2.0 * pad);
            let y = h - pad - (*r as f64 / 1024.0) / rmax * (h - 2.0 * pad);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{pad}" y="20">{title}</text>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/>
<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="black"/>
<text x="{pad}" y="{tl}">0 s</text><text x="{r}" y="{tl}" text-anchor="end">{tmax:.0} s</text>
<text x="{lx}" y="{b}" text-anchor="end">0</text><text x="{lx}" y="{pad}" text-anchor="end">{rmax:.0} MiB</text>
<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{pts}"/>
</svg>
"##,
        b = h - pad,
        r = w - pad,
        tl = h - pad + 16.0,
        lx = pad - 4.0,
        pts = pts.join(" ")
    )
}

#[tokio::main]
async fn main() {
    let a = args();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_ssio"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--ping-interval", &PING_INTERVAL_MS.to_string()])
        .args(["--ping-timeout", &PING_TIMEOUT_MS.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ssio");
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("no startup line")
        .unwrap()
        .unwrap();
    let server: SocketAddr = line
        .split("listening on http://")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    eprintln!(
        "soak: {} clients for {} s against {server} (pid {pid})",
        a.clients, a.seconds
    );

    let tally = Arc::new(Tally::default());
    let mut next = 0u64;
    let mut clients: Vec<Client> = Vec::new();
    let spawn = |n: &mut u64, tally: &Arc<Tally>| {
        *n += 1;
        if *n % 2 == 0 {
            spawn_sse(server, *n, tally.clone())
        } else {
            spawn_poller(server, *n, tally.clone())
        }
    };
    for _ in 0..a.clients {
        clients.push(spawn(&mut next, &tally));
        if clients.len() % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let start = Instant::now();
    let end = start + Duration::from_secs(a.seconds);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    while Instant::now() < end {
        // Replace a random few.
        let k = (a.clients * CHURN_PER_TICK_PERMILLE / 1000).max(1);
        for _ in 0..k {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = (rng % clients.len() as u64) as usize;
            let mut old = std::mem::replace(&mut clients[i], spawn(&mut next, &tally));
            if let Some(tx) = old.stop.take() {
                let _ = tx.send(());
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(2) {
            last_sample = Instant::now();
            samples.push((start.elapsed().as_secs_f64(), rss_kib(pid)));
        }
        tokio::time::sleep(TICK).await;
    }

    // Flatness is judged on the churn phase only: once churn stops, every
    // poll is held for a whole pingInterval, so more of them are open at once
    // and RSS steps up by design (one held poll connection each).
    let churn_samples = samples.clone();
    // Churn stops; abandoned pollers time out; then every client must agree.
    let settle = Duration::from_millis(PING_INTERVAL_MS + PING_TIMEOUT_MS + 3_000);
    eprintln!("soak: churn stopped; settling for {settle:?}");
    tokio::time::sleep(settle).await;
    samples.push((start.elapsed().as_secs_f64(), rss_kib(pid)));
    let live = clients.iter().filter(|c| !c.task.is_finished()).count() as i64;
    let stats = http(server, 0, "GET", "/stats")
        .await
        .map(|r| r.1)
        .unwrap_or_default();
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
    let wrong = clients
        .iter()
        .filter(|c| c.last.load(Ordering::Relaxed) != live)
        .count();
    let judged: Vec<(f64, u64)> = churn_samples
        .iter()
        .copied()
        .filter(|s| s.0 >= WARM_UP.as_secs_f64())
        .collect();
    let half: Vec<(f64, u64)> = judged[judged.len() / 2..].to_vec();
    let slope = slope_kib_per_min(&half);
    let mean = half.iter().map(|s| s.1 as f64).sum::<f64>() / half.len().max(1) as f64;
    // Flat: over the second half of the churn, the trend would add less than
    // 2% of the mean per minute.
    let flat = slope.abs() < 0.02 * mean;
    let first = judged.first().map(|s| s.1).unwrap_or(0);
    let end_of_churn = churn_samples.last().map(|s| s.1).unwrap_or(0);
    let lastr = samples.last().map(|s| s.1).unwrap_or(0);
    let errors = tally.errors.load(Ordering::Relaxed);
    let ok = flat
        && wrong == 0
        && errors == 0
        && stats["sessions"].as_i64() == Some(live)
        && stats["count"].as_i64() == Some(live);

    let result = serde_json::json!({
        "seconds": a.seconds,
        "clients": a.clients,
        "connects": tally.connects.load(Ordering::Relaxed),
        "leaves": tally.leaves.load(Ordering::Relaxed),
        "errors": errors,
        "live_clients": live,
        "server_stats": stats,
        "clients_with_wrong_count": wrong,
        "rss_kib_after_warm_up": first,
        "rss_kib_end_of_churn": end_of_churn,
        "rss_kib_churn_mean_second_half": mean.round(),
        "rss_slope_second_half_kib_per_min": slope,
        "rss_flat": flat,
        "rss_kib_after_settle": lastr,
        "pass": ok,
    });
    std::fs::write(
        out_dir.join("soak.json"),
        serde_json::to_string_pretty(&result).unwrap(),
    )
    .unwrap();
    let csv: String = samples
        .iter()
        .map(|(t, r)| format!("{t:.1},{r}\n"))
        .collect();
    std::fs::write(out_dir.join("soak.csv"), format!("seconds,rss_kib\n{csv}")).unwrap();
    let title = format!(
        "ssio RSS, {} clients, SSE + long-poll, random churn",
        a.clients
    );
    std::fs::write(out_dir.join("soak.svg"), svg(&samples, &title)).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    for c in clients {
        c.task.abort();
    }
    let _ = child.kill().await;
    if !ok {
        eprintln!("soak: FAILED");
        std::process::exit(1);
    }
}
