//! Carrying out blocks: the [`Backend`] trait every blocking method implements, and the
//! responder thread that owns the backends, the block store and the nft ruleset.
//!
//! The responder is fed block orders over a channel by the packet pipeline and never feeds
//! anything back into it, so the per-packet path never waits for a disk or a firewall. It also
//! lifts blocks whose time is up, including blocks placed by an earlier run.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use log::{error, info, warn};
use thiserror::Error;

pub mod command;
pub mod hosts_deny;
pub mod legacy;
mod nft_set;
pub mod process;
pub mod route;
pub use nft_set::NftSetBackend;

use crate::config::{self, Action};
use crate::error_text::with_causes;
use crate::nft::netlink::Nft;
use crate::nft::ruleset::{QueueMode, RulesetSpec};
use crate::report;
use crate::store::{BlockRecord, BlockStore};

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("{backend}: {message}")]
    Failed {
        backend: &'static str,
        message: String,
    },
}

/// One way of shutting a source out. Verbs follow block / release; `restore` re-applies what an
/// earlier run placed and must be idempotent.
pub trait Backend: Send {
    fn name(&self) -> &'static str;
    fn block(&mut self, block: &BlockRecord, now: SystemTime) -> Result<(), BackendError>;
    fn release(&mut self, block: &BlockRecord) -> Result<(), BackendError>;
    fn restore(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), BackendError> {
        self.block_all(blocks, now)
    }
    /// Blocks a burst of new sources; a backend that can do it in one step overrides this.
    /// Every block is attempted, so one refusal (say, IPv6 switched off) does not leave the
    /// others unblocked; the error says how many failed and the first reason.
    fn block_all(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), BackendError> {
        attempt_each(blocks, |block| self.block(block, now))
    }
    /// Releases every block whose time ran out in the same expiry check; a backend whose
    /// release costs a rewrite of shared state (a file, a rule holding every address) overrides
    /// this to do it once. As with `block_all`, every release is attempted and the error says
    /// how many failed and the first reason.
    fn release_all(&mut self, blocks: &[&BlockRecord]) -> Result<(), BackendError> {
        attempt_each(blocks, |block| self.release(block))
    }
}

