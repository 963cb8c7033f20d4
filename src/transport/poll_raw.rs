//! Held long-polls served straight on the socket, as plain `GET /events`
//! is in [`sse_raw`](super::sse_raw).
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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::mux::MuxParam;
use super::poll;
use crate::api::io::Io;
use crate::engine::hub::Session;
use crate::engine::recovery::Cursor;
use crate::error::Error;
use crate::session::{Handshake, SidParam, Transport};
use crate::transport::head;
use crate::transport::request::{connection_close, RawRequest};

/// A plain request this module can answer.
pub(crate) struct Ask {
    what: What,
    /// The request's `Origin`, for the CORS headers.
    origin: Option<Vec<u8>>,
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
            origin = Some(value.to_vec());
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

/// Answers the poll `ask` on `stream`: holds it until events are ready or
/// pingInterval passes, writes the answer, and says how the connection
/// goes on. `rest` is what the client sent after the poll's head.
pub(crate) async fn serve(
    stream: &mut TcpStream,
    ask: Ask,
    mut rest: Vec<u8>,
    io: &Io,
    closing: &CancellationToken,
) -> After {
    let config = io.config();
    let max = config.max_header_bytes;
    let cors = head::cors(config, ask.origin.as_deref());
    // Closing after the answer: asked for, or the server is shutting down.
    let close = |ask_close: bool| ask_close || closing.is_cancelled();
    let asked = ask.close;
    let session = match ask.what {
        What::Poll(session) => session,
        What::Handshake(handshake) => {
            // Boxed: starting a session is a large future, and in place it
            // would make every held poll's future that large.
            return match Box::pin(poll::handshake(io, *handshake)).await {
                Ok((sid, body, cursor)) => {
                    let mut fields = json_head();
                    fields.push(("x-session-id", sid.to_string().into()));
                    let frames = VecDeque::from([body]);
                    answer(
                        stream,
                        io,
                        with_cursor(io, fields, cursor),
                        cors,
                        frames,
                        rest,
                        close(asked),
                    )
                    .await
                }
                Err(e) => answer_error(stream, io, e, cors, rest, close(asked)).await,
            };
        }
    };
    let held = poll::poll(io, session);
    tokio::pin!(held);
    let mut scratch = [0u8; 64];
    let result = loop {
        tokio::select! {
            r = &mut held => break r,
            // Dropping the held poll puts the cursor back for the next one.
            r = stream.read(&mut scratch) => match r {
                Ok(0) | Err(_) => return After::Close,
                Ok(n) => {
                    rest.extend_from_slice(&scratch[..n]);
                    if rest.len() > max {
                        return After::Close;
                    }
                }
            },
        }
    };
    match result {
        Ok((body, cursor)) => {
            let frames = body.into_frames();
            let fields = with_cursor(io, json_head(), cursor);
            answer(stream, io, fields, cors, frames, rest, close(asked)).await
        }
        Err(e) => answer_error(stream, io, e, cors, rest, close(asked)).await,
    }
}

fn json_head() -> head::Head {
    head::JSON.iter().map(|&(n, v)| (n, v.into())).collect()
}

/// The JSON head with the client's resume position, as the router adds it.
fn with_cursor(io: &Io, mut fields: head::Head, cursor: Cursor) -> head::Head {
    if io.config().resumable() {
        fields.extend(head::cursor(&cursor.to_string()));
    }
    fields
}

/// Writes a 200 answer: `fields`, the CORS and node headers, the body.
async fn answer(
    stream: &mut TcpStream,
    io: &Io,
    mut fields: head::Head,
    cors: head::Head,
    frames: VecDeque<Bytes>,
    rest: Vec<u8>,
    close: bool,
) -> After {
    fields.extend(cors);
    if let Some(node) = io.config().cluster_node() {
        fields.push((head::NODE, node.to_string().into()));
    }
    let len: usize = frames.iter().map(|b| b.len()).sum();
    io.hub().metrics.response_bytes(len as u64);
    let closing_now = close;
    let mut extra = format!("content-length: {len}\r\n");
    if closing_now {
        extra.push_str("connection: close\r\n");
    }
    let mut out = head::raw(hyper::StatusCode::OK, &fields, &extra).into_bytes();
    out.reserve(len);
    for b in &frames {
        out.extend_from_slice(b);
    }
    drop(frames);
    if stream.write_all(&out).await.is_err() || closing_now {
        return After::Close;
    }
    After::Next(rest)
}

/// Writes `e` as the router would, leaving the connection open as hyper
/// does after an error it answered.
async fn answer_error(
    stream: &mut TcpStream,
    io: &Io,
    e: Error,
    cors: head::Head,
    rest: Vec<u8>,
    close: bool,
) -> After {
    io.refused("GET", "/poll", &e);
    io.hub().metrics.response_bytes(e.body().len() as u64);
    let answer = if close {
        head::raw_error(&e, cors)
    } else {
        head::raw_error_open(&e, cors)
    };
    if stream.write_all(&answer).await.is_err() || close {
        return After::Close;
    }
    After::Next(rest)
}
