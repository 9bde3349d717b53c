//! Tests of the whole loading path: defaults, the shipped examples, every class of error with
//! its file, line, key and value, port arithmetic and the ignore file.

use std::error::Error as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const FILE: &str = "/tmp/x.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new(FILE))
}

/// The config, or the test fails showing the error's own text.
fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(error) => panic!("expected {text:?} to load, got: {error}"),
    }
}

/// The error's one-line display, or the test fails if the text loaded.
fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected {text:?} to fail, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn net(text: &str) -> IpNet {
    match text.parse() {
        Ok(network) => network,
        Err(error) => panic!("test network {text:?}: {error}"),
    }
}

fn without_origin(mut config: Config) -> Config {
    config.origin = Origin::Defaults;
    config
}

fn shipped_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// A directory removed when the test ends, pass or fail.
struct ConfigDir(tempfile::TempDir);

impl ConfigDir {
    fn new() -> ConfigDir {
        ConfigDir(tempfile::tempdir().unwrap_or_else(|error| panic!("scratch directory: {error}")))
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.join(name);
        if let Err(error) = fs::write(&path, contents) {
            panic!("writing {}: {error}", path.display());
        }
        path
    }
}

// ---------------------------------------------------------------- defaults and examples

#[test]
fn defaults_have_the_documented_values() {
    let config = Config::defaults();
    assert_eq!(config.origin, Origin::Defaults);
    assert_eq!(config.daemon.queue, QueueRange::single(0));
    assert_eq!(config.daemon.table, "nfsentry");
    assert_eq!(config.daemon.state_dir, PathBuf::from("/var/lib/nfsentry"));
    assert_eq!(config.daemon.log, LogTarget::Stderr);
    assert!(config.daemon.interfaces.is_empty());
    assert_eq!(config.daemon.nflog_group, 7219);
    assert_eq!(config.daemon.queue_mode, None, "auto");
    assert_eq!(config.monitor.tcp.len(), 26);
    assert_eq!(config.monitor.udp.len(), 21);
    assert!(config.monitor.tcp.contains(31337) && config.monitor.tcp.contains(54320));
    assert!(config.monitor.udp.contains(37444) && !config.monitor.udp.contains(113));
    assert!(
        !config.monitor.tcp.contains(113),
        "excludes alone add nothing"
    );
    assert_eq!(config.detect.scan_trigger, 0);
    assert_eq!(config.detect.window, Duration::from_secs(600));
    assert_eq!(
        config.detect.ignore,
        vec![net("127.0.0.0/8"), net("::1/128")]
    );
    assert_eq!(config.detect.max_sources, 65_536);
    assert_eq!(config.detect.verify, Verify::Off);
    assert_eq!(config.respond.verdict, Verdict::Drop);
    assert_eq!(config.respond.block_timeout, None);
    assert_eq!(
        config.respond.unverified_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.respond.max_blocks, 65_536);
    assert_eq!(config.respond.max_blocks_per_sec, 50);
    assert_eq!(config.respond.actions, vec![ActionKind::NftSet]);
    assert_eq!(config.respond.hosts_deny, PathBuf::from("/etc/hosts.deny"));
    assert_eq!(config.respond.hosts_deny_line, "ALL: $TARGET$");
    assert_eq!(config.respond.route, RouteTarget::Blackhole);
    assert!(config.respond.command.is_empty());
    assert!(!config.respond.command_first);
    assert_eq!(config.respond.command_timeout, Duration::from_secs(10));
    assert_eq!(config.respond.ipfilter_interface, None);
    assert_eq!(config.respond.port_banner, None);
}

#[test]
fn empty_file_is_the_defaults() {
    let config = parse_ok("");
    assert_eq!(config.origin, Origin::File(PathBuf::from(FILE)));
    assert_eq!(without_origin(config), Config::defaults());
    assert_eq!(
        without_origin(parse_ok("[daemon]\n[monitor]\n[detect]\n[respond]\n")),
        Config::defaults()
    );
}

#[test]
fn shipped_example_is_exactly_the_defaults() {
    let path = shipped_config_dir().join("nfsentry.toml");
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(config.origin, Origin::File(path));
    assert_eq!(without_origin(config), Config::defaults());
}

/// The key names are a contract with admins; the example must show each one.
#[test]
fn shipped_example_sets_every_key() {
    let contract: [(&str, &[&str]); 4] = [
        (
            "daemon",
            &[
                "queue",
                "table",
                "state_dir",
                "control_socket",
                "log",
                "interfaces",
                "nflog_group",
                "queue_mode",
                "history_max_bytes",
                "keep_blocks_on_exit",
            ],
        ),
        (
            "monitor",
            &[
                "tcp_ports",
                "udp_ports",
                "advanced_tcp",
                "advanced_udp",
                "exclude_tcp",
                "exclude_udp",
            ],
        ),
        (
            "detect",
            &[
                "scan_trigger",
                "window",
                "ignore",
                "ignore_file",
                "max_sources",
                "verify",
            ],
        ),
        (
            "respond",
            &[
                "verdict",
                "block_timeout",
                "unverified_timeout",
                "max_blocks",
                "max_blocks_per_sec",
                "actions",
                "hosts_deny",
                "hosts_deny_line",
                "route",
                "command",
                "command_first",
                "command_timeout",
                "ipfilter_interface",
                "port_banner",
                "blocked_table",
            ],
        ),
    ];
    let text = read_text(&shipped_config_dir().join("nfsentry.toml"));
    let text = text.map_err(|error| error.to_string());
    let table: Result<toml::Table, String> = text
        .and_then(|text| toml::from_str(&text).map_err(|error: toml::de::Error| error.to_string()));
    let table = match table {
        Ok(table) => table,
        Err(error) => panic!("{error}"),
    };
    let mut sections: Vec<&String> = table.keys().collect();
    sections.sort();
    let mut expected_sections: Vec<&str> = contract.iter().map(|(name, _)| *name).collect();
    expected_sections.sort();
    assert_eq!(sections, expected_sections);
    for (section, keys) in contract {
        let present = table.get(section).and_then(toml::Value::as_table);
        let mut present: Vec<&str> = present
            .map(|keys| keys.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut keys = keys.to_vec();
        present.sort_unstable();
        keys.sort_unstable();
        assert_eq!(present, keys, "[{section}]");
    }
}

/// Every file shipped under config/ must load, so the examples cannot rot.
#[test]
fn every_shipped_config_file_parses() {
    let entries = match fs::read_dir(shipped_config_dir()) {
        Ok(entries) => entries,
        Err(error) => panic!("config/: {error}"),
    };
    let mut checked = 0;
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(error) => panic!("config/: {error}"),
        };
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.ends_with(".toml") {
            if let Err(error) = Config::load(&path) {
                panic!("{error}");
            }
        } else if name.starts_with("ignore") {
            let text = match read_text(&path) {
                Ok(text) => text,
                Err(error) => panic!("{error}"),
            };
            match parse_ignore_list(&text, &path) {
                Ok(entries) => assert!(!entries.is_empty(), "{name} shows no entry"),
                Err(error) => panic!("{error}"),
            }
        } else {
            panic!("config/{name}: no test knows how to check this file; add one");
        }
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} files under config/");
}

#[test]
fn summary_line() {
    assert_eq!(
        parse_ok("").summary(),
        "/tmp/x.toml: 26 TCP and 21 UDP ports watched, trigger 0, window 10m, 2 ignore ranges, \
         actions nft-set, verdict drop, block_timeout forever, queue 0, table nfsentry"
    );
    let config = parse_ok(
        "[daemon]\nqueue = 3\ntable = \"t1\"\n[monitor]\ntcp_ports = [\"1-10\"]\nudp_ports = []\n\
         [detect]\nscan_trigger = 2\nwindow = 5400\nignore = [\"192.0.2.1\"]\n\
         [respond]\nverdict = \"accept\"\nblock_timeout = \"1d12h\"\nactions = [\"route\", \"hosts-deny\"]\n",
    );
    assert_eq!(
        config.summary(),
        "/tmp/x.toml: 10 TCP and 0 UDP ports watched, trigger 2, window 1h30m, 1 ignore range, \
         actions route,hosts-deny, verdict accept, block_timeout 1d12h, queue 3, table t1"
    );
    assert!(Config::defaults()
        .summary()
        .starts_with("built-in defaults: 26 TCP"));
    let alert_only = parse_ok("[respond]\nactions = []\n");
    assert!(alert_only.summary().contains("actions none (alert only),"));
}

// ---------------------------------------------------------------- values that load

