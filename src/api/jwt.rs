//! JWT sessions: a client proves who it is with a signed token that
//! expires, and keeps its session by sending a fresh one before then.
//!
//! The token rides in the `auth` payload (`{"token": "<jwt>"}`) of `POST
//! /handshake`, so it is never in a URL, and is checked there before a
//! ticket is issued, again when the ticket is redeemed (it may have expired
//! in between), and for `POST /refresh`. Its `exp` is required and sets
//! when the session ends with "token expired"; its `sub` is the session's
//! user id, and a refresh must carry the same one.
//!
//! The keys are fixed at start, and each key accepts only the algorithm of
//! its own kind: an HMAC secret HS256, an RSA key RS256, an EC key ES256.
//! So a token cannot choose how it is checked: an HS256 token "signed" with
//! a public key's PEM as its secret is refused by a server that holds that
//! public key, and `alg: none` is no algorithm at all. A key set's keys are
//! found by the token's `kid`, compared as a string against the set's own
//! ids: it never names a file or a URL.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::Config;

/// Why a token was refused: what the client's `connect_error` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed, wrongly signed, an algorithm its key does not take, an
    /// unknown `kid`, or no `exp`.
    Invalid,
    /// Well signed, but its `exp` has passed.
    Expired,
}

impl Refusal {
    /// The message the client reads.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Invalid => "invalid token",
            Refusal::Expired => "token expired",
        }
    }
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The `sub` claim, if the token has one.
    pub(crate) user: Option<Box<str>>,
    /// The `exp` claim, in seconds since the Unix epoch.
    pub(crate) exp: u64,
}

impl Grant {
    /// How long from now until it expires (zero if it has).
    pub(crate) fn remaining(&self) -> Duration {
        let at = UNIX_EPOCH + Duration::from_secs(self.exp);
        at.duration_since(SystemTime::now()).unwrap_or_default()
    }
}

/// One key and the one algorithm it accepts.
struct Key {
    /// The decoding key.
    key: DecodingKey,
    /// HS256, RS256 or ES256, by the key's kind.
    alg: Algorithm,
}

/// The configured keys.
pub(crate) struct Verifier {
    /// `--jwt-secret` or `--jwt-public-key`: used for tokens with or
    /// without a `kid`.
    fixed: Vec<Key>,
    /// `--jwt-jwks`, by `kid`: a token must name one of these.
    by_kid: HashMap<String, Key>,
}

impl Verifier {
    /// The verifier `config` asks for, `None` if it names no key; an error
    /// says which key file could not be used.
    pub(crate) fn from_config(config: &Config) -> Result<Option<Verifier>, String> {
        let mut fixed = Vec::new();
        if let Some(secret) = &config.jwt_secret {
            if secret.0.is_empty() {
                return Err("--jwt-secret is empty".into());
            }
            fixed.push(Key {
                key: DecodingKey::from_secret(secret.0.as_bytes()),
                alg: Algorithm::HS256,
            });
        }
        if let Some(path) = &config.jwt_public_key {
            fixed.push(public_key(path)?);
        }
        let mut by_kid = HashMap::new();
        if let Some(path) = &config.jwt_jwks {
            by_kid = key_set(path)?;
        }
        if fixed.is_empty() && by_kid.is_empty() {
            return Ok(None);
        }
        Ok(Some(Verifier { fixed, by_kid }))
    }

    /// Checks `token` and what it grants. The caller has bounded its
    /// length.
    pub(crate) fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Invalid)?;
        let keys: Vec<&Key> = match &header.kid {
            Some(kid) if !self.by_kid.is_empty() => {
                vec![self.by_kid.get(kid).ok_or(Refusal::Invalid)?]
            }
            _ => self.fixed.iter().collect(),
        };
        let mut refusal = Refusal::Invalid;
        for key in keys.into_iter().filter(|k| k.alg == header.alg) {
            let mut validation = Validation::new(key.alg);
            // A token's life is its issuer's choice; the server adds none.
            validation.leeway = 0;
            validation.set_required_spec_claims(&["exp"]);
            // No audience is configured, so none is checked: the library
            // would otherwise refuse every token that names one.
            validation.validate_aud = false;
            match decode::<Value>(token, &key.key, &validation) {
                Ok(data) => {
                    let grant = grant(&data.claims)?;
                    // The library lets a token through for the whole second
                    // of its `exp`; the session would end at once.
                    if grant.remaining().is_zero() {
                        return Err(Refusal::Expired);
                    }
                    return Ok(grant);
                }
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    refusal = Refusal::Expired;
                }
                Err(_) => {}
            }
        }
        Err(refusal)
    }
}

/// The grant of verified claims: `exp` a whole number, `sub` a string if
/// present.
fn grant(claims: &Value) -> Result<Grant, Refusal> {
    let exp = claims["exp"].as_u64().ok_or(Refusal::Invalid)?;
    let user = match &claims["sub"] {
        Value::Null => None,
        Value::String(s) => Some(Box::from(s.as_str())),
        _ => return Err(Refusal::Invalid),
    };
    Ok(Grant { user, exp })
}

fn public_key(path: &Path) -> Result<Key, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok(Key {
            key,
            alg: Algorithm::RS256,
        });
    }
    DecodingKey::from_ec_pem(&pem)
        .map(|key| Key {
            key,
            alg: Algorithm::ES256,
        })
        .map_err(|_| {
            format!(
                "--jwt-public-key {}: not an RSA or EC public key in PEM",
                path.display()
            )
        })
}

fn key_set(path: &Path) -> Result<HashMap<String, Key>, String> {
    let what = || format!("--jwt-jwks {}", path.display());
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", what()))?;
    let set: JwkSet = serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", what()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else {
            return Err(format!("{}: a key has no \"kid\"", what()));
        };
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            _ => return Err(format!("{}: key {kid:?} is of an unsupported type", what())),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: {kid:?}: {e}", what()))?;
        keys.insert(kid.clone(), Key { key, alg });
    }
    if keys.is_empty() {
        return Err(format!("{}: no keys", what()));
    }
    Ok(keys)
}
