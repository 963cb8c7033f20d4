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
    let connected = io.start_session(Transport::Sse, handshake).await?;
    Ok((connected.session.sid, SseBody::new(io.clone(), connected)))
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
    fn new(io: Io, connected: Connected) -> SseBody {
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
        let connect = Packet::connect(&handshake).sse;
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
        if self.first.is_some() || self.done || !self.explicit_writes {
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
                this.first = Some(p.sse);
                let id = id_line(&this.session, &this.delivery);
                this.sent(id)
            }
            Poll::Ready(Item::Packet(p) | Item::Latest(p)) => {
                this.unreported.0 += 1;
                this.sent(p.sse)
            }
            Poll::Ready(Item::Close(reason)) => {
                this.done = true;
                this.io.hub().disconnect_incarnation(
                    this.session.sid,
                    this.session.incarnation,
                    reason,
                );
                let bye = Packet::disconnect(reason.as_str()).sse;
                let bye = if reason == DisconnectReason::ServerShutdown {
                    // Come back later, each client at its own moment.
                    let spread = this.io.config().reconnect_spread_ms;
                    let hint = Packet::retry(fastrand::u64(0..=spread)).sse;
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