#[test]
fn every_key_set_to_a_non_default_value() {
    let config = parse_ok(
        r#"
[daemon]
queue = 65535
table = "fw-Sentry_2"
state_dir = "/run/nfsentry"
log = "file:/var/log/nfsentry.log"
interfaces = ["eth0", "wlp2s0", "br-lan.10"]
nflog_group = 0
queue_mode = "compat"
history_max_bytes = 4096

[monitor]
tcp_ports = [22]
udp_ports = ["5000-5002"]
advanced_tcp = 0
advanced_udp = 0
exclude_tcp = []
exclude_udp = []

[detect]
scan_trigger = 4294967295
window = "1h30m"
ignore = ["192.0.2.7/24", "2001:db8::1"]
ignore_file = ""
max_sources = 16777216

[respond]
verdict = "accept"
block_timeout = 3600
max_blocks = 1
actions = ["command", "ipfilter", "route", "hosts-deny", "nft-set", "iptables", "ipchains", "ipfwadm", "ipfw"]
hosts_deny = "/etc/hosts.evil"
hosts_deny_line = "ALL: $TARGET$ : DENY"
route = "2001:db8::dead"
command = ["/usr/local/sbin/notify-admin", "$TARGET$", "$PORT$", "$MODE$"]
command_first = true
command_timeout = "250ms"
ipfilter_interface = "em0"
port_banner = "** UNAUTHORIZED ACCESS PROHIBITED **"
"#,
    );
    assert_eq!(config.daemon.queue, QueueRange::single(65535));
    assert_eq!(config.daemon.table, "fw-Sentry_2");
    assert_eq!(config.daemon.state_dir, PathBuf::from("/run/nfsentry"));
    assert_eq!(
        config.daemon.log,
        LogTarget::File(PathBuf::from("/var/log/nfsentry.log"))
    );
    assert_eq!(config.daemon.interfaces, ["eth0", "wlp2s0", "br-lan.10"]);
    assert_eq!(config.daemon.nflog_group, 0);
    assert_eq!(config.daemon.queue_mode, Some(QueueMode::Compat));
    assert_eq!(config.daemon.history_max_bytes, 4096);
    assert_eq!(config.monitor.tcp.iter().collect::<Vec<_>>(), [22]);
    assert_eq!(
        config.monitor.udp.iter().collect::<Vec<_>>(),
        [5000, 5001, 5002]
    );
    assert_eq!(config.detect.scan_trigger, u32::MAX);
    assert_eq!(config.detect.window, Duration::from_secs(5400));
    assert_eq!(
        config.detect.ignore,
        [net("192.0.2.0/24"), net("2001:db8::1/128")]
    );
    assert_eq!(config.detect.max_sources, 16 * 1024 * 1024);
    assert_eq!(config.respond.verdict, Verdict::Accept);
    assert_eq!(
        config.respond.block_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.respond.max_blocks, 1);
    assert_eq!(
        config.respond.actions,
        [
            ActionKind::Command,
            ActionKind::Ipfilter,
            ActionKind::Route,
            ActionKind::HostsDeny,
            ActionKind::NftSet,
            ActionKind::Iptables,
            ActionKind::Ipchains,
            ActionKind::Ipfwadm,
            ActionKind::Ipfw
        ]
    );
    assert_eq!(config.respond.hosts_deny, PathBuf::from("/etc/hosts.evil"));
    assert_eq!(config.respond.hosts_deny_line, "ALL: $TARGET$ : DENY");
    assert_eq!(
        config.respond.route,
        RouteTarget::Gateway("2001:db8::dead".parse().unwrap_or(IpAddr::from([0; 4])))
    );
    assert_eq!(config.respond.route.to_string(), "2001:db8::dead");
    assert_eq!(
        config.respond.command,
        [
            "/usr/local/sbin/notify-admin",
            "$TARGET$",
            "$PORT$",
            "$MODE$"
        ]
    );
    assert!(config.respond.command_first);
    assert_eq!(config.respond.command_timeout, Duration::from_millis(250));
    assert_eq!(config.respond.ipfilter_interface.as_deref(), Some("em0"));
    assert_eq!(
        config.respond.port_banner.as_deref(),
        Some("** UNAUTHORIZED ACCESS PROHIBITED **")
    );
}

#[test]
fn action_words_round_trip_through_display() {
    for action in ActionKind::ALL {
        let config = parse_ok(&format!(
            "[respond]\nactions = [\"{action}\"]\ncommand = [\"/bin/true\"]\n"
        ));
        assert_eq!(config.respond.actions, [*action]);
    }
    assert_eq!(ActionKind::NftSet.to_string(), "nft-set");
    assert_eq!(ActionKind::HostsDeny.to_string(), "hosts-deny");
}

#[test]
fn log_targets_and_queue_modes() {
    let log = |value: &str| parse(&format!("[daemon]\nlog = {value:?}\n")).map(|c| c.daemon.log);
    assert_eq!(
        log("syslog").ok(),
        Some(LogTarget::Syslog(PathBuf::from("/dev/log")))
    );
    assert_eq!(
        log("syslog:/run/test/log.sock").ok(),
        Some(LogTarget::Syslog(PathBuf::from("/run/test/log.sock")))
    );
    // The default socket displays as the plain word, so a summary reads as the file was written.
    assert_eq!(
        LogTarget::Syslog(PathBuf::from("/dev/log")).to_string(),
        "syslog"
    );
    assert_eq!(
        LogTarget::Syslog(PathBuf::from("/run/test/log.sock")).to_string(),
        "syslog:/run/test/log.sock"
    );
    assert_eq!(log("stderr").ok(), Some(LogTarget::Stderr));
    assert_eq!(
        log("file:/var/log/x").ok(),
        Some(LogTarget::File(PathBuf::from("/var/log/x")))
    );
    assert_eq!(
        LogTarget::File(PathBuf::from("/var/log/x")).to_string(),
        "file:/var/log/x"
    );
    for (word, mode) in [
        ("auto", None),
        ("native", Some(QueueMode::Native)),
        ("compat", Some(QueueMode::Compat)),
    ] {
        let config = parse_ok(&format!("[daemon]\nqueue_mode = \"{word}\"\n"));
        assert_eq!(config.daemon.queue_mode, mode);
    }
}

