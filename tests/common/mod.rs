//! Namespace lab for the end-to-end tests: a scanner and a target network namespace joined by a
//! veth pair, the daemon under test running in the target and the probes (nmap, scapy, curl,
//! tcpdump) run from either side. It only drives and observes; it does not decide what the
//! daemon should have done — the assertions live in the test files.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use regex::Regex;
use serde_json::Value;

/// The daemon binary built by cargo for these tests.
pub const DAEMON_BIN: &str = env!("CARGO_BIN_EXE_nfsentry");
/// nft table the lab configures the daemon to own.
pub const TABLE: &str = "nfsentry";
/// A real service on the target; deliberately outside every monitored range below.
pub const HTTP_PORT: u16 = 8080;
/// Monitored TCP ports as written in the config: plain ports and a range, both forms the
/// daemon must accept.
pub const MONITORED_TCP_CONFIG: &str = r#"1, 11, "20-23", 111, 31337"#;
/// Ports the scans probe; each lies inside `MONITORED_TCP_CONFIG`, 21 only through the range.
pub const SCANNED_TCP_PORTS: [u16; 5] = [1, 11, 21, 111, 31337];
pub const MONITORED_UDP_CONFIG: &str = r#"1, 7, 9, "67-69", 161"#;
pub const SCANNED_UDP_PORTS: [u16; 4] = [7, 9, 69, 161];
pub const SCANNER_IF: &str = "e2e-scan";
/// Interface name inside the target namespace; passed to the daemon as its ingress device.
pub const TARGET_IF: &str = "e2e-tgt";

/// scapy lives in the distro python; a pyenv `python3` earlier on PATH lacks it.
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const CHILD_POLL_INTERVAL: Duration = Duration::from_millis(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);
const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Short on purpose: a dropped connection attempt costs this much, and tests make several.
const HTTP_FETCH_TIMEOUT_SECS: u32 = 2;
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(15);
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 40;

/// Tags in use in this process: two labs with one tag would share namespace names.
static TAGS_IN_USE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

