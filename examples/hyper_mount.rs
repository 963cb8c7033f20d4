//! ssio mounted under `/socket` of a plain hyper app, as a tower `Service`.
//!
//! ```text
//! cargo run --example hyper_mount -- 127.0.0.1:3001
//! cargo test --example hyper_mount    # its own test, at the end
//! ```
//!
//! `/` is the app's own page; `/socket/events`, `/socket/poll`,
//! `/socket/emit` ... are ssio, with the demo's handlers installed. A
//! browser page connects with `io('/socket')`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ssio::{Config, Io, Peer};
use tokio::net::TcpListener;
use tower_service::Service;

/// Serves the app on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, io: Io) {
    let socket = io.service_at("/socket");
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let socket = socket.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let mut socket = socket.clone();
                async move {
                    if req.uri().path().starts_with("/socket/") {
                        // ssio reads the peer for its handshake and limits.
                        req.extensions_mut().insert(Peer(peer));
                        return socket.call(req).await;
                    }
                    Ok::<_, Infallible>(page())
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The app's own route.
fn page() -> Response<BoxBody<Bytes, Infallible>> {
    Response::new(Full::new(Bytes::from_static(b"the host app\n")).boxed())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".into())
        .parse()
        .expect("an address like 127.0.0.1:3001");
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let io = Io::new(Config::default());
    ssio::app::install(&io);
    serve(listener, io).await;
    Ok(())
}

// The example tests itself: with `test = true` in Cargo.toml, `cargo test`
// builds it as a test binary and runs this against its own `serve`.
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod support;

#[cfg(test)]
mod tests {
    use serde_json::json;
    use ssio::Io;

    use super::serve;
    use super::support::*;

    #[tokio::test]
    async fn the_hyper_example_serves_ssio_under_socket_and_its_own_routes_elsewhere() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let io = Io::new(fast_config());
        ssio::app::install(&io);
        let server = tokio::spawn(serve(listener, io.clone()));

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
    }
}
