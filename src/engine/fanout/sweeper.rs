//! The sweeper: one task that writes a new latest value to idle streams
//! itself, instead of waking each stream's task.

use super::*;

/// A stream that the fan-out's sweeper may write latest values to itself.
///
/// Waking an idle stream's task to write one small event costs scheduling
/// and first touches of the task's memory: at 10k streams, ssio's own code
/// was 14% of a fan-out's CPU with a task woken per stream, and under 5%
/// with the sweeper.
/// So an idle stream whose only news is one latest value is written by the
/// sweeper, one task that walks every such stream in the order they
/// subscribed. Anything else (a stream busy
/// writing, behind on other events, closing, or whose socket is full) has
/// its task woken as before, which then finds its events the usual way.
///
/// The sweeper runs after the publish, not inside it: publishes that come
/// faster than the sweeper writes are conflated exactly as they are for
/// woken tasks, each stream getting the newest value once.
///
/// On a runtime of several threads the stream's task may be running on
/// another thread while the sweeper looks at it: an implementation takes
/// the stream's own lock without waiting and leaves a stream it cannot
/// lock untouched, and [`Delivery::wait_again`] checks under the fan-out's
/// lock that nothing was published since the sweeper's snapshot, so a
/// publish racing the write wakes the task rather than being lost.
pub(crate) trait DirectWrite: Send + Sync {
    /// Writes the one latest value in `newest` the stream owes to the
    /// cursor numbered `cursor` ([`Delivery::id`]), if that is all it owes
    /// and the stream is idle, and then waits again with `waker`. A stream
    /// carrying several sessions' cursors checks that it still carries
    /// this one: a cursor moved to another stream may still name this one.
    /// True if it wrote the value, whole or in part. The waker is taken
    /// once the stream waits with it; one left behind means the task must
    /// run (to finish a write, for something published meanwhile, or to
    /// find an unwritten value the usual way), and the caller wakes it.
    fn write_latest(&self, cursor: u64, newest: &Newest, waker: &mut Option<Waker>) -> bool;

    /// Whether a task left to run after a write of this kind is woken once
    /// the sweep is over rather than at once. A held poll's is: its answer
    /// is written, and what is left (the end of the poll, the client's
    /// next request) can wait until every other client has the value.
    fn wake_after_sweep(&self) -> bool {
        false
    }
}

/// The latest values as the sweeper found them, for one sweep.
pub(crate) struct Newest {
    /// The latest-value version.
    pub(super) version: u64,
    /// The log's end: a cursor there owes no ordinary event.
    pub(super) end: u64,
    /// The fan-out clock's newest generation, read before the rest: a
    /// cursor that has written all of this has written that generation.
    pub(super) generation: u64,
    /// When the sweeper read these, taken as the time of every write of
    /// them: a sweep slice is over in milliseconds, and a clock read per
    /// stream is not free.
    pub(crate) at: tokio::time::Instant,
    /// Every latest value with the version that last changed it, and its
    /// two framings: as a stream of its own writes it, and as a shared
    /// stream writes it for its first session.
    values: Vec<(u64, Packet, OnceLock<Bytes>, OnceLock<Bytes>)>,
}

impl Newest {
    /// The one value a cursor that has seen `seen` owes, if it is one.
    pub(super) fn only_change_since(&self, seen: u64) -> Option<usize> {
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
        let (_, packet, framed, _) = &self.values[i];
        framed.get_or_init(|| frame(packet))
    }

    /// Value `i` framed as shared streams frame it for the session they
    /// carry first (tagged with its key), framed once for every such
    /// stream.
    pub(crate) fn framed_shared(&self, i: usize, frame: impl FnOnce(&Packet) -> Bytes) -> &Bytes {
        let (_, packet, _, framed) = &self.values[i];
        framed.get_or_init(|| frame(packet))
    }
}

/// Streams queued for the sweeper.
#[derive(Default)]
pub(super) struct Sweep {
    pub(super) queue: Mutex<SweepQueue>,
    /// Told when the queue gains streams.
    pub(super) ready: tokio::sync::Notify,
}

#[derive(Default)]
pub(super) struct SweepQueue {
    /// A sweeper is running; without one, streams are woken as before.
    pub(super) running: bool,
    /// Waiting streams owed a latest value, by cursor id.
    pub(super) streams: Vec<(u64, Waiter)>,
}

