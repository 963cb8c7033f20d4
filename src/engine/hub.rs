//! The hub: the table of live sessions, the count, and the ordering that
//! keeps every `user count` exact.
//!
//! The hub knows sessions, cursors and reasons, never event names: when a
//! session starts or ends it calls the [`Lifecycle`] that the socket layer
//! implements, as an engine calls its handler. Those calls run one at a time
//! under one ordering lock, so "read the count, emit it" in a handler is
//! atomic with respect to every other connect or disconnect: two racing
//! joins can never leave a stale count as the last one sent. The lock is a
//! reentrant `parking_lot` mutex because a handler may itself disconnect a
//! socket. It is a blocking lock and is never held across an `.await`.
//!
//! The backend is told of every join and leave before the lifecycle call,
//! so the count a handler reads already includes the change.
//!
//! Idle long-poll sessions expire through a deadline set and one reaper task,
//! as in mini-redis: no per-session timer, no scan of the whole table.
//!
//! A session whose transport dropped (`transport close`, `ping timeout`)
//! does not end at once when `--recovery-window` is set: it leaves the live
//! table, is uncounted and its disconnect handlers run as usual, but its
//! mailbox, rooms and socket state wait in the away table until the window
//! passes. A client that comes back in time with its cursor gets the same
//! sid back and everything it missed; see `recovery`.
//!
//! Before that, a stream that drops without a close (a proxy's cut, a
//! reset) gets a short grace, `--reconnect-grace`: the session stays in the
//! live table, counted, its events piling up in its mailbox and the log,
//! and nothing is told to the backend or the lifecycle. A client that comes
//! back in time with its cursor, on either transport, is re-attached to the
//! very same session: a new entry (a new incarnation) with the same sid,
//! mailbox and socket state, and no connect or disconnect anywhere. If it
//! does not come back, the reaper ends the session at the deadline with
//! `transport close`, and it goes away for the recovery window as above.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Mutex, ReentrantMutex};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::engine::backend::{ready_now, Backend, BackendFuture};
use crate::engine::fanout::{Delivery, Fanout};
use crate::engine::limits::{client_ip, AddressTable, Bucket, Rate};
use crate::engine::mailbox::{Mailbox, Unresumable};
use crate::engine::packet::Packet;
use crate::engine::recovery::{Away, AwayTable, Cursor};
use crate::error::Error;
use crate::ops::metrics::Metrics;
use crate::session::{DisconnectReason, Handshake, Sid, Transport};

/// What the layer above does when a session starts or ends. The hub calls it
/// under its ordering lock, never two at a time.
pub(crate) trait Lifecycle: Send + Sync {
    /// A new session is live and counted; its cursor is already subscribed,
    /// so it sees whatever this call broadcasts. `recovered`: it is an away
    /// session resumed, with its `ext` state carried over.
    fn connected(
        self: Arc<Self>,
        session: &Arc<Session>,
        handshake: &Arc<Handshake>,
        recovered: bool,
    );
    /// Who a session starting with `handshake` belongs to, when that is a
    /// person with other sessions too (a user id, a browser): the key the
    /// backend counts people by. Asked before the session is counted.
    fn person(&self, handshake: &Handshake) -> Option<Arc<str>>;
    /// A session ended and is no longer counted; `rooms` are those it was
    /// in (an ended session has left them by now, an away one keeps them).
    fn disconnected(
        self: Arc<Self>,
        session: &Arc<Session>,
        reason: DisconnectReason,
        rooms: Vec<Arc<str>>,
    );
}

/// One live session as the hub keeps it.
pub(crate) struct Session {
    /// The client's identity; the key in the hub's table.
    pub(crate) sid: Sid,
    /// Fixed at handshake: a session never changes transport, so a poll for
    /// an SSE session is a client bug and is refused.
    pub(crate) transport: Transport,
    /// Direct events and the close flag, shared with its cursor; the same
    /// mailbox across a resume.
    pub(crate) mailbox: Arc<Mailbox>,
    /// Which connection of this sid this is: a resume makes a new entry
    /// with the same sid, and a transport ending may end only its own.
    pub(crate) incarnation: u64,
    /// The first log sequence number this session may read: a resume may
    /// not reach back to before the session began.
    pub(crate) start: u64,
    /// A polling session's cursor while no poll is pending. `None` while a
    /// poll holds it, which is how a second concurrent poll is detected.
    /// Boxed: a cursor is a few hundred bytes, and an SSE session, whose
    /// cursor lives in its stream, never parks one.
    parked: Mutex<Option<Box<Delivery>>>,
    /// Whether its client has shown life since the handshake (an SSE
    /// stream is one; a polling session must have polled). A session that
    /// never did is abandoned, not dropped, and is not kept for a resume.
    polled: AtomicBool,
    /// When an idle polling session expires, so the reaper entry can be
    /// removed when the next poll arrives.
    expires_at: Mutex<Option<Instant>>,
    /// The client's TCP peer at handshake, for logs.
    pub(crate) remote: SocketAddr,
    /// The address the per-address limits count this session against (the
    /// peer, or what a trusted proxy says the client is).
    client: IpAddr,
    /// This session's `--max-emit-rate` bucket.
    emits: Mutex<Bucket>,
    /// A polling session that has not yet polled or emitted: its expiry is
    /// the short first-poll one.
    unproven: AtomicBool,
    /// When the session began, for its duration in logs.
    pub(crate) started: std::time::Instant,
    /// The layer above's own state for this session (the socket layer keeps
    /// its handlers here). Opaque to the hub, and kept in the entry rather
    /// than in a second table so that a session costs one map slot.
    pub(crate) ext: OnceLock<Arc<dyn Any + Send + Sync>>,
}

impl Session {
    fn new(
        sid: Sid,
        transport: Transport,
        remote: SocketAddr,
        client: IpAddr,
        mailbox: Arc<Mailbox>,
        start: u64,
        incarnation: u64,
    ) -> Session {
        Session {
            sid,
            transport,
            remote,
            client,
            emits: Mutex::new(Bucket::default()),
            unproven: AtomicBool::new(transport == Transport::Polling),
            started: std::time::Instant::now(),
            mailbox,
            incarnation,
            start,
            polled: AtomicBool::new(transport == Transport::Sse),
            parked: Mutex::new(None),
            expires_at: Mutex::new(None),
            ext: OnceLock::new(),
        }
    }

