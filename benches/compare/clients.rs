//! One client per transport, each reduced to the three things the scenarios
//! need: connect until the server confirms the session, hand over every
//! `user count` value (and, over SSE and socket.io, every `chat message`)
//! as it arrives, and leave the way a real client does. The chat scenario's
//! one sender is a `Talker`.
//!
//! ssio's SSE and long-polling clients are the shared ones of
//! `tests/support`, SSE in the three ways a stream is reached (`StreamPath`);
//! socket.io's two (engine.io v4 over polling and over WebSocket) live here.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Serialize, Serializer};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::h2::H2Client;
use crate::support::http::{bad, within, HttpConn};
use crate::support::loopback::connect;
use crate::support::poll::PollClient;
use crate::support::sse::{Seen, SseClient, StreamPath};

/// What is being measured: the transports under comparison, plus bare TCP
/// for the floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `GET /events` as a connection's first request, as curl sends it.
    #[value(name = "ssio-sse")]
    Sse,
    /// `GET /events` after `GET /` on the same connection: a page's own
    /// `EventSource`.
    #[value(name = "ssio-sse-reused")]
    SseReused,
    /// `GET /events?mux=1` after `GET /` on the same connection: the
    /// browser client's default, the shared stream.
    #[value(name = "ssio-mux")]
    Mux,
    #[value(name = "ssio-poll")]
    Poll,
    /// SSE over HTTPS with HTTP/2, many streams per connection.
    #[value(name = "ssio-h2")]
    H2,
    #[value(name = "socketio-polling")]
    SioPolling,
    #[value(name = "socketio-websocket")]
    SioWs,
    #[value(name = "raw", hide = true)]
    Raw,
}

impl Kind {
    pub const COMPARED: [Kind; 7] = [
        Kind::Sse,
        Kind::SseReused,
        Kind::Mux,
        Kind::Poll,
        Kind::H2,
        Kind::SioPolling,
        Kind::SioWs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sse => "ssio-sse",
            Kind::SseReused => "ssio-sse-reused",
            Kind::Mux => "ssio-mux",
            Kind::Poll => "ssio-poll",
            Kind::H2 => "ssio-h2",
            Kind::SioPolling => "socketio-polling",
            Kind::SioWs => "socketio-websocket",
            Kind::Raw => "raw",
        }
    }

    pub fn is_ssio(self) -> bool {
        matches!(
            self,
            Kind::Sse | Kind::SseReused | Kind::Mux | Kind::Poll | Kind::H2
        )
    }
}

/// Rows name their transport as `name()` does.
impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Any single exchange with a server taking longer than this is a failure,
/// except long-polls, which the servers may hold for a whole ping interval.
pub const STEP: Duration = Duration::from_secs(10);
/// Connect limit while opening standing clients: socket.io's event loop is
/// busy emitting the count to everyone already connected, so its handshakes
/// queue for a long time at large N; that is load, not failure.
pub const OPENING: Duration = Duration::from_secs(90);
/// Longest a long-poll may be held: both servers' 25 s ping interval plus
/// slack.
const HELD: Duration = Duration::from_secs(40);

const SIO_PATH: &str = "/socket.io/?EIO=4&transport=polling";

/// A connected client of any kind.
pub enum Client {
    /// Over SSE, however its stream was reached.
    Sse(SseClient),
    Poll(PollClient),
    H2(H2Client),
    SioPolling(SioPolling),
    SioWs(SioWs),
    /// A floor socket, and the part of an event not yet read whole.
    Raw(TcpStream, Vec<u8>),
}

impl Client {
    /// Connects and returns once the server has confirmed the session.
    /// Counts that arrived on the way are kept for the first `next`.
    pub async fn connect(
        kind: Kind,
        server: SocketAddr,
        salt: u32,
        limit: Duration,
    ) -> io::Result<Client> {
        within(limit, async {
            Ok(match kind {
                Kind::Sse => Client::Sse(SseClient::connect(server, salt).await?),
                Kind::SseReused => {
                    Client::Sse(SseClient::open(server, salt, StreamPath::Reused).await?)
                }
                Kind::Mux => Client::Sse(SseClient::open(server, salt, StreamPath::Mux).await?),
                Kind::Poll => Client::Poll(PollClient::connect(server, salt, HELD).await?),
                Kind::H2 => Client::H2(H2Client::connect(server, salt).await?),
                Kind::SioPolling => Client::SioPolling(SioPolling::connect(server, salt).await?),
                Kind::SioWs => Client::SioWs(SioWs::connect(server, salt).await?),
                Kind::Raw => Client::Raw(connect(server, salt).await?, Vec::new()),
            })
        })
        .await
    }