impl Fanout {
    /// Writes latest values to idle streams that allow it
    /// ([`DirectWrite`]) until dropped; streams queued for it then are
    /// woken. One sweeper per fan-out: a second one ends at once.
    ///
    /// The sweeper counts as running from this call, not from the future's
    /// first poll: a stream that starts in between is then still written
    /// directly, and a future dropped unpolled still gives the streams back
    /// to their tasks.
    pub(crate) fn sweep(self) -> impl std::future::Future<Output = ()> + Send {
        let claimed = {
            let mut q = self.sweep.queue.lock();
            !std::mem::replace(&mut q.running, true)
        };
        // Owns the batch in hand, so that whatever stops the sweep, every
        // stream in it is still woken.
        let stop = claimed.then(|| StopSweep {
            sweep: self.sweep.clone(),
            batch: Vec::new(),
            later: Vec::new(),
        });
        async move {
            if let Some(stop) = stop {
                self.sweep_until_dropped(stop).await;
            }
        }
    }

    async fn sweep_until_dropped(&self, mut stop: StopSweep) {
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
            while let Some((id, w)) = stop.batch.pop() {
                let direct = w.direct.as_ref().and_then(Weak::upgrade);
                let mut waker = Some(w.waker);
                let wrote = direct
                    .as_ref()
                    .is_some_and(|d| d.write_latest(id, &newest, &mut waker));
                if wrote {
                    swept += 1;
                }
                // Left with the sweeper: the stream's task must run.
                if let Some(waker) = waker {
                    match wrote && direct.is_some_and(|d| d.wake_after_sweep()) {
                        true => stop.later.push(waker),
                        false => waker.wake(),
                    }
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
            for waker in stop.later.drain(..) {
                waker.wake();
            }
            // The queue gets this buffer at the next swap. A large one is
            // given back instead: held between sweeps, two buffers the size
            // of every stream cost each idle stream about 60 bytes, and a
            // sweep that size is far dearer than allocating them again.
            if stop.batch.capacity() > SWEEP_SLICE {
                stop.batch = Vec::new();
            }
            if stop.later.capacity() > SWEEP_SLICE {
                stop.later = Vec::new();
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
            at: tokio::time::Instant::now(),
            values: st
                .latest
                .iter()
                .map(|e| {
                    (
                        e.version,
                        e.packet.clone(),
                        OnceLock::new(),
                        OnceLock::new(),
                    )
                })
                .collect(),
        }
    }
}

/// Streams the sweeper writes between two yields.
const SWEEP_SLICE: usize = 1024;

/// Ends a sweep: nothing queued or in hand is left without a wake-up.
struct StopSweep {
    sweep: Arc<Sweep>,
    batch: Vec<(u64, Waiter)>,
    /// Tasks to wake once the batch is written
    /// ([`DirectWrite::wake_after_sweep`]).
    later: Vec<Waker>,
}

impl Drop for StopSweep {
    fn drop(&mut self) {
        let streams = {
            let mut q = self.sweep.queue.lock();
            q.running = false;
            std::mem::take(&mut q.streams)
        };
        for (_, w) in streams.into_iter().chain(self.batch.drain(..)) {
            w.waker.wake();
        }
        for waker in self.later.drain(..) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The sweeper writes the newest value once and wakes what it cannot write.

    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::engine::fanout::testing::*;

    /// A stream the sweeper may write to, recording what it wrote; one
    /// that `refuses` stands for a full socket.
    struct Fake {
        delivery: parking_lot::Mutex<Delivery>,
        wrote: parking_lot::Mutex<Vec<Packet>>,
        refuses: bool,
    }

    impl DirectWrite for Fake {
        fn write_latest(&self, _cursor: u64, newest: &Newest, waker: &mut Option<Waker>) -> bool {
            if self.refuses {
                return false;
            }
            let mut d = self.delivery.lock();
            let Some(i) = d.owes_only(newest) else {
                return false;
            };
            self.wrote.lock().push(newest.packet(i).clone());
            d.took(newest, true);
            d.wait_again(waker);
            true
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
    async fn a_sweeper_runs_from_its_call_and_one_dropped_unpolled_lets_the_streams_go() {
        let fanout = Fanout::new(8);
        let first = fanout.clone().sweep();
        // A stream that starts before the first poll is written directly.
        assert!(fanout.sweeping());
        // A second sweeper ends at once and leaves the first running.
        fanout.clone().sweep().await;
        assert!(fanout.sweeping());
        let idle = fake(&fanout, false);
        let (woken_count, waker) = counter();
        assert!(idle
            .delivery
            .lock()
            .poll_next(&mut Context::from_waker(&waker))
            .is_pending());
        fanout.publish_latest("count", p("count", 1));
        assert_eq!(woken(&woken_count), 0);
        // Never polled: what it was given goes back to the stream's task.
        drop(first);
        assert!(!fanout.sweeping());
        assert_eq!(woken(&woken_count), 1);
        assert!(idle.wrote.lock().is_empty());
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
}
