//! What names a session and how it ends: its ID, its transport kind and
//! every reason it can stop.
//!
//! These are plain values that every layer above shares; this module depends
//! on nothing else in the crate.

use std::borrow::Cow;
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
    /// The session's JWT expired before the client sent a fresh one
    /// (`POST /refresh`).
    TokenExpired,
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
            DisconnectReason::TokenExpired => "token expired",
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
    /// The browser, for a session on a shared stream: every tab one
    /// browser carries on one stream has the same value, so presence
    /// counts them as one person. `None` for a connection of its own.
    pub browser: Option<uuid::Uuid>,
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
            browser: None,
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

/// The value of the first pair named `name` in a query string, decoded as
/// `application/x-www-form-urlencoded` (what `URLSearchParams` and
/// `encodeURIComponent` agree on): `%XX` escapes, and `+` for a space. A
/// pair with no `=` has an empty value.
///
/// Decoding never fails: a malformed escape stays as it came and bytes that
/// are not UTF-8 become U+FFFD, so a value that must be strict (a sid, a
/// cursor, a ticket) is then malformed, and refused by whoever reads it.
/// Only the matching pair is decoded, and it is borrowed unless it holds a
/// `%` or a `+`.
pub(crate) fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    query?.split('&').find_map(|pair| {
        let raw = pair.split_once('=').map_or(pair, |(n, _)| n);
        // Most names come unescaped: those that cannot match cost a compare.
        if raw != name && !raw.contains(['%', '+']) {
            return None;
        }
        let (n, v) = form_urlencoded::parse(pair.as_bytes()).next()?;
        (n == name).then_some(v)
    })
}

impl SidParam {
    /// Reads the first `sid` pair of a query string.
    pub(crate) fn parse(query: Option<&str>) -> SidParam {
        let Some(value) = query_value(query, "sid") else {
            return SidParam::Absent;
        };
        // Exactly the hyphenated form we issue; anything else is not ours.
        if value.len() != 36 {
            return SidParam::Malformed;
        }
        match Sid::try_parse(&value) {
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
        client_address(&self.headers, self.address.ip(), trusted)
    }
}

/// [`Handshake::client_address`] for a request's headers and TCP peer.
pub(crate) fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: &[ProxyNet]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let hops = forwarded_for(headers);
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

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10";

    fn value(query: &str, name: &str) -> Option<String> {
        query_value(Some(query), name).map(Cow::into_owned)
    }

    #[test]
    fn query_values_are_percent_decoded_and_plus_is_a_space() {
        assert_eq!(
            value("resume=a%3A1%3a2", "resume").as_deref(),
            Some("a:1:2")
        );
        assert_eq!(value("q=a+b%2Bc", "q").as_deref(), Some("a b+c"));
        assert_eq!(value("q=%26%3D", "q").as_deref(), Some("&="));
        // The name is decoded too.
        assert_eq!(value("s%69d=x", "sid").as_deref(), Some("x"));
        let hyphens = SID.replace('-', "%2D");
        assert_eq!(
            value(&format!("sid={hyphens}"), "sid").as_deref(),
            Some(SID)
        );
        assert_eq!(
            SidParam::parse(Some(&format!("t=1&sid={}", SID.replace('-', "%2d")))),
            SidParam::Valid(SID.parse().unwrap())
        );
    }

    #[test]
    fn malformed_escapes_stay_and_bad_utf8_is_replaced() {
        assert_eq!(value("resume=%ZZ", "resume").as_deref(), Some("%ZZ"));
        assert_eq!(value("q=50%", "q").as_deref(), Some("50%"));
        assert_eq!(value("q=%4", "q").as_deref(), Some("%4"));
        assert_eq!(
            value("q=%E9t%C3%A9", "q").as_deref(),
            Some("\u{FFFD}t\u{e9}")
        );
        // Either way a strict value is malformed, never a panic.
        let bad = format!("sid={}%FF", &SID[..35]);
        assert_eq!(SidParam::parse(Some(&bad)), SidParam::Malformed);
    }

