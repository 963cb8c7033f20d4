//! A page's own requests answered straight on the socket, so that a
//! kept-alive connection stays on the raw path.
//!
//! A browser fetches its page (`/`, the stylesheet, the script) on
//! kept-alive connections, sends its handshake and emits on them, and then
//! sends its `EventSource`'s `GET /events` on one of them. Once hyper
//! serves a connection it serves it for the rest of its life, with an
//! 8 KiB read buffer and an 8 KiB header buffer: a stream opened after the
//! page cost about 21 KiB of server memory where the same stream as a
//! connection's first request costs under 3 KiB. So the page's own
//! requests are answered here: the router builds the very response it
//! builds for hyper, reading a body as it arrives under its own limit and
//! `--body-timeout`; the response is written with the bytes hyper writes
//! for it (status line, the response's headers in order, `content-length`
//! or chunks, `date`; no body for `HEAD`), and the connection goes back to
//! reading its next head, where a plain `GET /events` is served raw as a
//! first request is.
//!
//! Only requests whose body, if any, is framed by one plain length are
//! taken: HTTP/1.1 `GET` or `HEAD` without a body, or `POST` with a body
//! of at most `--max-payload`; no chunks, upgrade or expectation, no
//! `Connection` token but `close` and `keep-alive`, nothing that names a
//! shared stream or a resume, nor a session on a cluster node (those may
//! be rerouted, held or streamed). Everything else goes to hyper with the
//! bytes already read, as before.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::io::Io;
use crate::config::Config;
use crate::edge::{router, server_api};
use crate::session::{query_value, Peer};
use crate::transport::poll_raw::After;
use crate::transport::request::{connection_close, unplain_header, RawRequest, PLAIN_MAX_HEADERS};

/// A request this module answers: the parts of its head the router needs,
/// and how long its body is.
pub(crate) struct Ask {
    /// `GET`, `HEAD` or `POST`.
    method: Method,
    /// The request target, as sent.
    target: hyper::Uri,
    /// The request's headers, as hyper would hand them to the router.
    headers: HeaderMap,
    /// The client asked to close the connection after the answer.
    close: bool,
    /// The body's length: 0 but for a `POST`.
    length: u64,
}

/// The paths whose `GET` starts, holds or serves something longer than one
/// answer: left to the raw SSE and poll paths, or to hyper.
fn long_lived(path: &str) -> bool {
    matches!(path, "/events" | "/poll") || server_api::is_api(path)
}

/// Whether `request` is a plain `GET` or `HEAD`, or a `POST` with a small
/// length-framed body, over HTTP/1.1 with a finite answer; `None` leaves
/// it to hyper.
pub(crate) fn sniff(request: &RawRequest, config: &Config) -> Option<Ask> {
    let method = if request.is_get_11() {
        Method::GET
    } else if request.is_head_11() {
        Method::HEAD
    } else if request.is_post_11() {
        Method::POST
    } else {
        return None;
    };
    if request.headers().count() > PLAIN_MAX_HEADERS || long_lived(request.path()) {
        return None;
    }
    // A shared stream's or a resumed session's request may belong to
    // another node, and so may any session's on a cluster node: the
    // router asks it; the raw path does not.
    let query = request.query();
    let names: &[&str] = if config.cluster_node().is_some() {
        &["sid", "mux", "resume"]
    } else {
        &["mux", "resume"]
    };
    if names.iter().any(|name| query_value(query, name).is_some()) {
        return None;
    }
    let (mut close, mut length) = (false, None);
    for (name, value) in request.headers() {
        if name.eq_ignore_ascii_case("content-length") {
            // One plain number on a `POST`; anything else is hyper's to
            // frame or refuse.
            if method != Method::POST || length.is_some() {
                return None;
            }
            length = Some(digits(value)?);
        } else if unplain_header(name) {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= connection_close(value)?;
        }
    }
    // Over the limit is hyper's, whose 413 leaves the body unread.
    let length = length.unwrap_or(0);
    if length > config.max_payload as u64 {
        return None;
    }
    Some(Ask {
        method,
        target: hyper::Uri::try_from(request.target()).ok()?,
        headers: request.header_map()?,
        close,
        length,
    })
}