#[derive(thiserror::Error)]
pub enum LabError {
    #[error("the namespace lab needs root (netns, nft, raw sockets); run the tests as root")]
    NotRoot,
    #[error("lab tag {0:?} is already in use in this test process")]
    DuplicateTag(String),
    #[error("lab tag {0:?} must be 1-20 characters of [a-z0-9-]")]
    BadTag(String),
    #[error("could not start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for `{command}` failed")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` exited with {status}\nstdout: {stdout}\nstderr: {stderr}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {timeout:?}")]
    CommandTimedOut { command: String, timeout: Duration },
    #[error("file operation on {path}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("config handed to the daemon is not valid TOML")]
    ConfigToml(#[source] toml::de::Error),
    #[error("output of `{command}` is not valid JSON")]
    Json {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unexpected JSON from `{command}`: {problem}")]
    JsonShape { command: String, problem: String },
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("{what} exited early with {status}; output:\n{output}")]
    ExitedEarly {
        what: String,
        status: ExitStatus,
        output: String,
    },
    #[error("no daemon log line matching {pattern} within {timeout:?}; log:\n{log}")]
    LogTimeout {
        pattern: String,
        timeout: Duration,
        log: String,
    },
    #[error("bad log pattern")]
    Pattern(#[from] regex::Error),
    #[error("daemon is not running")]
    DaemonNotRunning,
    #[error("could not signal pid {pid}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("daemon did not exit within {timeout:?} of {signal}; killed it. log tail:\n{log}")]
    StopTimedOut {
        signal: Signal,
        timeout: Duration,
        log: String,
    },
    #[error("daemon exit after {signal} was not clean: {status}; log tail:\n{log}")]
    UncleanExit {
        signal: Signal,
        status: ExitStatus,
        log: String,
    },
}

// The test harness prints a failed test's error with `{:?}`; show the message and its causes
// with real line breaks so daemon logs quoted in it stay readable.
impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            write!(f, "\n  caused by: {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

type Result<T> = std::result::Result<T, LabError>;

/// Which namespace of the lab a command runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Scanner,
    Target,
}

/// Exit status and captured output of a finished command.
#[derive(Debug)]
pub struct CmdOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// What `wait_for_log` looks for: a plain substring or a regular expression.
pub trait LogPattern {
    fn matches(&self, line: &str) -> bool;
    fn describe(&self) -> String;
}

impl LogPattern for str {
    fn matches(&self, line: &str) -> bool {
        line.contains(self)
    }
    fn describe(&self) -> String {
        format!("substring {self:?}")
    }
}

impl LogPattern for String {
    fn matches(&self, line: &str) -> bool {
        LogPattern::matches(self.as_str(), line)
    }
    fn describe(&self) -> String {
        LogPattern::describe(self.as_str())
    }
}

impl LogPattern for Regex {
    fn matches(&self, line: &str) -> bool {
        self.is_match(line)
    }
    fn describe(&self) -> String {
        format!("regex /{}/", self.as_str())
    }
}

/// Polls `condition` until it holds; errors from the condition end the wait at once.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if condition()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// A scanner namespace and a target namespace on one /24 and one /64, torn down on drop.
pub struct Lab {
    tag: String,
    scanner_ns: String,
    target_ns: String,
    /// Removed on drop unless a test failed: then it is kept for inspection.
    work_dir: tempfile::TempDir,
    pub scanner_v4: Ipv4Addr,
    /// A second scanner address: an unblocked, un-ignored source on the same host, used to
    /// show a block is per address and that the daemon is still watching.
    pub scanner_v4_alt: Ipv4Addr,
    pub target_v4: Ipv4Addr,
    pub scanner_v6: Ipv6Addr,
    pub target_v6: Ipv6Addr,
    target_mac: String,
    services: Mutex<Vec<Child>>,
    captures_started: AtomicU32,
}

impl Lab {
    /// Builds namespaces `nfs-<tag>-<pid>-scan` and `nfs-<tag>-<pid>-tgt`: the pid keeps test
    /// runs of several checkouts on one machine apart. The addresses derive from the tag so
    /// logs of parallel tests are told apart; the namespaces isolate them regardless.
    pub fn new(tag: &str) -> Result<Lab> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let tag_is_valid = !tag.is_empty()
            && tag.len() <= 20
            && tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !tag_is_valid {
            return Err(LabError::BadTag(tag.to_owned()));
        }
        // Made before the tag is claimed, so that a failure here leaves nothing claimed.
        let work_dir = tempfile::Builder::new()
            .prefix(&format!("nfsentry-e2e-{tag}-"))
            .tempdir()
            .map_err(|source| LabError::File {
                path: std::env::temp_dir(),
                source,
            })?;
        claim_tag(tag)?;
        let subnet = subnet_index(tag);
        // Constructed before any namespace exists so that Drop cleans up after a failed step.
        let mut lab = Lab {
            tag: tag.to_owned(),
            scanner_ns: format!("nfs-{tag}-{}-scan", std::process::id()),
            target_ns: format!("nfs-{tag}-{}-tgt", std::process::id()),
            work_dir,
            scanner_v4: Ipv4Addr::new(10, 88, subnet, 2),
            scanner_v4_alt: Ipv4Addr::new(10, 88, subnet, 3),
            target_v4: Ipv4Addr::new(10, 88, subnet, 1),
            scanner_v6: Ipv6Addr::new(0xfd88, 0xe2e, 0, u16::from(subnet), 0, 0, 0, 2),
            target_v6: Ipv6Addr::new(0xfd88, 0xe2e, 0, u16::from(subnet), 0, 0, 0, 1),
            target_mac: String::new(),
            services: Mutex::new(Vec::new()),
            captures_started: AtomicU32::new(0),
        };
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        // A crashed earlier run may have left namespaces with these names.
        for ns in [&self.scanner_ns, &self.target_ns] {
            let _ = run(&["ip", "netns", "del", ns], COMMAND_TIMEOUT);
        }
        for dir in [self.state_dir(), self.www_dir()] {
            fs::create_dir_all(&dir).map_err(|source| LabError::File { path: dir, source })?;
        }
        let index = self.www_dir().join("index.html");
        fs::write(&index, "nfsentry e2e\n").map_err(|source| LabError::File {
            path: index,
            source,
        })?;

        let (scan, tgt) = (self.scanner_ns.as_str(), self.target_ns.as_str());
        let scanner_v4 = format!("{}/24", self.scanner_v4);
        let scanner_v4_alt = format!("{}/24", self.scanner_v4_alt);
        let target_v4 = format!("{}/24", self.target_v4);
        let scanner_v6 = format!("{}/64", self.scanner_v6);
        let target_v6 = format!("{}/64", self.target_v6);
        let steps: [&[&str]; 12] = [
            &["ip", "netns", "add", scan],
            &["ip", "netns", "add", tgt],
            // Created inside the scanner namespace, so the names never meet the host's.
            &[
                "ip", "-n", scan, "link", "add", SCANNER_IF, "type", "veth", "peer", "name",
                TARGET_IF, "netns", tgt,
            ],
            &["ip", "-n", scan, "link", "set", "lo", "up"],
            &["ip", "-n", tgt, "link", "set", "lo", "up"],
            &[
                "ip",
                "-n",
                scan,
                "addr",
                "add",
                &scanner_v4,
                "dev",
                SCANNER_IF,
            ],
            &[
                "ip",
                "-n",
                scan,
                "addr",
                "add",
                &scanner_v4_alt,
                "dev",
                SCANNER_IF,
            ],
            &["ip", "-n", tgt, "addr", "add", &target_v4, "dev", TARGET_IF],
            // nodad: otherwise the addresses stay tentative for a second or two.
            &[
                "ip",
                "-n",
                scan,
                "addr",
                "add",
                &scanner_v6,
                "dev",
                SCANNER_IF,
                "nodad",
            ],
            &[
                "ip", "-n", tgt, "addr", "add", &target_v6, "dev", TARGET_IF, "nodad",
            ],
            &["ip", "-n", scan, "link", "set", SCANNER_IF, "up"],
            &["ip", "-n", tgt, "link", "set", TARGET_IF, "up"],
        ];
        for step in steps {
            run_checked(step, COMMAND_TIMEOUT)?;
        }
        for (ns, interface) in [(scan, SCANNER_IF), (tgt, TARGET_IF)] {
            wait_until(
                &format!("{interface} in {ns} to come up"),
                LINK_UP_TIMEOUT,
                || Ok(link_info(ns, interface)?.operstate == "UP"),
            )?;
        }
        self.target_mac = link_info(tgt, TARGET_IF)?.mac;
        Ok(())
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn netns(&self, side: Side) -> &str {
        match side {
            Side::Scanner => &self.scanner_ns,
            Side::Target => &self.target_ns,
        }
    }

    pub fn work_dir(&self) -> &Path {
        self.work_dir.path()
    }

    /// The daemon's state directory in this lab's config.
    pub fn state_dir(&self) -> PathBuf {
        self.work_dir.path().join("state")
    }

    /// The blocks the daemon's journal holds now ([`journaled`]); none while it has no journal.
    pub fn journaled_blocks(&self) -> BTreeSet<IpAddr> {
        journaled(&fs::read_to_string(self.state_dir().join("blocks")).unwrap_or_default())
    }

    /// The control socket in this lab's config: one per lab, so labs never answer each other.
    /// Its directory is the daemon's to create, as `/run/nfsentry` is.
    pub fn control_socket(&self) -> PathBuf {
        self.work_dir.path().join("run").join("control.sock")
    }

    fn www_dir(&self) -> PathBuf {
        self.work_dir.path().join("www")
    }

    /// Runs `args` in a namespace and fails unless it exits 0.
    pub fn run_in(&self, side: Side, args: &[&str]) -> Result<CmdOutput> {
        run_checked(&self.in_netns(side, args), COMMAND_TIMEOUT)
    }

    /// Runs `args` in a namespace and returns its output whatever the exit status.
    pub fn run_in_allow_failure(&self, side: Side, args: &[&str]) -> Result<CmdOutput> {
        run(&self.in_netns(side, args), COMMAND_TIMEOUT)
    }

    fn in_netns<'a>(&'a self, side: Side, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["ip", "netns", "exec", self.netns(side)];
        full.extend_from_slice(args);
        full
    }

    /// A complete daemon config for this lab: the monitored ports above, react at once, block
    /// forever, ignore loopback plus `extra_ignore` (CIDR strings).
    pub fn config(&self, extra_ignore: &[&str]) -> String {
        let state_dir = toml_string(&self.state_dir().to_string_lossy());
        let control_socket = toml_string(&self.control_socket().to_string_lossy());
        let ignore = ["127.0.0.0/8", "::1/128"]
            .iter()
            .chain(extra_ignore)
            .map(|cidr| toml_string(cidr))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"[daemon]
queue = 0
table = "{TABLE}"
state_dir = {state_dir}
control_socket = {control_socket}
log = "stderr"
interfaces = ["{TARGET_IF}"]

[monitor]
tcp_ports = [{MONITORED_TCP_CONFIG}]
udp_ports = [{MONITORED_UDP_CONFIG}]

[detect]
scan_trigger = 0
window = "10m"
ignore = [{ignore}]

[respond]
verdict = "drop"
block_timeout = "0"
"#
        )
    }

