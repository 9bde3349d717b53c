//! The fleet in the running daemon: joins the CrowdSec worker ([`crate::crowdsec`]) to the
//! responder. Two halves, one per thread:
//!
//! - [`Fleet`], on the daemon's side: starts the worker, whose [`Change`]s become
//!   [`Order::Fleet`] on the responder's channel, and reads its [`Status`] for the status line.
//!   Its [`FleetView`] gives the control socket the LAPI's state for `nfsentry status` and the
//!   pulled bans for `nfsentry list`.
//! - [`Enforcer`], owned by the responder: puts pulled bans into the kernel (single addresses
//!   into `blocked_v4`/`blocked_v6` with the decision's remaining time as element timeout,
//!   networks into the `blocked_ranges_*` interval sets), releases them, and reports the
//!   responder's own blocks and manual unblocks to the worker.
//!
//! The rules it keeps: a pulled ban is never pushed back; it runs no action but the nft sets
//! unless `[crowdsec] actions` names one; an address nfsentry blocked itself stays blocked for
//! as long as its own block says, whatever the fleet does, and the other way round.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use log::{debug, error, info, warn};

use crate::config::{self, ActionKind};
use crate::control::protocol::{BlockEntry, CrowdsecStatus, PulledDecisions, PushCounts};
use crate::crowdsec::{
    self, Change, Crowdsec, HeldBan, LocalBlock, Reporter, Settings, Status, Watch,
};
use crate::nft::{Nft, NftError};
use crate::respond::responder::Order;
use crate::respond::Action;
use crate::store::{unix_seconds, BlockRecord, BlockStore};

/// The `why` of a release order made by hand (`nfsentry unblock`): the responder then has our
/// decision on the address deleted on the LAPI too.
pub const UNBLOCKED_BY_HAND: &str = "unblocked by hand";
/// The scan type word a pulled ban's record carries for the actions `[crowdsec] actions` runs.
const PULLED_KIND: &str = "crowdsec";
/// How long stopping waits for a LAPI call in progress.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// The running worker, as the daemon holds it. Cheap to clone, and shareable between threads.
/// The lock is held only to read counters.
#[derive(Clone)]
pub struct Fleet {
    crowdsec: Arc<Mutex<Crowdsec>>,
    /// What [`FleetView`] reports besides the worker's picture.
    settings: ViewSettings,
}

#[derive(Debug, Clone)]
struct ViewSettings {
    url: String,
    push: bool,
    pull: bool,
    /// The actions a pulled address goes through: the nft sets, and `[crowdsec] actions`.
    address_actions: Vec<String>,
}

impl Fleet {
    /// Starts the worker for `section`; its changes go to the responder through `orders`.
    pub fn start(
        section: &config::Crowdsec,
        orders: mpsc::Sender<Order>,
    ) -> std::io::Result<Fleet> {
        let sink = move |changes: Vec<Change>| {
            if orders.send(Order::Fleet(changes)).is_err() {
                debug!("crowdsec: the responder is gone; pulled changes dropped");
            }
        };
        let crowdsec = crowdsec::spawn(Settings::new(section), sink)?;
        info!("crowdsec: {}", section.summary());
        let mut address_actions = vec![ActionKind::NftSet.as_str().to_owned()];
        for kind in &section.actions {
            if *kind != ActionKind::NftSet {
                address_actions.push(kind.as_str().to_owned());
            }
        }
        Ok(Fleet {
            crowdsec: Arc::new(Mutex::new(crowdsec)),
            settings: ViewSettings {
                url: section.url.to_string(),
                push: section.push.is_some(),
                pull: section.pull.is_some(),
                address_actions,
            },
        })
    }

    /// A reader for the control socket. It does not keep the worker running: stopping the
    /// fleet stops it, and the view then shows the last picture.
    pub fn view(&self) -> FleetView {
        FleetView {
            watch: self.worker().watch(),
            settings: self.settings.clone(),
        }
    }

    /// Where the responder reports its blocks and manual unblocks.
    pub fn reporter(&self) -> Reporter {
        self.worker().reporter()
    }

    /// The LAPI link, pushes and pulled decisions now; holds no secret.
    pub fn status(&self) -> Status {
        self.worker().status()
    }

    /// [`Self::status`] as one line.
    pub fn summary(&self) -> String {
        self.status().summary(SystemTime::now())
    }

    /// The pulled bans held now, for `nfsentry list`.
    pub fn held(&self) -> Vec<HeldBan> {
        self.worker().held()
    }

