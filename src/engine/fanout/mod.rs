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
//! either kind is O(1) plus one wake-up per *waiting* session, given in the
//! order the sessions subscribed (a sort of the waiting ones); a session that
//! has not yet caught up is not woken again.
//!
//! Room events are not in the log: the fan-out keeps the room table and
//! pushes a room event into each member's mailbox, O(members). Each mailbox
//! event is stamped with the log position it was sent at, so a cursor hands
//! out log and mailbox events in the order they were sent. The log is also
//! what connection state recovery replays from: a resumed cursor starts at
//! the client's own position if that is still in the log, and with a
//! recovery window the log drops events older than the window, so the
//! memory a burst took comes back.

mod cursor;
mod sweeper;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::engine::mailbox::Mailbox;
use crate::engine::packet::Packet;
use crate::engine::rooms::{Rooms, Target};
use crate::ops::clock::{ClockCursor, FanoutClock};
use crate::session::{DisconnectReason, Sid};

pub(crate) use cursor::{Delivery, Item};
use sweeper::Sweep;
pub(crate) use sweeper::{DirectWrite, Newest};

thread_local! {
    /// The log's end just after the last everyone-broadcast this thread
    /// appended. A caller that must name the position right after its own
    /// event (the server API's publish cursor) cannot read [`Fanout::end`]
    /// afterwards: another thread may have appended in between, and a page
    /// resuming from that later end would never get the other event.
    static APPENDED_END: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The log's end just after this thread's last everyone-broadcast since the
/// previous call, if it appended one; clears it.
pub(crate) fn take_appended_end() -> Option<u64> {
    APPENDED_END.with(std::cell::Cell::take)
}

/// A node's broadcast log and latest-value slots; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    shared: Arc<Mutex<State>>,
    /// Room membership, each member with its mailbox. Its own lock, so a
    /// room emit to many members never holds up cursors on the log.
    rooms: Arc<Mutex<Rooms<Arc<Mailbox>>>>,
    /// Idle streams owed a latest value, for the sweeper to write.
    sweep: Arc<Sweep>,
    /// Counts every broadcast and times it until its last local write.
    clock: Arc<FanoutClock>,
}

/// One ordinary event in the log.
struct Logged {
    /// The event.
    packet: Packet,
    /// A session that must not get it (`socket.broadcast()`'s sender).
    except: Option<Sid>,
    /// When it was published, for dropping it after the recovery window.
    at: Instant,
}

