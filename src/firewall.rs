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

/// nfsentry's tables in the kernel, from install to removal.
pub struct Firewall {
    nft: Nft,
    spec: RulesetSpec,
    prefer: Option<QueueMode>,
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
        };
        let installed = firewall.install_spec(blocks)?;
        Ok((firewall, installed))
    }

    /// Builds the whole ruleset again, in one transaction with `blocks` in the blocked sets,
    /// after another process deleted or emptied part of it.
    pub fn repair(&mut self, blocks: &[(IpAddr, Option<Duration>)]) -> Result<Installed, NftError> {
        self.install_spec(blocks)
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

    /// Removes the tables at a clean stop: nothing is queued while nfsentry is away.
    pub fn remove(mut self) {
        let table = &self.spec.table;
        match self.nft.remove(table) {
            Ok(()) => info!("removed nft tables inet {table} and netdev {table}"),
            Err(e) => error!("cannot remove nft table {table}: {}", with_causes(&e)),
        }
    }
}
