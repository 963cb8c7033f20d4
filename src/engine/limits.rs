//! Rates and per-address accounting: how fast one session may send events,
//! and how many sessions and handshake tickets (and how fast) one client
//! address may hold.
//!
//! Every limit here is a token bucket kept as one instant (the "theoretical
//! arrival time" of GCRA): the bucket is full once that instant has passed,
//! so an idle bucket needs no timer and an address whose bucket is full and
//! which holds no session can be forgotten. The address table is touched
//! once per connect and once per disconnect, each O(1) amortised, and it
//! forgets addresses that left: an address with no live session is dropped
//! as soon as its bucket is full again, checked a few at a time on every
//! later connect or disconnect.
//!
//! A handshake ticket (`POST /handshake`) is a session slot reserved for
//! its address: it counts against `--max-sessions-per-ip` and takes a
//! `--max-new-sessions-per-ip` token when it is issued, and the session
//! that redeems it takes its place without being counted or charged a
//! second time. Outstanding tickets are also capped per address on their
//! own (`--max-tickets-per-ip`, on by default): a ticket holds memory for
//! `--ticket-ttl` whether or not anyone redeems it, and without that cap
//! one address could hold every ticket the server allows.
//!
//! The client address is the TCP peer, unless that peer is one of the
//! `--trusted-proxy` ranges: then `Forwarded: for=` (or, without it,
//! `X-Forwarded-For`) names it, read from the right and skipping every
//! trusted hop. From any other peer those headers are ignored, so nobody can
//! spoof their way around a limit. IPv6 clients are keyed by their /64, the
//! block one subscriber typically gets.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, ProxyNet};
use crate::error::Error;
use crate::session::Handshake;

/// A sustained rate with a burst on top of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Time one token takes to come back.
    interval: Duration,
    /// How far ahead of now the bucket may be drawn: `burst` intervals.
    window: Duration,
}

impl Rate {
    /// `per_second` tokens a second after a burst of `burst`; `None` (no
    /// limit) when `per_second` is 0.
    pub(crate) fn new(per_second: u32, burst: u32) -> Option<Rate> {
        if per_second == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / per_second;
        Some(Rate {
            interval,
            window: interval * burst.max(1),
        })
    }
}

/// One token bucket: `None` means full.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Bucket {
    /// When the bucket is full again; `None` when it already is.
    full_at: Option<Instant>,
}

impl Bucket {
    /// Takes a token if there is one.
    pub(crate) fn take(&mut self, rate: &Rate, now: Instant) -> bool {
        let from = self.full_at.map_or(now, |t| t.max(now));
        let next = from + rate.interval;
        if next > now + rate.window {
            return false;
        }
        self.full_at = Some(next);
        true
    }

    /// Whether every token is back.
    fn is_full(&self, now: Instant) -> bool {
        self.full_at.is_none_or(|t| t <= now)
    }
}

/// What the table keeps for one address.
#[derive(Default)]
struct Address {
    /// Its live sessions (counted only while a per-address session limit
    /// is on).
    live: usize,
    /// Its outstanding handshake tickets.
    tickets: usize,
    /// Its new-session bucket.
    bucket: Bucket,
}

/// Live sessions and new-session rates by client address.
pub(crate) struct AddressTable {
    /// Addresses with a live session, an outstanding ticket or a bucket
    /// that is not yet full.
    table: HashMap<IpAddr, Address>,
    /// Addresses that lost their last session, with the time their bucket
    /// is full again, oldest first: the candidates to forget.
    idle: VecDeque<(Instant, IpAddr)>,
    /// `--max-sessions-per-ip`; 0 is no cap.
    max_sessions: usize,
    /// `--max-new-sessions-per-ip`; `None` is no limit.
    rate: Option<Rate>,
    /// `--max-tickets-per-ip`; 0 is no cap.
    max_tickets: usize,
}

/// Idle records looked at per connect or disconnect: more than one, so the
/// queue drains faster than disconnects fill it.
const SWEEP_PER_CALL: usize = 4;

impl AddressTable {
    /// The table for `config`'s per-address limits.
    pub(crate) fn new(config: &Config) -> AddressTable {
        let per_second = config.max_new_sessions_per_ip;
        AddressTable {
            table: HashMap::new(),
            idle: VecDeque::new(),
            max_sessions: config.max_sessions_per_ip,
            rate: Rate::new(per_second, per_second),
            max_tickets: config.max_tickets_per_ip,
        }
    }

