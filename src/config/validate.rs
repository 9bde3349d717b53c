//! Turns the raw file into a [`Config`]: fills defaults, checks every range and word, and reads
//! the ignore file; errors point at the key, line and value. It never touches the system
//! beyond reading that one file.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::duration::{duration_from_seconds, format_duration, parse_duration};
use super::error::{ConfigError, SourceText};
use super::files;
use super::ignore::{ignorable, parse_ignore_list, parse_network};
use super::ports::{port_from_number, port_range_from_text, PortSet};
use super::raw::{
    Field, ListField, RawConfig, RawDaemon, RawDetect, RawDuration, RawMonitor, RawPortItem,
    RawQueue, RawRespond,
};
use super::{
    read_text, ActionKind, Config, ConfigWord, Daemon, Detect, LogTarget, Monitor, Origin,
    QueueMode, QueueRange, Respond, RouteTarget, Verdict, Verify, DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_CONTROL_SOCKET, DEFAULT_EXCLUDE_TCP, DEFAULT_EXCLUDE_UDP, DEFAULT_HOSTS_DENY,
    DEFAULT_HOSTS_DENY_LINE, DEFAULT_IGNORE, DEFAULT_MAX_BLOCKS, DEFAULT_MAX_BLOCKS_PER_SEC,
    DEFAULT_MAX_SOURCES, DEFAULT_NFLOG_GROUP, DEFAULT_QUEUE, DEFAULT_SCAN_TRIGGER,
    DEFAULT_STATE_DIR, DEFAULT_SYSLOG_SOCKET, DEFAULT_TABLE, DEFAULT_TCP_PORTS, DEFAULT_UDP_PORTS,
    DEFAULT_UNVERIFIED_TIMEOUT, DEFAULT_WINDOW, MAX_BLOCKS_PER_SEC_LIMIT, MAX_TABLE_ENTRIES,
    TARGET_PLACEHOLDER,
};

/// The longest timeout the kernel takes for an nft set element: nf_tables gets milliseconds and
/// refuses any value from `u64::MAX / 1_000_000` up with ERANGE (`nf_msecs_to_jiffies64` turns
/// them into nanoseconds first). 213503d23h34m33s708ms, about 584 years; measured on 6.18, and
/// `tests/hostile_config.rs` keeps measuring it. Longer is refused here rather than by every
/// kernel insert.
pub const NFT_TIMEOUT_MAX: Duration = Duration::from_millis(u64::MAX / 1_000_000 - 1);

/// Longest nft table name accepted; nft allows more, but a name this long is already a typo.
const TABLE_NAME_MAX_CHARS: usize = 64;
/// IFNAMSIZ is 16 including the terminating NUL.
const INTERFACE_NAME_MAX_BYTES: usize = 15;
/// `advanced_tcp = 65536` means every port: the range is 1..advanced, exclusive.
const ADVANCED_LIMIT: i64 = 65_536;

pub(super) fn validate(raw: RawConfig, source: SourceText<'_>) -> Result<Config, ConfigError> {
    let config = Config {
        origin: Origin::File(source.file.to_path_buf()),
        daemon: daemon(&raw.daemon, source)?,
        monitor: monitor(&raw.monitor, source)?,
        detect: detect(&raw.detect, source)?,
        respond: respond(&raw.respond, source)?,
        crowdsec: super::crowdsec::validate(raw.crowdsec.as_ref(), &raw.respond, source)?,
    };
    // nfsentry deletes and rebuilds its own table whole; the admin's sets must outlive that.
    if let (Some(admin), Some(field)) = (&config.respond.blocked_table, &raw.respond.blocked_table)
    {
        if *admin == config.daemon.table {
            return Err(source.value_error(
                &field.span(),
                "respond.blocked_table",
                field.get_ref(),
                format_args!(
                    "is nfsentry's own table (daemon.table = {:?}), which nfsentry deletes and \
                     rebuilds; name a table of your own ruleset",
                    config.daemon.table
                ),
            ));
        }
    }
    Ok(config)
}