    /// Writes `config_toml` into the lab and starts `nfsentry run` in the target namespace;
    /// returns once its table is in the kernel and it has said which queue mode it uses.
    pub fn start_daemon(&self, config_toml: &str) -> Result<Daemon<'_>> {
        self.start_daemon_via(config_toml, &[])
    }

    /// As [`Lab::start_daemon`], with `launcher` (a program and its arguments that ends by
    /// exec'ing the rest of its command line, such as `setpriv ...`) in front of the daemon.
    pub fn start_daemon_via(&self, config_toml: &str, launcher: &[&str]) -> Result<Daemon<'_>> {
        let config: toml::Table = config_toml.parse().map_err(LabError::ConfigToml)?;
        let daemon_section = config.get("daemon").and_then(toml::Value::as_table);
        let table = daemon_section
            .and_then(|daemon| daemon.get("table"))
            .and_then(toml::Value::as_str)
            .unwrap_or(TABLE)
            .to_owned();
        let state_dir = daemon_section
            .and_then(|daemon| daemon.get("state_dir"))
            .and_then(toml::Value::as_str)
            .map_or_else(|| self.state_dir(), PathBuf::from);
        let config_path = self.work_dir.path().join("nfsentry.toml");
        fs::write(&config_path, config_toml).map_err(|source| LabError::File {
            path: config_path.clone(),
            source,
        })?;
        let mut daemon = Daemon {
            lab: self,
            config_path,
            table,
            state_dir,
            child: None,
            log_path: PathBuf::new(),
            starts: 0,
            launcher: launcher.iter().map(|&word| word.to_owned()).collect(),
        };
        daemon.start()?;
        Ok(daemon)
    }

    /// Serves the lab's www directory over HTTP on `port` in the target namespace, dual-stack,
    /// and returns once the scanner can fetch from it. The lab stops it on drop.
    pub fn start_http_server(&self, port: u16) -> Result<()> {
        let port_text = port.to_string();
        let www = self.www_dir().to_string_lossy().into_owned();
        let log_path = self.work_dir.path().join(format!("http-{port}.log"));
        let args = self.in_netns(
            Side::Target,
            &[
                SYSTEM_PYTHON,
                "-m",
                "http.server",
                "--bind",
                "::",
                "--directory",
                &www,
                &port_text,
            ],
        );
        let child = spawn_logged(&args, &log_path)?;
        self.lock_services().push(child);
        let target = IpAddr::V4(self.target_v4);
        wait_until(
            &format!("HTTP server on port {port}"),
            SERVICE_READY_TIMEOUT,
            || {
                if let Some(status) = self.exited_service()? {
                    return Err(LabError::ExitedEarly {
                        what: format!("HTTP server on port {port}"),
                        status,
                        output: read_lossy(&log_path),
                    });
                }
                self.http_get(IpAddr::V4(self.scanner_v4), target, port)
            },
        )
    }

    fn lock_services(&self) -> std::sync::MutexGuard<'_, Vec<Child>> {
        // A panic while holding the lock leaves the list intact; keep using it.
        self.services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exited_service(&self) -> Result<Option<ExitStatus>> {
        for child in self.lock_services().iter_mut() {
            let status = child.try_wait().map_err(|source| LabError::Wait {
                command: "service".to_owned(),
                source,
            })?;
            if status.is_some() {
                return Ok(status);
            }
        }
        Ok(None)
    }

    /// One HTTP GET from the scanner namespace, sent from `source`. `Ok(false)` means the
    /// fetch did not succeed (refused, timed out, not 200); `Err` means curl could not run.
    pub fn http_get(&self, source: IpAddr, target: IpAddr, port: u16) -> Result<bool> {
        let url = match target {
            IpAddr::V4(v4) => format!("http://{v4}:{port}/"),
            IpAddr::V6(v6) => format!("http://[{v6}]:{port}/"),
        };
        let source = source.to_string();
        let max_time = HTTP_FETCH_TIMEOUT_SECS.to_string();
        let output = self.run_in_allow_failure(
            Side::Scanner,
            &[
                "curl",
                "--silent",
                "--globoff",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
                "--max-time",
                &max_time,
                "--interface",
                &source,
                &url,
            ],
        )?;
        Ok(output.status.success() && output.stdout.trim() == "200")
    }

    /// Runs nmap from the scanner namespace at `target`, with the lab's defaults: no DNS, no
    /// host discovery, aggressive timing and one retry so a dropped scan ends in seconds.
    pub fn nmap(&self, scan_args: &[&str], target: IpAddr) -> Result<CmdOutput> {
        self.nmap_from(None, scan_args, target)
    }

    /// As [`Lab::nmap`], with the packets' source set to `source` (one of the scanner's own
    /// addresses, so answers still come back).
    pub fn nmap_from(
        &self,
        source: Option<IpAddr>,
        scan_args: &[&str],
        target: IpAddr,
    ) -> Result<CmdOutput> {
        let target_text = target.to_string();
        let source_text = source.map(|address| address.to_string());
        let mut args = vec![
            "nmap",
            "-n",
            "-Pn",
            "-T4",
            "--max-retries",
            "1",
            "--host-timeout",
            "30s",
        ];
        if target.is_ipv6() {
            args.push("-6");
        }
        if let Some(source_text) = &source_text {
            args.extend_from_slice(&["-S", source_text, "-e", SCANNER_IF]);
        }
        args.extend_from_slice(scan_args);
        args.push(&target_text);
        self.run_in(Side::Scanner, &args)
    }

    /// A scapy list of one SYN to `port` from each source (from port 40111), for
    /// [`Lab::scapy_send`]: IPv4 sources to the target's IPv4 address, IPv6 ones to its IPv6.
    pub fn syns_from(&self, sources: &[IpAddr], port: u16) -> String {
        let packets: Vec<String> = sources
            .iter()
            .map(|source| match source {
                IpAddr::V4(v4) => {
                    format!("IP(src='{v4}', dst=TARGET)/TCP(sport=40111, dport={port}, flags='S')")
                }
                IpAddr::V6(v6) => format!(
                    "IPv6(src='{v6}', dst='{}')/TCP(sport=40111, dport={port}, flags='S')",
                    self.target_v6
                ),
            })
            .collect();
        format!("[{}]", packets.join(", "))
    }

    /// Sends crafted IPv4 packets from the scanner at layer 2, so the scanner's own stack can
    /// neither fix nor refuse them. `ip_layers` is a Python list expression of scapy IP
    /// packets that may use the names SCANNER and TARGET (IPv4 address strings).
    pub fn scapy_send(&self, ip_layers: &str) -> Result<CmdOutput> {
        self.run_scapy(&format!(
            "for packet in {ip_layers}:\n    sendp(Ether(dst=MAC) / packet, iface=IFACE)\n"
        ))
    }

    /// As [`Lab::scapy_send`], without waiting: the packets go out while the test goes on.
    pub fn scapy_send_in_background(&self, ip_layers: &str) -> Result<PendingBurst> {
        let script = self.scapy_script(&format!(
            "for packet in {ip_layers}:\n    sendp(Ether(dst=MAC) / packet, iface=IFACE)\n"
        ));
        let sender = self.captures_started.fetch_add(1, Ordering::Relaxed);
        let log_path = self.work_dir.path().join(format!("scapy-{sender}.log"));
        let args = self.in_netns(Side::Scanner, &[SYSTEM_PYTHON, "-c", &script]);
        let child = spawn_logged(&args, &log_path)?;
        Ok(PendingBurst { child, log_path })
    }

    /// As [`Lab::scapy_send`], but in one `sendp` call on one socket: the packets leave back to
    /// back, microseconds apart, where `scapy_send` spends milliseconds on each.
    pub fn scapy_send_burst(&self, ip_layers: &str) -> Result<CmdOutput> {
        self.run_scapy(&format!(
            "sendp([Ether(dst=MAC) / packet for packet in {ip_layers}], iface=IFACE)\n"
        ))
    }

    /// As [`Lab::scapy_send_burst`], from a scapy started now in the background that sends once
    /// the file `go` exists: its start-up (seconds) is over by then, and the packets leave
    /// within milliseconds of the file's creation.
    pub fn scapy_send_burst_when(&self, go: &Path, ip_layers: &str) -> Result<PendingBurst> {
        let script = self.scapy_script(&format!(
            "import os, time\n\
             while not os.path.exists({go:?}):\n    time.sleep(0.001)\n\
             sendp([Ether(dst=MAC) / packet for packet in {ip_layers}], iface=IFACE)\n",
            go = go.to_string_lossy(),
        ));
        let sender = self.captures_started.fetch_add(1, Ordering::Relaxed);
        let log_path = self.work_dir.path().join(format!("scapy-{sender}.log"));
        let args = self.in_netns(Side::Scanner, &[SYSTEM_PYTHON, "-c", &script]);
        let child = spawn_logged(&args, &log_path)?;
        Ok(PendingBurst { child, log_path })
    }

    /// Runs `body` in the scanner namespace after scapy's import, with SCANNER, TARGET, MAC
    /// (the target's) and IFACE (the scanner's lab interface) defined.
    fn run_scapy(&self, body: &str) -> Result<CmdOutput> {
        let script = self.scapy_script(body);
        self.run_in(Side::Scanner, &[SYSTEM_PYTHON, "-c", &script])
    }

    fn scapy_script(&self, body: &str) -> String {
        format!(
            "from scapy.all import *\n\
             conf.verb = 0\n\
             SCANNER = {scanner:?}\n\
             TARGET = {target:?}\n\
             MAC = {mac:?}\n\
             IFACE = {iface:?}\n\
             {body}",
            scanner = self.scanner_v4.to_string(),
            target = self.target_v4.to_string(),
            mac = self.target_mac,
            iface = SCANNER_IF,
        )
    }

    /// Sends bare TCP SYNs to the target from the scanner namespace, in the order of `parts`,
    /// as fast as one socket goes: scapy builds one frame per part, and each packet is that
    /// frame with its source address and checksums rewritten (building thousands of packets in
    /// scapy itself takes minutes on a busy machine). Spoofed sources come from 198.18.0.0/15,
    /// the range set aside for benchmarks.
    pub fn send_syn_burst(&self, parts: &[(SynSenders, u16)]) -> Result<CmdOutput> {
        let parts: Vec<String> = parts
            .iter()
            .map(|(senders, port)| match senders {
                SynSenders::Scanner => format!("(None, 0, 1, {port})"),
                SynSenders::Spoofed { first, count } => {
                    format!("(\"198.18.0.0\", {first}, {count}, {port})")
                }
            })
            .collect();
        let script = format!(
            "import socket, struct\n\
             from scapy.all import Ether, IP, TCP\n\
             def checksum(data):\n    \
                 if len(data) % 2: data += b'\\0'\n    \
                 total = sum(struct.unpack('!%dH' % (len(data) // 2), data))\n    \
                 while total >> 16: total = (total & 0xffff) + (total >> 16)\n    \
                 return ~total & 0xffff\n\
             def frame(template, source):\n    \
                 f = bytearray(template)\n    \
                 f[26:30] = source\n    \
                 f[24:26] = b'\\0\\0'\n    \
                 f[24:26] = struct.pack('!H', checksum(bytes(f[14:34])))\n    \
                 f[50:52] = b'\\0\\0'\n    \
                 pseudo = bytes(f[26:34]) + struct.pack('!BBH', 0, 6, len(f) - 34)\n    \
                 f[50:52] = struct.pack('!H', checksum(pseudo + bytes(f[34:])))\n    \
                 return bytes(f)\n\
             sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
             sock.bind(({iface:?}, 0))\n\
             for base, first, count, port in [{parts}]:\n    \
                 template = bytes(Ether(dst={mac:?}, src='02:00:00:00:00:01') / IP(src={scanner:?}, dst={target:?}) / TCP(sport=40000, dport=port, flags='S'))\n    \
                 start = struct.unpack('!I', socket.inet_aton(base or {scanner:?}))[0] + first\n    \
                 for n in range(count):\n        \
                     sock.send(frame(template, struct.pack('!I', start + n)))\n",
            iface = SCANNER_IF,
            mac = self.target_mac,
            scanner = self.scanner_v4.to_string(),
            target = self.target_v4.to_string(),
            parts = parts.join(", "),
        );
        self.run_in(Side::Scanner, &[SYSTEM_PYTHON, "-c", &script])
    }

    /// Starts `hping3 --flood` from the scanner namespace at the target's IPv4 address, with
    /// `args` before the address (e.g. `--rand-source -S -p 111`). It floods until stopped or
    /// dropped.
    pub fn start_hping3_flood(&self, args: &[&str]) -> Result<Background> {
        let target = self.target_v4.to_string();
        let mut command = vec!["hping3", "--flood", "--quiet"];
        command.extend_from_slice(args);
        command.push(&target);
        let capture_number = self.captures_started.fetch_add(1, Ordering::Relaxed);
        let log_path = self
            .work_dir
            .path()
            .join(format!("hping3-{capture_number}.log"));
        let child = spawn_logged(&self.in_netns(Side::Scanner, &command), &log_path)?;
        Ok(Background {
            child,
            what: command.join(" "),
            log_path,
        })
    }

    /// Starts tcpdump on the lab interface of `side`; it exits after `count` packets match
    /// `filter`. Returns once tcpdump is listening, so nothing sent afterwards is missed.
    pub fn start_capture(&self, side: Side, filter: &str, count: u32) -> Result<Capture> {
        let interface = match side {
            Side::Scanner => SCANNER_IF,
            Side::Target => TARGET_IF,
        };
        let count_text = count.to_string();
        let capture_number = self.captures_started.fetch_add(1, Ordering::Relaxed);
        let log_path = self
            .work_dir
            .path()
            .join(format!("tcpdump-{capture_number}.log"));
        let args = self.in_netns(
            side,
            &[
                "tcpdump",
                "-i",
                interface,
                "-n",
                "-v",
                "-l",
                "-c",
                &count_text,
                filter,
            ],
        );
        let child = spawn_logged(&args, &log_path)?;
        let mut capture = Capture {
            child,
            log_path,
            filter: filter.to_owned(),
        };
        wait_until("tcpdump to listen", SERVICE_READY_TIMEOUT, || {
            if let Some(status) = capture.try_exit()? {
                return Err(LabError::ExitedEarly {
                    what: "tcpdump".to_owned(),
                    status,
                    output: read_lossy(&capture.log_path),
                });
            }
            Ok(read_lossy(&capture.log_path).contains("listening on"))
        })?;
        Ok(capture)
    }

    /// Addresses in an nft set of the target namespace, read back from the kernel.
    pub fn nft_set_elements(&self, table: &str, set: &str) -> Result<Vec<IpAddr>> {
        let args = ["nft", "-j", "list", "set", "inet", table, set];
        let output = self.run_in(Side::Target, &args)?;
        parse_nft_set_elements(&output.stdout).map_err(|problem| match problem {
            SetParseError::Json(source) => LabError::Json {
                command: args.join(" "),
                source,
            },
            SetParseError::Shape(problem) => LabError::JsonShape {
                command: args.join(" "),
                problem,
            },
        })
    }

    /// Deletes `address` from an nft set of the target namespace, as an admin would with
    /// `nft delete element`.
    pub fn nft_delete_element(&self, table: &str, set: &str, address: IpAddr) -> Result<()> {
        let element = format!("{{ {address} }}");
        let args = ["nft", "delete", "element", "inet", table, set, &element];
        self.run_in(Side::Target, &args).map(drop)
    }

    pub fn nft_table_exists(&self, table: &str) -> Result<bool> {
        let output =
            self.run_in_allow_failure(Side::Target, &["nft", "list", "table", "inet", table])?;
        Ok(output.status.success())
    }

    /// Whether the target's kernel accepts a native nft `queue` rule; the daemon must pick
    /// the compat path exactly when it does not.
    pub fn native_nft_queue_available(&self) -> Result<bool> {
        const PROBE_TABLE: &str = "e2e_queue_probe";
        self.run_in(Side::Target, &["nft", "add", "table", "inet", PROBE_TABLE])?;
        let probe: Result<bool> = (|| {
            self.run_in(
                Side::Target,
                &[
                    "nft",
                    "add chain inet e2e_queue_probe probe { type filter hook prerouting priority 0; policy accept; }",
                ],
            )?;
            // A high queue number that nothing binds; bypass keeps traffic flowing meanwhile.
            let rule = self.run_in_allow_failure(
                Side::Target,
                &[
                    "nft",
                    "add rule inet e2e_queue_probe probe queue num 4000 bypass",
                ],
            )?;
            Ok(rule.status.success())
        })();
        let cleanup = self.run_in(
            Side::Target,
            &["nft", "delete", "table", "inet", PROBE_TABLE],
        );
        let available = probe?;
        cleanup?;
        Ok(available)
    }

    /// Loads an nft script into the target namespace (for harness self-checks).
    pub fn nft_load(&self, script: &str) -> Result<()> {
        let path = self.work_dir.path().join("load.nft");
        fs::write(&path, script).map_err(|source| LabError::File {
            path: path.clone(),
            source,
        })?;
        let path_text = path.to_string_lossy().into_owned();
        self.run_in(Side::Target, &["nft", "-f", &path_text])?;
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self.lock_services().iter_mut() {
            stop_child(child, Signal::SIGTERM, Duration::from_secs(2));
        }
        // Anything still inside the namespaces was started by this lab (a probe cut short by
        // a failed assertion); the namespace cannot go away while it lives.
        for ns in [&self.scanner_ns, &self.target_ns] {
            if let Ok(pids) = run(&["ip", "netns", "pids", ns], COMMAND_TIMEOUT) {
                for pid in pids
                    .stdout
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            let _ = run(&["ip", "netns", "del", ns], COMMAND_TIMEOUT);
        }
        if thread::panicking() {
            eprintln!(
                "lab {}: keeping {} for inspection",
                self.tag,
                self.work_dir.path().display()
            );
            self.work_dir.disable_cleanup(true);
        }
        release_tag(&self.tag);
    }
}

