//! What another process did to nfsentry's tables, and what the kernel still held when nfsentry
//! starts again: damage to repair, or blocks released by hand. It does no I/O: the watch
//! ([`crate::nft::watch`]) and the start-up read of the blocked sets bring the facts, and the
//! responder and the daemon act on the answer.
//!
//! **A flush or a release by hand.** Deleting an element of a blocked set is how an admin lets
//! a host in again, and nfsentry takes it as a release by hand. Emptying a set (`nft flush
//! set`), or deleting a table, chain, rule or set of nfsentry's (`nft flush ruleset`, a restart
//! of the distribution's nftables service), is damage: nobody lifted those blocks on purpose,
//! one by one. The two are told apart per transaction (one nf_tables generation) of another
//! process: when it deleted every element of a blocked set that nfsentry holds there, and those
//! are at least two, it is a flush, and everything is put back; otherwise each deleted address
//! that nfsentry holds blocked is released by hand. Blocks about to time out are left out of
//! "every", because the kernel may have dropped them already and a time-out makes no
//! notification. So a set holding a single block is never "flushed", only released; and to
//! release every block of a set by hand, delete them in separate commands (or stop nfsentry,
//! flush, and start it: the start-up read judges the same way).
//!
//! The same judgement serves the start after a crash: what the journal holds and the kernel's
//! set lacks was deleted while nfsentry was away.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

/// Blocks with less time left than this may have timed out in the kernel already (its element
/// timeouts are whole seconds, cut down, from the same expiry time), so their absence says
/// nothing.
pub const ABOUT_TO_EXPIRE: Duration = Duration::from_secs(2);

/// A flush empties a set of at least this many blocks; fewer is a release by hand.
const FLUSH_AT_LEAST: usize = 2;

/// A block as nfsentry holds it: the address and its time left (`None`: until released).
pub type Held = (IpAddr, Option<Duration>);

/// What one transaction of another process deleted from nfsentry's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForeignChange {
    /// The netlink port of the socket that committed it.
    pub port: u32,
    /// The committing process's name, as the kernel reports it.
    pub process: Option<String>,
    /// The tables, chains, rules and sets of nfsentry's it deleted, and sets other than the
    /// blocked ones it deleted elements from, named for the log (`table inet nfsentry`).
    pub damaged: Vec<String>,
    /// The addresses it deleted from the blocked sets.
    pub removed: Vec<IpAddr>,
}

impl ForeignChange {
    /// Who made it, for the log: `nft (netlink port 4242)`.
    pub fn by(&self) -> String {
        let process = self.process.as_deref().unwrap_or("another process");
        format!("{process} (netlink port {})", self.port)
    }

    /// Whether it touched nothing of nfsentry's.
    pub fn is_empty(&self) -> bool {
        self.damaged.is_empty() && self.removed.is_empty()
    }
}

/// What to do about a [`ForeignChange`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    /// Why the ruleset must be reinstalled with every block still due; empty when it is intact.
    pub repair: Vec<String>,
    /// Blocks another process lifted on purpose, to be released and not brought back.
    pub released_by_hand: Vec<IpAddr>,
}

/// Judges a change against `held`, the blocks nfsentry holds with their time left.
pub fn judge(change: &ForeignChange, held: &[Held]) -> Judgement {
    let mut judgement = Judgement {
        repair: change
            .damaged
            .iter()
            .map(|what| format!("{what} deleted"))
            .collect(),
        released_by_hand: Vec::new(),
    };
    let removed: HashSet<IpAddr> = change.removed.iter().map(IpAddr::to_canonical).collect();
    for family in [Family::V4, Family::V6] {
        let removed_here: Vec<IpAddr> = removed
            .iter()
            .copied()
            .filter(|addr| Family::of(*addr) == family)
            .collect();
        if removed_here.is_empty() {
            continue;
        }
        let held_here: Vec<IpAddr> = held
            .iter()
            .filter(|(addr, _)| Family::of(*addr) == family)
            .map(|(addr, _)| addr.to_canonical())
            .collect();
        let surely_in_kernel: Vec<IpAddr> = held
            .iter()
            .filter(|(addr, left)| {
                Family::of(*addr) == family && left.map_or(true, |left| left >= ABOUT_TO_EXPIRE)
            })
            .map(|(addr, _)| addr.to_canonical())
            .collect();
        let emptied = surely_in_kernel.len() >= FLUSH_AT_LEAST
            && surely_in_kernel.iter().all(|addr| removed.contains(addr));
        if emptied {
            judgement.repair.push(format!(
                "every {} block ({} elements) deleted at once",
                family.name(),
                removed_here.len()
            ));
        } else {
            let mut released: Vec<IpAddr> = removed_here
                .into_iter()
                .filter(|addr| held_here.contains(addr))
                .collect();
            released.sort_unstable();
            judgement.released_by_hand.extend(released);
        }
    }
    judgement
}

