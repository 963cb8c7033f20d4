//! Pages: real Chromium pages on the demo, each in a browser context of its
//! own, against ssio and against the socket.io peer: the server's resident
//! memory per page once every page is loaded and shows the exact count.
//!
//! `cargo bench --bench pages -- [--pages 40] [--warm 1] [--servers ssio,socketio]`
//!
//! A page's cost is everything it leaves open on the server: its stream
//! and the idle kept-alive connections its page load leaves behind, so the
//! report counts the server's established connections as well. For ssio it
//! also reads `/metrics` before and after: of the count updates the pages
//! received, how many the fan-out's sweeper wrote itself (the fast path,
//! `ssio_fanout_swept_total`).
//!
//! The pages are opened by `benches/pages/pages.mjs` (playwright-core and
//! Debian's Chromium, launched as the browser suite launches it), one after
//! another, each once every earlier page shows the count before it, so
//! that page i of N receives exactly the counts i..=N and the pages
//! together N(N+1)/2. The server runs on core 0 and the browser on core 1.
//!
//! Writes `target/bench/pages.md`, the table it prints.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use support::http::HttpConn;
use support::{process, procfs};

/// Longest a server may take to print its listening line.
const START: Duration = Duration::from_secs(20);
/// Time given to a server, once idle, before its memory is read: freed
/// memory returned, timers of the last requests run.
const SETTLE: Duration = Duration::from_secs(2);
/// Two reads this close (KiB) mean the resident memory has settled.
const STABLE_KIB: u64 = 8;
/// Reads of a settling server's memory, and the time between them.
const STABLE_READS: usize = 20;
const STABLE_EVERY: Duration = Duration::from_millis(500);
/// The driver's bound for one page to load and for all pages to show its
/// count, twice its `SLOW` (tests/browser/helpers.mjs): the bench's own
/// bound per page.
const PER_PAGE: Duration = Duration::from_secs(30);

/// Real Chromium pages on the demo: server memory per page, ssio and socket.io.
#[derive(Parser)]
#[command(name = "pages", bin_name = "cargo bench --bench pages --")]
struct Args {
    /// Pages opened on each server, each in a browser context of its own
    #[arg(long, default_value_t = 40)]
    pages: usize,
    /// Pages opened before a second memory reading, which the figure per
    /// page past them starts from: what the first page costs the server
    /// once (buffers, caches, the allocator's first arenas) is not a cost
    /// per page; 0 gives that figure from the idle start only
    #[arg(long, default_value_t = 1)]
    warm: usize,
    /// The servers measured, in order
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Server::Ssio, Server::Socketio])]
    servers: Vec<Server>,
    /// Passed by `cargo bench`; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A server the pages are opened on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Server {
    /// The `ssio` binary `cargo bench` built, optimised.
    Ssio,
    /// socket.io 4.8 in Node (`benches/peer`).
    Socketio,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Ssio => "ssio",
            Server::Socketio => "socket.io",
        }
    }
}

/// What one server's run measured.
struct Row {
    server: Server,
    pages: usize,
    rss_before_kib: u64,
    /// With `--warm` pages open, and how many (0: not read).
    rss_warm_kib: u64,
    warm: usize,
    rss_after_kib: u64,
    /// The anonymous part (RssAnon) before and after: what the first page
    /// adds to RSS that is not the heap is the program's own code and data,
    /// faulted in the first time it runs, once per process.
    anon_before_kib: u64,
    anon_after_kib: u64,
    /// Whether two reads agreed within [`STABLE_KIB`] before the bound.
    settled: bool,
    /// The server's established TCP connections with every page open.
    connections: usize,
    /// From the first page's load until every page showed the final count.
    opened: Duration,
    /// Count updates the pages showed, summed over pages.
    received: usize,
    /// Whether page i showed exactly i..=N, for every i.
    exact: bool,
    /// ssio only: the metric deltas over the run.
    swept: Option<f64>,
    published: Option<f64>,
    deliveries: Option<f64>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs the browser suite's npm packages from its lockfile when
/// playwright-core is missing, and checks for Debian's Chromium.
fn ensure_browser() -> Result<(), String> {
    if !Path::new("/usr/bin/chromium").exists() {
        return Err(
            "no /usr/bin/chromium: apt-get install chromium (tests/browser/run.sh does)".into(),
        );
    }
    let dir = root().join("tests/browser");
    if dir.join("node_modules/playwright-core").exists() {
        return Ok(());
    }
    eprintln!("pages: installing the browser suite's packages (npm ci)");
    let st = std::process::Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if !st.success() {
        return Err(format!("npm ci in tests/browser failed: {st}"));
    }
    Ok(())
}

/// `server` started on 127.0.0.1, pinned to core 0.
async fn start(server: Server) -> Result<process::Spawned, String> {
    let cmd = match server {
        Server::Ssio => process::ssio(&["taskset", "-c", "0"], 0),
        Server::Socketio => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", "0", "node"])
                .arg(root().join("benches/peer/server.js"))
                .arg("0");
            cmd
        }
    };
    process::spawn(cmd, START).await
}

