//! Where log lines go and how each is framed: stderr (with the journal's `<N>` priority prefixes
//! when systemd connected stderr to the journal), a file, or a syslog socket (facility daemon,
//! ident `nfsentry`, in the form the C library's syslog() writes). What a line says is the
//! callers' business ([`crate::report`] words the alerts); this module never rewords a message.
//!
//! Set up once, before any thread starts (local-time stamps depend on it). Detections and blocks
//! are logged at `warn`, which maps to syslog's `notice`, the level PortSentry logged its
//! `attackalert:` lines at; `error` is `err`, `info` is `info`, `debug` and `trace` are `debug`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode, WriteLogger};

use crate::config::LogTarget;

/// The name nfsentry logs under, in the syslog tag `nfsentry[PID]:`.
pub const IDENT: &str = "nfsentry";

/// LOG_DAEMON, shifted as syslog priorities expect.
const FACILITY_DAEMON: u8 = 3 << 3;

/// Set by systemd to `DEVICE:INODE` of the stream it connected stdout/stderr to the journal
/// with (systemd.exec(5)).
const JOURNAL_STREAM_VAR: &str = "JOURNAL_STREAM";

/// The C locale's month abbreviations, which RFC 3164 timestamps use whatever the locale.
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

pub fn init(target: &LogTarget, level: LevelFilter) -> Result<(), String> {
    let config = || {
        let mut builder = ConfigBuilder::new();
        builder
            .set_time_format_rfc3339()
            .set_target_level(LevelFilter::Off)
            .set_thread_level(LevelFilter::Off);
        // Fails only when the local offset cannot be determined; UTC stamps are fine then.
        let _ = builder.set_time_offset_to_local();
        builder.build()
    };
    match target {
        LogTarget::Stderr if stderr_is_journal() => {
            install(Box::new(JournalLogger { level }), level)
        }
        LogTarget::Stderr => {
            TermLogger::init(level, config(), TerminalMode::Stderr, ColorChoice::Never)
                .map_err(|e| e.to_string())
        }
        LogTarget::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            WriteLogger::init(level, config(), file).map_err(|e| e.to_string())
        }
        LogTarget::Syslog(socket) => {
            let logger = SyslogLogger::connect(socket, level)
                .map_err(|e| format!("cannot reach syslog at {}: {e}", socket.display()))?;
            install(Box::new(logger), level)
        }
    }
}

fn install(logger: Box<dyn Log>, level: LevelFilter) -> Result<(), String> {
    log::set_boxed_logger(logger).map_err(|e| e.to_string())?;
    log::set_max_level(level);
    Ok(())
}

/// syslog(3)'s severity for a log level (also the journal's `<N>` prefix).
pub fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 5,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One datagram for the local syslog socket, as glibc's syslog() frames it:
/// `<29>Jan  5 09:07:03 nfsentry[4242]: attackalert: ...`. `stamp` is [`syslog_timestamp`]'s.
/// No hostname: local syslog daemons add their own.
pub fn syslog_datagram(level: Level, stamp: &str, pid: u32, message: &str) -> String {
    format!(
        "<{}>{stamp} {IDENT}[{pid}]: {message}",
        FACILITY_DAEMON | severity(level)
    )
}

/// `Mmm dd HH:MM:SS` in local time (RFC 3164; the day padded with a space, as `%e` does).
pub fn syslog_timestamp(unix_seconds: i64) -> String {
    let t = libc::time_t::try_from(unix_seconds).unwrap_or(0);
    // SAFETY: localtime_r only writes the tm we own; it is the thread-safe variant.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    let month = usize::try_from(tm.tm_mon)
        .ok()
        .and_then(|index| MONTHS.get(index));
    match (ok, month) {
        (true, Some(month)) => format!(
            "{month} {:>2} {:02}:{:02}:{:02}",
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
        ),
        _ => "Jan  1 00:00:00".to_owned(),
    }
}

/// What goes to stderr when it is the journal: every line of the message with the sd-daemon
/// `<N>` prefix, so a multi-line message keeps its priority throughout, and no timestamp of our
/// own (the journal stamps each entry).
pub fn journal_lines(level: Level, message: &str) -> String {
    let prefix = format!("<{}>", severity(level));
    let mut text = String::with_capacity(message.len() + prefix.len() + 1);
    for line in message.split('\n') {
        text.push_str(&prefix);
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// Whether stderr is still the stream systemd connected to the journal: `$JOURNAL_STREAM`
/// names its device and inode, and stderr must be that very file (a shell redirect or an
/// inherited variable in a child started by hand makes it something else).
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(JOURNAL_STREAM_VAR) else {
        return false;
    };
    let Some((device, inode)) = value.to_str().and_then(parse_journal_stream) else {
        return false;
    };
    match nix::sys::stat::fstat(io::stderr().as_fd()) {
        Ok(stat) => stat.st_dev == device && stat.st_ino == inode,
        Err(_) => false,
    }
}

/// `"8:1234"` → (8, 1234).
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

/// Lines to stderr with `<N>` prefixes, for the journal to file at that priority.
struct JournalLogger {
    level: LevelFilter,
}

impl Log for JournalLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let text = journal_lines(record.level(), &record.args().to_string());
        // One write per message, so lines from two threads never interleave.
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

/// RFC 3164 datagrams over a local syslog socket.
struct SyslogLogger {
    path: PathBuf,
    socket: Mutex<UnixDatagram>,
    level: LevelFilter,
    pid: u32,
}

impl SyslogLogger {
    fn connect(path: &Path, level: LevelFilter) -> io::Result<Self> {
        Ok(SyslogLogger {
            path: path.to_path_buf(),
            socket: Mutex::new(connect(path)?),
            level,
            pid: std::process::id(),
        })
    }

    /// Sends one datagram. A syslog daemon that restarted has a new socket at the same path,
    /// and the old connection is refused from then on: connect once more and resend, as
    /// glibc's syslog() does. A full socket drops the line instead (see [`connect`]).
    fn send(&self, datagram: &[u8]) {
        let Ok(mut socket) = self.socket.lock() else {
            return;
        };
        match socket.send(datagram) {
            Err(error) if error.kind() != io::ErrorKind::WouldBlock => {
                if let Ok(fresh) = connect(&self.path) {
                    *socket = fresh;
                    let _ = socket.send(datagram);
                }
            }
            _ => {}
        }
    }
}

/// A datagram socket connected to `path`, non-blocking: a full or stalled syslog must not stall
/// packet handling, so a line it cannot take is dropped.
fn connect(path: &Path) -> io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

impl Log for SyslogLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(0));
        let datagram = syslog_datagram(
            record.level(),
            &syslog_timestamp(now),
            self.pid,
            &record.args().to_string(),
        );
        self.send(datagram.as_bytes());
    }

    fn flush(&self) {}
}

