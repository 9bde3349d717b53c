//! The legacy firewall actions PortSentry shipped (iptables, ipchains, ipfwadm, ipfw, ipfilter):
//! each block and release runs the tool itself, with an argv built from the blocked address and
//! never through a shell. It does not read firewall state back beyond `iptables -C`, and it does
//! not decide when to block or release; the responder does.

use std::collections::BTreeSet;
use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use thiserror::Error;

use super::{Backend, BackendError};
use crate::config::Action;
use crate::store::BlockRecord;

/// How long one tool invocation may take before it is killed. Firewall tools answer in
/// milliseconds; a hung one must not stall the responder, which also lifts expired blocks.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the daemon's environment has no PATH at all (some init systems start that way).
const FALLBACK_SEARCH_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A release deletes the iptables rule until `-C` no longer finds it, so a rule inserted twice by
/// hand or by PortSentry goes too. The bound stops a tool that reports success without deleting.
const MAX_IPTABLES_DELETIONS: usize = 32;
/// PortSentry's ipfw block command puts every blocked address in this rule number.
const IPFW_RULE_NUMBER: &str = "1";
/// Enough for any error message a firewall tool prints; more is read and dropped.
const STDERR_KEPT_BYTES: u64 = 4096;
const WAIT_POLL_FIRST: Duration = Duration::from_millis(1);
const WAIT_POLL_MAX: Duration = Duration::from_millis(20);
/// Written in place of the address by [`describe`], as in PortSentry's own config.
const TARGET_PLACEHOLDER: &str = "$TARGET$";

/// One of PortSentry's firewall tools. `Display` gives the action's word in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyTool {
    /// Linux netfilter via `iptables`, and `ip6tables` for IPv6 sources.
    Iptables,
    /// Linux 2.2 `ipchains`; IPv4 only.
    Ipchains,
    /// Linux 2.0 `ipfwadm`; IPv4 only.
    Ipfwadm,
    /// FreeBSD `ipfw`.
    Ipfw,
    /// IPFilter's `ipf` (BSDs, Solaris/illumos).
    Ipfilter,
}

impl LegacyTool {
    /// The tool behind a configured action, or None for actions that are not legacy tools.
    pub fn from_action(action: Action) -> Option<LegacyTool> {
        match action {
            Action::Iptables => Some(LegacyTool::Iptables),
            Action::Ipchains => Some(LegacyTool::Ipchains),
            Action::Ipfwadm => Some(LegacyTool::Ipfwadm),
            Action::Ipfw => Some(LegacyTool::Ipfw),
            Action::Ipfilter => Some(LegacyTool::Ipfilter),
            Action::NftSet | Action::Route | Action::HostsDeny | Action::Command => None,
        }
    }

    /// The action's word in the config file, also the backend's name in logs.
    pub fn action_name(self) -> &'static str {
        match self {
            LegacyTool::Iptables => "iptables",
            LegacyTool::Ipchains => "ipchains",
            LegacyTool::Ipfwadm => "ipfwadm",
            LegacyTool::Ipfw => "ipfw",
            LegacyTool::Ipfilter => "ipfilter",
        }
    }

    /// Every program the action runs; all must be installed for it to work.
    fn programs(self) -> &'static [&'static str] {
        match self {
            LegacyTool::Iptables => &["iptables", "ip6tables"],
            LegacyTool::Ipchains => &["ipchains"],
            LegacyTool::Ipfwadm => &["ipfwadm"],
            LegacyTool::Ipfw => &["ipfw"],
            LegacyTool::Ipfilter => &["ipf"],
        }
    }
}

