//! The fleet worker against a real CrowdSec 1.4.6 Local API: each test starts a private LAPI
//! (tests/support/crowdsec.rs), registers machines and bouncers with cscli, and checks what
//! the LAPI holds and what the worker hands the firewall. No mocks. Needs Debian's `crowdsec`
//! package; does not need root or network namespaces (the LAPI listens on loopback).

#[path = "support/crowdsec.rs"]
mod lapi;

use std::fs;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use lapi::{Bouncer, Lapi};
use log::{Level, Log, Metadata, Record};
use nfsentry::config::{Config, Crowdsec as CrowdsecConfig, Secret};
use nfsentry::crowdsec::client::{Client, LapiError, Timeouts};
use nfsentry::crowdsec::text::{parse_go_duration, parse_rfc3339};
use nfsentry::crowdsec::{
    spawn, Change, Crowdsec, LocalBlock, Probe, ReleaseReason, Settings, Status, Tuning,
};
use nfsentry::store::BlockRecord;
use serde_json::Value;

const SCENARIO: &str = "nfsentry/portscan";
/// Long enough for a loaded machine; every wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

// ------------------------------------------------------------------------------ helpers

/// Log lines of the crowdsec module, from every test of this binary. Tests tell theirs apart
/// by the LAPI's URL, which each outage and recovery line names.
static LOG_LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl Log for Capture {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Debug && metadata.target().starts_with("nfsentry::crowdsec")
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}", record.level(), record.args());
            eprintln!("{line}");
            if let Ok(mut lines) = LOG_LINES.lock() {
                lines.push(line);
            }
        }
    }

    fn flush(&self) {}
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        static LOGGER: Capture = Capture;
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn log_lines_with(both: [&str; 2]) -> Vec<String> {
    LOG_LINES
        .lock()
        .map(|lines| {
            lines
                .iter()
                .filter(|line| both.iter().all(|part| line.contains(part)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn block(source: &str, expires: Option<u64>) -> LocalBlock {
    let mut block = LocalBlock::new(BlockRecord {
        source: source.parse().unwrap_or_else(|e| panic!("{source}: {e}")),
        added: unix_now(),
        expires,
        protocol: "TCP".into(),
        port: 23,
        kind: "SYN/Normal".into(),
        verified: false,
    });
    block.hits = 2;
    block.probes = vec![
        Probe {
            protocol: "TCP".into(),
            port: 21,
        },
        Probe {
            protocol: "TCP".into(),
            port: 23,
        },
    ];
    block
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The `[crowdsec]` section as the daemon would load it, with the secrets in files beside it.
fn crowdsec_config(
    lapi: &Lapi,
    push: Option<(&str, &str)>,
    pull_key: Option<&str>,
    pull_every: &str,
    resync_every: &str,
) -> CrowdsecConfig {
    let dir = lapi.dir();
    let mut text = format!(
        "[crowdsec]\nurl = \"{}\"\nscenario = \"{SCENARIO}\"\npull_every = \"{pull_every}\"\n\
         resync_every = \"{resync_every}\"\n",
        lapi.url()
    );
    match push {
        Some((machine, password)) => {
            fs::write(dir.join("password"), format!("{password}\n"))
                .unwrap_or_else(|e| panic!("password file: {e}"));
            text.push_str(&format!(
                "push = true\nmachine_id = \"{machine}\"\npassword_file = \"password\"\n"
            ));
        }
        None => text.push_str("push = false\n"),
    }
    match pull_key {
        Some(key) => {
            fs::write(dir.join("bouncer-key"), format!("{key}\n"))
                .unwrap_or_else(|e| panic!("key file: {e}"));
            text.push_str("pull = true\nbouncer_key_file = \"bouncer-key\"\n");
        }
        None => text.push_str("pull = false\n"),
    }
    let config = Config::from_toml(&text, &dir.join("nfsentry.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    config
        .crowdsec
        .unwrap_or_else(|| panic!("the section is present"))
}

/// The changes the worker hands the firewall, collected as they come.
struct Firewall {
    batches: Receiver<Vec<Change>>,
    seen: Vec<Change>,
}

impl Firewall {
    fn take(&mut self) {
        while let Ok(batch) = self.batches.try_recv() {
            self.seen.extend(batch);
        }
    }

    fn enforced(&mut self, target: &str) -> Option<Change> {
        self.take();
        let target = net(target);
        self.seen
            .iter()
            .find(|change| matches!(change, Change::Enforce { net, .. } if *net == target))
            .cloned()
    }

    fn wait_enforced(&mut self, target: &str) -> Change {
        let mut found = None;
        wait_until(&format!("{target} enforced"), WAIT, || {
            found = self.enforced(target);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("{target} enforced"))
    }

    fn wait_released(&mut self, target: &str) -> ReleaseReason {
        let target = net(target);
        let mut reason = None;
        wait_until(&format!("{target} released"), WAIT, || {
            self.take();
            reason = self.seen.iter().find_map(|change| match change {
                Change::Release { net, reason } if *net == target => Some(*reason),
                _ => None,
            });
            reason.is_some()
        });
        reason.unwrap_or_else(|| panic!("{target} released"))
    }
}

fn start_worker(config: &CrowdsecConfig, tuning: Tuning) -> (Crowdsec, Firewall) {
    let mut settings = Settings::new(config);
    settings.tuning = tuning;
    let (sender, batches) = mpsc::channel();
    let worker = spawn(settings, move |changes| {
        let _ = sender.send(changes);
    })
    .unwrap_or_else(|error| panic!("spawn: {error}"));
    (
        worker,
        Firewall {
            batches,
            seen: Vec::new(),
        },
    )
}

fn wait_status(worker: &Crowdsec, what: &str, mut condition: impl FnMut(&Status) -> bool) {
    wait_until(what, WAIT, || condition(&worker.status()));
}

/// Our decisions on `value` in a list from the stream.
fn ours<'a>(decisions: &'a [Value], value: &str) -> Vec<&'a Value> {
    decisions
        .iter()
        .filter(|decision| decision["origin"] == "nfsentry" && decision["value"] == value)
        .collect()
}

fn remaining(decision: &Value) -> Duration {
    decision["duration"]
        .as_str()
        .and_then(parse_go_duration)
        .and_then(|duration| duration.remaining())
        .unwrap_or_else(|| panic!("no remaining time in {decision}"))
}

fn timeout_of(change: &Change) -> Duration {
    match change {
        Change::Enforce {
            timeout: Some(timeout),
            ..
        } => *timeout,
        other => panic!("not an enforcement with a timeout: {other:?}"),
    }
}

fn is_near(actual: Duration, expected: Duration, slack: Duration) -> bool {
    actual <= expected + Duration::from_secs(1) && actual + slack >= expected
}

// ------------------------------------------------------------------------------ tests

/// Login gives a JWT for an hour; a wrong password, a wrong key and a forged token are refused
/// with 401/403, and no error quotes the secret.
#[test]
fn login_and_refusals() {
    let lapi = Lapi::start();
    lapi.add_machine("web-01", "pw-login-Xq71");
    lapi.add_bouncer("web-01", "key-login-Rb52");
    let good = crowdsec_config(
        &lapi,
        Some(("web-01", "pw-login-Xq71")),
        Some("key-login-Rb52"),
        "1s",
        "5m",
    );
    let client = Client::new(good.url.clone(), Timeouts::default());
    let push = good.push.clone().unwrap_or_else(|| panic!("push on"));
    let login = client
        .login(&push.machine_id, &push.password, SCENARIO)
        .unwrap_or_else(|error| panic!("login: {error}"));
    assert!(login.token.split('.').count() == 3, "a JWT has three parts");
    let expire = login
        .expire
        .as_deref()
        .and_then(parse_rfc3339)
        .unwrap_or_else(|| panic!("unreadable expire {:?}", login.expire));
    let lifetime = expire.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(
        is_near(
            lifetime,
            Duration::from_secs(3_600),
            Duration::from_secs(60)
        ),
        "{lifetime:?}"
    );

    let bad = crowdsec_config(
        &lapi,
        Some(("web-01", "pw-wrong-Zz99")),
        Some("key-wrong-Yy88"),
        "1s",
        "5m",
    );
    let bad_password: Secret = bad.push.unwrap_or_else(|| panic!("push on")).password;
    let refused = client.login("web-01", &bad_password, SCENARIO);
    assert!(
        matches!(&refused, Err(LapiError::Refused { status: 401, .. })),
        "{refused:?}"
    );
    let text = format!(
        "{:?} {}",
        refused,
        refused
            .as_ref()
            .err()
            .map_or(String::new(), ToString::to_string)
    );
    assert!(!text.contains("pw-wrong-Zz99"), "{text}");

    let bad_key = bad.pull.unwrap_or_else(|| panic!("pull on")).bouncer_key;
    let refused = client.delta(&bad_key);
    assert!(
        matches!(&refused, Err(LapiError::Refused { status: 403, .. })),
        "{refused:?}"
    );
    assert!(!format!("{refused:?}").contains("key-wrong-Yy88"));
    let refused = client.push_alerts("not.a.token", &[]);
    assert!(
        matches!(&refused, Err(LapiError::Refused { status: 401, .. })),
        "{refused:?}"
    );
    let good_key = good.pull.unwrap_or_else(|| panic!("pull on")).bouncer_key;
    let delta = client
        .delta(&good_key)
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(delta.new, None, "an empty list comes as null");
}

/// A block becomes one ban with scope Ip, the canonical address, origin nfsentry and the
/// scenario, lasting the block's remaining time (a permanent block: 87600h); unblocking
/// deletes our ban and nothing else on that address.
#[test]
fn pushed_blocks_are_bans_the_fleet_sees_and_unblocking_deletes_only_ours() {
    capture_logs();
    let lapi = Lapi::start();
    lapi.add_machine("web-01", "pw-web-01-Kd30");
    lapi.add_bouncer("observer", "observer-key-Mn21");
    let observer = Bouncer::new(&lapi, "observer-key-Mn21");
    let config = crowdsec_config(&lapi, Some(("web-01", "pw-web-01-Kd30")), None, "1s", "5m");
    let (worker, _firewall) = start_worker(&config, Tuning::default());
    wait_status(&worker, "the watcher to log in", |status| status.logged_in);

    // Someone else's ban on the same address must survive our deletion.
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.7",
        "--duration",
        "2h",
    ]);
    let reporter = worker.reporter();
    reporter.blocked(block("198.51.100.7", Some(unix_now() + 3_600)));
    reporter.blocked(block("2001:0db8:0000:0000:0000:0000:0000:0007", None));

    // The stream keeps only the longest ban per address (the 2h cscli one on .7), so the
    // LAPI's own list shows ours.
    let mut listed = Vec::new();
    wait_until("both bans on the LAPI", WAIT, || {
        listed = lapi.decisions();
        ours(&listed, "198.51.100.7").len() == 1 && ours(&listed, "2001:db8::7").len() == 1
    });
    for (value, expected) in [
        ("198.51.100.7", Duration::from_secs(3_600)),
        ("2001:db8::7", Duration::from_secs(87_600 * 3_600)),
    ] {
        let decision = ours(&listed, value)[0];
        assert_eq!(decision["type"], "ban", "{decision}");
        assert_eq!(decision["scope"], "Ip", "{decision}");
        assert_eq!(decision["scenario"], SCENARIO, "{decision}");
        let left = remaining(decision);
        assert!(
            is_near(left, expected, Duration::from_secs(30)),
            "{value}: {left:?} left, expected about {expected:?}"
        );
    }
    // A bouncer sees the one nobody else banned, as the fleet will.
    let streamed = observer.active();
    assert_eq!(ours(&streamed, "2001:db8::7").len(), 1, "{streamed:?}");

    reporter.unblocked("198.51.100.7".parse().unwrap_or_else(|e| panic!("{e}")));
    wait_until("our ban on 198.51.100.7 deleted", WAIT, || {
        listed = lapi.decisions();
        ours(&listed, "198.51.100.7").is_empty()
    });
    let others: Vec<&Value> = listed
        .iter()
        .filter(|decision| decision["value"] == "198.51.100.7")
        .collect();
    assert_eq!(others.len(), 1, "the cscli ban stays: {listed:?}");
    assert_eq!(others[0]["origin"], "cscli");
    assert_eq!(ours(&listed, "2001:db8::7").len(), 1, "{listed:?}");

    wait_status(&worker, "the deletion counted", |status| {
        status.deletions_done == 1
    });
    let status = worker.status();
    assert_eq!(status.alerts_pushed, 2, "{status:?}");
    assert_eq!(status.pushes_pending, 0, "{status:?}");
    assert_eq!(
        (
            status.pushes_failed,
            status.pushes_dropped,
            status.pushes_expired
        ),
        (0, 0, 0)
    );
    assert!(status.connected && status.unreachable_since.is_none());
    let started = Instant::now();
    assert!(worker.stop(Duration::from_secs(5)), "the worker stops");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Bans on an address and on a range, from cscli, are enforced with their remaining time; a
/// captcha is counted and ignored; deleting them releases them.
#[test]
fn pulled_bans_are_enforced_others_ignored_and_deletions_released() {
    capture_logs();
    let lapi = Lapi::start();
    lapi.add_bouncer("web-01", "key-web-01-Pq44");
    let config = crowdsec_config(&lapi, None, Some("key-web-01-Pq44"), "200ms", "5m");
    let (worker, mut firewall) = start_worker(&config, Tuning::default());
    wait_status(&worker, "the first full pull", |status| {
        status.full_pulls >= 1
    });

    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.20",
        "--duration",
        "2h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "192.0.2.0/24",
        "--duration",
        "1h",
    ]);
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.51.100.21",
        "--type",
        "captcha",
        "--duration",
        "1h",
    ]);

    let address = firewall.wait_enforced("198.51.100.20/32");
    let range = firewall.wait_enforced("192.0.2.0/24");
    assert!(
        is_near(
            timeout_of(&address),
            Duration::from_secs(7_200),
            Duration::from_secs(30)
        ),
        "{address:?}"
    );
    assert!(
        is_near(
            timeout_of(&range),
            Duration::from_secs(3_600),
            Duration::from_secs(30)
        ),
        "{range:?}"
    );
    assert!(
        matches!(&address, Change::Enforce { origin, scenario, .. }
            if origin == "cscli" && scenario.contains("manual 'ban'")),
        "{address:?}"
    );
    wait_status(&worker, "the captcha counted", |status| {
        status.decisions.ignored_type == 1
    });
    assert_eq!(firewall.enforced("198.51.100.21/32"), None);
    let status = worker.status();
    assert_eq!(
        (status.decisions.addresses, status.decisions.ranges),
        (1, 1),
        "{status:?}"
    );
    let held: Vec<IpNet> = worker.held().iter().map(|ban| ban.net).collect();
    assert_eq!(held, vec![net("192.0.2.0/24"), net("198.51.100.20/32")]);

    lapi.cscli(&["decisions", "delete", "--ip", "198.51.100.20"]);
    assert_eq!(
        firewall.wait_released("198.51.100.20/32"),
        ReleaseReason::Deleted
    );
    lapi.cscli(&["decisions", "delete", "--range", "192.0.2.0/24"]);
    assert_eq!(
        firewall.wait_released("192.0.2.0/24"),
        ReleaseReason::Deleted
    );
    wait_status(&worker, "nothing held", |status| {
        status.decisions.addresses + status.decisions.ranges == 0
    });
    assert!(worker.stop(Duration::from_secs(5)));
}

/// The LAPI goes away and comes back on the same database: the blocks reported meanwhile all
/// arrive, the outage is logged once and the recovery once, and the pull resyncs.
#[test]
fn a_lapi_restart_loses_no_report_and_is_logged_once_each_way() {
    capture_logs();
    let mut lapi = Lapi::start();
    lapi.add_machine("web-01", "pw-restart-Hh65");
    lapi.add_bouncer("web-01", "key-restart-Jj76");
    lapi.add_bouncer("observer", "observer-restart-Gg54");
    let observer = Bouncer::new(&lapi, "observer-restart-Gg54");
    let config = crowdsec_config(
        &lapi,
        Some(("web-01", "pw-restart-Hh65")),
        Some("key-restart-Jj76"),
        "200ms",
        "5m",
    );
    let url = lapi.url();
    let (worker, mut firewall) = start_worker(&config, Tuning::default());
    wait_status(&worker, "logged in and pulled", |status| {
        status.logged_in && status.full_pulls >= 1
    });
    let full_pulls_before = worker.status().full_pulls;

    lapi.stop();
    let reporter = worker.reporter();
    let addresses: Vec<String> = (100..120)
        .map(|last| format!("198.51.100.{last}"))
        .collect();
    for address in &addresses {
        reporter.blocked(block(address, Some(unix_now() + 3_600)));
    }
    wait_status(&worker, "the outage noticed", |status| {
        status.unreachable_since.is_some() && status.outages == 1
    });
    assert!(!worker.status().connected);
    assert_eq!(worker.status().pushes_pending, addresses.len());

    lapi.resume();
    wait_until("every report on the LAPI", Duration::from_secs(60), || {
        let active = observer.active();
        addresses
            .iter()
            .all(|address| ours(&active, address).len() == 1)
    });
    wait_status(&worker, "recovered and resynced", |status| {
        status.connected && status.pushes_pending == 0 && status.full_pulls > full_pulls_before
    });
    let status = worker.status();
    assert_eq!(status.alerts_pushed, addresses.len() as u64, "{status:?}");
    assert_eq!(
        (status.pushes_failed, status.pushes_dropped, status.outages),
        (0, 0, 1),
        "{status:?}"
    );
    assert_eq!(
        log_lines_with([url.as_str(), "cannot be reached"]).len(),
        1,
        "{:?}",
        log_lines_with([url.as_str(), "crowdsec"])
    );
    assert_eq!(
        log_lines_with([url.as_str(), "answers again"]).len(),
        1,
        "{:?}",
        log_lines_with([url.as_str(), "crowdsec"])
    );
    // Our own bans come back in the pull like anyone's, marked as ours.
    for address in &addresses {
        let change = firewall.wait_enforced(&format!("{address}/32"));
        assert!(
            matches!(&change, Change::Enforce { origin, .. } if origin == "nfsentry"),
            "{change:?}"
        );
    }
    assert!(worker.stop(Duration::from_secs(5)));
}

/// A decision the deltas never show (another poller with the same key took that delta, as a
/// missed delta does under load on 1.4.6) is enforced by the next full pull.
#[test]
fn a_decision_missed_by_the_deltas_is_recovered_by_the_resync() {
    capture_logs();
    let lapi = Lapi::start();
    lapi.add_bouncer("web-01", "key-resync-Ww12");
    let thief = Bouncer::new(&lapi, "key-resync-Ww12");
    let every = Duration::from_millis(250);
    let config = crowdsec_config(&lapi, None, Some("key-resync-Ww12"), "250ms", "6s");
    let (worker, mut firewall) = start_worker(&config, Tuning::default());
    wait_status(&worker, "the first full pull", |status| {
        status.full_pulls >= 1
    });

    let mut missed = None;
    for last in 50..60 {
        let address = format!("198.51.100.{last}");
        let full_pulls = worker.status().full_pulls;
        lapi.cscli(&["decisions", "add", "--ip", &address, "--duration", "1h"]);
        let (new, _) = thief.stream(false);
        if !new
            .iter()
            .any(|decision| decision["value"] == address.as_str())
        {
            continue; // The worker's own delta had it first.
        }
        // Several deltas go by without it; if one did carry it (the worker polled at the
        // same instant as the thief), this address proves nothing: take another.
        let stolen_at = SystemTime::now();
        wait_status(&worker, "a few more deltas", |status| {
            status
                .last_pull
                .is_some_and(|at| at > stolen_at + 3 * every)
        });
        if worker.status().full_pulls == full_pulls
            && firewall.enforced(&format!("{address}/32")).is_none()
        {
            missed = Some((address, full_pulls));
            break;
        }
    }
    let Some((address, full_pulls)) = missed else {
        panic!("no decision could be kept from the worker's deltas");
    };
    let change = firewall.wait_enforced(&format!("{address}/32"));
    wait_status(&worker, "the resync counted", |status| {
        status.full_pulls > full_pulls
    });
    assert!(
        is_near(
            timeout_of(&change),
            Duration::from_secs(3_600),
            Duration::from_secs(30)
        ),
        "{change:?}"
    );
    assert!(worker.stop(Duration::from_secs(5)));
}

/// With the LAPI gone, reports wait, the outage shows in the status, and stopping is prompt:
/// no call can hang the worker.
#[test]
fn stopping_is_prompt_while_the_lapi_is_down() {
    capture_logs();
    let mut lapi = Lapi::start();
    lapi.add_machine("web-01", "pw-down-Tt87");
    lapi.add_bouncer("web-01", "key-down-Uu98");
    let config = crowdsec_config(
        &lapi,
        Some(("web-01", "pw-down-Tt87")),
        Some("key-down-Uu98"),
        "200ms",
        "5m",
    );
    lapi.stop();
    let tuning = Tuning {
        backlog: 4,
        ..Tuning::default()
    };
    let (worker, _firewall) = start_worker(&config, tuning);
    // The first login fails at once; the reports below arrive while the worker backs off.
    wait_status(&worker, "the outage noticed", |status| {
        status.unreachable_since.is_some()
    });
    let reporter = worker.reporter();
    for last in 1..=6 {
        reporter.blocked(block(&format!("198.51.100.{last}"), None));
    }
    let status = worker.status();
    assert_eq!(
        status.pushes_pending, 4,
        "the backlog is bounded: {status:?}"
    );
    assert_eq!(
        status.pushes_dropped, 2,
        "oldest dropped, counted: {status:?}"
    );
    assert!(!status.logged_in);
    let line = status.summary(SystemTime::now());
    assert!(line.starts_with("crowdsec: unreachable since "), "{line}");
    assert!(
        !line.contains("pw-down") && !line.contains("key-down"),
        "{line}"
    );
    let started = Instant::now();
    assert!(worker.stop(Duration::from_secs(5)));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        started.elapsed()
    );
}
