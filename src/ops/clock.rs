//! Times each broadcast from its publish until the last session that owed
//! it has written it: the `ssio_fanout_seconds` histogram.
//!
//! The fan-out histogram needs to know when the *last* session has written
//! an event. [`FanoutClock`] keeps, for each recent broadcast, the number of
//! sessions that still owe it; a session settles everything up to the
//! newest broadcast it has caught up with, with one atomic decrement per
//! event, and whoever brings a count to zero records the elapsed time. The
//! clock's lock is taken once per broadcast and once per session start or
//! end, never per delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// Latency buckets from 100 µs to about 26 s, doubling.
pub(crate) fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 19)
}

/// Broadcasts remembered at once; an event still owed by some session when
/// its slot is needed again is given up on (not recorded). It also bounds
/// what a session that owed many broadcasts (a parked poller) pays when it
/// settles: at most this many decrements.
const CLOCK_SLOTS: usize = 1024;

/// One recent broadcast: when it was published and who still owes it.
#[derive(Default)]
struct Slot {
    /// Which broadcast the slot holds now.
    generation: AtomicU64,
    /// Nanoseconds from the clock's epoch to the publish.
    started_ns: AtomicU64,
    /// Sessions that have not yet written it (or anything newer).
    owed: AtomicU64,
}

/// Times each broadcast from publish until the last session subscribed at
/// that moment has written it (or, for a latest-value event, a newer value).
pub(crate) struct FanoutClock {
    /// Publishes, subscribes and unsubscribes, so that the set of sessions
    /// owing a broadcast is exactly those subscribed when it went out. The
    /// caller publishes to the fan-out inside [`FanoutClock::publish`]'s
    /// closure, so a session sees an event if and only if it owes it.
    subscribers: Mutex<u64>,
    /// The newest broadcast whose event is visible to sessions.
    generation: AtomicU64,
    /// Recent broadcasts by generation modulo the slot count.
    slots: Box<[Slot]>,
    /// Base for the `started_ns` stamps.
    epoch: Instant,
    /// Where completed fan-outs are recorded.
    pub(crate) histogram: Histogram,
    /// Broadcasts published: ordinary, latest-value.
    pub(crate) published: [Counter; 2],
    /// Latest values the fan-out's sweeper wrote to idle streams itself.
    pub(crate) swept: Counter,
    /// Fan-outs recorded, for unit tests (the histogram keeps its count
    /// private).
    #[cfg(test)]
    recorded: AtomicU64,
}

impl Default for FanoutClock {
    fn default() -> Self {
        FanoutClock {
            subscribers: Mutex::new(0),
            generation: AtomicU64::new(0),
            slots: (0..CLOCK_SLOTS).map(|_| Slot::default()).collect(),
            epoch: Instant::now(),
            histogram: Histogram::new(latency_buckets()),
            published: Default::default(),
            swept: Counter::default(),
            #[cfg(test)]
            recorded: AtomicU64::new(0),
        }
    }
}

/// One session's position on the clock: every broadcast up to `settled` is
/// accounted for.
#[derive(Debug)]
pub(crate) struct ClockCursor {
    settled: u64,
}

/// The most broadcasts a leaving session settles one by one.
const LEAVE_SETTLE_MAX: u64 = 16;

impl FanoutClock {
    /// Publishes through `send` (a latest-value event if `latest`), counts
    /// it and starts timing it; returns what `send` returns.
    pub(crate) fn publish<T>(&self, latest: bool, send: impl FnOnce() -> T) -> T {
        self.published[latest as usize].inc();
        let subscribers = self.subscribers.lock();
        let started = self.epoch.elapsed().as_nanos() as u64;
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        let slot = &self.slots[generation as usize % CLOCK_SLOTS];
        slot.owed.store(0, Ordering::SeqCst);
        slot.started_ns.store(started, Ordering::SeqCst);
        slot.generation.store(generation, Ordering::SeqCst);
        slot.owed.store(*subscribers, Ordering::SeqCst);
        let out = send();
        self.generation.store(generation, Ordering::SeqCst);
        out
    }

