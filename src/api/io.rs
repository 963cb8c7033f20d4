//! The server handle of the socket.io-style API: [`Io`] registers handlers,
//! broadcasts, reads the count and serves HTTP.
//!
//! This layer is the only one that knows event names. It implements the
//! hub's [`Lifecycle`]: the hub says "this session started" or "ended", and
//! this layer runs `io.on_connection` handlers or a socket's `"disconnect"`
//! handlers. Each session's handlers live here, keyed by sid, and are
//! dropped when it ends, so closures that capture an `Io` never keep the
//! server alive.
//!
//! Beyond `on`/`emit`, the names are socket.io's: rooms (`join`, `leave`,
//! `io.to(room)`, `socket.to(room)`, `socket.broadcast()`, `io.in_(room)`),
//! acknowledgements (`on_ack`), connection middleware (`io.use_`), per-socket
//! `data` and `handshake`, and `recovered` after a resume. A socket's state
//! (handlers, data, handshake) lives in the hub entry's `ext` slot and moves
//! with the sid when a session is resumed; its rooms live in the fan-out.
//!
//! ```no_run
//! # async fn demo() {
//! let io = ssio::Io::new(ssio::Config::default());
//! io.latest_value("user count");
//! io.on_connection(|socket| {
//!     let io = socket.io();
//!     io.emit("user count", io.count());
//!     socket.on("disconnect", |socket, _reason| {
//!         let io = socket.io();
//!         io.emit("user count", io.count());
//!     });
//! });
//! # }
//! ```

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::api::ack::Ack;
use crate::api::jwt::{Grant, Verifier};
use crate::api::middleware::Rejection;
use crate::api::socket::TokenState;
use crate::api::tickets::Tickets;
use crate::config::Config;
use crate::engine::backend::{ready_now, Backend, Broadcast, LocalBackend};
use crate::engine::fanout::{Delivery, Fanout};
use crate::engine::hub::{Connected, Hub, Lifecycle, Session};
use crate::engine::packet::Packet;
use crate::engine::recovery::Cursor;
use crate::engine::rooms::Target;
use crate::error::{BackendError, Error};
use crate::session::{DisconnectReason, Handshake, Transport};

use crate::api::operator::Operator;
use crate::api::presence::{self, Member, People, Presence, Tracked, Verdict};
use crate::api::replies::{AckError, AckReplies, Replies};
use crate::api::socket::{state_of, Listener, Socket, SocketState};

/// A `socket.on` callback: the socket and the event's data (for
/// `"disconnect"`, the reason as a JSON string).
pub type Handler = Arc<dyn Fn(&Socket, &Value) + Send + Sync>;

/// An `io.on_connection` callback.
pub type ConnectionHandler = Arc<dyn Fn(&Socket) + Send + Sync>;

/// A `socket.on_ack` callback: the socket, the event's data and the slot
/// for its answer.
pub type AckHandler = Arc<dyn Fn(&Socket, &Value, Ack) + Send + Sync>;

/// A `socket.on_any` callback: the socket, the event's name and its data.
pub type AnyHandler = Arc<dyn Fn(&Socket, &str, &Value) + Send + Sync>;

/// An `io.use_` callback: accepts or refuses a handshake.
pub type Middleware = Arc<dyn Fn(&Handshake) -> Result<(), Rejection> + Send + Sync>;

/// The server side: register handlers, broadcast, read the count, and serve
/// HTTP. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Io {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// Sessions, count and ordering.
    pub(super) hub: Arc<Hub>,
    /// `io.on_connection` handlers.
    pub(super) on_connection: RwLock<Vec<ConnectionHandler>>,
    /// Event names whose broadcasts are latest-value (conflated).
    pub(super) latest_names: RwLock<Vec<Box<str>>>,
    /// `io.use_` middleware, run in order before a session is made.
    pub(super) middleware: RwLock<Vec<Middleware>>,
    /// Handshake tickets from `POST /handshake`.
    pub(super) tickets: Arc<Tickets>,
    /// State that a layer above keeps per server (the shared streams'
    /// table), one value per type, created on first use. Kept here so that
    /// those layers need no global and this one need not know them.
    pub(super) extensions: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
    /// The `--jwt-*` keys: with them, every session needs a token.
    pub(super) jwt: Option<Verifier>,
    /// The server's own acknowledged emits, waiting for answers.
    pub(super) replies: Replies,
    /// The people the counted sessions belong to.
    pub(super) people: Mutex<People>,
    /// The rooms whose members get join and leave events.
    pub(super) tracked: Tracked,
}

