//! The `ssio` binary: parse flags, bind, serve the demo app until SIGINT or
//! SIGTERM.

use clap::Parser;
use ssio::{app, Config, Io, Tls};
use tracing::info;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread exists: the allocator reads its settings at start.
    ssio::memory::without_thread_cache();
    serve()
}

#[tokio::main]
async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::parse();
    ssio::logging::init(config.log_format);
    let tls = Tls::from_config(&config)?;
    let listener = ssio::bind(config.addr()?, config.backlog)?;
    if let Some(tls) = &tls {
        if config.tls_self_signed {
            info!(
                fingerprint = %tls.fingerprint,
                spki_sha256 = %tls.spki_sha256,
                "serving a self-signed certificate generated at start"
            );
        }
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("listening on {scheme}://{}", listener.local_addr()?);
    let io = Io::new(config);
    app::install(&io);
    match tls {
        Some(tls) => ssio::run_tls(listener, io, tls, shutdown_signal()).await,
        None => ssio::run(listener, io, shutdown_signal()).await,
    }
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM, whichever comes first.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
