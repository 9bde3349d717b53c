//! Running a slow action off the responder thread. [`Detached`] wraps an action: `block`,
//! `release` and `flush` hand their batch to the action's own worker threads over a bounded
//! queue and return at once, so the nft-set insert of the next burst never waits behind a
//! command, a legacy tool, a hosts.deny rewrite or a route change. It does not choose which
//! actions are detached ([`super::build`] does), and it changes nothing in what an action does.
//!
//! What holds:
//! - **Order.** Per address, the action sees block, release and flush in the order the
//!   responder gave them; a release never overtakes the block of its address, with one worker
//!   or several ([`queue::Queue::take`]).
//! - **Bound.** At most `queue_bound` addresses wait. Blocks beyond that are dropped for this
//!   action, counted, and reported at most once a second with a count; the nft set, the other
//!   actions and the journal still have them. Releases and flushes are always queued: dropping
//!   one would leave a block in place that nothing lifts any more.
//! - **Start.** `init` starts the workers; each worker's own instance of the action takes up
//!   its resources and restores the due blocks there. `init` waits `init_wait` for that, long
//!   enough for a missing tool or a refused socket to show, so such an action is still left out
//!   at start as before. A restore that takes longer (thousands of iptables rules) goes on in
//!   the background instead of holding up the start, and new blocks queue behind it.
//! - **Stop.** `fin` lets the workers drain the queue for at most `stop_wait` (about one run's
//!   own time limit), then abandons what is left, naming the releases not done, and returns: a
//!   hung tool cannot hold a clean stop.
//! - **Errors** are logged by the worker in the responder's words ("block of ADDR failed:
//!   ACTION: ...") and counted.
//!
//! Workers are started by `init`, on the responder thread, after the daemon dropped its
//! capabilities: they hold exactly what the responder holds.

use std::fmt;
use std::net::IpAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use caps::Capability;
use log::{error, info, warn};

use super::{Action, ActionError};
use crate::store::BlockRecord;

mod queue;
use queue::{Job, OverflowLog, Queue, Verb, OVERFLOW_REPORT_EVERY};

/// Addresses named in the line about releases left undone at an abandoned stop; the count says
/// how many more there were.
const ABANDONED_RELEASES_LISTED: usize = 16;

/// How a detached action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Worker threads, each with an instance of the action of its own. More than one only for
    /// an action whose instances share no state, each block standing alone (`command`).
    pub workers: usize,
    /// Most addresses waiting; blocks beyond it are dropped for this action and counted.
    pub queue_bound: usize,
    /// How long `init` waits for the workers to take up their resources and restore.
    pub init_wait: Duration,
    /// How long `fin` lets the workers drain before it abandons what is left.
    pub stop_wait: Duration,
}

/// Builds one instance of the wrapped action; called once for the instance that answers
/// `check` and `describe`, and once per worker at `init`.
pub type MakeAction = Box<dyn Fn() -> Box<dyn Action> + Send>;

/// An action run by worker threads of its own; see the module notes.
pub struct Detached {
    /// Answers `name`, `check`, `describe` and the capabilities; never initialised, so it holds
    /// no resources.
    front: Box<dyn Action>,
    make: MakeAction,
    shape: Shape,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// What a detached action's queue has done since the start, for the status line. The daemon
/// takes a handle before the action moves to the responder thread.
#[derive(Debug)]
pub struct Counters {
    action: &'static str,
    queued: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    abandoned: AtomicU64,
    waiting: AtomicU64,
}

impl Counters {
    fn new(action: &'static str) -> Counters {
        Counters {
            action,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    pub fn action(&self) -> &'static str {
        self.action
    }

    /// Blocks taken into the queue.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Blocks dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Addresses whose block or release failed, or that an action which could not start
    /// never ran.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Addresses left undone when a stop gave up waiting.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Addresses waiting now.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, count: usize) {
        counter.fetch_add(u64::try_from(count).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// `command: 36 blocks queued, 2 waiting, 12 dropped (queue full), 0 failed`.
impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} blocks queued, {} waiting, {} dropped (queue full), {} failed",
            self.action,
            self.queued(),
            self.waiting(),
            self.dropped(),
            self.failed()
        )?;
        match self.abandoned() {
            0 => Ok(()),
            abandoned => write!(f, ", {abandoned} abandoned at stop"),
        }
    }
}

/// The counters of every detached action, as a suffix for the daemon's status line: empty when
/// no action is detached, else `; command: ...; iptables: ...`.
pub struct StatusSuffix(pub Vec<Arc<Counters>>);

impl fmt::Display for StatusSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0
            .iter()
            .try_for_each(|counters| write!(f, "; {counters}"))
    }
}

