//! The runnable examples under `examples/` start, print the address they
//! listen on, and answer as their doc comments and the guide say: each is
//! built fresh, run as its own process on a port the kernel picks, and
//! talked to over HTTP.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::process::{spawn, Spawned};
use support::*;
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Every example, with the arguments that make it listen on a free port of
/// 127.0.0.1: `chat`, `acks` and `middleware_auth` read `PORT`,
/// `hyper_mount` takes an address and `features_server` the binary's flags.
const EXAMPLES: &[(&str, &[&str])] = &[
    ("chat", &[]),
    ("acks", &[]),
    ("middleware_auth", &[]),
    ("hyper_mount", &["127.0.0.1:0"]),
    ("features_server", &["--host", "127.0.0.1", "--port", "0"]),
];

/// The variables cargo sets for a test's run (beside `CARGO_PKG_*`), which
/// a build must not inherit.
const CARGO_SETS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Longest a build of the examples may take: a cold build of the crate and
/// its dependencies on a small machine.
const BUILD_WAIT: Duration = Duration::from_secs(900);

/// Longest an example may take to print its address once built.
const START_WAIT: Duration = Duration::from_secs(10);

/// The directory the examples are built into, after building them once per
/// run of this file. `cargo test --test examples` builds no example by
/// itself, and a binary left from an earlier build may be stale, so this
/// asks cargo, which rebuilds only what changed.
async fn examples_dir() -> &'static Path {
    static BUILT: OnceCell<PathBuf> = OnceCell::const_new();
    BUILT.get_or_init(build_examples).await
}

async fn build_examples() -> PathBuf {
    // This test runs as <target>/<profile>/deps/examples-<hash>: the
    // examples go to <target>/<profile>/examples, in the same profile.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "--profile", profile])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        .kill_on_drop(true);
    // What cargo set for this test's own run would reach the build scripts
    // of dependencies (ring's reads CARGO_MANIFEST_DIR) and make them, and
    // everything above them, build again, here and in the next plain build.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        if var.starts_with("CARGO_PKG_") || CARGO_SETS.contains(&&*var) {
            cargo.env_remove(&*var);
        }
    }
    for (name, _) in EXAMPLES {
        cargo.args(["--example", name]);
    }
    let status = tokio::time::timeout(BUILD_WAIT, cargo.status())
        .await
        .unwrap_or_else(|_| panic!("building the examples took over {BUILD_WAIT:?}"))
        .expect("run cargo");
    assert!(status.success(), "building the examples failed: {status}");
    profile_dir.join("examples")
}

/// Starts the example `name` and waits for the address it prints.
async fn start(name: &str) -> Spawned {
    let (_, args) = EXAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not in EXAMPLES"));
    let mut cmd = Command::new(examples_dir().await.join(name));
    cmd.args(*args).env("PORT", "0");
    let example = spawn(cmd, START_WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        example.line,
        format!("listening on http://{}", example.addr),
        "{name} prints its address on a line of its own"
    );
    assert_ne!(example.addr.port(), 0);
    example
}

/// Checks a `GET /poll` handshake answer and returns its sid.
fn handshake(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let sid = body["sid"].as_str().expect("a sid").to_string();
    assert!(uuid::Uuid::try_parse(&sid).is_ok(), "sid {sid:?}");
    assert_eq!(
        body,
        json!({ "sid": sid, "pingInterval": 25000, "pingTimeout": 20000 })
    );
    assert_eq!(r.header("x-session-id"), Some(sid.clone()));
    sid
}

/// Posts one client event, asking for an answer when `ack` is set.
async fn emit(addr: std::net::SocketAddr, sid: &str, event: &str, data: Value, ack: bool) -> Resp {
    let mut body = json!({ "event": event, "data": data });
    if ack {
        body["ack"] = json!(true);
    }
    post(
        addr,
        &format!("/emit?sid={sid}"),
        body.to_string().as_bytes(),
    )
    .await
}

/// The events waiting for `sid`, less the user count (which the chat sends
/// on every connect and leave). Only called when something
/// is waiting: a poll with nothing to answer is held for the whole ping
/// interval, past the harness's wait.
async fn ordinary_events(addr: std::net::SocketAddr, sid: &str) -> Vec<Value> {
    let r = get(addr, &format!("/poll?sid={sid}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    support::poll::batch(&r.body)
        .unwrap()
        .into_iter()
        .filter(|e| e["event"] != "user count")
        .collect()
}

/// The public tag of a session: the first 8 hex digits of its sid.
fn tag(sid: &str) -> String {
    sid[..8].to_string()
}

#[test]
fn every_file_under_examples_is_listed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_string))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed, "examples/ and EXAMPLES differ");
}

