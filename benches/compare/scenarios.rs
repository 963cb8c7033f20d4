//! The measurements and the floor, driven from the coordinator.
//!
//! Every server start is fresh, so one scenario's leftovers (heap growth,
//! lingering sessions) never show up in the next one's figures.

use std::time::Duration;

use serde_json::Value;

use crate::clients::Kind;
use crate::clock::now_ns;
use crate::machine;
use crate::plan::{Plan, Scenario};
use crate::procs::{self, word, Heartbeat, Server, Worker};
use crate::results::{
    AbandonedRow, ChatRow, ChurnRow, ChurnStep, FanoutRow, FloorRow, IdleRow, PairedFloor, RampRow,
    Results,
};
use crate::support::procfs::ticks_per_second;

/// Most standing clients one worker holds: its 20,000 open files must also
/// cover churn connections in flight.
const PER_WORKER: usize = 7000;
/// Longest N clients may take to connect and all see the count N.
const OPEN_LIMIT: Duration = Duration::from_secs(300);
/// Time between two count changes in the fan-out measurement.
const CHANGE_EVERY: Duration = Duration::from_millis(200);
/// A change not seen by every client after this long is a timeout.
const CHANGE_LIMIT: Duration = Duration::from_secs(5);
/// After churn stops, every client must hold the exact count within this.
const CONVERGE: Duration = Duration::from_millis(250);
/// The heartbeat for the abandoned-sessions scenario: short, so that the
/// scenario ends in seconds.
const ABANDON_HB: Heartbeat = Heartbeat {
    interval_ms: 1000,
    timeout_ms: 1000,
};
/// Margin after interval + timeout before abandoned sessions must be gone.
const ABANDON_MARGIN: Duration = Duration::from_secs(3);
/// Longest the chat's clients may take to all see the sender join.
const CHAT_SETTLE: Duration = Duration::from_secs(60);
/// Salt of the chat sender's worker, apart from the receivers' (0, 50, ..).
const TALKER_SALT: u32 = 997;

/// Runs every scenario of the plan; a scenario that fails becomes a note.
pub async fn run(plan: &Plan) -> Results {
    let mut r = Results {
        load_before: machine::loadavg(),
        commit_before: machine::commit(),
        ..Results::default()
    };
    if plan.has(Scenario::Floor) {
        for &n in &plan.ns {
            match floor(n, plan.changes).await {
                Ok(v) => r.floor.push(v),
                Err(e) => {
                    eprintln!("bench: floor N={n} failed: {e}");
                    r.notes.push(format!("floor N={n}: {e}"))
                }
            }
        }
    }
    if plan.has(Scenario::Idle) {
        for &kind in &plan.transports {
            for &n in &plan.ns {
                if !kind.is_ssio() && n > plan.sio_max_n {
                    r.notes.push(format!(
                        "{} N={n} not run: every connect emits the count to all connected clients, so opening N \
                         clients costs N²/2 writes (minutes beyond N={} on this machine)",
                        kind.name(),
                        plan.sio_max_n
                    ));
                    continue;
                }
                eprintln!("bench: idle + fan-out, {} N={n}", kind.name());
                if let Err(e) = idle_and_fanout(plan, kind, n, &mut r).await {
                    r.notes
                        .push(format!("idle/fan-out {} N={n}: {e}", kind.name()));
                }
            }
        }
    }
    if plan.has(Scenario::Churn) {
        for &kind in &plan.transports {
            if kind == Kind::H2 {
                // Its sessions are the SSE ones; what would differ is TLS
                // handshakes per second, not ssio.
                continue;
            }
            eprintln!("bench: churn, {}", kind.name());
            match churn(plan, kind).await {
                Ok(v) => r.churn.push(v),
                Err(e) => r.notes.push(format!("churn {}: {e}", kind.name())),
            }
        }
    }
    if plan.has(Scenario::Abandoned) {
        for &kind in &plan.transports {
            if !matches!(kind, Kind::Poll | Kind::SioPolling) {
                continue;
            }
            eprintln!("bench: abandoned sessions, {}", kind.name());
            match abandoned(plan, kind).await {
                Ok(v) => r.abandoned.push(v),
                Err(e) => r.notes.push(format!("abandoned {}: {e}", kind.name())),
            }
        }
    }
    if plan.has(Scenario::Chat) {
        for &kind in &plan.transports {
            if !matches!(kind, Kind::Sse | Kind::SioWs) {
                continue;
            }
            // ssio also runs at socket.io's smaller N, so that the two are
            // compared at the same N too.
            let mut ns = vec![capped(plan.sio_chat_n, kind, plan.chat_n, "chat", &mut r)];
            let sio_n = plan.chat_n.min(plan.sio_chat_n);
            if kind == Kind::Sse && plan.transports.contains(&Kind::SioWs) && sio_n < plan.chat_n {
                ns.push(sio_n);
            }
            for n in ns {
                eprintln!("bench: chat, {} N={n}", kind.name());
                match chat(plan, kind, n).await {
                    Ok(v) => r.chat.push(v),
                    Err(e) => r.notes.push(format!("chat {} N={n}: {e}", kind.name())),
                }
            }
        }
    }
    if plan.has(Scenario::Ramp) {
        for &kind in &plan.transports {
            if !matches!(kind, Kind::Sse | Kind::SioWs) {
                continue;
            }
            let n = capped(plan.sio_ramp_n, kind, plan.ramp_n, "ramp", &mut r);
            eprintln!("bench: ramp, {} N={n}", kind.name());
            match ramp(plan, kind, n).await {
                Ok(v) => r.ramp.push(v),
                Err(e) => r.notes.push(format!("ramp {} N={n}: {e}", kind.name())),
            }
        }
    }
    for n in &r.notes {
        eprintln!("bench: note: {n}");
    }
    r
}

