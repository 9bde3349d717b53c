//! End-to-end checks of the blocking actions of `nfsentry run` in a network namespace: what
//! nft-set, route, hosts-deny, command and iptables leave in the target's kernel and files after
//! a block, after its expiry, across restarts, and when one action fails. Detection itself is
//! `e2e_scans.rs`'s job; here a single crafted SYN to a monitored port is the trigger.

mod common;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{wait_until, Daemon, Lab, LabError, Side, HTTP_PORT, TABLE};
use regex::Regex;
use serde_json::Value;

/// One SYN from scapy reaches the daemon well within this; the rest is daemon latency.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// A monitored TCP port (see `MONITORED_TCP_CONFIG`); the command's `$PORT$` must name it.
const BAIT_PORT: u16 = 111;
/// Configured order; the daemon moves `command` last because `command_first` is false.
const ALL_ACTIONS: [&str; 5] = ["nft-set", "route", "hosts-deny", "command", "iptables"];
const ACTIONS_AS_RUN: &str = "nft-set, route, hosts-deny, iptables, command";
/// The protocol the daemon's route action tags its routes with.
const ROUTE_PROTOCOL: &str = "254";
/// The responder checks for expired blocks this often.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);
/// Scheduling and process start-up (iptables runs as a child) on a busy test machine.
const RELEASE_SLACK: Duration = Duration::from_secs(10);
/// Waiting for a log line that follows an effect already observed.
const LOG_FOLLOW_TIMEOUT: Duration = Duration::from_secs(2);

/// An admin's hosts.deny: comments, blank lines, rules with options and trailing spaces.
const ADMIN_HOSTS_DENY: &str = "\
# /etc/hosts.deny: list of hosts that are _not_ allowed to access the system.
#                  See the manual pages hosts_access(5) and hosts_options(5).
#
# Example:    ALL: some.host.name, .some.domain
#             ALL EXCEPT in.fingerd: other.host.name, .other.domain

ALL: 192.0.2.66
sshd: 198.51.100.0/255.255.255.0 : spawn /bin/echo %a >> /var/log/denied  
in.telnetd: ALL

# keep this comment where it is
";

/// How often each undoable effect of a block of one source is present in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Effects {
    nft_set_elements: usize,
    blackhole_routes: usize,
    hosts_deny_entries: usize,
    iptables_rules: usize,
}

impl Effects {
    const ONE_EACH: Effects = Effects {
        nft_set_elements: 1,
        blackhole_routes: 1,
        hosts_deny_entries: 1,
        iptables_rules: 1,
    };
    const NONE: Effects = Effects {
        nft_set_elements: 0,
        blackhole_routes: 0,
        hosts_deny_entries: 0,
        iptables_rules: 0,
    };

    /// The larger count of each effect, so a poll loop can remember what it has seen.
    fn most(self, other: Effects) -> Effects {
        Effects {
            nft_set_elements: self.nft_set_elements.max(other.nft_set_elements),
            blackhole_routes: self.blackhole_routes.max(other.blackhole_routes),
            hosts_deny_entries: self.hosts_deny_entries.max(other.hosts_deny_entries),
            iptables_rules: self.iptables_rules.max(other.iptables_rules),
        }
    }
}

/// The files one test hands to the daemon, all inside the lab's temporary directory.
struct ActionFiles {
    hosts_deny: PathBuf,
    command_argv_log: PathBuf,
    command: Vec<String>,
}