/// The blocked sets found in the kernel at start, each `None` when it did not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelSets {
    pub v4: Option<Vec<Held>>,
    pub v6: Option<Vec<Held>>,
}

/// How the journal and the kernel's blocked sets were merged at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// In force in the kernel but missing from the journal (a crash between the kernel's change
    /// and the journal's, or a state directory that could not be written): kept.
    pub adopt: Vec<Held>,
    /// In the journal but deleted from the kernel while nfsentry was away, one by one.
    pub released_by_hand: Vec<IpAddr>,
    /// Families whose set was emptied while nfsentry was away (`"IPv4"`): the journal's blocks
    /// are put back.
    pub flushed: Vec<&'static str>,
}

/// Merges the journal's live blocks with the kernel's blocked sets after nfsentry was gone: the
/// kernel holds what was in force, so what it adds is adopted, and what it lacks was released
/// by hand or flushed (judged as [`judge`] does). A family whose set is absent (the tables were
/// removed at a clean stop, or deleted) keeps the journal's blocks.
pub fn reconcile(journal: &[Held], kernel: &KernelSets) -> Reconciled {
    let mut reconciled = Reconciled::default();
    for (family, set) in [(Family::V4, &kernel.v4), (Family::V6, &kernel.v6)] {
        let Some(set) = set else {
            continue;
        };
        let in_kernel: HashSet<IpAddr> = set.iter().map(|(addr, _)| addr.to_canonical()).collect();
        let journaled: Vec<Held> = journal
            .iter()
            .filter(|(addr, _)| Family::of(*addr) == family)
            .copied()
            .collect();
        let in_journal: HashSet<IpAddr> = journaled
            .iter()
            .map(|(addr, _)| addr.to_canonical())
            .collect();
        let mut adopt: Vec<Held> = set
            .iter()
            .filter(|(addr, _)| !in_journal.contains(&addr.to_canonical()))
            .copied()
            .collect();
        adopt.sort_unstable();
        reconciled.adopt.extend(adopt);
        let missing = ForeignChange {
            removed: journaled
                .iter()
                .filter(|(addr, left)| {
                    !in_kernel.contains(&addr.to_canonical())
                        && left.map_or(true, |left| left >= ABOUT_TO_EXPIRE)
                })
                .map(|(addr, _)| *addr)
                .collect(),
            ..ForeignChange::default()
        };
        let judgement = judge(&missing, &journaled);
        if judgement.repair.is_empty() {
            reconciled
                .released_by_hand
                .extend(judgement.released_by_hand);
        } else {
            reconciled.flushed.push(family.name());
        }
    }
    reconciled
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    /// An IPv4-mapped IPv6 address is blocked in the IPv4 set.
    fn of(addr: IpAddr) -> Family {
        match addr.to_canonical() {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Option<Duration> = Some(Duration::from_secs(3600));
    const SECOND: Option<Duration> = Some(Duration::from_secs(1));

    fn addr(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn held(list: &[(&str, Option<Duration>)]) -> Vec<Held> {
        list.iter().map(|(a, left)| (addr(a), *left)).collect()
    }

    fn removing(list: &[&str]) -> ForeignChange {
        ForeignChange {
            port: 4242,
            process: Some("nft".into()),
            damaged: Vec::new(),
            removed: list.iter().map(|a| addr(a)).collect(),
        }
    }

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| addr(a)).collect()
    }

    /// The blocks every case starts from: three IPv4 (one about to expire) and two IPv6.
    fn three_and_two() -> Vec<Held> {
        held(&[
            ("192.0.2.1", None),
            ("192.0.2.2", HOUR),
            ("192.0.2.3", SECOND),
            ("2001:db8::1", None),
            ("2001:db8::2", None),
        ])
    }

    #[test]
    fn one_deleted_element_is_a_release_by_hand() {
        let judgement = judge(&removing(&["192.0.2.2"]), &three_and_two());
        assert_eq!(
            judgement,
            Judgement {
                repair: vec![],
                released_by_hand: addrs(&["192.0.2.2"]),
            }
        );
    }

    #[test]
    fn a_set_emptied_in_one_transaction_is_a_flush_even_without_the_expiring_block() {
        // The block with a second left may already be gone from the kernel: a flush did not
        // report it, and it is still a flush.
        let judgement = judge(&removing(&["192.0.2.2", "192.0.2.1"]), &three_and_two());
        assert_eq!(judgement.released_by_hand, Vec::<IpAddr>::new());
        assert_eq!(
            judgement.repair,
            vec!["every IPv4 block (2 elements) deleted at once".to_owned()]
        );
        // Elements of the admin's own in the set go with a flush too, and change nothing.
        let with_foreign = removing(&["192.0.2.1", "192.0.2.2", "192.0.2.3", "203.0.113.5"]);
        assert_eq!(judge(&with_foreign, &three_and_two()).repair.len(), 1);
    }

    #[test]
    fn families_are_judged_apart() {
        let judgement = judge(
            &removing(&["2001:db8::1", "2001:db8::2", "192.0.2.1"]),
            &three_and_two(),
        );
        assert_eq!(
            judgement.repair,
            vec!["every IPv6 block (2 elements) deleted at once".to_owned()]
        );
        assert_eq!(judgement.released_by_hand, addrs(&["192.0.2.1"]));
    }

    #[test]
    fn a_single_block_deleted_is_released_not_flushed() {
        let judgement = judge(
            &removing(&["198.51.100.7"]),
            &held(&[("198.51.100.7", None)]),
        );
        assert!(judgement.repair.is_empty());
        assert_eq!(judgement.released_by_hand, addrs(&["198.51.100.7"]));
    }

    #[test]
    fn addresses_nfsentry_does_not_hold_are_no_release() {
        let judgement = judge(
            &removing(&["203.0.113.5", "::ffff:192.0.2.2"]),
            &three_and_two(),
        );
        assert!(judgement.repair.is_empty());
        assert_eq!(judgement.released_by_hand, addrs(&["192.0.2.2"]));
    }

    #[test]
    fn deleted_objects_are_damage_whatever_else_happened() {
        let change = ForeignChange {
            damaged: vec![
                "table inet nfsentry".into(),
                "chain inet nfsentry/prerouting".into(),
            ],
            ..removing(&["192.0.2.1"])
        };
        let judgement = judge(&change, &three_and_two());
        assert_eq!(
            judgement.repair,
            vec![
                "table inet nfsentry deleted".to_owned(),
                "chain inet nfsentry/prerouting deleted".to_owned()
            ]
        );
        assert_eq!(judgement.released_by_hand, addrs(&["192.0.2.1"]));
        assert_eq!(change.by(), "nft (netlink port 4242)");
    }

    #[test]
    fn at_start_the_kernel_adds_what_the_journal_missed() {
        let journal = held(&[("192.0.2.1", None), ("2001:db8::1", HOUR)]);
        let kernel = KernelSets {
            v4: Some(held(&[("192.0.2.1", None), ("192.0.2.9", HOUR)])),
            v6: Some(held(&[("2001:db8::1", HOUR), ("2001:db8::9", None)])),
        };
        assert_eq!(
            reconcile(&journal, &kernel),
            Reconciled {
                adopt: held(&[("192.0.2.9", HOUR), ("2001:db8::9", None)]),
                released_by_hand: vec![],
                flushed: vec![],
            }
        );
    }

    #[test]
    fn at_start_a_block_deleted_while_away_stays_released_and_expiring_ones_are_no_news() {
        let journal = held(&[
            ("192.0.2.1", None),
            ("192.0.2.2", None),
            ("192.0.2.3", SECOND),
        ]);
        let kernel = KernelSets {
            v4: Some(held(&[("192.0.2.1", None)])),
            v6: Some(vec![]),
        };
        let reconciled = reconcile(&journal, &kernel);
        assert_eq!(reconciled.released_by_hand, addrs(&["192.0.2.2"]));
        assert!(reconciled.adopt.is_empty() && reconciled.flushed.is_empty());
    }

    #[test]
    fn at_start_an_emptied_set_is_a_flush_and_an_absent_one_changes_nothing() {
        let journal = held(&[
            ("192.0.2.1", None),
            ("192.0.2.2", HOUR),
            ("2001:db8::1", None),
        ]);
        let flushed = KernelSets {
            v4: Some(vec![]),
            v6: None,
        };
        assert_eq!(
            reconcile(&journal, &flushed),
            Reconciled {
                adopt: vec![],
                released_by_hand: vec![],
                flushed: vec!["IPv4"],
            }
        );
        assert_eq!(
            reconcile(&journal, &KernelSets::default()),
            Reconciled::default()
        );
    }
}