    /// Queues an event for this session alone, stamped with the log
    /// position so it keeps its place among broadcasts.
    pub(crate) fn push(&self, packet: Packet, stamp: u64, limit: usize) {
        self.mailbox.push(packet, stamp, limit);
    }

    /// The client's resume position after `delivery`'s last ordinary event.
    pub(crate) fn cursor(&self, delivery: &Delivery) -> Cursor {
        let (broadcast, direct) = delivery.position();
        Cursor {
            sid: self.sid,
            broadcast,
            direct,
        }
    }

    /// Why the session ended, once it has.
    pub(crate) fn closed_reason(&self) -> Option<DisconnectReason> {
        self.mailbox.closed_reason()
    }
}

/// Why a poll could not take a session's cursor.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TakeError {
    /// Another poll holds it.
    Pending,
    /// The session ended.
    Closed,
}

pub(crate) struct Hub {
    /// Limits and heartbeat periods.
    pub(crate) config: Config,
    /// Live sessions. A std-style blocking mutex: every critical section is a
    /// map operation, never an await.
    sessions: Mutex<HashMap<Sid, Arc<Session>>>,
    /// Serialises the lifecycle calls of every connect and disconnect.
    order: ReentrantMutex<()>,
    /// Count and broadcast; local, or shared across nodes.
    pub(crate) backend: Arc<dyn Backend>,
    /// This node's delivery to its own sessions; the backend feeds it.
    fanout: Fanout,
    /// The socket layer. Weak, because that layer owns the hub.
    lifecycle: Weak<dyn Lifecycle>,
    /// Idle polling sessions by deadline.
    expirations: Mutex<BTreeSet<(Instant, Sid)>>,
    /// Wakes the reaper when a deadline earlier than its current one appears,
    /// or at shutdown.
    reaper: Arc<Notify>,
    /// Set once shutdown begins: no new sessions after that.
    shutting_down: AtomicBool,
    /// Cancelled when shutdown starts: what streams that hold no session
    /// here (a resume relayed from another node) end on.
    stopping: tokio_util::sync::CancellationToken,
    /// Live SSE sessions, for stats.
    sse: AtomicUsize,
    /// Live polling sessions, for stats.
    polling: AtomicUsize,
    /// Sessions ended since free memory was last handed back to the kernel.
    ended_since_trim: AtomicUsize,
    /// Sessions begun since then: a burst of them frees, once answered, far
    /// more than it keeps (each request's transient state), and those holes
    /// pin pages between the sessions' long-lived blocks.
    started_since_trim: AtomicUsize,
    /// When the last session began, in ms since `born`: the trim after a
    /// burst waits for the burst to end.
    last_start_ms: AtomicU64,
    /// The hub's creation, the origin of `last_start_ms`.
    born: Instant,
    /// When free memory was last handed back, to space the trims that
    /// sessions beginning ask for.
    trimmed_at: Mutex<Option<Instant>>,
    /// Disconnects waiting on a backend `leave`, so that closing the backend
    /// can wait for them first.
    finishing: TaskTracker,
    /// Sessions whose transport dropped, kept for a resume until the
    /// recovery window passes, as many as `--max-away-sessions` and
    /// `--max-sessions-per-ip` let it hold.
    away: Mutex<Away<Arc<Session>>>,
    /// Live sessions whose stream dropped without a close, by the
    /// incarnation that dropped, until their reconnect grace ends.
    graced: Mutex<AwayTable<u64>>,
    /// The incarnation the next session entry gets.
    incarnations: AtomicU64,
    /// A second trim after the table emptied, and when.
    retrim_at: Mutex<Option<Instant>>,
    /// What `/metrics` shows; bumped with atomics only.
    pub(crate) metrics: Metrics,
    /// Sessions and new-session rates per client address.
    addresses: Mutex<AddressTable>,
    /// `--max-emit-rate` and `--max-emit-burst`; `None` when off.
    emit_rate: Option<Rate>,
}

/// A session just started: its entry, its cursor, and how a resume went.
pub(crate) struct Connected {
    /// The live entry.
    pub(crate) session: Arc<Session>,
    /// Its read position.
    pub(crate) delivery: Delivery,
    /// `None` if no resume was asked for; else whether it succeeded. A
    /// failed resume means the client may have missed events.
    pub(crate) recovered: Option<bool>,
}

/// How long after the session table emptied the reaper trims once more.
const RETRIM_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// After this many sessions end, the reaper hands free heap pages back to the
/// kernel, so a flood of abandoned sessions does not pin its peak RSS.
const TRIM_AFTER_ENDED: usize = 4096;

/// The least time between two trims that sessions beginning asked for.
/// Once sessions have begun, the reaper hands free heap pages back to the
/// kernel when none has begun for `RETRIM_AFTER`, but not sooner than this
/// after the last trim, so a steady trickle of arrivals costs one trim every
/// two seconds at most. Measured with 5,000 HTTP/2 streams opened at once:
/// 3.40 KiB of RSS per stream before the trim, 3.06 after; and 40 browser
/// pages opened one after another: 8.8 KiB per page past the first, where
/// without it the first page's request state left holes the next pages
/// filled (0.0 past the first, 16.0 from idle, against 14.5 with it).
const TRIM_SPACING: Duration = Duration::from_secs(2);

impl Hub {
    pub(crate) fn new(
        config: Config,
        fanout: Fanout,
        backend: Arc<dyn Backend>,
        lifecycle: Weak<dyn Lifecycle>,
    ) -> Hub {
        let metrics = Metrics::new(fanout.clock().clone(), backend.status().is_some());
        let away = Away::new(config.max_away(), config.max_sessions_per_ip);
        Hub {
            metrics,
            addresses: Mutex::new(AddressTable::new(&config)),
            emit_rate: Rate::new(config.max_emit_rate, config.max_emit_burst),
            config,
            sessions: Mutex::new(HashMap::new()),
            order: ReentrantMutex::new(()),
            backend,
            fanout,
            lifecycle,
            expirations: Mutex::new(BTreeSet::new()),
            reaper: Arc::new(Notify::new()),
            shutting_down: AtomicBool::new(false),
            stopping: tokio_util::sync::CancellationToken::new(),
            sse: AtomicUsize::new(0),
            polling: AtomicUsize::new(0),
            ended_since_trim: AtomicUsize::new(0),
            started_since_trim: AtomicUsize::new(0),
            last_start_ms: AtomicU64::new(0),
            born: Instant::now(),
            trimmed_at: Mutex::new(None),
            finishing: TaskTracker::new(),
            away: Mutex::new(away),
            graced: Mutex::new(AwayTable::default()),
            incarnations: AtomicU64::new(0),
            retrim_at: Mutex::new(None),
        }
    }

