//! Reading an ssio SSE stream: the event parser every reader shares, and a
//! client that connects and hands over each `user count` and `chat message`,
//! over any of the request sequences that reach a stream (`StreamPath`).

use std::io;
use std::net::SocketAddr;

use super::http::{bad, find, Chunked, HttpConn};

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its event name.
    pub event: String,
    /// Its `data:` lines, joined with `\n`.
    pub data: String,
}

impl Event {
    /// The count, if this is a `user count` event.
    pub fn user_count(&self) -> io::Result<Option<i64>> {
        if self.event != "user count" {
            return Ok(None);
        }
        let n = self.data.trim().parse();
        n.map(Some)
            .map_err(|_| bad(format!("count {:?}", self.data)))
    }

    /// Hands a `user count` or `chat message` over to `seen`; any other
    /// event is not the demo app's and is dropped.
    pub fn hand_over(self, seen: &mut Seen) -> io::Result<()> {
        if self.event == "chat message" {
            seen.chats.push(self.data);
            return Ok(());
        }
        seen.counts.extend(self.user_count()?);
        Ok(())
    }
}

/// What a reader hands over: the demo app's two events, each in arrival
/// order.
#[derive(Debug, Default)]
pub struct Seen {
    /// Each `user count`, as it came.
    pub counts: Vec<i64>,
    /// Each `chat message`'s data as it came, undecoded: a generator reading
    /// a million deliveries a second cannot afford to decode them all, and
    /// the reader knows what it looks for.
    pub chats: Vec<String>,
}

impl Seen {
    /// Nothing handed over yet.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.chats.is_empty()
    }

    /// Forgets everything handed over.
    pub fn clear(&mut self) {
        self.counts.clear();
        self.chats.clear();
    }

    /// Moves everything of `other` to the end of `self`.
    pub fn append(&mut self, other: &mut Seen) {
        self.counts.append(&mut other.counts);
        self.chats.append(&mut other.chats);
    }
}

/// Splits decoded stream bytes (chunk framing removed) into events.
///
/// ssio names every event, so a block without an `event:` field is a
/// keep-alive comment and is skipped.
#[derive(Default)]
pub struct Events {
    /// Bytes received but not yet returned as whole events.
    text: Vec<u8>,
}

impl Events {
    /// An empty reader whose buffer holds `n` bytes before it grows.
    pub fn with_capacity(n: usize) -> Events {
        Events {
            text: Vec::with_capacity(n),
        }
    }

    /// Where newly decoded bytes go.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.text
    }

    /// Adds bytes received from the stream.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.text.extend_from_slice(bytes);
    }

    /// The next whole event, if one has arrived.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        while let Some(block) = self.next_block()? {
            if let Some(event) = block.event {
                return Ok(Some(Event {
                    event,
                    data: block.data.unwrap_or_default(),
                }));
            }
        }
        Ok(None)
    }

    /// The next whole event of a shared stream (`/events?mux=1`), untagged:
    /// there every event is unnamed and its data one JSON object
    /// `{"k":<key>,"event":..,"data":..}`. Returns the key with the event,
    /// whose data is the JSON text of the object's `data`, as a named
    /// event's is. Anything else is an error, not skipped.
    pub fn next_tagged(&mut self) -> io::Result<Option<(u64, Event)>> {
        while let Some(block) = self.next_block()? {
            match block {
                Block {
                    event: None,
                    data: None,
                } => continue,
                Block {
                    event: None,
                    data: Some(data),
                } => return untag(&data).map(Some),
                Block { event, .. } => {
                    return Err(bad(format!("named event {event:?} on a shared stream")))
                }
            }
        }
        Ok(None)
    }

    /// The next whole block, comments and all.
    fn next_block(&mut self) -> io::Result<Option<Block>> {
        let Some(end) = find(&self.text, b"\n\n") else {
            return Ok(None);
        };
        let block = std::str::from_utf8(&self.text[..end])
            .map_err(|_| bad("event not utf-8"))
            .map(parse_block);
        self.text.drain(..end + 2);
        block.map(Some)
    }
}

