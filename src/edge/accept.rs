//! The first request head of every connection, read here under one
//! deadline before hyper or the raw SSE path sees it.
//!
//! One deadline runs from the moment a connection is accepted to the end of
//! its first request head: `--header-timeout`, whatever the client does with
//! its first byte (a separate wait for the first byte followed by hyper's own
//! header timer would give a slow client both). A head that is not HTTP/1
//! or is larger than `--max-header-bytes`, or whose body length cannot be
//! told, is answered here with the same JSON error and CORS header as every
//! other error, instead of hyper's bare status line. What was read (the head, and whatever the client sent after
//! it) is handed on: to the raw path, or to hyper through [`Prefixed`], which
//! replays it before reading the socket again.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::Config;
use crate::error::Error;
use crate::transport::head;
use crate::transport::request::{Layout, RawRequest};

/// The first read's size: most request heads are well under this.
const FIRST_READ: usize = 2048;

/// How the first head of a connection turned out.
pub(crate) enum First {
    /// A complete HTTP/1 head, parsed, with what the client sent after it.
    Request(RawRequest),
    /// The HTTP/2 connection preface: not ours to judge, handed on as read.
    Other(Vec<u8>),
    /// Refused with a JSON error (already written); close the connection.
    Refused,
    /// Nothing complete within the deadline, or the peer left.
    Gone,
}

/// Reads a request head on `stream` until `deadline`: the first of a
/// connection, or the next one after an answer on the raw path. `start`
/// holds what the client already sent of it; empty, the socket has turned
/// readable already (the caller waited for that, holding nothing).
pub(crate) async fn first_head(
    stream: &mut TcpStream,
    deadline: Instant,
    max: usize,
    config: &Config,
    start: Vec<u8>,
) -> First {
    let read = async {
        let mut buf = start;
        if !buf.is_empty() {
            match check(&buf, max) {
                Check::More => {}
                Check::Complete(layout) => return Ok(First::Request(RawRequest::new(buf, layout))),
                Check::Other => return Ok(First::Other(buf)),
                Check::Refuse(e) => return Ok(refuse(stream, &e, config).await),
            }
        }
        loop {
            let old = buf.len();
            let want = if old == 0 { FIRST_READ } else { old * 2 };
            buf.resize(want.min(max.max(1)), 0);
            let n = stream.read(&mut buf[old..]).await?;
            buf.truncate(old + n);
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            match check(&buf, max) {
                Check::More => continue,
                Check::Complete(layout) => return Ok(First::Request(RawRequest::new(buf, layout))),
                Check::Other => return Ok(First::Other(buf)),
                Check::Refuse(e) => return Ok(refuse(stream, &e, config).await),
            }
        }
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(first)) => first,
        Ok(Err(_)) | Err(_) => First::Gone,
    }
}

enum Check {
    /// The head is not complete yet and there is room for more.
    More,
    /// A complete head, and where its parts lie.
    Complete(Layout),
    /// Not for this parser.
    Other,
    /// Answered with this error.
    Refuse(Error),
}

/// The HTTP/2 preface's first line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Judges the bytes read so far, with hyper's limits: at most 100 headers,
/// at most `max` bytes of head.
fn check(buf: &[u8], max: usize) -> Check {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Check::Other
        } else {
            Check::More
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max => match readable(&req) {
            Ok(()) => Check::Complete(Layout::of(buf, len, &req)),
            Err(e) => Check::Refuse(e),
        },
        Ok(httparse::Status::Complete(_)) => Check::Refuse(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max => Check::Refuse(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => Check::More,
        Err(httparse::Error::TooManyHeaders) => Check::Refuse(Error::HeadTooLarge),
        Err(_) => Check::Refuse(Error::MalformedRequest),
    }
}

/// What hyper refuses in a head httparse accepts, checked as hyper checks
/// it, so that the refusal is the JSON error rather than hyper's bare
/// `400`: a target that is not a URI, and a body whose length cannot be
/// told (RFC 9112 section 6.3): a `Content-Length` that is not a number,
/// two that differ, a `Transfer-Encoding` whose last coding is not
/// `chunked`, any `Transfer-Encoding` from HTTP/1.0. As in hyper, a
/// `Content-Length` after a `Transfer-Encoding` is ignored.
fn readable(req: &httparse::Request<'_, '_>) -> Result<(), Error> {
    let malformed = Err(Error::MalformedRequest);
    if hyper::Uri::try_from(req.path.unwrap_or_default()).is_err() {
        return malformed;
    }
    let http_11 = req.version == Some(1);
    let (mut te, mut chunked, mut length) = (false, false, None);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http_11 {
                return malformed;
            }
            te = true;
            chunked = last_coding_is_chunked(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") && !te {
            // hyper takes no length within 2 of u64::MAX either.
            let Some(n) = digits(h.value).filter(|n| *n < u64::MAX - 1) else {
                return malformed;
            };
            if length.is_some_and(|l| l != n) {
                return malformed;
            }
            length = Some(n);
        }
    }
    if te && !chunked {
        return malformed;
    }
    Ok(())
}

