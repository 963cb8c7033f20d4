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
use crate::hub::Hub;
use crate::session::{Session, Transport};

/// `GET /poll` without a sid: a new polling session.
pub(crate) fn handshake(hub: &Arc<Hub>) -> Result<(Arc<Session>, Bytes), Error> {
    let (session, delivery) = hub.connect(Transport::Polling)?;
    park(hub, &session, delivery);
    let body = crate::session::handshake_json(session.sid, &hub.config);
    Ok((session, Bytes::from(body)))
}

/// Puts the cursor back and re-arms the expiry however the poll ends,
/// including when hyper drops the request because the client went away.
struct Pending {
    hub: Arc<Hub>,
    session: Arc<Session>,
    delivery: Option<Delivery>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(d) = self.delivery.take() {
            park(&self.hub, &self.session, d);
        }
    }
}

/// Parks the cursor in its session until the next poll, unless the session
/// has ended. The check and the store happen under the slot's lock, and
/// `Hub::disconnect` marks the session closed before it empties the slot, so
/// a cursor can never be parked in an ended session (where it would keep the
/// session alive through its own `Arc`).
fn park(hub: &Hub, session: &Arc<Session>, delivery: Delivery) {
    let mut slot = session.parked.lock();
    if session.closed_reason().is_none() {
        *slot = Some(delivery);
        drop(slot);
        hub.arm_expiry(session);
    }
}

/// `GET /poll?sid=`: the events queued for the session, as a JSON array.
pub(crate) async fn poll(hub: &Arc<Hub>, session: Arc<Session>) -> Result<Bytes, Error> {
    if session.transport != Transport::Polling {
        return Err(Error::WrongTransport);
    }
    let delivery = session.parked.lock().take();
    let Some(delivery) = delivery else {
        return if session.closed_reason().is_some() {
            Err(Error::UnknownSession)
        } else {
            Err(Error::PollPending)
        };
    };
    hub.disarm_expiry(&session);
    let mut pending = Pending {
        hub: hub.clone(),
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
    let _ = tokio::time::timeout(hub.config.ping_interval(), wait).await;

    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(b'[');
    let mut closed = None;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        match item {
            Item::Packet(p) => buf.put_slice(&p.json),
            Item::Close(reason) => {
                closed = Some(*reason);
                let data = serde_json::Value::from(reason.as_str()).to_string();
                buf.put_slice(format!("{{\"event\":\"disconnect\",\"data\":{data}}}").as_bytes());
            }
        }
    }
    buf.put_u8(b']');
    if let Some(reason) = closed {
        pending.delivery = None;
        hub.disconnect(session.sid, reason);
    }
    Ok(buf.freeze())
}
