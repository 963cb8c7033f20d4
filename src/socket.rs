//! The socket.io-style API: [`Io`] for the whole server, [`Socket`] for one
//! client.
//!
//! This layer is the only one that knows event names. It implements the
//! hub's [`Lifecycle`]: the hub says "this session started" or "ended", and
//! this layer runs `io.on_connection` handlers or a socket's `"disconnect"`
//! handlers. Each session's handlers live here, keyed by sid, and are
//! dropped when it ends, so closures that capture an `Io` never keep the
//! server alive.
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

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::backend::{ready_now, Backend, Broadcast, LocalBackend};
use crate::config::Config;
use crate::error::{BackendError, Error};
use crate::fanout::{Delivery, Fanout};
use crate::hub::{Hub, Lifecycle, Session};
use crate::metrics::Kind;
use crate::packet::Packet;
use crate::session::{DisconnectReason, Handshake, Sid, Transport};

/// A `socket.on` callback: the socket and the event's data (for
/// `"disconnect"`, the reason as a JSON string).
pub type Handler = Arc<dyn Fn(&Socket, &Value) + Send + Sync>;

/// An `io.on_connection` callback.
pub type ConnectionHandler = Arc<dyn Fn(&Socket) + Send + Sync>;

/// The server side: register handlers, broadcast, read the count, and serve
/// HTTP. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Io {
    inner: Arc<Inner>,
}

struct Inner {
    /// Sessions, count and ordering.
    hub: Arc<Hub>,
    /// `io.on_connection` handlers.
    on_connection: RwLock<Vec<ConnectionHandler>>,
    /// Event names whose broadcasts are latest-value (conflated).
    latest_names: RwLock<Vec<Box<str>>>,
}

/// A session's handlers, from the slot the hub keeps for this layer.
fn handlers_of(session: &Session) -> Option<Arc<Handlers>> {
    session.ext.get()?.clone().downcast::<Handlers>().ok()
}

/// One session's `socket.on` handlers by event name.
#[derive(Default)]
struct Handlers(Mutex<HashMap<Box<str>, Vec<Handler>>>);

impl Handlers {
    /// The handlers for `event`, cloned out so that none runs under the lock
    /// (a handler may register another).
    fn get(&self, event: &str) -> Vec<Handler> {
        self.0.lock().get(event).cloned().unwrap_or_default()
    }
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
}

impl Io {
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
    pub fn with_backend<B, F>(config: Config, make: F) -> Io
    where
        B: Backend,
        F: FnOnce(Fanout) -> B,
    {
        let fanout = Fanout::with_limits(config.max_pending_events, config.max_pending_bytes);
        let backend: Arc<dyn Backend> = Arc::new(make(fanout.clone()));
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let lifecycle: Weak<dyn Lifecycle> = weak.clone();
            Inner {
                hub: Arc::new(Hub::new(config, fanout, backend, lifecycle)),
                on_connection: RwLock::new(Vec::new()),
                latest_names: RwLock::new(Vec::new()),
            }
        });
        inner.hub.spawn_reaper();
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
        assert!(
            !event.contains(['\n', '\r']),
            "event name contains a newline"
        );
        let broadcast = Broadcast {
            name: Arc::from(event),
            packet: Packet::new(event, &data.into()),
            latest: self.is_latest(event),
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
        }
    }

    /// Ends every session with "server shutdown" and refuses new ones. Open
    /// streams send their `disconnect` event and finish, so a graceful HTTP
    /// shutdown can then complete.
    pub fn shutdown(&self) {
        self.inner.hub.shutdown();
    }

    /// Starts a session on `transport`: the transports' one way in.
    pub(crate) async fn connect(
        &self,
        transport: Transport,
        handshake: &Handshake,
    ) -> Result<(Arc<Session>, Delivery), Error> {
        self.inner.hub.connect(transport, handshake).await
    }

    /// Runs `session`'s handlers for an event its client sent.
    pub(crate) fn dispatch(&self, session: Arc<Session>, event: &str, data: &Value) {
        let Some(socket) = self.socket(session) else {
            return;
        };
        for h in socket.handlers.get(event) {
            h(&socket, data);
        }
    }

    fn socket(&self, session: Arc<Session>) -> Option<Socket> {
        let handlers = handlers_of(&session)?;
        Some(Socket {
            io: self.clone(),
            session,
            handlers,
        })
    }
}

impl Lifecycle for Inner {
    fn connected(self: Arc<Self>, session: &Arc<Session>, _handshake: &Handshake) {
        // Ended before it began (a backend join that finished late): its
        // disconnect already ran, so nothing may be registered for it.
        if session.closed_reason().is_some() {
            return;
        }
        let handlers = Arc::new(Handlers::default());
        if session.ext.set(handlers.clone()).is_err() {
            return;
        }
        let on_connection = self.on_connection.read().clone();
        let socket = Socket {
            io: Io { inner: self },
            session: session.clone(),
            handlers,
        };
        for h in on_connection {
            h(&socket);
        }
    }

    fn disconnected(self: Arc<Self>, session: &Arc<Session>, reason: DisconnectReason) {
        let Some(handlers) = handlers_of(session) else {
            return;
        };
        let socket = Socket {
            io: Io { inner: self },
            session: session.clone(),
            handlers,
        };
        let reason = Value::from(reason.as_str());
        for h in socket.handlers.get("disconnect") {
            h(&socket, &reason);
        }
        // Break `Io` → handlers → closure → `Io` cycles.
        socket.handlers.0.lock().clear();
    }
}

/// One connected client, as seen from server code.
#[derive(Clone)]
pub struct Socket {
    /// The server, for broadcasts and the count.
    io: Io,
    /// The hub's entry: identity and mailbox.
    session: Arc<Session>,
    /// This session's handlers, shared with the socket layer's table.
    handlers: Arc<Handlers>,
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
        crate::hub::tag(self.session.sid)
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
        self.handlers
            .0
            .lock()
            .entry(Box::from(event))
            .or_default()
            .push(handler);
    }

    /// Removes every handler for `event`.
    pub fn off(&self, event: &str) {
        self.handlers.0.lock().remove(event);
    }

    /// Sends `event` to this client only.
    ///
    /// # Panics
    /// If `event` contains a CR or LF, as for [`Io::emit`].
    pub fn emit(&self, event: &str, data: impl Into<Value>) {
        assert!(
            !event.contains(['\n', '\r']),
            "event name contains a newline"
        );
        let packet = Packet::new(event, &data.into());
        self.io.hub().metrics.published(Kind::Direct);
        self.session
            .push(packet, self.io.config().max_pending_events);
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
