//! SSE streams served straight on the socket, without hyper's buffers.
//!
//! hyper gives every HTTP/1 connection an 8 KiB read buffer and an 8 KiB
//! header buffer for as long as the connection lives. For an SSE stream,
//! which reads one request and then only writes for hours, that is most of
//! what a connection costs. So the accept path reads the first request head
//! itself: a plain `GET /events` is answered here, with the same
//! [`SseBody`], the same head from [`head::sse`] and the same bytes on the
//! wire (chunked encoding); so is the shared stream `ssio.js` opens,
//! `GET /events?mux=1`, with the same [`MuxBody`]. Any other request goes
//! to hyper with the bytes already read.
//!
//! After its head, an SSE client has nothing more to say. The socket is still
//! read, because a read that returns is how a close or reset is noticed, but
//! input beyond [`TRAILING_ALLOWANCE`] bytes ends the stream at once: junk
//! costs one small read, not a loop over megabytes.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use std::net::SocketAddr;

use super::mux::{self, MuxBody, MuxParam};
use super::sse::{self, SseBody};
use crate::api::io::Io;
use crate::engine::fanout::{DirectWrite, Newest};
use crate::error::Error;
use crate::session::{Handshake, Sid, SidParam};
use crate::transport::head;
use crate::transport::request::RawRequest;

/// Bytes a client may send after its `GET /events` head (a stray CRLF)
/// before the stream is closed.
pub(crate) const TRAILING_ALLOWANCE: usize = 4;

/// Whether `request` is a `GET /events` this module can answer.
///
/// Anything unusual (HTTP/1.0, a body, an upgrade, `Expect`, more headers
/// than a plain request has) is left to hyper, which handles every case.
pub(crate) fn sniff(request: &RawRequest) -> bool {
    // A shared stream has its own body: see `sniff_mux`.
    request.is_get_11()
        && request.path() == "/events"
        && crate::session::query_value(request.query(), "mux").is_none()
        && request.is_plain()
}

/// Whether `request` opens a shared stream (`GET /events?mux=1`) this
/// module can answer: plain as [`sniff`] asks, and not one a cluster node
/// must route (a carrier coming back with its `sid` may be held by
/// another node).
pub(crate) fn sniff_mux(request: &RawRequest, config: &crate::config::Config) -> bool {
    let query = request.query();
    request.is_get_11()
        && request.path() == "/events"
        && MuxParam::parse(query) == MuxParam::Open
        && (config.cluster_node().is_none() || crate::session::query_value(query, "sid").is_none())
        && request.is_plain()
}

/// Starts one SSE stream on `stream`, whose first bytes were read into
/// `request`: the request head already sniffed, then whatever the client
/// sent after it. Opens the session and writes the
/// response head; the returned future then serves the stream for as long
/// as it lives. `None` if the stream ended before that (refused, gone).
pub(crate) async fn start(
    stream: TcpStream,
    request: RawRequest,
    peer: SocketAddr,
    io: Io,
) -> Option<Streaming<SseBody>> {
    let trailing = request.after().len();
    if trailing > TRAILING_ALLOWANCE {
        return None;
    }
    let handshake = request.handshake(peer)?;
    drop(request);
    let cors = cors_of(&io, &handshake);
    // Boxed: starting a session is a large future.
    let opened = Box::pin(sse::open(&io, handshake)).await;
    begin(stream, io, cors, opened, trailing).await
}

/// [`start`] for a shared stream (`GET /events?mux=1`, [`sniff_mux`]):
/// the same head, and the shared stream's body instead of a session's.
pub(crate) async fn start_mux(
    stream: TcpStream,
    request: RawRequest,
    peer: SocketAddr,
    io: Io,
) -> Option<Streaming<MuxBody>> {
    let trailing = request.after().len();
    if trailing > TRAILING_ALLOWANCE {
        return None;
    }
    let handshake = request.handshake(peer)?;
    let sid = SidParam::parse(request.query());
    drop(request);
    let opened = async {
        let resume = match sid {
            SidParam::Absent => None,
            SidParam::Malformed => return Err(Error::UnknownSession),
            SidParam::Valid(sid) => Some(sid),
        };
        mux::sse_open(&io, resume, &handshake).await
    };
    let opened = Box::pin(opened).await;
    let cors = cors_of(&io, &handshake);
    drop(handshake);
    begin(stream, io, cors, opened, trailing).await
}

/// The CORS fields of every answer to `handshake`'s request.
fn cors_of(io: &Io, handshake: &Handshake) -> head::Head {
    let origin = handshake.headers.get(hyper::header::ORIGIN);
    head::cors(io.config(), origin.map(|o| o.as_bytes()))
}

