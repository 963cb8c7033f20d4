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
        }
    }

    fn sent(
        &mut self,
        bytes: Bytes,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.keep_alive.as_mut().reset(Instant::now() + self.period);
        Poll::Ready(Some(Ok(Frame::data(bytes))))
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
            Poll::Ready(Item::Packet(p)) => this.sent(p.sse),
            Poll::Ready(Item::Close(reason)) => {
                this.done = true;
                this.io.hub().disconnect(this.sid, reason);
                let bye = Packet::disconnect(reason.as_str()).sse;
                Poll::Ready(Some(Ok(Frame::data(bye))))
            }
            Poll::Pending => match this.keep_alive.as_mut().poll(cx) {
                Poll::Ready(()) => this.sent(Bytes::from_static(KEEP_ALIVE)),
                Poll::Pending => Poll::Pending,
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
        // A no-op if the session already ended for another reason.
        self.io
            .hub()
            .disconnect(self.sid, DisconnectReason::TransportClose);
    }
}