#[test]
fn durations_as_strings_and_integers() {
    let window = |value: &str| {
        parse(&format!("[detect]\nwindow = {value}\n")).map(|config| config.detect.window)
    };
    assert_eq!(window("\"90s\"").ok(), Some(Duration::from_secs(90)));
    assert_eq!(window("\"7d\"").ok(), Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(window("\"250ms\"").ok(), Some(Duration::from_millis(250)));
    assert_eq!(window("45").ok(), Some(Duration::from_secs(45)));
    let timeout = |value: &str| {
        parse(&format!("[respond]\nblock_timeout = {value}\n"))
            .map(|config| config.respond.block_timeout)
    };
    assert_eq!(timeout("\"0\"").ok(), Some(None));
    assert_eq!(timeout("0").ok(), Some(None));
    assert_eq!(
        timeout("\"24h\"").ok(),
        Some(Some(Duration::from_secs(86_400)))
    );
}

// ---------------------------------------------------------------- ports

#[test]
fn port_lists_take_numbers_and_ranges() {
    let config = parse_ok("[monitor]\ntcp_ports = [1, 11, \"32771-32774\", \"80\", 11]\n");
    assert_eq!(
        config.monitor.tcp.iter().collect::<Vec<_>>(),
        [1, 11, 80, 32771, 32772, 32773, 32774]
    );
    assert_eq!(
        config.monitor.tcp.ranges().collect::<Vec<_>>(),
        [(1, 1), (11, 11), (80, 80), (32771, 32774)]
    );
    assert_eq!(config.monitor.udp.len(), 21, "udp keeps its default");
}

#[test]
fn advanced_mode_adds_the_range_minus_excludes() {
    let config = parse_ok(
        "[monitor]\ntcp_ports = [113, 5000]\nadvanced_tcp = 1024\nexclude_tcp = [113, 139]\n",
    );
    let tcp = &config.monitor.tcp;
    // 1..=1023 is 1023 ports; 139 is excluded; 113 is excluded from the range but listed.
    assert_eq!(tcp.len(), 1023 - 1 + 1);
    assert!(tcp.contains(1) && tcp.contains(1023) && tcp.contains(5000));
    assert!(tcp.contains(113), "a listed port beats an exclude");
    assert!(!tcp.contains(139));
    assert!(!tcp.contains(0) && !tcp.contains(1024));
    assert_eq!(
        tcp.ranges().collect::<Vec<_>>(),
        [(1, 138), (140, 1023), (5000, 5000)]
    );
}

#[test]
fn advanced_mode_uses_the_default_excludes() {
    let config = parse_ok("[monitor]\nudp_ports = []\nadvanced_udp = 1024\n");
    let udp = &config.monitor.udp;
    assert_eq!(udp.len(), 1023 - 4);
    for excluded in [520, 138, 137, 67] {
        assert!(!udp.contains(excluded), "{excluded}");
    }
    assert!(udp.contains(68) && udp.contains(519) && udp.contains(521));
}

#[test]
fn advanced_mode_edges() {
    let tcp = |advanced: u32| {
        parse(&format!(
            "[monitor]\ntcp_ports = []\nexclude_tcp = []\nadvanced_tcp = {advanced}\n"
        ))
        .map(|config| config.monitor.tcp)
    };
    assert_eq!(tcp(0).map(|set| set.len()).ok(), Some(0));
    assert_eq!(tcp(1).map(|set| set.len()).ok(), Some(0), "1..1 is empty");
    assert_eq!(
        tcp(2).map(|set| set.iter().collect::<Vec<_>>()).ok(),
        Some(vec![1])
    );
    let every = tcp(65536).map(|set| set.ranges().collect::<Vec<_>>()).ok();
    assert_eq!(
        every,
        Some(vec![(1, 65535)]),
        "65536 watches every port but 0"
    );
    assert_eq!(
        parse_err("[monitor]\nadvanced_tcp = 65537\n"),
        "/tmp/x.toml:2: monitor.advanced_tcp: \"65537\" is out of range (0-65536: 0 is off, \
         N watches ports 1 to N-1, 65536 every port)"
    );
    assert_eq!(
        parse_err("[monitor]\nadvanced_udp = -1\n"),
        "/tmp/x.toml:2: monitor.advanced_udp: \"-1\" is out of range (0-65536: 0 is off, \
         N watches ports 1 to N-1, 65536 every port)"
    );
}

// ---------------------------------------------------------------- errors

/// One representative of each error class, with the exact line each must produce.
#[test]
fn every_error_names_file_line_key_and_value() {
    let cases: &[(&str, &str)] = &[
        (
            "[daemon]\nqueue = 1\n[respond]\nverdic = \"drop\"\n",
            "/tmp/x.toml:4: unknown key \"verdic\" in [respond] (expected one of: verdict, \
             block_timeout, max_blocks, actions, hosts_deny, hosts_deny_line, route, command, \
             command_first, command_timeout, ipfilter_interface, port_banner, unverified_timeout, \
             max_blocks_per_sec, blocked_table)",
        ),
        (
            "\n[deamon]\nqueue = 1\n",
            "/tmp/x.toml:2: unknown key \"deamon\" at the top level (expected one of: daemon, \
             monitor, detect, respond, crowdsec)",
        ),
        (
            "respond.verdic = 1\n",
            "/tmp/x.toml:1: unknown key \"verdic\" in [respond] (expected one of: verdict, \
             block_timeout, max_blocks, actions, hosts_deny, hosts_deny_line, route, command, \
             command_first, command_timeout, ipfilter_interface, port_banner, unverified_timeout, \
             max_blocks_per_sec, blocked_table)",
        ),
        (
            "detect = { window = \"1m\", widow = 3 }\n",
            "/tmp/x.toml:1: unknown key \"widow\" in [detect] (expected one of: scan_trigger, \
             window, ignore, ignore_file, max_sources, verify)",
        ),
        (
            "[daemon]\nqueue = \"abc\"\n",
            "/tmp/x.toml:2: daemon.queue: \"abc\" is not a queue number or range (0-65535, or \
             \"first-last\" such as \"0-3\")",
        ),
        (
            "[daemon]\nqueue = \"70000\"\n",
            "/tmp/x.toml:2: daemon.queue: \"70000\" is not a queue number or range (0-65535, or \
             \"first-last\" such as \"0-3\")",
        ),
        (
            "[daemon]\n\nqueue = \"3-1\"\n",
            "/tmp/x.toml:3: daemon.queue: \"3-1\" is not a queue range: its first queue 3 is \
             after its last 1",
        ),
        (
            "[daemon]\nqueue = \"0-16\"\n",
            "/tmp/x.toml:2: daemon.queue: \"0-16\" spans 17 queues; at most 16 are read",
        ),
        (
            "[daemon]\nqueue = \"65535-65536\"\n",
            "/tmp/x.toml:2: daemon.queue: \"65535-65536\" is not a queue number or range \
             (0-65535, or \"first-last\" such as \"0-3\")",
        ),
        (
            "[daemon]\nqueue = [0, 3]\n",
            "/tmp/x.toml:2: daemon.queue: \"[0, 3]\" is an array, expected a queue number or a \
             \"first-last\" range string",
        ),
        (
            "[respond]\ncommand_first = 1\n",
            "/tmp/x.toml:2: respond.command_first: \"1\" is an integer, expected a boolean",
        ),
        (
            "[daemon]\ninterfaces = \"eth0\"\n",
            "/tmp/x.toml:2: daemon.interfaces: \"eth0\" is a string, expected an array",
        ),
        (
            "[[daemon]]\nqueue = 1\n",
            "/tmp/x.toml:1: daemon: \"[[daemon]]\" is an array, expected a table",
        ),
        (
            "[daemon]\nqueue = 1979-05-27\n",
            "/tmp/x.toml:2: daemon.queue: \"1979-05-27\" is a date-time, expected a queue \
             number or a \"first-last\" range string",
        ),
        (
            "[detect]\nignore = [\"192.0.2.1\", 3]\n",
            "/tmp/x.toml:2: detect.ignore: \"3\" is an integer, expected a string",
        ),
        (
            "[respond.extra]\nx = 1\n",
            "/tmp/x.toml:1: unknown key \"extra\" in [respond] (expected one of: verdict, \
             block_timeout, max_blocks, actions, hosts_deny, hosts_deny_line, route, command, \
             command_first, command_timeout, ipfilter_interface, port_banner, unverified_timeout, \
             max_blocks_per_sec, blocked_table)",
        ),
        (
            "daemon = 3\n",
            "/tmp/x.toml:1: daemon: \"3\" is an integer, expected a table",
        ),
        (
            "[detect]\nwindow = 1.5\n",
            "/tmp/x.toml:2: detect.window: \"1.5\" is a float, expected a duration such as \
             \"10m\" or a number of seconds",
        ),
        (
            "[daemon]\nqueue = 99999999999999999999\n",
            "/tmp/x.toml:2: daemon.queue: \"99999999999999999999\" is too large",
        ),
        (
            "[monitor]\ntcp_ports = [\n  1,\n  true,\n]\n",
            "/tmp/x.toml:4: monitor.tcp_ports: \"true\" is a boolean, expected a port number or \
             a \"first-last\" range string",
        ),
        (
            "[monitor]\ntcp_ports = [1, 0]\n",
            "/tmp/x.toml:2: monitor.tcp_ports: \"0\" is not a port (1-65535)",
        ),
        (
            "[monitor]\ntcp_ports = [\n  1,\n  70000,\n]\n",
            "/tmp/x.toml:4: monitor.tcp_ports: \"70000\" is not a port (1-65535)",
        ),
        (
            "[monitor]\ntcp_ports = [\"70000\"]\n",
            "/tmp/x.toml:2: monitor.tcp_ports: \"70000\" is not a port (1-65535)",
        ),
        (
            "[monitor]\nudp_ports = [\"9-3\"]\n",
            "/tmp/x.toml:2: monitor.udp_ports: \"9-3\" is not a port range (first port 9 is \
             above last port 3)",
        ),
        (
            "[monitor]\nexclude_udp = [\"1-65536\"]\n",
            "/tmp/x.toml:2: monitor.exclude_udp: \"1-65536\" is not a port range (both ends \
             must be ports, 1-65535)",
        ),
        (
            "[monitor]\nexclude_tcp = [\"ssh\"]\n",
            "/tmp/x.toml:2: monitor.exclude_tcp: \"ssh\" is neither a port nor a \"first-last\" \
             range",
        ),
        (
            "[detect]\nignore = [\"192.0.2.0/24\",\n  \"10.0.0.0/33\"]\n",
            "/tmp/x.toml:3: detect.ignore: \"10.0.0.0/33\" is not an IP address or CIDR (e.g. \
             \"192.0.2.7\", \"198.51.100.0/24\", \"2001:db8::/32\")",
        ),
        (
            "[detect]\nwindow = \"10 parsecs\"\n",
            "/tmp/x.toml:2: detect.window: \"10 parsecs\" is not a duration (unknown unit \
             \" parsecs\"; use d, h, m, s, ms, us or ns)",
        ),
        (
            "[detect]\nwindow = \"0\"\n",
            "/tmp/x.toml:2: detect.window: \"0\" must be longer than zero",
        ),
        (
            "[detect]\nwindow = 0\n",
            "/tmp/x.toml:2: detect.window: \"0\" must be longer than zero",
        ),
        (
            "[respond]\ncommand_timeout = \"0s\"\n",
            "/tmp/x.toml:2: respond.command_timeout: \"0s\" must be longer than zero",
        ),
        (
            "[respond]\nblock_timeout = -5\n",
            "/tmp/x.toml:2: respond.block_timeout: \"-5\" is not a duration (a number of \
             seconds cannot be negative)",
        ),
        (
            "[respond]\nblock_timeout = \"30m1h\"\n",
            "/tmp/x.toml:2: respond.block_timeout: \"30m1h\" is not a duration (units must go \
             from largest to smallest, each once, e.g. \"1h30m\")",
        ),
        (
            "[respond]\nhosts_deny_line = \"ALL: $HOST$\"\n",
            "/tmp/x.toml:2: respond.hosts_deny_line: \"ALL: $HOST$\" must contain $TARGET$",
        ),
        (
            "[respond]\nhosts_deny_line = \"ALL: $TARGET$\\nALL: ALL\"\n",
            "/tmp/x.toml:2: respond.hosts_deny_line: \"ALL: $TARGET$\\nALL: ALL\" must be a \
             single line (no control characters)",
        ),
        (
            "[respond]\nactions = [\"nft-set\",\n\"route\",\n\"nft-set\"]\n",
            "/tmp/x.toml:4: respond.actions: \"nft-set\" is listed twice",
        ),
        (
            "[respond]\nactions = [\"nft-set\", \"email\"]\n",
            "/tmp/x.toml:2: respond.actions: \"email\" is not an action (expected one of: \
             nft-set, route, hosts-deny, command, iptables, ipchains, ipfwadm, ipfw, ipfilter)",
        ),
        (
            "[respond]\nverdict = \"reject\"\n",
            "/tmp/x.toml:2: respond.verdict: \"reject\" is not a verdict (expected one of: \
             drop, accept)",
        ),
        (
            "[daemon]\nqueue_mode = \"kernel\"\n",
            "/tmp/x.toml:2: daemon.queue_mode: \"kernel\" is not a queue mode (expected one of: \
             auto, native, compat)",
        ),
        (
            "[respond]\nactions = [\"command\"]\n",
            "/tmp/x.toml:2: respond.actions: \"command\" needs respond.command, the program and \
             its arguments",
        ),
        (
            "[respond]\nactions = [\"command\"]\ncommand = []\n",
            "/tmp/x.toml:3: respond.command: \"[]\" must name a program when respond.actions has \
             \"command\"",
        ),
        (
            "[respond]\ncommand = [\"notify-admin\", \"$TARGET$\"]\n",
            "/tmp/x.toml:2: respond.command: \"notify-admin\" is not an absolute path (the \
             program is run directly, without a shell or PATH)",
        ),
        (
            "[respond]\nroute = \"10.0.0.300\"\n",
            "/tmp/x.toml:2: respond.route: \"10.0.0.300\" is neither \"blackhole\" nor a gateway \
             IP address",
        ),
        (
            "[respond]\nhosts_deny = \"hosts.deny\"\n",
            "/tmp/x.toml:2: respond.hosts_deny: \"hosts.deny\" is not an absolute path",
        ),
        (
            "[respond]\nmax_blocks = 0\n",
            "/tmp/x.toml:2: respond.max_blocks: \"0\" is out of range (1-16777216)",
        ),
        (
            "[detect]\nmax_sources = 16777217\n",
            "/tmp/x.toml:2: detect.max_sources: \"16777217\" is out of range (1-16777216)",
        ),
        (
            "[detect]\nscan_trigger = -1\n",
            "/tmp/x.toml:2: detect.scan_trigger: \"-1\" is out of range (0-4294967295)",
        ),
        (
            "[daemon]\nqueue = 70000\n",
            "/tmp/x.toml:2: daemon.queue: \"70000\" is not a queue number (0-65535)",
        ),
        (
            "[daemon]\nnflog_group = 65536\n",
            "/tmp/x.toml:2: daemon.nflog_group: \"65536\" is not an NFLOG group (0-65535)",
        ),
        (
            "[respond]\nblocked_table = \"filter\"\n",
            "/tmp/x.toml:2: respond.blocked_table: \"filter\" is not \"inet NAME\" (the family \
             and name of your table, e.g. \"inet filter\"; \"\" keeps the blocks in nfsentry's \
             own table)",
        ),
        (
            "[respond]\n\nblocked_table = \"ip filter\"\n",
            "/tmp/x.toml:3: respond.blocked_table: \"ip filter\" is not an inet table: the sets \
             blocked_v4 and blocked_v6 must sit in one table whose rules see IPv4 and IPv6 \
             (\"inet NAME\")",
        ),
        (
            "[respond]\nblocked_table = \"inet fil;ter\"\n",
            "/tmp/x.toml:2: respond.blocked_table: \"inet fil;ter\" does not name a table \
             (\"inet NAME\", NAME 1-64 characters of A-Z, a-z, 0-9, '_' and '-', starting with \
             a letter)",
        ),
        (
            "[respond]\nblocked_table = \"inet nfsentry\"\n",
            "/tmp/x.toml:2: respond.blocked_table: \"inet nfsentry\" is nfsentry's own table \
             (daemon.table = \"nfsentry\"), which nfsentry deletes and rebuilds; name a table of \
             your own ruleset",
        ),
        (
            "[daemon]\nhistory_max_bytes = 4095\n",
            "/tmp/x.toml:2: daemon.history_max_bytes: \"4095\" is out of range (4096 bytes to 1 TiB)",
        ),
        (
            "[daemon]\ntable = \"1nfsentry\"\n",
            "/tmp/x.toml:2: daemon.table: \"1nfsentry\" is not a table name (1-64 characters of \
             A-Z, a-z, 0-9, '_' and '-', starting with a letter)",
        ),
        (
            "[daemon]\nstate_dir = \"var/lib/nfsentry\"\n",
            "/tmp/x.toml:2: daemon.state_dir: \"var/lib/nfsentry\" is not an absolute path",
        ),
        (
            "[daemon]\nlog = \"file:nfsentry.log\"\n",
            "/tmp/x.toml:2: daemon.log: \"file:nfsentry.log\" is not a log target (\"stderr\", \
             \"syslog\", \"syslog:/absolute/socket\" or \"file:/absolute/path\")",
        ),
        (
            "[daemon]\nlog = \"syslog:dev/log\"\n",
            "/tmp/x.toml:2: daemon.log: \"syslog:dev/log\" is not a log target (\"stderr\", \
             \"syslog\", \"syslog:/absolute/socket\" or \"file:/absolute/path\")",
        ),
        (
            "[daemon]\n\nlog = \"syslog:\"\n",
            "/tmp/x.toml:3: daemon.log: \"syslog:\" is not a log target (\"stderr\", \
             \"syslog\", \"syslog:/absolute/socket\" or \"file:/absolute/path\")",
        ),
        (
            "[daemon]\nlog = \"journal\"\n",
            "/tmp/x.toml:2: daemon.log: \"journal\" is not a log target (\"stderr\", \
             \"syslog\", \"syslog:/absolute/socket\" or \"file:/absolute/path\")",
        ),
        (
            "[daemon]\ninterfaces = [\"eth0\", \"eth0/1\"]\n",
            "/tmp/x.toml:2: daemon.interfaces: \"eth0/1\" is not an interface name (1-15 bytes, \
             no '/', ':' or blanks, not \".\" or \"..\")",
        ),
        (
            "[daemon]\ninterfaces = [\"eth0\", \"eth0\"]\n",
            "/tmp/x.toml:2: daemon.interfaces: \"eth0\" is listed twice",
        ),
        (
            "[respond]\nipfilter_interface = \"a very long name\"\n",
            "/tmp/x.toml:2: respond.ipfilter_interface: \"a very long name\" is not an interface \
             name (1-15 bytes, no '/', ':' or blanks, not \".\" or \"..\")",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_err(text), *expected, "input: {text:?}");
    }
}

#[test]
fn error_fields_are_set() {
    let error = match parse("# comment\n\n[monitor]\ntcp_ports = [70000]\n") {
        Ok(_) => panic!("70000 was accepted"),
        Err(error) => error,
    };
    assert_eq!(error.file, PathBuf::from(FILE));
    assert_eq!(error.line, Some(4));
    assert_eq!(
        error.message,
        "monitor.tcp_ports: \"70000\" is not a port (1-65535)"
    );
}

#[test]
fn syntax_errors_carry_the_line() {
    let cases = [
        ("[daemon]\nqueue = 1\nqueue = 2\n", 3),
        ("[daemon]\n\n[monitor\n", 3),
        ("[daemon]\ntable = \"abc\n", 2),
        ("[daemon]\n[daemon]\n", 2),
        ("\n\n\nwindow = = 3\n", 4),
    ];
    for (text, line) in cases {
        let error = parse(text).err();
        let error = error.map(|error| (error.line, error.to_string()));
        let Some((found_line, display)) = error else {
            panic!("{text:?} was accepted");
        };
        assert_eq!(found_line, Some(line), "{text:?}: {display}");
        assert!(
            display.starts_with(&format!("/tmp/x.toml:{line}: not valid TOML: ")),
            "{display}"
        );
    }
}

#[test]
fn long_and_odd_values_are_quoted_on_one_line() {
    let long_table = "t".repeat(200);
    let display = parse_err(&format!("[daemon]\ntable = \"{long_table}\"\n"));
    assert!(
        display.contains(&format!("\"{}\"...", "t".repeat(60))),
        "{display}"
    );
    assert!(!display.contains(&"t".repeat(61)));
    let display = parse_err("[daemon]\ntable = \"a\\tb\\u0000\"\n");
    assert_eq!(display.lines().count(), 1, "{display}");
    assert!(display.contains("\"a\\tb\\0\""), "{display}");
}

// ---------------------------------------------------------------- files

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = ConfigDir::new();
    let path = dir.write("nfsentry.toml", b"[daemon]\nqueue = 9\n");
    let config = Config::load(&path);
    let config = config.map_err(|error| error.to_string());
    assert_eq!(
        config.as_ref().map(|c| c.daemon.queue),
        Ok(QueueRange::single(9))
    );
    assert_eq!(config.map(|c| c.origin), Ok(Origin::File(path.clone())));

    let bad = dir.write("bad.toml", b"[daemon]\n\nqueue = -1\n");
    let display = Config::load(&bad).err().map(|error| error.to_string());
    assert_eq!(
        display,
        Some(format!(
            "{}:3: daemon.queue: \"-1\" is not a queue number (0-65535)",
            bad.display()
        ))
    );
}

