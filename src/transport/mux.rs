//! Shared streams: one transport carrying the sessions of several tabs.
//!
//! Over HTTP/1.1 a browser keeps six connections per host, and every open
//! event stream or held poll takes one for good. So the tabs of one browser
//! share: one tab (the carrier) opens a *mux stream* and every tab's
//! session, its own included, travels on it, each event tagged with the
//! session's key. The tabs stay separate sessions: each has its own sid,
//! is counted once, emits and closes with its own sid, and gets its own
//! `disconnect` reason. Only the way events reach the browser is shared.
//!
//! - `GET /events?mux=1` (SSE) or `GET /poll?mux=1` (long-polling handshake)
//!   opens a stream and a session for the carrier, key 0. Its first event
//!   (or the handshake) carries the stream's id, a random `mux` token.
//! - `POST /mux/attach?mux=<id>` starts another session on that stream and
//!   answers its handshake with its key `k`; `&sid=<sid>` re-attaches a
//!   session whose stream ended instead.
//! - Every event on the stream is one JSON object, `{"k":<key>,"event":..,
//!   "data":..}`: an unnamed SSE event (`data:` lines), or an element of a
//!   poll's array (`GET /poll?mux=<id>`). A session's `disconnect` is tagged
//!   the same way.
//!
//! Each session keeps its own cursor, so conflation, ordering, slow-reader
//! limits and every disconnect reason are exactly those of a session with
//! a stream of its own. Broadcasts are therefore sent once per session, not
//! once per stream: a few tabs' worth of bytes on one connection.
//!
//! The stream *is* the carrier's session, as a plain stream is: when it
//! ends, or a carrier poll is missing for pingTimeout, the carrier's
//! session ends with the same reason as it would alone. Its other sessions
//! belong to tabs that may well be alive, so they are *detached* instead:
//! still live and counted, their events waiting in their own cursors, for
//! `--mux-grace`; a new carrier re-attaches them with their sids and they
//! lose nothing. Sessions not re-attached by then end with `transport
//! close`. A stream cut without a close (a proxy's timeout, a reset) is a
//! blip: the carrier's own session waits too, for `--reconnect-grace`, and
//! the carrier tab opens a new stream with its sid at once. A tab that
//! goes away while its stream lives is ended by its client (`/close` on
//! `pagehide`, or the carrier tab noticing that the tab's lock was
//! released).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::Response;
use parking_lot::Mutex;
use smallvec::{smallvec, SmallVec};
use tokio::time::Instant;
use uuid::Uuid;

use crate::api::io::Io;
use crate::engine::fanout::{Delivery, DirectWrite, Item, Newest};
use crate::engine::hub::Session;
use crate::engine::packet::{Packet, KEEP_ALIVE};
use crate::error::Error;
use crate::session::{handshake_json, DisconnectReason, Handshake, Sid, Transport};
use crate::transport::head;
use crate::transport::keepalive::KeepAlive;
use crate::transport::sse_raw::RawBody;

/// Most items taken from one session per read, so that one busy session
/// cannot keep the others on its stream waiting.
const BATCH_PER_SESSION: usize = 64;

/// A polled stream's carrier must poll this soon after its handshake: the
/// client polls at once, so a carrier that does not has left (a page closed
/// or reloaded before it read its handshake) and must not stay counted.
const FIRST_POLL_WITHIN: Duration = Duration::from_secs(2);

/// A stream's id: the token that lets a tab attach a session to it.
///
/// A UUID like a [`Sid`], but its own type: a stream id names a connection
/// that several sessions share, and must never be taken for one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MuxId(Uuid);

impl MuxId {
    /// The UUID, for the cluster's ownership records.
    pub(crate) fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl std::fmt::Display for MuxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

/// The request's `mux` query parameter, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MuxParam {
    /// No `mux=`: not a shared-stream request.
    Absent,
    /// `mux=1`: open a new stream.
    Open,
    /// `mux=<id>`: an existing stream.
    Id(MuxId),
    /// Anything else.
    Malformed,
}

impl MuxParam {
    /// Reads the first `mux` pair of a query string.
    pub(crate) fn parse(query: Option<&str>) -> MuxParam {
        let Some(value) = crate::session::query_value(query, "mux") else {
            return MuxParam::Absent;
        };
        if value == "1" {
            return MuxParam::Open;
        }
        if value.len() != 36 {
            return MuxParam::Malformed;
        }
        Uuid::try_parse(&value).map_or(MuxParam::Malformed, |id| MuxParam::Id(MuxId(id)))
    }
}

