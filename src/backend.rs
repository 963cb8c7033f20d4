//! The seam between one node's sessions and the count and broadcast they share.
//!
//! Today one process owns every session, so [`LocalBackend`] keeps the count
//! in an atomic and hands broadcasts straight to this node's [`Fanout`]. A
//! cluster backend (Redis, say) implements the same four calls: `join` and
//! `leave` update a shared counter, `count` reads it, and `broadcast`
//! publishes to every node, each of which feeds its own `Fanout`.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::fanout::Fanout;
use crate::packet::Packet;

/// Where the user count lives and how a broadcast reaches every session.
///
/// The hub calls `join`/`leave` and the connection/disconnect handlers while
/// holding its ordering lock, so an implementation never sees a `count`
/// interleaved with a half-finished join on the same node.
pub trait Backend: Send + Sync + 'static {
    /// A session became live on this node.
    fn join(&self);
    /// A live session on this node ended.
    fn leave(&self);
    /// Live sessions everywhere the backend reaches.
    fn count(&self) -> usize;
    /// Delivers `packet` to every session; `latest` marks a latest-value event
    /// that a slow reader may receive only the newest value of.
    fn broadcast(&self, name: &str, packet: Packet, latest: bool);
}

/// The single-process backend: an atomic count and this node's fan-out.
pub struct LocalBackend {
    /// Live sessions on this node, which is every session there is.
    count: AtomicUsize,
    /// Where broadcasts go; shared with the hub, which subscribes sessions.
    fanout: Fanout,
}

impl LocalBackend {
    /// A backend delivering into `fanout`.
    pub fn new(fanout: Fanout) -> LocalBackend {
        LocalBackend {
            count: AtomicUsize::new(0),
            fanout,
        }
    }
}

impl Backend for LocalBackend {
    fn join(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        // A leave without a join would be a hub bug; saturate rather than
        // wrap so that one bug cannot turn into a count of 2^64.
        let _ = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn broadcast(&self, name: &str, packet: Packet, latest: bool) {
        if latest {
            self.fanout.publish_latest(name, packet);
        } else {
            self.fanout.publish(packet);
        }
    }
}
