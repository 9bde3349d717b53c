//! End-to-end checks of the blocks in the admin's own ruleset (`[respond] blocked_table`) and
//! of `[daemon] keep_blocks_on_exit`, read back from the kernel with `nft -j`: a scan puts the
//! scanner into the admin's set and changes nothing else of the admin's table; missing sets
//! are named and filled once the admin loads them; the admin reloading their ruleset with
//! `flush ruleset` brings back nfsentry's table and every block; a stop with
//! `keep_blocks_on_exit` leaves the drops only, and the start after it never lets a block go.
//! Also: every file in `rules/` passes `nft -c -f`.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    spoofed_v4, spoofed_v6, wait_until, Daemon, Lab, LabError, Side, DAEMON_BIN, HTTP_PORT, TABLE,
};
use serde_json::Value;

/// The admin's table in these tests.
const ADMIN_TABLE: &str = "filter";
/// A monitored TCP port (see `MONITORED_TCP_CONFIG`).
const BAIT_PORT: u16 = 111;
/// Crafted SYNs reach the daemon well within this; the rest is daemon latency.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// The refill is due within a second; this only bounds a wait on a busy machine.
const REFILL_TIMEOUT: Duration = Duration::from_secs(5);

fn template_path() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/rules/blocked-sets.nft").to_owned()
}

/// The admin's ruleset: the shipped template, and a table of their own around it with a set
/// and chains nfsentry must leave alone, the drop rules where the template suggests them.
/// `flush` puts `flush ruleset` on top, as a distribution's nftables.conf has it.
fn admin_ruleset(flush: bool) -> String {
    let flush = if flush { "flush ruleset\n" } else { "" };
    format!(
        "{flush}include \"{template}\"\n\
         table inet {ADMIN_TABLE} {{\n\
         \tset trusted {{ type ipv4_addr; elements = {{ 192.0.2.9 }} }}\n\
         \tchain drop_blocked {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tip saddr @blocked_v4 drop\n\
         \t\tip6 saddr @blocked_v6 drop\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tip saddr @trusted accept\n\
         \t}}\n\
         }}\n",
        template = template_path()
    )
}

/// The lab's config with the blocks in the admin's table.
fn admin_config(lab: &Lab) -> String {
    format!(
        "{}blocked_table = \"inet {ADMIN_TABLE}\"\n",
        lab.config(&[])
    )
}

/// Both blocked sets of the inet table `table`; empty when the table or a set is missing.
fn blocked_in(lab: &Lab, table: &str) -> Result<BTreeSet<IpAddr>, LabError> {
    let mut all = BTreeSet::new();
    for set in ["blocked_v4", "blocked_v6"] {
        let listed =
            lab.run_in_allow_failure(Side::Target, &["nft", "list", "set", "inet", table, set])?;
        if !listed.status.success() {
            return Ok(BTreeSet::new());
        }
        all.extend(lab.nft_set_elements(table, set)?);
    }
    Ok(all)
}

/// `nft -j list table inet NAME` as JSON, with the set elements taken out: what nfsentry may
/// change in the admin's table.
fn table_without_elements(lab: &Lab, table: &str) -> Result<Value, LabError> {
    let listed = lab.run_in(Side::Target, &["nft", "-j", "list", "table", "inet", table])?;
    let mut json: Value =
        serde_json::from_str(&listed.stdout).map_err(|source| LabError::Json {
            command: format!("nft -j list table inet {table}"),
            source,
        })?;
    if let Some(items) = json.get_mut("nftables").and_then(Value::as_array_mut) {
        for item in items {
            if let Some(set) = item.get_mut("set").and_then(Value::as_object_mut) {
                set.remove("elem");
            }
        }
    }
    Ok(json)
}

/// The rules of nfsentry's prerouting chain as `nft list` prints them; empty when absent.
fn our_prerouting(lab: &Lab) -> Result<String, LabError> {
    let chain = lab.run_in_allow_failure(
        Side::Target,
        &["nft", "list", "chain", "inet", TABLE, "prerouting"],
    )?;
    Ok(match chain.status.success() {
        true => chain.stdout,
        false => String::new(),
    })
}

