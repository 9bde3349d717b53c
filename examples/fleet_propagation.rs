//! Fleet figures (a benchmark, not a test; run as root, with nmap and Debian's crowdsec):
//!
//!   cargo run --release --example fleet_propagation [-- SCANS]
//!
//! 1. Propagation: h1 and h2 run `nfsentry run` with `[crowdsec]` push and pull against one
//!    LAPI, all in namespaces of their own on a bridge (as tests/e2e_fleet.rs builds them).
//!    Each round a new scanner address starts nmap against h1; the time until that address is
//!    in h2's `blocked_v4` (read with `nft -j` every few ms) is one sample. p50 and p99 over
//!    SCANS rounds (default 20), with `pull_every = "1s"` and `"100ms"`. The clock starts when
//!    nmap is started, so each sample includes nmap's start-up before its first probe; the
//!    time from h1's own block (its set read the same way) to h2's element is printed too.
//! 2. Idle bouncer CPU: h2's CPU time over 10 s with nothing happening, at each pull_every.
//! 3. Push rate: the worker alone, pushing blocks into one loopback LAPI as fast as it takes
//!    them, 100 alerts per POST (the default) and 1 per POST.
//!
//! Figures vary with the machine's load: read them as orders of magnitude.

#[path = "../tests/support/crowdsec.rs"]
mod lapi;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fs::{self, File};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use lapi::Lapi;
use nfsentry::config::Config;
use nfsentry::crowdsec::{self, LocalBlock, Settings, Tuning};
use nfsentry::store::BlockRecord;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::{Netns, ScratchDir};

const DAEMON_BIN: &str = "target/release/nfsentry";
const TABLE: &str = "nfsentry";
const LAPI_ADDRESS: &str = "10.77.0.254";
const LINK: &str = "fleet0";
const DEADLINE: Duration = Duration::from_secs(30);

struct Host {
    netns: Netns,
    child: Child,
}