    /// Whether a per-address session limit is on; when none is, sessions
    /// are not counted here and cost nothing.
    pub(crate) fn enabled(&self) -> bool {
        self.max_sessions > 0 || self.rate.is_some()
    }

    /// Counts a new session for `ip`, or refuses it with the limit it hit.
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Error> {
        if !self.enabled() {
            return Ok(());
        }
        self.sweep(now);
        let entry = self.table.entry(ip).or_default();
        if self.max_sessions > 0 && entry.live + entry.tickets >= self.max_sessions {
            return Err(Error::AddressFull);
        }
        if let Some(rate) = &self.rate {
            if !entry.bucket.take(rate, now) {
                return Err(Error::AddressRate);
            }
        }
        entry.live += 1;
        Ok(())
    }

    /// Uncounts a session of `ip` that [`admit`](Self::admit) or
    /// [`redeem_ticket`](Self::redeem_ticket) counted.
    pub(crate) fn release(&mut self, ip: IpAddr, now: Instant) {
        if !self.enabled() {
            return;
        }
        self.uncount(ip, now, |a| a.live = a.live.saturating_sub(1));
    }

    /// Counts a new ticket for `ip` as a session slot, or refuses it with
    /// the limit it hit. Refused before the middleware runs, so a flood of
    /// them costs no authentication work.
    pub(crate) fn admit_ticket(&mut self, ip: IpAddr, now: Instant) -> Result<(), Error> {
        if !self.enabled() && self.max_tickets == 0 {
            return Ok(());
        }
        self.sweep(now);
        // A new entry is never refused (no ticket, no session, a full
        // bucket), so a refusal leaves no empty entry behind.
        let entry = self.table.entry(ip).or_default();
        if self.max_tickets > 0 && entry.tickets >= self.max_tickets {
            return Err(Error::AddressTickets);
        }
        if self.max_sessions > 0 && entry.live + entry.tickets >= self.max_sessions {
            return Err(Error::AddressFull);
        }
        if let Some(rate) = &self.rate {
            if !entry.bucket.take(rate, now) {
                return Err(Error::AddressRate);
            }
        }
        entry.tickets += 1;
        Ok(())
    }

    /// Uncounts a ticket of `ip` that expired, or whose middleware refused
    /// it after [`admit_ticket`](Self::admit_ticket) counted it.
    pub(crate) fn release_ticket(&mut self, ip: IpAddr, now: Instant) {
        if !self.enabled() && self.max_tickets == 0 {
            return;
        }
        self.uncount(ip, now, |a| a.tickets = a.tickets.saturating_sub(1));
    }

    /// Turns a ticket of `ip` into the session that redeemed it: the slot
    /// and the token were taken when the ticket was issued, so nothing is
    /// checked or charged again. [`release`](Self::release) uncounts it.
    pub(crate) fn redeem_ticket(&mut self, ip: IpAddr, now: Instant) {
        if !self.enabled() && self.max_tickets == 0 {
            return;
        }
        let counted = self.enabled();
        self.uncount(ip, now, |a| {
            a.tickets = a.tickets.saturating_sub(1);
            if counted {
                a.live += 1;
            }
        });
    }

    /// Applies `change` to `ip`'s record; a record left with no session and
    /// no ticket is forgotten, at once if its bucket is full, else once it
    /// is.
    fn uncount(&mut self, ip: IpAddr, now: Instant, change: impl FnOnce(&mut Address)) {
        if let Entry::Occupied(mut e) = self.table.entry(ip) {
            let a = e.get_mut();
            change(a);
            if a.live == 0 && a.tickets == 0 {
                match a.bucket.full_at {
                    Some(at) if at > now => self.idle.push_back((at, ip)),
                    _ => {
                        e.remove();
                    }
                }
            }
        }
        self.sweep(now);
    }

    /// Forgets a few addresses whose last session ended and whose bucket is
    /// full again; shrinks the map after a crowd has left.
    fn sweep(&mut self, now: Instant) {
        for _ in 0..SWEEP_PER_CALL {
            match self.idle.front() {
                Some(&(at, ip)) if at <= now => {
                    self.idle.pop_front();
                    if let Entry::Occupied(e) = self.table.entry(ip) {
                        let a = e.get();
                        if a.live == 0 && a.tickets == 0 && a.bucket.is_full(now) {
                            e.remove();
                        }
                    }
                }
                _ => break,
            }
        }
        if self.table.capacity() > 4 * self.table.len().max(256) {
            self.table.shrink_to(2 * self.table.len());
        }
        if self.idle.capacity() > 4 * self.idle.len().max(256) {
            self.idle.shrink_to(2 * self.idle.len());
        }
    }

