//! The fleet end to end: two hosts `h1` and `h2`, each running `nfsentry run` with
//! `[crowdsec]` push and pull, share one CrowdSec Local API in a namespace of its own; a
//! scanner namespace probes them. All four hang off a bridge in the LAPI's namespace, so no
//! packet leaves the namespaces this test makes. What is checked is what the kernels hold
//! (`nft -j`), what the LAPI holds (`cscli`), and what `nfsentry list` and `nfsentry status`
//! say about it.
//!
//! Needs root, nmap and Debian's `crowdsec` package (scripts/setup.sh installs it).

#[path = "support/crowdsec.rs"]
mod lapi;
mod support;

use std::fs::{self, File};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lapi::Lapi;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use support::{Netns, ScratchDir};

const NETNS_PREFIX: &str = "fleet";
const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_nfsentry");
const TABLE: &str = "nfsentry";
const LAPI_ADDRESS: &str = "10.77.0.254";
const LAPI_PORT: u16 = 8080;
const SCANNER: &str = "10.77.0.1";
/// A second address of the scanner, for the scan made while the LAPI is down.
const SCANNER_ALT: &str = "10.77.0.2";
/// A link name inside each host namespace.
const LINK: &str = "fleet0";
/// Generous: the machine is shared, and a pull every 200ms is the fastest path measured.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// One host running nfsentry; stopped (SIGTERM, waited for) on drop.
struct Host {
    netns: Netns,
    name: &'static str,
    address: &'static str,
    child: Option<Child>,
    log: std::path::PathBuf,
    config: std::path::PathBuf,
}

impl Host {
    fn nft_json(&self, args: &[&str]) -> Value {
        let mut command = vec!["nft", "-j"];
        command.extend_from_slice(args);
        let output = self.netns.exec_output(&command);
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
    }

