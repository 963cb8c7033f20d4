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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::mailbox::Mailbox;
use crate::metrics::{ClockCursor, FanoutClock};
use crate::packet::Packet;
use crate::rooms::{Rooms, Target};
use crate::session::{DisconnectReason, Sid};

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

    /// A cursor for one session, starting from now: it will see the current
    /// latest values and every ordinary event published from here on.
    #[cfg(test)]
    pub(crate) fn subscribe(&self, mailbox: Arc<Mailbox>) -> Delivery {
        self.subscribe_at(Sid::nil(), mailbox, None)
    }

    /// A cursor for session `sid`, starting at log sequence `from` (a
    /// resume; the caller checked [`Fanout::can_resume_at`]) or from now.
    pub(crate) fn subscribe_at(
        &self,
        sid: Sid,
        mailbox: Arc<Mailbox>,
        from: Option<u64>,
    ) -> Delivery {
        let (cursor, (id, next)) = self.clock.subscribe(|| {
            let mut st = self.shared.lock();
            st.next_cursor += 1;
            (st.next_cursor, from.unwrap_or_else(|| st.end()))
        });
        Delivery {
            clock: self.clock.clone(),
            cursor,
            caught_up: None,
            held: None,
            shared: self.shared.clone(),
            epoch: mailbox.epoch(),
            mailbox,
            sid,
            id,
            next,
            latest_seen: 0,
            ready: Vec::new(),
            direct: None,
        }
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
        // The same readers will wait again at once: give the new table their
        // room up front instead of growing it one rehash at a time.
        let room = self.waiters.len();
        std::mem::replace(
            &mut self.waiters,
            HashMap::with_capacity_and_hasher(room, Default::default()),
        )
    }
}

/// Waiting tasks by cursor id. Every delivery registers its task here again,
/// so the hash is on the fan-out's hot path; cursor ids are a counter, never
/// chosen by a client, so spreading them needs one multiply, not SipHash.
type Waiters = HashMap<u64, Waiter, BuildHasherDefault<IdHasher>>;

/// A waiting cursor's task, and the stream it feeds if that stream can take
/// a latest value from the fan-out's sweeper.
struct Waiter {
    waker: Waker,
    direct: Option<Weak<dyn DirectWrite>>,
}

/// A stream that the fan-out's sweeper may write latest values to itself.
///
/// Waking an idle stream's task to write one small event costs scheduling
/// and first touches of the task's memory: at 10k streams, ssio's own code
/// was 14% of a fan-out's CPU with a task woken per stream, and under 5%
/// with the sweeper.
/// So, on a one-thread runtime, an idle stream whose only news is one
/// latest value is written by the sweeper, one task that walks every such
/// stream in the order they subscribed. Anything else (a stream busy
/// writing, behind on other events, closing, or whose socket is full) has
/// its task woken as before, which then finds its events the usual way.
///
/// The sweeper runs after the publish, not inside it: publishes that come
/// faster than the sweeper writes are conflated exactly as they are for
/// woken tasks, each stream getting the newest value once.
pub(crate) trait DirectWrite: Send + Sync {
    /// Writes the one latest value in `newest` the stream owes, if that is
    /// all it owes and it is idle, and then waits again with `waker`.
    fn write_latest(&self, newest: &Newest, waker: &Waker) -> Swept;
}

/// What a [`DirectWrite`] did with a latest value.
pub(crate) enum Swept {
    /// Written whole; the stream waits again without its task.
    Waiting,
    /// Written, whole or in part; the task must be woken, to finish the
    /// write or for something published meanwhile.
    Wake,
    /// Not written: the task must be woken to find it the usual way.
    Untouched,
}

/// The latest values as the sweeper found them, for one sweep.
pub(crate) struct Newest {
    /// The latest-value version.
    version: u64,
    /// The log's end: a cursor there owes no ordinary event.
    end: u64,
    /// The fan-out clock's newest generation, read before the rest: a
    /// cursor that has written all of this has written that generation.
    generation: u64,
    /// Every latest value with the version that last changed it.
    values: Vec<(u64, Packet, OnceLock<Bytes>)>,
}

