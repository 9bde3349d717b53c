//! Kernel tests for `nfsentry::nft::netlink`: each test gets fresh network namespaces, applies
//! through netlink, and reads the result back with the `nft` program. They need root (or
//! CAP_NET_ADMIN and CAP_SYS_ADMIN) and the `ip` and `nft` tools; they do not test the detector.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use nfsentry::config::QueueRange;
use nfsentry::heal::ForeignChange;
use nfsentry::nft::watch::{Seen, Watch};
use nfsentry::nft::{render, Nft, NftError, QueueMode, RulesetSpec};
use serde_json::Value;
use support::Netns;

/// Namespaces of this file are named `fib-…`.
const NETNS_PREFIX: &str = "fib";
const TABLE: &str = "nfsentry";
const QUEUE: u16 = 5;
const NFLOG_GROUP: u16 = 7219;

/// What these tests ask of the `nft` program inside a namespace.
trait NftProgram {
    /// Runs `nft args` and returns its standard output; panics when it fails.
    fn nft(&self, args: &[&str]) -> String;
    fn nft_output(&self, args: &[&str]) -> Output;
    fn nft_json(&self, args: &[&str]) -> Vec<Value>;
    /// Whether this kernel accepts the native `queue` expression, asked of `nft` itself.
    fn has_native_queue(&self) -> bool;
}

impl NftProgram for Netns {
    fn nft(&self, args: &[&str]) -> String {
        let mut command = vec!["nft"];
        command.extend_from_slice(args);
        self.exec(&command)
    }

    fn nft_output(&self, args: &[&str]) -> Output {
        let mut command = vec!["nft"];
        command.extend_from_slice(args);
        self.exec_output(&command)
    }

    fn nft_json(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let text = self.nft(&full);
        let parsed: Value = serde_json::from_str(&text).expect("nft -j prints JSON");
        parsed["nftables"].as_array().cloned().unwrap_or_default()
    }

    fn has_native_queue(&self) -> bool {
        self.nft(&["add table inet nft_queue_probe"]);
        self.nft(&["add chain inet nft_queue_probe c"]);
        let accepted = self
            .nft_output(&["add rule inet nft_queue_probe c queue num 0 bypass"])
            .status
            .success();
        self.nft(&["delete table inet nft_queue_probe"]);
        accepted
    }
}

fn spec(devices: &[&str]) -> RulesetSpec {
    RulesetSpec {
        table: TABLE.to_owned(),
        queue: QueueRange::single(QUEUE),
        // Overlapping and touching ranges on purpose: the kernel must see them merged.
        tcp_ports: vec![(1, 1), (11, 11), (32771, 32772), (32772, 32774)],
        udp_ports: vec![(7, 7), (8, 9), (161, 162), (65535, 65535)],
        ignore_v4: [
            "127.0.0.1/8",
            "192.0.2.0/25",
            "192.0.2.128/25",
            "198.51.100.7/32",
            "198.51.100.0/24",
        ]
        .iter()
        .map(|s| s.parse().expect("test CIDR"))
        .collect(),
        ignore_v6: [
            "::1/128",
            "2001:db8::/33",
            "2001:db8:8000::/33",
            "2001:db8:1::/48",
        ]
        .iter()
        .map(|s| s.parse().expect("test CIDR"))
        .collect(),
        ingress_devices: devices.iter().map(|d| d.to_string()).collect(),
        nflog_group: NFLOG_GROUP,
        blocked_ranges: false,
        reply_mark: None,
        blocked_table: None,
        blocks_only: false,
    }
}

/// A set element from `nft -j` in `nft` text form: `1`, `7-9`, `::1`, `10.0.0.0/8`.
fn element_text(element: &Value) -> String {
    if let Some(prefix) = element.get("prefix") {
        return format!(
            "{}/{}",
            value_text(&prefix["addr"]),
            value_text(&prefix["len"])
        );
    }
    if let Some(range) = element.get("range") {
        return format!("{}-{}", value_text(&range[0]), value_text(&range[1]));
    }
    if let Some(inner) = element.get("elem") {
        return element_text(&inner["val"]);
    }
    value_text(element)
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The sets of a `nft -j list` answer, by name.
fn sets(objects: &[Value]) -> BTreeMap<String, Value> {
    objects
        .iter()
        .filter_map(|o| o.get("set"))
        .map(|set| {
            (
                set["name"].as_str().unwrap_or_default().to_owned(),
                set.clone(),
            )
        })
        .collect()
}

fn set_elements(set: &Value) -> Vec<String> {
    set.get("elem")
        .and_then(Value::as_array)
        .map(|elements| elements.iter().map(element_text).collect())
        .unwrap_or_default()
}

/// Rule lines of a `nft list` text, with counter values dropped so listings compare.
fn rule_lines(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("table ")
                && !line.starts_with("chain ")
                && !line.starts_with("type ")
                && *line != "}"
        })
        .map(|line| line.replace(" packets 0 bytes 0", ""))
        .collect()
}

