//! HTTP routing: a plain `match` on method and path, the one place where
//! requests become transport calls and errors become responses.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, LengthLimitError, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use crate::error::Error;
use crate::hub::Hub;
use crate::session::{DisconnectReason, Session, Sid, Transport};
use crate::socket::{Io, Socket};
use crate::stream::SseBody;
use crate::{poll, statics};

/// The body type of every ssio response: a fixed buffer or an endless SSE
/// stream, boxed so both fit one service signature.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// Event names a client may not send: they are the session's own lifecycle.
const RESERVED: &[&str] = &["connect", "disconnect", "connect_error"];

/// Methods allowed per path, for 405 `Allow` headers.
fn allowed(path: &str) -> Option<&'static str> {
    match path {
        "/events" | "/poll" | "/stats" | "/_api/server.js" => Some("GET, OPTIONS"),
        "/emit" | "/close" => Some("POST, OPTIONS"),
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
        let mut res = match route(&self.hub, req).await {
            Ok(res) => res,
            Err(e) => error_response(&e),
        };
        res.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        res
    }
}

async fn route<B>(hub: &Arc<Hub>, req: Request<B>) -> Result<Response<ResponseBody>, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::OPTIONS, p) if allowed(p).is_some() || p == "*" => Ok(preflight()),
        (&Method::GET, "/events") => events(hub),
        (&Method::GET, "/poll") => match sid_param(req.uri().query()) {
            None if req.uri().query().is_none_or(|q| !q.contains("sid=")) => {
                let (session, body) = poll::handshake(hub)?;
                let mut res = json(StatusCode::OK, body);
                res.headers_mut()
                    .insert("x-session-id", sid_header(session.sid));
                Ok(res)
            }
            None => Err(Error::UnknownSession),
            Some(sid) => {
                let session = lookup(hub, sid)?;
                Ok(json(StatusCode::OK, poll::poll(hub, session).await?))
            }
        },
        (&Method::POST, "/emit") => {
            let session = lookup(
                hub,
                sid_param(req.uri().query()).ok_or(Error::UnknownSession)?,
            )?;
            let body = read_body(hub, req).await?;
            let (event, data) = parse_emit(&body, hub.config.max_event_name)?;
            // The session may have ended while the body was read.
            if session.closed_reason().is_some() {
                return Err(Error::UnknownSession);
            }
            Socket::new(Io::from_hub(hub.clone()), session).dispatch(&event, &data);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::POST, "/close") => {
            // sendBeacon sends any body with any content type; it is not read.
            let sid = sid_param(req.uri().query()).ok_or(Error::UnknownSession)?;
            hub.disconnect(sid, DisconnectReason::ClientClose);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (&Method::GET, "/stats") => {
            let s = Io::from_hub(hub.clone()).stats();
            let body = serde_json::json!({
                "sessions": s.sessions, "sse": s.sse, "polling": s.polling, "count": s.count,
            });
            Ok(json(StatusCode::OK, Bytes::from(body.to_string())))
        }
        (&Method::GET, "/_api/server.js") => Ok(file(
            "text/plain; charset=utf-8",
            statics::SERVER_SOURCE.as_bytes(),
        )),
        (&Method::GET | &Method::HEAD, p) => match statics::lookup(p) {
            Some(f) => Ok(file(f.content_type, f.bytes)),
            None => Err(not_found_or_method(p)),
        },
        (_, p) => Err(not_found_or_method(p)),
    }
}

fn not_found_or_method(path: &str) -> Error {
    match allowed(path) {
        Some(allow) => Error::MethodNotAllowed(allow),
        None => Error::NotFound,
    }
}

fn events(hub: &Arc<Hub>) -> Result<Response<ResponseBody>, Error> {
    let (session, delivery) = hub.connect(Transport::Sse)?;
    let body = SseBody::new(hub.clone(), session.sid, delivery);
    let mut res = Response::new(BoxBody::new(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    h.insert("x-session-id", sid_header(session.sid));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Session-Id"),
    );
    Ok(res)
}

/// The `sid` query parameter, if present and a well-formed UUID.
fn sid_param(query: Option<&str>) -> Option<Sid> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sid="))?;
    // Exactly the hyphenated form we issue; anything else is not ours.
    if value.len() != 36 {
        return None;
    }
    Sid::try_parse(value).ok()
}

fn lookup(hub: &Hub, sid: Sid) -> Result<Arc<Session>, Error> {
    hub.get(&sid).ok_or(Error::UnknownSession)
}

