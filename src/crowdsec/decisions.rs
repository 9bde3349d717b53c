//! The fleet's bans as nfsentry holds them: the decisions pulled from the LAPI's stream, keyed
//! by the network they cover, and what the firewall must do when they change.
//!
//! Deltas and full lists go in, with the current (monotonic) time; lists of [`Change`]s come
//! out: enforce this network for this long, release that one. Pure and bounded: no I/O, no
//! clock of its own, at most `limit` networks held, at most [`MAX_DECISIONS_PER_NET`] decisions
//! each. It does not decide which actions run; the responder does.
//!
//! What the 1.4.6 LAPI does that shapes it:
//! - The stream keeps only the longest decision per value, scope and type, and can miss some
//!   in its deltas. So decisions are tracked by id under their network, the network is held
//!   for as long as its longest decision, and [`DecisionTable::reconcile`] with a full list
//!   (`startup=true`) makes the table equal to the LAPI's truth.
//! - Deletions repeat on later polls, and a decision can be new and deleted in one delta:
//!   deletions are applied after additions, and deleting what is not held does nothing.
//! - Values are strings: `Ip` values and `Range` networks are read into canonical networks
//!   (IPv4-mapped IPv6 as IPv4, a range as its network address), so spellings cannot split
//!   one network into two entries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::text::parse_go_duration;
use super::wire::{canonical, StreamDecision, BAN, SCOPE_IP, SCOPE_RANGE};

/// Decisions remembered per network; past it, the one that ends first is forgotten (it adds
/// nothing while a longer one holds the network).
pub const MAX_DECISIONS_PER_NET: usize = 8;
/// A network's end moving by less than this is not worth telling the firewall: each full list
/// gives remaining times measured a little later than the last.
pub const RETIME_TOLERANCE: Duration = Duration::from_secs(2);
/// Origins and scenarios are kept for `list`; a LAPI sending longer ones is cut short here,
/// so it cannot grow the table's memory.
const LABEL_MAX_CHARS: usize = 128;

/// What the firewall must do about one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Block `net` (a single address as /32 or /128, or a network) for `timeout`. Sent again
    /// for a network already enforced when its end moves, earlier or later: the timeout
    /// replaces the one in place rather than extending it. `timeout` is always `Some` for LAPI
    /// decisions, which always carry a duration; None would mean "until released".
    Enforce {
        net: IpNet,
        timeout: Option<Duration>,
        /// The decision's origin (`crowdsec`, `cscli`, `CAPI`, `nfsentry`, ...).
        origin: String,
        scenario: String,
    },
    /// Stop blocking `net`.
    Release { net: IpNet, reason: ReleaseReason },
}

impl Change {
    pub fn net(&self) -> IpNet {
        match self {
            Change::Enforce { net, .. } | Change::Release { net, .. } => *net,
        }
    }
}

/// Why a pulled network is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReleaseReason {
    /// The stream reported its last decision deleted.
    Deleted,
    /// Its last decision ran out. The nft element has timed out by itself already; the
    /// release is for the other actions and for the table.
    Expired,
    /// A full list no longer has it: a deletion the deltas missed.
    Gone,
}

impl ReleaseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseReason::Deleted => "deleted on the LAPI",
            ReleaseReason::Expired => "decision expired",
            ReleaseReason::Gone => "gone from the LAPI's full list",
        }
    }
}

/// Why a pulled decision is not enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Not a `ban` (`captcha`, ...).
    Type,
    /// Not about an address or a network (`Country`, `AS`, ...).
    Scope,
}

/// One pulled network, for `nfsentry list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBan {
    pub net: IpNet,
    /// Time left of its longest decision.
    pub remaining: Duration,
    pub origin: String,
    pub scenario: String,
    /// Decisions behind it (several machines may have banned one address).
    pub decisions: usize,
    /// When this host began holding it.
    pub since: Instant,
}

/// Sizes and counts for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Single addresses held.
    pub addresses: usize,
    /// Networks wider than one address held.
    pub ranges: usize,
    /// Active decisions not enforced, by reason.
    pub ignored_type: usize,
    pub ignored_scope: usize,
    /// Stream entries that could not be read (missing id, bad value or duration), ever.
    pub malformed: u64,
    /// New networks refused because the table was full, ever.
    pub refused_full: u64,
}

