//! The work queue behind a detached action: jobs in the order the responder handed them over,
//! bounded in the addresses they hold, given to workers so that two jobs naming one address
//! never run at once nor out of order. It has no threads, locks or clock of its own: the
//! [`super`] module keeps it under a mutex and passes the time in, so its rules are tested
//! here on their own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::store::BlockRecord;

/// How often, at most, a full queue is reported; each line says how many blocks it refused
/// since the last one.
pub const OVERFLOW_REPORT_EVERY: Duration = Duration::from_secs(1);

/// What a job asks of the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Block,
    Release,
    Flush,
}

impl Verb {
    /// The word the responder uses for it in log lines ("block of ... failed").
    pub fn word(self) -> &'static str {
        match self {
            Verb::Block => "block",
            Verb::Release => "release",
            Verb::Flush => "flush",
        }
    }
}

/// One call of the action, waiting or being run.
#[derive(Debug)]
pub struct Job {
    pub verb: Verb,
    pub records: Vec<BlockRecord>,
}

/// Jobs waiting, and the addresses of the jobs being run.
#[derive(Debug)]
pub struct Queue {
    jobs: VecDeque<Job>,
    /// Addresses in `jobs`, which `bound` limits.
    waiting: usize,
    bound: usize,
    /// One job per block instead of one per batch, so that several workers share a burst.
    split_blocks: bool,
    /// Addresses of the jobs workers hold now, with how many such jobs name each.
    busy: HashMap<IpAddr, usize>,
}

impl Queue {
    /// A queue that holds at most `bound` waiting addresses of blocks; `split_blocks` makes each
    /// block a job of its own (for a pool of workers).
    pub fn new(bound: usize, split_blocks: bool) -> Queue {
        Queue {
            jobs: VecDeque::new(),
            waiting: 0,
            bound,
            split_blocks,
            busy: HashMap::new(),
        }
    }

    /// Addresses waiting to be worked on.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Queues as many of `blocks` as there is room for, in their order, and returns the ones
    /// refused. A refused block is not placed by this action; the other actions, the journal
    /// and the next start's restore still have it.
    pub fn push_blocks(&mut self, mut blocks: Vec<BlockRecord>) -> Vec<BlockRecord> {
        let room = self.bound.saturating_sub(self.waiting);
        let refused = blocks.split_off(room.min(blocks.len()));
        match self.split_blocks {
            true => {
                for block in blocks {
                    self.push_job(Verb::Block, vec![block]);
                }
            }
            false => self.push_job(Verb::Block, blocks),
        }
        refused
    }

    /// Queues a release or a flush whatever the bound: dropping one would leave in place a
    /// block that nothing lifts any more (the journal has already forgotten it). Their number
    /// is bounded by the blocks this action took, each of which is released at most once.
    pub fn push_always(&mut self, verb: Verb, records: Vec<BlockRecord>) {
        self.push_job(verb, records);
    }

    fn push_job(&mut self, verb: Verb, records: Vec<BlockRecord>) {
        if records.is_empty() {
            return;
        }
        self.waiting += records.len();
        self.jobs.push_back(Job { verb, records });
    }

    /// The first job that may run now, marked as being run: none of its addresses is in a job a
    /// worker holds, nor in an earlier job still waiting. With one worker that is always the
    /// oldest job; with several, a slow address holds back only the jobs that name it.
    pub fn take(&mut self) -> Option<Job> {
        let mut passed_over: HashSet<IpAddr> = HashSet::new();
        let mut found = None;
        for (index, job) in self.jobs.iter().enumerate() {
            let free = job.records.iter().all(|record| {
                !self.busy.contains_key(&record.source) && !passed_over.contains(&record.source)
            });
            if free {
                found = Some(index);
                break;
            }
            passed_over.extend(job.records.iter().map(|record| record.source));
        }
        let job = self.jobs.remove(found?)?;
        self.waiting -= job.records.len();
        for record in &job.records {
            *self.busy.entry(record.source).or_default() += 1;
        }
        Some(job)
    }

    /// A worker has finished `job`: later jobs naming its addresses may run.
    pub fn done(&mut self, job: &Job) {
        for record in &job.records {
            if let Some(count) = self.busy.get_mut(&record.source) {
                *count -= 1;
                if *count == 0 {
                    self.busy.remove(&record.source);
                }
            }
        }
    }

    /// Every waiting job, taken out (at an abandoned stop, or when the action cannot run).
    pub fn take_all(&mut self) -> Vec<Job> {
        self.waiting = 0;
        self.jobs.drain(..).collect()
    }
}

/// The rate limit on "queue full" lines: the first refusal is reported at once, later ones at
/// most once per [`OVERFLOW_REPORT_EVERY`] with their count, and whatever is left at the stop.
#[derive(Debug, Default)]
pub struct OverflowLog {
    unreported: u64,
    last_line: Option<Instant>,
}

impl OverflowLog {
    /// Counts `refused` blocks at `now`; the count to report if a line is due.
    pub fn note(&mut self, refused: u64, now: Instant) -> Option<u64> {
        self.unreported += refused;
        self.due(now)
    }