/// Runs `step` for every block, even after one fails; one error stands for them all. A single
/// block's error is passed on as it is, since "1 of 1 failed" adds nothing.
fn attempt_each(
    blocks: &[&BlockRecord],
    mut step: impl FnMut(&BlockRecord) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let mut failures = 0usize;
    let mut first_error = None;
    for block in blocks {
        if let Err(e) = step(block) {
            failures += 1;
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        None => Ok(()),
        Some(error) if blocks.len() == 1 => Err(error),
        Some(BackendError::Failed { backend, message }) => Err(BackendError::Failed {
            backend,
            message: format!("{failures} of {} failed; first: {message}", blocks.len()),
        }),
    }
}

/// What the pipeline asks of the responder.
pub enum Order {
    Block {
        record: BlockRecord,
        history_line: String,
    },
    Shutdown,
}

/// How the responder sets up the firewall before it takes orders.
pub struct ResponderSetup {
    pub spec: RulesetSpec,
    pub prefer: Option<QueueMode>,
    pub store: BlockStore,
    pub respond: config::Respond,
}

/// Most block orders carried out as one burst.
const MAX_BURST: usize = 4096;
/// How often blocks are checked for expiry; a block outlives its timeout by at most this.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// Starts the responder thread. It installs the ruleset, re-applies the stored blocks, then
/// reports the queue mode (or the failure) on `ready` before taking orders.
pub fn spawn(
    setup: ResponderSetup,
    orders: Receiver<Order>,
    ready: SyncSender<Result<Installed, String>>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("responder".into())
        .spawn(move || run(setup, orders, ready))
}

fn run(
    setup: ResponderSetup,
    orders: Receiver<Order>,
    ready: SyncSender<Result<Installed, String>>,
) {
    let ResponderSetup {
        spec,
        prefer,
        mut store,
        respond,
    } = setup;
    let table = spec.table.clone();
    let mut nft = match Nft::open() {
        Ok(nft) => nft,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot talk to nftables: {}", with_causes(&e))));
            return;
        }
    };
    let installed = match install(&mut nft, spec, prefer) {
        Ok(installed) => installed,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot install the nft ruleset: {}",
                with_causes(&e)
            )));
            return;
        }
    };
    let mut backends = build_backends(&respond, &table);
    restore(&mut store, &mut backends);
    let _ = ready.send(Ok(installed));

    loop {
        let first = match orders.recv_timeout(EXPIRY_CHECK) {
            Ok(order) => Some(order),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take whatever else queued up meanwhile: a burst costs one firewall batch and one disk
        // flush instead of one of each per source.
        let mut burst = Vec::new();
        let mut shutdown = false;
        let pending = std::iter::from_fn(|| orders.try_recv().ok()).take(MAX_BURST);
        for order in first.into_iter().chain(pending) {
            match order {
                Order::Block {
                    record,
                    history_line,
                } => burst.push((record, history_line)),
                Order::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
        }
        if !burst.is_empty() {
            carry_out(&mut store, &mut backends, burst);
        }
        if shutdown {
            break;
        }
        expire(&mut store, &mut backends, SystemTime::now());
    }
    finish(&mut store, &mut nft, &table);
}

/// What the responder installed, for the daemon's start-up report.
pub struct Installed {
    pub mode: QueueMode,
    /// The devices the short-header chain hooks; empty when none could be hooked.
    pub ingress_devices: Vec<String>,
}

/// Installs the ruleset. Some kernels refuse a netdev hook on a device that does not exist (yet),
/// and the netdev chain shares the transaction with everything else: rather than start without
/// any protection, retry without the short-header chain and say why.
fn install(
    nft: &mut Nft,
    mut spec: RulesetSpec,
    prefer: Option<QueueMode>,
) -> Result<Installed, crate::nft::netlink::NftError> {
    match nft.install(&spec, prefer) {
        Ok(mode) => Ok(Installed {
            mode,
            ingress_devices: spec.ingress_devices,
        }),
        Err(e) if !spec.ingress_devices.is_empty() => {
            let devices = std::mem::take(&mut spec.ingress_devices);
            let Ok(mode) = nft.install(&spec, prefer) else {
                return Err(e);
            };
            error!(
                "the short-header chain on {} was refused ({}); running without it, so IPv4 \
                 headers shorter than 5 words go unseen",
                devices.join(", "),
                with_causes(&e)
            );
            Ok(Installed {
                mode,
                ingress_devices: Vec::new(),
            })
        }
        Err(e) => Err(e),
    }
}

/// The configured actions in the order they run: config order, with `command` moved to the
/// front when `command_first` is set (PortSentry's KILL_RUN_CMD_FIRST) and to the end otherwise.
/// An action that cannot start (tool missing, no netlink) is logged and left out; the others
/// still run.
fn build_backends(respond: &config::Respond, table: &str) -> Vec<Box<dyn Backend>> {
    let mut order: Vec<Action> = respond
        .actions
        .iter()
        .copied()
        .filter(|a| *a != Action::Command)
        .collect();
    if respond.actions.contains(&Action::Command) {
        match respond.command_first {
            true => order.insert(0, Action::Command),
            false => order.push(Action::Command),
        }
    }
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(order.len());
    for action in order {
        let built: Result<Box<dyn Backend>, BackendError> = match action {
            Action::NftSet => Nft::open()
                .map(|nft| Box::new(NftSetBackend::new(nft, table.to_string())) as Box<dyn Backend>)
                .map_err(|e| BackendError::Failed {
                    backend: "nft-set",
                    message: with_causes(&e),
                }),
            Action::Route => {
                route::RouteBackend::new(respond.route).map(|b| Box::new(b) as Box<dyn Backend>)
            }
            Action::HostsDeny => Ok(Box::new(hosts_deny::HostsDenyBackend::new(
                respond.hosts_deny.clone(),
                respond.hosts_deny_line.clone(),
            ))),
            Action::Command => Ok(Box::new(command::CommandBackend::new(
                respond.command.clone(),
                respond.command_timeout,
            ))),
            Action::Iptables
            | Action::Ipchains
            | Action::Ipfwadm
            | Action::Ipfw
            | Action::Ipfilter => match legacy::LegacyTool::from_action(action) {
                Some(tool) => legacy::LegacyBackend::new(tool, respond.ipfilter_interface.clone())
                    .map(|b| Box::new(b) as Box<dyn Backend>),
                None => continue,
            },
        };
        match built {
            Ok(backend) => backends.push(backend),
            Err(e) => error!("action {action} is unavailable and will not run: {e}"),
        }
    }
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    match names.is_empty() {
        true => {
            warn!("no blocking action is active: detections are logged and dropped inline only")
        }
        false => info!("blocking actions, in order: {}", names.join(", ")),
    }
    backends
}

/// Problems `check-config` reports before a start: actions whose tools are missing.
pub fn preflight(respond: &config::Respond) -> Vec<String> {
    let mut problems = Vec::new();
    for &action in &respond.actions {
        if let Some(tool) = legacy::LegacyTool::from_action(action) {
            if let Err(e) = legacy::preflight(tool) {
                problems.push(e);
            }
        }
    }
    if respond.actions.contains(&Action::HostsDeny) {
        let backend = hosts_deny::HostsDenyBackend::new(
            respond.hosts_deny.clone(),
            respond.hosts_deny_line.clone(),
        );
        if let Err(e) = backend.line_for(std::net::IpAddr::from([192, 0, 2, 1])) {
            problems.push(format!("action hosts-deny: hosts_deny_line: {e}"));
        }
    }
    if respond.actions.contains(&Action::Ipfilter) {
        if let Some(name) = &respond.ipfilter_interface {
            if !legacy::is_plain_interface_name(name) {
                problems.push(format!(
                    "action ipfilter: ipfilter_interface {name:?} may hold only letters, digits, '.', '_' and '-' (it goes into an ipf rule line)"
                ));
            }
        }
    }
    if respond.actions.contains(&Action::Command) {
        if let Some(program) = respond.command.first() {
            let path = std::path::Path::new(program);
            let runnable = std::fs::metadata(path)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false);
            if !runnable {
                problems.push(format!(
                    "action command: {program} does not exist or is not executable"
                ));
            }
        }
    }
    problems
}

