//! Running one external program for the responder: started directly (never through a shell) in a
//! process group of its own, with cwd `/`, stdout on /dev/null, none of the daemon's descriptors
//! above stderr, its standard input fed without blocking, the start of its standard error kept,
//! and the whole group killed when it overruns its time. It does not build argv, search PATH,
//! judge an exit status or log what a program did: the actions do, and they reach this module
//! through [`super::executor`]'s spawning executor.
//!
//! The child inherits the daemon's user and environment, and, as uid 0, exactly the
//! capabilities left in the daemon's bounding set.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use log::warn;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use thiserror::Error;

/// How much of a child's standard error is kept for the log; the rest is read and dropped so
/// that a chatty child never stalls on a full pipe.
pub const STDERR_KEPT_BYTES: usize = 4096;
/// First pause between checks for the child's exit: firewall tools finish in milliseconds, and
/// a child that has closed its stderr gives no other sign that it is done.
const EXIT_CHECK_FIRST: Duration = Duration::from_millis(1);
/// Longest pause between checks; also the precision of the timeout.
const EXIT_CHECK_MAX: Duration = Duration::from_millis(10);
/// Bounds one drain of the stderr pipe, so a child writing without pause cannot hold the
/// caller past its deadline.
const READS_PER_DRAIN: usize = 16;
const READ_CHUNK_BYTES: usize = 4096;
/// Where the descriptor walk stops on kernels without `close_range`: a descriptor limit raised
/// to millions would otherwise cost seconds per start.
const DESCRIPTOR_WALK_LIMIT: libc::c_int = 1 << 20;

/// One program run: the program (an absolute path, or a bare name searched in PATH), whole argv
/// elements that are never split or re-parsed, and what to feed on standard input. Without
/// input, standard input is /dev/null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub stdin: Option<Vec<u8>>,
}

/// The command as a reader would type it; standard input is shown after `<`.
impl fmt::Display for Invocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.program.display())?;
        for arg in &self.args {
            write!(formatter, " {arg}")?;
        }
        if let Some(input) = &self.stdin {
            write!(
                formatter,
                " < '{}'",
                String::from_utf8_lossy(input).trim_end()
            )?;
        }
        Ok(())
    }
}

/// How one run ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    /// Killed with its process group because it overran the timeout (`status` then shows
    /// SIGKILL).
    pub timed_out: bool,
    /// The first [`STDERR_KEPT_BYTES`] of its standard error.
    pub stderr: Vec<u8>,
    /// It wrote more than was kept.
    pub stderr_truncated: bool,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        !self.timed_out && self.status.success()
    }

    /// The kept standard error as one line of text for a log or error message: lossy UTF-8,
    /// surrounding blank space trimmed, and line breaks and other control characters written as
    /// escapes (`\n`), so that what a program prints can neither split the message nor pose as
    /// a log line of its own. Empty when it said nothing.
    pub fn stderr_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let mut line = String::with_capacity(text.len());
        for c in text.trim().chars() {
            match c.is_control() {
                true => line.extend(c.escape_default()),
                false => line.push(c),
            }
        }
        line
    }

    /// [`Outcome::stderr_text`] ready for the end of a message: `; stderr: …`, with
    /// `(truncated)` when the program wrote more than was kept; empty when it said nothing.
    pub fn stderr_suffix(&self) -> String {
        let text = self.stderr_text();
        match (text.is_empty(), self.stderr_truncated) {
            (true, _) => String::new(),
            (false, false) => format!("; stderr: {text}"),
            (false, true) => format!("; stderr (truncated): {text}"),
        }
    }
}

/// Why a run gave no [`Outcome`]. The messages do not name the program, which each caller
/// shows in its own way, and carry the system's error in the text.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot start: {0}")]
    Spawn(io::Error),
    #[error("cannot write its standard input: {0}")]
    Stdin(io::Error),
    /// Reported only for a zero exit: a program that stops reading its input and then claims
    /// success has not done what the input asked (ipf reads its rule there). A non-zero exit
    /// comes back as an [`Outcome`], whose status says more.
    #[error(
        "exited with success before taking all of its standard input ({written} of {total} bytes)"
    )]
    StdinNotTaken { written: usize, total: usize },
    #[error("cannot wait for its exit: {0}")]
    Wait(io::Error),
}