#[derive(Debug, Clone)]
struct HeldDecision {
    id: i64,
    ends: Instant,
    origin: String,
    scenario: String,
}

#[derive(Debug, Clone)]
struct Held {
    decisions: Vec<HeldDecision>,
    /// The end last told to the firewall.
    enforced_until: Instant,
    /// When it was first held, for `nfsentry list`.
    since: Instant,
}

impl Held {
    /// The decision that ends last; a held network always has one.
    fn longest(&self) -> Option<&HeldDecision> {
        self.decisions.iter().max_by_key(|decision| decision.ends)
    }

    /// Adds or refreshes one decision, keeping at most MAX_DECISIONS_PER_NET.
    fn upsert(&mut self, decision: HeldDecision) {
        match self
            .decisions
            .iter_mut()
            .find(|held| held.id == decision.id)
        {
            Some(held) => *held = decision,
            None => {
                self.decisions.push(decision);
                if self.decisions.len() > MAX_DECISIONS_PER_NET {
                    if let Some(first_to_end) = self
                        .decisions
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, held)| held.ends)
                        .map(|(index, _)| index)
                    {
                        self.decisions.swap_remove(first_to_end);
                    }
                }
            }
        }
    }
}

/// A stream entry, read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reading {
    /// A ban on `net`; `remaining` None when it is already over.
    Ban {
        id: i64,
        net: IpNet,
        remaining: Option<Duration>,
        origin: String,
        scenario: String,
    },
    Ignored {
        id: i64,
        reason: IgnoreReason,
        remaining: Option<Duration>,
    },
    Malformed,
}

/// The pulled decisions and their counters.
#[derive(Debug)]
pub struct DecisionTable {
    held: HashMap<IpNet, Held>,
    /// Active decisions that are not enforced, by id, with when they end, so the counts
    /// describe what the LAPI holds now rather than how often it was seen.
    ignored: HashMap<i64, (IgnoreReason, Instant)>,
    limit: usize,
    malformed: u64,
    refused_full: u64,
    /// Moves on with every change to what is held or ignored, so a reader can tell whether
    /// its copy of [`Self::held`] is still current without comparing it.
    revision: u64,
}

impl DecisionTable {
    /// An empty table holding at most `limit` networks (and as many ignored decisions).
    pub fn new(limit: usize) -> DecisionTable {
        DecisionTable {
            held: HashMap::new(),
            ignored: HashMap::new(),
            limit,
            malformed: 0,
            refused_full: 0,
            revision: 0,
        }
    }

    /// See the field: equal revisions mean an equal table.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Applies one `startup=false` answer: additions first, then deletions, so a decision
    /// made and deleted between two polls ends deleted.
    pub fn apply_delta(
        &mut self,
        new: &[StreamDecision],
        deleted: &[StreamDecision],
        now: Instant,
    ) -> Vec<Change> {
        if !new.is_empty() || !deleted.is_empty() {
            self.revision += 1;
        }
        let mut before: HashMap<IpNet, Option<Instant>> = HashMap::new();
        for entry in new {
            match self.read(entry) {
                Reading::Ban {
                    id,
                    net,
                    remaining,
                    origin,
                    scenario,
                } => {
                    let enforced = self.held.get(&net).map(|held| held.enforced_until);
                    before.entry(net).or_insert(enforced);
                    match remaining {
                        Some(remaining) => {
                            self.hold(net, id, now, now + remaining, origin, scenario)
                        }
                        None => self.forget(net, id),
                    }
                }
                Reading::Ignored {
                    id,
                    reason,
                    remaining,
                } => self.ignore(id, reason, remaining.map(|left| now + left)),
                Reading::Malformed => {}
            }
        }
        for entry in deleted {
            match self.read(entry) {
                Reading::Ban { id, net, .. } => {
                    if self.held.contains_key(&net) {
                        let enforced = self.held.get(&net).map(|held| held.enforced_until);
                        before.entry(net).or_insert(enforced);
                        self.forget(net, id);
                    }
                }
                Reading::Ignored { id, .. } => {
                    self.ignored.remove(&id);
                }
                Reading::Malformed => {}
            }
        }
        self.changes(before, ReleaseReason::Deleted, now)
    }