/// The N a transport is opened to: socket.io's at most `cap`, since its app
/// emits the count to everyone on every connect; a note says so.
fn capped(cap: usize, kind: Kind, n: usize, what: &str, r: &mut Results) -> usize {
    if kind.is_ssio() || n <= cap {
        return n;
    }
    r.notes.push(format!(
        "{what}: {} opened to N={cap} instead of {n}: every connect emits the count to all \
         connected clients, so opening N clients costs N²/2 writes (here 5,000 took almost 4 \
         minutes to open, and 3,000 opened at once had connects time out after 90 s)",
        kind.name(),
    ));
    cap
}

/// Starts enough workers for `n` standing clients and opens them.
async fn open_clients(
    kind: Kind,
    server: std::net::SocketAddr,
    n: usize,
) -> Result<Vec<Worker>, String> {
    let mut workers = spawn_workers(kind, server, n)?;
    let opened = open_on(&mut workers, n, false).await;
    match opened {
        Ok(o) if o.failed == 0 => Ok(workers),
        Ok(o) => {
            quit_all(workers).await;
            Err(format!("{} of {n} clients failed to connect", o.failed))
        }
        Err(e) => {
            quit_all(workers).await;
            Err(e)
        }
    }
}

/// Enough workers for `n` standing clients, none opened yet.
fn spawn_workers(
    kind: Kind,
    server: std::net::SocketAddr,
    n: usize,
) -> Result<Vec<Worker>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let count = n.div_ceil(PER_WORKER).max(1);
    (0..count)
        .map(|i| Worker::spawn(&exe, kind, server, i as u32 * 50))
        .collect()
}

/// The workers' answers to one `open`.
struct Opened {
    ok: u64,
    failed: u64,
    /// When the first worker began to connect.
    t_start: u64,
    /// When the last session was confirmed.
    t_last: u64,
}

/// Opens `n` clients shared over `workers`, all workers at once; `at_once`
/// lifts each worker's connect limit too.
async fn open_on(workers: &mut [Worker], n: usize, at_once: bool) -> Result<Opened, String> {
    let count = workers.len();
    for (i, w) in workers.iter_mut().enumerate() {
        let share = n / count + usize::from(i < n % count);
        let all = if at_once { " all" } else { "" };
        w.send(&format!("open {share}{all}")).await?;
    }
    let mut o = Opened {
        ok: 0,
        failed: 0,
        t_start: u64::MAX,
        t_last: 0,
    };
    for w in workers.iter_mut() {
        let reply = w.recv(OPEN_LIMIT).await?;
        o.ok += word::<u64>(&reply, 1);
        o.failed += word::<u64>(&reply, 2);
        o.t_start = o.t_start.min(word(&reply, 3));
        o.t_last = o.t_last.max(word(&reply, 4));
    }
    Ok(o)
}

async fn quit_all(workers: Vec<Worker>) {
    for w in workers {
        w.quit().await;
    }
}

