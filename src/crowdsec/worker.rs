//! The fleet worker: one thread that pushes nfsentry's blocks to the LAPI and pulls the
//! fleet's bans from it, so that no packet ever waits for the network.
//!
//! Reports come in through a [`Reporter`] (a short mutex, never a network call), changes for
//! the firewall go out through the sink given to [`spawn`], and a [`Watch`] reads the
//! [`Status`] and the bans held from any thread at any time. The thread owns the retries: a backlog that outlives outages, backoff with
//! jitter, a resync after every reconnect, the token renewed before it runs out or when
//! refused. It decides nothing about the firewall itself; the responder does.

use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, warn};

use super::backlog::{Backlog, Job};
use super::client::{Client, LapiError, Timeouts};
use super::decisions::{Change, DecisionTable, HeldBan, TableCounts};
use super::retry::{Backoff, LogOnce, Outage, Transition};
use super::session::Token;
use super::text::parse_rfc3339;
use super::wire::{alert_for, Alert, LocalBlock};
use crate::config::{self, format_duration, LapiUrl};

/// An error kept for `nfsentry status` is cut to this: the LAPI's messages are cut shorter
/// already, a transport error is a sentence.
const LAST_ERROR_MAX_CHARS: usize = 300;

/// What the worker needs: the validated `[crowdsec]` section and the tuning below.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: LapiUrl,
    pub scenario: String,
    pub push: Option<config::Push>,
    pub pull: Option<config::Pull>,
    pub tuning: Tuning,
}

impl Settings {
    pub fn new(crowdsec: &config::Crowdsec) -> Settings {
        Settings {
            url: crowdsec.url.clone(),
            scenario: crowdsec.scenario.clone(),
            push: crowdsec.push.clone(),
            pull: crowdsec.pull.clone(),
            tuning: Tuning::default(),
        }
    }
}

/// Bounds and timings that are not worth a config key; tests shorten some.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub timeouts: Timeouts,
    /// Reports waiting for the LAPI; past it the oldest is dropped.
    pub backlog: usize,
    /// Alerts sent in one POST.
    pub alerts_per_post: usize,
    /// Pulled networks held; past it new ones are refused and counted.
    pub max_held: usize,
    /// Backoff after a failed call: first delay and cap.
    pub retry_first: Duration,
    pub retry_max: Duration,
    /// Backoff after "database is locked": a retry ~10ms later succeeded every time measured.
    pub busy_first: Duration,
    pub busy_max: Duration,
    /// Tries of a report the LAPI answers with an error before it is given up and counted.
    pub rejected_attempts: u32,
    /// The longest the thread sleeps with nothing to do.
    pub idle_tick: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            timeouts: Timeouts::default(),
            backlog: 16_384,
            alerts_per_post: 100,
            max_held: 262_144,
            retry_first: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            busy_first: Duration::from_millis(10),
            busy_max: Duration::from_secs(1),
            rejected_attempts: 3,
            idle_tick: Duration::from_secs(1),
        }
    }
}

/// What `nfsentry status` can show. Holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// The LAPI answered the last call (whatever it answered).
    pub connected: bool,
    /// While the LAPI cannot be reached: since when.
    pub unreachable_since: Option<SystemTime>,
    /// While it answers: since when (its first answer, or the end of the last outage).
    pub connected_since: Option<SystemTime>,
    /// The last call that failed, whatever the LAPI's state since, and when. The text is the
    /// LAPI's message or the transport's, cut short; it never carries a password, key or token.
    pub last_error: Option<String>,
    pub last_error_at: Option<SystemTime>,
    /// Outages so far (each logged once when it began and once when it ended).
    pub outages: u64,
    /// The watcher holds a token.
    pub logged_in: bool,
    /// Reports (pushes and deletions) not yet accepted by the LAPI.
    pub pushes_pending: usize,
    /// Alerts the LAPI accepted.
    pub alerts_pushed: u64,
    /// Reports given up after the LAPI answered them with errors.
    pub pushes_failed: u64,
    /// Reports dropped, oldest first, because the backlog was full.
    pub pushes_dropped: u64,
    /// Blocks that were over before they could be reported.
    pub pushes_expired: u64,
    /// Deletions of our decisions the LAPI carried out (of however many it found).
    pub deletions_done: u64,
    pub last_pull: Option<SystemTime>,
    pub last_full_pull: Option<SystemTime>,
    pub full_pulls: u64,
    /// Pulled decisions held and ignored.
    pub decisions: TableCounts,
}

