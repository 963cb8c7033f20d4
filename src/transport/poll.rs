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
use crate::hub::{Connected, Session, TakeError};
use crate::packet::Packet;
use crate::recovery::Cursor;
use crate::session::{handshake_json, Handshake, Sid, Transport};
use crate::socket::Io;

/// `GET /poll` without a sid: a new (or resumed) polling session, its
/// handshake JSON and its starting cursor.
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
    io.hub().park(&session, delivery);
    let config = io.config();
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

/// `GET /poll?sid=`: the events queued for the session, as a JSON array,
/// and the client's resume position once it has read them all.
pub(crate) async fn poll(io: &Io, session: Arc<Session>) -> Result<(Bytes, Cursor), Error> {
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

    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(b'[');
    let mut closed = None;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        match item {
            Item::Packet(p) | Item::Latest(p) => buf.put_slice(&p.json),
            Item::Close(reason) => {
                closed = Some(*reason);
                buf.put_slice(&Packet::disconnect(reason.as_str()).json);
            }
        }
    }
    buf.put_u8(b']');
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
    Ok((buf.freeze(), cursor))
}
