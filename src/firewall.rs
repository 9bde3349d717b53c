//! The one owner of nfsentry's nft tables (`inet` and `netdev`, both named `daemon.table`):
//! it reads the blocked sets a crashed run left, clears that run's tables, installs the
//! ruleset (again, when another process damaged it), and removes it at a clean stop. Nothing
//! else in nfsentry creates or deletes these tables. What goes into the blocked sets while
//! running is the `nft-set` action's business, and what the ruleset says is
//! [`crate::nft::ruleset`]'s.

use std::net::IpAddr;
use std::time::Duration;

use log::{error, info, warn};

use crate::config::QueueMode;
use crate::error_text::with_causes;
use crate::heal::{Held, KernelSets};
use crate::nft::netlink::{Nft, NftError};
use crate::nft::ruleset::{blocked_set, IpFamily, RulesetSpec};

/// The blocked sets of the tables an earlier run left in force (a crash or SIGKILL leaves them),
/// each element with its time left, read before [`clear_stale`] replaces them. `None` when
/// there is no such table. One netlink dump per set.
pub fn read_blocked(table: &str) -> Result<Option<KernelSets>, NftError> {
    let mut nft = Nft::open()?;
    let mut read = |family| -> Result<Option<Vec<Held>>, NftError> {
        let elements = nft.set_elements(table, blocked_set(family))?;
        Ok(elements.map(|elements| {
            elements
                .iter()
                .filter_map(|element| Some((element.address()?, element.remaining())))
                .collect()
        }))
    };
    let v4 = read(IpFamily::V4)?;
    let v6 = read(IpFamily::V6)?;
    Ok((v4.is_some() || v6.is_some()).then_some(KernelSets { v4, v6 }))
}

/// What was installed, for the daemon's start-up report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub mode: QueueMode,
    /// The devices the short-header chain hooks; empty when none could be hooked.
    pub ingress_devices: Vec<String>,
}

/// Removes the tables a crashed run left behind. They still queue to our queue number, and
/// packets that arrive while the queue binding is negotiated would be dropped unanswered and
/// hold their queue slots; so this runs before the queue is bound, and the install that follows
/// the binding builds the tables afresh anyway.
pub fn clear_stale(table: &str) {
    let removed = Nft::open().and_then(|mut nft| nft.remove(table));
    if let Err(e) = removed {
        warn!(
            "cannot remove stale nft tables {table} before binding the queue: {}",
            with_causes(&e)
        );
    }
}

/// With `keep_blocks_on_exit`, instead of [`clear_stale`]: whatever nfsentry's tables hold (the
/// reduced table a clean stop kept, or a crashed run's whole ruleset) is replaced in one
/// transaction by the blocked sets, holding `blocks`, and their drop rules: nothing queues
/// while the queue is bound, and no blocked source gets through between the two runs. False
/// when nfsentry's table holds no blocked sets (`blocked_table`) or the kernel refused; the
/// caller then clears the tables.
pub fn reduce_stale(spec: &RulesetSpec, blocks: &[(IpAddr, Option<Duration>)]) -> bool {
    if !spec.holds_blocks() {
        return false;
    }
    let table = &spec.table;
    let kept = Nft::open().and_then(|mut nft| {
        nft.install_with_blocks(&spec.kept_at_exit(), Some(QueueMode::Compat), blocks)
    });
    match kept {
        Ok(_) => {
            info!(
                "nft table inet {table} holds only its {} blocks while the queue is bound",
                blocks.len()
            );
            true
        }
        Err(e) => {
            warn!(
                "cannot keep the blocks in nft table inet {table} while the queue is bound: {}",
                with_causes(&e)
            );
            false
        }
    }
}

/// For `check-config`: which of the blocked sets the admin's table `table` lacks (the table
/// missing means both). One dump per set.
pub fn missing_blocked_sets(table: &str) -> Result<Vec<&'static str>, NftError> {
    let mut nft = Nft::open()?;
    let mut missing = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        if nft.set_elements(table, blocked_set(family))?.is_none() {
            missing.push(blocked_set(family));
        }
    }
    Ok(missing)
}