const EXPECTED_PREROUTING: [&str; 15] = [
    "ip saddr @blocked_v4 counter drop",
    "ip6 saddr @blocked_v6 counter drop",
    "ct state established,related accept",
    "fib daddr type != local accept",
    "ip saddr @ignore_v4 accept",
    "ip6 saddr @ignore_v6 accept",
    "socket transparent 0 accept",
    "ip hdrlength > 5 counter queue num 5 bypass",
    "exthdr rt exists counter queue num 5 bypass",
    "tcp flags ! fin,syn,rst,ack counter queue num 5 bypass",
    "tcp flags fin / fin,ack counter queue num 5 bypass",
    "tcp flags fin,syn / fin,syn counter queue num 5 bypass",
    "tcp flags syn,rst / syn,rst counter queue num 5 bypass",
    "tcp dport @tcp_ports counter queue num 5 bypass",
    "udp dport @udp_ports counter queue num 5 bypass",
];

#[test]
fn install_builds_every_set_the_chain_and_the_netdev_table() {
    let ns = Netns::new(NETNS_PREFIX, "install");
    ns.ip(&[
        "link", "add", "nft-a", "type", "veth", "peer", "name", "nft-b",
    ]);
    let expected_mode = if ns.has_native_queue() {
        QueueMode::Native
    } else {
        QueueMode::Compat
    };
    let mode = ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&["nft-a", "nft-b"]), None)
            .expect("install")
    });
    assert_eq!(mode, expected_mode);

    let objects = ns.nft_json(&["list", "table", "inet", TABLE]);
    let sets = sets(&objects);
    let names: Vec<&str> = sets.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "blocked_v4",
            "blocked_v6",
            "ignore_v4",
            "ignore_v6",
            "tcp_ports",
            "udp_ports"
        ]
    );
    for (name, key, flag) in [
        ("blocked_v4", "ipv4_addr", "timeout"),
        ("blocked_v6", "ipv6_addr", "timeout"),
        ("ignore_v4", "ipv4_addr", "interval"),
        ("ignore_v6", "ipv6_addr", "interval"),
        ("tcp_ports", "inet_service", "interval"),
        ("udp_ports", "inet_service", "interval"),
    ] {
        assert_eq!(sets[name]["type"], key, "{name}");
        assert_eq!(sets[name]["flags"], serde_json::json!([flag]), "{name}");
    }
    assert!(set_elements(&sets["blocked_v4"]).is_empty());
    assert!(set_elements(&sets["blocked_v6"]).is_empty());
    assert_eq!(
        set_elements(&sets["ignore_v4"]),
        ["127.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24"]
    );
    assert_eq!(set_elements(&sets["ignore_v6"]), ["::1", "2001:db8::/32"]);
    assert_eq!(set_elements(&sets["tcp_ports"]), ["1", "11", "32771-32774"]);
    assert_eq!(
        set_elements(&sets["udp_ports"]),
        ["7-9", "161-162", "65535"]
    );

    let chain = objects
        .iter()
        .find_map(|o| o.get("chain"))
        .expect("a chain");
    assert_eq!(chain["name"], "prerouting");
    assert_eq!(chain["type"], "filter");
    assert_eq!(chain["hook"], "prerouting");
    assert_eq!(chain["prio"], -150);
    assert_eq!(chain["policy"], "accept");
    assert_eq!(
        objects.iter().filter(|o| o.get("rule").is_some()).count(),
        15
    );

    let listing = ns.nft(&["list", "chain", "inet", TABLE, "prerouting"]);
    assert_eq!(rule_lines(&listing), EXPECTED_PREROUTING);

    let netdev = ns.nft_json(&["list", "table", "netdev", TABLE]);
    let chain = netdev
        .iter()
        .find_map(|o| o.get("chain"))
        .expect("a netdev chain");
    assert_eq!(chain["name"], "short_header");
    assert_eq!(chain["hook"], "ingress");
    assert_eq!(chain["prio"], -500);
    // nft 1.0.6 leaves a multi-device list out of its JSON; the text listing has it.
    let listing = ns.nft(&["list", "table", "netdev", TABLE]);
    let hook_line = listing
        .lines()
        .find(|line| line.contains("hook ingress"))
        .expect("hook line");
    assert!(
        hook_line.contains("devices = { nft-a, nft-b }"),
        "{hook_line}"
    );
    assert_eq!(
        rule_lines(&listing),
        ["ip hdrlength < 5 counter log group 7219"]
    );
}

