//! Rooms: named groups of sessions, and where a broadcast is addressed.
//!
//! The table is indexed both ways, room → members and member → rooms, so
//! that emitting to a room costs O(members) and a session leaving all its
//! rooms costs O(its rooms); nothing here ever walks every session. It is
//! generic over what a member is (the fan-out stores each member's mailbox)
//! so that it depends on nothing but [`Sid`].
//!
//! [`Target`] is the address of a broadcast as the backend sees it: plain
//! names and sids, so that a backend spanning nodes can route it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::session::Sid;

/// Who a broadcast is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The rooms it goes to; empty means every session.
    pub rooms: Vec<Arc<str>>,
    /// A session left out (the sender, for `socket.to(..)` and
    /// `socket.broadcast()`).
    pub except: Option<Sid>,
}

impl Target {
    /// Every session.
    pub fn all() -> Target {
        Target::default()
    }

    /// Whether this is an everyone-broadcast (no rooms named).
    pub fn is_all(&self) -> bool {
        self.rooms.is_empty()
    }
}

/// Membership both ways. Not locked itself: its owner holds one lock.
pub(crate) struct Rooms<M> {
    /// Members of each room, with what delivering to them needs.
    members: HashMap<Arc<str>, HashMap<Sid, M>>,
    /// The rooms each session is in, for leaving them all at once.
    of: HashMap<Sid, HashSet<Arc<str>>>,
}

impl<M> Default for Rooms<M> {
    fn default() -> Self {
        Rooms {
            members: HashMap::new(),
            of: HashMap::new(),
        }
    }
}

impl<M: Clone> Rooms<M> {
    /// Every room with its members, each sorted (rooms by name, members by
    /// sid), for the server API's listing.
    pub(crate) fn list(&self) -> Vec<(Arc<str>, Vec<Sid>)> {
        let mut rooms: Vec<_> = self
            .members
            .iter()
            .map(|(room, members)| {
                let mut sids: Vec<Sid> = members.keys().copied().collect();
                sids.sort_unstable();
                (room.clone(), sids)
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rooms
    }

    /// Adds `sid` to `room`; false if it would be in more than `max` rooms.
    pub(crate) fn join(&mut self, room: &str, sid: Sid, member: M, max: usize) -> bool {
        let mine = self.of.entry(sid).or_default();
        if mine.contains(room) {
            return true;
        }
        if mine.len() >= max {
            if mine.is_empty() {
                self.of.remove(&sid);
            }
            return false;
        }
        let name: Arc<str> = match self.members.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room),
        };
        mine.insert(name.clone());
        self.members.entry(name).or_default().insert(sid, member);
        true
    }

    /// Removes `sid` from `room`.
    pub(crate) fn leave(&mut self, room: &str, sid: Sid) {
        if let Some(mine) = self.of.get_mut(&sid) {
            mine.remove(room);
            if mine.is_empty() {
                self.of.remove(&sid);
            }
        }
        self.drop_member(room, sid);
    }

    /// Removes `sid` from every room it is in.
    pub(crate) fn leave_all(&mut self, sid: Sid) {
        for room in self.of.remove(&sid).unwrap_or_default() {
            self.drop_member(&room, sid);
        }
    }

    fn drop_member(&mut self, room: &str, sid: Sid) {
        if let Some(m) = self.members.get_mut(room) {
            m.remove(&sid);
            // An empty room costs nothing: it goes, and its map with it.
            if m.is_empty() {
                self.members.remove(room);
            }
        }
    }

    /// The rooms `sid` is in, sorted.
    pub(crate) fn rooms_of(&self, sid: Sid) -> Vec<Arc<str>> {
        let mut v: Vec<Arc<str>> = self
            .of
            .get(&sid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// How many sessions `room` has.
    pub(crate) fn len(&self, room: &str) -> usize {
        self.members.get(room).map_or(0, HashMap::len)
    }

    /// Every member of any of `rooms` once, except `except`.
    pub(crate) fn members(&self, rooms: &[Arc<str>], except: Option<Sid>) -> Vec<(Sid, M)> {
        let mut out: Vec<(Sid, M)> = Vec::new();
        let mut seen: HashSet<Sid> = HashSet::new();
        for room in rooms {
            for (sid, m) in self.members.get(&**room).into_iter().flatten() {
                if Some(*sid) != except && (rooms.len() == 1 || seen.insert(*sid)) {
                    out.push((*sid, m.clone()));
                }
            }
        }
        out
    }

    /// Rooms that exist (have members).
    pub(crate) fn room_count(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_both_ways_and_empty_rooms_vanish() {
        let mut r: Rooms<u8> = Rooms::default();
        let (a, b) = (Sid::new_v4(), Sid::new_v4());
        assert!(r.join("x", a, 1, 8));
        assert!(r.join("x", b, 2, 8));
        assert!(r.join("y", a, 1, 8));
        assert_eq!(r.len("x"), 2);
        let rooms: Vec<Arc<str>> = vec!["x".into(), "y".into()];
        assert_eq!(r.members(&rooms, None).len(), 2);
        assert_eq!(r.members(&rooms, Some(a)), vec![(b, 2)]);
        r.leave_all(a);
        assert_eq!(r.len("y"), 0);
        assert_eq!(r.room_count(), 1);
        r.leave("x", b);
        assert_eq!(r.room_count(), 0);
        assert!(r.of.is_empty());
    }

    #[test]
    fn a_session_may_be_in_at_most_max_rooms() {
        let mut r: Rooms<()> = Rooms::default();
        let a = Sid::new_v4();
        assert!(r.join("1", a, (), 2));
        assert!(r.join("2", a, (), 2));
        assert!(r.join("2", a, (), 2));
        assert!(!r.join("3", a, (), 2));
        assert_eq!(r.rooms_of(a).len(), 2);
    }
}
