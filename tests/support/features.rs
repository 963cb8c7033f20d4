//! The app the feature tests run: rooms, acknowledgements, middleware,
//! socket data and handshake, each driven by a client event.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use ssio::{Ack, Io, Rejection};

/// What the app saw, for assertions.
#[derive(Default)]
pub struct Seen {
    /// `(public id, recovered)` per connection, in order.
    pub connections: Mutex<Vec<(String, bool)>>,
    /// Acks kept and never answered.
    pub kept: Mutex<Vec<Ack>>,
}

/// Installs the app on `io`; returns what it will see.
pub fn install(io: &Io) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    io.latest_value("user count");
    io.use_(|hs| {
        if hs.headers.contains_key("x-deny") {
            return Err(Rejection::unauthorized("no entry"));
        }
        match hs.auth.get("token").and_then(Value::as_str) {
            Some("bad") => {
                Err(Rejection::forbidden("not allowed").with_data(json!({ "code": 42 })))
            }
            Some("panic") => panic!("middleware bug"),
            _ => Ok(()),
        }
    });
    let s = seen.clone();
    io.on_connection(move |socket| {
        s.connections
            .lock()
            .push((socket.public_id(), socket.recovered()));
        socket.io().emit("user count", socket.io().count());
        socket.on("disconnect", |socket, _| {
            socket.io().emit("user count", socket.io().count());
        });
        socket.on("join", |socket, room| {
            let _ = socket.join(room.as_str().unwrap_or(""));
        });
        socket.on_ack("join?", |socket, room, ack| {
            ack.send(match socket.join(room.as_str().unwrap_or("")) {
                Ok(()) => json!("ok"),
                Err(e) => json!(e.to_string()),
            });
        });
        socket.on("leave", |socket, room| {
            socket.leave(room.as_str().unwrap_or(""))
        });
        socket.on("say", |socket, d| {
            socket
                .to(d["room"].as_str().unwrap_or(""))
                .emit("said", d["text"].clone());
        });
        socket.on("shout", |socket, d| {
            socket.broadcast().emit("shouted", d.clone())
        });
        socket.on("chat message", |socket, d| {
            let m = json!({ "sid": socket.public_id(), "message": d });
            socket.io().emit("chat message", m);
        });
        socket.on("direct", |socket, d| socket.emit("direct", d.clone()));
        socket.on("set", |socket, d| socket.set_data(d.clone()));
        socket.on_ack("echo", |_, d, ack| {
            ack.send(d.clone());
        });
        socket.on_ack("later", |_, d, ack| {
            let d = d.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                ack.send(d);
            });
        });
        // The server's own acknowledged emits: ask this client, or every
        // client, and tell the asker what came back.
        socket.on("ask me", |socket, d| {
            let socket = socket.clone();
            let d = d.clone();
            tokio::spawn(async move {
                let within = Duration::from_millis(d["ms"].as_u64().unwrap_or(2000));
                let answer = socket
                    .emit_with_ack_within("question", d["q"].clone(), within)
                    .await;
                let told = match answer {
                    Ok(a) => json!({ "answer": a }),
                    Err(e) => json!({ "error": e.to_string() }),
                };
                socket.emit("answered", told);
            });
        });
        socket.on("ask all", |socket, d| {
            let socket = socket.clone();
            let d = d.clone();
            tokio::spawn(async move {
                let within = Duration::from_millis(d["ms"].as_u64().unwrap_or(2000));
                let all = socket.io().to("voters");
                let told = match all
                    .emit_with_ack_within("vote", d["q"].clone(), within)
                    .await
                {
                    Ok(r) => json!({
                        "answers": r.replies.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(),
                        "timed_out": r.timed_out.len(),
                    }),
                    Err(e) => json!({ "error": e.to_string() }),
                };
                socket.emit("tally", told);
            });
        });
        let s2 = s.clone();
        socket.on_ack("never", move |_, _, ack| s2.kept.lock().push(ack));
        socket.on_ack("drop", |_, _, _ack| {});
        socket.on_ack("panic", |_, _, _ack| panic!("handler bug"));
        socket.on_ack("whoami", |socket, _, ack| {
            let hs = socket.handshake();
            ack.send(json!({
                "rooms": socket.rooms(),
                "data": socket.data(),
                "recovered": socket.recovered(),
                "auth": hs.auth,
                "query": hs.query,
                "peer_is_loopback": hs.address.ip().is_loopback(),
            }));
        });
    });
    seen
}