/// The exact commands and changes each configured action makes, for review
/// (`nfsentry rules --actions`). `$TARGET$`, `$PORT$` and `$MODE$` are left in.
pub fn describe(respond: &config::Respond, table: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let timeout = match respond.block_timeout {
        Some(t) => format!(" timeout {}", config::format_duration(t)),
        None => String::new(),
    };
    for &action in &respond.actions {
        match action {
            Action::NftSet => {
                lines.push(format!(
                    "nft-set: block:   add element inet {table} blocked_v4 {{ $TARGET${timeout} }}   (blocked_v6 for IPv6; netlink, no nft process)"
                ));
                lines.push(format!(
                    "nft-set: release: delete element inet {table} blocked_v4 {{ $TARGET$ }}"
                ));
            }
            Action::Route => {
                let how = match &respond.route {
                    config::RouteTarget::Blackhole => "blackhole $TARGET$/32".to_string(),
                    config::RouteTarget::Gateway(gw) => format!("$TARGET$/32 via {gw}"),
                };
                lines.push(format!(
                    "route: block:   ip route add {how} proto {}   (/128 for IPv6; rtnetlink, no ip process)",
                    route::ROUTE_PROTOCOL
                ));
                lines.push(format!(
                    "route: release: ip route del $TARGET$/32 proto {}",
                    route::ROUTE_PROTOCOL
                ));
            }
            Action::HostsDeny => {
                lines.push(format!(
                    "hosts-deny: block:   add to {}: \"{}\" (IPv6 as [addr]) under a '# nfsentry block' marker line",
                    respond.hosts_deny.display(),
                    respond.hosts_deny_line
                ));
                lines.push("hosts-deny: release: remove that marker and line again".to_string());
            }
            Action::Command => {
                let when = if respond.command_first {
                    "first"
                } else {
                    "last"
                };
                lines.push(format!(
                    "command: block (runs {when}, no shell, killed after {}): {}",
                    config::format_duration(respond.command_timeout),
                    respond.command.join(" ")
                ));
                lines.push("command: release: nothing (the command has no undo)".to_string());
            }
            _ => {
                if let Some(tool) = legacy::LegacyTool::from_action(action) {
                    lines.extend(
                        legacy::describe(tool, respond.ipfilter_interface.as_deref())
                            .into_iter()
                            .map(|l| format!("{action}: {l}")),
                    );
                }
            }
        }
    }
    lines
}

fn carry_out(
    store: &mut BlockStore,
    backends: &mut [Box<dyn Backend>],
    burst: Vec<(BlockRecord, String)>,
) {
    let now = SystemTime::now();
    let records: Vec<&BlockRecord> = burst.iter().map(|(record, _)| record).collect();
    for backend in backends.iter_mut() {
        if let Err(e) = backend.block_all(&records, now) {
            match records.as_slice() {
                [one] => error!("block of {} failed: {e}", one.source),
                all => error!("block of {} sources failed: {e}", all.len()),
            }
        }
    }
    // Recorded even when a backend failed: the block is due, and the next start retries it.
    for (record, history_line) in burst {
        let source = record.source;
        store.add(record, &history_line);
        warn!("{}", report::blocked_line(source));
    }
    sync(store);
}