/// A shared stream's event: its key and the event it carries.
///
/// The server splices the three fields in a fixed order, so they are read
/// in that order, straight from the text: a generator reading a million
/// deliveries a second through a JSON tree would spend more on reading a
/// shared stream than on reading the same event from `GET /events`, and
/// its slower reads would be counted against the server. `data` is still
/// checked to be exactly one JSON value.
fn untag(data: &str) -> io::Result<(u64, Event)> {
    let wrong = || bad(format!("tagged event {data:?}"));
    let rest = data.strip_prefix(r#"{"k":"#).ok_or_else(wrong)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    // JSON has no leading zeros, so a key of more than one digit starts
    // with a non-zero one.
    if digits == 0 || (digits > 1 && rest.starts_with('0')) {
        return Err(wrong());
    }
    let key: u64 = rest[..digits].parse().map_err(|_| wrong())?;
    let rest = rest[digits..]
        .strip_prefix(r#","event":"#)
        .ok_or_else(wrong)?;
    // The name is a JSON string, right after the colon as the server
    // writes it: read it as one, escapes and all, and go on from where it
    // ends.
    if !rest.starts_with('"') {
        return Err(wrong());
    }
    let mut names = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let event = names.next().ok_or_else(wrong)?.map_err(|_| wrong())?;
    let rest = &rest[names.byte_offset()..];
    let inner = rest
        .strip_prefix(r#","data":"#)
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(wrong)?;
    serde_json::from_str::<serde::de::IgnoredAny>(inner).map_err(|_| wrong())?;
    Ok((
        key,
        Event {
            event,
            data: inner.to_string(),
        },
    ))
}

/// The `sid` of a `connect` event's data.
pub fn connect_sid(data: &str) -> io::Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|_| bad(format!("connect data {data:?}")))?;
    v["sid"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| bad(format!("connect data without a sid: {data:?}")))
}

/// One block's `event` and `data` fields; both absent in a comment (a
/// keep-alive).
#[derive(Debug, PartialEq, Eq)]
struct Block {
    event: Option<String>,
    /// Its `data:` lines, joined with `\n`.
    data: Option<String>,
}

/// Checks that a shared stream's `connect` data names the stream and the
/// carrier's key, 0.
fn carrier_handshake(data: &str) -> io::Result<()> {
    let v: serde_json::Value =
        serde_json::from_str(data).map_err(|_| bad(format!("connect data {data:?}")))?;
    if !v["mux"].is_string() || v["k"] != 0 {
        return Err(bad(format!("not a carrier's handshake: {data:?}")));
    }
    Ok(())
}

/// One block's fields, as the SSE format defines them.
fn parse_block(block: &str) -> Block {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.split('\n') {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    Block {
        event,
        data: (!data.is_empty()).then(|| data.join("\n")),
    }
}

/// Which requests a client sends on its connection to reach its stream,
/// and so which of the server's paths serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamPath {
    /// `GET /events` as the connection's first request: curl's way.
    First,
    /// `GET /`, read whole, then `GET /events` on the same connection: a
    /// page's own `EventSource`, which the browser sends on the connection
    /// that fetched the page.
    Reused,
    /// `GET /`, read whole, then `GET /events?mux=1` on the same
    /// connection: the browser client's default, the shared stream, whose
    /// events are tagged with their session's key.
    Mux,
}

impl StreamPath {
    /// The stream's request target.
    fn target(self) -> &'static str {
        match self {
            StreamPath::First | StreamPath::Reused => "/events",
            StreamPath::Mux => "/events?mux=1",
        }
    }
}

/// An ssio client over Server-Sent Events on one connection.
pub struct SseClient {
    /// The session's id, from its `connect` event.
    pub sid: String,
    server: SocketAddr,
    salt: u32,
    /// How the stream was asked for, and so how its events are read.
    path: StreamPath,
    conn: HttpConn,
    dec: Chunked,
    events: Events,
    /// Events that arrived before `connect` returned.
    pending: Seen,
}

