//! A session's mailbox: the events sent to it alone (`socket.emit`) and the
//! flag that says it has ended.
//!
//! The mailbox is the one piece of a session that its delivery cursor reads,
//! so the cursor holds the mailbox, never the session: nothing below the hub
//! can keep a session alive or reach its table entry.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::packet::Packet;
use crate::session::DisconnectReason;

/// Direct events and the close flag, shared between the hub (which closes)
/// and whichever transport request is currently reading.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// A blocking lock: every critical section is a few field updates.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Events for this session alone.
    queue: VecDeque<Packet>,
    /// Set once, when the session ends.
    closed: Option<DisconnectReason>,
    /// The transport task to wake when either of the above changes.
    waker: Option<Waker>,
    /// Set when `queue` overflowed; the reader closes as a slow reader.
    overflowed: bool,
}

impl Mailbox {
    /// Queues a direct event; over `limit` queued, marks the session as a
    /// slow reader instead of growing without bound.
    pub(crate) fn push(&self, packet: Packet, limit: usize) {
        let waker = {
            let mut st = self.state.lock();
            if st.closed.is_some() {
                return;
            }
            if st.queue.len() >= limit {
                st.overflowed = true;
                st.queue.clear();
            } else {
                st.queue.push_back(packet);
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Marks the session closed and wakes its reader. Returns false if it was
    /// already closed, so the first reason wins.
    pub(crate) fn close(&self, reason: DisconnectReason) -> bool {
        let waker = {
            let mut st = self.state.lock();
            if st.closed.is_some() {
                return false;
            }
            st.closed = Some(reason);
            st.queue.clear();
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Why the session ended, once it has.
    pub(crate) fn closed_reason(&self) -> Option<DisconnectReason> {
        self.state.lock().closed
    }

    /// The next direct event, or the close reason once closed.
    pub(crate) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<Packet, DisconnectReason>> {
        let mut st = self.state.lock();
        if let Some(reason) = st.closed {
            return Poll::Ready(Err(reason));
        }
        if st.overflowed {
            return Poll::Ready(Err(DisconnectReason::SlowReader));
        }
        if let Some(p) = st.queue.pop_front() {
            return Poll::Ready(Ok(p));
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
