//! Loads nfsentry's TOML configuration into a validated [`Config`] whose every error names file,
//! line, key and value; it only describes settings and never acts on them (no sockets, no nft).
//!
//! Loading happens in two stages: [`raw`] mirrors the file with serde (unknown keys refused,
//! positions kept), then [`validate`] checks ranges and meaning and builds the types below.
//! Defaults live here, once, as constants; the shipped `config/nfsentry.toml` spells out the
//! same values and a test keeps the two equal.

mod crowdsec;
mod duration;
mod error;
mod files;
mod ignore;
mod ports;
mod queues;
mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use crowdsec::{Crowdsec, LapiUrl, Pull, Push, Secret};
pub use duration::format_duration;

/// A duration as the config writes them (`"90s"`, `"1h30m"`, `"7d"`, `"0"`), for command-line
/// options that take one.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    duration::parse_duration(text).map_err(|e| e.to_string())
}
pub use error::ConfigError;
pub(crate) use files::{read_regular, FileProblem, TEXT_FILE_MAX_BYTES};
pub use ignore::parse_ignore_list;
pub(crate) use ignore::parse_network;
pub(crate) use ports::port_range_from_text;
pub use ports::{PortRanges, PortSet, Ports};
pub use queues::{share, QueueRange, MAX_QUEUES};
pub(crate) use validate::gateway_problem;
pub use validate::NFT_TIMEOUT_MAX;

use error::SourceText;

/// Where the daemon looks for its configuration when not told otherwise.
pub const DEFAULT_PATH: &str = "/etc/nfsentry/nfsentry.toml";

const DEFAULT_QUEUE: QueueRange = QueueRange::single(0);
const DEFAULT_TABLE: &str = "nfsentry";
const DEFAULT_STATE_DIR: &str = "/var/lib/nfsentry";
/// In the unit's RuntimeDirectory, so systemd creates it owned by the daemon's user.
const DEFAULT_CONTROL_SOCKET: &str = "/run/nfsentry/control.sock";
const DEFAULT_NFLOG_GROUP: u16 = 7219;
/// The history file is rotated once it would pass this: 64 MiB is some 700,000 blocks.
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 64 << 20;
/// The smallest bound on the history file (some 45 lines), and the largest (1 TiB).
const HISTORY_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=1 << 40;
/// The local syslog socket that `log = "syslog"` writes to, as the C library's syslog() does.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// PortSentry's shipped TCP_PORTS: trojans, backdoors and services scanners probe first.
const DEFAULT_TCP_PORTS: [u16; 26] = [
    1, 11, 15, 79, 111, 119, 143, 540, 635, 1080, 1524, 2000, 5742, 6667, 12345, 12346, 20034,
    27665, 31337, 32771, 32772, 32773, 32774, 40421, 49724, 54320,
];
/// PortSentry's shipped UDP_PORTS.
const DEFAULT_UDP_PORTS: [u16; 21] = [
    1, 7, 9, 69, 161, 162, 513, 635, 640, 641, 700, 37444, 34555, 31335, 32770, 32771, 32772,
    32773, 32774, 31337, 54321,
];
/// PortSentry's ADVANCED_EXCLUDE_TCP: ident and NetBIOS, which innocent peers touch all day.
const DEFAULT_EXCLUDE_TCP: [u16; 2] = [113, 139];
/// PortSentry's ADVANCED_EXCLUDE_UDP: RIP, NetBIOS and DHCP broadcasts.
const DEFAULT_EXCLUDE_UDP: [u16; 4] = [520, 138, 137, 67];