#[test]
fn missing_file_error_has_no_line_and_keeps_the_cause() {
    let dir = ConfigDir::new();
    let path = dir.join("absent.toml");
    let Err(error) = Config::load(&path) else {
        panic!("a missing file loaded");
    };
    assert_eq!(error.line, None);
    assert_eq!(error.file, path);
    let display = error.to_string();
    assert!(
        display.starts_with(&format!("{}: cannot read the file: ", path.display())),
        "{display}"
    );
    let cause = error
        .source()
        .and_then(|cause| cause.downcast_ref::<std::io::Error>());
    assert_eq!(
        cause.map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
}

#[test]
fn non_utf8_file_names_the_line() {
    let dir = ConfigDir::new();
    let path = dir.write("latin1.toml", b"[daemon]\n# caf\xe9\nqueue = 1\n");
    let display = Config::load(&path).err().map(|error| error.to_string());
    assert_eq!(
        display,
        Some(format!("{}:2: is not valid UTF-8 text", path.display()))
    );
}

#[test]
fn ignore_file_entries_follow_the_ignore_list() {
    let dir = ConfigDir::new();
    dir.write(
        "ignore",
        b"# trusted\n198.51.100.0/24\n\n2001:db8::/32 # lab\n192.0.2.9\n",
    );
    // Relative: taken from the config file's directory.
    let relative = dir.write(
        "relative.toml",
        b"[detect]\nignore = [\"127.0.0.0/8\"]\nignore_file = \"ignore\"\n",
    );
    let absolute_text = format!(
        "[detect]\nignore_file = {:?}\n",
        dir.join("ignore").display().to_string()
    );
    let absolute = dir.write("absolute.toml", absolute_text.as_bytes());
    let expected_from_file = [
        net("198.51.100.0/24"),
        net("2001:db8::/32"),
        net("192.0.2.9/32"),
    ];

    let config = Config::load(&relative).map_err(|error| error.to_string());
    let mut expected = vec![net("127.0.0.0/8")];
    expected.extend(expected_from_file);
    assert_eq!(config.map(|c| c.detect.ignore), Ok(expected));

    let config = Config::load(&absolute).map_err(|error| error.to_string());
    let mut expected = vec![net("127.0.0.0/8"), net("::1/128")];
    expected.extend(expected_from_file);
    assert_eq!(config.map(|c| c.detect.ignore), Ok(expected));
}

#[test]
fn ignore_file_errors_name_the_ignore_file_and_its_line() {
    let dir = ConfigDir::new();
    let ignore = dir.write("ignore", b"192.0.2.1\n# fine so far\n\n10.0.0.0/33\n");
    let config = dir.write("nfsentry.toml", b"[detect]\nignore_file = \"ignore\"\n");
    let Err(error) = Config::load(&config) else {
        panic!("a bad ignore file was accepted");
    };
    assert_eq!(error.file, ignore);
    assert_eq!(error.line, Some(4));
    assert_eq!(
        error.to_string(),
        format!(
            "{}:4: \"10.0.0.0/33\" is not an IP address or CIDR (e.g. \"192.0.2.7\", \
             \"198.51.100.0/24\", \"2001:db8::/32\")",
            ignore.display()
        )
    );
}

#[test]
fn unreadable_ignore_file_is_reported_at_the_key() {
    let dir = ConfigDir::new();
    let config = dir.write(
        "nfsentry.toml",
        b"[detect]\nwindow = \"1m\"\nignore_file = \"nowhere\"\n",
    );
    let Err(error) = Config::load(&config) else {
        panic!("a missing ignore file was accepted");
    };
    assert_eq!(error.file, config);
    assert_eq!(error.line, Some(3));
    assert!(
        error.message.starts_with(&format!(
            "detect.ignore_file: \"nowhere\" cannot be used: {}: cannot read the file: ",
            dir.join("nowhere").display()
        )),
        "{}",
        error.message
    );
    assert!(error.source().is_some(), "the I/O error is attached");
}

// ---------------------------------------------------------------- robustness

/// Truncations and byte flips of the shipped example: loading must return, never panic, and
/// every error must point inside the file it names.
#[test]
fn mangled_input_never_panics() {
    let text = match read_text(&shipped_config_dir().join("nfsentry.toml")) {
        Ok(text) => text,
        Err(error) => panic!("{error}"),
    };
    let line_count = text.lines().count() + 1;
    let mut variants: Vec<String> = Vec::new();
    for cut in (0..text.len()).step_by(7) {
        if let Some(head) = text.get(..cut) {
            variants.push(head.to_owned());
        }
    }
    let replacements = [
        "\"", "[", "]", "=", "\n", "-", "0", "x", "'", "{", ",", "#", "\u{e9}",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let at = usize::try_from(state % text.len() as u64).unwrap_or(0);
        let replacement = replacements
            .get(usize::try_from(state >> 40).unwrap_or(0) % replacements.len())
            .copied()
            .unwrap_or("x");
        if !text.is_char_boundary(at) || !text.is_char_boundary(at + 1) {
            continue;
        }
        let mut variant = text.clone();
        variant.replace_range(at..at + 1, replacement);
        variants.push(variant);
    }
    variants.push("[[daemon]]\nqueue = 1\n".to_owned());
    variants.push(format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000)));
    variants.push("\u{feff}[daemon]\n".to_owned());
    let mut failures = 0;
    for variant in &variants {
        if let Err(error) = parse(variant) {
            failures += 1;
            assert_eq!(error.file, PathBuf::from(FILE));
            if let Some(line) = error.line {
                assert!(
                    (1..=line_count.max(variant.lines().count() + 1)).contains(&line),
                    "line {line} outside the input: {error}"
                );
            }
            assert!(!error.message.is_empty());
            assert_eq!(error.to_string().lines().count(), 1, "{error}");
        }
    }
    assert!(failures > 0, "no mangled variant was refused");
}

