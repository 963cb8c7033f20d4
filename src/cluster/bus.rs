//! What travels on the cluster's pub/sub channels, and how it is read back.
//!
//! A broadcast is published once per emit as
//! `<origin>\n<seq>\n<latest 0|1>\n<target>\n<name>\n<data json>`, where
//! `<target>` is empty for everyone or `{"r":[rooms],"x":<sid or null>}`
//! (JSON, so room names with any character stay on one line): the receiving node
//! builds the packet once for all its sessions. `origin` names the sending
//! process (node id plus a per-boot id), `seq` counts that origin's
//! broadcasts, so a receiver drops its own broadcasts (already delivered
//! locally) and anything it has already seen, and notices gaps.
//! A count announcement is `<version> <count> <users>`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::engine::packet::Packet;
use crate::engine::rooms::Target;
use crate::session::Sid;

/// One broadcast as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wire {
    pub(crate) origin: String,
    pub(crate) seq: u64,
    pub(crate) latest: bool,
    /// Rooms and the sender left out; each node finds its own members.
    pub(crate) target: Target,
    pub(crate) name: String,
    pub(crate) data: String,
}

/// The data part of a packet's JSON form, `{"event":<name>,"data":<data>}`,
/// so that the wire carries each byte once.
pub(crate) fn data_of<'a>(packet: &'a Packet, name: &str) -> Option<&'a str> {
    let json = std::str::from_utf8(&packet.json).ok()?;
    let name_json = serde_json::Value::String(name.to_string()).to_string();
    let rest = json.strip_prefix("{\"event\":")?;
    let rest = rest.strip_prefix(name_json.as_str())?;
    rest.strip_prefix(",\"data\":")?.strip_suffix('}')
}

/// Encodes one broadcast for the events channel.
pub(crate) fn encode(
    origin: &str,
    seq: u64,
    latest: bool,
    target: &Target,
    name: &str,
    data: &str,
) -> Bytes {
    let latest = if latest { '1' } else { '0' };
    let target = if target.is_all() && target.except.is_none() {
        String::new()
    } else {
        let rooms: Vec<&str> = target.rooms.iter().map(|r| &**r).collect();
        json!({ "r": rooms, "x": target.except.map(|s| s.to_string()) }).to_string()
    };
    Bytes::from(format!(
        "{origin}\n{seq}\n{latest}\n{target}\n{name}\n{data}"
    ))
}

/// Reads a target line; `None` if malformed.
fn decode_target(line: &str) -> Option<Target> {
    if line.is_empty() {
        return Some(Target::all());
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let rooms = v
        .get("r")?
        .as_array()?
        .iter()
        .map(|r| r.as_str().map(Arc::<str>::from))
        .collect::<Option<Vec<_>>>()?;
    let except = match v.get("x")? {
        Value::Null => None,
        Value::String(s) => Some(Sid::try_parse(s).ok()?),
        _ => return None,
    };
    Some(Target { rooms, except })
}

/// Reads one broadcast; `None` for anything malformed.
pub(crate) fn decode(payload: &[u8]) -> Option<Wire> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.splitn(6, '\n');
    let origin = parts.next()?.to_string();
    let seq = parts.next()?.parse().ok()?;
    let latest = match parts.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let target = decode_target(parts.next()?)?;
    let name = parts.next()?.to_string();
    let data = parts.next()?.to_string();
    if name.is_empty() || name.contains('\r') {
        return None;
    }
    Some(Wire {
        origin,
        seq,
        latest,
        target,
        name,
        data,
    })
}

impl Wire {
    /// The packet this node's sessions receive.
    pub(crate) fn packet(&self) -> Packet {
        Packet::from_json(&self.name, &self.data)
    }
}

/// Reads a count announcement: `(version, count, users)`.
pub(crate) fn decode_count(payload: &[u8]) -> Option<(u64, u64, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split(' ');
    let version = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let users = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((version, count, users))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_broadcast_crosses_the_wire_unchanged() {
        let data = json!({"sid": "ab", "message": "two\nlines \"quoted\""});
        let packet = Packet::new("chat message", &data);
        let raw = data_of(&packet, "chat message").unwrap();
        let wire = encode("n1/x", 7, false, &Target::all(), "chat message", raw);
        let back = decode(&wire).unwrap();
        assert_eq!(
            (back.origin.as_str(), back.seq, back.latest),
            ("n1/x", 7, false)
        );
        assert_eq!(back.target, Target::all());
        assert_eq!(back.packet(), packet);
    }

    #[test]
    fn a_room_target_crosses_the_wire_with_its_sender_left_out() {
        let sender = Sid::new_v4();
        let target = Target {
            rooms: vec![Arc::from("a\nroom"), Arc::from("b")],
            except: Some(sender),
        };
        let wire = encode("n1/x", 8, false, &target, "chat", "1");
        let back = decode(&wire).unwrap();
        assert_eq!(back.target, target);
        assert_eq!(back.name, "chat");
        for bad in [
            "{\"r\":\"a\",\"x\":null}",
            "{\"r\":[],\"x\":\"nope\"}",
            "[1]",
        ] {
            let raw = format!("n1/x\n9\n0\n{bad}\nchat\n1");
            assert_eq!(decode(raw.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in [
            &b""[..],
            b"a\nb\n0\n\nx\n1",
            b"a\n1\n2\n\nx\n1",
            b"a\n1\n0\n\n\n1",
            b"\xff",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(decode_count(b"12 3 2"), Some((12, 3, 2)));
        assert_eq!(decode_count(b"12 3"), None);
        assert_eq!(decode_count(b"12 3 2 1"), None);
        assert_eq!(decode_count(b"-1 3 2"), None);
    }
}
