//! The responder's answer to what the nft watch saw: [`crate::heal`] judges another process's
//! change, and this carries the judgement out. Damage is repaired by reinstalling the whole
//! ruleset with every block still due, in one transaction; a release by hand is released through
//! every action, journaled (so the next start does not bring it back) and passed to the packet
//! loop. It does not read the kernel: the watch does.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, warn};

use super::Responder;
use crate::error_text::with_causes;
use crate::firewall::Firewall;
use crate::heal::{self, Held};
use crate::nft::netlink::NftError;
use crate::nft::watch::Seen;
use crate::report;
use crate::store::{BlockRecord, BlockStore};

/// What a repair asks of the firewall: [`Firewall`] in the daemon, a recorder in the tests.
pub(super) trait Reinstall {
    fn reinstall(&mut self, blocks: &[(IpAddr, Option<Duration>)]) -> Result<(), NftError>;

    /// With `respond.blocked_table`: whether the admin's sets still lack the blocks.
    fn blocked_sets_pending(&self) -> bool {
        false
    }

    /// Tries again to put the blocks into the admin's sets.
    fn fill_blocked_sets(&mut self, _blocks: &[(IpAddr, Option<Duration>)]) {}
}

impl Reinstall for Firewall {
    fn reinstall(&mut self, blocks: &[(IpAddr, Option<Duration>)]) -> Result<(), NftError> {
        self.repair(blocks).map(drop)
    }

    fn blocked_sets_pending(&self) -> bool {
        self.admin_sets_pending()
    }

    fn fill_blocked_sets(&mut self, blocks: &[(IpAddr, Option<Duration>)]) {
        self.fill_admin_sets(blocks);
    }
}

/// The blocks still due at `now`, each with its time left, for the blocked sets.
pub(super) fn due_entries(store: &BlockStore, now: SystemTime) -> Vec<Held> {
    let mut entries: Vec<Held> = store
        .live()
        .filter(|block| !block.is_expired(now))
        .map(|block| (block.source, block.remaining(now)))
        .collect();
    entries.sort_unstable();
    entries
}

impl Responder {
    /// Acts on one thing the watch saw.
    pub(super) fn on_ruleset(&mut self, seen: Seen, firewall: &mut impl Reinstall) {
        let change = match seen {
            Seen::Lost => {
                error!(
                    "nftables change notifications were lost (the watch fell behind): \
                     reinstalling the ruleset, since what happened meanwhile is unknown"
                );
                self.repair(firewall, "notifications were lost");
                return;
            }
            Seen::Changed(change) => change,
        };
        let held = match self.sets_hold_blocks {
            true => due_entries(&self.store, SystemTime::now()),
            false => Vec::new(),
        };
        let judgement = heal::judge(&change, &held);
        let by = change.by();
        if !judgement.released_by_hand.is_empty() {
            self.release_by_hand(&judgement.released_by_hand, &by);
        }
        if judgement.repair.is_empty() {
            // Elements a queue reader put in, whose block orders are still on their way here.
            if self.sets_hold_blocks && !change.removed.is_empty() {
                let held: HashSet<IpAddr> = held
                    .iter()
                    .map(|(source, _)| source.to_canonical())
                    .collect();
                let not_held = change
                    .removed
                    .iter()
                    .copied()
                    .filter(|removed| !held.contains(&removed.to_canonical()));
                self.deletions.by_hand(not_held, &by);
            }
            if judgement.released_by_hand.is_empty() {
                debug!("{by} changed nfsentry's tables without taking anything away");
            }
            return;
        }
        let what = judgement.repair.join(", ");
        error!("nft ruleset damaged by {by}: {what}; reinstalling it with every block still due");
        self.repair(firewall, &what);
    }

