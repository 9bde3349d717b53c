//! The `command` action: the admin's program, run once per block directly (never through a
//! shell) with `$TARGET$`, `$PORT$` and `$MODE$` filled into its arguments, and killed with its
//! process group when it overruns its time. It undoes nothing and does not run again for blocks
//! restored at start: PortSentry's KILL_RUN_CMD is a one-shot hook.
//!
//! The child runs with stdin and stdout on /dev/null, stderr captured (the first
//! [`STDERR_KEPT_BYTES`] are kept for the log), cwd `/`, in a process group of its own so that a
//! timeout reaches whatever it started, and with every descriptor of the daemon above stderr
//! closed at exec. It inherits the daemon's user and environment, and, as uid 0, exactly the
//! capabilities left in the daemon's bounding set (CAP_NET_ADMIN).

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use log::{info, warn};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use thiserror::Error;

use super::{Backend, BackendError};
use crate::store::BlockRecord;

const BACKEND_NAME: &str = "command";
pub const TARGET_PLACEHOLDER: &str = "$TARGET$";
pub const PORT_PLACEHOLDER: &str = "$PORT$";
pub const MODE_PLACEHOLDER: &str = "$MODE$";
/// How much of the child's stderr reaches the log; the rest is read and dropped so that a
/// chatty child never stalls on a full pipe.
pub const STDERR_KEPT_BYTES: usize = 4096;
/// Longest wait between checks for the child's exit; also the precision of the timeout.
const POLL_STEP: Duration = Duration::from_millis(10);
/// Bounds one drain of the stderr pipe, so a child writing without pause cannot hold the
/// responder past its deadline.
const READS_PER_DRAIN: usize = 16;

#[derive(Debug, Error)]
pub enum CommandError {
    #[error("no program configured")]
    NoProgram,
    #[error("cannot start {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("cannot wait for {program}: {source}")]
    Wait { program: String, source: io::Error },
}

/// What one run of the command did.
#[derive(Debug)]
pub struct CommandOutcome {
    /// The argv as run, placeholders filled in.
    pub argv: Vec<String>,
    pub status: ExitStatus,
    /// Killed because it overran the timeout (`status` then shows SIGKILL).
    pub timed_out: bool,
    /// The first [`STDERR_KEPT_BYTES`] of its stderr.
    pub stderr: Vec<u8>,
    /// It wrote more than was kept.
    pub stderr_truncated: bool,
    pub elapsed: Duration,
}

impl CommandOutcome {
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.status.success()
    }
}

pub struct CommandBackend {
    argv: Vec<String>,
    timeout: Duration,
}

impl CommandBackend {
    pub fn new(argv: Vec<String>, timeout: Duration) -> CommandBackend {
        CommandBackend { argv, timeout }
    }

    /// The argv for `block`: each placeholder replaced inside its own argument, which stays one
    /// argument whatever it contains. `$TARGET$` is the bare address (no brackets for IPv6),
    /// `$MODE$` the protocol in lower case (`tcp`, `udp`, `ip`).
    pub fn argv_for(&self, block: &BlockRecord) -> Vec<String> {
        let target = block.source.to_string();
        let port = block.port.to_string();
        let mode = block.protocol.to_ascii_lowercase();
        let values = [
            (TARGET_PLACEHOLDER, target.as_str()),
            (PORT_PLACEHOLDER, port.as_str()),
            (MODE_PLACEHOLDER, mode.as_str()),
        ];
        self.argv
            .iter()
            .map(|arg| substitute(arg, &values))
            .collect()
    }

