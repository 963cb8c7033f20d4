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
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::api::io::Io;
use crate::engine::fanout::{Delivery, Item, Newest};
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

/// A held poll's cursor. Puts the cursor back and re-arms the expiry
/// however the poll ends, including when it is dropped because the client
/// went away.
pub(crate) struct Pending {
    io: Io,
    session: Arc<Session>,
    delivery: Option<Box<Delivery>>,
    /// When the poll began, for `ssio_poll_held_seconds`.
    since: tokio::time::Instant,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.io.hub().metrics.poll_ended();
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

    /// The comma before every event but the first.
    fn separate(&mut self, events: usize) {
        if events > 0 {
            self.push(Bytes::from_static(b","));
        }
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
///
/// The checks and the taking of the cursor happen here, at once; the
/// returned [`Polling`] holds the poll.
pub(crate) fn poll(io: &Io, session: Arc<Session>) -> Result<Polling, Error> {
    let (pending, timer) = start(io, session)?;
    Ok(Polling { pending, timer })
}

/// [`poll`] in its two parts: the cursor, and the timer that ends the poll
/// after pingInterval, for a caller that keeps them apart
/// ([`Pending::poll_answer`]).
pub(crate) fn start(
    io: &Io,
    session: Arc<Session>,
) -> Result<(Pending, tokio::time::Sleep), Error> {
    if session.transport != Transport::Polling {
        return Err(Error::WrongTransport);
    }
    let delivery = match io.hub().take_cursor(&session) {
        Ok(d) => d,
        Err(TakeError::Closed) => return Err(Error::UnknownSession),
        Err(TakeError::Pending) => return Err(Error::PollPending),
    };
    io.hub().metrics.poll_began();
    let since = tokio::time::Instant::now();
    let pending = Pending {
        io: io.clone(),
        session,
        delivery: Some(delivery),
        since,
    };
    Ok((
        pending,
        tokio::time::sleep_until(since + io.config().ping_interval()),
    ))
}

pin_project_lite::pin_project! {
    /// A held poll: ready with the answer and the client's resume position
    /// once events are ready or pingInterval has passed (`[]`).
    ///
    /// A named future, not an `async fn`: a polling client spends nearly
    /// all its life here, and an `async fn`'s state keeps room for every
    /// local it ever had (the answer being built, its counters, the clock
    /// read when it started), where this holds only the cursor and the
    /// timer. The answer is built in the one call that finds it ready.
    pub(crate) struct Polling {
        pending: Pending,
        #[pin]
        timer: tokio::time::Sleep,
    }
}

impl Future for Polling {
    type Output = (PollBody, Cursor);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.pending.poll_answer(this.timer, cx)
    }
}

impl Pending {
    /// The answer and the client's resume position once events are ready
    /// or `timer` (pingInterval) has passed (`[]`); the cursor is then
    /// parked again.
    pub(crate) fn poll_answer(
        &mut self,
        mut timer: Pin<&mut tokio::time::Sleep>,
        cx: &mut Context<'_>,
    ) -> Poll<(PollBody, Cursor)> {
        let pending = self;
        let io = &pending.io;
        let d = pending
            .delivery
            .as_mut()
            .expect("cursor present while polling");
        let max = io.config().max_poll_bytes;
        let mut body = PollBody {
            frames: VecDeque::new(),
            remaining: 0,
        };
        let mut events = 0usize;
        let mut bytes = 0usize;
        let mut closed = None;
        let mut delivered = 0;
        // Drain everything ready now into one answer, up to the bound.
        loop {
            let before = d.position();
            let json = match d.poll_next(cx) {
                Poll::Ready(Item::Close(reason)) => {
                    closed = Some(reason);
                    if reason == DisconnectReason::ServerShutdown {
                        // Come back later, each client at its own moment.
                        let spread = io.config().reconnect_spread_ms;
                        body.separate(events);
                        events += 1;
                        body.push(Packet::retry(fastrand::u64(0..=spread)).json);
                    }
                    Packet::disconnect(reason.as_str()).json
                }
                Poll::Ready(item) => {
                    let json = item.packet().map(|p| p.json.clone()).unwrap_or_default();
                    if events > 0 && bytes + json.len() > max {
                        d.put_back(item, before);
                        break;
                    }
                    delivered += 1;
                    json
                }
                // Nothing yet: wait, unless pingInterval has passed.
                Poll::Pending if events == 0 => {
                    std::task::ready!(timer.as_mut().poll(cx));
                    break;
                }
                Poll::Pending => break,
            };
            body.separate(events);
            events += 1;
            bytes += json.len();
            body.push(json);
            if closed.is_some() {
                break;
            }
        }
        // This answer is the write: nothing more will ask until the next
        // poll.
        d.settle();
        body.frames.push_front(Bytes::from_static(b"["));
        body.remaining += 1;
        body.push(Bytes::from_static(b"]"));
        let cursor = pending.end(delivered, closed, None);
        Poll::Ready((body, cursor))
    }

    /// Lets the fan-out's sweeper answer this poll through `direct`, the
    /// held poll on the raw path that holds it ([`DirectWrite`]).
    ///
    /// [`DirectWrite`]: crate::engine::fanout::DirectWrite
    pub(crate) fn write_directly(
        &mut self,
        direct: std::sync::Weak<dyn crate::engine::fanout::DirectWrite>,
    ) {
        if let Some(d) = self.delivery.as_mut() {
            d.write_directly(direct);
        }
    }

    /// The one value of `newest` that may answer this poll for the cursor
    /// numbered `cursor`, if that is all it owes.
    pub(crate) fn owes_only(&self, cursor: u64, newest: &Newest) -> Option<usize> {
        let d = self.delivery.as_ref()?;
        (d.id() == cursor).then(|| d.owes_only(newest)).flatten()
    }

    /// Answers the poll with the one value of `newest` it owes, the
    /// sweeper's answer (`[`, the value's JSON, `]`, written by the
    /// caller): the client's resume position. The cursor is parked again
    /// before a byte is written, so that the client's next poll, on any
    /// connection, finds it; the sweep's clock reading stands for now.
    pub(crate) fn answer_latest(&mut self, newest: &Newest) -> Cursor {
        let d = self
            .delivery
            .as_mut()
            .expect("cursor present while polling");
        d.took(newest, true);
        self.end(1, None, Some(newest.at))
    }

    /// The server this poll is held by.
    pub(crate) fn io(&self) -> &Io {
        &self.io
    }

    /// Ends the poll after an answer of `delivered` events, at `now` if
    /// the caller read the clock: the client's resume position, then the
    /// cursor parked again (or the session ended, if the answer carried
    /// its close).
    fn end(
        &mut self,
        delivered: u64,
        closed: Option<DisconnectReason>,
        now: Option<tokio::time::Instant>,
    ) -> Cursor {
        let io = &self.io;
        let metrics = &io.hub().metrics;
        let now = now.unwrap_or_else(tokio::time::Instant::now);
        metrics.poll_held(now.saturating_duration_since(self.since));
        // The body's bytes are counted with every other response's.
        metrics.written(delivered, 0);
        let mut delivery = self.delivery.take().expect("cursor present");
        let cursor = self.session.cursor(&delivery);
        match closed {
            Some(reason) => {
                drop(delivery);
                let session = &self.session;
                io.hub()
                    .disconnect_incarnation(session.sid, session.incarnation, reason);
            }
            None => {
                // A parked cursor names no held poll: the next may be held
                // on another connection, or by the router.
                delivery.write_to_task();
                io.hub().park_from(&self.session, delivery, now);
            }
        }
        cursor
    }
}
