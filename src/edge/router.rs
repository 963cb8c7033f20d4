//! HTTP routing: a plain `match` on method and path, the one place where
//! requests become transport calls and errors become responses.
//!
//! Each request's `sid` parameter is parsed once, into a [`SidParam`], before
//! the match, so every route sees the same answer to "which session".

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::api::ack::Ack;
use crate::api::io::Io;
use crate::cluster::reroute::{self, Rerouted};
use crate::edge::probe;
use crate::edge::server_api;
use crate::edge::statics;
use crate::engine::hub::Session;
use crate::engine::recovery::Cursor;
use crate::error::Error;
use crate::ops::metrics;
use crate::session::{DisconnectReason, Handshake, Peer, Sid, SidParam};
use crate::transport::head;
use crate::transport::http::{self, ResponseBody};
use crate::transport::mux::{self, MuxParam};
use crate::transport::{poll, sse};

/// Event names a client may not send: they are the session's own lifecycle.
const RESERVED: &[&str] = &["connect", "disconnect", "connect_error"];

/// Methods allowed per path, for 405 `Allow` headers.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/events" | "/poll" | "/stats" | "/_api/server.js" => Some("GET, OPTIONS"),
        "/metrics" | "/healthz" | "/readyz" => Some("GET, OPTIONS"),
        "/emit" | "/close" | "/handshake" | "/mux/attach" => Some("POST, OPTIONS"),
        "/refresh" | "/ack" => Some("POST, OPTIONS"),
        p if statics::lookup(p).is_some() => Some("GET, HEAD, OPTIONS"),
        _ => None,
    }
}

impl Io {
    /// Answers one HTTP request. This is the whole server as a function, so
    /// it can be mounted inside another hyper service: route the paths you
    /// want to ssio and call this.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        handle(self, req).await
    }
}

/// Answers one request: the route's response, or its error as JSON; CORS
/// headers on both.
pub(crate) async fn handle<B>(io: &Io, req: Request<B>) -> Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let mut res = match route(io, req, origin.as_ref()).await {
        Ok(res) => res,
        Err(e) => {
            io.refused(method.as_str(), uri.path(), &e);
            http::error(&e)
        }
    };
    head::apply(
        &mut res,
        head::cors(io.config(), origin.as_ref().map(HeaderValue::as_bytes)),
    );
    if let Some(n) = http_body::Body::size_hint(res.body()).exact() {
        io.hub().metrics.response_bytes(n);
    }
    if let Some(node) = io.config().cluster_node() {
        if let Ok(value) = HeaderValue::from_str(node) {
            res.headers_mut().insert(head::NODE, value);
        }
    }
    res
}

/// A preflight from an origin the allow-list does not name is refused
/// outright, so the page's request fails with a clear status instead of
/// being sent and then unreadable.
fn preflight(io: &Io, origin: Option<&HeaderValue>) -> Result<Response<ResponseBody>, Error> {
    let config = io.config();
    match origin {
        Some(o) if !config.cors_any() && head::allowed_origin(config, o.as_bytes()).is_none() => {
            Err(Error::OriginNotAllowed)
        }
        _ => Ok(http::preflight()),
    }
}

/// The size of `req`'s head as HTTP/1.1 writes it. The edge judges a
/// connection's first head by its bytes, but a later head on a kept-alive
/// connection, or one over TLS, is read by hyper, whose read buffer is only
/// a rough bound (a head that arrives with the bytes before it, or in one
/// large read, passes whatever its size): so `--max-header-bytes` is
/// checked again here, on what was parsed.
fn head_bytes<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

fn probe_json((status, body): (StatusCode, Bytes)) -> Response<ResponseBody> {
    http::json(status, body)
}

