//! End-to-end checks that `nfsentry run` logs where the existing tools read: to a syslog
//! socket as the C library's syslog() would (facility daemon, tag `nfsentry[PID]:`, alerts at
//! notice, PortSentry's `attackalert:` wording), to a history file fail2ban's portsentry filter
//! parses, and to a journal-connected stderr with sd-daemon `<N>` priority prefixes.
//!
//! The syslog socket is the test's own datagram socket (`log = "syslog:PATH"`), so no syslog
//! daemon is needed and nothing reaches the host's logs. The daemon is started here rather than
//! through `Lab::start_daemon`, which waits for start-up lines on stderr.

mod common;

use std::fs::{self, File};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{wait_until, Lab, LabError, Side, DAEMON_BIN, TABLE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use regex::Regex;

const READY_TIMEOUT: Duration = Duration::from_secs(15);
const ALERT_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const SCANNED_PORTS: &str = "1,11,111";

/// One datagram as a local syslog socket receives it from syslog(3):
/// `<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE`.
const SYSLOG_DATAGRAM: &str = r"^<(?P<pri>\d{1,3})>(?P<stamp>[A-Z][a-z]{2} [ 1-3][0-9] \d\d:\d\d:\d\d) nfsentry\[(?P<pid>\d+)\]: (?P<msg>.*)$";

/// logcheck's rule-file form (logcheck-database 1.4, e.g. violations.d/smartd): a syslog
/// file line's timestamp, host name and `program[pid]:`, then the message. Applied to the
/// line rsyslog writes for a datagram: the PRI dropped, the host name put after the stamp.
const LOGCHECK_RULE: &str =
    r"^(\w{3} [ :0-9]{11}|[0-9T:.+-]{32}) [._[:alnum:]-]+ nfsentry\[[0-9]+\]: attackalert: ";

/// The keyword Psionic's logcheck (logcheck.hacking and logcheck.violations of logcheck
/// 1.1.1, which egrep -i each log line) files PortSentry's detections under.
const LOGCHECK_HACKING: &str = r"(?i)attackalert";

/// fail2ban's shipped filter.d/portsentry.conf: `failregex = \/<HOST> Port\: [0-9]+ (TCP|UDP)
/// Blocked$` with `datepattern = {^LN-BEG}Epoch`, read against PortSentry's history file.
/// `<HOST>` is fail2ban's address group.
const FAIL2BAN_PORTSENTRY: &str = r"^\d{9,11} - .*\/(?P<host>\S+) Port\: [0-9]+ (TCP|UDP) Blocked$";

/// A daemon this test started in the target namespace; stopped on drop.
struct Running {
    child: Child,
    output: PathBuf,
}

impl Running {
    fn start(lab: &Lab, config: &str, name: &str, env: &[(&str, String)]) -> Running {
        let config_path = lab.work_dir().join(format!("{name}.toml"));
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("writing config: {e}"));
        let output = lab.work_dir().join(format!("{name}.out"));
        let out = File::create(&output).unwrap_or_else(|e| panic!("creating output: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning output: {e}"));
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", lab.netns(Side::Target), DAEMON_BIN, "run"])
            .arg("--config")
            .arg(&config_path)
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting the daemon: {e}"));
        Running { child, output }
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// SIGTERM and a clean exit.
    fn stop(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap_or(0);
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "daemon exited {status}: {}",
                    self.output()
                );
                return;
            }
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Datagrams from `socket` until one satisfies `done`, or the time runs out.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 8192];
    while Instant::now() < deadline {
        match socket.recv(&mut buffer) {
            Ok(length) => {
                let datagram = String::from_utf8_lossy(&buffer[..length]).into_owned();
                let finished = done(&datagram);
                received.push(datagram);
                if finished {
                    break;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => panic!("receiving from the syslog socket: {error}"),
        }
    }
    received
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

fn config_logging_to(lab: &Lab, log: &str) -> String {
    let config = lab.config(&[]);
    assert!(
        config.contains("log = \"stderr\""),
        "the lab's config changed: {config}"
    );
    config.replace(
        "log = \"stderr\"",
        &format!("log = {}", toml::Value::from(log)),
    )
}

fn scan(lab: &Lab) -> Result<(), LabError> {
    lab.nmap(&["-sS", "-p", SCANNED_PORTS], IpAddr::V4(lab.target_v4))?;
    Ok(())
}

#[test]
fn alerts_reach_a_syslog_socket_as_portsentrys_watchers_read_them() -> Result<(), LabError> {
    let lab = Lab::new("logs-syslog")?;
    let socket_path = lab.work_dir().join("log.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap_or_else(|e| panic!("bind: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let config = config_logging_to(&lab, &format!("syslog:{}", socket_path.display()));
    let daemon = Running::start(&lab, &config, "syslog", &[]);

    // The start-up line naming the queue mode is the daemon's last before it watches.
    let mut datagrams = receive_until(&socket, READY_TIMEOUT, |d| {
        d.contains("native") || d.contains("compat")
    });
    wait_until("the daemon's table", READY_TIMEOUT, || {
        lab.nft_table_exists(TABLE)
    })?;
    scan(&lab)?;
    let scanner = lab.scanner_v4.to_string();
    datagrams.extend(receive_until(&socket, ALERT_TIMEOUT, |d| {
        d.contains(&format!("Host {scanner} has been blocked"))
    }));
    let history = lab.state_dir().join("history");
    wait_until("the history line", ALERT_TIMEOUT, || {
        Ok(fs::read_to_string(&history).is_ok_and(|text| !text.is_empty()))
    })?;
    let pid = daemon.child.id().to_string();
    let stderr = daemon.output();
    daemon.stop();
    assert!(
        stderr.is_empty(),
        "syslog mode also wrote to stderr: {stderr}"
    );

    let framing = regex(SYSLOG_DATAGRAM);
    let mut alerts = Vec::new();
    for datagram in &datagrams {
        let parts = framing
            .captures(datagram)
            .unwrap_or_else(|| panic!("not a syslog(3) datagram: {datagram:?}"));
        // `ip netns exec` execs the daemon, so the pid in the tag is the child's.
        assert_eq!(&parts["pid"], pid, "{datagram}");
        let message = &parts["msg"];
        let priority: u8 = parts["pri"].parse().unwrap_or(0);
        assert_eq!(priority >> 3, 3, "not facility daemon: {datagram}");
        if message.starts_with("attackalert:") {
            assert_eq!(priority, 29, "an alert not at daemon.notice: {datagram}");
            // As rsyslog writes the datagram to /var/log/syslog for logcheck.
            alerts.push(format!(
                "{} gateway nfsentry[{}]: {message}",
                &parts["stamp"], &parts["pid"]
            ));
        }
    }
    assert!(
        datagrams
            .iter()
            .any(|d| d.starts_with("<30>") && d.contains("starting")),
        "no start-up line at daemon.info: {datagrams:#?}"
    );
    let detection = regex(&format!(
        r"attackalert: SYN/Normal scan from host: {0}/{0} to TCP port: (1|11|111)$",
        regex::escape(&scanner)
    ));
    assert!(
        alerts.iter().any(|line| detection.is_match(line)),
        "no detection line in PortSentry's words: {alerts:#?}"
    );
    assert!(
        alerts
            .iter()
            .any(|line| line.ends_with(&format!("attackalert: Host {scanner} has been blocked"))),
        "no block line: {alerts:#?}"
    );
    let (logcheck_rule, logcheck_hacking) = (regex(LOGCHECK_RULE), regex(LOGCHECK_HACKING));
    for line in &alerts {
        assert!(
            logcheck_rule.is_match(line),
            "logcheck's rule form misses {line:?}"
        );
        assert!(
            logcheck_hacking.is_match(line),
            "logcheck.hacking misses {line:?}"
        );
    }

    let history = fs::read_to_string(&history).unwrap_or_default();
    let fail2ban = regex(FAIL2BAN_PORTSENTRY);
    for line in history.lines() {
        let captures = fail2ban
            .captures(line)
            .unwrap_or_else(|| panic!("fail2ban's portsentry filter misses {line:?}"));
        assert_eq!(&captures["host"], scanner, "{line}");
    }
    Ok(())
}

#[test]
fn stderr_connected_to_the_journal_carries_priority_prefixes() -> Result<(), LabError> {
    let lab = Lab::new("logs-journal")?;
    // systemd sets JOURNAL_STREAM to the device and inode of the stream it gave the service;
    // here that stream is the file the daemon's stderr goes to.
    let output = lab.work_dir().join("journal.out");
    File::create(&output).unwrap_or_else(|e| panic!("{e}"));
    let stream = journal_stream_of(&output);
    let config = config_logging_to(&lab, "stderr");
    let daemon = Running::start(&lab, &config, "journal", &[("JOURNAL_STREAM", stream)]);
    assert_eq!(daemon.output, output);

    wait_until("the queue mode line", READY_TIMEOUT, || {
        let text = daemon.output();
        Ok(text.contains("native") || text.contains("compat"))
    })?;
    scan(&lab)?;
    let scanner = lab.scanner_v4.to_string();
    wait_until("the block line", ALERT_TIMEOUT, || {
        Ok(daemon
            .output()
            .contains(&format!("Host {scanner} has been blocked")))
    })?;
    let text = daemon.output();
    daemon.stop();

    let prefixed = regex(r"^<[0-7]>\S");
    for line in text.lines() {
        assert!(
            prefixed.is_match(line),
            "line without a priority prefix: {line:?}"
        );
        // The journal stamps entries itself; a stamp of ours would be said twice.
        assert!(
            !regex(r"^<\d>\d{4}-\d\d-\d\d").is_match(line),
            "stamped: {line:?}"
        );
    }
    assert!(
        text.lines()
            .any(|line| line == format!("<5>attackalert: Host {scanner} has been blocked")),
        "no block line at notice: {text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("<6>") && line.contains("starting")),
        "no start-up line at info: {text}"
    );
    Ok(())
}

/// `DEVICE:INODE` of `path`, as systemd writes JOURNAL_STREAM.
fn journal_stream_of(path: &Path) -> String {
    let metadata = fs::metadata(path).unwrap_or_else(|e| panic!("{e}"));
    format!("{}:{}", metadata.dev(), metadata.ino())
}