const DEFAULT_SCAN_TRIGGER: u32 = 0;
/// Long enough to catch a slow sequential scan, short enough that a forgotten counter does not
/// punish a later, innocent connection from the same address.
const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// The host itself must never be counted or blocked.
const DEFAULT_IGNORE: [IpNet; 2] = [
    IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
    IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
];
const DEFAULT_MAX_SOURCES: usize = 65_536;
const DEFAULT_MAX_BLOCKS: usize = 65_536;
/// A stealth detection proves nothing about its source address: an hour shuts a real scanner
/// out for longer than a scan takes, and a spoofed flood's blocks clear away by themselves.
const DEFAULT_UNVERIFIED_TIMEOUT: Duration = Duration::from_secs(3600);
/// A real scan blocks one address; fifty a second is far beyond what honest detections need,
/// and keeps a spoofed flood's inserts, journal lines and history lines small.
const DEFAULT_MAX_BLOCKS_PER_SEC: u32 = 50;
/// Upper bound for `max_blocks_per_sec`: a rate where a token costs a microsecond.
const MAX_BLOCKS_PER_SEC_LIMIT: u32 = 1_000_000;
/// Upper bound for `max_sources` and `max_blocks`: keeps memory bounded whatever the file says.
const MAX_TABLE_ENTRIES: usize = 16 * 1024 * 1024;

const DEFAULT_HOSTS_DENY: &str = "/etc/hosts.deny";
const DEFAULT_HOSTS_DENY_LINE: &str = "ALL: $TARGET$";
/// The placeholder replaced by the blocked address in `hosts_deny_line` and `command`.
const TARGET_PLACEHOLDER: &str = "$TARGET$";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the values came from, for logs and error messages.
    pub origin: Origin,
    pub daemon: Daemon,
    pub monitor: Monitor,
    pub detect: Detect,
    pub respond: Respond,
    /// `[crowdsec]`: None unless the section is present.
    pub crowdsec: Option<Crowdsec>,
}

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in; no file was read.
    Defaults,
    /// Read from this file.
    File(PathBuf),
}

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    /// The local syslog's datagram socket (an absolute path; [`DEFAULT_SYSLOG_SOCKET`] unless
    /// the file says otherwise), facility daemon.
    Syslog(PathBuf),
    /// Appended to this file (an absolute path).
    File(PathBuf),
}

/// How the queue statement reaches the kernel. The config's `"auto"` is no mode of its own: it
/// is the absence of one (`Option<QueueMode>::None`), and the installer tries native first.
/// `Display` names the mechanism for logs; the config words are `native` and `compat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueMode {
    /// The nft `queue` expression (module `nft_queue`, CONFIG_NFT_QUEUE), present on
    /// distribution kernels.
    Native,
    /// The xtables `NFQUEUE` target run through `nft_compat`, for kernels built without
    /// `nft_queue`. `nft list` shows both forms as `queue num N bypass`.
    Compat,
}

/// The answer to the kernel for one queued packet. As `respond.verdict`, the answer for packets
/// from sources that are watched but not (yet) blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Drop,
    Accept,
}

/// What makes a block *verified*, which lasts `block_timeout` rather than at most
/// `unverified_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verify {
    /// Nothing: every block is unverified (PortSentry's stealth detection, which never answers
    /// a probe and so never learns whether the source address is real).
    Off,
    /// A TCP handshake the source completed with us: its address is its own.
    Handshake,
}

