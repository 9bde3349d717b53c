//! CrowdSec fleet membership: nfsentry as a watcher (each block it makes is pushed to the
//! Local API as an alert carrying one `ban`) and as a bouncer (the fleet's `ban`s are pulled and
//! turned into firewall changes). All of it runs on its own thread, off the packet path.
//!
//! The parts, I/O-free first:
//! - [`wire`]: the LAPI's JSON and the alert a block becomes;
//! - [`decisions`]: the pulled bans, deltas and full lists in, [`Change`]s out;
//! - [`backlog`], [`retry`], [`session`]: reports waiting out outages, backoff and
//!   log-once, when the watcher's token is renewed;
//! - [`text`]: Go durations and RFC 3339 times;
//! - [`client`]: the HTTP calls (the only network code);
//! - [`worker`]: the thread that runs them, with the [`Reporter`] going in and the sink and
//!   [`Status`] coming out.
//!
//! It does not touch the firewall, the block store or the other actions: the responder applies
//! the [`Change`]s (single addresses into the address sets, networks into interval sets,
//! `[crowdsec] actions` for addresses) and reports its own blocks through the [`Reporter`].
//! Our own pushed bans come back in the pull like anyone's, with origin `nfsentry`; the
//! responder must not report enforcements back, and should keep an address it blocked itself
//! when the fleet's ban on it is released.

pub mod backlog;
pub mod client;
pub mod decisions;
pub mod retry;
pub mod session;
pub mod text;
pub mod wire;
pub mod worker;

pub use decisions::{Change, HeldBan, IgnoreReason, ReleaseReason, TableCounts};
pub use wire::{LocalBlock, Probe, PERMANENT_BAN};
pub use worker::{spawn, Crowdsec, Report, Reporter, Settings, Status, Tuning, Watch};
