//! The `command` action: the admin's program, run once per block directly (never through a
//! shell) with `$TARGET$`, `$PORT$` and `$MODE$` filled into its arguments, and killed with its
//! process group when it overruns its time. It undoes nothing and does not run again for blocks
//! restored at start: PortSentry's KILL_RUN_CMD is a one-shot hook.
//!
//! How the child is started and supervised (no stdin, stderr captured, cwd `/`, the daemon's
//! descriptors closed at exec) is [`super::process`]'s job, reached through an [`Executor`] that a
//! test can swap for a recording one; this module builds the argv and logs the outcome.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use caps::Capability;
use log::{info, warn};
use thiserror::Error;

use super::executor::{Executor, SpawningExecutor};
use super::process::{Invocation, Outcome, RunError};
use super::{attempt_each, Action, ActionError};
use crate::config;
use crate::store::BlockRecord;

const ACTION_NAME: &str = "command";
pub const TARGET_PLACEHOLDER: &str = "$TARGET$";
pub const PORT_PLACEHOLDER: &str = "$PORT$";
pub const MODE_PLACEHOLDER: &str = "$MODE$";
pub use super::process::STDERR_KEPT_BYTES;

#[derive(Debug, Error)]
pub enum CommandError {
    #[error("no program configured")]
    NoProgram,
    #[error("{program}: {cause}")]
    Run { program: String, cause: RunError },
}

pub struct CommandAction {
    argv: Vec<String>,
    timeout: Duration,
    /// Only for `describe`: where the responder runs it is [`super::build`]'s business.
    runs_first: bool,
    executor: Box<dyn Executor>,
}

impl CommandAction {
    /// An action that runs `argv` as a process; nothing is looked at or run before a block.
    pub fn new(argv: Vec<String>, timeout: Duration, runs_first: bool) -> CommandAction {
        CommandAction {
            argv,
            timeout,
            runs_first,
            executor: Box::new(SpawningExecutor::new()),
        }
    }

    /// The same action, checking for and running its program through `executor` instead.
    pub fn with_executor(mut self, executor: impl Executor + 'static) -> CommandAction {
        self.executor = Box::new(executor);
        self
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
    /// reap a killed child). The argv it ran is [`CommandAction::argv_for`]'s.
    pub fn run(&self, block: &BlockRecord) -> Result<Outcome, CommandError> {
        self.run_argv(&self.argv_for(block))
    }

    fn run_argv(&self, argv: &[String]) -> Result<Outcome, CommandError> {
        let (program, args) = argv.split_first().ok_or(CommandError::NoProgram)?;
        let invocation = Invocation {
            program: PathBuf::from(program),
            args: args.to_vec(),
            stdin: None,
        };
        self.executor
            .run(&invocation, self.timeout)
            .map_err(|cause| CommandError::Run {
                program: program.clone(),
                cause,
            })
    }

    fn log(&self, program: &str, outcome: &Outcome, block: &BlockRecord) {
        let source = block.source;
        let stderr = outcome.stderr_suffix();
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

fn failed(detail: String) -> ActionError {
    ActionError::Program {
        action: ACTION_NAME,
        detail,
    }
}

impl Action for CommandAction {
    fn name(&self) -> &'static str {
        ACTION_NAME
    }

    /// The program is an absolute path (the config insists), which the executor checks as it
    /// is: "PROGRAM does not exist or is not executable".
    fn check(&self) -> Vec<String> {
        let Some(program) = self.argv.first() else {
            return vec!["no program configured".to_owned()];
        };
        match self.executor.find(program) {
            Ok(_) => Vec::new(),
            Err(missing) => vec![missing.to_string()],
        }
    }

    fn describe(&self) -> Vec<String> {
        let when = if self.runs_first {
            "first after nft-set"
        } else {
            "last"
        };
        vec![
            format!(
                "block (runs {when}, no shell, killed after {}): {}",
                config::format_duration(self.timeout),
                self.argv.join(" ")
            ),
            "release: nothing (the command has no undo)".to_owned(),
        ]
    }

    /// Programs it runs get CAP_NET_RAW (iptables-legacy needs it, and so may the admin's).
    fn capabilities(&self) -> &'static [Capability] {
        &[Capability::CAP_NET_RAW]
    }

    fn runs_programs(&self) -> bool {
        true
    }

    /// Does nothing: the command ran when the block was placed, and running an arbitrary
    /// program again on every start would not be idempotent (a second mail, a doubled rule).
    fn init(&mut self, _due: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        Ok(())
    }

    /// Runs the command once per block, one after the other.
    fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        attempt_each(ACTION_NAME, blocks, |block| {
            let argv = self.argv_for(block);
            let outcome = self.run_argv(&argv).map_err(|e| failed(e.to_string()))?;
            self.log(argv.first().map_or("", String::as_str), &outcome, block);
            if outcome.timed_out {
                return Err(failed(format!("killed after {:?}", self.timeout)));
            }
            if !outcome.status.success() {
                return Err(failed(outcome.status.to_string()));
            }
            Ok(())
        })
    }

