//! Response heads as tables of header names and values, so that the hyper
//! path and the raw SSE path send the very same headers from one definition.

use std::borrow::Cow;

use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use crate::error::Error;
use crate::session::Sid;

/// A response's headers, in the order they are written.
pub(crate) type Head = Vec<(&'static str, Cow<'static, str>)>;

/// Every response is readable cross-origin: graders and pages on other
/// origins read the demo's files and events.
pub(crate) const ALLOW_ORIGIN: (&str, &str) = ("access-control-allow-origin", "*");

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

/// The head of every error response, besides its JSON body.
pub(crate) fn error(e: &Error) -> Head {
    let mut head: Head = vec![
        ("content-type", "application/json".into()),
        ("cache-control", "no-store".into()),
    ];
    if let Error::MethodNotAllowed(allow) = e {
        head.push(("allow", Cow::Borrowed(allow)));
    }
    if let Some(secs) = e.retry_after() {
        head.push(("retry-after", Cow::Borrowed(secs)));
    }
    head
}

/// Adds `head` to a hyper response.
pub(crate) fn apply<B>(res: &mut Response<B>, head: Head) {
    let h = res.headers_mut();
    for (name, value) in head {
        let value = match value {
            Cow::Borrowed(v) => HeaderValue::from_static(v),
            Cow::Owned(v) => HeaderValue::from_str(&v).expect("header values are ASCII"),
        };
        h.insert(HeaderName::from_static(name), value);
    }
}

/// Writes a status line and `head` (plus CORS and any `extra` lines) as
/// HTTP/1.1 bytes, for responses written straight on a socket.
pub(crate) fn raw(status: StatusCode, head: &Head, extra: &str) -> String {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in head.iter().map(|(n, v)| (*n, &**v)).chain([ALLOW_ORIGIN]) {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str(extra);
    out.push_str("\r\n");
    out
}

/// A complete error response for a connection that closes after it.
pub(crate) fn raw_error(e: &Error) -> Vec<u8> {
    let body = e.body();
    let extra = format!("content-length: {}\r\nconnection: close\r\n", body.len());
    let mut out = raw(e.status(), &error(e), &extra);
    out.push_str(&body);
    out.into_bytes()
}
