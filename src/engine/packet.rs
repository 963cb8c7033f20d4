//! An event encoded once for each transport, and the SSE framing that
//! encoding uses.
//!
//! A broadcast to N sessions clones a `Packet` (two reference-count bumps),
//! never re-encodes it: SSE streams write `sse`, long-polls splice `json`
//! into their response array. The framing is written by hand because it is
//! four rules.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

/// The keep-alive sent on an idle stream: a comment line, which `EventSource`
/// ignores but which resets every proxy's idle timer and gives the kernel
/// something to time out on when the peer has vanished.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

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
            sse: encode_sse(name, data_json),
            json: Bytes::from(json),
        }
    }

    /// An event that asks each recipient for an answer, numbered `id`:
    /// `{"event":..,"data":..,"ack":<id>}`. On a stream framed by name it
    /// goes unnamed, as that JSON, so that a client reads the id; a plain
    /// `EventSource` listener of the name does not see it, and ssio.js
    /// reads it from `onmessage`.
    pub fn with_ack(name: &str, data: &Value, id: u64) -> Packet {
        let name_json = Value::String(name.to_string()).to_string();
        let json = format!("{{\"event\":{name_json},\"data\":{data},\"ack\":{id}}}");
        Packet {
            sse: unnamed(json.as_bytes()),
            json: Bytes::from(json),
        }
    }

    /// The `connect` event that opens every SSE stream; `handshake` is the
    /// session's handshake JSON (sid and heartbeat periods).
    pub fn connect(handshake: &str) -> Packet {
        Packet::from_json("connect", handshake)
    }

    /// The `retry` event that comes just before a `disconnect` for
    /// `"server shutdown"`: come back after `ms` milliseconds. On SSE it
    /// also carries the standard `retry:` field, so a plain `EventSource`
    /// waits that long before it reconnects by itself.
    pub fn retry(ms: u64) -> Packet {
        let packet = Packet::new("retry", &Value::from(ms));
        let mut sse = BytesMut::with_capacity(packet.sse.len() + 24);
        sse.put_slice(format!("retry: {ms}\n").as_bytes());
        sse.put_slice(&packet.sse);
        Packet {
            sse: sse.freeze(),
            json: packet.json,
        }
    }

    /// The `disconnect` event that ends every session on either transport,
    /// carrying the reason's wire string.
    pub fn disconnect(reason: &str) -> Packet {
        Packet::new("disconnect", &Value::from(reason))
    }
}

/// Encodes one SSE event: `event: <name>` then one `data:` line per line of
/// `data`, then the blank line that dispatches it.
///
/// Data containing line breaks becomes several `data:` lines, which the
/// browser joins back with `\n`. A line break is `\r\n`, `\r` or `\n`, as
/// the SSE parser reads them: a lone `\r` left inside a `data:` line would
/// end it there, and the rest would be read as a field of its own. The caller guarantees that `name` has no CR or LF
/// (the socket layer validates names), because a newline there would end the
/// field early and let the rest be read as another field.
pub fn encode_sse(name: &str, data: &str) -> Bytes {
    debug_assert!(!name.contains(['\n', '\r']), "event name with a newline");
    let mut buf = BytesMut::with_capacity(name.len() + data.len() + 16);
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_u8(b'\n');
    for line in lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// Writes `json` as one unnamed SSE event (`data: <json>`), the framing of
/// shared streams and of `frames=json` streams: the event's name travels
/// inside the JSON, so an `EventSource`'s `onmessage` sees every event,
/// whatever its name. JSON from [`Packet::new`] has no raw line break; any
/// other data is split into `data:` lines as [`encode_sse`] splits it.
pub(crate) fn put_unnamed(buf: &mut BytesMut, json: &[u8]) {
    // JSON is UTF-8; bytes that are not are framed as one line, whole.
    let text = std::str::from_utf8(json).ok();
    let mut one = |line: &[u8]| {
        buf.put_slice(b"data: ");
        buf.put_slice(line);
        buf.put_u8(b'\n');
    };
    match text {
        Some(text) => lines(text).for_each(|l| one(l.as_bytes())),
        None => one(json),
    }
    buf.put_u8(b'\n');
}

/// [`put_unnamed`] into a buffer of its own.
pub(crate) fn unnamed(json: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(json.len() + 8);
    put_unnamed(&mut buf, json);
    buf.freeze()
}

/// The lines of `data`, split at `\r\n`, `\r` and `\n` alike; always at
/// least one, so empty data still gets its `data:` line.
fn lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    })
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

    #[test]
    fn lifecycle_events() {
        let c = Packet::connect(r#"{"sid":"x"}"#);
        assert_eq!(&c.sse[..], b"event: connect\ndata: {\"sid\":\"x\"}\n\n");
        let d = Packet::disconnect("transport close");
        assert_eq!(
            &d.sse[..],
            b"event: disconnect\ndata: \"transport close\"\n\n"
        );
        assert_eq!(
            &d.json[..],
            br#"{"event":"disconnect","data":"transport close"}"#
        );
    }

    #[test]
    fn the_retry_hint_carries_the_sse_field_too() {
        let r = Packet::retry(1234);
        assert_eq!(&r.sse[..], b"retry: 1234\nevent: retry\ndata: 1234\n\n");
        assert_eq!(&r.json[..], br#"{"event":"retry","data":1234}"#);
    }

    #[test]
    fn single_line() {
        assert_eq!(
            &encode_sse("user count", "3")[..],
            b"event: user count\ndata: 3\n\n"
        );
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(
            &encode_sse("x", "a\nb\r\nc")[..],
            b"event: x\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn a_lone_carriage_return_is_a_line_break_too() {
        assert_eq!(
            &encode_sse("x", "a\rb\r\rc\r\n\nd\r")[..],
            b"event: x\ndata: a\ndata: b\ndata: \ndata: c\ndata: \ndata: d\ndata: \n\n"
        );
        // Through the JSON constructor, whose data is JSON text as given.
        let p = Packet::from_json("x", "{\"a\":\r1}");
        assert_eq!(&p.sse[..], b"event: x\ndata: {\"a\":\ndata: 1}\n\n");
        assert!(!p.sse.contains(&b'\r'));
    }

    proptest::proptest! {
        #[test]
        fn data_reads_back_as_the_browser_joins_it(data in "[a\r\n]{0,12}") {
            let sse = encode_sse("x", &data);
            let text = std::str::from_utf8(&sse).unwrap();
            proptest::prop_assert!(!text.contains('\r'));
            let joined: Vec<&str> = text
                .strip_suffix("\n\n")
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.strip_prefix("data: ").unwrap())
                .collect();
            let want = data.replace("\r\n", "\n").replace('\r', "\n");
            proptest::prop_assert_eq!(joined.join("\n"), want);
        }
    }

    #[test]
    fn empty_data_still_has_a_data_line() {
        assert_eq!(&encode_sse("x", "")[..], b"event: x\ndata: \n\n");
    }
}