    /// Starts the reaper for idle polling sessions. It holds only a weak
    /// reference, so dropping the last `Io` ends it.
    pub(crate) fn spawn_reaper(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let notify = self.reaper.clone();
        tokio::spawn(reap(weak, notify));
    }

    /// Creates a session, counts it, and runs the connection lifecycle.
    /// Returns its cursor with it, subscribed before the lifecycle runs so
    /// the session sees whatever that broadcasts.
    ///
    /// With `resume`, the session named in the cursor comes back if it is
    /// away (or still live: its old transport is ended first, as a client
    /// only resumes once it has given up on it) and the cursor is one this
    /// session could have been sent with its events still held; otherwise
    /// it is ended for good and the client gets a fresh session.
    pub(crate) async fn connect(
        self: &Arc<Self>,
        transport: Transport,
        handshake: &Arc<Handshake>,
        resume: Option<Cursor>,
    ) -> Result<Connected, Error> {
        self.connect_as(transport, handshake, resume, None).await
    }

    /// [`Hub::connect`] for the handshake of a ticket redeemed from
    /// `client`, the address [`Hub::admit_ticket`] counted it for: the
    /// session takes that slot, which is given back if no new session comes
    /// of the ticket.
    pub(crate) async fn connect_redeemed(
        self: &Arc<Self>,
        transport: Transport,
        handshake: &Arc<Handshake>,
        resume: Option<Cursor>,
        client: IpAddr,
    ) -> Result<Connected, Error> {
        self.connect_as(transport, handshake, resume, Some(client))
            .await
    }

    async fn connect_as(
        self: &Arc<Self>,
        transport: Transport,
        handshake: &Arc<Handshake>,
        resume: Option<Cursor>,
        ticket: Option<IpAddr>,
    ) -> Result<Connected, Error> {
        let client = ticket.unwrap_or_else(|| client_ip(handshake, &self.config.trusted_proxy));
        let unused_ticket = || {
            if ticket.is_some() {
                self.release_ticket(client);
            }
        };
        if self.is_shutting_down() {
            unused_ticket();
            return Err(Error::ShuttingDown);
        }
        if let Some(cursor) = resume.filter(|_| self.config.reconnect_grace_ms > 0) {
            match self.reattach(transport, handshake, cursor) {
                Ok(None) => {}
                done => {
                    unused_ticket();
                    if let Some(connected) = done? {
                        return Ok(connected);
                    }
                }
            }
        }
        if ticket.is_some() {
            self.addresses.lock().redeem_ticket(client, Instant::now());
        } else {
            self.addresses.lock().admit(client, Instant::now())?;
        }
        let mut recovered = None;
        let mut carried = None;
        // A position in the log with no session (the nil sid), as the
        // server API's publish answers: a page rendered at that point
        // starts a fresh session there, so it gets each later broadcast
        // once, with no gap. Gone from the log, it is an ordinary missed
        // resume.
        let mut from = None;
        let resume = match resume {
            Some(c) if c.sid.as_uuid().is_nil() && self.fanout.can_resume_at(c.broadcast) => {
                from = Some(c.broadcast);
                None
            }
            other => other,
        };
        if let Some(cursor) = resume {
            self.disconnect(cursor.sid, DisconnectReason::TransportClose);
            let old = self.away.lock().take(&cursor.sid);
            recovered = Some(false);
            if let Some(old) = old {
                let ok = cursor.broadcast >= old.start
                    && self.fanout.can_resume_at(cursor.broadcast)
                    && old.mailbox.reopen(cursor.direct).is_ok();
                if ok {
                    recovered = Some(true);
                    carried = Some((old, cursor.broadcast));
                } else {
                    self.forget(&old);
                }
            }
        }
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let session = match &carried {
            Some((old, _)) => {
                let s = Session::new(
                    old.sid,
                    transport,
                    handshake.address,
                    client,
                    old.mailbox.clone(),
                    old.start,
                    incarnation,
                );
                if let Some(ext) = old.ext.get() {
                    let _ = s.ext.set(ext.clone());
                }
                Arc::new(s)
            }
            None => Arc::new(Session::new(
                Sid::new_v4(),
                transport,
                handshake.address,
                client,
                Arc::new(Mailbox::new(self.retain())),
                from.unwrap_or_else(|| self.fanout.end()),
                incarnation,
            )),
        };
        {
            let mut sessions = self.sessions.lock();
            if sessions.len() >= self.config.max_sessions {
                drop(sessions);
                self.addresses.lock().release(client, Instant::now());
                self.end_for_good(&session);
                return Err(Error::Full);
            }
            sessions.insert(session.sid, session.clone());
        }
        self.by_transport(transport).fetch_add(1, Ordering::SeqCst);
        // A backend that answers at once (the local one) joins under the
        // ordering lock, so the count each connection handler reads is the
        // one its own join made: counts go out in order, none twice. One
        // that must wait is awaited outside the lock, which is never held
        // across an await.
        let joined = {
            let _order = self.order.lock();
            // Only a backend that counts people needs to know whose it is
            // (with JWT sessions, that is one more verification).
            let person = match self.backend.users() {
                Some(_) => self.lifecycle.upgrade().and_then(|l| l.person(handshake)),
                None => None,
            };
            match ready_now(self.backend.join_as(session.sid, person)) {
                Ok(Ok(())) => {
                    let from = carried.as_ref().map(|(_, g)| *g).or(from);
                    return Ok(self.finish_connect(
                        session,
                        handshake,
                        from,
                        recovered,
                        carried.is_some(),
                    ));
                }
                Ok(Err(e)) => Err(e),
                Err(pending) => Ok(pending),
            }
        };
        let joined = match joined {
            Ok(pending) => pending.await,
            Err(e) => Err(e),
        };
        if let Err(e) = joined {
            tracing::warn!(error = %e, "backend refused a join");
            if self.remove_if(session.sid, incarnation).is_some() {
                self.by_transport(transport).fetch_sub(1, Ordering::SeqCst);
                self.addresses.lock().release(client, Instant::now());
            }
            self.end_for_good(&session);
            return Err(e.into());
        }
        let from = carried.as_ref().map(|(_, g)| *g).or(from);
        Ok(self.finish_connect(session, handshake, from, recovered, carried.is_some()))
    }