/// Every open stream and every session waiting for a new carrier, per
/// server (kept in the [`Io`]'s extension slot).
#[derive(Default)]
pub(crate) struct Muxes {
    /// Open streams by id.
    groups: Mutex<HashMap<MuxId, Arc<Group>>>,
    /// Sessions whose stream ended, waiting to be re-attached, with the
    /// moment their wait ends (a session detached twice has two timers,
    /// and only the one for its current wait may end it).
    detached: Mutex<HashMap<Sid, (Member, Instant)>>,
    /// Which stream each attached session is on, so that a re-attachment
    /// can take it from a stream whose end the server has not seen yet
    /// (the new carrier tab may well ask first). Entries may go stale; a
    /// use checks the stream itself.
    homes: Mutex<HashMap<Sid, MuxId>>,
}

/// One session on a stream.
struct Member {
    /// Its tag on the stream.
    key: u32,
    /// The hub's entry: identity, transport, close flag.
    session: Arc<Session>,
    /// Its own cursor, exactly as a stream of its own would read it.
    delivery: Delivery,
}

/// One open stream.
pub(crate) struct Group {
    /// The token in `mux=`.
    id: MuxId,
    /// The transport of every session on it: a session never changes
    /// transport, so it can only be re-attached to a stream of its own kind.
    transport: Transport,
    /// The carrier's session (key 0): it ends when the stream ends.
    owner: Sid,
    /// The browser whose tabs ride the stream ([`Handshake::browser`]):
    /// every session made on it gets it, and a new stream for the same
    /// carrier keeps it, so a browser stays one person while its tabs
    /// change hands.
    browser: Uuid,
    /// Sessions and reader state. A blocking lock held only to poll cursors
    /// (each a few field reads) and never across an `.await`; the hub is
    /// never called under it.
    state: Mutex<GroupState>,
}

struct GroupState {
    /// Sessions on the stream, the carrier's first. The carrier sits in the
    /// group itself: most streams carry only it, and the sweeper then finds
    /// its cursor beside the lock it takes, not in an allocation of its own.
    members: SmallVec<[Member; 1]>,
    /// The next key to hand out.
    next_key: u32,
    /// Where the next read starts, so no session is always last.
    start: usize,
    /// The reader to wake when a session is attached.
    waker: Option<Waker>,
    /// A long-poll is reading (one at a time, as for any polling session).
    reading: bool,
    /// When the last long-poll ended; the carrier's session expires
    /// pingTimeout later unless another arrives.
    last_read: Instant,
    /// Set once the stream has ended; nothing can attach after that.
    ended: bool,
    /// Whether the carrier has polled at all since its handshake.
    polled: bool,
}

impl Muxes {
    fn group(&self, id: MuxId) -> Result<Arc<Group>, Error> {
        self.groups
            .lock()
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownMux)
    }

    /// Takes a session for re-attachment to a stream of `transport`: one
    /// waiting since its stream ended, or one still on a stream other than
    /// as its carrier. Never a session that is not on a shared stream.
    fn take_detached(&self, sid: Sid, transport: Transport) -> Result<Member, Error> {
        let member = {
            let mut detached = self.detached.lock();
            match detached.get(&sid) {
                Some((m, _)) if m.session.transport != transport => {
                    return Err(Error::WrongTransport)
                }
                Some(_) => detached.remove(&sid).map(|(m, _)| m),
                None => None,
            }
        };
        let member = match member {
            Some(m) => m,
            None => self.take_attached(sid, transport)?,
        };
        if member.session.closed_reason().is_some() {
            return Err(Error::UnknownSession);
        }
        let mut member = member;
        // What the old stream wrote last may have died with it.
        member.delivery.replay_latest();
        Ok(member)
    }

    fn take_attached(&self, sid: Sid, transport: Transport) -> Result<Member, Error> {
        let home = self.homes.lock().get(&sid).copied();
        let group = home.and_then(|h| self.groups.lock().get(&h).cloned());
        let Some(group) = group.filter(|g| g.owner != sid) else {
            return Err(Error::NotDetached);
        };
        if group.transport != transport {
            return Err(Error::WrongTransport);
        }
        let mut st = group.state.lock();
        let at = st.members.iter().position(|m| m.session.sid == sid);
        at.map(|at| st.members.remove(at)).ok_or(Error::NotDetached)
    }

    fn set_home(&self, sid: Sid, id: MuxId) {
        self.homes.lock().insert(sid, id);
    }

    fn forget(&self, sids: impl IntoIterator<Item = Sid>) {
        let mut homes = self.homes.lock();
        for sid in sids {
            homes.remove(&sid);
        }
    }
}