/// VmRSS once the server is idle: after [`SETTLE`], read until two reads in
/// a row agree within [`STABLE_KIB`], at most [`STABLE_READS`] times.
async fn settled_rss(pid: u32) -> Result<(u64, bool), String> {
    tokio::time::sleep(SETTLE).await;
    let read = || procfs::rss_kib(pid).ok_or_else(|| format!("server {pid} is gone"));
    let mut last = read()?;
    for _ in 1..STABLE_READS {
        tokio::time::sleep(STABLE_EVERY).await;
        let now = read()?;
        if now.abs_diff(last) <= STABLE_KIB {
            return Ok((now, true));
        }
        last = now;
    }
    Ok((last, false))
}

/// RssAnon, read right after [`settled_rss`] settled.
fn anon(pid: u32) -> Result<u64, String> {
    procfs::rss_anon_kib(pid).ok_or_else(|| format!("server {pid} is gone"))
}

/// The server's established TCP connections on its listening port.
fn established(port: u16) -> Result<usize, String> {
    let filter = format!("( sport = :{port} )");
    let out = std::process::Command::new("ss")
        .args(["-tnH", "state", "established", &filter])
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ss failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// ssio's `/metrics`, every sample by its name and labels.
async fn metrics(addr: SocketAddr) -> Result<BTreeMap<String, f64>, String> {
    let fetch = async {
        let mut c = HttpConn::open(addr, 0).await?;
        c.request("GET", "/metrics", b"").await
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .map_err(|_| "/metrics did not answer within 10 s".to_string())?
        .map_err(|e| format!("/metrics: {e}"))?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// How much `name` grew from `before` to `after`.
fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    name: &str,
) -> Result<f64, String> {
    let get = |m: &BTreeMap<String, f64>| {
        m.get(name)
            .copied()
            .ok_or_else(|| format!("/metrics has no {name}"))
    };
    Ok(get(after)? - get(before)?)
}

/// The page driver's next line, within `limit`.
async fn driver_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    limit: Duration,
    server: &str,
    pages: usize,
) -> Result<String, String> {
    match tokio::time::timeout(limit, lines.next_line()).await {
        Ok(Ok(Some(line))) => Ok(line),
        Ok(_) => Err(format!("{server}: the page driver exited without a report")),
        Err(_) => Err(format!(
            "{server}: the pages were not all at {pages} within {limit:?}"
        )),
    }
}

/// Page i of `n` must show exactly i, i + 1, ..., n.
fn exact(counts: &[Vec<serde_json::Value>], n: usize) -> bool {
    counts.len() == n
        && counts.iter().enumerate().all(|(i, shown)| {
            shown
                .iter()
                .map(serde_json::Value::as_u64)
                .eq((i as u64 + 1..=n as u64).map(Some))
        })
}

/// Opens `pages` pages on `server` and measures it with all of them open.
async fn measure(server: Server, pages: usize, warm: usize) -> Result<Row, String> {
    let mut p = start(server).await?;
    let (pid, addr) = (p.pid, p.addr);
    let ssio = server == Server::Ssio;
    let server_name = server.name();
    eprintln!("pages: {server_name} on {addr} (pid {pid}), {pages} pages");
    // Read before the memory, so that whatever answering it costs is in
    // both figures.
    let before = if ssio {
        Some(metrics(addr).await?)
    } else {
        None
    };
    let (rss_before_kib, _) = settled_rss(pid).await?;
    let anon_before_kib = anon(pid)?;

    let mut driver = Command::new("taskset")
        .args(["-c", "1", "node"])
        .arg(root().join("benches/pages/pages.mjs"))
        .arg(format!("http://{addr}/"))
        .arg(pages.to_string())
        .arg(warm.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start the page driver: {e}"))?;
    let mut stdin = driver.stdin.take().expect("piped");
    let mut lines = BufReader::new(driver.stdout.take().expect("piped")).lines();
    let limit = PER_PAGE * pages as u32 + START;
    let mut line = driver_line(&mut lines, limit, server_name, pages).await?;
    let mut rss_warm_kib = 0;
    if warm > 0 && line == format!("{{\"warm\":{warm}}}") {
        rss_warm_kib = settled_rss(pid).await?.0;
        stdin
            .write_all(b"go on\n")
            .await
            .map_err(|e| format!("page driver: {e}"))?;
        line = driver_line(&mut lines, limit, server_name, pages).await?;
    }
    let report: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| format!("{server_name}: driver said {line:?}: {e}"))?;
    if let Some(e) = report.get("error") {
        return Err(format!("{server_name}: {e}"));
    }
    let counts: Vec<Vec<serde_json::Value>> = serde_json::from_value(report["counts"].clone())
        .map_err(|e| format!("{server_name}: driver said {line:?}: {e}"))?;

    let opened = Duration::from_millis(report["ms"].as_u64().unwrap_or_default());

    let (rss_after_kib, settled) = settled_rss(pid).await?;
    let anon_after_kib = anon(pid)?;
    let connections = established(addr.port())?;
    let after = if ssio {
        Some(metrics(addr).await?)
    } else {
        None
    };

    // Any line lets the driver close its pages; then it exits by itself.
    let _ = stdin.write_all(b"done\n").await;
    drop(stdin);
    match tokio::time::timeout(Duration::from_secs(30), driver.wait()).await {
        Ok(Ok(st)) if st.success() => {}
        Ok(_) => {
            return Err(format!(
                "{server_name}: the page driver failed while closing"
            ))
        }
        Err(_) => {
            return Err(format!(
                "{server_name}: the page driver did not exit within 30 s"
            ))
        }
    }
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
        .await
        .is_err()
    {
        let _ = p.child.kill().await;
    }

    let m = |name: &str| match (&before, &after) {
        (Some(b), Some(a)) => delta(b, a, name).map(Some),
        _ => Ok(None),
    };
    Ok(Row {
        server,
        pages,
        rss_before_kib,
        rss_warm_kib,
        warm,
        rss_after_kib,
        anon_before_kib,
        anon_after_kib,
        settled,
        connections,
        opened,
        received: counts.iter().map(Vec::len).sum(),
        exact: exact(&counts, pages),
        swept: m("ssio_fanout_swept_total")?,
        published: m("ssio_events_published_total{kind=\"latest\"}")?,
        deliveries: m("ssio_deliveries_total")?,
    })
}

/// Output of a command, trimmed; empty on failure.
fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn report(rows: &[Row], load_start: &str) -> String {
    let n = rows.first().map_or(0, |r| r.pages);
    let w = rows.first().map_or(0, |r| r.warm);
    let expected = n * (n + 1) / 2;
    let mem_gib = sh(
        "awk",
        &[
            "/MemTotal/ {printf \"%.0f\", $2 / 1048576}",
            "/proc/meminfo",
        ],
    );
    let mut s = format!(
        "# Pages: {n} Chromium pages, each in a browser context of its own\n\n\
         {} cores, {mem_gib} GiB, Linux {}, Node {}, {}, commit {}; load average {load_start} \
         at the start, {} at the end. Server on core 0, Chromium on core 1.\n\n\
         | server | pages | opened in (s) | RSS before (KiB) | RSS with {w} open (KiB) | RSS after (KiB) | \
         KiB per page | KiB per page past the first {w} | anonymous KiB per page | connections open | updates shown / expected | swept / expected | latest published | deliveries counted |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        sh("nproc", &["--all"]),
        sh("uname", &["-r"]),
        sh("node", &["--version"]),
        sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        sh("git", &["rev-parse", "--short", "HEAD"]),
        loadavg(),
    );
    let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.0}"));
    for r in rows {
        let per_page = (r.rss_after_kib as f64 - r.rss_before_kib as f64) / r.pages as f64;
        let anon_per_page = (r.anon_after_kib as f64 - r.anon_before_kib as f64) / r.pages as f64;
        let (warm_rss, past_warm) = if r.warm > 0 && r.rss_warm_kib > 0 {
            let past = (r.rss_after_kib as f64 - r.rss_warm_kib as f64) / (r.pages - r.warm) as f64;
            (r.rss_warm_kib.to_string(), format!("{past:.1}"))
        } else {
            ("–".to_string(), "–".to_string())
        };
        s += &format!(
            "| {} | {} | {:.1} | {} | {warm_rss} | {}{} | {per_page:.1} | {past_warm} | {anon_per_page:.1} | {} | {} / {expected}{} | {} | {} | {} |\n",
            r.server.name(),
            r.pages,
            r.opened.as_secs_f64(),
            r.rss_before_kib,
            r.rss_after_kib,
            if r.settled { "" } else { " (still moving)" },
            r.connections,
            r.received,
            if r.exact { "" } else { " (not i..=N per page)" },
            r.swept
                .map_or("–".to_string(), |v| format!("{v:.0} / {expected}")),
            opt(r.published),
            opt(r.deliveries),
        );
    }
    s
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    if a.pages == 0 || a.warm >= a.pages {
        eprintln!("pages: --pages must be at least 1, and --warm less than --pages");
        std::process::exit(2);
    }
    let fail = |e: String| -> ! {
        eprintln!("pages: {e}");
        std::process::exit(1);
    };
    ensure_browser().unwrap_or_else(|e| fail(e));
    if a.servers.contains(&Server::Socketio) {
        process::ensure_peer().unwrap_or_else(|e| fail(e));
    }
    let load_start = loadavg();
    let mut rows = Vec::new();
    for &server in &a.servers {
        rows.push(
            measure(server, a.pages, a.warm)
                .await
                .unwrap_or_else(|e| fail(e)),
        );
    }
    let md = report(&rows, &load_start);
    print!("{md}");
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| fail(format!("{}: {e}", out.display())));
    std::fs::write(out.join("pages.md"), &md).unwrap_or_else(|e| fail(format!("pages.md: {e}")));
}