/// Everything behind the fan-out's one lock. Every critical section is a
/// few field updates or one clone of a packet, never an await.
struct State {
    /// Ordinary events, oldest first; `log[i]` has sequence `first + i`.
    log: VecDeque<Logged>,
    /// The sequence number of `log[0]`.
    first: u64,
    /// Bytes held by `log`, both encodings counted.
    bytes: usize,
    /// The most events `log` keeps: how far behind a reader may fall.
    max_events: usize,
    /// The most bytes `log` keeps; at least the newest event is kept.
    max_bytes: usize,
    /// How far behind the newest event a live cursor may fall before it is
    /// a slow reader (the log may be longer, for recovery).
    max_lag: u64,
    /// Drop events older than this (the recovery window), if set.
    max_age: Option<Duration>,
    /// Unread events a mailbox may hold: room events count against it.
    mailbox_limit: usize,
    /// The newest packet per latest-value name, in first-published order.
    latest: Vec<LatestEntry>,
    /// Bumped on every latest-value publish; each entry keeps the version
    /// that last changed it, so a cursor needs one number to diff.
    latest_version: u64,
    /// Tasks waiting for anything new, by cursor, so that a cursor polled
    /// again registers once and a dropped cursor takes its waker (and the
    /// task it keeps alive) with it.
    waiters: Waiters,
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
        Fanout::with_recovery(max_events, max_events, max_bytes, None)
    }

    /// A fan-out whose live readers may fall `max_lag` events behind, whose
    /// log keeps up to `max_events` events and `max_bytes` (at least the
    /// newest one) for resumes, and, with `max_age`, nothing older.
    pub fn with_recovery(
        max_lag: usize,
        max_events: usize,
        max_bytes: usize,
        max_age: Option<Duration>,
    ) -> Fanout {
        Fanout {
            shared: Arc::new(Mutex::new(State {
                log: VecDeque::new(),
                first: 0,
                bytes: 0,
                max_events: max_events.max(max_lag).max(1),
                max_bytes,
                max_lag: max_lag.max(1) as u64,
                max_age,
                mailbox_limit: max_lag.max(1),
                latest: Vec::new(),
                latest_version: 0,
                waiters: Waiters::default(),
                next_cursor: 0,
            })),
            rooms: Arc::new(Mutex::new(Rooms::default())),
            sweep: Arc::default(),
            clock: Arc::default(),
        }
    }

    /// Queues an ordinary event for every session.
    pub fn publish(&self, packet: Packet) {
        self.publish_to(&Target::all(), packet);
    }

    /// Queues an ordinary event for the sessions `target` names: the log
    /// for everyone (less `except`), the members' mailboxes for rooms.
    pub fn publish_to(&self, target: &Target, packet: Packet) {
        if !target.is_all() {
            let (stamp, limit) = {
                let st = self.shared.lock();
                (st.end(), st.mailbox_limit)
            };
            let members = self.rooms.lock().members(&target.rooms, target.except);
            for (_, mailbox) in members {
                mailbox.push(packet.clone(), stamp, limit);
            }
            return;
        }
        // The clock must know of the event before anyone is woken for it.
        let waiters = self.clock.publish(false, || {
            let mut st = self.shared.lock();
            st.bytes += size(&packet);
            let now = Instant::now();
            st.log.push_back(Logged {
                packet,
                except: target.except,
                at: now,
            });
            st.trim(now);
            let end = st.end();
            APPENDED_END.with(|c| c.set(Some(end)));
            st.drain_waiters()
        });
        wake(waiters, None);
    }

    /// The broadcast counts and timing, for `/metrics`.
    pub(crate) fn clock(&self) -> &Arc<FanoutClock> {
        &self.clock
    }

    /// Drops events older than the recovery window; returns when the oldest
    /// left will be, so the reaper can come back then.
    pub(crate) fn trim_aged(&self) -> Option<Instant> {
        let mut st = self.shared.lock();
        st.trim(Instant::now());
        let age = st.max_age?;
        st.log.front().map(|e| e.at + age)
    }

    /// The sequence number the next published event will get.
    pub(crate) fn end(&self) -> u64 {
        self.shared.lock().end()
    }

    /// Whether a cursor may resume at `seq`: it is still in the log (or is
    /// the very next event).
    pub(crate) fn can_resume_at(&self, seq: u64) -> bool {
        let st = self.shared.lock();
        st.first <= seq && seq <= st.end()
    }

    /// Events in the log and their bytes, for tests and stats.
    pub fn log_size(&self) -> (usize, usize) {
        let st = self.shared.lock();
        (st.log.len(), st.bytes)
    }

    /// Adds `sid` (read through `mailbox`) to `room`; false if that would
    /// put it in more than `max` rooms.
    pub(crate) fn join(&self, room: &str, sid: Sid, mailbox: &Arc<Mailbox>, max: usize) -> bool {
        self.rooms.lock().join(room, sid, mailbox.clone(), max)
    }

    /// Removes `sid` from `room`.
    pub(crate) fn leave(&self, room: &str, sid: Sid) {
        self.rooms.lock().leave(room, sid);
    }

    /// Removes `sid` from every room.
    pub(crate) fn leave_all(&self, sid: Sid) {
        self.rooms.lock().leave_all(sid);
    }

    /// The rooms `sid` is in.
    pub(crate) fn rooms_of(&self, sid: Sid) -> Vec<Arc<str>> {
        self.rooms.lock().rooms_of(sid)
    }

    /// Members of `room` on this node.
    pub(crate) fn room_len(&self, room: &str) -> usize {
        self.rooms.lock().len(room)
    }

    /// Members of any of `rooms` on this node, each once, less `except`.
    pub(crate) fn room_members(&self, rooms: &[Arc<str>], except: Option<Sid>) -> usize {
        self.rooms.lock().members(rooms, except).len()
    }

    /// Every room with members on this node, with them, sorted.
    /// Every member of any of `rooms` once, but `except`.
    pub(crate) fn room_sids(&self, rooms: &[Arc<str>], except: Option<Sid>) -> Vec<Sid> {
        let members = self.rooms.lock().members(rooms, except);
        members.into_iter().map(|(sid, _)| sid).collect()
    }

    pub(crate) fn room_list(&self) -> Vec<(Arc<str>, Vec<Sid>)> {
        self.rooms.lock().list()
    }

    /// Rooms with members on this node.
    pub(crate) fn room_count(&self) -> usize {
        self.rooms.lock().room_count()
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
        wake(waiters, Some(&self.sweep));
    }
}

