//! The engine: the session table and the ordering that keeps the count
//! exact, the backend the count lives in, the fan-out that delivers each
//! encoded event to every cursor, rooms, recovery and rate limits. It knows
//! nothing of HTTP: no file here imports hyper.

pub(crate) mod backend;
pub(crate) mod fanout;
pub(crate) mod hub;
pub(crate) mod limits;
pub(crate) mod mailbox;
pub(crate) mod packet;
pub(crate) mod recovery;
pub(crate) mod rooms;
