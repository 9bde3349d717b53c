//! Decides what each PortSentry setting becomes in nfsentry.toml: the keys, the comments that
//! say where they came from and what nfsentry does differently, and a note for everything that
//! cannot be carried over. Single values are checked with nfsentry's own loader, so a value it
//! would refuse becomes a note instead of a broken file. The responses (BLOCK_*, KILL_*) are
//! [`super::responses`]'s.

use std::path::Path;

use super::conf::Settings;
use super::ignore::{self, Ignore};
use super::out::{Section, TomlOut};
use super::{quoted, responses, Note, NoteKind, Surroundings};
use crate::config::{self, Config};

/// `advanced_tcp = 65536` watches every port.
const ADVANCED_MAX: u32 = 65_536;

/// Builds the whole output.
pub(super) fn map(
    settings: &Settings,
    name: &str,
    around: &dyn Surroundings,
    notes: &mut Vec<Note>,
) -> TomlOut {
    let mut out = TomlOut::default();
    out.header(format!(
        "nfsentry configuration imported from {name} by `nfsentry import-portsentry`."
    ));
    out.header(
        "Check it with `nfsentry check-config --config FILE` before use. Keys not written here \
         keep nfsentry's defaults, which config/nfsentry.toml documents one by one. What could \
         not be carried over was listed, with the reason, when the import ran.",
    );
    out.comment(
        Section::Daemon,
        "PortSentry logged to syslog, facility daemon, level notice, and so does nfsentry with \
         this setting, in PortSentry's words (\"attackalert: ... scan from host: ...\"). Its \
         lines are tagged nfsentry[PID] where PortSentry's were portsentry[PID]: log watchers \
         that match the program name need the new one. It needs the syslog socket /dev/log; \
         under systemd, log = \"stderr\" reaches the journal with the same priorities.",
    );
    out.key(Section::Daemon, "log", "syslog".into());
    monitor(settings, &mut out, notes);
    detect(settings, around, &mut out, notes);
    responses::respond(settings, around, &mut out, notes);
    files(settings, notes);
    out
}

// ---------------------------------------------------------------- [monitor]

fn monitor(settings: &Settings, out: &mut TomlOut, notes: &mut Vec<Note>) {
    for (key, nfsentry_key) in [("TCP_PORTS", "tcp_ports"), ("UDP_PORTS", "udp_ports")] {
        match port_list(settings, key, notes) {
            Some(ports) => {
                out.comment(
                    Section::Monitor,
                    format!("From {key}{}.", at(settings, key)),
                );
                out.key(Section::Monitor, nfsentry_key, ports);
            }
            None => out.comment(
                Section::Monitor,
                format!(
                    "{key} is not set: nfsentry's default {nfsentry_key}, PortSentry's shipped \
                     list, applies."
                ),
            ),
        }
    }
    let keys = [
        ("ADVANCED_PORTS_TCP", "advanced_tcp"),
        ("ADVANCED_PORTS_UDP", "advanced_udp"),
        ("ADVANCED_EXCLUDE_TCP", "exclude_tcp"),
        ("ADVANCED_EXCLUDE_UDP", "exclude_udp"),
    ];
    if keys.iter().all(|(key, _)| settings.get(key).is_none()) {
        return;
    }
    out.blank(Section::Monitor);
    out.comment(
        Section::Monitor,
        "From ADVANCED_PORTS_TCP/UDP and ADVANCED_EXCLUDE_TCP/UDP. PortSentry ran one mode per \
         process: -tcp/-udp and -stcp/-sudp watched the lists above, -atcp/-audp every port \
         below ADVANCED_PORTS_* except the excludes and the ports in use. nfsentry does both at \
         once: it watches the listed ports and, with advanced_tcp = N, every port from 1 to N-1 \
         that is not in exclude_tcp (the excludes thin out the advanced range only). Ports with \
         a listening socket and connections conntrack knows are never counted. If PortSentry \
         ran only in -tcp/-udp or -stcp/-sudp mode here, set advanced_tcp and advanced_udp to 0 \
         to keep watching the lists alone.",
    );
    for (key, nfsentry_key) in &keys[..2] {
        if let Some(limit) = advanced_limit(settings, key, notes) {
            out.key(Section::Monitor, nfsentry_key, i64::from(limit).into());
        }
    }
    for (key, nfsentry_key) in &keys[2..] {
        if let Some(ports) = port_list(settings, key, notes) {
            out.key(Section::Monitor, nfsentry_key, ports);
        }
    }
}

