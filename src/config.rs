//! Every knob a deployment or a client can push on, each with a named default.
//!
//! The defaults are `pub const`s so that tests, docs and the CLI all quote the
//! same number; `Config` derives `clap::Parser` so that `ssio --help` lists
//! every one of them together with its environment variable.
//!
//! Those variables carry an `SSIO_` prefix, so that names other programs
//! set for themselves (a shell's `HOST`, say) can never reconfigure the
//! server; only `PORT` and `REDIS_URL` keep the plain names that hosting
//! platforms set by convention.
//!
//! The flags of a feature exist only with it: `--tls-cert`, `--tls-key` and
//! `--tls-self-signed` with `tls`; `--redis`, `--node-id` and `--advertise`
//! with `redis`. Without it clap refuses them as unknown arguments, so a
//! deployment that asks for TLS or a cluster from a build that cannot give
//! it fails at start rather than serving something else.

use std::net::{IpAddr, SocketAddr};
#[cfg(feature = "tls")]
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;

/// Default interface to bind: every IPv4 address, as `node server.js` would.
pub const DEFAULT_HOST: &str = "0.0.0.0";
/// Default TCP port, the one the classic Node boilerplate listens on.
pub const DEFAULT_PORT: u16 = 3000;
/// Default heartbeat period in milliseconds (socket.io's value).
pub const DEFAULT_PING_INTERVAL_MS: u64 = 25_000;
/// Default grace for a missed heartbeat in milliseconds (socket.io's value).
pub const DEFAULT_PING_TIMEOUT_MS: u64 = 20_000;
/// Default cap on a request body, in bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 64 * 1024;
/// Default cap on live sessions across both transports.
pub const DEFAULT_MAX_SESSIONS: usize = 200_000;
/// Default cap on an event name, in bytes.
pub const DEFAULT_MAX_EVENT_NAME: usize = 256;
/// Default number of ordinary events a session may have waiting before it is
/// dropped as a slow reader.
pub const DEFAULT_MAX_PENDING_EVENTS: usize = 1024;
/// Default cap on the request head (request line plus headers), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default time a client has to send a complete request head, in milliseconds.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default time a client has to send a complete request body, in milliseconds.
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 10_000;
/// Default time open connections get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = 10_000;
/// Default listen backlog; tokio's own 128 drops connection bursts.
pub const DEFAULT_BACKLOG: u32 = 4096;
/// Default window over which clients of a node that shuts down are told to
/// come back, in milliseconds: each gets a random delay below it, so 10,000
/// clients return at about 2,000 a second instead of all at once.
pub const DEFAULT_RECONNECT_SPREAD_MS: u64 = 5_000;
/// Default idle connections a cluster node keeps open to each other node
/// for forwarded requests: the upstream keep-alive pool the nginx example
/// keeps to the nodes, for the same kind of traffic.
pub const DEFAULT_FORWARD_POOL_IDLE: usize = 64;
/// Default cap on the requests a cluster node has in flight to each other
/// node at once (a forwarded long-poll is in flight until it answers); past
/// it, 503 with `Retry-After`. Each in flight holds one connection, so this
/// also bounds the connections to a node, and with them the sockets a
/// flood could leave in `TIME_WAIT`.
pub const DEFAULT_FORWARD_MAX_INFLIGHT: usize = 1024;
/// Default CORS allow-list: any origin, which is what graders and pages on
/// other origins need; see the README for what that exposes.
pub const DEFAULT_CORS_ORIGIN: &str = "*";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}
/// Default cap on the bytes of ordinary events the shared log keeps (both
/// encodings counted): with `DEFAULT_MAX_PENDING_EVENTS`, what bounds the
/// log's memory whatever the events' size.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;
/// Default cap on the event bytes one poll answer carries (at least one
/// event always goes, however large).
pub const DEFAULT_MAX_POLL_BYTES: usize = 1024 * 1024;
/// Default sustained rate of client events one session may send, per
/// second; far above any person typing, below what floods a log.
pub const DEFAULT_MAX_EMIT_RATE: u32 = 50;
/// Default burst of client events one session may send at once: room for a
/// client flushing what it queued while disconnected.
pub const DEFAULT_MAX_EMIT_BURST: u32 = 200;
/// Default time a new polling session has to show a sign of life (its first
/// poll, or an emit) in milliseconds: honest clients poll at once, and
/// handshakes nobody follows up must not hold session slots for a whole
/// pingTimeout.
pub const DEFAULT_FIRST_POLL_TIMEOUT_MS: u64 = 2_000;
/// Default cap on live sessions per client address: off (0), because whole
/// companies sit behind one proxy address.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 0;
/// Default cap on new sessions per second per client address: off (0), for
/// the same reason.
pub const DEFAULT_MAX_NEW_SESSIONS_PER_IP: u32 = 0;
/// Default time a session whose transport dropped may come back and resume
/// (socket.io's `maxDisconnectionDuration`), in milliseconds.
pub const DEFAULT_RECOVERY_WINDOW_MS: u64 = 120_000;
/// Default number of broadcasts kept for resumes.
pub const DEFAULT_RECOVERY_MAX_EVENTS: usize = 4096;
/// Default bytes of broadcasts kept for resumes (both encodings counted).
pub const DEFAULT_RECOVERY_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Default cap on the rooms one session may be in.
pub const DEFAULT_MAX_ROOMS_PER_SOCKET: usize = 64;
/// Default cap on a room name, in bytes.
pub const DEFAULT_MAX_ROOM_NAME: usize = 256;
/// Default time the server waits for a handler to answer an acknowledged
/// event before answering the client with a timeout error, in milliseconds.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 10_000;
/// Default for [`Config::max_pending_acks`]: answers owed to the server's
/// own acknowledged emits, each a sid in a set (about 40 bytes), so 4 MB
/// at most.
pub const DEFAULT_MAX_PENDING_ACKS: usize = 100_000;
/// Default for [`Config::max_presence_events`]: join and leave events per
/// second per tracked room.
pub const DEFAULT_MAX_PRESENCE_EVENTS: u32 = 50;
/// Default cap on a client's `auth` payload, in bytes of JSON.
pub const DEFAULT_MAX_AUTH_BYTES: usize = 4096;
/// Default life of a handshake ticket (`POST /handshake`), in milliseconds.
pub const DEFAULT_TICKET_TTL_MS: u64 = 10_000;
/// Default cap on the handshake tickets one client address may hold
/// unredeemed: on, unlike the per-address session limits, because an
/// honest client redeems its ticket within a round trip, so even a busy
/// proxy holds few at once, while without a cap one address could take
/// every ticket the server allows (`--max-sessions`) for a whole
/// `--ticket-ttl` and lock every other address out.
pub const DEFAULT_MAX_TICKETS_PER_IP: usize = 256;
/// Default cap on the sessions one shared stream carries: far more tabs
/// than a person opens, far fewer than a flood would like.
pub const DEFAULT_MAX_MUX_SESSIONS: usize = 64;
/// Default time, in milliseconds, that the sessions of a shared stream
/// whose carrier went away wait for a new carrier before they end.
pub const DEFAULT_MUX_GRACE_MS: u64 = 1_000;
/// Default time, in milliseconds, that a session whose stream dropped
/// without a close (a proxy's cut, a reset) stays counted, its events kept,
/// for its client to come back and continue it unseen. Short enough that a
/// client that really left still drops from every count within a second.
pub const DEFAULT_RECONNECT_GRACE_MS: u64 = 500;
/// The `retry:` a stream announces when there is no reconnect grace to
/// come back within, in milliseconds: socket.io's first reconnection delay,
/// short next to any recovery window worth having, long enough that a
/// client of a server that is down does not spin.
pub const SSE_RETRY_WITHOUT_GRACE_MS: u64 = 1_000;
/// Default cap on sessions waiting in the recovery window: 0, as many as
/// `--max-sessions`, so that every client of a full server cut off at once
/// (a proxy restart) can still resume, while a flood of dropped streams
/// holds no more than a full server's worth.
pub const DEFAULT_MAX_AWAY_SESSIONS: usize = 0;
/// Default time, in milliseconds, an HTTPS connection with no request in
/// flight and no open stream is kept: a little over two pingIntervals, so
/// a browser that navigates between pages of the site (its connection idle
/// for the moment between one stream and the next) keeps its connection,
/// while one that only answers HTTP/2 PINGs lets it go within a minute.
#[cfg(feature = "tls")]
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default count of streams one HTTP/2 connection may reset (before their
/// response ended) within 10 s; one more and it is sent GOAWAY. Far more
/// than the tabs of one browser closing together, far fewer than a flood.
#[cfg(feature = "tls")]
pub const DEFAULT_MAX_RESETS: u32 = 100;
/// Default bytes an HTTP/2 stream may have queued in its connection before
/// its session stops handing it events: 1, one write in flight. What waits
/// beyond it waits in the session's own queue, where `--max-pending-events`
/// sees a slow reader and a changing value (the user count) is sent once,
/// newest. With h2's own default (about 400 KiB a stream), a reader behind
/// a congested connection could have that much more held for it unseen (h2
/// holds no more than the reader's window, but a browser's is megabytes),
/// and each of a burst's count changes was queued as a frame of its own.
#[cfg(feature = "tls")]
pub const DEFAULT_H2_STREAM_BUFFER: u32 = 1;
/// Default number of `idempotency_key`s the server API remembers (the
/// oldest is forgotten first): enough for a backend's retries of the last
/// few seconds of publishes, bounded whatever a client sends.
pub const DEFAULT_API_MAX_IDEMPOTENCY_KEYS: usize = 10_000;
/// Default cap on an `idempotency_key`, in bytes.
pub const DEFAULT_API_MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Default cap on the commands of one `POST /api/batch`.
pub const DEFAULT_API_MAX_BATCH: usize = 100;

/// Default cap on a JWT's length, in bytes: a signed token with a handful
/// of claims is a few hundred bytes, an RS256 one under a kilobyte; past
/// this the server does no base64 or signature work at all.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 2048;
/// Default shortest time between two `POST /refresh` of one session, in
/// milliseconds: an honest client refreshes once per token life, so a
/// second within a second is a loop or a flood, each one a signature check.
pub const DEFAULT_REFRESH_MIN_INTERVAL_MS: u64 = 1000;

/// Server configuration: the CLI flags, their environment fallbacks, and the
/// limits the hub enforces.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ssio",
    version,
    about = "Socket-style realtime events over Server-Sent Events, with a long-polling fallback"
)]
pub struct Config {
    /// Interface to listen on.
    #[arg(long, env = "SSIO_HOST", default_value = DEFAULT_HOST)]
    pub host: String,