fn restore(store: &mut BlockStore, backends: &mut [Box<dyn Backend>]) {
    let now = SystemTime::now();
    expire(store, backends, now);
    let due: Vec<&BlockRecord> = store.live().collect();
    if due.is_empty() {
        return;
    }
    for backend in backends.iter_mut() {
        if let Err(e) = backend.restore(&due, now) {
            error!("restoring {} blocks failed: {e}", due.len());
        }
    }
    info!("restored {} blocks from the state directory", due.len());
}

/// Lifts every block whose time is up, handing each backend all of them at once: a spoofed
/// flood with a block timeout makes thousands expire in the same second, and releasing them one
/// by one (a file rewrite, or a whole ipfw rebuild, each) would stall new blocks behind them.
fn expire(store: &mut BlockStore, backends: &mut [Box<dyn Backend>], now: SystemTime) {
    let mut expired = store.expired(now);
    if expired.is_empty() {
        return;
    }
    // The store hands them out in hash order; file order, tool runs and log lines should not
    // change from one run to the next.
    expired.sort_unstable();
    let records: Vec<BlockRecord> = expired
        .iter()
        .filter_map(|source| store.remove(source))
        .collect();
    let due: Vec<&BlockRecord> = records.iter().collect();
    for backend in backends.iter_mut() {
        if let Err(e) = backend.release_all(&due) {
            match due.as_slice() {
                [one] => error!("release of {} failed: {e}", one.source),
                all => error!("release of {} sources failed: {e}", all.len()),
            }
        }
    }
    for record in &records {
        info!(
            "{}",
            report::released_line(record.source, "block timeout expired")
        );
    }
    sync(store);
}

fn sync(store: &mut BlockStore) {
    if let Err(e) = store.sync() {
        error!("{e}");
    }
}

