//! The `ssio` binary: parse flags, bind, serve the demo app until SIGINT or
//! SIGTERM.

use clap::Parser;
use ssio::{app, ClusterSettings, Config, Io, RedisBackend, Tls};
use tracing::info;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before any thread exists: the allocator reads its settings at start.
    ssio::memory::without_thread_cache();
    // On one core (a pinned process) a second scheduler thread only adds
    // hand-offs between threads that take turns on the same core: every
    // wake-up of a stream's task then goes through shared queues. One
    // thread runs the same tasks with none of that.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(serve())
}

async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::parse();
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!("listening on {scheme}://{}", listener.local_addr()?);
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
