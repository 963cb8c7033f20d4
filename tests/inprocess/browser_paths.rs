//! The shared SSE client of the benches on the paths a browser takes to
//! its stream: after fetching the page, on the same connection, a plain
//! stream or the shared one. A bench whose client misread one of them would
//! measure nothing, so the client is held to exact counts here.

use std::io;

use crate::support::sse::{Event, Events, Seen, SseClient, StreamPath};
use crate::support::*;

/// The next batch a client hands over, within `WAIT`.
async fn next(c: &mut SseClient) -> Seen {
    let mut seen = Seen::default();
    tokio::time::timeout(WAIT, c.next(&mut seen))
        .await
        .expect("no event within WAIT")
        .expect("stream failed");
    seen
}

#[tokio::test]
async fn every_stream_path_hands_over_the_exact_count_and_leaves() {
    for path in [StreamPath::First, StreamPath::Reused, StreamPath::Mux] {
        let server = Server::start(fast_config()).await;
        let open = |salt| tokio::time::timeout(WAIT, SseClient::open(server.addr, salt, path));
        let mut a = open(0).await.expect("open timed out").expect("open a");
        assert_eq!(next(&mut a).await.counts, [1], "{path:?}");
        let mut b = open(1).await.expect("open timed out").expect("open b");
        assert_ne!(a.sid, b.sid);
        assert_eq!(next(&mut b).await.counts, [2], "{path:?}");
        assert_eq!(next(&mut a).await.counts, [2], "{path:?}");
        tokio::time::timeout(WAIT, b.leave())
            .await
            .expect("leave timed out")
            .expect("leave");
        assert_eq!(next(&mut a).await.counts, [1], "{path:?}");
        server.wait_sessions(1, WAIT).await;
    }
}

/// Every event `bytes` holds, untagged, or the first error.
fn untagged(bytes: &[u8]) -> io::Result<Vec<(u64, Event)>> {
    let mut events = Events::default();
    events.extend(bytes);
    let mut out = Vec::new();
    while let Some(e) = events.next_tagged()? {
        out.push(e);
    }
    Ok(out)
}

#[test]
fn a_shared_stream_is_untagged_exactly_and_any_other_frame_is_an_error() {
    let ev = |event: &str, data: &str| Event {
        event: event.into(),
        data: data.into(),
    };
    let stream = concat!(
        "retry: 250\n",
        "data: {\"k\":0,\"event\":\"connect\",\"data\":{\"sid\":\"s\",\"mux\":\"m\",\"k\":0}}\n\n",
        ": keep-alive\n\n",
        "data: {\"k\":1,\"event\":\"user count\",\"data\":2}\n\n",
        "data: {\"k\":0,\"event\":\"chat message\",\"data\":{\"message\":\"a\\nb\"}}\n\n",
        "data: {\"k\":12,\"event\":\"say \\\"hi\\\"\",\"data\":\"}\"}\n\n",
    );
    assert_eq!(
        untagged(stream.as_bytes()).unwrap(),
        [
            (0, ev("connect", r#"{"sid":"s","mux":"m","k":0}"#)),
            (1, ev("user count", "2")),
            (0, ev("chat message", r#"{"message":"a\nb"}"#)),
            (12, ev("say \"hi\"", r#""}""#)),
        ]
    );
    for bad in [
        "event: user count\ndata: 2\n\n",
        "data: 2\n\n",
        "data: {\"event\":\"user count\",\"data\":2}\n\n",
        "data: {\"k\":\"0\",\"event\":\"user count\",\"data\":2}\n\n",
        "data: {\"k\":0,\"event\":3,\"data\":2}\n\n",
        "data: {\"k\":0,\"data\":2,\"event\":\"user count\"}\n\n",
        "data: {\"k\":0,\"event\":\"user count\",\"data\":2,\"x\":1}\n\n",
        "data: {\"k\":01,\"event\":\"user count\",\"data\":2}\n\n",
        "data: {\"k\":,\"event\":\"user count\",\"data\":2}\n\n",
        "data: {\"k\":0,\"event\":\"user count,\"data\":2}\n\n",
        "data: {\"k\":0,\"event\":\"user count\",\"data\":nope}\n\n",
        "data: {\"k\":0,\"event\":\"user count\",\"data\":}\n\n",
        "data: {\"k\":0,\"event\":\"user count\",\"data\":2\n\n",
        "data: {\"k\":0,\"event\":\"\\q\",\"data\":2}\n\n",
        "data: {\"k\":0, \"event\":\"user count\",\"data\":2}\n\n",
        "data: {\"k\":0,\"event\": \"user count\",\"data\":2}\n\n",
    ] {
        assert!(untagged(bad.as_bytes()).is_err(), "{bad:?} was accepted");
    }
}
