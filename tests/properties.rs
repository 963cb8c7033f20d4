//! Property tests over real HTTP: random interleavings of everything clients
//! do to the hub, and random garbage at every route.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use ssio::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("OPTIONS"),
        Just("HEAD"),
        Just("DELETE"),
        Just("BREW")
    ]
}

fn path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("/poll?sid="),
        Just("/emit?sid="),
        Just("/close?sid="),
        Just("/public/"),
        Just("/_api/"),
        Just("/"),
        Just("/stats?"),
    ];
    // Printable ASCII without space, plus a few raw high bytes.
    (prefix, "[!-~\u{80}-\u{ff}]{0,60}").prop_map(|(p, rest)| format!("{p}{rest}"))
}

const STATUSES: &[u16] = &[200, 204, 400, 404, 405, 408, 413, 414, 431, 503];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, max_shrink_iters: 100, ..ProptestConfig::default() })]

    #[test]
    fn garbage_at_any_route_gets_a_clean_status(
        m in method(),
        p in path(),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let server = Server::start(Config { ping_interval_ms: 200, max_payload: 128, ..fast_config() }).await;
            let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
            let mut raw = format!("{m} {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            raw.extend_from_slice(&body);
            s.write_all(&raw).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("no answer").unwrap();
            let text = String::from_utf8_lossy(&out);
            let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text:?}"));
            assert!(STATUSES.contains(&status), "{status} for {m} {p}: {text}");
            // Our errors carry JSON; hyper's own answers to unparsable
            // requests (400, 414, 431) carry nothing. HEAD answers have no body.
            let ours = text.contains("content-type: application/json") || ![400, 414, 431].contains(&status);
            if status >= 400 && ours && m != "HEAD" {
                assert!(text.contains(r#"{"error":""#), "error without a JSON body: {text}");
            }
            // The server is still healthy and no session leaked.
            let stats = get(server.addr, "/stats").await;
            assert_eq!(stats.status, 200);
            let sessions = stats.json()["sessions"].as_u64().unwrap();
            assert!(sessions <= 1, "{sessions} sessions after one request");
        });
    }
}
