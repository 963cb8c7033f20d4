//! A cluster node answers for every session, wherever it lives: a request
//! for a session (or shared stream) another node holds, or a resume of a
//! session waiting out its recovery window on another node, is replayed on
//! that node and its answer relayed, so no load balancer needs sticky
//! sessions.

use bytes::Bytes;
use hyper::{Method, Request, Response};

use crate::api::io::Io;
use crate::cluster::{forward, vouch};
use crate::error::Error;
use crate::session::{self, Peer, Sid, SidParam};
use crate::transport::http::{self, ResponseBody};
use crate::transport::mux::{self, MuxParam};

/// What [`reroute`] did with a request.
pub(crate) enum Rerouted<B> {
    /// Another node answered it.
    Answered(Response<ResponseBody>),
    /// This node serves it: the request, untouched.
    Here(Request<B>),
}

/// Sends the request to the node that holds its session, if that is another
/// node; on a single node, or for a session this node holds, it costs a few
/// comparisons and a table lookup. A client address another node vouched
/// for becomes the request's peer here, and one nobody vouched for is
/// dropped.
pub(crate) async fn reroute<B>(
    io: &Io,
    mut req: Request<B>,
    sid: SidParam,
    mux: MuxParam,
) -> Result<Rerouted<B>, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    vouch::accept(io.hub().backend.cluster_key(), &mut req);
    if let SidParam::Valid(sid) = sid {
        if maybe_elsewhere(io, sid, &req) {
            if let Some(addr) = owner_of(io, *sid.as_uuid()).await {
                return forward_to_owner(io, &addr, req, None)
                    .await
                    .map(Rerouted::Answered);
            }
        }
    }
    // A shared stream's polls and attachments go to the node holding it.
    if let MuxParam::Id(id) = mux {
        let stream_route = matches!(
            (req.method(), req.uri().path()),
            (&Method::GET, "/poll") | (&Method::POST, "/mux/attach")
        );
        if stream_route
            && io.config().cluster_node().is_some()
            && !req.headers().contains_key(forward::FORWARDED)
            && !mux::holds(io, id)
        {
            if let Some(addr) = owner_of(io, *id.as_uuid()).await {
                return forward_to_owner(io, &addr, req, None)
                    .await
                    .map(Rerouted::Answered);
            }
        }
    }
    // A resume for a session this node does not hold goes to the node
    // where it waits out its recovery window.
    if let Some(held) = resumes_elsewhere(io, &req, sid, mux) {
        if let Some(addr) = owner_of(io, *held.as_uuid()).await {
            let stream = (req.uri().path() == "/events").then(|| io.hub().stopping());
            return forward_to_owner(io, &addr, req, stream)
                .await
                .map(Rerouted::Answered);
        }
    }
    Ok(Rerouted::Here(req))
}

/// Whether a request names a session this node does not hold, on a route
/// that another node could answer for it. Only unknown sids reach the
/// backend, so a single node does no extra work for its own sessions.
fn maybe_elsewhere<B>(io: &Io, sid: Sid, req: &Request<B>) -> bool {
    let session_route = matches!(
        (req.method(), req.uri().path()),
        (&Method::GET, "/poll")
            | (&Method::POST, "/emit")
            | (&Method::POST, "/close")
            | (&Method::POST, "/refresh")
            | (&Method::POST, "/ack")
    );
    io.config().cluster_node().is_some()
        && session_route
        && !req.headers().contains_key(forward::FORWARDED)
        && io.hub().get(&sid).is_none()
}

/// The session a session-starting request resumes, when this node does not
/// hold it (live or away): another node may. A malformed cursor is left to
/// this node, which refuses it.
fn resumes_elsewhere<B>(io: &Io, req: &Request<B>, sid: SidParam, mux: MuxParam) -> Option<Sid> {
    let starts = match (req.method(), req.uri().path()) {
        (&Method::GET, "/events") => true,
        (&Method::GET, "/poll") => sid == SidParam::Absent,
        _ => false,
    };
    if !starts
        || mux != MuxParam::Absent
        || io.config().cluster_node().is_none()
        || io.config().recovery_window_ms == 0
        || req.headers().contains_key(forward::FORWARDED)
    {
        return None;
    }
    let cursor = crate::api::io::resume_cursor(req.headers(), req.uri().query()).ok()??;
    (!io.hub().holds(&cursor.sid)).then_some(cursor.sid)
}

/// The address of the other node holding `sid`, if one does.
async fn owner_of(io: &Io, id: uuid::Uuid) -> Option<String> {
    match io.hub().backend.locate(id).await {
        Ok(addr) => addr,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up a session's node");
            None
        }
    }
}

/// Replays the request on the node at `addr` and relays its answer.
async fn forward_to_owner<B>(
    io: &Io,
    addr: &str,
    req: Request<B>,
    stream: Option<tokio_util::sync::CancellationToken>,
) -> Result<Response<ResponseBody>, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let config = io.config();
    let headers = req.headers().clone();
    // The client as this node sees it, after its own proxy rules: what the
    // owner's per-address limits count.
    let vouch = io.hub().backend.cluster_key().and_then(|key| {
        let peer = req.extensions().get::<Peer>()?.0.ip();
        let client = session::client_address(&headers, peer, &config.trusted_proxy);
        Some(vouch::sign(&key, client, &target))
    });
    let body = if method == Method::POST {
        http::read_body(config, req).await?
    } else {
        Bytes::new()
    };
    // Taken once the body is in: a client slow to send it holds no slot.
    let peers = io.extension::<forward::Peers>();
    let slot = peers.admit(addr, config.forward_max_inflight)?;
    forward::forward(forward::Forward {
        client: peers.client(config),
        addr,
        method,
        target: &target,
        headers,
        body,
        from: config.cluster_node().unwrap_or_default(),
        vouch,
        slot,
        // A poll is held up to pingInterval; the rest is slack for the hop.
        within: config.ping_interval() + config.ping_timeout(),
        stream,
    })
    .await
}
