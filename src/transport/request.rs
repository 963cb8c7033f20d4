//! A request head read off the socket by the edge and parsed once: the
//! raw paths decide from it whether they can answer, and serve from it,
//! without parsing the same bytes again.
//!
//! It keeps the bytes read and, for each part of the head, where that part
//! lies in them: parsing borrows the buffer, and the buffer moves on with
//! the connection, so positions are what can travel with it.

use std::net::SocketAddr;
use std::ops::Range;

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;

use crate::session::Handshake;

/// The most headers a request answered on a raw path may have; a request
/// with more is left to hyper, which serves every case.
pub(crate) const PLAIN_MAX_HEADERS: usize = 32;

/// What was read of a connection's next request: a complete head, and
/// whatever the client sent after it.
pub(crate) struct RawRequest {
    /// Everything read: the head, then any bytes after it.
    buf: Vec<u8>,
    /// Where the head's parts lie in `buf`.
    layout: Layout,
}

/// Where the parts of a parsed head lie in the bytes it was parsed from.
pub(crate) struct Layout {
    /// The head's length.
    len: usize,
    /// `GET` over HTTP/1.1: the only requests a raw path answers.
    get_11: bool,
    /// `HEAD` over HTTP/1.1: answered on the raw path when bodiless, as a
    /// `GET` for a static file is.
    head_11: bool,
    /// `POST` over HTTP/1.1: answered on the raw path when its body is
    /// small and framed by a plain length.
    post_11: bool,
    /// The request target (path and query).
    target: Range<usize>,
    /// Each header's name and value.
    headers: Vec<(Range<usize>, Range<usize>)>,
}

impl Layout {
    /// Where the parts `parsed` found in `buf` lie; `len` is the head's
    /// length, as the parse returned it.
    pub(crate) fn of(buf: &[u8], len: usize, parsed: &httparse::Request<'_, '_>) -> Layout {
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        Layout {
            len,
            get_11: parsed.method == Some("GET") && parsed.version == Some(1),
            head_11: parsed.method == Some("HEAD") && parsed.version == Some(1),
            post_11: parsed.method == Some("POST") && parsed.version == Some(1),
            target: parsed.path.map_or(0..0, |p| at(p.as_bytes())),
            headers: parsed
                .headers
                .iter()
                .map(|h| (at(h.name.as_bytes()), at(h.value)))
                .collect(),
        }
    }
}

impl RawRequest {
    /// The request whose head `layout` describes, in `buf` (the same bytes
    /// it was parsed from).
    pub(crate) fn new(buf: Vec<u8>, layout: Layout) -> RawRequest {
        RawRequest { buf, layout }
    }

    /// Parses a complete head at the start of `buf`, for tests of the
    /// paths that take one.
    #[cfg(test)]
    pub(crate) fn parse(buf: &[u8]) -> Option<RawRequest> {
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(len) = req.parse(buf).ok()? else {
            return None;
        };
        let layout = Layout::of(buf, len, &req);
        Some(RawRequest::new(buf.to_vec(), layout))
    }

    /// Whether this is a `GET` over HTTP/1.1.
    pub(crate) fn is_get_11(&self) -> bool {
        self.layout.get_11
    }

    /// Whether this is a `HEAD` over HTTP/1.1.
    pub(crate) fn is_head_11(&self) -> bool {
        self.layout.head_11
    }

    /// Whether this is a `POST` over HTTP/1.1.
    pub(crate) fn is_post_11(&self) -> bool {
        self.layout.post_11
    }

    /// The request target as sent: the path, then the query if any.
    pub(crate) fn target(&self) -> &str {
        self.text(&self.layout.target)
    }

