//! What an admin asks of the responder through the control socket: block, unblock and flush by
//! hand, the list of blocks, and a reloaded ruleset. Each carries a channel for its outcome,
//! sent once the kernel (and every action on the responder thread) has done it, so that the
//! command returns with the change in force.
//!
//! Like the pipeline's orders these go through every action and into the journal; unlike them,
//! a failure is reported to whoever asked instead of only to the log.

use std::net::IpAddr;
use std::sync::mpsc::SyncSender;
use std::time::SystemTime;

use log::{error, info, warn};

use super::Responder;
use crate::error_text::with_causes;
use crate::firewall::Firewall;
use crate::nft::ruleset::RulesetSpec;
use crate::pipeline::{BlockOrder, BY_HAND};
use crate::report;
use crate::store::BlockRecord;

/// A change done by hand: what it did, in a sentence, and how many blocks it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub summary: String,
    pub count: usize,
}

/// Where the outcome of a change goes: `Err` says what failed.
pub type Done = SyncSender<Result<Changed, String>>;

/// The blocks in force and the actions that hold each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// In address order.
    pub blocks: Vec<BlockRecord>,
    /// The actions running, in the order they run; each holds every block.
    pub actions: Vec<&'static str>,
}

/// An admin's command, for the responder.
pub enum ByHand {
    /// The pipeline has already marked the source blocked.
    Block {
        order: BlockOrder,
        done: Done,
    },
    /// The pipeline has already forgotten the source's block.
    Unblock {
        source: IpAddr,
        done: Done,
    },
    Flush {
        done: Done,
    },
    List {
        reply: SyncSender<Holding>,
    },
    /// The watched ports and ignore list of a reloaded config; `done` is None for SIGHUP.
    Refill {
        spec: Box<RulesetSpec>,
        /// What the reload did, for whoever asked once the kernel has it.
        summary: String,
        done: Option<Done>,
    },
}

impl Responder {
    /// Carries out one command and sends its outcome; a requester that stopped waiting is no
    /// reason to undo anything.
    pub(super) fn by_hand(&mut self, command: ByHand, firewall: &mut Firewall) {
        match command {
            ByHand::Block { order, done } => {
                let _ = done.send(self.block_by_hand(order));
            }
            ByHand::Unblock { source, done } => {
                let _ = done.send(self.unblock_by_hand(source));
            }
            ByHand::Flush { done } => {
                let _ = done.send(self.flush_by_hand());
            }
            ByHand::List { reply } => {
                let mut blocks: Vec<BlockRecord> = self.store.live().cloned().collect();
                blocks.sort_unstable_by_key(|block| block.source);
                let actions = self.actions.iter().map(|action| action.name()).collect();
                let _ = reply.send(Holding { blocks, actions });
            }
            ByHand::Refill {
                spec,
                summary,
                done,
            } => {
                let outcome = firewall.refill(&spec).map_err(|e| {
                    let reason = format!("cannot apply the new ruleset: {}", with_causes(&e));
                    error!("{reason}; the old one stays in place");
                    reason
                });
                if let Some(done) = done {
                    let _ = done.send(outcome.map(|()| Changed { summary, count: 0 }));
                }
            }
        }
    }

    fn block_by_hand(&mut self, order: BlockOrder) -> Result<Changed, String> {
        let now = SystemTime::now();
        let record = order.record.clone();
        let failures = self.each_action(|action| action.block(&[&record], now));
        if let Some(fleet) = &self.fleet {
            fleet.blocked(&[&record]);
        }
        // Journaled even when an action failed: the block is due, and the next start retries.
        self.store.add(order.record, &order.history_line);
        self.sync();
        warn!("{} ({BY_HAND})", report::blocked_line(record.source));
        let until = match record.expires {
            Some(end) => format!("for {}s", end.saturating_sub(record.added)),
            None => "until released".to_owned(),
        };
        outcome(format!("blocked {} {until}", record.source), 1, failures)
    }

    fn unblock_by_hand(&mut self, source: IpAddr) -> Result<Changed, String> {
        let Some(record) = self.store.remove(&source) else {
            return Err(format!("{source} is not blocked"));
        };
        let failures = self.each_action(|action| action.release(&[&record]));
        self.deletions.of([source]);
        // The fleet forgets our decision too, or every host would keep the address out.
        self.unblocked_by_hand(source);
        self.sync();
        info!("{}", report::released_line(source, BY_HAND));
        outcome(format!("unblocked {source}"), 1, failures)
    }

    fn flush_by_hand(&mut self) -> Result<Changed, String> {
        let mut sources: Vec<IpAddr> = self.store.live().map(|block| block.source).collect();
        sources.sort_unstable();
        let records: Vec<BlockRecord> = sources
            .iter()
            .filter_map(|source| self.store.remove(source))
            .collect();
        let due: Vec<&BlockRecord> = records.iter().collect();
        let failures = match due.is_empty() {
            true => Vec::new(),
            false => self.each_action(|action| action.release(&due)),
        };
        self.deletions.of(sources.iter().copied());
        for source in &sources {
            self.unblocked_by_hand(*source);
        }
        self.sync();
        // One line for the lot: a flush of a flood's blocks must not flood the log.
        info!(
            "attackalert: {} hosts have been released ({BY_HAND}: flush)",
            records.len()
        );
        outcome(
            format!("unblocked {} addresses", records.len()),
            records.len(),
            failures,
        )
    }

    /// Runs `verb` on every action, in order; returns what failed, one line each.
    fn each_action(
        &mut self,
        mut verb: impl FnMut(&mut dyn super::Action) -> Result<(), super::super::ActionError>,
    ) -> Vec<String> {
        let mut failures = Vec::new();
        for action in &mut self.actions {
            if let Err(e) = verb(action.as_mut()) {
                error!("{e}");
                failures.push(e.to_string());
            }
        }
        failures
    }
}

/// Done when every action did its part; otherwise what was done and what failed.
fn outcome(summary: String, count: usize, failures: Vec<String>) -> Result<Changed, String> {
    match failures.is_empty() {
        true => Ok(Changed { summary, count }),
        false => Err(format!("{summary}, but: {}", failures.join("; "))),
    }
}
