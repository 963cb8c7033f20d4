//! Several nodes serving as one.
//!
//! - `redis` (the `redis` feature): [`RedisBackend`], where the nodes share
//!   one exact count and every broadcast, with the wire format of its
//!   broadcasts (`bus`) and the script that keeps the count (`lease`);
//! - `forward` and `reroute`: a request for a session another node holds is
//!   replayed on that node. They ask only [`Backend::locate`], so they stay
//!   in a build without Redis, where no node is ever elsewhere;
//! - `vouch`: the client's address, signed by the forwarding node, so the
//!   per-address limits on the holding node count the client.
//!
//! [`Backend::locate`]: crate::Backend::locate

#[cfg(feature = "redis")]
mod bus;
pub(crate) mod forward;
#[cfg(feature = "redis")]
mod lease;
#[cfg(feature = "redis")]
mod redis;
pub(crate) mod reroute;
pub(crate) mod vouch;

#[cfg(feature = "redis")]
pub use self::redis::{ClusterSettings, RedisBackend};
