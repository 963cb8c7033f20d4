//! Who is here, not just how many: the sessions counted now, the people
//! they belong to, and join and leave events for the rooms that ask.
//!
//! A person is the session's user id when it has one (a JWT session's
//! `sub`), and otherwise the browser, known from its shared stream: every
//! tab a browser carries on one stream has the same
//! [`Handshake::browser`](crate::Handshake::browser). A session with
//! neither (curl, a page with a stream of its own) is a person of its own.
//!
//! The count of people changes exactly where the count of sessions does,
//! in the lifecycle's `connected` and `disconnected`, under the hub's
//! ordering lock; so does a room's `presence join` and `presence leave`.
//! A blip inside the reconnect grace changes neither.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::api::socket::SocketState;
use crate::session::Sid;

/// Who is connected: to the whole server, or to one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Sessions counted (as `user count` counts them).
    pub clients: usize,
    /// People: sessions of one user id, or of one browser, count once.
    pub users: usize,
    /// The members, sorted by sid: all of them, or one page
    /// ([`Io::presence_page`](crate::Io::presence_page)).
    pub members: Vec<Member>,
    /// The last sid of this page when more follow: pass it as `after` for
    /// the next.
    pub next: Option<Sid>,
}

/// One session in a [`Presence`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The session's sid: a credential, for server code only.
    pub sid: Sid,
    /// Its public tag ([`Socket::public_id`](crate::Socket::public_id)),
    /// the one to show clients.
    pub public_id: String,
    /// The user id of a JWT session.
    pub user: Option<String>,
    /// The node holding it, on a cluster.
    pub node: Option<String>,
    /// When its session began, in ms since the Unix epoch (a resumed
    /// session keeps its first).
    pub joined_at: u64,
}

impl Member {
    /// The member as a client may see it: its public tag, never its sid.
    pub fn to_public_json(&self) -> Value {
        json!({ "id": self.public_id, "user": self.user, "joinedAt": self.joined_at })
    }

    /// The member as the server API shows it, sid included.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "sid": self.sid.to_string(),
            "id": self.public_id,
            "user": self.user,
            "node": self.node,
            "joinedAt": self.joined_at,
        })
    }
}

/// Whom a session belongs to, when that is known to be shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Person {
    /// A JWT session's user id.
    User(Arc<str>),
    /// A browser, by the shared stream its tabs ride.
    Browser(Uuid),
}

/// The person of a socket's session, as of its current handshake and
/// token: `None` for a session that is a person of its own.
pub(super) fn person_of(state: &SocketState) -> Option<Person> {
    let user = state
        .token
        .lock()
        .as_ref()
        .and_then(|t| t.grant.user.clone());
    if let Some(user) = user {
        return Some(Person::User(Arc::from(user)));
    }
    state.handshake.lock().browser.map(Person::Browser)
}

impl Person {
    /// The person as one string, for merging nodes' answers: `u:<user>`
    /// or `b:<browser>`.
    pub(crate) fn key(&self) -> String {
        match self {
            Person::User(user) => format!("u:{user}"),
            Person::Browser(browser) => format!("b:{browser}"),
        }
    }
}

/// The people counted on this node: sessions that are their own person by
/// number alone (most of them), the others by person, so that the table
/// costs nothing for a session without a user id or a shared stream.
#[derive(Default)]
pub(crate) struct People {
    solo: usize,
    keyed: HashMap<Person, usize>,
}

impl People {
    /// A counted session of `person`.
    pub(crate) fn add(&mut self, person: Option<Person>) {
        match person {
            None => self.solo += 1,
            Some(p) => *self.keyed.entry(p).or_default() += 1,
        }
    }

    /// A session of `person` no longer counted.
    pub(crate) fn remove(&mut self, person: Option<Person>) {
        match person {
            None => self.solo = self.solo.saturating_sub(1),
            Some(p) => {
                if let Some(n) = self.keyed.get_mut(&p) {
                    *n -= 1;
                    if *n == 0 {
                        self.keyed.remove(&p);
                    }
                }
            }
        }
    }

    /// People with at least one counted session.
    pub(crate) fn users(&self) -> usize {
        self.solo + self.keyed.len()
    }

    /// The sessions that are people of their own, and the keys of the
    /// others' people.
    pub(crate) fn parts(&self) -> (usize, Vec<String>) {
        (self.solo, self.keyed.keys().map(Person::key).collect())
    }
}

