//! The `command` action: the admin's program, run once per block directly (never through a
//! shell) with `$TARGET$`, `$PORT$` and `$MODE$` filled into its arguments, and killed with its
//! process group when it overruns its time. It undoes nothing and does not run again for blocks
//! restored at start: PortSentry's KILL_RUN_CMD is a one-shot hook.
//!
//! How the child is started and supervised (no stdin, stderr captured, cwd `/`, the daemon's
//! descriptors closed at exec) is [`super::process`]'s job; this module builds the argv and logs
//! the outcome.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use caps::Capability;
use log::{info, warn};
use thiserror::Error;

use super::process::{self, Invocation, Outcome, RunError};
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
}

impl CommandAction {
    pub fn new(argv: Vec<String>, timeout: Duration, runs_first: bool) -> CommandAction {
        CommandAction {
            argv,
            timeout,
            runs_first,
        }
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
        process::run(&invocation, self.timeout).map_err(|cause| CommandError::Run {
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

    fn check(&self) -> Vec<String> {
        let Some(program) = self.argv.first() else {
            return vec!["no program configured".to_owned()];
        };
        let runnable = std::fs::metadata(Path::new(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        match runnable {
            true => Vec::new(),
            false => vec![format!("{program} does not exist or is not executable")],
        }
    }

    fn describe(&self) -> Vec<String> {
        let when = if self.runs_first { "first" } else { "last" };
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

    fn backend(argv: &[&str]) -> CommandAction {
        CommandAction::new(
            argv.iter().map(|a| a.to_string()).collect(),
            Duration::from_secs(5),
            false,
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
    fn an_empty_argv_is_an_error_not_a_panic() {
        let backend = CommandAction::new(Vec::new(), Duration::from_secs(1), false);
        let v4 = record(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "TCP", 23);
        assert!(matches!(backend.run(&v4), Err(CommandError::NoProgram)));
    }
}
