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
    /// The request head is not HTTP/1.1 (answered before hyper sees it).
    #[error("malformed request")]
    MalformedRequest,
    /// The request head is larger than `--max-header-bytes`.
    #[error("request head too large")]
    HeadTooLarge,
    /// The backend could not take the session; the client may retry.
    #[error("{0}")]
    Backend(#[from] BackendError),
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
            | Error::MalformedRequest => StatusCode::BAD_REQUEST,
            Error::EmitRate | Error::AddressFull | Error::AddressRate => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::OriginNotAllowed => StatusCode::FORBIDDEN,
            Error::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Error::Full | Error::ShuttingDown | Error::Backend(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `Retry-After` seconds to send with it, for errors that pass.
    pub fn retry_after(&self) -> Option<&'static str> {
        match self {
            Error::Full | Error::ShuttingDown | Error::Backend(_) | Error::AddressFull => Some("5"),
            // Every rate is a whole number per second: a token is back
            // within a second.
            Error::EmitRate | Error::AddressRate => Some("1"),
            _ => None,
        }
    }

    /// The JSON body: `{"error": "<Display text>"}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.to_string() }).to_string()
    }
}

/// A backend call that failed: the shared count or broadcast could not be
/// reached or refused the call.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("backend unavailable: {0}")]
pub struct BackendError(pub String);
