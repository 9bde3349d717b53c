//! The legacy firewall actions (`nfsentry::respond::legacy`) run exactly PortSentry's commands:
//! recording stand-ins (tests/stand-ins/record) show the argv of every tool for IPv4 and IPv6,
//! and real iptables/ip6tables in a throwaway network namespace show the rules placed, kept
//! single and removed. The stand-in tests need nothing; the namespace test needs root and the
//! `ip` and `iptables` programs. None of them tests when the responder decides to block.

mod support;

use std::env;
use std::ffi::OsString;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use caps::{CapSet, Capability, CapsHashSet};
use nfsentry::respond::legacy::{describe, LegacyAction, LegacyTool};
use nfsentry::respond::{self, Action, ActionError};
use nfsentry::store::BlockRecord;
use support::{Netns, ScratchDir};

const BLOCKED_V4: &str = "192.0.2.7";
const OTHER_V4: &str = "198.51.100.9";
const BLOCKED_V6: &str = "2001:db8::7";
/// Every program name a legacy action may run.
const STAND_IN_NAMES: [&str; 6] = [
    "iptables",
    "ip6tables",
    "ipchains",
    "ipfwadm",
    "ipfw",
    "ipf",
];

/// PATH and the stand-ins' variables are process-wide, and backends look PATH up when built:
/// every test that builds a backend holds this, so none sees another's PATH.
static ENVIRONMENT: Mutex<()> = Mutex::new(());

fn lock_environment() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the environment it leaves is restored by its guards.
    ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A directory of recording stand-ins that is the whole PATH while it lives; dropping it puts
/// PATH back and removes the directory, also when the test fails.
struct StandIns {
    dir: ScratchDir,
    log: PathBuf,
    statuses: PathBuf,
    saved_path: Option<OsString>,
}

impl StandIns {
    /// Installs stand-ins under `names` only; a name left out is a missing tool.
    fn install(names: &[&str]) -> StandIns {
        let dir = ScratchDir::new("nfsentry-legacy", "stand-ins");
        let recorder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stand-ins/record");
        for name in names {
            symlink(&recorder, dir.join(name)).unwrap();
        }
        let log = dir.join("calls.log");
        let statuses = dir.join("statuses");
        let saved_path = env::var_os("PATH");
        env::set_var("PATH", dir.path());
        env::set_var("NFSENTRY_STANDIN_LOG", &log);
        env::set_var("NFSENTRY_STANDIN_STATUSES", &statuses);
        StandIns {
            dir,
            log,
            statuses,
            saved_path,
        }
    }

    fn all() -> StandIns {
        StandIns::install(&STAND_IN_NAMES)
    }

    /// Exit statuses for the next calls, in order; calls beyond them succeed.
    fn answer(&self, statuses: &[u8]) {
        let text: String = statuses.iter().map(|s| format!("{s}\n")).collect();
        fs::write(&self.statuses, text).unwrap();
    }

    /// The calls recorded since the last `take_calls`, each as its argv (program name first).
    fn take_calls(&self) -> Vec<Vec<String>> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines()
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect()
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        match &self.saved_path {
            Some(path) => env::set_var("PATH", path),
            None => env::remove_var("PATH"),
        }
        env::remove_var("NFSENTRY_STANDIN_LOG");
        env::remove_var("NFSENTRY_STANDIN_STATUSES");
        // `dir` removes itself once this has run.
    }
}

fn argv(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// An `ipf` call as recorded: its arguments, then what it read on standard input.
fn ipf_call(args: &str, stdin: &str) -> Vec<String> {
    let mut call = argv(args);
    call.push(format!("stdin={stdin}"));
    call
}

fn record(source: &str) -> BlockRecord {
    BlockRecord {
        source: source.parse::<IpAddr>().unwrap(),
        added: 1_700_000_000,
        expires: Some(1_700_003_600),
        protocol: "TCP".to_owned(),
        port: 31337,
        kind: "SYN/Normal".to_owned(),
    }
}

/// An action that has found its programs in PATH, as the responder's `init` leaves it.
fn backend(tool: LegacyTool) -> LegacyAction {
    started(LegacyAction::new(tool, None)).unwrap()
}

fn started(mut action: LegacyAction) -> Result<LegacyAction, ActionError> {
    action.init(&[], SystemTime::now())?;
    Ok(action)
}

/// What `check-config` says about `tool`.
fn check(tool: LegacyTool) -> Vec<String> {
    let action: Box<dyn Action> = Box::new(LegacyAction::new(tool, None));
    respond::check(&[action])
}

fn message(error: ActionError) -> String {
    error.to_string()
}

#[test]
fn iptables_checks_before_inserting_and_never_inserts_twice() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let mut iptables = backend(LegacyTool::Iptables);
    let now = SystemTime::now();

    stand_ins.answer(&[1, 0]); // -C: not there; -I: done
    iptables.block(&[&record(BLOCKED_V4)], now).unwrap();
    stand_ins.answer(&[0]); // -C: there
    iptables.block(&[&record(BLOCKED_V4)], now).unwrap();
    stand_ins.answer(&[0]);
    iptables.init(&[&record(BLOCKED_V4)], now).unwrap();

    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("iptables -C INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -I INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -C INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -C INPUT -s 192.0.2.7 -j DROP"),
        ]
    );
}