#[test]
fn the_native_queue_is_reported_missing_with_errno_and_step() {
    let ns = Netns::new(NETNS_PREFIX, "native");
    if ns.has_native_queue() {
        eprintln!("this kernel has nft_queue; nothing to refuse");
        return;
    }
    let (forced_native, forced_compat) = ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        let native = nft.install(&spec(&[]), Some(QueueMode::Native));
        let compat = nft.install(&spec(&[]), Some(QueueMode::Compat));
        (native, compat)
    });
    let error = forced_native.expect_err("the native queue was accepted");
    match &error {
        NftError::Refused { errno, step, .. } => {
            assert_eq!(*errno, nix::errno::Errno::ENOENT);
            assert!(step.contains("queue num 5 bypass"), "{step}");
            assert!(step.starts_with("add rule 8 "), "{step}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The message names the errno, so a log line without the causes still has it.
    assert!(
        error.to_string().contains("No such file or directory"),
        "{error}"
    );
    assert_eq!(forced_compat.expect("compat install"), QueueMode::Compat);
}

/// Device names that `nft` would read as a keyword (`ip`) or as a number (`0wire`) must still
/// load from the rendered text, which quotes every device name.
#[test]
fn rendered_text_loads_with_keyword_like_device_names() {
    let ns = Netns::new(NETNS_PREFIX, "devnames");
    ns.ip(&["link", "add", "ip", "type", "veth", "peer", "name", "0wire"]);
    let mut text = render(&spec(&["ip", "0wire"]), QueueMode::Native);
    if !ns.has_native_queue() {
        text = text.replace(&format!("queue num {QUEUE} bypass"), "accept");
    }
    ns.nft_load(&text);
    let listing = ns.nft(&["list", "table", "netdev", TABLE]);
    let hook_line = listing
        .lines()
        .find(|line| line.contains("hook ingress"))
        .expect("hook line");
    let devices: Vec<&str> = hook_line
        .split_once("devices = { ")
        .and_then(|(_, rest)| rest.split_once(" }"))
        .map(|(list, _)| list.split(", ").collect())
        .unwrap_or_default();
    assert_eq!(
        devices
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        ["0wire", "ip"].into_iter().collect(),
        "{hook_line}"
    );
}

#[test]
fn reinstall_replaces_and_remove_deletes_both_tables() {
    let ns = Netns::new(NETNS_PREFIX, "replace");
    ns.ip(&[
        "link", "add", "nft-a", "type", "veth", "peer", "name", "nft-b",
    ]);
    // A table left over from a crash, with things the new ruleset does not have.
    ns.nft_load(&format!(
        "table inet {TABLE} {{\n\tchain stale {{ type filter hook input priority 0; counter drop; }}\n}}\n\
         table netdev {TABLE} {{\n}}\n"
    ));
    let second = RulesetSpec {
        tcp_ports: vec![(22, 23)],
        ingress_devices: vec![],
        ..spec(&[])
    };
    let (removed, removed_again) = ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&["nft-a"]), None).expect("first install");
        nft.block(TABLE, "192.0.2.77".parse().expect("address"), None)
            .expect("block");
        nft.install(&spec(&["nft-a"]), None)
            .expect("second install");
        assert_eq!(
            rule_lines(&ns.nft(&["list", "chain", "inet", TABLE, "prerouting"])),
            EXPECTED_PREROUTING,
            "re-install must not duplicate rules"
        );
        nft.install(&second, None).expect("third install");
        let listing = ns.nft(&["list", "table", "inet", TABLE]);
        assert!(!listing.contains("stale"), "{listing}");
        assert!(!listing.contains("192.0.2.77"), "{listing}");
        assert!(listing.contains("elements = { 22-23 }"), "{listing}");
        assert_eq!(listing.matches("counter").count(), 10, "{listing}");
        let tables = ns.nft(&["list", "tables"]);
        assert!(
            !tables.contains("netdev"),
            "no devices, no netdev table: {tables}"
        );

        nft.install(&spec(&["nft-a"]), None)
            .expect("fourth install");
        assert!(ns
            .nft(&["list", "tables"])
            .contains("table netdev nfsentry"));
        (nft.remove(TABLE), nft.remove(TABLE))
    });
    removed.expect("remove");
    removed_again.expect("remove when absent");
    assert_eq!(ns.nft(&["list", "tables"]).trim(), "");
}

