//! A server in its own process, and the address it names in its log line.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What ssio, and the socket.io peer of the benches, print on stdout once
/// they accept connections, followed by the address.
const LISTENING: &str = "listening on ";

/// The `ssio` binary on 127.0.0.1:`port`; port 0 lets the kernel pick.
///
/// `wrapper` is a program and its arguments that then runs ssio (`taskset
/// -c 0`, or `sh -c 'ulimit -n 64 && exec "$0" "$@"'`); empty runs ssio
/// directly. Add flags, then [`spawn`].
pub fn ssio(wrapper: &[&str], port: u16) -> Command {
    // Cargo names the binary to tests and benches only; an example that
    // includes this module for its own test compiles, but cannot spawn.
    let Some(exe) = option_env!("CARGO_BIN_EXE_ssio") else {
        panic!("the ssio binary is known to tests and benches, not examples");
    };
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    // The listening line is logged at info, whatever the caller's RUST_LOG.
    // The per-session lines are not: floods of thousands of sessions would
    // measure the log pipe, not the server.
    cmd.env("RUST_LOG", "info,ssio::session=warn");
    cmd
}

/// A started server; dropping it kills the process.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// Its process id.
    pub pid: u32,
    /// The address its log line named.
    pub addr: SocketAddr,
    /// The whole log line that named the address.
    pub line: String,
}

/// Starts `cmd` with its stdout piped and waits up to `within` for the line
/// that names its address. The rest of its stdout is drained, so a chatty
/// server never blocks on a full pipe.
pub async fn spawn(mut cmd: Command, within: Duration) -> Result<Spawned, String> {
    let name = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start {name}: {e}"))?;
    let pid = child.id().ok_or_else(|| format!("{name} exited at once"))?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let found = tokio::time::timeout(within, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.split(LISTENING).nth(1) {
                let rest = rest
                    .strip_prefix("https://")
                    .or_else(|| rest.strip_prefix("http://"))
                    .unwrap_or(rest);
                // The address ends where the line does, or where a JSON log
                // line closes its string.
                let addr: String = rest
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
                    .collect();
                return Some((addr.parse::<SocketAddr>(), line));
            }
        }
        None
    })
    .await;
    let (addr, line) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return Err(format!("{name} exited without naming its address")),
        Err(_) => return Err(format!("{name} named no address within {within:?}")),
    };
    let addr = addr.map_err(|e| format!("{name} named a bad address in {line:?}: {e}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Spawned {
        child,
        pid,
        addr,
        line,
    })
}

/// Installs the benches' socket.io peer (`benches/peer`) from its lockfile
/// when a package it needs is missing: idempotent and quiet.
pub fn ensure_peer() -> Result<(), String> {
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer");
    let needed = ["socket.io", "@socket.io/redis-adapter", "redis"];
    if needed
        .iter()
        .all(|p| peer.join("node_modules").join(p).exists())
    {
        return Ok(());
    }
    eprintln!("bench: installing the socket.io peer (npm ci)");
    let st = std::process::Command::new("npm")
        .args(["ci", "--silent", "--no-audit", "--no-fund"])
        .current_dir(&peer)
        .status()
        .map_err(|e| format!("npm: {e}"))?;
    if !st.success() {
        return Err(format!("npm ci failed: {st}"));
    }
    Ok(())
}
