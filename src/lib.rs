//! ssio: socket-style realtime events over Server-Sent Events, with a
//! long-polling fallback, on hyper 1 and tokio.
//!
//! The folders are the layers. A request flows down through them, and each
//! imports only from the layers below it (`tests/layering.rs` fails on any
//! import that points up):
//!
//! - `edge`: sockets, TLS, the first request head, routing, static files,
//!   probes, the tower service and the server API (`/api/*`, for backends
//!   in any language): where bytes become requests;
//! - `cluster`: several nodes over Redis ([`RedisBackend`]), and the
//!   forwarding of a request to the node that holds its session;
//! - `transport`: SSE, raw-socket SSE, long-polling and shared tab streams,
//!   with the response head tables and bodies they write;
//! - `api`: the socket.io-style API, [`Io`] and [`Socket`], the only layer
//!   that knows event names;
//! - `engine`: sessions, the exact count, rooms, recovery and the fan-out
//!   that encodes each event once ([`Packet`]) for every recipient; it
//!   knows nothing of HTTP;
//! - `ops`: metrics, the fan-out clock, logging and memory trimming.
//!
//! At the root: [`config`], [`Error`], the values that name a session
//! ([`Sid`], [`Transport`], [`DisconnectReason`], [`Handshake`]), and
//! [`app`], the demo app written with the API.
//!
//! To use ssio as a library, start with the [`guide`]; `examples/` has a
//! runnable server for each of its main pages.
//!
//! Two default features can be turned off: `tls` (HTTPS with HTTP/2:
//! [`Tls`], [`run_tls`]) and `redis` (a cluster over Redis:
//! [`RedisBackend`], [`ClusterSettings`]). Each takes its flags out of
//! [`Config`] with it; the rest of the API is the same without them.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod api;
pub mod app;
mod cluster;
pub mod config;
mod edge;
mod engine;
mod error;
mod ops;
mod session;
mod transport;

// The guide's pages are Markdown files under `src/guide/`, so that they
// read as prose, while every Rust block in them is compiled (and, where it
// binds nothing, run) as a doctest. Their docs are their only content.
pub mod guide {
    #![doc = include_str!("guide/index.md")]

    pub mod rooms {
        #![doc = include_str!("guide/rooms.md")]
    }
    pub mod acks {
        #![doc = include_str!("guide/acks.md")]
    }
    pub mod middleware {
        #![doc = include_str!("guide/middleware.md")]
    }
    pub mod resume {
        #![doc = include_str!("guide/resume.md")]
    }
    pub mod backends {
        #![doc = include_str!("guide/backends.md")]
    }
    pub mod mounting {
        #![doc = include_str!("guide/mounting.md")]
    }
}

pub use api::ack::Ack;
pub use api::io::{AckHandler, AnyHandler, ConnectionHandler, Handler, Io, Middleware, Stats};
pub use api::middleware::Rejection;
pub use api::operator::Operator;
pub use api::presence::{Member, Presence};
pub use api::replies::{AckError, AckReplies};
pub use api::socket::Socket;
#[cfg(feature = "redis")]
pub use cluster::{ClusterSettings, RedisBackend};
pub use config::Config;
#[cfg(feature = "tls")]
pub use edge::server::run_tls;
pub use edge::server::{self, bind, run};
#[cfg(feature = "tls")]
pub use edge::tls::{Tls, TlsError};
pub use edge::tower::IoService;
pub use engine::backend::{Backend, BackendFuture, BackendStatus, Broadcast, LocalBackend};
pub use engine::fanout::Fanout;
pub use engine::packet::{encode_sse, Packet, KEEP_ALIVE};
pub use engine::recovery::Cursor;
pub use engine::rooms::Target;
pub use error::{BackendError, Error};
pub use ops::{logging, memory};
pub use session::{DisconnectReason, Handshake, Peer, Sid, Transport};
pub use transport::http::ResponseBody;
