//! Shutting scanners out: the [`Action`] trait that every blocking method implements, its error
//! type, and [`build`], the one place where the configured actions are made.
//!
//! An action is what `[respond] actions` names in the config (`nft-set`, `route`, `hosts-deny`,
//! ...). Every action speaks the same small set of verbs, after sshguard's backends: `init`,
//! `block`, `release`, `flush`, `fin`, plus `check` (what `check-config` reports) and `describe`
//! (what `rules --actions` prints), each implemented next to the code that does the work. The
//! [`responder`] thread drives them; this module decides nothing about who is blocked. Every
//! action but `nft-set` runs off that thread, behind a [`detached::Detached`] queue, so that a
//! slow one never delays the kernel block ([`build`] says which and why).
//!
//! Adding a blocking method means one new file implementing [`Action`] and one line in
//! [`build`].

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use caps::Capability;
use nix::errno::Errno;
use thiserror::Error;

mod alert_only;
pub mod block_latency;
mod burst;
pub mod command;
pub mod detached;
pub mod executor;
pub mod hosts_deny;
pub mod legacy;
pub(crate) mod nft_set;
pub mod process;
pub mod responder;
pub mod route;

pub use alert_only::AlertOnlyAction;
pub use nft_set::NftSetAction;

use crate::config::{self, ActionKind};
use crate::error_text::with_causes;
use crate::store::BlockRecord;
use detached::{Detached, Shape};
use legacy::{LegacyAction, LegacyTool};

