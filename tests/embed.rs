//! `Io` mounted under `/socket` of a plain hyper app as a tower `Service`:
//! the example in `examples/hyper_mount.rs`, started here and talked to.

mod support;

#[allow(dead_code)]
#[path = "../examples/hyper_mount.rs"]
mod example;

use serde_json::json;
use ssio::{Config, Io};
use support::*;

#[tokio::test]
async fn the_hyper_example_serves_ssio_under_socket_and_its_own_routes_elsewhere() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let io = Io::new(fast_config());
    ssio::app::install(&io);
    let server = tokio::spawn(example::serve(listener, io.clone()));

    let page = get(addr, "/").await;
    assert_eq!((page.status, page.text()), (200, "the host app\n".into()));
    let mut s = Sse::open_with(addr, "/socket/events", &[]).await;
    let (event, _) = s.next_event().await;
    assert_eq!(event, "connect");
    let p = Poller::handshake_at(addr, "/socket").await;
    s.wait_count(2, WAIT).await;
    let r = post(
        addr,
        &format!("/socket/emit?sid={}", p.sid),
        br#"{"event":"chat message","data":"hi"}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    loop {
        let (event, data) = s.next_event().await;
        if event == "chat message" {
            let v: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(v["message"], json!("hi"));
            break;
        }
    }
    let stats = get(addr, "/socket/stats").await;
    assert_eq!(stats.json()["count"], json!(2));
    // Only the prefix is ssio's.
    let svc = io.service_at("/socket");
    let mut svc2 = svc.clone();
    let req = hyper::Request::get("/socketx/stats")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = tower_service::Service::call(&mut svc2, req).await.unwrap();
    assert_eq!(res.status(), 404);
    server.abort();
    let _ = Config::default();
}