// ---------------------------------------------------------------- [crowdsec]

/// A directory with a password and a bouncer key file, and a config file beside them.
struct CrowdsecFiles {
    dir: ConfigDir,
}

impl CrowdsecFiles {
    const PASSWORD: &'static str = "pw-8c1f0e";
    const KEY: &'static str = "key-3b9d27";

    fn new() -> CrowdsecFiles {
        let dir = ConfigDir::new();
        // Trailing newlines, as an editor or `echo` leaves them, are not part of the secret.
        dir.write("password", format!("{}\n", Self::PASSWORD).as_bytes());
        dir.write("key", format!("  {}\r\n", Self::KEY).as_bytes());
        CrowdsecFiles { dir }
    }

    fn load(&self, text: &str) -> Result<Config, ConfigError> {
        let path = self.dir.write("nfsentry.toml", text.as_bytes());
        Config::load(&path)
    }

    fn load_ok(&self, text: &str) -> Config {
        self.load(text)
            .unwrap_or_else(|error| panic!("expected {text:?} to load, got: {error}"))
    }

    /// The error's display with the directory replaced by `DIR`.
    fn load_err(&self, text: &str) -> String {
        match self.load(text) {
            Ok(config) => panic!("expected {text:?} to fail, got {config:?}"),
            Err(error) => error
                .to_string()
                .replace(&self.dir.0.path().display().to_string(), "DIR"),
        }
    }
}

const CROWDSEC_MINIMAL: &str =
    "[crowdsec]\nmachine_id = \"web-01\"\npassword_file = \"password\"\n\
                                bouncer_key_file = \"key\"\n";

#[test]
fn crowdsec_is_off_without_its_section() {
    assert_eq!(Config::defaults().crowdsec, None);
    assert_eq!(parse_ok("[respond]\nactions = []\n").crowdsec, None);
}