/// Runs `invocation` and waits for it at most `timeout` (plus the time to reap a killed child).
/// On timeout the whole process group is killed, so helpers the program started do not linger,
/// and the outcome says `timed_out`.
///
/// Standard error is a pipe read while the child runs, because a file would grow without bound
/// under a child that writes without pause. Once the child has exited only what is already in
/// the pipe is read: a helper that escaped the group and holds the pipe open is not waited for.
pub fn run(invocation: &Invocation, timeout: Duration) -> Result<Outcome, RunError> {
    let mut command = Command::new(&invocation.program);
    command
        .args(&invocation.args)
        .stdin(match invocation.stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Nothing the program does should depend on, or keep busy, the daemon's directory.
        .current_dir("/")
        // Its own group, so a timeout reaches whatever it started.
        .process_group(0);
    // SAFETY: the hook runs between fork and exec and makes only raw syscalls (close_range, or
    // getrlimit into a local and fcntl), which are async-signal-safe and touch no memory of the
    // parent.
    unsafe {
        command.pre_exec(mark_inherited_descriptors_close_on_exec);
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let mut input = InputFeed::new(
        child.stdin.take(),
        invocation.stdin.as_deref().unwrap_or_default(),
    );
    let mut errors = StderrCapture::new(child.stderr.take());
    // None: a timeout too long to represent, which is no timeout.
    let deadline = started.checked_add(timeout);
    let mut pause = EXIT_CHECK_FIRST;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(RunError::Wait(e));
            }
        }
        let now = Instant::now();
        let left = match deadline {
            Some(deadline) if now >= deadline => {
                kill_group(&mut child);
                let status = child.wait().map_err(RunError::Wait)?;
                break (status, true);
            }
            Some(deadline) => deadline - now,
            None => EXIT_CHECK_MAX,
        };
        let busy = serve_pipes(&mut input, &mut errors, pause.min(left));
        pause = match busy {
            true => EXIT_CHECK_FIRST,
            false => (pause * 2).min(EXIT_CHECK_MAX),
        };
    };
    input.close();
    // What it wrote just before exiting.
    errors.drain();
    if status.success() && !timed_out {
        if let Some(e) = input.error {
            return Err(RunError::Stdin(e));
        }
        if input.written() < input.total {
            return Err(RunError::StdinNotTaken {
                written: input.written(),
                total: input.total,
            });
        }
    }
    Ok(Outcome {
        status,
        timed_out,
        stderr: errors.kept,
        stderr_truncated: errors.truncated,
        elapsed: started.elapsed(),
    })
}

/// Waits up to `wait` for either pipe to be ready and serves it, or just sleeps once both are
/// closed. Says whether a pipe was ready.
fn serve_pipes(input: &mut InputFeed, errors: &mut StderrCapture, wait: Duration) -> bool {
    // Rounded up: a zero timeout near the deadline would spin.
    let millis = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
    let (input_ready, errors_ready) = {
        let mut fds = Vec::with_capacity(2);
        let input_slot = input.pipe.as_ref().map(|pipe| {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLOUT));
            fds.len() - 1
        });
        let errors_slot = errors.pipe.as_ref().map(|pipe| {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        if fds.is_empty() {
            thread::sleep(wait);
            return false;
        }
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(Errno::EINTR) => return false,
            // Hang-up and error count as ready: the write or read that follows finds out which.
            Ok(_) => {
                let ready = |slot: Option<usize>| {
                    slot.and_then(|slot| fds.get(slot))
                        .and_then(PollFd::revents)
                        .is_some_and(|events| !events.is_empty())
                };
                (ready(input_slot), ready(errors_slot))
            }
            Err(_) => {
                // Both pipes are non-blocking, so serving them blind is safe; the pause keeps
                // this from spinning while poll keeps failing.
                thread::sleep(wait);
                (input_slot.is_some(), errors_slot.is_some())
            }
        }
    };
    if input_ready {
        input.write_some();
    }
    if errors_ready {
        errors.drain();
    }
    input_ready || errors_ready
}

