//! The `ssio` binary: parse flags, bind, serve the demo app until SIGINT or
//! SIGTERM.

use std::future::Future;

use clap::Parser;
#[cfg(feature = "tls")]
use ssio::Tls;
use ssio::{app, Config, Io};
#[cfg(feature = "redis")]
use ssio::{ClusterSettings, RedisBackend};
use tokio::net::TcpListener;
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
    let config = Config::parse();
    ssio::logging::init(config.log_format);
    refuse_left_out_variables();
    if let Err(e) = Io::check_keys(&config) {
        // A bad flag, as clap reports one: the reason, exit 2.
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    #[cfg(feature = "tls")]
    let tls = Tls::from_config(&config)?;
    let listener = ssio::bind(config.addr()?, config.backlog)?;
    #[cfg(feature = "tls")]
    if let Some(tls) = &tls {
        if config.tls_self_signed {
            info!(
                fingerprint = %tls.fingerprint,
                spki_sha256 = %tls.spki_sha256,
                "serving a self-signed certificate generated at start"
            );
        }
    }
    let io = node(config, &listener)?;
    let shutdown = shutdown_signal();
    #[cfg(feature = "tls")]
    let scheme = if tls.is_some() { "https" } else { "http" };
    #[cfg(not(feature = "tls"))]
    let scheme = "http";
    info!("listening on {scheme}://{}", listener.local_addr()?);
    app::install(&io);
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        ssio::run_tls(listener, io, tls, shutdown).await;
        return Ok(());
    }
    ssio::run(listener, io, shutdown).await;
    Ok(())
}

/// The server alone, or one node of a cluster when `--redis` names one.
#[cfg(feature = "redis")]
fn node(mut config: Config, listener: &TcpListener) -> std::io::Result<Io> {
    let Some(url) = config.redis.clone() else {
        return Ok(Io::new(config));
    };
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
        Ok(s) => s.count_event("user count").people_event("people count"),
        Err(e) => {
            // A bad flag, as clap reports one: the reason, exit 2.
            eprintln!("error: {}", e.0);
            std::process::exit(2);
        }
    };
    info!(node, "cluster node on redis");
    Ok(Io::with_backend(config, |fanout| {
        RedisBackend::new(fanout, settings)
    }))
}

/// The server alone: a build without the `redis` feature is never a
/// cluster node.
#[cfg(not(feature = "redis"))]
fn node(config: Config, _: &TcpListener) -> std::io::Result<Io> {
    Ok(Io::new(config))
}

/// Refuses to start when a variable of a flag this build left out is set:
/// the deployment asks for TLS or a cluster, and serving plain HTTP alone
/// instead would hide that until clients noticed. A left-out flag itself
/// is refused by clap, as any unknown argument is.
fn refuse_left_out_variables() {
    let mut set: Vec<(&str, &str)> = Vec::new();
    #[cfg(not(feature = "tls"))]
    set.extend(["SSIO_TLS_CERT", "SSIO_TLS_KEY", "SSIO_TLS_SELF_SIGNED"].map(|v| (v, "tls")));
    #[cfg(not(feature = "redis"))]
    set.extend(["REDIS_URL", "SSIO_NODE_ID", "SSIO_ADVERTISE_ADDR"].map(|v| (v, "redis")));
    set.retain(|(var, _)| std::env::var_os(var).is_some());
    if let Some((var, feature)) = set.first() {
        // As clap reports a bad flag: the reason, exit 2.
        eprintln!("error: {var} is set, but this ssio was built without the `{feature}` feature");
        std::process::exit(2);
    }
}

/// SIGINT (Ctrl-C) or SIGTERM, whichever comes first. The handlers are
/// installed by this call, not by the future's first poll: the accept loop
/// may serve a client before it first polls the future, and a SIGTERM in
/// that window would kill the process without a word to its clients.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        let mut terminate = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        async move {
            let _ = ctrl_c.await;
        }
    }
}
