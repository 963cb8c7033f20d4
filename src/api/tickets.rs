//! Handshake tickets: how a client presents its `auth` payload on a
//! transport that cannot send a body or headers.
//!
//! `EventSource` can set neither headers nor a body, and a query string
//! ends up in access logs. So a client with an `auth` payload first sends
//! it in the body of `POST /handshake`; the middleware runs there (its
//! refusal is a readable 401/403 JSON, which an `EventSource` error never
//! is) and the answer is a one-time ticket, a random UUID, that the
//! client's `GET /events?ticket=` or `GET /poll?ticket=` redeems within
//! `--ticket-ttl`. The ticket carries the handshake, auth included, so the
//! payload never appears in a URL. A ticket works once.
//!
//! Anyone may ask for tickets and never redeem them, so what one costs is
//! kept close to what its client sent: the `auth` body as it came (parsed
//! again at redemption; a parsed JSON value can take many times its text)
//! and the request's headers copied into one flat buffer (the headers of a
//! request share hyper's read buffer, which a kept clone would pin whole).
//! A ticket counts against its address's limits (see `engine::limits`), at
//! most `--max-sessions` are outstanding, and one task removes each when
//! its life ends, handing the memory back to the kernel once none is left.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::engine::hub::Hub;
use crate::session::Handshake;

/// After this many tickets expire the sweeper hands free memory back to the
/// kernel even if others are still outstanding, so a sustained flood does
/// not keep its peak.
const TRIM_AFTER_EXPIRED: usize = 4096;

/// Outstanding tickets, oldest first for expiry.
pub(crate) struct Tickets {
    /// A blocking lock: every critical section is a few map operations.
    state: Mutex<State>,
    /// Wakes the sweeper when the first ticket of an empty table is issued,
    /// or when the table is dropped.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Each ticket by its id.
    by_id: HashMap<Uuid, Ticket>,
    /// Tickets in issue order; all share one life, so this is deadline order.
    order: VecDeque<(Instant, Uuid)>,
    /// Tickets expired since memory was last handed back.
    expired_since_trim: usize,
}

/// One ticket: a handshake in the fewest bytes that rebuild it.
struct Ticket {
    /// Every header as `name length, name, value length, value`, lengths
    /// as 4 little-endian bytes.
    headers: Box<[u8]>,
    /// The raw query string.
    query: Option<Box<str>>,
    /// The TCP peer.
    address: SocketAddr,
    /// When the handshake arrived.
    issued: SystemTime,
    /// The `auth` JSON object as the client sent it.
    auth: Box<[u8]>,
    /// The address the ticket is counted against.
    client: IpAddr,
    /// When it stops being usable.
    deadline: Instant,
}

/// A redeemed ticket: the handshake it carried and the address it was
/// counted against.
pub(crate) struct Redeemed {
    /// The handshake, as at `POST /handshake`.
    pub(crate) handshake: Handshake,
    /// The address whose slot the ticket held.
    pub(crate) client: IpAddr,
}

/// What one sweep did.
struct Swept {
    /// The addresses of the tickets it removed, one entry per ticket.
    clients: Vec<IpAddr>,
    /// Whether the freed memory should be handed back now.
    trim: bool,
    /// The next ticket's deadline.
    next: Option<Instant>,
}