fn daemon(raw: &RawDaemon, source: SourceText<'_>) -> Result<Daemon, ConfigError> {
    let table = match &raw.table {
        None => DEFAULT_TABLE.to_owned(),
        Some(table) => {
            check(source, table, "daemon.table", is_table_name, || {
                format!(
                    "is not a table name (1-{TABLE_NAME_MAX_CHARS} characters of A-Z, a-z, \
                     0-9, '_' and '-', starting with a letter)"
                )
            })?;
            table.get_ref().clone()
        }
    };
    let log = match &raw.log {
        None => LogTarget::Stderr,
        Some(log) => log_target(log.get_ref()).ok_or_else(|| {
            source.value_error(
                &log.span(),
                "daemon.log",
                log.get_ref(),
                "is not a log target (\"stderr\", \"syslog\", \"syslog:/absolute/socket\" or \
                 \"file:/absolute/path\")",
            )
        })?,
    };
    let mut interfaces = Vec::new();
    for name in list(&raw.interfaces) {
        check(source, name, "daemon.interfaces", is_interface_name, || {
            INTERFACE_NAME_PROBLEM.to_owned()
        })?;
        check(source, name, "daemon.interfaces", is_nft_quotable, || {
            NFT_UNQUOTABLE_PROBLEM.to_owned()
        })?;
        if interfaces.contains(name.get_ref()) {
            return Err(source.value_error(
                &name.span(),
                "daemon.interfaces",
                name.get_ref(),
                "is listed twice",
            ));
        }
        interfaces.push(name.get_ref().clone());
    }
    Ok(Daemon {
        queue: queue(source, &raw.queue)?,
        table,
        state_dir: state_dir(source, &raw.state_dir)?,
        control_socket: absolute_path(
            source,
            &raw.control_socket,
            "daemon.control_socket",
            DEFAULT_CONTROL_SOCKET,
        )?,
        log,
        interfaces,
        nflog_group: integer(
            source,
            &raw.nflog_group,
            "daemon.nflog_group",
            0..=u16::MAX.into(),
            "is not an NFLOG group (0-65535)",
            DEFAULT_NFLOG_GROUP,
        )?,
        queue_mode: word::<Option<QueueMode>>(source, &raw.queue_mode, "daemon.queue_mode", None)?,
        history_max_bytes: integer(
            source,
            &raw.history_max_bytes,
            "daemon.history_max_bytes",
            i64::try_from(*super::HISTORY_MAX_BYTES_RANGE.start()).unwrap_or(0)
                ..=i64::try_from(*super::HISTORY_MAX_BYTES_RANGE.end()).unwrap_or(i64::MAX),
            "is out of range (4096 bytes to 1 TiB)",
            super::DEFAULT_HISTORY_MAX_BYTES,
        )?,
        keep_blocks_on_exit: raw
            .keep_blocks_on_exit
            .as_ref()
            .is_some_and(|keep| *keep.get_ref()),
    })
}

/// `daemon.queue`: a number, or a string with a number or a "first-last" range.
fn queue(source: SourceText<'_>, field: &Field<RawQueue>) -> Result<QueueRange, ConfigError> {
    let Some(field) = field else {
        return Ok(DEFAULT_QUEUE);
    };
    let (text, parsed) = match field.get_ref() {
        RawQueue::Number(number) => (
            number.to_string(),
            u16::try_from(*number)
                .map(QueueRange::single)
                .map_err(|_| "is not a queue number (0-65535)".to_owned()),
        ),
        RawQueue::Text(text) => (text.clone(), QueueRange::parse(text)),
    };
    parsed.map_err(|problem| source.value_error(&field.span(), "daemon.queue", &text, problem))
}

fn monitor(raw: &RawMonitor, source: SourceText<'_>) -> Result<Monitor, ConfigError> {
    let tcp = watched_ports(
        port_list(
            source,
            &raw.tcp_ports,
            "monitor.tcp_ports",
            &DEFAULT_TCP_PORTS,
        )?,
        advanced_limit(source, &raw.advanced_tcp, "monitor.advanced_tcp")?,
        &port_list(
            source,
            &raw.exclude_tcp,
            "monitor.exclude_tcp",
            &DEFAULT_EXCLUDE_TCP,
        )?,
    );
    let udp = watched_ports(
        port_list(
            source,
            &raw.udp_ports,
            "monitor.udp_ports",
            &DEFAULT_UDP_PORTS,
        )?,
        advanced_limit(source, &raw.advanced_udp, "monitor.advanced_udp")?,
        &port_list(
            source,
            &raw.exclude_udp,
            "monitor.exclude_udp",
            &DEFAULT_EXCLUDE_UDP,
        )?,
    );
    Ok(Monitor { tcp, udp })
}