    /// Waits for the next batch of `user count` values (and chat messages,
    /// over SSE and socket.io), appended to `out`.
    pub async fn next(&mut self, out: &mut Seen) -> io::Result<()> {
        match self {
            Client::Sse(c) => c.next(out).await,
            Client::Poll(c) => c.next(&mut out.counts).await,
            Client::H2(c) => c.next(&mut out.counts).await,
            Client::SioPolling(c) => c.next(out).await,
            Client::SioWs(c) => c.next(out).await,
            Client::Raw(s, carry) => {
                // The floor writes bare `data: V` events; its clients read
                // the values as the servers' clients read counts.
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let got = s.read(&mut buf).await?;
                if got == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
                }
                carry.extend_from_slice(&buf[..got]);
                while let Some(end) = carry.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = carry.drain(..end + 2).collect();
                    let value = std::str::from_utf8(&event)
                        .ok()
                        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
                        .and_then(|v| v.trim().parse().ok());
                    match value {
                        Some(v) => out.counts.push(v),
                        None => return Err(io::Error::other("floor event without a value")),
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the session the way the transport's own client would.
    pub async fn leave(self) -> io::Result<()> {
        within(STEP, async {
            match self {
                // `/close`, then the stream goes: what `socket.close()` and
                // a page's beacon do.
                Client::Sse(c) => c.leave().await?,
                Client::Poll(c) => c.leave().await?,
                Client::H2(c) => c.leave().await?,
                Client::SioPolling(c) => c.leave().await?,
                Client::SioWs(c) => c.leave().await?,
                Client::Raw(s, _) => drop(s),
            }
            Ok(())
        })
        .await
    }
}

/// How a socket.io `chat message` event starts, as socket.io writes it.
const SIO_CHAT: &str = "42[\"chat message\",";

/// Hands one socket.io packet carried in an engine.io message over to
/// `out`: the count of a `user count` event, the argument of a `chat
/// message` (undecoded JSON, as `Seen` keeps it).
fn sio_event(packet: &str, out: &mut Seen) -> io::Result<()> {
    if let Some(arg) = packet.strip_prefix(SIO_CHAT) {
        let arg = arg.strip_suffix(']').ok_or_else(|| bad("chat packet"))?;
        out.chats.push(arg.to_string());
        return Ok(());
    }
    let Some(json) = packet.strip_prefix("42") else {
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if v[0] == "user count" {
        out.counts
            .push(v[1].as_i64().ok_or_else(|| bad("count not a number"))?);
    }
    Ok(())
}

/// What one batch of engine.io packets asked of the client.
#[derive(Default)]
struct Batch {
    ping: bool,
    connected: bool,
    closed: bool,
}

fn engine_packets(payload: &str, out: &mut Seen) -> io::Result<Batch> {
    let mut b = Batch::default();
    for p in payload.split('\x1e') {
        match p.as_bytes().first() {
            Some(b'2') => b.ping = true,
            Some(b'1') => b.closed = true,
            Some(b'4') if p.starts_with("40") => b.connected = true,
            Some(b'4') if p.starts_with("44") => return Err(bad(format!("connect error {p}"))),
            Some(b'4') => sio_event(p, out)?,
            _ => {}
        }
    }
    Ok(b)
}

/// socket.io (engine.io v4) over HTTP long-polling, on one keep-alive
/// connection: the pong goes out between two polls, so a second connection
/// per client (which would halve the reachable N) is not needed.
pub struct SioPolling {
    conn: HttpConn,
    server: SocketAddr,
    salt: u32,
    path: String,
    pending: Seen,
}

impl SioPolling {
    async fn connect(server: SocketAddr, salt: u32) -> io::Result<SioPolling> {
        let mut conn = HttpConn::open(server, salt).await?;
        let (status, body) = conn.request("GET", SIO_PATH, b"").await?;
        let body = String::from_utf8(body).map_err(|_| bad("handshake not utf-8"))?;
        if status != 200 || !body.starts_with('0') {
            return Err(bad(format!(
                "engine.io handshake answered {status} {body:?}"
            )));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body[1..]).map_err(|e| bad(e.to_string()))?;
        let sid = v["sid"]
            .as_str()
            .ok_or_else(|| bad("handshake without sid"))?;
        let path = format!("{SIO_PATH}&sid={sid}");
        let mut c = SioPolling {
            conn,
            server,
            salt,
            path,
            pending: Seen::default(),
        };
        c.post("40").await?;
        loop {
            let mut seen = Seen::default();
            let b = c.poll(&mut seen).await?;
            c.pending.append(&mut seen);
            if b.connected {
                return Ok(c);
            }
        }
    }

    async fn post(&mut self, body: &str) -> io::Result<()> {
        let (status, _) = self
            .conn
            .request("POST", &self.path, body.as_bytes())
            .await?;
        if status != 200 {
            return Err(bad(format!("engine.io POST answered {status}")));
        }
        Ok(())
    }

    async fn poll(&mut self, out: &mut Seen) -> io::Result<Batch> {
        let (status, body) = within(HELD, self.conn.request("GET", &self.path, b"")).await?;
        if status != 200 {
            return Err(bad(format!("engine.io poll answered {status}")));
        }
        let body = String::from_utf8(body).map_err(|_| bad("poll not utf-8"))?;
        let b = engine_packets(&body, out)?;
        if b.closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server closed the session",
            ));
        }
        if b.ping {
            self.post("3").await?;
        }
        Ok(b)
    }

    async fn next(&mut self, out: &mut Seen) -> io::Result<()> {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
            return Ok(());
        }
        let r = self.poll(out).await;
        if let Err(e) = &r {
            // Node closes keep-alive connections idle for 5 s; the session
            // survives, so poll again on a new connection.
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.conn = HttpConn::open(self.server, self.salt).await?;
                return self.poll(out).await.map(|_| ());
            }
        }
        r.map(|_| ())
    }

    async fn leave(mut self) -> io::Result<()> {
        // The close packet travels on a second connection because the
        // session's own is held by its pending poll.
        let fresh = HttpConn::open(self.server, self.salt).await?;
        let held = std::mem::replace(&mut self.conn, fresh);
        let r = self.post("1").await;
        drop(held);
        r
    }
}