/// Whether this node holds the stream `id`.
pub(crate) fn holds(io: &Io, id: MuxId) -> bool {
    io.extension::<Muxes>().groups.lock().contains_key(&id)
}

/// Opens a stream: a new session for the carrier, or the detached session
/// `resume` (a tab that was carried and now carries), on a new group.
async fn open(
    io: &Io,
    transport: Transport,
    resume: Option<Sid>,
    handshake: &Handshake,
) -> Result<Arc<Group>, Error> {
    let muxes = io.extension::<Muxes>();
    let (mut owner, browser) = match resume {
        Some(sid) => {
            let owner = muxes.take_detached(sid, transport)?;
            let known = io.socket_of(&sid).and_then(|s| s.handshake().browser);
            (owner, known.unwrap_or_else(Uuid::new_v4))
        }
        None => {
            let browser = Uuid::new_v4();
            let mut handshake = handshake.clone();
            handshake.browser = Some(browser);
            let (session, delivery) = io.connect(transport, &handshake).await?;
            let owner = Member {
                key: 0,
                session,
                delivery,
            };
            (owner, browser)
        }
    };
    owner.key = 0;
    let group = Arc::new(Group {
        id: MuxId(Uuid::new_v4()),
        transport,
        owner: owner.session.sid,
        browser,
        state: Mutex::new(GroupState {
            members: smallvec![owner],
            next_key: 1,
            start: 0,
            waker: None,
            reading: false,
            last_read: Instant::now(),
            ended: false,
            polled: false,
        }),
    });
    muxes.groups.lock().insert(group.id, group.clone());
    muxes.set_home(group.owner, group.id);
    // On a cluster, the stream's follow-up requests (attachments, polls) may
    // reach another node, which finds this one through the claim.
    if let Err(e) = io.hub().backend.claim(*group.id.as_uuid()).await {
        tracing::warn!(error = %e, "could not record a shared stream's node");
    }
    Ok(group)
}

/// `POST /mux/attach?mux=<id>[&sid=<sid>]`: a session on the stream, new or
/// re-attached, and its handshake JSON with its key.
pub(crate) async fn attach(
    io: &Io,
    id: MuxId,
    resume: Option<Sid>,
    handshake: &Handshake,
) -> Result<(Sid, Bytes), Error> {
    let muxes = io.extension::<Muxes>();
    let group = muxes.group(id)?;
    let limit = io.config().max_mux_sessions;
    if group.state.lock().members.len() >= limit {
        return Err(Error::MuxFull);
    }
    let mut member = match resume {
        Some(sid) => muxes.take_detached(sid, group.transport)?,
        None => {
            let mut handshake = handshake.clone();
            handshake.browser = Some(group.browser);
            let (session, delivery) = io.connect(group.transport, &handshake).await?;
            Member {
                key: 0,
                session,
                delivery,
            }
        }
    };
    let sid = member.session.sid;
    let refused = {
        let mut st = group.state.lock();
        if st.ended {
            Some(Error::UnknownMux)
        } else if st.members.len() >= limit {
            Some(Error::MuxFull)
        } else {
            member.key = st.next_key;
            st.next_key += 1;
            let key = member.key;
            st.members.push(member);
            muxes.set_home(sid, id);
            if let Some(w) = st.waker.take() {
                w.wake();
            }
            drop(st);
            let config = io.config();
            let mut body =
                handshake_json(sid, config.ping_interval_ms, config.ping_timeout_ms, None);
            body.pop();
            body.push_str(&format!(",\"k\":{key}}}"));
            return Ok((sid, Bytes::from(body)));
        }
    };
    // Lost a race with the stream's end or another attachment. A session
    // that was waiting keeps waiting; a new one never began for its client.
    let e = refused.expect("set on every path that gets here");
    if resume.is_some() {
        let grace = io.config().mux_grace();
        detach(io, vec![member], grace);
    } else {
        io.hub().disconnect(sid, DisconnectReason::TransportClose);
    }
    Err(e)
}

