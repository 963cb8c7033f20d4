//! Log output: human lines or one JSON object per line, filtered by
//! `RUST_LOG` either way.
//!
//! What gets logged, and at which target, so that `RUST_LOG` can pick:
//! - `ssio::session` (info): one line per session end, with the sid's
//!   public tag (never the full sid, which is the client's credential), the
//!   reason, the transport, how long it lasted and the remote address;
//! - `ssio::request` (info for 4xx, warn for 5xx): every refused request,
//!   with its method, path (never the query, which carries sids), status
//!   and error;
//! - `ssio` (info): startup, shutdown and anything unusual;
//! - `ssio::panic` (error): a panic anywhere, a handler's included, as one
//!   record in the chosen format: its message, where it happened, its
//!   thread, and the backtrace when `RUST_BACKTRACE` asks for one. A
//!   handler's panic is a 500 for its own request only, so without this it
//!   would be a page of text on stderr beside the JSON lines.

use crate::config::LogFormat;

/// Installs the global subscriber, and the panic hook that logs through
/// it. `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
    log_panics();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
        // Flat objects: `message` and the fields at the top level, where log
        // collectors look for them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Replaces the default panic hook, which writes several lines to stderr
/// (a whole backtrace with `RUST_BACKTRACE=1`) outside the log format, with
/// one `error` event on the `ssio::panic` target. The backtrace, captured
/// as `RUST_BACKTRACE` says, is a field of that one event.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic without a message)");
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("(unnamed)");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(target: "ssio::panic", %location, thread, %backtrace, "panicked: {message}");
        } else {
            tracing::error!(target: "ssio::panic", %location, thread, "panicked: {message}");
        }
    }));
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    /// Set in the child process that installs the hook and panics.
    const CHILD: &str = "SSIO_TEST_PANIC_CHILD";

    /// The hook is global, so it is installed in a child process of its
    /// own (this test binary again, running only this test), never in the
    /// one running the other tests.
    #[test]
    fn a_panic_is_one_json_record_with_its_location_and_backtrace() {
        if std::env::var_os(CHILD).is_some() {
            super::init(crate::config::LogFormat::Json);
            let panicked = std::thread::Builder::new()
                .name("handler".into())
                .spawn(|| panic!("boom {}", 42))
                .unwrap()
                .join();
            assert!(panicked.is_err());
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ops::logging::tests::a_panic_is_one_json_record_with_its_location_and_backtrace",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
        // The test harness writes `test <name> ... ` before the record, on
        // the same line.
        let records: Vec<serde_json::Value> = stdout
            .lines()
            .filter_map(|l| l.find("{\"timestamp\"").map(|at| &l[at..]))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 1, "{stdout}");
        let r = &records[0];
        assert_eq!(r["level"], "ERROR");
        assert_eq!(r["target"], "ssio::panic");
        assert_eq!(r["message"], "panicked: boom 42");
        assert_eq!(r["thread"], "handler");
        let location = r["location"].as_str().unwrap();
        assert!(location.starts_with("src/ops/logging.rs:"), "{location}");
        let backtrace = r["backtrace"].as_str().unwrap();
        assert!(backtrace.lines().count() > 3, "{backtrace}");
        // Nothing of the default hook's text is left on stderr.
        assert!(!stderr.contains("panicked at"), "{stderr}");
        assert!(!stderr.contains("stack backtrace"), "{stderr}");
    }
}
