//! Connection state recovery: the resume cursor a client presents, and the
//! table of sessions that are away (their transport dropped) but may still
//! come back.
//!
//! A cursor is `<sid>:<g>:<m>`: the session it belongs to, the sequence
//! number of the next broadcast it needs from the fan-out's log, and the
//! next event it needs from its own mailbox (room and direct events). It is
//! sent as each ordinary event's SSE `id:` (so a browser's own EventSource
//! reconnection sends it back as `Last-Event-ID`) and with every poll
//! response. The sid in it is the credential: the sid is sent only to its
//! owner, so only the owner can resume, and a cursor naming a session that
//! is unknown, expired, or whose events are gone gets a fresh session with
//! an explicit "missed" flag, never anyone else's events.
//!
//! The away table is keyed by sid with one deadline per entry, purged by
//! the hub's reaper like idle polls: no timer per session. It is generic
//! over what it holds: the hub keeps a second one for the blip grace, whose
//! entries are sessions still live and counted, for a much shorter time.
//!
//! Away sessions are no longer counted as live, so nothing else bounds
//! them: a client that opens streams and resets them at once would leave
//! one behind per stream for the whole window. [`Away`] bounds them in all
//! (`--max-away-sessions`) and per client address (`--max-sessions-per-ip`),
//! and makes room by ending the one that went away first, never by refusing:
//! a new client still gets in, and what a flood costs is its own oldest
//! sessions, or the oldest of everyone's once the whole table is its.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;

use tokio::time::Instant;

use crate::session::Sid;

/// Where a client is in its session's event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The session this cursor belongs to.
    pub sid: Sid,
    /// The next broadcast (fan-out log sequence number) the client needs.
    pub broadcast: u64,
    /// The next mailbox event (room or direct) the client needs.
    pub direct: u64,
}

/// The longest cursor text accepted: a sid, two u64s and two colons.
pub const MAX_CURSOR_LEN: usize = 36 + 2 * 20 + 2;

impl Cursor {
    /// Parses `<sid>:<g>:<m>`, exactly as [`fmt::Display`] writes it.
    pub fn parse(text: &str) -> Option<Cursor> {
        if text.len() > MAX_CURSOR_LEN {
            return None;
        }
        let mut parts = text.split(':');
        let (sid, g, m) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || sid.len() != 36 {
            return None;
        }
        let number = |s: &str| -> Option<u64> {
            // Digits only: no sign, no spaces, no leading zeros to alias one
            // cursor under several spellings.
            if s.is_empty()
                || !s.bytes().all(|b| b.is_ascii_digit())
                || (s.len() > 1 && s.starts_with('0'))
            {
                return None;
            }
            s.parse().ok()
        };
        Some(Cursor {
            sid: Sid::try_parse(sid).ok()?,
            broadcast: number(g)?,
            direct: number(m)?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.sid, self.broadcast, self.direct)
    }
}

/// Sessions that are away, each until its deadline.
pub(crate) struct AwayTable<T> {
    /// The entries by sid.
    entries: HashMap<Sid, (T, Instant)>,
    /// The same entries by deadline, for the reaper.
    deadlines: BTreeSet<(Instant, Sid)>,
}

impl<T> Default for AwayTable<T> {
    fn default() -> Self {
        AwayTable {
            entries: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

impl<T> AwayTable<T> {
    /// Holds `value` for `sid` until `at`. Returns true if `at` is now the
    /// earliest deadline (the reaper must be told).
    pub(crate) fn insert(&mut self, sid: Sid, value: T, at: Instant) -> bool {
        if let Some((_, old)) = self.entries.remove(&sid) {
            self.deadlines.remove(&(old, sid));
        }
        let earliest = self.deadlines.first().is_none_or(|(t, _)| at < *t);
        self.entries.insert(sid, (value, at));
        self.deadlines.insert((at, sid));
        earliest
    }

    /// Whether `sid` has an entry.
    pub(crate) fn contains(&self, sid: &Sid) -> bool {
        self.entries.contains_key(sid)
    }

    /// `sid`'s entry, if it is there.
    pub(crate) fn get(&self, sid: &Sid) -> Option<&T> {
        self.entries.get(sid).map(|(v, _)| v)
    }

    /// Takes `sid`'s entry out, if it is there.
    pub(crate) fn take(&mut self, sid: &Sid) -> Option<T> {
        let (value, at) = self.entries.remove(sid)?;
        self.deadlines.remove(&(at, *sid));
        Some(value)
    }

    /// Takes the entry with the earliest deadline, whatever the time.
    fn pop_first(&mut self) -> Option<(Sid, T)> {
        let (_, sid) = *self.deadlines.first()?;
        self.take(&sid).map(|v| (sid, v))
    }

    /// Takes the next entry whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(Sid, T)> {
        let (at, sid) = *self.deadlines.first()?;
        if at > now {
            return None;
        }
        self.take(&sid).map(|v| (sid, v))
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// How many sessions are away.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes every entry out (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<(Sid, T)> {
        self.deadlines.clear();
        self.entries.drain().map(|(sid, (v, _))| (sid, v)).collect()
    }

    /// Gives back the capacity a flood of away sessions left behind.
    pub(crate) fn shrink(&mut self) {
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to(2 * self.entries.len());
        }
    }
}

/// The hub's away sessions: an [`AwayTable`] bounded in all and per client
/// address. Every entry gets the same window, so the earliest deadline is
/// the session that went away first.
pub(crate) struct Away<T> {
    /// The entries, with the address each counts against.
    table: AwayTable<(IpAddr, T)>,
    /// Each address's entries, the first to go away in front; kept only
    /// while there is a per-address cap, which also bounds each queue.
    by_address: HashMap<IpAddr, VecDeque<Sid>>,
    /// The most entries in all.
    max: usize,
    /// The most entries of one address; 0 is no cap.
    max_per_address: usize,
}

impl<T> Away<T> {
    /// An empty table holding at most `max` entries, `max_per_address` of
    /// them (when not 0) for one address.
    pub(crate) fn new(max: usize, max_per_address: usize) -> Away<T> {
        Away {
            table: AwayTable::default(),
            by_address: HashMap::new(),
            max,
            max_per_address,
        }
    }