/// Ends a stream: the carrier's session with `reason`, the other live
/// sessions detached for `--mux-grace` (or ended with them at shutdown).
fn end(io: &Io, group: &Group, reason: DisconnectReason) {
    let members = {
        let mut st = group.state.lock();
        if st.ended {
            return;
        }
        st.ended = true;
        std::mem::take(&mut st.members)
    };
    let muxes = io.extension::<Muxes>();
    muxes.groups.lock().remove(&group.id);
    if let Err(pending) =
        crate::engine::backend::ready_now(io.hub().backend.unclaim(*group.id.as_uuid()))
    {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(pending);
        }
    }
    muxes.forget(members.iter().map(|m| m.session.sid).chain([group.owner]));
    // A stream cut without a close is a blip: its carrier's session waits
    // for `--reconnect-grace`, counted, for the carrier tab to open a new
    // stream with its sid, as the other sessions wait for `--mux-grace`.
    let grace = io.config().reconnect_grace();
    let blip = reason == DisconnectReason::TransportClose
        && !grace.is_zero()
        && !io.hub().is_shutting_down();
    let (owner, others): (Vec<Member>, Vec<Member>) = members
        .into_iter()
        .filter(|m| m.session.closed_reason().is_none())
        .partition(|m| m.session.sid == group.owner);
    if blip && !owner.is_empty() {
        detach(io, owner, grace);
    } else {
        io.hub().disconnect(group.owner, reason);
    }
    if io.hub().is_shutting_down() {
        for m in others {
            io.hub()
                .disconnect(m.session.sid, DisconnectReason::ServerShutdown);
        }
        return;
    }
    detach(io, others, io.config().mux_grace());
}

/// Parks sessions until a new carrier takes them, for at most `grace`.
fn detach(io: &Io, members: Vec<Member>, grace: Duration) {
    if members.is_empty() {
        return;
    }
    let sids: Vec<Sid> = members.iter().map(|m| m.session.sid).collect();
    let until = Instant::now() + grace;
    let muxes = io.extension::<Muxes>();
    muxes
        .detached
        .lock()
        .extend(members.into_iter().map(|m| (m.session.sid, (m, until))));
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // One timer per ended stream, not per session.
    let hub = Arc::downgrade(io.hub());
    let muxes = Arc::downgrade(&muxes);
    rt.spawn(async move {
        tokio::time::sleep_until(until).await;
        let (Some(hub), Some(muxes)) = (hub.upgrade(), muxes.upgrade()) else {
            return;
        };
        for sid in sids {
            let left = {
                let mut detached = muxes.detached.lock();
                match detached.get(&sid) {
                    // Still this wait: re-attached since, it would be another.
                    Some((_, u)) if *u == until => detached.remove(&sid),
                    _ => None,
                }
            };
            if left.is_some() {
                hub.disconnect(sid, DisconnectReason::TransportClose);
            }
        }
    });
}

impl Group {
    /// Reads every session's ready items, up to a batch each, tagged with
    /// its key. Sessions that closed are removed here and ended in the hub
    /// by the caller (a no-op for those the hub already ended).
    /// Sets `more` if a session had a whole batch ready, and so may have
    /// more.
    fn poll_items(
        &self,
        cx: &mut Context<'_>,
        out: &mut Vec<(u32, Item)>,
        more: &mut bool,
    ) -> Vec<(Sid, DisconnectReason)> {
        let mut closed = Vec::new();
        let mut st = self.state.lock();
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        let n = st.members.len();
        let start = if n == 0 { 0 } else { st.start % n };
        st.start = start + 1;
        for i in 0..n {
            let m = &mut st.members[(start + i) % n];
            let mut taken = 0;
            while taken < BATCH_PER_SESSION {
                match m.delivery.poll_next(cx) {
                    Poll::Ready(Item::Close(reason)) => {
                        out.push((m.key, Item::Close(reason)));
                        closed.push((m.session.sid, reason));
                        break;
                    }
                    Poll::Ready(item) => out.push((m.key, item)),
                    Poll::Pending => break,
                }
                taken += 1;
            }
            *more |= taken == BATCH_PER_SESSION;
        }
        if !closed.is_empty() {
            st.members
                .retain(|m| !closed.iter().any(|(sid, _)| *sid == m.session.sid));
        }
        closed
    }

