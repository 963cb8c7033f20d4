//! JWT sessions: a token opens a session whose user is its `sub`; every
//! bad token is refused with its status and message and makes no session;
//! a session ends with "token expired" at its token's `exp` unless a fresh
//! token for the same user came first; and the hostile cases: `alg: none`,
//! an HS256 token keyed with the server's RSA public key, `kid` tricks,
//! oversized tokens, refresh floods and refreshing another user's session.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use ssio::config::JwtSecret;
use ssio::Config;

const SECRET: &str = "a test secret of no importance";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/jwt")
        .join(name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(String::from);
    let key = std::fs::read(fixture("rsa.key")).unwrap();
    encode(&header, &claims, &EncodingKey::from_rsa_pem(&key).unwrap()).unwrap()
}

/// A good HS256 token's claims under another header (base64url), for
/// tokens no honest library writes.
fn reheaded(header: &str, claims: Value, signature: &str) -> String {
    let good = hs256(claims);
    let payload = good.split('.').nth(1).unwrap();
    format!("{header}.{payload}.{signature}")
}

/// `{"alg":"none","typ":"JWT"}`
const ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
/// `{"alg":"HS512","typ":"JWT"}`
const ALG_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9";

async fn start(config: Config) -> Server {
    Server::start_with("127.0.0.1:0".parse().unwrap(), config, |io| {
        io.on_connection(|socket| {
            socket.on_ack("user", |socket, _, ack| {
                ack.send(json!(socket.user_id()));
            });
        });
    })
    .await
}

fn with_secret() -> Config {
    Config {
        jwt_secret: Some(JwtSecret(SECRET.into())),
        // The polling sessions these tests open never poll again: with the
        // harness's 400 ms first-poll deadline they would end while a
        // loaded machine is still sending a test's requests.
        ping_interval_ms: 10_000,
        ping_timeout_ms: 10_000,
        first_poll_timeout_ms: 10_000,
        ..fast_config()
    }
}

async fn handshake(server: &Server, token: &str) -> Resp {
    post(
        server.addr,
        "/handshake",
        json!({ "token": token }).to_string().as_bytes(),
    )
    .await
}

/// Opens a polling session with `token`; its sid.
async fn open(server: &Server, token: &str) -> String {
    let r = handshake(server, token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["ticket"].as_str().unwrap().to_string();
    let hs = get(server.addr, &format!("/poll?ticket={t}")).await;
    assert_eq!(hs.status, 200, "{}", hs.text());
    hs.json()["sid"].as_str().unwrap().to_string()
}

async fn refresh(server: &Server, sid: &str, token: &str) -> Resp {
    post(
        server.addr,
        &format!("/refresh?sid={sid}"),
        json!({ "token": token }).to_string().as_bytes(),
    )
    .await
}

fn assert_refused(r: &Resp, status: u16, error: &str) {
    assert_eq!((r.status, r.json()), (status, json!({ "error": error })));
}

#[tokio::test]
async fn a_token_opens_a_session_whose_user_id_is_its_sub() {
    let server = start(with_secret()).await;
    // An audience, which no flag names, is not checked.
    let claims = json!({ "sub": "ann", "exp": now() + 60, "aud": "elsewhere" });
    let sid = open(&server, &hs256(claims)).await;
    let r = post(
        server.addr,
        &format!("/emit?sid={sid}"),
        br#"{"event":"user","ack":true}"#,
    )
    .await;
    assert_eq!(r.json(), json!({ "data": "ann" }));
    assert_eq!(server.io.stats().count, 1);
}

#[tokio::test]
async fn the_server_api_reads_a_sessions_user_id() {
    let server = start(Config {
        api_keys: vec!["api-key".into()],
        ..with_secret()
    })
    .await;
    let sid = open(&server, &hs256(json!({ "sub": "ann", "exp": now() + 60 }))).await;
    let api = |body: String| {
        let addr = server.addr;
        async move {
            request(
                addr,
                "POST",
                "/api/session",
                &[("Authorization", "Bearer api-key")],
                body.as_bytes(),
            )
            .await
        }
    };
    let r = api(json!({ "sid": sid }).to_string()).await;
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            json!({ "sid": sid, "user": "ann", "transport": "polling", "rooms": [] })
        )
    );
    let r = request(
        server.addr,
        "POST",
        "/api/join",
        &[("Authorization", "Bearer api-key")],
        json!({ "sid": sid, "room": "lobby" })
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({})));
    let r = api(json!({ "sid": sid }).to_string()).await;
    assert_eq!(r.json()["rooms"], json!(["lobby"]));
    // A session nobody holds, a malformed sid and none at all.
    let unknown = json!({ "sid": "6f1c2d3e-4a5b-4c6d-8e7f-8091a2b3c4d5" }).to_string();
    for (body, status, error) in [
        (unknown, 404, "unknown session"),
        (r#"{"sid":"not-a-sid"}"#.to_string(), 404, "unknown session"),
        ("{}".to_string(), 400, "invalid JSON: missing \"sid\""),
    ] {
        let r = api(body.clone()).await;
        assert_eq!(
            (r.status, r.json()),
            (status, json!({ "error": error })),
            "{body}"
        );
    }
}

