//! The responder thread: it owns the firewall, the actions and the block store, takes block
//! orders from the packet loop over a channel, and releases blocks whose time is up, including
//! blocks placed by an earlier run. It also takes what the nft watch saw other processes do to
//! nfsentry's tables, and repairs them or releases by hand ([`repair`]), and it keeps trying to
//! write what the state directory refused, saying so once.
//!
//! Only a release by hand flows back into the packet loop, over a channel the loop drains, so
//! the per-packet path never waits for a disk or a firewall. The responder decides nothing
//! about who is blocked: the pipeline does.

mod deletions;
mod manual;
mod repair;

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};

use super::block_latency::BlockLatency;
use super::burst::{Batch, Burst};
use super::{nft_set, Action};
use crate::config::QueueMode;
use crate::error_text::with_causes;
use crate::firewall::{Firewall, Installed};
use crate::fleet::{Enforcer, UNBLOCKED_BY_HAND};
use crate::nft::ruleset::RulesetSpec;
use crate::nft::watch::Seen;
use crate::pipeline::{self, BlockOrder, ReleaseOrder, RenewOrder, EXPIRED};
use crate::report;
use crate::store::{BlockRecord, BlockStore};
use crate::wake::WakingSender;
use deletions::{Deletions, Since};
pub use manual::{ByHand, Changed, Done, Holding};

/// What the packet loop and the nft watch ask of the responder: the pipeline's orders, an
/// admin's commands, what another process did to nfsentry's tables, and to stop.
pub enum Order {
    Block(BlockOrder),
    Release(ReleaseOrder),
    Renew(RenewOrder),
    ByHand(ByHand),
    /// Pulled bans to enforce or release, from the CrowdSec worker.
    Fleet(Vec<crate::crowdsec::Change>),
    /// What the nft watch saw another process do to nfsentry's tables.
    Ruleset(Seen),
    Shutdown,
}

impl From<pipeline::Order> for Order {
    fn from(order: pipeline::Order) -> Order {
        match order {
            pipeline::Order::Block(order) => Order::Block(order),
            pipeline::Order::Release(order) => Order::Release(order),
            pipeline::Order::Renew(order) => Order::Renew(order),
        }
    }
}

/// What the responder starts with.
pub struct ResponderSetup {
    pub spec: RulesetSpec,
    pub prefer: Option<QueueMode>,
    pub store: BlockStore,
    /// Built by [`super::build`], in the order they run.
    pub actions: Vec<Box<dyn Action>>,
    /// With `[crowdsec]`: enforces pulled bans, reports our blocks.
    pub fleet: Option<Enforcer>,
    /// Whether the blocked sets of nfsentry's table hold the blocks (the `nft-set` action
    /// runs): the ruleset is then installed, and repaired, with them in it.
    pub sets_hold_blocks: bool,
    /// `daemon.keep_blocks_on_exit` with the blocked sets in use: a clean stop leaves them and
    /// their drop rules in force instead of removing the tables.
    pub keep_blocks_on_exit: bool,
    /// Where sources released by hand go, for the packet loop to stop dropping them.
    pub released: WakingSender<IpAddr>,
    /// Blocks deleted from the kernel's sets by hand while nfsentry was not running, already
    /// dropped from the store: the other actions release them at start.
    pub released_while_away: Vec<BlockRecord>,
    /// Where the time from detection to the element in the kernel's set is counted.
    pub block_latency: Arc<BlockLatency>,
}

/// Most block orders carried out as one burst.
const MAX_BURST: usize = 4096;
/// How often blocks are checked for expiry; a block outlives its timeout by at most this.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);
/// While the state directory refuses writes, they are tried again this often (each try may
/// rewrite the whole journal).
const PERSIST_RETRY: Duration = Duration::from_secs(2);