fn lines_with(daemon: &Daemon<'_>, needle: &str) -> usize {
    daemon
        .log()
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

#[test]
fn a_scan_lands_in_the_admins_set_and_nothing_else_of_their_table_changes() -> Result<(), LabError>
{
    let lab = Lab::new("blk-admin")?;
    lab.nft_load(&admin_ruleset(false))?;
    let before = table_without_elements(&lab, ADMIN_TABLE)?;
    lab.start_http_server(HTTP_PORT)?;
    let _daemon = lab.start_daemon(&admin_config(&lab))?;

    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);
    assert!(
        lab.http_get(scanner, target, HTTP_PORT)?,
        "HTTP before the scan"
    );
    lab.nmap(&["-sS", "-p", "1,11,111"], target)?;
    wait_until(
        "the scanner in the admin's blocked_v4",
        BLOCK_TIMEOUT,
        || Ok(blocked_in(&lab, ADMIN_TABLE)?.contains(&scanner)),
    )?;
    assert!(
        !lab.http_get(scanner, target, HTTP_PORT)?,
        "the blocked scanner still fetches over HTTP"
    );
    assert!(
        lab.http_get(IpAddr::V4(lab.scanner_v4_alt), target, HTTP_PORT)?,
        "an address that did not scan is blocked too"
    );

    // Only elements changed in the admin's table.
    assert_eq!(table_without_elements(&lab, ADMIN_TABLE)?, before);
    // nfsentry's own table queues, and holds no blocked set nor its drop.
    let ours = lab.run_in(Side::Target, &["nft", "list", "table", "inet", TABLE])?;
    assert!(ours.stdout.contains("queue"), "{}", ours.stdout);
    assert!(!ours.stdout.contains("blocked_v"), "{}", ours.stdout);
    Ok(())
}

#[test]
fn missing_sets_are_named_then_filled_once_the_admin_loads_them() -> Result<(), LabError> {
    let lab = Lab::new("blk-missing")?;
    let config = admin_config(&lab);
    let config_path = lab.work_dir().join("check.toml");
    std::fs::write(&config_path, &config).map_err(|source| LabError::File {
        path: config_path.clone(),
        source,
    })?;
    let path_text = config_path.to_string_lossy().into_owned();
    let check = lab.run_in_allow_failure(
        Side::Target,
        &[DAEMON_BIN, "check-config", "--config", &path_text],
    )?;
    assert!(check.status.success(), "{}", check.stderr);
    let blocked_table_line = config
        .lines()
        .position(|line| line.starts_with("blocked_table"))
        .map(|index| index + 1);
    assert!(
        check.stderr.contains(&format!(
            "{path_text}:{}: respond.blocked_table: \"inet filter\": table inet filter has no \
             set blocked_v4 nor blocked_v6",
            blocked_table_line.unwrap_or(0)
        )),
        "{}",
        check.stderr
    );

    let mut daemon = lab.start_daemon(&config)?;
    let sources = spoofed_v4(3);
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let missing = "table inet filter has no sets blocked_v4 and blocked_v6";
    daemon.wait_for_log(missing, BLOCK_TIMEOUT)?;
    // Every block is journaled while the sets are missing.
    let journal = lab.state_dir().join("blocks");
    wait_until("three blocks in the journal", BLOCK_TIMEOUT, || {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        Ok(sources
            .iter()
            .all(|source| text.contains(&format!("+ {source} "))))
    })?;

    let loaded = Instant::now();
    lab.nft_load(&admin_ruleset(false))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_until("the blocks in the admin's new sets", REFILL_TIMEOUT, || {
        Ok(blocked_in(&lab, ADMIN_TABLE)? == every)
    })?;
    eprintln!(
        "sets loaded: every block in them after {:?}",
        loaded.elapsed()
    );
    daemon.wait_for_log("take blocks now: 3 blocks put in", REFILL_TIMEOUT)?;
    // Tried every second meanwhile, said once.
    assert_eq!(lines_with(&daemon, missing), 1, "{}", daemon.log());
    Ok(())
}

