//! hyper's own refusals, answered with the JSON every other error has.
//!
//! The edge judges a connection's first request head itself
//! ([`accept`](super::accept)); every later head on a kept-alive
//! connection, and every head over TLS, is read by hyper. A head hyper
//! cannot parse (a `Content-Length` that is not a number, a
//! `Transfer-Encoding` that is not chunked, a head over the buffer) it
//! answers before any service sees the request, with a bare status and no
//! body, and it offers no hook to answer otherwise. So the connection's
//! writes are watched instead: a response of exactly that shape, which no
//! response of the router has (each names its content type first, and
//! every error has a body), is replaced by the JSON error for its status.
//! hyper closes the connection after it either way.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::api::io::Io;
use crate::error::Error;
use crate::transport::head;

/// A connection served by hyper, whose bare refusals go out as JSON.
pub(crate) struct JsonRefusals<S> {
    /// The connection.
    stream: S,
    /// The server, for the CORS headers of an answer: one pointer per
    /// connection.
    io: Io,
    /// The answer written in place of hyper's, while it is going out.
    answer: Option<Box<Answer>>,
}

/// A JSON error being written in place of a bare refusal.
struct Answer {
    /// The whole answer.
    bytes: Vec<u8>,
    /// How much of it is written.
    written: usize,
    /// How many bytes hyper asked to write: reported as written once the
    /// answer is out, since hyper must see its own write complete.
    replaces: usize,
}

impl<S> JsonRefusals<S> {
    /// Watches `stream`'s writes.
    pub(crate) fn new(stream: S, io: Io) -> JsonRefusals<S> {
        JsonRefusals {
            stream,
            io,
            answer: None,
        }
    }
}

/// The error a bare refusal of hyper's stands for, if `out` is one: its
/// status line, `connection: close`, `content-length: 0`, a `date` and
/// nothing else.
fn refusal(out: &[u8]) -> Option<Error> {
    let rest = out.strip_prefix(b"HTTP/1.1 ")?;
    let (error, rest) = if let Some(rest) = rest.strip_prefix(b"400 Bad Request\r\n") {
        (Error::MalformedRequest, rest)
    } else if let Some(rest) = rest.strip_prefix(b"431 Request Header Fields Too Large\r\n") {
        (Error::HeadTooLarge, rest)
    } else {
        return None;
    };
    let date = rest.strip_prefix(b"connection: close\r\ncontent-length: 0\r\ndate: ")?;
    // An HTTP date is 29 bytes: `Sun, 06 Dec 2026 23:29:38 GMT`.
    (date.len() == 29 + 4 && date.ends_with(b" GMT\r\n\r\n")).then_some(error)
}

impl<S: AsyncWrite + Unpin> JsonRefusals<S> {
    /// Writes the answer in progress, if any: `Some` once there is nothing
    /// (more) to write in place of `out`.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        let Some(answer) = self.answer.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        while answer.written < answer.bytes.len() {
            let rest = &answer.bytes[answer.written..];
            match Pin::new(&mut self.stream).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => answer.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let replaced = answer.replaces;
        self.answer = None;
        Poll::Ready(Ok(Some(replaced)))
    }

    /// Starts the answer to `out` if it is a bare refusal.
    fn watch(&mut self, out: &[u8]) {
        if self.answer.is_none() {
            if let Some(e) = refusal(out) {
                // A head nobody could read names no origin we could trust.
                let cors = head::cors(self.io.config(), None);
                self.answer = Some(Box::new(Answer {
                    bytes: head::raw_error(&e, cors),
                    written: 0,
                    replaces: out.len(),
                }));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.watch(buf);
        match std::task::ready!(this.poll_answer(cx))? {
            Some(replaced) => Poll::Ready(Ok(replaced)),
            None => Pin::new(&mut this.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A refusal is one short head; only such writes are looked at.
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.answer.is_none()
            && total < 256
            && bufs.first().is_some_and(|b| b.starts_with(b"HTTP/1.1 4"))
        {
            this.watch(
                &bufs
                    .iter()
                    .flat_map(|b| b.iter().copied())
                    .collect::<Vec<u8>>(),
            );
        }
        match std::task::ready!(this.poll_answer(cx))? {
            Some(replaced) => Poll::Ready(Ok(replaced)),
            None => Pin::new(&mut this.stream).poll_write_vectored(cx, bufs),
        }
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
    fn only_hypers_bare_refusals_are_recognised() {
        let date = "Sun, 06 Dec 2026 23:29:38 GMT";
        let bare = |status: &str| {
            format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {date}\r\n\r\n")
        };
        assert_eq!(
            refusal(bare("400 Bad Request").as_bytes()),
            Some(Error::MalformedRequest)
        );
        assert_eq!(
            refusal(bare("431 Request Header Fields Too Large").as_bytes()),
            Some(Error::HeadTooLarge)
        );
        assert_eq!(refusal(bare("404 Not Found").as_bytes()), None);
        let ours = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\ndate: {date}\r\n\r\n{{}}"
        );
        assert_eq!(refusal(ours.as_bytes()), None);
        let more = format!("{}x", bare("400 Bad Request"));
        assert_eq!(refusal(more.as_bytes()), None);
    }
}
