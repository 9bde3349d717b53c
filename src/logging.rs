//! Where log lines go: stderr, a file, or syslog (facility daemon, ident `nfsentry`).
//!
//! Set up once, before any thread starts (local-time stamps depend on it). Detections are
//! logged at `warn`, which maps to syslog's `notice` as PortSentry's alerts were.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode, WriteLogger};

use crate::config::LogTarget;

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
        LogTarget::Syslog => {
            let logger = SyslogLogger::connect(Path::new("/dev/log"), level)
                .map_err(|e| format!("cannot reach syslog at /dev/log: {e}"))?;
            log::set_boxed_logger(Box::new(logger)).map_err(|e| e.to_string())?;
            log::set_max_level(level);
            Ok(())
        }
    }
}

/// RFC 3164 lines over the local syslog socket; the daemon stamps the time itself.
struct SyslogLogger {
    socket: Mutex<UnixDatagram>,
    level: LevelFilter,
    pid: u32,
}

/// LOG_DAEMON, shifted as syslog priorities expect.
const FACILITY_DAEMON: u8 = 3 << 3;

impl SyslogLogger {
    fn connect(path: &Path, level: LevelFilter) -> std::io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        // A full or restarting syslog must not stall packet handling: drop the line instead.
        socket.set_nonblocking(true)?;
        Ok(SyslogLogger {
            socket: Mutex::new(socket),
            level,
            pid: std::process::id(),
        })
    }
}

impl Log for SyslogLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let severity: u8 = match record.level() {
            Level::Error => 3,
            Level::Warn => 5,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        let line = format!(
            "<{}>nfsentry[{}]: {}",
            FACILITY_DAEMON | severity,
            self.pid,
            record.args()
        );
        if let Ok(socket) = self.socket.lock() {
            let _ = socket.send(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Best effort flush for stderr-backed loggers before exit.
pub fn flush() {
    log::logger().flush();
    let _ = std::io::stderr().flush();
}
