//! An event encoded once for each transport.
//!
//! A broadcast to N sessions clones a `Packet` (two reference-count bumps),
//! never re-encodes it: SSE streams write `sse`, long-polls splice `json`
//! into their response array.

use bytes::Bytes;
use serde_json::Value;

use crate::sse;

/// One event, pre-encoded for SSE and for the long-poll JSON array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// `event: <name>\ndata: <json>\n\n`, ready for an SSE stream.
    pub sse: Bytes,
    /// `{"event":"<name>","data":<json>}`, ready for a poll response.
    pub json: Bytes,
}

impl Packet {
    /// Encodes `data` as JSON under `name`.
    ///
    /// The name must already be valid (no CR or LF); the socket layer checks
    /// names from clients and the server's own names are literals.
    pub fn new(name: &str, data: &Value) -> Packet {
        let data = data.to_string();
        Packet::from_json(name, &data)
    }

    /// Builds a packet from data that is already serialized JSON.
    pub fn from_json(name: &str, data_json: &str) -> Packet {
        let name_json = Value::String(name.to_string()).to_string();
        let json = format!("{{\"event\":{name_json},\"data\":{data_json}}}");
        Packet {
            sse: sse::encode(name, data_json),
            json: Bytes::from(json),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings() {
        let p = Packet::new("user count", &Value::from(3));
        assert_eq!(&p.sse[..], b"event: user count\ndata: 3\n\n");
        assert_eq!(&p.json[..], br#"{"event":"user count","data":3}"#);
    }

    #[test]
    fn strings_stay_on_one_data_line() {
        let p = Packet::new("chat message", &Value::from("a\nb"));
        assert_eq!(&p.sse[..], b"event: chat message\ndata: \"a\\nb\"\n\n");
    }
}
