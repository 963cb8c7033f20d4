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
//! - `ssio` (info): startup, shutdown and anything unusual.

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` filters (default `info`).
pub fn init(format: LogFormat) {
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