    /// Holds `value` for `sid`, of address `ip`, until `at`. Returns whether
    /// `at` is now the earliest deadline (the reaper must be told) and the
    /// entries that had to go to make room, which the caller ends for good.
    pub(crate) fn insert(
        &mut self,
        sid: Sid,
        ip: IpAddr,
        value: T,
        at: Instant,
    ) -> (bool, Vec<(Sid, T)>) {
        let mut evicted = Vec::new();
        // Replaced, as `AwayTable::insert` replaces: not made room for.
        self.take(&sid);
        if self.max_per_address > 0 {
            let queue = self.by_address.entry(ip).or_default();
            let over = (queue.len() + 1).saturating_sub(self.max_per_address);
            let oldest: Vec<Sid> = queue.iter().take(over).copied().collect();
            for old in oldest {
                evicted.extend(self.take(&old).map(|v| (old, v)));
            }
            self.by_address.entry(ip).or_default().push_back(sid);
        }
        while self.table.len() >= self.max.max(1) {
            match self.pop_first() {
                Some(entry) => evicted.push(entry),
                None => break,
            }
        }
        let earliest = self.table.insert(sid, (ip, value), at);
        if self.max == 0 {
            evicted.extend(self.take(&sid).map(|v| (sid, v)));
        }
        (earliest, evicted)
    }

    /// Whether `sid` is away.
    pub(crate) fn contains(&self, sid: &Sid) -> bool {
        self.table.contains(sid)
    }

    /// Takes `sid`'s entry out, if it is there.
    pub(crate) fn take(&mut self, sid: &Sid) -> Option<T> {
        let (ip, value) = self.table.take(sid)?;
        self.unlist(ip, sid);
        Some(value)
    }

    /// Takes the next entry whose deadline is at or before `now`.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<(Sid, T)> {
        let (sid, (ip, value)) = self.table.pop_expired(now)?;
        self.unlist(ip, &sid);
        Some((sid, value))
    }

    /// Takes the entry that went away first.
    fn pop_first(&mut self) -> Option<(Sid, T)> {
        let (sid, (ip, value)) = self.table.pop_first()?;
        self.unlist(ip, &sid);
        Some((sid, value))
    }

    /// Drops `sid` from `ip`'s queue: a scan of at most the per-address
    /// cap, usually from its front.
    fn unlist(&mut self, ip: IpAddr, sid: &Sid) {
        if let Some(queue) = self.by_address.get_mut(&ip) {
            if let Some(i) = queue.iter().position(|s| s == sid) {
                queue.remove(i);
            }
            if queue.is_empty() {
                self.by_address.remove(&ip);
            }
        }
    }

