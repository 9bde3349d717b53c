//! The seam between the actions that run programs (`command` and the legacy firewall tools) and
//! the running of them: an [`Executor`] finds a program and runs one [`Invocation`].
//! [`SpawningExecutor`] does both for real: the search in PATH here, the process itself (group,
//! timeout, stderr, descriptors) in [`super::process`]. [`RecordingExecutor`] runs nothing: it
//! records what would run and answers from a script, so the exact commands of every action can
//! be tested without root, without the tools installed and without touching the environment, as
//! knftables' fake and fail2ban's action tests do.
//!
//! It builds no argv, judges no exit status and logs nothing: the actions do.

use std::collections::{BTreeSet, VecDeque};
use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::process::{self, Invocation, Outcome, RunError};

/// Used when the daemon's environment has no PATH at all (some init systems start that way).
const FALLBACK_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds and runs the programs of an action. Actions hold one from construction on (the
/// spawning one unless told otherwise) and use it only from `init` on, so that building an
/// action stays free of side effects.
pub trait Executor: Send {
    /// Where `program` would be run from, as execvp reads a name: one with a `/` is the path it
    /// names, checked as it is; a bare name is the first executable of that name in the search
    /// path, as an absolute path (links kept as found, not resolved).
    fn find(&self, program: &str) -> Result<PathBuf, NotFound>;

    /// Runs `invocation` and waits at most `timeout` for it, with [`process::run`]'s meaning of
    /// every outcome and error.
    fn run(&self, invocation: &Invocation, timeout: Duration) -> Result<Outcome, RunError>;
}

/// A program [`Executor::find`] could not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    pub program: String,
    /// The search path that was searched; None when `program` was a path.
    pub search_path: Option<String>,
}

impl fmt::Display for NotFound {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.search_path {
            Some(path) => write!(formatter, "{} not found in PATH ({path})", self.program),
            None => write!(
                formatter,
                "{} does not exist or is not executable",
                self.program
            ),
        }
    }
}

impl std::error::Error for NotFound {}

/// The real thing: programs are looked up in the file system and run as processes.
#[derive(Debug, Clone, Default)]
pub struct SpawningExecutor {
    /// None: the daemon's PATH as it is at each lookup.
    search_path: Option<OsString>,
}

impl SpawningExecutor {
    /// Searches the daemon's PATH as it is when a program is looked up, or a fallback list of
    /// the usual system directories when there is no PATH.
    pub fn new() -> SpawningExecutor {
        SpawningExecutor { search_path: None }
    }

    /// Searches `search_path` (PATH syntax) instead of the environment's PATH.
    pub fn with_search_path(search_path: impl Into<OsString>) -> SpawningExecutor {
        SpawningExecutor {
            search_path: Some(search_path.into()),
        }
    }

    fn search_path(&self) -> OsString {
        self.search_path
            .clone()
            .or_else(|| env::var_os("PATH"))
            .unwrap_or_else(|| OsString::from(FALLBACK_SEARCH_PATH))
    }
}

impl Executor for SpawningExecutor {
    fn find(&self, program: &str) -> Result<PathBuf, NotFound> {
        find_with(program, &self.search_path(), is_executable_file)
    }

    fn run(&self, invocation: &Invocation, timeout: Duration) -> Result<Outcome, RunError> {
        process::run(invocation, timeout)
    }
}

/// [`Executor::find`] over any notion of "an executable file is here".
fn find_with(
    program: &str,
    search_path: &OsStr,
    is_program: impl Fn(&Path) -> bool,
) -> Result<PathBuf, NotFound> {
    let found = match program.contains('/') {
        true => Some(PathBuf::from(program)).filter(|path| is_program(path)),
        false => search(program, search_path, is_program),
    };
    found.ok_or_else(|| NotFound {
        program: program.to_owned(),
        search_path: (!program.contains('/')).then(|| search_path.to_string_lossy().into_owned()),
    })
}