    #[test]
    fn the_first_pair_of_exactly_that_name_is_read() {
        assert_eq!(value("sid=a&sid=b", "sid").as_deref(), Some("a"));
        assert_eq!(value("xsid=a&sidx=b&sid=c", "sid").as_deref(), Some("c"));
        assert_eq!(value("xsid=a", "sid"), None);
        assert_eq!(value("a=sid%3Db", "sid"), None);
        assert_eq!(value("sid=", "sid").as_deref(), Some(""));
        // A pair without `=` is a name with an empty value, as URLSearchParams reads it.
        assert_eq!(value("sid&x=1", "sid").as_deref(), Some(""));
        assert_eq!(value("", "sid"), None);
        assert_eq!(value("&&", "sid"), None);
        assert_eq!(query_value(None, "sid"), None);
    }

    proptest::proptest! {
        #[test]
        fn any_query_decodes_without_panicking(q in ".{0,80}", name in "[a-z%+]{0,4}") {
            let _ = query_value(Some(&q), &name);
        }

        #[test]
        fn a_value_without_escapes_is_read_as_it_came(pre in "[a-z]{0,4}=[a-z0-9]{0,6}", v in "[A-Za-z0-9:._~-]{0,40}") {
            proptest::prop_assume!(!pre.starts_with("sid="));
            let q = format!("{pre}&sid={v}&sid=other");
            let got = query_value(Some(&q), "sid");
            proptest::prop_assert!(matches!(got, Some(Cow::Borrowed(g)) if g == v));
        }
    }

    #[test]
    fn a_value_without_escapes_is_borrowed() {
        let q = format!("t=%41&sid={SID}");
        assert!(matches!(query_value(Some(&q), "sid"), Some(Cow::Borrowed(v)) if v == SID));
        assert!(matches!(query_value(Some("q=a%41"), "q"), Some(Cow::Owned(v)) if v == "aA"));
    }

    #[test]
    fn sid_param_corpus() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some(""), false),
            (Some("sid="), false),
            (Some("sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), true),
            (Some("t=1&sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), true),
            (Some("sid=0b9c3f3e8a3c4c1e9f552f1c0b7d9a10"), false),
            (Some("sid={0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a1}"), false),
            (Some("sid=urn:uuid:0b9c3f3e-8a3c-4c1e-9f5"), false),
            (Some("sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a1%00"), false),
            (Some("sid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10x"), false),
            (Some("xsid=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), false),
            // Decoded as a form: escapes in the value or the name.
            (Some("sid=0b9c3f3e%2D8a3c%2d4c1e-9f55-2f1c0b7d9a10"), true),
            (Some("s%69d=0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), true),
            (Some("sid=0b9c3f3e+8a3c-4c1e-9f55-2f1c0b7d9a10"), false),
            (Some("sid=%ZZ9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10"), false),
            (Some("sid"), false),
        ];
        for (q, ok) in cases {
            let parsed = SidParam::parse(*q);
            assert_eq!(matches!(parsed, SidParam::Valid(_)), *ok, "{q:?}");
            if !ok {
                let named = |p: &str| p.split('=').next() == Some("sid");
                let absent = q.is_none_or(|q| !q.split('&').any(named));
                assert_eq!(parsed == SidParam::Absent, absent, "{q:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2_000, ..proptest::prelude::ProptestConfig::default() })]

        #[test]
        fn sid_param_accepts_only_hyphenated_uuids(q in ".{0,80}") {
            if let SidParam::Valid(sid) = SidParam::parse(Some(&q)) {
                let needle = format!("sid={}", sid.hyphenated());
                let decoded: String = form_urlencoded::parse(q.as_bytes())
                    .map(|(n, v)| format!("{n}={v}&"))
                    .collect();
                let found = decoded.to_lowercase().contains(&needle);
                proptest::prop_assert!(found, "{} not in {}", needle, q);
            }
        }

        #[test]
        fn sid_param_finds_a_real_sid_among_other_params(pre in "[a-z]{1,5}=[a-z0-9]{0,8}", post in "[a-z]{1,5}=[a-z0-9]{0,8}") {
            // Another `sid=` before the real one is a different query: the
            // first pair named `sid` is the one read.
            proptest::prop_assume!(!pre.starts_with("sid="));
            let q = format!("{pre}&sid={SID}&{post}");
            proptest::prop_assert_eq!(SidParam::parse(Some(&q)), SidParam::Valid(SID.parse().unwrap()));
        }
    }
}
