//! A server running the feature-test app (rooms, acknowledgements,
//! middleware that refuses `auth.token == "bad"`), for the browser tests.
//!
//! ```text
//! cargo run --release --example features_server -- 127.0.0.1:0
//! ```

#[path = "../tests/support/features.rs"]
mod features;

use clap::Parser;
use ssio::{Config, Io};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = Config::parse();
    let listener = ssio::bind(config.addr().expect("address"), config.backlog)?;
    println!("listening on http://{}", listener.local_addr()?);
    let io = Io::new(config);
    features::install(&io);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    ssio::run(listener, io, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await;
    Ok(())
}