    fn is_empty(&self) -> bool {
        self.state.lock().members.is_empty()
    }
}

/// `{"k":<key>,` spliced onto a packet's JSON: the one tagged encoding.
fn tagged(key: u32, item: &Item) -> Bytes {
    let json = match item {
        Item::Packet(p) | Item::Latest(p) => p.json.clone(),
        Item::Close(reason) => Packet::disconnect(reason.as_str()).json,
    };
    tagged_json(key, &json)
}

/// [`tagged`] for a packet's JSON.
fn tagged_json(key: u32, json: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(json.len() + 12);
    buf.put_slice(format!("{{\"k\":{key},").as_bytes());
    buf.put_slice(&json[1..]);
    buf.freeze()
}

/// One tagged item as an unnamed SSE event.
fn sse_event(buf: &mut BytesMut, json: &[u8]) {
    crate::engine::packet::put_unnamed(buf, json);
}

/// The carrier's handshake: the usual one plus the stream's id.
fn carrier_handshake(io: &Io, group: &Group) -> String {
    let config = io.config();
    let mut hs = handshake_json(
        group.owner,
        config.ping_interval_ms,
        config.ping_timeout_ms,
        None,
    );
    hs.pop();
    hs.push_str(&format!(",\"mux\":\"{}\",\"k\":0}}", group.id));
    hs
}

/// `GET /events?mux=1[&sid=<detached sid>]`: a mux stream over SSE.
pub(crate) async fn sse_response(
    io: &Io,
    resume: Option<Sid>,
    handshake: &Handshake,
) -> Result<Response<MuxBody>, Error> {
    let (sid, body) = sse_open(io, resume, handshake).await?;
    let mut res = Response::new(body);
    head::apply(&mut res, head::sse(sid));
    Ok(res)
}

/// Opens a mux stream over SSE: the carrier's sid, and the stream's body
/// (which any transport may write: hyper, or the raw path).
pub(crate) async fn sse_open(
    io: &Io,
    resume: Option<Sid>,
    handshake: &Handshake,
) -> Result<(Sid, MuxBody), Error> {
    let group = open(io, Transport::Sse, resume, handshake).await?;
    let period = io.config().ping_interval();
    let connect = Packet::connect(&carrier_handshake(io, &group));
    let mut first = BytesMut::new();
    first.put_slice(super::sse::retry_line(io.config()).as_bytes());
    sse_event(&mut first, &tagged(0, &Item::Packet(connect)));
    let sid = group.owner;
    let body = MuxBody {
        io: io.clone(),
        group,
        first: Some(first.freeze()),
        keep_alive: KeepAlive::new(period),
        done: false,
        unreported: (0, 0),
        explicit_writes: false,
    };
    Ok((sid, body))
}

/// The response body of a mux stream over SSE; dropping it ends the
/// stream (the carrier's session ends, the others are detached).
pub(crate) struct MuxBody {
    /// The server, to end sessions.
    io: Io,
    /// The sessions this body carries.
    group: Arc<Group>,
    /// The carrier's `connect` event, sent before anything else.
    first: Option<Bytes>,
    /// A keep-alive comment once the stream has been idle for pingInterval.
    keep_alive: KeepAlive,
    /// Set once the last event went out; the next poll ends the body.
    done: bool,
    /// Events and bytes not yet added to the shared counters, as
    /// [`SseBody`](super::sse::SseBody) keeps them.
    unreported: (u64, u64),
    /// Set by a transport that calls [`RawBody::written`] itself after
    /// each write; otherwise asking for more means the last frame went out.
    explicit_writes: bool,
}

impl MuxBody {
    fn sent(
        &mut self,
        bytes: Bytes,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.keep_alive.sent();
        self.unreported.1 += bytes.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn report(&mut self) {
        let (events, bytes) = std::mem::take(&mut self.unreported);
        if events > 0 || bytes > 0 {
            self.io.hub().metrics.written(events, bytes);
        }
    }
}

/// The sweeper writes a latest value past a shared stream only while it
/// carries one session, its carrier's: the common case of a browser with
/// one tab. With more, the stream's task writes every session's events in
/// turn, as before.
impl RawBody for MuxBody {
    fn settle_after_writes(&mut self) {
        self.explicit_writes = true;
    }

