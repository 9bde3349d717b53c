//! The inline block: a queue reader puts the blocks its packets ordered into the kernel's
//! blocked sets itself, over a netlink socket of its own, before it gives the kernel the
//! verdicts of those packets. Handing them to the responder thread first costs that thread's
//! wake-up, hundreds of microseconds on a busy or virtual machine, while one element commit
//! costs tens; so the source is dropped by the kernel from its very next packet.
//!
//! The orders of one receive call (up to 64 packets) are held, with their log lines, and their
//! blocks go to the kernel in one commit once the call's packets are judged: a storm costs one
//! commit per receive call, not one per source. The releases held with them (a full block
//! table evicts its oldest block in the call that orders a new one) are taken out of the sets
//! just before, so the sets never hold more than `max_blocks`. Blocks ordered between receive
//! calls (the tick's, which hands rate-limited sources their tokens, and NFLOG's short headers)
//! go in the same way, at once. Then the lines are written and every held order goes to the
//! responder, marked with when its element went in (`in_set_since`): the responder journals it
//! and runs the other actions, but does not add the element again. A second commit per block would
//! halve what a block storm can reach, and would put back an element an admin deleted by hand
//! in the moment between the two. Both sides take the element's timeout from
//! [`crate::respond::nft_set::element`], so the kernel holds what the responder alone would
//! have put there; and where the responder deleted the source's element after this commit (a
//! release of its earlier block carried out late, a repair from the journal that did not hold
//! the block yet), it adds the element after all. Since the orders leave only after the
//! commit, a release ordered in the same call still reaches the responder after the block it
//! undoes. The time from detection to this commit's acknowledgement goes into the same
//! histogram the responder feeds, and the order leaves without its detection time, so each
//! block is timed once.
//!
//! A refused commit (the table deleted by `nft flush ruleset` and not yet repaired, the
//! admin's sets not loaded yet) is said once per kind at debug level and counted; the orders
//! then go to the responder untouched, which does what it always did. The verdicts wait for
//! this commit and nothing else. It decides nothing: which sources to block is the pipeline's.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, warn};
use nix::errno::Errno;

use super::{send_orders, write_line};
use crate::error_text::with_causes;
use crate::nft::netlink::Nft;
use crate::pipeline::{LogLine, Order};
use crate::respond::block_latency::BlockLatency;
use crate::respond::nft_set;
use crate::respond::responder::Order as ResponderOrder;

/// One queue reader's inline block.
pub(super) struct InlineBlock {
    nft: Nft,
    /// The `inet` table whose `blocked_v4` and `blocked_v6` sets hold the blocks: nfsentry's,
    /// or the admin's `respond.blocked_table`.
    table: String,
    /// The orders of the packets judged since the last commit, in the order they came.
    orders: Vec<Order>,
    /// Their log lines, written once the blocks are in.
    lines: Vec<LogLine>,
    /// The elements of the next commit; kept to reuse its memory.
    elements: Vec<(IpAddr, Option<Duration>)>,
    /// The sources whose last held order is a release, taken out before the commit.
    released: Vec<IpAddr>,
    /// The sources a held order decided, last order first; kept to reuse its memory.
    decided: HashSet<IpAddr>,
    latency: Arc<BlockLatency>,
    /// The kinds of failure (errno, or none) already said.
    failures_said: Vec<Option<Errno>>,
}

impl InlineBlock {
    /// Opens the reader's own netlink socket; None (said at warn level) when it cannot, and the
    /// reader then hands its blocks to the responder alone.
    pub(super) fn open(table: &str, latency: Arc<BlockLatency>) -> Option<InlineBlock> {
        match Nft::open() {
            Ok(nft) => Some(InlineBlock {
                nft,
                table: table.to_owned(),
                orders: Vec::new(),
                lines: Vec::new(),
                elements: Vec::new(),
                released: Vec::new(),
                decided: HashSet::new(),
                latency,
                failures_said: Vec::new(),
            }),
            Err(e) => {
                warn!(
                    "a queue reader cannot open its netlink socket ({}): its blocks reach the \
                     kernel through the responder only",
                    with_causes(&e)
                );
                None
            }
        }
    }

    /// Holds one packet's orders and lines (taken out of `lines`, whose memory stays with the
    /// caller) until [`InlineBlock::commit`].
    pub(super) fn hold(&mut self, orders: Vec<Order>, lines: &mut Vec<LogLine>) {
        self.orders.extend(orders);
        self.lines.append(lines);
    }

    /// Puts the held blocks into the kernel's sets in one commit and waits for the ack, then
    /// writes the held lines and hands every held order to the responder.
    pub(super) fn commit(&mut self, responder: &mpsc::Sender<ResponderOrder>) {
        self.put_blocks_in();
        for line in self.lines.drain(..) {
            write_line(&line);
        }
        send_orders(responder, std::mem::take(&mut self.orders), &[]);
    }

    /// Makes the kernel's sets what the held orders, in their order, make them: per source the
    /// last order decides. Released sources go out first, then the blocked ones go in, and only
    /// the blocks that went in are marked as in the set, so the responder adds the rest.
    ///
    /// The releases matter because a full block table makes room by evicting its oldest block
    /// in the same call that orders the new one: deleted only later by the responder, the old
    /// element would stand beside the new one for a moment, past `max_blocks`. Absent elements
    /// are no error there (see [`Nft::release_many`]); the responder deletes them again, which
    /// is none either. A refused delete leaves them to the responder, as before.
    fn put_blocks_in(&mut self) {
        let now = SystemTime::now();
        self.elements.clear();
        self.released.clear();
        self.decided.clear();
        for order in self.orders.iter().rev() {
            match order {
                Order::Block(block) if self.decided.insert(block.record.source) => {
                    self.elements.push(nft_set::element(&block.record, now));
                }
                Order::Release(release) if self.decided.insert(release.source) => {
                    self.released.push(release.source);
                }
                _ => {}
            }
        }
        if !self.released.is_empty() {
            if let Err(e) = self.nft.release_many(&self.table, &self.released) {
                debug!(
                    "the queue reader could not take {} released blocks out of table inet {} \
                     itself ({}); the responder does",
                    self.released.len(),
                    self.table,
                    with_causes(&e)
                );
            }
        }
        if self.elements.is_empty() {
            return;
        }
        // Taken before the commit goes out, so that any delete the kernel commits after this
        // add is later than it (see `BlockOrder::in_set_since`).
        let sent = Instant::now();
        match self.nft.block_many(&self.table, &self.elements) {
            Ok(()) => {
                let acked = Instant::now();
                // What is left decided is what went in.
                for source in &self.released {
                    self.decided.remove(source);
                }
                for order in &mut self.orders {
                    if let Order::Block(block) = order {
                        if !self.decided.contains(&block.record.source) {
                            continue;
                        }
                        block.in_set_since = Some(sent);
                        if let Some(detected) = block.detected_at.take() {
                            self.latency
                                .record_inline(acked.saturating_duration_since(detected));
                        }
                    }
                }
            }
            Err(e) => {
                self.latency.note_inline_failure();
                let kind = e.errno();
                if !self.failures_said.contains(&kind) {
                    self.failures_said.push(kind);
                    debug!(
                        "the queue reader could not put {} blocks into table inet {} itself \
                         ({}); the responder puts them in (said once per kind of failure)",
                        self.elements.len(),
                        self.table,
                        with_causes(&e)
                    );
                }
            }
        }
    }
}