#[test]
fn the_admin_reloading_their_ruleset_brings_back_our_table_and_every_block() -> Result<(), LabError>
{
    let lab = Lab::new("blk-reload")?;
    lab.nft_load(&admin_ruleset(false))?;
    let mut daemon = lab.start_daemon(&admin_config(&lab))?;
    let mut sources = spoofed_v4(4);
    sources.extend(spoofed_v6(2));
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_until("every source in the admin's sets", BLOCK_TIMEOUT, || {
        Ok(blocked_in(&lab, ADMIN_TABLE)? == every)
    })?;

    // `systemctl reload nftables`: the whole ruleset is flushed and loaded again, in one go.
    let reloaded = Instant::now();
    lab.nft_load(&admin_ruleset(true))?;
    wait_until(
        "our queue table and every block back",
        REFILL_TIMEOUT,
        || Ok(our_prerouting(&lab)?.contains("queue") && blocked_in(&lab, ADMIN_TABLE)? == every),
    )?;
    eprintln!(
        "admin's ruleset reloaded: our table and every block back after {:?}",
        reloaded.elapsed()
    );
    daemon.wait_for_log("table inet filter deleted", REFILL_TIMEOUT)?;
    assert!(
        !daemon.log().contains("released by hand"),
        "a reload was taken for releases:\n{}",
        daemon.log()
    );
    Ok(())
}

/// With keep_blocks_on_exit: the lab's config, blocks in nfsentry's table.
fn keeping_config(lab: &Lab) -> String {
    lab.config(&[])
        .replacen("[daemon]\n", "[daemon]\nkeep_blocks_on_exit = true\n", 1)
}

#[test]
fn keep_blocks_on_exit_leaves_the_drops_only_and_a_restart_never_lets_a_block_go(
) -> Result<(), LabError> {
    let lab = Lab::new("blk-keep")?;
    lab.start_http_server(HTTP_PORT)?;
    let mut daemon = lab.start_daemon(&keeping_config(&lab))?;
    let scanner = IpAddr::V4(lab.scanner_v4);
    let target = IpAddr::V4(lab.target_v4);
    let mut sources = spoofed_v4(3);
    sources.extend(spoofed_v6(2));
    sources.push(scanner);
    lab.scapy_send(&lab.syns_from(&sources, BAIT_PORT))?;
    let every: BTreeSet<IpAddr> = sources.iter().copied().collect();
    wait_until("every source blocked", BLOCK_TIMEOUT, || {
        Ok(blocked_in(&lab, TABLE)? == every)
    })?;

    // Read the blocked sets over and over from before the stop until the daemon has started
    // again: not one read may miss an element (or the table).
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let reading = reading.clone();
        let netns = lab.netns(Side::Target).to_owned();
        std::thread::spawn(move || {
            let mut reads = Vec::new();
            while reading.load(Ordering::Relaxed) {
                let listed = Command::new("ip")
                    .args([
                        "netns", "exec", &netns, "nft", "-j", "list", "table", "inet",
                    ])
                    .arg(TABLE)
                    .output();
                reads.push(listed.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()));
            }
            reads
        })
    };
    daemon.stop()?;
    let listed = lab.run_in(Side::Target, &["nft", "-j", "list", "table", "inet", TABLE])?;
    let json: Value = serde_json::from_str(&listed.stdout).map_err(|source| LabError::Json {
        command: "nft -j list table inet nfsentry".into(),
        source,
    })?;
    let items = json["nftables"].as_array().cloned().unwrap_or_default();
    let sets: Vec<&str> = items
        .iter()
        .filter_map(|item| item["set"]["name"].as_str())
        .collect();
    assert_eq!(sets, ["blocked_v4", "blocked_v6"], "{}", listed.stdout);
    let chains: Vec<&str> = items
        .iter()
        .filter_map(|item| item["chain"]["name"].as_str())
        .collect();
    assert_eq!(chains, ["prerouting"], "{}", listed.stdout);
    let rules: Vec<&Value> = items.iter().filter_map(|item| item.get("rule")).collect();
    assert_eq!(rules.len(), 2, "{}", listed.stdout);
    for rule in rules {
        let text = rule.to_string();
        assert!(
            text.contains("\"drop\"") && !text.contains("queue"),
            "{text}"
        );
    }
    assert!(!listed.stdout.contains("queue"), "{}", listed.stdout);
    let netdev =
        lab.run_in_allow_failure(Side::Target, &["nft", "list", "table", "netdev", TABLE])?;
    assert!(!netdev.status.success(), "the netdev table stayed");
    assert_eq!(blocked_in(&lab, TABLE)?, every);
    assert!(
        !lab.http_get(scanner, target, HTTP_PORT)?,
        "the blocked scanner fetches over HTTP while nfsentry is stopped"
    );
    assert!(lab.http_get(IpAddr::V4(lab.scanner_v4_alt), target, HTTP_PORT)?);

    daemon.start()?;
    reading.store(false, Ordering::Relaxed);
    let reads = reader.join().expect("the reader thread");
    let addresses: Vec<String> = every.iter().map(IpAddr::to_string).collect();
    let whole = reads
        .iter()
        .filter(|read| {
            read.as_ref()
                .is_ok_and(|json| addresses.iter().all(|a| json.contains(&format!("\"{a}\""))))
        })
        .count();
    eprintln!(
        "stop and start: {whole} of {} reads held every block",
        reads.len()
    );
    assert!(!reads.is_empty());
    assert_eq!(
        whole,
        reads.len(),
        "a read during the restart missed a block"
    );

    // The full ruleset is back, with the same elements.
    assert!(our_prerouting(&lab)?.contains("queue"));
    assert_eq!(blocked_in(&lab, TABLE)?, every);
    assert!(!lab.http_get(scanner, target, HTTP_PORT)?);
    Ok(())
}