/// Elements of a blocked set as (address, timeout in seconds).
fn blocked(ns: &Netns, set: &str) -> Vec<(String, Option<u64>)> {
    let objects = ns.nft_json(&["list", "set", "inet", TABLE, set]);
    let set = objects.iter().find_map(|o| o.get("set")).expect("the set");
    set.get("elem")
        .and_then(Value::as_array)
        .map(|elements| {
            elements
                .iter()
                .map(|element| match element.get("elem") {
                    Some(inner) => (value_text(&inner["val"]), inner["timeout"].as_u64()),
                    None => (value_text(element), None),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The addresses in a blocked set, without their timeouts.
fn blocked_addresses(ns: &Netns, set: &str) -> Vec<String> {
    blocked(ns, set).into_iter().map(|(addr, _)| addr).collect()
}

#[test]
fn block_and_release_read_back_from_the_sets() {
    let ns = Netns::new(NETNS_PREFIX, "block");
    let addr = |s: &str| -> IpAddr { s.parse().expect("address") };
    let hour = Some(Duration::from_secs(3600));
    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&[]), None).expect("install");
        nft.block(TABLE, addr("192.0.2.1"), None)
            .expect("v4 permanent");
        nft.block(TABLE, addr("198.51.100.2"), hour)
            .expect("v4 timed");
        // Re-blocking sets the new timeout, "none" included (kernel 6.18 updates timeouts).
        nft.block(TABLE, addr("2001:db8::1"), hour)
            .expect("v6 timed first");
        nft.block(TABLE, addr("2001:db8::1"), None)
            .expect("v6 then permanent");
        nft.block(TABLE, addr("2001:db8::2"), hour)
            .expect("v6 timed");
        // The same address again, with and without a timeout change: both fine.
        nft.block(TABLE, addr("192.0.2.1"), None)
            .expect("block twice");
        nft.block(TABLE, addr("198.51.100.2"), Some(Duration::from_secs(7200)))
            .expect("refresh");
        // An IPv4-mapped address lands in the IPv4 set.
        nft.block(TABLE, addr("::ffff:203.0.113.5"), None)
            .expect("mapped");
    });
    let mut v4 = blocked(&ns, "blocked_v4");
    v4.sort();
    assert_eq!(
        v4,
        [
            ("192.0.2.1".to_owned(), None),
            ("198.51.100.2".to_owned(), Some(7200)),
            ("203.0.113.5".to_owned(), None),
        ]
    );
    let mut v6 = blocked(&ns, "blocked_v6");
    v6.sort();
    assert_eq!(
        v6,
        [
            ("2001:db8::1".to_owned(), None),
            ("2001:db8::2".to_owned(), Some(3600)),
        ]
    );

    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.release(TABLE, addr("192.0.2.1")).expect("release");
        nft.release(TABLE, addr("192.0.2.1"))
            .expect("release twice");
        nft.release(TABLE, addr("192.0.2.200"))
            .expect("release never blocked");
        nft.release(TABLE, addr("2001:db8::2")).expect("release v6");
        // An element whose timeout ran out is gone for the kernel too.
        nft.block(TABLE, addr("192.0.2.9"), Some(Duration::from_millis(300)))
            .expect("short block");
        thread::sleep(Duration::from_millis(1200));
        nft.release(TABLE, addr("192.0.2.9"))
            .expect("release expired");
    });
    let v4: Vec<String> = blocked_addresses(&ns, "blocked_v4");
    assert_eq!(v4.len(), 2, "{v4:?}");
    assert!(v4.contains(&"198.51.100.2".to_owned()) && v4.contains(&"203.0.113.5".to_owned()));
    let v6: Vec<String> = blocked_addresses(&ns, "blocked_v6");
    assert_eq!(v6, ["2001:db8::1"]);
}

#[test]
fn an_install_with_blocks_reads_back_through_a_dump_with_each_time_left() {
    let ns = Netns::new(NETNS_PREFIX, "dump");
    let addr = |s: &str| -> IpAddr { s.parse().expect("address") };
    let hour = Duration::from_secs(3600);
    let mut nft = ns.enter(|| Nft::open().expect("open netlink"));
    assert_eq!(nft.set_elements(TABLE, "blocked_v4").expect("dump"), None);
    let blocks = [
        (addr("192.0.2.1"), None),
        (addr("192.0.2.2"), Some(hour)),
        (addr("2001:db8::1"), None),
    ];
    nft.install_with_blocks(&spec(&[]), None, &blocks)
        .expect("install with blocks");
    assert_eq!(
        blocked_addresses(&ns, "blocked_v4"),
        ["192.0.2.1", "192.0.2.2"]
    );

    let mut v4: Vec<(IpAddr, Option<Duration>)> = nft
        .set_elements(TABLE, "blocked_v4")
        .expect("dump")
        .expect("the set exists")
        .iter()
        .map(|element| (element.address().expect("an address"), element.remaining()))
        .collect();
    v4.sort();
    assert_eq!(v4[0], (addr("192.0.2.1"), None));
    assert_eq!(v4[1].0, addr("192.0.2.2"));
    let left = v4[1].1.expect("a timeout");
    assert!(
        left <= hour && left > hour - Duration::from_secs(60),
        "{left:?}"
    );
    let v6 = nft.set_elements(TABLE, "blocked_v6").expect("dump");
    assert_eq!(v6.map(|elements| elements.len()), Some(1));
    assert_eq!(nft.set_elements(TABLE, "no_such_set").expect("dump"), None);
}

/// Reads the watch until `count` changes arrived or a few seconds passed.
fn changes_seen(watch: &mut Watch, count: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.len() < count && Instant::now() < deadline {
        if let Ok(more) = watch.receive() {
            seen.extend(more);
        }
    }
    seen
}

