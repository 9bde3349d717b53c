//! Table-driven tests of the whole import: each case is a portsentry.conf, the machine it is
//! imported on, the keys that must come out and the notes that must be given. Every output must
//! pass nfsentry's own loader (the import's self-check) and parse as TOML.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::{import, Import, NoteKind, Surroundings};

const CONF: &str = "/etc/portsentry/portsentry.conf";
const SHIPPED: &str = include_str!("../../tests/fixtures/portsentry-1.2/portsentry.conf");
const SHIPPED_IGNORE: &str = include_str!("../../tests/fixtures/portsentry-1.2/portsentry.ignore");
const SHIPPED_IGNORE_PATH: &str = "/usr/local/psionic/portsentry/portsentry.ignore";

/// A machine: files by path, programs on PATH (found in /usr/sbin) and other executables.
#[derive(Default)]
struct Fake {
    files: BTreeMap<&'static str, &'static str>,
    on_path: Vec<&'static str>,
    executables: Vec<&'static str>,
}

impl Fake {
    fn file(mut self, path: &'static str, text: &'static str) -> Fake {
        self.files.insert(path, text);
        self
    }

    fn programs(mut self, names: &[&'static str]) -> Fake {
        self.on_path.extend_from_slice(names);
        self
    }

    fn executables(mut self, paths: &[&'static str]) -> Fake {
        self.executables.extend_from_slice(paths);
        self
    }
}

impl Surroundings for Fake {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        path.to_str()
            .and_then(|path| self.files.get(path))
            .map(|text| (*text).to_owned())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn find_program(&self, program: &str) -> Option<PathBuf> {
        self.on_path
            .contains(&program)
            .then(|| PathBuf::from("/usr/sbin").join(program))
    }

    fn is_executable(&self, path: &Path) -> bool {
        let found_on_path = path
            .strip_prefix("/usr/sbin")
            .ok()
            .and_then(Path::to_str)
            .is_some_and(|name| self.on_path.contains(&name));
        found_on_path
            || path
                .to_str()
                .is_some_and(|path| self.executables.contains(&path))
    }
}

struct Case {
    name: &'static str,
    conf: &'static str,
    fake: Fake,
    /// `section.key` and its value as TOML text.
    keys: &'static [(&'static str, &'static str)],
    /// `section.key`s that must not be written.
    absent: &'static [&'static str],
    /// The notes, in order: the PortSentry key ("" for a line that is no setting) and kind.
    notes: &'static [(&'static str, NoteKind)],
}

fn imported(case: &Case) -> (Import, toml::Table) {
    let result = import(case.conf, CONF, &case.fake);
    if let Err(error) = &result.self_check {
        panic!(
            "{}: nfsentry refuses the output: {error}\n{}",
            case.name, result.toml
        );
    }
    let table: toml::Table = result
        .toml
        .parse()
        .unwrap_or_else(|e| panic!("{}: not TOML: {e}\n{}", case.name, result.toml));
    (result, table)
}

fn lookup<'t>(table: &'t toml::Table, dotted: &str) -> Option<&'t toml::Value> {
    let (section, key) = dotted.split_once('.')?;
    table.get(section)?.as_table()?.get(key)
}

fn check(case: &Case) {
    let (result, table) = imported(case);
    let shown = || {
        let notes: Vec<String> = result.notes.iter().map(|n| n.render(CONF)).collect();
        format!("{}\n--- notes:\n{}", result.toml, notes.join("\n"))
    };
    for (dotted, expected) in case.keys {
        let expected: toml::Table = format!("v = {expected}")
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad expectation {expected}: {e}", case.name));
        assert_eq!(
            lookup(&table, dotted),
            expected.get("v"),
            "{}: {dotted}\n{}",
            case.name,
            shown()
        );
    }
    for dotted in case.absent {
        assert_eq!(
            lookup(&table, dotted),
            None,
            "{}: {dotted}\n{}",
            case.name,
            shown()
        );
    }
    let notes: Vec<(&str, NoteKind)> = result
        .notes
        .iter()
        .map(|note| (note.key.as_str(), note.kind))
        .collect();
    assert_eq!(notes, case.notes, "{}\n{}", case.name, shown());
}

