//! Connection middleware's verdict: how `io.use_(..)` refuses a client.
//!
//! A middleware sees the [`Handshake`](crate::Handshake) (headers, query,
//! the client's `auth` payload, remote address) before any session exists,
//! so a refusal creates nothing and changes no count. The client gets the
//! status and `{"error": message, "data": ..}`; the browser client raises
//! `connect_error` with both and does not retry by itself.

use serde_json::Value;

/// A middleware's refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// 401 (who are you?) or 403 (not you).
    pub(crate) status: u16,
    /// The message the client's `connect_error` carries.
    pub(crate) message: String,
    /// Extra JSON for the client.
    pub(crate) data: Option<Value>,
}

impl Rejection {
    /// A 401: the client did not prove who it is.
    pub fn unauthorized(message: impl Into<String>) -> Rejection {
        Rejection {
            status: 401,
            message: message.into(),
            data: None,
        }
    }

    /// A 403: the client is known and may not connect.
    pub fn forbidden(message: impl Into<String>) -> Rejection {
        Rejection {
            status: 403,
            message: message.into(),
            data: None,
        }
    }

    /// Adds JSON the client receives as `err.data`.
    pub fn with_data(mut self, data: impl Into<Value>) -> Rejection {
        self.data = Some(data.into());
        self
    }
}