async fn route<B>(
    io: &Io,
    req: Request<B>,
    origin: Option<&HeaderValue>,
) -> Result<Response<ResponseBody>, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if head_bytes(&req) > io.config().max_header_bytes {
        return Err(Error::HeadTooLarge);
    }
    let sid = SidParam::parse(req.uri().query());
    let mux = MuxParam::parse(req.uri().query());
    let req = match reroute::reroute(io, req, sid, mux).await? {
        Rerouted::Answered(res) => return Ok(res),
        Rerouted::Here(req) => req,
    };
    let path = req.uri().path();
    match (req.method(), path) {
        // Served on --metrics-listen instead: not here at all.
        (_, "/metrics") if !io.config().metrics_public() => Err(Error::NotFound),
        (&Method::OPTIONS, p) if allowed(p).is_some() || p == "*" => preflight(io, origin),
        (&Method::GET, "/events") if mux != MuxParam::Absent => {
            let MuxParam::Open = mux else {
                return Err(Error::UnknownMux);
            };
            let res = mux::sse_response(io, resume(sid)?, &handshake_of(&req)).await?;
            Ok(res.map(BoxBody::new))
        }
        (&Method::GET, "/poll") if mux != MuxParam::Absent => match mux {
            MuxParam::Open => {
                let (sid, body) =
                    mux::poll_handshake(io, resume(sid)?, &handshake_of(&req)).await?;
                let mut res = http::json(StatusCode::OK, body);
                res.headers_mut().insert("x-session-id", sid_header(sid));
                Ok(res)
            }
            MuxParam::Id(id) => Ok(http::json(StatusCode::OK, mux::poll(io, id).await?)),
            MuxParam::Absent | MuxParam::Malformed => Err(Error::UnknownMux),
        },
        (&Method::POST, "/mux/attach") => {
            let MuxParam::Id(id) = mux else {
                return Err(Error::UnknownMux);
            };
            let (sid, body) = mux::attach(io, id, resume(sid)?, &handshake_of(&req)).await?;
            let mut res = http::json(StatusCode::OK, body);
            res.headers_mut().insert("x-session-id", sid_header(sid));
            Ok(res)
        }
        (&Method::GET, "/events") => Ok(sse::response(io, handshake_of(&req))
            .await?
            .map(BoxBody::new)),
        (&Method::GET, "/poll") => match sid {
            SidParam::Absent => {
                let (sid, body, cursor) = poll::handshake(io, handshake_of(&req)).await?;
                let mut res = http::json(StatusCode::OK, body);
                res.headers_mut().insert("x-session-id", sid_header(sid));
                cursor_header(io, &mut res, cursor);
                Ok(res)
            }
            sid => {
                let session = lookup(io, sid.sid()?)?;
                let (body, cursor) = poll::poll(io, session)?.await;
                let mut res = http::json_body(StatusCode::OK, BoxBody::new(body));
                cursor_header(io, &mut res, cursor);
                Ok(res)
            }
        },
        (&Method::POST, "/handshake") => {
            let mut handshake = handshake_of(&req);
            let limit = io.config().max_auth_bytes;
            let body = match http::read_body_within(io.config(), req, limit).await {
                Err(Error::PayloadTooLarge(n)) => return Err(Error::AuthTooLarge(n)),
                other => other?,
            };
            handshake.auth = parse_auth(&body)?;
            let ticket = io.issue_ticket(&handshake, &body)?;
            let body = serde_json::json!({ "ticket": ticket.to_string() }).to_string();
            Ok(http::json(StatusCode::OK, Bytes::from(body)))
        }
        (&Method::POST, "/emit") => {
            let session = lookup(io, sid.sid()?)?;
            io.hub().alive(&session);
            let body = http::read_body(io.config(), req).await?;
            // Read first, so the connection stays usable; refused before
            // parsing, so a flood costs no JSON work.
            if !io.hub().allow_emit(&session) {
                return Err(Error::EmitRate);
            }
            let (event, data, wants_ack) = parse_emit(&body, io.config().max_event_name)?;
            // The session may have ended while the body was read.
            if session.closed_reason().is_some() {
                return Err(Error::UnknownSession);
            }
            if !wants_ack {
                io.dispatch(session, &event, &data, Ack::none())?;
                return Ok(http::empty(StatusCode::NO_CONTENT));
            }
            let (ack, mut answer) = Ack::channel();
            io.dispatch(session, &event, &data, ack)?;
            // Answered already (the usual case): one plain response.
            match answer.try_recv() {
                Ok(reply) => return Ok(ack_response(Ok(reply))),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                    return Ok(ack_response(Err("no acknowledgement")))
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            // The head goes now, so the client may send its next event;
            // the answer follows in the body, or an error at the deadline.
            let within = io.config().ack_timeout();
            Ok(http::deferred_json(async move {
                let reply = match tokio::time::timeout(within, answer).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(_)) => Err("no acknowledgement"),
                    Err(_) => Err("acknowledgement timed out"),
                };
                ack_body(reply)
            }))
        }
        (&Method::POST, "/ack") => {
            let session = lookup(io, sid.sid()?)?;
            io.hub().alive(&session);
            let body = http::read_body(io.config(), req).await?;
            // Answers share the emit rate: a flood of them is a flood.
            if !io.hub().allow_emit(&session) {
                return Err(Error::EmitRate);
            }
            io.answer(&session, &body)?;
            Ok(http::empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, "/close") => {
            // sendBeacon sends any body with any content type; it is not read.
            io.hub()
                .disconnect(sid.sid()?, DisconnectReason::ClientClose);
            Ok(http::empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, "/stats") => {
            let s = io.stats();
            let mut body = serde_json::json!({
                "sessions": s.sessions, "sse": s.sse, "polling": s.polling, "count": s.count,
                "away": s.away,
            });
            // A cluster node also says which node it is.
            if let Some(node) = io.config().cluster_node() {
                body["node"] = node.into();
            }
            Ok(http::json(StatusCode::OK, Bytes::from(body.to_string())))
        }
        (&Method::POST, "/refresh") => {
            let session = lookup(io, sid.sid()?)?;
            let limit = io.config().max_auth_bytes;
            let body = match http::read_body_within(io.config(), req, limit).await {
                Err(Error::PayloadTooLarge(n)) => return Err(Error::AuthTooLarge(n)),
                other => other?,
            };
            let exp = io.refresh(&session, &body)?;
            let body = serde_json::json!({ "exp": exp }).to_string();
            Ok(http::json(StatusCode::OK, Bytes::from(body)))
        }
        (&Method::GET, "/healthz") => Ok(probe_json(probe::healthz())),
        (&Method::GET, "/readyz") => Ok(probe_json(probe::readyz(io))),
        (&Method::GET, "/metrics") if io.config().metrics_public() => Ok(metrics_response(io)),
        (&Method::GET, "/_api/server.js") => Ok(http::file(
            "text/plain; charset=utf-8",
            statics::SERVER_SOURCE.as_bytes(),
        )),
        // The server API; only on --api-listen when that is set, but a
        // command another node replays here comes to the public address.
        (_, p) if server_api::is_api(p) => {
            if io.config().api_listen.is_some()
                && !req
                    .headers()
                    .contains_key(crate::cluster::forward::FORWARDED)
            {
                return Err(Error::NotFound);
            }
            server_api::handle(io, req).await
        }
        (&Method::GET | &Method::HEAD, p) => match statics::lookup(p) {
            Some(f) => Ok(statics::static_file(f, req.headers())),
            None => Err(not_found_or_method(p)),
        },
        (_, p) => Err(not_found_or_method(p)),
    }
}