/// Sum of the workers' answers to one `wait`.
#[derive(Debug, Default)]
struct Convergence {
    converged: u64,
    total: u64,
    /// When the last converged client saw the value.
    max_t: u64,
    lost: u64,
    wrong: u64,
    /// Lowest and highest count any live client holds.
    lowest: i64,
    highest: i64,
}

impl Convergence {
    fn all(&self) -> bool {
        self.converged == self.total
    }
}

async fn wait_all(
    workers: &mut [Worker],
    value: i64,
    since: u64,
    deadline: u64,
) -> Result<Convergence, String> {
    for w in workers.iter_mut() {
        w.send(&format!("wait {value} {since} {deadline}")).await?;
    }
    let limit = Duration::from_nanos(deadline.saturating_sub(now_ns())) + Duration::from_secs(10);
    let mut c = Convergence {
        lowest: i64::MAX,
        highest: i64::MIN,
        ..Default::default()
    };
    for w in workers.iter_mut() {
        let r = w.recv(limit).await?;
        c.converged += word::<u64>(&r, 1);
        c.total += word::<u64>(&r, 2);
        c.max_t = c.max_t.max(word(&r, 3));
        c.lost += word::<u64>(&r, 4);
        c.wrong += word::<u64>(&r, 5);
        c.lowest = c.lowest.min(word(&r, 6));
        c.highest = c.highest.max(word(&r, 7));
    }
    Ok(c)
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Sleeps until `CHANGE_EVERY` after `t0` (ns), the pace of count changes.
async fn pace_from(t0: u64) {
    let next = t0 + CHANGE_EVERY.as_nanos() as u64;
    tokio::time::sleep(Duration::from_nanos(next.saturating_sub(now_ns()))).await;
}

/// Waits, at most `SETTLE_LIMIT`, until neither the server nor the
/// generator has used CPU for `QUIET`: the last change's work is over.
///
/// A change is timed to the last client's read, but a transport may have
/// work left after it (each held poll's next request, read and held). A
/// floor round or change that began meanwhile would share the core with it
/// and be timed slower than it is.
async fn settle(server: &procs::Server, workers: &[Worker]) {
    let ticks =
        || server.cpu_ticks() + workers.iter().map(|w| procs::cpu_ticks(w.pid)).sum::<u64>();
    let until = tokio::time::Instant::now() + SETTLE_LIMIT;
    let mut before = ticks();
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(QUIET).await;
        let now = ticks();
        if now == before {
            return;
        }
        before = now;
    }
}

/// How long both sides must be idle to count as settled: three of the
/// kernel's CPU ticks.
const QUIET: Duration = Duration::from_millis(30);

/// Longest a change waits for the last one's work to end.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// The floor's writer process and its N readers, for rounds on demand.
struct FloorWriter {
    n: usize,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    workers: Vec<Worker>,
}

/// One round of the floor: its writer's wall and CPU time for the N
/// writes (ns), and the time until the last reader had it (ms).
struct FloorRound {
    wall_ns: f64,
    cpu_ns: f64,
    last_ms: f64,
}

