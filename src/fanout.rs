//! One node's delivery of broadcasts to its sessions, and each session's
//! cursor into it.
//!
//! Two kinds of broadcast travel differently:
//! - ordinary events (`chat message`) go through a bounded ring
//!   (`tokio::sync::broadcast`): each session reads every one in order, and a
//!   session that falls a whole ring behind is dropped as a slow reader
//!   rather than silently skipping events;
//! - latest-value events (`user count`) go through a `watch` slot holding the
//!   newest packet per name: a session that is behind reads only the newest
//!   value, so churn never queues stale counts and a stalled reader costs
//!   nothing.
//!
//! Publishing either kind is O(1) plus one wake-up per *waiting* session; a
//! session that has not yet caught up is not woken again.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::Stream;

use crate::mailbox::Mailbox;
use crate::packet::Packet;
use crate::session::DisconnectReason;

/// The newest packet of every latest-value event name, with a sequence
/// number per entry so a cursor can tell which ones it has already sent.
#[derive(Debug, Default, Clone)]
pub struct LatestTable {
    /// Entries are only ever appended or replaced in place, so an index is a
    /// stable key for a cursor's `seen` vector.
    entries: Vec<LatestEntry>,
}

#[derive(Debug, Clone)]
struct LatestEntry {
    /// The event name this slot holds the newest value of.
    name: Arc<str>,
    /// Bumped on every publish, so a cursor compares numbers, not packets.
    seq: u64,
    /// The newest value.
    packet: Packet,
}

/// A node's broadcast channels; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    /// The ordered ring for ordinary events; its capacity is the most events
    /// a session may fall behind before it is dropped.
    events: broadcast::Sender<Packet>,
    /// The latest-value slots.
    latest: Arc<watch::Sender<Arc<LatestTable>>>,
}

impl Fanout {
    /// A fan-out whose ring holds `capacity` ordinary events.
    pub fn new(capacity: usize) -> Fanout {
        let (events, _) = broadcast::channel(capacity.max(1));
        let (latest, _) = watch::channel(Arc::new(LatestTable::default()));
        Fanout {
            events,
            latest: Arc::new(latest),
        }
    }

    /// Queues an ordinary event for every session.
    pub fn publish(&self, packet: Packet) {
        // No receivers is not an error: nobody is connected.
        let _ = self.events.send(packet);
    }

    /// Replaces the newest value of a latest-value event.
    pub fn publish_latest(&self, name: &str, packet: Packet) {
        self.latest.send_modify(|table| {
            let table = Arc::make_mut(table);
            match table.entries.iter_mut().find(|e| &*e.name == name) {
                Some(entry) => {
                    entry.seq += 1;
                    entry.packet = packet;
                }
                None => table.entries.push(LatestEntry {
                    name: Arc::from(name),
                    seq: 1,
                    packet,
                }),
            }
        });
    }

    /// A cursor for one session, starting from now: it will see the current
    /// latest values and every ordinary event published from here on.
    pub(crate) fn subscribe(&self, mailbox: Arc<Mailbox>) -> Delivery {
        Delivery {
            mailbox,
            events: BroadcastStream::new(self.events.subscribe()),
            latest: WatchStream::new(self.latest.subscribe()),
            seen: Vec::new(),
            ready: Vec::new(),
        }
    }
}

/// What a transport receives next for its session.
#[derive(Debug)]
pub(crate) enum Item {
    /// An event to send.
    Packet(Packet),
    /// The session is over; the transport tells the client why and stops.
    Close(DisconnectReason),
}

/// One session's read position across the latest-value slots, the ordinary
/// event ring and its own mailbox of direct events.
pub(crate) struct Delivery {
    /// The session's direct events and close flag; the cursor holds only
    /// this, so a parked cursor never keeps its session alive.
    mailbox: Arc<Mailbox>,
    /// Position in the ordinary-event ring.
    events: BroadcastStream<Packet>,
    /// Wakes when any latest-value slot changes.
    latest: WatchStream<Arc<LatestTable>>,
    /// Sequence number last sent, per latest-table index.
    seen: Vec<u64>,
    /// Latest-value packets found changed but not yet handed out.
    ready: Vec<Packet>,
}

