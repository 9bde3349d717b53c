//! nfsentry: a port-scan detector that sits inline on an NFQUEUE and blocks scanners in nftables.
//!
//! Data flows one way, from a packet to a verdict and a response:
//!
//! ```text
//!   kernel ──NFQUEUE──▶ queue ─┐                       ┌─▶ verdict ──▶ queue ──▶ kernel
//!   kernel ──NFLOG────▶ nflog ─┤                       │
//!                              ▼                       │
//!            pipeline: packet (parse, classify) → tracker (per source) → engine (decide)
//!                              │   report (log lines, history line)
//!                              ▼
//!        orders (block, release, renew) ──channel──▶ respond::responder
//!                                              ├─▶ store (journal, history file)
//!                                              └─▶ respond actions: nft-set, route,
//!                                                  hosts-deny, command, legacy tools
//!   crowdsec worker (LAPI, own thread) ──fleet changes──▶ responder ──blocks──▶ fleet reporter
//! ```
//!
//! With the `nft-set` action, each queue reader also puts the blocks its packets ordered into
//! the kernel's blocked set itself, over its own netlink socket, before it gives those packets
//! their verdicts (the daemon's inline block); the responder still carries every order out.
//!
//! With several queues (`daemon.queue = "0-3"`) the kernel spreads packets over them by address,
//! and each queue has its own reader thread and pipeline, a shard of the tables; every shard's
//! orders go down the same channel to the one responder.
//!
//! One more input reaches the responder: what `nft::watch` hears another process do to
//! nfsentry's tables, which `heal` judges as damage to repair or a release by hand; only such a
//! release flows back to the packet loop, so the engine stops dropping that source.
//!
//! The **core** does no I/O: bytes and the time go in, decisions come out, so all of it is
//! tested without root, kernel or clock. The **edges** each talk to one thing outside: the
//! kernel (netlink sockets), files, processes, the network. The daemon joins them: it owns the
//! threads, signals and timers, and nothing in the core imports an edge.
//!
//! To add a blocking method: one file in `respond/` implementing [`respond::Action`], its config
//! word in `config`'s `action_kinds!` list, and one line in [`respond::build`].

// ── Core: no I/O ──────────────────────────────────────────────────────────────────────────
// CIDR set lookups for the ignore list.
pub mod addrset;
// Handshake cookies: the keyed sequence numbers that prove a source address is real.
pub mod cookie;
// The configuration: TOML in, validated values out (reads the config and ignore files only).
pub mod config;
// The decision per classified packet: verdict, detection, block; the limits on blocks.
pub mod engine;
// An error with its causes on one line.
pub mod error_text;
// The TCP segments nfsentry sends itself (SYN-ACK, banner, RST), and reading a segment's numbers.
pub mod forge;
// What a segment to a bait port proves about its source, and what to send back.
pub mod handshake;
// Translating a portsentry.conf (reading it is its `system` part's job).
pub mod import_portsentry;
// Parsing and classifying one packet.
pub mod packet;
// What another process's change to nfsentry's tables means: damage to repair, or a release.
pub mod heal;
// The per-packet path: packet bytes and time in, verdict, orders and log lines out.
pub mod pipeline;
// PortSentry's log and history wording.
pub mod report;
// Sources that cannot be real, and addresses never blocked (own, routers, ignore list).
pub mod spoof;
// Per-source scan counters, bounded.
pub mod tracker;

// ── Edges: the kernel ─────────────────────────────────────────────────────────────────────
// nfsentry's nft tables: install, removal, a crashed run's leftovers.
pub mod firewall;
// The host's interfaces and addresses.
pub mod host;
// The host's addresses, routers and broadcast addresses, followed through rtnetlink events.
pub mod host_watch;
// Raw sockets that send the packets nfsentry forges (handshake replies).
pub mod inject;
// One nfsentry per table and per state directory.
pub mod instance;
// Netlink framing, sockets and request/answer exchanges shared by the kernel edges.
pub mod netlink_wire;
// Short-header packets from NFLOG.
pub mod nflog;
// The nft ruleset model and its netlink encoding.
pub mod nft;
// Queued packets and their verdicts.
pub mod queue;

// ── Edges: files, processes, network, the service manager ────────────────────────────────
// Crash-safe file replacement.
pub mod atomic_file;
// The control socket: its protocol, the daemon's and the command's ends, the printed text.
pub mod control;
// CrowdSec's Local API: pushing our blocks, pulling the fleet's.
pub mod crowdsec;
// The CrowdSec worker joined to the responder: pulled bans enforced, our blocks reported.
pub mod fleet;
// Where log lines go: stderr/journal, syslog, a file.
pub mod logging;
// The blocking actions and the responder thread that runs them.
pub mod respond;
// systemd's readiness, status and watchdog notifications.
pub mod sd_notify;
// The blocks journal and the history file.
pub mod store;
// A channel that wakes a thread sleeping in poll.
pub mod wake;

// ── The process ───────────────────────────────────────────────────────────────────────────
// `nfsentry run`: start-up, privileges, signals, threads and the packet loop.
pub mod daemon;