    /// Makes the table equal to `active`, the `new` list of a `startup=true` answer (every
    /// active decision): networks it lacks are released, networks it adds are enforced, and
    /// networks whose end moved are enforced again with their new time.
    pub fn reconcile(&mut self, active: &[StreamDecision], now: Instant) -> Vec<Change> {
        self.revision += 1;
        let mut fresh: HashMap<IpNet, Held> = HashMap::new();
        let mut ignored = HashMap::new();
        let mut refused = 0u64;
        // Networks already held keep their place when the list is longer than the table.
        let readings: Vec<Reading> = active.iter().map(|entry| self.read(entry)).collect();
        let (known, unknown): (Vec<&Reading>, Vec<&Reading>) =
            readings.iter().partition(|reading| match reading {
                Reading::Ban { net, .. } => self.held.contains_key(net),
                _ => true,
            });
        for reading in known.into_iter().chain(unknown) {
            match reading {
                Reading::Ban {
                    id,
                    net,
                    remaining: Some(remaining),
                    origin,
                    scenario,
                } => {
                    let decision = HeldDecision {
                        id: *id,
                        ends: now + *remaining,
                        origin: origin.clone(),
                        scenario: scenario.clone(),
                    };
                    if let Some(held) = fresh.get_mut(net) {
                        held.upsert(decision);
                    } else if fresh.len() < self.limit {
                        let (enforced_until, since) =
                            self.held.get(net).map_or((decision.ends, now), |held| {
                                (held.enforced_until, held.since)
                            });
                        fresh.insert(
                            *net,
                            Held {
                                decisions: vec![decision],
                                enforced_until,
                                since,
                            },
                        );
                    } else {
                        refused += 1;
                    }
                }
                Reading::Ignored {
                    id,
                    reason,
                    remaining: Some(remaining),
                } if ignored.len() < self.limit => {
                    ignored.insert(*id, (*reason, now + *remaining));
                }
                _ => {}
            }
        }
        self.refused_full += refused;
        self.ignored = ignored;
        let mut before: HashMap<IpNet, Option<Instant>> = self
            .held
            .iter()
            .map(|(net, held)| (*net, Some(held.enforced_until)))
            .collect();
        for net in fresh.keys() {
            before.entry(*net).or_insert(None);
        }
        self.held = fresh;
        self.changes(before, ReleaseReason::Gone, now)
    }

    /// Forgets decisions that have run out and releases the networks left without one.
    pub fn expire(&mut self, now: Instant) -> Vec<Change> {
        let ignored_before = self.ignored.len();
        self.ignored.retain(|_, (_, ends)| *ends > now);
        let mut changed = self.ignored.len() != ignored_before;
        let mut released = Vec::new();
        self.held.retain(|net, held| {
            let decisions_before = held.decisions.len();
            held.decisions.retain(|decision| decision.ends > now);
            changed |= held.decisions.len() != decisions_before;
            if held.decisions.is_empty() {
                released.push(Change::Release {
                    net: *net,
                    reason: ReleaseReason::Expired,
                });
                false
            } else {
                true
            }
        });
        if changed {
            self.revision += 1;
        }
        released.sort_by_key(Change::net);
        released
    }

    pub fn counts(&self) -> TableCounts {
        let addresses = self
            .held
            .keys()
            .filter(|net| net.prefix_len() == net.max_prefix_len())
            .count();
        let ignored_type = self
            .ignored
            .values()
            .filter(|(reason, _)| *reason == IgnoreReason::Type)
            .count();
        TableCounts {
            addresses,
            ranges: self.held.len() - addresses,
            ignored_type,
            ignored_scope: self.ignored.len() - ignored_type,
            malformed: self.malformed,
            refused_full: self.refused_full,
        }
    }

