//! Garbage at any route, as a property test over real HTTP: random methods,
//! paths and bodies all get a clean status, and the server stays healthy
//! with no session leaked.

use crate::support::*;
use proptest::prelude::*;
use ssio::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
