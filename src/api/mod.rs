//! The socket.io-style API: [`Io`](crate::Io) for the server,
//! [`Socket`](crate::Socket) for one client, broadcast targets, acks,
//! connection middleware, JWT sessions and handshake tickets. The only
//! layer that knows event names.

pub(crate) mod ack;
pub(crate) mod io;
pub(crate) mod jwt;
pub(crate) mod middleware;
pub(crate) mod operator;
pub(crate) mod presence;
pub(crate) mod replies;
pub(crate) mod socket;
pub(crate) mod tickets;