    /// The earliest deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.table.next_deadline()
    }

    /// How many sessions are away.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// How many sessions of `ip` are away (counted only under a cap).
    #[cfg(test)]
    fn of(&self, ip: IpAddr) -> usize {
        self.by_address.get(&ip).map_or(0, VecDeque::len)
    }

    /// Takes every entry out (at shutdown).
    pub(crate) fn drain(&mut self) -> Vec<(Sid, T)> {
        self.by_address.clear();
        let all = self.table.drain();
        all.into_iter().map(|(sid, (_, v))| (sid, v)).collect()
    }

    /// Gives back the capacity a flood of away sessions left behind.
    pub(crate) fn shrink(&mut self) {
        self.table.shrink();
        if self.by_address.capacity() > 4 * self.by_address.len().max(256) {
            self.by_address.shrink_to(2 * self.by_address.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_only_its_own_spelling_parses() {
        let c = Cursor {
            sid: "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10".parse().unwrap(),
            broadcast: 12,
            direct: 0,
        };
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        for bad in [
            "",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10:1",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10:1:2:3",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10:01:2",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10:-1:2",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10:+1:2",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10: 1:2",
            "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10:18446744073709551616:2",
            "0b9c3f3e8a3c4c1e9f552f1c0b7d9a10xxxx:1:2",
            "zzzzzzzz-8a3c-4c1e-9f55-2f1c0b7d9a10:1:2",
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_away_table_expires_in_deadline_order() {
        let mut t: AwayTable<u8> = AwayTable::default();
        let now = Instant::now();
        let (a, b) = (Sid::new_v4(), Sid::new_v4());
        assert!(t.insert(a, 1, now + std::time::Duration::from_secs(2)));
        assert!(t.insert(b, 2, now + std::time::Duration::from_secs(1)));
        assert_eq!(t.pop_expired(now), None);
        assert_eq!(
            t.pop_expired(now + std::time::Duration::from_secs(1)),
            Some((b, 2))
        );
        assert_eq!(t.take(&a), Some(1));
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_full_away_table_ends_the_session_that_went_away_first() {
        let mut t: Away<u32> = Away::new(3, 0);
        let now = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let sids: Vec<Sid> = (0..5).map(|_| Sid::new_v4()).collect();
        let mut gone = Vec::new();
        for (n, sid) in sids.iter().enumerate() {
            let at = now + std::time::Duration::from_millis(n as u64);
            gone.extend(t.insert(*sid, ip, n as u32, at).1);
        }
        assert_eq!(gone, vec![(sids[0], 0), (sids[1], 1)]);
        assert_eq!(t.len(), 3);
        // Zero holds nothing: the entry goes as it comes.
        let mut none: Away<u32> = Away::new(0, 0);
        assert_eq!(none.insert(sids[0], ip, 7, now).1, vec![(sids[0], 7)]);
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn one_address_makes_room_among_its_own_away_sessions_only() {
        let mut t: Away<u32> = Away::new(100, 2);
        let now = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let other = Sid::new_v4();
        assert!(t.insert(other, b, 9, now).1.is_empty());
        let sids: Vec<Sid> = (0..4).map(|_| Sid::new_v4()).collect();
        let mut gone = Vec::new();
        for (n, sid) in sids.iter().enumerate() {
            let at = now + std::time::Duration::from_millis(1 + n as u64);
            gone.extend(t.insert(*sid, a, n as u32, at).1);
        }
        assert_eq!(gone, vec![(sids[0], 0), (sids[1], 1)]);
        assert_eq!((t.of(a), t.of(b), t.len()), (2, 1, 3));
        // A resume takes its entry out of its address's queue too.
        assert_eq!(t.take(&sids[3]), Some(3));
        assert_eq!(t.of(a), 1);
        assert_eq!(
            t.pop_expired(now + std::time::Duration::from_secs(1)),
            Some((other, 9))
        );
        assert_eq!(
            t.pop_expired(now + std::time::Duration::from_secs(1)),
            Some((sids[2], 2))
        );
        assert_eq!((t.of(a), t.of(b), t.len()), (0, 0, 0));
        assert!(t.by_address.is_empty());
    }
}