impl fmt::Display for LegacyTool {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.action_name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The commands that place and remove one address's rule, for one tool and address family.
/// Built from the address's text, or from `$TARGET$` for [`describe`], so what is described is
/// exactly what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RuleCommands {
    program: &'static str,
    /// Exits 0 when the rule is in place, 1 when it is not; only iptables has one.
    check: Option<Vec<String>>,
    insert: Vec<String>,
    delete: Vec<String>,
    /// Fed to `insert` and `delete` on standard input (ipf reads its rules there).
    stdin: Option<String>,
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

/// The commands for `target` (an address's text or the placeholder); None when the tool cannot
/// filter that family. Each argument is one argv element; nothing is ever split or re-parsed.
fn rule_commands(
    tool: LegacyTool,
    family: Family,
    target: &str,
    ipfilter_interface: Option<&str>,
) -> Option<RuleCommands> {
    let commands = match tool {
        LegacyTool::Iptables => {
            let rule = |verb: &str| owned(&[verb, "INPUT", "-s", target, "-j", "DROP"]);
            RuleCommands {
                program: match family {
                    Family::V4 => "iptables",
                    Family::V6 => "ip6tables",
                },
                check: Some(rule("-C")),
                insert: rule("-I"),
                delete: rule("-D"),
                stdin: None,
            }
        }
        LegacyTool::Ipchains => {
            if family == Family::V6 {
                return None;
            }
            let rule = |verb: &str| owned(&[verb, "input", "-s", target, "-j", "DENY", "-l"]);
            RuleCommands {
                program: "ipchains",
                check: None,
                insert: rule("-I"),
                delete: rule("-D"),
                stdin: None,
            }
        }
        LegacyTool::Ipfwadm => {
            if family == Family::V6 {
                return None;
            }
            let rule = |verb: &str| owned(&["-I", verb, "deny", "-S", target, "-o"]);
            RuleCommands {
                program: "ipfwadm",
                check: None,
                insert: rule("-i"),
                delete: rule("-d"),
                stdin: None,
            }
        }
        LegacyTool::Ipfw => {
            // PortSentry's host mask form only parses for IPv4; ipfw reads an IPv6 source
            // as address/prefix length.
            let source = match family {
                Family::V4 => format!("{target}:255.255.255.255"),
                Family::V6 => format!("{target}/128"),
            };
            let mut insert = owned(&["add", IPFW_RULE_NUMBER, "deny", "all", "from"]);
            insert.push(source);
            insert.extend(owned(&["to", "any"]));
            RuleCommands {
                program: "ipfw",
                check: None,
                insert,
                delete: owned(&["delete", IPFW_RULE_NUMBER]),
                stdin: None,
            }
        }
        LegacyTool::Ipfilter => {
            let on_interface = ipfilter_interface
                .map(|name| format!(" on {name}"))
                .unwrap_or_default();
            let (family_flag, prefix_length): (&[&str], u8) = match family {
                Family::V4 => (&[], 32),
                // ipf parses IPv6 rules only when told to.
                Family::V6 => (&["-6"], 128),
            };
            let mut insert = owned(family_flag);
            insert.extend(owned(&["-f", "-"]));
            let mut delete = owned(family_flag);
            delete.extend(owned(&["-r", "-f", "-"]));
            RuleCommands {
                program: "ipf",
                check: None,
                insert,
                delete,
                stdin: Some(format!(
                    "block in log{on_interface} from {target}/{prefix_length} to any\n"
                )),
            }
        }
    };
    Some(commands)
}

/// Human-readable lines giving the exact commands an action runs, with `$TARGET$` standing for
/// the blocked address, for `nfsentry rules --actions`.
pub fn describe(tool: LegacyTool, ipfilter_interface: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    for family in [Family::V4, Family::V6] {
        let label = family.label();
        let Some(commands) = rule_commands(tool, family, TARGET_PLACEHOLDER, ipfilter_interface)
        else {
            lines.push(format!(
                "{label}: {tool} cannot filter {label}; such sources are logged and skipped"
            ));
            continue;
        };
        let shown =
            |args: &[String]| shown_command(commands.program, args, commands.stdin.as_deref());
        let insert = shown(&commands.insert);
        let delete = shown(&commands.delete);
        match (&commands.check, tool) {
            (Some(check), _) => {
                let check = shown(check);
                lines.push(format!(
                    "block {label}: {insert}, unless `{check}` finds the rule in place"
                ));
                lines.push(format!(
                    "release {label}: {delete}, repeated while `{check}` finds the rule"
                ));
            }
            (None, LegacyTool::Ipfw) => {
                lines.push(format!("block {label}: {insert}"));
                lines.push(format!(
                    "release {label}: {delete}, then the block command again for every address \
                     still blocked (ipfw deletes by rule number only, so nfsentry owns rule {})",
                    IPFW_RULE_NUMBER
                ));
            }
            (None, _) => {
                lines.push(format!("block {label}: {insert}"));
                lines.push(format!("release {label}: {delete}"));
                lines.push(format!(
                    "restore {label}: the release command (a failure means nothing to remove), \
                     then the block command"
                ));
            }
        }
    }
    lines
}

/// A command as a reader would type it; standard input is shown after `<`.
fn shown_command(program: &str, args: &[String], stdin: Option<&str>) -> String {
    let mut text = program.to_owned();
    for arg in args {
        text.push(' ');
        text.push_str(arg);
    }
    if let Some(input) = stdin {
        text.push_str(&format!(" < '{}'", input.trim_end()));
    }
    text
}

/// Checks that an action's programs are installed, for `check-config`; gives the path of the
/// first one, or a message such as "action iptables: iptables not found in PATH (/usr/sbin:…)".
pub fn preflight(tool: LegacyTool) -> Result<PathBuf, String> {
    let search_path = search_path();
    let mut first = None;
    for program in tool.programs() {
        let found = find_program(program, &search_path).ok_or_else(|| {
            format!(
                "action {tool}: {}",
                not_found_message(program, &search_path)
            )
        })?;
        first.get_or_insert(found);
    }
    first.ok_or_else(|| format!("action {tool}: no program to run"))
}

fn search_path() -> OsString {
    env::var_os("PATH").unwrap_or_else(|| OsString::from(FALLBACK_SEARCH_PATH))
}

fn not_found_message(program: &str, search_path: &OsStr) -> String {
    format!(
        "{program} not found in PATH ({})",
        search_path.to_string_lossy()
    )
}

/// The first executable regular file named `program` in `search_path`, as an absolute path.
/// Relative PATH entries are skipped: they would resolve against whatever the working directory
/// is when the tool runs. Symlinks are kept as found, not resolved, because iptables is a
/// multi-call binary that picks its personality from the name it is run by.
fn find_program(program: &str, search_path: &OsStr) -> Option<PathBuf> {
    env::split_paths(search_path)
        .filter(|directory| directory.is_absolute())
        .map(|directory| directory.join(program))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Blocks and releases addresses with one legacy firewall tool.
///
/// The tools other than iptables cannot be asked whether a rule is in place, so the backend
/// remembers which addresses it placed during this run: a second block of the same address does
/// nothing, and `restore` removes a rule before placing it so a restart does not double it.
pub struct LegacyBackend {
    tool: LegacyTool,
    ipfilter_interface: Option<String>,
    /// Absolute paths of `tool.programs()`, resolved once so a later PATH change cannot swap them.
    programs: Vec<(&'static str, PathBuf)>,
    /// Addresses this backend placed a rule for and has not released.
    placed: BTreeSet<IpAddr>,
    timeout: Duration,
}

impl LegacyBackend {
    /// Finds the tool's programs in PATH now; fails naming the tool and the PATH searched when
    /// one is missing, or when `ipfilter_interface` is not a plain interface name.
    pub fn new(
        tool: LegacyTool,
        ipfilter_interface: Option<String>,
    ) -> Result<LegacyBackend, BackendError> {
        let failed = |message: String| BackendError::Failed {
            backend: tool.action_name(),
            message,
        };
        if let Some(name) = ipfilter_interface.as_deref() {
            if !is_plain_interface_name(name) {
                return Err(failed(format!(
                    "ipfilter_interface {name:?} is not a plain interface name (letters, digits, \
                     '.', '_', '-'; at most {INTERFACE_NAME_MAX_BYTES} bytes)"
                )));
            }
        }
        let search_path = search_path();
        let mut programs = Vec::new();
        for program in tool.programs() {
            let path = find_program(program, &search_path)
                .ok_or_else(|| failed(not_found_message(program, &search_path)))?;
            programs.push((*program, path));
        }
        Ok(LegacyBackend {
            tool,
            ipfilter_interface,
            programs,
            placed: BTreeSet::new(),
            timeout: TOOL_TIMEOUT,
        })
    }

    fn failed(&self, message: String) -> BackendError {
        BackendError::Failed {
            backend: self.tool.action_name(),
            message,
        }
    }

    /// The commands for `address`, or None (logged) when the tool cannot filter its family.
    fn commands_for(&self, address: IpAddr) -> Option<RuleCommands> {
        let family = Family::of(address);
        let commands = rule_commands(
            self.tool,
            family,
            &address.to_string(),
            self.ipfilter_interface.as_deref(),
        );
        if commands.is_none() {
            warn!(
                "{}: cannot filter {} source {address}; skipped",
                self.tool,
                family.label()
            );
        }
        commands
    }

    fn invocation(
        &self,
        commands: &RuleCommands,
        args: &[String],
    ) -> Result<Invocation, BackendError> {
        let program = self
            .programs
            .iter()
            .find(|(name, _)| *name == commands.program)
            .map(|(_, path)| path.clone())
            .ok_or_else(|| self.failed(format!("{} was not looked up", commands.program)))?;
        Ok(Invocation {
            program,
            args: args.to_vec(),
            stdin: commands.stdin.clone(),
        })
    }

    /// Runs one command and logs how it ended; a failure to run at all (not found, timed out)
    /// is an error, a non-zero exit is for the caller to judge.
    fn execute(&self, invocation: &Invocation) -> Result<Outcome, BackendError> {
        let outcome = run_with_timeout(invocation, self.timeout)
            .map_err(|e| self.failed(format!("`{invocation}`: {}", error_chain(&e))))?;
        debug!(
            "{}: `{invocation}` exited with {}{}",
            self.tool,
            outcome.status,
            outcome.stderr_suffix()
        );
        Ok(outcome)
    }

    /// Runs a command that must succeed.
    fn execute_ok(&self, invocation: &Invocation) -> Result<(), BackendError> {
        let outcome = self.execute(invocation)?;
        if !outcome.status.success() {
            return Err(self.failed(format!(
                "`{invocation}` exited with {}{}",
                outcome.status,
                outcome.stderr_suffix()
            )));
        }
        if !outcome.stderr.is_empty() {
            warn!(
                "{}: `{invocation}` succeeded but said: {}",
                self.tool, outcome.stderr
            );
        }
        info!("{}: ran `{invocation}`", self.tool);
        Ok(())
    }

    /// Asks iptables whether the rule is in place (`-C` exits 0 when it is, 1 when it is not).
    fn is_in_place(&self, commands: &RuleCommands, check: &[String]) -> Result<bool, BackendError> {
        let invocation = self.invocation(commands, check)?;
        let outcome = self.execute(&invocation)?;
        match outcome.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(self.failed(format!(
                "`{invocation}` exited with {}{}",
                outcome.status,
                outcome.stderr_suffix()
            ))),
        }
    }

    fn place(&mut self, address: IpAddr) -> Result<(), BackendError> {
        let Some(commands) = self.commands_for(address) else {
            return Ok(());
        };
        if let Some(check) = &commands.check {
            if self.is_in_place(&commands, check)? {
                debug!("{}: {address} is already blocked", self.tool);
                self.placed.insert(address);
                return Ok(());
            }
        } else if self.placed.contains(&address) {
            debug!("{}: {address} is already blocked by this run", self.tool);
            return Ok(());
        }
        self.execute_ok(&self.invocation(&commands, &commands.insert)?)?;
        self.placed.insert(address);
        Ok(())
    }

    fn remove(&mut self, address: IpAddr) -> Result<(), BackendError> {
        let Some(commands) = self.commands_for(address) else {
            return Ok(());
        };
        self.placed.remove(&address);
        if self.tool == LegacyTool::Ipfw {
            return self.rebuild_ipfw_rule();
        }
        let delete = self.invocation(&commands, &commands.delete)?;
        let Some(check) = &commands.check else {
            return self.execute_ok(&delete);
        };
        for _ in 0..MAX_IPTABLES_DELETIONS {
            if !self.is_in_place(&commands, check)? {
                return Ok(());
            }
            self.execute_ok(&delete)?;
        }
        Err(self.failed(format!(
            "the rule for {address} is still in place after {MAX_IPTABLES_DELETIONS} deletions"
        )))
    }

    /// For tools without a check: removes any rule an earlier run left, then places it anew, so
    /// the address ends up blocked exactly once whether or not the rule survived.
    fn replace(&mut self, address: IpAddr) -> Result<(), BackendError> {
        let Some(commands) = self.commands_for(address) else {
            return Ok(());
        };
        let outcome = self.execute(&self.invocation(&commands, &commands.delete)?)?;
        if !outcome.status.success() {
            debug!("{}: no earlier rule for {address} to remove", self.tool);
        }
        self.placed.remove(&address);
        self.place(address)
    }

    /// ipfw deletes by rule number only and PortSentry's block command puts every address in
    /// rule 1, so one address is released by deleting rule 1 and adding the others back. Those
    /// others are unblocked for the few milliseconds this takes; any foreign rule numbered 1 is
    /// lost, which is why `describe` says nfsentry owns rule 1.
    fn rebuild_ipfw_rule(&mut self) -> Result<(), BackendError> {
        let ipfw = RuleCommands {
            program: "ipfw",
            check: None,
            insert: Vec::new(),
            delete: owned(&["delete", IPFW_RULE_NUMBER]),
            stdin: None,
        };
        let delete = self.invocation(&ipfw, &ipfw.delete)?;
        let outcome = self.execute(&delete)?;
        if !outcome.status.success() {
            // ipfw also exits non-zero when there is no rule 1, which is the usual case after a
            // reboot; a real fault shows again when the adds below fail.
            debug!(
                "{}: `{delete}` exited with {}{}",
                self.tool,
                outcome.status,
                outcome.stderr_suffix()
            );
        }
        let still_blocked: Vec<IpAddr> = self.placed.iter().copied().collect();
        let mut failures = Vec::new();
        for address in still_blocked {
            let added = self.commands_for(address).map_or(Ok(()), |commands| {
                self.invocation(&commands, &commands.insert)
                    .and_then(|add| self.execute_ok(&add))
            });
            if let Err(e) = added {
                failures.push(e);
            }
        }
        self.summarise(failures, self.placed.len(), "re-added to ipfw rule 1")
    }

    /// One error for a batch: how many failed, and the first failure's message.
    fn summarise(
        &self,
        failures: Vec<BackendError>,
        total: usize,
        what: &str,
    ) -> Result<(), BackendError> {
        let count = failures.len();
        match failures.into_iter().next() {
            None => Ok(()),
            Some(BackendError::Failed { message, .. }) => Err(self.failed(format!(
                "{count} of {total} addresses could not be {what}; first: {message}"
            ))),
        }
    }
}

impl Backend for LegacyBackend {
    fn name(&self) -> &'static str {
        self.tool.action_name()
    }

    fn block(&mut self, block: &BlockRecord, _now: SystemTime) -> Result<(), BackendError> {
        self.place(block.source)
    }

    fn release(&mut self, block: &BlockRecord) -> Result<(), BackendError> {
        self.remove(block.source)
    }

    fn restore(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), BackendError> {
        if self.tool == LegacyTool::Ipfw {
            self.placed.extend(blocks.iter().map(|block| block.source));
            return self.rebuild_ipfw_rule();
        }
        let mut failures = Vec::new();
        for block in blocks {
            let restored = if self.tool == LegacyTool::Iptables {
                self.place(block.source)
            } else {
                self.replace(block.source)
            };
            if let Err(e) = restored {
                failures.push(e);
            }
        }
        self.summarise(failures, blocks.len(), "restored")
    }
}

/// Linux allows up to 15 bytes; BSD and Solaris names are shorter.
const INTERFACE_NAME_MAX_BYTES: usize = 15;

/// The interface name goes into a rule line ipf parses, where a space, `#` or newline would
/// change the rule's meaning (`#` starts a comment, leaving "block in log on em" — block all).
fn is_plain_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= INTERFACE_NAME_MAX_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

/// One program run: an absolute path, whole argv elements and optional standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    stdin: Option<String>,
}