#[test]
fn iptables_release_deletes_until_the_rule_is_gone() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let mut iptables = backend(LegacyTool::Iptables);

    // The rule is there twice (placed by hand, say): both copies must go.
    stand_ins.answer(&[0, 0, 0, 0, 1]);
    iptables.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("iptables -C INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -D INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -C INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -D INPUT -s 192.0.2.7 -j DROP"),
            argv("iptables -C INPUT -s 192.0.2.7 -j DROP"),
        ]
    );

    // Already gone (for example after a reboot): nothing to delete, and no error.
    stand_ins.answer(&[1]);
    iptables.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![argv("iptables -C INPUT -s 192.0.2.7 -j DROP")]
    );
}

#[test]
fn iptables_uses_ip6tables_for_ipv6_sources() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let mut iptables = backend(LegacyTool::Iptables);

    stand_ins.answer(&[1, 0, 0, 0, 1]);
    iptables
        .block(&[&record(BLOCKED_V6)], SystemTime::now())
        .unwrap();
    iptables.release(&[&record(BLOCKED_V6)]).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("ip6tables -C INPUT -s 2001:db8::7 -j DROP"),
            argv("ip6tables -I INPUT -s 2001:db8::7 -j DROP"),
            argv("ip6tables -C INPUT -s 2001:db8::7 -j DROP"),
            argv("ip6tables -D INPUT -s 2001:db8::7 -j DROP"),
            argv("ip6tables -C INPUT -s 2001:db8::7 -j DROP"),
        ]
    );
}

#[test]
fn a_failing_tool_is_reported_with_its_status_and_stderr() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let mut iptables = backend(LegacyTool::Iptables);

    stand_ins.answer(&[1, 4]); // not there; the insert fails
    let error = message(
        iptables
            .block(&[&record(BLOCKED_V4)], SystemTime::now())
            .unwrap_err(),
    );
    assert!(error.starts_with("iptables: `"), "{error}");
    assert!(error.contains("-I INPUT -s 192.0.2.7 -j DROP"), "{error}");
    assert!(error.contains("exit status: 4"), "{error}");
    assert!(
        error.contains("stderr: iptables: stand-in failure with status 4"),
        "{error}"
    );

    // A check that neither finds nor misses the rule (exit 2: bad usage) stops the block.
    stand_ins.take_calls();
    stand_ins.answer(&[2]);
    let error = message(
        iptables
            .block(&[&record(BLOCKED_V4)], SystemTime::now())
            .unwrap_err(),
    );
    assert!(error.contains("exit status: 2"), "{error}");
    assert_eq!(
        stand_ins.take_calls().len(),
        1,
        "no insert after a failed check"
    );
}

#[test]
fn ipchains_and_ipfwadm_run_portsentrys_commands_and_skip_ipv6() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();
    let cases = [
        (
            LegacyTool::Ipchains,
            "ipchains -I input -s 192.0.2.7 -j DENY -l",
            "ipchains -D input -s 192.0.2.7 -j DENY -l",
        ),
        (
            LegacyTool::Ipfwadm,
            "ipfwadm -I -i deny -S 192.0.2.7 -o",
            "ipfwadm -I -d deny -S 192.0.2.7 -o",
        ),
    ];
    for (tool, block, release) in cases {
        let mut legacy = backend(tool);
        legacy.block(&[&record(BLOCKED_V4)], now).unwrap();
        // A second block of the same address in this run places nothing more.
        legacy.block(&[&record(BLOCKED_V4)], now).unwrap();
        legacy.release(&[&record(BLOCKED_V4)]).unwrap();
        legacy.block(&[&record(BLOCKED_V6)], now).unwrap();
        legacy.release(&[&record(BLOCKED_V6)]).unwrap();
        legacy.init(&[&record(BLOCKED_V6)], now).unwrap();
        assert_eq!(
            stand_ins.take_calls(),
            vec![argv(block), argv(release)],
            "{tool}"
        );
    }
}

