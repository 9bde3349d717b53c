//! The `nft-set` action: blocked sources go into the `blocked_v4` / `blocked_v6` sets of
//! nfsentry's own table, which the prerouting chain drops first thing; the kernel expires timed
//! elements itself. The sets come and go with the table, which [`crate::firewall`] owns.
//!
//! With `respond.blocked_table` the sets are the admin's, in the admin's table, and only their
//! elements are changed. Those sets may be missing (the admin's ruleset not loaded yet, or being
//! reloaded): the firewall says so once and fills them when they appear, from the journal, so a
//! missing set is no failure of a block here.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::{sources, Action, ActionError};
use crate::config;
use crate::nft::netlink::{Nft, NftError};
use crate::store::BlockRecord;

pub(crate) const ACTION_NAME: &str = "nft-set";

pub struct NftSetAction {
    table: String,
    /// The sets are the admin's (`respond.blocked_table`).
    admin_table: bool,
    /// Only for `describe`: each element carries its block's own remaining time.
    block_timeout: Option<Duration>,
    /// Opened by `init`.
    nft: Option<Nft>,
}

impl NftSetAction {
    pub fn new(table: &str, block_timeout: Option<Duration>) -> NftSetAction {
        NftSetAction {
            table: table.to_owned(),
            admin_table: false,
            block_timeout,
            nft: None,
        }
    }

    /// The action on the sets of the admin's `inet` table `table`.
    pub fn in_admin_table(table: &str, block_timeout: Option<Duration>) -> NftSetAction {
        NftSetAction {
            admin_table: true,
            ..NftSetAction::new(table, block_timeout)
        }
    }

    /// A refusal of the admin's sets for being absent waits for the firewall's refill.
    fn missing_admin_sets(&self, error: &NftError) -> bool {
        self.admin_table && error.errno() == Some(nix::errno::Errno::ENOENT)
    }

    fn nft(&mut self) -> Result<&mut Nft, ActionError> {
        self.nft.as_mut().ok_or_else(|| ActionError::Config {
            action: ACTION_NAME,
            detail: "used before init".to_owned(),
        })
    }

    fn add(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError> {
        let entries: Vec<(IpAddr, Option<Duration>)> =
            blocks.iter().map(|block| element(block, now)).collect();
        let table = self.table.clone();
        match self.nft()?.block_many(&table, &entries) {
            Err(e) if self.missing_admin_sets(&e) => {
                log::debug!(
                    "{} blocks wait for the sets of table inet {table}",
                    entries.len()
                );
                Ok(())
            }
            other => other.map_err(refused),
        }
    }
}

/// A block's element in the blocked set at `now`: its address, and the time it has left as the
/// element's timeout (none for a block without end). The queue readers' inline block
/// (`daemon::inline_block`) puts elements in with this too, so both give one block one timeout.
pub(crate) fn element(block: &BlockRecord, now: SystemTime) -> (IpAddr, Option<Duration>) {
    (block.source, block.remaining(now))
}

fn refused(error: NftError) -> ActionError {
    ActionError::kernel(ACTION_NAME, error.errno(), &error)
}

impl Action for NftSetAction {
    fn name(&self) -> &'static str {
        ACTION_NAME
    }

    /// The config refuses a longer timeout already; an action built some other way says so
    /// here rather than on every insert.
    fn check(&self) -> Vec<String> {
        match self.block_timeout {
            Some(timeout) if timeout > config::NFT_TIMEOUT_MAX => vec![format!(
                "block_timeout {} is longer than the kernel accepts for an element timeout \
                 (at most {})",
                config::format_duration(timeout),
                config::format_duration(config::NFT_TIMEOUT_MAX)
            )],
            _ => Vec::new(),
        }
    }

    fn describe(&self) -> Vec<String> {
        let table = &self.table;
        let timeout = match self.block_timeout {
            Some(t) => format!(" timeout {}", config::format_duration(t)),
            None => String::new(),
        };
        vec![
            format!(
                "block:   add element inet {table} blocked_v4 {{ $TARGET${timeout} }}   \
                 (blocked_v6 for IPv6; netlink, no nft process)"
            ),
            format!("release: delete element inet {table} blocked_v4 {{ $TARGET$ }}"),
        ]
    }

    /// Opens its netlink socket and puts the due blocks back into the sets, which the firewall
    /// has just built empty. Re-adding a present element only refreshes its timeout.
    fn init(&mut self, due: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError> {
        self.nft = Some(Nft::open().map_err(refused)?);
        self.add(due, now)
    }

    fn block(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError> {
        self.add(blocks, now)
    }

    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        let table = self.table.clone();
        match self.nft()?.release_many(&table, &sources(blocks)) {
            // Absent sets hold nothing to release.
            Err(e) if self.missing_admin_sets(&e) => Ok(()),
            other => other.map_err(refused),
        }
    }

    /// Deletes and adds the elements again: re-adding a present element leaves its timeout as
    /// it was on kernels before 6.10, and on any kernel cannot take a timeout away.
    fn renew(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError> {
        self.release(blocks)?;
        self.add(blocks, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_the_kernel_cannot_hold_is_named() {
        let largest = config::NFT_TIMEOUT_MAX;
        assert!(NftSetAction::new("t", Some(largest)).check().is_empty());
        assert!(NftSetAction::new("t", None).check().is_empty());
        let longer = NftSetAction::new("t", Some(largest + Duration::from_secs(1)));
        assert_eq!(
            longer.check(),
            [
                "block_timeout 213503d23h34m34s708ms is longer than the kernel accepts for an \
              element timeout (at most 213503d23h34m33s708ms)"
            ]
        );
    }
}
