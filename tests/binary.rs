//! The `ssio` binary's command line: every flag with its `SSIO_` env fallback and
//! default, and the startup line that names the address.

mod support;

use std::process::Command;

use support::process;

#[test]
fn help_lists_every_flag_with_its_env_and_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssio"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env, default) in [
        ("--host", "SSIO_HOST", "0.0.0.0"),
        ("--port", "PORT", "3000"),
        ("--ping-interval", "SSIO_PING_INTERVAL", "25000"),
        ("--ping-timeout", "SSIO_PING_TIMEOUT", "20000"),
        ("--max-payload", "SSIO_MAX_PAYLOAD", "65536"),
        ("--max-sessions", "SSIO_MAX_SESSIONS", "200000"),
        ("--max-event-name", "SSIO_MAX_EVENT_NAME", "256"),
        ("--max-pending-events", "SSIO_MAX_PENDING_EVENTS", "1024"),
        ("--max-header-bytes", "SSIO_MAX_HEADER_BYTES", "16384"),
        ("--header-timeout", "SSIO_HEADER_TIMEOUT", "10000"),
        ("--body-timeout", "SSIO_BODY_TIMEOUT", "10000"),
        ("--shutdown-timeout", "SSIO_SHUTDOWN_TIMEOUT", "10000"),
        ("--backlog", "SSIO_BACKLOG", "4096"),
        ("--reconnect-grace", "SSIO_RECONNECT_GRACE", "500"),
        ("--forward-pool-idle", "SSIO_FORWARD_POOL_IDLE", "64"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(
            help.contains(&format!("[env: {env}=")),
            "{env} missing from --help"
        );
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing for {flag}"
        );
    }
}

#[tokio::test]
async fn env_fallbacks_apply() {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssio"));
    cmd.env("SSIO_HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("SSIO_PING_INTERVAL", "1234")
        .env("RUST_LOG", "info");
    let line = process::spawn(cmd, std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .line;
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}

#[tokio::test]
async fn unprefixed_variables_belong_to_someone_else() {
    // Shells and other programs set names like HOST for themselves; were
    // they read, this value would stop the server from starting at all.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ssio"));
    cmd.env("SSIO_HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("HOST", "not-an-address")
        .env("PING_INTERVAL", "not-a-number")
        .env("MAX_SESSIONS", "-1")
        .env("RUST_LOG", "info");
    let line = process::spawn(cmd, std::time::Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .line;
    assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
}