    /// The head's length.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.layout.len
    }

    /// Every byte read: the head, then what came after it.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// What the client sent after the head.
    pub(crate) fn after(&self) -> &[u8] {
        &self.buf[self.layout.len..]
    }

    fn text(&self, r: &Range<usize>) -> &str {
        // httparse hands out the target and header names as `&str`, so
        // these ranges always lie on valid UTF-8.
        std::str::from_utf8(&self.buf[r.clone()]).unwrap_or("")
    }

    /// The path, without the query.
    pub(crate) fn path(&self) -> &str {
        let target = self.text(&self.layout.target);
        target.split_once('?').map_or(target, |(p, _)| p)
    }

    /// The query string, if the target has one.
    pub(crate) fn query(&self) -> Option<&str> {
        self.text(&self.layout.target)
            .split_once('?')
            .map(|(_, q)| q)
    }

    /// Each header's name and value, in the order sent.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.layout
            .headers
            .iter()
            .map(|(n, v)| (self.text(n), &self.buf[v.clone()]))
    }

    /// A plain request: few enough headers, and none that makes it more
    /// than a plain GET ([`unplain_header`]).
    pub(crate) fn is_plain(&self) -> bool {
        self.layout.headers.len() <= PLAIN_MAX_HEADERS
            && self.headers().all(|(n, _)| !unplain_header(n))
    }

    /// Whether the request asks for a resume (`Last-Event-ID` or `resume=`).
    pub(crate) fn resumes(&self) -> bool {
        crate::session::query_value(self.query(), "resume").is_some()
            || self
                .headers()
                .any(|(n, _)| n.eq_ignore_ascii_case("last-event-id"))
    }

    /// The handshake the head carries (its headers and query); `None` if a
    /// header is not one hyper would accept either.
    pub(crate) fn handshake(&self, peer: SocketAddr) -> Option<Handshake> {
        let map = self.header_map()?;
        let query = self.query().map(str::to_string);
        Some(Handshake::new(map, query, peer))
    }

    /// The headers as hyper would hand them to a service; `None` if one is
    /// not a header hyper would accept either.
    pub(crate) fn header_map(&self) -> Option<HeaderMap> {
        let mut map = HeaderMap::with_capacity(self.layout.headers.len());
        for (name, value) in self.headers() {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = HeaderValue::from_bytes(value).ok()?;
            map.append(name, value);
        }
        Some(map)
    }
}

/// Whether a request header makes a GET more than a plain one (a body, an
/// upgrade, an expectation): such requests are left to hyper, which
/// handles every case, rather than answered on the raw socket path.
pub(crate) fn unplain_header(name: &str) -> bool {
    ["content-length", "transfer-encoding", "upgrade", "expect"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// Reads one `Connection` header value for the raw paths: `Some(true)` if
/// it asks to close, `Some(false)` for `keep-alive` alone, `None` for any
/// other token (an upgrade, a hop-by-hop header), which the raw paths leave
/// to hyper.
pub(crate) fn connection_close(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !token.eq_ignore_ascii_case(b"keep-alive") {
            return None;
        }
    }
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_a_head_read_back_from_their_positions() {
        let bytes = b"GET /events?sid=x&resume=1 HTTP/1.1\r\nHost: a\r\nX-Two: b c\r\n\r\nrest";
        let req = RawRequest::parse(bytes).unwrap();
        assert!(req.is_get_11());
        assert_eq!(req.len(), bytes.len() - 4);
        assert_eq!(req.path(), "/events");
        assert_eq!(req.query(), Some("sid=x&resume=1"));
        assert_eq!(req.after(), b"rest");
        let headers: Vec<(&str, &[u8])> = req.headers().collect();
        assert_eq!(headers, [("Host", &b"a"[..]), ("X-Two", &b"b c"[..])]);
        assert!(req.is_plain());
        assert!(req.resumes());
        let hs = req.handshake("127.0.0.1:9".parse().unwrap()).unwrap();
        assert_eq!(hs.headers["x-two"], "b c");
        assert_eq!(hs.query.as_deref(), Some("sid=x&resume=1"));
    }

    #[test]
    fn a_body_an_upgrade_or_too_many_headers_is_not_plain() {
        for head in [
            "POST /poll HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET /events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /events HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            "GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                !RawRequest::parse(head.as_bytes()).unwrap().is_plain(),
                "{head}"
            );
        }
        let many: String = (0..=PLAIN_MAX_HEADERS)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        let head = format!("GET /events HTTP/1.1\r\n{many}\r\n");
        assert!(!RawRequest::parse(head.as_bytes()).unwrap().is_plain());
        let http10 = RawRequest::parse(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
        assert!(!http10.is_get_11());
    }
}