#[test]
fn restore_without_a_check_removes_before_placing() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();
    let mut ipchains = backend(LegacyTool::Ipchains);

    // First address: no rule left from before (delete fails); second: one survived.
    stand_ins.answer(&[1, 0, 0, 0]);
    ipchains
        .init(&[&record(BLOCKED_V4), &record(OTHER_V4)], now)
        .unwrap();
    // Restored addresses count as placed: blocking one again runs nothing.
    ipchains.block(&[&record(OTHER_V4)], now).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("ipchains -D input -s 192.0.2.7 -j DENY -l"),
            argv("ipchains -I input -s 192.0.2.7 -j DENY -l"),
            argv("ipchains -D input -s 198.51.100.9 -j DENY -l"),
            argv("ipchains -I input -s 198.51.100.9 -j DENY -l"),
        ]
    );

    // A release whose delete fails is an error: the rule may still be in place.
    stand_ins.answer(&[1]);
    let error = message(ipchains.release(&[&record(OTHER_V4)]).unwrap_err());
    assert!(error.contains("exit status: 1"), "{error}");
}

#[test]
fn ipfw_release_rebuilds_rule_1_without_the_released_address() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();
    let mut ipfw = backend(LegacyTool::Ipfw);

    ipfw.block(&[&record(BLOCKED_V4)], now).unwrap();
    ipfw.block(&[&record(BLOCKED_V6)], now).unwrap();
    ipfw.block(&[&record(BLOCKED_V4)], now).unwrap();
    ipfw.release(&[&record(BLOCKED_V4)]).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any"),
            argv("ipfw add 1 deny all from 2001:db8::7/128 to any"),
            argv("ipfw delete 1"),
            argv("ipfw add 1 deny all from 2001:db8::7/128 to any"),
        ]
    );
}

#[test]
fn ipfw_releases_a_batch_with_one_rebuild_of_rule_1() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();
    let mut ipfw = backend(LegacyTool::Ipfw);
    let blocks = [record(BLOCKED_V4), record(OTHER_V4), record(BLOCKED_V6)];
    let all: Vec<&BlockRecord> = blocks.iter().collect();

    ipfw.block(&all, now).unwrap();
    stand_ins.take_calls();
    ipfw.release(&[&blocks[0], &blocks[2]]).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("ipfw delete 1"),
            argv("ipfw add 1 deny all from 198.51.100.9:255.255.255.255 to any"),
        ]
    );

    // The released addresses stay released: the next rebuild leaves them out too.
    ipfw.release(&[&blocks[1]]).unwrap();
    assert_eq!(stand_ins.take_calls(), vec![argv("ipfw delete 1")]);
}

#[test]
fn tools_with_a_rule_per_address_release_a_batch_one_by_one() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();
    let mut ipchains = backend(LegacyTool::Ipchains);
    let blocks = [record(BLOCKED_V4), record(OTHER_V4)];
    let all: Vec<&BlockRecord> = blocks.iter().collect();

    ipchains.block(&all, now).unwrap();
    stand_ins.take_calls();
    // The first delete fails; the second is still attempted and the error counts them.
    stand_ins.answer(&[1, 0]);
    let error = message(ipchains.release(&all).unwrap_err());
    assert!(
        error.starts_with("ipchains: 1 of 2 failed; first: `"),
        "{error}"
    );
    assert!(error.contains("-D input -s 192.0.2.7"), "{error}");
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            argv("ipchains -D input -s 192.0.2.7 -j DENY -l"),
            argv("ipchains -D input -s 198.51.100.9 -j DENY -l"),
        ]
    );
}

#[test]
fn ipfw_restore_replaces_rule_1_so_nothing_is_doubled() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();
    let mut ipfw = backend(LegacyTool::Ipfw);
    let blocks = [record(BLOCKED_V4), record(OTHER_V4)];
    let due: Vec<&BlockRecord> = blocks.iter().collect();

    // No rule 1 yet (ipfw exits 69, EX_UNAVAILABLE): not an error, the adds follow.
    stand_ins.answer(&[69]);
    ipfw.init(&due, now).unwrap();
    ipfw.init(&due, now).unwrap();
    let restore_calls = vec![
        argv("ipfw delete 1"),
        argv("ipfw add 1 deny all from 192.0.2.7:255.255.255.255 to any"),
        argv("ipfw add 1 deny all from 198.51.100.9:255.255.255.255 to any"),
    ];
    assert_eq!(
        stand_ins.take_calls(),
        [restore_calls.clone(), restore_calls].concat()
    );

    // A failed re-add is reported, and the address stays due for the next rebuild.
    stand_ins.answer(&[0, 0, 1]);
    let error = message(ipfw.release(&[&record(BLOCKED_V6)]).unwrap_err());
    assert!(error.contains("1 of 2 addresses"), "{error}");
    assert!(error.contains("198.51.100.9:255.255.255.255"), "{error}");
}