#[tokio::test]
async fn every_bad_token_is_refused_with_its_message_and_makes_no_session() {
    let server = start(Config {
        max_token_bytes: 600,
        ..with_secret()
    })
    .await;
    let exp = now() + 60;
    let other = encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "ann", "exp": exp }),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    let cases = [
        ("not a jwt".to_string(), "invalid token"),
        (other, "invalid token"),
        (hs256(json!({ "sub": "ann" })), "invalid token"),
        (
            hs256(json!({ "sub": "ann", "exp": "soon" })),
            "invalid token",
        ),
        (hs256(json!({ "sub": 7, "exp": exp })), "invalid token"),
        (
            hs256(json!({ "sub": "ann", "exp": now() - 1 })),
            "token expired",
        ),
        // Its `exp` second has begun: a session would end at once.
        (
            hs256(json!({ "sub": "ann", "exp": now() })),
            "token expired",
        ),
        (
            reheaded(ALG_NONE, json!({ "sub": "ann", "exp": exp }), ""),
            "invalid token",
        ),
        (
            reheaded(ALG_HS512, json!({ "sub": "ann", "exp": exp }), "AAAA"),
            "invalid token",
        ),
    ];
    for (token, error) in &cases {
        assert_refused(&handshake(&server, token).await, 401, error);
    }
    // No token at all, or not a string.
    assert_refused(
        &post(server.addr, "/handshake", b"{}").await,
        401,
        "invalid token",
    );
    assert_refused(
        &post(server.addr, "/handshake", br#"{"token":1}"#).await,
        401,
        "invalid token",
    );
    // Oversized: refused before any decoding, with the limit's name.
    let big = hs256(json!({ "sub": "a".repeat(600), "exp": exp }));
    assert_refused(
        &handshake(&server, &big).await,
        413,
        "token too large (limit 600 bytes)",
    );
    // A transport without a ticket carries no token.
    assert_refused(&get(server.addr, "/poll").await, 401, "invalid token");
    let r = request(server.addr, "GET", "/events", &[], b"").await;
    assert_refused(&r, 401, "invalid token");
    assert_eq!(
        (server.io.stats().sessions, server.io.stats().count),
        (0, 0)
    );
}