    /// Does nothing: like PortSentry's KILL_RUN_CMD, the command has no undo, and nfsentry
    /// cannot know what it did.
    fn release(&mut self, _blocks: &[&BlockRecord]) -> Result<(), ActionError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::executor::{RecordingExecutor, Reply};
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn record(source: IpAddr, protocol: &str, port: u16) -> BlockRecord {
        BlockRecord {
            source,
            added: 0,
            expires: None,
            protocol: protocol.into(),
            port,
            kind: "SYN/Normal".into(),
            verified: false,
        }
    }

    fn action_for(argv: &[&str]) -> CommandAction {
        CommandAction::new(
            argv.iter().map(|a| a.to_string()).collect(),
            Duration::from_secs(5),
            false,
        )
    }

    #[test]
    fn placeholders_are_filled_inside_arguments() {
        let action = action_for(&[
            "/usr/local/sbin/notify",
            "--host=$TARGET$",
            "$PORT$/$MODE$",
            "$TARGET$$TARGET$",
            "$UNKNOWN$ $PORT",
        ]);
        let v4 = record(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "UDP", 161);
        assert_eq!(
            action.argv_for(&v4),
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
        assert_eq!(action.argv_for(&v6)[1], "--host=2001:db8::7");
        assert_eq!(action.argv_for(&v6)[2], "6/ip");
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
    fn an_empty_argv_is_an_error_not_a_panic() {
        let action = CommandAction::new(Vec::new(), Duration::from_secs(1), false);
        let v4 = record(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "TCP", 23);
        assert!(matches!(action.run(&v4), Err(CommandError::NoProgram)));
    }

    /// The admin's program as `check` and the recording executor see it.
    const NOTIFY: &str = "/usr/local/sbin/notify-admin";
    const TIMEOUT: Duration = Duration::from_millis(250);

    fn recording(argv: &[&str], tools: &RecordingExecutor) -> CommandAction {
        CommandAction::new(argv.iter().map(|a| a.to_string()).collect(), TIMEOUT, false)
            .with_executor(tools.clone())
    }

    fn notify_installed() -> RecordingExecutor {
        RecordingExecutor::new("/usr/sbin:/sbin", &[NOTIFY])
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn block_runs_exactly_the_configured_argv_once_per_source() {
        let tools = notify_installed();
        let mut action = recording(
            &[
                NOTIFY,
                "--host=$TARGET$",
                "$PORT$/$MODE$",
                "x;$TARGET$|`id` $(touch pwned) && echo '\"",
                "",
            ],
            &tools,
        );
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
        let blocks = [record(v4(7), "TCP", 23), record(v6, "UDP", 161)];
        action
            .block(&[&blocks[0], &blocks[1]], SystemTime::now())
            .unwrap();

        let call = |args: &[&str]| {
            let invocation = Invocation {
                program: PathBuf::from(NOTIFY),
                args: args.iter().map(|a| a.to_string()).collect(),
                stdin: None,
            };
            (invocation, TIMEOUT)
        };
        assert_eq!(
            tools.take_timed_calls(),
            vec![
                call(&[
                    "--host=192.0.2.7",
                    "23/tcp",
                    "x;192.0.2.7|`id` $(touch pwned) && echo '\"",
                    "",
                ]),
                call(&[
                    "--host=2001:db8::7",
                    "161/udp",
                    "x;2001:db8::7|`id` $(touch pwned) && echo '\"",
                    "",
                ]),
            ]
        );
    }

    #[test]
    fn describe_shows_what_a_block_runs() {
        let tools = notify_installed();
        let mut action = recording(&[NOTIFY, "$TARGET$", "$PORT$", "$MODE$"], &tools);
        let lines = action.describe();
        assert_eq!(
            lines,
            [
                "block (runs last, no shell, killed after 250ms): \
                 /usr/local/sbin/notify-admin $TARGET$ $PORT$ $MODE$",
                "release: nothing (the command has no undo)",
            ]
        );
        let described = lines[0]
            .split_once("): ")
            .map(|(_, command)| command.to_owned())
            .unwrap_or_default()
            .replace(TARGET_PLACEHOLDER, "192.0.2.7")
            .replace(PORT_PLACEHOLDER, "23")
            .replace(MODE_PLACEHOLDER, "tcp");
        action
            .block(&[&record(v4(7), "TCP", 23)], SystemTime::now())
            .unwrap();
        let ran: Vec<String> = tools.take_calls().iter().map(|c| c.to_string()).collect();
        assert_eq!(ran, [described]);
    }

    #[test]
    fn release_and_restore_run_nothing() {
        let tools = notify_installed();
        let mut action = recording(&[NOTIFY, "$TARGET$"], &tools);
        let block = record(v4(7), "TCP", 23);
        action.init(&[&block], SystemTime::now()).unwrap();
        action.release(&[&block]).unwrap();
        action.flush(&[&block]).unwrap();
        action.fin().unwrap();
        assert!(tools.take_calls().is_empty());
    }

    #[test]
    fn a_failed_timed_out_or_unstartable_command_is_an_error() {
        let tools = notify_installed();
        let mut action = recording(&[NOTIFY, "$TARGET$"], &tools);
        let now = SystemTime::now();
        let block = |last: u8| record(v4(last), "TCP", 23);
        let error = |action: &mut CommandAction, blocks: &[&BlockRecord]| {
            action.block(blocks, now).unwrap_err().to_string()
        };

        tools.answer([Reply::status(3).with_stderr("cannot reach 192.0.2.7")]);
        assert_eq!(error(&mut action, &[&block(7)]), "command: exit status: 3");
        tools.answer([Reply::TimedOut {
            stderr: String::new(),
        }]);
        assert_eq!(
            error(&mut action, &[&block(7)]),
            "command: killed after 250ms"
        );
        tools.answer([Reply::CannotStart(io::ErrorKind::NotFound)]);
        assert_eq!(
            error(&mut action, &[&block(7)]),
            format!(
                "command: {NOTIFY}: cannot start: {}",
                io::Error::from(io::ErrorKind::NotFound)
            )
        );

        // One failure in a burst: every block still runs, and the error counts them.
        tools.take_calls();
        tools.answer([Reply::status(1), Reply::status(0)]);
        assert_eq!(
            error(&mut action, &[&block(8), &block(9)]),
            "command: 1 of 2 failed; first: exit status: 1"
        );
        assert_eq!(tools.take_calls().len(), 2);
    }

    #[test]
    fn check_reports_a_program_that_is_not_there_without_running_it() {
        let tools = notify_installed();
        assert!(recording(&[NOTIFY, "$TARGET$"], &tools).check().is_empty());
        assert_eq!(
            recording(&["/usr/local/sbin/gone", "$TARGET$"], &tools).check(),
            ["/usr/local/sbin/gone does not exist or is not executable"]
        );
        assert_eq!(recording(&[], &tools).check(), ["no program configured"]);
        assert!(tools.take_calls().is_empty());
    }
}
