//! A session's mailbox: the events sent to it alone (`socket.emit`, and
//! room events, which reach each member here) and the flag that says its
//! transport has ended.
//!
//! The mailbox is the one piece of a session that its delivery cursor reads,
//! so the cursor holds the mailbox, never the session: nothing below the hub
//! can keep a session alive or reach its table entry.
//!
//! Every event gets a sequence number in this mailbox and a *stamp*: the
//! fan-out log's next sequence number when it was queued, so that the
//! cursor can interleave the two streams in the order they were sent. For
//! connection state recovery the mailbox keeps the last `retain` events it
//! has handed out (a transport may have written them to a connection that
//! died before the client read them) and keeps accepting events while its
//! session is away; a resume rewinds it to where the client really is.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::engine::packet::Packet;
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
    /// Handed-out events kept for a resume, then events not yet read, each
    /// with its stamp; `queue[i]` has sequence `first + i`.
    queue: VecDeque<(u64, Packet)>,
    /// The sequence number of `queue[0]`.
    first: u64,
    /// The sequence number of the next event to hand out.
    read: u64,
    /// How many handed-out events to keep for a resume.
    retain: usize,
    /// Set when the transport ended (the session ended, or went away).
    closed: Option<DisconnectReason>,
    /// False once the session is over for good: events are then dropped.
    /// True while it is away, so that a resume finds what it missed.
    ended: bool,
    /// Bumped by every resume, so a cursor from before it reads no more.
    epoch: u64,
    /// The transport task to wake when any of the above changes.
    waker: Option<Waker>,
    /// Set when the unread events overflowed; the reader closes as a slow
    /// reader, and a resume is refused.
    overflowed: bool,
}

impl Mailbox {
    /// A mailbox that keeps its last `retain` handed-out events.
    pub(crate) fn new(retain: usize) -> Mailbox {
        Mailbox {
            state: Mutex::new(State {
                retain,
                ..State::default()
            }),
        }
    }

    /// Queues an event stamped `stamp`; over `limit` unread, marks the
    /// session as a slow reader instead of growing without bound.
    pub(crate) fn push(&self, packet: Packet, stamp: u64, limit: usize) {
        let waker = {
            let mut st = self.state.lock();
            if st.ended || st.overflowed {
                return;
            }
            let unread = (st.first + st.queue.len() as u64 - st.read) as usize;
            if unread >= limit {
                st.overflowed = true;
                let keep = (st.read - st.first) as usize;
                st.queue.truncate(keep);
            } else {
                st.queue.push_back((stamp, packet));
            }
            st.trim();
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the transport's reading: the reader gets `reason`. With `away`,
    /// events keep arriving for a resume; without, the mailbox is over and
    /// drops what it holds. Returns false if the reader was already told.
    pub(crate) fn close(&self, reason: DisconnectReason, away: bool) -> bool {
        let (first, waker) = {
            let mut st = self.state.lock();
            let first = st.closed.is_none();
            if first {
                st.closed = Some(reason);
            }
            if !away {
                st.ended = true;
                st.queue = VecDeque::new();
            }
            (first, st.waker.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        first
    }

    /// Reopens an away mailbox for a resumed session whose client has read
    /// up to (not including) event `from`. Returns the new epoch, or why
    /// `from` is not an event this mailbox can replay from.
    pub(crate) fn reopen(&self, from: u64) -> Result<u64, Unresumable> {
        let mut st = self.state.lock();
        let end = st.first + st.queue.len() as u64;
        // Not past what was handed out: a client cannot have read what was
        // never sent to it.
        if from > st.read.min(end) {
            return Err(Unresumable::Impossible);
        }
        // Not before what is kept.
        if st.ended || st.overflowed || from < st.first {
            return Err(Unresumable::Gone);
        }
        st.read = from;
        st.closed = None;
        st.epoch += 1;
        st.waker = None;
        Ok(st.epoch)
    }

    /// The current epoch, for a new cursor.
    pub(crate) fn epoch(&self) -> u64 {
        self.state.lock().epoch
    }

    /// The sequence number of the next event to hand out.
    pub(crate) fn position(&self) -> u64 {
        self.state.lock().read
    }

    /// Why the transport ended, once it has.
    pub(crate) fn closed_reason(&self) -> Option<DisconnectReason> {
        self.state.lock().closed
    }

    /// Whether a cursor of `epoch` has nothing to read here and may go on:
    /// no event waiting, no close, no overflow, no resume elsewhere.
    pub(crate) fn is_idle(&self, epoch: u64) -> bool {
        let st = self.state.lock();
        st.closed.is_none()
            && st.epoch == epoch
            && !st.overflowed
            && st.read == st.first + st.queue.len() as u64
    }

    /// Why a cursor of `epoch` must stop, if it must: its transport ended,
    /// or a resume has replaced it.
    pub(crate) fn closed_for(&self, epoch: u64) -> Option<DisconnectReason> {
        let st = self.state.lock();
        match st.closed {
            Some(r) => Some(r),
            None if st.epoch != epoch => Some(DisconnectReason::TransportClose),
            None => None,
        }
    }

    /// Unread events held, for tests and stats.
    #[cfg(test)]
    pub(crate) fn unread(&self) -> usize {
        let st = self.state.lock();
        (st.first + st.queue.len() as u64 - st.read) as usize
    }

    /// The next event stamped at or before `upto`, or the close reason.
    /// Pending registers the waker.
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
        epoch: u64,
        upto: u64,
    ) -> Poll<Result<Packet, DisconnectReason>> {
        let mut st = self.state.lock();
        if let Some(reason) = st.closed {
            return Poll::Ready(Err(reason));
        }
        if st.epoch != epoch {
            return Poll::Ready(Err(DisconnectReason::TransportClose));
        }
        if st.overflowed {
            return Poll::Ready(Err(DisconnectReason::SlowReader));
        }
        let index = (st.read - st.first) as usize;
        if let Some((stamp, p)) = st.queue.get(index) {
            if *stamp <= upto {
                let p = p.clone();
                st.read += 1;
                st.trim();
                return Poll::Ready(Ok(p));
            }
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// Why a mailbox cannot resume from a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unresumable {
    /// The position is past anything this mailbox handed out: the cursor
    /// was never this session's.
    Impossible,
    /// The events from there on are no longer held (dropped, overflowed,
    /// or the session is over).
    Gone,
}

impl State {
    /// Drops handed-out events beyond the `retain` newest.
    fn trim(&mut self) {
        while (self.read - self.first) as usize > self.retain {
            self.queue.pop_front();
            self.first += 1;
        }
        if self.queue.is_empty() && self.queue.capacity() > 64 {
            self.queue = VecDeque::new();
        }
    }
}