impl Delivery {
    /// The next item, in priority order: a close beats everything, then
    /// latest values, then ordinary broadcasts, then direct events.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        if let Some(reason) = self.mailbox.closed_reason() {
            return Poll::Ready(Item::Close(reason));
        }
        loop {
            if let Some(p) = self.ready.pop() {
                return Poll::Ready(Item::Packet(p));
            }
            match Pin::new(&mut self.latest).poll_next(cx) {
                Poll::Ready(Some(table)) => {
                    self.diff(&table);
                    continue;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        match Pin::new(&mut self.events).poll_next(cx) {
            Poll::Ready(Some(Ok(p))) => return Poll::Ready(Item::Packet(p)),
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => {
                return Poll::Ready(Item::Close(DisconnectReason::SlowReader))
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        match self.mailbox.poll_next(cx) {
            Poll::Ready(Ok(p)) => Poll::Ready(Item::Packet(p)),
            Poll::Ready(Err(reason)) => Poll::Ready(Item::Close(reason)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn diff(&mut self, table: &LatestTable) {
        if self.seen.len() < table.entries.len() {
            self.seen.resize(table.entries.len(), 0);
        }
        // Reverse so that `pop` hands them out in table order.
        for (i, entry) in table.entries.iter().enumerate().rev() {
            if entry.seq != self.seen[i] {
                self.seen[i] = entry.seq;
                self.ready.push(entry.packet.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! `Delivery`'s priority order and its lag handling, without HTTP.

    use std::task::{Context, Poll, Waker};

    use serde_json::Value;

    use super::*;

    fn next(d: &mut Delivery) -> Poll<Item> {
        d.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    fn packet(d: &mut Delivery) -> Packet {
        match next(d) {
            Poll::Ready(Item::Packet(p)) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn p(name: &str, v: i64) -> Packet {
        Packet::new(name, &Value::from(v))
    }

    #[test]
    fn latest_beat_ordinary_beat_direct_and_close_beats_all() {
        let fanout = Fanout::new(8);
        let mailbox = Arc::new(Mailbox::default());
        let mut d = fanout.subscribe(mailbox.clone());
        mailbox.push(p("direct", 1), 8);
        fanout.publish(p("chat", 2));
        fanout.publish_latest("count", p("count", 3));
        assert_eq!(packet(&mut d), p("count", 3));
        assert_eq!(packet(&mut d), p("chat", 2));
        assert_eq!(packet(&mut d), p("direct", 1));
        assert!(next(&mut d).is_pending());

        fanout.publish(p("chat", 4));
        fanout.publish_latest("count", p("count", 5));
        mailbox.close(DisconnectReason::ClientClose);
        assert!(matches!(
            next(&mut d),
            Poll::Ready(Item::Close(DisconnectReason::ClientClose))
        ));
    }

    #[test]
    fn a_cursor_behind_on_latest_values_reads_only_the_newest() {
        let fanout = Fanout::new(8);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        for n in 0..100 {
            fanout.publish_latest("count", p("count", n));
        }
        fanout.publish_latest("other", p("other", 1));
        assert_eq!(packet(&mut d), p("count", 99));
        assert_eq!(packet(&mut d), p("other", 1));
        assert!(next(&mut d).is_pending());
    }

    #[test]
    fn falling_a_whole_ring_behind_is_a_slow_reader() {
        let fanout = Fanout::new(4);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        for n in 0..4 {
            fanout.publish(p("chat", n));
        }
        // Exactly the ring's capacity behind still reads everything.
        for n in 0..4 {
            assert_eq!(packet(&mut d), p("chat", n));
        }
        for n in 0..5 {
            fanout.publish(p("chat", n));
        }
        assert!(matches!(
            next(&mut d),
            Poll::Ready(Item::Close(DisconnectReason::SlowReader))
        ));
    }

    #[test]
    fn an_overflowing_mailbox_is_a_slow_reader() {
        let fanout = Fanout::new(4);
        let mailbox = Arc::new(Mailbox::default());
        let mut d = fanout.subscribe(mailbox.clone());
        for n in 0..3 {
            mailbox.push(p("direct", n), 2);
        }
        assert!(matches!(
            next(&mut d),
            Poll::Ready(Item::Close(DisconnectReason::SlowReader))
        ));
    }
}