/// The queue and the workers' state, under one lock, with the condition variable on which the
/// workers, `init` and `fin` wait for each other.
struct Shared {
    name: &'static str,
    state: Mutex<State>,
    /// Signalled on every change: a job queued or finished, a worker started or gone, a stop.
    changed: Condvar,
    counters: Arc<Counters>,
}

struct State {
    queue: Queue,
    overflow: OverflowLog,
    /// Workers whose instance's `init` has returned.
    started: usize,
    /// Workers still alive (counted from before their thread starts).
    running: usize,
    /// `init` is still waiting: an init error goes to it rather than to the log.
    init_waiting: bool,
    init_error: Option<ActionError>,
    /// An instance could not start: nothing is run, what is handed over counts as failed.
    unavailable: bool,
    /// Take no more than what is queued; exit when it is done.
    stopping: bool,
    /// Take nothing more at all.
    abandoned: bool,
    fin_error: Option<ActionError>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked holds no lock (actions run outside it); the state stays sound.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, state: MutexGuard<'a, State>, at_most: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(state, at_most)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn publish_waiting(&self, state: &State) {
        let waiting = u64::try_from(state.queue.waiting()).unwrap_or(u64::MAX);
        self.counters.waiting.store(waiting, Ordering::Relaxed);
    }

    fn report_overflow(&self, dropped: u64, bound: usize) {
        warn!(
            "action {}: queue full ({bound} waiting): {dropped} blocks dropped for this action \
             since the last report",
            self.name
        );
    }

    /// Records how a worker's `init` went; false when the action cannot run.
    fn started(&self, result: Result<(), ActionError>) -> bool {
        let mut state = self.lock();
        state.started += 1;
        let mut late_error = None;
        if let Err(error) = result {
            state.unavailable = true;
            let discarded: usize = state
                .queue
                .take_all()
                .iter()
                .map(|job| job.records.len())
                .sum();
            Counters::add(&self.counters.failed, discarded);
            self.publish_waiting(&state);
            match state.init_waiting {
                true => {
                    state.init_error.get_or_insert(error);
                }
                false => late_error = Some(error),
            }
        }
        let available = !state.unavailable;
        drop(state);
        self.changed.notify_all();
        if let Some(error) = late_error {
            error!(
                "action {} is unavailable and will not run: {error}",
                self.name
            );
        }
        available
    }

    /// The next job this worker may run; None when it is time to exit.
    fn next_job(&self, bound: usize) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if state.abandoned || state.unavailable {
                return None;
            }
            if let Some(job) = state.queue.take() {
                self.publish_waiting(&state);
                return Some(job);
            }
            if state.stopping && state.queue.is_empty() {
                return None;
            }
            if let Some(dropped) = state.overflow.due(Instant::now()) {
                drop(state);
                self.report_overflow(dropped, bound);
                state = self.lock();
                continue;
            }
            state = self.wait(state, OVERFLOW_REPORT_EVERY);
        }
    }

    fn finish(&self, job: &Job, outcome: Result<(), ActionError>, bound: usize) {
        let overflow = {
            let mut state = self.lock();
            state.queue.done(job);
            state.overflow.due(Instant::now())
        };
        self.changed.notify_all();
        if let Err(error) = outcome {
            Counters::add(
                &self.counters.failed,
                failed_count(&error, job.records.len()),
            );
            log_failure(job.verb, &job.records, &error);
        }
        if let Some(dropped) = overflow {
            self.report_overflow(dropped, bound);
        }
    }
}

/// Counts a worker out however it ends, a panic included, so that `fin` never waits for it.
struct Exit<'a>(&'a Shared);

impl Drop for Exit<'_> {
    fn drop(&mut self) {
        self.0.lock().running -= 1;
        self.0.changed.notify_all();
    }
}

/// One worker: its instance's `init`, then jobs until the stop, then its `fin`.
fn work(
    shared: Arc<Shared>,
    mut action: Box<dyn Action>,
    due: Arc<Vec<BlockRecord>>,
    now: SystemTime,
    bound: usize,
) {
    let _exit = Exit(&shared);
    let started = {
        let due: Vec<&BlockRecord> = due.iter().collect();
        action.init(&due, now)
    };
    drop(due);
    if !shared.started(started) {
        return;
    }
    while let Some(job) = shared.next_job(bound) {
        let outcome = run(action.as_mut(), &job, shared.name);
        shared.finish(&job, outcome, bound);
    }
    if let Err(error) = action.fin() {
        shared.lock().fin_error.get_or_insert(error);
    }
}

