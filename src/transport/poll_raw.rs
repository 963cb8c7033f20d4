//! Held long-polls served straight on the socket, as plain `GET /events`
//! is in [`sse_raw`].
//!
//! A polling client spends nearly all its life inside one held
//! `GET /poll?sid=`. Through hyper, that costs the connection's read and
//! write buffers and the whole routing future for as long as the poll is
//! held, several times what the session itself holds. So a plain poll for
//! a live polling session this node holds is answered here: the same
//! [`poll::poll`] call, the same JSON body from the same shared event
//! bytes, the same headers, with `content-length`. The connection then
//! stays open for the client's next request, whose head is read the same
//! way: another plain poll is served here again, anything else goes to
//! hyper with the bytes already read.
//!
//! While a poll is held the socket is still read, because a read that
//! returns is how a client that went away is noticed (its cursor goes back
//! to the session at once, as when hyper drops a request). Bytes that
//! arrive meanwhile are the start of the client's next request (HTTP/1.1
//! allows pipelining) and are kept for it, up to `--max-header-bytes`.
//!
//! A held poll owed only a new count is answered by the fan-out's sweeper,
//! as an idle stream is written ([`DirectWrite`]): the connection lends it
//! the socket and the cursor for the poll ([`Lent`]). The cursor is parked
//! before the answer is written, and the connection's task runs once the
//! whole sweep is out, so a count change reaches every held poll before
//! any of their tasks reads a next request.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::mux::MuxParam;
use super::{poll, sse_raw};
use crate::api::io::Io;
use crate::engine::fanout::{DirectWrite, Newest};
use crate::engine::hub::Session;
use crate::engine::recovery::Cursor;
use crate::error::Error;
use crate::session::{Handshake, Sid, SidParam, Transport};
use crate::transport::head;
use crate::transport::request::{connection_close, RawRequest};

/// A plain request this module can answer.
pub(crate) struct Ask {
    what: What,
    /// Where the request's `Origin` is in `--cors-origin`, for the CORS
    /// headers.
    origin: Option<usize>,
    /// The client asked to close the connection after the answer.
    close: bool,
}

/// The two plain requests of a polling client.
enum What {
    /// `GET /poll`: a new session.
    Handshake(Box<Handshake>),
    /// `GET /poll?sid=`: a poll of this session.
    Poll(Arc<Session>),
}

/// How a connection goes on after a poll answered here.
pub(crate) enum After {
    /// Open for the next request, whose first bytes (if any came while the
    /// poll was held) are these.
    Next(Vec<u8>),
    /// Closed, or to be closed.
    Close,
}

/// Whether `head` is a complete, plain `GET /poll?sid=` for a polling
/// session this node holds, or a plain `GET /poll` handshake (the first
/// request on a polling client's connection, which then carries its
/// polls).
///
/// Anything else, including every poll that can only end in an error (an
/// unknown or malformed sid, another transport's session), a shared
/// stream's poll, and one that asks for an upgrade, is left to hyper and
/// the router, which answer every case. A cluster node's resumes, which
/// may belong to another node, are left out by the caller.
pub(crate) fn sniff(request: &RawRequest, io: &Io, peer: SocketAddr) -> Option<Ask> {
    if !request.is_get_11() {
        return None;
    }
    let query = request.query();
    if request.path() != "/poll" || MuxParam::parse(query) != MuxParam::Absent {
        return None;
    }
    if !request.is_plain() {
        return None;
    }
    let sid = match SidParam::parse(query) {
        SidParam::Valid(sid) => Some(sid),
        SidParam::Absent => None,
        SidParam::Malformed => return None,
    };
    let mut origin = None;
    let mut close = false;
    for (name, value) in request.headers() {
        if name.eq_ignore_ascii_case("connection") {
            close |= connection_close(value)?;
        }
        if name.eq_ignore_ascii_case("origin") {
            origin = head::listed_origin(io.config(), value);
        }
    }
    let what = match sid {
        Some(sid) => {
            let session = io.hub().get(&sid)?;
            if session.transport != Transport::Polling {
                return None;
            }
            What::Poll(session)
        }
        None => What::Handshake(Box::new(request.handshake(peer)?)),
    };
    Some(Ask {
        what,
        origin,
        close,
    })
}

/// A poll of a live session, split off its [`Ask`] to be held by
/// [`hold`].
pub(crate) struct Held {
    session: Arc<Session>,
    origin: Option<usize>,
    close: bool,
}

/// A plain `GET /poll` handshake, split off its [`Ask`] to be answered by
/// [`serve`].
pub(crate) struct Handshaking {
    handshake: Box<Handshake>,
    origin: Option<usize>,
    close: bool,
}

