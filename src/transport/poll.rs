//! The long-polling transport: the same session and cursor as SSE, read one
//! HTTP request at a time.
//!
//! A poll takes the session's parked cursor, waits until something is ready
//! (or pingInterval passes), drains everything ready (up to
//! `--max-poll-bytes`) into one JSON array made of the events' shared bytes,
//! and parks the cursor again. While parked, the session's expiry is armed: no
//! poll within pingTimeout and the reaper disconnects it. Taking the cursor
//! out of the session is also how a second concurrent poll is refused.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::api::io::Io;
use crate::engine::fanout::{Delivery, Item};
use crate::engine::hub::{Connected, Session, TakeError};
use crate::engine::packet::Packet;
use crate::engine::recovery::Cursor;
use crate::error::Error;
use crate::session::{handshake_json, DisconnectReason, Handshake, Sid, Transport};

/// `GET /poll` without a sid: a new (or resumed) polling session, its
/// handshake JSON and its starting cursor. A new session must start its
/// first poll within `--first-poll-timeout`.
pub(crate) async fn handshake(
    io: &Io,
    handshake: Handshake,
) -> Result<(Sid, Bytes, Cursor), Error> {
    let Connected {
        session,
        delivery,
        recovered,
    } = io.start_session(Transport::Polling, handshake).await?;
    let cursor = session.cursor(&delivery);
    let config = io.config();
    io.hub()
        .park_within(&session, delivery, config.first_poll_timeout());
    let body = handshake_json(
        session.sid,
        config.ping_interval_ms,
        config.ping_timeout_ms,
        recovered,
    );
    Ok((session.sid, Bytes::from(body), cursor))
}

/// Puts the cursor back and re-arms the expiry however the poll ends,
/// including when hyper drops the request because the client went away.
struct Pending {
    io: Io,
    session: Arc<Session>,
    delivery: Option<Delivery>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(d) = self.delivery.take() {
            self.io.hub().park(&self.session, d);
        }
    }
}

/// A poll answer: `[`, each event's JSON, `,`, ..., `]`, one frame each.
/// The JSON frames are the very `Bytes` the fan-out's log holds (encoded
/// once per event), so an answer written to a client that never reads holds
/// references to shared events, never a copy of them; its length is known,
/// so it goes out with `content-length`.
pub(crate) struct PollBody {
    /// What is left to send, in order.
    frames: VecDeque<Bytes>,
    /// Bytes left in `frames`.
    remaining: u64,
}

impl PollBody {
    /// The answer's pieces, for a transport that writes them itself.
    pub(crate) fn into_frames(self) -> VecDeque<Bytes> {
        self.frames
    }

    fn push(&mut self, bytes: Bytes) {
        self.remaining += bytes.len() as u64;
        self.frames.push_back(bytes);
    }
}

impl Body for PollBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.frames.pop_front() {
            Some(b) => {
                self.remaining -= b.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// `GET /poll?sid=`: the events queued for the session, as a JSON array of
/// at most `--max-poll-bytes` of events (at least one event, however large).
/// Everything ready goes in one answer, so a client that polls again at
/// once keeps up with any rate the log can hold.
/// With it, the client's resume position once it has read them all.
pub(crate) async fn poll(io: &Io, session: Arc<Session>) -> Result<(PollBody, Cursor), Error> {
    if session.transport != Transport::Polling {
        return Err(Error::WrongTransport);
    }
    let delivery = match io.hub().take_cursor(&session) {
        Ok(d) => d,
        Err(TakeError::Closed) => return Err(Error::UnknownSession),
        Err(TakeError::Pending) => return Err(Error::PollPending),
    };
    let mut pending = Pending {
        io: io.clone(),
        session: session.clone(),
        delivery: Some(delivery),
    };

    let held = std::time::Instant::now();
    let max = io.config().max_poll_bytes;
    let mut body = PollBody {
        frames: VecDeque::new(),
        remaining: 0,
    };
    body.push(Bytes::from_static(b"["));
    let mut events = 0usize;
    let mut bytes = 0usize;
    let mut closed = None;
    let mut delivered = 0;
    let wait = std::future::poll_fn(|cx| {
        let d = pending
            .delivery
            .as_mut()
            .expect("cursor present while polling");
        // Drain everything ready now into one response, up to the bound.
        loop {
            let before = d.position();
            let json = match d.poll_next(cx) {
                Poll::Ready(Item::Close(reason)) => {
                    closed = Some(reason);
                    if reason == DisconnectReason::ServerShutdown {
                        // Come back later, each client at its own moment.
                        let spread = io.config().reconnect_spread_ms;
                        if events > 0 {
                            body.push(Bytes::from_static(b","));
                        }
                        events += 1;
                        body.push(Packet::retry(fastrand::u64(0..=spread)).json);
                    }
                    Packet::disconnect(reason.as_str()).json
                }
                Poll::Ready(item) => {
                    let json = item.packet().map(|p| p.json.clone()).unwrap_or_default();
                    if events > 0 && bytes + json.len() > max {
                        d.put_back(item, before);
                        return Poll::Ready(());
                    }
                    delivered += 1;
                    json
                }
                Poll::Pending if events == 0 => return Poll::Pending,
                Poll::Pending => return Poll::Ready(()),
            };
            if events > 0 {
                body.push(Bytes::from_static(b","));
            }
            events += 1;
            bytes += json.len();
            body.push(json);
            if closed.is_some() {
                return Poll::Ready(());
            }
        }
    });
    let _ = tokio::time::timeout(io.config().ping_interval(), wait).await;
    let metrics = &io.hub().metrics;
    metrics.poll_held(held.elapsed());
    if let Some(d) = pending.delivery.as_mut() {
        // This response is the write: nothing more will ask until the
        // next poll.
        d.settle();
    }
    // The body's bytes are counted with every other response's.
    metrics.written(delivered, 0);
    body.push(Bytes::from_static(b"]"));
    let cursor = pending
        .delivery
        .as_ref()
        .map(|d| session.cursor(d))
        .expect("cursor present until the poll ends");
    if let Some(reason) = closed {
        pending.delivery = None;
        io.hub()
            .disconnect_incarnation(session.sid, session.incarnation, reason);
    }
    Ok((body, cursor))
}