#[test]
fn the_watch_hears_what_nft_deletes_and_not_what_nfsentry_changes() {
    let ns = Netns::new(NETNS_PREFIX, "watch");
    let addr = |s: &str| -> IpAddr { s.parse().expect("address") };
    let (mut nft, mut watch) = ns.enter(|| {
        (
            Nft::open().expect("open netlink"),
            Watch::open(TABLE, None).expect("join the nf_tables group"),
        )
    });
    let blocks = [(addr("192.0.2.1"), None), (addr("192.0.2.2"), None)];
    nft.install_with_blocks(&spec(&[]), None, &blocks)
        .expect("install");
    nft.release(TABLE, addr("192.0.2.2")).expect("release");
    ns.nft(&[
        "delete",
        "element",
        "inet",
        TABLE,
        "blocked_v4",
        "{ 192.0.2.1 }",
    ]);
    ns.nft(&["flush", "ruleset"]);

    let seen = changes_seen(&mut watch, 2);
    let changes: Vec<&ForeignChange> = seen
        .iter()
        .map(|seen| match seen {
            Seen::Changed(change) => change,
            Seen::Lost => panic!("notifications lost"),
        })
        .collect();
    let [hand, flush] = changes.as_slice() else {
        panic!("expected two changes, saw {seen:?}");
    };
    assert_ne!(hand.port, nft.port(), "{seen:?}");
    assert_eq!(hand.process.as_deref(), Some("nft"));
    assert_eq!(hand.removed, [addr("192.0.2.1")]);
    assert!(hand.damaged.is_empty());
    assert_eq!(flush.damaged, ["table inet nfsentry"]);
    // Nothing else: nfsentry's own install and release were passed over.
    assert!(changes_seen(&mut watch, 1).is_empty());
}

#[test]
fn release_many_removes_exactly_the_given_addresses_in_both_families() {
    let ns = Netns::new(NETNS_PREFIX, "relmany");
    let addr = |s: &str| -> IpAddr { s.parse().expect("address") };
    let blocked_now: Vec<(IpAddr, Option<Duration>)> = [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "2001:db8::1",
        "2001:db8::2",
    ]
    .iter()
    .map(|a| (addr(a), None))
    .collect();
    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&[]), None).expect("install");
        nft.block_many(TABLE, &blocked_now).expect("block_many");
        // An address that was never blocked must not spoil the batch.
        let release = [
            addr("192.0.2.1"),
            addr("192.0.2.3"),
            addr("2001:db8::2"),
            addr("192.0.2.250"),
        ];
        nft.release_many(TABLE, &release).expect("release_many");
        nft.release_many(TABLE, &release)
            .expect("release_many again");
    });
    let v4: Vec<String> = blocked_addresses(&ns, "blocked_v4");
    assert_eq!(v4, ["192.0.2.2"]);
    let v6: Vec<String> = blocked_addresses(&ns, "blocked_v6");
    assert_eq!(v6, ["2001:db8::1"]);
}

#[test]
fn block_without_the_table_is_refused_with_errno_and_step() {
    let ns = Netns::new(NETNS_PREFIX, "notable");
    let error = ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.block(TABLE, "192.0.2.1".parse().expect("address"), None)
            .expect_err("no table to add to")
    });
    match &error {
        NftError::Refused { errno, step, .. } => {
            assert_eq!(*errno, nix::errno::Errno::ENOENT);
            assert!(step.contains("inet nfsentry/blocked_v4"), "{step}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(error.errno(), Some(nix::errno::Errno::ENOENT));
}

#[test]
fn block_many_adds_ten_thousand_addresses_in_one_batch() {
    let ns = Netns::new(NETNS_PREFIX, "many");
    let entries: Vec<(IpAddr, Option<Duration>)> = (0u32..10_000)
        .map(|i| {
            let addr: IpAddr = if i % 2 == 0 {
                std::net::Ipv4Addr::from(0x0a00_0000 + i).into()
            } else {
                std::net::Ipv6Addr::from(
                    0x2001_0db8_0000_0000_0000_0000_0000_0000u128 + u128::from(i),
                )
                .into()
            };
            let timeout = (i % 3 == 0).then(|| Duration::from_secs(600));
            (addr, timeout)
        })
        .collect();
    let elapsed = ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&[]), None).expect("install");
        let started = Instant::now();
        nft.block_many(TABLE, &entries).expect("block_many");
        started.elapsed()
    });
    // All or nothing: a table with only an IPv4 set refuses the IPv6 half, and the IPv4 half
    // must not stay behind.
    ns.nft_load("table inet partial {\n\tset blocked_v4 { type ipv4_addr; flags timeout; }\n}\n");
    let refused = ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.block_many("partial", &entries[..10])
    });
    match refused {
        Err(NftError::Refused { step, .. }) => assert!(step.contains("blocked_v6"), "{step}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let partial = ns.nft(&["list", "set", "inet", "partial", "blocked_v4"]);
    assert!(!partial.contains("elements"), "{partial}");
    eprintln!("block_many of {} addresses took {elapsed:?}", entries.len());
    let v4 = blocked(&ns, "blocked_v4");
    let v6 = blocked(&ns, "blocked_v6");
    assert_eq!(v4.len(), 5_000);
    assert_eq!(v6.len(), 5_000);
    assert!(v4.contains(&("10.0.0.0".to_owned(), Some(600))));
    assert!(v4.contains(&("10.0.0.2".to_owned(), None)));
    assert!(v6.contains(&("2001:db8::3".to_owned(), Some(600))));
    assert!(v6.contains(&("2001:db8::270d".to_owned(), None)));
}

#[test]
fn netlink_ruleset_lists_like_the_rendered_text() {
    lists_like_the_rendered_text("via", spec(&["nft-a", "nft-b"]));
}

/// With `verify = "handshake"`: the jump to the handshake chain, that chain and the output
/// chain that keeps the replies untracked, byte for byte what `nft` makes of the text.
#[test]
fn handshake_chains_list_like_the_rendered_text() {
    let spec = RulesetSpec {
        reply_mark: Some(nfsentry::inject::REPLY_MARK),
        ..spec(&["nft-a", "nft-b"])
    };
    lists_like_the_rendered_text("hsvia", spec);
}

fn lists_like_the_rendered_text(tag: &str, spec: RulesetSpec) {
    let netlink_ns = Netns::new(NETNS_PREFIX, &format!("{tag}nl"));
    let text_ns = Netns::new(NETNS_PREFIX, &format!("{tag}text"));
    for ns in [&netlink_ns, &text_ns] {
        ns.ip(&[
            "link", "add", "nft-a", "type", "veth", "peer", "name", "nft-b",
        ]);
    }
    let mode = netlink_ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec, None).expect("install")
    });
    let queue = format!("queue num {QUEUE} bypass");
    let mut text = render(&spec, mode);
    if mode == QueueMode::Compat {
        // nft has no syntax for the compat target: load the rest and compare modulo queue.
        text = text.replace(&queue, "accept");
    }
    text_ns.nft_load(&text);
    for family in ["inet", "netdev"] {
        let via_netlink = netlink_ns
            .nft(&["list", "table", family, TABLE])
            .replace(&queue, "accept");
        let via_text = text_ns.nft(&["list", "table", family, TABLE]);
        assert_eq!(via_netlink, via_text, "{family} table differs");
        // The listing can hide differences in the byte code (an attribute nft ignores when
        // printing); `--debug=netlink` prints the expressions the kernel holds.
        let byte_code = |ns: &Netns| {
            ns.nft(&["--debug=netlink", "list", "table", family, TABLE])
                .replace(&queue, "accept")
                .replace(
                    "[ target name NFQUEUE rev 3 ]",
                    "[ immediate reg 0 accept ]",
                )
        };
        assert_eq!(
            byte_code(&netlink_ns),
            byte_code(&text_ns),
            "{family} byte code differs"
        );
    }
}

