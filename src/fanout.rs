//! One node's delivery of broadcasts to its sessions, and each session's
//! cursor into it.
//!
//! Two kinds of broadcast travel differently:
//! - ordinary events (`chat message`) go into one bounded log, each with a
//!   sequence number: every session reads every one in order, and a session
//!   whose next event has already left the log is dropped as a slow reader
//!   rather than silently skipping events. The log is bounded in events and
//!   in bytes, so its memory is bounded whatever the readers do;
//! - latest-value events (`user count`) go into a slot per name holding the
//!   newest packet: a session that is behind reads only the newest value, so
//!   churn never queues stale counts and a stalled reader costs nothing.
//!
//! A cursor is two numbers (its next sequence number and the latest-value
//! version it has seen), so an idle session costs a few words here. Publishing
//! either kind is O(1) plus one wake-up per *waiting* session; a session that
//! has not yet caught up is not woken again.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::mailbox::Mailbox;
use crate::metrics::{ClockCursor, FanoutClock};
use crate::packet::Packet;
use crate::session::DisconnectReason;

/// A node's broadcast log and latest-value slots; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    shared: Arc<Mutex<State>>,
    /// Counts every broadcast and times it until its last local write.
    clock: Arc<FanoutClock>,
}

/// Everything behind the fan-out's one lock. Every critical section is a
/// few field updates or one clone of a packet, never an await.
struct State {
    /// Ordinary events, oldest first; `log[i]` has sequence `first + i`.
    log: VecDeque<Packet>,
    /// The sequence number of `log[0]`.
    first: u64,
    /// Bytes held by `log`, both encodings counted.
    bytes: usize,
    /// The most events `log` keeps: how far behind a reader may fall.
    max_events: usize,
    /// The most bytes `log` keeps; at least the newest event is kept.
    max_bytes: usize,
    /// The newest packet per latest-value name, in first-published order.
    latest: Vec<LatestEntry>,
    /// Bumped on every latest-value publish; each entry keeps the version
    /// that last changed it, so a cursor needs one number to diff.
    latest_version: u64,
    /// Tasks waiting for anything new, by cursor, so that a cursor polled
    /// again registers once and a dropped cursor takes its waker (and the
    /// task it keeps alive) with it.
    waiters: HashMap<u64, Waker>,
    /// The id the next cursor gets.
    next_cursor: u64,
}

struct LatestEntry {
    /// The event name this slot holds the newest value of.
    name: Arc<str>,
    /// `latest_version` when this slot last changed.
    version: u64,
    /// The newest value.
    packet: Packet,
}

fn size(p: &Packet) -> usize {
    p.sse.len() + p.json.len()
}

impl Fanout {
    /// A fan-out whose log holds `capacity` ordinary events.
    pub fn new(capacity: usize) -> Fanout {
        Fanout::with_limits(capacity, usize::MAX)
    }

    /// A fan-out whose log holds at most `max_events` ordinary events and
    /// `max_bytes` of them (always at least the newest one).
    pub fn with_limits(max_events: usize, max_bytes: usize) -> Fanout {
        Fanout {
            clock: Arc::default(),
            shared: Arc::new(Mutex::new(State {
                log: VecDeque::new(),
                first: 0,
                bytes: 0,
                max_events: max_events.max(1),
                max_bytes,
                latest: Vec::new(),
                latest_version: 0,
                waiters: HashMap::new(),
                next_cursor: 0,
            })),
        }
    }

    /// Queues an ordinary event for every session.
    pub fn publish(&self, packet: Packet) {
        // The clock must know of the event before anyone is woken for it.
        let waiters = self.clock.publish(false, || {
            let mut st = self.shared.lock();
            st.bytes += size(&packet);
            st.log.push_back(packet);
            while st.log.len() > st.max_events || (st.bytes > st.max_bytes && st.log.len() > 1) {
                if let Some(old) = st.log.pop_front() {
                    st.bytes -= size(&old);
                    st.first += 1;
                }
            }
            st.drain_waiters()
        });
        wake(waiters);
    }

    /// The broadcast counts and timing, for `/metrics`.
    pub(crate) fn clock(&self) -> &Arc<FanoutClock> {
        &self.clock
    }