impl ActionFiles {
    /// A hosts.deny with `admin_content` and a command that appends its argv, one argument a
    /// line, to a log, so a second run shows up as extra lines.
    fn recording(lab: &Lab, admin_content: &str) -> Result<ActionFiles, LabError> {
        let hosts_deny = lab.work_dir().join("hosts.deny");
        write_file(&hosts_deny, admin_content)?;
        let command_argv_log = lab.work_dir().join("command-argv");
        let script = lab.work_dir().join("record.sh");
        write_executable(
            &script,
            &format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" >> '{}'\n",
                command_argv_log.display()
            ),
        )?;
        Ok(ActionFiles {
            hosts_deny,
            command_argv_log,
            command: command_with_placeholders(&script),
        })
    }

    fn recorded_argv(&self) -> Result<String, LabError> {
        read_or_empty(&self.command_argv_log)
    }

    fn hosts_deny_text(&self) -> Result<String, LabError> {
        read_or_empty(&self.hosts_deny)
    }
}

fn command_with_placeholders(program: &Path) -> Vec<String> {
    vec![
        program.to_string_lossy().into_owned(),
        "$TARGET$".to_owned(),
        "$PORT$".to_owned(),
        "$MODE$".to_owned(),
    ]
}

/// The lab's config with every action on and the `[respond]` keys under test filled in.
fn actions_config(
    lab: &Lab,
    block_timeout: &str,
    hosts_deny: &Path,
    command: &[String],
) -> Result<String, LabError> {
    let mut config: toml::Table = lab.config(&[]).parse().map_err(LabError::ConfigToml)?;
    let mut respond = match config.remove("respond") {
        Some(toml::Value::Table(respond)) => respond,
        _ => toml::Table::new(),
    };
    let strings = |items: &[&str]| {
        toml::Value::Array(
            items
                .iter()
                .map(|item| toml::Value::String((*item).to_owned()))
                .collect(),
        )
    };
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    respond.insert("actions".to_owned(), strings(&ALL_ACTIONS));
    respond.insert(
        "block_timeout".to_owned(),
        toml::Value::String(block_timeout.to_owned()),
    );
    respond.insert(
        "hosts_deny".to_owned(),
        toml::Value::String(hosts_deny.to_string_lossy().into_owned()),
    );
    respond.insert(
        "hosts_deny_line".to_owned(),
        toml::Value::String("ALL: $TARGET$".to_owned()),
    );
    respond.insert(
        "route".to_owned(),
        toml::Value::String("blackhole".to_owned()),
    );
    respond.insert("command".to_owned(), strings(&command));
    respond.insert("command_first".to_owned(), toml::Value::Boolean(false));
    respond.insert(
        "command_timeout".to_owned(),
        toml::Value::String("10s".to_owned()),
    );
    config.insert("respond".to_owned(), toml::Value::Table(respond));
    Ok(config.to_string())
}

fn write_file(path: &Path, content: &str) -> Result<(), LabError> {
    fs::write(path, content).map_err(|source| LabError::File {
        path: path.to_owned(),
        source,
    })
}

fn write_executable(path: &Path, content: &str) -> Result<(), LabError> {
    write_file(path, content)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(|source| LabError::File {
        path: path.to_owned(),
        source,
    })
}