    /// Every network held, sorted, with its time left at `now`.
    pub fn held(&self, now: Instant) -> Vec<HeldBan> {
        let mut list: Vec<HeldBan> = self
            .held
            .iter()
            .filter_map(|(net, held)| {
                let longest = held.longest()?;
                Some(HeldBan {
                    net: *net,
                    remaining: longest.ends.saturating_duration_since(now),
                    origin: longest.origin.clone(),
                    scenario: longest.scenario.clone(),
                    decisions: held.decisions.len(),
                    since: held.since,
                })
            })
            .collect();
        list.sort_by_key(|ban| ban.net);
        list
    }

    /// Whether `net` is held.
    pub fn holds(&self, net: &IpNet) -> bool {
        self.held.contains_key(net)
    }

    fn hold(
        &mut self,
        net: IpNet,
        id: i64,
        now: Instant,
        ends: Instant,
        origin: String,
        scenario: String,
    ) {
        let decision = HeldDecision {
            id,
            ends,
            origin,
            scenario,
        };
        if let Some(held) = self.held.get_mut(&net) {
            held.upsert(decision);
        } else if self.held.len() < self.limit {
            self.held.insert(
                net,
                Held {
                    decisions: vec![decision],
                    enforced_until: ends,
                    since: now,
                },
            );
        } else {
            self.refused_full += 1;
        }
    }

    fn forget(&mut self, net: IpNet, id: i64) {
        if let Some(held) = self.held.get_mut(&net) {
            held.decisions.retain(|decision| decision.id != id);
            if held.decisions.is_empty() {
                self.held.remove(&net);
            }
        }
    }

    fn ignore(&mut self, id: i64, reason: IgnoreReason, ends: Option<Instant>) {
        match ends {
            Some(ends) if self.ignored.len() < self.limit || self.ignored.contains_key(&id) => {
                self.ignored.insert(id, (reason, ends));
            }
            Some(_) => {}
            None => {
                self.ignored.remove(&id);
            }
        }
    }

    /// What the firewall must hear about the networks in `before` (each with the end it was
    /// enforced until, None if it was not held), now that the table has changed. Releases
    /// come first, then enforcements, each sorted by network.
    fn changes(
        &mut self,
        before: HashMap<IpNet, Option<Instant>>,
        release_reason: ReleaseReason,
        now: Instant,
    ) -> Vec<Change> {
        let mut releases = Vec::new();
        let mut enforcements = Vec::new();
        for (net, was_enforced_until) in before {
            let Some(held) = self.held.get_mut(&net) else {
                if was_enforced_until.is_some() {
                    releases.push(Change::Release {
                        net,
                        reason: release_reason,
                    });
                }
                continue;
            };
            let Some(longest) = held.longest().cloned() else {
                continue;
            };
            let moved = match was_enforced_until {
                None => true,
                Some(until) => {
                    let shift = if longest.ends > until {
                        longest.ends - until
                    } else {
                        until - longest.ends
                    };
                    shift > RETIME_TOLERANCE
                }
            };
            if moved {
                held.enforced_until = longest.ends;
                enforcements.push(Change::Enforce {
                    net,
                    timeout: Some(longest.ends.saturating_duration_since(now)),
                    origin: longest.origin,
                    scenario: longest.scenario,
                });
            }
        }
        releases.sort_by_key(Change::net);
        enforcements.sort_by_key(Change::net);
        releases.extend(enforcements);
        releases
    }

    /// Reads one stream entry; a malformed one is counted.
    fn read(&mut self, entry: &StreamDecision) -> Reading {
        let reading = read_entry(entry);
        if reading == Reading::Malformed {
            self.malformed += 1;
        }
        reading
    }
}

