//! The hub: the table of live sessions, the count, and the ordering that
//! keeps every `user count` exact.
//!
//! Connect and disconnect run their handlers while holding one ordering lock,
//! so "count, then emit the count" is atomic with respect to every other
//! connect or disconnect: two racing joins can never emit 2 and then a
//! stale 1. The lock is a reentrant `parking_lot` mutex because a handler
//! may itself disconnect a socket. It is a blocking lock and is never held across
//! an `.await`; handlers are plain closures, so that cannot happen.
//!
//! Idle long-poll sessions expire through a deadline set and one reaper task,
//! as in mini-redis: no per-session timer, no scan of the whole table.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, ReentrantMutex, RwLock};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::config::Config;
use crate::error::Error;
use crate::fanout::{Delivery, Fanout};
use crate::session::{DisconnectReason, Session, Sid, Transport};
use crate::socket::{ConnectionHandler, Io, Socket};

pub(crate) struct Hub {
    pub(crate) config: Config,
    /// Live sessions. A std-style blocking mutex: every critical section is a
    /// map operation, never an await.
    sessions: Mutex<HashMap<Sid, Arc<Session>>>,
    /// Serialises connect and disconnect together with their handlers.
    order: ReentrantMutex<()>,
    /// Count and broadcast; local today, shared across nodes later.
    pub(crate) backend: Arc<dyn Backend>,
    /// This node's delivery to its own sessions.
    pub(crate) fanout: Fanout,
    /// `io.on_connection` handlers.
    pub(crate) on_connection: RwLock<Vec<ConnectionHandler>>,
    /// Event names whose broadcasts are latest-value (conflated).
    pub(crate) latest_names: RwLock<Vec<Box<str>>>,
    /// Idle polling sessions by deadline.
    expirations: Mutex<BTreeSet<(Instant, Sid)>>,
    /// Wakes the reaper when a deadline earlier than its current one appears,
    /// or at shutdown.
    reaper: Arc<Notify>,
    /// Set once shutdown begins: no new sessions after that.
    shutting_down: AtomicBool,
    /// Live SSE sessions, for stats.
    sse: AtomicUsize,
    /// Live polling sessions, for stats.
    polling: AtomicUsize,
    /// Sessions ended since free memory was last handed back to the kernel.
    ended_since_trim: AtomicUsize,
}

/// After this many sessions end, the reaper hands free heap pages back to the
/// kernel, so a flood of abandoned sessions does not pin its peak RSS.
const TRIM_AFTER_ENDED: usize = 4096;

impl Hub {
    pub(crate) fn new(config: Config, backend: Arc<dyn Backend>, fanout: Fanout) -> Hub {
        Hub {
            config,
            sessions: Mutex::new(HashMap::new()),
            order: ReentrantMutex::new(()),
            backend,
            fanout,
            on_connection: RwLock::new(Vec::new()),
            latest_names: RwLock::new(Vec::new()),
            expirations: Mutex::new(BTreeSet::new()),
            reaper: Arc::new(Notify::new()),
            shutting_down: AtomicBool::new(false),
            sse: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            ended_since_trim: AtomicUsize::new(0),
        }
    }