/// `nfsentry run` inside a lab's target namespace. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon<'lab> {
    lab: &'lab Lab,
    config_path: PathBuf,
    table: String,
    state_dir: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
    starts: u32,
    /// Run in front of the daemon's own command line; see [`Lab::start_daemon_via`].
    launcher: Vec<String>,
}

impl Daemon<'_> {
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// What `nfsentry status --json` says of this daemon; a status that fails is an error,
    /// with what it printed.
    pub fn status_json(&self) -> Result<Value> {
        let command = format!("nfsentry status --json --config {:?}", self.config_path);
        let output = Command::new(DAEMON_BIN)
            .args(["status", "--json", "--config"])
            .arg(&self.config_path)
            .output()
            .map_err(|source| LabError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(LabError::CommandFailed {
                command,
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|source| LabError::Json { command, source })
    }

    /// Starts the daemon again with the same config after [`Daemon::stop`]; each start logs
    /// to its own file so later waits only see the new run.
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.ensure_running()?;
            return Ok(());
        }
        self.starts += 1;
        self.log_path = self
            .lab
            .work_dir
            .path()
            .join(format!("daemon-{}.log", self.starts));
        let config = self.config_path.to_string_lossy().into_owned();
        let mut command: Vec<&str> = self.launcher.iter().map(String::as_str).collect();
        command.extend_from_slice(&[DAEMON_BIN, "run", "--config", &config]);
        let args = self.lab.in_netns(Side::Target, &command);
        self.child = Some(spawn_logged(&args, &self.log_path)?);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let queue_mode = Regex::new(r"(?i)\b(native|compat)\b")?;
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        wait_until(
            &format!("table inet {} with its prerouting chain", self.table),
            DAEMON_READY_TIMEOUT,
            || {
                self.ensure_running()?;
                let chain = self.lab.run_in_allow_failure(
                    Side::Target,
                    &["nft", "list", "chain", "inet", &self.table, "prerouting"],
                )?;
                Ok(chain.status.success())
            },
        )?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.wait_for_log(&queue_mode, remaining)?;
        Ok(())
    }

    fn ensure_running(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(LabError::DaemonNotRunning);
        };
        let status = child.try_wait().map_err(|source| LabError::Wait {
            command: DAEMON_BIN.to_owned(),
            source,
        })?;
        match status {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(LabError::ExitedEarly {
                    what: "nfsentry run".to_owned(),
                    status,
                    output: read_lossy(&self.log_path),
                })
            }
        }
    }

    /// The first line of this run's log that matches `pattern`, waiting up to `timeout`.
    pub fn wait_for_log<P: LogPattern + ?Sized>(
        &mut self,
        pattern: &P,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read after checking liveness: a daemon that logged and then died still counts.
            let alive = self.ensure_running();
            let log = read_lossy(&self.log_path);
            if let Some(line) = log.lines().find(|line| pattern.matches(line)) {
                return Ok(line.to_owned());
            }
            alive?;
            if Instant::now() >= deadline {
                return Err(LabError::LogTimeout {
                    pattern: pattern.describe(),
                    timeout,
                    log,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// This run's log so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Lines of this run's log that carry the `attackalert:` tag.
    pub fn attack_alerts(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains("attackalert:"))
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM, wait, and fail unless the daemon exits 0.
    pub fn stop(&mut self) -> Result<()> {
        self.stop_with(Signal::SIGTERM)
    }

    pub fn stop_with(&mut self, signal: Signal) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Err(LabError::DaemonNotRunning);
        };
        let pid = child.id();
        let raw_pid = i32::try_from(pid).map_err(|_| LabError::Signal {
            pid,
            source: nix::Error::EINVAL,
        })?;
        kill(Pid::from_raw(raw_pid), signal).map_err(|source| LabError::Signal { pid, source })?;
        let deadline = Instant::now() + DAEMON_STOP_TIMEOUT;
        loop {
            let status = child.try_wait().map_err(|source| LabError::Wait {
                command: DAEMON_BIN.to_owned(),
                source,
            })?;
            if let Some(status) = status {
                return if status.success() {
                    Ok(())
                } else {
                    Err(LabError::UncleanExit {
                        signal,
                        status,
                        log: self.log_tail(),
                    })
                };
            }
            if Instant::now() >= deadline {
                stop_child(&mut child, Signal::SIGKILL, Duration::from_secs(2));
                return Err(LabError::StopTimedOut {
                    signal,
                    timeout: DAEMON_STOP_TIMEOUT,
                    log: self.log_tail(),
                });
            }
            thread::sleep(CHILD_POLL_INTERVAL);
        }
    }

    /// Clean stop, then start with the same config.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    /// The daemon's process id: `ip netns exec` and a launcher exec it, so it is our child's.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.ensure_running().is_ok()
    }

    /// Sends `signal` to the running daemon (SIGUSR1: a status line).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = self.pid().ok_or(LabError::DaemonNotRunning)?;
        let raw_pid = i32::try_from(pid).map_err(|_| LabError::Signal {
            pid,
            source: nix::Error::EINVAL,
        })?;
        kill(Pid::from_raw(raw_pid), signal).map_err(|source| LabError::Signal { pid, source })
    }

    pub fn blocked_v4(&self) -> Result<Vec<IpAddr>> {
        self.lab.nft_set_elements(&self.table, "blocked_v4")
    }

    pub fn blocked_v6(&self) -> Result<Vec<IpAddr>> {
        self.lab.nft_set_elements(&self.table, "blocked_v6")
    }

    pub fn table_exists(&self) -> Result<bool> {
        self.lab.nft_table_exists(&self.table)
    }

    /// Contents of `<state_dir>/history`; empty if the daemon has not written it yet.
    pub fn history(&self) -> Result<String> {
        let path = self.state_dir.join("history");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(LabError::File { path, source }),
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let skipped = log.lines().count().saturating_sub(LOG_TAIL_LINES);
        log.lines().skip(skipped).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Daemon<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGTERM, Duration::from_secs(5));
        }
        if thread::panicking() {
            eprintln!(
                "lab {}: daemon log {} (last {LOG_TAIL_LINES} lines):\n{}",
                self.lab.tag,
                self.log_path.display(),
                self.log_tail()
            );
        }
    }
}