/// The child's standard input, written without ever blocking and closed once all of it is
/// written, so that a program reading to end of file sees it.
struct InputFeed<'a> {
    pipe: Option<ChildStdin>,
    rest: &'a [u8],
    total: usize,
    /// A write that failed other than by the child closing its end.
    error: Option<io::Error>,
}

impl<'a> InputFeed<'a> {
    fn new(pipe: Option<ChildStdin>, input: &'a [u8]) -> InputFeed<'a> {
        let mut feed = InputFeed {
            pipe,
            rest: input,
            total: input.len(),
            error: None,
        };
        if let Some(pipe) = &feed.pipe {
            if let Err(errno) = fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)) {
                // A blocking write could hold the caller past the deadline; send nothing.
                feed.error = Some(errno.into());
                feed.pipe = None;
            }
        }
        // Most input fits in the pipe at once; empty input closes the pipe straight away.
        feed.write_some();
        feed
    }

    fn written(&self) -> usize {
        self.total - self.rest.len()
    }

    /// Writes as much as the pipe takes now.
    fn write_some(&mut self) {
        while let Some(pipe) = self.pipe.as_mut() {
            if self.rest.is_empty() {
                self.close();
                return;
            }
            match pipe.write(self.rest) {
                Ok(0) => self.close(),
                Ok(n) => self.rest = self.rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The child closed its end; what is left unwritten tells the rest.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => self.close(),
                Err(e) => {
                    self.error = Some(e);
                    self.close();
                }
            }
        }
    }

    fn close(&mut self) {
        self.pipe = None;
    }
}

/// The child's stderr, read without ever blocking.
struct StderrCapture {
    pipe: Option<ChildStderr>,
    kept: Vec<u8>,
    truncated: bool,
}

