//! The demo app: a live user count and a chat, written with ssio's
//! socket.io-style API exactly as the classic socket.io user-count app writes it in
//! Node. This file is compiled into the server and is also what
//! `GET /_api/server.js` serves, byte for byte.

use serde_json::json;

use crate::Io;

/// Installs the app's handlers on `io`.
pub fn install(io: &Io) {
    // A client that is behind only needs the newest count, never a backlog.
    io.latest_value("user count");

    io.on_connection(|socket| {
        // The hub counted this session before calling us, and no other
        // connect or disconnect can run until we return: ++currentUsers.
        let current_users = socket.io().count();
        socket.io().emit("user count", current_users);

        socket.on("chat message", |socket, message| {
            // The public tag, not the sid: a sid is its owner's credential.
            socket.io().emit(
                "chat message",
                json!({ "sid": socket.public_id(), "message": message }),
            );
        });

        socket.on("disconnect", |socket, _reason| {
            // The session is already uncounted here: --currentUsers.
            let current_users = socket.io().count();
            socket.io().emit("user count", current_users);
        });
    });
}
