//! ssio side by side with socket.io 4.8 on this machine.
//!
//! `cargo bench --bench compare -- [--quick] [--n 1000,5000] [--transports
//! ssio-sse,socketio-websocket] [--scenarios floor,idle,churn,abandoned]`
//!
//! The same binary plays three roles, chosen by its first argument: the
//! coordinator (no role flag), a generator worker (`--worker`), and the
//! floor writer (`--floor`). Servers run on core 0, everything else on
//! core 1, so the server under test has a core of its own.
//!
//! Results go to target/bench/compare.json and target/bench/compare.md.

mod clients;
mod floor;
mod net;
mod procs;
mod report;
mod scenarios;
mod worker;

use std::net::SocketAddr;

use clients::Kind;

/// Which scenarios, sizes and transports one run covers.
pub struct Plan {
    pub quick: bool,
    pub ns: Vec<usize>,
    pub transports: Vec<Kind>,
    pub scenarios: Vec<String>,
    /// Count changes per fan-out measurement.
    pub changes: usize,
    /// Rounds of writes in the floor measurement.
    pub floor_rounds: usize,
    /// Seconds of idle CPU sampling.
    pub idle_secs: u64,
    pub churn_standing: usize,
    /// Largest N socket.io is opened to: its connect ramp is quadratic.
    pub sio_max_n: usize,
    /// Standing clients for socket.io's churn, for the same reason.
    pub sio_max_churn_standing: usize,
    /// Connect+disconnect pairs per second, tried in order until one fails.
    pub churn_rates: Vec<u64>,
    pub churn_ms: u64,
    pub abandon: u64,
}

impl Plan {
    fn parse(args: &[String]) -> Result<Plan, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut plan = if quick {
            Plan {
                quick,
                ns: vec![1000],
                transports: Kind::COMPARED.to_vec(),
                scenarios: vec![],
                changes: 10,
                floor_rounds: 5,
                idle_secs: 1,
                churn_standing: 500,
                sio_max_n: 1000,
                sio_max_churn_standing: 500,
                churn_rates: vec![1000, 5000],
                churn_ms: 1000,
                abandon: 10_000,
            }
        } else {
            Plan {
                quick,
                ns: vec![1000, 5000, 10_000, 19_000],
                transports: Kind::COMPARED.to_vec(),
                scenarios: vec![],
                changes: 100,
                floor_rounds: 20,
                idle_secs: 4,
                churn_standing: 10_000,
                sio_max_n: 5000,
                sio_max_churn_standing: 1000,
                churn_rates: vec![50, 100, 200, 500, 1000, 2000, 5000, 10_000],
                churn_ms: 3000,
                abandon: 100_000,
            }
        };
        plan.scenarios = ["floor", "idle", "churn", "abandoned"]
            .map(String::from)
            .to_vec();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                "--quick" => {}
                "--n" => {
                    plan.ns = value()?
                        .split(',')
                        .map(|s| s.parse().map_err(|_| format!("bad N {s}")))
                        .collect::<Result<_, _>>()?
                }
                "--transports" => {
                    plan.transports = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?
                }
                "--scenarios" => plan.scenarios = value()?.split(',').map(String::from).collect(),
                "--changes" => plan.changes = value()?.parse().map_err(|_| "bad --changes")?,
                "--churn-rates" => {
                    plan.churn_rates = value()?
                        .split(',')
                        .map(|s| s.parse().map_err(|_| format!("bad rate {s}")))
                        .collect::<Result<_, _>>()?
                }
                "--churn-standing" => {
                    plan.churn_standing = value()?.parse().map_err(|_| "bad --churn-standing")?
                }
                "--sio-max-n" => {
                    plan.sio_max_n = value()?.parse().map_err(|_| "bad --sio-max-n")?
                }
                "--abandon" => plan.abandon = value()?.parse().map_err(|_| "bad --abandon")?,
                other => return Err(format!("unknown argument {other}")),
            }
        }
        // A server process may hold 20,000 open files; one connection per
        // client leaves room for little more than 19,000 clients.
        if let Some(n) = plan.ns.iter().find(|&&n| n > 19_000) {
            return Err(format!(
                "N={n} exceeds what one server process can hold open"
            ));
        }
        Ok(plan)
    }

    pub fn has(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }
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
    // The bench harness passes `--bench`; it means nothing here.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("--worker") => {
            let kind: Kind = args[1].parse().expect("transport");
            let server: SocketAddr = args[2].parse().expect("server address");
            let salt: u32 = args[3].parse().expect("salt");
            worker::main(kind, server, salt);
        }
        Some("--floor") => floor::main(
            args[1].parse().expect("N"),
            args[2].parse().expect("rounds"),
        ),
        _ => {
            let plan = match Plan::parse(&args) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("compare: {e}");
                    std::process::exit(2);
                }
            };
            pin_to_generator_core();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            if let Err(e) = rt.block_on(scenarios::run(plan)) {
                eprintln!("compare: {e}");
                std::process::exit(1);
            }
        }
    }
}
