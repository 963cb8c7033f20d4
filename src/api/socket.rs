//! One client of the socket.io-style API: [`Socket`], with the handlers,
//! data and handshake that move with its sid across a resume.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::api::ack::Ack;
use crate::api::jwt::Grant;
use crate::api::replies::AckError;
use crate::engine::hub::Session;
use crate::engine::packet::Packet;
use crate::engine::rooms::Target;
use crate::error::Error;
use crate::ops::metrics::Kind;
use crate::session::{DisconnectReason, Handshake, Sid, Transport};

use crate::api::io::{check_name, AckHandler, AnyHandler, Handler, Io};
use crate::api::operator::Operator;

/// A session's state, from the slot the hub keeps for this layer.
pub(super) fn state_of(session: &Session) -> Option<Arc<SocketState>> {
    session.ext.get()?.clone().downcast::<SocketState>().ok()
}

/// One socket's state: what moves with the sid across a resume.
pub(super) struct SocketState {
    /// `socket.on`, `socket.on_ack` and `socket.on_any` handlers, in one
    /// list; cleared when a session ends or goes away (a resume runs the
    /// connection handlers again).
    pub(super) handlers: Table,
    /// `socket.data`: the app's own per-socket value, kept across a resume.
    pub(super) data: Mutex<Value>,
    /// The handshake of the connection now serving the socket.
    pub(super) handshake: Mutex<Arc<Handshake>>,
    /// Whether the connection now serving the socket was a resume.
    pub(super) recovered: AtomicBool,
    /// With JWT sessions: what the latest token granted, and when the
    /// session last refreshed it.
    pub(super) token: Mutex<Option<TokenState>>,
    /// When the session began (ms since the Unix epoch), for presence; a
    /// resume keeps it.
    pub(super) joined: u64,
}

/// A JWT session's token, as the socket holds it.
pub(super) struct TokenState {
    /// What the latest token granted: the user and the expiry.
    pub(super) grant: Grant,
    /// The last `POST /refresh` that was let through.
    pub(super) refreshed: Option<tokio::time::Instant>,
}

impl SocketState {
    pub(super) fn new(handshake: &Arc<Handshake>) -> SocketState {
        SocketState {
            handlers: Table::default(),
            data: Mutex::new(Value::Null),
            handshake: Mutex::new(handshake.clone()),
            recovered: AtomicBool::new(false),
            token: Mutex::new(None),
            joined: crate::api::presence::now_ms(),
        }
    }

    /// Lets go of what a session that ended (or went away) no longer needs:
    /// its handlers, and its handshake's headers, query and `auth`, which
    /// are most of an away session's size and which a resume replaces with
    /// its own. The address and time stay, for whoever still reads them.
    pub(super) fn clear(&self) {
        self.handlers.clear();
        let mut handshake = self.handshake.lock();
        let mut kept = Handshake::new(Default::default(), None, handshake.address);
        kept.issued = handshake.issued;
        kept.browser = handshake.browser;
        *handshake = Arc::new(kept);
    }
}

/// One registered handler, of any kind.
#[derive(Clone)]
pub(super) enum Listener {
    /// `socket.on`.
    On(Handler),
    /// `socket.on_ack`.
    Ack(AckHandler),
    /// `socket.on_any`, kept under the empty name, which no client event
    /// can have.
    Any(AnyHandler),
}

/// One session's handlers, with their event names, in the order they were
/// registered. A list, not a map, and one for every kind: a socket has a
/// handful of handlers, and scanning them costs less than a hash table per
/// session, which at thousands of sessions is real memory.
#[derive(Default)]
pub(super) struct Table(Mutex<Vec<(Box<str>, Listener)>>);

impl Table {
    /// The handlers for `event` (the empty name: the catch-all ones),
    /// cloned out so that none runs under the lock (a handler may register
    /// another).
    pub(super) fn get(&self, event: &str) -> Vec<Listener> {
        let table = self.0.lock();
        let named = table.iter().filter(|(name, _)| &**name == event);
        named.map(|(_, h)| h.clone()).collect()
    }

    /// The `socket.on` handlers for `event`.
    pub(super) fn on(&self, event: &str) -> Vec<Handler> {
        let all = self.get(event).into_iter();
        all.filter_map(|h| match h {
            Listener::On(h) => Some(h),
            _ => None,
        })
        .collect()
    }

    fn add(&self, event: &str, handler: Listener) {
        let mut table = self.0.lock();
        // Exactly: a first push would make room for four, and a socket
        // usually has one or two.
        table.reserve_exact(1);
        table.push((Box::from(event), handler));
    }

    fn remove(&self, event: &str) {
        self.0.lock().retain(|(name, _)| &**name != event);
    }