#[test]
fn ipfilter_feeds_the_rule_on_stdin_with_and_without_an_interface() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    let now = SystemTime::now();

    let mut on_em0 = started(LegacyAction::new(
        LegacyTool::Ipfilter,
        Some("em0".to_owned()),
    ))
    .unwrap();
    on_em0.block(&[&record(BLOCKED_V4)], now).unwrap();
    on_em0.release(&[&record(BLOCKED_V4)]).unwrap();
    on_em0.block(&[&record(BLOCKED_V6)], now).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            ipf_call("ipf -f -", "block in log on em0 from 192.0.2.7/32 to any"),
            ipf_call(
                "ipf -r -f -",
                "block in log on em0 from 192.0.2.7/32 to any"
            ),
            ipf_call(
                "ipf -6 -f -",
                "block in log on em0 from 2001:db8::7/128 to any"
            ),
        ]
    );

    let mut anywhere = backend(LegacyTool::Ipfilter);
    anywhere.block(&[&record(BLOCKED_V4)], now).unwrap();
    anywhere.block(&[&record(BLOCKED_V6)], now).unwrap();
    anywhere.release(&[&record(BLOCKED_V6)]).unwrap();
    assert_eq!(
        stand_ins.take_calls(),
        vec![
            ipf_call("ipf -f -", "block in log from 192.0.2.7/32 to any"),
            ipf_call("ipf -6 -f -", "block in log from 2001:db8::7/128 to any"),
            ipf_call("ipf -6 -r -f -", "block in log from 2001:db8::7/128 to any"),
        ]
    );
}

#[test]
fn an_interface_name_that_could_alter_the_ipf_rule_is_refused() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    for name in ["em0 from any", "em#0", "em0\nblock in all"] {
        let refused = started(LegacyAction::new(
            LegacyTool::Ipfilter,
            Some(name.to_owned()),
        ));
        let error = message(refused.err().expect("a bad interface name must be refused"));
        assert!(error.starts_with("ipfilter: ipfilter_interface"), "{error}");
    }
    assert!(stand_ins.take_calls().is_empty());
}

#[test]
fn describe_matches_what_the_backend_runs() {
    let _lock = lock_environment();
    let stand_ins = StandIns::all();
    for tool in [LegacyTool::Ipchains, LegacyTool::Ipfwadm, LegacyTool::Ipfw] {
        let lines = describe(tool, None);
        let described = lines
            .iter()
            .find_map(|line| line.strip_prefix("block IPv4: "))
            .unwrap_or_else(|| panic!("{tool}: no IPv4 block line in {lines:?}"))
            .replace("$TARGET$", BLOCKED_V4);
        backend(tool)
            .block(&[&record(BLOCKED_V4)], SystemTime::now())
            .unwrap();
        assert_eq!(stand_ins.take_calls(), vec![argv(&described)], "{tool}");
    }
}

#[test]
fn a_missing_tool_fails_construction_and_preflight_naming_tool_and_path() {
    let _lock = lock_environment();
    // iptables without ip6tables: IPv6 blocks could never work, so the action is refused.
    let stand_ins = StandIns::install(&["iptables", "ipchains"]);
    let path = stand_ins.dir.path().display().to_string();

    let error = message(
        started(LegacyAction::new(LegacyTool::Ipfw, None))
            .err()
            .unwrap(),
    );
    assert_eq!(error, format!("ipfw: ipfw not found in PATH ({path})"));
    let error = message(
        started(LegacyAction::new(LegacyTool::Iptables, None))
            .err()
            .unwrap(),
    );
    assert_eq!(
        error,
        format!("iptables: ip6tables not found in PATH ({path})")
    );
    assert_eq!(
        check(LegacyTool::Ipfilter),
        vec![format!("action ipfilter: ipf not found in PATH ({path})")]
    );
    assert_eq!(
        check(LegacyTool::Iptables),
        vec![format!(
            "action iptables: ip6tables not found in PATH ({path})"
        )]
    );
    assert!(check(LegacyTool::Ipchains).is_empty());
    // Found tools resolve to absolute paths in the PATH directory, as named (links kept).
    assert_eq!(
        backend(LegacyTool::Ipchains).program_paths(),
        vec![stand_ins.dir.join("ipchains")]
    );
}