/// The resume cursor a session-starting request presents, in
/// `Last-Event-ID` or `resume=`: none, a cursor, or a refusal when it is
/// malformed.
pub(crate) fn resume_cursor(
    headers: &hyper::HeaderMap,
    query: Option<&str>,
) -> Result<Option<Cursor>, Error> {
    let text = match headers.get("last-event-id") {
        Some(v) => Cow::Borrowed(v.to_str().unwrap_or("\n")),
        None => match crate::session::query_value(query, "resume") {
            Some(text) => text,
            None => return Ok(None),
        },
    };
    if text.is_empty() {
        return Ok(None);
    }
    Cursor::parse(&text).map(Some).ok_or(Error::BadCursor)
}

/// Panics if a server-side event name has a CR or LF: one would end the
/// SSE `event:` field early and let the rest be read as another field.
pub(super) fn check_name(event: &str) {
    assert!(
        !event.contains(['\n', '\r']),
        "event name contains a newline"
    );
}

/// Runs `f`, turning a panic into [`Error::HandlerFailed`]: one bad handler
/// answers its own request with a 500 and harms nobody else.
pub(super) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    // The panic itself is logged once, by the panic hook
    // (`logging::log_panics`), with its message and location.
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| Error::HandlerFailed)
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("sessions", &self.inner.hub.session_count())
            .finish()
    }
}

/// Session counts by transport, as served at `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Live sessions in this process's table.
    pub sessions: usize,
    /// Of those, streaming over SSE.
    pub sse: usize,
    /// Of those, long-polling.
    pub polling: usize,
    /// The backend's count (equal to `sessions` on a single node).
    pub count: usize,
    /// Sessions whose transport dropped, waiting out the recovery window
    /// (not counted).
    pub away: usize,
    /// Live sessions whose stream dropped without a close, still counted
    /// while their client has `--reconnect-grace` to come back.
    pub graced: usize,
    /// Handshake tickets issued and neither redeemed nor expired (not
    /// counted as sessions).
    pub tickets: usize,
}

impl Io {
    /// Counts and logs a refused request: method and path, never the
    /// query, which carries sids.
    pub(crate) fn refused(&self, method: &str, path: &str, e: &Error) {
        let status = e.status();
        self.hub().metrics.rejected(status.as_u16());
        if status.is_server_error() {
            tracing::warn!(target: "ssio::request", method, path, status = status.as_u16(), error = %e, "request refused");
        } else {
            tracing::info!(target: "ssio::request", method, path, status = status.as_u16(), error = %e, "request refused");
        }
    }

    /// A single-node server with the given limits.
    ///
    /// Must be called inside a tokio runtime: it starts the task that reaps
    /// polling sessions whose client stopped polling.
    pub fn new(config: Config) -> Io {
        Io::with_backend(config, LocalBackend::new)
    }