    fn clear(&self) {
        *self.0.lock() = Vec::new();
    }
}

/// One connected client, as seen from server code.
#[derive(Clone)]
pub struct Socket {
    /// The server, for broadcasts and the count.
    pub(super) io: Io,
    /// The hub's entry: identity and mailbox.
    pub(super) session: Arc<Session>,
    /// This socket's handlers, data and handshake, shared with the slot in
    /// the hub's entry.
    pub(super) state: Arc<SocketState>,
}

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.session.sid)
            .field("transport", &self.session.transport)
            .finish()
    }
}

impl Socket {
    /// The session ID: the client's secret credential. Keep it between the
    /// server and that client; see [`Socket::public_id`] for one to share.
    pub fn id(&self) -> Sid {
        self.session.sid
    }

    /// A short public tag for this session: the first 8 hex digits of the
    /// sid. Broadcast this, never [`Socket::id`]: the full sid is the
    /// client's credential (whoever holds it can poll, emit and close as that
    /// client), while 32 of its 122 random bits tell senders apart and leave
    /// the other 90 unguessable.
    pub fn public_id(&self) -> String {
        crate::engine::hub::tag(self.session.sid)
    }

    /// The transport this session uses.
    pub fn transport(&self) -> Transport {
        self.session.transport
    }

    /// The server this socket belongs to.
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// Registers `handler` for `event` sent by this client. The special
    /// event `"disconnect"` fires once when the session ends, with the
    /// reason as a JSON string (see [`DisconnectReason`]).
    pub fn on<F>(&self, event: &str, handler: F)
    where
        F: Fn(&Socket, &Value) + Send + Sync + 'static,
    {
        // A session that already ended keeps no handlers.
        if self.session.closed_reason().is_some() {
            return;
        }
        let handler: Handler = Arc::new(handler);
        self.state.handlers.add(event, Listener::On(handler));
    }

    /// Registers `handler` for `event` with an answer slot: when the client
    /// sent the event with a callback, `ack.send(..)` answers it (socket.io's
    /// `socket.on(event, (data, callback) => ..)`). Unanswered, the client's
    /// callback gets an error when the last clone of `ack` is dropped, or
    /// after `--ack-timeout`.
    pub fn on_ack<F>(&self, event: &str, handler: F)
    where
        F: Fn(&Socket, &Value, Ack) + Send + Sync + 'static,
    {
        if self.session.closed_reason().is_some() {
            return;
        }
        let handler: AckHandler = Arc::new(handler);
        self.state.handlers.add(event, Listener::Ack(handler));
    }

    /// Registers `handler` for every event this client sends, whatever its
    /// name, with the name (socket.io's `socket.onAny`). Catch-all handlers
    /// run before the event's own handlers, in the order they were
    /// registered; they see events sent with a callback too, but only an
    /// [`Socket::on_ack`] handler can answer one. `"disconnect"` is not an
    /// event the client sends, so it never reaches them.
    pub fn on_any<F>(&self, handler: F)
    where
        F: Fn(&Socket, &str, &Value) + Send + Sync + 'static,
    {
        if self.session.closed_reason().is_some() {
            return;
        }
        let handler: AnyHandler = Arc::new(handler);
        self.state.handlers.add("", Listener::Any(handler));
    }

    /// Removes every catch-all handler ([`Socket::on_any`]).
    pub fn off_any(&self) {
        self.state.handlers.remove("");
    }

    /// Removes every handler for `event`.
    pub fn off(&self, event: &str) {
        // The empty name holds the catch-all handlers: `off_any` removes
        // those.
        if !event.is_empty() {
            self.state.handlers.remove(event);
        }
    }

    /// Adds this socket to `room`. It stays there until it leaves, or its
    /// session ends for good (a resumed session keeps its rooms).
    pub fn join(&self, room: &str) -> Result<(), Error> {
        let config = self.io.config();
        if room.is_empty() {
            return Err(Error::BadRoom("empty"));
        }
        if room.len() > config.max_room_name {
            return Err(Error::BadRoom("too long"));
        }
        let fanout = self.io.inner.hub.fanout();
        let tracked = self.io.inner.tracked.is_tracked(room);
        let new = tracked
            && !fanout
                .rooms_of(self.session.sid)
                .iter()
                .any(|r| &**r == room);
        if !fanout.join(
            room,
            self.session.sid,
            &self.session.mailbox,
            config.max_rooms_per_socket,
        ) {
            return Err(Error::BadRoom("too many rooms"));
        }
        if new && self.session.closed_reason().is_none() {
            self.io.presence_event(room, self, "presence join");
        }
        Ok(())
    }

