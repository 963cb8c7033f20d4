//! The `ssio` binary's command line: every flag with its `SSIO_` env fallback and
//! default, and the startup line that names the address.

mod support;

use std::process::Command;

use support::process;

#[test]
fn help_lists_every_flag_with_its_env_and_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssio"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        ("--host", "SSIO_HOST", "0.0.0.0"),
        ("--port", "PORT", "3000"),
        ("--ping-interval", "SSIO_PING_INTERVAL", "25000"),
        ("--ping-timeout", "SSIO_PING_TIMEOUT", "20000"),
        ("--max-payload", "SSIO_MAX_PAYLOAD", "65536"),
        ("--max-sessions", "SSIO_MAX_SESSIONS", "200000"),
        ("--max-event-name", "SSIO_MAX_EVENT_NAME", "256"),
        ("--max-pending-events", "SSIO_MAX_PENDING_EVENTS", "1024"),
        ("--max-header-bytes", "SSIO_MAX_HEADER_BYTES", "16384"),
        ("--header-timeout", "SSIO_HEADER_TIMEOUT", "10000"),
        ("--body-timeout", "SSIO_BODY_TIMEOUT", "10000"),
        ("--shutdown-timeout", "SSIO_SHUTDOWN_TIMEOUT", "10000"),
        ("--backlog", "SSIO_BACKLOG", "4096"),
        ("--reconnect-grace", "SSIO_RECONNECT_GRACE", "500"),
        ("--forward-pool-idle", "SSIO_FORWARD_POOL_IDLE", "64"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{env} missing from --help"
        );
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing for {flag}"
        );
    }
}

#[tokio::test]
async fn env_fallbacks_apply() {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssio"));
    cmd.env("SSIO_HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("SSIO_PING_INTERVAL", "1234")
        .env("RUST_LOG", "info");
    let line = process::spawn(cmd, std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .line;
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn unprefixed_variables_belong_to_someone_else() {
    // Shells and other programs set names like HOST for themselves; were
    // they read, this value would stop the server from starting at all.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssio"));
    cmd.env("SSIO_HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("HOST", "not-an-address")
        .env("PING_INTERVAL", "not-a-number")
        .env("MAX_SESSIONS", "-1")
        .env("RUST_LOG", "info");
    let line = process::spawn(cmd, std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .line;
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

/// `ssio_fanout_swept_total` as `/metrics` on `addr` reports it.
async fn swept(addr: std::net::SocketAddr) -> u64 {
    let mut c = support::http::HttpConn::open(addr, 0).await.unwrap();
    let (status, body) = support::http::within(WAIT, c.request("GET", "/metrics", b""))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let body = String::from_utf8(body).unwrap();
    let line = body
        .lines()
        .find(|l| l.starts_with("ssio_fanout_swept_total "))
        .unwrap_or_else(|| panic!("no ssio_fanout_swept_total in\n{body}"));
    line["ssio_fanout_swept_total ".len()..].parse().unwrap()
}

/// How long any one step may take before the test fails.
const WAIT: std::time::Duration = std::time::Duration::from_secs(10);

// With two cores the binary runs several scheduler threads; its idle
// streams still take each new count from the sweeper, not from a task
// woken each, and every client reads the exact count.
#[tokio::test]
async fn on_two_cores_the_sweeper_writes_every_count_change_to_every_idle_stream() {
    use support::sse::{Seen, SseClient};
    let server = process::spawn(process::ssio(&["taskset", "-c", "0,1"], 0), WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = server.addr;
    // Reads from `c` until it has `count`, which must be the only count
    // it is given: a change is one publish, one value per stream.
    async fn expect_count(c: &mut SseClient, count: i64) {
        let mut seen = Seen::default();
        while seen.counts.last() != Some(&count) {
            support::http::within(WAIT, c.next(&mut seen))
                .await
                .unwrap_or_else(|e| panic!("count {count} never came: {e} (saw {seen:?})"));
        }
        assert_eq!(seen.counts, [count]);
    }
    let mut clients: Vec<SseClient> = Vec::new();
    for salt in 0..20u32 {
        let mut c = SseClient::connect(addr, salt).await.unwrap();
        let n = clients.len() as i64 + 1;
        expect_count(&mut c, n).await;
        for other in clients.iter_mut() {
            expect_count(other, n).await;
        }
        clients.push(c);
    }
    // Every stream is idle now. Each new session is one count change,
    // which the sweeper writes to every stream already open; the new
    // stream gets its first count from its own task.
    for salt in 20..30u32 {
        let before = swept(addr).await;
        let idle = clients.len() as u64;
        let mut c = SseClient::connect(addr, salt).await.unwrap();
        let n = clients.len() as i64 + 1;
        expect_count(&mut c, n).await;
        for other in clients.iter_mut() {
            expect_count(other, n).await;
        }
        clients.push(c);
        // The counter moves once the sweep ends, just after its writes.
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut now = swept(addr).await;
        while now < before + idle && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            now = swept(addr).await;
        }
        assert_eq!(now - before, idle, "streams swept for count {n}");
    }
}