    /// A server whose count and broadcasts go through the backend that
    /// `make` builds from this server's own [`Fanout`] (where the backend
    /// must deliver every broadcast, on every node). [`run`](crate::run)
    /// starts and closes it; embedders call [`Io::start`] and [`Io::close`].
    ///
    /// # Panics
    /// If a `--jwt-*` key in `config` cannot be used; [`Io::check_keys`]
    /// says so without panicking.
    pub fn with_backend<B, F>(config: Config, make: F) -> Io
    where
        B: Backend,
        F: FnOnce(Fanout) -> B,
    {
        let recovery = config.recovery_window_ms > 0;
        // One log serves live readers and resumes: it keeps the larger of
        // what each needs, in events and in bytes.
        let fanout = Fanout::with_recovery(
            config.max_pending_events,
            if recovery {
                config.recovery_max_events
            } else {
                0
            },
            if recovery {
                config.max_pending_bytes.max(config.recovery_max_bytes)
            } else {
                config.max_pending_bytes
            },
            recovery.then(|| config.recovery_window()),
        );
        let jwt = Verifier::from_config(&config).unwrap_or_else(|e| panic!("{e}"));
        let backend: Arc<dyn Backend> = Arc::new(make(fanout.clone()));
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let lifecycle: Weak<dyn Lifecycle> = weak.clone();
            Inner {
                hub: Arc::new(Hub::new(config, fanout, backend, lifecycle)),
                on_connection: RwLock::new(Vec::new()),
                latest_names: RwLock::new(Vec::new()),
                middleware: RwLock::new(Vec::new()),
                tickets: Arc::new(Tickets::new()),
                extensions: Mutex::new(Vec::new()),
                jwt,
                replies: Replies::default(),
                people: Mutex::new(People::default()),
                tracked: Tracked::default(),
            }
        });
        inner.hub.spawn_reaper();
        inner.tickets.spawn_sweeper(&inner.hub);
        Io { inner }
    }

    /// Starts the backend (connections, subscriptions). The local backend
    /// needs nothing; a shared one may fail here.
    pub async fn start(&self) -> Result<(), BackendError> {
        self.inner.hub.backend.start().await
    }

    /// Closes the backend, after [`Io::shutdown`] has ended every session.
    pub async fn close(&self) -> Result<(), BackendError> {
        self.inner.hub.settle().await;
        self.inner.hub.backend.close().await
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.hub
    }

    /// The configuration this server enforces.
    pub fn config(&self) -> &Config {
        &self.inner.hub.config
    }

    /// Registers a callback run for every new session, before its transport
    /// sends anything, while no other session can connect or disconnect.
    pub fn on_connection<F>(&self, f: F)
    where
        F: Fn(&Socket) + Send + Sync + 'static,
    {
        self.inner.on_connection.write().push(Arc::new(f));
    }

    /// Declares `event` a latest-value event: a client that is behind gets
    /// only its newest value instead of every stale one. Use it for state
    /// (counts, positions), not for messages.
    pub fn latest_value(&self, event: &str) {
        let mut names = self.inner.latest_names.write();
        if !names.iter().any(|n| &**n == event) {
            names.push(Box::from(event));
        }
    }

    fn is_latest(&self, name: &str) -> bool {
        self.inner.latest_names.read().iter().any(|n| &**n == name)
    }

    /// Sends `event` with `data` to every session.
    ///
    /// # Panics
    /// If `event` contains a CR or LF, which would corrupt the SSE framing;
    /// server code names its events with literals, so this is a bug.
    pub fn emit(&self, event: &str, data: impl Into<Value>) {
        self.broadcast(Target::all(), event, data.into());
    }

    /// Registers connection middleware (socket.io's `io.use`): it sees
    /// every handshake before a session exists and may refuse it. It runs
    /// again on a resume, so a revoked credential cannot come back.
    pub fn use_<F>(&self, f: F)
    where
        F: Fn(&Handshake) -> Result<(), Rejection> + Send + Sync + 'static,
    {
        self.inner.middleware.write().push(Arc::new(f));
    }

    /// Events sent through the returned operator go to the members of
    /// `room` (chain `.to(..)` for more rooms).
    pub fn to(&self, room: &str) -> Operator {
        Operator {
            io: self.clone(),
            target: Target {
                rooms: vec![Arc::from(room)],
                except: None,
            },
        }
    }

    /// The same as [`Io::to`]; reads better with [`Operator::count`].
    pub fn in_(&self, room: &str) -> Operator {
        self.to(room)
    }

    /// Sends `event` to every session on this node and waits for each
    /// one's answer, for `--ack-timeout` at most; see
    /// [`Operator::emit_with_ack`].
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: impl Into<Value>,
    ) -> Result<AckReplies, AckError> {
        let all = Operator {
            io: self.clone(),
            target: Target::all(),
        };
        all.emit_with_ack(event, data).await
    }

    /// Sends an event that asks for answers to `to`, the sessions the
    /// target names here, and collects them for `within` at most.
    pub(super) async fn ask(
        &self,
        target: &Target,
        to: Vec<crate::session::Sid>,
        event: &str,
        data: Value,
        within: std::time::Duration,
    ) -> Result<AckReplies, AckError> {
        check_name(event);
        let max = self.config().max_pending_acks;
        let entry = self.inner.replies.open(to, max)?;
        let packet = Packet::with_ack(event, &data, entry.id);
        // This node's sessions only, for now: another node's would get an
        // id their node knows nothing of.
        self.hub().fanout().publish_to(target, packet);
        Ok(entry.wait(within).await)
    }

    /// People connected: sessions of one user id (a JWT session's `sub`) or
    /// of one browser (the tabs it carries on one shared stream) count
    /// once. As exact as [`Io::count`], from the same state and changed at
    /// the same moments: this process's on a single node, the cluster's
    /// versioned count in Redis on a cluster. `None` with a backend of
    /// one's own that does not count people.
    pub fn users(&self) -> Option<usize> {
        let backend = &self.inner.hub.backend;
        if backend.status().is_none() {
            return Some(self.inner.people.lock().users());
        }
        backend.users()
    }

    /// Who is connected: to the whole server (`None`) or to `room`, with
    /// every member. See [`Io::presence_page`] for a large room.
    pub async fn presence(&self, room: Option<&str>) -> Presence {
        self.presence_page(room, None, usize::MAX).await
    }

    /// [`Io::presence`] a page at a time: at most `limit` members, sorted
    /// by sid, starting after `after`; `next` names where the next page
    /// starts. `clients` and `users` are always the totals. This node's
    /// sessions; with a cluster backend, the other nodes' are not listed.
    pub async fn presence_page(
        &self,
        room: Option<&str>,
        after: Option<crate::session::Sid>,
        limit: usize,
    ) -> Presence {
        self.presence_here(room, after, limit).presence
    }

    /// [`Io::presence_page`] on this node, with the people behind it.
    pub(crate) fn presence_here(
        &self,
        room: Option<&str>,
        after: Option<crate::session::Sid>,
        limit: usize,
    ) -> presence::Local {
        let hub = self.hub();
        let mut sids = match room {
            None => hub.sids_except(None),
            Some(room) => hub.fanout().room_sids(&[Arc::from(room)], None),
        };
        sids.sort();
        let node = self.config().cluster_node().map(String::from);
        // Counted sessions only: an away session keeps its rooms but is no
        // longer counted, nor is one whose connection handlers have not
        // run yet.
        let mut counted = Vec::with_capacity(sids.len());
        for sid in sids {
            let Some(session) = hub.get(&sid) else {
                continue;
            };
            if session.closed_reason().is_some() {
                continue;
            }
            if let Some(state) = state_of(&session) {
                counted.push((sid, state));
            }
        }
        let (solo, persons) = match room {
            // This node's own, whatever the backend: merged by the caller.
            None => self.inner.people.lock().parts(),
            Some(_) => {
                let (solo, keyed) =
                    presence::distinct(counted.iter().map(|(_, s)| presence::person_of(s)));
                (solo, keyed.iter().map(presence::Person::key).collect())
            }
        };
        let users = solo + persons.len();
        let start = match after {
            Some(after) => counted.partition_point(|(sid, _)| *sid <= after),
            None => 0,
        };
        let page = &counted[start..];
        let taken = &page[..page.len().min(limit)];
        let members = taken
            .iter()
            .map(|(sid, state)| Member {
                sid: *sid,
                public_id: crate::engine::hub::tag(*sid),
                user: state
                    .token
                    .lock()
                    .as_ref()
                    .and_then(|t| t.grant.user.as_deref().map(String::from)),
                node: node.clone(),
                joined_at: state.joined,
            })
            .collect::<Vec<_>>();
        let next = (taken.len() < page.len())
            .then(|| taken.last().map(|(sid, _)| *sid))
            .flatten();
        let presence = Presence {
            clients: counted.len(),
            users,
            members,
            next,
        };
        presence::Local {
            presence,
            solo,
            persons,
        }
    }

    /// Sends `presence join` and `presence leave` to the members of `room`
    /// whenever a session joins or leaves it, connects or disconnects while
    /// in it (a blip inside the reconnect grace is neither), with the
    /// member ([`Member::to_public_json`]: its public tag, user id and
    /// join time). At most `--max-presence-events` a second per room; past
    /// that they are dropped and one `presence sync` with the room's
    /// `{"clients","users"}` follows once the budget allows.
    pub fn track_presence(&self, room: &str) {
        let rate = self.config().max_presence_events;
        self.inner.tracked.track(room, rate);
    }

    /// Tells `room`'s other members that `socket` joined or left it
    /// (`event`), within the room's budget.
    pub(super) fn presence_event(&self, room: &str, socket: &Socket, event: &'static str) {
        let rate = self.config().max_presence_events;
        match self.inner.tracked.take(room, rate) {
            Verdict::Untracked | Verdict::Dropped(None) => {}
            Verdict::Send => {
                let member = Member {
                    sid: socket.id(),
                    public_id: socket.public_id(),
                    user: socket.user_id(),
                    node: self.config().cluster_node().map(String::from),
                    joined_at: socket.state.joined,
                };
                socket.to(room).emit(event, member.to_public_json());
            }
            Verdict::Dropped(Some(wait)) => {
                let io = self.clone();
                let room = room.to_string();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let now = io.presence_page(Some(&room), None, 0).await;
                    io.inner.tracked.synced(&room);
                    let counts = serde_json::json!({ "clients": now.clients, "users": now.users });
                    io.to(&room).emit("presence sync", counts);
                });
            }
        }
    }

    /// Takes `session`'s answer to an acknowledged emit (`POST /ack`).
    pub(crate) fn answer(&self, session: &Session, body: &[u8]) -> Result<(), Error> {
        let (id, data) = crate::api::replies::parse_answer(body)?;
        self.inner.replies.answer(session.sid, id, data)
    }

    /// Answers owed to the server's acknowledged emits, over all of them.
    pub(crate) fn acks_owed(&self) -> usize {
        self.inner.replies.owed()
    }

    pub(super) fn broadcast(&self, target: Target, event: &str, data: Value) {
        check_name(event);
        let broadcast = Broadcast {
            name: Arc::from(event),
            packet: Packet::new(event, &data),
            latest: target.is_all() && target.except.is_none() && self.is_latest(event),
            target,
        };
        match ready_now(self.inner.hub.backend.broadcast(broadcast)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, event, "broadcast failed"),
            Err(pending) => {
                tokio::spawn(async move {
                    if let Err(e) = pending.await {
                        tracing::warn!(error = %e, "broadcast failed");
                    }
                });
            }
        }
    }

    /// Connected sessions, as the backend counts them: this node's on a
    /// single node, the cluster's with a shared backend.
    pub fn count(&self) -> usize {
        self.inner.hub.backend.count()
    }

    /// Session counts for monitoring.
    pub fn stats(&self) -> Stats {
        let hub = &self.inner.hub;
        Stats {
            sessions: hub.session_count(),
            sse: hub.transport_count(Transport::Sse),
            polling: hub.transport_count(Transport::Polling),
            count: self.count(),
            away: hub.away_count(),
            graced: hub.graced_count(),
            tickets: self.ticket_count(),
        }
    }

    /// Ends every session with "server shutdown" and refuses new ones. Open
    /// streams send their `disconnect` event and finish, so a graceful HTTP
    /// shutdown can then complete.
    pub fn shutdown(&self) {
        self.inner.hub.shutdown();
    }

    /// Starts a session on `transport` for a session-starting request: the
    /// transports' one way in. With `ticket=`, the handshake is the one the
    /// ticket carries (its middleware already ran); otherwise the
    /// middleware runs now, and a refusal makes no session. A cursor in
    /// `Last-Event-ID` or `resume=` asks for a resume.
    pub(crate) async fn start_session(
        &self,
        transport: Transport,
        request: Handshake,
    ) -> Result<Connected, Error> {
        let query = request.query.clone();
        let query = query.as_deref();
        let resume = resume_cursor(&request.headers, query)?;
        let hub = &self.inner.hub;
        match crate::session::query_value(query, "ticket") {
            Some(ticket) => {
                let id = uuid::Uuid::try_parse(&ticket)
                    .ok()
                    .filter(|_| ticket.len() == 36)
                    .ok_or(Error::BadAuth("malformed ticket"))?;
                let redeemed = self
                    .inner
                    .tickets
                    .redeem(&id)
                    .ok_or(Error::BadAuth("unknown, used or expired ticket"))?;
                // The token may have expired since the ticket was issued.
                if let Err(e) = self.token_of(&redeemed.handshake) {
                    hub.release_ticket(redeemed.client);
                    return Err(e);
                }
                // Shared, not copied, with the socket state that keeps it.
                let handshake = Arc::new(redeemed.handshake);
                hub.connect_redeemed(transport, &handshake, resume, redeemed.client)
                    .await
            }
            None => {
                self.check(&request)?;
                hub.connect(transport, &Arc::new(request), resume).await
            }
        }
    }

    /// This server's one value of type `T`, created on first use.
    pub(crate) fn extension<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut all = self.inner.extensions.lock();
        if let Some(found) = all.iter().find_map(|e| e.clone().downcast::<T>().ok()) {
            return found;
        }
        let made = Arc::new(T::default());
        all.push(made.clone());
        made
    }

    /// Starts a session on `transport` for a request that carries no
    /// resume: the shared streams' way in. The middleware runs first.
    pub(crate) async fn connect(
        &self,
        transport: Transport,
        handshake: &Handshake,
    ) -> Result<(Arc<Session>, Delivery), Error> {
        self.check(handshake)?;
        let handshake = Arc::new(handshake.clone());
        let c = self.inner.hub.connect(transport, &handshake, None).await?;
        Ok((c.session, c.delivery))
    }

    /// Runs the middleware on `handshake`, after checking its token when
    /// sessions need one.
    pub(crate) fn check(&self, handshake: &Handshake) -> Result<(), Error> {
        self.token_of(handshake)?;
        let chain = self.inner.middleware.read().clone();
        for m in chain {
            guarded(|| m(handshake))?.map_err(|r| Error::Rejected {
                status: r.status,
                message: r.message,
                data: r.data.map(|d| d.to_string()),
            })?;
        }
        Ok(())
    }

    /// Runs the middleware and, if it accepts, issues a one-time ticket
    /// that carries `handshake` to the transport request. `auth` is the
    /// JSON text that `handshake.auth` was parsed from: the ticket keeps
    /// that, not the parsed value.
    ///
    /// The ticket is counted against its address before the middleware
    /// runs, so a refused flood costs no authentication work.
    pub(crate) fn issue_ticket(
        &self,
        handshake: &Handshake,
        auth: &[u8],
    ) -> Result<uuid::Uuid, Error> {
        let hub = &self.inner.hub;
        if hub.is_shutting_down() {
            return Err(Error::ShuttingDown);
        }
        let config = self.config();
        let tickets = &self.inner.tickets;
        if tickets.len() >= config.max_sessions {
            return Err(Error::Full);
        }
        let client = hub.admit_ticket(handshake)?;
        if let Err(e) = self.check(handshake) {
            hub.release_ticket(client);
            return Err(e);
        }
        tickets
            .issue(
                handshake,
                auth,
                client,
                config.ticket_ttl(),
                config.max_sessions,
            )
            .ok_or_else(|| {
                hub.release_ticket(client);
                Error::Full
            })
    }

    /// Whether the JWT keys `config` names (if any) can be used: the
    /// message says which cannot, and why.
    pub fn check_keys(config: &Config) -> Result<(), String> {
        Verifier::from_config(config).map(|_| ())
    }

    /// What the `token` in `handshake`'s `auth` grants; `None` without
    /// JWT sessions.
    pub(crate) fn token_of(&self, handshake: &Handshake) -> Result<Option<Grant>, Error> {
        let Some(jwt) = &self.inner.jwt else {
            return Ok(None);
        };
        let token = handshake.auth.get("token").and_then(Value::as_str);
        self.verify(jwt, token).map(Some)
    }

    fn verify(&self, jwt: &Verifier, token: Option<&str>) -> Result<Grant, Error> {
        let refused = |r: crate::api::jwt::Refusal| Error::Rejected {
            status: 401,
            message: r.as_str().into(),
            data: None,
        };
        let token = token.ok_or(refused(crate::api::jwt::Refusal::Invalid))?;
        let max = self.config().max_token_bytes;
        if token.len() > max {
            return Err(Error::TokenTooLarge(max));
        }
        jwt.verify(token).map_err(refused)
    }

    /// `POST /refresh`: `body` is `{"token": "<jwt>"}`, a fresh token for
    /// `session`'s user. Answers the new expiry. The session's rate is
    /// charged before the token is read, so a flood costs no signature
    /// work.
    pub(crate) fn refresh(&self, session: &Arc<Session>, body: &[u8]) -> Result<u64, Error> {
        let Some(jwt) = &self.inner.jwt else {
            return Err(Error::NotFound);
        };
        let state = state_of(session).ok_or(Error::UnknownSession)?;
        {
            let mut token = state.token.lock();
            let token = token.as_mut().ok_or(Error::UnknownSession)?;
            let now = tokio::time::Instant::now();
            let min = self.config().refresh_min_interval();
            if token.refreshed.is_some_and(|at| now < at + min) {
                return Err(Error::RefreshRate);
            }
            token.refreshed = Some(now);
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| Error::BadJson(e.to_string()))?;
        let Some(text) = value.get("token").and_then(Value::as_str) else {
            return Err(Error::BadJson("expected {\"token\": \"<jwt>\"}".into()));
        };
        let grant = self.verify(jwt, Some(text))?;
        if session.closed_reason().is_some() {
            return Err(Error::UnknownSession);
        }
        let mut token = state.token.lock();
        let token = token.as_mut().ok_or(Error::UnknownSession)?;
        if token.grant.user.is_none() || grant.user != token.grant.user {
            return Err(Error::NotTokenOwner);
        }
        token.grant = grant;
        Ok(token.grant.exp)
    }

    /// Handshake tickets issued and neither redeemed nor yet swept away.
    pub(crate) fn ticket_count(&self) -> usize {
        self.inner.tickets.len()
    }

    /// Runs `session`'s handlers for an event its client sent; `ack` is
    /// where `on_ack` handlers answer. A panicking handler is reported as
    /// [`Error::HandlerFailed`] once every handler has had its turn.
    pub(crate) fn dispatch(
        &self,
        session: Arc<Session>,
        event: &str,
        data: &Value,
        ack: Ack,
    ) -> Result<(), Error> {
        let Some(socket) = self.socket(session) else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut run = |r: Result<(), Error>| {
            if let Err(e) = r {
                result = Err(e);
            }
        };
        for h in socket.state.handlers.get("") {
            if let Listener::Any(h) = h {
                run(guarded(|| h(&socket, event, data)));
            }
        }
        let handlers = socket.state.handlers.get(event);
        for h in &handlers {
            if let Listener::On(h) = h {
                run(guarded(|| h(&socket, data)));
            }
        }
        for h in handlers {
            if let Listener::Ack(h) = h {
                let ack = ack.clone();
                run(guarded(|| h(&socket, data, ack)));
            }
        }
        result
    }

    /// The socket of the live session `sid` on this node, for the server
    /// API's commands.
    pub(crate) fn socket_of(&self, sid: &crate::session::Sid) -> Option<Socket> {
        let session = self.inner.hub.get(sid)?;
        if session.closed_reason().is_some() {
            return None;
        }
        self.socket(session)
    }

    fn socket(&self, session: Arc<Session>) -> Option<Socket> {
        let state = state_of(&session)?;
        Some(Socket {
            io: self.clone(),
            session,
            state,
        })
    }

    /// Rooms with members on this node.
    pub fn room_count(&self) -> usize {
        self.inner.hub.fanout().room_count()
    }
}

