//! What names a session and how it ends: its ID, its transport kind and
//! every reason it can stop.
//!
//! These are plain values that every layer above shares; this module depends
//! on nothing else in the crate.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use hyper::HeaderMap;
use uuid::Uuid;

use crate::config::{canonical, ProxyNet};

/// A session ID: a random (v4) UUID, so 122 bits nobody can guess.
///
/// Its own type, not a bare [`Uuid`]: other ids are UUIDs too (a shared
/// stream's, a handshake ticket's), and a sid is a credential, so passing
/// one where another is meant must not compile:
///
/// ```compile_fail
/// let ticket = uuid::Uuid::new_v4();
/// let sid: ssio::Sid = ticket;
/// ```
///
/// Turning a UUID into a sid takes a word that says so:
///
/// ```
/// let id = uuid::Uuid::new_v4();
/// let sid = ssio::Sid::from(id);
/// assert_eq!(sid.to_string(), id.to_string());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid(Uuid);

impl Sid {
    /// A fresh random session ID.
    pub fn new_v4() -> Sid {
        Sid(Uuid::new_v4())
    }

    /// The all-zero ID, which no session has: a placeholder.
    pub fn nil() -> Sid {
        Sid(Uuid::nil())
    }

    /// Reads a sid in any form [`Uuid::try_parse`] accepts.
    pub fn try_parse(text: &str) -> Result<Sid, uuid::Error> {
        Uuid::try_parse(text).map(Sid)
    }

    /// The UUID, for storage and wire formats that take one.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The lower-case hyphenated form, as clients see it.
    pub fn hyphenated(&self) -> uuid::fmt::Hyphenated {
        self.0.hyphenated()
    }
}

impl std::str::FromStr for Sid {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<Sid, uuid::Error> {
        Sid::try_parse(text)
    }
}

impl From<Uuid> for Sid {
    fn from(id: Uuid) -> Sid {
        Sid(id)
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// `{"sid":..,"pingInterval":..,"pingTimeout":..}`, the first thing every
/// client reads, in this key order for readability with curl. After a
/// resume was asked for, `"recovered"` says whether it worked; when it did
/// not, `"missed":true` tells the client it may have missed events.
pub(crate) fn handshake_json(
    sid: Sid,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    recovered: Option<bool>,
) -> String {
    let tail = match recovered {
        None => "",
        Some(true) => ",\"recovered\":true",
        Some(false) => ",\"recovered\":false,\"missed\":true",
    };
    format!(
        "{{\"sid\":\"{sid}\",\"pingInterval\":{ping_interval_ms},\"pingTimeout\":{ping_timeout_ms}{tail}}}"
    )
}

/// How a session's events reach its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One long-lived `GET /events` response.
    Sse,
    /// Repeated `GET /poll?sid=` requests.
    Polling,
}

impl Transport {
    /// The name used on the wire and in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Polling => "polling",
        }
    }
}

/// Why a session ended: every way out is one of these, for both transports.
///
/// `Display` gives the string a client sees in its `disconnect` event and a
/// `socket.on("disconnect", ..)` handler receives, socket.io's wording where
/// socket.io has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The connection closed or reset: an SSE stream ended, a client's TCP
    /// connection died, or the kernel gave up on unacknowledged data.
    TransportClose,
    /// A long-poll client stopped polling for longer than pingTimeout.
    PingTimeout,
    /// The client asked to leave (`POST /close`).
    ClientClose,
    /// The server is shutting down.
    ServerShutdown,
    /// Server code called [`Socket::disconnect`](crate::Socket::disconnect).
    ServerDisconnect,
    /// The client fell more than `--max-pending-events` ordinary events
    /// behind; it is dropped instead of silently missing events.
    SlowReader,
}