/// The handshake a session-starting request carries (its `auth` is set
/// only through `POST /handshake`).
fn handshake_of<B>(req: &Request<B>) -> Handshake {
    let headers = req.headers().clone();
    let query = req.uri().query().map(str::to_string);
    match req.extensions().get::<Peer>() {
        Some(Peer(addr)) => Handshake::new(headers, query, *addr),
        None => Handshake::unknown_address(headers, query),
    }
}

/// Answers a request on the `--metrics-listen` address: `/metrics` and the
/// probes, nothing else.
pub(crate) fn handle_internal<B>(io: &Io, req: &Request<B>) -> Response<ResponseBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics_response(io),
        (&Method::GET, "/healthz") => probe_json(probe::healthz()),
        (&Method::GET, "/readyz") => probe_json(probe::readyz(io)),
        _ => http::error(&Error::NotFound),
    }
}

/// `/metrics`, on the public address or on `--metrics-listen`.
pub(crate) fn metrics_response(io: &Io) -> Response<ResponseBody> {
    let mut res = Response::new(http::full(probe::metrics(io)));
    let h = res.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    res
}

/// A shared-stream request's optional `sid`: the session to re-attach.
fn resume(sid: SidParam) -> Result<Option<Sid>, Error> {
    match sid {
        SidParam::Absent => Ok(None),
        SidParam::Malformed => Err(Error::UnknownSession),
        SidParam::Valid(sid) => Ok(Some(sid)),
    }
}

fn not_found_or_method(path: &str) -> Error {
    match allowed(path) {
        Some(allow) => Error::MethodNotAllowed(allow),
        None => Error::NotFound,
    }
}

fn lookup(io: &Io, sid: Sid) -> Result<Arc<Session>, Error> {
    io.hub().get(&sid).ok_or(Error::UnknownSession)
}

fn sid_header(sid: Sid) -> HeaderValue {
    HeaderValue::from_str(&sid.to_string()).expect("a uuid is a valid header value")
}