/// Listed ports, plus every port from 1 to `advanced_limit - 1` that is not excluded. The
/// excludes only thin out the advanced range: listing a port is the stronger statement.
fn watched_ports(listed: PortSet, advanced_limit: u32, exclude: &PortSet) -> PortSet {
    let mut watched = listed;
    let advanced = (1..=u16::MAX).take_while(|port| u32::from(*port) < advanced_limit);
    watched.extend(advanced.filter(|port| !exclude.contains(*port)));
    watched
}

fn advanced_limit(
    source: SourceText<'_>,
    field: &Field<i64>,
    key: &str,
) -> Result<u32, ConfigError> {
    integer(
        source,
        field,
        key,
        0..=ADVANCED_LIMIT,
        "is out of range (0-65536: 0 is off, N watches ports 1 to N-1, 65536 every port)",
        0,
    )
}

fn port_list(
    source: SourceText<'_>,
    field: &ListField<RawPortItem>,
    key: &str,
    default: &[u16],
) -> Result<PortSet, ConfigError> {
    let Some(items) = field else {
        return Ok(default.iter().copied().collect());
    };
    let mut ports = PortSet::new();
    for item in items.get_ref() {
        match item.get_ref() {
            RawPortItem::Number(number) => {
                let port = port_from_number(*number).map_err(|problem| {
                    source.value_error(&item.span(), key, &number.to_string(), problem)
                })?;
                ports.insert(port);
            }
            RawPortItem::Text(text) => {
                let (first, last) = port_range_from_text(text)
                    .map_err(|problem| source.value_error(&item.span(), key, text, problem))?;
                ports.insert_range(first, last);
            }
        }
    }
    Ok(ports)
}

fn detect(raw: &RawDetect, source: SourceText<'_>) -> Result<Detect, ConfigError> {
    let window = duration(source, &raw.window, "detect.window", DEFAULT_WINDOW)?;
    if window.is_zero() {
        return Err(zero_duration_error(source, &raw.window, "detect.window"));
    }
    let mut ignore = match &raw.ignore {
        None => DEFAULT_IGNORE.to_vec(),
        Some(entries) => {
            let mut networks = Vec::with_capacity(entries.get_ref().len());
            for entry in entries.get_ref() {
                let refuse = |problem: &dyn std::fmt::Display| {
                    source.value_error(&entry.span(), "detect.ignore", entry.get_ref(), problem)
                };
                let network = parse_network(entry.get_ref()).map_err(|problem| refuse(&problem))?;
                let network = ignorable(network).map_err(|problem| refuse(&problem))?;
                networks.push(network);
            }
            networks
        }
    };
    ignore.extend(ignore_file(source, &raw.ignore_file)?);
    Ok(Detect {
        scan_trigger: integer(
            source,
            &raw.scan_trigger,
            "detect.scan_trigger",
            0..=u32::MAX.into(),
            "is out of range (0-4294967295)",
            DEFAULT_SCAN_TRIGGER,
        )?,
        window,
        ignore,
        max_sources: table_bound(source, &raw.max_sources, "detect.max_sources")
            .map(|bound| bound.unwrap_or(DEFAULT_MAX_SOURCES))?,
        verify: word(source, &raw.verify, "detect.verify", Verify::Off)?,
    })
}

/// The entries of `ignore_file`, or none when it is unset or "". A relative path is taken
/// from the directory of the config file, so a config and its ignore file can move together.
fn ignore_file(source: SourceText<'_>, field: &Field<String>) -> Result<Vec<IpNet>, ConfigError> {
    let Some(field) = field else {
        return Ok(Vec::new());
    };
    let written = field.get_ref();
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let path = match source.file.parent() {
        Some(directory) => directory.join(written),
        None => PathBuf::from(written),
    };
    let text = read_text(&path).map_err(|error| {
        // Point at the key that names the file, so the admin sees why it was read at all.
        let mut from_key = source.value_error(
            &field.span(),
            "detect.ignore_file",
            written,
            format_args!("cannot be used: {error}"),
        );
        from_key.cause = error.cause;
        from_key
    })?;
    parse_ignore_list(&text, &path)
}

