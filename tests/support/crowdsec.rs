//! A private CrowdSec Local API for one test: its own config, SQLite database and loopback
//! port in a temporary directory, started as `crowdsec -c CONFIG -no-cs -no-capi` and stopped
//! (SIGTERM, then waited for) when dropped. It never touches the system's crowdsec: every
//! `cscli` call names this config, and machines are registered with `-f`, so the system
//! agent's credentials file is never written. It asserts nothing about nfsentry.
//!
//! Needs Debian's `crowdsec` package (scripts/setup.sh installs it).

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const CROWDSEC: &str = "/usr/bin/crowdsec";
const CSCLI: &str = "/usr/bin/cscli";
/// Measured ready in 64-166 ms; generous for a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Measured to exit in under 10 ms after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// The machine `cscli decisions add/delete` logs in as (cscli talks to the LAPI for those).
const CSCLI_MACHINE: &str = "cscli-test";

/// One running (or stopped) private LAPI.
pub struct Lapi {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Where it runs and listens: the test's own namespace and loopback unless `start_in`.
    netns: Option<String>,
    host: String,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Lapi {
    /// Writes the config, registers cscli's own machine, starts the LAPI and waits until it
    /// answers HTTP.
    pub fn start() -> Lapi {
        Lapi::start_in(None, "127.0.0.1", free_port())
    }

    /// As [`Lapi::start`], run inside network namespace `netns` (when given) and listening on
    /// `host:port` there; `cscli` runs there too.
    pub fn start_in(netns: Option<&str>, host: &str, port: u16) -> Lapi {
        assert!(
            Path::new(CROWDSEC).exists() && Path::new(CSCLI).exists(),
            "{CROWDSEC} and {CSCLI} are needed: run scripts/setup.sh (Debian's crowdsec package)"
        );
        let dir = tempfile::Builder::new()
            .prefix("nfsentry-lapi-")
            .tempdir()
            .unwrap_or_else(|error| panic!("temporary directory: {error}"));
        let root = dir.path();
        let config = root.join("config.yaml");
        fs::create_dir_all(root.join("data")).unwrap_or_else(|e| panic!("data dir: {e}"));
        fs::write(root.join("simulation.yaml"), "simulation: off\n")
            .unwrap_or_else(|e| panic!("simulation.yaml: {e}"));
        // The packaged profile: alerts without decisions get a 4h ban; ours carry their own.
        fs::write(
            root.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && \
             Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\n\
             on_success: break\n",
        )
        .unwrap_or_else(|e| panic!("profiles.yaml: {e}"));
        let root_text = root.display();
        // daemonize: true is what installs 1.4.6's SIGTERM handler (it does not fork).
        let yaml = format!(
            "common:\n  daemonize: true\n  log_media: stdout\n  log_level: info\n\
             config_paths:\n  config_dir: {root_text}/\n  data_dir: {root_text}/data/\n  \
             simulation_path: {root_text}/simulation.yaml\n  hub_dir: {root_text}/hub/\n  \
             index_path: {root_text}/hub/.index.json\n\
             db_config:\n  type: sqlite\n  db_path: {root_text}/data/crowdsec.db\n  \
             use_wal: true\n\
             api:\n  client:\n    credentials_path: {root_text}/cscli-credentials.yaml\n  \
             server:\n    listen_uri: {host}:{port}\n    profiles_path: \
             {root_text}/profiles.yaml\n\
             prometheus:\n  enabled: false\n"
        );
        fs::write(&config, yaml).unwrap_or_else(|e| panic!("config.yaml: {e}"));
        let mut lapi = Lapi {
            dir,
            config,
            netns: netns.map(str::to_owned),
            host: host.to_owned(),
            port,
            child: None,
            starts: 0,
        };
        // `cscli decisions` talks to the LAPI as a machine: the one in credentials_path.
        let credentials = lapi.dir.path().join("cscli-credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            CSCLI_MACHINE,
            "--password",
            "cscli-test-password",
            "-f",
            &credentials.to_string_lossy(),
        ]);
        lapi.resume();
        lapi
    }

    /// `http://HOST:PORT/`
    pub fn url(&self) -> String {
        format!("http://{}:{}/", self.host, self.port)
    }

