//! Forwarding a request for a session that another node holds, so that no
//! load balancer needs sticky sessions.
//!
//! A poll, an emit or a close may land on any node. A node that does not
//! hold the session asks the backend which node does (one Redis round trip)
//! and replays the request there over plain HTTP/1.1, then relays the
//! answer. The session itself never moves: its cursor, mailbox and handlers
//! stay on the node that created it, which is what keeps per-session order
//! and exactly-once delivery simple. A forwarded request carries
//! `X-Ssio-Forwarded`, and a node never forwards such a request again, so
//! a stale owner record cannot make requests bounce between nodes.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::Error;

/// Marks a request one node forwarded to another (the value names the
/// forwarding node).
pub(crate) const FORWARDED: &str = "x-ssio-forwarded";

/// How long connecting to the owner may take: it is on the same network,
/// so longer means it is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Headers of the owner's answer that the client needs.
const RELAYED: &[header::HeaderName] = &[
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::RETRY_AFTER,
    header::ALLOW,
];

/// One request to replay on the owner.
pub(crate) struct Forward<'a> {
    /// The owner's `host:port`.
    pub(crate) addr: &'a str,
    pub(crate) method: Method,
    /// Path and query, as the client sent them.
    pub(crate) target: &'a str,
    pub(crate) content_type: Option<HeaderValue>,
    pub(crate) body: Bytes,
    /// This node's id, for the marker header.
    pub(crate) from: &'a str,
    /// The longest the owner may take (a poll is held up to pingInterval).
    pub(crate) within: Duration,
}

/// Replays `f` on its owner and returns the owner's answer. An owner that
/// cannot be reached holds no session any more: the client gets "unknown
/// session" and starts a new one, as it would from the owner itself.
pub(crate) async fn forward(f: Forward<'_>) -> Result<Response<BoxBody<Bytes, Infallible>>, Error> {
    let unreachable = |e: &dyn std::fmt::Display| {
        tracing::debug!(owner = f.addr, error = %e, "forwarding failed");
        Error::UnknownSession
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(f.addr))
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(f.method)
        .uri(f.target)
        .header(header::HOST, f.addr)
        .header(FORWARDED, f.from);
    if let Some(ct) = f.content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req.body(Full::new(f.body)).map_err(|e| unreachable(&e))?;
    let answer = async {
        let res = sender.send_request(req).await?;
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>((parts, bytes))
    };
    let (parts, bytes) = tokio::time::timeout(f.within, answer)
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    let mut res = Response::new(BoxBody::new(Full::new(bytes)));
    *res.status_mut() = parts.status;
    for name in RELAYED {
        if let Some(v) = parts.headers.get(name) {
            res.headers_mut().insert(name.clone(), v.clone());
        }
    }
    Ok(res)
}
