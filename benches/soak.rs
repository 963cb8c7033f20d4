//! Soak: thousands of clients on both transports under random churn for ten
//! minutes, against the release server in its own process.
//!
//! `cargo bench --bench soak -- [--seconds 600] [--clients 5000]`
//!
//! The clients are the shared ones of `tests/support`, each connecting from
//! its own rotating loopback source address.
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

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::oneshot;

use support::http::HttpConn;
use support::poll::PollClient;
use support::sse::{Seen, SseClient};
use support::{process, procfs};

const PING_INTERVAL_MS: u64 = 5_000;
const PING_TIMEOUT_MS: u64 = 5_000;
/// Churn: this share of clients is replaced every tick.
const TICK: Duration = Duration::from_millis(100);
const CHURN_PER_TICK_PERMILLE: usize = 4;
/// Samples before this are warm-up and not judged for flatness.
const WARM_UP: Duration = Duration::from_secs(60);
/// Longest a poll may be held: the ping interval plus slack.
const HELD: Duration = Duration::from_millis(PING_INTERVAL_MS + 10_000);

/// Thousands of ssio clients under random churn, against the release server.
#[derive(Parser)]
#[command(name = "soak", bin_name = "cargo bench --bench soak --")]
struct Args {
    /// How long the churn lasts
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Live clients, half SSE and half long-poll
    #[arg(long, default_value_t = 5_000)]
    clients: usize,
    /// Passed by `cargo bench`; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
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

fn spawn_sse(server: SocketAddr, n: u64, tally: Arc<Tally>) -> Client {
    let last = Arc::new(AtomicI64::new(-1));
    let (tx, mut rx) = oneshot::channel::<()>();
    let l = last.clone();
    let task = tokio::spawn(async move {
        let Ok(mut c) = SseClient::connect(server, n as u32).await else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        tally.connects.fetch_add(1, Ordering::Relaxed);
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = &mut rx => {
                    // Half the leavers vanish with a reset, like a killed tab.
                    if n % 2 == 0 {
                        let _ = c.reset_on_drop();
                    }
                    tally.leaves.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                r = c.next(&mut seen) => match r {
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(()) => {
                        if let Some(&v) = seen.counts.last() {
                            l.store(v, Ordering::Relaxed);
                        }
                        seen.clear();
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

fn spawn_poller(server: SocketAddr, n: u64, tally: Arc<Tally>) -> Client {
    let last = Arc::new(AtomicI64::new(-1));
    let (tx, mut rx) = oneshot::channel::<()>();
    let l = last.clone();
    let task = tokio::spawn(async move {
        let Ok(mut c) = PollClient::connect(server, n as u32, HELD).await else {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        tally.connects.fetch_add(1, Ordering::Relaxed);
        let mut counts = Vec::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                r = c.next(&mut counts) => match r {
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Ok(()) => {
                        if let Some(&v) = counts.last() {
                            l.store(v, Ordering::Relaxed);
                        }
                        counts.clear();
                    }
                }
            }
        }
        // Half the leavers say goodbye, half just stop polling.
        if n % 2 == 0 && c.leave().await.is_err() {
            tally.errors.fetch_add(1, Ordering::Relaxed);
        }
        tally.leaves.fetch_add(1, Ordering::Relaxed);
    });
    Client {
        last,
        stop: Some(tx),
        task,
    }
}

/// The server's `/stats`, or `Null` if it did not answer.
async fn stats(server: SocketAddr) -> serde_json::Value {
    let fetch = async {
        let mut c = HttpConn::open(server, 0).await.ok()?;
        let (_, body) = c.request("GET", "/stats", b"").await.ok()?;
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
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
    let a = Args::parse();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).unwrap();

    let mut cmd = process::ssio(&[], 0);
    cmd.args(["--ping-interval", &PING_INTERVAL_MS.to_string()])
        .args(["--ping-timeout", &PING_TIMEOUT_MS.to_string()]);
    let mut p = process::spawn(cmd, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("soak: {e}"));
    let (server, pid) = (p.addr, p.pid);
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
            samples.push((
                start.elapsed().as_secs_f64(),
                procfs::rss_kib(pid).unwrap_or(0),
            ));
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
    samples.push((
        start.elapsed().as_secs_f64(),
        procfs::rss_kib(pid).unwrap_or(0),
    ));
    let live = clients.iter().filter(|c| !c.task.is_finished()).count() as i64;
    let stats = stats(server).await;
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
    let _ = p.child.kill().await;
    if !ok {
        eprintln!("soak: FAILED");
        std::process::exit(1);
    }
}
