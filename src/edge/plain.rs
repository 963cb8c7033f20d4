//! Bodiless `GET` and `HEAD` requests answered straight on the socket, so
//! that a kept-alive connection stays on the raw path.
//!
//! A browser fetches its page (`/`, the stylesheet, the script) on
//! kept-alive connections and then sends its `EventSource`'s `GET /events`
//! on one of them. Once hyper serves a connection it serves it for the rest
//! of its life, with an 8 KiB read buffer and an 8 KiB header buffer: a
//! stream opened after the page cost about 21 KiB of server memory where
//! the same stream as a connection's first request costs under 3 KiB. So
//! the page's own requests are answered here: the router builds the very
//! response it builds for hyper, it is written with the bytes hyper writes
//! for it (status line, the response's headers in order, `content-length`,
//! `date`; no body for `HEAD`), and the connection goes back to reading its
//! next head, where a plain `GET /events` is served raw as a first request
//! is.
//!
//! Only requests whose whole story is in their head are taken: HTTP/1.1
//! `GET` or `HEAD`, no body framing, no upgrade or expectation, no
//! `Connection` token but `close` and `keep-alive`, nothing that names a
//! session or a shared stream (those may be rerouted, held or streamed).
//! Everything else goes to hyper with the bytes already read, as before.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::api::io::Io;
use crate::edge::{router, server_api};
use crate::session::{query_value, Peer};
use crate::transport::poll_raw::After;
use crate::transport::request::RawRequest;

/// A request this module answers: the parts of its head the router needs.
pub(crate) struct Ask {
    /// `GET` or `HEAD`.
    method: Method,
    /// The request target, as sent.
    target: hyper::Uri,
    /// The request's headers, as hyper would hand them to the router.
    headers: HeaderMap,
    /// The client asked to close the connection after the answer.
    close: bool,
}

/// The paths whose `GET` starts, holds or serves something longer than one
/// answer: left to the raw SSE and poll paths, or to hyper.
fn long_lived(path: &str) -> bool {
    matches!(path, "/events" | "/poll") || server_api::is_api(path)
}

/// Whether `request` is a plain bodiless `GET` or `HEAD` over HTTP/1.1
/// with a finite answer; `None` leaves it to hyper.
pub(crate) fn sniff(request: &RawRequest) -> Option<Ask> {
    let method = if request.is_get_11() {
        Method::GET
    } else if request.is_head_11() {
        Method::HEAD
    } else {
        return None;
    };
    if !request.is_plain() || long_lived(request.path()) {
        return None;
    }
    // A session's or a shared stream's request may belong to another
    // node, which the router asks; the raw path does not.
    let query = request.query();
    if ["sid", "mux", "resume"]
        .iter()
        .any(|name| query_value(query, name).is_some())
    {
        return None;
    }
    let mut close = false;
    for (name, value) in request.headers() {
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                    return None;
                }
            }
        }
    }
    Some(Ask {
        method,
        target: hyper::Uri::try_from(request.target()).ok()?,
        headers: request.header_map()?,
        close,
    })
}

/// Answers `ask` on `stream` through the router, and says how the
/// connection goes on; `rest` is what the client sent after the head (the
/// start of its next request, if it pipelines).
pub(crate) async fn serve(
    stream: &mut TcpStream,
    ask: Ask,
    rest: Vec<u8>,
    peer: SocketAddr,
    io: &Io,
    closing: &CancellationToken,
) -> After {
    let head_only = ask.method == Method::HEAD;
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.method_mut() = ask.method;
    *req.uri_mut() = ask.target;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = ask.headers;
    req.extensions_mut().insert(Peer(peer));
    // Boxed: the router's future is large, and in place it would make every
    // connection's task that large for its whole life.
    let res = Box::pin(router::handle(io, req)).await;
    let (parts, body) = res.into_parts();
    // As hyper sizes it: an ended body has none, any other its exact size.
    // Every route a bodiless GET reaches answers with one buffer, so this
    // read is immediate.
    let bytes = if body.is_end_stream() {
        None
    } else {
        match body.collect().await {
            Ok(collected) => Some(collected.to_bytes()),
            Err(never) => match never {},
        }
    };
    let length = bytes.as_ref().map(|b| b.len() as u64);
    let close = ask.close || closing.is_cancelled();
    let mut headers = parts.headers;
    if close {
        mark_close(&mut headers);
    }
    let mut out = encode(parts.status, &headers, length, head_only);
    if let Some(bytes) = bytes.filter(|_| !head_only && has_body(parts.status)) {
        out.extend_from_slice(&bytes);
    }
    if stream.write_all(&out).await.is_err() {
        return After::Close;
    }
    if close {
        let _ = stream.shutdown().await;
        return After::Close;
    }
    After::Next(rest)
}

/// What hyper does to a response on a connection that closes after it:
/// `close` joins the response's own `Connection` header, or becomes it.
fn mark_close(headers: &mut HeaderMap) {
    match headers.entry(header::CONNECTION) {
        header::Entry::Occupied(mut entry) => {
            if !entry
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
            {
                entry.append(HeaderValue::from_static("close"));
            }
        }
        header::Entry::Vacant(entry) => {
            entry.insert(HeaderValue::from_static("close"));
        }
    }
}