/// nfsentry's tables in the kernel, from install to removal; with `respond.blocked_table`, also
/// the blocks in the admin's sets, whose table it never changes otherwise.
pub struct Firewall {
    nft: Nft,
    spec: RulesetSpec,
    prefer: Option<QueueMode>,
    /// With `blocked_table`: the admin's sets lacked the blocks at the last try (they were
    /// missing, or refused them); said once, tried again every tick.
    admin_sets_pending: bool,
}

impl Firewall {
    /// Installs `spec` as one transaction, with `blocks` in the blocked sets (empty when no
    /// action keeps its blocks there). `prefer` forces a queue mode; `None` tries the native
    /// `queue` statement and falls back to the compat NFQUEUE target.
    ///
    /// Some kernels refuse a netdev hook on a device that does not exist (yet), and the netdev
    /// chain shares the transaction with everything else: rather than start without any
    /// protection, the install is retried without the short-header chain, saying why.
    pub fn install(
        spec: RulesetSpec,
        prefer: Option<QueueMode>,
        blocks: &[(IpAddr, Option<Duration>)],
    ) -> Result<(Firewall, Installed), NftError> {
        let mut firewall = Firewall {
            nft: Nft::open()?,
            spec,
            prefer,
            admin_sets_pending: false,
        };
        let installed = firewall.install_spec(blocks)?;
        firewall.fill_admin_sets(blocks);
        Ok((firewall, installed))
    }

    /// Builds the whole ruleset again, in one transaction with `blocks` in the blocked sets,
    /// after another process deleted or emptied part of it. With `blocked_table` the blocks go
    /// into the admin's sets right after, which a reload of the admin's ruleset has emptied or
    /// deleted along with nfsentry's table.
    pub fn repair(&mut self, blocks: &[(IpAddr, Option<Duration>)]) -> Result<Installed, NftError> {
        let installed = self.install_spec(blocks)?;
        self.fill_admin_sets(blocks);
        Ok(installed)
    }

    /// Whether the admin's sets still wait for the blocks (see [`Firewall::fill_admin_sets`]).
    pub fn admin_sets_pending(&self) -> bool {
        self.admin_sets_pending
    }

    /// With `blocked_table`: puts `blocks` into the admin's sets, in one transaction. Missing
    /// sets are said once, naming table and set; the blocks stay in the journal and the caller
    /// tries again while [`Firewall::admin_sets_pending`]. nfsentry never creates the sets:
    /// they are the admin's, with the admin's flags and place in the ruleset.
    pub fn fill_admin_sets(&mut self, blocks: &[(IpAddr, Option<Duration>)]) {
        let Some(admin) = self.spec.blocked_table.clone() else {
            return;
        };
        let filled = match blocks.is_empty() {
            // Nothing to put in, which succeeds without a word from the kernel: ask whether
            // the sets are there, so that their absence is said before the first block.
            true => self.admin_sets_exist(&admin),
            false => self.nft.block_many(&admin, blocks),
        };
        match filled {
            Ok(()) => {
                if std::mem::take(&mut self.admin_sets_pending) {
                    info!(
                        "the sets {} and {} of table inet {admin} take blocks now: {} blocks put \
                         in",
                        blocked_set(IpFamily::V4),
                        blocked_set(IpFamily::V6),
                        blocks.len()
                    );
                }
            }
            Err(e) => {
                if !self.admin_sets_pending {
                    error!(
                        "{}; {} blocks are kept in the journal and put in as soon as it takes \
                         them (trying every second)",
                        admin_sets_refusal(&admin, &e),
                        blocks.len()
                    );
                }
                self.admin_sets_pending = true;
            }
        }
    }

    /// Ok when the admin's table has both blocked sets; a missing one is an ENOENT refusal
    /// naming it, as an insert into it would be.
    fn admin_sets_exist(&mut self, admin: &str) -> Result<(), NftError> {
        for family in [IpFamily::V4, IpFamily::V6] {
            let set = blocked_set(family);
            if self.nft.set_elements(admin, set)?.is_none() {
                return Err(NftError::Refused {
                    operation: "check",
                    step: format!("list set inet {admin} {set}"),
                    errno: nix::errno::Errno::ENOENT,
                    kernel_message: None,
                });
            }
        }
        Ok(())
    }

