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
    cors_fields(config, listed)
        .into_iter()
        .flatten()
        .map(|(n, v)| (n, v.to_string().into()))
        .collect()
}

/// The fields of [`cors_listed`], borrowed: what both it and
/// [`push_cors`] write.
fn cors_fields(config: &Config, listed: Option<usize>) -> [Option<(&'static str, &str)>; 2] {
    if config.cors_any() {
        return [Some(("access-control-allow-origin", "*")), None];
    }
    let origin = listed.and_then(|i| config.cors_origins.get(i));
    [
        origin.map(|o| ("access-control-allow-origin", o.as_str())),
        Some(("vary", "Origin")),
    ]
}

/// Appends the fields of [`cors_listed`] to a head being written.
pub(crate) fn push_cors(out: &mut Vec<u8>, config: &Config, listed: Option<usize>) {
    for (name, value) in cors_fields(config, listed).into_iter().flatten() {
        push_field(out, name, value.as_bytes());
    }
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
        (CURSOR, cursor.to_string().into()),
        (CURSOR_EXPOSE.0, CURSOR_EXPOSE.1.into()),
    ]
}

const CURSOR: &str = "x-ssio-cursor";
const CURSOR_EXPOSE: (&str, &str) = (
    "access-control-expose-headers",
    "X-Session-Id, X-Ssio-Cursor",
);

/// Appends the fields of [`cursor`] to a head being written, the position
/// formatted in place.
pub(crate) fn push_cursor(out: &mut Vec<u8>, cursor: impl std::fmt::Display) {
    use std::io::Write;
    out.extend_from_slice(CURSOR.as_bytes());
    out.extend_from_slice(b": ");
    write!(out, "{cursor}").expect("a Vec takes every write");
    out.extend_from_slice(b"\r\n");
    push_field(out, CURSOR_EXPOSE.0, CURSOR_EXPOSE.1.as_bytes());
}

/// Appends one `name: value` line to a head being written.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a status line to a head being written.
pub(crate) fn push_status(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Ends a head being written: its `date` (last, as hyper writes it) and
/// the blank line.
pub(crate) fn push_end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"date: ");
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        let now = std::time::SystemTime::now();
        let second = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Formatted once a second per thread, as hyper caches its own: a
        // held poll's answer is written thousands of times a second.
        if date.0 != second || date.1.is_empty() {
            *date = (second, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(date.1.as_bytes());
    });
    out.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    /// The `date` value of the current second, and that second.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
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
    let mut out = Vec::with_capacity(256);
    push_status(&mut out, status);
    for (name, value) in head {
        push_field(&mut out, name, value.as_bytes());
    }
    out.extend_from_slice(extra.as_bytes());
    push_end(&mut out);
    String::from_utf8(out).expect("heads are ASCII")
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

#[cfg(test)]
mod tests {
    //! A head written in place is byte for byte the head built from tables.

    use super::*;

    fn listed(origins: &[&str]) -> Config {
        Config {
            cors_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..Config::default()
        }
    }

    #[test]
    fn cors_written_in_place_matches_the_table_for_every_kind_of_origin() {
        let any = Config::default();
        let list = listed(&["https://a.example", "https://b.example"]);
        for (config, origin) in [(&any, None), (&list, Some(1)), (&list, None)] {
            let mut written = Vec::new();
            push_cors(&mut written, config, origin);
            let table: String = cors_listed(config, origin)
                .iter()
                .map(|(n, v)| format!("{n}: {v}\r\n"))
                .collect();
            assert_eq!(String::from_utf8(written).unwrap(), table);
        }
        let mut written = Vec::new();
        push_cors(&mut written, &list, Some(1));
        assert_eq!(
            written,
            b"access-control-allow-origin: https://b.example\r\nvary: Origin\r\n"
        );
    }

    #[test]
    fn a_raw_head_ends_with_the_current_date_and_a_blank_line() {
        let head = raw(StatusCode::OK, &cursor("x:1:2"), "content-length: 2\r\n");
        let (fields, date) = head.rsplit_once("date: ").unwrap();
        assert_eq!(
            fields,
            "HTTP/1.1 200 OK\r\nx-ssio-cursor: x:1:2\r\n\
             access-control-expose-headers: X-Session-Id, X-Ssio-Cursor\r\n\
             content-length: 2\r\n"
        );
        let date = date.strip_suffix("\r\n\r\n").unwrap();
        let sent = httpdate::parse_http_date(date).unwrap();
        let age = std::time::SystemTime::now().duration_since(sent).unwrap();
        assert!(
            age < std::time::Duration::from_secs(2),
            "{date} is {age:?} old"
        );
        let mut written = Vec::new();
        push_cursor(&mut written, "x:1:2");
        assert!(head.as_bytes()[17..].starts_with(&written));
    }
}