    /// TCP port to listen on; 0 picks a free one and the log line names it.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Heartbeat period (ms): SSE keep-alive after this much idle time, and
    /// the longest a long-poll is held before it answers `[]`.
    #[arg(long = "ping-interval", env = "SSIO_PING_INTERVAL", default_value_t = DEFAULT_PING_INTERVAL_MS, value_name = "MS")]
    pub ping_interval_ms: u64,

    /// Grace for a missed heartbeat (ms): unacknowledged SSE data, or a
    /// long-poll session with no poll, for this long means the client is gone.
    #[arg(long = "ping-timeout", env = "SSIO_PING_TIMEOUT", default_value_t = DEFAULT_PING_TIMEOUT_MS, value_name = "MS")]
    pub ping_timeout_ms: u64,

    /// Largest request body accepted (bytes); more gets 413.
    #[arg(long = "max-payload", env = "SSIO_MAX_PAYLOAD", default_value_t = DEFAULT_MAX_PAYLOAD, value_name = "BYTES")]
    pub max_payload: usize,

    /// Most live sessions across both transports; more gets 503.
    #[arg(long = "max-sessions", env = "SSIO_MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS, value_name = "N")]
    pub max_sessions: usize,

    /// Longest event name accepted from a client (bytes).
    #[arg(long = "max-event-name", env = "SSIO_MAX_EVENT_NAME", default_value_t = DEFAULT_MAX_EVENT_NAME, value_name = "BYTES")]
    pub max_event_name: usize,

