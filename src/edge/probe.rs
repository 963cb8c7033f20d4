//! What an orchestrator and a monitoring system ask: is the process up
//! (`/healthz`), may it take sessions (`/readyz`), and how is it doing
//! (`/metrics`).
//!
//! Liveness never depends on anything but the process answering, so that
//! an orchestrator never restarts a node for being busy or for its backend
//! being away. Readiness is what a load balancer should route by: it turns
//! 503 while the node drains for shutdown, while its session table is full,
//! and while a configured backend cannot reach its shared store.

use bytes::Bytes;
use hyper::StatusCode;

use crate::api::io::Io;
use crate::ops::metrics::{BackendGauges, Snapshot};
use crate::session::Transport;

/// Why a node is not ready, as the `reason` of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// Shutting down: existing sessions are being ended, no new ones.
    Draining,
    /// `--max-sessions` live sessions: a new one would get 503.
    Full,
    /// The backend reports it cannot reach the shared store.
    BackendUnreachable,
}

impl NotReady {
    fn as_str(self) -> &'static str {
        match self {
            NotReady::Draining => "draining",
            NotReady::Full => "session limit reached",
            NotReady::BackendUnreachable => "backend unreachable",
        }
    }
}

/// `GET /healthz`: the process answers.
pub(crate) fn healthz() -> (StatusCode, Bytes) {
    (StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

/// Whether `io` should be sent new sessions, and if not, why.
pub(crate) fn readiness(io: &Io) -> Result<(), NotReady> {
    let hub = io.hub();
    if hub.is_shutting_down() {
        return Err(NotReady::Draining);
    }
    if hub.session_count() >= io.config().max_sessions {
        return Err(NotReady::Full);
    }
    if hub.backend.status().is_some_and(|s| !s.connected) {
        return Err(NotReady::BackendUnreachable);
    }
    Ok(())
}

/// `GET /readyz`: 200 `{"status":"ready"}`, or 503 with the reason.
pub(crate) fn readyz(io: &Io) -> (StatusCode, Bytes) {
    match readiness(io) {
        Ok(()) => (StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#)),
        Err(why) => {
            let body = serde_json::json!({ "status": "not ready", "reason": why.as_str() });
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(body.to_string()),
            )
        }
    }
}

/// `GET /metrics`: the Prometheus exposition.
pub(crate) fn metrics(io: &Io) -> String {
    let hub = io.hub();
    hub.metrics.encode(Snapshot {
        sse: hub.transport_count(Transport::Sse),
        polling: hub.transport_count(Transport::Polling),
        tickets: io.ticket_count(),
        acks_owed: io.acks_owed(),
        backend: hub.backend.status().map(|s| BackendGauges {
            connected: s.connected,
            reconnects: s.reconnects,
            lag: s.lag,
        }),
    })
}