/// The shipped 1.2 file with one line replaced, as an admin edits it.
fn shipped_with(from: &str, to: &str) -> &'static str {
    assert!(SHIPPED.contains(from), "the fixture has no {from:?}");
    Box::leak(SHIPPED.replacen(from, to, 1).into_boxed_str())
}

const SHIPPED_TCP: &str = "[1, 11, 15, 79, 111, 119, 143, 540, 635, 1080, 1524, 2000, 5742, \
     6667, 12345, 12346, 20034, 27665, 31337, 32771, 32772, 32773, 32774, 40421, 49724, 54320]";
const SHIPPED_UDP: &str = "[1, 7, 9, 69, 161, 162, 513, 635, 640, 641, 700, 37444, 34555, \
     31335, 32770, 32771, 32772, 32773, 32774, 31337, 54321]";
/// What the shipped file's unmapped settings always give.
const SHIPPED_FILES_NOTES: [(&str, NoteKind); 3] = [
    ("HISTORY_FILE", NoteKind::NotMapped),
    ("BLOCKED_FILE", NoteKind::NotMapped),
    ("RESOLVE_HOST", NoteKind::NotMapped),
];

#[test]
fn the_shipped_portsentry_1_2_conf() {
    check(&Case {
        name: "shipped 1.2",
        conf: SHIPPED,
        fake: Fake::default().file(SHIPPED_IGNORE_PATH, SHIPPED_IGNORE),
        keys: &[
            ("daemon.log", "\"syslog\""),
            ("monitor.tcp_ports", SHIPPED_TCP),
            ("monitor.udp_ports", SHIPPED_UDP),
            ("monitor.advanced_tcp", "1024"),
            ("monitor.advanced_udp", "1024"),
            ("monitor.exclude_tcp", "[113, 139]"),
            ("monitor.exclude_udp", "[520, 138, 137, 67]"),
            ("detect.scan_trigger", "0"),
            (
                "detect.ignore_file",
                "\"/usr/local/psionic/portsentry/portsentry.ignore\"",
            ),
            ("respond.block_timeout", "\"0\""),
            ("respond.actions", "[\"hosts-deny\"]"),
            ("respond.hosts_deny_line", "\"ALL: $TARGET$\""),
        ],
        absent: &[
            "detect.ignore",
            "respond.route",
            "respond.command",
            "respond.port_banner",
        ],
        notes: &SHIPPED_FILES_NOTES,
    });
}

#[test]
fn the_shipped_file_keeps_nfsentrys_default_lists() {
    let result = import(SHIPPED, CONF, &Fake::default());
    let loaded = crate::config::Config::from_toml(&result.toml, Path::new("/tmp/i.toml"));
    let loaded = loaded.unwrap_or_else(|e| panic!("{e}\n{}", result.toml));
    let defaults = crate::config::Config::defaults();
    // The lists are PortSentry's, which are nfsentry's defaults; advanced mode adds to them.
    for port in defaults.monitor.tcp.iter() {
        assert!(loaded.monitor.tcp.contains(port), "{port}");
    }
    assert!(loaded.monitor.tcp.contains(1023) && !loaded.monitor.tcp.contains(113));
    assert!(!loaded.monitor.udp.contains(137) && loaded.monitor.udp.contains(54321));
}