impl Status {
    /// One line for the log or `nfsentry status`.
    pub fn summary(&self, now: SystemTime) -> String {
        let ago = |at: Option<SystemTime>| match at {
            None => "never".to_owned(),
            Some(at) => {
                let seconds = now.duration_since(at).unwrap_or_default().as_secs();
                format!("{} ago", format_duration(Duration::from_secs(seconds)))
            }
        };
        let link = match (self.connected, self.unreachable_since) {
            (_, Some(since)) => format!("unreachable since {}", ago(Some(since))),
            (true, None) => "connected".to_owned(),
            (false, None) => "not yet connected".to_owned(),
        };
        let counts = &self.decisions;
        format!(
            "crowdsec: {link}; pushed {} alerts, {} pending, {} failed, {} dropped, {} expired; \
             last pull {}, {} addresses and {} ranges held, {} decisions ignored",
            self.alerts_pushed,
            self.pushes_pending,
            self.pushes_failed,
            self.pushes_dropped,
            self.pushes_expired,
            ago(self.last_pull),
            counts.addresses,
            counts.ranges,
            counts.ignored_type + counts.ignored_scope,
        )
    }
}

/// What the daemon tells the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// nfsentry blocked a scanner itself. Never for a block made from a pulled decision: the
    /// fleet already knows those.
    Blocked(LocalBlock),
    /// An address was unblocked by hand: our decision on it is deleted on the LAPI.
    Unblocked(IpAddr),
}

/// Hands reports to the worker: a short lock and a wake-up, never a network call, so the
/// responder can call it inline. Does nothing when `push` is off.
#[derive(Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
}

impl Reporter {
    pub fn send(&self, report: Report) {
        let mut inbox = lock(&self.shared.inbox);
        if !inbox.push_on || inbox.stop {
            return;
        }
        match report {
            Report::Blocked(block) => inbox.backlog.push(block),
            Report::Unblocked(address) => inbox.backlog.delete(address),
        }
        drop(inbox);
        self.shared.wake.notify_one();
    }

    pub fn blocked(&self, block: LocalBlock) {
        self.send(Report::Blocked(block));
    }

    pub fn unblocked(&self, address: IpAddr) {
        self.send(Report::Unblocked(address));
    }
}

/// Reads what the worker publishes, from any thread. Each read copies a picture the worker
/// made: it waits for no network call and for no work on the decision table, only for the
/// short locks around the picture and the push counters.
#[derive(Clone)]
pub struct Watch {
    shared: Arc<Shared>,
}

impl Watch {
    pub fn status(&self) -> Status {
        let mut status = lock(&self.shared.status).clone();
        let inbox = lock(&self.shared.inbox);
        status.pushes_pending = inbox.in_flight + inbox.backlog.len();
        status.pushes_dropped = inbox.backlog.dropped();
        status.alerts_pushed = inbox.alerts_pushed;
        status.pushes_failed = inbox.pushes_failed;
        status.pushes_expired = inbox.pushes_expired;
        status.deletions_done = inbox.deletions_done;
        status
    }

    /// The pulled networks held now, sorted, each with the time left of its longest decision.
    /// Bans that ran out since the worker's last picture are left out.
    pub fn held(&self) -> Vec<HeldBan> {
        let picture = lock(&self.shared.held).clone();
        let since_taken = picture.taken.elapsed();
        picture
            .bans
            .iter()
            .filter(|ban| ban.remaining > since_taken)
            .map(|ban| HeldBan {
                remaining: ban.remaining - since_taken,
                ..ban.clone()
            })
            .collect()
    }
}