fn respond(raw: &RawRespond, source: SourceText<'_>) -> Result<Respond, ConfigError> {
    let block_timeout = kernel_timeout(
        source,
        &raw.block_timeout,
        "respond.block_timeout",
        Duration::ZERO,
    )?;
    let command_timeout = duration(
        source,
        &raw.command_timeout,
        "respond.command_timeout",
        DEFAULT_COMMAND_TIMEOUT,
    )?;
    if command_timeout.is_zero() {
        return Err(zero_duration_error(
            source,
            &raw.command_timeout,
            "respond.command_timeout",
        ));
    }
    let actions = actions(source, &raw.actions)?;
    let hosts_deny_line = match &raw.hosts_deny_line {
        None => DEFAULT_HOSTS_DENY_LINE.to_owned(),
        Some(line) => {
            let text = line.get_ref();
            if !text.contains(TARGET_PLACEHOLDER) {
                return Err(source.value_error(
                    &line.span(),
                    "respond.hosts_deny_line",
                    text,
                    format_args!("must contain {TARGET_PLACEHOLDER}"),
                ));
            }
            // A newline would let one block write several hosts.deny rules.
            if text.chars().any(char::is_control) {
                return Err(source.value_error(
                    &line.span(),
                    "respond.hosts_deny_line",
                    text,
                    "must be a single line (no control characters)",
                ));
            }
            if let Some(problem) = hosts_deny_rule_problem(text) {
                return Err(source.value_error(
                    &line.span(),
                    "respond.hosts_deny_line",
                    text,
                    problem,
                ));
            }
            text.clone()
        }
    };
    let route = match &raw.route {
        None => RouteTarget::Blackhole,
        Some(route) => {
            let error = |problem: &str| {
                source.value_error(&route.span(), "respond.route", route.get_ref(), problem)
            };
            let target = route_target(route.get_ref())
                .ok_or_else(|| error("is neither \"blackhole\" nor a gateway IP address"))?;
            if let RouteTarget::Gateway(gateway) = target {
                if let Some(problem) = gateway_problem(gateway) {
                    return Err(error(problem));
                }
            }
            target
        }
    };
    let command = command(source, &raw.command, &raw.actions, &actions)?;
    let blocked_table = match non_empty(&raw.blocked_table) {
        None => None,
        Some(field) => Some(blocked_table(source, field)?),
    };
    let ipfilter_interface = match non_empty(&raw.ipfilter_interface) {
        None => None,
        Some(name) => {
            check(
                source,
                name,
                "respond.ipfilter_interface",
                is_interface_name,
                || INTERFACE_NAME_PROBLEM.to_owned(),
            )?;
            Some(name.get_ref().clone())
        }
    };
    Ok(Respond {
        verdict: word(source, &raw.verdict, "respond.verdict", Verdict::Drop)?,
        block_timeout: Some(block_timeout).filter(|timeout| !timeout.is_zero()),
        unverified_timeout: Some(kernel_timeout(
            source,
            &raw.unverified_timeout,
            "respond.unverified_timeout",
            DEFAULT_UNVERIFIED_TIMEOUT,
        )?)
        .filter(|cap| !cap.is_zero()),
        max_blocks: table_bound(source, &raw.max_blocks, "respond.max_blocks")
            .map(|bound| bound.unwrap_or(DEFAULT_MAX_BLOCKS))?,
        max_blocks_per_sec: integer(
            source,
            &raw.max_blocks_per_sec,
            "respond.max_blocks_per_sec",
            0..=MAX_BLOCKS_PER_SEC_LIMIT.into(),
            &format!("is out of range (0-{MAX_BLOCKS_PER_SEC_LIMIT}; 0 is unlimited)"),
            DEFAULT_MAX_BLOCKS_PER_SEC,
        )?,
        actions,
        hosts_deny: absolute_path(
            source,
            &raw.hosts_deny,
            "respond.hosts_deny",
            DEFAULT_HOSTS_DENY,
        )?,
        hosts_deny_line,
        route,
        command,
        command_first: raw
            .command_first
            .as_ref()
            .is_some_and(|first| *first.get_ref()),
        command_timeout,
        ipfilter_interface,
        port_banner: non_empty(&raw.port_banner).map(|banner| banner.get_ref().clone()),
        blocked_table,
    })
}