impl fmt::Display for Invocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.program.to_string_lossy();
        formatter.write_str(&shown_command(&program, &self.args, self.stdin.as_deref()))
    }
}

#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    /// Lossy UTF-8, trimmed, at most [`STDERR_KEPT_BYTES`].
    stderr: String,
}

impl Outcome {
    fn stderr_suffix(&self) -> String {
        if self.stderr.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", self.stderr)
        }
    }
}

#[derive(Debug, Error)]
enum RunError {
    #[error("cannot create a buffer for the tool's standard error")]
    StderrBuffer(#[source] io::Error),
    #[error("cannot start the program")]
    Spawn(#[source] io::Error),
    #[error("cannot write the program's standard input")]
    Stdin(#[source] io::Error),
    #[error("cannot wait for the program")]
    Wait(#[source] io::Error),
    #[error("cannot read the program's standard error")]
    Stderr(#[source] io::Error),
    #[error("did not finish within {0:?}; killed it")]
    TimedOut(Duration),
}

/// Runs `invocation` and waits at most `timeout`; on timeout the whole process group is killed,
/// so a tool's own helpers do not linger.
///
/// Standard error goes to an anonymous memory file rather than a pipe: nothing has to drain it
/// while the tool runs, and a helper that outlives the tool and keeps the descriptor open cannot
/// make the read hang.
fn run_with_timeout(invocation: &Invocation, timeout: Duration) -> Result<Outcome, RunError> {
    let mut stderr_buffer = memfd_create("nfsentry-tool-stderr", MFdFlags::MFD_CLOEXEC)
        .map(File::from)
        .map_err(|errno| RunError::StderrBuffer(errno.into()))?;
    let child_stderr = stderr_buffer.try_clone().map_err(RunError::StderrBuffer)?;
    let stdin = if invocation.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = Command::new(&invocation.program)
        .args(&invocation.args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(child_stderr)
        // Its own group, so a timeout can kill the tool together with anything it started.
        .process_group(0)
        .spawn()
        .map_err(RunError::Spawn)?;

    // The input is one rule line, far below the pipe's capacity, so this write cannot block
    // on a tool that does not read. Dropping the handle closes the pipe: ipf reads to EOF.
    let fed = match (child.stdin.take(), &invocation.stdin) {
        (Some(mut pipe), Some(text)) => pipe.write_all(text.as_bytes()),
        _ => Ok(()),
    };
    let status = wait_with_deadline(&mut child, timeout)?;
    if let Err(e) = fed {
        // A tool that exits without reading its input breaks the pipe; its status says more.
        if status.success() {
            return Err(RunError::Stdin(e));
        }
    }

    stderr_buffer
        .seek(SeekFrom::Start(0))
        .map_err(RunError::Stderr)?;
    let mut kept = Vec::new();
    stderr_buffer
        .take(STDERR_KEPT_BYTES)
        .read_to_end(&mut kept)
        .map_err(RunError::Stderr)?;
    Ok(Outcome {
        status,
        stderr: String::from_utf8_lossy(&kept).trim().to_owned(),
    })
}

fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Result<ExitStatus, RunError> {
    let deadline = Instant::now() + timeout;
    let mut pause = WAIT_POLL_FIRST;
    loop {
        if let Some(status) = child.try_wait().map_err(RunError::Wait)? {
            return Ok(status);
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(child);
            child.wait().map_err(RunError::Wait)?;
            return Err(RunError::TimedOut(timeout));
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(WAIT_POLL_MAX);
    }
}

/// The child leads its own group (its pid is the group id) and has not been reaped yet, so the
/// group id still names only processes this backend started.
fn kill_group(child: &mut Child) {
    let killed_group = i32::try_from(child.id())
        .ok()
        .map(|pid| killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok())
        .unwrap_or(false);
    if !killed_group {
        if let Err(e) = child.kill() {
            warn!("cannot kill timed-out process {}: {e}", child.id());
        }
    }
}

/// An error and its causes on one line, for the message string `BackendError` carries.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

    /// A scratch directory removed when the test ends, pass or fail.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new() -> ScratchDir {
            let path = env::temp_dir().join(format!(
                "nfsentry-legacy-unit-{}-{}",
                std::process::id(),
                NEXT_DIR.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&path).unwrap();
            ScratchDir(path)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn iptables_commands_use_ip6tables_for_ipv6() {
        let v4 = rule_commands(LegacyTool::Iptables, Family::V4, "192.0.2.7", None).unwrap();
        assert_eq!(v4.program, "iptables");
        assert_eq!(v4.check, Some(args("-C INPUT -s 192.0.2.7 -j DROP")));
        assert_eq!(v4.insert, args("-I INPUT -s 192.0.2.7 -j DROP"));
        assert_eq!(v4.delete, args("-D INPUT -s 192.0.2.7 -j DROP"));
        let v6 = rule_commands(LegacyTool::Iptables, Family::V6, "2001:db8::7", None).unwrap();
        assert_eq!(v6.program, "ip6tables");
        assert_eq!(v6.insert, args("-I INPUT -s 2001:db8::7 -j DROP"));
    }

    #[test]
    fn ipchains_and_ipfwadm_refuse_ipv6() {
        for tool in [LegacyTool::Ipchains, LegacyTool::Ipfwadm] {
            assert!(rule_commands(tool, Family::V6, "2001:db8::7", None).is_none());
            assert!(rule_commands(tool, Family::V4, "192.0.2.7", None).is_some());
        }
    }

    #[test]
    fn ipfilter_interface_is_optional_and_ipv6_needs_the_flag() {
        let with = rule_commands(LegacyTool::Ipfilter, Family::V4, "192.0.2.7", Some("em0"));
        let with = with.unwrap();
        assert_eq!(with.insert, args("-f -"));
        assert_eq!(with.delete, args("-r -f -"));
        assert_eq!(
            with.stdin.as_deref(),
            Some("block in log on em0 from 192.0.2.7/32 to any\n")
        );
        let v6 = rule_commands(LegacyTool::Ipfilter, Family::V6, "2001:db8::7", None).unwrap();
        assert_eq!(v6.insert, args("-6 -f -"));
        assert_eq!(v6.delete, args("-6 -r -f -"));
        assert_eq!(
            v6.stdin.as_deref(),
            Some("block in log from 2001:db8::7/128 to any\n")
        );
    }

    #[test]
    fn describe_shows_portsentry_commands_with_the_placeholder() {
        let iptables = describe(LegacyTool::Iptables, None);
        assert!(iptables.contains(
            &"block IPv4: iptables -I INPUT -s $TARGET$ -j DROP, unless \
              `iptables -C INPUT -s $TARGET$ -j DROP` finds the rule in place"
                .to_owned()
        ));
        assert!(iptables
            .iter()
            .any(|line| line.starts_with("release IPv6: ip6tables -D INPUT -s $TARGET$ -j DROP")));

        let ipfw = describe(LegacyTool::Ipfw, None);
        assert!(ipfw.contains(
            &"block IPv4: ipfw add 1 deny all from $TARGET$:255.255.255.255 to any".to_owned()
        ));
        assert!(ipfw
            .iter()
            .any(|line| line.starts_with("release IPv4: ipfw delete 1, then")));

        let ipfilter = describe(LegacyTool::Ipfilter, Some("em0"));
        assert!(ipfilter.contains(
            &"block IPv4: ipf -f - < 'block in log on em0 from $TARGET$/32 to any'".to_owned()
        ));
        let ipchains = describe(LegacyTool::Ipchains, None);
        assert!(
            ipchains.contains(&"block IPv4: ipchains -I input -s $TARGET$ -j DENY -l".to_owned())
        );
        assert!(ipchains
            .iter()
            .any(|line| line.starts_with("IPv6: ipchains cannot filter")));
        let ipfwadm = describe(LegacyTool::Ipfwadm, None);
        assert!(ipfwadm.contains(&"release IPv4: ipfwadm -I -d deny -S $TARGET$ -o".to_owned()));
    }

    #[test]
    fn lookup_takes_the_first_executable_and_skips_relative_entries() {
        let first = ScratchDir::new();
        let second = ScratchDir::new();
        // Not executable: must be passed over for the one in the second directory.
        fs::write(first.0.join("ipfw"), "").unwrap();
        let executable = second.0.join("ipfw");
        fs::write(&executable, "").unwrap();
        fs::set_permissions(&executable, fs::Permissions::from_mode(0o755)).unwrap();
        let search = env::join_paths([first.0.clone(), second.0.clone()]).unwrap();
        assert_eq!(find_program("ipfw", &search), Some(executable.clone()));

        // A directory named like the tool is not a program.
        fs::create_dir(first.0.join("ipf")).unwrap();
        assert_eq!(find_program("ipf", &search), None);

        // From any working directory up to eight levels deep this relative entry means /bin,
        // where `sh` exists; it must still be skipped.
        let relative = OsString::from("../../../../../../../../bin");
        assert!(find_program("sh", OsStr::new("/bin")).is_some());
        assert_eq!(find_program("sh", &relative), None);
    }

    #[test]
    fn interface_names_that_could_change_an_ipf_rule_are_refused() {
        for good in ["em0", "igb0.100", "e1000g0", "lagg_1", "vlan-7"] {
            assert!(is_plain_interface_name(good), "{good}");
        }
        for bad in ["", "em#0", "em0 ", "em0\nblock", "a/b", "sixteen-bytes-xx"] {
            assert!(!is_plain_interface_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn run_collects_status_stderr_and_feeds_stdin() {
        let invocation = Invocation {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "cat >&2; exit 3".into()],
            stdin: Some("block in log from 192.0.2.7/32 to any\n".into()),
        };
        let outcome = run_with_timeout(&invocation, Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.status.code(), Some(3));
        assert_eq!(outcome.stderr, "block in log from 192.0.2.7/32 to any");
    }

    #[test]
    fn run_keeps_only_the_start_of_a_flood_on_stderr() {
        let invocation = Invocation {
            program: PathBuf::from("/bin/sh"),
            args: vec![
                "-c".into(),
                "head -c 100000 /dev/zero | tr '\\0' x >&2".into(),
            ],
            stdin: None,
        };
        let outcome = run_with_timeout(&invocation, Duration::from_secs(5)).unwrap();
        assert!(outcome.status.success());
        assert_eq!(outcome.stderr.len() as u64, STDERR_KEPT_BYTES);
    }

    #[test]
    fn run_kills_the_whole_group_on_timeout() {
        let scratch = ScratchDir::new();
        let pid_file = scratch.0.join("helper.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let invocation = Invocation {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script],
            stdin: None,
        };
        let started = Instant::now();
        let result = run_with_timeout(&invocation, Duration::from_millis(300));
        assert!(matches!(result, Err(RunError::TimedOut(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let helper: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The orphaned helper is reaped by init; give that a moment.
        let gone = (0..100).any(|_| {
            let state = fs::read_to_string(format!("/proc/{helper}/stat")).unwrap_or_default();
            let dead = state.is_empty() || state.contains(") Z ");
            if !dead {
                thread::sleep(Duration::from_millis(20));
            }
            dead
        });
        assert!(gone, "helper process {helper} survived the timeout");
    }

    #[test]
    fn run_reports_a_missing_program() {
        let invocation = Invocation {
            program: PathBuf::from("/nonexistent/nfsentry-no-such-tool"),
            args: Vec::new(),
            stdin: None,
        };
        let error = run_with_timeout(&invocation, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(error, RunError::Spawn(_)));
        assert!(
            error_chain(&error).contains("No such file"),
            "{}",
            error_chain(&error)
        );
    }
}
