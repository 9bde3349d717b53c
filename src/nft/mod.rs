//! Everything nfsentry says to nftables: the ruleset it owns and the set elements it changes.
//!
//! [`ruleset`] is the model of the ruleset and its text; [`netlink`] the connection that applies
//! it. Between them, [`batches`] says what each batch contains, [`bytecode`] how each rule is
//! written, and [`objects`] wraps the libnftnl objects they are built from. What the kernel
//! says back on its own, dumped elements and change notifications, is read by [`messages`], and
//! [`watch`] follows those notifications.

mod batches;
mod bytecode;
pub mod intervals;
pub mod messages;
pub mod netlink;
mod objects;
pub mod ruleset;
pub mod watch;

pub use netlink::{Nft, NftError};
pub use ruleset::{render, QueueMode, RulesetSpec};