/// What the namespace test does in and with its namespace.
trait DaemonNamespace {
    /// Runs `body` on a thread that has entered the namespace and then, like the daemon, kept
    /// only CAP_NET_ADMIN; the programs the backend starts inherit both.
    fn run_as_daemon<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T;
    /// `program -S INPUT` read from outside the test's thread, in the namespace.
    fn input_rules(&self, program: &str) -> Vec<String>;
    fn count(&self, program: &str, rule: &str) -> usize;
}

impl DaemonNamespace for Netns {
    fn run_as_daemon<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        self.enter(|| {
            keep_only_net_admin();
            body()
        })
    }

    fn input_rules(&self, program: &str) -> Vec<String> {
        let output = self.exec(&[program, "-S", "INPUT"]);
        output.lines().map(str::to_owned).collect()
    }

    fn count(&self, program: &str, rule: &str) -> usize {
        self.input_rules(program)
            .iter()
            .filter(|line| *line == rule)
            .count()
    }
}

/// The daemon's capability drop, on this thread only (capabilities are per thread).
fn keep_only_net_admin() {
    let keep: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    for capability in caps::read(None, CapSet::Bounding).unwrap() {
        if capability != Capability::CAP_NET_ADMIN {
            caps::drop(None, CapSet::Bounding, capability).unwrap();
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).unwrap();
    caps::set(None, CapSet::Effective, &keep).unwrap();
    caps::set(None, CapSet::Permitted, &keep).unwrap();
    for set in [CapSet::Bounding, CapSet::Effective, CapSet::Permitted] {
        assert_eq!(caps::read(None, set).unwrap(), keep, "{set:?}");
    }
}

#[test]
fn real_iptables_places_one_rule_and_removes_every_copy() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates a network namespace and needs root"
    );
    // Holds PATH steady: the backend must find the real tools, not another test's stand-ins.
    let _lock = lock_environment();
    let netns = Netns::new("legacy", "ipt");
    let v4_rule = "-A INPUT -s 192.0.2.7/32 -j DROP";
    let v6_rule = "-A INPUT -s 2001:db8::7/128 -j DROP";
    let now = SystemTime::now();

    netns.run_as_daemon(|| {
        let mut first_run = backend(LegacyTool::Iptables);
        first_run.block(&[&record(BLOCKED_V4)], now).unwrap();
        first_run.block(&[&record(BLOCKED_V4)], now).unwrap();
        first_run.block(&[&record(BLOCKED_V6)], now).unwrap();
        first_run.block(&[&record(BLOCKED_V6)], now).unwrap();
    });
    assert_eq!(netns.count("iptables", v4_rule), 1);
    assert_eq!(netns.count("ip6tables", v6_rule), 1);
    assert!(
        !netns
            .input_rules("iptables")
            .iter()
            .any(|line| line.contains("2001:db8")),
        "an IPv6 rule went to iptables"
    );

    // A restart: a new backend restores the same blocks; the rules stay single.
    netns.run_as_daemon(|| {
        let mut second_run = backend(LegacyTool::Iptables);
        second_run
            .init(&[&record(BLOCKED_V4), &record(BLOCKED_V6)], now)
            .unwrap();
    });
    assert_eq!(netns.count("iptables", v4_rule), 1);
    assert_eq!(netns.count("ip6tables", v6_rule), 1);

    // Release removes the rule, including a copy someone else appended.
    netns.exec(&["iptables", "-A", "INPUT", "-s", BLOCKED_V4, "-j", "DROP"]);
    assert_eq!(netns.count("iptables", v4_rule), 2);
    netns.run_as_daemon(|| {
        let mut third_run = backend(LegacyTool::Iptables);
        third_run.release(&[&record(BLOCKED_V4)]).unwrap();
        third_run.release(&[&record(BLOCKED_V6)]).unwrap();
        // Releasing again finds nothing and is not an error.
        third_run.release(&[&record(BLOCKED_V4)]).unwrap();
    });
    assert_eq!(netns.count("iptables", v4_rule), 0);
    assert_eq!(netns.count("ip6tables", v6_rule), 0);
}
