//! The `Backend` seam: a fake backend whose calls finish on a later turn of
//! the runtime (as a networked one's would) carries the count and every
//! broadcast; a backend that refuses joins turns clients away with 503.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;
use serde_json::json;
use ssio::{Backend, BackendError, BackendFuture, Broadcast, Config, Fanout, Io};
use tokio::sync::oneshot;

/// What the fake saw, shared with the test.
#[derive(Default)]
struct Seen {
    started: AtomicBool,
    closed: AtomicBool,
    joins: AtomicUsize,
    leaves: AtomicUsize,
    broadcasts: AtomicUsize,
    count: AtomicUsize,
    refuse_joins: AtomicBool,
}

struct Fake {
    fanout: Fanout,
    seen: Arc<Seen>,
}

impl Backend for Fake {
    fn start(&self) -> BackendFuture<()> {
        let seen = self.seen.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            seen.started.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn join(&self, _sid: ssio::Sid) -> BackendFuture<()> {
        let seen = self.seen.clone();
        Box::pin(async move {
            // Not ready on the first poll: the hub must wait for it.
            tokio::task::yield_now().await;
            if seen.refuse_joins.load(Ordering::SeqCst) {
                return Err(BackendError("fake refuses joins".into()));
            }
            seen.joins.fetch_add(1, Ordering::SeqCst);
            seen.count.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn leave(&self, _sid: ssio::Sid) -> BackendFuture<()> {
        let seen = self.seen.clone();
        Box::pin(async move {
            tokio::task::yield_now().await;
            seen.leaves.fetch_add(1, Ordering::SeqCst);
            seen.count.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn count(&self) -> usize {
        self.seen.count.load(Ordering::SeqCst)
    }

    fn broadcast(&self, event: Broadcast) -> BackendFuture<()> {
        // Order is fixed here, at the call, as the trait asks.
        self.seen.broadcasts.fetch_add(1, Ordering::SeqCst);
        if event.latest && event.target.is_all() {
            self.fanout.publish_latest(&event.name, event.packet);
        } else {
            self.fanout.publish_to(&event.target, event.packet);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn close(&self) -> BackendFuture<()> {
        let seen = self.seen.clone();
        Box::pin(async move {
            seen.closed.store(true, Ordering::SeqCst);
            Ok(())
        })
    }
}

async fn start(
    seen: &Arc<Seen>,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let config = Config {
        host: "127.0.0.1".into(),
        port: 0,
        ..fast_config()
    };
    let listener = ssio::bind("127.0.0.1:0".parse().unwrap(), config.backlog).unwrap();
    let addr = listener.local_addr().unwrap();
    let seen2 = seen.clone();
    let io = Io::with_backend(config, move |fanout| Fake {
        fanout,
        seen: seen2,
    });
    ssio::app::install(&io);
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(ssio::run(listener, io, async move {
        let _ = rx.await;
    }));
    (addr, tx, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_backend_carries_the_count_and_every_broadcast() {
    let seen = Arc::new(Seen::default());
    let (addr, stop, handle) = start(&seen).await;

    let mut a = Sse::connect(addr).await;
    a.wait_count(1, WAIT).await;
    let mut b = Sse::connect(addr).await;
    b.wait_count(2, WAIT).await;
    a.wait_count(2, WAIT).await;
    assert!(seen.started.load(Ordering::SeqCst));
    assert_eq!(seen.joins.load(Ordering::SeqCst), 2);

    // A chat message from a poller reaches both streams through the fake.
    let p = Poller::handshake(addr).await;
    a.wait_count(3, WAIT).await;
    let before = seen.broadcasts.load(Ordering::SeqCst);
    assert_eq!(p.emit("chat message", json!("hi")).await.status, 204);
    for s in [&mut a, &mut b] {
        loop {
            let (event, data) = s.next_event().await;
            if event == "chat message" {
                let v: serde_json::Value = serde_json::from_str(&data).unwrap();
                assert_eq!(v["message"], json!("hi"));
                break;
            }
        }
    }
    assert_eq!(seen.broadcasts.load(Ordering::SeqCst), before + 1);

    // A leave that finishes later still reaches the handlers with the new count.
    assert_eq!(p.close().await.status, 204);
    drop(b);
    a.wait_count(1, WAIT).await;
    assert_eq!(seen.leaves.load(Ordering::SeqCst), 2);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, handle).await.unwrap().unwrap();
    assert!(
        seen.closed.load(Ordering::SeqCst),
        "run() closes the backend"
    );
    assert_eq!(seen.count.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_is_a_503_and_counts_nobody() {
    let seen = Arc::new(Seen::default());
    seen.refuse_joins.store(true, Ordering::SeqCst);
    let (addr, _stop, _handle) = start(&seen).await;
    for path in ["/events", "/poll"] {
        let r = get(addr, path).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.header("retry-after").as_deref(), Some("5"));
        assert_eq!(
            r.json(),
            json!({"error": "backend unavailable: fake refuses joins"})
        );
    }
    seen.refuse_joins.store(false, Ordering::SeqCst);
    let mut a = Sse::connect(addr).await;
    a.wait_count(1, WAIT).await;
    let stats = get(addr, "/stats").await.json();
    assert_eq!(
        stats,
        json!({"sessions": 1, "sse": 1, "polling": 0, "count": 1, "away": 0})
    );
}