    fn worker(&self) -> MutexGuard<'_, Crowdsec> {
        // The worker's handle has no state a panic could leave half-changed.
        self.crowdsec.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the worker; waits briefly when this is the last handle.
    pub fn stop(self) {
        match Arc::try_unwrap(self.crowdsec) {
            Ok(crowdsec) => {
                let crowdsec = crowdsec
                    .into_inner()
                    .unwrap_or_else(PoisonError::into_inner);
                if !crowdsec.stop(STOP_WAIT) {
                    warn!("crowdsec: the worker did not stop within {STOP_WAIT:?}");
                }
            }
            // Another handle (the control socket) lives on; dropping ours asks nothing.
            Err(shared) => drop(shared),
        }
    }
}

/// The fleet as `nfsentry status` and `nfsentry list` show it: read from the worker's
/// published picture, never waiting for the LAPI or for the packet path. Cheap to clone.
#[derive(Clone)]
pub struct FleetView {
    watch: Watch,
    settings: ViewSettings,
}

impl FleetView {
    /// The `crowdsec` section of `nfsentry status`.
    pub fn status(&self) -> CrowdsecStatus {
        crowdsec_status(&self.watch.status(), &self.settings)
    }

    /// The pulled bans held now, as `nfsentry list` entries, after this host's own blocks.
    pub fn entries(&self, now: SystemTime) -> Vec<BlockEntry> {
        let held = self.watch.held();
        pulled_entries(&held, &self.settings, now, Instant::now())
    }
}

fn crowdsec_status(status: &Status, settings: &ViewSettings) -> CrowdsecStatus {
    let unix = |at: Option<SystemTime>| at.map(unix_seconds);
    let counts = &status.decisions;
    let wide = |count: usize| u64::try_from(count).unwrap_or(u64::MAX);
    CrowdsecStatus {
        url: settings.url.clone(),
        push: settings.push,
        pull: settings.pull,
        connected: status.connected,
        since: unix(status.connected_since.or(status.unreachable_since)),
        outages: status.outages,
        last_error: status.last_error.clone(),
        last_error_at: unix(status.last_error_at),
        logged_in: status.logged_in,
        last_pull: unix(status.last_pull),
        last_full_pull: unix(status.last_full_pull),
        full_pulls: status.full_pulls,
        decisions: PulledDecisions {
            ip: wide(counts.addresses),
            range: wide(counts.ranges),
            ignored_type: wide(counts.ignored_type),
            ignored_scope: wide(counts.ignored_scope),
            malformed: counts.malformed,
            refused_full: counts.refused_full,
        },
        pushes: PushCounts {
            pending: wide(status.pushes_pending),
            sent: status.alerts_pushed,
            failed: status.pushes_failed,
            dropped: status.pushes_dropped,
            expired: status.pushes_expired,
            deletions: status.deletions_done,
        },
    }
}

/// `held` as list entries; `now` and `clock` are the same moment on the wall and monotonic
/// clocks, to date when each ban began to be enforced here.
fn pulled_entries(
    held: &[HeldBan],
    settings: &ViewSettings,
    now: SystemTime,
    clock: Instant,
) -> Vec<BlockEntry> {
    held.iter()
        .map(|ban| {
            let single = ban.net.prefix_len() == ban.net.max_prefix_len();
            let since = now
                .checked_sub(clock.saturating_duration_since(ban.since))
                .unwrap_or(now);
            BlockEntry {
                address: match single {
                    true => ban.net.addr().to_string(),
                    false => ban.net.to_string(),
                },
                scope: match single {
                    true => crowdsec::wire::SCOPE_IP,
                    false => crowdsec::wire::SCOPE_RANGE,
                }
                .to_owned(),
                pulled: true,
                kind: ban.scenario.clone(),
                protocol: String::new(),
                port: 0,
                since: unix_seconds(since),
                // A ban with less than a second left still holds.
                left_secs: Some(ban.remaining.as_secs().max(1)),
                verified: false,
                origin: ban.origin.clone(),
                actions: match single {
                    true => settings.address_actions.clone(),
                    false => vec![ActionKind::NftSet.as_str().to_owned()],
                },
            }
        })
        .collect()
}

/// A pulled ban on one address, as the firewall has it.
#[derive(Debug, Clone, Copy)]
struct HeldAddress {
    /// None: until released.
    ends: Option<Instant>,
    /// `[crowdsec] actions` blocked it and must release it.
    acted: bool,
}