    /// Ordinary events a session may have waiting before it is disconnected
    /// as a slow reader (latest-value events never count against it).
    #[arg(long = "max-pending-events", env = "SSIO_MAX_PENDING_EVENTS", default_value_t = DEFAULT_MAX_PENDING_EVENTS, value_name = "N")]
    pub max_pending_events: usize,

    /// Largest request head (bytes); more gets 431.
    #[arg(long = "max-header-bytes", env = "SSIO_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES, value_name = "BYTES")]
    pub max_header_bytes: usize,

    /// Time a client has to send its request head (ms) before it is cut off.
    #[arg(long = "header-timeout", env = "SSIO_HEADER_TIMEOUT", default_value_t = DEFAULT_HEADER_TIMEOUT_MS, value_name = "MS")]
    pub header_timeout_ms: u64,

    /// Time a client has to send its request body (ms) before it gets 408.
    #[arg(long = "body-timeout", env = "SSIO_BODY_TIMEOUT", default_value_t = DEFAULT_BODY_TIMEOUT_MS, value_name = "MS")]
    pub body_timeout_ms: u64,

    /// Time open connections get to finish after SIGINT or SIGTERM (ms).
    #[arg(long = "shutdown-timeout", env = "SSIO_SHUTDOWN_TIMEOUT", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_MS, value_name = "MS")]
    pub shutdown_timeout_ms: u64,

    /// Listen backlog for bursts of new connections.
    #[arg(long, env = "SSIO_BACKLOG", default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,

    /// Redis URL (`redis://host:port/db`) that makes this process one node
    /// of a cluster sharing one count and every broadcast; without it the
    /// server runs alone.
    #[cfg(feature = "redis")]
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,