    /// `program`, run in the LAPI's namespace.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers a watcher; its credentials file goes into the test's directory.
    pub fn add_machine(&self, name: &str, password: &str) {
        let file = self.dir.path().join(format!("machine-{name}.yaml"));
        self.cscli(&[
            "machines",
            "add",
            name,
            "--password",
            password,
            "-f",
            &file.to_string_lossy(),
        ]);
    }

    /// Registers a bouncer with the key given.
    pub fn add_bouncer(&self, name: &str, key: &str) {
        self.cscli(&["bouncers", "add", name, "-k", key]);
    }

    /// Runs `cscli -c CONFIG args`; panics with its output when it fails.
    pub fn cscli(&self, args: &[&str]) -> String {
        let output = self
            .command(CSCLI)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("cannot run cscli {args:?}: {error}"));
        assert!(
            output.status.success(),
            "cscli {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `cscli decisions list -a -o json`: every active decision whatever its origin, as
    /// (alert, decision) pairs flattened into the decisions.
    pub fn decisions(&self) -> Vec<Value> {
        let text = self.cscli(&["decisions", "list", "-a", "-o", "json"]);
        let alerts: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        alerts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|alert| alert.get("decisions").and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect()
    }

    /// Whether the LAPI process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM, then waits for the process to end.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => thread::sleep(POLL),
            }
        }
    }

    /// Starts the LAPI (again) on the same database and port and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the LAPI is already running");
        self.starts += 1;
        let log_path = self.dir.path().join(format!("lapi-{}.log", self.starts));
        let log = File::create(&log_path).unwrap_or_else(|e| panic!("lapi log: {e}"));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("lapi log: {e}"));
        let child = self
            .command(CROWDSEC)
            .arg("-c")
            .arg(&self.config)
            .args(["-no-cs", "-no-capi"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {CROWDSEC}: {error}"));
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "the LAPI exited ({status}) before answering:\n{}",
                        fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
            if self.answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the LAPI did not answer within {READY_TIMEOUT:?}:\n{}",
                fs::read_to_string(&log_path).unwrap_or_default()
            );
            thread::sleep(POLL);
        }
    }

    /// Any HTTP answer (a 403 without a key is one) means the API is up.
    fn answers(&self) -> bool {
        match &self.netns {
            Some(netns) => thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let path = format!("/run/netns/{netns}");
                        let namespace =
                            File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                        // SAFETY: setns only reads the descriptor, which `namespace` keeps open
                        // for the call; it moves this short-lived thread alone.
                        let rc = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                        self.answers_here()
                    })
                    .join()
                    .unwrap_or(false)
            }),
            None => self.answers_here(),
        }
    }

    fn answers_here(&self) -> bool {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(1)))
            .build()
            .new_agent();
        agent
            .get(format!("{}v1/decisions/stream", self.url()))
            .call()
            .is_ok()
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nothing listens on now. Another process could take it before the LAPI
/// binds it; the LAPI would then fail to start and say so.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .port()
}

/// A bouncer's view of the stream, for checking what the LAPI holds and for taking a delta
/// away from another poller that uses the same key.
pub struct Bouncer {
    url: String,
    key: String,
    agent: ureq::Agent,
}

impl Bouncer {
    pub fn new(lapi: &Lapi, key: &str) -> Bouncer {
        Bouncer {
            url: lapi.url(),
            key: key.to_owned(),
            agent: ureq::Agent::config_builder()
                .proxy(None)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .new_agent(),
        }
    }

    /// `GET /v1/decisions/stream?startup=...`: (new, deleted), nulls as empty lists.
    pub fn stream(&self, startup: bool) -> (Vec<Value>, Vec<Value>) {
        let mut response = self
            .agent
            .get(format!("{}v1/decisions/stream", self.url))
            .query("startup", if startup { "true" } else { "false" })
            .header("X-Api-Key", &self.key)
            .call()
            .unwrap_or_else(|error| panic!("stream: {error}"));
        let body: Value = response
            .body_mut()
            .read_json()
            .unwrap_or_else(|error| panic!("stream body: {error}"));
        let list = |name: &str| -> Vec<Value> {
            body.get(name)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        (list("new"), list("deleted"))
    }

    /// The active decisions (a full pull).
    pub fn active(&self) -> Vec<Value> {
        self.stream(true).0
    }
}
