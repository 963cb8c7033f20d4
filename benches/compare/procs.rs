//! Child processes of a run: the server under test on core 0, the generator
//! workers on core 1, and what /proc says about them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::clients::Kind;
use crate::repo;
use crate::support::http::HttpConn;
use crate::support::{process, procfs};

/// The core the server under test owns, and the floor's writer.
pub const SERVER_CORE: &str = "0";
/// The core the generator and everything else of the bench share.
pub const GENERATOR_CORE: &str = "1";
/// Listen backlog given to both servers.
pub const BACKLOG: u32 = 4096;

/// The cores the server under test runs on, as `taskset -c` takes them:
/// `--server-cores`, [`SERVER_CORE`] unless set.
static SERVER_CORES: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Runs servers under test on `cores` rather than [`SERVER_CORE`] alone.
pub fn set_server_cores(cores: String) {
    let _ = SERVER_CORES.set(cores);
}

/// The cores servers under test run on.
pub fn server_cores() -> &'static str {
    SERVER_CORES.get().map_or(SERVER_CORE, String::as_str)
}

/// Longest a server may take to print its listening line.
const START: Duration = Duration::from_secs(20);

/// Installs the socket.io peer from its lockfile the first time.
pub fn ensure_peer() -> Result<(), String> {
    process::ensure_peer()
}

/// A server under test.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// The socket.io peer, which can report its V8 heap.
    pub node: bool,
}

/// Heartbeat settings for a server start; `None` keeps each server's own
/// default (25 s / 20 s for both).
#[derive(Clone, Copy)]
pub struct Heartbeat {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

impl Server {
    pub async fn start(kind: Kind, hb: Option<Heartbeat>) -> Result<Server, String> {
        Server::start_with(kind, hb, &[]).await
    }

    /// `start`, with flags of ssio's own (the peer takes none).
    pub async fn start_with(
        kind: Kind,
        hb: Option<Heartbeat>,
        ssio_flags: &[String],
    ) -> Result<Server, String> {
        let node = !kind.is_ssio();
        let mut cmd = if node {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", server_cores(), "node", "--expose-gc"])
                .arg(repo::root().join("benches/peer/server.js"))
                .arg("0");
            if let Some(hb) = hb {
                cmd.env("PING_INTERVAL", hb.interval_ms.to_string())
                    .env("PING_TIMEOUT", hb.timeout_ms.to_string());
            }
            cmd
        } else {
            let mut cmd = process::ssio(&["taskset", "-c", server_cores()], 0);
            cmd.arg("--backlog").arg(BACKLOG.to_string());
            if kind == Kind::H2 {
                let (cert, key) = crate::h2::write_certificate()?;
                cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            }
            if let Some(hb) = hb {
                cmd.arg("--ping-interval").arg(hb.interval_ms.to_string());
                cmd.arg("--ping-timeout").arg(hb.timeout_ms.to_string());
            }
            cmd.args(ssio_flags);
            cmd
        };
        cmd.stderr(Stdio::inherit()).stdin(Stdio::null());
        let p = process::spawn(cmd, START)
            .await
            .map_err(|e| format!("{}: {e}", kind.name()))?;
        Ok(Server {
            child: p.child,
            pid: p.pid,
            addr: p.addr,
            node,
        })
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }

    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid)
    }

    /// GETs a small JSON document from the server itself.
    pub async fn get_json(&self, path: &str) -> Option<serde_json::Value> {
        let f = async {
            let mut c = HttpConn::open(self.addr, 0).await.ok()?;
            let (status, body) = c.request("GET", path, b"").await.ok()?;
            if status != 200 {
                return None;
            }
            serde_json::from_slice(&body).ok()
        };
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .ok()
            .flatten()
    }

    /// ssio's `/stats` or the peer's `/heap`, whichever this server has.
    pub async fn stats(&self) -> Option<serde_json::Value> {
        self.get_json(if self.node { "/heap" } else { "/stats" })
            .await
    }

    pub async fn stop(mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// VmRSS in KiB, 0 if the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    procfs::rss_kib(pid).unwrap_or(0)
}

/// User plus system time in clock ticks, 0 if the process is gone.
pub fn cpu_ticks(pid: u32) -> u64 {
    procfs::cpu_ticks(pid).unwrap_or(0)
}

/// A generator worker process and its command pipe.
pub struct Worker {
    child: Child,
    pub pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    pub fn spawn(exe: &Path, kind: Kind, server: SocketAddr, salt: u32) -> Result<Worker, String> {
        let mut child = Command::new("taskset")
            .args(["-c", GENERATOR_CORE])
            .arg(exe)
            .args([
                "worker",
                kind.name(),
                &server.to_string(),
                &salt.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn worker: {e}"))?;
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Worker {
            child,
            pid,
            stdin,
            lines,
        })
    }

    pub async fn send(&mut self, cmd: &str) -> Result<(), String> {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| format!("worker stdin: {e}"))
    }

    /// The reply to the last command, within `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Result<Vec<String>, String> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                if words.first().map(String::as_str) == Some("error") {
                    return Err(format!("worker: {line}"));
                }
                Ok(words)
            }
            Ok(_) => Err("worker exited".into()),
            Err(_) => Err("worker did not answer in time".into()),
        }
    }

    pub async fn call(&mut self, cmd: &str, limit: Duration) -> Result<Vec<String>, String> {
        self.send(cmd).await?;
        self.recv(limit).await
    }

    pub async fn quit(mut self) {
        let _ = self.send("quit").await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Parses word `i` of a reply as a number.
pub fn word<T: std::str::FromStr + Default>(w: &[String], i: usize) -> T {
    w.get(i).and_then(|s| s.parse().ok()).unwrap_or_default()
}