#[tokio::test]
async fn every_example_starts_prints_its_address_and_answers_a_handshake() {
    for (name, _) in EXAMPLES {
        let example = start(name).await;
        let addr = example.addr;
        match *name {
            // It refuses a client without a token; one with a token gets in
            // through a ticket.
            "middleware_auth" => {
                let ticket = post(addr, "/handshake", br#"{"token":"bob-token"}"#).await;
                assert_eq!(ticket.status, 200, "{}", ticket.text());
                let ticket = ticket.json()["ticket"].as_str().unwrap().to_string();
                handshake(&get(addr, &format!("/poll?ticket={ticket}")).await);
            }
            "hyper_mount" => {
                handshake(&get(addr, "/socket/poll").await);
            }
            _ => {
                handshake(&get(addr, "/poll").await);
            }
        }
    }
}

#[tokio::test]
async fn the_chat_example_carries_what_a_member_says_to_its_room_only() {
    let chat = start("chat").await;
    let addr = chat.addr;
    let ann = handshake(&get(addr, "/poll").await);
    let bob = handshake(&get(addr, "/poll").await);
    let cid = handshake(&get(addr, "/poll").await);
    for (sid, room) in [(&ann, "lobby"), (&bob, "lobby"), (&cid, "kitchen")] {
        assert_eq!(
            emit(addr, sid, "join", json!(room), false).await.status,
            204
        );
    }
    // Ann hears that Bob joined; Bob joined after her and hears nothing.
    assert_eq!(
        ordinary_events(addr, &ann).await,
        [json!({ "event": "joined", "data": tag(&bob) })]
    );
    assert_eq!(
        emit(addr, &ann, "say", json!("hi"), false).await.status,
        204
    );
    let said = json!({ "event": "said", "data": { "from": tag(&ann), "text": "hi" } });
    assert_eq!(
        ordinary_events(addr, &bob).await,
        std::slice::from_ref(&said)
    );
    assert_eq!(ordinary_events(addr, &ann).await, [said]);
    // Cid is in another room: what it says is the first thing it hears, so
    // nothing said in the lobby reached it.
    assert_eq!(
        emit(addr, &cid, "say", json!("yo"), false).await.status,
        204
    );
    assert_eq!(
        ordinary_events(addr, &cid).await,
        [json!({ "event": "said", "data": { "from": tag(&cid), "text": "yo" } })]
    );
    // Saying anything before joining a room is refused, to the sayer only.
    let dan = handshake(&get(addr, "/poll").await);
    assert_eq!(
        emit(addr, &dan, "say", json!("hello?"), false).await.status,
        204
    );
    assert_eq!(
        ordinary_events(addr, &dan).await,
        [json!({ "event": "refused", "data": "join a room first" })]
    );
}

#[tokio::test]
async fn the_acks_example_answers_in_the_emit_response() {
    let acks = start("acks").await;
    let addr = acks.addr;
    let sid = handshake(&get(addr, "/poll").await);
    let answer = |r: Resp| (r.status, r.text());
    assert_eq!(
        answer(emit(addr, &sid, "add", json!([1, 2, 3]), true).await),
        (200, r#"{"data":6}"#.into())
    );
    assert_eq!(
        answer(emit(addr, &sid, "add", json!([1, "two"]), true).await),
        (
            200,
            r#"{"data":{"error":"send an array of integers"}}"#.into()
        )
    );
    assert_eq!(
        answer(emit(addr, &sid, "slow echo", json!({ "x": 1 }), true).await),
        (200, r#"{"data":{"x":1}}"#.into())
    );
    assert_eq!(
        answer(emit(addr, &sid, "ignored", json!(null), true).await),
        (200, r#"{"error":"no acknowledgement"}"#.into())
    );
    // Without "ack" the same event is a plain 204, and nothing is answered.
    assert_eq!(
        answer(emit(addr, &sid, "add", json!([1]), false).await),
        (204, String::new())
    );
}

#[tokio::test]
async fn the_middleware_example_refuses_without_a_known_token_and_greets_by_name() {
    let auth = start("middleware_auth").await;
    let addr = auth.addr;
    let refused = get(addr, "/poll").await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            401,
            json!({ "error": "who are you?", "data": { "login": "/login" } })
        )
    );
    let unknown = post(addr, "/handshake", br#"{"token":"eve-token"}"#).await;
    assert_eq!(
        (unknown.status, unknown.json()),
        (403, json!({ "error": "unknown token" }))
    );
    let ticket = post(addr, "/handshake", br#"{"token":"ann-token"}"#).await;
    assert_eq!(ticket.status, 200, "{}", ticket.text());
    let ticket = ticket.json()["ticket"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::try_parse(&ticket).is_ok(), "ticket {ticket:?}");
    let sid = handshake(&get(addr, &format!("/poll?ticket={ticket}")).await);
    assert_eq!(
        ordinary_events(addr, &sid).await,
        [json!({ "event": "welcome", "data": "ann" })]
    );
    let whoami = emit(addr, &sid, "whoami", json!(null), true).await;
    assert_eq!(
        (whoami.status, whoami.text()),
        (200, r#"{"data":"ann"}"#.into())
    );
}

/// Runs `examples/publish.py` with `key` and `args`; returns its exit
/// status, stdout and stderr.
async fn publish_py(key: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/publish.py");
    let out = tokio::time::timeout(
        WAIT * 2,
        Command::new("python3")
            .arg(script)
            .args(args)
            .env("SSIO_API_KEY", key)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("publish.py did not finish")
    .expect("python3 could not run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn publish_py_publishes_through_the_server_api_and_prints_the_cursor() {
    let config = ssio::Config {
        api_keys: vec!["py-key".into()],
        ..fast_config()
    };
    let server = Server::start_with("127.0.0.1:0".parse().unwrap(), config, |_| {}).await;
    let url = format!("http://{}", server.addr);
    let mut r = Reader::new(Sse::open(server.addr).await);
    assert_eq!(r.next().await.event, "connect");
    let (code, stdout, stderr) =
        publish_py("py-key", &[&url, "chat message", r#"{"text": "hi"}"#]).await;
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (Some(0), "00000000-0000-0000-0000-000000000000:1:0\n", "")
    );
    let b = r.next().await;
    assert_eq!(
        (b.event.as_str(), b.data.as_str()),
        ("chat message", r#"{"text":"hi"}"#)
    );
    let (code, stdout, stderr) = publish_py("wrong", &[&url, "chat message"]).await;
    assert_eq!(
        (code, stdout.as_str(), stderr.as_str()),
        (Some(1), "", "refused: 401: missing or invalid API key\n")
    );
}