    /// This node's id in the cluster, sent as `X-Ssio-Node` on every
    /// response; a random one when not given. Only with `--redis`.
    #[cfg(feature = "redis")]
    #[arg(
        long = "node-id",
        env = "SSIO_NODE_ID",
        value_name = "ID",
        requires = "redis"
    )]
    pub node_id: Option<String>,

    /// `host:port` where other nodes reach this one to forward requests for
    /// its sessions; the bound address when not given. Only with `--redis`.
    #[cfg(feature = "redis")]
    #[arg(
        long,
        env = "SSIO_ADVERTISE_ADDR",
        value_name = "HOST:PORT",
        requires = "redis"
    )]
    pub advertise: Option<String>,

    /// Idle connections kept open to each other node for forwarded
    /// requests, so that a forward does not pay for a new connection; 0
    /// opens one per request.
    #[arg(long = "forward-pool-idle", env = "SSIO_FORWARD_POOL_IDLE", default_value_t = DEFAULT_FORWARD_POOL_IDLE, value_name = "CONNS")]
    pub forward_pool_idle: usize,

    /// Requests forwarded to each other node at once, at most (a forwarded
    /// long-poll counts until it answers, a relayed stream until its head);
    /// past it, 503 with `Retry-After`. 0 = no limit.
    #[arg(long = "forward-max-inflight", env = "SSIO_FORWARD_MAX_INFLIGHT", default_value_t = DEFAULT_FORWARD_MAX_INFLIGHT, value_name = "N")]
    pub forward_max_inflight: usize,

    /// Clients of a node that shuts down are told to come back after a
    /// random delay below this (ms), so they do not return all at once.
    #[arg(long = "reconnect-spread", env = "SSIO_RECONNECT_SPREAD", default_value_t = DEFAULT_RECONNECT_SPREAD_MS, value_name = "MS")]
    pub reconnect_spread_ms: u64,

    /// An origin allowed to read responses cross-origin (repeatable, or
    /// comma-separated in the environment); `*` allows every origin.
    #[arg(long = "cors-origin", env = "SSIO_CORS_ORIGIN", default_value = DEFAULT_CORS_ORIGIN, value_delimiter = ',', value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Serve `/metrics` on this address instead of the public one, so load
    /// figures stay off the public port.
    #[arg(
        long = "metrics-listen",
        env = "SSIO_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    pub metrics_listen: Option<SocketAddr>,

    /// Log line format.
    #[arg(long = "log-format", env = "SSIO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Bytes of ordinary events the shared log keeps (both encodings); a
    /// session whose next event has left the log is a slow reader.
    #[arg(long = "max-pending-bytes", env = "SSIO_MAX_PENDING_BYTES", default_value_t = DEFAULT_MAX_PENDING_BYTES, value_name = "BYTES")]
    pub max_pending_bytes: usize,

    /// Event bytes one poll answer carries at most (at least one event).
    #[arg(long = "max-poll-bytes", env = "SSIO_MAX_POLL_BYTES", default_value_t = DEFAULT_MAX_POLL_BYTES, value_name = "BYTES")]
    pub max_poll_bytes: usize,

    /// Client events per second one session may send, sustained; past it
    /// and its burst, 429 with `Retry-After`. 0 turns the limit off.
    #[arg(long = "max-emit-rate", env = "SSIO_MAX_EMIT_RATE", default_value_t = DEFAULT_MAX_EMIT_RATE, value_name = "PER_SEC")]
    pub max_emit_rate: u32,

    /// Client events one session may send at once before the rate applies.
    #[arg(long = "max-emit-burst", env = "SSIO_MAX_EMIT_BURST", default_value_t = DEFAULT_MAX_EMIT_BURST, value_name = "N")]
    pub max_emit_burst: u32,

    /// Time a new polling session has to start its first poll or send an
    /// event (ms), or it ends with "ping timeout" (never over pingTimeout).
    #[arg(long = "first-poll-timeout", env = "SSIO_FIRST_POLL_TIMEOUT", default_value_t = DEFAULT_FIRST_POLL_TIMEOUT_MS, value_name = "MS")]
    pub first_poll_timeout_ms: u64,

    /// Live sessions per client address; more gets 429. 0 = no limit.
    #[arg(long = "max-sessions-per-ip", env = "SSIO_MAX_SESSIONS_PER_IP", default_value_t = DEFAULT_MAX_SESSIONS_PER_IP, value_name = "N")]
    pub max_sessions_per_ip: usize,

    /// New sessions per second per client address (as a burst, then that
    /// rate); more gets 429. 0 = no limit.
    #[arg(long = "max-new-sessions-per-ip", env = "SSIO_MAX_NEW_SESSIONS_PER_IP", default_value_t = DEFAULT_MAX_NEW_SESSIONS_PER_IP, value_name = "PER_SEC")]
    pub max_new_sessions_per_ip: u32,

    /// Proxies (addresses or CIDR ranges, repeatable or comma-separated)
    /// whose `Forwarded`/`X-Forwarded-For` names the client address for the
    /// per-address limits; from anyone else those headers are ignored.
    #[arg(
        long = "trusted-proxy",
        env = "SSIO_TRUSTED_PROXY",
        value_delimiter = ',',
        value_name = "IP[/BITS]"
    )]
    pub trusted_proxy: Vec<ProxyNet>,

    /// How long a session whose transport dropped can come back with its
    /// sid, rooms, data and every event it missed (ms); 0 turns recovery off.
    #[arg(long = "recovery-window", env = "SSIO_RECOVERY_WINDOW", default_value_t = DEFAULT_RECOVERY_WINDOW_MS, value_name = "MS")]
    pub recovery_window_ms: u64,

    /// Broadcasts kept for resumes; a client that missed more gets a fresh
    /// session and is told it missed events.
    #[arg(long = "recovery-max-events", env = "SSIO_RECOVERY_MAX_EVENTS", default_value_t = DEFAULT_RECOVERY_MAX_EVENTS, value_name = "N")]
    pub recovery_max_events: usize,

    /// Bytes of broadcasts kept for resumes (at least the newest is kept).
    #[arg(long = "recovery-max-bytes", env = "SSIO_RECOVERY_MAX_BYTES", default_value_t = DEFAULT_RECOVERY_MAX_BYTES, value_name = "BYTES")]
    pub recovery_max_bytes: usize,

    /// Most rooms one session may be in.
    #[arg(long = "max-rooms-per-socket", env = "SSIO_MAX_ROOMS_PER_SOCKET", default_value_t = DEFAULT_MAX_ROOMS_PER_SOCKET, value_name = "N")]
    pub max_rooms_per_socket: usize,

    /// Longest room name (bytes).
    #[arg(long = "max-room-name", env = "SSIO_MAX_ROOM_NAME", default_value_t = DEFAULT_MAX_ROOM_NAME, value_name = "BYTES")]
    pub max_room_name: usize,

    /// How long the server waits for a handler's acknowledgement before it
    /// answers the client's `/emit` with a timeout error (ms).
    #[arg(long = "ack-timeout", env = "SSIO_ACK_TIMEOUT", default_value_t = DEFAULT_ACK_TIMEOUT_MS, value_name = "MS")]
    pub ack_timeout_ms: u64,

    /// Most answers the server's own acknowledged emits may wait for at
    /// once, summed over every emit (a broadcast to N sessions waits for N).
    /// An emit that would pass it fails at once; an answer that never comes
    /// is let go at the emit's timeout, so unanswered emits cost nothing
    /// after it.
    #[arg(long = "max-pending-acks", env = "SSIO_MAX_PENDING_ACKS", default_value_t = DEFAULT_MAX_PENDING_ACKS, value_name = "N")]
    pub max_pending_acks: usize,

    /// `presence join` and `presence leave` events one tracked room sends
    /// per second, with a burst of as many; past it they are dropped and
    /// one `presence sync` with the room's counts follows once the budget
    /// allows, so a join/leave flood costs the room's members a few events.
    /// 0 turns the limit off.
    #[arg(long = "max-presence-events", env = "SSIO_MAX_PRESENCE_EVENTS", default_value_t = DEFAULT_MAX_PRESENCE_EVENTS, value_name = "PER_SEC")]
    pub max_presence_events: u32,

    /// Largest `auth` payload a client may present (bytes of JSON); more
    /// gets 413.
    #[arg(long = "max-auth-bytes", env = "SSIO_MAX_AUTH_BYTES", default_value_t = DEFAULT_MAX_AUTH_BYTES, value_name = "BYTES")]
    pub max_auth_bytes: usize,

    /// How long a handshake ticket from `POST /handshake` stays usable (ms).
    #[arg(long = "ticket-ttl", env = "SSIO_TICKET_TTL", default_value_t = DEFAULT_TICKET_TTL_MS, value_name = "MS")]
    pub ticket_ttl_ms: u64,

    /// Handshake tickets one client address may hold unredeemed; more gets
    /// 429. 0 = no limit.
    #[arg(long = "max-tickets-per-ip", env = "SSIO_MAX_TICKETS_PER_IP", default_value_t = DEFAULT_MAX_TICKETS_PER_IP, value_name = "N")]
    pub max_tickets_per_ip: usize,

    /// PEM certificate chain: serve HTTPS, with HTTP/2 (needs --tls-key).
    #[cfg(feature = "tls")]
    #[arg(long = "tls-cert", env = "SSIO_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[cfg(feature = "tls")]
    #[arg(long = "tls-key", env = "SSIO_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Serve HTTPS with a certificate generated at start, for local work;
    /// its fingerprint is logged.
    #[cfg(feature = "tls")]
    #[arg(long = "tls-self-signed", env = "SSIO_TLS_SELF_SIGNED", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,

    /// Most sessions one shared (multiplexed) stream may carry; more
    /// attachments get 429.
    #[arg(long = "max-mux-sessions", env = "SSIO_MAX_MUX_SESSIONS", default_value_t = DEFAULT_MAX_MUX_SESSIONS, value_name = "N")]
    pub max_mux_sessions: usize,

    /// How long (ms) the sessions of a shared stream that ended wait to be
    /// re-attached to a new one before they end with "transport close".
    #[arg(long = "mux-grace", env = "SSIO_MUX_GRACE", default_value_t = DEFAULT_MUX_GRACE_MS, value_name = "MS")]
    pub mux_grace_ms: u64,

    /// How long (ms) a session whose stream dropped without a close stays
    /// counted, its events kept, for its client to come back unseen; 0 ends
    /// it at once.
    #[arg(long = "reconnect-grace", env = "SSIO_RECONNECT_GRACE", default_value_t = DEFAULT_RECONNECT_GRACE_MS, value_name = "MS")]
    pub reconnect_grace_ms: u64,

    /// Sessions waiting in the recovery window; past it the one that went
    /// away first ends for good. With --max-sessions-per-ip, one address
    /// may also keep no more than that many. 0 = as many as --max-sessions.
    #[arg(long = "max-away-sessions", env = "SSIO_MAX_AWAY_SESSIONS", default_value_t = DEFAULT_MAX_AWAY_SESSIONS, value_name = "N")]
    pub max_away_sessions: usize,

    /// How long (ms) an HTTPS connection with no request in flight and no
    /// open stream is kept, HTTP/2 PINGs or not; 0 = no limit.
    #[cfg(feature = "tls")]
    #[arg(long = "idle-timeout", env = "SSIO_IDLE_TIMEOUT", default_value_t = DEFAULT_IDLE_TIMEOUT_MS, value_name = "MS")]
    pub idle_timeout_ms: u64,

    /// Streams one HTTP/2 connection may reset (before their response
    /// ended) within 10 s; one more and the connection gets GOAWAY.
    /// 0 = no limit.
    #[cfg(feature = "tls")]
    #[arg(long = "max-resets", env = "SSIO_MAX_RESETS", default_value_t = DEFAULT_MAX_RESETS, value_name = "N")]
    pub max_resets: u32,

    /// Bytes an HTTP/2 stream may have queued in its connection before its
    /// session stops handing it events (at least 1); past it, events wait
    /// in the session's queue, where --max-pending-events applies.
    #[cfg(feature = "tls")]
    #[arg(long = "h2-stream-buffer", env = "SSIO_H2_STREAM_BUFFER", default_value_t = DEFAULT_H2_STREAM_BUFFER, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_stream_buffer: u32,

    /// HS256 secret for JWT sessions: `POST /handshake` must then carry
    /// `{"token": "<jwt>"}` (with `exp`), and `POST /refresh` renews it.
    #[arg(
        long = "jwt-secret",
        env = "SSIO_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<JwtSecret>,

    /// PEM public key (RSA for RS256, EC P-256 for ES256) for JWT sessions.
    #[arg(
        long = "jwt-public-key",
        env = "SSIO_JWT_PUBLIC_KEY",
        value_name = "PEM"
    )]
    pub jwt_public_key: Option<std::path::PathBuf>,

    /// JSON Web Key Set file for JWT sessions: a token's `kid` picks its key.
    #[arg(long = "jwt-jwks", env = "SSIO_JWT_JWKS", value_name = "FILE")]
    pub jwt_jwks: Option<std::path::PathBuf>,

    /// Longest JWT accepted (bytes); more gets 413.
    #[arg(long = "max-token-bytes", env = "SSIO_MAX_TOKEN_BYTES", default_value_t = DEFAULT_MAX_TOKEN_BYTES, value_name = "BYTES")]
    pub max_token_bytes: usize,

    /// Shortest time (ms) between two `POST /refresh` of one session; a
    /// sooner one gets 429.
    #[arg(long = "refresh-min-interval", env = "SSIO_REFRESH_MIN_INTERVAL", default_value_t = DEFAULT_REFRESH_MIN_INTERVAL_MS, value_name = "MS")]
    pub refresh_min_interval_ms: u64,

    /// Keys that open the server API (`/api/*`), sent as `Authorization:
    /// Bearer <key>`. Repeat the flag, or separate keys with commas in the
    /// variable, to rotate one key out while the next is in use. No key:
    /// the API does not exist (404).
    #[arg(
        long = "api-key",
        env = "SSIO_API_KEY",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Serve the server API on this address instead of the public one, so
    /// backends reach it on a private network only.
    #[arg(long = "api-listen", env = "SSIO_API_LISTEN", value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,

    /// `idempotency_key`s the server API remembers; the oldest is
    /// forgotten first.
    #[arg(long = "api-max-idempotency-keys", env = "SSIO_API_MAX_IDEMPOTENCY_KEYS", default_value_t = DEFAULT_API_MAX_IDEMPOTENCY_KEYS, value_name = "N")]
    pub api_max_idempotency_keys: usize,

    /// Longest `idempotency_key` accepted, in bytes.
    #[arg(long = "api-max-idempotency-key-bytes", env = "SSIO_API_MAX_IDEMPOTENCY_KEY_BYTES", default_value_t = DEFAULT_API_MAX_IDEMPOTENCY_KEY_BYTES, value_name = "BYTES")]
    pub api_max_idempotency_key_bytes: usize,

    /// Commands one `POST /api/batch` may carry.
    #[arg(long = "api-max-batch", env = "SSIO_API_MAX_BATCH", default_value_t = DEFAULT_API_MAX_BATCH, value_name = "N")]
    pub api_max_batch: usize,
}