#[test]
fn blocked_sources_are_dropped_and_released_ones_pass() {
    let target = Netns::new(NETNS_PREFIX, "dptgt");
    let scanner = Netns::new(NETNS_PREFIX, "dpscan");
    target.add_veth("nft-t", &scanner, "nft-s");
    target.configure_link("nft-t", &["10.99.0.1/24"]);
    scanner.configure_link("nft-s", &["10.99.0.2/24"]);
    let scanner_addr: IpAddr = "10.99.0.2".parse().expect("address");
    // The listening socket stays in the target namespace after the thread that made it ends;
    // the kernel completes handshakes into its backlog without any accept().
    let listener = target.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&["nft-t"]), None).expect("install");
        TcpListener::bind("10.99.0.1:8080").expect("listen")
    });
    let connects = || {
        scanner.enter(|| {
            let service = "10.99.0.1:8080".parse().expect("socket address");
            TcpStream::connect_timeout(&service, Duration::from_millis(700)).is_ok()
        })
    };
    // The veth link needs a moment before the first packet passes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !connects() {
        assert!(
            Instant::now() < deadline,
            "an unblocked source must get through"
        );
    }
    // A watched port goes through the queue rule; with nobody reading the queue, bypass lets
    // the packet on and the closed port answers with a reset.
    let watched = scanner.enter(|| {
        let port = "10.99.0.1:11".parse().expect("socket address");
        TcpStream::connect_timeout(&port, Duration::from_millis(700)).map_err(|e| e.kind())
    });
    assert_eq!(watched.err(), Some(std::io::ErrorKind::ConnectionRefused));
    let listing = target.nft(&["list", "chain", "inet", TABLE, "prerouting"]);
    let queue_rule = listing
        .lines()
        .find(|line| line.contains("@tcp_ports"))
        .expect("queue rule");
    assert!(!queue_rule.contains("packets 0 "), "{queue_rule}");

    target.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.block(TABLE, scanner_addr, None).expect("block");
    });
    assert!(!connects(), "a blocked source must be dropped");
    let listing = target.nft(&["list", "chain", "inet", TABLE, "prerouting"]);
    let drop_rule = listing
        .lines()
        .find(|line| line.contains("@blocked_v4"))
        .expect("drop rule");
    assert!(!drop_rule.contains("packets 0 "), "{drop_rule}");
    target.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.release(TABLE, scanner_addr).expect("release");
    });
    assert!(connects(), "a released source must get through again");
    drop(listener);
}

