//! The SSE transport: a session's events as one never-ending response body.
//!
//! The body *is* the session's lifetime on this transport: when it is
//! dropped (the client closed or reset the connection, or the kernel timed
//! out unacknowledged data), `Drop` disconnects the session with
//! "transport close". There is no extra task or channel per stream; hyper,
//! or the raw path in [`sse_raw`](super::sse_raw), polls the body directly
//! and the body polls the session's cursor.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::Response;

use crate::api::io::Io;
use crate::engine::fanout::{Delivery, DirectWrite, Item, Newest};
use crate::engine::hub::{Connected, Session};
use crate::engine::packet::{Packet, KEEP_ALIVE};
use crate::error::Error;
use crate::session::{handshake_json, DisconnectReason, Handshake, Sid, Transport};
use crate::transport::head;
use crate::transport::keepalive::KeepAlive;

/// Starts an SSE session and returns its response: the one head from
/// [`head::sse`] and the body. The raw path writes the same head by hand.
pub(crate) async fn open(io: &Io, handshake: Handshake) -> Result<(Sid, SseBody), Error> {
    // Refused before a session exists: a bad parameter costs no count.
    let framing = Framing::parse(handshake.query.as_deref())?;
    let connected = io.start_session(Transport::Sse, handshake).await?;
    let body = SseBody::new(io.clone(), connected, framing);
    Ok((body.session.sid, body))
}

/// How a session's stream frames its events.
///
/// `EventSource` hands a named event only to listeners of that name, so a
/// page that wants every event whatever its name (`socket.onAny`) asks for
/// `frames=json`: each event unnamed, `data: {"event":..,"data":..}`, as a
/// shared stream frames them (without the key). The default is what
/// `curl -N` shows: `event: <name>` and `data: <json>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `event: <name>`, `data: <json>`.
    Named,
    /// `data: {"event":"<name>","data":<json>}`.
    Json,
}

impl Framing {
    /// The `frames` parameter of a `GET /events`: absent, or `json`.
    pub(crate) fn parse(query: Option<&str>) -> Result<Framing, Error> {
        match crate::session::query_value(query, "frames").as_deref() {
            None => Ok(Framing::Named),
            Some("json") => Ok(Framing::Json),
            Some(_) => Err(Error::BadFrames),
        }
    }

    /// `packet` as this stream frames it.
    fn frame(self, packet: &Packet) -> Bytes {
        match self {
            Framing::Named => packet.sse.clone(),
            Framing::Json => crate::engine::packet::unnamed(&packet.json),
        }
    }

    /// The `retry` hint before a shutdown's `disconnect`: the standard
    /// `retry:` field, then the event.
    fn retry(self, ms: u64) -> Bytes {
        let packet = Packet::retry(ms);
        match self {
            Framing::Named => packet.sse,
            Framing::Json => {
                let mut buf = bytes::BytesMut::new();
                buf.extend_from_slice(format!("retry: {ms}\n").as_bytes());
                crate::engine::packet::put_unnamed(&mut buf, &packet.json);
                buf.freeze()
            }
        }
    }
}

/// [`open`] as a hyper response.
pub(crate) async fn response(io: &Io, handshake: Handshake) -> Result<Response<SseBody>, Error> {
    let (sid, body) = open(io, handshake).await?;
    let mut res = Response::new(body);
    head::apply(&mut res, head::sse(sid));
    Ok(res)
}

/// The response body of `GET /events`.
pub(crate) struct SseBody {
    /// The server, to end the session when the body ends.
    io: Io,
    /// The session this body streams.
    session: std::sync::Arc<Session>,
    /// The `connect` event, sent before anything else; then, after an `id:`
    /// line, the event it names.
    first: Option<Bytes>,
    /// Whether ordinary events carry an `id:` (recovery is on).
    ids: bool,
    /// Named events, or every event unnamed as JSON (`frames=json`).
    framing: Framing,
    /// The session's read position.
    delivery: Delivery,
    /// A keep-alive comment once the stream has been idle for pingInterval.
    keep_alive: KeepAlive,
    /// Set after the `disconnect` event went out; the next poll ends the body.
    done: bool,
    /// Events and bytes written since the metrics were last told; told
    /// whenever the stream goes idle, so the shared counters see one
    /// atomic add per batch rather than per event.
    unreported: (u64, u64),
    /// Set by a transport that calls [`SseBody::written`] itself after each
    /// write; otherwise asking for more means the last frame went out.
    explicit_writes: bool,
}

impl SseBody {
    fn new(io: Io, connected: Connected, framing: Framing) -> SseBody {
        let Connected {
            session,
            delivery,
            recovered,
        } = connected;
        let config = io.config();
        let period = config.ping_interval();
        let ids = config.resumable();
        let handshake = handshake_json(
            session.sid,
            config.ping_interval_ms,
            config.ping_timeout_ms,
            recovered,
        );
        let connect = framing.frame(&Packet::connect(&handshake));
        // A standard `EventSource` is told to come back within the grace
        // (see `Config::sse_retry_ms`); the connect event names where the
        // stream starts, so a client cut off before any event can still
        // resume.
        let retry = retry_line(config);
        let id = ids.then(|| id_line(&session, &delivery));
        let id = id.as_deref().unwrap_or_default();
        let mut first = bytes::BytesMut::with_capacity(retry.len() + id.len() + connect.len());
        first.extend_from_slice(retry.as_bytes());
        first.extend_from_slice(id);
        first.extend_from_slice(&connect);
        let first = first.freeze();
        SseBody {
            first: Some(first),
            ids,
            framing,
            io,
            session,
            delivery,
            keep_alive: KeepAlive::new(period),
            done: false,
            unreported: (0, 0),
            explicit_writes: false,
        }
    }

