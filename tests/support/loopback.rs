//! Client sockets from rotating loopback source addresses.
//!
//! One source address has about 28,000 ephemeral ports; tens of thousands of
//! clients plus churn would exhaust them. Every host of 127.0.0.0/8 is
//! loopback on Linux, so clients spread over 127.0.0.2 and up (.1 is left to
//! the servers).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::net::{TcpSocket, TcpStream};

/// First source address used is 127.0.0.2.
const FIRST_SOURCE: u32 = 2;
/// Source addresses rotate over this many hosts of 127.0.0.0/24.
const SOURCES: u32 = 250;

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// This process's next source address; `salt` spreads processes (or
/// clients) apart.
pub fn next_source(salt: u32) -> Ipv4Addr {
    let i = NEXT_SOURCE
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(salt.wrapping_mul(37));
    Ipv4Addr::new(127, 0, 0, (FIRST_SOURCE + i % SOURCES) as u8)
}

/// Connects to `server` from the next source address, with Nagle off.
///
/// `IP_BIND_ADDRESS_NO_PORT` defers the port choice to `connect`, where the
/// kernel knows the whole 4-tuple; without it every bound socket would hold
/// its port exclusively and churn would exhaust the range.
pub async fn connect(server: SocketAddr, salt: u32) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let one: libc::c_int = 1;
    // SAFETY: plain setsockopt on a socket we own, with a correctly sized int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(SocketAddr::V4(SocketAddrV4::new(next_source(salt), 0)))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
