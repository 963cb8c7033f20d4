//! The edge: TCP and TLS connections, the first request head, HTTP routing,
//! static files, probes, the tower service and the limits of an HTTPS
//! connection. Bytes come in here and leave as transport calls.

pub(crate) mod accept;
pub(crate) mod plain;
pub(crate) mod probe;
pub(crate) mod refusal;
pub(crate) mod router;
pub mod server;
pub(crate) mod server_api;
pub(crate) mod statics;
#[cfg(feature = "tls")]
pub(crate) mod tls;
pub(crate) mod tower;
#[cfg(feature = "tls")]
pub(crate) mod watch;