impl StderrCapture {
    fn new(pipe: Option<ChildStderr>) -> StderrCapture {
        // A pipe that cannot be made non-blocking is closed: the child then gets EPIPE on its
        // stderr rather than the caller blocking on a read.
        let pipe = pipe.filter(|pipe| fcntl(pipe, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok());
        StderrCapture {
            pipe,
            kept: Vec::new(),
            truncated: false,
        }
    }

    fn drain(&mut self) {
        let mut buffer = [0u8; READ_CHUNK_BYTES];
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

/// The child leads its own group (`process_group(0)`), so its pid is the group id, and it is not
/// reaped yet, so the id cannot have been reused: the group holds only what this run started.
/// Should the group not be there, the child alone is killed, so that the wait after this cannot
/// hang on it.
fn kill_group(child: &mut Child) {
    let group = i32::try_from(child.id()).map(Pid::from_raw);
    match group.map(|group| killpg(group, Signal::SIGKILL)) {
        Ok(Ok(())) => return,
        Ok(Err(Errno::ESRCH)) | Err(_) => {}
        Ok(Err(e)) => warn!("cannot kill process group {}: {e}", child.id()),
    }
    if let Err(e) = child.kill() {
        warn!("cannot kill timed-out process {}: {e}", child.id());
    }
}

/// Marks every descriptor above stderr close-on-exec in the child. Libraries the daemon uses
/// open sockets without O_CLOEXEC; a program that inherits the NFQUEUE or nft netlink socket and
/// outlives the daemon keeps the queue bound, and the next start fails with EPERM. Marking
/// instead of closing keeps std's own exec-error pipe working. Kernels before 5.11 lack the
/// CLOEXEC flag of `close_range`; they get the slower walk over every descriptor number.
fn mark_inherited_descriptors_close_on_exec() -> io::Result<()> {
    // SAFETY: a raw syscall with integer arguments only.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked != 0 {
        mark_each_descriptor_close_on_exec();
    }
    Ok(())
}

/// One `fcntl` per descriptor number below the open-file limit. A descriptor opened before the
/// limit was lowered can sit above it; the daemon does not lower its limit.
fn mark_each_descriptor_close_on_exec() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let end = match known {
        true => libc::c_int::try_from(limit.rlim_cur).unwrap_or(DESCRIPTOR_WALK_LIMIT),
        false => DESCRIPTOR_WALK_LIMIT,
    }
    .min(DESCRIPTOR_WALK_LIMIT);
    for descriptor in 3..end {
        // SAFETY: fcntl on a number that may not be open only fails with EBADF.
        unsafe {
            libc::fcntl(descriptor, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    fn shell(script: &str, stdin: Option<&[u8]>) -> Invocation {
        Invocation {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            stdin: stdin.map(<[u8]>::to_vec),
        }
    }

    fn process_is_gone(pid: i32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // A zombie is dead; it waits for its new parent to reap it.
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    fn wait_until_gone(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !process_is_gone(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        process_is_gone(pid)
    }

    /// The pid a script printed as its first line on stderr.
    fn first_line_pid(outcome: &Outcome) -> i32 {
        let text = String::from_utf8_lossy(&outcome.stderr);
        let first = text.lines().next().unwrap_or_default();
        first
            .parse()
            .unwrap_or_else(|_| panic!("no pid first in {text:?}"))
    }

    /// A descriptor numbered 200 or above without close-on-exec, as a library's socket would be.
    fn inheritable_descriptor() -> OwnedFd {
        let file = File::open("/dev/null").unwrap();
        // SAFETY: F_DUPFD returns a new descriptor (or -1), owned by nothing else.
        let duplicate = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD, 200) };
        assert!(duplicate >= 200, "{}", io::Error::last_os_error());
        // SAFETY: just created above and not owned elsewhere.
        unsafe { OwnedFd::from_raw_fd(duplicate) }
    }

    /// Prints "open" or "closed" on stderr for descriptor `number` as the shell sees it.
    fn descriptor_probe(number: i32) -> String {
        format!("if [ -e /proc/$$/fd/{number} ]; then echo open >&2; else echo closed >&2; fi")
    }

    #[test]
    fn collects_status_stderr_and_feeds_stdin() {
        let invocation = shell(
            "cat >&2; exit 3",
            Some(b"block in log from 192.0.2.7/32 to any\n"),
        );
        let outcome = run(&invocation, Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.status.code(), Some(3));
        assert!(!outcome.timed_out);
        assert!(!outcome.succeeded());
        assert_eq!(outcome.stderr, b"block in log from 192.0.2.7/32 to any\n");
        assert_eq!(
            outcome.stderr_text(),
            "block in log from 192.0.2.7/32 to any"
        );
        assert!(!outcome.stderr_truncated);
    }

    #[test]
    fn stderr_is_one_escaped_line_and_the_suffix_says_when_it_was_cut() {
        let mut outcome = run(
            &shell("printf '  first\\n\\033[2Jsecond\\ttab\\n\\n' >&2", None),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(outcome.stderr_text(), "first\\n\\u{1b}[2Jsecond\\ttab");
        assert_eq!(
            outcome.stderr_suffix(),
            "; stderr: first\\n\\u{1b}[2Jsecond\\ttab"
        );
        outcome.stderr_truncated = true;
        assert!(outcome
            .stderr_suffix()
            .starts_with("; stderr (truncated): first"));

        let silent = run(&shell("echo ' ' >&2", None), Duration::from_secs(5)).unwrap();
        assert_eq!(silent.stderr_text(), "");
        assert_eq!(silent.stderr_suffix(), "");
    }

    #[test]
    fn input_larger_than_a_pipe_is_fed_whole() {
        let input = vec![b'i'; 1 << 20];
        let outcome = run(&shell("wc -c >&2", Some(&input)), Duration::from_secs(10)).unwrap();
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.stderr_text(), (1u32 << 20).to_string());
    }

    #[test]
    fn a_child_that_ignores_its_input_cannot_block_the_caller() {
        let input = vec![b'i'; 1 << 20];
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let outcome = run(&shell("exec sleep 30", Some(&input)), timeout).unwrap();
        assert!(outcome.timed_out);
        assert!(started.elapsed() < timeout + Duration::from_millis(500));

        // Exiting with success having taken none of it is not a success.
        let error = run(&shell("exit 0", Some(&input)), Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(error, RunError::StdinNotTaken { total, written } if total == 1 << 20 && written < total),
            "{error:?}"
        );
        // A failing exit is reported by its status instead.
        let outcome = run(&shell("exit 4", Some(&input)), Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.status.code(), Some(4));
    }

    #[test]
    fn without_input_stdin_and_stdout_are_dev_null_and_cwd_is_root() {
        let probe = "input=$(readlink /proc/$$/fd/0); output=$(readlink /proc/$$/fd/1); \
                     echo \"$input $output $(pwd)\" >&2";
        let outcome = run(&shell(probe, None), Duration::from_secs(5)).unwrap();
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.stderr, b"/dev/null /dev/null /\n");

        // With input, even empty, standard input is a pipe: the probe tells them apart.
        let outcome = run(&shell(probe, Some(b"")), Duration::from_secs(5)).unwrap();
        assert!(outcome.succeeded(), "{outcome:?}");
        assert!(outcome.stderr.starts_with(b"pipe:"), "{outcome:?}");
    }

    #[test]
    fn keeps_only_the_start_of_a_flood_on_stderr() {
        let outcome = run(
            &shell("head -c 1000000 /dev/zero | tr '\\0' e >&2", None),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(outcome.succeeded(), "{outcome:?}");
        assert_eq!(outcome.stderr.len(), STDERR_KEPT_BYTES);
        assert!(outcome.stderr.iter().all(|b| *b == b'e'));
        assert!(outcome.stderr_truncated);
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
    fn kills_the_whole_group_on_timeout() {
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        let outcome = run(&shell("sleep 30 & echo $! >&2; wait", None), timeout).unwrap();
        let took = started.elapsed();
        assert!(outcome.timed_out);
        assert!(!outcome.succeeded());
        assert!(took >= timeout, "returned before the timeout: {took:?}");
        assert!(took < timeout + Duration::from_millis(500), "{took:?}");
        let helper = first_line_pid(&outcome);
        assert!(
            wait_until_gone(helper),
            "helper process {helper} survived the timeout"
        );
    }

    #[test]
    fn a_helper_that_escapes_the_group_holding_stderr_is_not_waited_for() {
        let started = Instant::now();
        let outcome = run(
            &shell("setsid sleep 30 & echo $! >&2; echo parent-done >&2", None),
            Duration::from_secs(10),
        )
        .unwrap();
        let escaped = first_line_pid(&outcome);
        // Ours to clean up: it left the group, so nothing else will.
        let _ = nix::sys::signal::kill(Pid::from_raw(escaped), Signal::SIGKILL);
        assert!(outcome.succeeded(), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            outcome.stderr,
            format!("{escaped}\nparent-done\n").into_bytes()
        );
    }

    #[test]
    fn inherited_descriptors_are_closed_at_exec() {
        let leaked = inheritable_descriptor();
        let probe = descriptor_probe(leaked.as_raw_fd());

        // Without the hook the descriptor is inherited, so the probe can tell.
        let plain = Command::new("/bin/sh")
            .args(["-c", &probe])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(plain.stderr, b"open\n");

        let outcome = run(&shell(&probe, None), Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.stderr, b"closed\n");
        // The standard descriptors stay.
        let outcome = run(&shell(&descriptor_probe(2), None), Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.stderr, b"open\n");
    }

    #[test]
    fn the_walk_for_old_kernels_closes_inherited_descriptors_too() {
        let leaked = inheritable_descriptor();
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", &descriptor_probe(leaked.as_raw_fd())])
            .stdin(Stdio::null());
        // SAFETY: as in `run`: raw syscalls with integer arguments only.
        unsafe {
            command.pre_exec(|| {
                mark_each_descriptor_close_on_exec();
                Ok(())
            });
        }
        assert_eq!(command.output().unwrap().stderr, b"closed\n");
    }

    #[test]
    fn reports_a_missing_program() {
        let invocation = Invocation {
            program: PathBuf::from("/nonexistent/nfsentry-no-such-tool"),
            args: Vec::new(),
            stdin: None,
        };
        let error = run(&invocation, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(error, RunError::Spawn(_)), "{error:?}");
        assert!(error.to_string().contains("No such file"), "{error}");
    }

    #[test]
    fn display_shows_the_command_as_typed() {
        let invocation = Invocation {
            program: PathBuf::from("/sbin/ipf"),
            args: vec!["-6".into(), "-f".into(), "-".into()],
            stdin: Some(b"block in log from 2001:db8::7/128 to any\n".to_vec()),
        };
        assert_eq!(
            invocation.to_string(),
            "/sbin/ipf -6 -f - < 'block in log from 2001:db8::7/128 to any'"
        );
    }
}