    /// Removes this socket from `room`.
    pub fn leave(&self, room: &str) {
        let fanout = self.io.inner.hub.fanout();
        let tracked = self.io.inner.tracked.is_tracked(room);
        let was = tracked
            && fanout
                .rooms_of(self.session.sid)
                .iter()
                .any(|r| &**r == room);
        fanout.leave(room, self.session.sid);
        if was && self.session.closed_reason().is_none() {
            self.io.presence_event(room, self, "presence leave");
        }
    }

    /// The rooms this socket is in, sorted. (Unlike socket.io, a socket is
    /// not in a room named by its id: the sid is a credential.)
    pub fn rooms(&self) -> Vec<String> {
        self.io
            .inner
            .hub
            .fanout()
            .rooms_of(self.session.sid)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    /// Events sent through the returned operator go to the members of
    /// `room` except this socket.
    pub fn to(&self, room: &str) -> Operator {
        Operator {
            io: self.io.clone(),
            target: Target {
                rooms: vec![Arc::from(room)],
                except: Some(self.session.sid),
            },
        }
    }

    /// Events sent through the returned operator go to every session but
    /// this one.
    pub fn broadcast(&self) -> Operator {
        Operator {
            io: self.io.clone(),
            target: Target {
                rooms: Vec::new(),
                except: Some(self.session.sid),
            },
        }
    }

    /// The app's own value for this socket (`socket.data`), `null` until
    /// set. It survives a resume.
    pub fn data(&self) -> Value {
        self.state.data.lock().clone()
    }

    /// Replaces [`Socket::data`].
    pub fn set_data(&self, data: impl Into<Value>) {
        *self.state.data.lock() = data.into();
    }

    /// What the client presented when this connection began: headers,
    /// query, `auth`, remote address and time. Once the socket has
    /// disconnected (its `disconnect` handlers have run), only the address
    /// and time are left.
    pub fn handshake(&self) -> Arc<Handshake> {
        self.state.handshake.lock().clone()
    }

    /// The user id of a JWT session: its token's `sub` claim. `None`
    /// without JWT sessions (`--jwt-*`) or when the token had no `sub`. A
    /// refresh must carry the same `sub`, so it never changes.
    pub fn user_id(&self) -> Option<String> {
        let token = self.state.token.lock();
        token.as_ref()?.grant.user.as_deref().map(String::from)
    }

    /// Whether this connection resumed an earlier session (same sid, rooms
    /// and data, with every missed event delivered).
    pub fn recovered(&self) -> bool {
        self.state.recovered.load(Ordering::SeqCst)
    }

    /// Sends `event` to this client only.
    ///
    /// # Panics
    /// If `event` contains a CR or LF, as for [`Io::emit`].
    pub fn emit(&self, event: &str, data: impl Into<Value>) {
        check_name(event);
        self.push(Packet::new(event, &data.into()));
    }

    /// Queues `packet` for this client alone.
    fn push(&self, packet: Packet) {
        self.io.hub().metrics.published(Kind::Direct);
        let stamp = self.io.inner.hub.fanout().end();
        self.session
            .push(packet, stamp, self.io.config().max_pending_events);
    }

    /// Sends `event` to this client only, asking for an answer, and waits
    /// up to `--ack-timeout` for it (socket.io's `socket.emitWithAck`). The
    /// client answers through the callback its handler gets:
    /// `socket.on(event, (data, callback) => callback(answer))`.
    ///
    /// # Errors
    /// [`AckError::Timeout`] when no answer came in time (the client may
    /// have left); [`AckError::TooMany`] when `--max-pending-acks` answers
    /// are owed already, and the event was not sent.
    ///
    /// # Panics
    /// If `event` contains a CR or LF, as for [`Io::emit`].
    pub async fn emit_with_ack(
        &self,
        event: &str,
        data: impl Into<Value>,
    ) -> Result<Value, AckError> {
        let within = self.io.config().ack_timeout();
        self.emit_with_ack_within(event, data, within).await
    }

    /// [`Socket::emit_with_ack`] with a timeout of its own.
    pub async fn emit_with_ack_within(
        &self,
        event: &str,
        data: impl Into<Value>,
        within: std::time::Duration,
    ) -> Result<Value, AckError> {
        check_name(event);
        let max = self.io.config().max_pending_acks;
        let entry = self.io.inner.replies.open(vec![self.session.sid], max)?;
        self.push(Packet::with_ack(event, &data.into(), entry.id));
        let mut replies = entry.wait(within).await;
        replies
            .replies
            .pop()
            .map(|(_, answer)| answer)
            .ok_or(AckError::Timeout)
    }

    /// Ends this session from the server side.
    pub fn disconnect(&self) {
        self.io
            .hub()
            .disconnect(self.session.sid, DisconnectReason::ServerDisconnect);
    }

    /// Why the session ended, once it has.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        self.session.closed_reason()
    }
}
