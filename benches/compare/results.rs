//! Everything one run measured, as typed rows: the scenarios fill them in,
//! the report reads them, and compare.json is their serialization (fields in
//! the order written here).

use serde::Serialize;
use serde_json::Value;

use crate::clients::Kind;

/// The fan-out floor at one N.
#[derive(Serialize)]
pub struct FloorRow {
    pub n: usize,
    pub rounds: usize,
    /// Median round time divided by N.
    pub per_write_ns: f64,
    /// The writer's CPU time over its median round, divided by N: what
    /// one write costs, which a busy machine's preemptions do not inflate
    /// as they do the round's wall time. Set against a server's CPU per
    /// delivery.
    pub per_write_cpu_ns: f64,
    /// `per_write_ns` times N: the least a fan-out to N clients can take.
    pub fanout_floor_ms: f64,
    /// Rounds timed as a fan-out is: from just before the round was asked
    /// for until the last client read it.
    pub last_p50_ms: f64,
    pub last_p99_ms: f64,
    /// In round order.
    pub last_samples_ms: Vec<f64>,
}

/// Idle memory and CPU of one server with N standing clients.
#[derive(Serialize)]
pub struct IdleRow {
    pub transport: Kind,
    pub n: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub bytes_per_client: f64,
    /// The peer's V8 heap; ssio has none.
    pub heap_used_before: Option<u64>,
    pub heap_used_after: Option<u64>,
    pub heap_bytes_per_client: Option<f64>,
    pub idle_cpu_pct: f64,
    /// What the server itself reported (`/stats` or `/heap`), as it came.
    pub server_stats: Option<Value>,
}

/// Fan-out latency of one server at one N.
#[derive(Serialize)]
pub struct FanoutRow {
    pub transport: Kind,
    pub n: usize,
    pub changes: usize,
    pub timeouts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub server_cpu_ms_per_change: f64,
    pub generator_cpu_ms_per_change: f64,
    /// The floor measured in turns with this fan-out's changes, when the
    /// plan has the floor.
    pub paired_floor: Option<PairedFloor>,
    /// In change order (join, leave, join, ...), so that a slow kind of
    /// change stands out.
    pub samples_ms: Vec<f64>,
}

/// Rounds of the floor, one before each change of a fan-out: the same
/// machine at the same moments as the server's writes.
#[derive(Serialize)]
pub struct PairedFloor {
    pub rounds: usize,
    /// The writer's mean CPU time per write over every round.
    pub per_write_cpu_ns: f64,
    /// The writer's mean wall time per write over every round.
    pub per_write_ns: f64,
    /// Rounds timed to the last read, as a fan-out is.
    pub last_p99_ms: f64,
    /// Each round's last read, in the order run: round `i` ran just before
    /// change `i`, so a slow stretch of the machine shows in both.
    pub last_samples_ms: Vec<f64>,
}

/// Churn of one server: every rate tried, up to the first that failed.
#[derive(Serialize)]
pub struct ChurnRow {
    pub transport: Kind,
    pub standing: usize,
    pub step_ms: u64,
    /// Highest rate that passed, 0 if none did.
    pub best_rate: u64,
    pub steps: Vec<ChurnStep>,
}

/// One rate of a churn run.
#[derive(Serialize)]
pub struct ChurnStep {
    pub rate: u64,
    pub planned: u64,
    pub completed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub converged_at_250ms: u64,
    pub standing: u64,
    pub wrong_at_250ms: u64,
    /// Lowest and highest count a standing client held.
    pub counts_at_250ms: [i64; 2],
    pub converged_750ms: u64,
    pub counts_750ms: [i64; 2],
    pub lost: u64,
    pub last_update_after_stop_ms: f64,
    pub pass: bool,
}

/// Abandoned long-poll handshakes against one server.
#[derive(Serialize)]
pub struct AbandonedRow {
    pub transport: Kind,
    pub handshakes: u64,
    pub ok: u64,
    pub failed: u64,
    pub handshake_secs: f64,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub waited_ms: u64,
    pub rss_before_kib: u64,
    pub rss_peak_kib: u64,
    pub rss_after_kib: u64,
    pub rss_after_ratio: f64,
    pub sessions_before: Option<u64>,
    pub sessions_peak: Option<u64>,
    pub sessions_after: Option<u64>,
    pub pass: bool,
}

/// One sender's chat to N clients of one server.
#[derive(Serialize)]
pub struct ChatRow {
    pub transport: Kind,
    pub n: usize,
    /// The N asked for; socket.io is opened to fewer (`n` says how many).
    pub n_planned: usize,
    pub rate: u64,
    pub send_ms: u64,
    pub message_bytes: usize,
    pub sent: u64,
    pub send_failed: u64,
    /// Messages per second the sender achieved (it never skips a late one).
    pub sent_per_s: f64,
    /// `rate` × N.
    pub offered_per_s: f64,
    /// N × sent.
    pub expected: u64,
    pub received: u64,
    /// Per client, messages sent that it never received, summed.
    pub lost: u64,
    /// Deliveries out of order, twice, or not of this run.
    pub disorder: u64,
    /// Clients whose session failed, and clients that received nothing:
    /// which of the two a loss is.
    pub clients_failed: u64,
    pub clients_silent: u64,
    /// How long the N clients took to open before the chat.
    pub open_s: f64,
    /// CPU seconds from just before the sender connects until every
    /// receiving worker has answered (the drain included): the server's,
    /// and the receiving workers' (the sender's is apart).
    pub server_cpu_s: f64,
    pub receivers_cpu_s: f64,
    /// From the first send to the last receipt.
    pub span_s: f64,
    /// `received` ÷ `span_s`.
    pub delivered_per_s: f64,
    /// Whether every delivery came within the drain window.
    pub drained: bool,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub pass: bool,
}

/// N clients of one server opened all at once.
#[derive(Serialize)]
pub struct RampRow {
    pub transport: Kind,
    pub n: usize,
    /// The N asked for; socket.io is opened to fewer (`n` says how many).
    pub n_planned: usize,
    pub generators: usize,
    pub opened: u64,
    pub failed: u64,
    /// From the first connect to the last session confirmed.
    pub connect_s: f64,
    /// CPU seconds over the same time: a server near `connect_s` is the
    /// limit; a generator near it (one core for all workers) is.
    pub server_cpu_s: f64,
    pub generator_cpu_s: f64,
    /// SYNs the machine's listen queues dropped meanwhile (any process's:
    /// others on the machine count too); each one is a retry a second later.
    pub listen_overflows: u64,
    pub connects_per_s: f64,
    /// Whether every client came to hold the count N.
    pub converged: bool,
    /// From the first connect until every client held the count N.
    pub exact_count_ms: f64,
    pub pass: bool,
}

/// Everything one run measured.
#[derive(Default)]
pub struct Results {
    pub floor: Vec<FloorRow>,
    pub idle: Vec<IdleRow>,
    pub fanout: Vec<FanoutRow>,
    pub churn: Vec<ChurnRow>,
    pub abandoned: Vec<AbandonedRow>,
    pub chat: Vec<ChatRow>,
    pub ramp: Vec<RampRow>,
    pub notes: Vec<String>,
    /// Load average when the run started; other work on the machine shows
    /// up here, and a high figure means the run was disturbed.
    pub load_before: String,
    /// The commit the run started on; a tree may move on while it runs.
    pub commit_before: String,
}