impl HeldAddress {
    fn remaining(&self, now: Instant) -> Option<Duration> {
        self.ends.map(|ends| ends.saturating_duration_since(now))
    }
}

/// The responder's half: pulled bans into the kernel, local blocks out to the worker.
pub struct Enforcer {
    /// nfsentry's table: the range sets.
    table: String,
    /// The table of the blocked sets single addresses go into: the admin's with
    /// `respond.blocked_table`, else nfsentry's.
    sets_table: String,
    /// Opened on the responder's thread at first use.
    nft: Option<Nft>,
    reporter: Option<Reporter>,
    /// Actions besides the nft sets that pulled addresses go through.
    actions: Vec<ActionKind>,
    addresses: HashMap<IpAddr, HeldAddress>,
    ranges: HashSet<IpNet>,
    /// What the range sets hold now.
    installed_ranges: Vec<IpNet>,
}

impl Enforcer {
    /// `reporter` is None when push is off. `table` is nfsentry's, `sets_table` the one whose
    /// blocked sets hold the blocks (the same unless `respond.blocked_table` is set).
    pub fn new(
        table: &str,
        sets_table: &str,
        section: &config::Crowdsec,
        reporter: Option<Reporter>,
    ) -> Enforcer {
        Enforcer {
            table: table.to_owned(),
            sets_table: sets_table.to_owned(),
            nft: None,
            reporter: section.push.as_ref().and(reporter),
            actions: section.actions.clone(),
            addresses: HashMap::new(),
            ranges: HashSet::new(),
            installed_ranges: Vec::new(),
        }
    }

    fn nft(&mut self) -> Result<&mut Nft, NftError> {
        match &mut self.nft {
            Some(nft) => Ok(nft),
            empty => Ok(empty.insert(Nft::open()?)),
        }
    }

    /// Whether the fleet bans `address` now.
    pub fn holds(&self, address: &IpAddr) -> bool {
        self.addresses.contains_key(address)
    }

    /// Carries out one batch of the worker's changes. `store` says which addresses nfsentry
    /// blocked itself; `actions` are the responder's, of which only those `[crowdsec] actions`
    /// names run.
    pub fn apply(
        &mut self,
        changes: Vec<Change>,
        store: &BlockStore,
        actions: &mut [Box<dyn Action>],
    ) {
        let now = Instant::now();
        let wall = SystemTime::now();
        // (address, element timeout): added fresh, or present already and given a new one.
        let mut fresh: Vec<(IpAddr, Option<Duration>)> = Vec::new();
        let mut retimed: Vec<(IpAddr, Option<Duration>)> = Vec::new();
        let mut gone: Vec<IpAddr> = Vec::new();
        let mut act_block: Vec<BlockRecord> = Vec::new();
        let mut act_release: Vec<BlockRecord> = Vec::new();
        let ranges_before = self.ranges.len();
        let mut ranges_changed = false;
        for change in changes {
            let single = match change.net() {
                IpNet::V4(net) if net.prefix_len() == 32 => Some(IpAddr::V4(net.addr())),
                IpNet::V6(net) if net.prefix_len() == 128 => Some(IpAddr::V6(net.addr())),
                _ => None,
            };
            match (change, single) {
                (Change::Enforce { timeout, .. }, Some(address)) => {
                    let local = store.get(&address).map(|block| block.remaining(wall));
                    let element = match local {
                        // Blocked here for good: the fleet cannot shorten that.
                        Some(None) => None,
                        Some(Some(left)) => timeout.map(|fleet| fleet.max(left)),
                        None => timeout,
                    };
                    let previous = self.addresses.get(&address).copied();
                    // The other actions see a pulled address once, unless it is ours anyway.
                    let acted = match previous {
                        Some(held) => held.acted,
                        None => !self.actions.is_empty() && local.is_none(),
                    };
                    if previous.is_none() && acted {
                        act_block.push(pulled_record(address, timeout, wall));
                    }
                    self.addresses.insert(
                        address,
                        HeldAddress {
                            ends: timeout.map(|timeout| now + timeout),
                            acted,
                        },
                    );
                    if previous.is_some() || local.is_some() {
                        retimed.push((address, element));
                    } else {
                        fresh.push((address, element));
                    }
                }
                (Change::Release { reason, .. }, Some(address)) => {
                    let Some(held) = self.addresses.remove(&address) else {
                        continue;
                    };
                    debug!("crowdsec: releasing {address} ({})", reason.as_str());
                    match store.get(&address) {
                        // Our own block stays, for its own time.
                        Some(block) => retimed.push((address, block.remaining(wall))),
                        None => gone.push(address),
                    }
                    if held.acted {
                        act_release.push(pulled_record(address, None, wall));
                    }
                }
                (Change::Enforce { net, .. }, None) => {
                    ranges_changed |= self.ranges.insert(net);
                }
                (Change::Release { net, .. }, None) => {
                    ranges_changed |= self.ranges.remove(&net);
                }
            }
        }
        let table = self.sets_table.clone();
        let result = self.nft().and_then(|nft| {
            let retimed_addresses: Vec<IpAddr> = retimed.iter().map(|(a, _)| *a).collect();
            // Re-adding a present element keeps its old timeout on kernels before 6.10.
            nft.release_many(&table, &retimed_addresses)?;
            nft.release_many(&table, &gone)?;
            fresh.extend(retimed.iter().copied());
            nft.block_many(&table, &fresh)
        });
        if let Err(e) = result {
            error!(
                "crowdsec: enforcing {} pulled bans and releasing {} failed: {e}",
                fresh.len(),
                gone.len()
            );
        }
        if ranges_changed {
            self.sync_ranges(ranges_before);
        }
        self.run_actions(actions, &act_block, &act_release, wall);
    }