    /// Counts a handshake ticket against its client address's limits, or
    /// refuses it; the address it was counted for is returned, to be handed
    /// to [`Hub::release_ticket`] or to [`Hub::connect_redeemed`].
    pub(crate) fn admit_ticket(&self, handshake: &Handshake) -> Result<IpAddr, Error> {
        let client = client_ip(handshake, &self.config.trusted_proxy);
        self.addresses.lock().admit_ticket(client, Instant::now())?;
        Ok(client)
    }

    /// Uncounts a ticket that expired or was refused.
    pub(crate) fn release_ticket(&self, client: IpAddr) {
        self.addresses.lock().release_ticket(client, Instant::now());
    }

    /// Continues the live session `cursor` names on a new transport, if it
    /// is one whose client may come back to it: a stream that dropped within
    /// its grace, or a polling session (whose client gives up on a poll that
    /// a proxy cut, and whose old poll then ends). Nothing is counted,
    /// joined or told to the lifecycle: the session never ended.
    ///
    /// `Ok(None)`: no live session to continue (unknown, or its events are
    /// gone), and the ordinary resume path decides. A cursor the session
    /// was never sent, or a sid whose stream is still open, is refused and
    /// the session carries on untouched.
    fn reattach(
        &self,
        transport: Transport,
        handshake: &Arc<Handshake>,
        cursor: Cursor,
    ) -> Result<Option<Connected>, Error> {
        let sid = cursor.sid;
        let mut sessions = self.sessions.lock();
        let Some(old) = sessions.get(&sid).cloned() else {
            return Ok(None);
        };
        let graced = self.graced.lock().get(&sid) == Some(&old.incarnation);
        // A polling session's own polls (never a shared stream's) set
        // `polled`; a shared stream's sessions are re-attached by the stream.
        let polling = old.transport == Transport::Polling && old.polled.load(Ordering::Relaxed);
        if !graced && !polling {
            return Err(Error::SessionHeld);
        }
        if cursor.broadcast < old.start || cursor.broadcast > self.fanout.end() {
            return Err(Error::CursorMismatch);
        }
        if !self.fanout.can_resume_at(cursor.broadcast) {
            return Ok(None);
        }
        match old.mailbox.reopen(cursor.direct) {
            Ok(_) => {}
            Err(Unresumable::Impossible) => return Err(Error::CursorMismatch),
            Err(Unresumable::Gone) => return Ok(None),
        }
        // The reopen has ended the old transport's reads (a new epoch); the
        // new entry goes in under the same lock, so that transport's own end
        // finds another incarnation and ends nothing.
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let session = Session::new(
            sid,
            transport,
            handshake.address,
            // Still counted against the address it was admitted for.
            old.client,
            old.mailbox.clone(),
            old.start,
            incarnation,
        );
        if let Some(ext) = old.ext.get() {
            let _ = session.ext.set(ext.clone());
        }
        let session = Arc::new(session);
        sessions.insert(sid, session.clone());
        drop(sessions);
        self.graced.lock().take(&sid);
        if let Some(at) = old.expires_at.lock().take() {
            self.expirations.lock().remove(&(at, sid));
        }
        old.parked.lock().take();
        if old.transport != transport {
            self.by_transport(old.transport)
                .fetch_sub(1, Ordering::SeqCst);
            self.by_transport(transport).fetch_add(1, Ordering::SeqCst);
        }
        let delivery =
            self.fanout
                .subscribe_at(sid, session.mailbox.clone(), Some(cursor.broadcast));
        tracing::debug!(
            target: "ssio::session",
            sid = %tag(sid),
            transport = transport.as_str(),
            was_graced = graced,
            "session continued"
        );
        Ok(Some(Connected {
            session,
            delivery,
            recovered: Some(true),
        }))
    }

    /// The rest of a connect once the backend has counted it: subscribe the
    /// cursor, then the connection lifecycle, under the ordering lock.
    fn finish_connect(
        &self,
        session: Arc<Session>,
        handshake: &Arc<Handshake>,
        from: Option<u64>,
        recovered: Option<bool>,
        carried: bool,
    ) -> Connected {
        self.metrics.connected(session.transport);
        self.count_started();
        let _order = self.order.lock();
        let delivery = self
            .fanout
            .subscribe_at(session.sid, session.mailbox.clone(), from);
        if let Some(lifecycle) = self.lifecycle.upgrade() {
            lifecycle.connected(&session, handshake, carried);
        }
        Connected {
            session,
            delivery,
            recovered,
        }
    }

    /// How many handed-out mailbox events a session keeps for a resume.
    fn retain(&self) -> usize {
        if !self.config.resumable() {
            0
        } else {
            self.config.max_pending_events
        }
    }

    /// Removes `sid`'s entry if it is incarnation `incarnation`.
    fn remove_if(&self, sid: Sid, incarnation: u64) -> Option<Arc<Session>> {
        let mut sessions = self.sessions.lock();
        match sessions.get(&sid) {
            Some(s) if s.incarnation == incarnation => sessions.remove(&sid),
            _ => None,
        }
    }

    /// Ends an entry that is neither live nor away any more: its mailbox
    /// drops what it holds and it leaves every room. It was uncounted, and
    /// its disconnect handlers ran, when it left the live table.
    fn end_for_good(&self, session: &Session) {
        session
            .mailbox
            .close(DisconnectReason::TransportClose, false);
        self.fanout.leave_all(session.sid);
    }