/// `respond.blocked_table`: `"inet NAME"`, the admin's table holding `blocked_v4` and
/// `blocked_v6`. Only `inet`: one table holds both families' sets, and its rules can match
/// both. The name is the table's, which the admin chose, so only what nft cannot name is
/// refused. Whether the table and its sets exist is the kernel's to say, at `check-config` and
/// at run time, since the admin's ruleset may be loaded after nfsentry starts.
fn blocked_table(source: SourceText<'_>, field: &Spanned<String>) -> Result<String, ConfigError> {
    let key = "respond.blocked_table";
    let written = field.get_ref();
    let error = |problem: &str| source.value_error(&field.span(), key, written, problem);
    let mut words = written.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("inet"), Some(name), None) if is_table_name(name) => Ok(name.to_owned()),
        (Some("inet"), Some(_), None) => Err(error(&format!(
            "does not name a table (\"inet NAME\", NAME 1-{TABLE_NAME_MAX_CHARS} characters of \
             A-Z, a-z, 0-9, '_' and '-', starting with a letter)"
        ))),
        (Some("ip" | "ip6" | "arp" | "bridge" | "netdev"), Some(_), None) => Err(error(
            "is not an inet table: the sets blocked_v4 and blocked_v6 must sit in one table \
             whose rules see IPv4 and IPv6 (\"inet NAME\")",
        )),
        _ => Err(error(
            "is not \"inet NAME\" (the family and name of your table, e.g. \"inet filter\"; \
             \"\" keeps the blocks in nfsentry's own table)",
        )),
    }
}

fn actions(
    source: SourceText<'_>,
    field: &ListField<String>,
) -> Result<Vec<ActionKind>, ConfigError> {
    let Some(words) = field else {
        return Ok(vec![ActionKind::NftSet]);
    };
    let mut actions = Vec::with_capacity(words.get_ref().len());
    for written in words.get_ref() {
        let action = ActionKind::from_word(written.get_ref())
            .ok_or_else(|| unknown_word_error::<ActionKind>(source, written, "respond.actions"))?;
        if actions.contains(&action) {
            return Err(source.value_error(
                &written.span(),
                "respond.actions",
                written.get_ref(),
                "is listed twice",
            ));
        }
        actions.push(action);
    }
    Ok(actions)
}

/// The argv; required when the `command` action is on, checked whenever it is set so that a
/// mistake shows up before someone turns the action on.
fn command(
    source: SourceText<'_>,
    field: &ListField<String>,
    action_words: &ListField<String>,
    actions: &[ActionKind],
) -> Result<Vec<String>, ConfigError> {
    let argv: Vec<String> = list(field).map(|arg| arg.get_ref().clone()).collect();
    if let Some(program) = list(field).next() {
        if !Path::new(program.get_ref()).is_absolute() {
            return Err(source.value_error(
                &program.span(),
                "respond.command",
                program.get_ref(),
                "is not an absolute path (the program is run directly, without a shell or PATH)",
            ));
        }
    }
    if let Some(argument) = list(field).find(|argument| argument.get_ref().contains('\0')) {
        return Err(source.value_error(
            &argument.span(),
            "respond.command",
            argument.get_ref(),
            "contains a NUL character",
        ));
    }
    if argv.is_empty() && actions.contains(&ActionKind::Command) {
        return Err(match field {
            Some(empty) => source.value_error(
                &empty.span(),
                "respond.command",
                "[]",
                "must name a program when respond.actions has \"command\"",
            ),
            None => {
                let word = list(action_words)
                    .find(|word| word.get_ref() == ActionKind::Command.as_str())
                    .map_or(0..0, Spanned::span);
                source.value_error(
                    &word,
                    "respond.actions",
                    ActionKind::Command.as_str(),
                    "needs respond.command, the program and its arguments",
                )
            }
        });
    }
    Ok(argv)
}