    /// Replaces the newest value of a latest-value event.
    pub fn publish_latest(&self, name: &str, packet: Packet) {
        let waiters = self.clock.publish(true, || {
            let mut st = self.shared.lock();
            st.latest_version += 1;
            let version = st.latest_version;
            match st.latest.iter_mut().find(|e| &*e.name == name) {
                Some(entry) => {
                    entry.version = version;
                    entry.packet = packet;
                }
                None => st.latest.push(LatestEntry {
                    name: Arc::from(name),
                    version,
                    packet,
                }),
            }
            st.drain_waiters()
        });
        wake(waiters);
    }

    /// A cursor for one session, starting from now: it will see the current
    /// latest values and every ordinary event published from here on.
    pub(crate) fn subscribe(&self, mailbox: Arc<Mailbox>) -> Delivery {
        let (cursor, (id, next)) = self.clock.subscribe(|| {
            let mut st = self.shared.lock();
            st.next_cursor += 1;
            (st.next_cursor, st.first + st.log.len() as u64)
        });
        Delivery {
            clock: self.clock.clone(),
            cursor,
            caught_up: None,
            shared: self.shared.clone(),
            mailbox,
            id,
            next,
            latest_seen: 0,
            ready: Vec::new(),
            held: None,
        }
    }
}

impl State {
    fn drain_waiters(&mut self) -> HashMap<u64, Waker> {
        // The same readers will wait again at once: give the new table their
        // room up front instead of growing it one rehash at a time.
        let room = self.waiters.len();
        std::mem::replace(&mut self.waiters, HashMap::with_capacity(room))
    }
}