/// The `--jwt-secret`: its `Debug` does not show it, so a logged
/// configuration does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(pub String);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(..)")
    }
}

impl std::str::FromStr for JwtSecret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<JwtSecret, Self::Err> {
        Ok(JwtSecret(s.to_string()))
    }
}

/// An address range given to `--trusted-proxy`: `10.0.0.0/8`, `::1`, ...
///
/// A bare address is a range of one (`/32` or `/128`); host bits after the
/// prefix are cleared (`192.168.1.77/24` is `192.168.1.0/24`); an
/// IPv4-mapped IPv6 address is read as the IPv4 address it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyNet(IpNet);

impl ProxyNet {
    /// The range, its host bits cleared.
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// Whether `ip` lies in this range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so that one client
/// is one key whichever socket family accepted it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl std::str::FromStr for ProxyNet {
    type Err = String;

    // Split by hand rather than through `IpNet`'s parser: a bare address is
    // accepted, a mapped address becomes IPv4 before its prefix is checked,
    // and each mistake gets a message naming what was given.
    fn from_str(s: &str) -> Result<ProxyNet, String> {
        let s = s.trim();
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|e| format!("{s:?} is not an address: {e}"))?;
        let ip = canonical(ip);
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b.parse::<u8>().ok(),
            None => Some(width),
        };
        let net = bits
            .and_then(|b| IpNet::new(ip, b).ok())
            .ok_or_else(|| format!("{s:?}: prefix must be 0..={width}"))?;
        Ok(ProxyNet(net.trunc()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            ping_interval_ms: DEFAULT_PING_INTERVAL_MS,
            ping_timeout_ms: DEFAULT_PING_TIMEOUT_MS,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_event_name: DEFAULT_MAX_EVENT_NAME,
            max_pending_events: DEFAULT_MAX_PENDING_EVENTS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT_MS,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
            backlog: DEFAULT_BACKLOG,
            #[cfg(feature = "redis")]
            redis: None,
            #[cfg(feature = "redis")]
            node_id: None,
            #[cfg(feature = "redis")]
            advertise: None,
            forward_pool_idle: DEFAULT_FORWARD_POOL_IDLE,
            forward_max_inflight: DEFAULT_FORWARD_MAX_INFLIGHT,
            reconnect_spread_ms: DEFAULT_RECONNECT_SPREAD_MS,
            cors_origins: vec![DEFAULT_CORS_ORIGIN.to_string()],
            metrics_listen: None,
            log_format: LogFormat::Text,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            max_poll_bytes: DEFAULT_MAX_POLL_BYTES,
            max_emit_rate: DEFAULT_MAX_EMIT_RATE,
            max_emit_burst: DEFAULT_MAX_EMIT_BURST,
            first_poll_timeout_ms: DEFAULT_FIRST_POLL_TIMEOUT_MS,
            max_sessions_per_ip: DEFAULT_MAX_SESSIONS_PER_IP,
            max_new_sessions_per_ip: DEFAULT_MAX_NEW_SESSIONS_PER_IP,
            trusted_proxy: Vec::new(),
            recovery_window_ms: DEFAULT_RECOVERY_WINDOW_MS,
            recovery_max_events: DEFAULT_RECOVERY_MAX_EVENTS,
            recovery_max_bytes: DEFAULT_RECOVERY_MAX_BYTES,
            max_rooms_per_socket: DEFAULT_MAX_ROOMS_PER_SOCKET,
            max_room_name: DEFAULT_MAX_ROOM_NAME,
            ack_timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
            max_pending_acks: DEFAULT_MAX_PENDING_ACKS,
            max_presence_events: DEFAULT_MAX_PRESENCE_EVENTS,
            max_auth_bytes: DEFAULT_MAX_AUTH_BYTES,
            ticket_ttl_ms: DEFAULT_TICKET_TTL_MS,
            max_tickets_per_ip: DEFAULT_MAX_TICKETS_PER_IP,
            #[cfg(feature = "tls")]
            tls_cert: None,
            #[cfg(feature = "tls")]
            tls_key: None,
            #[cfg(feature = "tls")]
            tls_self_signed: false,
            max_mux_sessions: DEFAULT_MAX_MUX_SESSIONS,
            mux_grace_ms: DEFAULT_MUX_GRACE_MS,
            reconnect_grace_ms: DEFAULT_RECONNECT_GRACE_MS,
            max_away_sessions: DEFAULT_MAX_AWAY_SESSIONS,
            #[cfg(feature = "tls")]
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            #[cfg(feature = "tls")]
            max_resets: DEFAULT_MAX_RESETS,
            #[cfg(feature = "tls")]
            h2_stream_buffer: DEFAULT_H2_STREAM_BUFFER,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_jwks: None,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            refresh_min_interval_ms: DEFAULT_REFRESH_MIN_INTERVAL_MS,
            api_keys: Vec::new(),
            api_listen: None,
            api_max_idempotency_keys: DEFAULT_API_MAX_IDEMPOTENCY_KEYS,
            api_max_idempotency_key_bytes: DEFAULT_API_MAX_IDEMPOTENCY_KEY_BYTES,
            api_max_batch: DEFAULT_API_MAX_BATCH,
        }
    }
}