    /// Makes the range sets hold the networks held now.
    fn sync_ranges(&mut self, before: usize) {
        let mut wanted: Vec<IpNet> = self.ranges.iter().copied().collect();
        wanted.sort_unstable();
        let table = self.table.clone();
        let installed = std::mem::take(&mut self.installed_ranges);
        match self
            .nft()
            .and_then(|nft| nft.replace_ranges(&table, &installed, &wanted))
        {
            Ok(()) => {
                debug!(
                    "crowdsec: {} banned networks in the range sets (were {before})",
                    wanted.len()
                );
                self.installed_ranges = wanted;
            }
            Err(e) => {
                error!("crowdsec: updating the banned networks failed: {e}");
                self.installed_ranges = installed;
            }
        }
    }

    fn run_actions(
        &self,
        actions: &mut [Box<dyn Action>],
        block: &[BlockRecord],
        release: &[BlockRecord],
        now: SystemTime,
    ) {
        if block.is_empty() && release.is_empty() {
            return;
        }
        let block: Vec<&BlockRecord> = block.iter().collect();
        let release: Vec<&BlockRecord> = release.iter().collect();
        for action in actions.iter_mut().filter(|action| {
            self.actions
                .iter()
                .any(|kind| kind.as_str() == action.name())
        }) {
            if !release.is_empty() {
                if let Err(e) = action.release(&release) {
                    error!(
                        "crowdsec: releasing {} pulled bans failed: {e}",
                        release.len()
                    );
                }
            }
            if !block.is_empty() {
                if let Err(e) = action.block(&block, now) {
                    error!(
                        "crowdsec: enforcing {} pulled bans failed: {e}",
                        block.len()
                    );
                }
            }
        }
    }

    /// The responder blocked these itself: the fleet hears of them. Addresses the fleet bans
    /// already are not reported back.
    pub fn blocked(&self, records: &[&BlockRecord]) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        for record in records {
            if !self.holds(&record.source) {
                reporter.blocked(LocalBlock::new((*record).clone()));
            }
        }
    }

    /// The responder released these blocks of its own, which took them out of the address
    /// sets: the ones the fleet still bans go back in, for the fleet's time.
    pub fn released(&mut self, records: &[BlockRecord]) {
        let now = Instant::now();
        let back: Vec<(IpAddr, Option<Duration>)> = records
            .iter()
            .filter_map(|record| {
                let held = self.addresses.get(&record.source)?;
                let left = held.remaining(now);
                (left != Some(Duration::ZERO)).then_some((record.source, left))
            })
            .collect();
        if back.is_empty() {
            return;
        }
        let table = self.sets_table.clone();
        if let Err(e) = self.nft().and_then(|nft| nft.block_many(&table, &back)) {
            error!(
                "crowdsec: {} addresses the fleet still bans could not be put back: {e}",
                back.len()
            );
        }
    }

    /// The ruleset was reinstalled (a repair after another process damaged it) with nfsentry's
    /// own blocks only: the pulled bans go back in, for what is left of them.
    pub fn reinstalled(&mut self, store: &BlockStore) {
        let now = Instant::now();
        let back: Vec<(IpAddr, Option<Duration>)> = self
            .addresses
            .iter()
            .filter(|(address, _)| store.get(address).is_none())
            .map(|(address, held)| (*address, held.remaining(now)))
            .filter(|(_, left)| *left != Some(Duration::ZERO))
            .collect();
        let table = self.sets_table.clone();
        if let Err(e) = self.nft().and_then(|nft| nft.block_many(&table, &back)) {
            error!(
                "crowdsec: {} pulled bans could not be put back after the repair: {e}",
                back.len()
            );
        }
        // The range sets were made afresh, empty.
        self.installed_ranges.clear();
        let held = self.ranges.len();
        if held > 0 {
            self.sync_ranges(held);
        }
    }

    /// `nfsentry unblock ADDRESS`: our decision on it is deleted on the LAPI. A ban from
    /// elsewhere in the fleet on the same address stays.
    pub fn unblocked_by_hand(&self, address: IpAddr) {
        if let Some(reporter) = &self.reporter {
            reporter.unblocked(address);
        }
    }
}

