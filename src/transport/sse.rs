//! The SSE transport: a session's events as one never-ending response body.
//!
//! The body *is* the session's lifetime on this transport: when it is
//! dropped (the client closed or reset the connection, or the kernel timed
//! out unacknowledged data), `Drop` disconnects the session with
//! "transport close". There is no extra task or channel per stream; hyper,
//! or the raw path in [`sse_raw`](super::sse_raw), polls the body directly
//! and the body polls the session's cursor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::Response;
use tokio::time::{Instant, Sleep};

use crate::error::Error;
use crate::fanout::{Delivery, Item};
use crate::head;
use crate::packet::{Packet, KEEP_ALIVE};
use crate::session::{handshake_json, DisconnectReason, Handshake, Sid, Transport};
use crate::socket::Io;

/// Starts an SSE session and returns its response: the one head from
/// [`head::sse`] and the body. The raw path writes the same head by hand.
pub(crate) async fn open(io: &Io, handshake: &Handshake) -> Result<(Sid, SseBody), Error> {
    let (session, delivery) = io.connect(Transport::Sse, handshake).await?;
    Ok((session.sid, SseBody::new(io.clone(), session.sid, delivery)))
}

/// [`open`] as a hyper response.
pub(crate) async fn response(io: &Io, handshake: &Handshake) -> Result<Response<SseBody>, Error> {
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
    sid: Sid,
    /// The `connect` event, sent before anything else.
    first: Option<Bytes>,
    /// The session's read position.
    delivery: Delivery,
    /// Fires after `period` without a write; reset by every event.
    keep_alive: Pin<Box<Sleep>>,
    /// The idle time before a keep-alive: pingInterval.
    period: Duration,
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
    fn new(io: Io, sid: Sid, delivery: Delivery) -> SseBody {
        let config = io.config();
        let period = config.ping_interval();
        let handshake = handshake_json(sid, config.ping_interval_ms, config.ping_timeout_ms);
        SseBody {
            first: Some(Packet::connect(&handshake).sse),
            io,
            sid,
            delivery,
            keep_alive: Box::pin(tokio::time::sleep(period)),
            period,
            done: false,
            unreported: (0, 0),
            explicit_writes: false,
        }
    }

    /// The caller will call [`SseBody::written`] after each write.
    pub(crate) fn settle_after_writes(&mut self) {
        self.explicit_writes = true;
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
        self.keep_alive.as_mut().reset(Instant::now() + self.period);
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
            Poll::Ready(Item::Packet(p)) => {
                this.unreported.0 += 1;
                this.sent(p.sse)
            }
            Poll::Ready(Item::Close(reason)) => {
                this.done = true;
                this.io.hub().disconnect(this.sid, reason);
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
            Poll::Pending => match this.keep_alive.as_mut().poll(cx) {
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
        // A no-op if the session already ended for another reason.
        self.io
            .hub()
            .disconnect(self.sid, DisconnectReason::TransportClose);
    }
}