/// Best effort flush for stderr-backed loggers before exit.
pub fn flush() {
    log::logger().flush();
    let _ = io::stderr().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_prefixes_follow_the_level() {
        // sd-daemon(3): <3> SD_ERR, <5> SD_NOTICE, <6> SD_INFO, <7> SD_DEBUG.
        let cases = [
            (Level::Error, "<3>"),
            (Level::Warn, "<5>"),
            (Level::Info, "<6>"),
            (Level::Debug, "<7>"),
            (Level::Trace, "<7>"),
        ];
        for (level, prefix) in cases {
            assert_eq!(
                journal_lines(level, "attackalert: Host 198.51.100.7 has been blocked"),
                format!("{prefix}attackalert: Host 198.51.100.7 has been blocked\n"),
                "{level}"
            );
        }
    }

    #[test]
    fn every_line_of_a_journal_message_keeps_its_priority() {
        assert_eq!(
            journal_lines(Level::Error, "action command failed\nstderr: no such host"),
            "<3>action command failed\n<3>stderr: no such host\n"
        );
    }

    #[test]
    fn syslog_datagrams_are_daemon_facility_with_the_portsentry_levels() {
        let line = |level| syslog_datagram(level, "Nov 10 20:18:49", 4242, "text");
        assert_eq!(
            line(Level::Warn),
            "<29>Nov 10 20:18:49 nfsentry[4242]: text",
            "daemon.notice, as PortSentry logged attackalert lines"
        );
        assert_eq!(
            line(Level::Error),
            "<27>Nov 10 20:18:49 nfsentry[4242]: text"
        );
        assert_eq!(
            line(Level::Info),
            "<30>Nov 10 20:18:49 nfsentry[4242]: text"
        );
        assert_eq!(
            line(Level::Debug),
            "<31>Nov 10 20:18:49 nfsentry[4242]: text"
        );
    }

    #[test]
    fn syslog_timestamps_have_the_rfc3164_shape() {
        // 942286729 is 1999-11-11 02:18:49 UTC; the local zone moves it by at most a day.
        let stamp = syslog_timestamp(942_286_729);
        assert_eq!(stamp.len(), 15, "{stamp:?}");
        assert!(stamp.starts_with("Nov "), "{stamp:?}");
        let day = stamp[4..6].trim_start();
        assert!(["10", "11", "12"].contains(&day), "{stamp:?}");
        assert_eq!(&stamp[6..7], " ");
        assert_eq!(stamp.as_bytes()[9], b':');
        assert_eq!(stamp.as_bytes()[12], b':');
        // Single-digit days are padded with a space, not a zero.
        let early = syslog_timestamp(946_857_600); // 2000-01-03 00:00:00 UTC
        assert!(
            early.starts_with("Jan  2 ") || early.starts_with("Jan  3 "),
            "{early:?}"
        );
    }

    #[test]
    fn journal_stream_values_are_device_and_inode() {
        assert_eq!(parse_journal_stream("8:1234"), Some((8, 1234)));
        assert_eq!(parse_journal_stream("8:"), None);
        assert_eq!(parse_journal_stream("1234"), None);
        assert_eq!(parse_journal_stream("a:b"), None);
    }

    #[test]
    fn syslog_logger_reconnects_after_the_daemon_restarts() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("log");
        let first = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind: {e}"));
        let logger = SyslogLogger::connect(&path, LevelFilter::Info)
            .unwrap_or_else(|e| panic!("connect: {e}"));
        logger.send(b"one");
        let mut buffer = [0u8; 64];
        let n = first
            .recv(&mut buffer)
            .unwrap_or_else(|e| panic!("recv: {e}"));
        assert_eq!(&buffer[..n], b"one");
        // A restarted syslog daemon: the old socket goes, a new one takes its path.
        drop(first);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove: {e}"));
        let second = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind: {e}"));
        logger.send(b"two");
        let n = second
            .recv(&mut buffer)
            .unwrap_or_else(|e| panic!("recv: {e}"));
        assert_eq!(&buffer[..n], b"two");
    }
}
