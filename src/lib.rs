//! ssio: socket-style realtime events over Server-Sent Events, with a
//! long-polling fallback, on hyper 1 and tokio.
//!
//! A request flows one way through these modules, and each imports only
//! modules below it (a test reads the `use crate::` lines and fails on any
//! import that points up):
//!
//! - [`server`] accepts TCP connections and hands each to hyper, or to the
//!   raw SSE path for a plain `GET /events`; with [`Tls`], every connection
//!   is TLS, then HTTP/2 or HTTP/1.1 as ALPN chose;
//! - `router` parses the request once (method, path, `sid`) and maps every
//!   [`Error`] to a status and a JSON body; `http` builds the responses and
//!   reads bodies within their limits;
//! - `transport` serves a session: `sse` (one endless response),
//!   `sse_raw` (the same, straight on the socket), `poll` (one response
//!   per batch) or `poll_raw` (plain polls, straight on the socket);
//! - `socket` is the socket.io-style API, [`Io`] and [`Socket`]: the only
//!   layer that knows event names; it runs handlers when the hub says a
//!   session started or ended;
//! - `hub` owns the session table, the ordering that keeps the count exact,
//!   and the reaper of idle polling sessions;
//! - [`Backend`] is where the count lives and how broadcasts reach every
//!   node; it feeds this node's [`Fanout`], which gives each session a
//!   cursor;
//! - `mailbox` holds one session's direct events and close flag, `session`
//!   the values that name a session ([`Sid`], [`Transport`],
//!   [`DisconnectReason`]);
//! - [`Packet`] encodes each event once, SSE framing included, for both
//!   transports.
//!
//! [`RedisBackend`] (`cluster`) is the [`Backend`] for several nodes: one
//! exact count and every broadcast shared through Redis. With it, `router`
//! hands a request for a session another node holds to `forward`, which
//! replays it on that node, so no load balancer needs sticky sessions; a
//! resume of a session away on another node is forwarded (and its stream
//! relayed) the same way.
//!
//! Beside the chain: `config`, `tls` (certificate and acceptor), `error`, `head` (response header tables shared
//! by hyper and the raw path, CORS included), `limits` (token buckets and
//! per-address accounting, which the hub consults on every connect and
//! disconnect), `accept` (the first request head of every connection, read
//! under one deadline before hyper or the raw path sees it), `statics` and
//! `memory`. Operations: `metrics` (the Prometheus series every layer
//! bumps), `probe` (`/metrics`, `/healthz`, `/readyz`) and [`logging`].
//! [`app`] is the demo app written with the API.
//!
//! The socket.io features sit in their own files: `rooms` (the membership
//! table the fan-out delivers room events through, and a broadcast's
//! [`Target`]), `recovery` (the resume [`Cursor`] and the away table the hub
//! keeps dropped sessions in, both through their short reconnect grace,
//! still counted, and after it), `ack` ([`Ack`], a handler's answer carried by
//! the `/emit` response), `middleware` ([`Rejection`]), `tickets` (how an
//! `auth` payload reaches a transport that cannot send one) and `tower`
//! ([`IoService`], `Io` mounted in another app).

#![warn(missing_docs)]

mod accept;
mod ack;
pub mod app;
mod backend;
mod clock;
mod cluster;
pub mod config;
mod error;
mod fanout;
mod forward;
mod head;
mod http;
mod hub;
mod io;
mod limits;
pub mod logging;
mod mailbox;
pub mod memory;
mod metrics;
mod middleware;
mod operator;
mod packet;
mod probe;
mod recovery;
mod reroute;
mod rooms;
mod router;
pub mod server;
mod session;
mod socket;
mod statics;
mod tickets;
mod tls;
mod tower;
mod transport;

pub use ack::Ack;
pub use backend::{Backend, BackendFuture, BackendStatus, Broadcast, LocalBackend};
pub use cluster::{ClusterSettings, RedisBackend};
pub use config::Config;
pub use error::{BackendError, Error};
pub use fanout::Fanout;
pub use http::ResponseBody;
pub use io::{AckHandler, ConnectionHandler, Handler, Io, Middleware, Stats};
pub use middleware::Rejection;
pub use operator::Operator;
pub use packet::{encode_sse, Packet, KEEP_ALIVE};
pub use recovery::Cursor;
pub use rooms::Target;
pub use server::{bind, run, run_tls};
pub use session::{DisconnectReason, Handshake, Peer, Sid, Transport};
pub use socket::Socket;
pub use tls::{Tls, TlsError};
pub use tower::IoService;
