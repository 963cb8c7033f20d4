//! ssio mounted under `/socket` of a plain hyper app, as a tower `Service`.
//!
//! ```text
//! cargo run --example hyper_mount -- 127.0.0.1:3001
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