/// A network namespace of the test's own, deleted when dropped.
struct DeleteNetns(String);

impl Drop for DeleteNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Whether this kernel takes a native `queue` statement, asked with `nft -c` in `netns`.
fn native_queue(netns: &str) -> bool {
    let probe = "table inet probe { chain c { type filter hook prerouting priority 0; queue num 4000 bypass; } }";
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("probe.nft");
    std::fs::write(&path, probe).expect("write the probe");
    nft_check(netns, &path).is_ok()
}

fn nft_check(netns: &str, path: &Path) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-c", "-f"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Every file in `rules/` passes `nft -c -f` (a dry run the kernel checks, in a namespace of
/// the test's own). On a kernel without `nft_queue` (this one: nfsentry falls back to the xt
/// NFQUEUE target) the queue statements cannot be checked: they are taken out and the rest of
/// the file is checked, and the test says so.
#[test]
fn every_rules_file_passes_nft_check() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: nft -c needs root");
        return;
    }
    let netns = format!("nfs-rules-{}", std::process::id());
    let added = Command::new("ip").args(["netns", "add", &netns]).status();
    assert!(
        added.is_ok_and(|status| status.success()),
        "ip netns add {netns}"
    );
    // Deleted however the test ends, a failed assertion included.
    let _namespace = DeleteNetns(netns.clone());
    // The shipped ruleset hooks eth0 in its netdev chain.
    let eth0 = Command::new("ip")
        .args([
            "-n",
            &netns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ])
        .status();
    assert!(eth0.is_ok_and(|status| status.success()), "an eth0");
    let native = native_queue(&netns);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rules_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(rules_dir)
        .expect("rules/")
        .map(|entry| entry.expect("a rules/ entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("a rules file");
        let checked_path = match native || !text.contains(" queue num ") {
            true => path.clone(),
            false => {
                eprintln!(
                    "{}: this kernel has no nft_queue; checking it without its queue rules",
                    path.display()
                );
                let kept: String = text
                    .lines()
                    .filter(|line| !line.contains(" queue num "))
                    .map(|line| format!("{line}\n"))
                    .collect();
                let copy = dir.path().join(path.file_name().expect("a file name"));
                std::fs::write(&copy, kept).expect("write the copy");
                copy
            }
        };
        match nft_check(&netns, &checked_path) {
            Ok(()) => checked.push(path.display().to_string()),
            Err(error) => failures.push(format!("{}: {error}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(checked.len() >= 2, "{checked:?}");
    eprintln!("nft -c -f passed: {checked:?}");
}