impl FloorWriter {
    /// Starts the writer on the server's core and connects N readers to it.
    async fn start(n: usize) -> Result<FloorWriter, String> {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new("taskset")
            .args(["-c", procs::SERVER_CORE])
            .arg(&exe)
            .args(["floor", &n.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn floor: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut w = FloorWriter {
            n,
            child,
            stdin,
            lines,
            workers: Vec::new(),
        };
        let opened = async {
            let port: u16 = w
                .next_line()
                .await?
                .trim_start_matches("port ")
                .parse()
                .map_err(|_| "floor port")?;
            w.workers = open_clients(Kind::Raw, ([127, 0, 0, 1], port).into(), n).await?;
            if w.next_line().await? != "ready" {
                return Err("floor writer not ready".to_string());
            }
            Ok(())
        }
        .await;
        match opened {
            Ok(()) => Ok(w),
            Err(e) => {
                // It may still be accepting, and never read `end`.
                let _ = w.child.start_kill();
                w.stop().await;
                Err(e)
            }
        }
    }

    async fn next_line(&mut self) -> Result<String, String> {
        let l = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line()).await;
        l.ok()
            .and_then(|l| l.ok().flatten())
            .ok_or_else(|| "floor writer stopped".to_string())
    }

    /// Round `i`, paced as the fan-out's changes are: the count goes up by
    /// one and back, a round ends when the last reader has read it, and the
    /// next starts `CHANGE_EVERY` after this one did.
    async fn paced_round(&mut self, i: usize) -> Result<FloorRound, String> {
        let t0 = now_ns();
        let round = self.round(self.n as i64 + 1 - (i % 2) as i64).await;
        pace_from(t0).await;
        round.map_err(|e| format!("round {i}: {e}"))
    }

    /// Writes `value` to every reader and waits until the last has read it.
    async fn round(&mut self, value: i64) -> Result<FloorRound, String> {
        use tokio::io::AsyncWriteExt;
        let t0 = now_ns();
        self.stdin
            .write_all(format!("go {value}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let c = wait_all(
            &mut self.workers,
            value,
            t0,
            t0 + CHANGE_LIMIT.as_nanos() as u64,
        )
        .await?;
        if !c.all() {
            return Err(format!(
                "a round was not read by {} of {} clients",
                c.total - c.converged,
                c.total
            ));
        }
        let last_ms = ms(c.max_t.saturating_sub(t0));
        let line = self.next_line().await?;
        let round = line.strip_prefix("round ").ok_or("floor round")?;
        let mut times = round.split(' ').map(|t| t.parse::<f64>());
        match (times.next(), times.next()) {
            (Some(Ok(wall_ns)), Some(Ok(cpu_ns))) => Ok(FloorRound {
                wall_ns,
                cpu_ns,
                last_ms,
            }),
            _ => Err("floor round".to_string()),
        }
    }

    async fn stop(mut self) {
        use tokio::io::AsyncWriteExt;
        let _ = self.stdin.write_all(b"end\n").await;
        quit_all(std::mem::take(&mut self.workers)).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn floor(n: usize, rounds: usize) -> Result<FloorRow, String> {
    eprintln!("bench: floor N={n}");
    let mut writer = FloorWriter::start(n).await?;
    // Rounds as the fan-out's changes: the count goes up by one and back,
    // at the same pace, and a round ends when the last client has read it.
    let measured = async {
        let mut done = Vec::new();
        for i in 0..rounds {
            done.push(writer.paced_round(i).await?);
        }
        Ok::<_, String>(done)
    }
    .await;
    writer.stop().await;
    let done = measured?;
    let mut writes_ns: Vec<(f64, f64)> = done.iter().map(|r| (r.wall_ns, r.cpu_ns)).collect();
    let mut last_ms: Vec<f64> = done.iter().map(|r| r.last_ms).collect();
    writes_ns.sort_by(|a, b| a.0.total_cmp(&b.0));
    let in_order = last_ms.clone();
    last_ms.sort_by(f64::total_cmp);
    // The median round by wall time, and the CPU that same round took.
    let median = writes_ns
        .get(writes_ns.len().div_ceil(2).max(1) - 1)
        .copied()
        .unwrap_or((f64::NAN, f64::NAN));
    let per_write = median.0 / n as f64;
    Ok(FloorRow {
        n,
        rounds: writes_ns.len(),
        per_write_ns: per_write,
        per_write_cpu_ns: median.1 / n as f64,
        fanout_floor_ms: per_write * n as f64 / 1e6,
        last_p50_ms: percentile(&last_ms, 0.5),
        last_p99_ms: percentile(&last_ms, 0.99),
        last_samples_ms: in_order,
    })
}

async fn idle_and_fanout(plan: &Plan, kind: Kind, n: usize, r: &mut Results) -> Result<(), String> {
    let server = Server::start(kind, None).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = server.rss_kib();
    let stats0 = server.stats().await;
    let mut workers = match open_clients(kind, server.addr, n).await {
        Ok(w) => w,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let result = async {
        let c = wait_all(
            &mut workers,
            n as i64,
            0,
            now_ns() + OPEN_LIMIT.as_nanos() as u64,
        )
        .await?;
        if !c.all() {
            return Err(format!(
                "only {} of {} clients saw the count {n} ({:?})",
                c.converged, c.total, c
            ));
        }
        // Let buffers, timers and the allocator settle before reading RSS.
        tokio::time::sleep(Duration::from_secs(if plan.quick { 1 } else { 2 })).await;
        let rss1 = server.rss_kib();
        let stats1 = server.stats().await;
        let ticks0 = server.cpu_ticks();
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
        let ticks = server.cpu_ticks() - ticks0;
        let cpu_pct = ticks as f64 / ticks_per_second() as f64 / t0.elapsed().as_secs_f64() * 100.0;
        let heap = |s: &Option<Value>| s.as_ref().and_then(|v| v["heapUsed"].as_u64());
        r.idle.push(IdleRow {
            transport: kind,
            n,
            rss_before_kib: rss0,
            rss_after_kib: rss1,
            bytes_per_client: (rss1 as f64 - rss0 as f64) * 1024.0 / n as f64,
            heap_used_before: heap(&stats0),
            heap_used_after: heap(&stats1),
            heap_bytes_per_client: match (heap(&stats0), heap(&stats1)) {
                (Some(a), Some(b)) => Some((b as f64 - a as f64) / n as f64),
                _ => None,
            },
            idle_cpu_pct: cpu_pct,
            server_stats: stats1,
        });

        // CPU spent per change on each side tells whose work the latency is:
        // the server's writes, or the generator's reads.
        //
        // With the floor in the plan, a round of its writes goes before
        // every change, so that both are measured in the same moments of a
        // machine whose cost per write drifts by a tenth or more from one
        // minute to the next. The server's CPU is counted only from each
        // change until the next round.
        let mut paired = if plan.has(Scenario::Floor) {
            Some(FloorWriter::start(n).await?)
        } else {
            None
        };
        let gen_ticks = |ws: &[Worker]| ws.iter().map(|w| procs::cpu_ticks(w.pid)).sum::<u64>();
        let (mut server_ticks, mut gen_ticks_total) = (0u64, 0u64);
        let mut floor_rounds = Vec::new();
        let mut lat = Vec::new();
        let mut timeouts = 0;
        let mut joined = false;
        let changes = async {
            for i in 0..plan.changes {
                settle(&server, &workers).await;
                if let Some(f) = paired.as_mut() {
                    let round = f.paced_round(i).await;
                    floor_rounds.push(round.map_err(|e| format!("paired floor {e}"))?);
                }
                let (s0, g0) = (server.cpu_ticks(), gen_ticks(&workers));
                let (cmd, expect) = if joined {
                    ("leave", n as i64)
                } else {
                    ("join", n as i64 + 1)
                };
                let reply = workers[0].call(cmd, CHANGE_LIMIT * 2).await?;
                joined = !joined;
                let t0: u64 = word(&reply, 1);
                let c = wait_all(
                    &mut workers,
                    expect,
                    t0,
                    t0 + CHANGE_LIMIT.as_nanos() as u64,
                )
                .await?;
                if c.all() {
                    lat.push(ms(c.max_t.saturating_sub(t0)));
                } else {
                    timeouts += 1;
                    eprintln!(
                        "bench: change {i} not seen by {} of {} clients",
                        c.total - c.converged,
                        c.total
                    );
                }
                pace_from(t0).await;
                server_ticks += server.cpu_ticks() - s0;
                gen_ticks_total += gen_ticks(&workers) - g0;
            }
            Ok::<_, String>(())
        }
        .await;
        if let Some(f) = paired {
            f.stop().await;
        }
        changes?;
        let per_change =
            |ticks: u64| ticks as f64 * 1000.0 / ticks_per_second() as f64 / plan.changes as f64;
        let server_cpu = per_change(server_ticks);
        let gen_cpu = per_change(gen_ticks_total);
        let paired_floor = (!floor_rounds.is_empty()).then(|| {
            let in_order: Vec<f64> = floor_rounds.iter().map(|r| r.last_ms).collect();
            let mut last = in_order.clone();
            last.sort_by(f64::total_cmp);
            PairedFloor {
                rounds: floor_rounds.len(),
                per_write_cpu_ns: floor_rounds.iter().map(|r| r.cpu_ns).sum::<f64>()
                    / floor_rounds.len() as f64
                    / n as f64,
                per_write_ns: floor_rounds.iter().map(|r| r.wall_ns).sum::<f64>()
                    / floor_rounds.len() as f64
                    / n as f64,
                last_p99_ms: percentile(&last, 0.99),
                last_samples_ms: in_order,
            }
        });
        let in_order = lat.clone();
        lat.sort_by(f64::total_cmp);
        r.fanout.push(FanoutRow {
            transport: kind,
            n,
            changes: plan.changes,
            timeouts,
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().copied().unwrap_or(f64::NAN),
            server_cpu_ms_per_change: server_cpu,
            generator_cpu_ms_per_change: gen_cpu,
            paired_floor,
            samples_ms: in_order,
        });
        Ok(())
    }
    .await;
    quit_all(workers).await;
    server.stop().await;
    result
}

async fn churn(plan: &Plan, kind: Kind) -> Result<ChurnRow, String> {
    let s = if kind.is_ssio() {
        plan.churn_standing
    } else {
        plan.churn_standing.min(plan.sio_max_churn_standing)
    };
    let server = Server::start(kind, None).await?;
    let mut workers = match open_clients(kind, server.addr, s).await {
        Ok(w) => w,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let result = async {
        let c = wait_all(
            &mut workers,
            s as i64,
            0,
            now_ns() + OPEN_LIMIT.as_nanos() as u64,
        )
        .await?;
        if !c.all() {
            return Err(format!("standing clients never converged to {s}: {c:?}"));
        }
        let mut steps = Vec::new();
        let mut best = 0;
        for &rate in &plan.churn_rates {
            // A pause between steps, so one step's stragglers are not the
            // next one's load.
            tokio::time::sleep(Duration::from_millis(if plan.quick { 300 } else { 1000 })).await;
            let per = rate / workers.len() as u64;
            for w in workers.iter_mut() {
                w.send(&format!("churn {per} {}", plan.churn_ms)).await?;
            }
            let (mut planned, mut ok, mut failed, mut skipped, mut t_end) =
                (0u64, 0u64, 0u64, 0u64, 0u64);
            let limit = Duration::from_millis(plan.churn_ms) + Duration::from_secs(40);
            for w in workers.iter_mut() {
                let r = w.recv(limit).await?;
                planned += word::<u64>(&r, 1);
                ok += word::<u64>(&r, 2);
                failed += word::<u64>(&r, 3);
                skipped += word::<u64>(&r, 4);
                t_end = t_end.max(word(&r, 5));
            }
            // The state exactly CONVERGE after the last disconnect is the
            // verdict; a wait that ended early could miss a late count.
            let check_at = t_end + CONVERGE.as_nanos() as u64;
            tokio::time::sleep(Duration::from_nanos(check_at.saturating_sub(now_ns()))).await;
            let at_deadline = wait_all(&mut workers, s as i64, 0, now_ns()).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let later = wait_all(&mut workers, s as i64, 0, now_ns()).await?;
            let pass =
                failed == 0 && skipped == 0 && ok == planned && at_deadline.all() && later.all();
            let step = ChurnStep {
                rate,
                planned,
                completed: ok,
                failed,
                skipped,
                converged_at_250ms: at_deadline.converged,
                standing: at_deadline.total,
                wrong_at_250ms: at_deadline.wrong,
                counts_at_250ms: [at_deadline.lowest, at_deadline.highest],
                converged_750ms: later.converged,
                counts_750ms: [later.lowest, later.highest],
                lost: later.lost,
                last_update_after_stop_ms: if at_deadline.max_t > t_end {
                    ms(at_deadline.max_t - t_end)
                } else {
                    0.0
                },
                pass,
            };
            eprintln!(
                "bench: churn {} {rate}/s: {}",
                kind.name(),
                serde_json::to_string(&step).map_err(|e| e.to_string())?
            );
            steps.push(step);
            if !pass {
                break;
            }
            best = rate;
        }
        Ok(ChurnRow {
            transport: kind,
            standing: s,
            step_ms: plan.churn_ms,
            best_rate: best,
            steps,
        })
    }
    .await;
    quit_all(workers).await;
    server.stop().await;
    result
}

async fn abandoned(plan: &Plan, kind: Kind) -> Result<AbandonedRow, String> {
    let server = Server::start(kind, Some(ABANDON_HB)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions = |v: &Option<Value>| v.as_ref().and_then(|v| v["sessions"].as_u64());
    let rss0 = server.rss_kib();
    let stats0 = server.stats().await;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut w = Worker::spawn(&exe, kind, server.addr, 7)?;
    let t0 = std::time::Instant::now();
    let reply = w
        .call(
            &format!("abandon {} 64", plan.abandon),
            Duration::from_secs(600),
        )
        .await;
    let took = t0.elapsed();
    w.quit().await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let rss_peak = server.rss_kib();
    let stats_peak = server.stats().await;
    let wait =
        Duration::from_millis(ABANDON_HB.interval_ms + ABANDON_HB.timeout_ms) + ABANDON_MARGIN;
    tokio::time::sleep(wait).await;
    let rss1 = server.rss_kib();
    let stats1 = server.stats().await;
    server.stop().await;
    let left = sessions(&stats1);
    Ok(AbandonedRow {
        transport: kind,
        handshakes: plan.abandon,
        ok: word(&reply, 1),
        failed: word(&reply, 2),
        handshake_secs: took.as_secs_f64(),
        ping_interval_ms: ABANDON_HB.interval_ms,
        ping_timeout_ms: ABANDON_HB.timeout_ms,
        waited_ms: wait.as_millis() as u64,
        rss_before_kib: rss0,
        rss_peak_kib: rss_peak,
        rss_after_kib: rss1,
        rss_after_ratio: rss1 as f64 / rss0 as f64,
        sessions_before: sessions(&stats0),
        sessions_peak: sessions(&stats_peak),
        sessions_after: left,
        pass: left == Some(0) && (rss1 as f64) <= rss0 as f64 * 1.10,
    })
}

async fn chat(plan: &Plan, kind: Kind, n: usize) -> Result<ChatRow, String> {
    // ssio holds each session to a client-event rate (50 /s by default); the
    // one sender here is meant to send faster than that, so its limit is
    // raised. socket.io has none.
    let flags = [
        "--max-emit-rate".to_string(),
        (plan.chat_rate * 2).to_string(),
    ];
    let server = Server::start_with(kind, None, &flags).await?;
    let opening = std::time::Instant::now();
    let mut workers = match open_clients(kind, server.addr, n).await {
        Ok(w) => w,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut talker = match Worker::spawn(&exe, kind, server.addr, TALKER_SALT) {
        Ok(w) => w,
        Err(e) => {
            quit_all(workers).await;
            server.stop().await;
            return Err(e);
        }
    };
    let result = async {
        let c = wait_all(
            &mut workers,
            n as i64,
            0,
            now_ns() + OPEN_LIMIT.as_nanos() as u64,
        )
        .await?;
        if !c.all() {
            return Err(format!(
                "only {} of {} clients saw the count {n} ({c:?})",
                c.converged, c.total
            ));
        }
        let open_s = opening.elapsed().as_secs_f64();
        eprintln!(
            "bench: chat {}: {n} clients open in {open_s:.1} s",
            kind.name()
        );
        let limit = Duration::from_millis(plan.chat_ms + plan.chat_drain_ms) + CHAT_SETTLE;
        let cmd = format!(
            "talk {} {} {} {} {}",
            plan.chat_rate, plan.chat_ms, plan.chat_bytes, plan.chat_drain_ms, plan.chat_senders
        );
        let cpu0 = Cpu::read(&server, &workers);
        let t = talker.call(&cmd, limit).await?;
        let (sent, send_failed, t_first, t_last): (u64, u64, u64, u64) =
            (word(&t, 1), word(&t, 2), word(&t, 3), word(&t, 4));
        if sent == 0 {
            return Err(format!("the sender sent nothing ({send_failed} failed)"));
        }
        let deadline = t_last + plan.chat_drain_ms * 1_000_000;
        for w in workers.iter_mut() {
            w.send(&format!("chats {sent} {deadline}")).await?;
        }
        let limit =
            Duration::from_nanos(deadline.saturating_sub(now_ns())) + Duration::from_secs(30);
        let (mut received, mut lost, mut disorder, mut last) = (0u64, 0u64, 0u64, 0u64);
        let (mut gone, mut silent) = (0u64, 0u64);
        // Each worker's order statistics stand for its own deliveries, so
        // they are weighted by them when merged.
        let mut lat: Vec<(f64, f64)> = Vec::new();
        for w in workers.iter_mut() {
            let r = w.recv(limit).await?;
            let got: u64 = word(&r, 1);
            received += got;
            lost += word::<u64>(&r, 2);
            disorder += word::<u64>(&r, 3);
            last = last.max(word(&r, 5));
            gone += word::<u64>(&r, 6);
            silent += word::<u64>(&r, 7);
            let k: usize = word(&r, 8);
            let weight = got as f64 / k.max(1) as f64;
            lat.extend((0..k).map(|j| (word::<f64>(&r, 9 + j) / 1000.0, weight)));
        }
        let cpu = Cpu::read(&server, &workers).since(&cpu0);
        lat.sort_by(|a, b| a.0.total_cmp(&b.0));
        let expected = n as u64 * sent;
        let span_s = last.saturating_sub(t_first) as f64 / 1e9;
        let send_span = t_last.saturating_sub(t_first) as f64 / 1e9;
        let row = ChatRow {
            transport: kind,
            n,
            n_planned: plan.chat_n,
            rate: plan.chat_rate,
            send_ms: plan.chat_ms,
            message_bytes: plan.chat_bytes,
            sent,
            send_failed,
            sent_per_s: if send_span > 0.0 {
                (sent - 1) as f64 / send_span
            } else {
                f64::NAN
            },
            offered_per_s: (plan.chat_rate * n as u64) as f64,
            expected,
            received,
            lost,
            disorder,
            clients_failed: gone,
            clients_silent: silent,
            open_s,
            server_cpu_s: cpu.server,
            receivers_cpu_s: cpu.generator,
            span_s,
            delivered_per_s: if span_s > 0.0 {
                received as f64 / span_s
            } else {
                f64::NAN
            },
            drained: received >= expected && lost == 0,
            p50_ms: weighted_percentile(&lat, 0.5),
            p99_ms: weighted_percentile(&lat, 0.99),
            max_ms: lat.last().map_or(f64::NAN, |l| l.0),
            pass: lost == 0 && disorder == 0 && send_failed == 0,
        };
        eprintln!(
            "bench: chat {}: {}",
            kind.name(),
            serde_json::to_string(&row).map_err(|e| e.to_string())?
        );
        Ok(row)
    }
    .await;
    talker.quit().await;
    quit_all(workers).await;
    server.stop().await;
    result
}

/// The value below which a share `q` of the total weight lies.
fn weighted_percentile(sorted: &[(f64, f64)], q: f64) -> f64 {
    let total: f64 = sorted.iter().map(|s| s.1).sum();
    let mut acc = 0.0;
    for &(v, w) in sorted {
        acc += w;
        if acc >= q * total {
            return v;
        }
    }
    f64::NAN
}

async fn ramp(plan: &Plan, kind: Kind, n: usize) -> Result<RampRow, String> {
    let server = Server::start(kind, None).await?;
    let mut workers = match spawn_workers(kind, server.addr, n) {
        Ok(w) => w,
        Err(e) => {
            server.stop().await;
            return Err(e);
        }
    };
    let result = async {
        // Workers start in a few ms each; the ramp begins once all are up,
        // so none of them measures another's start.
        for w in workers.iter_mut() {
            w.call("wait 0 0 0", Duration::from_secs(10)).await?;
        }
        let cpu0 = Cpu::read(&server, &workers);
        let overflows0 = listen_overflows();
        let o = open_on(&mut workers, n, true).await?;
        let cpu = Cpu::read(&server, &workers).since(&cpu0);
        let overflows = listen_overflows().saturating_sub(overflows0);
        let c = wait_all(
            &mut workers,
            n as i64,
            0,
            o.t_start + OPEN_LIMIT.as_nanos() as u64,
        )
        .await?;
        let connect_s = o.t_last.saturating_sub(o.t_start) as f64 / 1e9;
        let row = RampRow {
            transport: kind,
            n,
            n_planned: plan.ramp_n,
            generators: workers.len(),
            opened: o.ok,
            failed: o.failed,
            connect_s,
            server_cpu_s: cpu.server,
            generator_cpu_s: cpu.generator,
            listen_overflows: overflows,
            connects_per_s: if connect_s > 0.0 {
                o.ok as f64 / connect_s
            } else {
                f64::NAN
            },
            converged: c.all(),
            exact_count_ms: if c.all() {
                ms(c.max_t.saturating_sub(o.t_start))
            } else {
                f64::NAN
            },
            pass: o.failed == 0 && c.all(),
        };
        eprintln!(
            "bench: ramp {}: {}",
            kind.name(),
            serde_json::to_string(&row).map_err(|e| e.to_string())?
        );
        Ok(row)
    }
    .await;
    quit_all(workers).await;
    server.stop().await;
    result
}

/// CPU seconds of the server and of the generator workers, so that a rate
/// says whose limit it is.
struct Cpu {
    server: f64,
    generator: f64,
}

impl Cpu {
    fn read(server: &Server, workers: &[Worker]) -> Cpu {
        let secs = |ticks: u64| ticks as f64 / ticks_per_second() as f64;
        Cpu {
            server: secs(server.cpu_ticks()),
            generator: secs(workers.iter().map(|w| procs::cpu_ticks(w.pid)).sum()),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            server: self.server - before.server,
            generator: self.generator - before.generator,
        }
    }
}

/// The machine's count of connections its listen queues had no room for
/// (`TcpExt: ListenOverflows`): the client's SYN is dropped and sent again a
/// second later, so a ramp slows down without any connect failing.
fn listen_overflows() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/netstat") else {
        return 0;
    };
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|w| w == "ListenOverflows");
        return i
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    0
}
