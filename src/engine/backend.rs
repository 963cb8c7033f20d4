//! The seam between one node's sessions and the count and broadcast they
//! share with other nodes.
//!
//! Today one process owns every session, so [`LocalBackend`] keeps the count
//! in an atomic and hands broadcasts straight to this node's [`Fanout`]. A
//! cluster backend (Redis, say) implements the same calls over the network:
//! `join` and `leave` update a shared count, `count` reads the newest value
//! it can vouch for, and `broadcast` publishes to every node, each of which
//! feeds its own `Fanout`. Such calls wait on I/O and can fail, and the
//! backend has connections to open and close, so every call returns a future
//! and a `Result`, and there are `start` and `close`.
//!
//! A backend is built from the hub's own [`Fanout`] (see
//! [`Io::with_backend`](crate::Io::with_backend)), so the two cannot
//! disagree about where this node's deliveries go.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::engine::fanout::Fanout;
use crate::engine::packet::Packet;
use crate::engine::rooms::Target;
use crate::error::BackendError;
use crate::session::Sid;

/// What every backend call returns: owned (`'static`), so the hub can finish
/// it on another task when it is not ready at once.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send>>;

/// One event on its way to every session.
#[derive(Debug, Clone)]
pub struct Broadcast {
    /// The event name, for latest-value slots keyed by name.
    pub name: Arc<str>,
    /// The event, already encoded for both transports.
    pub packet: Packet,
    /// A latest-value event: a reader that is behind may skip to the newest.
    /// Only for everyone-broadcasts; a room event is always ordinary.
    pub latest: bool,
    /// Who it is for: everyone, or rooms, less one sender. A backend that
    /// spans nodes sends it on as is; each node's [`Fanout::publish_to`]
    /// finds its own members.
    pub target: Target,
}

/// Where the user count lives and how a broadcast reaches every session.
///
/// The local backend's futures are ready at once, and the hub then finishes
/// each call on the spot, so a single node behaves exactly as if the calls
/// were synchronous. A future that is not ready is finished on its own task.
/// Calls are made in the order events happen; an implementation that needs
/// per-sender order (publishing, say) must fix the order when the call is
/// made, not when its future first runs.
pub trait Backend: Send + Sync + 'static {
    /// Opens connections and subscriptions; called once before serving.
    fn start(&self) -> BackendFuture<()>;
    /// A session became live on this node. When it resolves, `count`
    /// includes it.
    fn join(&self, sid: Sid) -> BackendFuture<()>;
    /// [`Backend::join`] for a session that belongs to `person` (a key
    /// naming a user id or a browser, shared by that person's sessions),
    /// for a backend that counts people as well as sessions.
    fn join_as(&self, sid: Sid, person: Option<Arc<str>>) -> BackendFuture<()> {
        let _ = person;
        self.join(sid)
    }
    /// People everywhere the backend reaches, as of the same state as
    /// [`Backend::count`]: `None` for a backend that does not count them.
    fn users(&self) -> Option<usize> {
        None
    }
    /// A live session on this node ended. When it resolves, `count` no
    /// longer includes it.
    fn leave(&self, sid: Sid) -> BackendFuture<()>;
    /// A live session on this node went away: its transport dropped and it
    /// waits out the recovery window. Uncounted as by [`Backend::leave`],
    /// but still found by [`Backend::locate`] until [`Backend::unclaim`],
    /// so that a resume through another node reaches it.
    fn away(&self, sid: Sid) -> BackendFuture<()> {
        self.leave(sid)
    }
    /// Live sessions everywhere the backend reaches, as of the newest value
    /// it has; a plain read, because connection handlers call it.
    fn count(&self) -> usize;
    /// Delivers an event to every session its target names, on every node.
    fn broadcast(&self, event: Broadcast) -> BackendFuture<()>;
    /// Releases connections; called once after every session has ended.
    fn close(&self) -> BackendFuture<()>;
    /// The address of the node holding `id` (a session's [`Sid`] or a shared
    /// stream's id), when another node holds it, so that a request for it
    /// can be forwarded there. A single process holds every session it
    /// knows, so it never answers.
    fn locate(&self, id: uuid::Uuid) -> BackendFuture<Option<String>> {
        let _ = id;
        Box::pin(std::future::ready(Ok(None)))
    }
    /// Records that this node holds `id` (a shared stream's id), so that
    /// [`Backend::locate`] finds it from any node; a single process has
    /// nothing to record.
    fn claim(&self, id: uuid::Uuid) -> BackendFuture<()> {
        let _ = id;
        Box::pin(std::future::ready(Ok(())))
    }
    /// Forgets a [`Backend::claim`], or the record an away session kept
    /// ([`Backend::away`]) once it ends for good.
    fn unclaim(&self, id: uuid::Uuid) -> BackendFuture<()> {
        let _ = id;
        Box::pin(std::future::ready(Ok(())))
    }
    /// The key the nodes of a cluster share, with which a node vouches for
    /// the client's address on a request it forwards to another, so that
    /// the per-address limits there count the client and not the node.
    /// `None` when there are no other nodes (or none agreed on yet).
    fn cluster_key(&self) -> Option<[u8; 32]> {
        None
    }
    /// Every live node of the cluster (this one included) with the address
    /// the others reach it at, sorted by node; a single process has none.
    fn nodes(&self) -> BackendFuture<Vec<(String, String)>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
    /// The backend's own state, for `/readyz` and `/metrics`: `None` for a
    /// backend with nothing to reach (the local one), which is then always
    /// ready. A plain read of what the backend last saw, because probes
    /// call it.
    fn status(&self) -> Option<BackendStatus> {
        None
    }
}

/// What a networked backend reports about its link to the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendStatus {
    /// Whether it reaches the shared store now; a node whose backend does
    /// not is not ready for new sessions.
    pub connected: bool,
    /// Reconnections since start.
    pub reconnects: u64,
    /// How far behind the shared state this node is, when it can tell.
    pub lag: Option<Duration>,
}

/// Polls `fut` once; `Ok` with its output if it was ready, else the future
/// back, to be finished elsewhere.
pub(crate) fn ready_now<T>(
    mut fut: BackendFuture<T>,
) -> Result<Result<T, BackendError>, BackendFuture<T>> {
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Ok(out),
        Poll::Pending => Err(fut),
    }
}

/// The single-process backend: an atomic count and this node's fan-out.
pub struct LocalBackend {
    /// Live sessions on this node, which is every session there is.
    count: AtomicUsize,
    /// Where broadcasts go: the hub's own fan-out.
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

fn done() -> BackendFuture<()> {
    Box::pin(std::future::ready(Ok(())))
}

impl Backend for LocalBackend {
    fn start(&self) -> BackendFuture<()> {
        done()
    }

    fn join(&self, _sid: Sid) -> BackendFuture<()> {
        self.count.fetch_add(1, Ordering::SeqCst);
        done()
    }

    fn leave(&self, _sid: Sid) -> BackendFuture<()> {
        // A leave without a join would be a hub bug; saturate rather than
        // wrap so that one bug cannot turn into a count of 2^64.
        let _ = self
            .count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
        done()
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn broadcast(&self, event: Broadcast) -> BackendFuture<()> {
        if event.latest && event.target.is_all() {
            self.fanout.publish_latest(&event.name, event.packet);
        } else {
            self.fanout.publish_to(&event.target, event.packet);
        }
        done()
    }

    fn close(&self) -> BackendFuture<()> {
        done()
    }
}