/// Writes the response head for a stream `opened` (or the error it was
/// refused with) and readies the stream for its task.
async fn begin<B: RawBody>(
    mut stream: TcpStream,
    io: Io,
    cors: head::Head,
    opened: Result<(Sid, B), Error>,
    trailing: usize,
) -> Option<Streaming<B>> {
    let (sid, mut body) = match opened {
        Ok(ok) => ok,
        Err(e) => {
            io.refused("GET", "/events", &e);
            let _ = stream.write_all(&head::raw_error(&e, cors)).await;
            return None;
        }
    };
    // Written here, after each batch went out, not when it was gathered.
    body.settle_after_writes();
    // Built, written and freed in one statement: a local would hold its
    // few hundred bytes for the whole life of the stream.
    stream
        .write_all(response_head(&io, sid, cors).as_bytes())
        .await
        .ok()?;
    let shared = Arc::new_cyclic(|me: &std::sync::Weak<Shared<B>>| {
        // Without a sweeper, the stream is woken as before and need not
        // be reachable.
        if io.hub().fanout().sweeping() {
            let me: std::sync::Weak<dyn DirectWrite> = me.clone();
            body.write_directly(me);
        }
        Shared(Mutex::new(Some(Stream {
            stream,
            body,
            out: None,
            ending: false,
            trailing,
        })))
    });
    Some(Streaming(shared))
}

/// A stream's body as the raw path serves it: SSE frames to send in
/// chunks, and what the fan-out's sweeper needs to write a latest value
/// past it ([`DirectWrite`]). A session's own stream ([`SseBody`]) and a
/// shared stream ([`MuxBody`]) both are.
pub(crate) trait RawBody:
    Body<Data = Bytes, Error = std::convert::Infallible> + Unpin + Send + 'static
{
    /// The caller will call [`RawBody::written`] after each write.
    fn settle_after_writes(&mut self);
    /// Lets the sweeper write latest values to `direct`, the stream that
    /// carries this body.
    fn write_directly(&mut self, direct: std::sync::Weak<dyn DirectWrite>);
    /// The one value of `newest` that may be written past this body for
    /// the cursor numbered `cursor`, if that is all it owes and the body
    /// has handed out everything else.
    fn owes_only(&self, cursor: u64, newest: &Newest) -> Option<usize>;
    /// Value `i` of `newest` as this body frames it, as one HTTP chunk.
    fn latest_chunk<'a>(&self, newest: &'a Newest, i: usize) -> &'a Bytes;
    /// Value `i` went out past the body, whole or in part (the caller then
    /// writes the rest and calls [`RawBody::written`]).
    fn took(&mut self, newest: &Newest, i: usize, whole: bool);
    /// Waits for the next event with the waker in `waker` after a direct
    /// write, taking it; leaves it if one came meanwhile and the stream's
    /// task must be woken for it.
    fn wait_again(&self, waker: &mut Option<Waker>);
    /// Everything this body has yielded is written to the socket.
    fn written(&mut self);
}

impl RawBody for SseBody {
    fn settle_after_writes(&mut self) {
        SseBody::settle_after_writes(self);
    }

    fn write_directly(&mut self, direct: std::sync::Weak<dyn DirectWrite>) {
        SseBody::write_directly(self, direct);
    }

    fn owes_only(&self, _cursor: u64, newest: &Newest) -> Option<usize> {
        // One cursor, and only it ever names this stream.
        SseBody::owes_only(self, newest)
    }

    fn latest_chunk<'a>(&self, newest: &'a Newest, i: usize) -> &'a Bytes {
        newest.framed(i, |p| chunk(&p.sse))
    }

    fn took(&mut self, newest: &Newest, i: usize, whole: bool) {
        SseBody::took(self, newest, i, whole);
    }

    fn wait_again(&self, waker: &mut Option<Waker>) {
        SseBody::wait_again(self, waker);
    }

    fn written(&mut self) {
        SseBody::written(self);
    }
}

/// Writes what the socket takes of `bytes` now, without waiting.
///
/// Straight to the socket rather than through tokio's readiness, which
/// would be one more cache line to read per stream and sweep. tokio is not
/// told of a full socket: the task then woken finds it full again and
/// waits for it as usual.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn write_now(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    socket2::SockRef::from(stream).send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn write_now(stream: &TcpStream, bytes: &[u8]) -> std::io::Result<usize> {
    stream.try_write(bytes)
}

/// One raw SSE stream after its head, as its task's future.
///
/// The stream itself is shared with the fan-out, whose sweeper writes a
/// latest value to an idle stream without waking this task
/// ([`DirectWrite`]). Only this task ever drops the stream, so that ending
/// a session never runs inside the sweeper.
pub(crate) struct Streaming<B: RawBody>(Arc<Shared<B>>);