/// Who sends one part of a [`Lab::send_syn_burst`].
#[derive(Debug, Clone, Copy)]
pub enum SynSenders {
    /// The scanner's own address: one SYN.
    Scanner,
    /// `count` spoofed sources, one SYN each: 198.18.0.0 plus `first`, `first + 1`, ...
    Spoofed { first: u32, count: u32 },
}

/// A program left running in a lab namespace, such as a flood; stopped on drop.
pub struct Background {
    child: Child,
    what: String,
    log_path: PathBuf,
}

impl Background {
    /// Fails when the program has exited: a flood that died floods nothing, and a test that
    /// went on would prove nothing.
    pub fn ensure_running(&mut self) -> Result<()> {
        let status = self.child.try_wait().map_err(|source| LabError::Wait {
            command: self.what.clone(),
            source,
        })?;
        match status {
            None => Ok(()),
            Some(status) => Err(LabError::ExitedEarly {
                what: self.what.clone(),
                status,
                output: read_lossy(&self.log_path),
            }),
        }
    }

    /// Stops it (SIGINT, as from a terminal, then SIGKILL) and waits for it.
    pub fn stop(mut self) {
        stop_child(&mut self.child, Signal::SIGINT, Duration::from_secs(2));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGKILL, Duration::from_secs(2));
    }
}

