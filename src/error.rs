//! Every way a request can fail, mapped once to an HTTP status and a JSON body.
//!
//! Handlers return `Result<Response, Error>`; the router turns an `Error` into
//! `{"error": "..."}` with the status below, so no handler builds an error
//! response by hand and every client sees the same shape.

use hyper::StatusCode;

/// A request the server refuses, with the reason a client can act on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// No route has this path.
    #[error("not found")]
    NotFound,
    /// The path exists but not for this method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// The sid is missing, malformed, expired or was never issued. The text is
    /// fixed so that a client can recognise it and handshake again.
    #[error("unknown session")]
    UnknownSession,
    /// A long-poll arrived while another one for the same session is pending.
    #[error("a poll is already pending for this session")]
    PollPending,
    /// A long-poll named a session that streams over SSE.
    #[error("session uses the sse transport, not polling")]
    WrongTransport,
    /// The body is larger than `--max-payload`.
    #[error("payload too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    /// The body did not arrive within `--body-timeout`.
    #[error("request body timed out")]
    BodyTimeout,
    /// The body is not the JSON the route expects.
    #[error("invalid JSON: {0}")]
    BadJson(String),
    /// The event name breaks a rule (empty, too long, newline, reserved).
    #[error("invalid event name: {0}")]
    BadEventName(&'static str),
    /// The body could not be read (the client went away mid-body).
    #[error("could not read request body")]
    BodyRead,
    /// A shared-stream request named a stream that is not open (never was,
    /// or its carrier went away).
    #[error("unknown mux stream")]
    UnknownMux,
    /// A shared stream already carries `--max-mux-sessions` sessions.
    #[error("too many sessions on this stream")]
    MuxFull,
    /// A re-attachment named a session that is live on a stream (or on
    /// another transport) rather than waiting for a new carrier.
    #[error("session is not waiting to be re-attached")]
    NotDetached,
    /// A resume named a live session with a position that session was never
    /// sent (a forged cursor, or one spliced from another session's): it is
    /// refused and the session it names carries on untouched.
    #[error("resume cursor does not match the session")]
    CursorMismatch,
    /// A resume named a session whose stream is still open: the sid is
    /// held by that connection, and two holders must not take it from each
    /// other in turn.
    #[error("session is connected on another stream")]
    SessionHeld,
    /// `--max-sessions` live sessions already exist.
    #[error("server is full, retry later")]
    Full,
    /// The server is shutting down and takes no new sessions.
    #[error("server is shutting down")]
    ShuttingDown,
    /// A CORS preflight from an origin outside `--cors-origin`.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The session sent client events faster than `--max-emit-rate` allows
    /// after its burst; the event was dropped.
    #[error("too many events, slow down")]
    EmitRate,
    /// The client's address already holds `--max-sessions-per-ip` sessions.
    #[error("too many sessions from this address")]
    AddressFull,
    /// The client's address started sessions faster than
    /// `--max-new-sessions-per-ip` allows.
    #[error("too many new sessions from this address, retry later")]
    AddressRate,
    /// The client's address already holds `--max-tickets-per-ip`
    /// handshake tickets that are neither redeemed nor expired.
    #[error("too many handshake tickets from this address, retry later")]
    AddressTickets,
    /// The request head is not HTTP/1.1 (answered before hyper sees it).
    #[error("malformed request")]
    MalformedRequest,
    /// The request head is larger than `--max-header-bytes`.
    #[error("request head too large")]
    HeadTooLarge,
    /// The backend could not take the session; the client may retry.
    #[error("{0}")]
    Backend(#[from] BackendError),
    /// A resume cursor (`Last-Event-ID` or `resume=`) that is not one the
    /// server writes. A well-formed cursor it cannot honour is not an
    /// error: the client gets a fresh session marked as having missed
    /// events.
    #[error("invalid resume cursor")]
    BadCursor,
    /// The `auth` payload is not a JSON object, or a handshake ticket is
    /// malformed, unknown, used or expired.
    #[error("invalid auth: {0}")]
    BadAuth(&'static str),
    /// The `auth` payload is larger than `--max-auth-bytes`.
    #[error("auth payload too large (limit {0} bytes)")]
    AuthTooLarge(usize),
    /// A `POST /ack` for an answer the session does not owe: an id never
    /// sent to it, one already answered or given up on, or another
    /// session's.
    #[error("unknown acknowledgement")]
    UnknownAck,
    /// A `POST /ack` body that is not `{"id": <whole number>, "data": ..}`.
    #[error("invalid ack answer: {0}")]
    BadAnswer(&'static str),
    /// A query parameter the route cannot use.
    #[error("invalid query: {0}")]
    BadQuery(&'static str),
    /// A `frames` parameter on `GET /events` other than `json`.
    #[error("invalid frames: only \"json\" is known")]
    BadFrames,
    /// An `"ack"` field that is not `true`.
    #[error("invalid ack: {0}")]
    BadAck(&'static str),
    /// Connection middleware refused the client: no session was made. The
    /// status is 401 or 403, as the middleware chose; `data` is its JSON.
    #[error("{message}")]
    Rejected {
        /// 401 or 403.
        status: u16,
        /// What the client's `connect_error` carries as its message.
        message: String,
        /// Extra JSON for the client (already serialized), if any.
        data: Option<String>,
    },
    /// A room name breaks a rule (empty, too long), or the socket is in
    /// `--max-rooms-per-socket` rooms already.
    #[error("invalid room: {0}")]
    BadRoom(&'static str),
    /// This node has `--forward-max-inflight` requests in flight to the
    /// node holding the session already.
    #[error("too many requests in flight to another node")]
    ForwardBusy,
    /// A middleware or event handler panicked; nothing else was harmed.
    #[error("handler failed")]
    HandlerFailed,
    /// A JWT longer than `--max-token-bytes`.
    #[error("token too large (limit {0} bytes)")]
    TokenTooLarge(usize),
    /// A session refreshed its token sooner than `--refresh-min-interval`
    /// after the last time.
    #[error("too many refreshes, slow down")]
    RefreshRate,
    /// A refresh whose token names another user (`sub`) than the session's.
    #[error("token belongs to another user")]
    NotTokenOwner,
    /// A server API request without a key `--api-key` names.
    #[error("missing or invalid API key")]
    ApiKey,
    /// A server API command named a session no node holds.
    #[error("unknown session")]
    ApiUnknownSession,
    /// A `POST /api/batch` with more than `--api-max-batch` commands.
    #[error("too many commands in one batch (limit {0})")]
    BatchTooLarge(usize),
    /// A publish whose `idempotency_key` is still being published by
    /// another request.
    #[error("a publish with this idempotency_key is in progress")]
    IdempotencyBusy,
}

impl Error {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnknownSession
            | Error::PollPending
            | Error::WrongTransport
            | Error::BadJson(_)
            | Error::BadEventName(_)
            | Error::BodyRead
            | Error::MalformedRequest
            | Error::BadCursor
            | Error::BadAuth(_)
            | Error::BadAck(_)
            | Error::BadFrames
            | Error::BadQuery(_)
            | Error::UnknownAck
            | Error::BadAnswer(_)
            | Error::BadRoom(_)
            | Error::UnknownMux
            | Error::NotDetached => StatusCode::BAD_REQUEST,
            Error::CursorMismatch | Error::SessionHeld => StatusCode::CONFLICT,
            Error::MuxFull => StatusCode::TOO_MANY_REQUESTS,
            Error::EmitRate | Error::AddressFull | Error::AddressRate | Error::AddressTickets => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::PayloadTooLarge(_) | Error::AuthTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::OriginNotAllowed => StatusCode::FORBIDDEN,
            Error::Rejected { status: 401, .. } => StatusCode::UNAUTHORIZED,
            Error::Rejected { .. } => StatusCode::FORBIDDEN,
            Error::HandlerFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ApiKey => StatusCode::UNAUTHORIZED,
            Error::ApiUnknownSession => StatusCode::NOT_FOUND,
            Error::BatchTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::IdempotencyBusy => StatusCode::CONFLICT,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::TokenTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RefreshRate => StatusCode::TOO_MANY_REQUESTS,
            Error::NotTokenOwner => StatusCode::FORBIDDEN,
            Error::Full | Error::ShuttingDown | Error::Backend(_) | Error::ForwardBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `Retry-After` seconds to send with it, for errors that pass.
    pub fn retry_after(&self) -> Option<&'static str> {
        match self {
            // A ticket is redeemed within a round trip, or expires.
            Error::AddressTickets => Some("1"),
            Error::Full | Error::ShuttingDown | Error::Backend(_) | Error::AddressFull => Some("5"),
            // Every rate is a whole number per second: a token is back
            // within a second.
            Error::EmitRate | Error::AddressRate => Some("1"),
            // A forward in flight is a poll held up to pingInterval at
            // most, usually a round trip: a slot is back soon.
            Error::ForwardBusy => Some("1"),
            // The default interval is a second.
            Error::RefreshRate => Some("1"),
            _ => None,
        }
    }

    /// The JSON body: `{"error": "<Display text>"}`, plus `"data"` for a
    /// middleware rejection that carries some.
    pub fn body(&self) -> String {
        match self {
            Error::Rejected {
                message,
                data: Some(data),
                ..
            } => format!(
                "{{\"error\":{},\"data\":{data}}}",
                serde_json::Value::from(message.as_str())
            ),
            _ => serde_json::json!({ "error": self.to_string() }).to_string(),
        }
    }
}

/// A backend call that failed: the shared count or broadcast could not be
/// reached or refused the call.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("backend unavailable: {0}")]
pub struct BackendError(pub String);