/// Starts the responder thread. It installs the ruleset, has every action take over the stored
/// blocks, then reports what it installed (or why it could not) on `ready` before taking orders.
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
        store,
        actions,
        fleet,
        sets_hold_blocks,
        keep_blocks_on_exit,
        released,
        released_while_away,
        block_latency,
    } = setup;
    let blocks = match sets_hold_blocks {
        true => repair::due_entries(&store, SystemTime::now()),
        false => Vec::new(),
    };
    let (mut firewall, installed) = match Firewall::install(spec, prefer, &blocks) {
        Ok(done) => done,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot install the nft ruleset: {}",
                with_causes(&e)
            )));
            return;
        }
    };
    let mut responder = Responder::init(store, actions, sets_hold_blocks, released);
    responder.release(&released_while_away);
    for record in &released_while_away {
        info!(
            "{}",
            report::released_line(
                record.source,
                "deleted from the blocked set by hand while nfsentry was not running"
            )
        );
    }
    responder.fleet = fleet;
    responder.block_latency = block_latency;
    let _ = ready.send(Ok(installed));

    loop {
        let first = match orders.recv_timeout(EXPIRY_CHECK) {
            Ok(order) => Some(order),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take whatever else queued up meanwhile: a burst costs one firewall batch and one disk
        // flush instead of one of each per source.
        let mut burst = Burst::default();
        let mut pulled = Vec::new();
        let mut changes = Vec::new();
        let mut shutdown = false;
        let pending = std::iter::from_fn(|| orders.try_recv().ok()).take(MAX_BURST);
        for order in first.into_iter().chain(pending) {
            match order {
                Order::Block(order) => burst.block(order),
                Order::Release(order) => burst.release(order),
                Order::Renew(order) => burst.renew(order),
                Order::ByHand(command) => {
                    // What came before it is carried out first: an unblock lifts the block
                    // ordered just before it, not the other way round.
                    for batch in std::mem::take(&mut burst).into_batches() {
                        responder.carry_out(batch);
                    }
                    responder.by_hand(command, &mut firewall);
                }
                Order::Fleet(changes) => pulled.extend(changes),
                Order::Ruleset(seen) => changes.push(seen),
                Order::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
        }
        for batch in burst.into_batches() {
            responder.carry_out(batch);
        }
        // After the burst, so that a repair carries the burst's blocks too.
        for seen in changes {
            responder.on_ruleset(seen, &mut firewall);
        }
        responder.enforce_pulled(pulled);
        if shutdown {
            break;
        }
        responder.release_expired(SystemTime::now());
        responder.retry(&mut firewall);
    }
    responder.fin();
    if responder.sets_hold_blocks && responder.store.unsaved() {
        firewall.leave_in_place(&format!(
            "{} blocks could not all be written to the state directory",
            responder.store.len()
        ));
    } else if keep_blocks_on_exit {
        firewall.keep_blocks(&repair::due_entries(&responder.store, SystemTime::now()));
    } else {
        firewall.remove();
    }
}

/// The actions and the store, kept in step: every block and release goes through every action
/// and into the journal.
struct Responder {
    store: BlockStore,
    actions: Vec<Box<dyn Action>>,
    fleet: Option<Enforcer>,
    /// See [`ResponderSetup::sets_hold_blocks`].
    sets_hold_blocks: bool,
    released: WakingSender<IpAddr>,
    /// Why the ruleset needs a repair that the kernel refused; tried again every tick.
    repair_due: Option<String>,
    /// The state directory refused the last write: said once, tried again at this time.
    persist_retry_at: Option<Instant>,
    /// From detection to the element in the kernel's set, for `nfsentry status`.
    block_latency: Arc<BlockLatency>,
    /// When elements were last deleted from the blocked sets: a block a queue reader put in
    /// before is added again.
    deletions: Deletions,
}

impl Responder {
    /// Lifts what expired while nfsentry was away, then has each action take up its resources
    /// and re-apply the blocks still due. An action that cannot start (tool missing, no netlink)
    /// is logged and left out; the others still run. Whether the state directory takes writes
    /// is said here, at start.
    fn init(
        store: BlockStore,
        actions: Vec<Box<dyn Action>>,
        sets_hold_blocks: bool,
        released: WakingSender<IpAddr>,
    ) -> Responder {
        let mut responder = Responder {
            store,
            actions: Vec::new(),
            fleet: None,
            sets_hold_blocks,
            released,
            repair_due: None,
            persist_retry_at: None,
            block_latency: Arc::default(),
            deletions: Deletions::default(),
        };
        let now = SystemTime::now();
        let expired = responder.take_expired(now);
        let due: Vec<&BlockRecord> = responder.store.live().collect();
        let mut ready = Vec::with_capacity(actions.len());
        for mut action in actions {
            match action.init(&due, now) {
                Ok(()) => ready.push(action),
                Err(e) => error!(
                    "action {} is unavailable and will not run: {e}",
                    action.name()
                ),
            }
        }
        if !due.is_empty() {
            info!("restored {} blocks from the state directory", due.len());
        }
        let names: Vec<&str> = ready.iter().map(|action| action.name()).collect();
        match names.is_empty() {
            true => warn!(
                "no blocking action could start: detections are logged and dropped inline only"
            ),
            false => info!("blocking actions, in order: {}", names.join(", ")),
        }
        responder.actions = ready;
        // Actions that held these blocks from the earlier run let them go now.
        responder.release(&expired);
        for record in &expired {
            info!("{}", report::released_line(record.source, EXPIRED));
        }
        // Says at start whether the state directory takes writes.
        responder.sync();
        responder
    }

    /// One batch of the pipeline's orders: sources given up to make room, new blocks, renewed
    /// blocks. Each line is written only when the order says it fits the pipeline's budget.
    fn carry_out(&mut self, batch: Batch) {
        let Batch {
            releases,
            blocks,
            renewals,
        } = batch;
        for order in releases
            .iter()
            .filter(|order| order.why == UNBLOCKED_BY_HAND)
        {
            self.unblocked_by_hand(order.source);
        }
        // A block whose time ran out here before the pipeline gave it up is gone already.
        let released: Vec<(BlockRecord, ReleaseOrder)> = releases
            .into_iter()
            .filter_map(|order| Some((self.store.remove(&order.source)?, order)))
            .collect();
        if !released.is_empty() {
            let records: Vec<BlockRecord> =
                released.iter().map(|(record, _)| record.clone()).collect();
            self.release(&records);
            for (record, order) in released.iter().filter(|(_, order)| order.log) {
                info!("{}", report::released_line(record.source, order.why));
            }
        }
        if !blocks.is_empty() {
            self.block(blocks);
        }
        if !renewals.is_empty() {
            self.renew(renewals);
        }
    }

    /// Blocks a burst of new sources through every action, then journals them. The nft-set
    /// action leaves out the elements a queue reader put into the sets itself and nothing took
    /// out since: adding them again would cost a second commit per block, and would undo an
    /// admin's `nft delete element` made in between, which releases the block instead.
    fn block(&mut self, burst: Vec<BlockOrder>) {
        let now = SystemTime::now();
        let records: Vec<&BlockRecord> = burst.iter().map(|order| &order.record).collect();
        let mut to_add: Vec<&BlockRecord> = Vec::with_capacity(burst.len());
        let mut deleted_by_hand: Vec<(IpAddr, Arc<str>)> = Vec::new();
        for order in &burst {
            let source = order.record.source;
            match order
                .in_set_since
                .map(|put_in| self.deletions.since(&source, put_in))
            {
                None | Some(Since::Deleted) => to_add.push(&order.record),
                Some(Since::Kept) => {}
                Some(Since::DeletedBy(by)) => deleted_by_hand.push((source, by)),
            }
        }
        let mut failed = false;
        // When the kernel acknowledged the elements in the blocked sets.
        let mut in_kernel_set = None;
        for action in &mut self.actions {
            let blocks = match action.name() == nft_set::ACTION_NAME {
                true if to_add.is_empty() => continue,
                true => &to_add,
                false => &records,
            };
            match action.block(blocks, now) {
                Ok(()) if action.name() == nft_set::ACTION_NAME => {
                    in_kernel_set = Some(Instant::now());
                }
                Ok(()) => {}
                Err(e) => {
                    failed = true;
                    match records.as_slice() {
                        [one] => error!("block of {} failed: {e}", one.source),
                        all => error!("block of {} sources failed: {e}", all.len()),
                    }
                }
            }
        }
        if let Some(acked) = in_kernel_set {
            for detected in burst.iter().filter_map(|order| order.detected_at) {
                self.block_latency
                    .record(acked.saturating_duration_since(detected));
            }
        }
        if let Some(fleet) = &self.fleet {
            fleet.blocked(&records);
        }
        // Recorded even when an action failed: the block is due, and the next start retries it.
        // "has been blocked" is a promise admins' log watchers act on, so a burst an action
        // failed has the error line above instead.
        for order in burst {
            let source = order.record.source;
            self.store.add(order.record, &order.history_line);
            if order.log && !failed {
                warn!("{}", report::blocked_line(source));
            }
        }
        self.sync();
        // The watch told of these deletes before the blocks were journaled, when they were
        // nobody's to release.
        for (source, by) in deleted_by_hand {
            self.release_by_hand(&[source], &by);
        }
    }

    /// Gives blocks made verified their new end in every action and in the journal.
    fn renew(&mut self, renewals: Vec<RenewOrder>) {
        let now = SystemTime::now();
        let mut records = Vec::with_capacity(renewals.len());
        for order in renewals {
            let Some(stored) = self.store.get(&order.source) else {
                // Its time ran out here a moment before the handshake: nothing left to renew.
                debug!("block of {} ended before it could be renewed", order.source);
                continue;
            };
            records.push(BlockRecord {
                expires: order.expires,
                verified: true,
                ..stored.clone()
            });
        }
        let due: Vec<&BlockRecord> = records.iter().collect();
        for action in &mut self.actions {
            if let Err(e) = action.renew(&due, now) {
                error!("renewing {} blocks failed: {e}", due.len());
            }
        }
        for record in records {
            self.store.renew(record);
        }
        self.sync();
    }

    /// Releases every block whose time is up, handing each action all of them at once: a
    /// spoofed flood with a block timeout makes thousands expire in the same second, and
    /// releasing them one by one (a file rewrite, or a whole ipfw rebuild, each) would stall new
    /// blocks behind them. Their lines come from the pipeline, which knows the same ends and
    /// shares one budget for every line.
    fn release_expired(&mut self, now: SystemTime) {
        let expired = self.take_expired(now);
        self.release(&expired);
    }

    /// Removes the blocks due at `now` from the store, in address order: the store hands them
    /// out in hash order, and file order, tool runs and log lines should not change from one run
    /// to the next.
    fn take_expired(&mut self, now: SystemTime) -> Vec<BlockRecord> {
        let mut expired = self.store.expired(now);
        expired.sort_unstable();
        expired
            .iter()
            .filter_map(|source| self.store.remove(source))
            .collect()
    }

    /// Releases `records` (already taken from the store) through every action; their lines are
    /// the caller's.
    fn release(&mut self, records: &[BlockRecord]) {
        if records.is_empty() {
            return;
        }
        let due: Vec<&BlockRecord> = records.iter().collect();
        for action in &mut self.actions {
            if let Err(e) = action.release(&due) {
                match due.as_slice() {
                    [one] => error!("release of {} failed: {e}", one.source),
                    all => error!("release of {} sources failed: {e}", all.len()),
                }
            }
        }
        self.deletions
            .of(records.iter().map(|record| record.source));
        if let Some(fleet) = &mut self.fleet {
            fleet.released(records);
        }
        self.sync();
    }

    /// Pulled bans, after the pipeline's orders of the same round.
    fn enforce_pulled(&mut self, changes: Vec<crate::crowdsec::Change>) {
        if changes.is_empty() {
            return;
        }
        // A pulled ban let go deletes the address's element unless nfsentry blocks it itself.
        let let_go: Vec<IpAddr> = changes
            .iter()
            .filter(|change| matches!(change, crate::crowdsec::Change::Release { .. }))
            .map(|change| change.net().addr())
            .collect();
        if let Some(fleet) = &mut self.fleet {
            fleet.apply(changes, &self.store, &mut self.actions);
        }
        self.deletions.of(let_go);
    }

    /// The hook for a manual unblock (`nfsentry unblock`): the fleet forgets our decision on
    /// `address`. Called from the release path for orders whose `why` is
    /// [`UNBLOCKED_BY_HAND`]; a control-socket handler may call it directly.
    pub fn unblocked_by_hand(&mut self, address: std::net::IpAddr) {
        if let Some(fleet) = &self.fleet {
            fleet.unblocked_by_hand(address);
        }
    }

    /// A clean stop: the journal is flushed and each action tears down.
    fn fin(&mut self) {
        self.sync();
        for action in &mut self.actions {
            if let Err(e) = action.fin() {
                error!("{e}");
            }
        }
    }

    /// Writes the store's changes. The first failure is said once, with what it means; while
    /// it lasts, writes are only tried every [`PERSIST_RETRY`], and the line that says they
    /// work again names what was lost meanwhile, if anything.
    fn sync(&mut self) {
        let now = Instant::now();
        if self.persist_retry_at.is_some_and(|at| now < at) {
            return;
        }
        match self.store.sync() {
            Ok(()) => {
                if self.persist_retry_at.take().is_some() {
                    let dropped = self.store.take_dropped_history_lines();
                    let lost = match dropped {
                        0 => String::new(),
                        n => format!(" ({n} history lines did not fit in memory and are lost)"),
                    };
                    info!(
                        "the state directory takes writes again: the blocks journal and the \
                         history file have caught up{lost}"
                    );
                }
            }
            Err(e) => {
                if self.persist_retry_at.is_none() {
                    error!(
                        "cannot persist blocks: {e}; they stay enforced in the kernel and in \
                         memory, and are written as soon as the state directory has room again"
                    );
                }
                self.persist_retry_at = Some(now + PERSIST_RETRY);
            }
        }
    }

    /// The timed retries: a repair the kernel refused, and writes the state directory refused.
    fn retry(&mut self, firewall: &mut impl repair::Reinstall) {
        self.deletions.forget_old(Instant::now());
        if let Some(why) = self.repair_due.take() {
            self.repair(firewall, &why);
        }
        if firewall.blocked_sets_pending() {
            firewall.fill_blocked_sets(&repair::due_entries(&self.store, SystemTime::now()));
        }
        if self.store.behind() {
            self.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::ActionError;
    use std::net::IpAddr;
    use std::sync::{Arc, Mutex};

    pub(super) type Calls = Arc<Mutex<Vec<(&'static str, Vec<IpAddr>)>>>;

    /// Shares with the test every call it gets, as (verb, addresses).
    struct Recorder {
        name: &'static str,
        calls: Calls,
        refuse_init: bool,
    }

    impl Recorder {
        fn note(&self, verb: &'static str, blocks: &[&BlockRecord]) {
            let sources = blocks.iter().map(|block| block.source).collect();
            self.calls.lock().unwrap().push((verb, sources));
        }
    }

    impl Action for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }
        fn check(&self) -> Vec<String> {
            Vec::new()
        }
        fn describe(&self) -> Vec<String> {
            Vec::new()
        }
        fn init(&mut self, due: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
            self.note("init", due);
            match self.refuse_init {
                true => Err(ActionError::Config {
                    action: "recorder",
                    detail: "refused".into(),
                }),
                false => Ok(()),
            }
        }
        fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
            self.note("block", blocks);
            Ok(())
        }
        fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
            self.note("release", blocks);
            Ok(())
        }
        fn renew(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
            self.note("renew", blocks);
            Ok(())
        }
    }

    pub(super) fn recorder(refuse_init: bool) -> (Box<dyn Action>, Calls) {
        named_recorder("recorder", refuse_init)
    }

    pub(super) fn named_recorder(
        name: &'static str,
        refuse_init: bool,
    ) -> (Box<dyn Action>, Calls) {
        let calls = Calls::default();
        let action = Recorder {
            name,
            calls: calls.clone(),
            refuse_init,
        };
        (Box::new(action), calls)
    }

    pub(super) fn record(addr: &str, expires: Option<u64>) -> BlockRecord {
        BlockRecord::example(addr, expires)
    }

    /// A channel for sources released by hand that nobody reads.
    fn sink() -> WakingSender<IpAddr> {
        crate::wake::channel().unwrap().0
    }

    fn block_order(record: BlockRecord, history_line: &str) -> BlockOrder {
        BlockOrder {
            record,
            history_line: history_line.to_owned(),
            log: true,
            detected_at: None,
            in_set_since: None,
        }
    }

    fn addresses(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    pub(super) fn store_with(dir: &std::path::Path, blocks: &[(&str, Option<u64>)]) -> BlockStore {
        let (mut store, _) = BlockStore::open(dir).unwrap();
        for (address, expires) in blocks {
            store.add(record(address, *expires), "history");
        }
        store.sync().unwrap();
        store
    }

    #[test]
    fn expiry_hands_each_action_all_due_blocks_in_one_call() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let now_seconds = crate::store::unix_seconds(now);
        let store = store_with(
            dir.path(),
            &[
                ("198.51.100.9", Some(now_seconds + 3600)),
                ("198.51.100.8", None),
            ],
        );
        let (first, first_calls) = recorder(false);
        let (second, second_calls) = recorder(false);
        let mut responder = Responder::init(store, vec![first, second], true, sink());
        for (address, expires) in [
            ("198.51.100.3", Some(now_seconds - 5)),
            ("198.51.100.1", Some(now_seconds)),
            ("198.51.100.2", Some(now_seconds - 60)),
        ] {
            responder
                .store
                .add(record(address, expires), "history line");
        }
        first_calls.lock().unwrap().clear();
        second_calls.lock().unwrap().clear();

        responder.release_expired(now);
        let due = addresses(&["198.51.100.1", "198.51.100.2", "198.51.100.3"]);
        assert_eq!(*first_calls.lock().unwrap(), vec![("release", due.clone())]);
        assert_eq!(*second_calls.lock().unwrap(), vec![("release", due)]);
        let mut left: Vec<IpAddr> = responder.store.live().map(|block| block.source).collect();
        left.sort_unstable();
        assert_eq!(left, addresses(&["198.51.100.8", "198.51.100.9"]));

        // Nothing further is due: no action is called at all.
        responder.release_expired(now);
        assert_eq!(first_calls.lock().unwrap().len(), 1);
    }

    #[test]
    fn init_re_applies_what_is_due_and_releases_what_expired_while_away() {
        let dir = tempfile::tempdir().unwrap();
        let now_seconds = crate::store::unix_seconds(SystemTime::now());
        let store = store_with(
            dir.path(),
            &[
                ("198.51.100.1", None),
                ("198.51.100.2", Some(now_seconds - 10)),
                ("198.51.100.3", Some(now_seconds + 3600)),
            ],
        );
        let (working, calls) = recorder(false);
        let (broken, broken_calls) = recorder(true);
        let responder = Responder::init(store, vec![broken, working], true, sink());

        let mut calls = calls.lock().unwrap().clone();
        if let Some((_, sources)) = calls.first_mut() {
            sources.sort_unstable();
        }
        assert_eq!(
            calls,
            vec![
                ("init", addresses(&["198.51.100.1", "198.51.100.3"])),
                ("release", addresses(&["198.51.100.2"])),
            ]
        );
        // The action that could not start is left out: it is not asked to release.
        assert_eq!(broken_calls.lock().unwrap().len(), 1);
        assert_eq!(responder.actions.len(), 1);
        assert_eq!(responder.store.len(), 2);
    }

    #[test]
    fn a_burst_is_one_call_per_action_and_is_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &[]);
        let (action, calls) = recorder(false);
        let mut responder = Responder::init(store, vec![action], true, sink());
        calls.lock().unwrap().clear();
        responder.block(vec![
            block_order(record("198.51.100.1", None), "h1"),
            block_order(record("2001:db8::1", None), "h2"),
        ]);
        assert_eq!(
            *calls.lock().unwrap(),
            vec![("block", addresses(&["198.51.100.1", "2001:db8::1"]))]
        );
        drop(responder);
        let (reopened, _) = BlockStore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 2);
    }

    #[test]
    fn a_batch_releases_given_up_blocks_then_blocks_then_renews_through_every_action() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(
            dir.path(),
            &[
                ("198.51.100.1", Some(4_000_000_000)),
                ("198.51.100.2", Some(4_000_000_000)),
            ],
        );
        let (action, calls) = recorder(false);
        let mut responder = Responder::init(store, vec![action], true, sink());
        calls.lock().unwrap().clear();
        let source = |text: &str| -> IpAddr { text.parse().unwrap() };
        responder.carry_out(Batch {
            releases: vec![
                ReleaseOrder {
                    source: source("198.51.100.1"),
                    why: pipeline::EVICTED,
                    log: false,
                },
                // Lifted here already: nothing to release.
                ReleaseOrder {
                    source: source("198.51.100.9"),
                    why: pipeline::EVICTED,
                    log: true,
                },
            ],
            blocks: vec![block_order(record("198.51.100.3", None), "h3")],
            renewals: vec![
                RenewOrder {
                    source: source("198.51.100.2"),
                    expires: None,
                },
                RenewOrder {
                    source: source("198.51.100.8"),
                    expires: None,
                },
            ],
        });
        assert_eq!(
            *calls.lock().unwrap(),
            vec![
                ("release", addresses(&["198.51.100.1"])),
                ("block", addresses(&["198.51.100.3"])),
                ("renew", addresses(&["198.51.100.2"])),
            ]
        );
        let renewed = responder.store.get(&source("198.51.100.2")).unwrap();
        assert!(renewed.verified);
        assert_eq!(renewed.expires, None);
        assert!(responder.store.get(&source("198.51.100.1")).is_none());
        drop(responder);
        let (reopened, _) = BlockStore::open(dir.path()).unwrap();
        let mut live: Vec<(IpAddr, bool)> =
            reopened.live().map(|r| (r.source, r.verified)).collect();
        live.sort_unstable();
        assert_eq!(
            live,
            [
                (source("198.51.100.2"), true),
                (source("198.51.100.3"), false)
            ]
        );
        let history = std::fs::read_to_string(dir.path().join("history")).unwrap();
        assert_eq!(
            history.lines().filter(|line| *line == "h3").count(),
            1,
            "one history line for the new block, none for the release or the renewal: {history}"
        );
    }

    /// A block order as a queue reader hands it over once its own commit, sent at `put_in`,
    /// put the element into the kernel's set: it has been timed already.
    pub(super) fn put_in_by_a_reader(address: &str, put_in: Instant) -> BlockOrder {
        BlockOrder {
            in_set_since: Some(put_in),
            ..block_order(record(address, None), &format!("h {address}"))
        }
    }

    /// The release of `address`'s block, evicted from a full table.
    fn evicted(address: &str) -> Batch {
        Batch {
            releases: vec![ReleaseOrder {
                source: address.parse().unwrap(),
                why: pipeline::EVICTED,
                log: false,
            }],
            ..Batch::default()
        }
    }

    #[test]
    fn an_element_a_queue_reader_put_in_is_not_added_again_unless_deleted_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &[]);
        let (nft, nft_calls) = named_recorder(nft_set::ACTION_NAME, false);
        let (other, other_calls) = recorder(false);
        let mut responder = Responder::init(store, vec![nft, other], true, sink());
        nft_calls.lock().unwrap().clear();
        other_calls.lock().unwrap().clear();
        let latency = Arc::new(BlockLatency::default());
        responder.block_latency = latency.clone();
        let timed = || latency.snapshot().iter().sum::<u64>();

        // Only the other actions see an element the reader put in; the reader timed it.
        let put_in = Instant::now();
        responder.block(vec![put_in_by_a_reader("198.51.100.1", put_in)]);
        assert_eq!(
            *nft_calls.lock().unwrap(),
            [],
            "the element was added a second time"
        );
        assert_eq!(
            *other_calls.lock().unwrap(),
            [("block", addresses(&["198.51.100.1"]))]
        );
        assert_eq!(timed(), 0);

        // In a burst with a block the reader could not put in, only that one is added and
        // timed.
        let detected = BlockOrder {
            detected_at: Some(Instant::now()),
            ..block_order(record("198.51.100.2", None), "h2")
        };
        responder.block(vec![
            put_in_by_a_reader("198.51.100.3", Instant::now()),
            detected,
        ]);
        assert_eq!(
            nft_calls.lock().unwrap().pop(),
            Some(("block", addresses(&["198.51.100.2"])))
        );
        assert_eq!(
            other_calls.lock().unwrap().pop(),
            Some(("block", addresses(&["198.51.100.3", "198.51.100.2"])))
        );
        assert_eq!(timed(), 1);

        // The source's earlier block, given up after the reader put the new one in, took the
        // element out with it: it goes back in. One put in after that release stays as it is.
        let before_release = Instant::now();
        responder.carry_out(evicted("198.51.100.1"));
        let after_release = Instant::now();
        responder.block(vec![put_in_by_a_reader("198.51.100.1", before_release)]);
        assert_eq!(
            nft_calls.lock().unwrap().pop(),
            Some(("block", addresses(&["198.51.100.1"])))
        );
        responder.carry_out(evicted("198.51.100.1"));
        nft_calls.lock().unwrap().clear();
        responder.block(vec![put_in_by_a_reader(
            "198.51.100.1",
            after_release + Duration::from_secs(1),
        )]);
        assert_eq!(*nft_calls.lock().unwrap(), []);

        // A repair rebuilt the sets from the journal, which lacked the block: it goes back in.
        let before_repair = Instant::now();
        responder.repair(&mut NoFirewall, "a test");
        responder.block(vec![put_in_by_a_reader("198.51.100.4", before_repair)]);
        assert_eq!(
            nft_calls.lock().unwrap().pop(),
            Some(("block", addresses(&["198.51.100.4"])))
        );

        // Every block was journaled, however it reached the kernel.
        drop(responder);
        let (reopened, _) = BlockStore::open(dir.path()).unwrap();
        let mut live: Vec<IpAddr> = reopened.live().map(|block| block.source).collect();
        live.sort_unstable();
        assert_eq!(
            live,
            addresses(&[
                "198.51.100.1",
                "198.51.100.2",
                "198.51.100.3",
                "198.51.100.4"
            ])
        );
    }

    /// A firewall whose reinstall always works and changes nothing.
    struct NoFirewall;

    impl repair::Reinstall for NoFirewall {
        fn reinstall(
            &mut self,
            _blocks: &[(IpAddr, Option<Duration>)],
        ) -> Result<(), crate::nft::netlink::NftError> {
            Ok(())
        }
    }
}