/// The bans held as the worker last saw them: remaining times are as of `taken`.
#[derive(Clone)]
struct HeldPicture {
    taken: Instant,
    /// Shared, so that a reader copies a pointer under the lock, not the list.
    bans: Arc<Vec<HeldBan>>,
}

/// The running worker. Dropping it asks the thread to stop without waiting.
pub struct Crowdsec {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Disconnected when the thread has ended.
    ended: Receiver<()>,
}

impl Crowdsec {
    pub fn reporter(&self) -> Reporter {
        Reporter {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn status(&self) -> Status {
        self.watch().status()
    }

    /// The pulled networks held now, for `nfsentry list`.
    pub fn held(&self) -> Vec<HeldBan> {
        self.watch().held()
    }

    /// A reader of the status and the bans held, for another thread (the control socket).
    pub fn watch(&self) -> Watch {
        Watch {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Asks the thread to stop and waits up to `wait` for it; true when it has ended. A call
    /// in progress ends within its own timeout, and unsent reports are counted in the log.
    pub fn stop(mut self, wait: Duration) -> bool {
        self.request_stop();
        match self.ended.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => false,
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
                true
            }
        }
    }

    fn request_stop(&self) {
        lock(&self.shared.inbox).stop = true;
        self.shared.wake.notify_all();
    }
}

impl Drop for Crowdsec {
    fn drop(&mut self) {
        self.request_stop();
    }
}

/// Starts the worker. `sink` gets every batch of firewall changes (one per pull or expiry
/// check that changed something) on the worker's thread; it must not block for long, e.g. it
/// sends them on to the responder's channel.
pub fn spawn(
    settings: Settings,
    sink: impl FnMut(Vec<Change>) + Send + 'static,
) -> std::io::Result<Crowdsec> {
    let tuning = &settings.tuning;
    let shared = Arc::new(Shared {
        inbox: Mutex::new(Inbox {
            backlog: Backlog::new(tuning.backlog),
            stop: false,
            push_on: settings.push.is_some(),
            in_flight: 0,
            alerts_pushed: 0,
            pushes_failed: 0,
            pushes_expired: 0,
            deletions_done: 0,
        }),
        wake: Condvar::new(),
        status: Mutex::new(Status::default()),
        table: Mutex::new(DecisionTable::new(tuning.max_held)),
        held: Mutex::new(HeldPicture {
            taken: Instant::now(),
            bans: Arc::new(Vec::new()),
        }),
    });
    let (ended_tx, ended) = mpsc::sync_channel(1);
    let worker = Worker::new(settings, Arc::clone(&shared), Box::new(sink));
    let thread = thread::Builder::new()
        .name("crowdsec".into())
        .spawn(move || worker.run(ended_tx))?;
    Ok(Crowdsec {
        shared,
        thread: Some(thread),
        ended,
    })
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    status: Mutex<Status>,
    table: Mutex<DecisionTable>,
    /// Remade when the table's revision moves, not on every round: the table can hold a
    /// quarter of a million networks.
    held: Mutex<HeldPicture>,
}

/// The push side's queue and counters under one lock, so that a status never shows a report
/// as neither pending nor counted.
struct Inbox {
    backlog: Backlog,
    stop: bool,
    push_on: bool,
    /// Reports taken from the backlog and not yet accepted or given up.
    in_flight: usize,
    alerts_pushed: u64,
    pushes_failed: u64,
    pushes_expired: u64,
    deletions_done: u64,
}

/// A poisoned lock only means another thread panicked while holding it; the data (queues and
/// counters) is still usable, and the worker must go on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

type Sink = Box<dyn FnMut(Vec<Change>) + Send>;

/// What a successful report call did.
enum Sent {
    Alerts { sent: usize, expired: usize },
    Deleted,
}

struct Worker {
    settings: Settings,
    shared: Arc<Shared>,
    client: Client,
    sink: Sink,
    reach: Outage,
    answered_once: bool,

    token: Option<Token>,
    /// Taken from the backlog, not yet accepted; retried before anything newer.
    in_flight: Vec<Job>,
    in_flight_attempts: u32,
    /// Refusals of a token in a row: the second one backs off instead of logging in again.
    token_refusals: u32,
    initial_login: bool,
    push_at: Instant,
    push_backoff: Backoff,
    busy_backoff: Backoff,
    login_refused: LogOnce,
    push_rejected: LogOnce,
    next_pull: Instant,
    next_full: Instant,
    need_full: bool,
    pull_backoff: Backoff,
    key_refused: LogOnce,
    pull_failing: LogOnce,
    last_pull: Option<SystemTime>,
    last_full_pull: Option<SystemTime>,
    full_pulls: u64,
    connected_since: Option<SystemTime>,
    last_error: Option<(SystemTime, String)>,
    /// The table's revision the held picture shows.
    pictured_revision: Option<u64>,
}

impl Worker {
    fn new(settings: Settings, shared: Arc<Shared>, sink: Sink) -> Worker {
        let now = Instant::now();
        let tuning = settings.tuning.clone();
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
            ^ u64::from(std::process::id());
        let backoff = |seed| Backoff::new(tuning.retry_first, tuning.retry_max, seed);
        Worker {
            client: Client::new(settings.url.clone(), tuning.timeouts),
            initial_login: settings.push.is_some(),
            settings,
            shared,
            sink,
            reach: Outage::default(),
            answered_once: false,
            token: None,
            in_flight: Vec::new(),
            in_flight_attempts: 0,
            token_refusals: 0,
            push_at: now,
            push_backoff: backoff(seed),
            busy_backoff: Backoff::new(tuning.busy_first, tuning.busy_max, seed.rotate_left(17)),
            login_refused: LogOnce::default(),
            push_rejected: LogOnce::default(),
            next_pull: now,
            next_full: now,
            need_full: true,
            pull_backoff: backoff(seed.rotate_left(31)),
            key_refused: LogOnce::default(),
            pull_failing: LogOnce::default(),
            last_pull: None,
            last_full_pull: None,
            full_pulls: 0,
            connected_since: None,
            last_error: None,
            pictured_revision: None,
        }
    }

    fn run(mut self, _ended: SyncSender<()>) {
        info!("crowdsec: talking to the LAPI at {}", self.settings.url);
        while !self.wait() {
            // Each step reads the clock anew: the one before may have waited on the network.
            let now = Instant::now();
            if self.settings.push.is_some() && now >= self.push_at {
                self.push_round(now);
            }
            let now = Instant::now();
            if self.settings.pull.is_some() && now >= self.next_pull {
                self.pull_round(now);
            }
            if self.settings.pull.is_some() {
                let expired = lock(&self.shared.table).expire(Instant::now());
                self.emit(expired, "expired");
            }
            self.publish();
        }
        let unsent = {
            let inbox = lock(&self.shared.inbox);
            inbox.in_flight + inbox.backlog.len()
        };
        if unsent > 0 {
            warn!("crowdsec: stopping with {unsent} reports for the LAPI unsent");
        }
        self.publish();
    }

    /// Sleeps until there is something to do; true when asked to stop.
    fn wait(&self) -> bool {
        let mut deadline = Instant::now() + self.settings.tuning.idle_tick;
        if self.settings.pull.is_some() {
            deadline = deadline.min(self.next_pull);
        }
        if !self.in_flight.is_empty() || self.initial_login {
            deadline = deadline.min(self.push_at);
        }
        let mut inbox = lock(&self.shared.inbox);
        loop {
            if inbox.stop {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if inbox.push_on && now >= self.push_at && !inbox.backlog.is_empty() {
                return false;
            }
            let wake_at = if inbox.push_on && !inbox.backlog.is_empty() {
                deadline.min(self.push_at)
            } else {
                deadline
            };
            let (guard, _) = self
                .shared
                .wake
                .wait_timeout(inbox, wake_at.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner);
            inbox = guard;
        }
    }

    // ------------------------------------------------------------------------------ push

    fn push_round(&mut self, now: Instant) {
        let Some(push) = self.settings.push.clone() else {
            return;
        };
        if self.in_flight.is_empty() {
            let mut inbox = lock(&self.shared.inbox);
            self.in_flight = inbox
                .backlog
                .take_batch(self.settings.tuning.alerts_per_post);
            inbox.in_flight = self.in_flight.len();
        }
        let token_due = self.token.as_ref().map_or(true, |token| token.is_due(now));
        if self.in_flight.is_empty() && !(self.initial_login && token_due) {
            return;
        }
        self.initial_login = false;
        if token_due {
            self.token = None;
            match self
                .client
                .login(&push.machine_id, &push.password, &self.settings.scenario)
            {
                Ok(login) => {
                    self.reached(now);
                    let expire = login.expire.as_deref().and_then(parse_rfc3339);
                    self.token = Some(Token::new(login.token, now, SystemTime::now(), expire));
                    if self.login_refused.clear() {
                        info!(
                            "crowdsec: the LAPI accepts the watcher login of {} again",
                            push.machine_id
                        );
                    }
                    debug!("crowdsec: logged in to the LAPI as {}", push.machine_id);
                }
                Err(error) => {
                    self.push_failed(error, true, now);
                    return;
                }
            }
        }
        if self.in_flight.is_empty() {
            return;
        }
        let Some(token) = self.token.clone() else {
            return;
        };
        let result = match self.in_flight.first() {
            Some(Job::Delete(address)) => self
                .client
                .delete_decisions(token.value(), *address, &self.settings.scenario)
                .map(|_| Sent::Deleted),
            _ => {
                let alerts = self.alerts(&push.machine_id);
                let expired = self.in_flight.len() - alerts.len();
                if alerts.is_empty() {
                    Ok(Sent::Alerts { sent: 0, expired })
                } else {
                    self.client
                        .push_alerts(token.value(), &alerts)
                        .map(|_| Sent::Alerts {
                            sent: alerts.len(),
                            expired,
                        })
                }
            }
        };
        match result {
            Ok(sent) => {
                self.reached(now);
                let mut inbox = lock(&self.shared.inbox);
                match sent {
                    Sent::Alerts { sent, expired } => {
                        inbox.alerts_pushed += sent as u64;
                        inbox.pushes_expired += expired as u64;
                        debug!("crowdsec: pushed {sent} alerts");
                    }
                    Sent::Deleted => inbox.deletions_done += 1,
                }
                inbox.in_flight = 0;
                drop(inbox);
                self.in_flight.clear();
                self.in_flight_attempts = 0;
                self.token_refusals = 0;
                self.push_backoff.succeeded();
                self.busy_backoff.succeeded();
                if self.push_rejected.clear() {
                    info!("crowdsec: the LAPI accepts reports again");
                }
            }
            Err(error) => self.push_failed(error, false, now),
        }
    }

    /// The alerts for the pushes in flight, built now so that each ban lasts what is left of
    /// its block; blocks already over are left out.
    fn alerts(&self, machine_id: &str) -> Vec<Alert> {
        let now = SystemTime::now();
        self.in_flight
            .iter()
            .filter_map(|job| match job {
                Job::Push(block) => alert_for(block, &self.settings.scenario, machine_id, now),
                Job::Delete(_) => None,
            })
            .collect()
    }

    fn push_failed(&mut self, error: LapiError, login: bool, now: Instant) {
        self.note_error(&error);
        match &error {
            LapiError::Unreachable(detail) => {
                self.unreachable(now, detail);
                self.push_at = now + self.push_backoff.failed();
            }
            LapiError::Busy { .. } => {
                self.reached(now);
                debug!("crowdsec: {error}; retrying");
                self.push_at = now + self.busy_backoff.failed();
            }
            LapiError::Refused { .. } if login => {
                self.reached(now);
                if self.login_refused.raise() {
                    let machine = self.settings.push.as_ref().map_or("", |p| &p.machine_id);
                    error!(
                        "crowdsec: the LAPI refused the watcher login of {machine} ({error}); \
                         reports wait: check crowdsec.machine_id and password_file, and \
                         `cscli machines list` on the LAPI"
                    );
                }
                self.push_at = now + self.push_backoff.failed();
            }
            LapiError::Refused { .. } => {
                // A token the LAPI no longer takes (it restarted, or the token ran out early
                // by its clock): log in again at once, and back off if that does not help.
                self.reached(now);
                self.token = None;
                self.token_refusals += 1;
                self.push_at = if self.token_refusals > 1 {
                    now + self.push_backoff.failed()
                } else {
                    now
                };
            }
            LapiError::Status { .. } | LapiError::Unreadable(_) => {
                self.reached(now);
                self.push_at = now + self.push_backoff.failed();
                if login || self.in_flight.is_empty() {
                    if self.push_rejected.raise() {
                        warn!("crowdsec: the LAPI did not log the watcher in: {error}");
                    }
                    return;
                }
                self.in_flight_attempts += 1;
                if self.in_flight_attempts >= self.settings.tuning.rejected_attempts {
                    let given_up = self.in_flight.len();
                    let mut inbox = lock(&self.shared.inbox);
                    inbox.pushes_failed += given_up as u64;
                    inbox.in_flight = 0;
                    drop(inbox);
                    self.in_flight.clear();
                    self.in_flight_attempts = 0;
                    if self.push_rejected.raise() {
                        warn!(
                            "crowdsec: gave up {given_up} reports the LAPI refused \
                             {} times: {error}",
                            self.settings.tuning.rejected_attempts
                        );
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------------ pull

    fn pull_round(&mut self, now: Instant) {
        let Some(pull) = self.settings.pull.clone() else {
            return;
        };
        let full = self.need_full || now >= self.next_full;
        let (result, what) = if full {
            let list = self.client.full_list(&pull.bouncer_key);
            let changes = list.map(|list| {
                let active = list.new.unwrap_or_default();
                lock(&self.shared.table).reconcile(&active, Instant::now())
            });
            (changes, "full pull")
        } else {
            let delta = self.client.delta(&pull.bouncer_key);
            let changes = delta.map(|delta| {
                let new = delta.new.unwrap_or_default();
                let deleted = delta.deleted.unwrap_or_default();
                lock(&self.shared.table).apply_delta(&new, &deleted, Instant::now())
            });
            (changes, "pull")
        };
        match result {
            Ok(changes) => {
                self.reached(now);
                let wall = SystemTime::now();
                self.last_pull = Some(wall);
                if full {
                    self.last_full_pull = Some(wall);
                    self.full_pulls += 1;
                    self.need_full = false;
                    self.next_full = now + pull.resync_every;
                }
                self.pull_backoff.succeeded();
                self.next_pull = now + pull.every;
                if self.key_refused.clear() {
                    info!("crowdsec: the LAPI accepts the bouncer key again");
                }
                if self.pull_failing.clear() {
                    info!("crowdsec: pulling decisions works again");
                }
                self.emit(changes, what);
            }
            Err(error) => {
                self.note_error(&error);
                // Whatever was lost with this answer, a full list brings back.
                self.need_full = true;
                self.next_pull = now + pull.every.max(self.pull_backoff.failed());
                match &error {
                    LapiError::Unreachable(detail) => self.unreachable(now, detail),
                    LapiError::Refused { .. } => {
                        self.reached(now);
                        if self.key_refused.raise() {
                            error!(
                                "crowdsec: the LAPI refused the bouncer key ({error}); no \
                                 fleet bans are pulled: check crowdsec.bouncer_key_file and \
                                 `cscli bouncers list` on the LAPI"
                            );
                        }
                    }
                    _ => {
                        self.reached(now);
                        if self.pull_failing.raise() {
                            warn!("crowdsec: pulling decisions failed: {error}");
                        }
                    }
                }
            }
        }
    }

    fn emit(&mut self, changes: Vec<Change>, what: &str) {
        if changes.is_empty() {
            return;
        }
        let enforced = changes
            .iter()
            .filter(|change| matches!(change, Change::Enforce { .. }))
            .count();
        info!(
            "crowdsec: {what}: {enforced} bans to enforce, {} to release",
            changes.len() - enforced
        );
        for change in &changes {
            match change {
                Change::Enforce {
                    net,
                    timeout,
                    origin,
                    scenario,
                } => debug!(
                    "crowdsec: enforce {net} for {} ({origin}: {scenario})",
                    timeout.map_or("ever".to_owned(), format_duration)
                ),
                Change::Release { net, reason } => {
                    debug!("crowdsec: release {net} ({})", reason.as_str())
                }
            }
        }
        (self.sink)(changes);
    }

    // ------------------------------------------------------------------------------ both

    fn unreachable(&mut self, now: Instant, detail: &str) {
        if self.reach.failed(now) == Transition::WentDown {
            warn!(
                "crowdsec: the LAPI at {} cannot be reached ({detail}); reports wait (up to {}), \
                 pulled bans stay until they expire, retrying",
                self.settings.url, self.settings.tuning.backlog
            );
        }
    }

    fn note_error(&mut self, error: &LapiError) {
        let text: String = error
            .to_string()
            .chars()
            .take(LAST_ERROR_MAX_CHARS)
            .collect();
        self.last_error = Some((SystemTime::now(), text));
    }

    fn reached(&mut self, now: Instant) {
        if !self.answered_once {
            self.connected_since = Some(SystemTime::now());
        }
        self.answered_once = true;
        let transition = self.reach.succeeded(now);
        if matches!(transition, Transition::CameBack { .. }) {
            self.connected_since = Some(SystemTime::now());
        }
        if let Transition::CameBack { after, failures } = transition {
            let pending = {
                let inbox = lock(&self.shared.inbox);
                inbox.in_flight + inbox.backlog.len()
            };
            // Milliseconds matter for a short outage only.
            let after = if after < Duration::from_secs(10) {
                Duration::from_millis(u64::try_from(after.as_millis()).unwrap_or(u64::MAX))
            } else {
                Duration::from_secs(after.as_secs())
            };
            let calls = if failures == 1 { "call" } else { "calls" };
            info!(
                "crowdsec: the LAPI at {} answers again after {} ({failures} failed {calls}); \
                 {pending} reports to send",
                self.settings.url,
                format_duration(after)
            );
            // What changed meanwhile may be past the deltas' reach.
            self.need_full = true;
        }
    }

    /// Makes the status, and the held picture when the table changed, readable by a [`Watch`].
    /// The picture goes first, so that it is never older than the counts a status shows.
    fn publish(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let (decisions, picture) = {
            let table = lock(&self.shared.table);
            let revision = table.revision();
            let picture = (self.pictured_revision != Some(revision)).then(|| {
                self.pictured_revision = Some(revision);
                table.held(now)
            });
            (table.counts(), picture)
        };
        if let Some(bans) = picture {
            *lock(&self.shared.held) = HeldPicture {
                taken: now,
                bans: Arc::new(bans),
            };
        }
        let connected = self.answered_once && !self.reach.is_down();
        let mut status = lock(&self.shared.status);
        *status = Status {
            connected,
            unreachable_since: self
                .reach
                .down_since()
                .map(|since| wall - now.saturating_duration_since(since)),
            connected_since: self.connected_since.filter(|_| connected),
            last_error: self.last_error.as_ref().map(|(_, text)| text.clone()),
            last_error_at: self.last_error.as_ref().map(|(at, _)| *at),
            outages: self.reach.outages(),
            logged_in: self.token.is_some(),
            // The push counters live with the backlog; status() reads them there.
            pushes_pending: 0,
            alerts_pushed: 0,
            pushes_failed: 0,
            pushes_dropped: 0,
            pushes_expired: 0,
            deletions_done: 0,
            last_pull: self.last_pull,
            last_full_pull: self.last_full_pull,
            full_pulls: self.full_pulls,
            decisions,
        };
    }
}
