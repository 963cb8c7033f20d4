//! The demo app: a live user count and a chat, written with ssio's
//! socket.io-style API exactly as the classic socket.io user-count app writes it in
//! Node. This file is compiled into the server and is also what
//! `GET /_api/server.js` serves, byte for byte.

use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::json;

use crate::Io;

/// Installs the app's handlers on `io`.
pub fn install(io: &Io) {
    // A client that is behind only needs the newest count, never a backlog.
    io.latest_value("user count");
    io.latest_value("people count");

    let people = People::default();
    io.on_connection(move |socket| {
        let people = people.clone();
        // The hub counted this session before calling us, and no other
        // connect or disconnect can run until we return: ++currentUsers.
        let current_users = socket.io().count();
        socket.io().emit("user count", current_users);
        people.tell(socket.io());

        socket.on("chat message", |socket, message| {
            // The public tag, not the sid: a sid is its owner's credential.
            socket.io().emit(
                "chat message",
                json!({ "sid": socket.public_id(), "message": message }),
            );
        });

        socket.on("disconnect", move |socket, _reason| {
            // The session is already uncounted here: --currentUsers.
            let current_users = socket.io().count();
            socket.io().emit("user count", current_users);
            people.tell(socket.io());
        });
    });
}

/// How many people the sessions are: the tabs of one browser count once.
///
/// The page shows the user count as the number of people until it hears
/// otherwise, so `people count` goes out only while the two differ, and
/// once as `null` when they agree again: a server of lone clients (curl,
/// one tab each) sends no second event per change.
#[derive(Clone, Default)]
struct People(Arc<Mutex<Option<usize>>>);

impl People {
    fn tell(&self, io: &Io) {
        // A backend that does not count people: the page shows the user
        // count for both.
        let Some(users) = io.users() else { return };
        let count = io.count();
        let mut told = self.0.lock();
        let now = (users != count).then_some(users);
        if now != *told {
            *told = now;
            io.emit("people count", now);
        }
    }
}
