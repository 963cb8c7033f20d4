//! Support for the tests, the benches and the examples, all of which
//! include it (`mod support;` from `tests/*.rs`, `#[path]` from elsewhere);
//! it never includes any of them.
//!
//! - `harness`, re-exported here: a server in this process and a raw
//!   HTTP/1.1 client that sees exact bytes, with SSE and poll clients on it;
//! - `features`: the app the feature tests run (rooms, acks, middleware);
//! - `process`: start a server process and learn its address from its
//!   `listening on` line;
//! - `procfs`: resident memory and CPU time of a process;
//! - `loopback`: client sockets spread over source addresses 127.0.0.2 and
//!   up, so that no single source runs out of ephemeral ports;
//! - `http`: a small keep-alive HTTP/1.1 client with a chunked decoder, cheap
//!   enough for tens of thousands of clients;
//! - `cluster`: redis-server, nginx and ssio nodes for the cluster tests;
//! - `nodes`: a cluster as the cluster tests set one up, clients watched on
//!   it, and the waits for counts and records;
//! - `sse` and `poll`: reading ssio's two transports, from the parsers of
//!   their bytes up to a client that hands over every `user count`.
//!
//! Each user needs only some of it.

#![allow(dead_code)]

pub mod cluster;
pub mod features;
pub mod harness;
pub mod http;
pub mod loopback;
#[cfg(feature = "redis")]
pub mod nodes;
pub mod poll;
pub mod process;
pub mod procfs;
pub mod sse;

// Not every user takes something from the harness (the benches of client
// processes, say), and each takes only what it needs.
#[allow(unused_imports)]
pub use harness::*;
