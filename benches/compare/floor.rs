//! The physical floor of a fan-out on this machine: one pinned core doing
//! nothing but blocking writes of one small SSE event to N loopback sockets
//! whose readers sit in the generator, as the servers' clients do. No server
//! can deliver one event to N clients faster than N of these writes.

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

/// The bytes of one `user count` event, as ssio frames it without chunking.
pub const EVENT: &[u8] = b"event: user count\ndata: 10000\n\n";

/// Child-process entry: `floor N ROUNDS`.
///
/// Prints `port P`, accepts N connections, prints `ready`, waits for `go` on
/// stdin, then prints one `round NANOS` line per round and `end`.
pub fn main(n: usize, rounds: usize) {
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
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() || line.trim() != "go" {
        return;
    }
    for _ in 0..rounds {
        let start = Instant::now();
        for s in socks.iter_mut() {
            if s.write_all(EVENT).is_err() {
                eprintln!("floor: a reader went away");
                return;
            }
        }
        println!("round {}", start.elapsed().as_nanos());
        std::io::stdout().flush().ok();
        // Let the readers drain before the next round, as between changes.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("end");
}