fn sid_header(sid: Sid) -> HeaderValue {
    HeaderValue::from_str(&sid.to_string()).expect("a uuid is a valid header value")
}

/// Reads a request body up to `--max-payload`, within `--body-timeout`.
async fn read_body<B>(hub: &Hub, req: Request<B>) -> Result<Bytes, Error>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = hub.config.max_payload;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(hub.config.body_timeout(), body.collect()).await {
        Err(_) => Err(Error::BodyTimeout),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(Error::PayloadTooLarge(limit)),
        Ok(Err(_)) => Err(Error::BodyRead),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Parses `{"event": "<name>", "data": <any>}` and checks the name.
fn parse_emit(body: &[u8], max_event_name: usize) -> Result<(String, Value), Error> {
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
    Ok((event, obj.remove("data").unwrap_or(Value::Null)))
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

fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    BoxBody::new(Full::new(bytes.into()))
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut res = Response::new(BoxBody::new(Empty::new()));
    *res.status_mut() = status;
    res
}

fn json(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn file(content_type: &'static str, bytes: &'static [u8]) -> Response<ResponseBody> {
    let mut res = Response::new(full(Bytes::from_static(bytes)));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

fn preflight() -> Response<ResponseBody> {
    let mut res = empty(StatusCode::NO_CONTENT);
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}

fn error_response(e: &Error) -> Response<ResponseBody> {
    let mut res = json(e.status(), Bytes::from(e.body()));
    if let Error::MethodNotAllowed(allow) = e {
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(secs) = e.retry_after() {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
    }
    res
}

#[cfg(test)]
mod tests {
    //! Property tests of everything that parses client input. Inputs that
    //! once mattered are kept in `CORPUS`-style tables below as regressions.

    use super::*;
    use proptest::prelude::*;

    const SID: &str = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";

    #[test]
    fn sid_param_corpus() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some(""), false),
            (Some("sid="), false),
            (Some("sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), true),
            (Some("t=1&sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), true),
            (Some("sid=0b9c3f3e8a3c4c1e9f552f1c0b7d9a10"), false),
            (Some("sid={0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a1}"), false),
            (Some("sid=urn:uuid:0b9c3f3e-8a3c-4c1e-9f5"), false),
            (Some("sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a1%00"), false),
            (Some("sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10x"), false),
            (Some("xsid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), false),
        ];
        for (q, ok) in cases {
            assert_eq!(sid_param(*q).is_some(), *ok, "{q:?}");
        }
    }

    #[test]
    fn emit_corpus() {
        assert!(parse_emit(br#"{"event":"a","data":{"x":[1,2]}}"#, 256).is_ok());
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

    #[test]
    fn static_lookup_corpus() {
        for p in [
            "/",
            "/index.html",
            "/public/client.js",
            "/public/ssio.js",
            "/public/ssio.d.ts",
            "/public/style.css",
        ] {
            assert!(statics::lookup(p).is_some(), "{p}");
        }
        for p in [
            "",
            "/public/",
            "/public/../src/app.rs",
            "/PUBLIC/client.js",
            "/public/client.js/",
            "/public/client.js?x",
        ] {
            assert!(statics::lookup(p).is_none(), "{p}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn sid_param_accepts_only_hyphenated_uuids(q in ".{0,80}") {
            if let Some(sid) = sid_param(Some(&q)) {
                let needle = format!("sid={}", sid.hyphenated());
                let found = q.to_lowercase().contains(&needle);
                prop_assert!(found, "{} not in {}", needle, q);
            }
        }

        #[test]
        fn sid_param_finds_a_real_sid_among_other_params(pre in "[a-z]{1,5}=[a-z0-9]{0,8}", post in "[a-z]{1,5}=[a-z0-9]{0,8}") {
            let q = format!("{pre}&sid={SID}&{post}");
            prop_assert_eq!(sid_param(Some(&q)).map(|s| s.to_string()), Some(SID.to_string()));
        }

        #[test]
        fn parse_emit_never_panics_and_enforces_name_rules(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((name, _)) = parse_emit(&body, 16) {
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
                let (n, d) = parsed.unwrap();
                prop_assert_eq!(n, name);
                prop_assert_eq!(d, Value::from(data));
            }
        }

        #[test]
        fn static_lookup_serves_only_the_table(path in "/[./%a-z0-9A-Z]{0,40}") {
            if statics::lookup(&path).is_some() {
                prop_assert!(["/", "/index.html", "/public/client.js", "/public/ssio.js", "/public/ssio.d.ts", "/public/style.css"].contains(&path.as_str()));
            }
        }
    }
}
