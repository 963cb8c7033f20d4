//! The test harness: a real server on 127.0.0.1:0 in this process and a
//! tiny raw HTTP/1.1 client, so tests see exact bytes on the wire. Every
//! wait is bounded and panics on timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ssio::{Config, Io};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A config with short heartbeats so timing tests finish quickly. The
/// ping timeout (and with it the first-poll deadline) leaves a loaded
/// machine time to send a polling test's next request: at 400 ms, polling
/// sessions ended by ping timeout in the middle of tests.
pub fn fast_config() -> Config {
    Config {
        host: "127.0.0.1".into(),
        port: 0,
        ping_interval_ms: 300,
        ping_timeout_ms: 2_000,
        ..Config::default()
    }
}

/// A running server with the demo app installed.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handle, for stats and server-side emits.
    pub io: Io,
    stop: Option<oneshot::Sender<()>>,
    /// The task running it, until [`Server::shutdown`] takes it.
    pub handle: Option<JoinHandle<()>>,
}

impl Server {
    /// A server on a free loopback port.
    pub async fn start(config: Config) -> Server {
        Server::start_at("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// A server at `at`.
    pub async fn start_at(at: SocketAddr, config: Config) -> Server {
        Server::start_with(at, config, ssio::app::install).await
    }

    /// A server at `at` running the app that `install` sets up.
    pub async fn start_with(at: SocketAddr, config: Config, install: impl FnOnce(&Io)) -> Server {
        let listener = ssio::bind(at, config.backlog).unwrap();
        let addr = listener.local_addr().unwrap();
        let io = Io::new(config);
        install(&io);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(ssio::run(listener, io.clone(), async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            io,
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Signals shutdown and waits (bounded) for `run` to return.
    pub async fn shutdown(&mut self, within: Duration) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            timeout(within, h)
                .await
                .expect("run() did not return in time")
                .unwrap();
        }
    }

    /// Waits until the session table holds exactly `n` sessions.
    pub async fn wait_sessions(&self, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.io.stats();
            if s.sessions == n && s.count == n {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("expected {n} sessions, have {s:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The status line and headers, up to the blank line.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Resp {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        header_in(&self.head, name)
    }
    /// The body as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// The value of header `name` (any case) in a response head.
pub fn header_in(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Sends one request on a fresh connection (`Connection: close`) and reads
/// the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    request_raw(addr, &bytes).await
}

/// Writes raw bytes and parses whatever response comes back.
pub async fn request_raw(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut r = BufReader::new(s);
        read_response(&mut r).await
    };
    timeout(WAIT, fut).await.expect("response timed out")
}

/// A GET of `path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"").await
}

/// A counter's or gauge's value in `/metrics`.
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = get(addr, "/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// Waits until `name` in `/metrics` reads `want`, failing after `WAIT`.
pub async fn wait_metric(addr: SocketAddr, name: &str, want: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let got = metric(addr, name).await;
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A POST of a `text/plain` `body` to `path` on a fresh connection.
pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Resp {
    request(addr, "POST", path, &[("Content-Type", "text/plain")], body).await
}

async fn read_head<R: AsyncBufReadExt + Unpin>(r: &mut R) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.unwrap();
        assert!(
            n > 0,
            "connection closed inside the response head: {head:?}"
        );
        if line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// Reads one whole response from `r`.
pub async fn read_response<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Resp {
    let head = read_head(r).await;
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = Vec::new();
    if status == 204 || status == 304 {
        // No body, by definition: nothing to read up to a close.
    } else if let Some(len) = header_in(&head, "content-length") {
        let mut buf = vec![0; len.parse().unwrap()];
        r.read_exact(&mut buf).await.unwrap();
        body = buf;
    } else if header_in(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        while let Some(chunk) = read_chunk(r).await {
            body.extend_from_slice(&chunk);
        }
    } else {
        r.read_to_end(&mut body).await.unwrap();
    }
    Resp { status, head, body }
}

/// One chunk of a chunked body; `None` at the terminating chunk or EOF.
async fn read_chunk<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(line.trim(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    let mut buf = vec![0; size + 2];
    r.read_exact(&mut buf).await.ok()?;
    buf.truncate(size);
    if size == 0 {
        return None;
    }
    Some(buf)
}

/// An open `GET /events` stream.
pub struct Sse {
    /// The response head.
    pub head: String,
    /// The session id the head named.
    pub sid: String,
    reader: BufReader<TcpStream>,
    /// Bytes received but not yet returned as whole events.
    pending: super::sse::Events,
    /// The stream ended (its last chunk, or the connection closed).
    pub ended: bool,
    /// The newest `user count` any helper has read.
    pub last_count: Option<i64>,
}

impl Sse {
    /// Opens a stream and consumes its `connect` event.
    pub async fn connect(addr: SocketAddr) -> Sse {
        let mut s = Sse::open(addr).await;
        let (event, data) = s.next_event().await;
        assert_eq!(event, "connect");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["sid"].as_str().unwrap(), s.sid);
        s
    }

    /// Opens a stream and reads only the response head.
    pub async fn open(addr: SocketAddr) -> Sse {
        Sse::open_with(addr, "/events", &[]).await
    }

    /// Opens a stream at `path` (a shared stream, say) and reads its head.
    pub async fn open_path(addr: SocketAddr, path: &str) -> Sse {
        Sse::open_with(addr, path, &[]).await
    }

    /// Opens a stream at `target` (path and query) with extra headers and
    /// reads only the response head, which must be a 200.
    pub async fn open_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Sse {
        let s = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .unwrap();
        Sse::open_on(s, addr, target, headers).await
    }

    /// [`Sse::open_with`] on a socket already connected to `addr` (with
    /// its own buffer sizes, say).
    pub async fn open_on(
        mut s: TcpStream,
        addr: SocketAddr,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Sse {
        let mut raw = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let fut = async {
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut reader = BufReader::new(s);
            let head = read_head(&mut reader).await;
            assert!(head.starts_with("HTTP/1.1 200"), "stream refused: {head}");
            Sse::from_head(head, reader)
        };
        timeout(WAIT, fut).await.expect("stream did not open")
    }

    /// A stream whose 200 head was read.
    fn from_head(head: String, reader: BufReader<TcpStream>) -> Sse {
        let sid = header_in(&head, "x-session-id").unwrap();
        Sse {
            head,
            sid,
            reader,
            pending: super::sse::Events::default(),
            ended: false,
            last_count: None,
        }
    }

    /// Reads chunks until the bytes read end an event that contains
    /// `needle`; returns everything read.
    pub async fn read_until(&mut self, needle: &str) -> String {
        let mut seen = String::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = self.next_chunk_within(left).await.expect("stream ended");
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
            if seen.contains(needle) && seen.ends_with("\n\n") {
                return seen;
            }
        }
    }

    /// Opens a stream at `target`, or returns the refusal's status and
    /// body when the answer is not a 200.
    pub async fn try_open(addr: SocketAddr, target: &str) -> Result<Sse, Resp> {
        let fut = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let raw = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
            s.write_all(raw.as_bytes()).await.unwrap();
            let mut reader = BufReader::new(s);
            let head = read_head(&mut reader).await;
            if !head.starts_with("HTTP/1.1 200") {
                let n: usize = header_in(&head, "content-length").unwrap().parse().unwrap();
                let mut body = vec![0; n];
                reader.read_exact(&mut body).await.unwrap();
                let status = head[9..12].parse().unwrap();
                return Err(Resp { status, head, body });
            }
            Ok(Sse::from_head(head, reader))
        };
        timeout(WAIT, fut)
            .await
            .expect("no answer to a stream request")
    }

    /// The next raw chunk of body bytes, bounded by `within`.
    pub async fn next_chunk_within(&mut self, within: Duration) -> Option<Vec<u8>> {
        match timeout(within, read_chunk(&mut self.reader)).await {
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(_) => panic!("no data on the stream within {within:?}"),
        }
    }

    /// The next whole event (comments skipped) as (event, data).
    pub async fn next_event(&mut self) -> (String, String) {
        self.next_event_within(WAIT).await
    }

    /// [`Sse::next_event`], bounded by `within`.
    pub async fn next_event_within(&mut self, within: Duration) -> (String, String) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.pending.next_event().unwrap() {
                return (e.event, e.data);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_chunk_within(left).await {
                Some(c) => self.pending.extend(&c),
                None => panic!("stream ended while waiting for an event"),
            }
        }
    }

    /// Reads events until `user count` equals `n`; panics after `within`.
    /// Returns every count seen on the way.
    pub async fn wait_count(&mut self, n: i64, within: Duration) -> Vec<i64> {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!("count never reached {n}; saw {seen:?}");
            }
            let (event, data) = self.next_event_within(left).await;
            if event == "user count" {
                let c: i64 = data.parse().unwrap();
                assert!(c >= 0, "negative count {c}");
                self.last_count = Some(c);
                seen.push(c);
                if c == n {
                    return seen;
                }
            }
        }
    }

    /// Reads events until the stream has been quiet for a moment, then
    /// asserts the newest `user count` seen (or already seen) is `n`.
    pub async fn drain_to_latest_count(&mut self, n: i64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = None;
        loop {
            match timeout(Duration::from_millis(200), self.next_event_within(WAIT)).await {
                Ok((event, data)) if event == "user count" => {
                    last = Some(data.parse::<i64>().unwrap())
                }
                Ok(_) => {}
                Err(_) if last == Some(n) || (last.is_none() && self.last_count == Some(n)) => {
                    return
                }
                Err(_) => {}
            }
            if let Some(c) = last {
                self.last_count = Some(c);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream's count is {:?}, want {n}",
                self.last_count
            );
        }
    }

    /// Makes dropping this client reset the connection (RST), as a killed
    /// process does, instead of closing it politely.
    pub fn set_reset_on_drop(&mut self) {
        // A zero linger resets at once; it never blocks the dropping thread.
        socket2::SockRef::from(self.reader.get_ref())
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }

    /// Asserts nothing but keep-alives arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        match timeout(
            quiet,
            self.next_event_within(quiet + Duration::from_secs(1)),
        )
        .await
        {
            Err(_) => {}
            Ok((e, d)) => panic!("unexpected event {e}: {d}"),
        }
    }
}

