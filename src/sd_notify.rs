//! The service-manager edge: tells systemd (`Type=notify`) that nfsentry is ready, what it is
//! doing, that it is still alive (the watchdog), and that it is reloading or stopping — one
//! datagram per message over `$NOTIFY_SOCKET`. With the variable unset every call does
//! nothing, so a foreground run or a test behaves the same.
//!
//! It never blocks: the socket is non-blocking, and a manager too busy to take a message loses
//! that message rather than stall the packet loop. It decides nothing about *when* to say
//! what; the daemon does.
//!
//! Written here rather than taken from the `sd-notify` crate because that crate opens a new
//! socket and sends blocking for every message, and its API changed between 0.4 and 0.5; what
//! is needed fits in this file on top of std, which knows abstract socket addresses.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is neither an absolute path nor an `@` abstract name.
    #[error("NOTIFY_SOCKET={value:?} is neither an absolute path nor an @abstract name")]
    Address { value: String },
    #[error("cannot create a socket for NOTIFY_SOCKET={socket}: {source}")]
    Socket { socket: String, source: io::Error },
    /// `WouldBlock` here means the manager's queue is full and the message was dropped.
    #[error("cannot send {message:?} to NOTIFY_SOCKET={socket}: {source}")]
    Send {
        socket: String,
        message: String,
        source: io::Error,
    },
}

/// One state change, as the `sd_notify(3)` protocol names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State<'a> {
    /// Start-up (or a reload) is finished: `READY=1`.
    Ready,
    /// A reload began; `READY=1` ends it. Sent with `MONOTONIC_USEC`, which systemd 253's
    /// `Type=notify-reload` requires and older managers ignore.
    Reloading,
    /// A clean shutdown began.
    Stopping,
    /// A free-form line for `systemctl status`; line breaks become spaces.
    Status(&'a str),
    /// Still alive: resets the `WatchdogSec=` timer.
    Watchdog,
}

/// The connection to the service manager, or nothing when there is none.
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Keepalive>,
}

struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for error messages.
    shown: String,
}

struct Keepalive {
    every: Duration,
    last: Option<Instant>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`, once at start-up. The
    /// variables stay set for the programs nfsentry runs; `NotifyAccess=main` makes systemd
    /// ignore anything they send.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let watchdog = watchdog_timeout_from(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        Notifier::new(socket.as_deref(), watchdog)
    }

    /// A notifier for `socket` (the value of `$NOTIFY_SOCKET`; None or empty means none) whose
    /// manager expects a watchdog ping within `watchdog_timeout`.
    pub fn new(
        socket: Option<&OsStr>,
        watchdog_timeout: Option<Duration>,
    ) -> Result<Notifier, NotifyError> {
        let target = match socket.filter(|value| !value.is_empty()) {
            None => None,
            Some(value) => Some(Target::open(value)?),
        };
        Ok(Notifier {
            watchdog: target
                .as_ref()
                .and(watchdog_timeout)
                .map(|timeout| Keepalive {
                    // Half the timeout, as sd_watchdog_enabled(3) advises: a late wake-up or a
                    // slow packet burst must not cost a restart.
                    every: timeout / 2,
                    last: None,
                }),
            target,
        })
    }

    /// A notifier that sends nothing: what the daemon falls back to, after logging why, when
    /// `$NOTIFY_SOCKET` cannot be used. Failing the start over it would help nobody.
    pub fn disabled() -> Notifier {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Whether a service manager is listening.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often [`Notifier::keep_alive`] pings; None when no watchdog is configured.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.as_ref().map(|keepalive| keepalive.every)
    }

    /// Sends `states` as one datagram; a no-op without a manager.
    pub fn send(&self, states: &[State<'_>]) -> Result<(), NotifyError> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let message = encode(states);
        target
            .socket
            .send_to_addr(message.as_bytes(), &target.address)
            .map(drop)
            .map_err(|source| NotifyError::Send {
                socket: target.shown.clone(),
                message,
                source,
            })
    }

    /// Start-up is done: `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&[State::Ready, State::Status(status)])
    }

    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&[State::Status(status)])
    }

    pub fn reloading(&self) -> Result<(), NotifyError> {
        self.send(&[State::Reloading, State::Status("reloading")])
    }

    pub fn stopping(&self) -> Result<(), NotifyError> {
        self.send(&[State::Stopping, State::Status("stopping")])
    }

    /// `WATCHDOG=1` when half the manager's timeout has passed since the last ping (or none was
    /// sent yet); cheap enough to call on every turn of the packet loop. True when it sent.
    pub fn keep_alive(&mut self, now: Instant) -> Result<bool, NotifyError> {
        let Some(keepalive) = self.watchdog.as_mut() else {
            return Ok(false);
        };
        if keepalive
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < keepalive.every)
        {
            return Ok(false);
        }
        // Counted as sent even if the manager's queue was full: retrying on every turn of the
        // loop would only add to that queue.
        keepalive.last = Some(now);
        self.send(&[State::Watchdog]).map(|()| true)
    }
}

