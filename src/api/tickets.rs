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
//! payload never appears in a URL. A ticket works once; at most
//! `--max-sessions` are outstanding.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use crate::session::Handshake;

/// Outstanding tickets, oldest first for expiry.
#[derive(Default)]
pub(crate) struct Tickets {
    /// A blocking lock: every critical section is a few map operations.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each ticket's handshake and deadline.
    by_id: HashMap<Uuid, (Handshake, Instant)>,
    /// Tickets in issue order; all share one life, so this is deadline order.
    order: VecDeque<(Instant, Uuid)>,
}

impl State {
    fn expire(&mut self, now: Instant) {
        while let Some((at, id)) = self.order.front().copied() {
            if at > now {
                break;
            }
            self.order.pop_front();
            self.by_id.remove(&id);
        }
        if self.by_id.is_empty() && self.by_id.capacity() > 1024 {
            self.by_id = HashMap::new();
            self.order = VecDeque::new();
        }
    }
}

impl Tickets {
    /// A ticket for `handshake`, usable once within `ttl`; `None` if `max`
    /// are outstanding.
    pub(crate) fn issue(&self, handshake: Handshake, ttl: Duration, max: usize) -> Option<Uuid> {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.expire(now);
        if st.by_id.len() >= max {
            return None;
        }
        let id = Uuid::new_v4();
        st.by_id.insert(id, (handshake, now + ttl));
        st.order.push_back((now + ttl, id));
        Some(id)
    }

    /// The handshake a live ticket carries; the ticket is spent.
    pub(crate) fn redeem(&self, id: &Uuid) -> Option<Handshake> {
        let now = Instant::now();
        let mut st = self.state.lock();
        st.expire(now);
        st.by_id.remove(id).map(|(h, _)| h)
    }

    /// Outstanding tickets.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_ticket_works_once_within_its_life_and_their_number_is_bounded() {
        let t = Tickets::default();
        let hs = || Handshake::unknown_address(Default::default(), None);
        let ttl = Duration::from_secs(1);
        let a = t.issue(hs(), ttl, 2).unwrap();
        let b = t.issue(hs(), ttl, 2).unwrap();
        assert!(t.issue(hs(), ttl, 2).is_none());
        assert!(t.redeem(&a).is_some());
        assert!(t.redeem(&a).is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(t.redeem(&b).is_none());
        assert_eq!(t.len(), 0);
    }
}
