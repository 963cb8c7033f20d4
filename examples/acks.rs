//! Acknowledgements: the client sends an event with a callback, and a
//! handler answers it, at once or later, or the client hears why not.
//!
//! ```text
//! cargo run --example acks                 # http://127.0.0.1:3000
//! PORT=4000 cargo run --example acks
//! ```
//!
//! In the browser, `socket.emit('add', [1, 2, 3], (err, sum) => ..)`; with
//! curl, the answer is the body of the `/emit` response:
//!
//! ```text
//! sid=$(curl -s localhost:3000/poll | sed 's/.*"sid":"\([^"]*\)".*/\1/')
//! curl -s -XPOST "localhost:3000/emit?sid=$sid" -d '{"event":"add","data":[1,2,3],"ack":true}'
//! {"data":6}
//! ```
//!
//! The guide's page on acknowledgements (`cargo doc --open`,
//! `ssio::guide::acks`) explains each case.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::json;
use ssio::{Config, Io};

/// Installs the handlers on `io`.
fn install(io: &Io) {
    io.on_connection(|socket| {
        // Answered at once, from the handler.
        socket.on_ack("add", |_, numbers, ack| {
            // Integers, added with a check: a client's numbers must not be
            // able to make the handler panic (which would be a 500).
            let sum = numbers.as_array().and_then(|a| {
                a.iter()
                    .try_fold(0i64, |sum, n| sum.checked_add(n.as_i64()?))
            });
            ack.send(match sum {
                Some(sum) => json!(sum),
                None => json!({ "error": "send an array of integers" }),
            });
        });

        // Answered later: an `Ack` is `Send + 'static`, so a task may keep
        // it. The client's next emit does not wait for this answer.
        socket.on_ack("slow echo", |_, data, ack| {
            let data = data.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ack.send(data);
            });
        });

        // Never answered: the `Ack` is dropped when the handler returns,
        // and the client gets `{"error":"no acknowledgement"}` at once
        // instead of waiting for --ack-timeout.
        socket.on_ack("ignored", |_, _, _ack| {});
    });
}

/// `PORT` from the environment, 3000 without it; 0 lets the kernel pick.
fn port() -> u16 {
    match std::env::var("PORT") {
        Ok(p) => p.parse().expect("PORT must be a port number"),
        Err(_) => 3000,
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = ssio::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port())), 1024)?;
    println!("listening on http://{}", listener.local_addr()?);
    let io = Io::new(Config::default());
    install(&io);
    ssio::run(listener, io, tokio::signal::ctrl_c()).await;
    Ok(())
}