fn read_entry(entry: &StreamDecision) -> Reading {
    let (Some(id), Some(kind), Some(scope), Some(value), Some(duration)) = (
        entry.id,
        entry.kind.as_deref(),
        entry.scope.as_deref(),
        entry.value.as_deref(),
        entry.duration.as_deref(),
    ) else {
        return Reading::Malformed;
    };
    let Some(duration) = parse_go_duration(duration) else {
        return Reading::Malformed;
    };
    let remaining = duration.remaining();
    let net = match scope {
        SCOPE_IP => address_net(value),
        SCOPE_RANGE => range_net(value),
        _ => {
            return Reading::Ignored {
                id,
                reason: IgnoreReason::Scope,
                remaining,
            }
        }
    };
    if kind != BAN {
        return Reading::Ignored {
            id,
            reason: IgnoreReason::Type,
            remaining,
        };
    }
    let Some(net) = net else {
        return Reading::Malformed;
    };
    Reading::Ban {
        id,
        net,
        remaining,
        origin: label(entry.origin.as_deref()),
        scenario: label(entry.scenario.as_deref()),
    }
}

/// An `Ip` value: one address, or a CIDR that covers exactly one.
fn address_net(value: &str) -> Option<IpNet> {
    if let Ok(address) = value.parse::<IpAddr>() {
        return Some(IpNet::from(canonical(address)));
    }
    let net: IpNet = value.parse().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| IpNet::from(canonical(net.addr())))
}

/// A `Range` value as its network: host bits cleared; an IPv4-mapped IPv6 network as IPv4.
fn range_net(value: &str) -> Option<IpNet> {
    let net: IpNet = match value.parse() {
        Ok(net) => net,
        // A bare address under scope Range is a one-address range.
        Err(_) => IpNet::from(value.parse::<IpAddr>().ok()?),
    };
    let net = net.trunc();
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .ok()
                .map(IpNet::V4);
        }
    }
    Some(net)
}