/// The stream behind its lock; `None` once this task has ended it.
struct Shared<B>(Mutex<Option<Stream<B>>>);

impl<B: RawBody> Future for Streaming<B> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // With several threads the sweeper may hold this lock on another
        // one; it does so for a single non-blocking write, so waiting for
        // it costs less than waking this task again later.
        let mut slot = self.0 .0.lock();
        let Some(stream) = slot.as_mut() else {
            return Poll::Ready(());
        };
        std::task::ready!(Pin::new(stream).poll(cx));
        // Dropped here, outside the lock: ending the body ends the session,
        // which publishes a count to every other stream.
        let ended = slot.take();
        drop(slot);
        drop(ended);
        Poll::Ready(())
    }
}

impl<B: RawBody> Drop for Streaming<B> {
    // A task dropped before its stream ended (the server stopping) still
    // ends the stream here, never in the sweeper holding the last
    // reference for a moment.
    fn drop(&mut self) {
        let ended = self.0 .0.lock().take();
        drop(ended);
    }
}

impl<B: RawBody> DirectWrite for Shared<B> {
    fn write_latest(&self, cursor: u64, newest: &Newest, waker: &mut Option<Waker>) -> bool {
        // Held: this stream's task is running it right now, and will find
        // the value itself once woken.
        let Some(mut slot) = self.0.try_lock() else {
            return false;
        };
        let Some(stream) = slot.as_mut() else {
            return false;
        };
        stream.write_latest(cursor, newest, waker)
    }
}

/// One raw SSE stream after its head: what it holds for hours is exactly
/// these fields. A hand-written future rather than an `async` loop, whose
/// state would also keep every temporary of every branch (a read buffer,
/// the write in progress, the select's bookkeeping) for the stream's whole
/// life.
struct Stream<B> {
    stream: TcpStream,
    body: B,
    /// A batch being written, from its first unwritten byte.
    out: Option<BytesMut>,
    /// `out` is the terminating chunk: the stream ends once it is written.
    ending: bool,
    /// Bytes the client sent after its head.
    trailing: usize,
}

impl<B: RawBody> Stream<B> {
    /// Writes the one value of `newest` the stream owes `cursor`, if it is
    /// idle and that is all it owes. A write the socket takes only in part
    /// is left for the task to finish.
    fn write_latest(&mut self, cursor: u64, newest: &Newest, waker: &mut Option<Waker>) -> bool {
        if self.out.is_some() || self.ending {
            return false;
        }
        let Some(i) = self.body.owes_only(cursor, newest) else {
            return false;
        };
        let chunk = self.body.latest_chunk(newest, i);
        match write_now(&self.stream, chunk) {
            Ok(n) if n == chunk.len() => {
                self.body.took(newest, i, true);
                // If something came meanwhile the waker stays with the
                // sweeper, which wakes the task for it.
                self.body.wait_again(waker);
                true
            }
            Ok(n) => {
                self.body.took(newest, i, false);
                self.out = Some(BytesMut::from(&chunk[n..]));
                true
            }
            // Full, or broken: the task finds out for itself.
            Err(_) => false,
        }
    }
}

impl<B: RawBody> Future for Stream<B> {
    type Output = ();