/// Runs one job. A panic in the action is caught and reported as its failure: before, it took
/// the responder thread down with it; here it would leave the job's addresses busy for good.
fn run(action: &mut dyn Action, job: &Job, name: &'static str) -> Result<(), ActionError> {
    let blocks: Vec<&BlockRecord> = job.records.iter().collect();
    let call = AssertUnwindSafe(|| match job.verb {
        // The time the job runs, not the time it was queued: an element timeout or a route's
        // lifetime counts from when it is placed.
        Verb::Block => action.block(&blocks, SystemTime::now()),
        Verb::Release => action.release(&blocks),
        Verb::Flush => action.flush(&blocks),
    });
    panic::catch_unwind(call).unwrap_or_else(|_| {
        Err(ActionError::Program {
            action: name,
            detail: "the action panicked".to_owned(),
        })
    })
}

/// Addresses a failed call stands for: a partial failure says how many, any other all of them.
fn failed_count(error: &ActionError, total: usize) -> usize {
    match error {
        ActionError::Partial { failed, .. } => *failed,
        _ => total,
    }
}

/// The responder's wording, so a detached failure reads as it did before.
fn log_failure(verb: Verb, records: &[BlockRecord], error: &ActionError) {
    let verb = verb.word();
    match records {
        [one] => error!("{verb} of {} failed: {error}", one.source),
        all => error!("{verb} of {} sources failed: {error}", all.len()),
    }
}

impl Detached {
    /// Wraps the action `make` builds. Nothing starts until `init`.
    pub fn new(make: impl Fn() -> Box<dyn Action> + Send + 'static, shape: Shape) -> Detached {
        let front = make();
        let shape = Shape {
            workers: shape.workers.max(1),
            ..shape
        };
        let name = front.name();
        let state = State {
            queue: Queue::new(shape.queue_bound, shape.workers > 1),
            overflow: OverflowLog::default(),
            started: 0,
            running: 0,
            init_waiting: false,
            init_error: None,
            unavailable: false,
            stopping: false,
            abandoned: false,
            fin_error: None,
        };
        Detached {
            front,
            make: Box::new(make),
            shape,
            shared: Arc::new(Shared {
                name,
                state: Mutex::new(state),
                changed: Condvar::new(),
                counters: Arc::new(Counters::new(name)),
            }),
            workers: Vec::new(),
        }
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.shared.counters)
    }

    fn hand_over(&self, verb: Verb, blocks: &[&BlockRecord]) {
        if blocks.is_empty() {
            return;
        }
        let records: Vec<BlockRecord> = blocks.iter().map(|block| (*block).clone()).collect();
        let counters = &self.shared.counters;
        let overflow = {
            let mut state = self.shared.lock();
            if state.unavailable || state.abandoned {
                Counters::add(&counters.failed, records.len());
                return;
            }
            let overflow = match verb {
                Verb::Block => {
                    let offered = records.len();
                    let refused = state.queue.push_blocks(records).len();
                    Counters::add(&counters.queued, offered - refused);
                    Counters::add(&counters.dropped, refused);
                    match refused {
                        0 => None,
                        n => state.overflow.note(n as u64, Instant::now()),
                    }
                }
                Verb::Release | Verb::Flush => {
                    state.queue.push_always(verb, records);
                    None
                }
            };
            self.shared.publish_waiting(&state);
            overflow
        };
        self.shared.changed.notify_all();
        if let Some(dropped) = overflow {
            self.shared.report_overflow(dropped, self.shape.queue_bound);
        }
    }

    fn spawn_worker(
        &mut self,
        index: usize,
        due: &Arc<Vec<BlockRecord>>,
        now: SystemTime,
    ) -> Result<(), ActionError> {
        let name = self.shared.name;
        let thread_name = match self.shape.workers {
            1 => name.to_owned(),
            _ => format!("{name}-{}", index + 1),
        };
        let action = (self.make)();
        let shared = Arc::clone(&self.shared);
        let due = Arc::clone(due);
        let bound = self.shape.queue_bound;
        self.shared.lock().running += 1;
        let spawned = thread::Builder::new()
            .name(thread_name)
            .spawn(move || work(shared, action, due, now, bound));
        match spawned {
            Ok(handle) => {
                self.workers.push(handle);
                Ok(())
            }
            Err(source) => {
                let mut state = self.shared.lock();
                state.running -= 1;
                state.unavailable = true;
                state.init_waiting = false;
                drop(state);
                self.shared.changed.notify_all();
                Err(ActionError::Thread {
                    action: name,
                    source,
                })
            }
        }
    }

    /// Waits up to `init_wait` for every worker's `init`: an error in that time is returned, so
    /// the responder leaves the action out; after it, a late error is logged by the worker.
    fn wait_for_start(&self, restoring: usize) -> Result<(), ActionError> {
        let deadline = Instant::now() + self.shape.init_wait;
        let mut state = self.shared.lock();
        loop {
            if let Some(error) = state.init_error.take() {
                state.init_waiting = false;
                return Err(error);
            }
            if state.started >= self.shape.workers {
                state.init_waiting = false;
                return Ok(());
            }
            let Some(left) = time_left(deadline) else {
                state.init_waiting = false;
                drop(state);
                info!(
                    "action {}: still restoring {restoring} blocks after {:?}; it goes on in \
                     the background, and new blocks wait behind it",
                    self.shared.name, self.shape.init_wait
                );
                return Ok(());
            };
            state = self.shared.wait(state, left);
        }
    }

    /// Logs and counts what an abandoned stop leaves undone.
    fn report_abandoned(&self, jobs: &[Job]) {
        let blocks: usize = jobs
            .iter()
            .filter(|job| job.verb == Verb::Block)
            .map(|job| job.records.len())
            .sum();
        let releases: Vec<IpAddr> = jobs
            .iter()
            .filter(|job| job.verb != Verb::Block)
            .flat_map(|job| job.records.iter().map(|record| record.source))
            .collect();
        Counters::add(&self.shared.counters.abandoned, blocks + releases.len());
        let mut line = format!(
            "action {}: still busy {:?} after the stop began; left undone: {blocks} blocks, \
             {} releases",
            self.shared.name,
            self.shape.stop_wait,
            releases.len()
        );
        if !releases.is_empty() {
            let listed: Vec<String> = releases
                .iter()
                .take(ABANDONED_RELEASES_LISTED)
                .map(IpAddr::to_string)
                .collect();
            line.push_str(&format!(" (not released: {}", listed.join(", ")));
            if let Some(more) = releases.len().checked_sub(ABANDONED_RELEASES_LISTED) {
                if more > 0 {
                    line.push_str(&format!(" and {more} more"));
                }
            }
            line.push(')');
        }
        warn!("{line}");
    }
}

fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
}

impl Action for Detached {
    fn name(&self) -> &'static str {
        self.front.name()
    }

    fn check(&self) -> Vec<String> {
        self.front.check()
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = self.front.describe();
        let workers = match self.shape.workers {
            1 => "a worker thread of its own".to_owned(),
            n => format!("{n} worker threads of its own"),
        };
        lines.push(format!(
            "runs off the responder thread, on {workers}: at most {} addresses wait, further \
             blocks are dropped for this action and counted",
            self.shape.queue_bound
        ));
        lines
    }

    fn capabilities(&self) -> &'static [Capability] {
        self.front.capabilities()
    }

    fn runs_programs(&self) -> bool {
        self.front.runs_programs()
    }

    fn detached(&self) -> Option<Arc<Counters>> {
        Some(self.counters())
    }

    /// Starts the workers, each of which has its own instance take up its resources and restore
    /// `due`; waits for them at most `init_wait` (see the module notes).
    fn init(&mut self, due: &[&BlockRecord], now: SystemTime) -> Result<(), ActionError> {
        if !self.workers.is_empty() {
            return Ok(());
        }
        let due = Arc::new(due.iter().map(|block| (*block).clone()).collect::<Vec<_>>());
        self.shared.lock().init_waiting = true;
        for index in 0..self.shape.workers {
            self.spawn_worker(index, &due, now)?;
        }
        self.wait_for_start(due.len())
    }

    fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        self.hand_over(Verb::Block, blocks);
        Ok(())
    }

    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        self.hand_over(Verb::Release, blocks);
        Ok(())
    }

    fn flush(&mut self, held: &[&BlockRecord]) -> Result<(), ActionError> {
        self.hand_over(Verb::Flush, held);
        Ok(())
    }

    /// Drains for at most `stop_wait`, then abandons the rest (see the module notes). Workers
    /// still busy then are left to the process's exit.
    fn fin(&mut self) -> Result<(), ActionError> {
        let deadline = Instant::now() + self.shape.stop_wait;
        let mut state = self.shared.lock();
        state.stopping = true;
        self.shared.changed.notify_all();
        while state.running > 0 {
            let Some(left) = time_left(deadline) else {
                break;
            };
            state = self.shared.wait(state, left);
        }
        let drained = state.running == 0;
        let left_undone = match drained {
            true => Vec::new(),
            false => {
                state.abandoned = true;
                state.queue.take_all()
            }
        };
        self.shared.publish_waiting(&state);
        let overflow = state.overflow.rest();
        let fin_error = state.fin_error.take();
        drop(state);
        self.shared.changed.notify_all();
        if let Some(dropped) = overflow {
            self.shared.report_overflow(dropped, self.shape.queue_bound);
        }
        match drained {
            true => {
                for worker in self.workers.drain(..) {
                    let _ = worker.join();
                }
            }
            false => {
                self.report_abandoned(&left_undone);
                self.workers.clear();
            }
        }
        fin_error.map_or(Ok(()), Err)
    }
}

/// A Detached dropped without `fin` (its init failed, or the responder is unwinding) lets its
/// workers go without draining.
impl Drop for Detached {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if !state.stopping {
            state.stopping = true;
            state.abandoned = true;
        }
        drop(state);
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests;
