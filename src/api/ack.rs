//! Acknowledgements: a handler's answer to one client event.
//!
//! The client's `POST /emit` with `"ack": true` is the carrier: the
//! response's head is sent once the handlers have run (so the client may
//! send its next event, in order), and its body is the answer, whenever
//! the handler gives it. An [`Ack`] is a cheap clone handed to every
//! handler of the event; the first answer wins. If every clone is dropped
//! without an answer, or a handler panics, or `--ack-timeout` passes, the
//! client gets an error instead: an acknowledgement never hangs.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

/// The answer slot for one acknowledged client event.
#[derive(Clone)]
pub struct Ack {
    /// Taken by the first answer. `None` inside for an event the client
    /// sent without asking for an answer.
    slot: Arc<Mutex<Option<oneshot::Sender<Value>>>>,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("answered", &self.slot.lock().is_none())
            .finish()
    }
}

impl Ack {
    /// A slot and the receiver its answer goes to.
    pub(crate) fn channel() -> (Ack, oneshot::Receiver<Value>) {
        let (tx, rx) = oneshot::channel();
        (
            Ack {
                slot: Arc::new(Mutex::new(Some(tx))),
            },
            rx,
        )
    }

    /// A slot for an event sent without a callback: answers go nowhere.
    pub(crate) fn none() -> Ack {
        Ack {
            slot: Arc::new(Mutex::new(None)),
        }
    }

    /// Answers the client's callback with `data`. Only the first answer
    /// counts; returns false for any later one, or if nobody is waiting.
    pub fn send(&self, data: impl Into<Value>) -> bool {
        match self.slot.lock().take() {
            Some(tx) => tx.send(data.into()).is_ok(),
            None => false,
        }
    }

    /// Whether the client asked for an answer and has not had one yet.
    pub fn is_pending(&self) -> bool {
        self.slot.lock().is_some()
    }
}