/// Declares [`ActionKind`] and its config words in one list, so that a new action is one line
/// here (plus its file in `respond/` and its line in `respond::build`).
macro_rules! action_kinds {
    ($($(#[$doc:meta])* $kind:ident => $word:literal,)+) => {
        /// One way of blocking a scanner. `Display` gives the word used in the config file.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ActionKind {
            $($(#[$doc])* $kind,)+
        }

        impl ConfigWord for ActionKind {
            const ALL: &'static [ActionKind] = &[$(ActionKind::$kind,)+];
            const WHAT: &'static str = "an action";
            fn as_str(self) -> &'static str {
                match self {
                    $(ActionKind::$kind => $word,)+
                }
            }
        }
    };
}

action_kinds! {
    /// Add the address to nfsentry's own nft set.
    NftSet => "nft-set",
    /// Add a blackhole route, or a route through `respond.route`.
    Route => "route",
    /// Append `respond.hosts_deny_line` to `respond.hosts_deny`.
    HostsDeny => "hosts-deny",
    /// Run `respond.command`.
    Command => "command",
    /// PortSentry's iptables recipe (ip6tables for IPv6).
    Iptables => "iptables",
    /// PortSentry's ipchains recipe (Linux 2.2).
    Ipchains => "ipchains",
    /// PortSentry's ipfwadm recipe (Linux 2.0).
    Ipfwadm => "ipfwadm",
    /// PortSentry's ipfw recipe (FreeBSD).
    Ipfw => "ipfw",
    /// PortSentry's ipf recipe (IPFilter).
    Ipfilter => "ipfilter",
}

/// Where the `route` action sends a blocked address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// A kernel blackhole route: packets to the scanner vanish.
    Blackhole,
    /// A route through this gateway (PortSentry's "dead host" trick).
    Gateway(IpAddr),
}

/// `[daemon]`: how nfsentry hooks into the kernel and where it keeps things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// The NFQUEUE numbers: one, or a range the kernel spreads packets over by address.
    pub queue: QueueRange,
    /// Name of the nft tables nfsentry owns.
    pub table: String,
    pub state_dir: PathBuf,
    /// The Unix socket `nfsentry status`, `list`, `block`, ... talk to the daemon through.
    pub control_socket: PathBuf,
    pub log: LogTarget,
    /// Devices for the netdev ingress chain that catches IPv4 headers shorter than 5 words
    /// (the kernel drops those before any inet hook). Empty means every non-loopback interface
    /// present at start, which [`crate::host::ingress_devices`] resolves.
    pub interfaces: Vec<String>,
    /// NFLOG group the short-header packets are logged to.
    pub nflog_group: u16,
    /// `None` is the config's `"auto"`: native if the kernel has `nft_queue`, else compat.
    pub queue_mode: Option<QueueMode>,
    /// `state_dir/history` is rotated to `history.1` once it would pass this many bytes.
    pub history_max_bytes: u64,
    /// At a clean stop, leave the blocked sets and their drop rules in force (and nothing that
    /// queues), for the next start to take over in one transaction; false removes the tables.
    pub keep_blocks_on_exit: bool,
}

/// `[monitor]`: the final watched sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// Listed TCP ports, plus 1..advanced_tcp minus exclude_tcp. Excludes apply to the advanced
    /// range only: a port listed explicitly is watched even if it is also excluded.
    pub tcp: PortSet,
    /// The same for UDP.
    pub udp: PortSet,
}

/// `[detect]`: when a source counts as a scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detect {
    /// React on hit number `scan_trigger + 1` (PortSentry's meaning: 0 reacts at once).
    pub scan_trigger: u32,
    /// A source's counter is forgotten after this much silence; never zero.
    pub window: Duration,
    /// Never counted or blocked: the `ignore` list followed by the `ignore_file` entries.
    pub ignore: Vec<IpNet>,
    /// Bound on tracked sources; the oldest is evicted first.
    pub max_sources: usize,
    /// What makes a block verified.
    pub verify: Verify,
}

/// `[respond]`: what happens to a scanner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Respond {
    pub verdict: Verdict,
    /// How long a verified block lasts; `None` means until removed.
    pub block_timeout: Option<Duration>,
    /// The most an unverified block lasts; `None` means no cap beyond `block_timeout`.
    pub unverified_timeout: Option<Duration>,
    /// Bound on simultaneous blocks.
    pub max_blocks: usize,
    /// New blocks a second; 0 means unlimited.
    pub max_blocks_per_sec: u32,
    /// The responses to run, in order, without duplicates; may be empty (alert only).
    pub actions: Vec<ActionKind>,
    pub hosts_deny: PathBuf,
    /// Contains `$TARGET$`; a single line.
    pub hosts_deny_line: String,
    pub route: RouteTarget,
    /// argv with `$TARGET$`, `$PORT$`, `$MODE$` placeholders; argv\[0\] is an absolute path.
    /// Never empty when `actions` has [`ActionKind::Command`].
    pub command: Vec<String>,
    /// Run the command before the other actions rather than after.
    pub command_first: bool,
    /// The command is killed after this long; never zero.
    pub command_timeout: Duration,
    pub ipfilter_interface: Option<String>,
    /// Sent to a source that completed the handshake check (`verify = "handshake"`).
    pub port_banner: Option<String>,
    /// The admin's own `inet` table whose `blocked_v4` / `blocked_v6` sets receive the blocks
    /// instead of nfsentry's table; `None` keeps them in nfsentry's table. nfsentry only adds
    /// and deletes elements there, never creates or deletes anything.
    pub blocked_table: Option<String>,
}

