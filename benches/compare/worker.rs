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

use crate::clients::{handshake, Client, Kind, Talker, OPENING, STEP};
use crate::clock::now_ns;
use crate::support::http::HttpConn;
use crate::support::sse::Seen;

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
/// Latencies one worker reports for the chat scenario: evenly spaced order
/// statistics of all its deliveries, enough for a p99 and a short line.
const CHAT_SAMPLES: usize = 2000;
/// How every chat message's text starts: `chat SEQ SENT_NS `, then padding.
const CHAT_TAG: &str = "chat ";

/// The sequence number and send time of a chat message, found in the raw
/// JSON a client handed over (ssio wraps the text in `{"message":..,
/// "sid":..}`, socket.io sends it bare).
fn chat_stamp(raw: &str) -> Option<(usize, u64, u64)> {
    let at = raw.find(CHAT_TAG)? + CHAT_TAG.len();
    let mut words = raw[at..].split(' ');
    let sender: usize = words.next()?.parse().ok()?;
    (sender < MAX_SENDERS).then_some(())?;
    Some((
        sender,
        words.next()?.parse().ok()?,
        words.next()?.parse().ok()?,
    ))
}

/// The most chat senders a run may have: each client keeps one order
/// position per sender.
pub const MAX_SENDERS: usize = 16;

/// A chat message's text: tag, sender, sequence number, send time, and
/// padding up to `size` bytes, so both servers carry the same text.
fn chat_text(sender: usize, seq: u64, t: u64, size: usize) -> String {
    let mut text = format!("{CHAT_TAG}{sender} {seq} {t} ");
    while text.len() < size {
        text.push('x');
    }
    text
}

/// What the standing clients of one worker received of the chat.
#[derive(Default)]
struct ChatLog {
    /// Messages each client received.
    got: Vec<u32>,
    /// The highest sequence number each client has seen from each sender,
    /// +1 (0: none yet): `MAX_SENDERS` slots per client. Senders emit
    /// concurrently, so only each one's own messages have an order.
    next_seq: Vec<u64>,
    total: u64,
    /// Deliveries that came out of order or twice, or whose text was not a
    /// chat message of this run.
    disorder: u64,
    first_t: u64,
    last_t: u64,
    /// Receipt minus send time of every delivery, in µs.
    lat_us: Vec<u32>,
}

