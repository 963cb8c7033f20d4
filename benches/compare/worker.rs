//! A generator process: holds its share of the clients and answers the
//! coordinator's one-line commands on stdin with one-line replies on stdout.
//!
//! Several of these run side by side because one process may hold only
//! 20,000 open files. Each is single-threaded and pinned to the generator's
//! core, so the server under test never competes with its own load.

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{oneshot, Notify, Semaphore};
use tokio::task::JoinSet;

use crate::clients::{handshake, Client, Kind, OPENING, STEP};
use crate::clock::now_ns;
use crate::support::http::HttpConn;

/// Value of `latest` before a client's first count arrives.
const UNSEEN: i64 = -1;
/// Value of `latest` once a client's session has failed.
const LOST: i64 = -2;
/// Connects in flight at once while opening standing clients: enough to keep
/// the server busy, few enough that the listen backlog never overflows.
const OPEN_CONCURRENCY: usize = 256;
/// Churn cycles in flight per worker; beyond this the server is not keeping
/// up and the step counts as failed rather than piling up sockets.
const CHURN_IN_FLIGHT: usize = 3000;

/// The newest count each standing client has seen, and when.
///
/// `converged` is maintained on every delivery so that a wait over thousands
/// of clients never rescans them.
struct Tracker {
    latest: Vec<i64>,
    at: Vec<u64>,
    target: i64,
    since: u64,
    converged: usize,
    changed: Rc<Notify>,
}

impl Tracker {
    fn hit(&self, i: usize) -> bool {
        self.latest[i] == self.target && self.at[i] >= self.since
    }

    fn see(&mut self, i: usize, v: i64, t: u64) {
        let was = self.hit(i);
        self.latest[i] = v;
        self.at[i] = t;
        let is = self.hit(i);
        if was != is {
            if is {
                self.converged += 1;
            } else {
                self.converged -= 1;
            }
            if self.converged == self.latest.len() {
                self.changed.notify_one();
            }
        }
    }

    fn retarget(&mut self, v: i64, since: u64) {
        self.target = v;
        self.since = since;
        self.converged = (0..self.latest.len()).filter(|&i| self.hit(i)).count();
    }
}

type Shared = Rc<RefCell<Tracker>>;

fn reply(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs one standing client until its session fails.
async fn standing(
    kind: Kind,
    server: SocketAddr,
    salt: u32,
    idx: usize,
    tracker: Shared,
    ready: oneshot::Sender<bool>,
) {
    let mut client = match Client::connect(kind, server, salt, OPENING).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker: connect failed: {e}");
            tracker.borrow_mut().see(idx, LOST, now_ns());
            let _ = ready.send(false);
            return;
        }
    };
    let _ = ready.send(true);
    let mut seen = Vec::new();
    loop {
        seen.clear();
        if let Err(e) = client.next(&mut seen).await {
            // The floor's writer closing its sockets is the end of the floor
            // run, not a loss.
            if kind != Kind::Raw {
                eprintln!("worker: {} client lost: {e}", kind.name());
            }
            tracker.borrow_mut().see(idx, LOST, now_ns());
            return;
        }
        if let Some(&v) = seen.last() {
            tracker.borrow_mut().see(idx, v, now_ns());
        }
    }
}

/// The one extra client whose coming and going makes the fan-out changes.
/// It reads like any other client so that the server treats it as live.
async fn extra(mut client: Client, leave: oneshot::Receiver<oneshot::Sender<u64>>) {
    let mut leave = leave;
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            r = &mut leave => {
                if let Ok(done) = r {
                    let t0 = now_ns();
                    if let Err(e) = client.leave().await {
                        eprintln!("worker: extra client leave failed: {e}");
                    }
                    let _ = done.send(t0);
                }
                return;
            }
            r = client.next(&mut seen) => {
                seen.clear();
                if let Err(e) = r {
                    eprintln!("worker: extra client lost: {e}");
                    // Still answer a later leave, with the change time.
                    if let Ok(done) = leave.await {
                        let _ = done.send(now_ns());
                    }
                    return;
                }
            }
        }
    }
}

/// Connect and leave once; the churn unit.
async fn cycle(kind: Kind, server: SocketAddr, salt: u32) -> Result<u64, String> {
    let c = Client::connect(kind, server, salt, STEP)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    c.leave().await.map_err(|e| format!("leave: {e}"))?;
    Ok(now_ns())
}

pub fn main(kind: Kind, server: SocketAddr, salt: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(kind, server, salt));
}

