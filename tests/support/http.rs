//! A minimal keep-alive HTTP/1.1 client.
//!
//! A full client stack costs tens of kilobytes per connection; with up to
//! 19,000 clients per run a load generator would then measure itself. This
//! one keeps one small buffer per connection and understands exactly what
//! ssio and the socket.io peer send: `content-length` bodies and chunked
//! streams.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::loopback;

/// A response head: status and the framing of the body that follows.
#[derive(Debug)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Its `Content-Length`, if any.
    pub content_length: Option<usize>,
    /// The body is chunked.
    pub chunked: bool,
    /// The server closes the connection after this response.
    pub close: bool,
}

/// One keep-alive HTTP/1.1 connection.
pub struct HttpConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read but not consumed yet; kept small, grown only by large
    /// responses.
    buf: Vec<u8>,
    host: String,
}

/// Longest response head accepted; both servers send well under 1 KiB.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted; the biggest legitimate one is a long-poll batch.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// An error for bytes that are not what the servers send.
pub fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl HttpConn {
    /// Connects from a rotating loopback source (see `loopback`).
    pub async fn open(server: SocketAddr, salt: u32) -> io::Result<Self> {
        let stream = loopback::connect(server, salt).await?;
        Ok(HttpConn {
            stream,
            buf: Vec::with_capacity(512),
            host: server.to_string(),
        })
    }

    /// Sends one request; the caller then reads the head and body.
    pub async fn send(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<()> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        if method == "POST" {
            req.push_str(&format!(
                "content-type: text/plain;charset=UTF-8\r\ncontent-length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 256 {
            self.buf.reserve(1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(())
    }

    /// Reads the next response head.
    pub async fn read_head(&mut self) -> io::Result<Head> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..end])?;
                self.buf.drain(..end + 4);
                return Ok(head);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too large"));
            }
            self.fill().await?;
        }
    }

    /// Reads a whole body framed by `head`.
    pub async fn read_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        if let Some(len) = head.content_length {
            if len > MAX_BODY {
                return Err(bad("body too large"));
            }
            while self.buf.len() < len {
                self.fill().await?;
            }
            return Ok(self.buf.drain(..len).collect());
        }
        if head.chunked {
            let mut out = Vec::new();
            let mut dec = Chunked::default();
            loop {
                let used = dec.feed(&self.buf, &mut out)?;
                self.buf.drain(..used);
                if dec.done {
                    return Ok(out);
                }
                if out.len() > MAX_BODY {
                    return Err(bad("body too large"));
                }
                self.fill().await?;
            }
        }
        Ok(Vec::new())
    }

    /// One request and its whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        self.send(method, path, body).await?;
        let head = self.read_head().await?;
        let body = self.read_body(&head).await?;
        Ok((head.status, body))
    }

    /// Reads more of an endless chunked body, decoded, into `out`.
    pub async fn read_stream(&mut self, dec: &mut Chunked, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let before = out.len();
            let used = dec.feed(&self.buf, out)?;
            self.buf.drain(..used);
            if dec.done {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended"));
            }
            if out.len() > before {
                return Ok(());
            }
            self.fill().await?;
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| bad("head not utf-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut h = Head {
        status,
        content_length: None,
        chunked: false,
        close: false,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            h.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            h.close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok(h)
}

/// Incremental chunked-transfer decoder: fed whatever bytes have arrived,
/// it consumes whole pieces and leaves partial ones for the next read.
#[derive(Default)]
pub struct Chunked {
    /// Data bytes still owed by the current chunk.
    remaining: usize,
    /// The CRLF after a chunk's data is still to be consumed.
    want_crlf: bool,
    /// The terminating chunk was read.
    pub done: bool,
}

impl Chunked {
    /// Returns how many input bytes were consumed.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut pos = 0;
        loop {
            if self.done {
                return Ok(pos);
            }
            if self.remaining > 0 {
                let take = self.remaining.min(input.len() - pos);
                out.extend_from_slice(&input[pos..pos + take]);
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(pos);
                }
                self.want_crlf = true;
            }
            if self.want_crlf {
                if input.len() - pos < 2 {
                    return Ok(pos);
                }
                if &input[pos..pos + 2] != b"\r\n" {
                    return Err(bad("chunk not followed by CRLF"));
                }
                pos += 2;
                self.want_crlf = false;
            }
            let Some(eol) = find(&input[pos..], b"\r\n") else {
                if input.len() - pos > 64 {
                    return Err(bad("chunk size line too long"));
                }
                return Ok(pos);
            };
            let line =
                std::str::from_utf8(&input[pos..pos + eol]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("chunk size {line:?}")))?;
            pos += eol + 2;
            if size == 0 {
                // Trailers are never sent by either server; the final CRLF
                // follows at once.
                if input.len() - pos < 2 {
                    pos -= eol + 2;
                    return Ok(pos);
                }
                pos += 2;
                self.done = true;
                return Ok(pos);
            }
            self.remaining = size;
        }
    }
}

/// Bounds any single network step so that a stuck server fails the run
/// instead of hanging it.
pub async fn within<T>(
    limit: Duration,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}
