//! What an operator graphs: counters and histograms in the Prometheus text
//! format, kept with the `prometheus-client` crate.
//!
//! Everything a request or a delivery touches is a plain atomic: every
//! labelled series that can exist (per transport, per reason, per kind) is
//! created once, here, and its handle kept in an array, so the hot path
//! never looks a label set up (which would take the family's lock). What is
//! cheaper to read than to keep (live sessions, memory, descriptors, the
//! backend's state) is read when `/metrics` is scraped.
//!
//! The fan-out histogram needs to know when the *last* session has written
//! an event. [`FanoutClock`] keeps, for each recent broadcast, the number of
//! sessions that still owe it; a session settles everything up to the
//! newest broadcast it has caught up with, with one atomic decrement per
//! event, and whoever brings a count to zero records the elapsed time. The
//! clock's lock is taken once per broadcast and once per session start or
//! end, never per delivery.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::ops::clock::{latency_buckets, FanoutClock};
use crate::session::{DisconnectReason, Transport};

/// The content type of the exposition that [`Metrics::encode`] writes.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every transport, in the order of the per-transport arrays.
const TRANSPORTS: [Transport; 2] = [Transport::Sse, Transport::Polling];

/// Every disconnect reason, in the order of the per-reason arrays.
const REASONS: [DisconnectReason; 7] = [
    DisconnectReason::TransportClose,
    DisconnectReason::PingTimeout,
    DisconnectReason::ClientClose,
    DisconnectReason::ServerShutdown,
    DisconnectReason::ServerDisconnect,
    DisconnectReason::SlowReader,
    DisconnectReason::TokenExpired,
];

/// How an event reached sessions, for `ssio_events_published_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An ordinary broadcast: every session reads every one, in order.
    Ordinary,
    /// A latest-value broadcast: a session that is behind reads the newest.
    Latest,
    /// An event for one session (`socket.emit`).
    Direct,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ordinary => "ordinary",
            Kind::Latest => "latest",
            Kind::Direct => "direct",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DisconnectLabels {
    transport: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// What the backend reports about itself, as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BackendGauges {
    /// Whether it reaches the shared store now.
    pub(crate) connected: bool,
    /// Reconnections since start.
    pub(crate) reconnects: u64,
    /// How far behind the newest shared state it is, when it can tell.
    pub(crate) lag: Option<Duration>,
}

/// Live values read at scrape time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    /// Live SSE sessions.
    pub(crate) sse: usize,
    /// Live polling sessions.
    pub(crate) polling: usize,
    /// Outstanding handshake tickets.
    pub(crate) tickets: usize,
    /// Answers owed to the server's acknowledged emits.
    pub(crate) acks_owed: usize,
    /// The backend's state, when a backend that has one is configured.
    pub(crate) backend: Option<BackendGauges>,
}

/// The backend's series, registered only when it reports a state.
struct BackendSeries {
    connected: Gauge,
    reconnects: Counter,
    lag: Gauge<f64, AtomicU64>,
}

/// The server's metrics: the registry and a handle on every series.
pub(crate) struct Metrics {
    /// What `/metrics` encodes. Registration happens once, at startup.
    registry: Registry,
    /// Live sessions by transport (set at scrape).
    sessions: [Gauge; 2],
    /// Sessions started, by transport.
    connects: [Counter; 2],
    /// Sessions ended, by transport and reason.
    disconnects: [[Counter; 7]; 2],
    /// Sessions dropped for falling behind (also a disconnect reason; kept
    /// apart because it is the one to alert on).
    slow_reader_drops: Counter,
    /// Events published, by kind.
    published: [Counter; 3],
    /// Events written to sessions (each event once per receiver).
    deliveries: Counter,
    /// Response body bytes written, both transports and every route.
    bytes_written: Counter,
    /// Requests refused, by status.
    rejected: Family<StatusLabel, Counter>,
    /// How long a long-poll was held before it answered.
    poll_hold: Histogram,
    /// Long-polls held now.
    polls_held: Gauge,
    /// Outstanding handshake tickets (set at scrape).
    tickets: Gauge,
    /// Answers owed to acknowledged emits (set at scrape).
    acks_owed: Gauge,
    /// Resident memory (set at scrape).
    rss: Gauge,
    /// Open file descriptors (set at scrape).
    open_fds: Gauge,
    /// The backend's state, when it reports one.
    backend: Option<BackendSeries>,
    /// Broadcast-to-last-write timing; shared with the fan-out.
    clock: Arc<FanoutClock>,
}

fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Sse => 0,
        Transport::Polling => 1,
    }
}

fn reason_index(r: DisconnectReason) -> usize {
    REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Ordinary => 0,
        Kind::Latest => 1,
        Kind::Direct => 2,
    }
}

impl Metrics {
    /// Registers every series; `backend` says whether a backend that
    /// reports its state is configured.
    pub(crate) fn new(clock: Arc<FanoutClock>, backend: bool) -> Metrics {
        let mut registry = Registry::with_prefix("ssio");

        let sessions_family = Family::<TransportLabel, Gauge>::default();
        let connects_family = Family::<TransportLabel, Counter>::default();
        let disconnects_family = Family::<DisconnectLabels, Counter>::default();
        let label = |t: Transport| TransportLabel {
            transport: t.as_str().to_string(),
        };
        let sessions = TRANSPORTS.map(|t| sessions_family.get_or_create_owned(&label(t)));
        let connects = TRANSPORTS.map(|t| connects_family.get_or_create_owned(&label(t)));
        let disconnects = TRANSPORTS.map(|t| {
            REASONS.map(|r| {
                disconnects_family.get_or_create_owned(&DisconnectLabels {
                    transport: t.as_str().to_string(),
                    reason: r.as_str().to_string(),
                })
            })
        });
        // The fan-out counts its broadcasts itself. The family's series must
        // be those very atomics, and a family makes its series with a
        // constructor that cannot see the labels, so it hands out the
        // prepared counters in the order the labels are created below.
        let prepared = Mutex::new(vec![
            Counter::default(),
            clock.published[1].clone(),
            clock.published[0].clone(),
        ]);
        let published_family = Family::<KindLabel, Counter, _>::new_with_constructor(move || {
            prepared.lock().pop().unwrap_or_default()
        });
        let published = [Kind::Ordinary, Kind::Latest, Kind::Direct].map(|k| {
            published_family.get_or_create_owned(&KindLabel {
                kind: k.as_str().to_string(),
            })
        });
        let metrics = Metrics {
            sessions,
            connects,
            disconnects,
            slow_reader_drops: Counter::default(),
            published,
            deliveries: Counter::default(),
            bytes_written: Counter::default(),
            rejected: Family::default(),
            poll_hold: Histogram::new(latency_buckets()),
            tickets: Gauge::default(),
            acks_owed: Gauge::default(),
            polls_held: Gauge::default(),
            rss: Gauge::default(),
            open_fds: Gauge::default(),
            backend: backend.then(|| BackendSeries {
                connected: Gauge::default(),
                reconnects: Counter::default(),
                lag: Gauge::default(),
            }),
            clock,
            registry: Registry::default(),
        };

        let r = &mut registry;
        r.register("sessions", "Live sessions", sessions_family);
        r.register("connects", "Sessions started", connects_family);
        r.register(
            "disconnects",
            "Sessions ended, by reason",
            disconnects_family,
        );
        r.register(
            "tickets",
            "Handshake tickets issued and neither redeemed nor expired",
            metrics.tickets.clone(),
        );
        r.register(
            "acks_owed",
            "Answers the server's acknowledged emits wait for, bounded by --max-pending-acks",
            metrics.acks_owed.clone(),
        );
        r.register(
            "slow_reader_drops",
            "Sessions dropped for falling more than --max-pending-events behind",
            metrics.slow_reader_drops.clone(),
        );
        r.register(
            "events_published",
            "Events published, by kind",
            published_family,
        );
        r.register(
            "deliveries",
            "Events written to sessions, one per receiver",
            metrics.deliveries.clone(),
        );
        r.register(
            "fanout_swept",
            "Latest values the fan-out's sweeper wrote to idle streams itself, without waking each stream's task",
            metrics.clock.swept.clone(),
        );
        r.register_with_unit(
            "written",
            "Response body bytes written",
            Unit::Bytes,
            metrics.bytes_written.clone(),
        );
        r.register(
            "rejected_requests",
            "Requests refused, by status",
            metrics.rejected.clone(),
        );
        r.register_with_unit(
            "fanout",
            "Time from publishing a broadcast until the last local session had written it or a newer value",
            Unit::Seconds,
            metrics.clock.histogram.clone(),
        );
        r.register_with_unit(
            "poll_hold",
            "Time a long-poll was held before it answered",
            Unit::Seconds,
            metrics.poll_hold.clone(),
        );
        r.register(
            "polls_held",
            "Long-polls held now, each waiting for events or pingInterval",
            metrics.polls_held.clone(),
        );
        r.register_with_unit(
            "process_resident_memory",
            "Resident memory",
            Unit::Bytes,
            metrics.rss.clone(),
        );
        r.register(
            "process_open_fds",
            "Open file descriptors",
            metrics.open_fds.clone(),
        );
        if let Some(b) = &metrics.backend {
            r.register(
                "backend_connected",
                "1 while the backend reaches its shared store",
                b.connected.clone(),
            );
            r.register(
                "backend_reconnects",
                "Backend reconnections since start",
                b.reconnects.clone(),
            );
            r.register_with_unit(
                "backend_lag",
                "How far behind the shared state the backend is",
                Unit::Seconds,
                b.lag.clone(),
            );
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A session started.
    pub(crate) fn connected(&self, t: Transport) {
        self.connects[transport_index(t)].inc();
    }

    /// A session ended.
    pub(crate) fn disconnected(&self, t: Transport, reason: DisconnectReason) {
        self.disconnects[transport_index(t)][reason_index(reason)].inc();
        if reason == DisconnectReason::SlowReader {
            self.slow_reader_drops.inc();
        }
    }

    /// An event was published.
    pub(crate) fn published(&self, kind: Kind) {
        self.published[kind_index(kind)].inc();
    }

    /// `n` events and `bytes` body bytes were written to one session.
    /// Events written to clients since start (`ssio_deliveries_total`).
    pub(crate) fn deliveries(&self) -> u64 {
        self.deliveries.get()
    }

    pub(crate) fn written(&self, n: u64, bytes: u64) {
        if n > 0 {
            self.deliveries.inc_by(n);
        }
        if bytes > 0 {
            self.bytes_written.inc_by(bytes);
        }
    }

    /// A response body of `bytes` that is not a session's stream.
    pub(crate) fn response_bytes(&self, bytes: u64) {
        self.bytes_written.inc_by(bytes);
    }

    /// A request was refused with `status`.
    pub(crate) fn rejected(&self, status: u16) {
        // Statuses are a handful of fixed values, so the family stays small;
        // the lookup takes its lock, which a refused request can afford.
        self.rejected
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// A long-poll began to be held.
    pub(crate) fn poll_began(&self) {
        self.polls_held.inc();
    }

    /// A held long-poll ended: answered, or dropped with its connection.
    pub(crate) fn poll_ended(&self) {
        self.polls_held.dec();
    }

    /// A long-poll answered after being held for `held`.
    pub(crate) fn poll_held(&self, held: Duration) {
        self.poll_hold.observe(held.as_secs_f64());
    }

    /// The exposition, with the live values of `now` filled in.
    pub(crate) fn encode(&self, now: Snapshot) -> String {
        self.sessions[0].set(now.sse as i64);
        self.sessions[1].set(now.polling as i64);
        self.tickets.set(now.tickets as i64);
        self.acks_owed.set(now.acks_owed as i64);
        if let Some(rss) = process_rss() {
            self.rss.set(rss as i64);
        }
        if let Some(fds) = open_fds() {
            self.open_fds.set(fds as i64);
        }
        if let (Some(series), Some(state)) = (&self.backend, now.backend) {
            series.connected.set(state.connected as i64);
            let seen = series.reconnects.get();
            if state.reconnects > seen {
                series.reconnects.inc_by(state.reconnects - seen);
            }
            series
                .lag
                .set(state.lag.map_or(f64::NAN, |l| l.as_secs_f64()));
        }
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Resident memory of this process in bytes, from /proc.
fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open descriptors of this process, from /proc.
fn open_fds() -> Option<usize> {
    // The directory handle itself is one of them.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_series() {
        let m = Metrics::new(Arc::new(FanoutClock::default()), true);
        m.connected(Transport::Sse);
        m.disconnected(Transport::Sse, DisconnectReason::SlowReader);
        m.rejected(404);
        let text = m.encode(Snapshot {
            sse: 3,
            polling: 1,
            tickets: 5,
            acks_owed: 7,
            backend: Some(BackendGauges {
                connected: false,
                reconnects: 2,
                lag: None,
            }),
        });
        for needle in [
            "ssio_sessions{transport=\"sse\"} 3",
            "ssio_tickets 5",
            "ssio_acks_owed 7",
            "ssio_connects_total{transport=\"sse\"} 1",
            "ssio_disconnects_total{transport=\"sse\",reason=\"slow reader\"} 1",
            "ssio_slow_reader_drops_total 1",
            "ssio_rejected_requests_total{status=\"404\"} 1",
            "ssio_backend_connected 0",
            "ssio_backend_reconnects_total 2",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
