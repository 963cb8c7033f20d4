//! Several ssio nodes on one Redis behind nginx, all on loopback, for the
//! cluster tests and benches: a `redis-server` and an nginx started in their
//! own temporary directories on free ports, killed on drop.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::process::{self, Spawned};

/// Whether `program` can be run (it is on the PATH or in /usr/sbin).
pub fn have(program: &str) -> bool {
    [
        "/usr/bin",
        "/usr/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/bin",
        "/sbin",
    ]
    .iter()
    .any(|d| Path::new(d).join(program).exists())
}

/// A free loopback port, as the kernel hands one out now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory whose name starts with `ssio-{what}`.
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ssio-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until something accepts TCP connections at `addr`.
async fn wait_listening(addr: SocketAddr, within: Duration) -> io::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("nothing listens at {addr} after {within:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `redis-server` with no persistence on a free loopback port.
pub struct Redis {
    /// Its loopback port.
    pub port: u16,
    /// Declared before `dir`, so the process dies before its directory goes.
    child: Option<Child>,
    dir: TempDir,
}

impl Redis {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: TempDir::new("redis"),
            child: None,
        };
        r.launch().await;
        r
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_listening(self.addr(), Duration::from_secs(5))
            .await
            .expect("redis-server did not listen");
        let pong = self.cmd(&["PING"]).await.expect("PING redis");
        assert_eq!(pong, "PONG");
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its URL, as `--redis` takes it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (its data is lost: no persistence) and starts a new
    /// one on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    /// Kills the server and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Sends one command and returns its reply as text: a status or error
    /// line, an integer, a bulk string, or an array's elements joined by
    /// newlines.
    pub async fn cmd(&self, args: &[&str]) -> io::Result<String> {
        let mut s = TcpStream::connect(self.addr()).await?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await?;
        let mut r = BufReader::new(s);
        tokio::time::timeout(Duration::from_secs(5), read_reply(&mut r))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "redis reply"))?
    }
}

/// A raw subscription, for watching what the nodes announce.
pub struct Subscriber {
    r: BufReader<TcpStream>,
}

impl Subscriber {
    /// Subscribes to `channel` on its own connection.
    pub async fn open(redis: &Redis, channel: &str) -> io::Result<Subscriber> {
        let mut s = TcpStream::connect(redis.addr()).await?;
        let req = format!(
            "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
            channel.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut r = BufReader::new(s);
        read_reply(&mut r).await?;
        Ok(Subscriber { r })
    }

    /// The next message's payload.
    pub async fn next(&mut self) -> io::Result<String> {
        let m = read_reply(&mut self.r).await?;
        Ok(m.splitn(3, '\n').nth(2).unwrap_or_default().to_string())
    }
}

/// Reads one RESP reply as text (see [`Redis::cmd`]).
pub async fn read_reply(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let line = line.trim_end().to_string();
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | "-" | ":" => Ok(rest.to_string()),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| io::Error::other("bad bulk"))?;
            if n < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).await?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| io::Error::other("bad array"))?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(Box::pin(read_reply(r)).await?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(io::Error::other(format!("unexpected reply {line:?}"))),
    }
}

/// An nginx on a free loopback port balancing round-robin over `upstreams`,
/// with no affinity of any kind.
pub struct Nginx {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Declared before `_dir`, so the process dies before its directory goes.
    _child: Child,
    _dir: TempDir,
}

/// The nginx configuration the cluster tests use (and the README shows):
/// round-robin, HTTP/1.1 keep-alive to the nodes, no buffering, so SSE
/// streams flow and a poll is held as long as the node holds it.
pub fn nginx_conf(listen: SocketAddr, upstreams: &[SocketAddr], dir: &Path) -> String {
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u} max_fails=0;\n"))
        .collect();
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream ssio {{
{servers}        keepalive 64;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://ssio;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"
    )
}

impl Nginx {
    /// Starts one and waits until it accepts connections.
    pub async fn start(upstreams: &[SocketAddr]) -> Nginx {
        let dir = TempDir::new("nginx");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = dir.0.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(addr, upstreams, &dir.0)).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx");
        wait_listening(addr, Duration::from_secs(5))
            .await
            .expect("nginx did not listen");
        Nginx {
            addr,
            _dir: dir,
            _child: child,
        }
    }
}

/// An ssio node on `redis` with the given id and heartbeats, on a free
/// loopback port.
pub async fn node(redis: &Redis, id: &str, ping_interval_ms: u64, ping_timeout_ms: u64) -> Spawned {
    node_at(&redis.url(), id, ping_interval_ms, ping_timeout_ms).await
}

/// A TCP relay in front of Redis that can silence every subscription it
/// carries: their bytes stop in both directions while the connections stay
/// open, as on a half-dead network path. Other connections flow on.
pub struct Freezer {
    /// Its loopback port, in front of the Redis.
    pub port: u16,
    subscriptions:
        std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Freezer {
    /// A relay to `redis`, passing everything on until told to freeze.
    pub async fn start(redis: &Redis) -> Freezer {
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = redis.addr();
        let subscriptions: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let subs = subscriptions.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let frozen = Arc::new(AtomicBool::new(false));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, frozen.clone(), Some(subs.clone())));
                tokio::spawn(pump(sr, cw, frozen, None));
            }
        });
        Freezer {
            port,
            subscriptions,
            task,
        }
    }

    /// Its URL, as `--redis` takes it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Silences every subscription seen so far; returns how many.
    pub fn freeze_subscriptions(&self) -> usize {
        let subs = self.subscriptions.lock().unwrap();
        for f in subs.iter() {
            f.store(true, Ordering::SeqCst);
        }
        subs.len()
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until `frozen`, then holds both open and silent.
/// A client-to-server pump that sees a SUBSCRIBE registers its connection.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
    subscriptions: Option<
        std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>>>,
    >,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut registered = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !registered {
            if let Some(subs) = &subscriptions {
                if super::http::find(&buf[..n], b"SUBSCRIBE").is_some() {
                    subs.lock().unwrap().push(frozen.clone());
                    registered = true;
                }
            }
        }
        if frozen.load(Ordering::SeqCst) {
            // Silent, not closed: keep both halves and never speak again.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// An ssio node on the Redis at `url` (a relay, say).
pub async fn node_at(url: &str, id: &str, ping_interval_ms: u64, ping_timeout_ms: u64) -> Spawned {
    node_with(url, id, ping_interval_ms, ping_timeout_ms, &[]).await
}

/// [`node_at`] with more flags.
pub async fn node_with(
    url: &str,
    id: &str,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    extra: &[&str],
) -> Spawned {
    let mut cmd = process::ssio(&[], 0);
    cmd.args(extra);
    cmd.args(["--redis", url, "--node-id", id])
        .args(["--ping-interval", &ping_interval_ms.to_string()])
        .args(["--ping-timeout", &ping_timeout_ms.to_string()]);
    process::spawn(cmd, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}