/// [`Presence`] with what merging it with other nodes' needs: the
/// sessions that are people of their own, and the others' people.
pub(crate) struct Local {
    pub(crate) presence: Presence,
    pub(crate) solo: usize,
    pub(crate) persons: Vec<String>,
}

/// People among `persons`, one entry per session: how many are people of
/// their own, and the others' people.
pub(crate) fn distinct(persons: impl Iterator<Item = Option<Person>>) -> (usize, HashSet<Person>) {
    let mut solo = 0;
    let mut keyed = HashSet::new();
    for p in persons {
        match p {
            None => solo += 1,
            Some(p) => {
                keyed.insert(p);
            }
        }
    }
    (solo, keyed)
}

/// Now, in ms since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The rooms whose members get join and leave events, and how fast.
#[derive(Default)]
pub(crate) struct Tracked {
    rooms: Mutex<HashMap<Arc<str>, Bucket>>,
}

/// One tracked room's event budget.
struct Bucket {
    tokens: f64,
    last: Instant,
    /// A `presence sync` is due once the budget allows: events were
    /// dropped.
    sync_due: bool,
}

/// What to send for one join or leave in a tracked room.
pub(crate) enum Verdict {
    /// Not a tracked room.
    Untracked,
    /// The event itself.
    Send,
    /// Over the room's rate: drop it; `Some(wait)` when a `presence sync`
    /// must be scheduled after `wait` (none is scheduled yet).
    Dropped(Option<Duration>),
}

impl Tracked {
    /// Starts join and leave events for `room`.
    pub(crate) fn track(&self, room: &str, rate: u32) {
        let mut rooms = self.rooms.lock();
        rooms.entry(Arc::from(room)).or_insert(Bucket {
            tokens: f64::from(rate.max(1)),
            last: Instant::now(),
            sync_due: false,
        });
    }

    /// Whether `room` is tracked at all.
    pub(crate) fn is_tracked(&self, room: &str) -> bool {
        self.rooms.lock().contains_key(room)
    }

    /// Takes one event's worth of `room`'s budget: `rate` a second, with
    /// a burst of as many.
    pub(crate) fn take(&self, room: &str, rate: u32) -> Verdict {
        let mut rooms = self.rooms.lock();
        let Some(b) = rooms.get_mut(room) else {
            return Verdict::Untracked;
        };
        if rate == 0 {
            return Verdict::Send;
        }
        let rate = f64::from(rate);
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 && !b.sync_due {
            b.tokens -= 1.0;
            return Verdict::Send;
        }
        if b.sync_due {
            return Verdict::Dropped(None);
        }
        b.sync_due = true;
        Verdict::Dropped(Some(Duration::from_secs_f64((1.0 - b.tokens) / rate)))
    }

    /// The scheduled `presence sync` for `room` is going out now.
    pub(crate) fn synced(&self, room: &str) {
        if let Some(b) = self.rooms.lock().get_mut(room) {
            b.sync_due = false;
            b.tokens = (b.tokens - 1.0).max(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_count_a_shared_person_once() {
        let mut people = People::default();
        let browser = Person::Browser(Uuid::new_v4());
        let user = Person::User(Arc::from("ada"));
        for p in [
            None,
            Some(browser.clone()),
            Some(browser.clone()),
            Some(user.clone()),
            None,
        ] {
            people.add(p);
        }
        assert_eq!(people.users(), 4);
        people.remove(Some(browser.clone()));
        assert_eq!(people.users(), 4);
        people.remove(Some(browser));
        people.remove(None);
        assert_eq!(people.users(), 2);
        people.remove(Some(user));
        people.remove(None);
        assert_eq!(people.users(), 0);
        assert!(people.keyed.is_empty());
    }

    #[test]
    fn a_tracked_room_over_its_rate_drops_events_and_asks_for_one_sync() {
        let tracked = Tracked::default();
        assert!(matches!(tracked.take("r", 2), Verdict::Untracked));
        tracked.track("r", 2);
        assert!(matches!(tracked.take("r", 2), Verdict::Send));
        assert!(matches!(tracked.take("r", 2), Verdict::Send));
        let Verdict::Dropped(Some(wait)) = tracked.take("r", 2) else {
            panic!("the third event in a burst of two must ask for a sync");
        };
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        assert!(matches!(tracked.take("r", 2), Verdict::Dropped(None)));
        tracked.synced("r");
        assert!(matches!(tracked.take("r", 0), Verdict::Send));
    }
}
