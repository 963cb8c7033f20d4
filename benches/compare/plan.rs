//! What one run covers: the command-line flags, and the plan they make from
//! the full or the quick preset.

use clap::ValueEnum;

use crate::clients::Kind;

/// The measurements a run can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Blocking writes of one event to N sockets: the fan-out floor.
    Floor,
    /// Idle memory and CPU with N clients, then fan-out latency.
    Idle,
    /// Connect+disconnect pairs per second around standing clients.
    Churn,
    /// Long-poll handshakes never polled again.
    Abandoned,
    /// One sender's chat messages to N clients: deliveries per second,
    /// losses, latency.
    Chat,
    /// N clients opened all at once: connects per second and the time until
    /// every client holds the final count.
    Ramp,
}

/// The coordinator's flags; each one left out keeps the preset's value.
#[derive(clap::Args, Debug)]
pub struct Flags {
    /// Quick preset: N = 1k only, fewer changes, shorter steps (about 2
    /// minutes instead of 18)
    #[arg(long)]
    pub quick: bool,
    /// Client counts [full: 1000,5000,10000,19000; quick: 1000]
    #[arg(long, value_delimiter = ',', value_name = "N,..")]
    pub n: Option<Vec<usize>>,
    /// Transports to measure [default: all]
    #[arg(long, value_delimiter = ',', value_name = "KIND,..")]
    pub transports: Option<Vec<Kind>>,
    /// Scenarios to run [default: all]
    #[arg(long, value_delimiter = ',', value_name = "SCENARIO,..")]
    pub scenarios: Option<Vec<Scenario>>,
    /// Count changes per fan-out measurement [full: 100; quick: 10]
    #[arg(long)]
    pub changes: Option<usize>,
    /// Churn rates (pairs per second), tried in order until one fails
    /// [full: 50,100,200,500,1000,2000,5000,10000; quick: 1000,5000]
    #[arg(long, value_delimiter = ',', value_name = "RATE,..")]
    pub churn_rates: Option<Vec<u64>>,
    /// Standing clients during churn [full: 10000; quick: 500]
    #[arg(long)]
    pub churn_standing: Option<usize>,
    /// Largest N socket.io is opened to for idle and fan-out [full: 5000;
    /// quick: 1000]
    #[arg(long)]
    pub sio_max_n: Option<usize>,
    /// Abandoned long-poll handshakes [full: 100000; quick: 10000]
    #[arg(long)]
    pub abandon: Option<u64>,
    /// Clients hearing the chat [full: 10000; quick: 1000]
    #[arg(long)]
    pub chat_n: Option<usize>,
    /// Chat messages per second, from all senders together [default: 100]
    #[arg(long)]
    pub chat_rate: Option<u64>,
    /// Clients sending the chat, taking turns, each from its own session
    /// and connection, as the people in a chat room do [default: 10, at
    /// most 16]
    #[arg(long)]
    pub chat_senders: Option<usize>,
    /// How long the sender sends, in ms [full: 5000; quick: 2000]
    #[arg(long)]
    pub chat_ms: Option<u64>,
    /// Longest wait after the last send for every delivery, in ms [full:
    /// 30000; quick: 10000]
    #[arg(long)]
    pub chat_drain_ms: Option<u64>,
    /// Clients opened at once in the ramp [full: 19000; quick: 1000]
    #[arg(long)]
    pub ramp_n: Option<usize>,
    /// Largest N socket.io is opened to in the chat; ssio runs at this N
    /// too [full: 2000; quick: 1000]
    #[arg(long)]
    pub sio_chat_n: Option<usize>,
    /// Largest N socket.io is opened to in the ramp [full: 2000; quick: 1000]
    #[arg(long)]
    pub sio_ramp_n: Option<usize>,
    /// Cores the server under test runs on, as `taskset -c` takes them:
    /// `0,1` gives it both, sharing core 1 with the generator, as a
    /// server on a machine of its own would run [default: 0]
    #[arg(long, value_name = "CORES")]
    pub server_cores: Option<String>,
}