impl Target {
    fn open(value: &OsStr) -> Result<Target, NotifyError> {
        let shown = value.to_string_lossy().into_owned();
        let bytes = value.as_bytes();
        let address = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            Some(b'/') => SocketAddr::from_pathname(value),
            _ => return Err(NotifyError::Address { value: shown }),
        };
        let socket_error = |source| NotifyError::Socket {
            socket: shown.clone(),
            source,
        };
        let address = address.map_err(socket_error)?;
        // Unconnected: each send resolves the address again, so a manager that re-executed
        // itself and re-created its socket is still reached.
        let socket = UnixDatagram::unbound().map_err(socket_error)?;
        socket.set_nonblocking(true).map_err(socket_error)?;
        Ok(Target {
            socket,
            address,
            shown,
        })
    }
}

/// `KEY=value` lines, newline-terminated, as sd_notify(3) sends them.
fn encode(states: &[State<'_>]) -> String {
    let mut message = String::new();
    for state in states {
        match state {
            State::Ready => message.push_str("READY=1\n"),
            State::Reloading => {
                message.push_str("RELOADING=1\n");
                message.push_str(&format!("MONOTONIC_USEC={}\n", monotonic_usec()));
            }
            State::Stopping => message.push_str("STOPPING=1\n"),
            State::Watchdog => message.push_str("WATCHDOG=1\n"),
            State::Status(text) => {
                message.push_str("STATUS=");
                message.push_str(&text.replace(['\n', '\r'], " "));
                message.push('\n');
            }
        }
    }
    message
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares `MONOTONIC_USEC` against.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec / 1000).unwrap_or(0);
    seconds.saturating_mul(1_000_000).saturating_add(micros)
}

