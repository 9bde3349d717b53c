//! Everything nfsentry says to nftables: the ruleset it owns and the set elements it changes.

pub mod netlink;
pub mod ruleset;

pub use netlink::{Nft, NftError};
pub use ruleset::{render, QueueMode, RulesetSpec};