impl SseClient {
    /// Opens `GET /events` and returns once the `connect` event arrived.
    pub async fn connect(server: SocketAddr, salt: u32) -> io::Result<SseClient> {
        SseClient::open(server, salt, StreamPath::First).await
    }

    /// Reaches a stream by `path` and returns once its `connect` event
    /// arrived.
    pub async fn open(server: SocketAddr, salt: u32, path: StreamPath) -> io::Result<SseClient> {
        let mut conn = HttpConn::open(server, salt).await?;
        if path != StreamPath::First {
            conn.send("GET", "/", b"").await?;
            let head = conn.read_head().await?;
            let page = conn.read_body(&head).await?;
            if head.status != 200 || page.is_empty() || head.close {
                return Err(bad(format!(
                    "GET / answered {} with {} bytes{}",
                    head.status,
                    page.len(),
                    if head.close { " and a close" } else { "" }
                )));
            }
        }
        conn.send("GET", path.target(), b"").await?;
        let head = conn.read_head().await?;
        if head.status != 200 || !head.chunked {
            return Err(bad(format!(
                "GET {} answered {}",
                path.target(),
                head.status
            )));
        }
        let mut c = SseClient {
            sid: String::new(),
            server,
            salt,
            path,
            conn,
            dec: Chunked::default(),
            events: Events::with_capacity(256),
            pending: Seen::default(),
        };
        // Events that arrive with or before `connect` are kept for `next`.
        let mut connected = false;
        while !connected {
            c.conn.read_stream(&mut c.dec, c.events.buffer()).await?;
            while let Some(e) = c.next_event()? {
                if e.event == "connect" {
                    if connected {
                        return Err(bad(format!("a second connect {:?}", e.data)));
                    }
                    connected = true;
                    c.sid = connect_sid(&e.data)?;
                    if path == StreamPath::Mux {
                        carrier_handshake(&e.data)?;
                    }
                }
                e.hand_over(&mut c.pending)?;
            }
        }
        Ok(c)
    }

    /// The next whole event received; on a shared stream only the
    /// session's own (key 0, the carrier's) may come.
    fn next_event(&mut self) -> io::Result<Option<Event>> {
        if self.path != StreamPath::Mux {
            return self.events.next_event();
        }
        match self.events.next_tagged()? {
            Some((0, e)) => Ok(Some(e)),
            Some((k, e)) => Err(bad(format!("event {:?} for key {k}", e.event))),
            None => Ok(None),
        }
    }

    /// Leaves as a page does on purpose: `POST /close` (its beacon), then
    /// the stream goes. Dropping the stream alone is a cut, which the
    /// server holds for its reconnect grace before the count changes.
    pub async fn leave(self) -> io::Result<()> {
        let mut c = HttpConn::open(self.server, self.salt).await?;
        let (status, _) = c
            .request("POST", &format!("/close?sid={}", self.sid), b"")
            .await?;
        if status != 204 {
            return Err(bad(format!("close answered {status}")));
        }
        Ok(())
    }

    /// Waits for the next batch of `user count` values and chat messages,
    /// appended to `out`.
    pub async fn next(&mut self, out: &mut Seen) -> io::Result<()> {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
            return Ok(());
        }
        loop {
            self.conn
                .read_stream(&mut self.dec, self.events.buffer())
                .await?;
            let before = out.counts.len() + out.chats.len();
            while let Some(e) = self.next_event()? {
                e.hand_over(out)?;
            }
            if out.counts.len() + out.chats.len() > before {
                return Ok(());
            }
        }
    }

    /// Makes dropping this client reset the connection (RST), as a killed
    /// process does, instead of closing it politely.
    pub fn reset_on_drop(&self) -> io::Result<()> {
        socket2::SockRef::from(&self.conn.stream).set_linger(Some(std::time::Duration::ZERO))
    }
}