/// Why an action could not do what it was asked. Every variant names the action, so a log line
/// made from it says which one failed.
#[derive(Debug, Error)]
pub enum ActionError {
    /// A program the action runs is not installed (or not executable).
    #[error("{action}: {program} not found in PATH ({search_path})")]
    MissingTool {
        action: &'static str,
        program: String,
        search_path: String,
    },
    /// The kernel refused or did not answer a change; `errno` is its error number when it gave
    /// one.
    #[error("{action}: {detail}")]
    Kernel {
        action: &'static str,
        errno: Option<Errno>,
        /// What was attempted and the kernel's answer, causes included.
        detail: String,
    },
    /// Reading or writing a file failed.
    #[error("{action}: cannot {doing} {}: {source}", path.display())]
    Io {
        action: &'static str,
        /// `open`, `lock`, `read`, `write`, ...
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A program the action ran could not be started, failed, or overran its time.
    #[error("{action}: {detail}")]
    Program {
        action: &'static str,
        detail: String,
    },
    /// A configured value cannot work (a template without its placeholder, a name that would
    /// change the meaning of a rule).
    #[error("{action}: {detail}")]
    Config {
        action: &'static str,
        detail: String,
    },
    /// The thread that runs the action off the responder thread could not be started.
    #[error("{action}: cannot start a worker thread: {source}")]
    Thread {
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// Part of a batch failed; every item was attempted.
    #[error("{action}: {failed} of {total} failed; first: {}", .first.detail())]
    Partial {
        action: &'static str,
        failed: usize,
        total: usize,
        first: Box<ActionError>,
    },
}

impl ActionError {
    /// The action that failed, as named in the config.
    pub fn action(&self) -> &'static str {
        match self {
            ActionError::MissingTool { action, .. }
            | ActionError::Kernel { action, .. }
            | ActionError::Io { action, .. }
            | ActionError::Program { action, .. }
            | ActionError::Config { action, .. }
            | ActionError::Thread { action, .. }
            | ActionError::Partial { action, .. } => action,
        }
    }

    /// The message without the leading action name.
    pub fn detail(&self) -> String {
        let text = self.to_string();
        let prefix = format!("{}: ", self.action());
        text.strip_prefix(&prefix)
            .map_or(text.clone(), str::to_owned)
    }

    /// A kernel refusal or silence, from any error type that can say its errno.
    pub fn kernel(
        action: &'static str,
        errno: Option<Errno>,
        error: &(dyn std::error::Error + 'static),
    ) -> ActionError {
        ActionError::Kernel {
            action,
            errno,
            detail: with_causes(error),
        }
    }
}

/// One way of shutting a source out. Construction reads the configuration only; resources
/// (sockets, programs found in PATH) are taken in [`Action::init`], so `check` and `describe`
/// work without privileges and without side effects.
///
/// Block and release come in batches: a burst of detections, or the expiries of one second,
/// cost one firewall batch, one file rewrite or one rule rebuild where the method allows it.
/// Every item of a batch is attempted, so one refusal (say, IPv6 switched off) does not leave
/// the others undone; the error says how many failed and the first reason.
pub trait Action: Send {
    /// The word for this action in the config file and in log lines (`nft-set`).
    fn name(&self) -> &'static str;

    /// What `check-config` reports before a start: a missing tool, a file that cannot be
    /// written, a value that cannot work. Empty when the action is ready to run.
    fn check(&self) -> Vec<String>;

    /// The exact commands or changes a block and a release make, with `$TARGET$` for the
    /// address, for `nfsentry rules --actions`.
    fn describe(&self) -> Vec<String>;

    /// The capabilities this action needs once nfsentry has dropped the rest, beyond
    /// CAP_NET_ADMIN, which the daemon always keeps.
    fn capabilities(&self) -> &'static [Capability] {
        &[]
    }

    /// Whether the action starts programs, which then need the network capabilities passed on
    /// to them (see the daemon's capability drop).
    fn runs_programs(&self) -> bool {
        false
    }

    /// The counters of the queue in front of the action when it runs off the responder thread
    /// ([`detached::Detached`]), for the status line; None when it runs on that thread.
    fn detached(&self) -> Option<Arc<detached::Counters>> {
        None
    }

    /// Takes up its resources and re-applies `due`, the blocks an earlier run placed that are
    /// still in force. It must be idempotent: what survived the restart is not doubled.
    fn init(&mut self, due: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError>;

    /// Shuts out the sources of a burst of new blocks.
    fn block(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError>;

    /// Lets the sources of these blocks in again (time up, or lifted by hand).
    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError>;

    /// Gives blocks in place their new end (a block made verified lasts longer). Only an
    /// action whose blocks carry their end needs to act; the others keep a block until the
    /// responder releases it, which it does by the new end.
    fn renew(&mut self, _blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        Ok(())
    }

    /// Lifts every block this action holds; `held` is every block in force.
    fn flush(&mut self, held: &[&BlockRecord]) -> Result<(), ActionError> {
        self.release(held)
    }

    /// Tears down at a clean stop. Blocks stay where the action keeps them across restarts
    /// (routes, files, legacy rules); nfsentry's own nft table goes with the firewall.
    fn fin(&mut self) -> Result<(), ActionError> {
        Ok(())
    }
}

/// Runs `step` for every block, even after one fails; one error stands for them all. A single
/// block's error is passed on as it is, since "1 of 1 failed" adds nothing.
pub(crate) fn attempt_each(
    action: &'static str,
    blocks: &[&BlockRecord],
    mut step: impl FnMut(&BlockRecord) -> Result<(), ActionError>,
) -> Result<(), ActionError> {
    let mut failed = 0usize;
    let mut first = None;
    for block in blocks {
        if let Err(e) = step(block) {
            failed += 1;
            first.get_or_insert(e);
        }
    }
    match first {
        None => Ok(()),
        Some(error) if blocks.len() == 1 => Err(error),
        Some(error) => Err(ActionError::Partial {
            action,
            failed,
            total: blocks.len(),
            first: Box::new(error),
        }),
    }
}

/// The addresses of a batch, for actions that work on addresses alone.
pub(crate) fn sources(blocks: &[&BlockRecord]) -> Vec<IpAddr> {
    blocks.iter().map(|block| block.source).collect()
}

/// Commands running at once: enough that one slow command does not hold up the next, few
/// enough that a burst of blocks does not fork a crowd.
pub const COMMAND_WORKERS: usize = 4;
/// Commands waiting for a worker. A block beyond it runs no command (counted and reported):
/// at a second a command, 32 waiting is 8 s behind with 4 workers, and a burst of more distinct
/// sources than that is a flood, for which a command each helps nobody.
pub const COMMAND_QUEUE_BOUND: usize = 32;
/// How long the start waits for a detached action to take up its resources and restore. A
/// missing tool or a refused socket shows within milliseconds, and such an action is left out
/// as before; a restore that takes longer goes on in the background instead of holding up the
/// start (and systemd's start timeout).
const DETACHED_INIT_WAIT: Duration = Duration::from_secs(2);
/// On top of one run's own time limit at a stop: for a killed child to be reaped and its worker
/// to notice.
const STOP_SLACK: Duration = Duration::from_secs(1);
/// A hosts.deny change is a read, a write and two fsyncs, but the flock on the file waits for
/// any other writer without a bound of its own.
const HOSTS_DENY_STOP_WAIT: Duration = Duration::from_secs(5);

/// The configured actions in the order the responder calls them: `nft-set` first whatever the
/// config says, since it is the kernel block; then the others in config order, with `command`
/// moved to the front of them when `command_first` is set (PortSentry's KILL_RUN_CMD_FIRST) and
/// to the end otherwise. With every action but `nft-set` detached, that order is the order in
/// which they are handed a burst, not an order in which they finish. No action configured is
/// alert-only, which is an action too, so the responder never has to special-case an empty
/// list. `table` is nfsentry's nft table, where `nft-set` keeps its sets.
pub fn build(respond: &config::Respond, table: &str) -> Vec<Box<dyn Action>> {
    let mut order: Vec<ActionKind> = respond
        .actions
        .iter()
        .copied()
        .filter(|kind| !matches!(kind, ActionKind::NftSet | ActionKind::Command))
        .collect();
    if respond.actions.contains(&ActionKind::Command) {
        match respond.command_first {
            true => order.insert(0, ActionKind::Command),
            false => order.push(ActionKind::Command),
        }
    }
    if respond.actions.contains(&ActionKind::NftSet) {
        order.insert(0, ActionKind::NftSet);
    }
    if order.is_empty() {
        return vec![Box::new(AlertOnlyAction)];
    }
    order
        .into_iter()
        .map(|kind| -> Box<dyn Action> {
            match placement(kind, respond) {
                None => make(kind, respond, table),
                Some(shape) => {
                    let respond = respond.clone();
                    let table = table.to_owned();
                    Box::new(Detached::new(move || make(kind, &respond, &table), shape))
                }
            }
        })
        .collect()
}

/// Where an action runs: None for the responder thread, else off it, in this shape. A slow
/// action must never delay the kernel block of the next burst, so only `nft-set` stays:
///
/// | action | runs on | because |
/// | --- | --- | --- |
/// | `nft-set` | the responder thread, first | it is the kernel block: one netlink batch a burst, microseconds |
/// | `route` | a worker of its own | a kernel round trip per source, each waiting up to `route`'s ack timeout for a kernel that may not answer |
/// | `hosts-deny` | a worker of its own | fsyncs, and a flock that waits for any other writer of the file without bound |
/// | `iptables` ... `ipfilter` | a worker of its own | one to three processes per source, each up to `legacy`'s tool timeout |
/// | `command` | [`COMMAND_WORKERS`] workers, [`COMMAND_QUEUE_BOUND`] waiting | the admin's program, up to `command_timeout` a block; each block stands alone and the action keeps no state, so instances run side by side |
///
/// An action with state has one worker, so its blocks and releases stay in order and in
/// batches (one hosts.deny rewrite or one ipfw rebuild a burst, as before); its queue holds as
/// many addresses as the block table. A stop waits for each at most about one run's time limit.
fn placement(kind: ActionKind, respond: &config::Respond) -> Option<Shape> {
    let one_worker = |stop_wait| Shape {
        workers: 1,
        queue_bound: respond.max_blocks,
        init_wait: DETACHED_INIT_WAIT,
        stop_wait,
    };
    match kind {
        ActionKind::NftSet => None,
        ActionKind::Route => Some(one_worker(route::ACK_TIMEOUT + STOP_SLACK)),
        ActionKind::HostsDeny => Some(one_worker(HOSTS_DENY_STOP_WAIT)),
        ActionKind::Iptables
        | ActionKind::Ipchains
        | ActionKind::Ipfwadm
        | ActionKind::Ipfw
        | ActionKind::Ipfilter => Some(one_worker(legacy::TOOL_TIMEOUT + STOP_SLACK)),
        ActionKind::Command => Some(Shape {
            workers: COMMAND_WORKERS,
            queue_bound: COMMAND_QUEUE_BOUND,
            init_wait: DETACHED_INIT_WAIT,
            stop_wait: respond.command_timeout + STOP_SLACK,
        }),
    }
}

/// One action of `kind` as configured; nothing is opened or run.
fn make(kind: ActionKind, respond: &config::Respond, table: &str) -> Box<dyn Action> {
    match kind {
        ActionKind::NftSet => match &respond.blocked_table {
            Some(admin) => Box::new(NftSetAction::in_admin_table(admin, respond.block_timeout)),
            None => Box::new(NftSetAction::new(table, respond.block_timeout)),
        },
        ActionKind::Route => Box::new(route::RouteAction::new(respond.route)),
        ActionKind::HostsDeny => Box::new(hosts_deny::HostsDenyAction::new(
            respond.hosts_deny.clone(),
            respond.hosts_deny_line.clone(),
        )),
        ActionKind::Command => Box::new(command::CommandAction::new(
            respond.command.clone(),
            respond.command_timeout,
            respond.command_first,
        )),
        ActionKind::Iptables => Box::new(LegacyAction::new(LegacyTool::Iptables, None)),
        ActionKind::Ipchains => Box::new(LegacyAction::new(LegacyTool::Ipchains, None)),
        ActionKind::Ipfwadm => Box::new(LegacyAction::new(LegacyTool::Ipfwadm, None)),
        ActionKind::Ipfw => Box::new(LegacyAction::new(LegacyTool::Ipfw, None)),
        ActionKind::Ipfilter => Box::new(LegacyAction::new(
            LegacyTool::Ipfilter,
            respond.ipfilter_interface.clone(),
        )),
    }
}

/// The queue counters of the actions that run off the responder thread, for the daemon's
/// status line; taken before the actions move to the responder.
pub fn detached_status(actions: &[Box<dyn Action>]) -> detached::StatusSuffix {
    detached::StatusSuffix(
        actions
            .iter()
            .filter_map(|action| action.detached())
            .collect(),
    )
}

/// Every problem the configured actions report, each as `action NAME: PROBLEM`, for
/// `check-config`.
pub fn check(actions: &[Box<dyn Action>]) -> Vec<String> {
    actions
        .iter()
        .flat_map(|action| {
            action
                .check()
                .into_iter()
                .map(move |problem| format!("action {}: {problem}", action.name()))
        })
        .collect()
}

/// What `nfsentry rules --actions` prints: each action's lines, prefixed with its name.
pub fn describe(actions: &[Box<dyn Action>]) -> Vec<String> {
    actions
        .iter()
        .flat_map(|action| {
            action
                .describe()
                .into_iter()
                .map(move |line| format!("{}: {line}", action.name()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses the sources in `refuse`, accepts the rest.
    struct Refusing(Vec<IpAddr>);

    impl Refusing {
        fn step(&self, block: &BlockRecord) -> Result<(), ActionError> {
            match self.0.contains(&block.source) {
                true => Err(ActionError::Program {
                    action: "recorder",
                    detail: format!("refused {}", block.source),
                }),
                false => Ok(()),
            }
        }
    }

    fn record(addr: &str) -> BlockRecord {
        BlockRecord::example(addr, None)
    }

    fn addresses(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_batch_attempts_every_item_and_counts_the_failures() {
        let records = [
            record("198.51.100.1"),
            record("198.51.100.2"),
            record("198.51.100.3"),
            record("198.51.100.4"),
        ];
        let refs: Vec<&BlockRecord> = records.iter().collect();
        let refusing = Refusing(addresses(&["198.51.100.2", "198.51.100.4"]));
        let mut attempted = Vec::new();
        let err = attempt_each("recorder", &refs, |block| {
            attempted.push(block.source);
            refusing.step(block)
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "recorder: 2 of 4 failed; first: refused 198.51.100.2"
        );
        assert!(matches!(
            err,
            ActionError::Partial {
                failed: 2,
                total: 4,
                ..
            }
        ));
        assert_eq!(attempted, sources(&refs));

        // One item alone keeps its own error, without a count.
        let err = attempt_each("recorder", &refs[1..2], |block| refusing.step(block)).unwrap_err();
        assert_eq!(err.to_string(), "recorder: refused 198.51.100.2");
    }

    fn respond_with(actions: Vec<ActionKind>, command_first: bool) -> config::Respond {
        let mut respond = config::Config::defaults().respond;
        respond.actions = actions;
        respond.command = vec!["/bin/true".into()];
        respond.command_first = command_first;
        respond
    }

    fn names(actions: &[Box<dyn Action>]) -> Vec<&'static str> {
        actions.iter().map(|action| action.name()).collect()
    }

    #[test]
    fn command_runs_first_or_last_as_configured() {
        let kinds = vec![ActionKind::HostsDeny, ActionKind::Command];
        let first = build(&respond_with(kinds, true), "t");
        assert_eq!(names(&first), ["command", "hosts-deny"]);
        let last = build(
            &respond_with(vec![ActionKind::Command, ActionKind::HostsDeny], false),
            "t",
        );
        assert_eq!(names(&last), ["hosts-deny", "command"]);
    }

    #[test]
    fn nft_set_comes_first_even_when_the_command_is_to_run_first() {
        let kinds = vec![
            ActionKind::HostsDeny,
            ActionKind::Command,
            ActionKind::Iptables,
            ActionKind::NftSet,
        ];
        let actions = build(&respond_with(kinds, true), "t");
        assert_eq!(
            names(&actions),
            ["nft-set", "command", "hosts-deny", "iptables"]
        );
    }

    #[test]
    fn only_nft_set_and_alert_only_run_on_the_responder_thread() {
        for &kind in ActionKind::ALL {
            let actions = build(&respond_with(vec![kind], false), "t");
            let detached = actions[0].detached().is_some();
            assert_eq!(detached, kind != ActionKind::NftSet, "{kind:?}");
        }
        let alert_only = build(&respond_with(Vec::new(), false), "t");
        assert!(alert_only[0].detached().is_none());
    }

    #[test]
    fn commands_get_a_pool_and_stateful_actions_one_worker_each() {
        let mut respond = respond_with(Vec::new(), false);
        respond.max_blocks = 1000;
        respond.command_timeout = Duration::from_secs(3);
        let command = placement(ActionKind::Command, &respond).unwrap();
        assert_eq!(
            (command.workers, command.queue_bound, command.stop_wait),
            (
                COMMAND_WORKERS,
                COMMAND_QUEUE_BOUND,
                Duration::from_secs(3) + STOP_SLACK
            )
        );
        for kind in [ActionKind::Route, ActionKind::HostsDeny, ActionKind::Ipfw] {
            let shape = placement(kind, &respond).unwrap();
            assert_eq!((shape.workers, shape.queue_bound), (1, 1000), "{kind:?}");
        }
        let status = detached_status(&build(
            &respond_with(vec![ActionKind::NftSet, ActionKind::Command], false),
            "t",
        ));
        assert_eq!(
            status.to_string(),
            "; command: 0 blocks queued, 0 waiting, 0 dropped (queue full), 0 failed"
        );
    }

    #[test]
    fn no_action_configured_is_the_alert_only_action() {
        let actions = build(&respond_with(Vec::new(), false), "t");
        assert_eq!(names(&actions), ["alert-only"]);
        assert!(check(&actions).is_empty());
        let lines = describe(&actions);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("alert-only: "), "{lines:?}");
    }

    #[test]
    fn every_action_kind_is_built_under_its_config_word() {
        for &kind in ActionKind::ALL {
            let actions = build(&respond_with(vec![kind], false), "t");
            assert_eq!(names(&actions), [kind.as_str()]);
        }
    }

    #[test]
    fn describe_names_every_configured_action() {
        let respond = respond_with(
            vec![ActionKind::NftSet, ActionKind::Route, ActionKind::HostsDeny],
            false,
        );
        let lines = describe(&build(&respond, "nfsentry"));
        for action in ["nft-set:", "route:", "hosts-deny:"] {
            assert!(
                lines.iter().any(|l| l.starts_with(action)),
                "{action} missing: {lines:?}"
            );
        }
        assert!(lines.iter().any(|l| l.contains("blackhole $TARGET$/32")));
    }
}