impl Lifecycle for Inner {
    fn person(&self, handshake: &Handshake) -> Option<Arc<str>> {
        let user = self.jwt.as_ref().and_then(|jwt| {
            let token = handshake.auth.get("token").and_then(Value::as_str)?;
            jwt.verify(token).ok()?.user
        });
        let person = match user {
            Some(user) => presence::Person::User(Arc::from(user)),
            None => presence::Person::Browser(handshake.browser?),
        };
        Some(Arc::from(person.key()))
    }

    fn connected(
        self: Arc<Self>,
        session: &Arc<Session>,
        handshake: &Arc<Handshake>,
        recovered: bool,
    ) {
        // Ended before it began (a backend join that finished late): its
        // disconnect already ran, so nothing may be registered for it.
        if session.closed_reason().is_some() {
            return;
        }
        let state = match (recovered, state_of(session)) {
            (true, Some(state)) => {
                *state.handshake.lock() = handshake.clone();
                state
            }
            _ => {
                let state = Arc::new(SocketState::new(handshake));
                if session.ext.set(state.clone()).is_err() {
                    return;
                }
                state
            }
        };
        state.recovered.store(recovered, Ordering::SeqCst);
        if let Some(jwt) = &self.jwt {
            let token = handshake.auth.get("token").and_then(Value::as_str);
            // Verified before the session began; one that expired since
            // ends the session at once instead of living without a token.
            let grant = token
                .and_then(|t| jwt.verify(t).ok())
                .unwrap_or(Grant { user: None, exp: 0 });
            let mut slot = state.token.lock();
            let refreshed = slot.as_ref().and_then(|t| t.refreshed);
            *slot = Some(TokenState { grant, refreshed });
            drop(slot);
            tokio::spawn(expire(Arc::downgrade(&self.hub), Arc::downgrade(session)));
        }
        // Counted from here, like the session itself: the handlers below
        // read both.
        self.people.lock().add(presence::person_of(&state));
        let on_connection = self.on_connection.read().clone();
        let socket = Socket {
            io: Io { inner: self },
            session: session.clone(),
            state,
        };
        // A resumed session is back in the rooms it never left.
        if recovered {
            for room in socket.rooms() {
                socket.io.presence_event(&room, &socket, "presence join");
            }
        }
        for h in on_connection {
            // A panicking connection handler must not take the hub's
            // ordering lock down with it.
            let _ = guarded(|| h(&socket));
        }
    }