    /// The elements of one of nfsentry's sets, in `nft` text (`10.0.0.1`, `198.51.100.0/24`),
    /// with the timeout each carries (seconds; None without).
    fn set(&self, set: &str) -> Vec<(String, Option<u64>)> {
        let listing = self.nft_json(&["list", "set", "inet", TABLE, set]);
        listing["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|object| object.get("set"))
            .filter_map(|set| set.get("elem").and_then(Value::as_array))
            .flatten()
            .map(|element| match element.get("elem") {
                Some(inner) => (element_text(&inner["val"]), inner["timeout"].as_u64()),
                None => (element_text(element), None),
            })
            .collect()
    }

    fn holds(&self, set: &str, element: &str) -> bool {
        self.set(set).iter().any(|(text, _)| text == element)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str) {
        wait_for(
            &format!("{} logs {what:?}", self.name),
            || self.log().contains(what),
            || self.log(),
        );
    }

    /// `nfsentry ARGS --config CONFIG` from outside the namespace (the control socket is a
    /// file): its standard output, which must be a success.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(DAEMON_BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap_or_else(|e| panic!("nfsentry {args:?}: {e}"));
        assert!(
            output.status.success(),
            "nfsentry {args:?} on {} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `nfsentry COMMAND --json`, read.
    fn json(&self, command: &str) -> Value {
        let text = self.cli(&[command, "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// The `crowdsec` section of `nfsentry status --json`.
    fn lapi_status(&self) -> Value {
        self.json("status")["crowdsec"].clone()
    }

    /// The `nfsentry list --json` entries for `address`, in the list's order.
    fn listed(&self, address: &str) -> Vec<Value> {
        self.json("list")["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["address"] == address)
            .cloned()
            .collect()
    }

    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.signal(Signal::SIGTERM);
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn element_text(value: &Value) -> String {
    if let Some(prefix) = value.get("prefix") {
        return format!("{}/{}", text(&prefix["addr"]), text(&prefix["len"]));
    }
    if let Some(range) = value.get("range") {
        return format!("{}-{}", text(&range[0]), text(&range[1]));
    }
    text(value)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Polls `condition` until it holds; panics after [`DEADLINE`] with `context()`.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}\n{}",
            context()
        );
        thread::sleep(POLL);
    }
}

/// The bridge in the LAPI's namespace, with `peer` attached through a veth pair.
fn attach(hub: &Netns, peer: &Netns, index: usize, addresses: &[&str]) {
    let hub_link = format!("port{index}");
    hub.add_veth(&hub_link, peer, LINK);
    hub.ip(&["link", "set", &hub_link, "master", "br0"]);
    hub.ip(&["link", "set", &hub_link, "up"]);
    peer.configure_link(LINK, addresses);
}

fn config(scratch: &ScratchDir, host: &str, lapi: &Lapi) -> String {
    let state = scratch.join(&format!("state-{host}"));
    fs::create_dir_all(&state).unwrap_or_else(|e| panic!("state dir: {e}"));
    let password = scratch.join(&format!("password-{host}"));
    let key = scratch.join(&format!("key-{host}"));
    fs::write(&password, format!("password-of-{host}\n")).unwrap_or_else(|e| panic!("{e}"));
    fs::write(&key, format!("bouncerkeyof{host}0123456789abcdef\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    lapi.add_machine(host, &format!("password-of-{host}"));
    lapi.add_bouncer(
        &format!("nfsentry-{host}"),
        &format!("bouncerkeyof{host}0123456789abcdef"),
    );
    format!(
        r#"[daemon]
queue = 0
table = "{TABLE}"
state_dir = "{state}"
control_socket = "{control}"
log = "stderr"
interfaces = ["{LINK}"]

[monitor]
tcp_ports = [1, 11, "20-23", 111, 31337]
udp_ports = [1, 7, 9]

[detect]
scan_trigger = 0
window = "10m"
ignore = ["127.0.0.0/8", "::1/128", "{LAPI_ADDRESS}/32"]

[respond]
verdict = "drop"
block_timeout = "1h"

[crowdsec]
url = "{url}"
push = true
machine_id = "{host}"
password_file = "{password}"
pull = true
bouncer_key_file = "{key}"
pull_every = "200ms"
resync_every = "10s"
"#,
        state = state.display(),
        control = scratch.join(&format!("{host}.sock")).display(),
        url = lapi.url(),
        password = password.display(),
        key = key.display(),
    )
}

fn start_host(
    scratch: &ScratchDir,
    netns: Netns,
    name: &'static str,
    address: &'static str,
    lapi: &Lapi,
) -> Host {
    let path = scratch.join(&format!("{name}.toml"));
    fs::write(&path, config(scratch, name, lapi)).unwrap_or_else(|e| panic!("config: {e}"));
    let log = scratch.join(&format!("{name}.log"));
    let out = File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
    let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
    let child = Command::new("ip")
        .args(["netns", "exec", netns.name(), DAEMON_BIN, "run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start nfsentry: {e}"));
    let host = Host {
        netns,
        name,
        address,
        child: Some(child),
        log,
        config: path,
    };
    host.wait_log("watching;");
    host
}

/// nmap SYN probes from the scanner (from `source`) to monitored ports of `target`.
fn scan(scanner: &Netns, source: &str, target: &str) {
    let output = scanner.exec_output(&[
        "nmap",
        "-n",
        "-Pn",
        "-T4",
        "--max-retries",
        "1",
        "--host-timeout",
        "30s",
        "-sS",
        "-S",
        source,
        "-e",
        LINK,
        "-p",
        "1,11,21,111",
        target,
    ]);
    assert!(
        output.status.success(),
        "nmap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn decisions_on(lapi: &Lapi, value: &str) -> Vec<Value> {
    lapi.decisions()
        .into_iter()
        .filter(|decision| decision["value"] == value)
        .collect()
}

#[test]
fn a_scan_of_one_host_shuts_the_scanner_out_of_the_other_and_the_fleet_survives_an_outage() {
    let hub = Netns::new(NETNS_PREFIX, "lapi");
    hub.ip(&["link", "add", "br0", "type", "bridge"]);
    hub.configure_link("br0", &[&format!("{LAPI_ADDRESS}/24")]);
    let scanner = Netns::new(NETNS_PREFIX, "scan");
    attach(
        &hub,
        &scanner,
        0,
        &[&format!("{SCANNER}/24"), &format!("{SCANNER_ALT}/24")],
    );
    let h1_ns = Netns::new(NETNS_PREFIX, "h1");
    attach(&hub, &h1_ns, 1, &["10.77.0.11/24"]);
    let h2_ns = Netns::new(NETNS_PREFIX, "h2");
    attach(&hub, &h2_ns, 2, &["10.77.0.12/24"]);

    let mut lapi = Lapi::start_in(Some(hub.name()), LAPI_ADDRESS, LAPI_PORT);
    let scratch = ScratchDir::new("nfsentry-fleet", "e2e");
    let h1 = start_host(&scratch, h1_ns, "h1", "10.77.0.11", &lapi);
    let h2 = start_host(&scratch, h2_ns, "h2", "10.77.0.12", &lapi);
    let both = [&h1, &h2];
    let logs = || format!("h1:\n{}\nh2:\n{}", h1.log(), h2.log());

    // A scan of h1 blocks the scanner on h2, which it never touched.
    scan(&scanner, SCANNER, h1.address);
    wait_for(
        "h1 blocks the scanner",
        || h1.holds("blocked_v4", SCANNER),
        logs,
    );
    wait_for(
        "h2 enforces h1's ban on the scanner",
        || h2.holds("blocked_v4", SCANNER),
        logs,
    );
    let pushed = decisions_on(&lapi, SCANNER);
    assert_eq!(
        pushed.len(),
        1,
        "one decision, h1's, none pushed back: {pushed:?}"
    );
    assert_eq!(pushed[0]["origin"], "nfsentry");
    assert_eq!(pushed[0]["scenario"], "nfsentry/portscan");
    let timeout = h2
        .set("blocked_v4")
        .into_iter()
        .find(|(address, _)| address == SCANNER)
        .and_then(|(_, timeout)| timeout);
    assert!(
        timeout.is_some_and(|seconds| seconds > 3000 && seconds <= 3600),
        "h2's element lasts what is left of h1's 1h block: {timeout:?}"
    );

    // A ban made by hand on the LAPI is enforced on both, for its time.
    let before_cscli = unix_now();
    lapi.cscli(&["decisions", "add", "--ip", "192.0.2.77", "--duration", "2h"]);
    for host in both {
        wait_for(
            &format!("{} enforces the cscli ban", host.name),
            || host.holds("blocked_v4", "192.0.2.77"),
            logs,
        );
    }
    // A network lands in the range sets.
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "198.51.100.0/24",
        "--duration",
        "2h",
    ]);
    for host in both {
        wait_for(
            &format!("{} enforces the banned network", host.name),
            || host.holds("blocked_ranges_v4", "198.51.100.0/24"),
            logs,
        );
    }
    // Pulled bans are never pushed back.
    let manual = decisions_on(&lapi, "192.0.2.77");
    assert!(
        manual.iter().all(|decision| decision["origin"] == "cscli"),
        "{manual:?}"
    );

    // h2 lists both cscli bans, the network as one entry, with their origin and time left.
    wait_for(
        "h2 lists the cscli bans",
        || !h2.listed("192.0.2.77").is_empty() && !h2.listed("198.51.100.0/24").is_empty(),
        || h2.cli(&["list"]),
    );
    for (address, scope) in [("192.0.2.77", "Ip"), ("198.51.100.0/24", "Range")] {
        let entries = h2.listed(address);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let entry = &entries[0];
        assert_eq!(entry["origin"], "cscli", "{entry}");
        assert_eq!(entry["scope"], scope, "{entry}");
        assert_eq!(entry["pulled"], true, "{entry}");
        let left = entry["left_secs"].as_u64().unwrap_or(0);
        assert!(left > 0 && left <= 7_200, "time left of a 2h ban: {entry}");
        assert!(entry["since"].as_u64() >= Some(before_cscli), "{entry}");
    }
    // h1's ban on the scanner reached h2 as another nfsentry's.
    let from_h1 = h2.listed(SCANNER);
    assert_eq!(from_h1.len(), 1, "{from_h1:?}");
    assert_eq!(from_h1[0]["origin"], "nfsentry");
    assert_eq!(from_h1[0]["kind"], "nfsentry/portscan");
    // On h1 the scanner is listed twice: its own block, and its decision come back.
    let on_h1 = h1.listed(SCANNER);
    let origins: Vec<(&Value, &Value)> = on_h1
        .iter()
        .map(|entry| (&entry["origin"], &entry["pulled"]))
        .collect();
    assert_eq!(
        origins,
        [
            (&Value::from("detection"), &Value::from(false)),
            (&Value::from("nfsentry"), &Value::from(true))
        ],
        "{on_h1:?}"
    );
    let table = h2.cli(&["list"]);
    let header = table.lines().next().unwrap_or_default();
    let origin_column = header.find("ORIGIN").unwrap_or_else(|| panic!("{table}"));
    for (address, origin) in [
        ("192.0.2.77 ", "crowdsec:cscli"),
        ("198.51.100.0/24 ", "crowdsec:cscli"),
        (&format!("{SCANNER} ") as &str, "crowdsec:nfsentry"),
    ] {
        let line = table
            .lines()
            .find(|line| line.starts_with(address))
            .unwrap_or_else(|| panic!("{address} not listed:\n{table}"));
        assert_eq!(
            line.get(origin_column..origin_column + origin.len()),
            Some(origin),
            "{table}"
        );
    }

    // h2's status: connected, the two addresses (h1's and cscli's) and the network held,
    // pulled since the bans were made.
    wait_for(
        "h2's status counts the bans it holds",
        || {
            let status = h2.lapi_status();
            status["decisions"]["ip"] == 2 && status["decisions"]["range"] == 1
        },
        || h2.cli(&["status"]),
    );
    let status = h2.lapi_status();
    assert_eq!(status["connected"], true, "{status}");
    assert!(status["since"].as_u64().is_some(), "{status}");
    assert!(
        status["last_pull"].as_u64() >= Some(before_cscli),
        "{status}"
    );
    assert_eq!(status["logged_in"], true, "{status}");
    assert_eq!(status["pushes"]["pending"], 0, "{status}");
    assert_eq!(status["url"], lapi.url(), "{status}");
    let text = h2.cli(&["status"]);
    assert!(
        text.lines()
            .any(|line| line.starts_with("crowdsec ") && line.contains(": connected for ")),
        "{text}"
    );
    assert!(text.contains("2 addresses and 1 range held"), "{text}");

    // Deleting them on the LAPI releases them on both.
    lapi.cscli(&["decisions", "delete", "--ip", "192.0.2.77"]);
    lapi.cscli(&["decisions", "delete", "--range", "198.51.100.0/24"]);
    for host in both {
        wait_for(
            &format!("{} releases the deleted bans", host.name),
            || {
                !host.holds("blocked_v4", "192.0.2.77")
                    && !host.holds("blocked_ranges_v4", "198.51.100.0/24")
            },
            logs,
        );
    }
    // nfsentry's own block of the scanner on h1 is untouched by all that.
    assert!(h1.holds("blocked_v4", SCANNER));

    // The status line carries the LAPI's state.
    h1.signal(Signal::SIGUSR1);
    h1.wait_log("crowdsec: connected");

    // The LAPI goes away: both hosts go on detecting and blocking, the fleet's bans stay.
    let sent_before = h2.lapi_status()["pushes"]["sent"].as_u64().unwrap_or(0);
    lapi.stop();
    wait_for(
        "h1's status says the LAPI is not connected",
        || h1.lapi_status()["connected"] == false,
        || h1.cli(&["status"]),
    );
    scan(&scanner, SCANNER_ALT, h2.address);
    wait_for(
        "h2 blocks the second scanner address while the LAPI is down",
        || h2.holds("blocked_v4", SCANNER_ALT),
        logs,
    );
    h2.wait_log("cannot be reached");
    assert!(
        h2.holds("blocked_v4", SCANNER),
        "pulled bans outlive an outage"
    );
    // h2's status: not connected, its block waits to be pushed, the pulled bans still held.
    wait_for(
        "h2's status shows the LAPI down and its block pending",
        || {
            let status = h2.lapi_status();
            status["connected"] == false && status["pushes"]["pending"].as_u64() >= Some(1)
        },
        || h2.cli(&["status"]),
    );
    let status = h2.lapi_status();
    assert_eq!(
        status["decisions"]["ip"], 1,
        "only h1's ban is left: {status}"
    );
    assert!(status["last_error"].is_string(), "{status}");
    let text = h2.cli(&["status"]);
    assert!(text.contains(": unreachable for "), "{text}");
    assert!(text.contains("\nlast error "), "{text}");
    // No secret in either form.
    let json = h2.cli(&["status", "--json"]);
    for secret in ["password-of-h2", "bouncerkeyofh2"] {
        assert!(
            !text.contains(secret) && !json.contains(secret),
            "{text}\n{json}"
        );
    }

    // It comes back: the push made during the outage arrives and reaches h1.
    lapi.resume();
    h2.wait_log("answers again");
    wait_for(
        "h2's status shows the LAPI back and nothing pending",
        || {
            let status = h2.lapi_status();
            status["connected"] == true && status["pushes"]["pending"] == 0
        },
        || h2.cli(&["status"]),
    );
    let status = h2.lapi_status();
    assert!(
        status["pushes"]["sent"].as_u64() > Some(sent_before),
        "the block made during the outage was sent: {status}"
    );
    assert!(status["outages"].as_u64() >= Some(1), "{status}");
    wait_for(
        "h1 enforces the ban h2 made while the LAPI was down",
        || h1.holds("blocked_v4", SCANNER_ALT),
        logs,
    );
    assert_eq!(
        decisions_on(&lapi, SCANNER).len(),
        1,
        "the first ban is still there"
    );
    assert_eq!(decisions_on(&lapi, SCANNER_ALT).len(), 1);
    for host in both {
        assert!(
            host.holds("blocked_v4", SCANNER),
            "{} lost a ban",
            host.name
        );
    }

    // An admin lifts h1's block by hand: h1's decision goes, and h2 lets the scanner in too.
    let unblock = Command::new(DAEMON_BIN)
        .args(["unblock", SCANNER, "--config"])
        .arg(scratch.join("h1.toml"))
        .output()
        .unwrap_or_else(|e| panic!("nfsentry unblock: {e}"));
    assert!(
        unblock.status.success(),
        "nfsentry unblock failed: {}",
        String::from_utf8_lossy(&unblock.stderr)
    );
    assert!(
        !h1.holds("blocked_v4", SCANNER),
        "unblock returned before the kernel had it"
    );
    wait_for(
        "the fleet forgets h1's ban and h2 releases the scanner",
        || decisions_on(&lapi, SCANNER).is_empty() && !h2.holds("blocked_v4", SCANNER),
        logs,
    );
    assert!(
        !h1.holds("blocked_v4", SCANNER),
        "h1's own decision came back from the pull"
    );
}