fn flatten(headers: &HeaderMap) -> Box<[u8]> {
    let size: usize = headers
        .iter()
        .map(|(n, v)| 8 + n.as_str().len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for (name, value) in headers {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out.into_boxed_slice()
}

fn unflatten(mut flat: &[u8]) -> HeaderMap {
    let mut next = || -> Option<&[u8]> {
        let (len, rest) = flat.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (part, rest) = rest.split_at_checked(len)?;
        flat = rest;
        Some(part)
    };
    let mut map = HeaderMap::new();
    while let (Some(name), Some(value)) = (next(), next()) {
        // Both were valid when they arrived, so both are valid again.
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

impl Ticket {
    fn new(handshake: &Handshake, auth: &[u8], client: IpAddr, deadline: Instant) -> Ticket {
        Ticket {
            headers: flatten(&handshake.headers),
            query: handshake.query.as_deref().map(Box::from),
            address: handshake.address,
            issued: handshake.issued,
            auth: Box::from(auth),
            client,
            deadline,
        }
    }

    fn into_handshake(self) -> Handshake {
        Handshake {
            headers: unflatten(&self.headers),
            query: self.query.map(String::from),
            address: self.address,
            issued: self.issued,
            // It was a JSON object when it was issued.
            auth: serde_json::from_slice(&self.auth).unwrap_or_default(),
            // A ticket opens a connection of its own.
            browser: None,
        }
    }
}

impl Tickets {
    /// An empty table.
    pub(crate) fn new() -> Tickets {
        Tickets {
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
        }
    }

    /// A ticket for `handshake`, whose `auth` is the JSON text `auth`,
    /// counted against `client`, usable once within `ttl`; `None` if `max`
    /// are outstanding.
    pub(crate) fn issue(
        &self,
        handshake: &Handshake,
        auth: &[u8],
        client: IpAddr,
        ttl: Duration,
        max: usize,
    ) -> Option<Uuid> {
        let deadline = Instant::now() + ttl;
        // Built before the lock is taken: copying is the slow part.
        let ticket = Ticket::new(handshake, auth, client, deadline);
        let mut st = self.state.lock();
        if st.by_id.len() >= max {
            return None;
        }
        let id = Uuid::new_v4();
        st.by_id.insert(id, ticket);
        st.order.push_back((deadline, id));
        if st.order.len() == 1 {
            self.wake.notify_one();
        }
        Some(id)
    }

    /// The handshake a live ticket carries; the ticket is spent. An expired
    /// one is left to the sweeper, which uncounts it.
    pub(crate) fn redeem(&self, id: &Uuid) -> Option<Redeemed> {
        let now = Instant::now();
        let ticket = {
            let mut st = self.state.lock();
            if st.by_id.get(id)?.deadline <= now {
                return None;
            }
            st.by_id.remove(id)?
        };
        let client = ticket.client;
        Some(Redeemed {
            handshake: ticket.into_handshake(),
            client,
        })
    }

    /// Outstanding tickets (expired ones count until the sweeper has been).
    pub(crate) fn len(&self) -> usize {
        self.state.lock().by_id.len()
    }

    /// Removes every ticket whose life has ended.
    fn sweep(&self, now: Instant) -> Swept {
        let mut clients = Vec::new();
        let mut expired = Vec::new();
        let mut st = self.state.lock();
        while let Some((at, id)) = st.order.front().copied() {
            if at > now {
                break;
            }
            st.order.pop_front();
            // A redeemed ticket is gone from the map already.
            if let Some(t) = st.by_id.remove(&id) {
                clients.push(t.client);
                // Freed after the lock is released.
                expired.push(t);
            }
        }
        st.expired_since_trim += expired.len();
        let emptied = st.by_id.is_empty() && st.expired_since_trim > 0;
        let trim = emptied || st.expired_since_trim >= TRIM_AFTER_EXPIRED;
        if trim {
            st.expired_since_trim = 0;
        }
        // A map never shrinks by itself: a flood's capacity would stay.
        if st.by_id.capacity() > 4 * st.by_id.len().max(256) {
            let len = st.by_id.len();
            st.by_id.shrink_to(2 * len);
        }
        if st.order.capacity() > 4 * st.order.len().max(256) {
            let len = st.order.len();
            st.order.shrink_to(2 * len);
        }
        let next = st.order.front().map(|(at, _)| *at);
        drop(st);
        drop(expired);
        Swept {
            clients,
            trim,
            next,
        }
    }

    /// Starts the task that removes expired tickets and uncounts them from
    /// their addresses. It holds only weak references, so dropping the
    /// server ends it.
    pub(crate) fn spawn_sweeper(self: &Arc<Self>, hub: &Arc<Hub>) {
        let tickets = Arc::downgrade(self);
        let hub = Arc::downgrade(hub);
        let wake = self.wake.clone();
        tokio::spawn(sweeper(tickets, hub, wake));
    }
}

impl Drop for Tickets {
    fn drop(&mut self) {
        // Let the sweeper see that the table is gone instead of waiting.
        self.wake.notify_one();
    }
}

async fn sweeper(tickets: Weak<Tickets>, hub: Weak<Hub>, wake: Arc<Notify>) {
    loop {
        let next = {
            let (Some(tickets), Some(hub)) = (tickets.upgrade(), hub.upgrade()) else {
                return;
            };
            let swept = tickets.sweep(Instant::now());
            for client in swept.clients {
                hub.release_ticket(client);
            }
            if swept.trim {
                crate::ops::memory::release_free_memory();
            }
            swept.next
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs() -> Handshake {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("a=1"));
        headers.append("x-many", HeaderValue::from_static("one"));
        headers.append("x-many", HeaderValue::from_static("two"));
        Handshake::new(
            headers,
            Some("t=1&ticket=x".into()),
            "192.0.2.7:4711".parse().unwrap(),
        )
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[tokio::test(start_paused = true)]
    async fn a_ticket_works_once_within_its_life_and_their_number_is_bounded() {
        let t = Tickets::new();
        let ttl = Duration::from_secs(1);
        let a = t.issue(&hs(), b"{}", CLIENT, ttl, 2).unwrap();
        let b = t.issue(&hs(), b"{}", CLIENT, ttl, 2).unwrap();
        assert!(t.issue(&hs(), b"{}", CLIENT, ttl, 2).is_none());
        assert!(t.redeem(&a).is_some());
        assert!(t.redeem(&a).is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(t.redeem(&b).is_none());
        // Only the sweep removes it, and names its address once.
        assert_eq!(t.len(), 1);
        let swept = t.sweep(Instant::now());
        assert_eq!(
            (swept.clients, swept.trim, swept.next),
            (vec![CLIENT], true, None)
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_redeemed_ticket_gives_back_the_handshake_it_was_issued_for() {
        let t = Tickets::new();
        let sent = hs();
        let auth = br#"{ "token": "x", "n": [1, 2.5, "\u00e9"] }"#;
        let id = t
            .issue(&sent, auth, CLIENT, Duration::from_secs(9), 9)
            .unwrap();
        let got = t.redeem(&id).unwrap();
        assert_eq!(got.client, CLIENT);
        let got = got.handshake;
        assert_eq!(got.headers, sent.headers);
        assert_eq!(got.query, sent.query);
        assert_eq!(got.address, sent.address);
        assert_eq!(got.issued, sent.issued);
        assert_eq!(
            got.auth,
            serde_json::json!({ "token": "x", "n": [1, 2.5, "é"] })
        );
    }
}