/// `x-ssio-cursor`: where a polling client resumes once it has read this
/// response (only while recovery is on).
fn cursor_header(io: &Io, res: &mut Response<ResponseBody>, cursor: Cursor) {
    if !io.config().resumable() {
        return;
    }
    head::apply(res, head::cursor(&cursor.to_string()));
}

/// `{"data": reply}` or `{"error": why}`: an acknowledgement's body.
fn ack_body(reply: Result<Value, &'static str>) -> Bytes {
    let body = match reply {
        Ok(data) => serde_json::json!({ "data": data }),
        Err(e) => serde_json::json!({ "error": e }),
    };
    Bytes::from(body.to_string())
}

fn ack_response(reply: Result<Value, &'static str>) -> Response<ResponseBody> {
    http::json(StatusCode::OK, ack_body(reply))
}

/// The body of `POST /handshake`: the client's `auth` payload, a JSON
/// object.
fn parse_auth(body: &[u8]) -> Result<Value, Error> {
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Error::BadAuth("expected a JSON object")),
        Err(_) => Err(Error::BadAuth("not JSON")),
    }
}

/// Parses `{"event": "<name>", "data": <any>, "ack": true}` (`ack`
/// optional) and checks the name.
fn parse_emit(body: &[u8], max_event_name: usize) -> Result<(String, Value, bool), Error> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::BadJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(Error::BadJson("expected an object".into()));
    };
    let event = match obj.remove("event") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Error::BadJson("\"event\" must be a string".into())),
        None => return Err(Error::BadJson("missing \"event\"".into())),
    };
    check_event_name(&event, max_event_name)?;
    let ack = match obj.remove("ack") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(Error::BadAck("\"ack\" must be true or false")),
    };
    Ok((event, obj.remove("data").unwrap_or(Value::Null), ack))
}

/// The rules for a client-sent event name.
pub(crate) fn check_event_name(name: &str, max: usize) -> Result<(), Error> {
    if name.is_empty() {
        Err(Error::BadEventName("empty"))
    } else if name.len() > max {
        Err(Error::BadEventName("too long"))
    } else if name.contains(['\n', '\r']) {
        Err(Error::BadEventName("contains a newline"))
    } else if RESERVED.contains(&name) {
        Err(Error::BadEventName("reserved"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The emit parser, with property tests. Inputs that once mattered are
    //! kept in the corpus table below as regressions.

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emit_corpus() {
        assert!(parse_emit(br#"{"event":"a","data":{"x":[1,2]}}"#, 256).is_ok());
        assert!(parse_emit(br#"{"event":"a","ack":true}"#, 256).unwrap().2);
        for bad_ack in [
            &br#"{"event":"a","ack":1}"#[..],
            br#"{"event":"a","ack":"yes"}"#,
            br#"{"event":"a","ack":null}"#,
        ] {
            assert_eq!(
                parse_emit(bad_ack, 256).err(),
                Some(Error::BadAck("\"ack\" must be true or false"))
            );
        }
        assert_eq!(parse_emit(br#"{"event":"a"}"#, 256).unwrap().1, Value::Null);
        for bad in [
            &b"\xff\xfe"[..],
            b"null",
            b"\"event\"",
            b"{\"event\":null}",
            b"{\"event\":\"\\u0000\n\"}",
        ] {
            assert!(
                parse_emit(bad, 256).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Deep nesting is refused by the JSON parser's recursion limit, not
        // by a stack overflow.
        let deep = format!(
            "{{\"event\":\"a\",\"data\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(parse_emit(deep.as_bytes(), 256).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn parse_emit_never_panics_and_enforces_name_rules(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((name, _, _)) = parse_emit(&body, 16) {
                prop_assert!(!name.is_empty() && name.len() <= 16);
                prop_assert!(!name.contains('\n') && !name.contains('\r'));
                prop_assert!(!RESERVED.contains(&name.as_str()));
            }
        }

        #[test]
        fn parse_emit_accepts_every_valid_name(name in "[^\r\n]{1,16}", data in any::<i64>()) {
            let body = serde_json::json!({ "event": name, "data": data }).to_string();
            let parsed = parse_emit(body.as_bytes(), 64);
            if RESERVED.contains(&name.as_str()) || name.len() > 64 {
                prop_assert!(parsed.is_err());
            } else {
                let (n, d, _) = parsed.unwrap();
                prop_assert_eq!(n, name);
                prop_assert_eq!(d, Value::from(data));
            }
        }
    }
}
