//! The reports waiting for the LAPI: blocks to push and our decisions to delete, in the order
//! they happened, bounded so that a long outage or a flood of blocks costs fixed memory. When
//! full, the oldest report is dropped and counted: the newest blocks are the ones still
//! running. Pure; the worker decides when to send.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::wire::{canonical, LocalBlock};

/// One report for the LAPI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Push an alert with one ban for this block.
    Push(Box<LocalBlock>),
    /// Delete the decisions nfsentry made on this address (it was unblocked by hand).
    Delete(IpAddr),
}

/// The queue of reports.
#[derive(Debug)]
pub struct Backlog {
    jobs: VecDeque<Job>,
    capacity: usize,
    dropped: u64,
}

impl Backlog {
    /// An empty backlog holding at most `capacity` (at least one) reports.
    pub fn new(capacity: usize) -> Backlog {
        Backlog {
            jobs: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Queues a block; drops the oldest report if full.
    pub fn push(&mut self, block: LocalBlock) {
        self.add(Job::Push(Box::new(block)));
    }

    /// Queues the deletion of our decision on `address`. A push for it still waiting is
    /// cancelled: there is no point banning fleet-wide what was just lifted.
    pub fn delete(&mut self, address: IpAddr) {
        let address = canonical(address);
        self.jobs.retain(|job| match job {
            Job::Push(block) => canonical(block.record.source) != address,
            Job::Delete(_) => true,
        });
        self.add(Job::Delete(address));
    }

    /// The next reports to send together: up to `max` pushes in a row (one POST carries them
    /// all), or a single deletion.
    pub fn take_batch(&mut self, max: usize) -> Vec<Job> {
        let mut batch = Vec::new();
        if let Some(Job::Delete(_)) = self.jobs.front() {
            batch.extend(self.jobs.pop_front());
            return batch;
        }
        while batch.len() < max.max(1) {
            match self.jobs.front() {
                Some(Job::Push(_)) => batch.extend(self.jobs.pop_front()),
                _ => break,
            }
        }
        batch
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Reports dropped because the backlog was full, ever.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn add(&mut self, job: Job) {
        if self.jobs.len() >= self.capacity {
            self.jobs.pop_front();
            self.dropped += 1;
        }
        self.jobs.push_back(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BlockRecord;

    fn block(source: &str) -> LocalBlock {
        LocalBlock::new(BlockRecord {
            source: source.parse().unwrap(),
            added: 1_700_000_000,
            expires: None,
            protocol: "TCP".into(),
            port: 23,
            kind: "SYN/Normal".into(),
            verified: false,
        })
    }

    fn sources(jobs: &[Job]) -> Vec<String> {
        jobs.iter()
            .map(|job| match job {
                Job::Push(block) => format!("push {}", block.record.source),
                Job::Delete(address) => format!("delete {address}"),
            })
            .collect()
    }

    #[test]
    fn when_full_the_oldest_is_dropped_and_counted() {
        let mut backlog = Backlog::new(3);
        for last in 1..=5 {
            backlog.push(block(&format!("198.51.100.{last}")));
        }
        assert_eq!((backlog.len(), backlog.dropped()), (3, 2));
        assert_eq!(
            sources(&backlog.take_batch(10)),
            [
                "push 198.51.100.3",
                "push 198.51.100.4",
                "push 198.51.100.5"
            ]
        );
        assert!(backlog.is_empty());
        assert_eq!(Backlog::new(0).capacity, 1);
    }

    #[test]
    fn batches_are_runs_of_pushes_or_one_deletion_in_order() {
        let mut backlog = Backlog::new(100);
        backlog.push(block("198.51.100.1"));
        backlog.push(block("198.51.100.2"));
        backlog.push(block("198.51.100.3"));
        backlog.delete("198.51.100.9".parse().unwrap());
        backlog.delete("198.51.100.8".parse().unwrap());
        backlog.push(block("198.51.100.4"));
        assert_eq!(
            sources(&backlog.take_batch(2)),
            ["push 198.51.100.1", "push 198.51.100.2"]
        );
        assert_eq!(sources(&backlog.take_batch(2)), ["push 198.51.100.3"]);
        assert_eq!(sources(&backlog.take_batch(2)), ["delete 198.51.100.9"]);
        assert_eq!(sources(&backlog.take_batch(2)), ["delete 198.51.100.8"]);
        assert_eq!(sources(&backlog.take_batch(2)), ["push 198.51.100.4"]);
        assert!(backlog.take_batch(2).is_empty());
    }

    #[test]
    fn a_deletion_cancels_the_waiting_push_of_its_address() {
        let mut backlog = Backlog::new(100);
        backlog.push(block("198.51.100.1"));
        backlog.push(block("::ffff:198.51.100.2"));
        backlog.push(block("198.51.100.3"));
        backlog.delete("198.51.100.2".parse().unwrap());
        assert_eq!(
            sources(&backlog.take_batch(10)),
            ["push 198.51.100.1", "push 198.51.100.3"]
        );
        assert_eq!(sources(&backlog.take_batch(10)), ["delete 198.51.100.2"]);
    }
}