impl Config {
    /// Heartbeat period as a `Duration`.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    /// Heartbeat grace as a `Duration`.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    /// Request-head deadline as a `Duration`.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// Request-body deadline as a `Duration`.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }

    /// How long a new polling session may wait before its first poll: the
    /// first-poll timeout, never more than pingTimeout.
    pub fn first_poll_timeout(&self) -> Duration {
        Duration::from_millis(self.first_poll_timeout_ms.min(self.ping_timeout_ms))
    }

    /// Recovery window as a `Duration`.
    pub fn recovery_window(&self) -> Duration {
        Duration::from_millis(self.recovery_window_ms)
    }

    /// The most sessions the away table holds: `--max-away-sessions`, or
    /// `--max-sessions` when that is 0.
    pub fn max_away(&self) -> usize {
        match self.max_away_sessions {
            0 => self.max_sessions,
            n => n,
        }
    }

    /// `--idle-timeout` as a `Duration`; `None` when off.
    #[cfg(feature = "tls")]
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }

    /// Server-side acknowledgement deadline as a `Duration`.
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    /// Handshake ticket life as a `Duration`.
    pub fn ticket_ttl(&self) -> Duration {
        Duration::from_millis(self.ticket_ttl_ms)
    }

    /// The shortest time between two refreshes of one session.
    pub fn refresh_min_interval(&self) -> Duration {
        Duration::from_millis(self.refresh_min_interval_ms)
    }

    /// Re-attachment window of a shared stream's sessions as a `Duration`.
    pub fn mux_grace(&self) -> Duration {
        Duration::from_millis(self.mux_grace_ms)
    }

    /// The blip grace of a dropped stream as a `Duration`.
    pub fn reconnect_grace(&self) -> Duration {
        Duration::from_millis(self.reconnect_grace_ms)
    }

    /// The `retry:` field that opens every SSE stream, in milliseconds: how
    /// long a standard `EventSource` (one that is not `ssio.js`, which
    /// reconnects by itself at once) waits after its stream was cut before
    /// it reconnects.
    ///
    /// Its own default, about 3 s, is far past the reconnect grace, so
    /// every proxy cut would show as a flicker of the count. Half the
    /// grace leaves the other half for the reconnection itself: a new
    /// connection, through a proxy, on a loaded machine. With no grace a
    /// cut ends the session whatever the client does; it should then come
    /// back well within the recovery window (half of it at most) to resume
    /// its events, and not in a tight loop while the server is down.
    pub fn sse_retry_ms(&self) -> u64 {
        if self.reconnect_grace_ms > 0 {
            return self.reconnect_grace_ms / 2;
        }
        match self.recovery_window_ms {
            0 => SSE_RETRY_WITHOUT_GRACE_MS,
            window => SSE_RETRY_WITHOUT_GRACE_MS.min(window / 2),
        }
    }

    /// How long the kernel waits for a peer to acknowledge data before it
    /// fails the socket: pingTimeout less the reconnect grace, so that a
    /// half-open stream, which then waits out the grace like any dropped
    /// one, still leaves the count within pingInterval + pingTimeout. At
    /// least half of pingTimeout, so that a grace as long as pingTimeout
    /// cannot make the kernel give up on a slow but live peer.
    pub fn user_timeout(&self) -> Duration {
        let timeout = self.ping_timeout();
        timeout
            .saturating_sub(self.reconnect_grace())
            .max(timeout / 2)
    }

    /// Whether a client can come back to its session with a cursor: during
    /// the blip grace, or the recovery window.
    pub fn resumable(&self) -> bool {
        self.recovery_window_ms > 0 || self.reconnect_grace_ms > 0
    }

    /// Shutdown deadline as a `Duration`.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// This node's id when it is part of a cluster (`--redis`), for the
    /// `X-Ssio-Node` header; `None` when it runs alone.
    #[cfg(feature = "redis")]
    pub fn cluster_node(&self) -> Option<&str> {
        self.redis.as_ref().and(self.node_id.as_deref())
    }

    /// This node's id in a cluster: always `None`, since a build without
    /// the `redis` feature always runs alone.
    #[cfg(not(feature = "redis"))]
    pub fn cluster_node(&self) -> Option<&str> {
        None
    }

    /// Whether every origin may read responses cross-origin.
    pub fn cors_any(&self) -> bool {
        self.cors_origins.iter().any(|o| o == "*")
    }

    /// Whether `/metrics` is served on the public address too.
    pub fn metrics_public(&self) -> bool {
        self.metrics_listen.is_none()
    }

    /// The address to bind, from `host` and `port`.
    pub fn addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        let host = if self.host == "localhost" {
            "127.0.0.1"
        } else {
            &self.host
        };
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SocketAddr::new(ip, self.port)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_ask_standard_clients_back_well_within_the_grace() {
        let c = |reconnect_grace_ms, recovery_window_ms| {
            Config {
                reconnect_grace_ms,
                recovery_window_ms,
                ..Config::default()
            }
            .sse_retry_ms()
        };
        assert_eq!(
            c(DEFAULT_RECONNECT_GRACE_MS, DEFAULT_RECOVERY_WINDOW_MS),
            250
        );
        assert_eq!(c(5_000, 0), 2_500);
        assert_eq!(c(0, DEFAULT_RECOVERY_WINDOW_MS), 1_000);
        assert_eq!(c(0, 600), 300);
        assert_eq!(c(0, 0), SSE_RETRY_WITHOUT_GRACE_MS);
    }

    #[test]
    fn the_kernel_timeout_leaves_room_for_the_grace_but_never_less_than_half() {
        let c = |ping_timeout_ms, reconnect_grace_ms| Config {
            ping_timeout_ms,
            reconnect_grace_ms,
            ..Config::default()
        };
        assert_eq!(c(20_000, 500).user_timeout(), Duration::from_millis(19_500));
        assert_eq!(c(20_000, 0).user_timeout(), Duration::from_millis(20_000));
        assert_eq!(c(1_000, 900).user_timeout(), Duration::from_millis(500));
    }

    #[test]
    fn a_feature_s_flags_exist_exactly_when_it_is_built() {
        use clap::CommandFactory;
        let command = Config::command();
        let has = |long: &str| command.get_arguments().any(|a| a.get_long() == Some(long));
        for flag in [
            "tls-cert",
            "tls-key",
            "tls-self-signed",
            "idle-timeout",
            "max-resets",
            "h2-stream-buffer",
        ] {
            assert_eq!(has(flag), cfg!(feature = "tls"), "--{flag}");
        }
        for flag in ["redis", "node-id", "advertise"] {
            assert_eq!(has(flag), cfg!(feature = "redis"), "--{flag}");
        }
        assert!(has("port") && has("metrics-listen"));
    }
}
