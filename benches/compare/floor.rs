//! The physical floor of a fan-out on this machine: one pinned core doing
//! nothing but blocking writes of one small SSE event to N loopback sockets
//! whose readers sit in the generator, as the servers' clients do. No server
//! can deliver one event to N clients faster than N of these writes.
//!
//! Each round is timed twice: by the writer (its N writes, the figure per
//! write) and the way a server's fan-out is timed, from just before the
//! round is asked for until the last client has read it, over as many
//! rounds as the fan-out has changes. A server's p99 is compared with the
//! second: both then include the readers' side and the same tail.

use std::io::{BufRead, Write};
use std::net::TcpListener;

/// A blocking listener on 127.0.0.1:0 with `backlog`.
fn listen(backlog: i32) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}
use std::time::Instant;

/// One `user count` event carrying `value`, as ssio frames it without
/// chunking: 31 bytes for a five-digit count.
pub fn event(value: u64) -> Vec<u8> {
    format!("event: user count\ndata: {value}\n\n").into_bytes()
}

/// Child-process entry: `floor N`.
///
/// Prints `port P`, accepts N connections, prints `ready`; then for every
/// `go V` line on stdin writes the event with value V to every socket and
/// prints `round NANOS CPU_NANOS`, the time its writes took and the CPU
/// time this thread spent on them. Ends at `end` or EOF.
pub fn main(n: usize) {
    // The servers' backlog: std's default of 128 drops SYNs when the
    // generators open thousands of connections at once.
    let listener = listen(4096).expect("bind floor listener");
    println!("port {}", listener.local_addr().expect("addr").port());
    let mut socks = Vec::with_capacity(n);
    while socks.len() < n {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nodelay(true).ok();
                socks.push(s);
            }
            Err(e) => {
                eprintln!("floor: accept: {e}");
                return;
            }
        }
    }
    println!("ready");
    std::io::stdout().flush().ok();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        let Some(value) = line.trim().strip_prefix("go ").and_then(|v| v.parse().ok()) else {
            break;
        };
        let event = event(value);
        let cpu = thread_cpu_ns();
        let start = Instant::now();
        for s in socks.iter_mut() {
            if s.write_all(&event).is_err() {
                eprintln!("floor: a reader went away");
                return;
            }
        }
        let wall = start.elapsed().as_nanos();
        println!("round {wall} {}", thread_cpu_ns() - cpu);
        std::io::stdout().flush().ok();
    }
    println!("end");
}

/// CPU time this thread has used, in ns.
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec of our own to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
