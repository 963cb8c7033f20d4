//! The keep-alive timer of an SSE body, plain or shared: a comment frame
//! once the stream has been idle for `pingInterval`, so proxies keep the
//! connection and the client sees the server is alive.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Fires once `period` has passed since the last frame went out.
///
/// Not reset by every frame: moving a timer costs a trip through the timer
/// wheel per frame per stream, so it is moved only when it fires early.
pub(crate) struct KeepAlive {
    /// Fires at least `period` after the last write.
    timer: Pin<Box<Sleep>>,
    /// When the last frame was handed out.
    last_sent: Instant,
    /// The idle time before a keep-alive: pingInterval.
    period: Duration,
}

impl KeepAlive {
    /// A timer that first fires `period` from now.
    pub(crate) fn new(period: Duration) -> KeepAlive {
        KeepAlive {
            timer: Box::pin(tokio::time::sleep(period)),
            last_sent: Instant::now(),
            period,
        }
    }

    /// Notes that a frame went out now.
    pub(crate) fn sent(&mut self) {
        self.sent_at(Instant::now());
    }

    /// Notes that a frame went out at `at`, a time the caller read anyway.
    pub(crate) fn sent_at(&mut self, at: Instant) {
        self.last_sent = at;
    }

    /// Ready when a keep-alive is due; the caller sends one, and the timer
    /// is already set for the next.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            std::task::ready!(self.timer.as_mut().poll(cx));
            let due = self.last_sent + self.period;
            let now = Instant::now();
            if due <= now {
                self.timer.as_mut().reset(now + self.period);
                return Poll::Ready(());
            }
            // Something went out since the timer was set: wait out the
            // rest of the period from that write.
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll(k: &mut KeepAlive) -> Poll<()> {
        k.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test(start_paused = true)]
    async fn fires_only_after_a_whole_idle_period() {
        let mut k = KeepAlive::new(Duration::from_secs(10));
        assert!(poll(&mut k).is_pending());
        tokio::time::advance(Duration::from_secs(6)).await;
        k.sent();
        tokio::time::advance(Duration::from_secs(6)).await;
        // 12 s since the start, but only 6 since the last frame.
        assert!(poll(&mut k).is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(poll(&mut k).is_ready());
        // Set for the next period straight away.
        assert!(poll(&mut k).is_pending());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(poll(&mut k).is_ready());
    }
}