#[test]
fn settings_and_what_they_become() {
    let cases = [
        Case {
            name: "the ignore file cannot be read here",
            conf: SHIPPED,
            fake: Fake::default(),
            keys: &[("respond.actions", "[\"hosts-deny\"]")],
            absent: &["detect.ignore_file", "detect.ignore"],
            notes: &[
                ("IGNORE_FILE", NoteKind::NotMapped),
                SHIPPED_FILES_NOTES[0],
                SHIPPED_FILES_NOTES[1],
                SHIPPED_FILES_NOTES[2],
            ],
        },
        Case {
            name: "the shipped file with its iptables recipe and a command turned on",
            conf: shipped_with(
                "#KILL_ROUTE=\"/usr/local/bin/iptables",
                "KILL_ROUTE=\"/usr/local/bin/iptables",
            )
            .replace(
                "#KILL_RUN_CMD=\"/some/path/here/script $TARGET$ $PORT$\"",
                "KILL_RUN_CMD=\"/usr/local/sbin/page-admin $TARGET$ $PORT$\"",
            )
            .leak(),
            fake: Fake::default()
                .programs(&["iptables", "ip6tables"])
                .executables(&["/usr/local/sbin/page-admin"]),
            keys: &[
                ("respond.actions", "[\"hosts-deny\", \"iptables\", \"command\"]"),
                ("respond.command", "[\"/usr/local/sbin/page-admin\", \"$TARGET$\", \"$PORT$\"]"),
                ("respond.command_first", "false"),
            ],
            absent: &["respond.route"],
            notes: &[
                ("IGNORE_FILE", NoteKind::NotMapped),
                SHIPPED_FILES_NOTES[0],
                SHIPPED_FILES_NOTES[1],
                SHIPPED_FILES_NOTES[2],
            ],
        },
        Case {
            name: "Debian's portsentry.conf: log only, a reject route, the new hosts.deny form",
            conf: "TCP_PORTS=\"1,11,15\"\nUDP_PORTS=\"1,7\"\n\
                   IGNORE_FILE=\"/etc/portsentry/portsentry.ignore\"\n\
                   HISTORY_FILE=\"/var/lib/portsentry/portsentry.history\"\n\
                   BLOCKED_FILE=\"/var/lib/portsentry/portsentry.blocked\"\n\
                   RESOLVE_HOST = \"0\"\nBLOCK_UDP=\"0\"\nBLOCK_TCP=\"0\"\n\
                   KILL_ROUTE=\"/sbin/route add -host $TARGET$ reject\"\n\
                   KILL_HOSTS_DENY=\"ALL: $TARGET$ : DENY\"\nSCAN_TRIGGER=\"0\"\n",
            fake: Fake::default().file(
                "/etc/portsentry/portsentry.ignore",
                "# generated\n127.0.0.1/32\n0.0.0.0\n192.0.2.10\n",
            ),
            keys: &[
                ("monitor.tcp_ports", "[1, 11, 15]"),
                ("respond.actions", "[]"),
                ("respond.route", "\"blackhole\""),
                ("respond.hosts_deny_line", "\"ALL: $TARGET$ : DENY\""),
                ("detect.ignore_file", "\"/etc/portsentry/portsentry.ignore\""),
            ],
            absent: &["monitor.advanced_tcp", "monitor.exclude_tcp"],
            notes: &[
                ("HISTORY_FILE", NoteKind::NotMapped),
                ("BLOCKED_FILE", NoteKind::NotMapped),
            ],
        },
        Case {
            name: "TCP blocks, UDP only logs: one list of actions for both",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"0\"\nKILL_HOSTS_DENY=\"ALL: $TARGET$\"\n",
            fake: Fake::default(),
            keys: &[("respond.actions", "[\"hosts-deny\"]")],
            absent: &[],
            notes: &[("BLOCK_UDP", NoteKind::NotMapped)],
        },
        Case {
            name: "BLOCK 2 runs the command alone, first if asked",
            conf: "BLOCK_TCP=\"2\"\nBLOCK_UDP=\"2\"\nKILL_HOSTS_DENY=\"ALL: $TARGET$\"\n\
                   KILL_RUN_CMD_FIRST = \"1\"\n\
                   KILL_RUN_CMD=\"/usr/local/sbin/page-admin $TARGET$ $PORT$ '$MODE$ scan'\"\n",
            fake: Fake::default().executables(&["/usr/local/sbin/page-admin"]),
            keys: &[
                ("respond.actions", "[\"command\"]"),
                (
                    "respond.command",
                    "[\"/usr/local/sbin/page-admin\", \"$TARGET$\", \"$PORT$\", \"$MODE$ scan\"]",
                ),
                ("respond.command_first", "true"),
                ("respond.hosts_deny_line", "\"ALL: $TARGET$\""),
            ],
            absent: &[],
            notes: &[],
        },
        Case {
            name: "a bare program name is looked up on PATH",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_RUN_CMD=\"logger -t portsentry $TARGET$\"\n",
            fake: Fake::default().programs(&["logger"]),
            keys: &[
                ("respond.actions", "[\"command\"]"),
                (
                    "respond.command",
                    "[\"/usr/sbin/logger\", \"-t\", \"portsentry\", \"$TARGET$\"]",
                ),
                ("respond.command_first", "false"),
            ],
            absent: &[],
            notes: &[],
        },
        Case {
            name: "a command that needs a shell is refused",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_RUN_CMD=\"/bin/echo $TARGET$ | /usr/bin/mail -s scan root\"\n\
                   KILL_RUN_CMD_FIRST=\"1\"\n",
            fake: Fake::default().executables(&["/bin/echo", "/usr/bin/mail"]),
            keys: &[("respond.actions", "[]")],
            absent: &["respond.command", "respond.command_first"],
            notes: &[
                ("KILL_RUN_CMD", NoteKind::NotMapped),
                ("KILL_RUN_CMD_FIRST", NoteKind::NotMapped),
            ],
        },
        Case {
            name: "a command that does not exist here is refused",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_RUN_CMD=\"/some/path/here/script $TARGET$ $PORT$\"\n",
            fake: Fake::default(),
            keys: &[("respond.actions", "[]")],
            absent: &["respond.command"],
            notes: &[("KILL_RUN_CMD", NoteKind::NotMapped)],
        },
        Case {
            name: "the iptables recipe, with iptables installed",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_HOSTS_DENY=\"ALL: $TARGET$\"\n\
                   KILL_ROUTE=\"/usr/local/bin/iptables -I INPUT -s $TARGET$ -j DROP\"\n",
            fake: Fake::default().programs(&["iptables", "ip6tables"]),
            keys: &[("respond.actions", "[\"hosts-deny\", \"iptables\"]")],
            absent: &["respond.command", "respond.route"],
            notes: &[],
        },
        Case {
            name: "the ipchains recipe, on a machine without ipchains",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_ROUTE=\"/sbin/ipchains -I input -s $TARGET$ -j DENY -l\"\n",
            fake: Fake::default().programs(&["iptables", "ip6tables"]),
            keys: &[("respond.actions", "[]")],
            absent: &[],
            notes: &[("KILL_ROUTE", NoteKind::NotMapped)],
        },
        Case {
            name: "the ipfilter recipe with its example interface",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_ROUTE=\"/bin/echo 'block in log on \
                   external_interface from $TARGET$/32 to any' | /sbin/ipf -f -\"\n",
            fake: Fake::default().programs(&["ipf"]),
            keys: &[("respond.actions", "[\"ipfilter\"]")],
            absent: &["respond.ipfilter_interface"],
            notes: &[("KILL_ROUTE", NoteKind::MappedInPart)],
        },
        Case {
            name: "the ipfilter recipe with a real interface",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_ROUTE=\"/bin/echo 'block in log on \
                   em0 from $TARGET$/32 to any' | /sbin/ipf -f -\"\n",
            fake: Fake::default().programs(&["ipf"]),
            keys: &[
                ("respond.actions", "[\"ipfilter\"]"),
                ("respond.ipfilter_interface", "\"em0\""),
            ],
            absent: &[],
            notes: &[],
        },
        Case {
            name: "a gateway route and the unedited example gateway",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_ROUTE=\"/sbin/route add -host $TARGET$ gw 333.444.555.666\"\n",
            fake: Fake::default(),
            keys: &[("respond.actions", "[]")],
            absent: &["respond.route"],
            notes: &[("KILL_ROUTE", NoteKind::NotMapped)],
        },
        Case {
            name: "a route through a real gateway",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_ROUTE=\"/sbin/route add -host $TARGET$ gw 192.0.2.254\"\n",
            fake: Fake::default(),
            keys: &[
                ("respond.actions", "[\"route\"]"),
                ("respond.route", "\"192.0.2.254\""),
            ],
            absent: &[],
            notes: &[],
        },
        Case {
            name: "an unknown KILL_ROUTE becomes the command when it is free",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_ROUTE=\"/usr/local/sbin/shun $TARGET$\"\n",
            fake: Fake::default().executables(&["/usr/local/sbin/shun"]),
            keys: &[
                ("respond.actions", "[\"command\"]"),
                ("respond.command", "[\"/usr/local/sbin/shun\", \"$TARGET$\"]"),
                ("respond.command_first", "false"),
            ],
            absent: &[],
            notes: &[],
        },
        Case {
            name: "an unknown KILL_ROUTE cannot have the command KILL_RUN_CMD has",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\n\
                   KILL_ROUTE=\"/usr/local/sbin/shun $TARGET$\"\n\
                   KILL_RUN_CMD=\"/usr/local/sbin/page-admin $TARGET$\"\n",
            fake: Fake::default().executables(&["/usr/local/sbin/shun", "/usr/local/sbin/page-admin"]),
            keys: &[
                ("respond.actions", "[\"command\"]"),
                ("respond.command", "[\"/usr/local/sbin/page-admin\", \"$TARGET$\"]"),
            ],
            absent: &[],
            notes: &[("KILL_ROUTE", NoteKind::NotMapped)],
        },
        Case {
            name: "a hosts.deny line with $PORT$",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_HOSTS_DENY=\"ALL: $TARGET$ # $PORT$\"\n",
            fake: Fake::default(),
            keys: &[("respond.actions", "[]")],
            absent: &["respond.hosts_deny_line"],
            notes: &[("KILL_HOSTS_DENY", NoteKind::NotMapped)],
        },
        Case {
            name: "a hosts.deny line nfsentry could not tell from the admin's own",
            conf: "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_HOSTS_DENY=\"ALL: x$TARGET$\"\n",
            fake: Fake::default(),
            keys: &[("respond.actions", "[]")],
            absent: &["respond.hosts_deny_line"],
            notes: &[("KILL_HOSTS_DENY", NoteKind::NotMapped)],
        },
        Case {
            name: "port lists: ranges kept, bad items left out",
            conf: "TCP_PORTS=\"1, 70000,x,20-25,,0\"\nUDP_PORTS=\"\"\n\
                   ADVANCED_PORTS_TCP=\"70000\"\nADVANCED_PORTS_UDP=\"many\"\n\
                   ADVANCED_EXCLUDE_TCP=\"113,139\"\n",
            fake: Fake::default(),
            keys: &[
                ("monitor.tcp_ports", "[1, \"20-25\"]"),
                ("monitor.udp_ports", "[]"),
                ("monitor.advanced_tcp", "65536"),
                ("monitor.exclude_tcp", "[113, 139]"),
            ],
            absent: &["monitor.advanced_udp", "monitor.exclude_udp"],
            notes: &[
                ("TCP_PORTS", NoteKind::MappedInPart),
                ("TCP_PORTS", NoteKind::MappedInPart),
                ("TCP_PORTS", NoteKind::MappedInPart),
                ("ADVANCED_PORTS_TCP", NoteKind::MappedInPart),
                ("ADVANCED_PORTS_UDP", NoteKind::NotMapped),
            ],
        },
        Case {
            name: "scan trigger, banner and host lookups",
            conf: "SCAN_TRIGGER=\"2\"\nRESOLVE_HOST=\"1\"\n\
                   PORT_BANNER=\"** UNAUTHORIZED ACCESS PROHIBITED **\"\n",
            fake: Fake::default(),
            keys: &[
                ("detect.scan_trigger", "2"),
                ("respond.port_banner", "\"** UNAUTHORIZED ACCESS PROHIBITED **\""),
            ],
            absent: &[],
            notes: &[
                ("RESOLVE_HOST", NoteKind::NotMapped),
                ("PORT_BANNER", NoteKind::NoEffect),
            ],
        },
        Case {
            name: "an unreadable scan trigger is PortSentry's 0",
            conf: "SCAN_TRIGGER=\"two\"\n",
            fake: Fake::default(),
            keys: &[("detect.scan_trigger", "0")],
            absent: &[],
            notes: &[("SCAN_TRIGGER", NoteKind::MappedInPart)],
        },
        Case {
            name: "lines PortSentry could not read, later assignments, unknown keys",
            conf: "# comment\n\
                   SCAN_TRIGGER=\"1\"\n\
                   SCAN_TRIGGER = \"3\" # the later one wins\n\
                   FOO_BAR=\"1\"\n\
                   BLOCK_TCP=1\n\
                   \x20 BLOCK_UDP=\"1\"\n\
                   this is not a setting\n\
                   PORT_BANNER=\"no closing quote\n",
            fake: Fake::default(),
            keys: &[
                ("detect.scan_trigger", "3"),
                ("respond.port_banner", "\"no closing quote\""),
                ("respond.actions", "[]"),
            ],
            absent: &[],
            notes: &[
                ("SCAN_TRIGGER", NoteKind::NotMapped),
                ("FOO_BAR", NoteKind::NotMapped),
                ("BLOCK_TCP", NoteKind::NotMapped),
                ("", NoteKind::NotMapped),
                ("", NoteKind::NotMapped),
                ("PORT_BANNER", NoteKind::MappedInPart),
                ("PORT_BANNER", NoteKind::NoEffect),
            ],
        },
        Case {
            name: "an ignore file nfsentry reads differently is carried over entry by entry",
            conf: "IGNORE_FILE=\"etc/portsentry.ignore\"\n",
            fake: Fake::default().file(
                "/etc/portsentry.ignore",
                "127.0.0.1/32\n0.0.0.0\n192.0.2.1 gateway\n",
            ),
            keys: &[(
                "detect.ignore",
                "[\"127.0.0.0/8\", \"::1/128\", \"127.0.0.1/32\", \"0.0.0.0/32\", \"192.0.2.1/32\"]",
            )],
            absent: &["detect.ignore_file"],
            notes: &[("", NoteKind::MappedInPart)],
        },
        Case {
            name: "an empty file",
            conf: "",
            fake: Fake::default(),
            keys: &[("respond.actions", "[]"), ("detect.scan_trigger", "0")],
            absent: &["monitor.tcp_ports", "monitor.advanced_tcp"],
            notes: &[],
        },
    ];
    for case in &cases {
        check(case);
    }
}