/// The block record a pulled ban gives the actions `[crowdsec] actions` names.
fn pulled_record(address: IpAddr, timeout: Option<Duration>, now: SystemTime) -> BlockRecord {
    let added = unix_seconds(now);
    BlockRecord {
        source: address,
        added,
        expires: timeout.map(|timeout| added + timeout.as_secs().max(1)),
        protocol: String::new(),
        port: 0,
        kind: PULLED_KIND.to_owned(),
        verified: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ViewSettings {
        ViewSettings {
            url: "http://127.0.0.1:8080/".into(),
            push: true,
            pull: true,
            address_actions: vec!["nft-set".into(), "route".into()],
        }
    }

    fn ban(net: &str, remaining: u64, since: Instant) -> HeldBan {
        HeldBan {
            net: net.parse().unwrap(),
            remaining: Duration::from_millis(remaining),
            origin: "cscli".into(),
            scenario: "manual 'ban' from 'lapi'".into(),
            decisions: 1,
            since,
        }
    }

    #[test]
    fn pulled_bans_become_list_entries_with_their_scope_and_origin() {
        let clock = Instant::now();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let held = [
            ban("192.0.2.77/32", 7_200_000, clock - Duration::from_secs(60)),
            ban("2001:db8::/48", 400, clock),
        ];
        let entries = pulled_entries(&held, &settings(), now, clock);
        assert_eq!(entries[0].address, "192.0.2.77");
        assert_eq!(entries[0].scope, "Ip");
        assert_eq!(entries[0].origin, "cscli");
        assert_eq!(entries[0].since, 9_940);
        assert_eq!(entries[0].left_secs, Some(7_200));
        assert_eq!(entries[0].actions, ["nft-set", "route"]);
        assert!(entries[0].pulled && !entries[0].verified);
        assert_eq!(entries[1].address, "2001:db8::/48");
        assert_eq!(entries[1].scope, "Range");
        // Less than a second left still holds; a network goes into the range sets only.
        assert_eq!(entries[1].left_secs, Some(1));
        assert_eq!(entries[1].actions, ["nft-set"]);
    }

    #[test]
    fn the_status_section_carries_the_worker_counts_and_no_secret() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(5_000);
        let status = Status {
            connected: false,
            unreachable_since: Some(at),
            outages: 2,
            pushes_pending: 4,
            alerts_pushed: 9,
            pushes_dropped: 1,
            last_pull: Some(at),
            last_error: Some("cannot reach the LAPI: connection refused".into()),
            last_error_at: Some(at),
            decisions: crowdsec::TableCounts {
                addresses: 2,
                ranges: 1,
                ..crowdsec::TableCounts::default()
            },
            ..Status::default()
        };
        let report = crowdsec_status(&status, &settings());
        assert!(!report.connected);
        assert_eq!(report.since, Some(5_000));
        assert_eq!(report.outages, 2);
        assert_eq!((report.decisions.ip, report.decisions.range), (2, 1));
        assert_eq!(report.pushes.pending, 4);
        assert_eq!(report.pushes.sent, 9);
        assert_eq!(report.pushes.dropped, 1);
        assert_eq!(report.last_pull, Some(5_000));
        assert_eq!(report.url, "http://127.0.0.1:8080/");
    }
}
