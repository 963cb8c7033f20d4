//! The limits of one HTTPS connection, which hyper's HTTP/2 server does
//! not keep by itself: a first request within `--header-timeout`, no
//! longer than `--idle-timeout` with nothing in flight, no more than
//! `--max-resets` streams reset in `RESET_WINDOW`, and at shutdown a
//! GOAWAY only after every open response has said its last words.
//!
//! An HTTP/2 connection has no header timeout of its own, and its PINGs keep
//! an idle one alive for good: with nothing but a SETTINGS frame, or half a
//! header block, a client holds a descriptor and its buffers as long as it
//! likes. And a stream the client resets ends its session only into the
//! recovery window, so one connection opening and resetting streams in a
//! loop costs the server far more than it costs the client. Each request and
//! each response body is counted in an [`Activity`] the connection's one
//! task watches; a stream ending wakes it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::transport::http::ResponseBody;

/// The span `--max-resets` counts over: long enough to span a burst of a
/// flood, short enough that the tabs a browser closes over an afternoon on
/// one long-lived connection never add up to it.
const RESET_WINDOW: Duration = Duration::from_secs(10);

/// What one connection has in flight, shared by its requests, its response
/// bodies and the task that watches it.
pub(crate) struct Activity {
    /// Requests being answered plus response bodies not yet done with.
    open: AtomicUsize,
    /// Whether a complete request has arrived.
    requested: AtomicBool,
    /// When `open` last fell to 0, or when the connection began.
    idle_since: Mutex<Instant>,
    /// Streams reset in the current window: its start and the count.
    resets: Mutex<(Instant, u32)>,
    /// `--max-resets`; 0 is no limit.
    max_resets: u32,
    /// Set once the resets passed `max_resets`.
    too_many_resets: AtomicBool,
    /// Wakes the watcher when `open` falls to 0 or the resets pass the limit:
    /// those happen on the streams' own tasks.
    changed: Notify,
}

impl Activity {
    /// A connection beginning now, allowed `max_resets` resets per window.
    pub(crate) fn new(max_resets: u32) -> Arc<Activity> {
        let now = Instant::now();
        Arc::new(Activity {
            open: AtomicUsize::new(0),
            requested: AtomicBool::new(false),
            idle_since: Mutex::new(now),
            resets: Mutex::new((now, 0)),
            max_resets,
            too_many_resets: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// A complete request arrived: it is in flight until the returned guard
    /// is turned into its response's body and that body is done with.
    pub(crate) fn request(self: &Arc<Self>) -> InFlight {
        self.requested.store(true, Ordering::Release);
        self.open.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: self.clone(),
            finished: false,
        }
    }

    /// One request or body is done with; `reset` if before its end.
    fn done(&self, reset: bool) {
        let now = Instant::now();
        if reset && self.max_resets > 0 {
            let mut resets = self.resets.lock();
            if now.duration_since(resets.0) >= RESET_WINDOW {
                *resets = (now, 0);
            }
            resets.1 += 1;
            if resets.1 > self.max_resets && !self.too_many_resets.swap(true, Ordering::AcqRel) {
                self.changed.notify_one();
            }
        }
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock() = now;
            self.changed.notify_one();
        }
    }

    fn is_idle(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }
}

/// One request in flight. Dropped without a response (its stream was
/// reset while the handler waited, as a held poll may), it counts as a
/// reset.
pub(crate) struct InFlight {
    activity: Arc<Activity>,
    /// Whether it ended as it should: answered, or its body read to the end.
    finished: bool,
}

impl InFlight {
    /// The response to this request: its body stays in flight until hyper
    /// is done with it.
    pub(crate) fn respond(self, body: ResponseBody) -> Counted {
        Counted { body, flight: self }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.done(!self.finished);
    }
}

/// A response body that counts itself among its connection's open ones,
/// and as a reset if it is dropped before its end.
pub(crate) struct Counted {
    body: ResponseBody,
    flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            self.flight.finished = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // hyper may send a body that says it is complete without polling it
        // to its end.
        if hyper::body::Body::is_end_stream(&self.body) {
            self.flight.finished = true;
        }
    }
}

/// The deadlines a connection is held to.
pub(crate) struct Limits {
    /// From accept to the first complete request.
    pub(crate) first_request: Instant,
    /// With nothing in flight; `None` is no limit.
    pub(crate) idle: Option<Duration>,
    /// How long a connection asked to go away (idle, or too many resets)
    /// has to finish before it is dropped.
    pub(crate) linger: Duration,
}

/// Serves `conn` to its end under `limits`, and gracefully at `closing`.
pub(crate) async fn watch<C>(
    conn: C,
    activity: Arc<Activity>,
    limits: Limits,
    closing: CancellationToken,
) -> Result<(), C::Error>
where
    C: GracefulConnection,
{
    let mut conn = std::pin::pin!(conn);
    let mut closing_seen = false;
    // When the connection was asked to go away, and by when it must have.
    let mut asked: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let requested = activity.requested.load(Ordering::Acquire);
        if !requested && now >= limits.first_request {
            // Nothing in flight and nothing to flush: hyper's HTTP/1 server
            // drops a connection whose head is late the same way.
            debug!("no request within the header timeout");
            return Ok(());
        }
        if asked.is_some_and(|by| now >= by) {
            debug!("connection asked to go away did not");
            return Ok(());
        }
        let idle_by = limits
            .idle
            .filter(|_| requested && activity.is_idle())
            .map(|idle| *activity.idle_since.lock() + idle);
        if asked.is_none() {
            let why = if closing_seen && activity.is_idle() {
                // Every stream has ended, each with its `disconnect`.
                Some(None)
            } else if activity.too_many_resets.load(Ordering::Acquire) {
                debug!("too many streams reset; sending GOAWAY");
                Some(Some(limits.linger))
            } else if idle_by.is_some_and(|by| now >= by) {
                debug!("connection idle too long; sending GOAWAY");
                Some(Some(limits.linger))
            } else {
                None
            };
            if let Some(linger) = why {
                // HTTP/2 writes a GOAWAY ahead of buffered stream data: the
                // connection is polled once more, which writes what the last
                // streams left (their `disconnect`), before it is asked.
                if let Some(ended) = poll_once(conn.as_mut()).await {
                    return ended;
                }
                // At shutdown the shutdown timeout bounds it instead.
                asked = Some(linger.map_or(far_future(), |l| now + l));
                conn.as_mut().graceful_shutdown();
            }
        }
        let wake = if !requested {
            Some(limits.first_request)
        } else {
            asked.or(idle_by)
        };
        let wake = wake.unwrap_or_else(far_future);
        tokio::select! {
            biased;
            r = conn.as_mut() => return r,
            _ = closing.cancelled(), if !closing_seen => closing_seen = true,
            _ = activity.changed.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// Polls `f` once: its output if that finished it.
async fn poll_once<F: Future>(mut f: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// A deadline that never comes (a day is as good as never here, and
/// adding to it cannot overflow).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}
