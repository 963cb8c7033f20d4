//! Several nodes serving as one.
//!
//! - `redis`: [`RedisBackend`], where the nodes share
//!   one exact count and every broadcast, with the wire format of its
//!   broadcasts (`bus`) and the script that keeps the count (`lease`);
//! - `forward` and `reroute`: a request for a session another node holds is
//!   replayed on that node. They ask only [`Backend::locate`], not Redis.
//!
//! [`Backend::locate`]: crate::Backend::locate

mod bus;
pub(crate) mod forward;
mod lease;
mod redis;
pub(crate) mod reroute;

pub use self::redis::{ClusterSettings, RedisBackend};