/// Whether a response with `status` carries a body (and a length header).
fn has_body(status: StatusCode) -> bool {
    !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// The response head hyper 1 writes for a server response with `status`,
/// `headers` and a body of `length` bytes (`None`: an ended body), to a
/// `HEAD` request if `head_only`: the status line; the headers in the
/// map's order, a name's several values on lines of their own except
/// `connection`'s, which join; the length if no header gave it (none for
/// a bodiless status, nor for an ended body answering `HEAD`); a `date`
/// unless the response has one.
fn encode(
    status: StatusCode,
    headers: &HeaderMap,
    length: Option<u64>,
    head_only: bool,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(256 + headers.len() * 32);
    let line = |out: &mut BytesMut, name: &[u8], value: &[u8]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut wrote_len, mut wrote_date) = (false, false);
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        match *name {
            header::CONTENT_LENGTH => {
                // The body's own size decides; a stale header for an ended
                // body is dropped, except that `HEAD` keeps it.
                if length.is_none() && !head_only {
                    continue;
                }
                if let Some(v) = values.next() {
                    line(&mut out, b"content-length", v.as_bytes());
                    wrote_len = true;
                }
                continue;
            }
            // A raw answer is always length-delimited.
            header::TRANSFER_ENCODING | header::TRAILER => continue,
            header::CONNECTION => {
                let joined: Vec<&[u8]> = values.map(HeaderValue::as_bytes).collect();
                line(&mut out, b"connection", &joined.join(&b", "[..]));
                continue;
            }
            header::DATE => wrote_date = true,
            _ => {}
        }
        for v in values {
            line(&mut out, name.as_str().as_bytes(), v.as_bytes());
        }
    }
    if !wrote_len && has_body(status) {
        match length {
            None | Some(0) if head_only => {}
            None | Some(0) => line(&mut out, b"content-length", b"0"),
            Some(n) => line(&mut out, b"content-length", n.to_string().as_bytes()),
        }
    }
    if !wrote_date {
        line(
            &mut out,
            b"date",
            httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: BytesMut) -> String {
        let s = String::from_utf8(out.to_vec()).unwrap();
        // The date is the only byte that moves.
        let at = s.find("date: ").expect("a date");
        format!("{}date: D{}", &s[..at], &s[at + 35..])
    }

    #[test]
    fn heads_are_written_as_hyper_writes_them() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/css"));
        h.append("vary", HeaderValue::from_static("Accept-Encoding"));
        h.append("vary", HeaderValue::from_static("Origin"));
        assert_eq!(
            text(encode(StatusCode::OK, &h, Some(5), false)),
            "HTTP/1.1 200 OK\r\ncontent-type: text/css\r\nvary: Accept-Encoding\r\n\
             vary: Origin\r\ncontent-length: 5\r\ndate: D\r\n\r\n"
        );
        // HEAD: the length of the body it would have had.
        assert_eq!(
            text(encode(StatusCode::OK, &h, Some(5), true)),
            "HTTP/1.1 200 OK\r\ncontent-type: text/css\r\nvary: Accept-Encoding\r\n\
             vary: Origin\r\ncontent-length: 5\r\ndate: D\r\n\r\n"
        );
        let mut c = HeaderMap::new();
        c.insert("connection", HeaderValue::from_static("keep-alive"));
        mark_close(&mut c);
        assert_eq!(
            text(encode(StatusCode::NOT_FOUND, &c, None, false)),
            "HTTP/1.1 404 Not Found\r\nconnection: keep-alive, close\r\n\
             content-length: 0\r\ndate: D\r\n\r\n"
        );
        assert_eq!(
            text(encode(
                StatusCode::NO_CONTENT,
                &HeaderMap::new(),
                None,
                true
            )),
            "HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n"
        );
        assert_eq!(
            text(encode(StatusCode::OK, &HeaderMap::new(), None, true)),
            "HTTP/1.1 200 OK\r\ndate: D\r\n\r\n"
        );
    }

    #[test]
    fn only_plain_bodiless_requests_of_finite_routes_are_taken() {
        for taken in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD /public/style.css HTTP/1.1\r\n\r\n",
            "GET /stats HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
            "GET /nowhere?x=1 HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                sniff(&RawRequest::parse(taken.as_bytes()).unwrap()).is_some(),
                "{taken}"
            );
        }
        for left in [
            "GET / HTTP/1.0\r\n\r\n",
            "POST /emit HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /events HTTP/1.1\r\n\r\n",
            "GET /poll HTTP/1.1\r\n\r\n",
            "GET /api/sessions HTTP/1.1\r\n\r\n",
            "GET /stats?sid=x HTTP/1.1\r\n\r\n",
            "GET /stats?mux=1 HTTP/1.1\r\n\r\n",
            "OPTIONS / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                sniff(&RawRequest::parse(left.as_bytes()).unwrap()).is_none(),
                "{left}"
            );
        }
    }
}