/// socket.io (engine.io v4) over WebSocket.
pub struct SioWs {
    ws: WebSocketStream<TcpStream>,
    pending: Seen,
}

impl SioWs {
    async fn connect(server: SocketAddr, salt: u32) -> io::Result<SioWs> {
        let tcp = connect(server, salt).await?;
        let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
        // Small buffers: the defaults (128 KiB each way) would make the
        // generator, not the server, the memory story.
        let cfg = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(cfg))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        let mut c = SioWs {
            ws,
            pending: Seen::default(),
        };
        let mut opened = false;
        loop {
            let mut seen = Seen::default();
            let text = c.recv().await?;
            if !opened {
                if !text.starts_with('0') {
                    return Err(bad(format!("expected engine.io open, got {text:?}")));
                }
                opened = true;
                c.send("40").await?;
                continue;
            }
            let b = engine_packets(&text, &mut seen)?;
            c.pending.append(&mut seen);
            if b.ping {
                c.send("3").await?;
            }
            if b.connected {
                return Ok(c);
            }
        }
    }

    async fn send(&mut self, text: &str) -> io::Result<()> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
    }

    async fn recv(&mut self) -> io::Result<String> {
        loop {
            match self.ws.next().await {
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "websocket closed",
                    ))
                }
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
                Some(Ok(Message::Close(_))) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "websocket close",
                    ))
                }
                Some(Ok(_)) => {}
            }
        }
    }

    async fn next(&mut self, out: &mut Seen) -> io::Result<()> {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
            return Ok(());
        }
        let text = self.recv().await?;
        let b = engine_packets(&text, out)?;
        if b.closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server closed the session",
            ));
        }
        if b.ping {
            self.send("3").await?;
        }
        Ok(())
    }

    async fn leave(mut self) -> io::Result<()> {
        // A socket.io client leaving on purpose closes the WebSocket; the
        // server's disconnect handler runs on the close frame.
        let _ = self.ws.close(None).await;
        Ok(())
    }
}

/// One abandoned handshake: the session is created and never polled again.
pub async fn handshake(conn: &mut HttpConn, kind: Kind) -> io::Result<()> {
    let path = if kind == Kind::Poll {
        "/poll"
    } else {
        SIO_PATH
    };
    let (status, _) = within(STEP, conn.request("GET", path, b"")).await?;
    if status != 200 {
        return Err(bad(format!("handshake answered {status}")));
    }
    Ok(())
}

/// The chat scenario's one sender: a client of its own (it is counted and
/// hears its own messages, as in a page) that emits `chat message`.
pub struct Talker {
    client: Client,
    /// ssio's emits go as `POST /emit` beside the stream, on one keep-alive
    /// connection, as the browser client sends them one at a time.
    emits: Option<HttpConn>,
}

impl Talker {
    /// Connects over SSE or socket.io's WebSocket, the two the chat
    /// scenario compares.
    pub async fn connect(kind: Kind, server: SocketAddr, salt: u32) -> io::Result<Talker> {
        let client = Client::connect(kind, server, salt, STEP).await?;
        let emits = match &client {
            Client::Sse(_) => Some(within(STEP, HttpConn::open(server, salt)).await?),
            Client::SioWs(_) => None,
            _ => return Err(bad(format!("no chat sender over {}", kind.name()))),
        };
        Ok(Talker { client, emits })
    }

    /// Emits `chat message` with `text` (a JSON string on both servers);
    /// returns once the server has taken it.
    pub async fn say(&mut self, text: &str) -> io::Result<()> {
        let arg = serde_json::Value::from(text).to_string();
        within(STEP, async {
            match (&mut self.client, &mut self.emits) {
                (Client::Sse(c), Some(conn)) => {
                    let body = format!(r#"{{"event":"chat message","data":{arg}}}"#);
                    let path = format!("/emit?sid={}", c.sid);
                    let (status, _) = conn.request("POST", &path, body.as_bytes()).await?;
                    if status != 204 {
                        return Err(bad(format!("emit answered {status}")));
                    }
                    Ok(())
                }
                (Client::SioWs(c), _) => c.send(&format!("{SIO_CHAT}{arg}]")).await,
                _ => Err(bad("not a chat sender")),
            }
        })
        .await
    }

    /// Reads its own stream, as any client must to stay live.
    pub async fn next(&mut self, out: &mut Seen) -> io::Result<()> {
        self.client.next(out).await
    }

    pub async fn leave(self) -> io::Result<()> {
        self.client.leave().await
    }
}