    /// Addresses the table currently remembers.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.len()
    }
}

/// The address the per-address limits count a handshake against.
pub(crate) fn client_ip(handshake: &Handshake, trusted: &[ProxyNet]) -> IpAddr {
    key(handshake.client_address(trusted))
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) >> 64 << 64;
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use hyper::header::{HeaderMap, HeaderValue};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table(max_sessions: usize, per_second: u32) -> AddressTable {
        AddressTable::new(&Config {
            max_sessions_per_ip: max_sessions,
            max_new_sessions_per_ip: per_second,
            ..Config::default()
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate::new(10, 3).unwrap();
        let mut b = Bucket::default();
        let t = Instant::now();
        assert_eq!(
            (0..5).map(|_| b.take(&rate, t)).collect::<Vec<_>>(),
            [true, true, true, false, false]
        );
        // One token a tenth of a second later, not two.
        let t = t + Duration::from_millis(100);
        assert!(b.take(&rate, t));
        assert!(!b.take(&rate, t));
        assert!(b.is_full(t + Duration::from_millis(300)));
        assert!(Rate::new(0, 5).is_none());
    }

    #[test]
    fn the_session_cap_is_per_address() {
        let mut t = table(2, 0);
        let now = Instant::now();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert!(t.admit(a, now).is_ok());
        assert!(t.admit(a, now).is_ok());
        assert_eq!(t.admit(a, now), Err(Error::AddressFull));
        assert!(t.admit(b, now).is_ok());
        t.release(a, now);
        assert!(t.admit(a, now).is_ok());
    }

    #[test]
    fn addresses_that_left_are_forgotten() {
        let mut t = table(5, 2);
        let now = Instant::now();
        for n in 0..10_000u32 {
            let a = IpAddr::V4(n.into());
            t.admit(a, now).unwrap();
            t.release(a, now);
        }
        // Each bucket is half drawn for another half second.
        assert_eq!(t.len(), 10_000);
        // Later connects and disconnects of one other address sweep them.
        let other = ip("192.0.2.1");
        let mut at = now;
        for _ in 0..3_000 {
            at += Duration::from_secs(1);
            t.admit(other, at).unwrap();
            t.release(other, at);
        }
        // Only that one is left, until its own bucket is full again.
        assert_eq!(t.len(), 1);
        assert!(t.idle.len() <= 1, "{}", t.idle.len());
        assert!(t.table.capacity() < 10_000, "{}", t.table.capacity());
        // Without a rate an address goes with its last session.
        let mut t = table(5, 0);
        t.admit(other, now).unwrap();
        t.release(other, now);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_ticket_holds_a_session_slot_until_it_becomes_that_session_or_expires() {
        let now = Instant::now();
        let a = ip("10.0.0.1");
        // With a session cap: tickets and sessions share it.
        let mut t = table(2, 0);
        t.admit_ticket(a, now).unwrap();
        t.admit(a, now).unwrap();
        assert_eq!(t.admit_ticket(a, now), Err(Error::AddressFull));
        assert_eq!(t.admit(a, now), Err(Error::AddressFull));
        // Redeemed, it is one session, not two.
        t.redeem_ticket(a, now);
        assert_eq!(t.admit(a, now), Err(Error::AddressFull));
        t.release(a, now);
        t.release(a, now);
        assert_eq!(t.len(), 0);
        // The ticket cap alone, sessions uncounted; an expired ticket frees
        // its place and the address is forgotten.
        let mut t = AddressTable::new(&Config {
            max_tickets_per_ip: 2,
            ..Config::default()
        });
        assert!(!t.enabled());
        t.admit_ticket(a, now).unwrap();
        t.admit_ticket(a, now).unwrap();
        assert_eq!(t.admit_ticket(a, now), Err(Error::AddressTickets));
        t.admit(a, now).unwrap();
        t.redeem_ticket(a, now);
        t.admit_ticket(a, now).unwrap();
        t.release_ticket(a, now);
        t.release_ticket(a, now);
        assert_eq!(t.len(), 0);
        // A rate: the ticket takes the token, its session does not.
        let mut t = table(0, 1);
        t.admit_ticket(a, now).unwrap();
        assert_eq!(t.admit_ticket(a, now), Err(Error::AddressRate));
        t.redeem_ticket(a, now);
        t.release(a, now);
        assert_eq!(t.len(), 1, "remembered until its bucket is full again");
    }

    #[test]
    fn off_by_default_and_then_free() {
        let mut t = AddressTable::new(&Config::default());
        assert!(!t.enabled());
        for _ in 0..1000 {
            t.admit(ip("10.0.0.1"), Instant::now()).unwrap();
        }
        assert_eq!(t.len(), 0);
    }

    fn hs(peer: &str, headers: &[(&'static str, &'static str)]) -> Handshake {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, HeaderValue::from_static(v));
        }
        Handshake::new(map, None, SocketAddr::new(ip(peer), 1234))
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let trusted: Vec<ProxyNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        let xff = [("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.1.1.1")];
        // From a proxy we trust: the first hop that is not ours.
        assert_eq!(
            client_ip(&hs("10.0.0.5", &xff), &trusted),
            ip("198.51.100.7")
        );
        // From anyone else: the header is ignored.
        assert_eq!(client_ip(&hs("192.0.2.4", &xff), &trusted), ip("192.0.2.4"));
        assert_eq!(client_ip(&hs("192.0.2.4", &xff), &[]), ip("192.0.2.4"));
        // `Forwarded` wins over X-Forwarded-For, quoted IPv6 with a port.
        let fwd = [
            (
                "forwarded",
                r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711""#,
            ),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client_ip(&hs("::1", &fwd), &trusted), ip("2001:db8:cafe::"));
        // Garbage stops the walk at the last readable hop.
        let junk = [("x-forwarded-for", "203.0.113.9, nonsense, 10.2.2.2")];
        assert_eq!(client_ip(&hs("10.0.0.5", &junk), &trusted), ip("10.2.2.2"));
        // Nothing forwarded: the proxy itself.
        assert_eq!(client_ip(&hs("10.0.0.5", &[]), &trusted), ip("10.0.0.5"));
        // IPv4-mapped peers are IPv4.
        assert_eq!(
            client_ip(&hs("::ffff:192.0.2.4", &[]), &[]),
            ip("192.0.2.4")
        );
    }

    #[test]
    fn proxy_ranges_parse_and_match() {
        let net: ProxyNet = "192.168.1.77/24".parse().unwrap();
        assert_eq!(net.net(), "192.168.1.0/24".parse().unwrap());
        assert!(net.contains(ip("192.168.1.200")));
        assert!(net.contains(ip("::ffff:192.168.1.3")));
        assert!(!net.contains(ip("192.168.2.1")));
        let all: ProxyNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "x", "::1/129", "1.2.3.4/"] {
            assert!(bad.parse::<ProxyNet>().is_err(), "{bad}");
        }
        // A bare address is a range of one; a mapped one is IPv4, prefix and all.
        let one: ProxyNet = "::1".parse().unwrap();
        assert_eq!(one.net(), "::1/128".parse().unwrap());
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        let mapped: ProxyNet = " ::ffff:10.1.2.3/8 ".parse().unwrap();
        assert_eq!(mapped.net(), "10.0.0.0/8".parse().unwrap());
        assert!(mapped.contains(ip("10.200.0.1")));
        assert!(!"2001:db8::/32"
            .parse::<ProxyNet>()
            .unwrap()
            .contains(ip("32.1.13.184")));
        assert_eq!(
            "10.0.0.0/33".parse::<ProxyNet>(),
            Err("\"10.0.0.0/33\": prefix must be 0..=32".to_string())
        );
        assert_eq!(
            "::ffff:10.0.0.0/104".parse::<ProxyNet>(),
            Err("\"::ffff:10.0.0.0/104\": prefix must be 0..=32".to_string())
        );
        assert_eq!(
            "1.2.3.4/".parse::<ProxyNet>(),
            Err("\"1.2.3.4/\": prefix must be 0..=32".to_string())
        );
        assert_eq!(
            "x".parse::<ProxyNet>(),
            Err("\"x\" is not an address: invalid IP address syntax".to_string())
        );
    }
}