    /// The count held back, once a line is due again.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        let quiet_long_enough = self.last_line.map_or(true, |last| {
            now.saturating_duration_since(last) >= OVERFLOW_REPORT_EVERY
        });
        match self.unreported > 0 && quiet_long_enough {
            true => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.unreported))
            }
            false => None,
        }
    }

    /// The count held back, due or not (at the stop).
    pub fn rest(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.unreported)).filter(|count| *count > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(addr: &str) -> BlockRecord {
        BlockRecord::example(addr, None)
    }

    fn records(addrs: &[&str]) -> Vec<BlockRecord> {
        addrs.iter().map(|addr| record(addr)).collect()
    }

    fn sources(job: &Job) -> Vec<String> {
        job.records.iter().map(|r| r.source.to_string()).collect()
    }

    #[test]
    fn one_worker_takes_jobs_in_the_order_they_came() {
        let mut queue = Queue::new(100, false);
        assert!(queue
            .push_blocks(records(&["192.0.2.1", "192.0.2.2"]))
            .is_empty());
        queue.push_always(Verb::Release, records(&["192.0.2.1"]));
        queue.push_blocks(records(&["192.0.2.3"]));
        assert_eq!(queue.waiting(), 4);

        let mut order = Vec::new();
        while let Some(job) = queue.take() {
            order.push((job.verb, sources(&job)));
            queue.done(&job);
        }
        assert_eq!(
            order,
            [
                (Verb::Block, vec!["192.0.2.1".into(), "192.0.2.2".into()]),
                (Verb::Release, vec!["192.0.2.1".into()]),
                (Verb::Block, vec!["192.0.2.3".into()]),
            ]
        );
        assert_eq!(queue.waiting(), 0);
    }

    #[test]
    fn a_release_waits_for_the_block_of_its_address_while_others_pass() {
        let mut queue = Queue::new(100, true);
        queue.push_blocks(records(&["192.0.2.1", "192.0.2.2"]));
        queue.push_always(Verb::Release, records(&["192.0.2.1"]));
        queue.push_blocks(records(&["192.0.2.3"]));

        let slow = queue.take().unwrap();
        assert_eq!(
            (slow.verb, sources(&slow)),
            (Verb::Block, vec!["192.0.2.1".into()])
        );
        // A second worker: the other block, then past the release of the busy address.
        let second = queue.take().unwrap();
        assert_eq!(sources(&second), ["192.0.2.2"]);
        let third = queue.take().unwrap();
        assert_eq!(
            (third.verb, sources(&third)),
            (Verb::Block, vec!["192.0.2.3".into()])
        );
        assert!(queue.take().is_none(), "the release overtook its block");

        queue.done(&slow);
        let release = queue.take().unwrap();
        assert_eq!(
            (release.verb, sources(&release)),
            (Verb::Release, vec!["192.0.2.1".into()])
        );
    }

    #[test]
    fn a_later_job_for_an_address_waits_behind_an_earlier_one_not_yet_taken() {
        let mut queue = Queue::new(100, true);
        queue.push_blocks(records(&["192.0.2.1"]));
        queue.push_always(Verb::Release, records(&["192.0.2.9", "192.0.2.1"]));
        queue.push_blocks(records(&["192.0.2.9"]));
        let first = queue.take().unwrap();
        assert_eq!(sources(&first), ["192.0.2.1"]);
        // The release is held back by .1; the block of .9 must not pass the release of .9.
        assert!(queue.take().is_none());
        queue.done(&first);
        assert_eq!(queue.take().map(|job| job.verb), Some(Verb::Release));
    }

    #[test]
    fn blocks_beyond_the_bound_are_refused_and_releases_never_are() {
        let mut queue = Queue::new(3, true);
        let refused = queue.push_blocks(records(&[
            "192.0.2.1",
            "192.0.2.2",
            "192.0.2.3",
            "192.0.2.4",
            "192.0.2.5",
        ]));
        let refused: Vec<String> = refused.iter().map(|r| r.source.to_string()).collect();
        assert_eq!(refused, ["192.0.2.4", "192.0.2.5"]);
        assert_eq!(queue.waiting(), 3);

        queue.push_always(Verb::Release, records(&["192.0.2.1", "192.0.2.2"]));
        assert_eq!(queue.waiting(), 5);
        assert_eq!(queue.push_blocks(records(&["192.0.2.6"])).len(), 1);

        // A job being run no longer counts against the bound.
        let taken = queue.take().unwrap();
        assert_eq!(queue.waiting(), 4);
        queue.done(&taken);
        let left: usize = queue.take_all().iter().map(|job| job.records.len()).sum();
        assert_eq!(left, 4);
        assert_eq!(queue.waiting(), 0);
        assert!(queue.push_blocks(records(&["192.0.2.6"])).is_empty());
    }

    #[test]
    fn one_worker_gets_a_burst_as_one_job() {
        let mut queue = Queue::new(10, false);
        queue.push_blocks(records(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]));
        let job = queue.take().unwrap();
        assert_eq!(job.records.len(), 3);
        assert!(queue.is_empty());
    }

    #[test]
    fn overflow_lines_come_at_most_once_a_second_with_their_count() {
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let mut log = OverflowLog::default();
        assert_eq!(log.due(at(0)), None, "nothing refused yet");
        assert_eq!(
            log.note(1, at(0)),
            Some(1),
            "the first refusal is reported at once"
        );
        assert_eq!(log.note(4, at(200)), None);
        assert_eq!(log.note(2, at(900)), None);
        assert_eq!(log.due(at(999)), None);
        assert_eq!(log.due(at(1000)), Some(6));
        assert_eq!(log.due(at(5000)), None, "nothing held back");
        assert_eq!(log.note(3, at(5000)), Some(3));
        assert_eq!(log.note(5, at(5100)), None);
        assert_eq!(log.rest(), Some(5));
        assert_eq!(log.rest(), None);
    }
}