impl ChatLog {
    fn see(&mut self, i: usize, raw: &[String], t: u64) {
        for r in raw {
            let Some((sender, seq, sent)) = chat_stamp(r) else {
                self.disorder += 1;
                continue;
            };
            let slot = i * MAX_SENDERS + sender;
            if seq < self.next_seq[slot] {
                self.disorder += 1;
            }
            self.next_seq[slot] = self.next_seq[slot].max(seq + 1);
            self.got[i] += 1;
            self.total += 1;
            if self.first_t == 0 {
                self.first_t = t;
            }
            self.last_t = t;
            self.lat_us
                .push((t.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32);
        }
    }
}

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
    /// A `wait` is timing a change that some clients have yet to see.
    timing: bool,
    /// Told when a timed change has reached every client, or its wait
    /// gave up.
    timed: Rc<Notify>,
    chat: ChatLog,
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
                self.timing = false;
                self.timed.notify_waiters();
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
    ready: oneshot::Sender<Option<u64>>,
) {
    let mut client = match Client::connect(kind, server, salt, OPENING).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker: connect failed: {e}");
            tracker.borrow_mut().see(idx, LOST, now_ns());
            let _ = ready.send(None);
            return;
        }
    };
    let _ = ready.send(Some(now_ns()));
    let mut seen = Seen::default();
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
        let t = now_ns();
        {
            let mut tr = tracker.borrow_mut();
            if let Some(&v) = seen.counts.last() {
                tr.see(idx, v, t);
            }
            if !seen.chats.is_empty() {
                tr.chat.see(idx, &seen.chats, t);
            }
        }
        // A poller that has the change being timed sends its next request
        // once every client has it (or the wait gives up), and any other
        // poller after the answers already in are read. The generator's
        // clients share one core, and a request sent over loopback costs
        // the sending core the receiving end's TCP work too: sent at once,
        // the requests would delay the very reads being timed, a cost a
        // real client pays on its own machine. The server still reads
        // every one of them before the next change (see `settle`).
        if matches!(kind, Kind::Poll | Kind::SioPolling) {
            let timed = tracker.borrow().timed.clone();
            let over = timed.notified();
            let hold = {
                let t = tracker.borrow();
                t.timing && t.hit(idx)
            };
            if hold {
                let _ = tokio::time::timeout(HOLD_LIMIT, over).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Longest a poller holds its next request back for a timed change.
const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// The one extra client whose coming and going makes the fan-out changes.
/// It reads like any other client so that the server treats it as live.
async fn extra(mut client: Client, leave: oneshot::Receiver<oneshot::Sender<u64>>) {
    let mut leave = leave;
    let mut seen = Seen::default();
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
        timing: false,
        timed: Rc::new(Notify::new()),
        chat: ChatLog::default(),
    }));
    let mut leave_tx: Option<oneshot::Sender<oneshot::Sender<u64>>> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 { words.get(i).and_then(|w| w.parse().ok()).unwrap_or(0) };
        match words.first().copied() {
            Some("open") => {
                // open N [all]: `all` opens every client at once, without
                // the connect limit. Replies with the clients opened and
                // failed, when the first connect began and when the last
                // session was confirmed.
                let n = num(1) as usize;
                let at_once = words.get(2) == Some(&"all");
                let base = tracker.borrow().latest.len();
                {
                    let mut t = tracker.borrow_mut();
                    t.latest.resize(base + n, UNSEEN);
                    t.at.resize(base + n, 0);
                    t.chat.got.resize(base + n, 0);
                    t.chat.next_seq.resize((base + n) * MAX_SENDERS, 0);
                }
                let gate = std::sync::Arc::new(Semaphore::new(if at_once {
                    n.max(1)
                } else {
                    OPEN_CONCURRENCY
                }));
                let t_start = now_ns();
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
                        let ok = rx.await.unwrap_or(None);
                        drop(permit);
                        ok
                    }));
                }
                let (mut ok, mut t_last) = (0, 0u64);
                for w in waits {
                    if let Some(t) = w.await.unwrap_or(None) {
                        ok += 1;
                        t_last = t_last.max(t);
                    }
                }
                reply(format!("opened {ok} {} {t_start} {t_last}", n - ok));
            }
            Some("talk") => {
                // talk RATE_PER_S DURATION_MS SIZE DRAIN_MS SENDERS: the
                // senders together emit RATE×DURATION chat messages on
                // schedule, taking turns (late ones go at once, none is
                // skipped). Replies with messages sent, failed, and the
                // first and last send times.
                let (rate, ms, size, drain) = (num(1).max(1), num(2), num(3) as usize, num(4));
                let senders = (num(5) as usize).clamp(1, MAX_SENDERS);
                let plan = TalkPlan {
                    rate,
                    ms,
                    size,
                    drain,
                    senders,
                };
                reply(talk(kind, server, salt, plan).await);
            }
            Some("chats") => {
                // chats SENT DEADLINE_NS: until every standing client has
                // SENT chat messages, or the deadline. Replies with messages
                // received and lost, deliveries out of order, first and
                // last receipt, clients whose session failed, clients that
                // received none, and the latency sample (µs).
                let (sent, deadline) = (num(1), num(2));
                loop {
                    let (total, n) = {
                        let t = tracker.borrow();
                        (t.chat.total, t.latest.len() as u64)
                    };
                    if total >= n * sent || now_ns() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let mut t = tracker.borrow_mut();
                let gone = t.latest.iter().filter(|&&x| x == LOST).count();
                let c = &mut t.chat;
                let lost: u64 = c.got.iter().map(|&g| sent.saturating_sub(g as u64)).sum();
                let silent = c.got.iter().filter(|&&g| g == 0).count();
                c.lat_us.sort_unstable();
                let k = c.lat_us.len().min(CHAT_SAMPLES);
                let samples: Vec<String> = (0..k)
                    .map(|j| c.lat_us[j * c.lat_us.len() / k].to_string())
                    .collect();
                reply(format!(
                    "chats {} {lost} {} {} {} {gone} {silent} {k} {}",
                    c.total,
                    c.disorder,
                    c.first_t,
                    c.last_t,
                    samples.join(" ")
                ));
            }
            Some("wait") => {
                // wait VALUE SINCE_NS DEADLINE_NS: until every standing
                // client has seen VALUE at or after SINCE, or the deadline.
                let (v, since, deadline) = (words[1].parse::<i64>().unwrap_or(0), num(2), num(3));
                {
                    let mut t = tracker.borrow_mut();
                    t.retarget(v, since);
                    t.timing = t.converged < t.latest.len();
                }
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
                // Given up on: the pollers holding back go on.
                let gave_up = std::mem::take(&mut tracker.borrow_mut().timing);
                if gave_up {
                    tracker.borrow().timed.notify_waiters();
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

/// What the `talk` command was asked for.
struct TalkPlan {
    rate: u64,
    ms: u64,
    size: usize,
    drain: u64,
    senders: usize,
}

/// The `talk` command: connects the senders, and each emits its turns on
/// schedule while reading its own stream, then leaves once every one of
/// its own messages has come back (or after `drain` ms). Leaving earlier
/// would lose messages: a socket closed with unread data in it is reset,
/// and a reset throws away what the server had not yet read of it.
async fn talk(kind: Kind, server: SocketAddr, salt: u32, plan: TalkPlan) -> String {
    let mut talkers = Vec::with_capacity(plan.senders);
    for _ in 0..plan.senders {
        match Talker::connect(kind, server, salt).await {
            Ok(t) => talkers.push(t),
            Err(e) => return format!("error talker connect {e}"),
        }
    }
    let total = plan.rate * plan.ms / 1000;
    let start = tokio::time::Instant::now();
    let runs = talkers
        .into_iter()
        .enumerate()
        .map(|(i, t)| one_sender(i, t, &plan, total, start));
    let (mut sent, mut failed, mut t_first, mut t_last) = (0u64, 0u64, u64::MAX, 0u64);
    for r in futures_util::future::join_all(runs).await {
        let Ok((s, f, first, last)) = r else {
            return r.err().unwrap_or_default();
        };
        sent += s;
        failed += f;
        if s > 0 {
            t_first = t_first.min(first);
            t_last = t_last.max(last);
        }
    }
    if sent == 0 {
        t_first = 0;
    }
    format!("talked {sent} {failed} {t_first} {t_last}")
}

/// Sender `i` of the `talk` command: it emits the messages whose sequence
/// numbers are `i`, `i + senders`, ...; sent, failed, first and last send.
async fn one_sender(
    i: usize,
    mut talker: Talker,
    plan: &TalkPlan,
    total: u64,
    start: tokio::time::Instant,
) -> Result<(u64, u64, u64, u64), String> {
    let interval = 1_000_000_000 / plan.rate;
    let (mut sent, mut failed, mut t_first, mut t_last) = (0u64, 0u64, 0u64, 0u64);
    let mut seen = Seen::default();
    let mine: Vec<u64> = (i as u64..total).step_by(plan.senders).collect();
    // Its own messages heard back.
    let mut heard = 0usize;
    // A server that takes each message slowly must not hold the sender
    // for ever: what is not sent by then counts as failed.
    let give_up = start + Duration::from_millis(2 * plan.ms) + 2 * STEP;
    for (k, &seq) in mine.iter().enumerate() {
        if tokio::time::Instant::now() > give_up {
            failed += (mine.len() - k) as u64;
            break;
        }
        let due = start + Duration::from_nanos(seq * interval);
        // Its own stream is read until the message is due: the server
        // writes it every message too.
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => break,
                r = talker.next(&mut seen) => {
                    if let Err(e) = r {
                        return Err(format!("error talker lost {e}"));
                    }
                    heard += heard_own(i, &mut seen);
                }
            }
        }
        let t = now_ns();
        match talker.say(&chat_text(i, seq, t, plan.size)).await {
            Ok(()) => {
                sent += 1;
                if t_first == 0 {
                    t_first = t;
                }
                t_last = t;
            }
            Err(e) => {
                failed += 1;
                eprintln!("worker: chat send failed: {e}");
            }
        }
    }
    let until = tokio::time::Instant::now() + Duration::from_millis(plan.drain);
    while (heard as u64) < sent {
        match tokio::time::timeout_at(until, talker.next(&mut seen)).await {
            Ok(Ok(())) => heard += heard_own(i, &mut seen),
            Ok(Err(e)) => return Err(format!("error talker lost {e}")),
            Err(_) => {
                eprintln!("worker: sender {i} heard {heard} of its {sent} messages back");
                break;
            }
        }
    }
    if let Err(e) = talker.leave().await {
        eprintln!("worker: talker leave failed: {e}");
    }
    Ok((sent, failed, t_first, t_last))
}

/// How many of sender `i`'s own messages `seen` holds; empties `seen`.
fn heard_own(i: usize, seen: &mut Seen) -> usize {
    let n = seen
        .chats
        .iter()
        .filter_map(|c| chat_stamp(c))
        .filter(|&(sender, _, _)| sender == i)
        .count();
    seen.clear();
    n
}
