//! Every suite whose server runs inside the test process, as one test
//! binary: each integration-test binary links the whole crate again, so one
//! binary for all of them is built and linked once.
//!
//! A suite belongs here only if it touches nothing process-wide, since its
//! tests share this process with every other suite's, running in parallel.
//! Suites that spawn the `ssio` binary or other programs, read a process's
//! descriptors or memory from /proc, or change process-wide state (rlimits,
//! environment, signals, a global subscriber) stay binaries of their own in
//! `tests/`.

#[path = "../support/mod.rs"]
mod support;

mod acks;
mod backend;
mod browser_paths;
mod catch_all;
mod count;
mod emit;
mod garbage;
mod grace;
mod jwt;
mod keep_alive;
mod limits;
mod middleware;
mod mux;
mod plain;
mod poll;
mod presence;
mod recovery;
mod rooms;
mod routes;
mod server_acks;
mod server_api;
mod slow_readers;
mod slowloris;
mod sse;
mod statics;
#[cfg(feature = "tls")]
mod tls;
