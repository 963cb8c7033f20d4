//! The `ssio` binary: parse flags, bind, serve the demo app until SIGINT or
//! SIGTERM.

use clap::Parser;
use ssio::{app, ClusterSettings, Config, Io, RedisBackend};
use tracing::info;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::parse();
    ssio::logging::init(config.log_format);
    let listener = ssio::bind(config.addr()?, config.backlog)?;
    let io = match config.redis.clone() {
        None => Io::new(config),
        Some(url) => {
            let node = config
                .node_id
                .get_or_insert_with(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
                .clone();
            let bound = config.ping_interval() + config.ping_timeout();
            let addr = match config.advertise.clone() {
                Some(a) => a,
                None => listener.local_addr()?.to_string(),
            };
            let settings = match ClusterSettings::new(&url, &node, &addr, bound) {
                Ok(s) => s.count_event("user count"),
                Err(e) => {
                    // A bad flag, as clap reports one: the reason, exit 2.
                    eprintln!("error: {}", e.0);
                    std::process::exit(2);
                }
            };
            info!(node, "cluster node on redis");
            Io::with_backend(config, |fanout| RedisBackend::new(fanout, settings))
        }
    };
    info!("listening on http://{}", listener.local_addr()?);
    app::install(&io);
    ssio::run(listener, io, shutdown_signal()).await;
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