/// The elements of a list field; nothing when the key is absent.
pub(super) fn list<T>(field: &ListField<T>) -> impl Iterator<Item = &Spanned<T>> {
    field.iter().flat_map(|items| items.get_ref().iter())
}

/// A string field, unless it is absent or "" (both mean "not set").
pub(super) fn non_empty(field: &Field<String>) -> Option<&Spanned<String>> {
    field.as_ref().filter(|value| !value.get_ref().is_empty())
}

/// An integer field within `bounds`, converted to its Rust type.
fn integer<T: TryFrom<i64>>(
    source: SourceText<'_>,
    field: &Field<i64>,
    key: &str,
    bounds: RangeInclusive<i64>,
    problem: &str,
    default: T,
) -> Result<T, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    let value = *field.get_ref();
    if !bounds.contains(&value) {
        return Err(source.value_error(&field.span(), key, &value.to_string(), problem));
    }
    T::try_from(value)
        .map_err(|_| source.value_error(&field.span(), key, &value.to_string(), problem))
}

/// `max_sources` / `max_blocks`: 1 to 16M entries; `None` when unset.
fn table_bound(
    source: SourceText<'_>,
    field: &Field<i64>,
    key: &str,
) -> Result<Option<usize>, ConfigError> {
    let limit = i64::try_from(MAX_TABLE_ENTRIES).unwrap_or(i64::MAX);
    if field.is_none() {
        return Ok(None);
    }
    integer(
        source,
        field,
        key,
        1..=limit,
        &format!("is out of range (1-{MAX_TABLE_ENTRIES})"),
        0,
    )
    .map(Some)
}

pub(super) fn duration(
    source: SourceText<'_>,
    field: &Field<RawDuration>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(field) = field else {
        return Ok(default);
    };
    let (parsed, written) = match field.get_ref() {
        RawDuration::Seconds(seconds) => (duration_from_seconds(*seconds), seconds.to_string()),
        RawDuration::Text(text) => (parse_duration(text), text.clone()),
    };
    parsed.map_err(|problem| source.value_error(&field.span(), key, &written, problem))
}

/// A duration nfsentry hands to the kernel as an nft element timeout: [`duration`]'s reading,
/// refused when longer than [`NFT_TIMEOUT_MAX`], with that bound in the message. Zero passes
/// (for `block_timeout` it means no timeout at all); a key that must not be zero says so itself.
/// Every key whose value ends up as an element timeout goes through here.
pub(super) fn kernel_timeout(
    source: SourceText<'_>,
    field: &Field<RawDuration>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let timeout = duration(source, field, key, default)?;
    if timeout > NFT_TIMEOUT_MAX {
        return Err(duration_error(
            source,
            field,
            key,
            format_args!(
                "is longer than the kernel accepts for an nft element timeout (at most {:?}, \
                 about 584 years)",
                format_duration(NFT_TIMEOUT_MAX)
            ),
        ));
    }
    Ok(timeout)
}

fn zero_duration_error(
    source: SourceText<'_>,
    field: &Field<RawDuration>,
    key: &str,
) -> ConfigError {
    duration_error(source, field, key, "must be longer than zero")
}

/// An error at a duration key, quoting the value as written (a default has no span, which
/// happens only if a default breaks its own rule; the message stays honest anyway).
pub(super) fn duration_error(
    source: SourceText<'_>,
    field: &Field<RawDuration>,
    key: &str,
    problem: impl fmt::Display,
) -> ConfigError {
    let (span, written) = match field {
        Some(field) => (
            field.span(),
            match field.get_ref() {
                RawDuration::Seconds(seconds) => seconds.to_string(),
                RawDuration::Text(text) => text.clone(),
            },
        ),
        None => (0..0, "(default)".to_owned()),
    };
    source.value_error(&span, key, &written, problem)
}

pub(super) fn word<T: ConfigWord>(
    source: SourceText<'_>,
    field: &Field<String>,
    key: &str,
    default: T,
) -> Result<T, ConfigError> {
    match field {
        None => Ok(default),
        Some(written) => T::from_word(written.get_ref())
            .ok_or_else(|| unknown_word_error::<T>(source, written, key)),
    }
}