    fn disconnected(
        self: Arc<Self>,
        session: &Arc<Session>,
        reason: DisconnectReason,
        rooms: Vec<Arc<str>>,
    ) {
        let Some(state) = state_of(session) else {
            return;
        };
        self.people.lock().remove(presence::person_of(&state));
        let socket = Socket {
            io: Io { inner: self },
            session: session.clone(),
            state,
        };
        // Gone from presence now, whether it ended or went away (an away
        // session keeps its rooms, uncounted, for a resume).
        for room in rooms {
            socket.io.presence_event(&room, &socket, "presence leave");
        }
        let reason = Value::from(reason.as_str());
        for h in socket.state.handlers.on("disconnect") {
            let _ = guarded(|| h(&socket, &reason));
        }
        // Break `Io` → handlers → closure → `Io` cycles. A resume registers
        // them again through the connection handlers.
        socket.state.clear();
    }
}

/// Ends `session` with "token expired" once its token's `exp` has passed
/// without a refresh. It holds weak references only, and wakes once per
/// token: a refresh moves the expiry, and the task sleeps again.
async fn expire(hub: Weak<Hub>, session: Weak<Session>) {
    loop {
        let remaining = {
            let Some(session) = session.upgrade() else {
                return;
            };
            if session.closed_reason().is_some() {
                return;
            }
            let Some(state) = state_of(&session) else {
                return;
            };
            let remaining = match &*state.token.lock() {
                Some(t) => t.grant.remaining(),
                None => return,
            };
            if remaining.is_zero() {
                if let Some(hub) = hub.upgrade() {
                    hub.disconnect_incarnation(
                        session.sid,
                        session.incarnation,
                        DisconnectReason::TokenExpired,
                    );
                }
                return;
            }
            remaining
        };
        tokio::time::sleep(remaining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";

    fn from_query(query: &str) -> Result<Option<Cursor>, Error> {
        resume_cursor(&hyper::HeaderMap::new(), Some(query))
    }

    #[test]
    fn a_resume_cursor_is_read_decoded_from_the_query_or_as_is_from_the_header() {
        let want = Cursor {
            sid: SID.parse().unwrap(),
            broadcast: 12,
            direct: 3,
        };
        for q in [
            format!("resume={SID}:12:3"),
            format!("resume={SID}%3A12%3A3"),
            format!("resume={SID}%3a12%3a3"),
            format!("t=1&resume={}%3A1%32:3", SID.replace('-', "%2D")),
        ] {
            assert_eq!(from_query(&q), Ok(Some(want)), "{q}");
        }
        assert_eq!(from_query("resume="), Ok(None));
        assert_eq!(from_query("t=1"), Ok(None));
        for bad in ["resume=%ZZ", "resume=%3A", "resume=+", "resume=%FF"] {
            assert_eq!(from_query(bad), Err(Error::BadCursor), "{bad}");
        }
        // The header wins, and is not a query: no decoding there.
        let mut headers = hyper::HeaderMap::new();
        headers.insert("last-event-id", format!("{SID}%3A12%3A3").parse().unwrap());
        let q = Some("resume=x");
        assert_eq!(resume_cursor(&headers, q), Err(Error::BadCursor));
        headers.insert("last-event-id", format!("{SID}:12:3").parse().unwrap());
        assert_eq!(resume_cursor(&headers, q), Ok(Some(want)));
    }
}