impl Newest {
    /// The one value a cursor that has seen `seen` owes, if it is one.
    fn only_change_since(&self, seen: u64) -> Option<usize> {
        if seen >= self.version {
            return None;
        }
        let mut changed = (0..self.values.len()).filter(|&i| self.values[i].0 > seen);
        let first = changed.next()?;
        changed.next().is_none().then_some(first)
    }

    /// Value `i`.
    pub(crate) fn packet(&self, i: usize) -> &Packet {
        &self.values[i].1
    }

    /// Value `i` framed by a transport, framed once for every stream.
    pub(crate) fn framed(&self, i: usize, frame: impl FnOnce(&Packet) -> Bytes) -> &Bytes {
        let (_, packet, framed) = &self.values[i];
        framed.get_or_init(|| frame(packet))
    }
}

/// Streams queued for the sweeper.
#[derive(Default)]
struct Sweep {
    queue: Mutex<SweepQueue>,
    /// Told when the queue gains streams.
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct SweepQueue {
    /// A sweeper is running; without one, streams are woken as before.
    running: bool,
    /// Waiting streams owed a latest value, by cursor id.
    streams: Vec<(u64, Waiter)>,
}

impl Fanout {
    /// Writes latest values to idle streams that allow it
    /// ([`DirectWrite`]) until dropped; streams queued for it then are
    /// woken. For a one-thread runtime: with several threads, woken tasks
    /// spread the writes over them, and one sweeper would not. One sweeper
    /// per fan-out: a second call returns at once.
    pub(crate) async fn sweep(self) {
        {
            let mut q = self.sweep.queue.lock();
            if q.running {
                return;
            }
            q.running = true;
        }
        // Owns the batch in hand, so that whatever stops the sweep, every
        // stream in it is still woken.
        let mut stop = StopSweep {
            sweep: &self.sweep,
            batch: Vec::new(),
        };
        loop {
            self.sweep.ready.notified().await;
            std::mem::swap(&mut stop.batch, &mut self.sweep.queue.lock().streams);
            if stop.batch.is_empty() {
                continue;
            }
            // Queued by several publishes, maybe twice; taken from the end,
            // in the order they subscribed.
            stop.batch
                .sort_unstable_by_key(|(id, _)| std::cmp::Reverse(*id));
            stop.batch.dedup_by_key(|(id, _)| *id);
            let mut newest = self.newest();
            let mut swept = 0;
            let mut done = 0;
            while let Some((_, w)) = stop.batch.pop() {
                let direct = w.direct.as_ref().and_then(Weak::upgrade);
                match direct.map_or(Swept::Untouched, |d| d.write_latest(&newest, &w.waker)) {
                    Swept::Waiting => swept += 1,
                    Swept::Wake => {
                        swept += 1;
                        w.waker.wake();
                    }
                    Swept::Untouched => w.waker.wake(),
                }
                done += 1;
                // Let timers, accepts and requests in now and then; what
                // was published meanwhile is what the rest then get.
                if done % SWEEP_SLICE == 0 && !stop.batch.is_empty() {
                    self.clock.swept.inc_by(std::mem::take(&mut swept));
                    tokio::task::yield_now().await;
                    newest = self.newest();
                }
            }
            self.clock.swept.inc_by(swept);
            // The queue gets this buffer at the next swap. A large one is
            // given back instead: held between sweeps, two buffers the size
            // of every stream cost each idle stream about 60 bytes, and a
            // sweep that size is far dearer than allocating them again.
            if stop.batch.capacity() > SWEEP_SLICE {
                stop.batch = Vec::new();
            }
        }
    }

    /// Whether a sweeper is running.
    pub(crate) fn sweeping(&self) -> bool {
        self.sweep.queue.lock().running
    }

    fn newest(&self) -> Newest {
        // Read before looking, as a cursor does.
        let generation = self.clock.newest();
        let st = self.shared.lock();
        Newest {
            version: st.latest_version,
            end: st.end(),
            generation,
            values: st
                .latest
                .iter()
                .map(|e| (e.version, e.packet.clone(), OnceLock::new()))
                .collect(),
        }
    }
}

/// Streams the sweeper writes between two yields.
const SWEEP_SLICE: usize = 1024;

/// Ends a sweep: nothing queued or in hand is left without a wake-up.
struct StopSweep<'a> {
    sweep: &'a Sweep,
    batch: Vec<(u64, Waiter)>,
}