fn finish(store: &mut BlockStore, nft: &mut Nft, table: &str) {
    sync(store);
    match nft.remove(table) {
        Ok(()) => info!("removed nft tables inet {table} and netdev {table}"),
        Err(e) => error!("cannot remove nft table {table}: {}", with_causes(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Records what it was asked to do; refuses the sources in `refuse`.
    #[derive(Default)]
    struct Recorder {
        blocked: Vec<IpAddr>,
        released: Vec<IpAddr>,
        refuse: Vec<IpAddr>,
    }

    impl Backend for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn block(&mut self, block: &BlockRecord, _now: SystemTime) -> Result<(), BackendError> {
            if self.refuse.contains(&block.source) {
                return Err(BackendError::Failed {
                    backend: "recorder",
                    message: format!("refused {}", block.source),
                });
            }
            self.blocked.push(block.source);
            Ok(())
        }
        fn release(&mut self, block: &BlockRecord) -> Result<(), BackendError> {
            if self.refuse.contains(&block.source) {
                return Err(BackendError::Failed {
                    backend: "recorder",
                    message: format!("refused {}", block.source),
                });
            }
            self.released.push(block.source);
            Ok(())
        }
    }

    fn record(addr: &str) -> BlockRecord {
        BlockRecord {
            source: addr.parse().unwrap(),
            added: 1_700_000_000,
            expires: None,
            protocol: "TCP".into(),
            port: 23,
            kind: "SYN/Normal".into(),
        }
    }

    #[test]
    fn a_burst_attempts_every_block_and_reports_the_first_failure() {
        let records = [
            record("198.51.100.1"),
            record("198.51.100.2"),
            record("198.51.100.3"),
        ];
        let refs: Vec<&BlockRecord> = records.iter().collect();
        let mut backend = Recorder {
            refuse: vec!["198.51.100.2".parse().unwrap()],
            ..Recorder::default()
        };
        let err = backend.block_all(&refs, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("refused 198.51.100.2"), "{err}");
        let expected: Vec<IpAddr> = ["198.51.100.1", "198.51.100.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(backend.blocked, expected);
    }

    fn sources(addresses: &[&str]) -> Vec<IpAddr> {
        addresses.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn release_all_attempts_every_release_and_counts_the_failures() {
        let records = [
            record("198.51.100.1"),
            record("198.51.100.2"),
            record("198.51.100.3"),
            record("198.51.100.4"),
        ];
        let refs: Vec<&BlockRecord> = records.iter().collect();
        let mut backend = Recorder {
            refuse: sources(&["198.51.100.2", "198.51.100.4"]),
            ..Recorder::default()
        };
        let err = backend.release_all(&refs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "recorder: 2 of 4 failed; first: refused 198.51.100.2"
        );
        assert_eq!(backend.released, sources(&["198.51.100.1", "198.51.100.3"]));

        // One release alone keeps its own error, without a count.
        let err = backend.release_all(&refs[1..2]).unwrap_err();
        assert_eq!(err.to_string(), "recorder: refused 198.51.100.2");
    }

    /// Shares, with the test, every batch `release_all` was handed.
    struct BatchRecorder {
        batches: std::sync::Arc<std::sync::Mutex<Vec<Vec<IpAddr>>>>,
    }

    impl Backend for BatchRecorder {
        fn name(&self) -> &'static str {
            "batch-recorder"
        }
        fn block(&mut self, _block: &BlockRecord, _now: SystemTime) -> Result<(), BackendError> {
            Ok(())
        }
        fn release(&mut self, block: &BlockRecord) -> Result<(), BackendError> {
            self.release_all(&[block])
        }
        fn release_all(&mut self, blocks: &[&BlockRecord]) -> Result<(), BackendError> {
            let batch = blocks.iter().map(|block| block.source).collect();
            self.batches
                .lock()
                .map_err(|_| BackendError::Failed {
                    backend: "batch-recorder",
                    message: "poisoned".into(),
                })?
                .push(batch);
            Ok(())
        }
    }

    struct ScratchDir(std::path::PathBuf);

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn expiry_hands_each_backend_all_due_blocks_in_one_call() {
        let dir = ScratchDir(
            std::env::temp_dir().join(format!("nfsentry-respond-expiry-{}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&dir.0);
        let (mut store, _) = BlockStore::open(&dir.0).unwrap();
        let now = SystemTime::now();
        let now_seconds = crate::store::unix_seconds(now);
        for (address, expires) in [
            ("198.51.100.3", Some(now_seconds - 5)),
            ("198.51.100.1", Some(now_seconds)),
            ("198.51.100.9", Some(now_seconds + 3600)),
            ("198.51.100.2", Some(now_seconds - 60)),
            ("198.51.100.8", None),
        ] {
            let mut block = record(address);
            block.expires = expires;
            store.add(block, "history");
        }
        let first = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let second = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut backends: Vec<Box<dyn Backend>> = vec![
            Box::new(BatchRecorder {
                batches: first.clone(),
            }),
            Box::new(BatchRecorder {
                batches: second.clone(),
            }),
        ];

        expire(&mut store, &mut backends, now);
        let due = sources(&["198.51.100.1", "198.51.100.2", "198.51.100.3"]);
        assert_eq!(*first.lock().unwrap(), vec![due.clone()]);
        assert_eq!(*second.lock().unwrap(), vec![due]);
        let mut left: Vec<IpAddr> = store.live().map(|block| block.source).collect();
        left.sort_unstable();
        assert_eq!(left, sources(&["198.51.100.8", "198.51.100.9"]));

        // Nothing further is due: no backend is called at all.
        expire(&mut store, &mut backends, now);
        assert_eq!(first.lock().unwrap().len(), 1);
    }

    fn respond_with(actions: Vec<Action>, command_first: bool) -> config::Respond {
        let mut respond = config::Config::defaults().respond;
        respond.actions = actions;
        respond.command = vec!["/bin/true".into()];
        respond.command_first = command_first;
        respond
    }

    #[test]
    fn command_runs_first_or_last_as_configured() {
        let actions = vec![Action::HostsDeny, Action::Command];
        let first = build_backends(&respond_with(actions.clone(), true), "t");
        let names: Vec<&str> = first.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["command", "hosts-deny"]);
        let last = build_backends(
            &respond_with(vec![Action::Command, Action::HostsDeny], false),
            "t",
        );
        let names: Vec<&str> = last.iter().map(|b| b.name()).collect();
        assert_eq!(names, ["hosts-deny", "command"]);
    }

    #[test]
    fn describe_names_every_configured_action() {
        let respond = respond_with(
            vec![Action::NftSet, Action::Route, Action::HostsDeny],
            false,
        );
        let lines = describe(&respond, "nfsentry");
        for action in ["nft-set:", "route:", "hosts-deny:"] {
            assert!(
                lines.iter().any(|l| l.starts_with(action)),
                "{action} missing: {lines:?}"
            );
        }
        assert!(lines.iter().any(|l| l.contains("blackhole $TARGET$/32")));
    }
}