pub(super) fn unknown_word_error<T: ConfigWord>(
    source: SourceText<'_>,
    written: &Spanned<String>,
    key: &str,
) -> ConfigError {
    source.value_error(
        &written.span(),
        key,
        written.get_ref(),
        format_args!("is not {} (expected one of: {})", T::WHAT, T::listing()),
    )
}

fn absolute_path(
    source: SourceText<'_>,
    field: &Field<String>,
    key: &str,
    default: &str,
) -> Result<PathBuf, ConfigError> {
    match field {
        None => Ok(PathBuf::from(default)),
        Some(path) if Path::new(path.get_ref()).is_absolute() => Ok(PathBuf::from(path.get_ref())),
        Some(path) => {
            Err(source.value_error(&path.span(), key, path.get_ref(), "is not an absolute path"))
        }
    }
}

/// Why a `hosts_deny_line` (one line, with `$TARGET$`) would not deny the scanner alone in
/// TCP wrappers' `daemons : clients [: options]` syntax. Every client must be the scanner: a
/// wildcard, a network or `ALL EXCEPT $TARGET$` there shuts out other hosts, this one's admins
/// included, on the first block.
fn hosts_deny_rule_problem(template: &str) -> Option<String> {
    const ALONE: &str = "\"ALL: $TARGET$\" denies the scanner alone";
    if template.trim_start().starts_with('#') {
        return Some("is a comment, which TCP wrappers skip".to_owned());
    }
    if template.ends_with('\\') {
        return Some("ends in a backslash, which joins the next line onto it".to_owned());
    }
    let Some((_daemons, rest)) = template.split_once(':') else {
        return Some(
            "lacks the ':' between daemons and clients that TCP wrappers require".to_owned(),
        );
    };
    let clients = rest
        .split_once(':')
        .map_or(rest, |(clients, _options)| clients);
    let words: Vec<&str> = clients
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|word| !word.is_empty())
        .collect();
    if !words.contains(&TARGET_PLACEHOLDER) {
        return Some(format!(
            "does not have {TARGET_PLACEHOLDER} among its clients (after the first ':'); {ALONE}"
        ));
    }
    let host_alone = format!("{TARGET_PLACEHOLDER}/255.255.255.255");
    let other = words
        .iter()
        .find(|word| **word != TARGET_PLACEHOLDER && **word != host_alone)?;
    Some(format!(
        "denies more than the scanner: its client {other:?} matches other hosts too; {ALONE}"
    ))
}

/// `daemon.state_dir`: an absolute path that is a directory, or can be made one. A writable
/// one is not required here: the daemon runs on with a read-only or full one, saying so.
fn state_dir(source: SourceText<'_>, field: &Field<String>) -> Result<PathBuf, ConfigError> {
    const KEY: &str = "daemon.state_dir";
    let path = absolute_path(source, field, KEY, DEFAULT_STATE_DIR)?;
    let Some(problem) = files::not_a_directory(&path) else {
        return Ok(path);
    };
    Err(match field {
        Some(written) => source.value_error(&written.span(), KEY, written.get_ref(), problem),
        None => ConfigError::new(
            source.file,
            None,
            format!("{KEY}: {DEFAULT_STATE_DIR:?} (the default) {problem}"),
        ),
    })
}

/// Fails with `problem` unless `is_valid` accepts the string.
fn check(
    source: SourceText<'_>,
    field: &Spanned<String>,
    key: &str,
    is_valid: fn(&str) -> bool,
    problem: impl FnOnce() -> String,
) -> Result<(), ConfigError> {
    if is_valid(field.get_ref()) {
        Ok(())
    } else {
        Err(source.value_error(&field.span(), key, field.get_ref(), problem()))
    }
}

fn is_table_name(name: &str) -> bool {
    let mut characters = name.chars();
    let starts_with_letter = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic());
    starts_with_letter
        && name.len() <= TABLE_NAME_MAX_CHARS
        && characters.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

const INTERFACE_NAME_PROBLEM: &str =
    "is not an interface name (1-15 bytes, no '/', ':' or blanks, not \".\" or \"..\")";