/// The manager's watchdog timeout from `$WATCHDOG_USEC`, as sd_watchdog_enabled(3) reads it:
/// unset, zero or unreadable means none, and a `$WATCHDOG_PID` naming another process means
/// the watchdog is that process's business, not ours.
pub fn watchdog_timeout_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receiving socket at a fresh path, and that path as `$NOTIFY_SOCKET` would give it.
    fn path_manager() -> (tempfile::TempDir, UnixDatagram, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (dir, manager, path.to_string_lossy().into_owned())
    }

    fn receive(manager: &UnixDatagram) -> String {
        let mut buffer = [0u8; 4096];
        let length = manager.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..length].to_vec()).unwrap()
    }

    #[test]
    fn without_a_socket_every_call_is_a_silent_no_op() {
        for socket in [None, Some(OsStr::new(""))] {
            let mut notifier = Notifier::new(socket, Some(Duration::from_secs(10))).unwrap();
            assert!(!notifier.is_enabled());
            assert_eq!(notifier.watchdog_every(), None);
            notifier.ready("watching").unwrap();
            notifier.status("x").unwrap();
            notifier.reloading().unwrap();
            notifier.stopping().unwrap();
            assert!(!notifier.keep_alive(Instant::now()).unwrap());
        }
        let mut disabled = Notifier::disabled();
        assert!(!disabled.is_enabled());
        disabled.ready("watching").unwrap();
        assert!(!disabled.keep_alive(Instant::now()).unwrap());
    }

    #[test]
    fn ready_and_status_reach_a_path_socket_as_one_datagram() {
        let (_dir, manager, path) = path_manager();
        let notifier = Notifier::new(Some(OsStr::new(&path)), None).unwrap();
        assert!(notifier.is_enabled());
        notifier.ready("watching; 3 blocks in place").unwrap();
        assert_eq!(
            receive(&manager),
            "READY=1\nSTATUS=watching; 3 blocks in place\n"
        );
        notifier.stopping().unwrap();
        assert_eq!(receive(&manager), "STOPPING=1\nSTATUS=stopping\n");
    }

    #[test]
    fn an_abstract_address_is_reached_through_its_at_sign() {
        let name = format!("nfsentry-test-notify-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&address).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let notifier = Notifier::new(Some(OsStr::new(&format!("@{name}"))), None).unwrap();
        notifier.status("installing the ruleset").unwrap();
        assert_eq!(receive(&manager), "STATUS=installing the ruleset\n");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let (_dir, manager, path) = path_manager();
        let notifier = Notifier::new(Some(OsStr::new(&path)), None).unwrap();
        let before = monotonic_usec();
        notifier.reloading().unwrap();
        let message = receive(&manager);
        let mut lines = message.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let stamp: u64 = lines
            .next()
            .and_then(|line| line.strip_prefix("MONOTONIC_USEC="))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no MONOTONIC_USEC line in {message:?}"));
        assert!((before..=monotonic_usec()).contains(&stamp), "{message:?}");
        assert_eq!(lines.next(), Some("STATUS=reloading"));
    }

    #[test]
    fn a_status_cannot_smuggle_in_another_assignment() {
        let (_dir, manager, path) = path_manager();
        let notifier = Notifier::new(Some(OsStr::new(&path)), None).unwrap();
        notifier.status("bad\nREADY=1\r\n").unwrap();
        assert_eq!(receive(&manager), "STATUS=bad READY=1  \n");
    }

    #[test]
    fn a_manager_that_never_reads_does_not_block_the_sender() {
        let (_dir, _manager, path) = path_manager();
        let notifier = Notifier::new(Some(OsStr::new(&path)), None).unwrap();
        let started = Instant::now();
        let mut dropped = 0;
        for _ in 0..10_000 {
            match notifier.send(&[State::Watchdog]) {
                Ok(()) => {}
                Err(NotifyError::Send { source, .. })
                    if source.kind() == io::ErrorKind::WouldBlock =>
                {
                    dropped += 1
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert!(dropped > 0, "the receive queue never filled up");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sending took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_vanished_manager_is_an_error_not_a_hang() {
        let (dir, manager, path) = path_manager();
        let notifier = Notifier::new(Some(OsStr::new(&path)), None).unwrap();
        drop(manager);
        drop(dir);
        let error = notifier.ready("watching").unwrap_err();
        assert!(error.to_string().contains(&path), "{error}");
    }

    #[test]
    fn a_relative_or_foreign_address_is_refused_with_its_value() {
        for value in ["notify.sock", "vsock:2:1234"] {
            let error = Notifier::new(Some(OsStr::new(value)), None)
                .err()
                .unwrap_or_else(|| panic!("{value} accepted"));
            assert!(error.to_string().contains(value), "{error}");
        }
    }

    #[test]
    fn keep_alive_pings_at_half_the_timeout() {
        let (_dir, manager, path) = path_manager();
        let mut notifier =
            Notifier::new(Some(OsStr::new(&path)), Some(Duration::from_secs(30))).unwrap();
        assert_eq!(notifier.watchdog_every(), Some(Duration::from_secs(15)));
        let start = Instant::now();
        assert!(notifier.keep_alive(start).unwrap(), "first call pings");
        assert_eq!(receive(&manager), "WATCHDOG=1\n");
        assert!(!notifier
            .keep_alive(start + Duration::from_secs(14))
            .unwrap());
        assert!(notifier
            .keep_alive(start + Duration::from_secs(15))
            .unwrap());
        assert_eq!(receive(&manager), "WATCHDOG=1\n");
    }

    #[test]
    fn watchdog_timeout_follows_sd_watchdog_enabled() {
        let os = |text: &'static str| Some(OsStr::new(text));
        let thirty = Some(Duration::from_secs(30));
        assert_eq!(watchdog_timeout_from(os("30000000"), None, 42), thirty);
        assert_eq!(watchdog_timeout_from(os("30000000"), os("42"), 42), thirty);
        assert_eq!(watchdog_timeout_from(os("30000000"), os("41"), 42), None);
        assert_eq!(watchdog_timeout_from(os("30000000"), os("x"), 42), None);
        assert_eq!(watchdog_timeout_from(os("0"), None, 42), None);
        assert_eq!(watchdog_timeout_from(os("30s"), None, 42), None);
        assert_eq!(watchdog_timeout_from(None, os("42"), 42), None);
    }
}
