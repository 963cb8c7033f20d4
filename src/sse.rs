//! Server-Sent Events wire framing, written by hand because it is four rules.
//!
//! An event is encoded once into `Bytes` and that buffer is shared by every
//! stream that sends it, so a broadcast to N clients costs one encoding.

use bytes::{BufMut, Bytes, BytesMut};

/// The keep-alive sent on an idle stream: a comment line, which `EventSource`
/// ignores but which resets every proxy's idle timer and gives the kernel
/// something to time out on when the peer has vanished.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Encodes one event: `event: <name>` then one `data:` line per line of
/// `data`, then the blank line that dispatches it.
///
/// Data containing newlines becomes several `data:` lines, which the browser
/// joins back with `\n`. The caller guarantees that `name` has no CR or LF
/// (the hub validates names), because a newline there would end the field
/// early and let the rest be read as another field.
pub fn encode(name: &str, data: &str) -> Bytes {
    debug_assert!(!name.contains(['\n', '\r']), "event name with a newline");
    let mut buf = BytesMut::with_capacity(name.len() + data.len() + 16);
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_u8(b'\n');
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line() {
        assert_eq!(
            &encode("user count", "3")[..],
            b"event: user count\ndata: 3\n\n"
        );
    }

    #[test]
    fn multi_line_data_becomes_several_data_lines() {
        assert_eq!(
            &encode("x", "a\nb\r\nc")[..],
            b"event: x\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn empty_data_still_has_a_data_line() {
        assert_eq!(&encode("x", "")[..], b"event: x\ndata: \n\n");
    }
}