/// Packets counted so far by the rule of `listing` that looks up `set`.
fn rule_packets(listing: &str, set: &str) -> u64 {
    packets_of_rule(listing, &format!("@{set} "))
}

/// Packets counted so far by the rule of `listing` whose text contains `part`.
fn packets_of_rule(listing: &str, part: &str) -> u64 {
    let line = listing
        .lines()
        .find(|line| line.contains(part))
        .unwrap_or_else(|| panic!("no rule with {part:?} in\n{listing}"));
    line.split_once(" packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {line:?}"))
}

/// Whether a connect from inside `ns` to `target` fails with `expected` within 5 s; retried,
/// since fresh veth links and neighbour entries take a moment.
fn connect_until(ns: &Netns, target: &str, expected: std::io::ErrorKind) -> bool {
    let target: std::net::SocketAddr = target.parse().expect("socket address");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let outcome = ns.enter(|| {
            TcpStream::connect_timeout(&target, Duration::from_millis(700)).map_err(|e| e.kind())
        });
        if outcome.as_ref().err() == Some(&expected) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[test]
fn a_router_queues_probes_of_itself_but_never_forwarded_traffic() {
    let client = Netns::new(NETNS_PREFIX, "fwcli");
    let router = Netns::new(NETNS_PREFIX, "fwrtr");
    let server = Netns::new(NETNS_PREFIX, "fwsrv");
    client.add_veth("fib-c", &router, "fib-rc");
    router.add_veth("fib-rs", &server, "fib-s");
    for (ns, device, v4, v6) in [
        (&client, "fib-c", "10.98.1.2/24", "2001:db8:1::2/64"),
        (&router, "fib-rc", "10.98.1.1/24", "2001:db8:1::1/64"),
        (&router, "fib-rs", "10.98.2.1/24", "2001:db8:2::1/64"),
        (&server, "fib-s", "10.98.2.2/24", "2001:db8:2::2/64"),
    ] {
        ns.configure_link(device, &[v4, v6]);
    }
    for (ns, v4_gateway, v6_gateway) in [
        (&client, "10.98.1.1", "2001:db8:1::1"),
        (&server, "10.98.2.1", "2001:db8:2::1"),
    ] {
        ns.ip(&["route", "add", "default", "via", v4_gateway]);
        ns.ip(&["-6", "route", "add", "default", "via", v6_gateway]);
    }
    for sysctl in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
        router.exec(&["sysctl", "-qw", sysctl]);
    }
    let router_spec = RulesetSpec {
        tcp_ports: vec![(111, 111)],
        // The test addresses sit in 2001:db8::/32, which `spec` ignores.
        ignore_v6: vec!["::1/128".parse().expect("test CIDR")],
        ..spec(&[])
    };
    router.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&router_spec, None).expect("install")
    });
    let queued = || {
        rule_packets(
            &router.nft(&["list", "chain", "inet", TABLE, "prerouting"]),
            "tcp_ports",
        )
    };
    assert_eq!(queued(), 0);

    // Port 111 of the server, through the router: the server's reset proves the SYN was
    // forwarded, and the router's queue rule must not have seen it.
    use std::io::ErrorKind::ConnectionRefused;
    for server_port in ["10.98.2.2:111", "[2001:db8:2::2]:111"] {
        assert!(
            connect_until(&client, server_port, ConnectionRefused),
            "the server's closed port {server_port} must answer through the router"
        );
    }
    assert_eq!(queued(), 0, "forwarded SYNs reached the queue rule");

    // The same port of the router itself is a probe of this host: queued (bypass lets it on
    // to the closed port, which resets it) and counted.
    assert!(connect_until(&client, "10.98.1.1:111", ConnectionRefused));
    let after_v4 = queued();
    assert!(
        after_v4 >= 1,
        "a SYN to the router's own port must be queued"
    );
    assert!(connect_until(
        &client,
        "[2001:db8:1::1]:111",
        ConnectionRefused
    ));
    assert!(
        queued() > after_v4,
        "an IPv6 SYN to the router's own port must be queued"
    );
}