/// An origin or scenario as kept: cut short, and with control characters (which `nfsentry
/// list` would otherwise hand to a terminal) replaced.
fn label(text: Option<&str>) -> String {
    text.unwrap_or("")
        .chars()
        .take(LABEL_MAX_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: seconds after an arbitrary start.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn at(&self, seconds: u64) -> Instant {
            self.0 + Duration::from_secs(seconds)
        }
    }

    fn entry(id: i64, kind: &str, scope: &str, value: &str, duration: &str) -> StreamDecision {
        StreamDecision {
            id: Some(id),
            origin: Some("cscli".into()),
            scenario: Some("manual".into()),
            scope: Some(scope.into()),
            kind: Some(kind.into()),
            value: Some(value.into()),
            duration: Some(duration.into()),
        }
    }

    fn ban(id: i64, value: &str, duration: &str) -> StreamDecision {
        entry(id, "ban", "Ip", value, duration)
    }

    fn range(id: i64, value: &str, duration: &str) -> StreamDecision {
        entry(id, "ban", "Range", value, duration)
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn enforce(text: &str, seconds: u64) -> Change {
        Change::Enforce {
            net: net(text),
            timeout: Some(Duration::from_secs(seconds)),
            origin: "cscli".into(),
            scenario: "manual".into(),
        }
    }

    fn release(text: &str, reason: ReleaseReason) -> Change {
        Change::Release {
            net: net(text),
            reason,
        }
    }

    #[test]
    fn bans_on_addresses_and_ranges_are_enforced_for_their_remaining_time() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        let changes = table.apply_delta(
            &[
                ban(1, "198.51.100.7", "4h0m0.4s"),
                range(2, "192.0.2.0/24", "1h"),
                ban(3, "2001:db8::7", "90s"),
            ],
            &[],
            clock.at(0),
        );
        assert_eq!(
            changes,
            vec![
                enforce("192.0.2.0/24", 3_600),
                Change::Enforce {
                    net: net("198.51.100.7/32"),
                    timeout: Some(Duration::new(14_400, 400_000_000)),
                    origin: "cscli".into(),
                    scenario: "manual".into(),
                },
                enforce("2001:db8::7/128", 90),
            ]
        );
        let counts = table.counts();
        assert_eq!((counts.addresses, counts.ranges), (2, 1));
    }

    #[test]
    fn other_types_and_scopes_are_ignored_and_counted_while_active() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        let changes = table.apply_delta(
            &[
                entry(1, "captcha", "Ip", "198.51.100.7", "4h"),
                entry(2, "ban", "Country", "FR", "4h"),
                entry(3, "ban", "AS", "64496", "1h"),
                entry(4, "throttle", "Range", "192.0.2.0/24", "1m"),
                entry(5, "ban", "ip", "198.51.100.8", "1h"),
            ],
            &[],
            clock.at(0),
        );
        assert!(changes.is_empty(), "{changes:?}");
        let counts = table.counts();
        assert_eq!((counts.ignored_type, counts.ignored_scope), (2, 3));
        assert_eq!((counts.addresses, counts.ranges), (0, 0));
        // Seeing them again (a resync) does not count them twice.
        table.reconcile(
            &[
                entry(1, "captcha", "Ip", "198.51.100.7", "4h"),
                entry(2, "ban", "Country", "FR", "4h"),
                entry(3, "ban", "AS", "64496", "1h"),
            ],
            clock.at(1),
        );
        let counts = table.counts();
        assert_eq!((counts.ignored_type, counts.ignored_scope), (1, 2));
        // A deletion or the end of their time takes them off.
        table.apply_delta(&[], &[entry(2, "ban", "Country", "FR", "-1s")], clock.at(2));
        assert_eq!(table.counts().ignored_scope, 1);
        table.expire(clock.at(3_601));
        let counts = table.counts();
        assert_eq!((counts.ignored_type, counts.ignored_scope), (1, 0));
    }

    #[test]
    fn spellings_of_one_network_are_one_entry() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        let changes = table.apply_delta(
            &[
                ban(1, "2001:0db8:0000::0007", "1h"),
                ban(2, "2001:db8::7", "2h"),
                ban(3, "::ffff:198.51.100.7", "1h"),
                ban(4, "198.51.100.7/32", "1h"),
                range(5, "192.0.2.77/24", "1h"),
                range(6, "192.0.2.0/24", "1h"),
                range(7, "::ffff:203.0.113.0/120", "1h"),
            ],
            &[],
            clock.at(0),
        );
        assert_eq!(
            changes,
            vec![
                enforce("192.0.2.0/24", 3_600),
                enforce("198.51.100.7/32", 3_600),
                enforce("203.0.113.0/24", 3_600),
                enforce("2001:db8::7/128", 7_200),
            ]
        );
        assert_eq!(table.held(clock.at(0)).len(), 4);
        assert_eq!(table.held(clock.at(0))[3].decisions, 2);
    }

    #[test]
    fn malformed_entries_are_counted_not_fatal() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        let mut no_id = ban(1, "198.51.100.1", "1h");
        no_id.id = None;
        let changes = table.apply_delta(
            &[
                no_id,
                ban(2, "not-an-address", "1h"),
                ban(3, "198.51.100.3", "1d"),
                ban(4, "198.51.100.0/24", "1h"),
                range(5, "192.0.2.0/33", "1h"),
                StreamDecision::default(),
                ban(6, "198.51.100.6", "1h"),
            ],
            &[],
            clock.at(0),
        );
        assert_eq!(changes, vec![enforce("198.51.100.6/32", 3_600)]);
        assert_eq!(table.counts().malformed, 6);
    }

    #[test]
    fn deletions_release_once_and_repeat_harmlessly() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        table.apply_delta(&[ban(1, "198.51.100.7", "1h")], &[], clock.at(0));
        let deleted = [ban(1, "198.51.100.7", "-154.2ms")];
        assert_eq!(
            table.apply_delta(&[], &deleted, clock.at(5)),
            vec![release("198.51.100.7/32", ReleaseReason::Deleted)]
        );
        assert!(table.apply_delta(&[], &deleted, clock.at(6)).is_empty());
        assert!(table.apply_delta(&[], &deleted, clock.at(7)).is_empty());
        // Deleting what was never held is nothing.
        assert!(table
            .apply_delta(&[], &[ban(9, "192.0.2.9", "-1s")], clock.at(8))
            .is_empty());
    }

    #[test]
    fn new_and_deleted_in_one_delta_ends_deleted() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        let changes = table.apply_delta(
            &[ban(1, "198.51.100.7", "1h")],
            &[ban(1, "198.51.100.7", "-2s")],
            clock.at(0),
        );
        assert!(changes.is_empty(), "{changes:?}");
        assert!(!table.holds(&net("198.51.100.7/32")));
    }

    #[test]
    fn a_network_stays_while_any_of_its_decisions_does() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        table.apply_delta(&[ban(1, "198.51.100.7", "1h")], &[], clock.at(0));
        // A second, longer ban from elsewhere: the end moves later.
        assert_eq!(
            table.apply_delta(&[ban(2, "198.51.100.7", "4h")], &[], clock.at(10)),
            vec![enforce("198.51.100.7/32", 14_400)]
        );
        // The longer one deleted: the shorter one still holds it, to its own end.
        assert_eq!(
            table.apply_delta(&[], &[ban(2, "198.51.100.7", "-1s")], clock.at(20)),
            vec![enforce("198.51.100.7/32", 3_580)]
        );
        assert_eq!(
            table.apply_delta(&[], &[ban(1, "198.51.100.7", "-1s")], clock.at(30)),
            vec![release("198.51.100.7/32", ReleaseReason::Deleted)]
        );
    }

    #[test]
    fn an_already_expired_new_entry_is_not_enforced() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        assert!(table
            .apply_delta(&[ban(1, "198.51.100.7", "-3s")], &[], clock.at(0))
            .is_empty());
        assert!(table
            .apply_delta(&[ban(2, "198.51.100.8", "0s")], &[], clock.at(0))
            .is_empty());
        assert_eq!(table.counts().addresses, 0);
    }

    #[test]
    fn expiry_releases_when_the_last_decision_ends() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        table.apply_delta(
            &[
                ban(1, "198.51.100.7", "60s"),
                ban(2, "198.51.100.8", "120s"),
                range(3, "192.0.2.0/24", "60s"),
            ],
            &[],
            clock.at(0),
        );
        assert!(table.expire(clock.at(59)).is_empty());
        assert_eq!(
            table.expire(clock.at(60)),
            vec![
                release("192.0.2.0/24", ReleaseReason::Expired),
                release("198.51.100.7/32", ReleaseReason::Expired),
            ]
        );
        assert!(table.expire(clock.at(61)).is_empty());
        assert_eq!(
            table.expire(clock.at(500)),
            vec![release("198.51.100.8/32", ReleaseReason::Expired)]
        );
        assert_eq!(table.counts(), TableCounts::default());
    }

    #[test]
    fn reconcile_adds_what_deltas_missed_and_releases_what_is_gone() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        table.apply_delta(
            &[
                ban(1, "198.51.100.1", "1h"),
                ban(2, "198.51.100.2", "1h"),
                ban(3, "198.51.100.3", "1h"),
            ],
            &[],
            clock.at(0),
        );
        // A full list 60s on: .2 was deleted and .9 added without the deltas saying so; .1
        // and .3 only aged by the 60s, which is no change worth sending.
        let changes = table.reconcile(
            &[
                ban(1, "198.51.100.1", "59m0.3s"),
                ban(3, "198.51.100.3", "59m"),
                ban(9, "198.51.100.9", "30m"),
            ],
            clock.at(60),
        );
        assert_eq!(
            changes,
            vec![
                release("198.51.100.2/32", ReleaseReason::Gone),
                enforce("198.51.100.9/32", 1_800),
            ]
        );
        // The same full list again changes nothing.
        let again = table.reconcile(
            &[
                ban(1, "198.51.100.1", "58m59s"),
                ban(3, "198.51.100.3", "58m59s"),
                ban(9, "198.51.100.9", "29m59s"),
            ],
            clock.at(61),
        );
        assert!(again.is_empty(), "{again:?}");
        // An empty list (the LAPI sends null) releases everything.
        let changes = table.reconcile(&[], clock.at(62));
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|change| matches!(
            change,
            Change::Release {
                reason: ReleaseReason::Gone,
                ..
            }
        )));
    }

    /// The LAPI streams nothing when the longest of two bans on one address is deleted while
    /// the shorter remains; the full list shows the shorter one, and its end is sent.
    #[test]
    fn reconcile_shortens_a_ban_whose_longest_decision_went_unreported() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(100);
        table.apply_delta(&[ban(1, "198.51.100.7", "4h")], &[], clock.at(0));
        let changes = table.reconcile(&[ban(2, "198.51.100.7", "10m")], clock.at(100));
        assert_eq!(changes, vec![enforce("198.51.100.7/32", 600)]);
        assert_eq!(table.held(clock.at(100))[0].decisions, 1);
    }

    #[test]
    fn the_table_is_bounded() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(2);
        let changes = table.apply_delta(
            &[
                ban(1, "198.51.100.1", "1h"),
                ban(2, "198.51.100.2", "1h"),
                ban(3, "198.51.100.3", "1h"),
            ],
            &[],
            clock.at(0),
        );
        assert_eq!(changes.len(), 2);
        assert_eq!(table.counts().refused_full, 1);
        // A full list keeps what is held before taking anything new.
        let changes = table.reconcile(
            &[
                ban(4, "198.51.100.4", "1h"),
                ban(2, "198.51.100.2", "1h"),
                ban(5, "198.51.100.5", "1h"),
            ],
            clock.at(1),
        );
        assert_eq!(
            changes,
            vec![
                release("198.51.100.1/32", ReleaseReason::Gone),
                enforce("198.51.100.4/32", 3_600),
            ]
        );
        assert_eq!(table.counts().refused_full, 2);
        // Decisions per network are bounded too; the first to end goes.
        let mut table = DecisionTable::new(10);
        let many: Vec<StreamDecision> = (1..=20)
            .map(|id| ban(id, "198.51.100.7", &format!("{id}m")))
            .collect();
        table.apply_delta(&many, &[], clock.at(0));
        let held = table.held(clock.at(0));
        assert_eq!(held[0].decisions, MAX_DECISIONS_PER_NET);
        assert_eq!(held[0].remaining, Duration::from_secs(20 * 60));
    }

    #[test]
    fn a_network_keeps_when_it_was_first_held_and_every_change_moves_the_revision() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(10);
        let start = table.revision();
        table.apply_delta(&[ban(1, "198.51.100.7", "1h")], &[], clock.at(5));
        let first = table.revision();
        assert_ne!(first, start);
        // An empty delta changes nothing.
        table.apply_delta(&[], &[], clock.at(6));
        assert_eq!(table.revision(), first);
        // A full list renews the decision and adds a range; the address keeps its start.
        table.reconcile(
            &[
                ban(1, "198.51.100.7", "2h"),
                range(2, "192.0.2.0/24", "10m"),
            ],
            clock.at(60),
        );
        let reconciled = table.revision();
        assert_ne!(reconciled, first);
        let held = table.held(clock.at(60));
        assert_eq!(held[0].net, net("192.0.2.0/24"));
        assert_eq!(held[0].since, clock.at(60));
        assert_eq!(held[1].since, clock.at(5));
        // Nothing ran out: no change. Then the range does.
        table.expire(clock.at(61));
        assert_eq!(table.revision(), reconciled);
        table.expire(clock.at(60 + 601));
        assert_ne!(table.revision(), reconciled);
        assert_eq!(table.held(clock.at(661)).len(), 1);
    }

    #[test]
    fn origins_and_scenarios_are_kept_short() {
        let clock = Clock::new();
        let mut table = DecisionTable::new(10);
        let mut long = ban(1, "198.51.100.7", "1h");
        long.scenario = Some("s".repeat(10_000));
        long.origin = None;
        table.apply_delta(&[long], &[], clock.at(0));
        let held = table.held(clock.at(0));
        assert_eq!(held[0].scenario.len(), LABEL_MAX_CHARS);
        assert_eq!(held[0].origin, "");
        let mut loud = ban(2, "198.51.100.8", "1h");
        loud.origin = Some("cscli\u{1b}[2J\n".into());
        table.apply_delta(&[loud], &[], clock.at(0));
        assert_eq!(table.held(clock.at(0))[1].origin, "cscli?[2J?");
    }
}