    // Dropping the body at the end ends the session if it has not ended
    // already.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // The client sends nothing after its request; a read that returns
        // means it closed or reset the connection, or sent input nobody
        // reads.
        loop {
            let mut scratch = [0u8; TRAILING_ALLOWANCE + 1];
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    this.trailing += buf.filled().len();
                    if this.trailing > TRAILING_ALLOWANCE {
                        return Poll::Ready(());
                    }
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        // The body said `Pending` after the batch being written, in this
        // same call.
        let mut drained = false;
        loop {
            if let Some(out) = &mut this.out {
                while !out.is_empty() {
                    match Pin::new(&mut this.stream).poll_write(cx, out) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                        Poll::Ready(Ok(n)) => out.advance(n),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                this.out = None;
                if this.ending {
                    return Poll::Ready(());
                }
                this.body.written();
                if drained {
                    // Its wake-ups are registered and none has been used
                    // since: asking again would find nothing, at the cost
                    // of every source's locks.
                    return Poll::Pending;
                }
            }
            // Everything ready now goes out in one write.
            match next_batch(&mut this.body, cx) {
                Poll::Ready(Some((batch, pending))) => {
                    this.out = Some(batch);
                    drained = pending;
                }
                Poll::Ready(None) => {
                    this.out = Some(BytesMut::from(&b"0\r\n\r\n"[..]));
                    this.ending = true;
                }
                Poll::Pending => {
                    // Nothing to write, yet the cursor may have moved past
                    // broadcasts that leave this session out: it owes them
                    // nothing, and should not wait for its next write to
                    // say so.
                    this.body.written();
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The response head of a raw stream, as HTTP/1.1 bytes.
fn response_head(io: &Io, sid: Sid, cors: head::Head) -> String {
    let mut fields = head::sse(sid);
    fields.extend(cors);
    if let Some(node) = io.config().cluster_node() {
        fields.push((head::NODE, node.to_string().into()));
    }
    head::raw(
        hyper::StatusCode::OK,
        &fields,
        "transfer-encoding: chunked\r\n",
    )
}

/// `data` as one HTTP/1.1 chunk.
pub(crate) fn chunk(data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 16);
    put_chunk(&mut buf, data);
    buf.freeze()
}

/// Appends `data` to `buf` as one HTTP/1.1 chunk, its size in upper-case
/// hex as hyper writes it, so that a raw stream's bytes are hyper's.
fn put_chunk(buf: &mut BytesMut, data: &[u8]) {
    let _ = write!(buf, "{:X}\r\n", data.len());
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// Polls the body until it has nothing more ready, framing every frame as
/// an HTTP chunk. `None` once the body has ended; with a batch, whether the
/// body said `Pending` after it (rather than the batch reaching its bound or
/// the body's end coming next).
fn next_batch<B: RawBody>(body: &mut B, cx: &mut Context<'_>) -> Poll<Option<(BytesMut, bool)>> {
    let mut out: Option<BytesMut> = None;
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let buf = out.get_or_insert_with(|| BytesMut::with_capacity(data.len() + 16));
                put_chunk(buf, &data);
                if buf.len() >= 64 * 1024 {
                    return Poll::Ready(out.map(|b| (b, false)));
                }
            }
            Poll::Ready(Some(Err(never))) => match never {},
            // Send what we have; the next call sees the end again.
            Poll::Ready(None) => return Poll::Ready(out.map(|b| (b, false))),
            Poll::Pending => {
                return match out {
                    Some(buf) => Poll::Ready(Some((buf, true))),
                    None => Poll::Pending,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sniff, sniff_mux};
    use crate::transport::request::RawRequest;

    /// Whether the edge, having read `head`, would hand it to this path.
    fn taken(head: &[u8]) -> bool {
        RawRequest::parse(head).is_some_and(|r| sniff(&r))
    }

    #[test]
    fn only_plain_requests_to_open_a_shared_stream_are_taken_as_one() {
        let taken = |head: &[u8], node: bool| {
            #[cfg(feature = "redis")]
            let config = crate::config::Config {
                redis: node.then(|| "redis://127.0.0.1:6379".into()),
                node_id: node.then(|| "n1".into()),
                ..Default::default()
            };
            #[cfg(not(feature = "redis"))]
            let config = crate::config::Config::default();
            assert_eq!(
                config.cluster_node().is_some(),
                node && cfg!(feature = "redis")
            );
            RawRequest::parse(head).is_some_and(|r| sniff_mux(&r, &config))
        };
        let sid = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";
        assert!(taken(
            b"GET /events?mux=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            false
        ));
        assert!(taken(
            b"GET /events?mux=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            true
        ));
        let resume = format!("GET /events?mux=1&sid={sid} HTTP/1.1\r\n\r\n");
        assert!(taken(resume.as_bytes(), false));
        // A cluster node may hold the carrier's session elsewhere.
        #[cfg(feature = "redis")]
        assert!(!taken(resume.as_bytes(), true));
        for other in [
            &b"GET /events?mux=1 HTTP/1.0\r\n\r\n"[..],
            b"GET /events HTTP/1.1\r\n\r\n",
            b"GET /events?mux=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10 HTTP/1.1\r\n\r\n",
            b"GET /events?mux=2 HTTP/1.1\r\n\r\n",
            b"GET /poll?mux=1 HTTP/1.1\r\n\r\n",
            b"POST /events?mux=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET /events?mux=1 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /events?mux=1 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(!taken(other, false), "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn only_plain_complete_event_requests_are_taken() {
        assert!(taken(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(taken(
            b"GET /events?x=1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        ));
        for other in [
            &b"GET /events HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /events HTTP/1.0\r\n\r\n",
            b"POST /events HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /eventsx HTTP/1.1\r\n\r\n",
            b"GET /poll HTTP/1.1\r\n\r\n",
            b"GET /events HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /events?mux=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x00\x01garbage",
        ] {
            assert!(!taken(other), "{:?}", String::from_utf8_lossy(other));
        }
    }
}