#[tokio::test]
async fn a_session_ends_with_token_expired_at_its_exp_and_the_count_follows() {
    let server = start(with_secret()).await;
    let token = hs256(json!({ "sub": "ann", "exp": now() + 2 }));
    let t = handshake(&server, &token).await.json()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let mut s = Sse::open_with(server.addr, &format!("/events?ticket={t}"), &[]).await;
    assert_eq!(s.next_event().await.0, "connect");
    server.wait_sessions(1, WAIT).await;
    loop {
        let (event, data) = s.next_event_within(Duration::from_secs(5)).await;
        if event == "disconnect" {
            assert_eq!(data, r#""token expired""#);
            break;
        }
    }
    server.wait_sessions(0, WAIT).await;
    assert_eq!(server.io.stats().count, 0);
}

#[tokio::test]
async fn a_refresh_with_the_same_sub_moves_the_expiry_and_is_rate_limited() {
    // An interval no loaded machine outlasts while it sends the flood.
    let server = start(Config {
        refresh_min_interval_ms: 60_000,
        ..with_secret()
    })
    .await;
    // `now()` is a whole second rounded down: a token of `start_at + 3`
    // has at least 2 s left, time enough for the handshake and the refresh
    // on a loaded machine.
    let start_at = now();
    let token = hs256(json!({ "sub": "ann", "exp": start_at + 3 }));
    let t = handshake(&server, &token).await.json()["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let mut s = Sse::open_with(server.addr, &format!("/events?ticket={t}"), &[]).await;
    assert_eq!(s.next_event().await.0, "connect");
    // Far enough that the flood below, slow on a loaded machine, ends
    // before it.
    let later = start_at + 10;
    let r = refresh(
        &server,
        &s.sid,
        &hs256(json!({ "sub": "ann", "exp": later })),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({ "exp": later })));
    // More within --refresh-min-interval are refused before their token
    // is read, however good.
    for _ in 0..50 {
        let r = refresh(
            &server,
            &s.sid,
            &hs256(json!({ "sub": "ann", "exp": later + 60 })),
        )
        .await;
        assert_refused(&r, 429, "too many refreshes, slow down");
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    }
    // The session outlives its first token and ends at the refreshed one.
    loop {
        let (event, data) = s.next_event_within(Duration::from_secs(13)).await;
        if event == "disconnect" {
            assert_eq!(data, r#""token expired""#);
            break;
        }
    }
    assert!(now() >= later, "ended before the refreshed token's exp");
    server.wait_sessions(0, WAIT).await;
}

#[tokio::test]
async fn a_refresh_for_another_user_or_with_a_bad_token_is_refused_and_the_session_keeps_its_expiry(
) {
    let server = start(Config {
        refresh_min_interval_ms: 0,
        ..with_secret()
    })
    .await;
    let exp = now() + 60;
    let sid = open(&server, &hs256(json!({ "sub": "ann", "exp": exp }))).await;
    let r = refresh(
        &server,
        &sid,
        &hs256(json!({ "sub": "bob", "exp": exp + 60 })),
    )
    .await;
    assert_refused(&r, 403, "token belongs to another user");
    let r = refresh(&server, &sid, &hs256(json!({ "exp": exp + 60 }))).await;
    assert_refused(&r, 403, "token belongs to another user");
    let r = refresh(
        &server,
        &sid,
        &hs256(json!({ "sub": "ann", "exp": now() - 1 })),
    )
    .await;
    assert_refused(&r, 401, "token expired");
    let r = refresh(&server, &sid, "x.y.z").await;
    assert_refused(&r, 401, "invalid token");
    let r = post(server.addr, &format!("/refresh?sid={sid}"), b"[").await;
    assert_eq!(r.status, 400);
    let big = format!(r#"{{"token":"{}"}}"#, "a".repeat(5000));
    let r = post(server.addr, &format!("/refresh?sid={sid}"), big.as_bytes()).await;
    assert_refused(&r, 413, "auth payload too large (limit 4096 bytes)");
    let long = hs256(json!({ "sub": "ann", "exp": exp, "pad": "a".repeat(1800) }));
    assert_refused(
        &refresh(&server, &sid, &long).await,
        413,
        "token too large (limit 2048 bytes)",
    );
    let r = refresh(
        &server,
        "0b9c3f3e-8a3c-4c1e-9f55-2f1c0b7d9a10",
        &hs256(json!({ "sub": "ann", "exp": exp })),
    )
    .await;
    assert_refused(&r, 400, "unknown session");
    // A flood of refreshes, each refused, leaves the session as it was.
    for _ in 0..50 {
        let r = refresh(&server, &sid, &hs256(json!({ "sub": "eve", "exp": exp }))).await;
        assert_eq!(r.status, 403, "{}", r.text());
    }
    assert_eq!(server.io.stats().count, 1);
    let r = refresh(
        &server,
        &sid,
        &hs256(json!({ "sub": "ann", "exp": exp + 1 })),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({ "exp": exp + 1 })));
}

#[tokio::test]
async fn without_jwt_keys_refresh_is_not_found() {
    let server = start(fast_config()).await;
    let sid = Poller::handshake(server.addr).await.sid;
    let r = refresh(
        &server,
        &sid,
        &hs256(json!({ "sub": "ann", "exp": now() + 9 })),
    )
    .await;
    assert_refused(&r, 404, "not found");
}

#[tokio::test]
async fn with_an_rsa_public_key_only_rs256_passes_and_an_hs256_token_keyed_with_the_pem_is_refused()
{
    let server = start(Config {
        jwt_public_key: Some(fixture("rsa.pub")),
        ..fast_config()
    })
    .await;
    let claims = json!({ "sub": "ann", "exp": now() + 60 });
    open(&server, &rs256(None, claims.clone())).await;
    let pem = std::fs::read(fixture("rsa.pub")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    assert_refused(&handshake(&server, &confused).await, 401, "invalid token");
    assert_refused(
        &handshake(&server, &hs256(claims)).await,
        401,
        "invalid token",
    );
}

#[tokio::test]
async fn with_an_ec_public_key_es256_passes() {
    let server = start(Config {
        jwt_public_key: Some(fixture("ec.pub")),
        ..fast_config()
    })
    .await;
    let key = std::fs::read(fixture("ec.key")).unwrap();
    let token = encode(
        &Header::new(Algorithm::ES256),
        &json!({ "sub": "ann", "exp": now() + 60 }),
        &EncodingKey::from_ec_pem(&key).unwrap(),
    )
    .unwrap();
    open(&server, &token).await;
}

#[tokio::test]
async fn with_a_key_set_the_kid_must_name_one_of_its_keys_exactly() {
    let server = start(Config {
        jwt_jwks: Some(fixture("jwks.json")),
        ..fast_config()
    })
    .await;
    let claims = json!({ "sub": "ann", "exp": now() + 60 });
    open(&server, &rs256(Some("k1"), claims.clone())).await;
    for kid in [
        Some("k2"),
        Some("K1"),
        Some("k1 "),
        Some("../../../../dev/null"),
        Some("/etc/passwd"),
        Some("file:///etc/passwd"),
        Some(""),
        None,
    ] {
        let r = handshake(&server, &rs256(kid, claims.clone())).await;
        assert_refused(&r, 401, "invalid token");
    }
}

#[test]
fn unusable_key_files_are_named_at_start() {
    let missing = Config {
        jwt_public_key: Some(fixture("absent.pem")),
        ..fast_config()
    };
    let e = ssio::Io::check_keys(&missing).unwrap_err();
    assert!(e.starts_with("--jwt-public-key "), "{e}");
    let not_a_key = Config {
        jwt_public_key: Some(fixture("jwks.json")),
        ..fast_config()
    };
    let e = ssio::Io::check_keys(&not_a_key).unwrap_err();
    assert!(e.ends_with("not an RSA or EC public key in PEM"), "{e}");
    let not_a_set = Config {
        jwt_jwks: Some(fixture("rsa.pub")),
        ..fast_config()
    };
    assert!(ssio::Io::check_keys(&not_a_set)
        .unwrap_err()
        .starts_with("--jwt-jwks "));
    assert_eq!(ssio::Io::check_keys(&with_secret()), Ok(()));
}