    /// A session starts reading; `subscribe` runs under the clock's lock so
    /// the session's start and its cursor agree.
    pub(crate) fn subscribe<T>(&self, subscribe: impl FnOnce() -> T) -> (ClockCursor, T) {
        let mut subscribers = self.subscribers.lock();
        *subscribers += 1;
        let out = subscribe();
        let settled = self.generation.load(Ordering::SeqCst);
        (ClockCursor { settled }, out)
    }

    /// The newest generation visible now: read it *before* looking for
    /// events, and once nothing is left to read, [`FanoutClock::settle`] up
    /// to it.
    pub(crate) fn newest(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The session has written everything up to `upto`.
    pub(crate) fn settle(&self, cursor: &mut ClockCursor, upto: u64) {
        // Older broadcasts no longer have a slot.
        let oldest = upto.saturating_sub(CLOCK_SLOTS as u64 - 1);
        cursor.settled = cursor.settled.max(oldest.saturating_sub(1));
        while cursor.settled < upto {
            cursor.settled += 1;
            self.owe_one_less(cursor.settled);
        }
    }

    /// The session ends; it owes nothing any more. A session that leaves
    /// far behind (a parked poller, an abandoned handshake) gives up its
    /// share without settling each broadcast one by one: a flood of such
    /// sessions ending must cost O(1) each, and the broadcasts they owed were
    /// never going to be written anyway, so those stay untimed.
    pub(crate) fn unsubscribe(&self, cursor: &mut ClockCursor) {
        let mut subscribers = self.subscribers.lock();
        *subscribers = subscribers.saturating_sub(1);
        let newest = self.generation.load(Ordering::SeqCst);
        if newest.saturating_sub(cursor.settled) <= LEAVE_SETTLE_MAX {
            self.settle(cursor, newest);
        } else {
            cursor.settled = newest;
        }
    }

    fn owe_one_less(&self, generation: u64) {
        let slot = &self.slots[generation as usize % CLOCK_SLOTS];
        if slot.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let before = slot
            .owed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before == Ok(1) {
            let now = self.epoch.elapsed().as_nanos() as u64;
            let started = slot.started_ns.load(Ordering::SeqCst);
            let secs = now.saturating_sub(started) as f64 / 1e9;
            self.histogram.observe(secs);
            #[cfg(test)]
            self.recorded.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Fan-outs recorded so far (for tests).
    #[cfg(test)]
    fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_is_timed_once_its_last_owing_session_settles() {
        let clock = FanoutClock::default();
        let (mut a, ()) = clock.subscribe(|| ());
        let (mut b, ()) = clock.subscribe(|| ());
        clock.publish(false, || ());
        clock.publish(false, || ());
        let newest = clock.newest();
        clock.settle(&mut a, newest);
        assert_eq!(clock.recorded(), 0);
        // A latecomer owes nothing published before it.
        let (mut c, ()) = clock.subscribe(|| ());
        clock.settle(&mut c, clock.newest());
        assert_eq!(clock.recorded(), 0);
        // b leaving settles what it owed.
        clock.unsubscribe(&mut b);
        assert_eq!(clock.recorded(), 2);
        clock.publish(false, || ());
        clock.unsubscribe(&mut a);
        assert_eq!(clock.recorded(), 2);
        clock.settle(&mut c, clock.newest());
        assert_eq!(clock.recorded(), 3);
    }

    #[test]
    fn a_broadcast_nobody_owes_is_not_timed() {
        let clock = FanoutClock::default();
        clock.publish(false, || ());
        let (mut a, ()) = clock.subscribe(|| ());
        clock.unsubscribe(&mut a);
        assert_eq!(clock.recorded(), 0);
    }
}
