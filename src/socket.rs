//! The socket.io-style API: [`Io`] for the whole server, [`Socket`] for one
//! client.
//!
//! This layer is the only one that knows event names. The hub below it deals
//! in sessions and packets; the router above it deals in HTTP.
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

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::backend::{Backend, LocalBackend};
use crate::config::Config;
use crate::fanout::Fanout;
use crate::hub::Hub;
use crate::packet::Packet;
use crate::session::{DisconnectReason, Handler, Session, Sid, Transport};

/// An `io.on_connection` callback.
pub type ConnectionHandler = Arc<dyn Fn(&Socket) + Send + Sync>;

/// The server side: register handlers, broadcast, read the count, and serve
/// HTTP. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Io {
    pub(crate) hub: Arc<Hub>,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("sessions", &self.hub.session_count())
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
        let fanout = Fanout::new(config.max_pending_events);
        let backend = Arc::new(LocalBackend::new(fanout.clone()));
        Io::with_backend(config, backend, fanout)
    }

    /// A server whose count and broadcasts go through `backend`, which must
    /// deliver broadcasts into `fanout` (on every node, for a shared one).
    pub fn with_backend(config: Config, backend: Arc<dyn Backend>, fanout: Fanout) -> Io {
        let hub = Arc::new(Hub::new(config, backend, fanout));
        hub.spawn_reaper();
        Io { hub }
    }

    pub(crate) fn from_hub(hub: Arc<Hub>) -> Io {
        Io { hub }
    }

    /// The configuration this server enforces.
    pub fn config(&self) -> &Config {
        &self.hub.config
    }

    /// Registers a callback run for every new session, before its transport
    /// sends anything, while no other session can connect or disconnect.
    pub fn on_connection<F>(&self, f: F)
    where
        F: Fn(&Socket) + Send + Sync + 'static,
    {
        self.hub.on_connection.write().push(Arc::new(f));
    }

    /// Declares `event` a latest-value event: a client that is behind gets
    /// only its newest value instead of every stale one. Use it for state
    /// (counts, positions), not for messages.
    pub fn latest_value(&self, event: &str) {
        let mut names = self.hub.latest_names.write();
        if !names.iter().any(|n| &**n == event) {
            names.push(Box::from(event));
        }
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
        let packet = Packet::new(event, &data.into());
        let latest = self.hub.is_latest(event);
        self.hub.backend.broadcast(event, packet, latest);
    }

    /// Connected sessions, as the backend counts them: this node's on a
    /// single node, the cluster's with a shared backend.
    pub fn count(&self) -> usize {
        self.hub.backend.count()
    }

    /// Session counts for monitoring.
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: self.hub.session_count(),
            sse: self.hub.transport_count(Transport::Sse),
            polling: self.hub.transport_count(Transport::Polling),
            count: self.count(),
        }
    }

    /// Ends every session with "server shutdown" and refuses new ones. Open
    /// streams send their `disconnect` event and finish, so a graceful HTTP
    /// shutdown can then complete.
    pub fn shutdown(&self) {
        self.hub.shutdown();
    }
}

/// One connected client, as seen from server code.
#[derive(Clone)]
pub struct Socket {
    io: Io,
    session: Arc<Session>,
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
    pub(crate) fn new(io: Io, session: Arc<Session>) -> Socket {
        Socket { io, session }
    }

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
        let mut s = self.session.sid.simple().to_string();
        s.truncate(8);
        s
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
        let handler: Handler = Arc::new(handler);
        self.session.add_handler(event, handler);
    }

    /// Removes every handler for `event`.
    pub fn off(&self, event: &str) {
        self.session.remove_handlers(event);
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
        self.session
            .push(packet, self.io.hub.config.max_pending_events);
    }

    /// Ends this session from the server side.
    pub fn disconnect(&self) {
        self.io
            .hub
            .disconnect(self.session.sid, DisconnectReason::ServerDisconnect);
    }

    /// Why the session ended, once it has.
    pub fn disconnect_reason(&self) -> Option<DisconnectReason> {
        self.session.closed_reason()
    }

    /// Runs this session's handlers for a client event.
    pub(crate) fn dispatch(&self, event: &str, data: &Value) {
        for h in self.session.handlers_for(event) {
            h(self, data);
        }
    }
}