/// A `Content-Length` value of ASCII digits only, as a number.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Answers `ask` on `stream` through the router, and says how the
/// connection goes on; `rest` is what the client sent after the head (the
/// start of its body, then of its next request, if it pipelines).
pub(crate) async fn serve(
    stream: &mut TcpStream,
    ask: Ask,
    mut rest: Vec<u8>,
    peer: SocketAddr,
    io: &Io,
    closing: &CancellationToken,
) -> After {
    let head_only = ask.method == Method::HEAD;
    let (tx, body) = Fed::channel(ask.length);
    let mut req = Request::new(body);
    *req.method_mut() = ask.method;
    *req.uri_mut() = ask.target;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = ask.headers;
    req.extensions_mut().insert(Peer(peer));
    // The body's bytes not yet read off the socket.
    let mut left = ask.length;
    let had = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
    if had > 0 {
        let _ = tx.send(Ok(Bytes::from(rest.drain(..had).collect::<Vec<u8>>())));
        left -= had as u64;
    }
    // Boxed: the router's future is large, and in place it would make every
    // connection's task that large for its whole life.
    let route = Box::pin(router::handle(io, req));
    // The router reads the body as hyper's would reach it, under its own
    // limit and `--body-timeout`, while the rest arrives; it may answer
    // without reading it all.
    let res = tokio::select! {
        res = route => res,
        never = feed(stream, tx, &mut left) => match never {},
    };
    let (parts, mut body) = res.into_parts();
    // As hyper sizes it: an ended body has none, a body of known size
    // that size, read at once (every route answers those with one
    // buffer); any other goes in chunks as it comes.
    let length = if body.is_end_stream() {
        Length::Ended
    } else if body.size_hint().exact().is_some() {
        match (&mut body).collect().await {
            Ok(collected) => Length::Exact(collected.to_bytes()),
            Err(never) => match never {},
        }
    } else {
        Length::Chunked
    };
    let close = ask.close || closing.is_cancelled();
    let mut headers = parts.headers;
    if close {
        mark_close(&mut headers);
    }
    // As hyper does when the service answers before the body is read: the
    // rest of it cannot be told from a next request, so the connection
    // closes after this answer, which says nothing of it.
    let close = close || left > 0;
    let size = match &length {
        Length::Ended => None,
        Length::Exact(bytes) => Some(bytes.len() as u64),
        Length::Chunked => Some(CHUNKED),
    };
    let bodied = !head_only && has_body(parts.status);
    let mut out = encode(parts.status, &headers, size, head_only);
    match length {
        Length::Exact(bytes) if bodied => out.extend_from_slice(&bytes),
        Length::Chunked if bodied => {
            if stream.write_all(&out).await.is_err() {
                return After::Close;
            }
            out.clear();
            while let Some(frame) = body.frame().await {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(never) => match never {},
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let mut chunk = BytesMut::with_capacity(data.len() + 16);
                chunk.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                if stream.write_all(&chunk).await.is_err() {
                    return After::Close;
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
        _ => {}
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

/// The length [`encode`] is given for a body sent in chunks.
const CHUNKED: u64 = u64::MAX;

/// How a response's body goes out.
enum Length {
    /// No body at all.
    Ended,
    /// One buffer of known size.
    Exact(Bytes),
    /// Frames as they come, chunked.
    Chunked,
}

/// Reads the rest of a body off `stream` into `tx`, `left` bytes of it,
/// never past it: what follows is the next request's. Then waits for ever,
/// so the router's answer ends the wait. A connection that ends first
/// ends the body with an error, as hyper's does.
async fn feed(
    stream: &mut TcpStream,
    tx: mpsc::UnboundedSender<io::Result<Bytes>>,
    left: &mut u64,
) -> std::convert::Infallible {
    let mut buf = vec![0u8; 0];
    while *left > 0 {
        let want = usize::try_from(*left).unwrap_or(usize::MAX).min(READ_CHUNK);
        buf.resize(want, 0);
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(Err(io::ErrorKind::UnexpectedEof.into()));
                break;
            }
            Ok(n) => {
                *left -= n as u64;
                let _ = tx.send(Ok(Bytes::copy_from_slice(&buf[..n])));
            }
        }
    }
    drop(tx);
    drop(buf);
    std::future::pending().await
}

/// The most read off the socket at once for a body.
const READ_CHUNK: usize = 16 * 1024;

/// A request body that arrives through a channel, as the raw path reads
/// it: the router reads it as it reads hyper's.
struct Fed {
    /// The body's pieces, or the error that ended it.
    rx: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    /// Bytes not yet handed on.
    left: u64,
}

impl Fed {
    /// A body of `length` bytes, and where to send them.
    fn channel(length: u64) -> (mpsc::UnboundedSender<io::Result<Bytes>>, Fed) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Fed { rx, left: length })
    }
}

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.left = self.left.saturating_sub(bytes.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
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
            Some(CHUNKED) if !head_only => line(&mut out, b"transfer-encoding", b"chunked"),
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
    fn only_plain_requests_of_finite_routes_with_small_bodies_are_taken() {
        let config = Config {
            max_payload: 100,
            ..Config::default()
        };
        for taken in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD /public/style.css HTTP/1.1\r\n\r\n",
            "GET /stats HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
            "GET /nowhere?x=1 HTTP/1.1\r\n\r\n",
            "POST /emit?sid=x HTTP/1.1\r\nContent-Length: 100\r\n\r\n",
            "POST /handshake HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST /close?sid=x HTTP/1.1\r\n\r\n",
            "GET /stats?sid=x HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                sniff(&RawRequest::parse(taken.as_bytes()).unwrap(), &config).is_some(),
                "{taken}"
            );
        }
        for left in [
            "GET / HTTP/1.0\r\n\r\n",
            "POST /emit HTTP/1.0\r\nContent-Length: 1\r\n\r\n",
            "POST /emit HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
            "POST /emit HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /emit HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            "POST /emit HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /emit HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
            "POST /api/emit HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            "POST /mux/attach?mux=1 HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /events HTTP/1.1\r\n\r\n",
            "GET /poll HTTP/1.1\r\n\r\n",
            "GET /api/sessions HTTP/1.1\r\n\r\n",
            "GET /stats?mux=1 HTTP/1.1\r\n\r\n",
            "GET /stats?resume=1 HTTP/1.1\r\n\r\n",
            "OPTIONS / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                sniff(&RawRequest::parse(left.as_bytes()).unwrap(), &config).is_none(),
                "{left}"
            );
        }
        // A cluster node's session requests may belong to another node.
        #[cfg(feature = "redis")]
        {
            let node = Config {
                redis: Some("redis://127.0.0.1:1".into()),
                node_id: Some("a".into()),
                ..config
            };
            for left in [
                "POST /emit?sid=x HTTP/1.1\r\nContent-Length: 1\r\n\r\n",
                "GET /stats?sid=x HTTP/1.1\r\n\r\n",
            ] {
                assert!(
                    sniff(&RawRequest::parse(left.as_bytes()).unwrap(), &node).is_none(),
                    "{left}"
                );
            }
            let mine = "POST /handshake HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
            assert!(sniff(&RawRequest::parse(mine.as_bytes()).unwrap(), &node).is_some());
        }
    }
}