    /// Reinstalls the ruleset with the blocks due now; a refusal is said and tried again at
    /// the next tick.
    pub(super) fn repair(&mut self, firewall: &mut impl Reinstall, why: &str) {
        let started = Instant::now();
        let blocks = match self.sets_hold_blocks {
            true => due_entries(&self.store, SystemTime::now()),
            false => Vec::new(),
        };
        let reinstalled = firewall.reinstall(&blocks);
        // The sets were built anew from the journal, which may lack blocks a queue reader put
        // in before: the responder adds those again.
        self.deletions.of_every();
        match reinstalled {
            Ok(()) => {
                if let Some(fleet) = &mut self.fleet {
                    fleet.reinstalled(&self.store);
                }
                let retried = self.repair_due.take().is_some();
                info!(
                    "nft ruleset reinstalled with {} blocks in {} ms{}",
                    blocks.len(),
                    started.elapsed().as_millis(),
                    if retried { " (on a retry)" } else { "" }
                );
            }
            Err(e) => {
                if self.repair_due.is_none() {
                    error!(
                        "cannot reinstall the nft ruleset ({why}): {}; trying again every second",
                        with_causes(&e)
                    );
                }
                self.repair_due = Some(why.to_owned());
            }
        }
    }

    /// Releases blocks another process lifted from the kernel's sets: every action lets them
    /// go (the nft-set action's delete finds them gone already), the journal forgets them, and
    /// the packet loop stops dropping their packets inline.
    pub(super) fn release_by_hand(&mut self, sources: &[IpAddr], by: &str) {
        let records: Vec<BlockRecord> = sources
            .iter()
            .filter_map(|source| self.store.remove(source))
            .collect();
        self.release(&records);
        for record in &records {
            self.unblocked_by_hand(record.source);
        }
        let why = format!("released by hand by {by}");
        for record in &records {
            info!("{}", report::released_line(record.source, &why));
            warn!(
                "{} was deleted from nfsentry's blocked set by hand: released, and not blocked \
                 again at the next start",
                record.source
            );
            // The packet loop may be gone at shutdown; the block is released either way.
            let _ = self.released.send(record.source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{recorder, store_with};
    use super::*;
    use crate::heal::ForeignChange;
    use nix::errno::Errno;

    /// Records the blocks of each reinstall; refuses while `refuse` is set.
    #[derive(Default)]
    struct Recorded {
        reinstalls: Vec<Vec<IpAddr>>,
        refuse: bool,
    }

    impl Reinstall for Recorded {
        fn reinstall(&mut self, blocks: &[(IpAddr, Option<Duration>)]) -> Result<(), NftError> {
            if self.refuse {
                return Err(NftError::Refused {
                    operation: "install",
                    step: "add table inet nfsentry".into(),
                    errno: Errno::ENOMEM,
                    kernel_message: None,
                });
            }
            self.reinstalls
                .push(blocks.iter().map(|(addr, _)| *addr).collect());
            Ok(())
        }
    }

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn by_nft(removed: &[&str], damaged: &[&str]) -> Seen {
        Seen::Changed(ForeignChange {
            port: 4242,
            process: Some("nft".into()),
            damaged: damaged.iter().map(|d| d.to_string()).collect(),
            removed: addrs(removed),
        })
    }

    fn responder(dir: &std::path::Path) -> (Responder, crate::wake::WakingReceiver<IpAddr>) {
        let store = store_with(
            dir,
            &[
                ("198.51.100.1", None),
                ("198.51.100.2", None),
                ("198.51.100.3", None),
            ],
        );
        let (action, _) = recorder(false);
        let (released, heard) = crate::wake::channel().unwrap();
        (Responder::init(store, vec![action], true, released), heard)
    }

    #[test]
    fn a_hand_deleted_element_is_released_journaled_and_passed_to_the_packet_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (mut responder, heard) = responder(dir.path());
        let mut firewall = Recorded::default();
        responder.on_ruleset(by_nft(&["198.51.100.2"], &[]), &mut firewall);
        assert!(firewall.reinstalls.is_empty());
        assert_eq!(heard.take(), addrs(&["198.51.100.2"]));
        drop(responder);
        let (reopened, _) = BlockStore::open(dir.path()).unwrap();
        let mut left: Vec<IpAddr> = reopened.live().map(|block| block.source).collect();
        left.sort_unstable();
        assert_eq!(left, addrs(&["198.51.100.1", "198.51.100.3"]));
    }

    #[test]
    fn a_flushed_set_or_a_deleted_table_is_reinstalled_with_every_block() {
        let dir = tempfile::tempdir().unwrap();
        let (mut responder, heard) = responder(dir.path());
        let mut firewall = Recorded::default();
        let every = addrs(&["198.51.100.1", "198.51.100.2", "198.51.100.3"]);
        responder.on_ruleset(
            by_nft(&["198.51.100.1", "198.51.100.2", "198.51.100.3"], &[]),
            &mut firewall,
        );
        responder.on_ruleset(by_nft(&[], &["table inet nfsentry"]), &mut firewall);
        responder.on_ruleset(Seen::Lost, &mut firewall);
        assert_eq!(
            firewall.reinstalls,
            vec![every.clone(), every.clone(), every]
        );
        assert_eq!(heard.take().len(), 0);
        assert_eq!(responder.store.len(), 3);
    }

    #[test]
    fn a_refused_repair_is_tried_again_at_the_next_tick() {
        let dir = tempfile::tempdir().unwrap();
        let (mut responder, _heard) = responder(dir.path());
        let mut firewall = Recorded {
            refuse: true,
            ..Recorded::default()
        };
        responder.on_ruleset(
            by_nft(&[], &["chain inet nfsentry/prerouting"]),
            &mut firewall,
        );
        assert!(responder.repair_due.is_some());
        responder.retry(&mut firewall);
        assert!(responder.repair_due.is_some());
        firewall.refuse = false;
        responder.retry(&mut firewall);
        assert!(responder.repair_due.is_none());
        assert_eq!(firewall.reinstalls.len(), 1);
    }

    #[test]
    fn without_the_nft_set_action_a_repair_installs_empty_sets() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(
            dir.path(),
            &[("198.51.100.1", None), ("198.51.100.2", None)],
        );
        let (action, _) = recorder(false);
        let mut responder = Responder::init(
            store,
            vec![action],
            false,
            crate::wake::channel().unwrap().0,
        );
        let mut firewall = Recorded::default();
        // Deleting "our" elements means nothing when the sets never held them.
        responder.on_ruleset(
            by_nft(&["198.51.100.1", "198.51.100.2"], &[]),
            &mut firewall,
        );
        assert!(firewall.reinstalls.is_empty());
        assert_eq!(responder.store.len(), 2);
        responder.on_ruleset(by_nft(&[], &["table inet nfsentry"]), &mut firewall);
        assert_eq!(firewall.reinstalls, vec![Vec::<IpAddr>::new()]);
    }

    #[test]
    fn an_element_deleted_by_hand_before_its_block_order_came_is_released_once_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), &[]);
        let (nft, nft_calls) =
            super::super::tests::named_recorder(crate::respond::nft_set::ACTION_NAME, false);
        let (released, heard) = crate::wake::channel().unwrap();
        let mut responder = Responder::init(store, vec![nft], true, released);
        let put_in = Instant::now();
        let mut firewall = Recorded::default();
        // The watch's news of the delete beats the block order: nothing held, nothing done.
        responder.on_ruleset(by_nft(&["198.51.100.7"], &[]), &mut firewall);
        assert_eq!(heard.take().len(), 0);
        nft_calls.lock().unwrap().clear();

        responder.block(vec![super::super::tests::put_in_by_a_reader(
            "198.51.100.7",
            put_in,
        )]);
        assert_eq!(
            *nft_calls.lock().unwrap(),
            [("release", addrs(&["198.51.100.7"]))],
            "the element deleted by hand was added again"
        );
        assert_eq!(heard.take(), addrs(&["198.51.100.7"]));
        assert!(firewall.reinstalls.is_empty());
        drop(responder);
        let (reopened, _) = BlockStore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 0);
    }
}