    fn write_directly(&mut self, direct: Weak<dyn DirectWrite>) {
        let mut st = self.group.state.lock();
        if let Some(carrier) = st.members.first_mut() {
            carrier.delivery.write_directly(direct);
        }
    }

    fn owes_only(&self, cursor: u64, newest: &Newest) -> Option<usize> {
        if self.first.is_some() || self.done || !self.explicit_writes {
            return None;
        }
        let st = self.group.state.lock();
        match st.members.as_slice() {
            [only] if only.key == 0 && only.delivery.id() == cursor => {
                only.delivery.owes_only(newest)
            }
            _ => None,
        }
    }

    fn latest_chunk<'a>(&self, newest: &'a Newest, i: usize) -> &'a Bytes {
        newest.framed_shared(i, |p| {
            let mut event = BytesMut::new();
            sse_event(&mut event, &tagged_json(0, &p.json));
            super::sse_raw::chunk(&event)
        })
    }

    fn took(&mut self, newest: &Newest, i: usize, whole: bool) {
        if let Some(carrier) = self.group.state.lock().members.first_mut() {
            carrier.delivery.took(newest, whole);
        }
        self.keep_alive.sent_at(newest.at);
        self.unreported.0 += 1;
        // The tag and the `data: ` framing, as `latest_chunk` writes them.
        self.unreported.1 += newest.packet(i).json.len() as u64 + 14;
        if whole {
            self.report();
        }
    }

    fn wait_again(&self, waker: &mut Option<Waker>) {
        if let Some(carrier) = self.group.state.lock().members.first() {
            carrier.delivery.wait_again(waker);
        }
    }

    fn written(&mut self) {
        for m in &mut self.group.state.lock().members {
            m.delivery.settle();
        }
        self.report();
    }
}

impl Body for MuxBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(first) = this.first.take() {
            return this.sent(first);
        }
        let mut items = Vec::new();
        let mut more = false;
        let closed = this.group.poll_items(cx, &mut items, &mut more);
        if !closed.is_empty() {
            let muxes = this.io.extension::<Muxes>();
            muxes.forget(closed.iter().map(|(sid, _)| *sid));
        }
        let mut owner_closed = None;
        for (sid, reason) in closed {
            if sid == this.group.owner {
                owner_closed = Some(reason);
            }
            this.io.hub().disconnect(sid, reason);
        }
        if let Some(reason) = owner_closed {
            // At shutdown every session on the stream is ending too: keep
            // reading until each has had its `disconnect`.
            if reason != DisconnectReason::ServerShutdown || this.group.is_empty() {
                this.done = true;
                end(&this.io, &this.group, reason);
            }
        } else if this.io.hub().is_shutting_down() && this.group.is_empty() {
            this.done = true;
        }
        if items.is_empty() {
            if this.done {
                return Poll::Ready(None);
            }
            return match this.keep_alive.poll(cx) {
                Poll::Ready(()) => this.sent(Bytes::from_static(KEEP_ALIVE)),
                Poll::Pending => {
                    if !this.explicit_writes {
                        this.written();
                    }
                    Poll::Pending
                }
            };
        }
        let mut buf = BytesMut::new();
        for (key, item) in &items {
            sse_event(&mut buf, &tagged(*key, item));
        }
        this.unreported.0 += items.iter().filter(|(_, i)| i.packet().is_some()).count() as u64;
        if more && !this.done {
            // A session had more than one batch ready: poll again.
            cx.waker().wake_by_ref();
        }
        this.sent(buf.freeze())
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for MuxBody {
    fn drop(&mut self) {
        self.report();
        // A no-op if the stream already ended.
        end(&self.io, &self.group, DisconnectReason::TransportClose);
    }
}