/// A running tcpdump started by [`Lab::start_capture`]; killed on drop.
pub struct Capture {
    child: Child,
    log_path: PathBuf,
    filter: String,
}

impl Capture {
    fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().map_err(|source| LabError::Wait {
            command: "tcpdump".to_owned(),
            source,
        })
    }

    /// Waits for tcpdump to have seen all its packets; returns its output (decoded headers).
    pub fn finish(mut self, timeout: Duration) -> Result<String> {
        let what = format!("tcpdump to capture packets matching {:?}", self.filter);
        let mut finished = None;
        wait_until(&what, timeout, || {
            finished = self.try_exit()?;
            Ok(finished.is_some())
        })?;
        let output = read_lossy(&self.log_path);
        match finished {
            Some(status) if status.success() => Ok(output),
            Some(status) => Err(LabError::ExitedEarly {
                what: "tcpdump".to_owned(),
                status,
                output,
            }),
            None => Err(LabError::Timeout { what, timeout }),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGTERM, Duration::from_secs(2));
    }
}

/// A scapy sender started by [`Lab::scapy_send_burst_when`]; killed on drop.
pub struct PendingBurst {
    child: Child,
    log_path: PathBuf,
}

impl PendingBurst {
    /// Waits for scapy to have sent its packets and exited.
    pub fn finish(mut self, timeout: Duration) -> Result<()> {
        let mut finished = None;
        wait_until("scapy to send its burst", timeout, || {
            finished = self.child.try_wait().map_err(|source| LabError::Wait {
                command: "scapy".to_owned(),
                source,
            })?;
            Ok(finished.is_some())
        })?;
        match finished {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(LabError::ExitedEarly {
                what: "scapy".to_owned(),
                status,
                output: read_lossy(&self.log_path),
            }),
            None => Err(LabError::Timeout {
                what: "scapy to send its burst".to_owned(),
                timeout,
            }),
        }
    }
}