    /// Runs the command for `block` and waits for it, at most the timeout (plus the time to
    /// reap a killed child).
    pub fn run(&self, block: &BlockRecord) -> Result<CommandOutcome, CommandError> {
        let argv = self.argv_for(block);
        let (program, args) = argv.split_first().ok_or(CommandError::NoProgram)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .current_dir("/")
            .process_group(0);
        // SAFETY: the hook runs between fork and exec and only makes one raw syscall, which is
        // async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(close_inherited_descriptors_at_exec);
        }
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
        let mut stderr = StderrCapture::new(child.stderr.take());
        let deadline = started + self.timeout;
        let (status, timed_out) = loop {
            match child.try_wait() {
                Ok(Some(status)) => break (status, false),
                Ok(None) => {}
                Err(source) => {
                    kill_group(child.id());
                    let _ = child.wait();
                    return Err(CommandError::Wait {
                        program: program.clone(),
                        source,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill_group(child.id());
                let status = child.wait().map_err(|source| CommandError::Wait {
                    program: program.clone(),
                    source,
                })?;
                break (status, true);
            }
            stderr.wait_and_read(POLL_STEP.min(deadline - now));
        };
        // What it wrote just before exiting; a descendant still holding the pipe is not
        // waited for.
        stderr.drain();
        Ok(CommandOutcome {
            argv,
            status,
            timed_out,
            stderr: stderr.kept,
            stderr_truncated: stderr.truncated,
            elapsed: started.elapsed(),
        })
    }

    fn log(&self, outcome: &CommandOutcome, block: &BlockRecord) {
        let program = outcome.argv.first().map_or("", String::as_str);
        let source = block.source;
        let stderr = describe_stderr(outcome);
        if outcome.timed_out {
            warn!(
                "command {program} for {source} killed after {:?}, its time limit{stderr}",
                self.timeout
            );
        } else if outcome.status.success() {
            info!(
                "command {program} for {source} finished: {}{stderr}",
                outcome.status
            );
        } else {
            warn!(
                "command {program} for {source} failed: {}{stderr}",
                outcome.status
            );
        }
    }
}

fn describe_stderr(outcome: &CommandOutcome) -> String {
    let text = String::from_utf8_lossy(&outcome.stderr);
    let text = text.trim_end();
    if text.is_empty() {
        return String::new();
    }
    let more = if outcome.stderr_truncated {
        " (truncated)"
    } else {
        ""
    };
    // Debug formatting keeps a multi-line message on one log line.
    format!("; stderr{more}: {text:?}")
}

fn failed(message: String) -> BackendError {
    BackendError::Failed {
        backend: BACKEND_NAME,
        message,
    }
}

impl Backend for CommandBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    fn block(&mut self, block: &BlockRecord, _now: SystemTime) -> Result<(), BackendError> {
        let outcome = self.run(block).map_err(|e| failed(e.to_string()))?;
        self.log(&outcome, block);
        if outcome.timed_out {
            return Err(failed(format!("killed after {:?}", self.timeout)));
        }
        if !outcome.status.success() {
            return Err(failed(outcome.status.to_string()));
        }
        Ok(())
    }

    /// Does nothing: like PortSentry's KILL_RUN_CMD, the command has no undo, and nfsentry
    /// cannot know what it did.
    fn release(&mut self, _block: &BlockRecord) -> Result<(), BackendError> {
        Ok(())
    }

    /// Does nothing: the command ran when the block was placed, and running an arbitrary
    /// program again on every start would not be idempotent (a second mail, a doubled rule).
    fn restore(&mut self, _blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Replaces each placeholder in one left-to-right pass, so text a value brings in is never
/// itself substituted.
fn substitute(arg: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    'scan: while !rest.is_empty() {
        for (placeholder, value) in values {
            if let Some(after) = rest.strip_prefix(placeholder) {
                out.push_str(value);
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Marks every descriptor above stderr close-on-exec in the child. Libraries the daemon uses
/// open sockets without O_CLOEXEC; a program that inherits the NFQUEUE socket and outlives the
/// daemon keeps the queue bound, and the next start fails with EPERM. Marking instead of closing
/// keeps std's own exec-error pipe working. Kernels before 5.11 lack the call; the error is
/// ignored there rather than failing the block.
fn close_inherited_descriptors_at_exec() -> io::Result<()> {
    // SAFETY: a raw syscall with integer arguments only.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    Ok(())
}

fn kill_group(child_id: u32) {
    // The child leads its own group (process_group(0)), so its pid is the group id. It is not
    // reaped yet, so the id cannot have been reused.
    let Ok(pid) = i32::try_from(child_id) else {
        return;
    };
    if let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        if e != Errno::ESRCH {
            warn!("cannot kill process group {pid}: {e}");
        }
    }
}

/// The child's stderr, read without ever blocking past the caller's wait.
struct StderrCapture {
    pipe: Option<ChildStderr>,
    kept: Vec<u8>,
    truncated: bool,
}

impl StderrCapture {
    fn new(pipe: Option<ChildStderr>) -> StderrCapture {
        let pipe = pipe.filter(|pipe| fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok());
        StderrCapture {
            pipe,
            kept: Vec::new(),
            truncated: false,
        }
    }

    /// Waits up to `wait` for output (or just sleeps once the pipe is closed), then reads it.
    fn wait_and_read(&mut self, wait: Duration) {
        // Rounded up: a zero timeout near the deadline would spin.
        let millis = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
        let Some(pipe) = &self.pipe else {
            std::thread::sleep(wait);
            return;
        };
        let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(Errno::EINTR) => {}
            Ok(_) => self.drain(),
            Err(_) => self.pipe = None,
        }
    }

    fn drain(&mut self) {
        let mut buffer = [0u8; 4096];
        for _ in 0..READS_PER_DRAIN {
            let Some(pipe) = self.pipe.as_mut() else {
                return;
            };
            match pipe.read(&mut buffer) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => self.keep(buffer.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = STDERR_KEPT_BYTES.saturating_sub(self.kept.len());
        let (kept, dropped) = bytes.split_at(room.min(bytes.len()));
        self.kept.extend_from_slice(kept);
        self.truncated |= !dropped.is_empty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn record(source: IpAddr, protocol: &str, port: u16) -> BlockRecord {
        BlockRecord {
            source,
            added: 0,
            expires: None,
            protocol: protocol.into(),
            port,
            kind: "SYN/Normal".into(),
        }
    }

    fn backend(argv: &[&str]) -> CommandBackend {
        CommandBackend::new(
            argv.iter().map(|a| a.to_string()).collect(),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn placeholders_are_filled_inside_arguments() {
        let backend = backend(&[
            "/usr/local/sbin/notify",
            "--host=$TARGET$",
            "$PORT$/$MODE$",
            "$TARGET$$TARGET$",
            "$UNKNOWN$ $PORT",
        ]);
        let v4 = record(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "UDP", 161);
        assert_eq!(
            backend.argv_for(&v4),
            vec![
                "/usr/local/sbin/notify",
                "--host=192.0.2.7",
                "161/udp",
                "192.0.2.7192.0.2.7",
                "$UNKNOWN$ $PORT",
            ]
        );
        let v6 = record(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            "IP",
            6,
        );
        assert_eq!(backend.argv_for(&v6)[1], "--host=2001:db8::7");
        assert_eq!(backend.argv_for(&v6)[2], "6/ip");
    }

    #[test]
    fn substituted_values_are_not_substituted_again() {
        assert_eq!(
            substitute("$A$-$B$", &[("$A$", "$B$"), ("$B$", "x")]),
            "$B$-x"
        );
        assert_eq!(substitute("€$A$€", &[("$A$", "1")]), "€1€");
    }

    #[test]
    fn stderr_keeps_only_the_first_bytes() {
        let mut capture = StderrCapture::new(None);
        capture.keep(&[b'a'; STDERR_KEPT_BYTES - 1]);
        assert!(!capture.truncated);
        capture.keep(b"bc");
        assert_eq!(capture.kept.len(), STDERR_KEPT_BYTES);
        assert_eq!(capture.kept.last(), Some(&b'b'));
        assert!(capture.truncated);
    }

    #[test]
    fn an_empty_argv_is_an_error_not_a_panic() {
        let backend = CommandBackend::new(Vec::new(), Duration::from_secs(1));
        let v4 = record(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "TCP", 23);
        assert!(matches!(backend.run(&v4), Err(CommandError::NoProgram)));
    }
}
