//! Forwarding a request for a session that another node holds, so that no
//! load balancer needs sticky sessions.
//!
//! A poll, an emit or a close may land on any node. A node that does not
//! hold the session asks the backend which node does (one Redis round trip)
//! and replays the request there over plain HTTP/1.1, then relays the
//! answer. The connections to each other node are pooled ([`Peers`]), so a
//! forward costs the lookup and one round trip, not a new connection. The session itself never moves: its cursor, mailbox and handlers
//! stay on the node that created it, which is what keeps per-session order
//! and exactly-once delivery simple. A forwarded request carries
//! `X-Ssio-Forwarded`, and a node never forwards such a request again, so
//! a stale owner record cannot make requests bounce between nodes.
//!
//! A resume (a cursor in `Last-Event-ID` or `resume=`) is forwarded the same
//! way, to the node where the session waits out its recovery window: the
//! cursor's broadcast position is a place in that node's own log, and its
//! mailbox and handlers live there. An event stream is relayed as it comes
//! ([`Forward::stream`]); when the client goes, the relay's connection to
//! the owner closes, and the session goes away there again.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::cluster::vouch;
use crate::config::Config;
use crate::error::Error;

/// Marks a request one node forwarded to another (the value names the
/// forwarding node).
pub(crate) const FORWARDED: &str = "x-ssio-forwarded";

/// How long connecting to the owner may take: it is on the same network,
/// so longer means it is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Headers that belong to one connection, not to the request: never
/// replayed.
const HOP_BY_HOP: &[header::HeaderName] = &[
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::EXPECT,
];

/// Headers that name the client's address: the client wrote them, or a
/// proxy in front of this node did, and this node has already read them
/// into the address it vouches for. Replayed, the owner could take a
/// client's own `X-Forwarded-For` for the truth whenever it trusts this
/// node as a proxy.
const CLIENT_ADDRESS: &[&str] = &["forwarded", "x-forwarded-for", vouch::CLIENT];

/// Headers of the owner's answer that the client needs.
const RELAYED: &[&str] = &[
    "content-type",
    "cache-control",
    "retry-after",
    "allow",
    // A resume's answer: the session it got, where to resume next, and
    // the permission for a page to read both.
    "x-session-id",
    "x-ssio-cursor",
    "x-accel-buffering",
    "access-control-expose-headers",
];

/// An HTTP/1.1 client of the other nodes, with a pool of kept-alive
/// connections per node (per `host:port`).
pub(crate) type PeerClient = Client<HttpConnector, Full<Bytes>>;

/// This node's connections to the other nodes: one per server, kept in its
/// extension slot and built from its configuration on first use, with the
/// requests in flight to each node.
#[derive(Default)]
pub(crate) struct Peers {
    client: OnceLock<PeerClient>,
    /// Requests in flight per node (`host:port`), for
    /// `--forward-max-inflight`. A node's entry stays once made: there are
    /// as many as there are nodes.
    busy: parking_lot::Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// One request in flight to a node; its slot is free again when this drops.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Peers {
    /// The client (a handle: clones share the pool).
    pub(crate) fn client(&self, config: &Config) -> PeerClient {
        self.client
            .get_or_init(|| {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
                connector.set_nodelay(true);
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    // The owner closes a connection that stays idle for its
                    // header timeout. One reused just as that happens fails
                    // a request already sent (which is not retried: it may
                    // have run), so idle connections go well before that.
                    // The nodes of a cluster share their settings.
                    .pool_idle_timeout(config.header_timeout() / 2)
                    .pool_max_idle_per_host(config.forward_pool_idle)
                    .build(connector)
            })
            .clone()
    }

    /// A slot for one more request to the node at `addr`, unless `max`
    /// (0: no limit) are in flight there already.
    pub(crate) fn admit(&self, addr: &str, max: usize) -> Result<InFlight, Error> {
        let count = self
            .busy
            .lock()
            .entry(addr.to_string())
            .or_default()
            .clone();
        let before = count.fetch_add(1, Ordering::SeqCst);
        let held = InFlight(count);
        if max != 0 && before >= max {
            return Err(Error::ForwardBusy);
        }
        Ok(held)
    }
}

