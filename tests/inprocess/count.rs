//! The count is exact: random interleavings of everything clients do, many
//! clients churning at once, and a third of them killed. Every client's last
//! count is the number of live sessions, and it is never negative.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::*;
use proptest::prelude::*;
use ssio::Config;

#[derive(Debug, Clone)]
enum Op {
    NewSse,
    NewPoll,
    /// Close an SSE connection politely.
    DropSse(usize),
    /// Reset an SSE connection, as a killed process does.
    KillSse(usize),
    /// `POST /close` a poller, as its page unloading does.
    ClosePoll(usize),
    /// A poller stops polling and must time out.
    AbandonPoll(usize),
    /// A client sends a chat message.
    Emit(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::NewSse),
        3 => Just(Op::NewPoll),
        1 => any::<usize>().prop_map(Op::DropSse),
        1 => any::<usize>().prop_map(Op::KillSse),
        1 => any::<usize>().prop_map(Op::ClosePoll),
        1 => any::<usize>().prop_map(Op::AbandonPoll),
        1 => any::<usize>().prop_map(Op::Emit),
    ]
}

async fn run_ops(ops: Vec<Op>) {
    let server = Server::start(Config {
        ping_interval_ms: 150,
        ping_timeout_ms: 300,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let mut sse: Vec<Sse> = Vec::new();
    let mut polls: Vec<LivePoller> = Vec::new();
    for op in ops {
        match op {
            Op::NewSse => sse.push(Sse::connect(addr).await),
            Op::NewPoll => polls.push(LivePoller::start(addr).await),
            Op::DropSse(i) if !sse.is_empty() => drop(sse.remove(i % sse.len())),
            Op::KillSse(i) if !sse.is_empty() => {
                let mut s = sse.remove(i % sse.len());
                s.set_reset_on_drop();
                drop(s);
            }
            Op::ClosePoll(i) if !polls.is_empty() => {
                let p = polls.remove(i % polls.len());
                p.task.abort();
                assert_eq!(p.poller.close().await.status, 204);
            }
            Op::AbandonPoll(i) if !polls.is_empty() => {
                polls.remove(i % polls.len()).task.abort();
            }
            Op::Emit(i) if !polls.is_empty() => {
                let r = polls[i % polls.len()]
                    .poller
                    .emit("chat message", serde_json::json!(i))
                    .await;
                assert_eq!(r.status, 204);
            }
            _ => {}
        }
        // At every step the count is the number of live sessions.
        server
            .wait_sessions(sse.len() + polls.len(), Duration::from_secs(3))
            .await;
    }
    // Every client's last count is the true one.
    let live = (sse.len() + polls.len()) as i64;
    for s in sse.iter_mut() {
        s.drain_to_latest_count(live).await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    for p in &polls {
        while p.last.load(Ordering::SeqCst) != live {
            assert!(
                Instant::now() < deadline,
                "poller stuck at {} (live {live})",
                p.last.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    for p in polls {
        p.task.abort();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn the_count_is_always_the_number_of_live_sessions(ops in proptest::collection::vec(op(), 1..16)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_churn_converges_to_the_exact_count() {
    churn_converges().await;
}

// One thread, as the binary runs on one core. On one thread as on four,
// idle streams take the count from the fan-out's sweeper, which must
// conflate and miss nothing.
#[tokio::test]
async fn churn_on_one_thread_converges_to_the_exact_count() {
    churn_converges().await;
}

async fn churn_converges() {
    let server = Server::start(fast_config()).await;
    let addr = server.addr;
    // 200 clients connect from 8 tasks at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut v = Vec::new();
            for _ in 0..25 {
                v.push(Sse::connect(addr).await);
            }
            v
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.extend(t.await.unwrap());
    }
    server.wait_sessions(200, WAIT).await;
    // Every client has read up to the final 200 before anyone leaves, so a
    // 100 seen later can only come from the leaving phase.
    for c in clients.iter_mut() {
        c.wait_count(200, Duration::from_secs(10)).await;
    }
    // Half of them leave, concurrently, from 8 tasks, while the rest read.
    let leavers: Vec<Sse> = clients.drain(..100).collect();
    let mut chunks: Vec<Vec<Sse>> = (0..8).map(|_| Vec::new()).collect();
    for (i, c) in leavers.into_iter().enumerate() {
        chunks[i % 8].push(c);
    }
    for chunk in chunks {
        tokio::spawn(async move {
            for c in chunk {
                drop(c);
                tokio::task::yield_now().await;
            }
        });
    }
    // Every survivor converges on 100, and after that nothing else arrives:
    // its last count is the true one.
    let mut waits = Vec::new();
    for mut c in clients {
        waits.push(tokio::spawn(async move {
            c.wait_count(100, Duration::from_secs(10)).await;
            c
        }));
    }
    let mut survivors = Vec::new();
    for w in waits {
        survivors.push(w.await.unwrap());
    }
    for c in survivors.iter_mut() {
        c.assert_quiet(Duration::from_millis(20)).await;
    }
    server.wait_sessions(100, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_of_500_clients_killed_survivors_converge_exactly() {
    // Heartbeats long enough that 250 live pollers keep up on a busy machine.
    let server = Server::start(Config {
        ping_interval_ms: 1_000,
        ping_timeout_ms: 5_000,
        ..fast_config()
    })
    .await;
    let addr = server.addr;
    let mut sse = Vec::new();
    let mut polls = Vec::new();
    for i in 0..500 {
        if i % 2 == 0 {
            let mut s = Sse::connect(addr).await;
            s.set_reset_on_drop();
            sse.push(s);
        } else {
            polls.push(LivePoller::start(addr).await);
        }
    }
    server.wait_sessions(500, WAIT).await;
    // Read up to 500 first, so a count seen later comes from the kills.
    for s in sse.iter_mut() {
        s.wait_count(500, WAIT).await;
    }
    // A pseudo-random third of each kind dies without a goodbye.
    let mut seed = 0x9e37_79b9_u32;
    let mut pick = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % 3 == 0
    };
    let (mut killed_sse, mut killed_poll) = (0, 0);
    let mut survivors_sse = Vec::new();
    for s in sse {
        if pick() {
            killed_sse += 1;
            drop(s);
        } else {
            survivors_sse.push(s);
        }
    }
    let mut survivors_poll = Vec::new();
    for p in polls {
        if pick() {
            killed_poll += 1;
            p.kill();
        } else {
            survivors_poll.push(p);
        }
    }
    let live = (500 - killed_sse - killed_poll) as i64;
    eprintln!("killed {killed_sse} SSE and {killed_poll} polling clients; {live} remain");
    assert!(killed_sse > 50 && killed_poll > 50);

    // Within pingInterval + pingTimeout (6 s) of the kills, and a margin.
    server
        .wait_sessions(live as usize, Duration::from_secs(15))
        .await;
    for s in survivors_sse.iter_mut() {
        s.wait_count(live, Duration::from_secs(5)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for p in &survivors_poll {
        while p.last.load(Ordering::SeqCst) != live {
            assert!(
                Instant::now() < deadline,
                "poller {} stuck at {}",
                p.poller.sid,
                p.last.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for s in survivors_sse.iter_mut() {
        s.assert_quiet(Duration::from_millis(5)).await;
    }
    let stats = server.io.stats();
    assert_eq!(
        (stats.sessions, stats.count),
        (live as usize, live as usize)
    );
    assert_eq!(stats.sse, survivors_sse.len());
    assert_eq!(stats.polling, survivors_poll.len());
}
