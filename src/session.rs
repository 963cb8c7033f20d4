//! A session: one client's identity, its transport kind, its mailbox of
//! direct events and its `socket.on` handlers.
//!
//! A session outlives any single HTTP request (a long-poll client makes many)
//! and knows nothing about HTTP: transports hold an `Arc<Session>` and a
//! [`Delivery`](crate::fanout::Delivery) cursor, and the hub owns the table.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use serde_json::Value;
use uuid::Uuid;

use crate::fanout::Delivery;
use crate::packet::Packet;
use crate::socket::Socket;

/// A session ID: a random (v4) UUID, so 122 bits nobody can guess.
pub type Sid = Uuid;

/// `{"sid":..,"pingInterval":..,"pingTimeout":..}`, the first thing every
/// client reads, in this key order for readability with curl.
pub(crate) fn handshake_json(sid: Sid, config: &crate::Config) -> String {
    format!(
        "{{\"sid\":\"{sid}\",\"pingInterval\":{},\"pingTimeout\":{}}}",
        config.ping_interval_ms, config.ping_timeout_ms
    )
}

/// How a session's events reach its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One long-lived `GET /events` response.
    Sse,
    /// Repeated `GET /poll?sid=` requests.
    Polling,
}

impl Transport {
    /// The name used on the wire and in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Polling => "polling",
        }
    }
}

/// Why a session ended: every way out is one of these, for both transports.
///
/// `Display` gives the string a client sees in its `disconnect` event and a
/// `socket.on("disconnect", ..)` handler receives, socket.io's wording where
/// socket.io has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The connection closed or reset: an SSE stream ended, a client's TCP
    /// connection died, or the kernel gave up on unacknowledged data.
    TransportClose,
    /// A long-poll client stopped polling for longer than pingTimeout.
    PingTimeout,
    /// The client asked to leave (`POST /close`).
    ClientClose,
    /// The server is shutting down.
    ServerShutdown,
    /// Server code called [`Socket::disconnect`].
    ServerDisconnect,
    /// The client fell more than `--max-pending-events` ordinary events
    /// behind; it is dropped instead of silently missing events.
    SlowReader,
}

impl DisconnectReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ClientClose => "client close",
            DisconnectReason::ServerShutdown => "server shutdown",
            DisconnectReason::ServerDisconnect => "server disconnect",
            DisconnectReason::SlowReader => "slow reader",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `socket.on` callback: the socket and the event's data (for
/// `"disconnect"`, the reason as a JSON string).
pub type Handler = Arc<dyn Fn(&Socket, &Value) + Send + Sync>;

/// One client's state on this node.
pub(crate) struct Session {
    /// The client's identity; the key in the hub's table.
    pub(crate) sid: Sid,
    /// Fixed at handshake: a session never changes transport, so a poll for
    /// an SSE session is a client bug and is refused.
    pub(crate) transport: Transport,
    /// Direct events and the close flag, shared with whichever transport
    /// request is currently reading.
    mailbox: Mutex<Mailbox>,
    /// `socket.on` handlers by event name. Taken (emptied) on disconnect so
    /// that closures capturing the `Io` do not keep the hub alive.
    handlers: Mutex<HashMap<Box<str>, Vec<Handler>>>,
    /// A polling session's cursor while no poll is pending. `None` while a
    /// poll holds it, which is how a second concurrent poll is detected.
    pub(crate) parked: Mutex<Option<Delivery>>,
    /// When an idle polling session expires, so the reaper entry can be
    /// removed when the next poll arrives.
    pub(crate) expires_at: Mutex<Option<tokio::time::Instant>>,
}

#[derive(Default)]
struct Mailbox {
    /// Events for this session alone (`socket.emit`).
    queue: VecDeque<Packet>,
    /// Set once, when the session ends.
    closed: Option<DisconnectReason>,
    /// The transport task to wake when either of the above changes.
    waker: Option<Waker>,
    /// Set when `queue` overflowed; the reader closes as a slow reader.
    overflowed: bool,
}

impl Session {
    pub(crate) fn new(sid: Sid, transport: Transport) -> Session {
        Session {
            sid,
            transport,
            mailbox: Mutex::new(Mailbox::default()),
            handlers: Mutex::new(HashMap::new()),
            parked: Mutex::new(None),
            expires_at: Mutex::new(None),
        }
    }

    /// Queues a direct event; over `limit` queued, marks the session as a
    /// slow reader instead of growing without bound.
    pub(crate) fn push(&self, packet: Packet, limit: usize) {
        let waker = {
            let mut mb = self.mailbox.lock();
            if mb.closed.is_some() {
                return;
            }
            if mb.queue.len() >= limit {
                mb.overflowed = true;
                mb.queue.clear();
            } else {
                mb.queue.push_back(packet);
            }
            mb.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Marks the session closed and wakes its reader. Returns false if it was
    /// already closed, so the first reason wins.
    pub(crate) fn close(&self, reason: DisconnectReason) -> bool {
        let waker = {
            let mut mb = self.mailbox.lock();
            if mb.closed.is_some() {
                return false;
            }
            mb.closed = Some(reason);
            mb.queue.clear();
            mb.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    pub(crate) fn closed_reason(&self) -> Option<DisconnectReason> {
        self.mailbox.lock().closed
    }

    /// The next direct event, or the close reason once closed.
    pub(crate) fn poll_mailbox(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Packet, DisconnectReason>> {
        let mut mb = self.mailbox.lock();
        if let Some(reason) = mb.closed {
            return Poll::Ready(Err(reason));
        }
        if mb.overflowed {
            return Poll::Ready(Err(DisconnectReason::SlowReader));
        }
        if let Some(p) = mb.queue.pop_front() {
            return Poll::Ready(Ok(p));
        }
        match &mb.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => mb.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(crate) fn add_handler(&self, event: &str, handler: Handler) {
        self.handlers
            .lock()
            .entry(Box::from(event))
            .or_default()
            .push(handler);
    }

    pub(crate) fn remove_handlers(&self, event: &str) {
        self.handlers.lock().remove(event);
    }

    /// The handlers for `event`, cloned out so that none runs under the lock
    /// (a handler may register another).
    pub(crate) fn handlers_for(&self, event: &str) -> Vec<Handler> {
        self.handlers.lock().get(event).cloned().unwrap_or_default()
    }

    /// Drops every handler, breaking `Io` → session → closure → `Io` cycles.
    pub(crate) fn take_handlers(&self) -> HashMap<Box<str>, Vec<Handler>> {
        std::mem::take(&mut *self.handlers.lock())
    }
}
