//! Connection middleware: only clients with a known token get a session,
//! and the app greets each by the name its token stands for.
//!
//! ```text
//! cargo run --example middleware_auth      # http://127.0.0.1:3000
//! PORT=4000 cargo run --example middleware_auth
//! ```
//!
//! In the browser, `io({ auth: { token: 'ann-token' } })`. With curl, the
//! `auth` payload is POSTed to `/handshake`, and the one-time ticket it
//! returns starts the session:
//!
//! ```text
//! curl -s -XPOST localhost:3000/handshake -d '{"token":"ann-token"}'
//! {"ticket":"…"}
//! curl -s "localhost:3000/poll?ticket=…"
//! curl -s localhost:3000/poll              # no token: 401
//! {"error":"who are you?","data":{"login":"/login"}}
//! ```
//!
//! The guide's page on middleware (`cargo doc --open`,
//! `ssio::guide::middleware`) explains each call.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::json;
use ssio::{Config, Handshake, Io, Rejection};

/// The tokens this demo knows, and whose each one is. A real app asks its
/// session store or verifies a signed token here.
const USERS: &[(&str, &str)] = &[("ann-token", "ann"), ("bob-token", "bob")];

/// The name the handshake's token stands for, if it is a known one.
fn user(hs: &Handshake) -> Option<&'static str> {
    let token = hs.auth.get("token")?.as_str()?;
    USERS
        .iter()
        .find(|(t, _)| *t == token)
        .map(|(_, name)| *name)
}

/// Installs the middleware and the handlers on `io`.
fn install(io: &Io) {
    // Runs before a session exists: a refusal makes none and moves no count.
    io.use_(|hs| {
        if hs.auth.get("token").is_none() {
            // 401: the client did not say who it is; `data` tells it where to.
            return Err(
                Rejection::unauthorized("who are you?").with_data(json!({ "login": "/login" }))
            );
        }
        match user(hs) {
            Some(_) => Ok(()),
            // 403: it said, and the answer is no.
            None => Err(Rejection::forbidden("unknown token")),
        }
    });

    io.on_connection(|socket| {
        // The middleware let it in, so the token is a known one. The name
        // goes into `data`, which a resumed session keeps.
        let name = user(&socket.handshake()).unwrap_or("nobody");
        socket.set_data(json!({ "name": name }));
        socket.emit("welcome", name);

        socket.on_ack("whoami", |socket, _, ack| {
            ack.send(socket.data()["name"].clone());
        });
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