impl DisconnectReason {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ClientClose => "client close",
            DisconnectReason::ServerShutdown => "server shutdown",
            DisconnectReason::ServerDisconnect => "server disconnect",
            DisconnectReason::SlowReader => "slow reader",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client presented when its session began: the request's headers
/// and query, the connection's remote address, and when. Middleware and
/// connection handlers read it; the hub keeps only the address.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The request headers, as received.
    pub headers: HeaderMap,
    /// The raw query string, without the `?`.
    pub query: Option<String>,
    /// The TCP peer (not a forwarded address: proxies are not trusted here).
    pub address: SocketAddr,
    /// When the handshake arrived.
    pub issued: SystemTime,
    /// The client's `auth` payload (`io({ auth })`), `null` if it sent
    /// none. Never logged.
    pub auth: serde_json::Value,
}

impl Handshake {
    /// A handshake from request parts, stamped now.
    pub fn new(headers: HeaderMap, query: Option<String>, address: SocketAddr) -> Handshake {
        Handshake {
            headers,
            query,
            address,
            issued: SystemTime::now(),
            auth: serde_json::Value::Null,
        }
    }

    /// For requests that did not come through this crate's listener (an
    /// embedder calling [`Io::handle`](crate::Io::handle) without a
    /// [`Peer`] extension): the address is unknown, `0.0.0.0:0`.
    pub fn unknown_address(headers: HeaderMap, query: Option<String>) -> Handshake {
        Handshake::new(headers, query, SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }
}

/// The remote address of a request's connection, which the server puts in
/// every request's extensions. An embedder that serves
/// [`Io::handle`](crate::Io::handle) itself should insert it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// The request's `sid` query parameter, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SidParam {
    /// No `sid=` at all: a handshake, where that means anything.
    Absent,
    /// A `sid=` that is not a session ID we could have issued.
    Malformed,
    /// A well-formed session ID (which may or may not be live).
    Valid(Sid),
}

/// The value of the first `name=` pair in a query string, as it came.
pub(crate) fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

impl SidParam {
    /// Finds the first `sid=` pair in a query string.
    pub(crate) fn parse(query: Option<&str>) -> SidParam {
        let Some(value) = query_value(query, "sid") else {
            return SidParam::Absent;
        };
        // Exactly the hyphenated form we issue; anything else is not ours.
        if value.len() != 36 {
            return SidParam::Malformed;
        }
        match Sid::try_parse(value) {
            Ok(sid) => SidParam::Valid(sid),
            Err(_) => SidParam::Malformed,
        }
    }

    /// The sid, or the error every route gives for a missing or bad one.
    pub(crate) fn sid(self) -> Result<Sid, crate::error::Error> {
        match self {
            SidParam::Valid(sid) => Ok(sid),
            SidParam::Absent | SidParam::Malformed => Err(crate::error::Error::UnknownSession),
        }
    }
}

impl Handshake {
    /// The client's own address: the TCP peer, unless that peer is one of
    /// the `--trusted-proxy` ranges, in which case the forwarding headers
    /// name it, read from the right and skipping every trusted hop. From
    /// any other peer those headers are ignored, so nobody can spoof their
    /// way around a per-address limit.
    pub(crate) fn client_address(&self, trusted: &[ProxyNet]) -> IpAddr {
        let peer = canonical(self.address.ip());
        let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
        if !is_trusted(peer) {
            return peer;
        }
        let hops = forwarded_for(&self.headers);
        let mut client = peer;
        // The rightmost hop was added by the proxy we trust; walk left until an
        // address that is not one of ours. An unreadable hop ends the walk: what
        // lies left of it may be anything the client wrote.
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    client = canonical(*ip);
                    if !is_trusted(client) {
                        break;
                    }
                }
                None => break,
            }
        }
        client
    }
}

/// The `for=` hops of every `Forwarded` header, or else the entries of every
/// `X-Forwarded-For`, left to right; `None` for an entry that is not an
/// address (`unknown`, an obfuscated name, garbage).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        let mut hops = Vec::new();
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
            });
            if let Some(node) = node {
                hops.push(parse_node(node.trim_matches('"')));
            }
        }
        return hops;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("?").split(','))
        .map(|s| parse_node(s.trim()))
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80` or `::1`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}