impl Ask {
    /// The poll this asks for, to be held by [`hold`], or the handshake, to
    /// be answered by [`serve`].
    pub(crate) fn held(self) -> Result<Held, Handshaking> {
        let Ask {
            what,
            origin,
            close,
        } = self;
        match what {
            What::Poll(session) => Ok(Held {
                session,
                origin,
                close,
            }),
            What::Handshake(handshake) => Err(Handshaking {
                handshake,
                origin,
                close,
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A poll held on the raw path: waits until events are ready or
    /// pingInterval passes, writes the answer, and says how the connection
    /// goes on, with its socket back in the connection's hands.
    ///
    /// A polling client spends nearly all its life here, inside its
    /// connection's task, which awaits this in place rather than boxed. So
    /// this is a named future that holds only the poll's timer and what
    /// its answer needs: an async block would keep room for the poll it
    /// was given beside the one it polls, and for every value it built on
    /// the way.
    ///
    /// The socket and the cursor are shared with the fan-out's sweeper,
    /// which answers a poll owed one latest value itself, as it writes to
    /// an idle stream ([`DirectWrite`]): a count change then reaches every
    /// held poll before any of their tasks runs again.
    pub(crate) struct Hold<'a> {
        #[pin]
        timer: Timer,
        shared: Arc<Lent>,
        // Where the socket goes back once the answer is written.
        slot: &'a mut Option<TcpStream>,
        io: &'a Io,
        closing: &'a CancellationToken,
        // What the client sent after the poll's head: the start of its
        // next request (HTTP/1.1 allows pipelining).
        rest: Vec<u8>,
    }

    impl<'a> PinnedDrop for Hold<'a> {
        // Whatever ends the hold, its cursor is parked by this task, never
        // by the sweeper holding the last reference for a moment.
        fn drop(this: Pin<&mut Self>) {
            let ended = this.shared.0.lock().take();
            drop(ended);
        }
    }
}

pin_project_lite::pin_project! {
    #[project = TimerProj]
    enum Timer {
        // pingInterval: the poll is answered with `[]` when it passes.
        Held { #[pin] sleep: tokio::time::Sleep },
        // The poll is over, or there never was one (a handshake).
        Over,
    }
}

/// A polling connection's socket and cursor while a poll is held, behind
/// a lock the sweeper takes without waiting; `None` between polls.
///
/// One per connection, made at its first poll and kept between polls: a
/// block made and freed by every poll would come and go through the heap
/// at every count change, and leave holes among the blocks that stay.
pub(crate) struct Lent(parking_lot::Mutex<Option<Inner>>);

impl Lent {
    fn new() -> Arc<Lent> {
        Arc::new(Lent(parking_lot::Mutex::new(None)))
    }
}

/// What a held poll lends: the socket, the poll, and what its answer
/// needs.
struct Inner {
    stream: TcpStream,
    stage: Stage,
    origin: Option<usize>,
    close: bool,
}

enum Stage {
    // The poll, while the socket is read to notice a client that left.
    Waiting(poll::Pending),
    // The answer, `at` bytes of it written; then the connection closes or
    // goes on.
    Writing {
        out: Vec<u8>,
        at: usize,
        close: bool,
    },
}

/// Holds the poll `held` on `slot`'s socket, which is back in `slot` once
/// the hold returns [`After::Next`]. `rest` is what the client sent after
/// the poll's head. `lent` is the connection's [`Lent`], made here the
/// first time.
pub(crate) fn hold<'a>(
    slot: &'a mut Option<TcpStream>,
    lent: &mut Option<Arc<Lent>>,
    held: Held,
    rest: Vec<u8>,
    io: &'a Io,
    closing: &'a CancellationToken,
) -> Hold<'a> {
    let Held {
        session,
        origin,
        close,
    } = held;
    let shared = lent.get_or_insert_with(Lent::new).clone();
    let (stage, timer) = match poll::start(io, session) {
        Ok((mut pending, sleep)) => {
            // Without a sweeper, the poll's task is woken as before and
            // the poll need not be reachable.
            if io.hub().fanout().sweeping() {
                let me: std::sync::Weak<Lent> = Arc::downgrade(&shared);
                pending.write_directly(me);
            }
            (Stage::Waiting(pending), Timer::Held { sleep })
        }
        // Refused at once (a second poll of the session, or its end):
        // answered as the router answers it.
        Err(e) => (answer(io, closing, origin, close, Err(e)), Timer::Over),
    };
    let stream = slot.take().expect("the connection's socket");
    *shared.0.lock() = Some(Inner {
        stream,
        stage,
        origin,
        close,
    });
    Hold {
        timer,
        shared,
        slot,
        io,
        closing,
        rest,
    }
}

/// Writes `out`, a handshake's answer, as a held poll's answer is written.
fn writing<'a>(
    slot: &'a mut Option<TcpStream>,
    lent: &mut Option<Arc<Lent>>,
    out: Vec<u8>,
    rest: Vec<u8>,
    io: &'a Io,
    closing: &'a CancellationToken,
    close: bool,
) -> Hold<'a> {
    let shared = lent.get_or_insert_with(Lent::new).clone();
    let stream = slot.take().expect("the connection's socket");
    *shared.0.lock() = Some(Inner {
        stream,
        stage: Stage::Writing { out, at: 0, close },
        origin: None,
        close,
    });
    Hold {
        timer: Timer::Over,
        shared,
        slot,
        io,
        closing,
        rest,
    }
}