/// One request to replay on the owner.
pub(crate) struct Forward<'a> {
    /// The pooled client to replay it with.
    pub(crate) client: PeerClient,
    /// The owner's `host:port`.
    pub(crate) addr: &'a str,
    pub(crate) method: Method,
    /// Path and query, as the client sent them.
    pub(crate) target: &'a str,
    /// The client's headers (`Last-Event-ID`, credentials a middleware
    /// reads), replayed less the hop-by-hop ones.
    pub(crate) headers: header::HeaderMap,
    pub(crate) body: Bytes,
    /// This node's id, for the marker header.
    pub(crate) from: &'a str,
    /// The client's address, vouched for by this node ([`vouch::sign`]).
    pub(crate) vouch: Option<HeaderValue>,
    /// Its slot among the requests in flight to the owner: held until the
    /// answer is read whole, or for a stream until its head.
    pub(crate) slot: InFlight,
    /// The longest the owner may take (a poll is held up to pingInterval);
    /// for a stream, the longest until its head.
    pub(crate) within: Duration,
    /// Relay the body as it comes (an event stream), until this is
    /// cancelled (this node shuts down), instead of reading it whole first.
    pub(crate) stream: Option<tokio_util::sync::CancellationToken>,
}

/// Replays `f` on its owner and returns the owner's answer. An owner that
/// cannot be reached holds no session any more: the client gets "unknown
/// session" and starts a new one, as it would from the owner itself.
pub(crate) async fn forward(f: Forward<'_>) -> Result<Response<BoxBody<Bytes, Infallible>>, Error> {
    let unreachable = |e: &dyn std::fmt::Display| {
        tracing::debug!(owner = f.addr, error = %e, "forwarding failed");
        Error::UnknownSession
    };
    let uri: Uri = format!("http://{}{}", f.addr, f.target)
        .parse()
        .map_err(|e| unreachable(&e))?;
    // `Host` comes from the URI: the owner's `host:port`.
    let mut req = Request::builder().method(f.method).uri(uri);
    if let Some(h) = req.headers_mut() {
        for (name, value) in &f.headers {
            if !HOP_BY_HOP.contains(name)
                && name.as_str() != FORWARDED
                && !CLIENT_ADDRESS.contains(&name.as_str())
            {
                h.append(name.clone(), value.clone());
            }
        }
        if let Some(vouch) = f.vouch {
            h.insert(vouch::CLIENT, vouch);
        }
        h.insert(
            FORWARDED,
            HeaderValue::from_str(f.from).map_err(|e| unreachable(&e))?,
        );
    }
    let req = req.body(Full::new(f.body)).map_err(|e| unreachable(&e))?;
    let stream = f.stream;
    let client = f.client;
    let slot = f.slot;
    let answer = async {
        let res = client.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = if let Some(stop) = stream {
            BoxBody::new(Relay {
                inner: Some(body),
                stop: Box::pin(stop.cancelled_owned()),
            })
        } else {
            BoxBody::new(Full::new(body.collect().await?.to_bytes()))
        };
        drop(slot);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, body))
    };
    let (parts, body) = tokio::time::timeout(f.within, answer)
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&with_causes(&*e)))?;
    let mut res = Response::new(body);
    *res.status_mut() = parts.status;
    for name in RELAYED {
        if let Some(v) = parts.headers.get(*name) {
            res.headers_mut()
                .insert(header::HeaderName::from_static(name), v.clone());
        }
    }
    Ok(res)
}

/// An error and its causes, `: `-separated: the client's errors name only
/// their kind ("client error (Connect)") and keep the reason as a cause.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The owner's event stream, relayed frame by frame. The owner going away
/// mid-stream ends it, as the owner's own end would, and so does this node
/// shutting down (the session is not this node's: it goes away on its own
/// node, and the client's reconnection resumes it through another). Either
/// way the client then resumes from the last id it read.
struct Relay {
    inner: Option<hyper::body::Incoming>,
    stop: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.inner.is_some() && self.stop.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "relayed stream broke");
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_has_its_own_in_flight_slots_and_a_finished_request_frees_one() {
        let peers = Peers::default();
        let a: Vec<InFlight> = (0..2).map(|_| peers.admit("a:1", 2).unwrap()).collect();
        assert!(matches!(peers.admit("a:1", 2), Err(Error::ForwardBusy)));
        // A refusal takes no slot, and another node has its own.
        let b = peers.admit("b:1", 2).unwrap();
        drop(a);
        let again: Vec<InFlight> = (0..2).map(|_| peers.admit("a:1", 2).unwrap()).collect();
        assert!(matches!(peers.admit("a:1", 2), Err(Error::ForwardBusy)));
        drop((b, again));
        // 0: no limit.
        let many: Vec<InFlight> = (0..10_000)
            .map(|_| peers.admit("a:1", 0).unwrap())
            .collect();
        assert_eq!(many.len(), 10_000);
    }
}
