//! Acknowledgements the other way: the server emits with a callback, and
//! each client that gets the event answers it.
//!
//! An event sent with [`Socket::emit_with_ack`](crate::Socket::emit_with_ack)
//! or [`Operator::emit_with_ack`](crate::Operator::emit_with_ack) carries an
//! id in its JSON, `{"event":..,"data":..,"ack":<id>}`: one id per emit,
//! the same for every recipient of a broadcast, so the event is still
//! encoded once. The client answers with `POST /ack?sid=<sid>` and
//! `{"id":<id>,"data":<answer>}`.
//!
//! Each emit waits on one entry here: the sessions that still owe an answer
//! and the answers so far. An answer from a session that owes none (an id
//! never sent, another session's, a replay) is refused and changes
//! nothing. The entry leaves when the last answer comes or at the emit's
//! deadline, whichever is first, and also when the emit's future is
//! dropped; `--max-pending-acks` bounds what all entries owe together.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::session::Sid;

/// Why an acknowledged emit to one socket got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No answer within the timeout (the client may have left meanwhile).
    #[error("acknowledgement timed out")]
    Timeout,
    /// `--max-pending-acks` answers are owed already: the event was not
    /// sent.
    #[error("too many acknowledgements pending")]
    TooMany,
}

/// The answers to an acknowledged broadcast.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AckReplies {
    /// Each session that answered, with its answer, in the order the
    /// answers came.
    pub replies: Vec<(Sid, Value)>,
    /// The sessions the event went to that did not answer in time, sorted.
    pub timed_out: Vec<Sid>,
}

/// The emits waiting for answers.
#[derive(Default)]
pub(crate) struct Replies {
    /// The last id given out; ids start at 1.
    last: AtomicU64,
    /// What each waiting emit is owed.
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    waiting: HashMap<u64, Waiting>,
    /// Answers owed, over every entry.
    owed: usize,
}

struct Waiting {
    owed: HashSet<Sid>,
    replies: Vec<(Sid, Value)>,
    /// Told when nothing more is owed.
    done: Option<oneshot::Sender<()>>,
}

/// One emit's entry, taken out of the table when dropped: a deadline, the
/// last answer, or a caller that stopped waiting all leave nothing behind.
pub(crate) struct Entry<'a> {
    replies: &'a Replies,
    /// The id the event carries.
    pub(crate) id: u64,
    done: Option<oneshot::Receiver<()>>,
}

impl Replies {
    /// An entry owed an answer by each of `owed`, or [`AckError::TooMany`]
    /// when that would pass `max` owed answers in all.
    pub(crate) fn open(&self, owed: Vec<Sid>, max: usize) -> Result<Entry<'_>, AckError> {
        let id = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let owed: HashSet<Sid> = owed.into_iter().collect();
        let mut table = self.table.lock();
        if table.owed + owed.len() > max {
            return Err(AckError::TooMany);
        }
        table.owed += owed.len();
        // Nobody to wait for: done already.
        let done = if owed.is_empty() {
            let _ = tx.send(());
            None
        } else {
            Some(tx)
        };
        let waiting = Waiting {
            owed,
            replies: Vec::new(),
            done,
        };
        table.waiting.insert(id, waiting);
        Ok(Entry {
            replies: self,
            id,
            done: Some(rx),
        })
    }

    /// `sid`'s answer to the event `id`; refused unless `sid` owes one.
    pub(crate) fn answer(&self, sid: Sid, id: u64, data: Value) -> Result<(), Error> {
        let mut table = self.table.lock();
        let waiting = table.waiting.get_mut(&id).ok_or(Error::UnknownAck)?;
        if !waiting.owed.remove(&sid) {
            return Err(Error::UnknownAck);
        }
        waiting.replies.push((sid, data));
        if waiting.owed.is_empty() {
            if let Some(done) = waiting.done.take() {
                let _ = done.send(());
            }
        }
        table.owed -= 1;
        Ok(())
    }

    /// Answers owed now, over every waiting emit.
    pub(crate) fn owed(&self) -> usize {
        self.table.lock().owed
    }

    fn close(&self, id: u64) -> AckReplies {
        let mut table = self.table.lock();
        let Some(waiting) = table.waiting.remove(&id) else {
            return AckReplies::default();
        };
        table.owed -= waiting.owed.len();
        let mut timed_out: Vec<Sid> = waiting.owed.into_iter().collect();
        timed_out.sort();
        AckReplies {
            replies: waiting.replies,
            timed_out,
        }
    }
}

impl Entry<'_> {
    /// Waits until every answer is in or `within` has passed, and takes
    /// what came.
    pub(crate) async fn wait(mut self, within: Duration) -> AckReplies {
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(within, done).await;
        }
        self.replies.close(self.id)
    }
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        // Already closed by `wait`, or abandoned: either way, gone.
        self.replies.close(self.id);
    }
}

/// Reads a `POST /ack` body, `{"id": <id>, "data": <answer>}` (`data`
/// may be left out: `null`).
pub(crate) fn parse_answer(body: &[u8]) -> Result<(u64, Value), Error> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|_| Error::BadAnswer("body is not JSON"))?;
    let Some(object) = v.as_object_mut() else {
        return Err(Error::BadAnswer("body is not a JSON object"));
    };
    let id = object
        .get("id")
        .ok_or(Error::BadAnswer("missing id"))?
        .as_u64()
        .ok_or(Error::BadAnswer("id is not a whole number"))?;
    let data = object.remove("data").unwrap_or(Value::Null);
    Ok((id, data))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_counts_once_and_only_from_a_session_that_owes_it() {
        let replies = Replies::default();
        let (a, b, c) = (Sid::new_v4(), Sid::new_v4(), Sid::new_v4());
        let entry = replies.open(vec![a, b], 10).unwrap();
        let id = entry.id;
        assert_eq!(replies.owed(), 2);
        assert_eq!(replies.answer(c, id, json!(0)), Err(Error::UnknownAck));
        assert_eq!(replies.answer(a, id + 1, json!(0)), Err(Error::UnknownAck));
        assert_eq!(replies.answer(a, id, json!(1)), Ok(()));
        assert_eq!(replies.answer(a, id, json!(2)), Err(Error::UnknownAck));
        assert_eq!(replies.owed(), 1);
        drop(entry);
        assert_eq!(replies.owed(), 0);
        assert_eq!(replies.answer(b, id, json!(3)), Err(Error::UnknownAck));
    }

    #[test]
    fn the_cap_counts_every_owed_answer() {
        let replies = Replies::default();
        let sids: Vec<Sid> = (0..3).map(|_| Sid::new_v4()).collect();
        let first = replies.open(sids.clone(), 4).unwrap();
        assert_eq!(
            replies.open(sids[..2].to_vec(), 4).err(),
            Some(AckError::TooMany)
        );
        let second = replies.open(sids[..1].to_vec(), 4).unwrap();
        drop((first, second));
        assert_eq!(replies.owed(), 0);
    }

    #[test]
    fn answer_bodies() {
        assert_eq!(
            parse_answer(br#"{"id":7,"data":{"x":1}}"#).unwrap(),
            (7, json!({"x":1}))
        );
        assert_eq!(parse_answer(br#"{"id":7}"#).unwrap(), (7, Value::Null));
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"id":-1}"#,
            br#"{"id":1.5}"#,
            br#"{"id":"7"}"#,
            b"{\"id\":7",
        ] {
            assert!(
                matches!(parse_answer(bad), Err(Error::BadAnswer(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