impl Config {
    /// The built-in configuration, identical to the shipped example file.
    pub fn defaults() -> Config {
        Config {
            origin: Origin::Defaults,
            daemon: Daemon {
                queue: DEFAULT_QUEUE,
                table: DEFAULT_TABLE.to_owned(),
                state_dir: PathBuf::from(DEFAULT_STATE_DIR),
                control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
                log: LogTarget::Stderr,
                interfaces: Vec::new(),
                nflog_group: DEFAULT_NFLOG_GROUP,
                queue_mode: None,
                history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
                keep_blocks_on_exit: false,
            },
            monitor: Monitor {
                tcp: DEFAULT_TCP_PORTS.into_iter().collect(),
                udp: DEFAULT_UDP_PORTS.into_iter().collect(),
            },
            detect: Detect {
                scan_trigger: DEFAULT_SCAN_TRIGGER,
                window: DEFAULT_WINDOW,
                ignore: DEFAULT_IGNORE.to_vec(),
                max_sources: DEFAULT_MAX_SOURCES,
                verify: Verify::Off,
            },
            respond: Respond {
                verdict: Verdict::Drop,
                block_timeout: None,
                unverified_timeout: Some(DEFAULT_UNVERIFIED_TIMEOUT),
                max_blocks: DEFAULT_MAX_BLOCKS,
                max_blocks_per_sec: DEFAULT_MAX_BLOCKS_PER_SEC,
                actions: vec![ActionKind::NftSet],
                hosts_deny: PathBuf::from(DEFAULT_HOSTS_DENY),
                hosts_deny_line: DEFAULT_HOSTS_DENY_LINE.to_owned(),
                route: RouteTarget::Blackhole,
                command: Vec::new(),
                command_first: false,
                command_timeout: DEFAULT_COMMAND_TIMEOUT,
                ipfilter_interface: None,
                port_banner: None,
                blocked_table: None,
            },
            crowdsec: None,
        }
    }

    /// Reads and validates the file at `path`, and the `ignore_file` it names, if any.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Config::from_toml(&text, path)
    }

    /// Validates `text` as if it had been read from `origin`, which errors name. A relative
    /// `ignore_file` is resolved against the directory of `origin`, and that file is read.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let source = SourceText { file: origin, text };
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|error| source.toml_error(&error))?;
        validate::validate(raw, source)
    }

    /// One line for the start-up log, e.g. `/etc/x.toml: 26 TCP and 21 UDP ports watched,
    /// trigger 0, window 10m, 2 ignore ranges, actions nft-set, verdict drop, block_timeout
    /// forever, queue 0, table nfsentry`.
    pub fn summary(&self) -> String {
        let actions = if self.respond.actions.is_empty() {
            "none (alert only)".to_owned()
        } else {
            let words: Vec<&str> = self.respond.actions.iter().map(|a| a.as_str()).collect();
            words.join(",")
        };
        let block_timeout = match self.respond.block_timeout {
            Some(timeout) => format_duration(timeout),
            None => "forever".to_owned(),
        };
        let ignore_count = self.detect.ignore.len();
        let ignore_noun = if ignore_count == 1 { "range" } else { "ranges" };
        format!(
            "{}: {} TCP and {} UDP ports watched, trigger {}, window {}, {ignore_count} ignore \
             {ignore_noun}, actions {actions}, verdict {}, block_timeout {block_timeout}, \
             queue {}, table {}",
            self.origin,
            self.monitor.tcp.len(),
            self.monitor.udp.len(),
            self.detect.scan_trigger,
            format_duration(self.detect.window),
            self.respond.verdict,
            self.daemon.queue,
            self.daemon.table,
        )
    }
}