/// The answer to write for a poll's `result`. Closing after it: asked for
/// (`close`), or the server is shutting down.
fn answer(
    io: &Io,
    closing: &CancellationToken,
    origin: Option<usize>,
    close: bool,
    result: Result<(poll::PollBody, Cursor), Error>,
) -> Stage {
    let close = close || closing.is_cancelled();
    let out = match result {
        Ok((body, cursor)) => {
            let frames = body.into_frames();
            let parts = frames.iter().map(|b| &b[..]);
            answer_bytes(io, origin, None, cursor, parts, close)
        }
        Err(e) => error_bytes(io, e, head::cors_listed(io.config(), origin), close),
    };
    Stage::Writing { out, at: 0, close }
}

impl Future for Hold<'_> {
    type Output = After;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<After> {
        let mut this = self.project();
        // With several threads the sweeper may hold this lock on another
        // one, for a single non-blocking write.
        let mut held = this.shared.0.lock();
        let Some(inner) = held.as_mut() else {
            return Poll::Ready(After::Close);
        };
        loop {
            match &mut inner.stage {
                Stage::Waiting(pending) => {
                    let TimerProj::Held { sleep } = this.timer.as_mut().project() else {
                        unreachable!("a held poll has its timer");
                    };
                    let max = this.io.config().max_header_bytes;
                    let waited = wait(pending, sleep, &inner.stream, this.rest, max, cx);
                    let Some(ready) = std::task::ready!(waited) else {
                        break;
                    };
                    // The poll is over (its cursor is parked again): only
                    // the answer's bytes are kept from here.
                    inner.stage =
                        answer(this.io, this.closing, inner.origin, inner.close, Ok(ready));
                    this.timer.set(Timer::Over);
                }
                Stage::Writing { out, at, close } => {
                    while *at < out.len() {
                        let stream = Pin::new(&mut inner.stream);
                        match std::task::ready!(stream.poll_write(cx, &out[*at..])) {
                            Ok(0) | Err(_) => {
                                *close = true;
                                break;
                            }
                            Ok(n) => *at += n,
                        }
                    }
                    if *close {
                        break;
                    }
                    let Some(Inner { stream, .. }) = held.take() else {
                        unreachable!("present above");
                    };
                    drop(held);
                    **this.slot = Some(stream);
                    return Poll::Ready(After::Next(std::mem::take(this.rest)));
                }
            }
        }
        // Closed: dropped here, outside the lock.
        let ended = held.take();
        drop(held);
        drop(ended);
        Poll::Ready(After::Close)
    }
}

impl DirectWrite for Lent {
    fn write_latest(&self, cursor: u64, newest: &Newest, _waker: &mut Option<Waker>) -> bool {
        // Held: this poll's task is running it right now, and will find
        // the value itself once woken.
        let Some(mut slot) = self.0.try_lock() else {
            return false;
        };
        let Some(inner) = slot.as_mut() else {
            return false;
        };
        let Stage::Waiting(pending) = &mut inner.stage else {
            return false;
        };
        let Some(i) = pending.owes_only(cursor, newest) else {
            return false;
        };
        let position = pending.answer_latest(newest);
        let json = &newest.packet(i).json[..];
        let parts = [&b"["[..], json, &b"]"[..]].into_iter();
        let out = answer_bytes(
            pending.io(),
            inner.origin,
            None,
            position,
            parts,
            inner.close,
        );
        // What the socket does not take now, the task writes; a socket
        // that failed fails the task's write too, which ends the
        // connection.
        let at = sse_raw::write_now(&inner.stream, &out).unwrap_or(0);
        let close = inner.close;
        inner.stage = match at == out.len() {
            true => Stage::Writing {
                out: Vec::new(),
                at: 0,
                close,
            },
            false => Stage::Writing { out, at, close },
        };
        // The waker stays: the task must run, to go on to the client's
        // next request; after the sweep, so that the rest of the fan-out
        // goes first.
        true
    }