/// Wakes outside the lock, so woken tasks on the other core do not queue
/// behind it.
fn wake(waiters: HashMap<u64, Waker>) {
    for (_, w) in waiters {
        w.wake();
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
/// event log and its own mailbox of direct events.
pub(crate) struct Delivery {
    /// The node's log and slots.
    shared: Arc<Mutex<State>>,
    /// The session's direct events and close flag; the cursor holds only
    /// this, so a parked cursor never keeps its session alive.
    mailbox: Arc<Mailbox>,
    /// Sequence number of the next ordinary event to read.
    next: u64,
    /// The latest-value version this cursor has diffed up to.
    latest_seen: u64,
    /// This cursor's key in the waiter table.
    id: u64,
    /// Latest-value packets found changed but not yet handed out, in
    /// reverse order so that `pop` yields table order.
    ready: Vec<Packet>,
    /// The fan-out's clock, told when this cursor has written everything.
    clock: Arc<FanoutClock>,
    /// Which broadcasts this cursor has settled with the clock.
    cursor: ClockCursor,
    /// The newest broadcast found fully handed out at the last `Pending`,
    /// until the transport says it is written ([`Delivery::settle`]).
    caught_up: Option<u64>,
    /// A packet handed out and given back unsent (it did not fit a poll
    /// answer's byte bound); the next call yields it first.
    held: Option<Packet>,
}

impl Delivery {
    /// The next item, in priority order: a close beats everything, then
    /// latest values, then ordinary broadcasts, then direct events.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        // Read before looking: everything up to here is handed out once
        // nothing is left.
        let newest = self.clock.newest();
        let next = self.poll_sources(cx);
        if next.is_pending() {
            self.caught_up = Some(newest);
        }
        next
    }

    /// The transport has written everything handed out before the last
    /// `Pending`: those broadcasts are done as far as this session goes.
    pub(crate) fn settle(&mut self) {
        if let Some(upto) = self.caught_up.take() {
            self.clock.settle(&mut self.cursor, upto);
        }
    }

    fn poll_sources(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        if let Some(reason) = self.mailbox.closed_reason() {
            return Poll::Ready(Item::Close(reason));
        }
        if let Some(p) = self.held.take() {
            return Poll::Ready(Item::Packet(p));
        }
        if let Some(p) = self.ready.pop() {
            return Poll::Ready(Item::Packet(p));
        }
        {
            let mut st = self.shared.lock();
            if st.latest_version > self.latest_seen {
                for entry in st.latest.iter().rev() {
                    if entry.version > self.latest_seen {
                        self.ready.push(entry.packet.clone());
                    }
                }
                self.latest_seen = st.latest_version;
                if let Some(p) = self.ready.pop() {
                    return Poll::Ready(Item::Packet(p));
                }
            }
            if self.next < st.first {
                return Poll::Ready(Item::Close(DisconnectReason::SlowReader));
            }
            let index = (self.next - st.first) as usize;
            if let Some(p) = st.log.get(index) {
                self.next += 1;
                return Poll::Ready(Item::Packet(p.clone()));
            }
            // A polling session's cursor moves from one request's task to
            // the next, so the waker is compared, not just its presence.
            match st.waiters.entry(self.id) {
                Entry::Occupied(e) if e.get().will_wake(cx.waker()) => {}
                Entry::Occupied(mut e) => {
                    e.insert(cx.waker().clone());
                }
                Entry::Vacant(e) => {
                    e.insert(cx.waker().clone());
                }
            }
        }
        match self.mailbox.poll_next(cx) {
            Poll::Ready(Ok(p)) => Poll::Ready(Item::Packet(p)),
            Poll::Ready(Err(reason)) => Poll::Ready(Item::Close(reason)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Delivery {
    /// Gives back the packet `poll_next` just yielded, unsent: the next call
    /// yields it again, before anything else but a close.
    pub(crate) fn put_back(&mut self, packet: Packet) {
        debug_assert!(self.held.is_none(), "one packet put back at a time");
        self.held = Some(packet);
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.clock.unsubscribe(&mut self.cursor);
        self.shared.lock().waiters.remove(&self.id);
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

    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(Default::default()));
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_cursor_that_moves_to_another_task_wakes_that_task() {
        let fanout = Fanout::new(8);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        assert!(d
            .poll_next(&mut Context::from_waker(&first_waker))
            .is_pending());
        assert!(d
            .poll_next(&mut Context::from_waker(&second_waker))
            .is_pending());
        fanout.publish(p("chat", 1));
        assert_eq!((woken(&first), woken(&second)), (0, 1));
        // Drained on publish: polling again without news registers again.
        assert_eq!(packet(&mut d), p("chat", 1));
        assert!(d
            .poll_next(&mut Context::from_waker(&second_waker))
            .is_pending());
        assert!(d
            .poll_next(&mut Context::from_waker(&second_waker))
            .is_pending());
        fanout.publish_latest("count", p("count", 1));
        assert_eq!(woken(&second), 2);
    }

    #[test]
    fn a_dropped_cursor_leaves_no_waker_behind() {
        let fanout = Fanout::new(8);
        let (c, waker) = counter();
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        assert!(d.poll_next(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(fanout.shared.lock().waiters.len(), 1);
        drop(d);
        assert_eq!(fanout.shared.lock().waiters.len(), 0);
        fanout.publish(p("chat", 1));
        assert_eq!(woken(&c), 0);
    }

    #[test]
    fn the_log_is_bounded_in_bytes_and_keeps_the_newest_event() {
        let fanout = Fanout::with_limits(100, 200);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        let big = Packet::new("chat", &Value::from("x".repeat(150)));
        fanout.publish(p("chat", 1));
        fanout.publish(big.clone());
        // Both encodings of the big one exceed 200 bytes on their own: it
        // stays, the older one goes, and this reader has lost an event.
        assert_eq!(fanout.shared.lock().log.len(), 1);
        assert!(matches!(
            next(&mut d),
            Poll::Ready(Item::Close(DisconnectReason::SlowReader))
        ));
        let mut fresh = fanout.subscribe(Arc::new(Mailbox::default()));
        assert!(next(&mut fresh).is_pending());
        fanout.publish(p("chat", 2));
        assert_eq!(packet(&mut fresh), p("chat", 2));
    }

    #[test]
    fn a_packet_put_back_comes_first_again() {
        let fanout = Fanout::new(8);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        fanout.publish(p("chat", 1));
        fanout.publish(p("chat", 2));
        let first = packet(&mut d);
        d.put_back(first.clone());
        assert_eq!(packet(&mut d), first);
        assert_eq!(packet(&mut d), p("chat", 2));
        assert!(next(&mut d).is_pending());
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