impl Default for Config {
    fn default() -> Config {
        Config::defaults()
    }
}

/// Reads a whole file as UTF-8; a bad byte is reported with its line. Only a regular file of
/// at most [`files::TEXT_FILE_MAX_BYTES`] is read: a FIFO or a device is refused unread.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = files::read_regular(path, files::TEXT_FILE_MAX_BYTES)
        .map_err(|problem| ConfigError::from_file_problem(path, problem))?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let bytes = error.as_bytes();
        let line = bytes
            .get(..valid)
            .unwrap_or(bytes)
            .iter()
            .filter(|byte| **byte == b'\n')
            .count()
            + 1;
        ConfigError::new(path, Some(line), "is not valid UTF-8 text".to_owned())
    })
}

/// The config-file words of a closed set of choices, in one place for parsing, display and
/// error messages.
pub(crate) trait ConfigWord: Copy + 'static {
    /// Every choice, in the order error messages list them.
    const ALL: &'static [Self];
    /// What the choices are called in error messages ("a verdict").
    const WHAT: &'static str;
    fn as_str(self) -> &'static str;

    fn from_word(word: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|choice| choice.as_str() == word)
    }

    /// "drop, accept"
    fn listing() -> String {
        let words: Vec<&str> = Self::ALL.iter().map(|choice| choice.as_str()).collect();
        words.join(", ")
    }
}

/// `"auto"` is `None`: the choice left to the installer.
impl ConfigWord for Option<QueueMode> {
    const ALL: &'static [Option<QueueMode>] =
        &[None, Some(QueueMode::Native), Some(QueueMode::Compat)];
    const WHAT: &'static str = "a queue mode";
    fn as_str(self) -> &'static str {
        match self {
            None => "auto",
            Some(QueueMode::Native) => "native",
            Some(QueueMode::Compat) => "compat",
        }
    }
}

impl ConfigWord for Verify {
    const ALL: &'static [Verify] = &[Verify::Off, Verify::Handshake];
    const WHAT: &'static str = "a kind of verification";
    fn as_str(self) -> &'static str {
        match self {
            Verify::Off => "off",
            Verify::Handshake => "handshake",
        }
    }
}

impl ConfigWord for Verdict {
    const ALL: &'static [Verdict] = &[Verdict::Drop, Verdict::Accept];
    const WHAT: &'static str = "a verdict";
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Drop => "drop",
            Verdict::Accept => "accept",
        }
    }
}

impl ActionKind {
    /// Every action, in the order the config documentation lists them.
    pub const ALL: &'static [ActionKind] = <ActionKind as ConfigWord>::ALL;

    /// The word used for this action in the config file ("nft-set").
    pub fn as_str(self) -> &'static str {
        ConfigWord::as_str(self)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(ConfigWord::as_str(*self))
    }
}

impl fmt::Display for Verify {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl fmt::Display for QueueMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            QueueMode::Native => "native nft queue",
            QueueMode::Compat => "xt NFQUEUE via nft compat",
        })
    }
}

impl fmt::Display for LogTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogTarget::Stderr => formatter.write_str("stderr"),
            LogTarget::Syslog(socket) if socket == Path::new(DEFAULT_SYSLOG_SOCKET) => {
                formatter.write_str("syslog")
            }
            LogTarget::Syslog(socket) => write!(formatter, "syslog:{}", socket.display()),
            LogTarget::File(path) => write!(formatter, "file:{}", path.display()),
        }
    }
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Blackhole => formatter.write_str("blackhole"),
            RouteTarget::Gateway(gateway) => write!(formatter, "{gateway}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => formatter.write_str("built-in defaults"),
            Origin::File(path) => write!(formatter, "{}", path.display()),
        }
    }
}
