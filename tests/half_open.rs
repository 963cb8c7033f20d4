//! Half-open clients: a client whose network silently stops (cable pulled)
//! never closes its connection, so only heartbeats can notice it.
//!
//! The client is `curl` inside a network namespace that the test creates,
//! joined to this namespace by a veth pair on link-local addresses that
//! exist only for the test. Taking the client's link down makes it vanish
//! without a FIN or RST. Needs root;
//! without it the tests skip, unless SSIO_REQUIRE_NETNS=1 (the full test
//! command sets it) makes that a failure.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ssio::Config;
use support::*;

/// A namespace with one veth link to ours; removed on drop.
struct Netns {
    name: String,
    host_ip: String,
    host_if: String,
    client_if: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// `subnet` picks a distinct /30 so tests can run in parallel.
    fn create(subnet: u8) -> Option<Netns> {
        let tag = format!("{}{}", std::process::id() % 10_000, subnet);
        let name = format!("ssio-ho-{tag}");
        let host_if = format!("ssh{tag}");
        let client_if = format!("ssc{tag}");
        // A /30 of its own per process and test, so a leftover link from an
        // earlier run can never shadow this one's route.
        let net = 10 + std::process::id() % 240;
        let base = subnet * 4;
        let host_ip = format!("169.254.{net}.{}", base + 1);
        let client_ip = format!("169.254.{net}.{}", base + 2);
        let ns = Netns {
            name: name.clone(),
            host_ip: host_ip.clone(),
            host_if: host_if.clone(),
            client_if: client_if.clone(),
        };
        let ok = ip(&["netns", "add", &name])
            && ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &client_if,
            ])
            && ip(&["link", "set", &client_if, "netns", &name])
            && ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if])
            && ip(&["link", "set", &host_if, "up"])
            && ip(&[
                "netns",
                "exec",
                &name,
                "ip",
                "addr",
                "add",
                &format!("{client_ip}/30"),
                "dev",
                &client_if,
            ])
            && ip(&[
                "netns", "exec", &name, "ip", "link", "set", &client_if, "up",
            ])
            && ip(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ok.then_some(ns)
    }

    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Pulls the cable: the client's link goes down, so nothing it would
    /// send (ACKs, FIN, RST) ever arrives and nothing reaches it.
    fn cut(&self) {
        let ok = self
            .exec(&["ip", "link", "set", &self.client_if, "down"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "could not take the client link down");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn netns_or_skip(subnet: u8) -> Option<Netns> {
    match Netns::create(subnet) {
        Some(ns) => Some(ns),
        None if std::env::var("SSIO_REQUIRE_NETNS").as_deref() == Ok("1") => {
            panic!("network namespaces are required (run as root)")
        }
        None => {
            eprintln!("skipping: cannot create a network namespace (not root?)");
            None
        }
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on the host end of the link and waits until the client
/// namespace can reach it (a fresh veth takes a moment to come up).
///
/// Tests using this are multi-threaded: the blocking `curl` calls hold one
/// worker while the server answers on the other.
async fn start_on(ns: &Netns, config: Config) -> Server {
    let server = Server::start_at(
        format!("{}:0", ns.host_ip).parse::<SocketAddr>().unwrap(),
        config,
    )
    .await;
    let url = format!("http://{}/stats", server.addr);
    let deadline = Instant::now() + WAIT;
    while !ns
        .exec(&["curl", "-sf", "--max-time", "1", &url])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "client namespace cannot reach the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

async fn wait_zero(server: &Server, cut: Instant, bound: Duration) -> Duration {
    let deadline = cut + bound + Duration::from_secs(2);
    loop {
        if server.io.stats().sessions == 0 {
            return cut.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "half-open client still connected after {:?}",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Signals once `out` has carried a `user count` event, then keeps draining
/// it so the client never blocks on a full pipe.
fn first_count_received(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(out).lines();
        for line in lines.by_ref() {
            if line.is_ok_and(|l| l == "event: user count") {
                let _ = tx.send(());
                break;
            }
        }
        for _ in lines {}
    });
    rx
}

const PING_INTERVAL: u64 = 1_000;
const PING_TIMEOUT: u64 = 1_000;

fn config() -> Config {
    Config {
        ping_interval_ms: PING_INTERVAL,
        ping_timeout_ms: PING_TIMEOUT,
        ..fast_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sse_client_is_disconnected_within_ping_interval_plus_ping_timeout() {
    let Some(ns) = netns_or_skip(1) else { return };
    let server = start_on(&ns, config()).await;
    let url = format!("http://{}/events", server.addr);
    // Plain curl: it never sends anything after its request.
    let mut curl = ns
        .exec(&["curl", "-sN", "--max-time", "30", &url])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let received = first_count_received(curl.stdout.take().unwrap());
    let _curl = Kill(curl);
    server.wait_sessions(1, WAIT).await;
    // Pull the cable once the client has the first events.
    received
        .recv_timeout(WAIT)
        .expect("curl never received the first events");
    let cut = Instant::now();
    ns.cut();
    let bound = Duration::from_millis(PING_INTERVAL + PING_TIMEOUT);
    let took = wait_zero(&server, cut, bound).await;
    eprintln!("half-open SSE client dropped after {took:?} (bound {bound:?})");
    assert!(
        took <= bound + Duration::from_millis(500),
        "took {took:?}, bound {bound:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_poll_client_is_disconnected_within_ping_interval_plus_ping_timeout() {
    let Some(ns) = netns_or_skip(2) else { return };
    let server = start_on(&ns, config()).await;
    let out = ns
        .exec(&[
            "curl",
            "-s",
            "--max-time",
            "5",
            &format!("http://{}/poll", server.addr),
        ])
        .output()
        .unwrap();
    let sid = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    // The client's next poll is pending when its network dies.
    let poll_url = format!("http://{}/poll?sid={sid}", server.addr);
    let first = ns
        .exec(&["curl", "-s", "--max-time", "5", &poll_url])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        r#"[{"event":"user count","data":1}]"#
    );
    let _pending = Kill(
        ns.exec(&["curl", "-s", "--max-time", "30", &poll_url])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cut = Instant::now();
    ns.cut();
    let bound = Duration::from_millis(PING_INTERVAL + PING_TIMEOUT);
    let took = wait_zero(&server, cut, bound).await;
    eprintln!("half-open polling client dropped after {took:?} (bound {bound:?})");
    assert!(
        took <= bound + Duration::from_millis(500),
        "took {took:?}, bound {bound:?}"
    );
}