impl Drop for PendingBurst {
    fn drop(&mut self) {
        stop_child(&mut self.child, Signal::SIGKILL, Duration::from_secs(2));
    }
}

/// Why nft's JSON for a set could not be turned into addresses.
#[derive(Debug, thiserror::Error)]
pub enum SetParseError {
    #[error("not JSON")]
    Json(#[source] serde_json::Error),
    #[error("{0}")]
    Shape(String),
}

/// Addresses in the output of `nft -j list set`. Elements are plain strings, or objects
/// `{"elem": {"val": ..., "timeout": ..., "expires": ...}}` when they carry a timeout.
pub fn parse_nft_set_elements(json: &str) -> std::result::Result<Vec<IpAddr>, SetParseError> {
    let document: Value = serde_json::from_str(json).map_err(SetParseError::Json)?;
    let items = document
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| SetParseError::Shape("no top-level \"nftables\" array".to_owned()))?;
    let set = items
        .iter()
        .find_map(|item| item.get("set"))
        .ok_or_else(|| SetParseError::Shape("no \"set\" object".to_owned()))?;
    let Some(elements) = set.get("elem") else {
        // nft omits the key entirely for an empty set.
        return Ok(Vec::new());
    };
    let elements = elements
        .as_array()
        .ok_or_else(|| SetParseError::Shape("\"elem\" is not an array".to_owned()))?;
    elements
        .iter()
        .map(|element| {
            let text = element
                .as_str()
                .or_else(|| element.get("elem")?.get("val")?.as_str())
                .ok_or_else(|| SetParseError::Shape(format!("unsupported element {element}")))?;
            text.parse::<IpAddr>()
                .map_err(|_| SetParseError::Shape(format!("element {text:?} is not an address")))
        })
        .collect()
}