/// `GET /poll?mux=1[&sid=<detached sid>]`: a mux stream over long-polling;
/// its handshake JSON names the carrier's sid, key 0 and the stream's id.
pub(crate) async fn poll_handshake(
    io: &Io,
    resume: Option<Sid>,
    handshake: &Handshake,
) -> Result<(Sid, Bytes), Error> {
    let group = open(io, Transport::Polling, resume, handshake).await?;
    let body = carrier_handshake(io, &group);
    tokio::spawn(expire_idle(Arc::downgrade(&group), io.clone()));
    Ok((group.owner, Bytes::from(body)))
}

/// Ends a polled stream whose carrier stopped polling for pingTimeout, as
/// the reaper ends a polling session of its own.
async fn expire_idle(group: Weak<Group>, io: Io) {
    let timeout = io.config().ping_timeout();
    loop {
        let deadline = {
            let Some(group) = group.upgrade() else { return };
            let st = group.state.lock();
            if st.ended {
                return;
            }
            if st.reading {
                Instant::now() + timeout
            } else if !st.polled {
                st.last_read + timeout.min(FIRST_POLL_WITHIN)
            } else {
                st.last_read + timeout
            }
        };
        if deadline <= Instant::now() {
            if let Some(group) = group.upgrade() {
                end(&io, &group, DisconnectReason::PingTimeout);
            }
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// Marks the stream's poll finished however it ends, including when hyper
/// drops the request because the client went away.
struct Reading(Arc<Group>);

impl Drop for Reading {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.reading = false;
        st.last_read = Instant::now();
    }
}

/// `GET /poll?mux=<id>`: every session's queued events, tagged, as one JSON
/// array; held up to pingInterval while there are none.
pub(crate) async fn poll(io: &Io, id: MuxId) -> Result<Bytes, Error> {
    let group = io.extension::<Muxes>().group(id)?;
    if group.transport != Transport::Polling {
        return Err(Error::WrongTransport);
    }
    {
        let mut st = group.state.lock();
        if st.reading {
            return Err(Error::PollPending);
        }
        st.reading = true;
        st.polled = true;
    }
    let reading = Reading(group.clone());
    let mut items = Vec::new();
    let mut owner_closed = None;
    let wait = std::future::poll_fn(|cx| {
        let mut more = false;
        let closed = group.poll_items(cx, &mut items, &mut more);
        io.extension::<Muxes>()
            .forget(closed.iter().map(|(sid, _)| *sid));
        for (sid, reason) in closed {
            if sid == group.owner {
                owner_closed = Some(reason);
            }
            io.hub().disconnect(sid, reason);
        }
        if items.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    });
    let _ = tokio::time::timeout(io.config().ping_interval(), wait).await;
    drop(reading);
    if let Some(reason) = owner_closed {
        end(io, &group, reason);
    }
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u8(b'[');
    for (i, (key, item)) in items.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(&tagged(*key, item));
    }
    buf.put_u8(b']');
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mux_param_corpus() {
        let id = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";
        assert_eq!(MuxParam::parse(None), MuxParam::Absent);
        assert_eq!(MuxParam::parse(Some("sid=x")), MuxParam::Absent);
        assert_eq!(MuxParam::parse(Some("mux=1")), MuxParam::Open);
        // Decoded as a form, like every query value.
        assert_eq!(MuxParam::parse(Some("mux=%31")), MuxParam::Open);
        assert_eq!(
            MuxParam::parse(Some(&format!("a=b&mux={id}"))),
            MuxParam::Id(MuxId(id.parse().unwrap()))
        );
        for bad in [
            "mux=",
            "mux=0",
            "mux=11",
            "mux=%3",
            "mux",
            "mux=0b9c3f3e8a3c4c1e9f552f1c0b7d9a10",
        ] {
            assert_eq!(MuxParam::parse(Some(bad)), MuxParam::Malformed, "{bad}");
        }
    }

    #[test]
    fn tags_are_spliced_onto_the_packet_json() {
        let p = Packet::new("user count", &serde_json::Value::from(3));
        assert_eq!(
            &tagged(7, &Item::Packet(p))[..],
            br#"{"k":7,"event":"user count","data":3}"#
        );
        assert_eq!(
            &tagged(0, &Item::Close(DisconnectReason::ClientClose))[..],
            br#"{"k":0,"event":"disconnect","data":"client close"}"#
        );
        let mut buf = BytesMut::new();
        sse_event(&mut buf, b"{\"k\":1}");
        assert_eq!(&buf[..], b"data: {\"k\":1}\n\n");
    }
}