/// The MAC address of `link` in `ns`, for sending frames to it.
fn link_mac(ns: &Netns, link: &str) -> String {
    let links: Value = serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", link]))
        .expect("ip -j prints JSON");
    links[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address for {link} in {links}"))
        .to_owned()
}

/// One counter of the namespace's IPv6 statistics (/proc/net/snmp6).
fn ipv6_statistic(ns: &Netns, name: &str) -> u64 {
    ns.exec(&["cat", "/proc/net/snmp6"])
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(char::is_whitespace)?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp6"))
}

#[test]
fn routing_header_packets_reach_the_queue_rule_before_the_kernel_discards_them() {
    let target = Netns::new(NETNS_PREFIX, "rttgt");
    let scanner = Netns::new(NETNS_PREFIX, "rtscan");
    target.add_veth("rthdr-t", &scanner, "rthdr-s");
    target.configure_link("rthdr-t", &["2001:db8:5::1/64"]);
    scanner.configure_link("rthdr-s", &["2001:db8:5::2/64"]);
    let target_spec = RulesetSpec {
        // `spec` ignores 2001:db8::/32, where these addresses sit.
        ignore_v6: vec!["::1/128".parse().expect("test CIDR")],
        ..spec(&[])
    };
    target.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&target_spec, None).expect("install")
    });
    let mac = link_mac(&target, "rthdr-t");
    let send = |packet: &str| {
        let script = format!(
            "from scapy.all import *\n\
             conf.verb = 0\n\
             ip = IPv6(src='2001:db8:5::2', dst='2001:db8:5::1')\n\
             sendp(Ether(dst={mac:?}) / ip / {packet}, iface='rthdr-s')\n"
        );
        scanner.exec(&["/usr/bin/python3", "-c", &script]);
    };
    // (packets of the routing header rule, packets of the watched TCP port rule)
    let counts = || {
        let listing = target.nft(&["list", "chain", "inet", TABLE, "prerouting"]);
        (
            packets_of_rule(&listing, "exthdr rt exists"),
            rule_packets(&listing, "tcp_ports"),
        )
    };
    let wait_for_routed = |expected: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while counts().0 < expected {
            assert!(Instant::now() < deadline, "{what}: counters {:?}", counts());
            thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(counts().0, expected, "{what}");
    };

    // A plain SYN to a watched port proves the link carries frames, and must not count as a
    // routing header.
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts().1 == 0 {
        assert!(
            Instant::now() < deadline,
            "plain SYNs never reached prerouting"
        );
        send("TCP(sport=40300, dport=11, flags='S')");
        thread::sleep(Duration::from_millis(100));
    }
    let (routed, watched) = counts();
    assert_eq!(
        routed, 0,
        "an IPv6 packet without a routing header was matched"
    );

    let header_errors = ipv6_statistic(&target, "Ip6InHdrErrors");
    // Port 80 is neither watched nor in use: only the routing header rule can pick it up.
    send("IPv6ExtHdrRouting(addresses=['2001:db8:99::1']) / TCP(sport=40301, dport=80, flags='S')");
    wait_for_routed(1, "a type 0 routing header must be counted");
    assert_eq!(counts().1, watched);
    // The kernel refuses type 0 only at local delivery: prerouting saw the packet first.
    assert_eq!(ipv6_statistic(&target, "Ip6InHdrErrors"), header_errors + 1);

    send("IPv6ExtHdrSegmentRouting(addresses=['2001:db8:99::1']) / UDP(sport=40302, dport=80)");
    wait_for_routed(2, "a segment routing header (type 4) must be counted");
}

fn range_elements(ns: &Netns, set: &str) -> Vec<String> {
    let objects = ns.nft_json(&["list", "set", "inet", TABLE, set]);
    sets(&objects)
        .get(set)
        .map(set_elements)
        .unwrap_or_default()
}

#[test]
fn range_sets_exist_only_when_asked_and_take_overlapping_networks_merged() {
    let ns = Netns::new(NETNS_PREFIX, "ranges");
    let nets = |list: &[&str]| -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().expect("net")).collect()
    };
    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.install(&spec(&[]), None).expect("install");
    });
    let plain = ns.nft_json(&["list", "table", "inet", TABLE]);
    assert!(!sets(&plain).contains_key("blocked_ranges_v4"));

    let first = nets(&["198.51.100.0/24", "198.51.100.0/25", "2001:db8:7::/48"]);
    let second = nets(&["198.51.100.0/25", "203.0.113.0/24", "2001:db8:7::/48"]);
    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        let ranged = RulesetSpec {
            blocked_ranges: true,
            ..spec(&[])
        };
        nft.install(&ranged, None).expect("install with ranges");
        nft.replace_ranges(TABLE, &[], &first).expect("first");
    });
    assert_eq!(
        range_elements(&ns, "blocked_ranges_v4"),
        ["198.51.100.0/24"]
    );
    assert_eq!(
        range_elements(&ns, "blocked_ranges_v6"),
        ["2001:db8:7::/48"]
    );
    let listing = ns.nft(&["list", "chain", "inet", TABLE, "prerouting"]);
    let rules = rule_lines(&listing);
    assert_eq!(rules[2], "ip saddr @blocked_ranges_v4 counter drop");
    assert_eq!(rules[3], "ip6 saddr @blocked_ranges_v6 counter drop");

    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.replace_ranges(TABLE, &first, &second).expect("second");
    });
    assert_eq!(
        range_elements(&ns, "blocked_ranges_v4"),
        ["198.51.100.0/25", "203.0.113.0/24"]
    );
    assert_eq!(
        range_elements(&ns, "blocked_ranges_v6"),
        ["2001:db8:7::/48"]
    );
    ns.enter(|| {
        let mut nft = Nft::open().expect("open netlink");
        nft.replace_ranges(TABLE, &second, &[]).expect("empty");
    });
    assert!(range_elements(&ns, "blocked_ranges_v4").is_empty());
    assert!(range_elements(&ns, "blocked_ranges_v6").is_empty());
}