impl State {
    /// The sequence number the next published event will get.
    fn end(&self) -> u64 {
        self.first + self.log.len() as u64
    }

    /// Drops the oldest events while the log is over a limit, or older than
    /// the recovery window.
    fn trim(&mut self, now: Instant) {
        loop {
            let over = self.log.len() > self.max_events
                || (self.bytes > self.max_bytes && self.log.len() > 1);
            let aged = match (self.max_age, self.log.front()) {
                (Some(age), Some(e)) => e.at + age <= now,
                _ => false,
            };
            if !(over || aged) {
                break;
            }
            let Some(old) = self.log.pop_front() else {
                break;
            };
            self.bytes -= size(&old.packet);
            self.first += 1;
        }
        // A burst grew the ring; give it back once it has drained.
        if self.log.capacity() > 64 && self.log.capacity() > 4 * self.log.len() {
            self.log.shrink_to(2 * self.log.len());
        }
    }

    /// The first latest value changed after version `seen`, which moves to
    /// now; the others changed wait in `ready`.
    fn latest_since(&self, seen: &mut u64, ready: &mut Vec<Packet>) -> Option<Packet> {
        if self.latest_version <= *seen {
            return None;
        }
        let since = *seen;
        let mut changed = self
            .latest
            .iter()
            .filter(|e| e.version > since)
            .map(|e| e.packet.clone());
        let first = changed.next();
        // Usually one value changed (the count): handed out at once, so an
        // idle cursor keeps no buffer for the rest.
        let mut rest: Vec<Packet> = changed.collect();
        rest.reverse();
        *ready = rest;
        *seen = self.latest_version;
        first
    }

    fn drain_waiters(&mut self) -> Waiters {
        std::mem::take(&mut self.waiters)
    }
}

/// Waiting tasks by cursor id. Every delivery registers its task here again,
/// so the table is on the fan-out's hot path. Ordered rather than hashed:
/// cursor ids are a counter, in the order the sessions started, and the
/// sweeper and woken tasks wait again in that order, so each insert lands
/// in the node the last one touched instead of at a random slot of a table
/// the size of every stream; a publish then takes them in order, unsorted.
type Waiters = BTreeMap<u64, Waiter>;

/// A waiting cursor's task, and the stream it feeds if that stream can take
/// a latest value from the fan-out's sweeper.
struct Waiter {
    waker: Waker,
    direct: Option<Weak<dyn DirectWrite>>,
}

/// Wakes outside the lock, so woken tasks on the other core do not queue
/// behind it.
///
/// In cursor order, the table's own, which is the order the sessions
/// started in: their sockets and tasks were allocated in that order too, so
/// the writes that follow walk memory (the kernel's as well as ours) mostly
/// forwards instead of at random.
///
/// After a latest value, streams that the sweeper may write to go to it
/// instead, when one runs ([`DirectWrite`]).
fn wake(waiters: Waiters, sweep: Option<&Sweep>) {
    // Straight into the sweeper's queue, whose buffer is reused from sweep
    // to sweep; the rest are woken once the queue's lock is let go, since
    // a waker may run anything.
    if let Some(sweep) = sweep {
        let mut q = sweep.queue.lock();
        if q.running {
            let mut others = Vec::new();
            let mut queued = false;
            for (id, w) in waiters {
                if w.direct.is_some() {
                    q.streams.push((id, w));
                    queued = true;
                } else {
                    others.push(w);
                }
            }
            drop(q);
            if queued {
                sweep.ready.notify_one();
            }
            for w in others {
                w.waker.wake();
            }
            return;
        }
    }
    for (_, w) in waiters {
        w.waker.wake();
    }
}