/// A comma-separated PortSentry list as a TOML array of ports and `"first-last"` ranges (which
/// PortSentry 2.x took); an item nfsentry refuses is left out with a note.
fn port_list(settings: &Settings, key: &str, notes: &mut Vec<Note>) -> Option<toml::Value> {
    let setting = settings.get(key)?;
    let mut items = Vec::new();
    for item in setting.value.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        match config::port_range_from_text(item) {
            Ok((first, last)) if first == last => items.push(i64::from(first).into()),
            Ok((first, last)) => items.push(format!("{first}-{last}").into()),
            Err(problem) => notes.push(Note::conf(
                setting.line,
                key,
                NoteKind::MappedInPart,
                format!(
                    "{} {problem}; the other ports are carried over",
                    quoted(item)
                ),
            )),
        }
    }
    Some(toml::Value::Array(items))
}

/// ADVANCED_PORTS_*: PortSentry watched the ports below it, as `advanced_*` does.
fn advanced_limit(settings: &Settings, key: &str, notes: &mut Vec<Note>) -> Option<u32> {
    let setting = settings.get(key)?;
    let value = setting.value.trim();
    let Ok(limit) = value.parse::<u64>() else {
        notes.push(Note::conf(
            setting.line,
            key,
            NoteKind::NotMapped,
            format!("{} is not a number of ports", quoted(value)),
        ));
        return None;
    };
    if limit > u64::from(ADVANCED_MAX) {
        notes.push(Note::conf(
            setting.line,
            key,
            NoteKind::MappedInPart,
            format!("{limit} is more than every port; written as {ADVANCED_MAX}, every port"),
        ));
        return Some(ADVANCED_MAX);
    }
    u32::try_from(limit).ok()
}

// ---------------------------------------------------------------- [detect]

fn detect(
    settings: &Settings,
    around: &dyn Surroundings,
    out: &mut TomlOut,
    notes: &mut Vec<Note>,
) {
    let trigger = scan_trigger(settings, notes);
    out.comment(
        Section::Detect,
        format!(
            "From SCAN_TRIGGER{}. nfsentry acts on a source's hit number scan_trigger + 1, as \
             PortSentry documented the setting (\"the number of port connects you will allow \
             before an alarm\"), and counts distinct ports per source, forgetting a source after \
             `window` of silence. PortSentry 1.2's state engine acted one hit earlier for values \
             above 0 and counted repeated packets; lower the value by one to keep that.",
            at(settings, "SCAN_TRIGGER")
        ),
    );
    out.key(Section::Detect, "scan_trigger", i64::from(trigger).into());
    ignore_file(settings, around, out, notes);
}

/// PortSentry read SCAN_TRIGGER with atoi(): anything but a count is 0, react at once.
fn scan_trigger(settings: &Settings, notes: &mut Vec<Note>) -> u32 {
    let Some(setting) = settings.get("SCAN_TRIGGER") else {
        return 0;
    };
    match setting.value.trim().parse::<u32>() {
        Ok(trigger) => trigger,
        Err(_) => {
            notes.push(Note::conf(
                setting.line,
                "SCAN_TRIGGER",
                NoteKind::MappedInPart,
                format!(
                    "{} is not a count; PortSentry read it as 0 (react at once), and so does \
                     this import",
                    quoted(&setting.value)
                ),
            ));
            0
        }
    }
}

