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

use std::collections::{BTreeSet, HashMap};
use std::fmt;

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
}