/// A long-poll client.
pub struct Poller {
    /// The server it polls.
    pub addr: SocketAddr,
    /// Its session.
    pub sid: String,
}

impl Poller {
    /// A new polling session on `addr`.
    pub async fn handshake(addr: SocketAddr) -> Poller {
        Poller::handshake_at(addr, "").await
    }

    /// A handshake with ssio mounted at `prefix`; later calls on the
    /// returned poller use the root paths.
    pub async fn handshake_at(addr: SocketAddr, prefix: &str) -> Poller {
        let r = get(addr, &format!("{prefix}/poll")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let sid = super::poll::handshake_sid(&r.body).unwrap();
        assert_eq!(r.header("x-session-id").as_deref(), Some(sid.as_str()));
        Poller { addr, sid }
    }

    /// One poll, on a fresh connection.
    pub async fn poll(&self) -> Resp {
        get(self.addr, &format!("/poll?sid={}", self.sid)).await
    }

    /// Polls once, expecting 200, and returns the array.
    pub async fn events(&self) -> Vec<serde_json::Value> {
        let r = self.poll().await;
        assert_eq!(r.status, 200, "{}", r.text());
        super::poll::batch(&r.body).unwrap()
    }

    /// Polls until the newest `user count` equals `n`.
    pub async fn wait_count(&self, n: i64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let mut seen = Vec::new();
        while tokio::time::Instant::now() < deadline {
            seen.extend(super::poll::counts(&self.events().await).unwrap());
            if seen.last() == Some(&n) {
                return;
            }
        }
        panic!("poller never saw count {n}; saw {seen:?}");
    }

    /// Emits `event` with `data` from this session.
    pub async fn emit(&self, event: &str, data: serde_json::Value) -> Resp {
        let body = serde_json::json!({ "event": event, "data": data }).to_string();
        post(
            self.addr,
            &format!("/emit?sid={}", self.sid),
            body.as_bytes(),
        )
        .await
    }

    /// Holds a poll of this session on a connection of its own, and
    /// returns that connection with the answer that came first. Two polls go
    /// out pipelined: the first answers at once with what is queued, and the
    /// server takes up the second before it waits for anything, so once the
    /// first answer is read the second is held, with no sleep to guess it.
    pub async fn hold(&self) -> (Resp, BufReader<TcpStream>) {
        let mut conn = BufReader::new(TcpStream::connect(self.addr).await.unwrap());
        let one = format!("GET /poll?sid={} HTTP/1.1\r\nHost: x\r\n\r\n", self.sid);
        conn.get_mut()
            .write_all(format!("{one}{one}").as_bytes())
            .await
            .unwrap();
        let first = timeout(WAIT, read_response(&mut conn))
            .await
            .expect("the first of two pipelined polls did not answer");
        (first, conn)
    }

    /// Ends this session.
    pub async fn close(&self) -> Resp {
        post(self.addr, &format!("/close?sid={}", self.sid), b"").await
    }
}

/// A poller running in its own task, recording the newest count it saw.
/// Aborting the task resets its in-flight poll connection, like a killed
/// process would.
pub struct LivePoller {
    /// The session it polls.
    pub poller: Poller,
    /// The newest count it saw; -1 before any.
    pub last: Arc<AtomicI64>,
    /// The task polling.
    pub task: tokio::task::JoinHandle<()>,
}

async fn poll_once(addr: SocketAddr, sid: &str) -> Option<Vec<serde_json::Value>> {
    let s = TcpStream::connect(addr).await.ok()?;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .ok()?;
    let mut r = BufReader::new(s);
    r.get_mut()
        .write_all(
            format!("GET /poll?sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut status = String::new();
    r.read_line(&mut status).await.ok()?;
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.ok()?;
    if !status.contains(" 200 ") {
        return None;
    }
    let text = String::from_utf8(rest).ok()?;
    let body = text.split("\r\n\r\n").nth(1)?;
    super::poll::batch(body.as_bytes()).ok()
}

impl LivePoller {
    /// A new polling session on `addr`, polled from now on.
    pub async fn start(addr: SocketAddr) -> LivePoller {
        let p = Poller::handshake(addr).await;
        let last = Arc::new(AtomicI64::new(-1));
        let (sid, l) = (p.sid.clone(), last.clone());
        let task = tokio::spawn(async move {
            while let Some(events) = poll_once(addr, &sid).await {
                for n in super::poll::counts(&events).unwrap() {
                    assert!(n >= 0, "negative count");
                    l.store(n, Ordering::SeqCst);
                }
            }
        });
        LivePoller {
            poller: p,
            last,
            task,
        }
    }

    /// Stops polling at once, resetting the poll in flight.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// The `ssio` binary in its own process, started through `wrapper` (see
/// `process::ssio`) on `port` with `args`. Killed when dropped.
pub async fn spawn_ssio(wrapper: &[&str], port: u16, args: &[&str]) -> super::process::Spawned {
    let mut cmd = super::process::ssio(wrapper, port);
    cmd.args(args);
    let p = super::process::spawn(cmd, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(p.addr.port(), 0, "the log line must name the bound port");
    p
}

/// `conns` keep-alive connections, each pipelining `n` poll handshakes
/// that are never polled again.
pub async fn flood(addr: SocketAddr, conns: usize, n: usize) {
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(pipelined_handshakes(addr, n)));
    }
    for t in tasks {
        timeout(Duration::from_secs(60), t)
            .await
            .expect("flood timed out")
            .unwrap();
    }
}

async fn pipelined_handshakes(addr: SocketAddr, n: usize) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..n {
            w.write_all(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
        }
        w
    });
    let mut r = BufReader::new(r);
    for _ in 0..n {
        let head = read_head(&mut r).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len = header_in(&head, "content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        r.read_exact(&mut body).await.unwrap();
    }
    drop(writer.await.unwrap());
}

/// One SSE block: its id (if any), event and data.
#[derive(Debug)]
pub struct Block {
    /// Its `id:` field, if it had one.
    pub id: Option<String>,
    /// Its event name.
    pub event: String,
    /// Its `data:` field.
    pub data: String,
}

/// Reads whole blocks from a stream, keeping `id:` fields: what the resume
/// tests need, where [`Sse::next_event`] drops them.
pub struct Reader {
    /// The stream read.
    pub sse: Sse,
    buf: String,
}

impl Reader {
    /// Reads `sse` from where it is.
    pub fn new(sse: Sse) -> Reader {
        Reader {
            sse,
            buf: String::new(),
        }
    }

    /// The next block that names an event; panics if none comes within the wait.
    pub async fn next(&mut self) -> Block {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_string());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = v.to_string();
                    }
                }
                if let Some(event) = event {
                    return Block { id, event, data };
                }
                continue;
            }
            let chunk = self
                .sse
                .next_chunk_within(WAIT)
                .await
                .expect("stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next block that is not a `user count`; counts, being latest
    /// values, never carry an id.
    pub async fn next_ordinary(&mut self) -> Block {
        loop {
            let b = self.next().await;
            if b.event != "user count" {
                return b;
            }
            assert!(b.id.is_none(), "latest values carry no id");
        }
    }
}