/// The kernel's own rule (`dev_valid_name`): up to 15 bytes, none of '/', ':' or whitespace.
fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= INTERFACE_NAME_MAX_BYTES
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
}

/// The kernel takes `"` in a device name, but an `nft` quoted string has no escape for it, so
/// the ruleset text could not name the device.
const NFT_UNQUOTABLE_PROBLEM: &str = "contains '\"', which the nft ruleset text cannot quote";

fn is_nft_quotable(name: &str) -> bool {
    !name.contains('"')
}

/// "stderr", "syslog" (the default socket), "syslog:/socket" or "file:/path". A relative path
/// is refused: it would depend on the directory the daemon happened to be started from.
fn log_target(written: &str) -> Option<LogTarget> {
    let absolute = |path: &str| {
        let path = Path::new(path);
        path.is_absolute().then(|| path.to_path_buf())
    };
    match written {
        "stderr" => Some(LogTarget::Stderr),
        "syslog" => Some(LogTarget::Syslog(PathBuf::from(DEFAULT_SYSLOG_SOCKET))),
        _ => {
            if let Some(socket) = written.strip_prefix("syslog:") {
                return absolute(socket).map(LogTarget::Syslog);
            }
            absolute(written.strip_prefix("file:")?).map(LogTarget::File)
        }
    }
}

/// Why `gateway` can never be where the `route` action sends a scanner's replies, from the
/// address alone; the action's own check adds what takes the host to know (its addresses).
/// Each of these routes is refused by the kernel or sends the replies back to this host.
pub(crate) fn gateway_problem(gateway: IpAddr) -> Option<&'static str> {
    const LOOPBACK: &str = "is a loopback address, which hands the replies back to this host \
                            instead of sending them away; \"blackhole\" drops them, which is \
                            what a loopback gateway meant in PortSentry's recipes";
    const NO_HOST: &str = "is the unspecified address, which names no gateway; \"blackhole\" \
                           drops the replies";
    const BROADCAST: &str = "is the broadcast address; a gateway is one host on a network \
                             this host is on";
    const MULTICAST: &str = "is a multicast address; a gateway is one host on a network this \
                             host is on";
    match gateway {
        IpAddr::V4(v4) if v4.is_unspecified() => Some(NO_HOST),
        IpAddr::V4(v4) if v4.is_broadcast() => Some(BROADCAST),
        IpAddr::V4(v4) if v4.is_multicast() => Some(MULTICAST),
        IpAddr::V4(v4) if v4.is_loopback() => Some(LOOPBACK),
        IpAddr::V6(v6) if v6.is_unspecified() => Some(NO_HOST),
        IpAddr::V6(v6) if v6.is_multicast() => Some(MULTICAST),
        IpAddr::V6(v6) if v6.is_loopback() => Some(LOOPBACK),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Some(
            "is an IPv4-mapped IPv6 address, which the kernel takes for an IPv6 gateway it \
             cannot reach; write the IPv4 address",
        ),
        // fe80::/10: the kernel takes one only with the interface it is on, and the route
        // action names none ("Egress device not specified").
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some(
            "is a link-local address, which the kernel takes as a gateway only with an \
             interface, and the route action names none; use the gateway's global address",
        ),
        _ => None,
    }
}

fn route_target(written: &str) -> Option<RouteTarget> {
    if written == "blackhole" {
        return Some(RouteTarget::Blackhole);
    }
    written.parse::<IpAddr>().ok().map(RouteTarget::Gateway)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn interfaces_error(list: &str) -> Option<String> {
        let text = format!("[daemon]\ninterfaces = {list}\n");
        Config::from_toml(&text, Path::new("/tmp/x.toml"))
            .err()
            .map(|error| error.to_string())
    }

    #[test]
    fn interface_names_nft_cannot_quote_are_refused() {
        assert_eq!(
            interfaces_error(r#"["eth0", "we\"ird"]"#),
            Some(
                "/tmp/x.toml:2: daemon.interfaces: \"we\\\"ird\" contains '\"', which the nft \
                 ruleset text cannot quote"
                    .to_owned()
            )
        );
        // Keyword-like and odd names are fine: the renderer quotes every device name.
        assert_eq!(interfaces_error(r#"["ip", "0wire", "veth-a.10"]"#), None);
    }
}