fn ignore_file(
    settings: &Settings,
    around: &dyn Surroundings,
    out: &mut TomlOut,
    notes: &mut Vec<Note>,
) {
    let Some(setting) = settings.get("IGNORE_FILE").filter(|s| !s.value.is_empty()) else {
        return;
    };
    // PortSentry opened it after changing to `/`; nfsentry would resolve a relative path
    // against the directory of its config file.
    let path = Path::new("/").join(&setting.value);
    let text = match around.read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            notes.push(Note::conf(
                setting.line,
                "IGNORE_FILE",
                NoteKind::NotMapped,
                format!(
                    "{} cannot be read here ({error}); nfsentry's own ignore list (loopback) \
                     applies, and nfsentry never counts the host's own addresses. Copy the file \
                     and set detect.ignore_file to keep its entries",
                    path.display()
                ),
            ));
            return;
        }
    };
    let line = at(settings, "IGNORE_FILE");
    match ignore::compare(&text, &path, notes) {
        Ignore::SameFile => {
            out.comment(
                Section::Detect,
                format!(
                    "From IGNORE_FILE{line}. nfsentry reads this file at start to the same \
                     effect as PortSentry did, and takes IPv6 entries too. It stays PortSentry's \
                     file: keep it when PortSentry is removed (Debian's package deletes it on \
                     purge), or copy it to /etc/nfsentry/ignore and change the path. The host's \
                     own addresses need not be listed: nfsentry never counts them."
                ),
            );
            out.key(
                Section::Detect,
                "ignore_file",
                path.display().to_string().into(),
            );
        }
        Ignore::Entries(entries) => {
            out.comment(
                Section::Detect,
                format!(
                    "The entries of IGNORE_FILE {}{line}, carried over here because nfsentry \
                     reads some of its lines differently (the import named each one), after \
                     nfsentry's own loopback entries.",
                    path.display()
                ),
            );
            // nfsentry's own entries first: writing `ignore` replaces its default.
            let mut kept = Config::defaults().detect.ignore;
            for entry in entries {
                if !kept.contains(&entry) {
                    kept.push(entry);
                }
            }
            let values = kept.iter().map(|entry| entry.to_string().into()).collect();
            out.key(Section::Detect, "ignore", toml::Value::Array(values));
        }
    }
}

// ---------------------------------------------------------------- settings without a key

fn files(settings: &Settings, notes: &mut Vec<Note>) {
    let mut unmapped = |key: &str, reason: &str| {
        if let Some(setting) = settings.get(key) {
            notes.push(Note::conf(setting.line, key, NoteKind::NotMapped, reason));
        }
    };
    unmapped(
        "HISTORY_FILE",
        "nfsentry appends the same lines (\"... Host: ADDR/ADDR Port: N TCP Blocked\") to \
         history in its state_dir (/var/lib/nfsentry/history) and never truncates it; point \
         fail2ban's portsentry jail (logpath) and other readers there",
    );
    unmapped(
        "BLOCKED_FILE",
        "PortSentry emptied it at each start and listed that run's blocks (with .tcp, .atcp, \
         ... appended per mode); nfsentry keeps the blocks in force, across restarts, in its \
         own journal, blocks in its state_dir",
    );
    if let Some(setting) = settings.get("RESOLVE_HOST") {
        if setting.value.trim() == "1" {
            notes.push(Note::conf(
                setting.line,
                "RESOLVE_HOST",
                NoteKind::NotMapped,
                "nfsentry never looks names up: on the packet path a reverse lookup would let the \
                 scanner choose both the name in your logs and how long it takes; lines show \
                 ADDR/ADDR where PortSentry showed NAME/ADDR",
            ));
        }
    }
    if let Some(setting) = settings.get("PORT_BANNER").filter(|s| !s.value.is_empty()) {
        notes.push(Note::conf(
            setting.line,
            "PORT_BANNER",
            NoteKind::NoEffect,
            "written as respond.port_banner, which nfsentry accepts but never sends: it \
             completes no handshake on a bait port, so there is no connection to write to",
        ));
    }
}

// ---------------------------------------------------------------- helpers

/// ` (line 12)`, or nothing when the key is absent.
pub(super) fn at(settings: &Settings, key: &str) -> String {
    settings
        .line(key)
        .map(|line| format!(" (line {line})"))
        .unwrap_or_default()
}

/// Whether nfsentry's loader takes `key = value` in `[section]`; its complaint otherwise.
pub(super) fn accepted(section: &str, key: &str, value: &toml::Value) -> Result<(), String> {
    let text = format!("[{section}]\n{key} = {value}\n");
    Config::from_toml(&text, Path::new("imported.toml"))
        .map(|_| ())
        .map_err(|error| error.message)
}