    /// Starts the reaper for idle polling sessions. It holds only a weak
    /// reference, so dropping the last `Io` ends it.
    pub(crate) fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let notify = self.reaper.clone();
        tokio::spawn(reap(weak, notify));
    }

    /// Creates a session, counts it, and runs the connection handlers.
    /// Returns its cursor with it, subscribed before the handlers run so the
    /// session sees whatever they broadcast.
    pub(crate) fn connect(
        self: &Arc<Self>,
        transport: Transport,
    ) -> Result<(Arc<Session>, Delivery), Error> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let _order = self.order.lock();
        let session = Arc::new(Session::new(Sid::new_v4(), transport));
        {
            let mut sessions = self.sessions.lock();
            if sessions.len() >= self.config.max_sessions {
                return Err(Error::Full);
            }
            sessions.insert(session.sid, session.clone());
        }
        self.by_transport(transport).fetch_add(1, Ordering::SeqCst);
        let delivery = self.fanout.subscribe(session.clone());
        self.backend.join();
        let handlers = self.on_connection.read().clone();
        let socket = Socket::new(Io::from_hub(self.clone()), session.clone());
        for h in handlers {
            h(&socket);
        }
        Ok((session, delivery))
    }

    /// Ends a session: removes it, uncounts it, wakes its transport with the
    /// reason, and runs its `disconnect` handlers. Returns false if it had
    /// already ended, so every caller may call it without checking.
    pub(crate) fn disconnect(self: &Arc<Self>, sid: Sid, reason: DisconnectReason) -> bool {
        let _order = self.order.lock();
        let Some(session) = self.sessions.lock().remove(&sid) else {
            return false;
        };
        self.by_transport(session.transport)
            .fetch_sub(1, Ordering::SeqCst);
        tracing::debug!(%sid, %reason, "session ended");
        self.backend.leave();
        session.close(reason);
        if let Some(at) = session.expires_at.lock().take() {
            self.expirations.lock().remove(&(at, sid));
        }
        // Release a parked cursor now rather than when the last Arc goes.
        session.parked.lock().take();
        let socket = Socket::new(Io::from_hub(self.clone()), session.clone());
        let reason_value = Value::from(reason.as_str());
        for h in session.handlers_for("disconnect") {
            h(&socket, &reason_value);
        }
        drop(session.take_handlers());
        if self.ended_since_trim.fetch_add(1, Ordering::Relaxed) + 1 == TRIM_AFTER_ENDED {
            self.reaper.notify_one();
        }
        true
    }

    /// Hands free heap memory back to the kernel if many sessions ended since
    /// the last time. The session table first gives up the capacity a flood
    /// left behind: a map never shrinks by itself, and 100,000 empty slots
    /// are megabytes.
    fn maybe_trim(&self) {
        let ended = self.ended_since_trim.load(Ordering::Relaxed);
        // Also when the table has just emptied: the tail of a flood is
        // smaller than the batch size but still worth giving back.
        let emptied = ended > 0 && self.sessions.lock().is_empty();
        if ended >= TRIM_AFTER_ENDED || emptied {
            self.ended_since_trim.store(0, Ordering::Relaxed);
            {
                let mut sessions = self.sessions.lock();
                if sessions.capacity() > 4 * sessions.len().max(1024) {
                    let len = sessions.len();
                    sessions.shrink_to(2 * len);
                }
            }
            crate::memory::release_free_memory();
        }
    }

    pub(crate) fn get(&self, sid: &Sid) -> Option<Arc<Session>> {
        self.sessions.lock().get(sid).cloned()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.lock().len()
    }

    pub(crate) fn transport_count(&self, t: Transport) -> usize {
        self.by_transport(t).load(Ordering::SeqCst)
    }

    fn by_transport(&self, t: Transport) -> &AtomicUsize {
        match t {
            Transport::Sse => &self.sse,
            Transport::Polling => &self.polling,
        }
    }

    /// A polling session has no poll pending from now on: it must poll again
    /// within pingTimeout.
    pub(crate) fn arm_expiry(&self, session: &Session) {
        let at = Instant::now() + self.config.ping_timeout();
        let mut slot = session.expires_at.lock();
        let mut set = self.expirations.lock();
        if let Some(old) = slot.take() {
            set.remove(&(old, session.sid));
        }
        let earliest = set.first().map(|(t, _)| *t);
        set.insert((at, session.sid));
        *slot = Some(at);
        drop(set);
        drop(slot);
        if earliest.is_none_or(|e| at < e) {
            self.reaper.notify_one();
        }
    }

    /// A poll arrived: the session is alive for as long as it is pending.
    pub(crate) fn disarm_expiry(&self, session: &Session) {
        if let Some(at) = session.expires_at.lock().take() {
            self.expirations.lock().remove(&(at, session.sid));
        }
    }

    /// Disconnects every expired session; returns the next deadline.
    fn purge(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        loop {
            let next = {
                let mut set = self.expirations.lock();
                match set.first().copied() {
                    Some((at, sid)) if at <= now => {
                        set.remove(&(at, sid));
                        Some(sid)
                    }
                    Some((at, _)) => return Some(at),
                    None => return None,
                }
            };
            if let Some(sid) = next {
                if let Some(s) = self.get(&sid) {
                    s.expires_at.lock().take();
                }
                self.disconnect(sid, DisconnectReason::PingTimeout);
            }
        }
    }

    /// Refuses new sessions and ends every live one with `ServerShutdown`.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let sids: Vec<Sid> = self.sessions.lock().keys().copied().collect();
        for sid in sids {
            self.disconnect(sid, DisconnectReason::ServerShutdown);
        }
        self.reaper.notify_one();
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether broadcasts of `name` are latest-value.
    pub(crate) fn is_latest(&self, name: &str) -> bool {
        self.latest_names.read().iter().any(|n| &**n == name)
    }
}

async fn reap(hub: Weak<Hub>, notify: Arc<Notify>) {
    loop {
        let next = match hub.upgrade() {
            Some(hub) if !hub.is_shutting_down() => {
                let next = hub.purge();
                // After a mass disconnect, give the freed pages back.
                hub.maybe_trim();
                next
            }
            _ => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = notify.notified() => {}
                }
            }
            None => notify.notified().await,
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Let the reaper see that the hub is gone instead of waiting forever.
        self.reaper.notify_one();
    }
}
