//! The two ways a session's events reach its client, and the raw fast path
//! for the first.
//!
//! - [`sse`]: one endless `GET /events` response whose body is the session;
//! - [`sse_raw`]: that same response written straight on the socket, for
//!   plain requests, without hyper's per-connection buffers;
//! - [`poll`]: long-polling, one `GET /poll?sid=` response per batch;
//! - [`poll_raw`]: a plain held poll answered straight on the socket, the
//!   way [`sse_raw`] writes a plain stream;
//! - [`mux`]: either of the first and last carrying several sessions at
//!   once, so that the tabs of one browser share one connection.
//!
//! Transports sit between HTTP and the socket layer: they start sessions
//! through [`Io`](crate::Io), read each session's cursor, and turn what it
//! yields into bytes.

pub(crate) mod head;
pub(crate) mod http;
mod keepalive;
pub(crate) mod mux;
pub(crate) mod poll;
pub(crate) mod poll_raw;
pub(crate) mod request;
pub(crate) mod sse;
pub(crate) mod sse_raw;