    /// The caller will call [`SseBody::written`] after each write.
    pub(crate) fn settle_after_writes(&mut self) {
        self.explicit_writes = true;
    }

    /// Lets the fan-out's sweeper write a latest value to `direct`, the
    /// stream that carries this body, while the body is idle.
    pub(crate) fn write_directly(&mut self, direct: std::sync::Weak<dyn DirectWrite>) {
        self.delivery.write_directly(direct);
    }

    /// The one value of `newest` that may be written past this body, if
    /// it has handed out everything else and that value is all its cursor
    /// owes.
    pub(crate) fn owes_only(&self, newest: &Newest) -> Option<usize> {
        // The sweeper writes the named framing only: a `frames=json`
        // stream's task writes its own values.
        if self.first.is_some()
            || self.done
            || !self.explicit_writes
            || self.framing != Framing::Named
        {
            return None;
        }
        self.delivery.owes_only(newest)
    }

    /// Value `i` of `newest` was written past this body (whole, or in part
    /// with the rest left for the caller to write and then call
    /// [`SseBody::written`]); the body counts it as its own frame.
    pub(crate) fn took(&mut self, newest: &Newest, i: usize, whole: bool) {
        self.delivery.took(newest, whole);
        self.unreported.0 += 1;
        self.unreported.1 += newest.packet(i).sse.len() as u64;
        self.keep_alive.sent_at(newest.at);
        if whole {
            self.report();
        }
    }

    /// Waits for the next event with the waker in `waker` after a direct
    /// write, taking it; leaves it if one came meanwhile and the stream's
    /// task must be woken for it.
    pub(crate) fn wait_again(&self, waker: &mut Option<std::task::Waker>) {
        self.delivery.wait_again(waker);
    }

    /// Everything this body has yielded is written to the socket.
    pub(crate) fn written(&mut self) {
        self.delivery.settle();
        self.report();
    }

    fn sent(
        &mut self,
        bytes: Bytes,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.keep_alive.sent();
        self.unreported.1 += bytes.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn report(&mut self) {
        let (events, bytes) = std::mem::take(&mut self.unreported);
        if events > 0 || bytes > 0 {
            self.io.hub().metrics.written(events, bytes);
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return this.sent(first);
        }
        match this.delivery.poll_next(cx) {
            Poll::Ready(Item::Packet(p)) if this.ids => {
                this.unreported.0 += 1;
                // The id goes first, as its own frame, so the event's
                // bytes stay shared with every other session.
                this.first = Some(this.framing.frame(&p));
                let id = id_line(&this.session, &this.delivery);
                this.sent(id)
            }
            Poll::Ready(Item::Packet(p) | Item::Latest(p)) => {
                this.unreported.0 += 1;
                let bytes = this.framing.frame(&p);
                this.sent(bytes)
            }
            Poll::Ready(Item::Close(reason)) => {
                this.done = true;
                this.io.hub().disconnect_incarnation(
                    this.session.sid,
                    this.session.incarnation,
                    reason,
                );
                let bye = this.framing.frame(&Packet::disconnect(reason.as_str()));
                let bye = if reason == DisconnectReason::ServerShutdown {
                    // Come back later, each client at its own moment.
                    let spread = this.io.config().reconnect_spread_ms;
                    let hint = this.framing.retry(fastrand::u64(0..=spread));
                    Bytes::from([hint, bye].concat())
                } else {
                    bye
                };
                this.unreported.1 += bye.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(bye))))
            }
            Poll::Pending => match this.keep_alive.poll(cx) {
                Poll::Ready(()) => this.sent(Bytes::from_static(KEEP_ALIVE)),
                Poll::Pending => {
                    if !this.explicit_writes {
                        this.written();
                    }
                    Poll::Pending
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.report();
        // The stream ended without the session ending first: a cut or a
        // reset, which starts the reconnect grace. A no-op if the session
        // already ended for another reason, or continues on another
        // connection.
        if !self.done {
            self.io
                .hub()
                .dropped(self.session.sid, self.session.incarnation);
        }
    }
}

/// `retry: <ms>\n`: the SSE field that sets how long a standard
/// `EventSource` waits before it reconnects by itself, written first on
/// every stream, plain or shared.
pub(crate) fn retry_line(config: &crate::config::Config) -> String {
    format!("retry: {}\n", config.sse_retry_ms())
}

/// `id: <cursor>\n`: the SSE id of the event just handed out, which is the
/// client's resume position once it has read that event.
fn id_line(session: &Session, delivery: &Delivery) -> Bytes {
    Bytes::from(format!("id: {}\n", session.cursor(delivery)))
}
