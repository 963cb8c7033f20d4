//! Running in production: `/metrics` read by a real Prometheus parser
//! equals what the test did; `/readyz` turns on drain, a full table and an
//! unreachable backend while `/healthz` never does; the CORS allow-list on
//! both the hyper and the raw path; `--metrics-listen`; JSON logs.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use ssio::{Backend, BackendFuture, BackendStatus, Broadcast, Config, Fanout, Io};
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

/// Every sample of an exposition, keyed by name plus sorted labels, as
/// `name{a="x",b="y"}`.
fn samples(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{}{{{}}}", s.metric, inner.join(","))
        };
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        };
        out.insert(key, value);
    }
    out
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    samples(&r.text())
}

/// Scrapes until every `want` sample has its value; panics with the
/// differences after `within`.
async fn wait_metrics(
    addr: SocketAddr,
    want: &[(&str, f64)],
    within: Duration,
) -> HashMap<String, f64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = scrape(addr).await;
        let wrong: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k).copied().unwrap_or(0.0) != *v)
            .map(|(k, v)| format!("{k}: want {v}, have {:?}", got.get(*k)))
            .collect();
        if wrong.is_empty() {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never matched:\n{}",
            wrong.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_equals_what_the_clients_did() {
    let mut server = Server::start(Config {
        max_payload: 64,
        ..fast_config()
    })
    .await;
    let addr = server.addr;

    // Three streams, one at a time, each seeing every count: a 1,2,3; b 2,3; c 3.
    let mut a = Sse::connect(addr).await;
    a.wait_count(1, WAIT).await;
    let mut b = Sse::connect(addr).await;
    for s in [&mut a, &mut b] {
        s.wait_count(2, WAIT).await;
    }
    let mut c = Sse::connect(addr).await;
    for s in [&mut a, &mut b, &mut c] {
        s.wait_count(3, WAIT).await;
    }
    // One chat message reaches all three.
    let r = post(
        addr,
        &format!("/emit?sid={}", a.sid),
        br#"{"event":"chat message","data":"hi"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    for s in [&mut a, &mut b, &mut c] {
        assert_eq!(s.next_event().await.0, "chat message");
    }
    // c leaves politely (a and b see 2), b's connection resets (a sees 1).
    assert_eq!(
        post(addr, &format!("/close?sid={}", c.sid), b"")
            .await
            .status,
        204
    );
    for s in [&mut a, &mut b] {
        s.wait_count(2, WAIT).await;
    }
    b.set_reset_on_drop();
    drop(b);
    a.wait_count(1, WAIT).await;
    // A poller arrives (a sees 2, the poller's first poll 2) and then
    // stops polling: ping timeout (a sees 1).
    let p = Poller::handshake(addr).await;
    a.wait_count(2, WAIT).await;
    assert_eq!(
        support::poll::counts(&p.events().await).unwrap(),
        vec![2],
        "the poller's first batch"
    );
    a.wait_count(1, Duration::from_secs(3)).await;

    // Refused requests, one of each.
    assert_eq!(get(addr, "/nope").await.status, 404);
    assert_eq!(request(addr, "PUT", "/poll", &[], b"").await.status, 405);
    assert_eq!(
        get(addr, &format!("/poll?sid={}", uuid::Uuid::new_v4()))
            .await
            .status,
        400
    );
    let big = vec![b'x'; 100];
    assert_eq!(
        post(addr, &format!("/emit?sid={}", a.sid), &big)
            .await
            .status,
        413
    );

    // Deliveries: counts 3 (a) + 2 (b) + 1 (c), the chat 3, then 2 + 1 + 1
    // to a, 1 to b, 1 to the poller.
    let deliveries = 6.0 + 3.0 + 2.0 + 1.0 + 1.0 + 1.0 + 1.0;
    let m = wait_metrics(
        addr,
        &[
            ("ssio_connects_total{transport=\"sse\"}", 3.0),
            ("ssio_connects_total{transport=\"polling\"}", 1.0),
            (
                "ssio_disconnects_total{reason=\"client close\",transport=\"sse\"}",
                1.0,
            ),
            (
                "ssio_disconnects_total{reason=\"transport close\",transport=\"sse\"}",
                1.0,
            ),
            (
                "ssio_disconnects_total{reason=\"ping timeout\",transport=\"polling\"}",
                1.0,
            ),
            (
                "ssio_disconnects_total{reason=\"server shutdown\",transport=\"sse\"}",
                0.0,
            ),
            ("ssio_slow_reader_drops_total", 0.0),
            ("ssio_sessions{transport=\"sse\"}", 1.0),
            ("ssio_sessions{transport=\"polling\"}", 0.0),
            ("ssio_events_published_total{kind=\"latest\"}", 7.0),
            ("ssio_events_published_total{kind=\"ordinary\"}", 1.0),
            ("ssio_events_published_total{kind=\"direct\"}", 0.0),
            ("ssio_deliveries_total", deliveries),
            ("ssio_rejected_requests_total{status=\"404\"}", 1.0),
            ("ssio_rejected_requests_total{status=\"405\"}", 1.0),
            ("ssio_rejected_requests_total{status=\"400\"}", 1.0),
            ("ssio_rejected_requests_total{status=\"413\"}", 1.0),
            // Every broadcast had a receiver and every receiver wrote it.
            ("ssio_fanout_seconds_count", 8.0),
            // One poll answered.
            ("ssio_poll_hold_seconds_count", 1.0),
        ],
        WAIT,
    )
    .await;
    println!(
        "deliveries {deliveries}, bytes {}, fan-out sum {:.6} s, rss {} B, fds {}",
        m["ssio_written_bytes_total"],
        m["ssio_fanout_seconds_sum"],
        m["ssio_process_resident_memory_bytes"],
        m["ssio_process_open_fds"]
    );
    assert!(m["ssio_written_bytes_total"] > 0.0);
    assert!(m["ssio_process_resident_memory_bytes"] > 1e6);
    assert!(m["ssio_process_open_fds"] >= 1.0);
    assert!(
        !m.contains_key("ssio_backend_connected"),
        "no backend state without a backend"
    );
    drop(a);
    server.shutdown(WAIT).await;
}

/// A backend whose reachability the test switches.
struct Switchable {
    fanout: Fanout,
    connected: Arc<AtomicBool>,
    count: AtomicUsize,
}

fn ready() -> BackendFuture<()> {
    Box::pin(std::future::ready(Ok(())))
}

impl Backend for Switchable {
    fn start(&self) -> BackendFuture<()> {
        ready()
    }
    fn join(&self, _: ssio::Sid) -> BackendFuture<()> {
        self.count.fetch_add(1, Ordering::SeqCst);
        ready()
    }
    fn leave(&self, _: ssio::Sid) -> BackendFuture<()> {
        self.count.fetch_sub(1, Ordering::SeqCst);
        ready()
    }
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
    fn broadcast(&self, event: Broadcast) -> BackendFuture<()> {
        if event.latest {
            self.fanout.publish_latest(&event.name, event.packet);
        } else {
            self.fanout.publish(event.packet);
        }
        ready()
    }
    fn close(&self) -> BackendFuture<()> {
        ready()
    }
    fn status(&self) -> Option<BackendStatus> {
        Some(BackendStatus {
            connected: self.connected.load(Ordering::SeqCst),
            reconnects: 3,
            lag: Some(Duration::from_millis(250)),
        })
    }
}

#[tokio::test]
async fn a_broadcast_that_leaves_out_its_sender_is_timed_once_the_others_wrote_it() {
    // Heartbeats far away: neither stream writes anything else meanwhile.
    let config = Config {
        ping_interval_ms: 60_000,
        ping_timeout_ms: 60_000,
        ..fast_config()
    };
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config, |io| {
        features::install(io);
    })
    .await;
    let mut a = Sse::connect(server.addr).await;
    let mut b = Sse::connect(server.addr).await;
    a.wait_count(2, WAIT).await;
    b.wait_count(2, WAIT).await;
    // Two counts, each written by everyone it went to.
    wait_metrics(server.addr, &[("ssio_fanout_seconds_count", 2.0)], WAIT).await;

    let body = json!({ "event": "shout", "data": "hey" }).to_string();
    let r = post(
        server.addr,
        &format!("/emit?sid={}", a.sid),
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(b.next_event().await, ("shouted".into(), "\"hey\"".into()));
    // The sender's stream owes it nothing: the broadcast is done once b has
    // written it, not when a next writes (a minute away here).
    wait_metrics(
        server.addr,
        &[("ssio_fanout_seconds_count", 3.0)],
        Duration::from_secs(3),
    )
    .await;
}

async fn probe(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let r = get(addr, path).await;
    (r.status, r.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_on_backend_loss_a_full_table_and_drain_and_healthz_never_does() {
    let connected = Arc::new(AtomicBool::new(true));
    let config = Config {
        max_sessions: 2,
        ..fast_config()
    };
    let listener = ssio::bind("127.0.0.1:0".parse().unwrap(), config.backlog).unwrap();
    let addr = listener.local_addr().unwrap();
    let flag = connected.clone();
    let io = Io::with_backend(config, move |fanout| Switchable {
        fanout,
        connected: flag,
        count: AtomicUsize::new(0),
    });
    ssio::app::install(&io);
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(ssio::run(listener, io.clone(), async move {
        let _ = rx.await;
    }));

    let healthy = (200, json!({"status": "ok"}));
    let not_ready = |why: &str| (503, json!({"status": "not ready", "reason": why}));
    assert_eq!(
        probe(addr, "/readyz").await,
        (200, json!({"status": "ready"}))
    );
    assert_eq!(probe(addr, "/healthz").await, healthy);

    connected.store(false, Ordering::SeqCst);
    assert_eq!(
        probe(addr, "/readyz").await,
        not_ready("backend unreachable")
    );
    assert_eq!(probe(addr, "/healthz").await, healthy);
    let m = scrape(addr).await;
    assert_eq!(m["ssio_backend_connected"], 0.0);
    assert_eq!(m["ssio_backend_reconnects_total"], 3.0);
    assert_eq!(m["ssio_backend_lag_seconds"], 0.25);
    connected.store(true, Ordering::SeqCst);
    assert_eq!(probe(addr, "/readyz").await.0, 200);
    assert_eq!(scrape(addr).await["ssio_backend_connected"], 1.0);

    let _a = Sse::connect(addr).await;
    assert_eq!(probe(addr, "/readyz").await.0, 200);
    let _b = Sse::connect(addr).await;
    assert_eq!(
        probe(addr, "/readyz").await,
        not_ready("session limit reached")
    );
    assert_eq!(probe(addr, "/healthz").await, healthy);

    // Draining: sessions end, the listener still answers probes.
    io.shutdown();
    assert_eq!(probe(addr, "/readyz").await, not_ready("draining"));
    assert_eq!(probe(addr, "/healthz").await, healthy);

    let _ = tx.send(());
    tokio::time::timeout(WAIT, handle).await.unwrap().unwrap();
}

#[tokio::test]
async fn probes_refuse_other_methods_and_ignore_queries() {
    let server = Server::start(fast_config()).await;
    let r = request(server.addr, "POST", "/readyz", &[], b"").await;
    assert_eq!(
        (r.status, r.header("allow").as_deref()),
        (405, Some("GET, OPTIONS"))
    );
    assert_eq!(
        get(server.addr, "/healthz?x=%00&sid=nope").await.status,
        200
    );
    assert_eq!(
        request(server.addr, "DELETE", "/metrics", &[], b"")
            .await
            .status,
        405
    );
    assert_eq!(server.io.stats().sessions, 0);
}

#[tokio::test]
async fn with_metrics_listen_metrics_leave_the_public_address() {
    let internal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = internal.local_addr().unwrap();
    drop(internal);
    let server = Server::start(Config {
        metrics_listen: Some(at),
        ..fast_config()
    })
    .await;
    assert_eq!(get(server.addr, "/metrics").await.status, 404);
    assert_eq!(get(server.addr, "/readyz").await.status, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    let m = loop {
        match tokio::net::TcpStream::connect(at).await {
            Ok(_) => break scrape(at).await,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("metrics address never listened: {e}"),
        }
    };
    assert_eq!(m["ssio_sessions{transport=\"sse\"}"], 0.0);
    assert_eq!(get(at, "/healthz").await.status, 200);
    // Nothing else lives there.
    assert_eq!(get(at, "/events").await.status, 404);
    assert_eq!(get(at, "/poll").await.status, 404);
    assert_eq!(server.io.stats().sessions, 0);
}

const ALLOWED: &str = "https://app.example";
const OTHER: &str = "https://evil.example";

fn allow_list() -> Config {
    Config {
        cors_origins: vec![ALLOWED.into(), "http://localhost:8080".into()],
        ..fast_config()
    }
}

#[tokio::test]
async fn cors_allow_list_echoes_listed_origins_only_and_varies_on_origin() {
    let server = Server::start(allow_list()).await;
    let addr = server.addr;
    let r = request(addr, "GET", "/stats", &[("Origin", ALLOWED)], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    assert_eq!(r.header("vary").as_deref(), Some("Origin"));

    // Another origin is served (a browser then hides the body) but never
    // named; so is a request without Origin.
    for headers in [
        &[("Origin", OTHER)][..],
        &[("Origin", "https://app.example.evil")],
        &[],
    ] {
        let r = request(addr, "GET", "/stats", headers, b"").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{headers:?}");
        assert_eq!(r.header("vary").as_deref(), Some("Origin"));
    }
    // Errors carry the same headers.
    let r = request(addr, "GET", "/nope", &[("Origin", ALLOWED)], b"").await;
    assert_eq!(
        (r.status, r.header("access-control-allow-origin").as_deref()),
        (404, Some(ALLOWED))
    );
}

#[tokio::test]
async fn a_preflight_from_an_unlisted_origin_is_refused_with_403() {
    let server = Server::start(allow_list()).await;
    let addr = server.addr;
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
        ];
        request(addr, "OPTIONS", "/emit", &headers, b"").await
    };
    let ok = preflight(ALLOWED).await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some(ALLOWED)
    );
    assert_eq!(ok.header("vary").as_deref(), Some("Origin"));
    let refused = preflight(OTHER).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json(), json!({"error": "origin not allowed"}));
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let m = scrape(server.addr).await;
    assert_eq!(m["ssio_rejected_requests_total{status=\"403\"}"], 1.0);
}

#[tokio::test]
async fn the_raw_sse_path_sends_the_same_cors_headers() {
    let server = Server::start(allow_list()).await;
    for (origin, want) in [(ALLOWED, Some(ALLOWED)), (OTHER, None)] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut s,
            format!("GET /events HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut r = BufReader::new(s);
        let mut head = String::new();
        tokio::time::timeout(WAIT, async {
            loop {
                let mut line = String::new();
                r.read_line(&mut line).await.unwrap();
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
        })
        .await
        .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(
            header_in(&head, "access-control-allow-origin").as_deref(),
            want,
            "{head}"
        );
        assert_eq!(header_in(&head, "vary").as_deref(), Some("Origin"));
        assert_eq!(
            header_in(&head, "access-control-expose-headers").as_deref(),
            Some("X-Session-Id")
        );
    }
}

#[tokio::test]
async fn the_default_star_allows_every_origin_without_vary() {
    let server = Server::start(fast_config()).await;
    let r = request(server.addr, "GET", "/stats", &[("Origin", OTHER)], b"").await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(r.header("vary"), None);
    let s = Sse::open(server.addr).await;
    assert_eq!(
        header_in(&s.head, "access-control-allow-origin").as_deref(),
        Some("*")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_never_hold_a_full_sid() {
    let mut cmd = support::process::ssio(&[], 0);
    cmd.args(["--log-format", "json", "--shutdown-timeout", "2000"]);
    cmd.env("RUST_LOG", "info");
    cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let msg = v["message"].as_str().unwrap();
    let addr: SocketAddr = msg
        .strip_prefix("listening on http://")
        .unwrap()
        .parse()
        .unwrap();

    let mut a = Sse::connect(addr).await;
    a.wait_count(1, WAIT).await;
    let p = Poller::handshake(addr).await;
    assert_eq!(p.close().await.status, 204);
    // A refused request whose query carries a sid: the log names the path only.
    assert_eq!(get(addr, &format!("/nope?sid={}", a.sid)).await.status, 404);
    a.set_reset_on_drop();
    let a_sid = a.sid.clone();
    drop(a);
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let mut all = vec![first];
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            all.push(line);
        }
    })
    .await
    .expect("the log did not end");
    assert!(child.wait().await.unwrap().success());

    let objects: Vec<serde_json::Value> = all
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(objects.iter().all(|o| o.is_object()));
    let ends: Vec<&serde_json::Value> = objects
        .iter()
        .filter(|o| o["message"] == "session ended")
        .collect();
    assert_eq!(ends.len(), 2, "{all:#?}");
    let by_reason: HashMap<&str, &serde_json::Value> = ends
        .iter()
        .map(|o| (o["reason"].as_str().unwrap(), *o))
        .collect();
    let sse_end = by_reason["transport close"];
    assert_eq!(sse_end["transport"], "sse");
    assert_eq!(sse_end["sid"], a_sid[..8]);
    assert!(sse_end["remote"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(sse_end["duration_ms"].is_u64());
    assert_eq!(by_reason["client close"]["transport"], "polling");
    let refused = objects
        .iter()
        .find(|o| o["message"] == "request refused")
        .expect("the 404 is logged");
    assert_eq!(
        (&refused["method"], &refused["path"], &refused["status"]),
        (&json!("GET"), &json!("/nope"), &json!(404))
    );
    let text = all.join("\n");
    for sid in [&a_sid, &p.sid] {
        assert!(
            !text.contains(sid.as_str()),
            "a full sid in the log:\n{text}"
        );
    }
}