struct LinkInfo {
    operstate: String,
    mac: String,
}

fn link_info(ns: &str, interface: &str) -> Result<LinkInfo> {
    let args = ["ip", "-n", ns, "-j", "link", "show", "dev", interface];
    let output = run_checked(&args, COMMAND_TIMEOUT)?;
    let shape_error = |problem: &str| LabError::JsonShape {
        command: args.join(" "),
        problem: problem.to_owned(),
    };
    let links: Value = serde_json::from_str(&output.stdout).map_err(|source| LabError::Json {
        command: args.join(" "),
        source,
    })?;
    let link = links
        .as_array()
        .and_then(|links| links.first())
        .ok_or_else(|| shape_error("no link object"))?;
    let field = |name: &str| {
        link.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| shape_error(&format!("no string field {name:?}")))
    };
    Ok(LinkInfo {
        operstate: field("operstate")?,
        mac: field("address")?,
    })
}

/// Runs a command to completion (or `timeout`), capturing its output.
fn run(args: &[&str], timeout: Duration) -> Result<CmdOutput> {
    let command = args.join(" ");
    let (program, rest) = args.split_first().ok_or_else(|| LabError::Spawn {
        command: command.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
    })?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    // Drained on threads: a child that fills a pipe while we only poll would never exit.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        let status = child.try_wait().map_err(|source| LabError::Wait {
            command: command.clone(),
            source,
        })?;
        if let Some(status) = status {
            break status;
        }
        if Instant::now() >= deadline {
            stop_child(&mut child, Signal::SIGKILL, Duration::from_secs(2));
            return Err(LabError::CommandTimedOut { command, timeout });
        }
        thread::sleep(CHILD_POLL_INTERVAL);
    };
    Ok(CmdOutput {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn run_checked(args: &[&str], timeout: Duration) -> Result<CmdOutput> {
    let output = run(args, timeout)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(LabError::CommandFailed {
            command: args.join(" "),
            status: output.status,
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            // A read error only truncates what the test gets to see.
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    })
}

fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> String {
    reader
        .and_then(|handle| handle.join().ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Starts a long-running command with stdout and stderr going to `log_path`.
fn spawn_logged(args: &[&str], log_path: &Path) -> Result<Child> {
    let command = args.join(" ");
    let file_error = |source| LabError::File {
        path: log_path.to_owned(),
        source,
    };
    let stdout = File::create(log_path).map_err(file_error)?;
    let stderr = stdout.try_clone().map_err(file_error)?;
    let (program, rest) = args.split_first().ok_or_else(|| LabError::Spawn {
        command: command.clone(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
    })?;
    Command::new(program)
        .args(rest)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|source| LabError::Spawn { command, source })
}

/// Sends `signal` to our own child, then SIGKILL if it has not exited within `grace`.
fn stop_child(child: &mut Child, signal: Signal, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(CHILD_POLL_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Third octet of the lab's IPv4 /24 (and fourth group of its /64), from an FNV-1a hash of the
/// tag; kept in 1..=250 so no address is a network or broadcast look-alike.
fn subnet_index(tag: &str) -> u8 {
    let hash = tag.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    // The remainder is below 250, so the conversion cannot fail.
    u8::try_from(hash % 250).map_or(1, |index| index + 1)
}

fn claim_tag(tag: &str) -> Result<()> {
    let mut tags = TAGS_IN_USE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if tags.get_or_insert_with(HashSet::new).insert(tag.to_owned()) {
        Ok(())
    } else {
        Err(LabError::DuplicateTag(tag.to_owned()))
    }
}

fn release_tag(tag: &str) {
    let mut tags = TAGS_IN_USE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tags) = tags.as_mut() {
        tags.remove(tag);
    }
}

/// `count` addresses from 10.99.0.0/16, never the lab's own, for spoofed sources.
pub fn spoofed_v4(count: u16) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250) as u8 + 1)))
        .collect()
}

/// `count` addresses from fd99::/64, never the lab's own, for spoofed sources.
pub fn spoofed_v6(count: u16) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, i + 1)))
        .collect()
}

/// The blocks a journal's text holds: `+` lines less `-` lines.
pub fn journaled(text: &str) -> BTreeSet<IpAddr> {
    let mut live = BTreeSet::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["+", addr, ..] => live.insert(addr.parse().unwrap()),
            ["-", addr] => live.remove(&addr.parse().unwrap()),
            _ => false,
        };
    }
    live
}
