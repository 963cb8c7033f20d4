//! A node's word for a client's address on a request it forwards.
//!
//! The node that holds a session applies the per-address limits to it, but
//! a forwarded request reaches that node from the forwarding node's
//! address, and a client's own `X-Forwarded-For` is the client's to write.
//! So the forwarding node names the client's address as it sees it (after
//! its own `--trusted-proxy` rules) in `X-Ssio-Client`, with an
//! HMAC-SHA256 under the cluster's key over that address and the request
//! target. The receiving node takes the address only when the MAC checks
//! and drops the header otherwise, so a client that writes it itself gains
//! nothing. The key never travels in a request: the nodes read it from
//! Redis, which is the cluster's trust boundary anyway (whoever can write
//! there can rewrite the count and every owner record).

use std::net::{IpAddr, SocketAddr};

use hmac::{Hmac, Mac};
use hyper::header::HeaderValue;
use hyper::Request;
use sha2::Sha256;

use crate::session::Peer;

/// The header a node vouches for a client's address in:
/// `<address> <hex HMAC-SHA256>`.
pub(crate) const CLIENT: &str = "x-ssio-client";

type Tag = Hmac<Sha256>;

fn tag(key: &[u8; 32], ip: &str, target: &str) -> Tag {
    let mut m = <Tag as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    m.update(ip.as_bytes());
    m.update(b"\n");
    m.update(target.as_bytes());
    m
}

/// The header value vouching that the request for `target` comes from `ip`.
pub(crate) fn sign(key: &[u8; 32], ip: IpAddr, target: &str) -> HeaderValue {
    let ip = ip.to_string();
    let mac = tag(key, &ip, target).finalize().into_bytes();
    HeaderValue::from_str(&format!("{ip} {}", hex(&mac))).expect("an address and hex are ASCII")
}

/// The address `value` vouches for on a request for `target`, if a holder
/// of `key` signed it.
pub(crate) fn verify(key: &[u8; 32], value: &HeaderValue, target: &str) -> Option<IpAddr> {
    let (ip, mac) = value.to_str().ok()?.split_once(' ')?;
    let addr: IpAddr = ip.parse().ok()?;
    tag(key, ip, target).verify_slice(&unhex(mac)?).ok()?;
    Some(addr)
}

/// Takes any vouch off `req`. One signed by a node makes the address it
/// names the request's peer (port 0: the client's port is not known here),
/// which is what the per-address limits then count; any other is dropped
/// unread.
pub(crate) fn accept<B>(key: Option<[u8; 32]>, req: &mut Request<B>) {
    let Some(value) = req.headers_mut().remove(CLIENT) else {
        return;
    };
    let target = req.uri().path_and_query().map_or("", |p| p.as_str());
    let vouched = key.and_then(|key| verify(&key, &value, target));
    match vouched {
        Some(ip) => {
            req.extensions_mut().insert(Peer(SocketAddr::new(ip, 0)));
        }
        None => tracing::debug!("a client address vouch that no node signed, ignored"),
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
pub(crate) fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_vouch_holds_only_for_its_key_address_and_target() {
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let v = sign(&KEY, ip, "/poll?resume=x");
        assert_eq!(verify(&KEY, &v, "/poll?resume=x"), Some(ip));
        assert_eq!(verify(&[8; 32], &v, "/poll?resume=x"), None);
        assert_eq!(verify(&KEY, &v, "/poll?resume=y"), None);
        let text = v.to_str().unwrap();
        let forged = text.replacen("203.0.113.9", "203.0.113.8", 1);
        assert_eq!(
            verify(
                &KEY,
                &HeaderValue::from_str(&forged).unwrap(),
                "/poll?resume=x"
            ),
            None
        );
        for junk in ["", "203.0.113.9", "203.0.113.9 00", "x y"] {
            assert_eq!(
                verify(&KEY, &HeaderValue::from_static(junk), "/"),
                None,
                "{junk}"
            );
        }
    }

    #[test]
    fn hex_round_trips() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 9) as u8);
        assert_eq!(unhex(&hex(&key)), Some(key));
        assert_eq!(unhex("zz"), None);
    }
}