/// Which scenarios, sizes and transports one run covers.
pub struct Plan {
    pub quick: bool,
    pub ns: Vec<usize>,
    pub transports: Vec<Kind>,
    pub scenarios: Vec<Scenario>,
    /// Count changes per fan-out measurement, and rounds of the floor's.
    pub changes: usize,
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
    /// Clients hearing the chat; socket.io's are capped at `sio_chat_n`.
    pub chat_n: usize,
    pub chat_rate: u64,
    pub chat_senders: usize,
    pub chat_ms: u64,
    pub chat_drain_ms: u64,
    /// Bytes of every chat message's text, the same on both servers.
    pub chat_bytes: usize,
    /// Clients opened at once; socket.io's are capped at `sio_ramp_n`.
    pub ramp_n: usize,
    /// socket.io's caps in the chat and the ramp: both open all their
    /// clients before measuring, and socket.io's connect ramp is quadratic.
    pub sio_chat_n: usize,
    pub sio_ramp_n: usize,
}

impl Plan {
    /// The full run: about 18 minutes here.
    fn full() -> Plan {
        Plan {
            quick: false,
            ns: vec![1000, 5000, 10_000, 19_000],
            transports: Kind::COMPARED.to_vec(),
            scenarios: Scenario::value_variants().to_vec(),
            changes: 100,
            idle_secs: 4,
            churn_standing: 10_000,
            sio_max_n: 5000,
            sio_max_churn_standing: 1000,
            churn_rates: vec![50, 100, 200, 500, 1000, 2000, 5000, 10_000],
            churn_ms: 3000,
            abandon: 100_000,
            chat_n: 10_000,
            chat_rate: 100,
            chat_senders: 10,
            chat_ms: 5000,
            chat_drain_ms: 30_000,
            chat_bytes: 64,
            ramp_n: 19_000,
            sio_chat_n: 2000,
            sio_ramp_n: 2000,
        }
    }

    /// The quick run: about 2 minutes.
    fn quick() -> Plan {
        Plan {
            quick: true,
            ns: vec![1000],
            changes: 10,
            idle_secs: 1,
            churn_standing: 500,
            sio_max_n: 1000,
            sio_max_churn_standing: 500,
            churn_rates: vec![1000, 5000],
            churn_ms: 1000,
            abandon: 10_000,
            chat_n: 1000,
            chat_ms: 2000,
            chat_drain_ms: 10_000,
            ramp_n: 1000,
            sio_chat_n: 1000,
            sio_ramp_n: 1000,
            ..Plan::full()
        }
    }

    /// The preset the flags chose, with their overrides.
    pub fn new(f: Flags) -> Result<Plan, String> {
        let mut plan = if f.quick { Plan::quick() } else { Plan::full() };
        plan.ns = f.n.unwrap_or(plan.ns);
        plan.transports = f.transports.unwrap_or(plan.transports);
        plan.scenarios = f.scenarios.unwrap_or(plan.scenarios);
        plan.changes = f.changes.unwrap_or(plan.changes);
        plan.churn_rates = f.churn_rates.unwrap_or(plan.churn_rates);
        plan.churn_standing = f.churn_standing.unwrap_or(plan.churn_standing);
        plan.sio_max_n = f.sio_max_n.unwrap_or(plan.sio_max_n);
        plan.abandon = f.abandon.unwrap_or(plan.abandon);
        plan.chat_n = f.chat_n.unwrap_or(plan.chat_n);
        plan.chat_rate = f.chat_rate.unwrap_or(plan.chat_rate).max(1);
        plan.chat_senders = f.chat_senders.unwrap_or(plan.chat_senders).clamp(1, 16);
        plan.chat_ms = f.chat_ms.unwrap_or(plan.chat_ms);
        plan.chat_drain_ms = f.chat_drain_ms.unwrap_or(plan.chat_drain_ms);
        plan.ramp_n = f.ramp_n.unwrap_or(plan.ramp_n);
        plan.sio_chat_n = f.sio_chat_n.unwrap_or(plan.sio_chat_n);
        plan.sio_ramp_n = f.sio_ramp_n.unwrap_or(plan.sio_ramp_n);
        if let Some(cores) = f.server_cores {
            crate::procs::set_server_cores(cores);
        }
        // A server process may hold 20,000 open files; one connection per
        // client leaves room for little more than 19,000 clients (the chat
        // adds its sender's two).
        let sizes = plan.ns.iter().chain([&plan.ramp_n, &plan.chat_n]);
        if let Some(n) = sizes.max().filter(|&&n| n > 19_000) {
            return Err(format!(
                "N={n} exceeds what one server process can hold open"
            ));
        }
        Ok(plan)
    }

    pub fn has(&self, scenario: Scenario) -> bool {
        self.scenarios.contains(&scenario)
    }
}
