//! ssio: socket-style realtime events over Server-Sent Events, with a
//! long-polling fallback, on hyper 1 and tokio.
//!
//! A request flows one way through these modules:
//!
//! - [`server`] accepts TCP connections and serves them with hyper;
//! - `router` matches method and path and maps every [`Error`] to a status
//!   and a JSON body;
//! - a transport serves the session: `stream` (SSE, one endless response)
//!   or `poll` (long-polling, one response per batch);
//! - the hub owns the session table, the count and the ordering that keeps
//!   the count exact; [`Backend`] is the seam where a shared count and
//!   broadcast (across nodes) plug in, and [`Fanout`] delivers broadcasts to
//!   this node's sessions;
//! - [`Packet`] and `sse` encode each event once, for both transports.
//!
//! [`Io`] and [`Socket`] are the socket.io-style API on top, and [`app`] is
//! the demo app written with it.

#![warn(missing_docs)]

pub mod app;
mod backend;
pub mod config;
mod error;
mod fanout;
mod hub;
mod memory;
mod packet;
mod poll;
mod router;
pub mod server;
mod session;
mod socket;
pub mod sse;
mod sse_conn;
mod statics;
mod stream;

pub use backend::{Backend, LocalBackend};
pub use config::Config;
pub use error::Error;
pub use fanout::Fanout;
pub use packet::Packet;
pub use router::ResponseBody;
pub use server::{bind, run};
pub use session::{DisconnectReason, Handler, Sid, Transport};
pub use socket::{ConnectionHandler, Io, Socket, Stats};