/// The first `program` in `search_path` that `is_program` accepts, as an absolute path.
/// Relative PATH entries are skipped: they would resolve against whatever the working directory
/// is when the program runs. Symlinks are kept as found, not resolved, because iptables is a
/// multi-call binary that picks its personality from the name it is run by.
fn search(
    program: &str,
    search_path: &OsStr,
    is_program: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    env::split_paths(search_path)
        .filter(|directory| directory.is_absolute())
        .map(|directory| directory.join(program))
        .find(|candidate| is_program(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// How a [`RecordingExecutor`] answers one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The program ran and exited with `code` (0-255), having written `stderr`.
    Exit { code: i32, stderr: String },
    /// The program overran its time and was killed with its process group, having written
    /// `stderr`.
    TimedOut { stderr: String },
    /// The program could not be started.
    CannotStart(io::ErrorKind),
}

impl Reply {
    /// An exit with `code` and nothing on standard error.
    pub fn status(code: i32) -> Reply {
        Reply::Exit {
            code,
            stderr: String::new(),
        }
    }

    /// The same reply, with `text` on standard error; a start failure writes nothing.
    pub fn with_stderr(self, text: &str) -> Reply {
        match self {
            Reply::Exit { code, .. } => Reply::Exit {
                code,
                stderr: text.to_owned(),
            },
            Reply::TimedOut { .. } => Reply::TimedOut {
                stderr: text.to_owned(),
            },
            start_failure @ Reply::CannotStart(_) => start_failure,
        }
    }

    fn outcome(self) -> Result<Outcome, RunError> {
        let (status, timed_out, stderr) = match self {
            // A wait status: the exit code sits in the second byte.
            Reply::Exit { code, stderr } => {
                (ExitStatus::from_raw((code & 0xff) << 8), false, stderr)
            }
            Reply::TimedOut { stderr } => (ExitStatus::from_raw(libc::SIGKILL), true, stderr),
            Reply::CannotStart(kind) => return Err(RunError::Spawn(kind.into())),
        };
        Ok(Outcome {
            status,
            timed_out,
            stderr: stderr.into_bytes(),
            stderr_truncated: false,
            elapsed: Duration::ZERO,
        })
    }
}

/// Runs nothing: records every call (argv, standard input, timeout) and answers with the
/// replies it was given, in order; a call beyond them exits 0 and says nothing. Programs are
/// found in a table of paths instead of the file system, searched along a search path as the
/// real lookup does. Clones share one record, so a test keeps a clone of what it gives the
/// action.
#[derive(Debug, Clone, Default)]
pub struct RecordingExecutor {
    shared: Arc<Mutex<Recording>>,
}

#[derive(Debug, Default)]
struct Recording {
    search_path: String,
    programs: BTreeSet<PathBuf>,
    replies: VecDeque<Reply>,
    calls: Vec<(Invocation, Duration)>,
}

impl RecordingExecutor {
    /// Knows exactly the programs at `programs` (absolute paths), and looks bare names up along
    /// `search_path` (PATH syntax, also what a failed lookup names).
    pub fn new(search_path: &str, programs: &[&str]) -> RecordingExecutor {
        let recording = Recording {
            search_path: search_path.to_owned(),
            programs: programs.iter().map(PathBuf::from).collect(),
            ..Recording::default()
        };
        RecordingExecutor {
            shared: Arc::new(Mutex::new(recording)),
        }
    }

    /// Queues `replies` for the next calls, after any replies still queued.
    pub fn answer(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().replies.extend(replies);
    }

    /// The calls recorded since the last take, oldest first.
    pub fn take_calls(&self) -> Vec<Invocation> {
        self.take_timed_calls()
            .into_iter()
            .map(|(invocation, _)| invocation)
            .collect()
    }

    /// [`RecordingExecutor::take_calls`] with the timeout each call was given.
    pub fn take_timed_calls(&self) -> Vec<(Invocation, Duration)> {
        std::mem::take(&mut self.lock().calls)
    }

    /// A test that failed while holding the lock leaves a record that is still worth reading.
    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Executor for RecordingExecutor {
    fn find(&self, program: &str) -> Result<PathBuf, NotFound> {
        let recording = self.lock();
        find_with(program, OsStr::new(&recording.search_path), |path| {
            recording.programs.contains(path)
        })
    }

    fn run(&self, invocation: &Invocation, timeout: Duration) -> Result<Outcome, RunError> {
        let mut recording = self.lock();
        recording.calls.push((invocation.clone(), timeout));
        recording
            .replies
            .pop_front()
            .unwrap_or(Reply::status(0))
            .outcome()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    /// A scratch directory (removed when the test ends, pass or fail) to put programs in.
    struct ScratchDir(tempfile::TempDir);

    impl ScratchDir {
        fn new() -> ScratchDir {
            ScratchDir(tempfile::tempdir().unwrap())
        }

        fn path(&self) -> &Path {
            self.0.path()
        }

        fn executable(&self, name: &str) -> PathBuf {
            let path = self.path().join(name);
            fs::write(&path, "").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    fn search_path(dirs: &[&ScratchDir]) -> OsString {
        env::join_paths(dirs.iter().map(|dir| dir.path())).unwrap()
    }

    #[test]
    fn lookup_takes_the_first_executable_and_skips_relative_entries() {
        let first = ScratchDir::new();
        let second = ScratchDir::new();
        // Not executable: must be passed over for the one in the second directory.
        fs::write(first.path().join("ipfw"), "").unwrap();
        let executable = second.executable("ipfw");
        let spawning = SpawningExecutor::with_search_path(search_path(&[&first, &second]));
        assert_eq!(spawning.find("ipfw"), Ok(executable.clone()));

        // A directory named like the tool is not a program.
        fs::create_dir(first.path().join("ipf")).unwrap();
        let missing = spawning.find("ipf").unwrap_err();
        assert_eq!(
            missing.to_string(),
            format!(
                "ipf not found in PATH ({})",
                search_path(&[&first, &second]).to_string_lossy()
            )
        );

        // From any working directory up to eight levels deep this relative entry means /bin,
        // where `sh` exists; it must still be skipped.
        assert!(SpawningExecutor::with_search_path("/bin")
            .find("sh")
            .is_ok());
        let relative = SpawningExecutor::with_search_path("../../../../../../../../bin");
        assert!(relative.find("sh").is_err());
    }

    #[test]
    fn lookup_keeps_links_as_named() {
        let dir = ScratchDir::new();
        let multi_call = dir.executable("xtables-legacy-multi");
        symlink(&multi_call, dir.path().join("ip6tables")).unwrap();
        let spawning = SpawningExecutor::with_search_path(search_path(&[&dir]));
        assert_eq!(spawning.find("ip6tables"), Ok(dir.path().join("ip6tables")));
    }

    #[test]
    fn a_name_with_a_slash_is_checked_as_the_path_it_names() {
        let dir = ScratchDir::new();
        let program = dir.executable("notify");
        // An empty search path: a path is never searched for.
        let spawning = SpawningExecutor::with_search_path("");
        let text = program.to_str().unwrap();
        assert_eq!(spawning.find(text), Ok(program.clone()));
        let missing = format!("{text}-gone");
        assert_eq!(
            spawning.find(&missing).unwrap_err().to_string(),
            format!("{missing} does not exist or is not executable")
        );
        // A bare name is not looked for in the working directory.
        assert!(spawning.find("notify").is_err());
    }

    #[test]
    fn the_recording_executor_finds_from_its_table_along_its_search_path() {
        let tools = RecordingExecutor::new(
            "/usr/sbin:relative:/sbin",
            &[
                "/sbin/iptables",
                "/usr/sbin/iptables",
                "relative/ipfw",
                "/opt/notify",
            ],
        );
        assert_eq!(
            tools.find("iptables"),
            Ok(PathBuf::from("/usr/sbin/iptables"))
        );
        assert_eq!(
            tools.find("ipfw").unwrap_err().to_string(),
            "ipfw not found in PATH (/usr/sbin:relative:/sbin)"
        );
        assert_eq!(tools.find("/opt/notify"), Ok(PathBuf::from("/opt/notify")));
        assert!(tools.find("notify").is_err());
        assert!(tools.take_calls().is_empty(), "a lookup is not a call");
    }

    #[test]
    fn the_recording_executor_records_calls_and_answers_in_order() {
        let tools = RecordingExecutor::new("/sbin", &[]);
        let shared = tools.clone();
        tools.answer([
            Reply::status(1),
            Reply::status(4).with_stderr("iptables: Bad rule."),
            Reply::TimedOut {
                stderr: "hanging".into(),
            },
            Reply::CannotStart(io::ErrorKind::NotFound),
        ]);
        let invocation = Invocation {
            program: PathBuf::from("/sbin/ipf"),
            args: vec!["-f".into(), "-".into()],
            stdin: Some(b"block in log from 192.0.2.7/32 to any\n".to_vec()),
        };
        let second = Duration::from_secs(1);
        let run = || tools.run(&invocation, second);

        let absent = run().unwrap();
        assert_eq!((absent.status.code(), absent.succeeded()), (Some(1), false));
        let failed = run().unwrap();
        assert_eq!(failed.status.to_string(), "exit status: 4");
        assert_eq!(failed.stderr_suffix(), "; stderr: iptables: Bad rule.");
        let hung = run().unwrap();
        assert!(hung.timed_out && !hung.succeeded());
        assert_eq!(hung.status.signal(), Some(libc::SIGKILL));
        assert_eq!(hung.stderr_text(), "hanging");
        let error = run().unwrap_err();
        assert!(matches!(error, RunError::Spawn(_)), "{error:?}");
        // Beyond the script: success, silently.
        let done = run().unwrap();
        assert!(done.succeeded() && done.stderr.is_empty());

        assert_eq!(
            shared.take_timed_calls(),
            vec![(invocation.clone(), second); 5]
        );
        assert!(tools.take_calls().is_empty(), "taken once");
    }
}