/// Whether a `Transfer-Encoding` value ends with `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value).is_ok_and(|v| {
        v.rsplit(',')
            .next()
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
    })
}

/// A `Content-Length` value: decimal digits only (no sign, no spaces, no
/// list), as hyper reads it.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Most bytes still read (and dropped) after an error answer, so that the
/// client reads the answer rather than a reset; bounded in bytes and time,
/// so junk costs next to nothing.
const LINGER_BYTES: usize = 64 * 1024;
/// How long the answer is given to reach the client.
const LINGER: Duration = Duration::from_millis(500);

/// Writes `e` as the JSON error and closes the connection politely.
async fn refuse(stream: &mut TcpStream, e: &Error, config: &Config) -> First {
    // A head that did not parse names no origin we could trust: with an
    // allow-list the answer says `Vary` and allows nobody.
    let cors = head::cors(config, None);
    let answer = async {
        stream.write_all(&head::raw_error(e, cors)).await?;
        stream.shutdown().await?;
        // Closing with unread input would reset the connection and could
        // destroy the answer before the client reads it.
        // On the heap: in the future's state it would make every
        // connection's wait for a head that large.
        let mut scratch = vec![0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut scratch).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(LINGER, answer).await;
    First::Refused
}

/// A connection whose first bytes were already read: they are read again
/// first, then the socket. Writes go straight through, vectored included,
/// so hyper keeps queueing response bodies by reference.
/// The stream is a plain socket, or a TLS stream whose first decrypted bytes
/// were read to look at.
pub(crate) struct Prefixed<S = TcpStream> {
    /// Bytes read before hyper took over; emptied (and freed) once replayed.
    prefix: Vec<u8>,
    /// How much of `prefix` has been replayed.
    pos: usize,
    /// The socket.
    stream: S,
}

impl<S> Prefixed<S> {
    /// `stream`, with `prefix` to be read before it.
    pub(crate) fn new(prefix: Vec<u8>, stream: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            pos: 0,
            stream,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_judged_like_hyper_would() {
        let ok = b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\nrest";
        let Check::Complete(layout) = check(ok, 1024) else {
            panic!("a complete head");
        };
        assert_eq!(RawRequest::new(ok.to_vec(), layout).after(), b"rest");
        assert!(matches!(
            check(b"GET /stats HTTP/1.1\r\nHo", 1024),
            Check::More
        ));
        assert!(matches!(
            check(b"\r\nGET / HTTP/1.1\r\n\r\n", 1024),
            Check::Complete(_)
        ));
        assert!(matches!(
            check(b"GET /x\0 HTTP/1.1\r\n\r\n", 1024),
            Check::Refuse(Error::MalformedRequest)
        ));
        assert!(matches!(
            check(b"\x00\x01garbage", 1024),
            Check::Refuse(Error::MalformedRequest)
        ));
        assert!(matches!(
            check(b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40),
            Check::Refuse(Error::HeadTooLarge)
        ));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(101));
        assert!(matches!(
            check(many.as_bytes(), 4096),
            Check::Refuse(Error::HeadTooLarge)
        ));
        for framing in [
            &b"POST /emit HTTP/1.1\r\nContent-Length: abc\r\n\r\n"[..],
            b"POST /emit HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST /emit HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            b"POST /emit HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /emit HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST /emit HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /emit HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(check(framing, 1024), Check::Refuse(Error::MalformedRequest)),
                "{}",
                String::from_utf8_lossy(framing)
            );
        }
        for fine in [
            &b"POST /emit HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"[..],
            b"POST /emit HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST /emit HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n",
            b"POST /emit HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(
                matches!(check(fine, 1024), Check::Complete(_)),
                "{}",
                String::from_utf8_lossy(fine)
            );
        }
        assert!(matches!(check(b"PRI * HT", 1024), Check::More));
        assert!(matches!(
            check(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1024),
            Check::Other
        ));
    }
}