    fn install_spec(
        &mut self,
        blocks: &[(IpAddr, Option<Duration>)],
    ) -> Result<Installed, NftError> {
        match self
            .nft
            .install_with_blocks(&self.spec, self.prefer, blocks)
        {
            Ok(mode) => Ok(Installed {
                mode,
                ingress_devices: self.spec.ingress_devices.clone(),
            }),
            Err(e) if !self.spec.ingress_devices.is_empty() => {
                let devices = std::mem::take(&mut self.spec.ingress_devices);
                let Ok(mode) = self
                    .nft
                    .install_with_blocks(&self.spec, self.prefer, blocks)
                else {
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

    /// Applies a reloaded config's watched ports and ignore list in one transaction, keeping
    /// the chains, their counters and the blocked sets. What only a new install could change
    /// (table name, queue number, devices, NFLOG group) is kept from the running spec: the
    /// caller has said those need a restart.
    pub fn refill(&mut self, spec: &RulesetSpec) -> Result<(), NftError> {
        let next = RulesetSpec {
            tcp_ports: spec.tcp_ports.clone(),
            udp_ports: spec.udp_ports.clone(),
            ignore_v4: spec.ignore_v4.clone(),
            ignore_v6: spec.ignore_v6.clone(),
            ..self.spec.clone()
        };
        self.nft.refill_sets(&next)?;
        self.spec = next;
        Ok(())
    }

    /// Leaves the tables in force at a stop, when the blocks in them could not all be written
    /// to the state directory: the next start reads them back from the kernel.
    pub fn leave_in_place(self, why: &str) {
        warn!(
            "leaving nft tables inet {table} and netdev {table} in place: {why}; the next start \
             takes the blocks over from them",
            table = self.spec.table
        );
    }

    /// Removes the tables at a clean stop: nothing is queued while nfsentry is away. The
    /// admin's sets, with `blocked_table`, keep their elements: they are the admin's, and the
    /// next start takes the blocks over from them.
    pub fn remove(mut self) {
        let table = &self.spec.table;
        match self.nft.remove(table) {
            Ok(()) => info!("removed nft tables inet {table} and netdev {table}"),
            Err(e) => error!("cannot remove nft table {table}: {}", with_causes(&e)),
        }
        if let Some(admin) = &self.spec.blocked_table {
            info!("the blocks stay in the sets of table inet {admin}");
        }
    }

    /// A clean stop with `keep_blocks_on_exit`: one transaction replaces the ruleset by the
    /// blocked sets, holding `blocks`, and their drop rules, so nothing is queued while
    /// nfsentry is away and no blocked source gets through. With `blocked_table` the blocks are
    /// in the admin's sets already, and nfsentry's table simply goes.
    pub fn keep_blocks(mut self, blocks: &[(IpAddr, Option<Duration>)]) {
        if !self.spec.holds_blocks() {
            return self.remove();
        }
        let table = self.spec.table.clone();
        let kept = self.spec.kept_at_exit();
        match self.nft.install_with_blocks(&kept, self.prefer, blocks) {
            Ok(_) => info!(
                "left {} blocks in force in nft table inet {table} (keep_blocks_on_exit): its \
                 blocked sets and their drop rules only, nothing queued",
                blocks.len()
            ),
            Err(e) => {
                error!(
                    "cannot reduce nft table inet {table} to its blocked sets: {}; removing it",
                    with_causes(&e)
                );
                self.remove();
            }
        }
    }
}

/// Why the admin's sets did not take the blocks, in words that name table, sets and key.
fn admin_sets_refusal(admin: &str, error: &NftError) -> String {
    let sets = format!(
        "{} and {}",
        blocked_set(IpFamily::V4),
        blocked_set(IpFamily::V6)
    );
    match error.errno() {
        Some(nix::errno::Errno::ENOENT) => format!(
            "table inet {admin} has no sets {sets} (respond.blocked_table = \"inet {admin}\"): \
             load them with your ruleset (`nfsentry rules --blocked-sets` prints them) [{}]",
            with_causes(error)
        ),
        _ => format!(
            "the sets {sets} of table inet {admin} (respond.blocked_table) refused the blocks: {}",
            with_causes(error)
        ),
    }
}