#[test]
fn notes_name_the_file_the_line_and_the_setting() {
    let result = import(
        "BLOCK_TCP=\"1\"\nBLOCK_UDP=\"1\"\nKILL_RUN_CMD=\"/bin/a; /bin/b\"\n",
        CONF,
        &Fake::default(),
    );
    let notes: Vec<String> = result.notes.iter().map(|note| note.render(CONF)).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with(
            "/etc/portsentry/portsentry.conf:3: KILL_RUN_CMD: not mapped: it uses a command \
             list (;). PortSentry ran it through /bin/sh -c"
        ),
        "{}",
        notes[0]
    );
}

#[test]
fn alert_only_shows_the_actions_blocking_would_take() {
    let result = import(
        "BLOCK_TCP=\"0\"\nBLOCK_UDP=\"0\"\nKILL_HOSTS_DENY=\"ALL: $TARGET$\"\n\
         KILL_ROUTE=\"/sbin/route add -host $TARGET$ reject\"\n",
        CONF,
        &Fake::default(),
    );
    assert!(
        result
            .toml
            .contains("# actions = [\"hosts-deny\", \"route\"]\n"),
        "{}",
        result.toml
    );
    assert!(result.toml.contains("\nactions = []\n"), "{}", result.toml);
}

#[test]
fn the_output_says_where_each_value_came_from_and_what_advanced_mode_does() {
    let result = import(SHIPPED, CONF, &Fake::default());
    let toml = &result.toml;
    let line_of = |needle: &str| {
        SHIPPED
            .lines()
            .position(|line| line.starts_with(needle))
            .map(|index| index + 1)
            .unwrap_or_else(|| panic!("no {needle} in the fixture"))
    };
    // The comments as running text, whatever the wrapping.
    let comments: Vec<&str> = toml
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .collect();
    let comments = comments.join(" ");
    assert!(comments.starts_with(&format!(
        "nfsentry configuration imported from {CONF} by `nfsentry import-portsentry`."
    )));
    assert!(comments.contains(&format!("From TCP_PORTS (line {}).", line_of("TCP_PORTS="))));
    assert!(
        comments.contains("PortSentry ran one mode per process"),
        "{toml}"
    );
    assert!(
        comments.contains("set advanced_tcp and advanced_udp to 0"),
        "{toml}"
    );
    // Comments are wrapped like config/nfsentry.toml's; keys stay on one line, long or not.
    for line in toml.lines().filter(|line| line.starts_with('#')) {
        assert!(line.len() <= 96, "{line}");
    }
}