    /// Ends an away session for good and drops the backend's record that
    /// this node holds it, so no other node forwards a resume here for it.
    fn forget(self: &Arc<Self>, session: &Session) {
        self.end_for_good(session);
        // What an away session held (its mailbox, its socket state) is freed
        // now, not when it went away: worth a trim as much as an end.
        self.count_ended();
        if let Err(pending) = ready_now(self.backend.unclaim(*session.sid.as_uuid())) {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                // Tracked, so that closing the backend waits for it.
                self.finishing.spawn_on(
                    async move {
                        if let Err(e) = pending.await {
                            tracing::debug!(error = %e, "backend kept an away session's record");
                        }
                    },
                    &rt,
                );
            }
        }
    }

    /// Whether this node holds `sid`, live or away: a resume for any other
    /// sid may belong to another node.
    pub(crate) fn holds(&self, sid: &Sid) -> bool {
        self.sessions.lock().contains_key(sid) || self.away.lock().contains(sid)
    }

    /// Sessions waiting in the away table.
    pub(crate) fn away_count(&self) -> usize {
        self.away.lock().len()
    }

    /// Whether a session ending for `reason` goes away rather than ending.
    fn recoverable(&self, reason: DisconnectReason) -> bool {
        self.config.recovery_window_ms > 0
            && !self.is_shutting_down()
            && matches!(
                reason,
                DisconnectReason::TransportClose | DisconnectReason::PingTimeout
            )
    }

    /// A stream of `sid`'s incarnation `incarnation` dropped without a
    /// close: the session stays live and counted for `--reconnect-grace`,
    /// its events kept, for its client to come back; then the reaper ends
    /// it with `transport close`. Without a grace it ends now.
    pub(crate) fn dropped(self: &Arc<Self>, sid: Sid, incarnation: u64) {
        let grace = self.config.reconnect_grace();
        if grace.is_zero() || self.is_shutting_down() {
            self.disconnect_incarnation(sid, incarnation, DisconnectReason::TransportClose);
            return;
        }
        let live = self
            .sessions
            .lock()
            .get(&sid)
            .is_some_and(|s| s.incarnation == incarnation && s.closed_reason().is_none());
        // A stale entry (the session continued or ended meanwhile) only
        // ever ends its own incarnation, which is gone: harmless.
        if live
            && self
                .graced
                .lock()
                .insert(sid, incarnation, Instant::now() + grace)
        {
            self.reaper.notify_one();
        }
    }

    /// Sessions within their reconnect grace.
    pub(crate) fn graced_count(&self) -> usize {
        self.graced.lock().len()
    }

    /// Ends a session: removes it, uncounts it, wakes its transport with the
    /// reason, and runs the disconnect lifecycle. Returns false if it had
    /// already ended, so every caller may call it without checking.
    pub(crate) fn disconnect(self: &Arc<Self>, sid: Sid, reason: DisconnectReason) -> bool {
        let Some(session) = self.sessions.lock().remove(&sid) else {
            return false;
        };
        self.ended(session, reason);
        true
    }

    /// [`Hub::disconnect`], but only if `sid`'s live entry is still
    /// incarnation `incarnation`: a transport ending after its session was
    /// resumed elsewhere must not end the resumed one.
    pub(crate) fn disconnect_incarnation(
        self: &Arc<Self>,
        sid: Sid,
        incarnation: u64,
        reason: DisconnectReason,
    ) -> bool {
        let Some(session) = self.remove_if(sid, incarnation) else {
            return false;
        };
        self.ended(session, reason);
        true
    }

    fn ended(self: &Arc<Self>, session: Arc<Session>, reason: DisconnectReason) {
        let sid = session.sid;
        self.by_transport(session.transport)
            .fetch_sub(1, Ordering::SeqCst);
        self.metrics.disconnected(session.transport, reason);
        self.addresses
            .lock()
            .release(session.client, Instant::now());
        // One line per session end, at info so that operators see it by
        // default; `RUST_LOG=info,ssio::session=warn` silences it.
        tracing::info!(
            target: "ssio::session",
            sid = %tag(sid),
            %reason,
            transport = session.transport.as_str(),
            remote = %session.remote,
            duration_ms = session.started.elapsed().as_millis() as u64,
            "session ended"
        );
        self.graced.lock().take(&sid);
        let away = self.recoverable(reason) && session.polled.load(Ordering::Relaxed);
        session.mailbox.close(reason, away);
        if let Some(at) = session.expires_at.lock().take() {
            self.expirations.lock().remove(&(at, sid));
        }
        // Release a parked cursor now rather than when the last Arc goes.
        session.parked.lock().take();
        let rooms = self.fanout.rooms_of(sid);
        if away {
            let at = Instant::now() + self.config.recovery_window();
            let inserted = self
                .away
                .lock()
                .insert(sid, session.client, session.clone(), at);
            let (earliest, evicted) = inserted;
            if earliest {
                self.reaper.notify_one();
            }
            for (old, gone) in evicted {
                tracing::debug!(target: "ssio::session", sid = %tag(old), "away session ended to make room");
                self.forget(&gone);
            }
        } else {
            self.fanout.leave_all(sid);
        }
        // As for joins: a leave the backend answers at once runs with its
        // lifecycle under one hold of the ordering lock.
        let order = self.order.lock();
        let uncounted = if away {
            self.backend.away(sid)
        } else {
            self.backend.leave(sid)
        };
        match ready_now(uncounted) {
            Ok(left) => self.finish_disconnect(&session, reason, left, rooms),
            Err(pending) => {
                drop(order);
                self.finish_later(session, reason, pending, rooms)
            }
        }
        self.count_ended();
    }

    /// Notes a session begun: the first since the last trim asks for one.
    fn count_started(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_start_ms.store(ms, Ordering::Relaxed);
        if self.started_since_trim.fetch_add(1, Ordering::Relaxed) == 0 {
            self.trim_at(Instant::now() + RETRIM_AFTER);
            self.reaper.notify_one();
        }
    }

    /// Hands free pages back now, and notes when.
    fn trim_now(&self, now: Instant) {
        self.started_since_trim.store(0, Ordering::Relaxed);
        *self.trimmed_at.lock() = Some(now);
        crate::ops::memory::release_free_memory();
    }

    /// Asks the reaper for a trim at `at`, or earlier if one is due earlier.
    fn trim_at(&self, at: Instant) {
        let mut due = self.retrim_at.lock();
        *due = Some(due.map_or(at, |d| d.min(at)));
    }

    /// Counts one more session gone (ended, or away and then forgotten)
    /// towards the next trim.
    fn count_ended(&self) {
        if self.ended_since_trim.fetch_add(1, Ordering::Relaxed) + 1 == TRIM_AFTER_ENDED {
            self.reaper.notify_one();
        }
    }

    fn finish_later(
        self: &Arc<Self>,
        session: Arc<Session>,
        reason: DisconnectReason,
        pending: BackendFuture<()>,
        rooms: Vec<Arc<str>>,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.clone();
        self.finishing.spawn_on(
            async move {
                let left = pending.await;
                hub.finish_disconnect(&session, reason, left, rooms);
            },
            &rt,
        );
    }

    /// Waits until every disconnect that was waiting on the backend has run
    /// its lifecycle.
    pub(crate) async fn settle(&self) {
        self.finishing.close();
        self.finishing.wait().await;
        self.finishing.reopen();
    }

    fn finish_disconnect(
        &self,
        session: &Arc<Session>,
        reason: DisconnectReason,
        left: Result<(), crate::error::BackendError>,
        rooms: Vec<Arc<str>>,
    ) {
        if let Err(e) = left {
            tracing::warn!(error = %e, "backend refused a leave");
        }
        let _order = self.order.lock();
        if let Some(lifecycle) = self.lifecycle.upgrade() {
            lifecycle.disconnected(session, reason, rooms);
        }
    }

    /// Hands free heap memory back to the kernel if many sessions ended since
    /// the last time. The session table first gives up the capacity a flood
    /// left behind: a map never shrinks by itself, and 100,000 empty slots
    /// are megabytes.
    fn maybe_trim(&self) {
        let now = Instant::now();
        let due = self.retrim_at.lock().take_if(|at| *at <= now).is_some();
        if due {
            let earliest = if self.started_since_trim.load(Ordering::Relaxed) > 0 {
                // Not while sessions still arrive (that would leave the
                // rest's holes), and not too often.
                let last_start =
                    self.born + Duration::from_millis(self.last_start_ms.load(Ordering::Relaxed));
                let spaced = self.trimmed_at.lock().map_or(now, |t| t + TRIM_SPACING);
                (last_start + RETRIM_AFTER).max(spaced)
            } else {
                now
            };
            if now < earliest {
                self.trim_at(earliest);
            } else {
                self.trim_now(now);
            }
        }
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
            self.away.lock().shrink();
            self.trim_now(now);
            if emptied {
                // What the last sessions' connections and tasks free after
                // this moment (they end on other threads, a little later)
                // is handed back by one more trim.
                *self.retrim_at.lock() = Some(now + RETRIM_AFTER);
            }
        }
    }

    /// When the reaper must come back for a second trim, if one is due.
    fn retrim_deadline(&self) -> Option<Instant> {
        *self.retrim_at.lock()
    }

    /// This node's fan-out: its log position and room table.
    pub(crate) fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    pub(crate) fn get(&self, sid: &Sid) -> Option<Arc<Session>> {
        self.sessions.lock().get(sid).cloned()
    }

    /// Every session still open here but `except`: who an event for
    /// everyone reaches.
    pub(crate) fn sids_except(&self, except: Option<Sid>) -> Vec<Sid> {
        let sessions = self.sessions.lock();
        let open = sessions.values().filter(|s| s.closed_reason().is_none());
        open.map(|s| s.sid)
            .filter(|sid| Some(*sid) != except)
            .collect()
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

    /// Takes a polling session's cursor for one poll; the session must then
    /// poll again within pingTimeout of [`Hub::park`].
    pub(crate) fn take_cursor(&self, session: &Session) -> Result<Box<Delivery>, TakeError> {
        let Some(delivery) = session.parked.lock().take() else {
            return Err(if session.closed_reason().is_some() {
                TakeError::Closed
            } else {
                TakeError::Pending
            });
        };
        if let Some(at) = session.expires_at.lock().take() {
            self.expirations.lock().remove(&(at, session.sid));
        }
        session.polled.store(true, Ordering::Relaxed);
        session.unproven.store(false, Ordering::Relaxed);
        Ok(delivery)
    }

    /// Whether `session` may send one more client event under
    /// `--max-emit-rate`; takes the token if so.
    pub(crate) fn allow_emit(&self, session: &Session) -> bool {
        match &self.emit_rate {
            Some(rate) => session.emits.lock().take(rate, Instant::now()),
            None => true,
        }
    }

    /// Parks a polling session's cursor until its next poll and arms its
    /// expiry, unless the session has ended. The check and the store happen
    /// under the slot's lock, and `disconnect` closes the mailbox before it
    /// empties the slot, so a cursor is never parked in an ended session.
    pub(crate) fn park(&self, session: &Session, delivery: impl Into<Box<Delivery>>) {
        self.park_within(session, delivery, self.config.ping_timeout());
    }

    /// [`Hub::park`] with `now` read by the caller: the sweeper parks the
    /// cursors of every held poll it answers with one reading of the clock.
    pub(crate) fn park_from(&self, session: &Session, delivery: Box<Delivery>, now: Instant) {
        self.park_until(session, delivery, now + self.config.ping_timeout());
    }

    /// [`Hub::park`] with its own expiry: a new session must start its first
    /// poll within `--first-poll-timeout`, so handshakes nobody polls (a
    /// flood) give their slots back within seconds, not a pingTimeout. The
    /// same deadline set and reaper serve both.
    pub(crate) fn park_within(
        &self,
        session: &Session,
        delivery: impl Into<Box<Delivery>>,
        within: Duration,
    ) {
        self.park_until(session, delivery.into(), Instant::now() + within);
    }

    /// Parks the cursor in its box (kept from poll to poll, so that a poll
    /// allocates nothing for it) and arms the expiry for `at`.
    fn park_until(&self, session: &Session, delivery: Box<Delivery>, at: Instant) {
        let mut slot = session.parked.lock();
        if session.closed_reason().is_some() {
            return;
        }
        *slot = Some(delivery);
        drop(slot);
        self.arm_at(session, at);
    }

    /// A request from a session that is not a poll (an emit): a polling
    /// session that had not yet shown a sign of life gets the ordinary
    /// pingTimeout from now instead of its first-poll deadline.
    pub(crate) fn alive(&self, session: &Session) {
        if session.unproven.swap(false, Ordering::Relaxed) {
            let parked = session.parked.lock();
            if parked.is_some() && session.closed_reason().is_none() {
                self.arm(session, self.config.ping_timeout());
            }
        }
    }

    /// Sets a parked session's expiry to `within` from now.
    fn arm(&self, session: &Session, within: Duration) {
        self.arm_at(session, Instant::now() + within);
    }

    /// Sets a parked session's expiry to `at`.
    fn arm_at(&self, session: &Session, at: Instant) {
        let mut expires = session.expires_at.lock();
        let mut set = self.expirations.lock();
        if let Some(old) = expires.take() {
            set.remove(&(old, session.sid));
        }
        let earliest = set.first().map(|(t, _)| *t);
        set.insert((at, session.sid));
        *expires = Some(at);
        drop(set);
        drop(expires);
        if earliest.is_none_or(|e| at < e) {
            self.reaper.notify_one();
        }
    }

    /// Disconnects every expired session, ends every away session whose
    /// window has passed and drops log events older than the window;
    /// returns the next deadline.
    fn purge(self: &Arc<Self>) -> Option<Instant> {
        let now = Instant::now();
        let polls = self.purge_polls(now);
        loop {
            let Some((sid, incarnation)) = self.graced.lock().pop_expired(now) else {
                break;
            };
            self.disconnect_incarnation(sid, incarnation, DisconnectReason::TransportClose);
        }
        let graced = self.graced.lock().next_deadline();
        loop {
            let Some((_, gone)) = self.away.lock().pop_expired(now) else {
                break;
            };
            self.forget(&gone);
        }
        let away = self.away.lock().next_deadline();
        let aged = if self.config.recovery_window_ms > 0 {
            self.fanout.trim_aged()
        } else {
            None
        };
        [away, aged, polls, graced].into_iter().flatten().min()
    }

    /// Disconnects every expired polling session; returns the next deadline.
    fn purge_polls(self: &Arc<Self>, now: Instant) -> Option<Instant> {
        loop {
            let (at, sid) = {
                let mut set = self.expirations.lock();
                match set.first().copied() {
                    Some((at, sid)) if at <= now => {
                        set.remove(&(at, sid));
                        (at, sid)
                    }
                    Some((at, _)) => return Some(at),
                    None => return None,
                }
            };
            // Only the entry that armed this deadline: a session continued
            // on a new incarnation has its own, and an old poll's late park
            // may have left one behind for the sid.
            let Some(s) = self.get(&sid).filter(|s| *s.expires_at.lock() == Some(at)) else {
                continue;
            };
            s.expires_at.lock().take();
            self.disconnect_incarnation(sid, s.incarnation, DisconnectReason::PingTimeout);
        }
    }

    /// Refuses new sessions and ends every live one with `ServerShutdown`.
    pub(crate) fn shutdown(self: &Arc<Self>) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.stopping.cancel();
        // A stream that had already dropped ended because of its transport;
        // only its grace kept it live. It ends with the reason it had.
        let graced = self.graced.lock().drain();
        for (sid, incarnation) in graced {
            self.disconnect_incarnation(sid, incarnation, DisconnectReason::TransportClose);
        }
        let all: Vec<Arc<Session>> = self.sessions.lock().values().cloned().collect();
        // Every session is marked ended before any disconnect handler runs,
        // so the counts those handlers broadcast on the way down reach no
        // one: each client's last event is its `disconnect`. A transport
        // that sees its close ends its session itself, on another thread;
        // holding the ordering lock keeps its handlers waiting until every
        // mailbox is closed.
        {
            let _order = self.order.lock();
            for s in &all {
                s.mailbox.close(DisconnectReason::ServerShutdown, false);
            }
        }
        for s in all {
            self.disconnect(s.sid, DisconnectReason::ServerShutdown);
        }
        let away = self.away.lock().drain();
        for (_, session) in away {
            self.forget(&session);
        }
        self.reaper.notify_one();
    }

    /// Cancelled when shutdown starts.
    pub(crate) fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stopping.clone()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// The first 8 hex digits of a sid: enough to follow one session through
