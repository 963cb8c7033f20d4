//! A broadcast's target, built with `to`, `broadcast` and `except`, and sent
//! with `emit`: socket.io's "operator".

use std::fmt;
use std::sync::Arc;

use std::time::Duration;

use serde_json::Value;

use crate::api::replies::{AckError, AckReplies};

use crate::engine::rooms::Target;

use crate::api::io::Io;

/// Where a broadcast goes: built by [`Io::to`], [`Socket::to`](crate::Socket::to)
/// and [`Socket::broadcast`](crate::Socket::broadcast), chained with `to` and
/// sent with `emit`.
#[derive(Clone)]
pub struct Operator {
    /// The server.
    pub(super) io: Io,
    /// The rooms and the left-out sender.
    pub(super) target: Target,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("target", &self.target)
            .finish()
    }
}

impl Operator {
    /// Adds another room: an event reaches each member of any of them once.
    pub fn to(mut self, room: &str) -> Operator {
        let room: Arc<str> = Arc::from(room);
        if !self.target.rooms.contains(&room) {
            self.target.rooms.push(room);
        }
        self
    }

    /// Sends `event` with `data` to the target. Room events are ordinary
    /// events even for names declared [`Io::latest_value`].
    ///
    /// # Panics
    /// If `event` contains a CR or LF, as for [`Io::emit`].
    pub fn emit(&self, event: &str, data: impl Into<Value>) {
        self.io.broadcast(self.target.clone(), event, data.into());
    }

    /// Sends `event` with `data` to the target, asking each session for an
    /// answer (socket.io's `emitWithAck` on a broadcast), and waits up to
    /// `--ack-timeout` for them. The client answers through the callback
    /// its handler gets (`socket.on(event, (data, callback) => ..)`).
    ///
    /// Every recipient answers once at most; [`AckReplies`] has the
    /// answers and names the sessions that gave none in time. The event
    /// goes to the target's sessions on this node only: with a cluster
    /// backend, the other nodes' sessions do not get it.
    ///
    /// # Errors
    /// [`AckError::TooMany`] when the answers it would wait for would pass
    /// `--max-pending-acks`: nothing was sent.
    ///
    /// # Panics
    /// If `event` contains a CR or LF, as for [`Io::emit`].
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: impl Into<Value>,
    ) -> Result<AckReplies, AckError> {
        let within = self.io.config().ack_timeout();
        self.emit_with_ack_within(event, data, within).await
    }

    /// [`Operator::emit_with_ack`] with a timeout of its own.
    pub async fn emit_with_ack_within(
        &self,
        event: &str,
        data: impl Into<Value>,
        within: Duration,
    ) -> Result<AckReplies, AckError> {
        let hub = self.io.hub();
        let to = match self.target.rooms.is_empty() {
            true => hub.sids_except(self.target.except),
            false => hub
                .fanout()
                .room_sids(&self.target.rooms, self.target.except),
        };
        let data = data.into();
        self.io.ask(&self.target, to, event, data, within).await
    }

    /// Sessions on this node the target reaches (for one room, its size),
    /// live or away.
    pub fn count(&self) -> usize {
        let fanout = self.io.inner.hub.fanout();
        match &self.target.rooms[..] {
            [] => self
                .io
                .count()
                .saturating_sub(usize::from(self.target.except.is_some())),
            [room] => {
                let n = fanout.room_len(room);
                let me = self
                    .target
                    .except
                    .is_some_and(|sid| fanout.rooms_of(sid).contains(room));
                n - usize::from(me)
            }
            _ => fanout.room_members(&self.target.rooms, self.target.except),
        }
    }
}
