//! Response heads as tables of header names and values, so that the hyper
//! path and the raw SSE path send the very same headers from one definition.

use std::borrow::Cow;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::config::Config;
use crate::error::Error;
use crate::session::Sid;

/// A response's headers, in the order they are written.
pub(crate) type Head = Vec<(&'static str, Cow<'static, str>)>;

/// The CORS headers for a request from `origin` (its `Origin` header, if
/// any), for both the hyper path and the raw path.
///
/// With `*` in `--cors-origin` (the default) every response is readable
/// from any origin and the same for every request, so it needs no `Vary`.
/// With an allow-list, a listed origin is echoed back, any other gets no
/// `Access-Control-Allow-Origin` (so its page cannot read the response),
/// and every response says `Vary: Origin` so that no cache hands one
/// origin's answer to another.
pub(crate) fn cors(config: &Config, origin: Option<&[u8]>) -> Head {
    cors_listed(config, origin.and_then(|o| listed_origin(config, o)))
}

/// [`cors`] for an `Origin` already looked up with [`listed_origin`]: a
/// held poll keeps the index, not the header.
pub(crate) fn cors_listed(config: &Config, listed: Option<usize>) -> Head {
    if config.cors_any() {
        return vec![("access-control-allow-origin", "*".into())];
    }
    let mut head: Head = Vec::with_capacity(2);
    if let Some(origin) = listed.and_then(|i| config.cors_origins.get(i)) {
        head.push(("access-control-allow-origin", origin.clone().into()));
    }
    head.push(("vary", "Origin".into()));
    head
}

/// The listed origin `origin` is, if any. Compared byte for byte, as
/// browsers send it (scheme, host, port; no path, no trailing slash).
pub(crate) fn allowed_origin<'c>(config: &'c Config, origin: &[u8]) -> Option<&'c str> {
    listed_origin(config, origin).map(|i| config.cors_origins[i].as_str())
}

/// Where `origin` is in `--cors-origin`, if it is listed.
pub(crate) fn listed_origin(config: &Config, origin: &[u8]) -> Option<usize> {
    config
        .cors_origins
        .iter()
        .position(|o| o.as_bytes() == origin)
}

/// Names the node that answered, on every response of a cluster node, so a
/// client (or a test) behind a load balancer can tell which node served it.
pub(crate) const NODE: &str = "x-ssio-node";

/// The head of `GET /events`: an endless, unbuffered, uncached event stream
/// whose sid a cross-origin page may read.
pub(crate) fn sse(sid: Sid) -> Head {
    vec![
        ("content-type", "text/event-stream".into()),
        ("cache-control", "no-cache".into()),
        // Tells nginx not to buffer the stream.
        ("x-accel-buffering", "no".into()),
        ("x-session-id", sid.to_string().into()),
        ("access-control-expose-headers", "X-Session-Id".into()),
    ]
}

/// The content headers of every JSON response: never cached, since each
/// answers one request about live state.
pub(crate) const JSON: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
];

/// `x-ssio-cursor`: where a polling client resumes once it has read the
/// response, readable from another origin.
pub(crate) fn cursor(cursor: &str) -> Head {
    vec![
        ("x-ssio-cursor", cursor.to_string().into()),
        (
            "access-control-expose-headers",
            "X-Session-Id, X-Ssio-Cursor".into(),
        ),
    ]
}

/// The head of every error response, besides its JSON body.
pub(crate) fn error(e: &Error) -> Head {
    let mut head: Head = JSON.iter().map(|&(n, v)| (n, v.into())).collect();
    if let Error::MethodNotAllowed(allow) = e {
        head.push(("allow", Cow::Borrowed(allow)));
    }
    if let Some(secs) = e.retry_after() {
        head.push(("retry-after", Cow::Borrowed(secs)));
    }
    head
}

/// Adds `head` to a hyper response. A `vary` adds to the one the response
/// has, if any: a static file varies on `Accept-Encoding` and, with an
/// allow-list, on `Origin` too.
pub(crate) fn apply<B>(res: &mut Response<B>, head: Head) {
    let h = res.headers_mut();
    for (name, value) in head {
        let had = (name == "vary")
            .then(|| h.get(hyper::header::VARY))
            .flatten()
            .and_then(|v| v.to_str().ok());
        let value = match (had, value) {
            (Some(had), value) => HeaderValue::from_str(&format!("{had}, {value}")),
            (None, Cow::Borrowed(v)) => Ok(HeaderValue::from_static(v)),
            (None, Cow::Owned(v)) => HeaderValue::from_str(&v),
        }
        .expect("header values are ASCII");
        h.insert(HeaderName::from_static(name), value);
    }
}

/// Writes a status line and `head` (plus any `extra` lines, then a `date`)
/// as HTTP/1.1 bytes, for responses written straight on a socket.
pub(crate) fn raw(status: StatusCode, head: &Head, extra: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in head.iter().map(|(n, v)| (*n, &**v)) {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(extra);
    // Last, as hyper writes it.
    out.push_str("date: ");
    out.push_str(&httpdate::fmt_http_date(std::time::SystemTime::now()));
    out.push_str("\r\n\r\n");
    out
}

/// A complete error response for a connection that closes after it, with
/// the CORS headers `cors` gave.
pub(crate) fn raw_error(e: &Error, cors: Head) -> Vec<u8> {
    raw_answer(e, cors, "connection: close\r\n")
}

/// [`raw_error`] on a connection that stays open for the next request.
pub(crate) fn raw_error_open(e: &Error, cors: Head) -> Vec<u8> {
    raw_answer(e, cors, "")
}

fn raw_answer(e: &Error, cors: Head, connection: &str) -> Vec<u8> {
    let body = e.body();
    let extra = format!("content-length: {}\r\n{connection}", body.len());
    let mut head = error(e);
    head.extend(cors);
    let mut out = raw(e.status(), &head, &extra);
    out.push_str(&body);
    out.into_bytes()
}
