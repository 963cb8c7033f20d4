//! The SSE transport: a session's events as one never-ending response body.
//!
//! The body *is* the session's lifetime on this transport: when hyper drops
//! it (the client closed or reset the connection, or the kernel timed out
//! unacknowledged data), `Drop` disconnects the session with
//! "transport close". There is no extra task or channel per stream; hyper
//! polls the body directly and the body polls the session's cursor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::fanout::{Delivery, Item};
use crate::hub::Hub;
use crate::session::{DisconnectReason, Sid};
use crate::sse;

/// The response body of `GET /events`.
pub(crate) struct SseBody {
    hub: Arc<Hub>,
    sid: Sid,
    /// The `connect` event, sent before anything else.
    first: Option<Bytes>,
    delivery: Delivery,
    /// Fires after `period` without a write; reset by every event.
    keep_alive: Pin<Box<Sleep>>,
    period: Duration,
    /// Set after the `disconnect` event went out; the next poll ends the body.
    done: bool,
}

impl SseBody {
    pub(crate) fn new(hub: Arc<Hub>, sid: Sid, delivery: Delivery) -> SseBody {
        let period = hub.config.ping_interval();
        let connect = crate::session::handshake_json(sid, &hub.config);
        SseBody {
            first: Some(sse::encode("connect", &connect)),
            hub,
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
                this.hub.disconnect(this.sid, reason);
                let data = serde_json::Value::from(reason.as_str()).to_string();
                Poll::Ready(Some(Ok(Frame::data(sse::encode("disconnect", &data)))))
            }
            Poll::Pending => match this.keep_alive.as_mut().poll(cx) {
                Poll::Ready(()) => this.sent(Bytes::from_static(sse::KEEP_ALIVE)),
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
        self.hub
            .disconnect(self.sid, DisconnectReason::TransportClose);
    }
}