fn read_or_empty(path: &Path) -> Result<String, LabError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(LabError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// One SYN to the bait port from `source` (one of the scanner's addresses): a single probe,
/// so nothing is still in flight to trigger a fresh block once this one is lifted.
fn send_bait_syn(lab: &Lab, source: Ipv4Addr) -> Result<(), LabError> {
    lab.scapy_send(&format!(
        "[IP(src={source:?}, dst=TARGET)/TCP(sport=40{BAIT_PORT}, dport={BAIT_PORT}, flags='S')]",
        source = source.to_string()
    ))?;
    Ok(())
}

fn blocked_line(source: Ipv4Addr) -> String {
    format!("attackalert: Host {source} has been blocked")
}

fn released_line(source: Ipv4Addr) -> String {
    format!("attackalert: Host {source} has been released (block timeout expired)")
}

fn effects_for(lab: &Lab, source: Ipv4Addr, hosts_deny: &Path) -> Result<Effects, LabError> {
    Ok(Effects {
        nft_set_elements: nft_set_elements(lab, source)?,
        blackhole_routes: blackhole_routes(lab, source)?,
        hosts_deny_entries: hosts_deny_entries(&read_or_empty(hosts_deny)?, source),
        iptables_rules: iptables_rules(lab, source)?,
    })
}

/// Zero when the table is absent: a stopped daemon removes it.
fn nft_set_elements(lab: &Lab, source: Ipv4Addr) -> Result<usize, LabError> {
    if !lab.nft_table_exists(TABLE)? {
        return Ok(0);
    }
    let elements = lab.nft_set_elements(TABLE, "blocked_v4")?;
    Ok(elements
        .iter()
        .filter(|element| **element == IpAddr::V4(source))
        .count())
}

fn blackhole_routes(lab: &Lab, source: Ipv4Addr) -> Result<usize, LabError> {
    let args = ["ip", "-j", "route", "show", "type", "blackhole"];
    let output = lab.run_in(Side::Target, &args)?;
    let routes: Value = serde_json::from_str(&output.stdout).map_err(|source| LabError::Json {
        command: args.join(" "),
        source,
    })?;
    let routes = routes.as_array().ok_or_else(|| LabError::JsonShape {
        command: args.join(" "),
        problem: "not an array of routes".to_owned(),
    })?;
    let host = source.to_string();
    let host_prefix = format!("{source}/32");
    Ok(routes
        .iter()
        .filter(|route| {
            let destination = route.get("dst").and_then(Value::as_str);
            let protocol = route.get("protocol").and_then(Value::as_str);
            destination.is_some_and(|dst| dst == host || dst == host_prefix)
                && protocol == Some(ROUTE_PROTOCOL)
        })
        .count())
}

fn iptables_rules(lab: &Lab, source: Ipv4Addr) -> Result<usize, LabError> {
    let output = lab.run_in(Side::Target, &["iptables", "-S", "INPUT"])?;
    let rule = format!("-A INPUT -s {source}/32 -j DROP");
    Ok(output
        .stdout
        .lines()
        .filter(|line| line.trim_end() == rule)
        .count())
}

/// Marker lines for `source` directly followed by its rule line. A marker may carry a suffix
/// (the daemon notes a newline it had to add), so only its start is fixed.
fn hosts_deny_entries(text: &str, source: Ipv4Addr) -> usize {
    let marker = format!("# nfsentry block {source}");
    let rule = format!("ALL: {source}");
    let lines: Vec<&str> = text.lines().collect();
    lines
        .windows(2)
        .filter(|pair| match pair {
            [first, second] => {
                let marker_matches = first
                    .strip_prefix(&marker)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '));
                marker_matches && *second == rule
            }
            _ => false,
        })
        .count()
}

fn expected_argv(source: Ipv4Addr) -> String {
    format!("{source}\n{BAIT_PORT}\ntcp\n")
}

fn error_lines_about(daemon: &Daemon<'_>, source: Ipv4Addr) -> Vec<String> {
    let source = source.to_string();
    daemon
        .log()
        .lines()
        .filter(|line| line.contains(&source) && line.contains("failed"))
        .map(str::to_owned)
        .collect()
}

/// Waits for the effects of a block or release to be `expected`: every action but nft-set runs
/// off the responder thread, so its effect may follow the block line.
fn wait_for_effects(
    lab: &Lab,
    source: Ipv4Addr,
    hosts_deny: &Path,
    expected: Effects,
    what: &str,
) -> Result<(), LabError> {
    let waited = wait_until(what, BLOCK_TIMEOUT, || {
        Ok(effects_for(lab, source, hosts_deny)? == expected)
    });
    if waited.is_err() {
        assert_eq!(effects_for(lab, source, hosts_deny)?, expected, "{what}");
    }
    waited
}

/// Waits until each effect of a short block has been seen once. With blocks of seconds, a
/// loaded machine may run the detached actions so late that the kernel's element has already
/// timed out: the effects need not all be present at one moment.
fn wait_for_each_effect_once(
    lab: &Lab,
    source: Ipv4Addr,
    hosts_deny: &Path,
    what: &str,
) -> Result<(), LabError> {
    let mut seen = Effects::NONE;
    let waited = wait_until(what, BLOCK_TIMEOUT, || {
        seen = seen.most(effects_for(lab, source, hosts_deny)?);
        Ok(seen == Effects::ONE_EACH)
    });
    if waited.is_err() {
        assert_eq!(seen, Effects::ONE_EACH, "{what}");
    }
    waited
}

/// Waits for the command's argv log to hold exactly `expected`: the command runs on a worker
/// pool of its own, after the block line.
fn wait_for_argv(files: &ActionFiles, expected: &str) -> Result<(), LabError> {
    let waited = wait_until("the command to record its argv", BLOCK_TIMEOUT, || {
        Ok(files.recorded_argv()? == expected)
    });
    if waited.is_err() {
        assert_eq!(
            files.recorded_argv()?,
            expected,
            "command argv (one argument a line)"
        );
    }
    waited
}

#[test]
fn every_action_takes_effect_once_and_a_restart_doubles_none() -> Result<(), LabError> {
    let lab = Lab::new("e2eact-all")?;
    let files = ActionFiles::recording(&lab, ADMIN_HOSTS_DENY)?;
    let config = actions_config(&lab, "0", &files.hosts_deny, &files.command)?;
    let mut daemon = lab.start_daemon(&config)?;
    let scanner = lab.scanner_v4;

    daemon.wait_for_log(
        &format!("blocking actions, in order: {ACTIONS_AS_RUN}"),
        LOG_FOLLOW_TIMEOUT,
    )?;
    assert_eq!(
        effects_for(&lab, scanner, &files.hosts_deny)?,
        Effects::NONE,
        "effects present before any probe"
    );

    send_bait_syn(&lab, scanner)?;
    // The responder logs the block once nft-set has placed it and the others have it queued.
    daemon.wait_for_log(&blocked_line(scanner), BLOCK_TIMEOUT)?;
    assert_eq!(
        nft_set_elements(&lab, scanner)?,
        1,
        "nft set after the block"
    );
    wait_for_effects(
        &lab,
        scanner,
        &files.hosts_deny,
        Effects::ONE_EACH,
        "effects after the block",
    )?;
    wait_for_argv(&files, &expected_argv(scanner))?;
    let hosts_deny_blocked =
        format!("{ADMIN_HOSTS_DENY}# nfsentry block {scanner}\nALL: {scanner}\n");
    assert_eq!(
        files.hosts_deny_text()?,
        hosts_deny_blocked,
        "hosts.deny must be the admin's bytes plus exactly the marker and the rule"
    );
    assert_eq!(
        files.recorded_argv()?,
        expected_argv(scanner),
        "command argv (one argument a line)"
    );
    let errors = error_lines_about(&daemon, scanner);
    assert!(errors.is_empty(), "an action failed: {errors:?}");

    daemon.restart()?;
    wait_until(
        "the block to be restored in the nft set",
        BLOCK_TIMEOUT,
        || Ok(nft_set_elements(&lab, scanner)? > 0),
    )?;
    assert_eq!(
        effects_for(&lab, scanner, &files.hosts_deny)?,
        Effects::ONE_EACH,
        "effects after the restart"
    );
    assert_eq!(
        files.hosts_deny_text()?,
        hosts_deny_blocked,
        "hosts.deny changed by the restore"
    );
    assert_eq!(
        files.recorded_argv()?,
        expected_argv(scanner),
        "the command ran again for a restored block"
    );
    let errors = error_lines_about(&daemon, scanner);
    assert!(errors.is_empty(), "restoring an action failed: {errors:?}");
    daemon.stop()
}

#[test]
fn expiry_lifts_every_undoable_action_and_restores_access() -> Result<(), LabError> {
    const BLOCK_FOR: Duration = Duration::from_secs(2);
    let lab = Lab::new("e2eact-expire")?;
    lab.start_http_server(HTTP_PORT)?;
    let scanner = lab.scanner_v4;
    let target = IpAddr::V4(lab.target_v4);
    // No final newline, and an admin rule naming the scanner itself: neither may be touched.
    let admin_hosts_deny = format!("{ADMIN_HOSTS_DENY}in.fingerd: {scanner}");
    let files = ActionFiles::recording(&lab, &admin_hosts_deny)?;
    let block_timeout = format!("{}s", BLOCK_FOR.as_secs());
    let config = actions_config(&lab, &block_timeout, &files.hosts_deny, &files.command)?;
    let mut daemon = lab.start_daemon(&config)?;

    send_bait_syn(&lab, scanner)?;
    daemon.wait_for_log(&blocked_line(scanner), BLOCK_TIMEOUT)?;
    let blocked_at = Instant::now();
    wait_for_each_effect_once(&lab, scanner, &files.hosts_deny, "effects after the block")?;
    wait_for_argv(&files, &expected_argv(scanner))?;

    let release_deadline = BLOCK_FOR + EXPIRY_CHECK + RELEASE_SLACK;
    wait_until(
        "every undoable effect of the block to be lifted",
        release_deadline.saturating_sub(blocked_at.elapsed()),
        || Ok(effects_for(&lab, scanner, &files.hosts_deny)? == Effects::NONE),
    )?;
    daemon.wait_for_log(&released_line(scanner), LOG_FOLLOW_TIMEOUT)?;
    assert_eq!(
        files.hosts_deny_text()?,
        admin_hosts_deny,
        "hosts.deny is not the admin's bytes again"
    );
    assert_eq!(
        files.recorded_argv()?,
        expected_argv(scanner),
        "the command must run once per block, never on release"
    );
    let errors = error_lines_about(&daemon, scanner);
    assert!(errors.is_empty(), "an action failed: {errors:?}");
    assert!(
        lab.http_get(IpAddr::V4(scanner), target, HTTP_PORT)?,
        "the released scanner cannot reach the web server"
    );
    daemon.stop()
}

#[test]
fn blocks_that_expire_while_stopped_are_lifted_at_start() -> Result<(), LabError> {
    const BLOCK_FOR_SECS: u64 = 3;
    const EXPIRY_WAIT: Duration = Duration::from_secs(BLOCK_FOR_SECS + 2);
    let lab = Lab::new("e2eact-downtime")?;
    let scanner = lab.scanner_v4;
    let files = ActionFiles::recording(&lab, ADMIN_HOSTS_DENY)?;
    let config = actions_config(
        &lab,
        &format!("{BLOCK_FOR_SECS}s"),
        &files.hosts_deny,
        &files.command,
    )?;
    let mut daemon = lab.start_daemon(&config)?;

    send_bait_syn(&lab, scanner)?;
    daemon.wait_for_log(&blocked_line(scanner), BLOCK_TIMEOUT)?;
    // The store keeps whole seconds from the moment of the block, which was at or before now.
    let expired_from_unix = unix_now() + BLOCK_FOR_SECS;
    daemon.stop()?;
    assert!(
        !daemon.log().contains(&released_line(scanner)),
        "the block expired before the daemon stopped; the test cannot show a release at start"
    );
    let stopped = Effects {
        nft_set_elements: 0,
        ..Effects::ONE_EACH
    };
    assert_eq!(
        effects_for(&lab, scanner, &files.hosts_deny)?,
        stopped,
        "a stopped daemon keeps its route, hosts.deny entry and iptables rule; only its table goes"
    );

    wait_until("the block's expiry time to pass", EXPIRY_WAIT, || {
        Ok(unix_now() >= expired_from_unix)
    })?;
    assert_eq!(
        effects_for(&lab, scanner, &files.hosts_deny)?,
        stopped,
        "something other than the daemon lifted the block"
    );

    daemon.start()?;
    daemon.wait_for_log(&released_line(scanner), LOG_FOLLOW_TIMEOUT)?;
    wait_for_effects(
        &lab,
        scanner,
        &files.hosts_deny,
        Effects::NONE,
        "an expired block survived the start",
    )?;
    assert_eq!(
        files.hosts_deny_text()?,
        ADMIN_HOSTS_DENY,
        "hosts.deny is not the admin's bytes again"
    );
    assert!(
        !daemon.log().contains(&blocked_line(scanner)),
        "the expired block was placed again at start"
    );
    daemon.stop()
}

#[test]
fn a_failing_action_does_not_stop_the_others() -> Result<(), LabError> {
    const FAILURE_TEXT: &str = "refusing to block";
    let lab = Lab::new("e2eact-failing")?;
    let missing_dir = lab.work_dir().join("no-such-dir");
    let hosts_deny = missing_dir.join("hosts.deny");
    let failing_program = lab.work_dir().join("fail.sh");
    write_executable(
        &failing_program,
        &format!("#!/bin/sh\necho \"{FAILURE_TEXT} $1\" >&2\nexit 3\n"),
    )?;
    let config = actions_config(
        &lab,
        "0",
        &hosts_deny,
        &command_with_placeholders(&failing_program),
    )?;
    // `run` refuses a hosts.deny whose directory is missing, as check-config does, so the
    // directory goes away only once the daemon runs: every hosts-deny block fails from then on.
    let file_error = |source| LabError::File {
        path: missing_dir.clone(),
        source,
    };
    fs::create_dir(&missing_dir).map_err(file_error)?;
    let mut daemon = lab.start_daemon(&config)?;
    fs::remove_dir(&missing_dir).map_err(file_error)?;
    let still_placed = Effects {
        hosts_deny_entries: 0,
        ..Effects::ONE_EACH
    };
    let exit_status_3 = Regex::new(r"exit (status|code):? 3\b")?;
    let program_text = failing_program.to_string_lossy().into_owned();
    let hosts_deny_text = hosts_deny.to_string_lossy().into_owned();

    for scanner in [lab.scanner_v4, lab.scanner_v4_alt] {
        send_bait_syn(&lab, scanner)?;
        daemon.wait_for_log(&blocked_line(scanner), BLOCK_TIMEOUT)?;
        wait_for_effects(
            &lab,
            scanner,
            &hosts_deny,
            still_placed,
            &format!("effects of the block of {scanner}"),
        )?;
        // The failures are logged by the actions' workers, after the block line.
        let stderr_text = format!("{FAILURE_TEXT} {scanner}");
        let command_failure = wait_until("the command's failure", LOG_FOLLOW_TIMEOUT, || {
            Ok(daemon.log().lines().any(|line| {
                line.contains(&program_text)
                    && line.contains(&stderr_text)
                    && exit_status_3.is_match(line)
            }))
        });
        assert!(
            command_failure.is_ok(),
            "no log line names {program_text} with its exit status 3 and stderr {stderr_text:?}"
        );
        let scanner_text = scanner.to_string();
        let hosts_deny_failure = wait_until("the hosts-deny failure", LOG_FOLLOW_TIMEOUT, || {
            Ok(daemon.log().lines().any(|line| {
                line.contains("hosts-deny")
                    && line.contains(&hosts_deny_text)
                    && line.contains(&scanner_text)
            }))
        });
        assert!(
            hosts_deny_failure.is_ok(),
            "no log line reports the hosts-deny failure on {hosts_deny_text} for {scanner}"
        );
        assert!(daemon.is_running(), "the daemon died after the failures");
    }
    assert!(
        !missing_dir.exists(),
        "the hosts-deny action created a directory"
    );
    assert_eq!(
        effects_for(&lab, lab.scanner_v4, &hosts_deny)?,
        still_placed,
        "the first block was disturbed by the second"
    );
    daemon.stop()
}