/// the logs, never the credential itself.
pub(crate) fn tag(sid: Sid) -> String {
    let mut s = sid.as_uuid().simple().to_string();
    s.truncate(8);
    s
}

async fn reap(hub: Weak<Hub>, notify: Arc<Notify>) {
    loop {
        let next = match hub.upgrade() {
            Some(hub) if !hub.is_shutting_down() => {
                let next = hub.purge();
                // After a mass disconnect, give the freed pages back.
                hub.maybe_trim();
                [next, hub.retrim_deadline()].into_iter().flatten().min()
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

#[cfg(test)]
mod tests {
    //! The reaper's purge, on tokio's paused clock.

    use std::time::Duration;

    use super::*;
    use crate::engine::backend::LocalBackend;

    /// Records every lifecycle call, in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(Sid, Option<DisconnectReason>)>>);

    impl Lifecycle for Recorder {
        fn connected(self: Arc<Self>, session: &Arc<Session>, _: &Arc<Handshake>, _: bool) {
            self.0.lock().push((session.sid, None));
        }
        fn person(&self, _: &Handshake) -> Option<Arc<str>> {
            None
        }
        fn disconnected(
            self: Arc<Self>,
            session: &Arc<Session>,
            reason: DisconnectReason,
            _: Vec<Arc<str>>,
        ) {
            self.0.lock().push((session.sid, Some(reason)));
        }
    }

    fn hs() -> Arc<Handshake> {
        Arc::new(Handshake::unknown_address(Default::default(), None))
    }

    fn hub(recorder: &Arc<Recorder>) -> Arc<Hub> {
        let config = Config {
            ping_timeout_ms: 1_000,
            recovery_window_ms: 0,
            ..Config::default()
        };
        let fanout = Fanout::new(16);
        let backend = Arc::new(LocalBackend::new(fanout.clone()));
        let weak: Weak<Recorder> = Arc::downgrade(recorder);
        Arc::new(Hub::new(config, fanout, backend, weak))
    }

    #[tokio::test(start_paused = true)]
    async fn purge_ends_only_expired_parked_sessions_and_returns_the_next_deadline() {
        let recorder = Arc::new(Recorder::default());
        let hub = hub(&recorder);
        let (a, da) = hub
            .connect(Transport::Polling, &hs(), None)
            .await
            .map(|c| (c.session, c.delivery))
            .unwrap();
        hub.park(&a, da);
        tokio::time::advance(Duration::from_millis(600)).await;
        let (b, db) = hub
            .connect(Transport::Polling, &hs(), None)
            .await
            .map(|c| (c.session, c.delivery))
            .unwrap();
        hub.park(&b, db);
        // An SSE session has no expiry at all.
        let (c, _dc) = hub
            .connect(Transport::Sse, &hs(), None)
            .await
            .map(|c| (c.session, c.delivery))
            .unwrap();
        assert_eq!(hub.backend.count(), 3);

        tokio::time::advance(Duration::from_millis(500)).await;
        let next = hub.purge();
        assert_eq!(a.closed_reason(), Some(DisconnectReason::PingTimeout));
        assert_eq!(b.closed_reason(), None);
        assert_eq!(next, Some(Instant::now() + Duration::from_millis(500)));
        assert_eq!(hub.session_count(), 2);
        assert_eq!(hub.backend.count(), 2);

        // A poll that takes the cursor disarms the expiry.
        let Ok(db) = hub.take_cursor(&b) else {
            panic!("b's cursor was parked");
        };
        assert_eq!(hub.take_cursor(&b).err(), Some(TakeError::Pending));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(hub.purge(), None);
        assert_eq!(b.closed_reason(), None);
        drop(db);

        let calls = recorder.0.lock().clone();
        assert_eq!(
            calls,
            vec![
                (a.sid, None),
                (b.sid, None),
                (c.sid, None),
                (a.sid, Some(DisconnectReason::PingTimeout)),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_beginning_are_trimmed_after_once_they_pause_and_not_too_often() {
        let recorder = Arc::new(Recorder::default());
        let hub = hub(&recorder);
        let started = || hub.started_since_trim.load(Ordering::Relaxed);
        let ms = Duration::from_millis;
        let mut kept = Vec::new();
        assert_eq!(hub.retrim_deadline(), None);
        let t0 = Instant::now();
        kept.push(hub.connect(Transport::Sse, &hs(), None).await.unwrap());
        assert_eq!(hub.retrim_deadline(), Some(t0 + RETRIM_AFTER));

        // Still arriving when the trim falls due: it waits for a pause.
        tokio::time::advance(ms(400)).await;
        kept.push(hub.connect(Transport::Sse, &hs(), None).await.unwrap());
        assert_eq!(hub.retrim_deadline(), Some(t0 + RETRIM_AFTER));
        tokio::time::advance(ms(100)).await;
        hub.maybe_trim();
        assert_eq!(hub.retrim_deadline(), Some(t0 + ms(400) + RETRIM_AFTER));
        assert_eq!(started(), 2);

        // Quiet since: the trim is done, and the next arrival asks afresh.
        tokio::time::advance(ms(400)).await;
        hub.maybe_trim();
        let trimmed = t0 + ms(900);
        assert_eq!(hub.retrim_deadline(), None);
        assert_eq!(started(), 0);

        // But not before the spacing has passed since that trim.
        kept.push(hub.connect(Transport::Sse, &hs(), None).await.unwrap());
        tokio::time::advance(RETRIM_AFTER).await;
        hub.maybe_trim();
        assert_eq!(hub.retrim_deadline(), Some(trimmed + TRIM_SPACING));
        assert_eq!(started(), 1);
        tokio::time::advance(trimmed + TRIM_SPACING - Instant::now()).await;
        hub.maybe_trim();
        assert_eq!(hub.retrim_deadline(), None);
        assert_eq!(started(), 0);
        assert_eq!(hub.session_count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_stream_stays_counted_until_its_grace_ends_then_ends_with_transport_close() {
        let recorder = Arc::new(Recorder::default());
        let config = Config {
            reconnect_grace_ms: 500,
            recovery_window_ms: 0,
            ..Config::default()
        };
        let fanout = Fanout::new(16);
        let backend = Arc::new(LocalBackend::new(fanout.clone()));
        let weak: Weak<Recorder> = Arc::downgrade(&recorder);
        let hub = Arc::new(Hub::new(config, fanout, backend, weak));
        let a = hub.connect(Transport::Sse, &hs(), None).await.unwrap();
        let sid = a.session.sid;
        let started = Instant::now();
        hub.dropped(sid, a.session.incarnation);
        // A second drop report of the same stream changes nothing.
        hub.dropped(sid, a.session.incarnation);
        assert_eq!((hub.graced_count(), hub.backend.count()), (1, 1));
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(hub.purge(), Some(started + Duration::from_millis(500)));
        assert_eq!(hub.backend.count(), 1);
        assert_eq!(a.session.closed_reason(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(hub.purge(), None);
        assert_eq!((hub.graced_count(), hub.backend.count()), (0, 0));
        assert_eq!(
            a.session.closed_reason(),
            Some(DisconnectReason::TransportClose)
        );
        // A drop reported for an incarnation that is not live is ignored.
        hub.dropped(sid, a.session.incarnation);
        assert_eq!(hub.graced_count(), 0);
        assert_eq!(
            recorder.0.lock().clone(),
            vec![(sid, None), (sid, Some(DisconnectReason::TransportClose))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cursor_is_never_parked_in_an_ended_session() {
        let recorder = Arc::new(Recorder::default());
        let hub = hub(&recorder);
        let (a, da) = hub
            .connect(Transport::Polling, &hs(), None)
            .await
            .map(|c| (c.session, c.delivery))
            .unwrap();
        assert!(hub.disconnect(a.sid, DisconnectReason::ClientClose));
        assert!(!hub.disconnect(a.sid, DisconnectReason::ClientClose));
        hub.park(&a, da);
        assert_eq!(hub.take_cursor(&a).err(), Some(TakeError::Closed));
        assert_eq!(hub.purge(), None);
    }
}