/// Helpers the fan-out's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    use serde_json::Value;

    use super::{Delivery, Item};
    use crate::engine::packet::Packet;

    pub(crate) fn next(d: &mut Delivery) -> Poll<Item> {
        d.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    pub(crate) fn packet(d: &mut Delivery) -> Packet {
        match next(d) {
            Poll::Ready(Item::Packet(p) | Item::Latest(p)) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    pub(crate) fn p(name: &str, v: i64) -> Packet {
        Packet::new(name, &Value::from(v))
    }

    pub(crate) struct Count(pub(crate) std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub(crate) fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(Default::default()));
        (c.clone(), Waker::from(c))
    }

    pub(crate) fn woken(c: &Count) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    //! The log's bounds, the waiter table's wake order and room delivery.

    use std::task::{Context, Poll, Waker};

    use serde_json::Value;

    use super::*;
    use crate::engine::fanout::testing::*;

    struct Order(u32, Arc<parking_lot::Mutex<Vec<u32>>>);

    impl std::task::Wake for Order {
        fn wake(self: Arc<Self>) {
            self.1.lock().push(self.0);
        }
    }

    #[test]
    fn waiting_cursors_are_woken_in_the_order_they_subscribed() {
        let fanout = Fanout::new(8);
        let woke = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut cursors: Vec<Delivery> = (0..200)
            .map(|_| fanout.subscribe(Arc::new(Mailbox::default())))
            .collect();
        // Registered in a scrambled order, so that only the wake-up's own
        // ordering can put them back in line.
        for i in (0..200u32).map(|i| (i * 7919) % 200) {
            let waker = Waker::from(Arc::new(Order(i, woke.clone())));
            let d = &mut cursors[i as usize];
            assert!(d.poll_next(&mut Context::from_waker(&waker)).is_pending());
        }
        fanout.publish_latest("count", p("count", 1));
        assert_eq!(*woke.lock(), (0..200).collect::<Vec<u32>>());
    }

    #[test]
    fn a_thread_learns_the_end_after_its_own_event_whatever_others_append() {
        let fanout = Fanout::new(64);
        assert_eq!(take_appended_end(), None);
        fanout.publish(p("chat", 1));
        let mine = take_appended_end().expect("an append was noted");
        // Another thread appends before this one looks again: the end this
        // thread learnt stays the one right after its own event.
        let other = fanout.clone();
        std::thread::spawn(move || {
            other.publish(p("chat", 2));
            assert_eq!(take_appended_end(), Some(mine + 1));
        })
        .join()
        .unwrap();
        assert_eq!(fanout.end(), mine + 1);
        assert_eq!(take_appended_end(), None, "taken once");
        fanout.publish(p("chat", 3));
        assert_eq!(take_appended_end(), Some(mine + 2));
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
    fn a_room_event_reaches_only_members_and_broadcast_skips_its_sender() {
        let fanout = Fanout::new(8);
        let (a, b, c) = (Sid::new_v4(), Sid::new_v4(), Sid::new_v4());
        let boxes: Vec<Arc<Mailbox>> = (0..3).map(|_| Arc::new(Mailbox::default())).collect();
        let mut ds: Vec<Delivery> = [a, b, c]
            .iter()
            .zip(&boxes)
            .map(|(sid, m)| fanout.subscribe_at(*sid, m.clone(), None))
            .collect();
        assert!(fanout.join("r", a, &boxes[0], 8));
        assert!(fanout.join("r", b, &boxes[1], 8));
        let to_r = Target {
            rooms: vec!["r".into()],
            except: Some(a),
        };
        fanout.publish_to(&to_r, p("room", 1));
        fanout.publish_to(
            &Target {
                rooms: vec![],
                except: Some(c),
            },
            p("all", 2),
        );
        assert_eq!(boxes[2].unread(), 0);
        assert_eq!(packet(&mut ds[0]), p("all", 2));
        assert!(next(&mut ds[0]).is_pending());
        assert_eq!(packet(&mut ds[1]), p("room", 1));
        assert_eq!(packet(&mut ds[1]), p("all", 2));
        assert!(next(&mut ds[2]).is_pending());
        fanout.leave_all(b);
        assert_eq!(fanout.room_len("r"), 1);
    }

    #[test]
    fn a_burst_leaves_the_log_bounded_and_its_memory_comes_back() {
        let fanout = Fanout::with_recovery(4, 16, usize::MAX, Some(Duration::from_millis(1)));
        for n in 0..1000 {
            fanout.publish(p("chat", n));
        }
        assert_eq!(fanout.log_size().0, 16);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(fanout.trim_aged(), None);
        assert_eq!(fanout.log_size(), (0, 0));
        assert!(fanout.shared.lock().log.capacity() <= 64);
    }
}
