//! ssio side by side with socket.io 4.8 on this machine.
//!
//! `cargo bench --bench compare -- [--quick] [--n 1000,5000] [--transports
//! ssio-sse,ssio-sse-reused,ssio-mux,ssio-poll,ssio-h2,socketio-polling,socketio-websocket]
//! [--scenarios floor,idle,churn,abandoned,chat,ramp]`; `-- --help` lists
//! every flag.
//!
//! ssio's SSE is measured on the three paths a stream is reached by:
//! `ssio-sse` sends `GET /events` as a connection's first request, as curl
//! does; a browser first fetches the page, so `ssio-sse-reused` (a page's
//! own `EventSource`) sends `GET /events` and `ssio-mux` (the browser
//! client's default, the shared stream) `GET /events?mux=1` as the second
//! request on the connection that fetched `GET /`.
//!
//! `chat` (SSE and socket.io's WebSocket): one sender emits `chat message`
//! at `--chat-rate` (100 /s) for `--chat-ms`, each message stamped with its
//! sequence number and send time; `--chat-n` clients (10k) record every one:
//! deliveries per second sustained, messages lost, latency. socket.io is
//! opened to `--sio-chat-n` (2k) only, and ssio runs at that N too.
//! `ramp`: `--ramp-n` SSE clients (19k) opened by every worker at once with
//! no connect limit: connects per second, refused connects, time until every
//! client holds the exact count; socket.io to `--sio-ramp-n` (2k).
//!
//! The same binary plays three roles: the coordinator (no subcommand), a
//! generator worker (`worker`), and the floor writer (`floor`); the
//! coordinator starts the other two. Servers run on core 0, everything else
//! on core 1, so the server under test has a core of its own.
//!
//! Data flows one way: the flags make a `plan`; `scenarios` runs it with
//! `procs` (server and worker processes), `worker` and `clients` (the load),
//! `floor`; it returns typed `results`, which `report` writes, with the
//! `machine` they came from, to target/bench/compare.json and
//! target/bench/compare.md.

mod clients;
mod clock;
mod floor;
mod h2;
mod machine;
mod plan;
mod procs;
mod repo;
mod report;
mod results;
mod scenarios;
#[path = "../../tests/support/mod.rs"]
mod support;
mod worker;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

use clients::Kind;
use plan::{Flags, Plan};

#[derive(Parser)]
#[command(
    name = "compare",
    bin_name = "cargo bench --bench compare --",
    about = "ssio side by side with socket.io 4.8 on this machine",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    #[command(flatten)]
    flags: Flags,
    /// Passed by `cargo bench`; means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The roles the coordinator starts this binary in.
#[derive(Subcommand)]
enum Role {
    /// A generator worker: holds its share of the clients and answers
    /// one-line commands on stdin.
    #[command(hide = true)]
    Worker {
        kind: Kind,
        server: SocketAddr,
        salt: u32,
    },
    /// The floor writer: rounds of blocking writes to `n` sockets.
    #[command(hide = true)]
    Floor { n: usize },
}

/// Keeps the coordinator off the server's core.
fn pin_to_generator_core() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; we own the process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.role {
        Some(Role::Worker { kind, server, salt }) => worker::main(kind, server, salt),
        Some(Role::Floor { n }) => floor::main(n),
        None => {
            let plan = Plan::new(cli.flags).unwrap_or_else(|e| {
                eprintln!("compare: {e}");
                std::process::exit(2);
            });
            if let Err(e) = coordinate(&plan) {
                eprintln!("compare: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn coordinate(plan: &Plan) -> Result<(), String> {
    if plan.transports.iter().any(|k| !k.is_ssio()) {
        procs::ensure_peer()?;
    }
    pin_to_generator_core();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let results = rt.block_on(scenarios::run(plan));
    report::write(plan, &results, started.elapsed())
}