async fn serve(kind: Kind, server: SocketAddr, salt: u32) {
    let changed = Rc::new(Notify::new());
    let tracker: Shared = Rc::new(RefCell::new(Tracker {
        latest: Vec::new(),
        at: Vec::new(),
        target: i64::MIN,
        since: 0,
        converged: 0,
        changed: changed.clone(),
    }));
    let mut leave_tx: Option<oneshot::Sender<oneshot::Sender<u64>>> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
        match words.first().copied() {
            Some("open") => {
                let n = num(1) as usize;
                let base = tracker.borrow().latest.len();
                {
                    let mut t = tracker.borrow_mut();
                    t.latest.resize(base + n, UNSEEN);
                    t.at.resize(base + n, 0);
                }
                let gate = std::sync::Arc::new(Semaphore::new(OPEN_CONCURRENCY));
                let mut waits = Vec::with_capacity(n);
                for i in 0..n {
                    let permit = gate.clone().acquire_owned().await.expect("semaphore");
                    let (tx, rx) = oneshot::channel();
                    tokio::task::spawn_local(standing(
                        kind,
                        server,
                        salt,
                        base + i,
                        tracker.clone(),
                        tx,
                    ));
                    waits.push(tokio::task::spawn_local(async move {
                        let ok = rx.await.unwrap_or(false);
                        drop(permit);
                        ok
                    }));
                }
                let mut ok = 0;
                for w in waits {
                    if w.await.unwrap_or(false) {
                        ok += 1;
                    }
                }
                reply(format!("opened {ok} {}", n - ok));
            }
            Some("wait") => {
                // wait VALUE SINCE_NS DEADLINE_NS: until every standing
                // client has seen VALUE at or after SINCE, or the deadline.
                let (v, since, deadline) = (words[1].parse::<i64>().unwrap_or(0), num(2), num(3));
                tracker.borrow_mut().retarget(v, since);
                loop {
                    let (c, n) = {
                        let t = tracker.borrow();
                        (t.converged, t.latest.len())
                    };
                    let now = now_ns();
                    if c == n || now >= deadline {
                        break;
                    }
                    let left = Duration::from_nanos(deadline - now);
                    let _ = tokio::time::timeout(
                        left.min(Duration::from_millis(50)),
                        changed.notified(),
                    )
                    .await;
                }
                let t = tracker.borrow();
                let max_t = (0..t.latest.len())
                    .filter(|&i| t.hit(i))
                    .map(|i| t.at[i])
                    .max()
                    .unwrap_or(0);
                let lost = t.latest.iter().filter(|&&x| x == LOST).count();
                let wrong = t.latest.iter().filter(|&&x| x != v && x != LOST).count();
                let live = t.latest.iter().copied().filter(|&x| x >= 0);
                let (lo, hi) =
                    live.fold((i64::MAX, i64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
                reply(format!(
                    "done {} {} {max_t} {lost} {wrong} {lo} {hi}",
                    t.converged,
                    t.latest.len()
                ));
            }
            Some("join") => {
                let t0 = now_ns();
                match Client::connect(kind, server, salt, STEP).await {
                    Ok(c) => {
                        let (tx, rx) = oneshot::channel();
                        leave_tx = Some(tx);
                        tokio::task::spawn_local(extra(c, rx));
                        reply(format!("joined {t0}"));
                    }
                    Err(e) => reply(format!("error join {e}")),
                }
            }
            Some("leave") => match leave_tx.take() {
                Some(tx) => {
                    let (done_tx, done_rx) = oneshot::channel();
                    let _ = tx.send(done_tx);
                    match tokio::time::timeout(STEP, done_rx).await {
                        Ok(Ok(t0)) => reply(format!("left {t0}")),
                        _ => reply("error leave timed out".into()),
                    }
                }
                None => reply("error leave without join".into()),
            },
            Some("churn") => {
                // churn RATE_PER_S DURATION_MS
                let (rate, ms) = (num(1).max(1), num(2));
                let total = rate * ms / 1000;
                let interval = 1_000_000_000 / rate;
                let start = tokio::time::Instant::now();
                let mut set = JoinSet::new();
                let (mut ok, mut failed, mut skipped, mut t_end) = (0u64, 0u64, 0u64, 0u64);
                let mut first_err = String::new();
                for i in 0..total {
                    tokio::time::sleep_until(start + Duration::from_nanos(i * interval)).await;
                    while let Some(r) = set.try_join_next() {
                        tally(r, &mut ok, &mut failed, &mut t_end, &mut first_err);
                    }
                    if set.len() >= CHURN_IN_FLIGHT {
                        skipped += 1;
                        continue;
                    }
                    set.spawn_local(cycle(kind, server, salt));
                }
                let drain = tokio::time::Instant::now() + 2 * STEP;
                while let Ok(Some(r)) = tokio::time::timeout_at(drain, set.join_next()).await {
                    tally(r, &mut ok, &mut failed, &mut t_end, &mut first_err);
                }
                failed += set.len() as u64;
                set.abort_all();
                if !first_err.is_empty() {
                    eprintln!("worker: churn error: {first_err}");
                }
                reply(format!("churned {total} {ok} {failed} {skipped} {t_end}"));
            }
            Some("abandon") => {
                // abandon COUNT CONNECTIONS
                let (count, conns) = (num(1), num(2).max(1));
                let mut set = JoinSet::new();
                for c in 0..conns {
                    let share = count / conns + u64::from(c < count % conns);
                    set.spawn_local(async move {
                        let (mut ok, mut failed) = (0u64, 0u64);
                        let mut conn = None;
                        for _ in 0..share {
                            if conn.is_none() {
                                conn = HttpConn::open(server, salt).await.ok();
                            }
                            let Some(http) = conn.as_mut() else {
                                failed += 1;
                                continue;
                            };
                            match handshake(http, kind).await {
                                Ok(()) => ok += 1,
                                Err(_) => {
                                    failed += 1;
                                    conn = None;
                                }
                            }
                        }
                        (ok, failed)
                    });
                }
                let (mut ok, mut failed) = (0, 0);
                while let Some(r) = set.join_next().await {
                    let (o, f) = r.unwrap_or((0, 0));
                    ok += o;
                    failed += f;
                }
                reply(format!("abandoned {ok} {failed}"));
            }
            Some("quit") | None => break,
            Some(other) => reply(format!("error unknown command {other}")),
        }
    }
}

fn tally(
    r: Result<Result<u64, String>, tokio::task::JoinError>,
    ok: &mut u64,
    failed: &mut u64,
    t_end: &mut u64,
    first_err: &mut String,
) {
    match r {
        Ok(Ok(t)) => {
            *ok += 1;
            *t_end = (*t_end).max(t);
        }
        Ok(Err(e)) => {
            *failed += 1;
            if first_err.is_empty() {
                *first_err = e;
            }
        }
        Err(_) => *failed += 1,
    }
}
