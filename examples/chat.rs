//! A chat with rooms: a client joins one room at a time, what it says
//! reaches that room only, and every client sees the live user count.
//!
//! ```text
//! cargo run --example chat                 # http://127.0.0.1:3000
//! PORT=4000 cargo run --example chat
//! ```
//!
//! Any client drives it; with curl, as a long-polling client:
//!
//! ```text
//! sid=$(curl -s localhost:3000/poll | sed 's/.*"sid":"\([^"]*\)".*/\1/')
//! curl -s -XPOST "localhost:3000/emit?sid=$sid" -d '{"event":"join","data":"lobby"}'
//! curl -s -XPOST "localhost:3000/emit?sid=$sid" -d '{"event":"say","data":"hello"}'
//! curl -s "localhost:3000/poll?sid=$sid"
//! ```
//!
//! The guide's page on rooms (`cargo doc --open`, `ssio::guide::rooms`)
//! explains each call.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::json;
use ssio::{Config, Io, Socket};

/// Installs the chat's handlers on `io`.
fn install(io: &Io) {
    // A client that fell behind needs the newest count, not every one.
    io.latest_value("user count");

    io.on_connection(|socket| {
        socket.io().emit("user count", socket.io().count());

        socket.on("join", |socket, room| {
            let Some(room) = room.as_str() else { return };
            // One room at a time, so that "say" has one place to go.
            let old = current_room(socket);
            if old.as_deref() == Some(room) {
                return;
            }
            if let Some(old) = old {
                socket.leave(&old);
                socket.to(&old).emit("left", socket.public_id());
            }
            match socket.join(room) {
                Ok(()) => {
                    socket.set_data(json!({ "room": room }));
                    // The others in the room; the newcomer knows it joined.
                    socket.to(room).emit("joined", socket.public_id());
                }
                // Empty, too long, or over --max-rooms-per-socket: tell
                // this client only.
                Err(e) => socket.emit("refused", e.to_string()),
            }
        });

        socket.on("say", |socket, text| {
            let Some(room) = current_room(socket) else {
                socket.emit("refused", "join a room first");
                return;
            };
            // The public tag, never the sid: a sid is its owner's credential.
            let line = json!({ "from": socket.public_id(), "text": text });
            // Everyone in the room, the sender too, so that every screen
            // shows the same order.
            socket.io().to(&room).emit("said", line);
        });

        socket.on("disconnect", |socket, _reason| {
            socket.io().emit("user count", socket.io().count());
        });
    });
}

/// The room this socket joined last, kept in its `data` (which a resume
/// carries over with its rooms).
fn current_room(socket: &Socket) -> Option<String> {
    socket.data()["room"].as_str().map(str::to_string)
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
