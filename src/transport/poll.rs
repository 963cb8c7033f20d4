//! The long-polling transport: the same session and cursor as SSE, read one
//! HTTP request at a time.
//!
//! A poll takes the session's parked cursor, waits until something is ready
//! (or pingInterval passes), drains everything ready into one JSON array and
//! parks the cursor again. While parked, the session's expiry is armed: no
//! poll within pingTimeout and the reaper disconnects it. Taking the cursor
//! out of the session is also how a second concurrent poll is refused.

use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::fanout::{Delivery, Item};
use crate::hub::{Session, TakeError};
use crate::packet::Packet;
use crate::session::{handshake_json, DisconnectReason, Handshake, Sid, Transport};
use crate::socket::Io;

/// `GET /poll` without a sid: a new polling session and its handshake JSON.
pub(crate) async fn handshake(io: &Io, handshake: &Handshake) -> Result<(Sid, Bytes), Error> {
    let (session, delivery) = io.connect(Transport::Polling, handshake).await?;
    io.hub().park(&session, delivery);
    let config = io.config();
    let body = handshake_json(session.sid, config.ping_interval_ms, config.ping_timeout_ms);
    Ok((session.sid, Bytes::from(body)))
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

/// `GET /poll?sid=`: the events queued for the session, as a JSON array.
pub(crate) async fn poll(io: &Io, session: Arc<Session>) -> Result<Bytes, Error> {
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
    let mut items = Vec::new();
    let wait = std::future::poll_fn(|cx| {
        let d = pending
            .delivery
            .as_mut()
            .expect("cursor present while polling");
        // Drain everything ready now into one response.
        loop {
            match d.poll_next(cx) {
                Poll::Ready(item) => {
                    let close = matches!(item, Item::Close(_));
                    items.push(item);
                    if close {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending if items.is_empty() => return Poll::Pending,
                Poll::Pending => return Poll::Ready(()),
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

    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(b'[');
    let mut closed = None;
    let mut delivered = 0;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        match item {
            Item::Packet(p) => {
                delivered += 1;
                buf.put_slice(&p.json);
            }
            Item::Close(reason) => {
                closed = Some(*reason);
                if *reason == DisconnectReason::ServerShutdown {
                    // Come back later, each client at its own moment.
                    let spread = io.config().reconnect_spread_ms;
                    buf.put_slice(&Packet::retry(fastrand::u64(0..=spread)).json);
                    buf.put_u8(b',');
                }
                buf.put_slice(&Packet::disconnect(reason.as_str()).json);
            }
        }
    }
    // The body's bytes are counted with every other response's.
    metrics.written(delivered, 0);
    buf.put_u8(b']');
    if let Some(reason) = closed {
        pending.delivery = None;
        io.hub().disconnect(session.sid, reason);
    }
    Ok(buf.freeze())
}
