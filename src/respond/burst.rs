//! Splits a burst of orders into batches that the responder can each carry out as one call per
//! action and one journal flush, with the same outcome as carrying them out one by one.
//!
//! Within a batch, releases go first, then blocks, then renewals; that reorders nothing that
//! matters because a batch holds each source at most once. An order for a source already in
//! the current batch (blocked, then given up to make room, in the same burst) starts the next
//! batch. This module only sorts; it runs nothing.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::pipeline::{BlockOrder, ReleaseOrder, RenewOrder};

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) releases: Vec<ReleaseOrder>,
    pub(crate) blocks: Vec<BlockOrder>,
    pub(crate) renewals: Vec<RenewOrder>,
}

/// Orders in the order they came, cut into batches.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    done: Vec<Batch>,
    current: Batch,
    sources: HashSet<IpAddr>,
}

impl Burst {
    pub(crate) fn block(&mut self, order: BlockOrder) {
        self.make_room_for(order.record.source);
        self.current.blocks.push(order);
    }

    pub(crate) fn release(&mut self, order: ReleaseOrder) {
        self.make_room_for(order.source);
        self.current.releases.push(order);
    }

    pub(crate) fn renew(&mut self, order: RenewOrder) {
        self.make_room_for(order.source);
        self.current.renewals.push(order);
    }

    pub(crate) fn into_batches(mut self) -> Vec<Batch> {
        if !self.sources.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }

    fn make_room_for(&mut self, source: IpAddr) {
        if !self.sources.insert(source) {
            self.done.push(std::mem::take(&mut self.current));
            self.sources.clear();
            self.sources.insert(source);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::EVICTED;
    use crate::store::BlockRecord;

    fn block(source: &str) -> BlockOrder {
        BlockOrder {
            record: BlockRecord::example(source, None),
            history_line: format!("history {source}"),
            log: true,
            detected_at: None,
            in_set_since: None,
        }
    }

    fn release(source: &str) -> ReleaseOrder {
        ReleaseOrder {
            source: source.parse().unwrap(),
            why: EVICTED,
            log: true,
        }
    }

    fn renew(source: &str) -> RenewOrder {
        RenewOrder {
            source: source.parse().unwrap(),
            expires: None,
        }
    }

    #[test]
    fn distinct_sources_make_one_batch() {
        let mut burst = Burst::default();
        burst.block(block("198.51.100.1"));
        burst.release(release("198.51.100.2"));
        burst.block(block("198.51.100.3"));
        burst.renew(renew("198.51.100.4"));
        assert_eq!(
            burst.into_batches(),
            [Batch {
                releases: vec![release("198.51.100.2")],
                blocks: vec![block("198.51.100.1"), block("198.51.100.3")],
                renewals: vec![renew("198.51.100.4")],
            }]
        );
    }

    #[test]
    fn a_source_seen_again_starts_the_next_batch_so_its_orders_keep_their_order() {
        let mut burst = Burst::default();
        burst.block(block("198.51.100.1"));
        burst.block(block("198.51.100.2"));
        // 198.51.100.1 is given up for 198.51.100.3, then comes back.
        burst.release(release("198.51.100.1"));
        burst.block(block("198.51.100.3"));
        burst.block(block("198.51.100.1"));
        let batches = burst.into_batches();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].blocks.len(), 2);
        assert_eq!(batches[1].releases, [release("198.51.100.1")]);
        assert_eq!(batches[1].blocks, [block("198.51.100.3")]);
        assert_eq!(batches[2].blocks, [block("198.51.100.1")]);
    }

    #[test]
    fn nothing_makes_no_batch() {
        assert!(Burst::default().into_batches().is_empty());
    }
}