#[test]
fn crowdsec_defaults_once_the_section_is_present() {
    let files = CrowdsecFiles::new();
    let config = files.load_ok(CROWDSEC_MINIMAL);
    let Some(crowdsec) = config.crowdsec else {
        panic!("the section was present");
    };
    assert_eq!(crowdsec.url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(crowdsec.scenario, "nfsentry/portscan");
    assert!(crowdsec.actions.is_empty());
    let push = crowdsec.push.as_ref().map(|push| {
        (
            push.machine_id.as_str(),
            push.password.expose(),
            push.password_file.clone(),
        )
    });
    assert_eq!(
        push,
        Some((
            "web-01",
            CrowdsecFiles::PASSWORD,
            files.dir.join("password")
        ))
    );
    let pull = crowdsec.pull.as_ref().map(|pull| {
        (
            pull.bouncer_key.expose(),
            pull.every,
            pull.resync_every,
            pull.bouncer_key_file.clone(),
        )
    });
    assert_eq!(
        pull,
        Some((
            CrowdsecFiles::KEY,
            Duration::from_secs(1),
            Duration::from_secs(300),
            files.dir.join("key")
        ))
    );
    assert_eq!(
        crowdsec.summary(),
        "crowdsec http://127.0.0.1:8080/: push as web-01 (nfsentry/portscan), pull every 1s, \
         resync every 5m"
    );
}

#[test]
fn crowdsec_every_key_set() {
    let files = CrowdsecFiles::new();
    let key_path = files.dir.join("key").display().to_string();
    let config = files.load_ok(&format!(
        "[respond]\ncommand = [\"/bin/true\", \"$TARGET$\"]\n\
         [crowdsec]\nurl = \"http://[::1]:18080/lapi\"\npush = true\nmachine_id = \"web-02\"\n\
         password_file = \"password\"\npull = true\nbouncer_key_file = {key_path:?}\n\
         pull_every = \"250ms\"\nresync_every = 90\nscenario = \"example/scan_v2\"\n\
         actions = [\"route\", \"command\", \"hosts-deny\"]\n"
    ));
    let crowdsec = config.crowdsec.unwrap_or_else(|| panic!("section present"));
    assert_eq!(crowdsec.url.as_str(), "http://[::1]:18080/lapi/");
    assert_eq!(crowdsec.scenario, "example/scan_v2");
    assert_eq!(
        crowdsec.actions,
        [
            ActionKind::Route,
            ActionKind::Command,
            ActionKind::HostsDeny
        ]
    );
    let pull = crowdsec.pull.clone().unwrap_or_else(|| panic!("pull on"));
    assert_eq!(pull.every, Duration::from_millis(250));
    assert_eq!(pull.resync_every, Duration::from_secs(90));
    assert_eq!(pull.bouncer_key_file, PathBuf::from(&key_path));
    assert_eq!(
        crowdsec.summary(),
        "crowdsec http://[::1]:18080/lapi/: push as web-02 (example/scan_v2), pull every 250ms, \
         resync every 1m30s, also route,command,hosts-deny"
    );
}

#[test]
fn crowdsec_directions_switched_off_need_no_secrets() {
    let config = parse_ok("[crowdsec]\npush = false\npull = false\n");
    let crowdsec = config.crowdsec.unwrap_or_else(|| panic!("section present"));
    assert_eq!((crowdsec.push, crowdsec.pull), (None, None));
    // A file named for a direction that is off is not read.
    let config = parse_ok(
        "[crowdsec]\npush = false\npassword_file = \"/nonexistent/pw\"\npull = false\n\
         bouncer_key_file = \"/nonexistent/key\"\n",
    );
    assert!(config.crowdsec.is_some());
    let files = CrowdsecFiles::new();
    let config = files.load_ok("[crowdsec]\npush = false\nbouncer_key_file = \"key\"\n");
    let crowdsec = config.crowdsec.unwrap_or_else(|| panic!("section present"));
    assert!(crowdsec.push.is_none() && crowdsec.pull.is_some());
    assert_eq!(
        crowdsec.summary(),
        "crowdsec http://127.0.0.1:8080/: push off, pull every 1s, resync every 5m"
    );
}

#[test]
fn crowdsec_errors_name_file_line_key_and_value() {
    let files = CrowdsecFiles::new();
    files.dir.write("empty", b"\n \n");
    files.dir.write("two-lines", b"first\nsecond\n");
    files.dir.write("not-ascii", "cl\u{e9}\n".as_bytes());
    files.dir.write("huge", &vec![b'x'; 5000]);
    let with = |extra: &str| format!("{CROWDSEC_MINIMAL}{extra}");
    let cases: Vec<(String, String)> = vec![
        (
            "[crowdsec]\npassword_file = \"password\"\nbouncer_key_file = \"key\"\n".to_owned(),
            "DIR/nfsentry.toml:1: crowdsec: \"[crowdsec]\" turns push on, which needs \
             crowdsec.machine_id (or set push = false)"
                .to_owned(),
        ),
        (
            "[crowdsec]\nmachine_id = \"web-01\"\n\npush = true\nbouncer_key_file = \"key\"\n"
                .to_owned(),
            "DIR/nfsentry.toml:4: crowdsec.push: \"true\" needs crowdsec.password_file".to_owned(),
        ),
        (
            "[crowdsec]\npush = false\npull = true\n".to_owned(),
            "DIR/nfsentry.toml:3: crowdsec.pull: \"true\" needs crowdsec.bouncer_key_file"
                .to_owned(),
        ),
        (
            "[crowdsec]\nmachine_id = \"web-01\"\npassword_file = \"absent\"\npull = false\n"
                .to_owned(),
            "DIR/nfsentry.toml:3: crowdsec.password_file: \"absent\" cannot be read: No such \
             file or directory (os error 2)"
                .to_owned(),
        ),
        (
            "[crowdsec]\npush = false\nbouncer_key_file = \"empty\"\n".to_owned(),
            "DIR/nfsentry.toml:3: crowdsec.bouncer_key_file: \"empty\" is empty".to_owned(),
        ),
        (
            "[crowdsec]\npush = false\nbouncer_key_file = \"two-lines\"\n".to_owned(),
            "DIR/nfsentry.toml:3: crowdsec.bouncer_key_file: \"two-lines\" holds more than one \
             line or control characters"
                .to_owned(),
        ),
        (
            "[crowdsec]\npush = false\nbouncer_key_file = \"not-ascii\"\n".to_owned(),
            "DIR/nfsentry.toml:3: crowdsec.bouncer_key_file: \"not-ascii\" holds characters an \
             HTTP header cannot carry"
                .to_owned(),
        ),
        (
            "[crowdsec]\npull = false\nmachine_id = \"m\"\npassword_file = \"huge\"\n".to_owned(),
            "DIR/nfsentry.toml:4: crowdsec.password_file: \"huge\" is longer than 4096 bytes"
                .to_owned(),
        ),
        (
            "[crowdsec]\npull = false\nmachine_id = \"web 01\"\npassword_file = \"password\"\n"
                .to_owned(),
            "DIR/nfsentry.toml:3: crowdsec.machine_id: \"web 01\" is not a machine name (1-128 \
             printable characters, no blanks)"
                .to_owned(),
        ),
        (
            with("url = \"127.0.0.1:8080\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.url: \"127.0.0.1:8080\" is not an http URL (e.g. \
             \"http://127.0.0.1:8080/\")"
                .to_owned(),
        ),
        (
            with("url = \"https://lapi.example/\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.url: \"https://lapi.example/\" uses https, which \
             nfsentry does not speak yet; reach the LAPI over http on loopback or a trusted \
             network"
                .to_owned(),
        ),
        (
            with("url = \"http://bob:pw@lapi.example/\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.url: \"http://bob:pw@lapi.example/\" carries \
             credentials; use password_file and bouncer_key_file instead"
                .to_owned(),
        ),
        (
            with("url = \"http://lapi.example:99999/\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.url: \"http://lapi.example:99999/\" does not name a \
             host and port (e.g. \"http://127.0.0.1:8080/\", \"http://[::1]:8080/\", \
             \"http://lapi.example:8080/\")"
                .to_owned(),
        ),
        (
            with("pull_every = \"50ms\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.pull_every: \"50ms\" is too short (at least 100ms: \
             every poll is a query on the LAPI's database)"
                .to_owned(),
        ),
        (
            with("pull_every = \"10s\"\nresync_every = \"5s\"\n"),
            "DIR/nfsentry.toml:6: crowdsec.resync_every: \"5s\" is shorter than \
             crowdsec.pull_every (10s)"
                .to_owned(),
        ),
        (
            with("resync_every = \"5 min\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.resync_every: \"5 min\" is not a duration (unknown \
             unit \" min\"; use d, h, m, s, ms, us or ns)"
                .to_owned(),
        ),
        (
            with("scenario = \"port scan\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.scenario: \"port scan\" is not a scenario name \
             (1-128 characters of A-Z, a-z, 0-9, '_', '-', '.' and '/', e.g. \
             \"nfsentry/portscan\")"
                .to_owned(),
        ),
        (
            with("actions = [\"route\", \"nft-set\"]\n"),
            "DIR/nfsentry.toml:5: crowdsec.actions: \"nft-set\" is where pulled decisions \
             always go; list only the other actions"
                .to_owned(),
        ),
        (
            with("actions = [\"route\",\n  \"route\"]\n"),
            "DIR/nfsentry.toml:6: crowdsec.actions: \"route\" is listed twice".to_owned(),
        ),
        (
            with("actions = [\"command\"]\n"),
            "DIR/nfsentry.toml:5: crowdsec.actions: \"command\" needs respond.command, the \
             program and its arguments"
                .to_owned(),
        ),
        (
            with("actions = [\"nftset\"]\n"),
            "DIR/nfsentry.toml:5: crowdsec.actions: \"nftset\" is not an action (expected one \
             of: nft-set, route, hosts-deny, command, iptables, ipchains, ipfwadm, ipfw, \
             ipfilter)"
                .to_owned(),
        ),
        (
            with("pul = true\n"),
            "DIR/nfsentry.toml:5: unknown key \"pul\" in [crowdsec] (expected one of: url, \
             push, machine_id, password_file, pull, bouncer_key_file, pull_every, \
             resync_every, scenario, actions)"
                .to_owned(),
        ),
        (
            with("push = \"yes\"\n"),
            "DIR/nfsentry.toml:5: crowdsec.push: \"yes\" is a string, expected a boolean"
                .to_owned(),
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(files.load_err(&text), expected, "{text}");
    }
}

#[test]
fn unreadable_secret_keeps_its_cause() {
    let files = CrowdsecFiles::new();
    let Err(error) =
        files.load("[crowdsec]\npush = false\nbouncer_key_file = \"/nonexistent/key\"\n")
    else {
        panic!("a missing key file was accepted");
    };
    assert_eq!(error.line, Some(3));
    let cause = error
        .source()
        .and_then(|cause| cause.downcast_ref::<std::io::Error>());
    assert_eq!(
        cause.map(std::io::Error::kind),
        Some(std::io::ErrorKind::NotFound)
    );
}

/// Whatever is wrong with a secret file, the message names the file and never its contents;
/// and a loaded config prints its secrets as `Secret(..)`.
#[test]
fn secrets_never_appear_in_errors_or_debug_output() {
    let files = CrowdsecFiles::new();
    let secret = "s3cr3t-Zq81";
    let contents: [Vec<u8>; 4] = [
        format!("{secret}\nsecond line\n").into_bytes(),
        format!("{secret}\u{e9}").into_bytes(),
        format!("{secret}\u{7}").into_bytes(),
        [secret.as_bytes(), &[0xff]].concat(),
    ];
    for bytes in contents {
        files.dir.write("key", &bytes);
        let error = files.load_err("[crowdsec]\npush = false\nbouncer_key_file = \"key\"\n");
        assert!(!error.contains(secret), "{error}");
        assert!(
            error.contains("crowdsec.bouncer_key_file: \"key\""),
            "{error}"
        );
    }
    let files = CrowdsecFiles::new();
    let config = files.load_ok(CROWDSEC_MINIMAL);
    let printed = format!("{config:?} {config:#?}");
    assert!(!printed.contains(CrowdsecFiles::PASSWORD), "{printed}");
    assert!(!printed.contains(CrowdsecFiles::KEY), "{printed}");
    assert!(printed.contains("Secret(..)"));
}

/// The shipped example documents `[crowdsec]` commented out, since it is off by default. With
/// its '#' removed (and the secret files pointed somewhere that exists) it must load, with
/// every key of the contract shown, at the values of the built-in defaults.
#[test]
fn shipped_crowdsec_example_loads_once_uncommented() {
    let text = match read_text(&shipped_config_dir().join("nfsentry.toml")) {
        Ok(text) => text,
        Err(error) => panic!("{error}"),
    };
    let Some(start) = text.find("\n#[crowdsec]\n") else {
        panic!("config/nfsentry.toml shows no commented-out [crowdsec] section");
    };
    let files = CrowdsecFiles::new();
    let mut keys = Vec::new();
    let mut uncommented = String::from("[respond]\ncommand = [\"/bin/true\"]\n");
    for line in text[start + 1..].lines() {
        let setting = match line.strip_prefix('#') {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
            _ => continue,
        };
        let setting = setting
            .replace("/etc/nfsentry/crowdsec-password", "password")
            .replace("/etc/nfsentry/crowdsec-bouncer-key", "key");
        if let Some((key, _)) = setting.split_once(" = ") {
            keys.push(key.to_owned());
        }
        uncommented.push_str(&setting);
        uncommented.push('\n');
    }
    let mut expected_keys = [
        "url",
        "push",
        "machine_id",
        "password_file",
        "pull",
        "bouncer_key_file",
        "pull_every",
        "resync_every",
        "scenario",
        "actions",
    ];
    keys.sort();
    expected_keys.sort_unstable();
    assert_eq!(keys, expected_keys);
    let from_example = files.load_ok(&uncommented).crowdsec;
    let defaults = files
        .load_ok(&format!(
            "[respond]\ncommand = [\"/bin/true\"]\n{CROWDSEC_MINIMAL}"
        ))
        .crowdsec;
    assert_eq!(from_example, defaults);
}

// ---------------------------------------------------------------- values that could hurt

/// The error's display with the scratch directory replaced by `DIR`.
fn load_err_in(dir: &ConfigDir, name: &str, text: &str) -> String {
    let path = dir.write(name, text.as_bytes());
    match Config::load(&path) {
        Ok(config) => panic!("expected {text:?} to fail, got {config:?}"),
        Err(error) => error
            .to_string()
            .replace(&dir.0.path().display().to_string(), "DIR"),
    }
}

#[test]
fn timeouts_the_kernel_cannot_hold_are_refused_with_the_bound() {
    assert_eq!(format_duration(NFT_TIMEOUT_MAX), "213503d23h34m33s708ms");
    let bound = "is longer than the kernel accepts for an nft element timeout (at most \
                 \"213503d23h34m33s708ms\", about 584 years)";
    let cases = [
        ("\"200000000d\"", "\"200000000d\""),
        ("\"213504d\"", "\"213504d\""),
        ("\"213503d23h34m34s708ms\"", "\"213503d23h34m34s708ms\""),
        (
            "\"213503d23h34m33s708ms1ns\"",
            "\"213503d23h34m33s708ms1ns\"",
        ),
        ("18446744074", "\"18446744074\""),
    ];
    for (written, quoted) in cases {
        assert_eq!(
            parse_err(&format!("[respond]\n\nblock_timeout = {written}\n")),
            format!("/tmp/x.toml:3: respond.block_timeout: {quoted} {bound}"),
            "{written}"
        );
    }
    for written in [
        "\"213503d23h34m33s708ms\"",
        "\"213503d\"",
        "18446744073",
        "\"0\"",
    ] {
        let config = parse_ok(&format!("[respond]\nblock_timeout = {written}\n"));
        assert!(
            config
                .respond
                .block_timeout
                .is_none_or(|timeout| timeout <= NFT_TIMEOUT_MAX),
            "{written}"
        );
    }
    assert_eq!(
        parse_ok("[respond]\nblock_timeout = \"213503d23h34m33s708ms\"\n")
            .respond
            .block_timeout,
        Some(NFT_TIMEOUT_MAX)
    );
}

#[test]
fn gateways_that_never_take_replies_away_are_refused() {
    let loopback = "is a loopback address, which hands the replies back to this host instead \
                    of sending them away; \"blackhole\" drops them, which is what a loopback \
                    gateway meant in PortSentry's recipes";
    let unspecified =
        "is the unspecified address, which names no gateway; \"blackhole\" drops the replies";
    let multicast = "is a multicast address; a gateway is one host on a network this host is on";
    let cases = [
        ("0.0.0.0", unspecified),
        ("::", unspecified),
        (
            "255.255.255.255",
            "is the broadcast address; a gateway is one host on a network this host is on",
        ),
        ("224.0.0.1", multicast),
        ("239.255.0.9", multicast),
        ("ff02::1", multicast),
        ("127.0.0.1", loopback),
        ("127.9.9.9", loopback),
        ("::1", loopback),
        (
            "::ffff:192.0.2.1",
            "is an IPv4-mapped IPv6 address, which the kernel takes for an IPv6 gateway it \
             cannot reach; write the IPv4 address",
        ),
        (
            "fe80::1",
            "is a link-local address, which the kernel takes as a gateway only with an \
             interface, and the route action names none; use the gateway's global address",
        ),
    ];
    for (gateway, problem) in cases {
        assert_eq!(
            parse_err(&format!(
                "[respond]\nactions = [\"route\"]\nroute = \"{gateway}\"\n"
            )),
            format!("/tmp/x.toml:3: respond.route: \"{gateway}\" {problem}"),
        );
    }
    for gateway in ["192.0.2.254", "169.254.0.1", "2001:db8::1"] {
        let config = parse_ok(&format!("[respond]\nroute = \"{gateway}\"\n"));
        assert_eq!(
            config.respond.route,
            RouteTarget::Gateway(gateway.parse().unwrap())
        );
    }
}

#[test]
fn ignore_files_that_are_no_regular_files_are_refused_unread() {
    let dir = ConfigDir::new();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Sparse: no disk is used, and its size alone is enough to refuse it.
    let large = fs::File::create(dir.join("large")).unwrap();
    large.set_len(16 * 1024 * 1024 + 1).unwrap();
    fs::create_dir(dir.join("directory")).unwrap();
    let cases = [
        (
            "/dev/zero",
            "/dev/zero: is a character device, not a regular file",
        ),
        (
            "fifo",
            "DIR/fifo: is a FIFO (named pipe), not a regular file",
        ),
        ("large", "DIR/large: is larger than 16 MiB"),
        (
            "directory",
            "DIR/directory: is a directory, not a regular file",
        ),
    ];
    for (written, problem) in cases {
        let started = std::time::Instant::now();
        let display = load_err_in(
            &dir,
            "nfsentry.toml",
            &format!("[detect]\nwindow = \"1m\"\nignore_file = {written:?}\n"),
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{written}");
        assert_eq!(
            display,
            format!(
                "DIR/nfsentry.toml:3: detect.ignore_file: {written:?} cannot be used: {problem}"
            )
        );
    }
    // The config file itself and the secrets are read the same way.
    let display = Config::load(&fifo).err().map(|error| error.to_string());
    assert_eq!(
        display,
        Some(format!(
            "{}: is a FIFO (named pipe), not a regular file",
            fifo.display()
        ))
    );
    assert_eq!(
        load_err_in(
            &dir,
            "secret.toml",
            "[crowdsec]\npush = false\nbouncer_key_file = \"fifo\"\n"
        ),
        "DIR/secret.toml:3: crowdsec.bouncer_key_file: \"fifo\" cannot be read: it is a FIFO \
         (named pipe), not a regular file"
    );
}

#[test]
fn a_state_dir_that_cannot_become_a_directory_is_refused() {
    let dir = ConfigDir::new();
    dir.write("file", b"not a directory\n");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let state_dir = |path: &str| format!("[daemon]\n\nstate_dir = \"{path}\"\n");
    let cases = [
        ("DIR/file", "is a regular file, not a directory"),
        (
            "DIR/file/state",
            "lies below DIR/file, which is a regular file, not a directory",
        ),
        (
            "DIR/file/deeper/state",
            "lies below DIR/file, which is a regular file, not a directory",
        ),
        ("DIR/fifo", "is a FIFO (named pipe), not a directory"),
        (
            "/dev/null/nfsentry",
            "lies below /dev/null, which is a character device, not a directory",
        ),
    ];
    let scratch = dir.0.path().display().to_string();
    for (written, problem) in cases {
        let path = written.replace("DIR", &scratch);
        assert_eq!(
            load_err_in(&dir, "nfsentry.toml", &state_dir(&path)),
            format!("DIR/nfsentry.toml:3: daemon.state_dir: \"{written}\" {problem}"),
        );
    }
    // A directory, or a path that can be made one, is fine; whether it can be written is the
    // daemon's to say when it starts.
    for path in [
        scratch.clone(),
        format!("{scratch}/missing/state"),
        "/var/lib/nfsentry".to_owned(),
    ] {
        let loaded = Config::load(&dir.write("ok.toml", state_dir(&path).as_bytes()));
        assert_eq!(
            loaded
                .map(|config| config.daemon.state_dir)
                .map_err(|error| error.to_string()),
            Ok(PathBuf::from(&path)),
            "{path}"
        );
    }
}

#[test]
fn hosts_deny_lines_that_deny_more_than_the_scanner_are_refused() {
    let alone = "\"ALL: $TARGET$\" denies the scanner alone";
    let cases = [
        (
            "ALL: ALL EXCEPT $TARGET$",
            format!(
                "denies more than the scanner: its client \"ALL\" matches other hosts too; {alone}"
            ),
        ),
        (
            "sshd: $TARGET$, 10.0.0.0/8",
            format!(
                "denies more than the scanner: its client \"10.0.0.0/8\" matches other hosts \
                 too; {alone}"
            ),
        ),
        (
            "$TARGET$: ALL",
            format!("does not have $TARGET$ among its clients (after the first ':'); {alone}"),
        ),
        (
            "ALL $TARGET$",
            "lacks the ':' between daemons and clients that TCP wrappers require".to_owned(),
        ),
        (
            "# ALL: $TARGET$",
            "is a comment, which TCP wrappers skip".to_owned(),
        ),
        (
            "ALL: $TARGET$ \\\\",
            "ends in a backslash, which joins the next line onto it".to_owned(),
        ),
    ];
    for (line, problem) in cases {
        let written = line.replace("\\\\", "\\");
        assert_eq!(
            parse_err(&format!("[respond]\n\nhosts_deny_line = \"{line}\"\n")),
            format!("/tmp/x.toml:3: respond.hosts_deny_line: {written:?} {problem}"),
        );
    }
    for line in [
        "ALL: $TARGET$",
        "ALL: $TARGET$ : DENY",
        "sshd,in.telnetd: $TARGET$, $TARGET$/255.255.255.255 : DENY",
        "ALL: $TARGET$ : spawn (echo %a: %d) & : DENY",
    ] {
        let config = parse_ok(&format!("[respond]\nhosts_deny_line = \"{line}\"\n"));
        assert_eq!(config.respond.hosts_deny_line, line);
    }
}

// ---------------------------------------------------------------- evidence and rate limits

#[test]
fn verification_and_block_rate_keys_load() {
    let config = parse_ok(
        "[detect]\nverify = \"handshake\"\n\
         [respond]\nunverified_timeout = \"10m\"\nmax_blocks_per_sec = 0\n",
    );
    assert_eq!(config.detect.verify, Verify::Handshake);
    assert_eq!(
        config.respond.unverified_timeout,
        Some(Duration::from_secs(600))
    );
    assert_eq!(config.respond.max_blocks_per_sec, 0, "unlimited");
    let uncapped =
        parse_ok("[respond]\nunverified_timeout = \"0\"\nmax_blocks_per_sec = 1000000\n");
    assert_eq!(uncapped.respond.unverified_timeout, None, "\"0\": no cap");
    assert_eq!(uncapped.respond.max_blocks_per_sec, 1_000_000);
    assert_eq!(
        parse_ok("[respond]\nunverified_timeout = 90\n")
            .respond
            .unverified_timeout,
        Some(Duration::from_secs(90))
    );
}

#[test]
fn verification_and_block_rate_errors_name_file_line_key_and_value() {
    let cases: &[(&str, &str)] = &[
        (
            "[detect]\nverify = \"syn-cookie\"\n",
            "/tmp/x.toml:2: detect.verify: \"syn-cookie\" is not a kind of verification \
             (expected one of: off, handshake)",
        ),
        (
            "[detect]\nverify = true\n",
            "/tmp/x.toml:2: detect.verify: \"true\" is a boolean, expected a string",
        ),
        (
            "[respond]\n\nunverified_timeout = \"1 hour\"\n",
            "/tmp/x.toml:3: respond.unverified_timeout: \"1 hour\" is not a duration (unknown \
             unit \" hour\"; use d, h, m, s, ms, us or ns)",
        ),
        (
            "[respond]\nunverified_timeout = -5\n",
            "/tmp/x.toml:2: respond.unverified_timeout: \"-5\" is not a duration (a number of \
             seconds cannot be negative)",
        ),
        (
            "[respond]\nmax_blocks_per_sec = -1\n",
            "/tmp/x.toml:2: respond.max_blocks_per_sec: \"-1\" is out of range (0-1000000; 0 is \
             unlimited)",
        ),
        (
            "[respond]\nmax_blocks_per_sec = 1000001\n",
            "/tmp/x.toml:2: respond.max_blocks_per_sec: \"1000001\" is out of range (0-1000000; \
             0 is unlimited)",
        ),
        (
            "[respond]\nmax_blocks_per_sec = \"50/s\"\n",
            "/tmp/x.toml:2: respond.max_blocks_per_sec: \"50/s\" is a string, expected an \
             integer",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_err(text), *expected, "{text:?}");
    }
}

#[test]
fn an_ignore_list_that_covers_a_whole_family_is_refused() {
    assert_eq!(
        parse_err("[detect]\nignore = [\"192.0.2.1\",\n  \"0.0.0.0/0\"]\n"),
        "/tmp/x.toml:3: detect.ignore: \"0.0.0.0/0\" covers every IPv4 address: nothing would \
         ever be counted or blocked; list the networks you trust instead"
    );
    assert!(parse_err("[detect]\nignore = [\"::/0\"]\n").contains("covers every IPv6 address"));
    // Host bits are cleared, so "10.0.0.1/0" is the same everything.
    assert!(parse_err("[detect]\nignore = [\"10.0.0.1/0\"]\n").contains("covers every IPv4"));
    assert!(parse("[detect]\nignore = [\"0.0.0.0/1\", \"::/1\"]\n").is_ok());

    let dir = ConfigDir::new();
    let ignore = dir.write("ignore", b"192.0.2.1\n::/0 # everyone\n");
    let config = dir.write("nfsentry.toml", b"[detect]\nignore_file = \"ignore\"\n");
    let Err(error) = Config::load(&config) else {
        panic!("an ignore file covering every IPv6 address was accepted");
    };
    assert_eq!((error.file, error.line), (ignore, Some(2)));
}

#[test]
fn blocked_table_and_keep_blocks_on_exit_are_read() {
    let text = "[daemon]\nkeep_blocks_on_exit = true\n[respond]\nblocked_table = \"inet filter\"\n";
    let config = Config::from_toml(text, "/tmp/x.toml".as_ref()).unwrap();
    assert!(config.daemon.keep_blocks_on_exit);
    assert_eq!(config.respond.blocked_table.as_deref(), Some("filter"));
    let empty = Config::from_toml("[respond]\nblocked_table = \"\"\n", "/tmp/x.toml".as_ref());
    assert_eq!(empty.unwrap().respond.blocked_table, None);
    let error = Config::from_toml(
        "[daemon]\n\nkeep_blocks_on_exit = \"yes\"\n",
        "/tmp/x.toml".as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("/tmp/x.toml:3:") && error.contains("keep_blocks_on_exit"),
        "{error}"
    );
}

#[test]
fn queue_takes_a_number_or_a_range() {
    for (value, first, last) in [
        ("3", 3, 3),
        ("\"3\"", 3, 3),
        ("\"0-3\"", 0, 3),
        ("\"65520-65535\"", 65520, 65535),
    ] {
        let config = parse_ok(&format!("[daemon]\nqueue = {value}\n"));
        assert_eq!(
            config.daemon.queue,
            QueueRange::new(first, last).unwrap(),
            "{value}"
        );
    }
}

#[test]
fn several_queues_share_the_global_limits() {
    let config = parse_ok(
        "[daemon]\nqueue = \"4-7\"\n[detect]\nmax_sources = 1001\n\
         [respond]\nmax_blocks = 8\nmax_blocks_per_sec = 0\n",
    );
    let share = config.shard_share();
    assert_eq!(share.detect.max_sources, 251);
    assert_eq!(share.respond.max_blocks, 2);
    assert_eq!(share.respond.max_blocks_per_sec, 0, "0 stays unlimited");
    assert_eq!(share.daemon, config.daemon);
    let single = parse_ok("[detect]\nmax_sources = 1001\n");
    assert_eq!(single.shard_share(), single);
}
