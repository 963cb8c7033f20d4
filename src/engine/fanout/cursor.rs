//! One session's cursor into the fan-out: what it reads next, in which
//! order, and when it is a slow reader.

use super::*;

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

impl Fanout {
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

    /// This cursor's number: the one the sweeper passes to
    /// [`DirectWrite::write_latest`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Lets the fan-out's sweeper write a latest value to `direct`, the
    /// stream this cursor feeds, when that is all the cursor owes.
    pub(crate) fn write_directly(&mut self, direct: Weak<dyn DirectWrite>) {
        self.direct = Some(direct);
    }

    /// Undoes [`Delivery::write_directly`]: the sweeper wakes this
    /// cursor's task again.
    pub(crate) fn write_to_task(&mut self) {
        self.direct = None;
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

    /// Waits again with the waker in `waker` after a direct write, taking
    /// it; leaves it where it was if something was published meanwhile,
    /// which the task must then be woken for.
    ///
    /// Taken rather than cloned: a clone and the drop of the sweeper's own
    /// copy would touch the task's header, one more cache line per stream
    /// and sweep.
    pub(crate) fn wait_again(&self, waker: &mut Option<Waker>) {
        let mut st = self.shared.lock();
        if st.latest_version != self.latest_seen || st.end() != self.next {
            return;
        }
        let Some(waker) = waker.take() else {
            return;
        };
        st.waiters.insert(
            self.id,
            Waiter {
                waker,
                direct: self.direct.clone(),
            },
        );
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
            // So is the held poll the sweeper may answer through: a waiter
            // left by the last poll names that poll's connection.
            match st.waiters.entry(self.id) {
                Entry::Occupied(mut e) => {
                    let w = e.get_mut();
                    if !w.waker.will_wake(cx.waker()) {
                        w.waker = cx.waker().clone();
                    }
                    let same = match (&w.direct, &self.direct) {
                        (Some(a), Some(b)) => Weak::ptr_eq(a, b),
                        (a, b) => a.is_none() && b.is_none(),
                    };
                    if !same {
                        w.direct = self.direct.clone();
                    }
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
    use crate::engine::fanout::testing::*;

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
}
