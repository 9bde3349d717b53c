//! nfsentry: a port-scan detector that sits inline on an NFQUEUE and blocks scanners in nftables.
//!
//! Data flows one way: packet → [`packet`] (parse, classify) → [`tracker`] (per-source state) →
//! [`engine`] (decision) → verdict + response ([`respond`]). The edges that touch the kernel
//! ([`queue`], [`nflog`], [`nft`]) are kept apart from the core, which does no I/O.

pub mod addrset;
pub mod atomic_file;
pub mod config;
pub mod crowdsec;
pub mod daemon;
pub mod engine;
pub mod error_text;
pub mod firewall;
pub mod host;
pub mod import_portsentry;
pub mod logging;
pub mod netlink_wire;
pub mod nflog;
pub mod nft;
pub mod packet;
pub mod pipeline;
pub mod queue;
pub mod report;
pub mod respond;
pub mod sd_notify;
pub mod store;
pub mod tracker;