impl Drop for StopSweep<'_> {
    fn drop(&mut self) {
        let streams = {
            let mut q = self.sweep.queue.lock();
            q.running = false;
            std::mem::take(&mut q.streams)
        };
        for (_, w) in streams.into_iter().chain(self.batch.drain(..)) {
            w.waker.wake();
        }
    }
}

/// Hashes a cursor id by Fibonacci multiplication.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Wakes outside the lock, so woken tasks on the other core do not queue
/// behind it.
///
/// In cursor order, which is the order the sessions started in: their
/// sockets and tasks were allocated in that order too, so the writes that
/// follow walk memory (the kernel's as well as ours) mostly forwards instead
/// of at random, as the hash table's order would.
///
/// After a latest value, streams that the sweeper may write to go to it
/// instead, when one runs ([`DirectWrite`]).
fn wake(waiters: Waiters, sweep: Option<&Sweep>) {
    let mut waiters: Vec<(u64, Waiter)> = waiters.into_iter().collect();
    waiters.sort_unstable_by_key(|(id, _)| *id);
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

/// What a transport receives next for its session.
#[derive(Debug)]
pub(crate) enum Item {
    /// An ordinary event (broadcast, room or direct): it moves the cursor,
    /// so the client's resume position follows it.
    Packet(Packet),
    /// A latest-value event: not replayed on a resume, so no position.
    Latest(Packet),
    /// The session is over; the transport tells the client why and stops.
    Close(DisconnectReason),
}

impl Item {
    /// The event this item carries, if it is one.
    pub(crate) fn packet(&self) -> Option<&Packet> {
        match self {
            Item::Packet(p) | Item::Latest(p) => Some(p),
            Item::Close(_) => None,
        }
    }
}

/// One session's read position across the latest-value slots, the ordinary
/// event log and its own mailbox of direct events.
pub(crate) struct Delivery {
    /// The node's log and slots.
    shared: Arc<Mutex<State>>,
    /// The session's direct events and close flag; the cursor holds only
    /// this, so a parked cursor never keeps its session alive.
    mailbox: Arc<Mailbox>,
    /// The mailbox epoch this cursor reads: a resume bumps it, and this
    /// cursor then stops.
    epoch: u64,
    /// Whose cursor this is, to skip broadcasts that leave it out.
    sid: Sid,
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
    /// An item handed out and given back unsent (it did not fit a poll
    /// answer's byte bound), with the position from before it; the next
    /// call yields it first. Boxed: rare, and every idle cursor would
    /// otherwise carry its size.
    held: Option<Box<(Item, (u64, u64))>>,
    /// The stream this cursor feeds, if the sweeper may write to it.
    direct: Option<Weak<dyn DirectWrite>>,
}

impl Delivery {
    /// Hands out every latest value again, as if never sent: for a cursor
    /// moved to a new connection, whose last writes may have been lost with
    /// the old one. A latest value sent twice is harmless by definition.
    pub(crate) fn replay_latest(&mut self) {
        self.latest_seen = 0;
        self.ready.clear();
    }

    /// The next item, in priority order: a close beats everything, then
    /// latest values, then ordinary events in the order they were sent
    /// (mailbox events by their stamp against the log).
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

    /// Gives back the item `poll_next` just yielded, unsent, with the
    /// [`position`](Delivery::position) read before it: the next call yields
    /// it again, before anything else but a close, and until then the
    /// position is the one from before it.
    pub(crate) fn put_back(&mut self, item: Item, before: (u64, u64)) {
        debug_assert!(self.held.is_none(), "one item put back at a time");
        self.held = Some(Box::new((item, before)));
    }

    /// Lets the fan-out's sweeper write a latest value to `direct`, the
    /// stream this cursor feeds, when that is all the cursor owes.
    pub(crate) fn write_directly(&mut self, direct: Weak<dyn DirectWrite>) {
        self.direct = Some(direct);
    }

    /// The one value of `newest` this cursor owes, if that is all it owes:
    /// nothing handed out and held back, no other latest value, no
    /// ordinary or mailbox event, no close. Its stream may then be written
    /// that value without its task.
    pub(crate) fn owes_only(&self, newest: &Newest) -> Option<usize> {
        if self.held.is_some() || !self.ready.is_empty() || self.next != newest.end {
            return None;
        }
        let i = newest.only_change_since(self.latest_seen)?;
        self.mailbox.is_idle(self.epoch).then_some(i)
    }

    /// The value [`Delivery::owes_only`] named went to the stream: whole,
    /// or in part with the rest left for the stream's task, which settles
    /// it once written.
    pub(crate) fn took(&mut self, newest: &Newest, whole: bool) {
        self.latest_seen = newest.version;
        if whole {
            self.clock.settle(&mut self.cursor, newest.generation);
        } else {
            self.caught_up = Some(newest.generation);
        }
    }

    /// Waits again with `waker` after a direct write; false if something
    /// was published meanwhile, which the task must then be woken for.
    pub(crate) fn wait_again(&self, waker: &Waker) -> bool {
        let mut st = self.shared.lock();
        if st.latest_version != self.latest_seen || st.end() != self.next {
            return false;
        }
        st.waiters.insert(
            self.id,
            Waiter {
                waker: waker.clone(),
                direct: self.direct.clone(),
            },
        );
        true
    }

    fn poll_sources(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        if let Some(reason) = self.mailbox.closed_for(self.epoch) {
            return Poll::Ready(Item::Close(reason));
        }
        if let Some(held) = self.held.take() {
            return Poll::Ready(held.0);
        }
        if let Some(p) = self.ready.pop() {
            if self.ready.is_empty() {
                self.ready = Vec::new();
            }
            return Poll::Ready(Item::Latest(p));
        }
        {
            let st = self.shared.lock();
            if let Some(p) = st.latest_since(&mut self.latest_seen, &mut self.ready) {
                return Poll::Ready(Item::Latest(p));
            }
        }
        // Room and direct events sent before the next broadcast go first.
        if let Poll::Ready(r) = self.poll_mailbox(cx) {
            return Poll::Ready(r);
        }
        {
            let mut st = self.shared.lock();
            if self.next < st.first || st.end().saturating_sub(self.next) > st.max_lag {
                return Poll::Ready(Item::Close(DisconnectReason::SlowReader));
            }
            while let Some(e) = st.log.get((self.next - st.first) as usize) {
                self.next += 1;
                if e.except != Some(self.sid) {
                    return Poll::Ready(Item::Packet(e.packet.clone()));
                }
            }
            // A latest value published since the first look found no waiter
            // to wake (this one registers only now): hand it out rather than
            // wait for the next publish.
            if let Some(p) = st.latest_since(&mut self.latest_seen, &mut self.ready) {
                return Poll::Ready(Item::Latest(p));
            }
            // A polling session's cursor moves from one request's task to
            // the next, so the waker is compared, not just its presence.
            match st.waiters.entry(self.id) {
                Entry::Occupied(e) if e.get().waker.will_wake(cx.waker()) => {}
                Entry::Occupied(mut e) => {
                    e.get_mut().waker = cx.waker().clone();
                }
                Entry::Vacant(e) => {
                    e.insert(Waiter {
                        waker: cx.waker().clone(),
                        direct: self.direct.clone(),
                    });
                }
            }
        }
        // Again: one may have been queued while the log was being read.
        self.poll_mailbox(cx)
    }

    fn poll_mailbox(&mut self, cx: &mut Context<'_>) -> Poll<Item> {
        match self.mailbox.poll_next(cx, self.epoch, self.next) {
            Poll::Ready(Ok(p)) => Poll::Ready(Item::Packet(p)),
            Poll::Ready(Err(reason)) => Poll::Ready(Item::Close(reason)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Where this cursor is: the next log event and the next mailbox event.
    /// After an [`Item::Packet`], this is the client's resume position.
    pub(crate) fn position(&self) -> (u64, u64) {
        match &self.held {
            Some(held) => held.1,
            None => (self.next, self.mailbox.position()),
        }
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
            Poll::Ready(Item::Packet(p) | Item::Latest(p)) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    fn p(name: &str, v: i64) -> Packet {
        Packet::new(name, &Value::from(v))
    }

    #[test]
    fn latest_first_then_ordinary_in_send_order_and_close_beats_all() {
        let fanout = Fanout::new(8);
        let mailbox = Arc::new(Mailbox::default());
        let mut d = fanout.subscribe(mailbox.clone());
        mailbox.push(p("direct", 1), fanout.end(), 8);
        fanout.publish(p("chat", 2));
        mailbox.push(p("direct", 3), fanout.end(), 8);
        fanout.publish_latest("count", p("count", 3));
        assert_eq!(packet(&mut d), p("count", 3));
        assert_eq!(packet(&mut d), p("direct", 1));
        assert_eq!(packet(&mut d), p("chat", 2));
        assert_eq!(packet(&mut d), p("direct", 3));
        assert!(next(&mut d).is_pending());

        fanout.publish(p("chat", 4));
        fanout.publish_latest("count", p("count", 5));
        mailbox.close(DisconnectReason::ClientClose, false);
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

    /// A stream the sweeper may write to, recording what it wrote; one
    /// that `refuses` stands for a full socket.
    struct Fake {
        delivery: parking_lot::Mutex<Delivery>,
        wrote: parking_lot::Mutex<Vec<Packet>>,
        refuses: bool,
    }

    impl DirectWrite for Fake {
        fn write_latest(&self, newest: &Newest, waker: &Waker) -> Swept {
            if self.refuses {
                return Swept::Untouched;
            }
            let mut d = self.delivery.lock();
            let Some(i) = d.owes_only(newest) else {
                return Swept::Untouched;
            };
            self.wrote.lock().push(newest.packet(i).clone());
            d.took(newest, true);
            if d.wait_again(waker) {
                Swept::Waiting
            } else {
                Swept::Wake
            }
        }
    }

    fn fake(fanout: &Fanout, refuses: bool) -> Arc<Fake> {
        Arc::new_cyclic(|me: &Weak<Fake>| {
            let mut delivery = fanout.subscribe(Arc::new(Mailbox::default()));
            let me: Weak<dyn DirectWrite> = me.clone();
            delivery.write_directly(me);
            Fake {
                delivery: parking_lot::Mutex::new(delivery),
                wrote: Default::default(),
                refuses,
            }
        })
    }

    async fn settle_tasks() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn the_sweeper_writes_idle_streams_only_the_newest_value_and_wakes_the_rest() {
        let fanout = Fanout::new(8);
        let sweeper = tokio::spawn(fanout.clone().sweep());
        settle_tasks().await;
        let (idle, full) = (fake(&fanout, false), fake(&fanout, true));
        let (idle_woken, idle_waker) = counter();
        let (full_woken, full_waker) = counter();
        for (f, w) in [(&idle, &idle_waker), (&full, &full_waker)] {
            let mut d = f.delivery.lock();
            assert!(d.poll_next(&mut Context::from_waker(w)).is_pending());
        }
        // Five publishes before the sweeper runs: one write, of the newest.
        for n in 1..=5 {
            fanout.publish_latest("count", p("count", n));
        }
        settle_tasks().await;
        assert_eq!(*idle.wrote.lock(), vec![p("count", 5)]);
        assert_eq!((woken(&idle_woken), woken(&full_woken)), (0, 1));
        assert!(full.wrote.lock().is_empty());
        // Swept streams wait again by themselves; the woken one has not
        // been polled, so it is not in line.
        fanout.publish_latest("count", p("count", 6));
        settle_tasks().await;
        assert_eq!(*idle.wrote.lock(), vec![p("count", 5), p("count", 6)]);
        assert_eq!((woken(&idle_woken), woken(&full_woken)), (0, 1));
        // Anything but one latest value is for the task: an ordinary event
        // wakes a waiting stream at once.
        fanout.publish(p("chat", 1));
        assert_eq!(woken(&idle_woken), 1);
        {
            let mut d = idle.delivery.lock();
            assert!(matches!(
                d.poll_next(&mut Context::from_waker(&idle_waker)),
                Poll::Ready(Item::Packet(_))
            ));
            assert!(d
                .poll_next(&mut Context::from_waker(&idle_waker))
                .is_pending());
        }
        // A sweeper that stops wakes what it had in line, and after it
        // streams are woken as before.
        fanout.publish_latest("count", p("count", 7));
        sweeper.abort();
        settle_tasks().await;
        assert_eq!(woken(&idle_woken), 2);
        assert_eq!(idle.wrote.lock().len(), 2);
        let mut d = idle.delivery.lock();
        assert_eq!(packet(&mut d), p("count", 7));
        assert!(d
            .poll_next(&mut Context::from_waker(&idle_waker))
            .is_pending());
        fanout.publish_latest("count", p("count", 8));
        assert_eq!(woken(&idle_woken), 3);
    }

    /// A waker a thread can block on.
    #[derive(Default)]
    struct Flag(std::sync::Mutex<bool>, std::sync::Condvar);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_one();
        }
    }

    #[test]
    fn a_latest_value_published_while_a_cursor_looks_is_never_missed() {
        // One thread publishes a count and waits until the reader has it;
        // the reader polls, and on Pending sleeps until woken. A publish
        // landing between the cursor's first look at the latest values and
        // its waiter's registration used to find no waiter and be left for
        // the next publish: here there is none, so it would hang.
        const ROUNDS: i64 = 100_000;
        let fanout = Fanout::new(8);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        let seen = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let flag = Arc::new(Flag::default());
                let waker = Waker::from(flag.clone());
                let mut cx = Context::from_waker(&waker);
                while seen.load(std::sync::atomic::Ordering::SeqCst) < ROUNDS {
                    match d.poll_next(&mut cx) {
                        Poll::Ready(Item::Latest(p)) => {
                            let v = serde_json::from_slice::<Value>(&p.json).expect("json")["data"]
                                .as_i64()
                                .expect("a count");
                            seen.store(v, std::sync::atomic::Ordering::SeqCst);
                        }
                        Poll::Ready(other) => panic!("unexpected {other:?}"),
                        Poll::Pending => {
                            let mut woken = flag.0.lock().unwrap();
                            let deadline = std::time::Instant::now() + Duration::from_secs(5);
                            while !*woken {
                                let left =
                                    deadline.saturating_duration_since(std::time::Instant::now());
                                assert!(!left.is_zero(), "a publish was missed: never woken");
                                woken = flag.1.wait_timeout(woken, left).unwrap().0;
                            }
                            *woken = false;
                        }
                    }
                }
            })
        };
        for n in 1..=ROUNDS {
            fanout.publish_latest("count", p("count", n));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while seen.load(std::sync::atomic::Ordering::SeqCst) < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "count {n} never reached the reader"
                );
                if reader.is_finished() {
                    break;
                }
                std::thread::yield_now();
            }
        }
        reader.join().expect("the reader saw every count");
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
    fn an_item_put_back_comes_first_again_and_holds_the_position() {
        let fanout = Fanout::new(8);
        let mut d = fanout.subscribe(Arc::new(Mailbox::default()));
        fanout.publish(p("chat", 1));
        fanout.publish(p("chat", 2));
        let before = d.position();
        let first = packet(&mut d);
        d.put_back(Item::Packet(first.clone()), before);
        assert_eq!(d.position(), before);
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
            mailbox.push(p("direct", n), 0, 2);
        }
        assert!(matches!(
            next(&mut d),
            Poll::Ready(Item::Close(DisconnectReason::SlowReader))
        ));
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
    fn a_reopened_mailbox_replays_from_the_clients_position_and_stops_the_old_cursor() {
        let fanout = Fanout::new(8);
        let mailbox = Arc::new(Mailbox::new(8));
        let mut old = fanout.subscribe(mailbox.clone());
        for n in 0..3 {
            mailbox.push(p("direct", n), fanout.end(), 8);
        }
        for n in 0..3 {
            assert_eq!(packet(&mut old), p("direct", n));
        }
        // The client only saw the first one.
        assert_eq!(mailbox.reopen(4).ok(), None);
        assert_eq!(mailbox.reopen(1).ok(), Some(1));
        assert!(matches!(next(&mut old), Poll::Ready(Item::Close(_))));
        let mut new = fanout.subscribe(mailbox.clone());
        assert_eq!(packet(&mut new), p("direct", 1));
        assert_eq!(packet(&mut new), p("direct", 2));
        assert_eq!(new.position(), (0, 3));
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