    fn wake_after_sweep(&self) -> bool {
        true
    }
}

/// Polls the held poll, reading the socket meanwhile: `None` once the
/// client has gone, or has sent more of its next request than a head may
/// hold (`max`).
///
/// A read that returns is how a client that went away is noticed; dropping
/// the held poll then puts the cursor back for the next one. Readiness
/// first, then a read into the stack: a buffer kept in the held poll, or
/// reserved in `rest` ahead of any byte, would cost every held poll for its
/// whole life.
fn wait(
    pending: &mut poll::Pending,
    mut timer: Pin<&mut tokio::time::Sleep>,
    stream: &TcpStream,
    rest: &mut Vec<u8>,
    max: usize,
    cx: &mut Context<'_>,
) -> Poll<Option<(poll::PollBody, Cursor)>> {
    loop {
        if let Poll::Ready(answer) = pending.poll_answer(timer.as_mut(), cx) {
            return Poll::Ready(Some(answer));
        }
        match std::task::ready!(stream.poll_read_ready(cx)) {
            Ok(()) => {}
            Err(_) => return Poll::Ready(None),
        }
        let mut buf = [0u8; 1024];
        match stream.try_read(&mut buf) {
            Ok(0) => return Poll::Ready(None),
            Ok(n) => {
                rest.extend_from_slice(&buf[..n]);
                if rest.len() > max {
                    return Poll::Ready(None);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return Poll::Ready(None),
        }
    }
}

/// Answers the handshake `ask` on `stream` (a poll is held by [`hold`]),
/// and says how the connection goes on. `rest` is what the client sent
/// after the handshake's head.
pub(crate) async fn serve<'a>(
    slot: &'a mut Option<TcpStream>,
    lent: &'a mut Option<Arc<Lent>>,
    ask: Handshaking,
    rest: Vec<u8>,
    io: &Io,
    closing: &CancellationToken,
) -> After {
    let Handshaking {
        handshake,
        origin,
        close,
    } = ask;
    // Boxed: starting a session is a large future, and only this path
    // waits on it.
    let started = Box::pin(poll::handshake(io, *handshake)).await;
    // Closing after the answer: asked for, or the server is shutting down.
    let close = close || closing.is_cancelled();
    let out = match started {
        Ok((sid, body, cursor)) => answer_bytes(
            io,
            origin,
            Some(sid),
            cursor,
            [&body[..]].into_iter(),
            close,
        ),
        Err(e) => error_bytes(io, e, head::cors_listed(io.config(), origin), close),
    };
    writing(slot, lent, out, rest, io, closing, close).await
}

/// A 200 answer: the JSON head, the session's id for a handshake (`sid`),
/// the client's resume position as the router adds it, the CORS and node
/// headers, then the body. Built before anything is written, so that no
/// future waiting on the socket holds what built it; and in one buffer,
/// written in place, since every held poll's answer is built inside a
/// fan-out.
fn answer_bytes<'b>(
    io: &Io,
    origin: Option<usize>,
    sid: Option<Sid>,
    cursor: Cursor,
    parts: impl Iterator<Item = &'b [u8]> + Clone,
    close: bool,
) -> Vec<u8> {
    use std::io::Write;
    let config = io.config();
    let len: usize = parts.clone().map(<[u8]>::len).sum();
    io.hub().metrics.response_bytes(len as u64);
    let mut out = Vec::with_capacity(ANSWER_HEAD + len);
    head::push_status(&mut out, hyper::StatusCode::OK);
    for (name, value) in head::JSON {
        head::push_field(&mut out, name, value.as_bytes());
    }
    if let Some(sid) = sid {
        head::push_field(&mut out, "x-session-id", sid.to_string().as_bytes());
    }
    if config.resumable() {
        head::push_cursor(&mut out, cursor);
    }
    head::push_cors(&mut out, config, origin);
    if let Some(node) = config.cluster_node() {
        head::push_field(&mut out, head::NODE, node.to_string().as_bytes());
    }
    write!(out, "content-length: {len}\r\n").expect("a Vec takes every write");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    head::push_end(&mut out);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// Room for an answer's head, so that building one takes one allocation:
/// with a resume position, a listed origin and a node name it is about
/// 330 bytes.
const ANSWER_HEAD: usize = 384;

/// `e` as the router would answer it, leaving the connection open (unless
/// `close`) as hyper does after an error it answered.
fn error_bytes(io: &Io, e: Error, cors: head::Head, close: bool) -> Vec<u8> {
    io.refused("GET", "/poll", &e);
    io.hub().metrics.response_bytes(e.body().len() as u64);
    if close {
        head::raw_error(&e, cors)
    } else {
        head::raw_error_open(&e, cors)
    }
}