impl Host {
    fn holds(&self, address: &str) -> bool {
        let output =
            self.netns
                .exec_output(&["nft", "-j", "list", "set", "inet", TABLE, "blocked_v4"]);
        let listing: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        listing["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|object| object["set"]["elem"].as_array())
            .flatten()
            .any(|element| element == address || element["elem"]["val"] == address)
    }

    /// User plus system CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat =
            fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |index: usize| {
            fields
                .get(index)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
        field(11) + field(12)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start_host(scratch: &ScratchDir, netns: Netns, name: &str, lapi: &Lapi, every: &str) -> Host {
    let password = format!("password-of-{name}");
    let key = format!("bouncerkeyof{name}0123456789abcdef");
    lapi.add_machine(name, &password);
    lapi.add_bouncer(&format!("nfsentry-{name}"), &key);
    let state = scratch.join(&format!("state-{name}"));
    fs::create_dir_all(&state).expect("state dir");
    fs::write(scratch.join(&format!("password-{name}")), &password).expect("password");
    fs::write(scratch.join(&format!("key-{name}")), &key).expect("key");
    let config = format!(
        "[daemon]\nqueue = 0\ntable = \"{TABLE}\"\nstate_dir = \"{state}\"\nlog = \"stderr\"\n\
         interfaces = [\"{LINK}\"]\n[monitor]\ntcp_ports = [1, 11, 111]\nudp_ports = [7]\n\
         [detect]\nscan_trigger = 0\nignore = [\"127.0.0.0/8\", \"{LAPI_ADDRESS}/32\"]\n\
         [respond]\nverdict = \"drop\"\nblock_timeout = \"1h\"\n\
         [crowdsec]\nurl = \"{url}\"\npush = true\nmachine_id = \"{name}\"\n\
         password_file = \"{dir}/password-{name}\"\npull = true\n\
         bouncer_key_file = \"{dir}/key-{name}\"\npull_every = \"{every}\"\n\
         resync_every = \"5m\"\n",
        state = state.display(),
        url = lapi.url(),
        dir = scratch.path().display(),
    );
    let path = scratch.join(&format!("{name}.toml"));
    fs::write(&path, config).expect("config");
    let log = File::create(scratch.join(&format!("{name}.log"))).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", netns.name(), DAEMON_BIN, "run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start nfsentry");
    let host = Host { netns, child };
    let deadline = Instant::now() + DEADLINE;
    while host
        .netns
        .exec_output(&["nft", "list", "chain", "inet", TABLE, "prerouting"])
        .status
        .code()
        != Some(0)
    {
        assert!(Instant::now() < deadline, "{name} did not start");
        thread::sleep(Duration::from_millis(20));
    }
    host
}

fn attach(hub: &Netns, peer: &Netns, index: usize, address: &str) {
    let hub_link = format!("port{index}");
    hub.add_veth(&hub_link, peer, LINK);
    hub.ip(&["link", "set", &hub_link, "master", "br0"]);
    hub.ip(&["link", "set", &hub_link, "up"]);
    peer.configure_link(LINK, &[address]);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn propagation(every: &str, scans: usize) {
    let hub = Netns::new("fleetb", "lapi");
    hub.ip(&["link", "add", "br0", "type", "bridge"]);
    hub.configure_link("br0", &[&format!("{LAPI_ADDRESS}/24")]);
    let scanner = Netns::new("fleetb", "scan");
    attach(&hub, &scanner, 0, "10.77.0.1/24");
    let h1_ns = Netns::new("fleetb", "h1");
    attach(&hub, &h1_ns, 1, "10.77.0.11/24");
    let h2_ns = Netns::new("fleetb", "h2");
    attach(&hub, &h2_ns, 2, "10.77.0.12/24");
    let lapi = Lapi::start_in(Some(hub.name()), LAPI_ADDRESS, 8080);
    let scratch = ScratchDir::new("nfsentry-fleet", "bench");
    let h1 = start_host(&scratch, h1_ns, "h1", &lapi, every);
    let h2 = start_host(&scratch, h2_ns, "h2", &lapi, every);

    let mut samples = Vec::with_capacity(scans);
    let mut after_h1 = Vec::with_capacity(scans);
    for round in 0..scans {
        let source = format!("10.77.0.{}", 100 + round);
        scanner.ip(&["address", "add", &format!("{source}/24"), "dev", LINK]);
        let start = Instant::now();
        let mut nmap = Command::new("ip")
            .args(["netns", "exec", scanner.name(), "nmap", "-n", "-Pn", "-T4"])
            .args([
                "--max-retries",
                "0",
                "-sS",
                "-S",
                &source,
                "-e",
                LINK,
                "-p",
                "1,11,111",
            ])
            .arg("10.77.0.11")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nmap");
        let mut blocked_on_h1 = None;
        while !h2.holds(&source) {
            assert!(start.elapsed() < DEADLINE, "{source} never reached h2");
            if blocked_on_h1.is_none() && h1.holds(&source) {
                blocked_on_h1 = Some(Instant::now());
            }
        }
        samples.push(start.elapsed());
        after_h1.push(blocked_on_h1.map_or(Duration::ZERO, |at| at.elapsed()));
        let _ = nmap.wait();
    }
    samples.sort_unstable();
    println!(
        "propagation h1 -> h2, pull_every {every}: p50 {:?}, p99 {:?}, min {:?}, max {:?} ({} scans)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );

    after_h1.sort_unstable();
    println!(
        "  of which h1's block -> h2's element: p50 {:?}, p99 {:?}",
        percentile(&after_h1, 0.5),
        percentile(&after_h1, 0.99)
    );

    let ticks_per_second = 100.0;
    let before = h2.cpu_ticks();
    thread::sleep(Duration::from_secs(10));
    let used = h2.cpu_ticks() - before;
    println!(
        "idle bouncer CPU, pull_every {every}: {:.2}% of one core over 10 s",
        used as f64 / ticks_per_second / 10.0 * 100.0
    );
}

fn push_rate(alerts_per_post: usize, blocks: usize) {
    let lapi = Lapi::start();
    lapi.add_machine("bench", "bench-password");
    fs::write(lapi.dir().join("password"), "bench-password").expect("password");
    let text = format!(
        "[crowdsec]\nurl = \"{}\"\npush = true\nmachine_id = \"bench\"\n\
         password_file = \"password\"\npull = false\n",
        lapi.url()
    );
    let config = Config::from_toml(&text, &lapi.dir().join("nfsentry.toml")).expect("config");
    let section = config.crowdsec.expect("section");
    let mut settings = Settings::new(&section);
    settings.tuning = Tuning {
        alerts_per_post,
        ..Tuning::default()
    };
    let worker = crowdsec::spawn(settings, |_| {}).expect("worker");
    let reporter = worker.reporter();
    let now = nfsentry::store::unix_seconds(std::time::SystemTime::now());
    let start = Instant::now();
    for index in 0..blocks {
        let address = format!("100.64.{}.{}", index / 250, index % 250 + 1);
        let record = BlockRecord {
            source: address.parse().expect("address"),
            added: now,
            expires: Some(now + 3600),
            protocol: "TCP".to_owned(),
            port: 111,
            kind: "SYN/Normal".to_owned(),
            verified: false,
        };
        reporter.blocked(LocalBlock::new(record));
    }
    while worker.status().alerts_pushed < blocks as u64 {
        assert!(start.elapsed() < Duration::from_secs(600), "pushes stalled");
        thread::sleep(Duration::from_millis(5));
    }
    let elapsed = start.elapsed();
    println!(
        "pushes into one LAPI, {alerts_per_post} alerts per POST: {blocks} alerts in {elapsed:?} = {:.0} alerts/s",
        blocks as f64 / elapsed.as_secs_f64()
    );
    worker.stop(Duration::from_secs(5));
}

fn main() {
    let scans = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    for every in ["1s", "100ms"] {
        propagation(every, scans);
    }
    push_rate(100, 5000);
    push_rate(1, 1000);
}
