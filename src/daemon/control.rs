//! The daemon's answers on the control socket, and the packet loop's side of the commands.
//!
//! Three parties: the control thread answers requests ([`ControlHandler`]), the packet loop
//! owns the pipeline, the responder owns the kernel's sets, the actions and the journal.
//! - `status` reads counters the packet loop publishes into atomics ([`Published`]), so a
//!   status request never takes a lock the packet path would wait for.
//! - `list` asks the responder, which holds the blocks as they are in force, and adds the bans
//!   pulled from the CrowdSec LAPI as the fleet worker last published them ([`FleetView`]).
//! - `status` shows the LAPI link from the same picture; neither waits for the LAPI.
//! - `block`, `unblock`, `flush` and `reload` go to the packet loop through a channel and a
//!   wake-up pipe it polls: the pipeline learns of the change first (a source unblocked by hand
//!   is watched afresh and can be blocked again), then hands it to the responder in order with
//!   its own orders. The responder answers the control thread once the kernel has it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};

use super::shards::ToShard;
use super::{reload, PacketLoop};
use crate::control::protocol::{
    Answer, BlockCounts, BlockEntry, PacketCounts, Reply, Request, StatusReport, TriggerToBlock,
};
use crate::control::server::Handler;
use crate::control::{self, KERNEL_QUEUES};
use crate::crowdsec::wire::SCOPE_IP;
use crate::fleet::FleetView;
use crate::nft::ruleset::{QueueMode, RulesetSpec};
use crate::packet::ScanKind;
use crate::pipeline::{self, MANUAL_KIND};
use crate::respond::block_latency::{self, BlockLatency};
use crate::respond::responder::{ByHand, Changed, Done, Holding, Order};
use crate::wake::{self, WakingReceiver, WakingSender};

/// How long the control thread waits for the packet loop and the responder to carry out a
/// command: a hung legacy tool is killed after 10 s, and the client gives up after 30 s.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(25);

/// The counters of `nfsentry status`, written by the packet loop after each batch of packets
/// and read by the control thread. Relaxed atomics: each number is exact, the set of them is a
/// moment's picture, which is all a status needs.
#[derive(Default)]
pub struct Published {
    queued: AtomicU64,
    answered: AtomicU64,
    short_headers_logged: AtomicU64,
    malformed: AtomicU64,
    detections: [AtomicU64; ScanKind::WORDS.len()],
    blocks_now: AtomicU64,
    blocks_ordered: AtomicU64,
    blocks_refused: AtomicU64,
    blocks_released: AtomicU64,
    sources_tracked: AtomicU64,
    sources_evicted: AtomicU64,
    spoofed: AtomicU64,
    alert_lines_suppressed: AtomicU64,
}

impl Published {
    pub fn publish(&self, status: &pipeline::Status, answered: u64) {
        let put = |cell: &AtomicU64, value: u64| cell.store(value, Ordering::Relaxed);
        put(&self.queued, status.queued);
        put(&self.answered, answered);
        put(&self.short_headers_logged, status.short_headers_logged);
        put(&self.malformed, status.malformed);
        for (cell, count) in self.detections.iter().zip(status.detections_by_kind) {
            put(cell, count);
        }
        put(&self.blocks_now, status.blocked_now as u64);
        put(&self.blocks_ordered, status.blocks_ordered);
        put(&self.blocks_refused, status.blocks_refused);
        put(&self.blocks_released, status.blocks_released);
        put(&self.sources_tracked, status.sources_tracked as u64);
        put(&self.sources_evicted, status.sources_evicted);
        put(&self.spoofed, status.spoofed);
        put(&self.alert_lines_suppressed, status.alert_lines_suppressed);
    }
}

/// A command for the packet loop, with where its outcome goes.
pub enum Command {
    Block {
        address: IpAddr,
        /// None: the configured block timeout; zero: until released.
        timeout: Option<Duration>,
        done: Done,
    },
    Unblock {
        address: IpAddr,
        done: Done,
    },
    Flush {
        done: Done,
    },
    Reload {
        done: Done,
    },
}

/// The packet loop's end of the command channel: a pipe to poll, and the commands.
pub type Commands = WakingReceiver<Command>;

/// A command channel whose receiving end the packet loop polls.
pub fn command_channel() -> std::io::Result<(CommandSenderHandle, Commands)> {
    let (sender, commands) = wake::channel()?;
    Ok((CommandSenderHandle(sender), commands))
}

/// The sending end, handed to [`ControlHandler::new`].
pub struct CommandSenderHandle(WakingSender<Command>);

/// What `status` reports that does not change while running.
pub struct Facts {
    pub started: Instant,
    pub queue_mode: QueueMode,
    pub queues: Vec<u16>,
    /// The responder's histogram of detection to block in the kernel.
    pub block_latency: Arc<BlockLatency>,
}

/// Answers control requests on the control thread.
pub struct ControlHandler {
    commands: WakingSender<Command>,
    orders: Sender<Order>,
    /// One per queue reader; `status` sums them.
    published: Vec<Arc<Published>>,
    facts: Facts,
    fleet: Option<FleetView>,
}

impl ControlHandler {
    pub fn new(
        commands: CommandSenderHandle,
        orders: Sender<Order>,
        published: Vec<Arc<Published>>,
        facts: Facts,
    ) -> ControlHandler {
        ControlHandler {
            commands: commands.0,
            orders,
            published,
            facts,
            fleet: None,
        }
    }

    /// Shows the CrowdSec link in `status` and the pulled bans in `list`.
    pub fn with_fleet(mut self, fleet: Option<FleetView>) -> ControlHandler {
        self.fleet = fleet;
        self
    }

    fn status(&self) -> StatusReport {
        let sum = |cell: fn(&Published) -> &AtomicU64| -> u64 {
            self.published
                .iter()
                .map(|p| cell(p).load(Ordering::Relaxed))
                .sum()
        };
        let detections: BTreeMap<String, u64> = ScanKind::WORDS
            .iter()
            .enumerate()
            .map(|(kind, word)| {
                let count = self
                    .published
                    .iter()
                    .filter_map(|p| p.detections.get(kind))
                    .map(|cell| cell.load(Ordering::Relaxed))
                    .sum();
                ((*word).to_owned(), count)
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        let kernel_queues = std::fs::read_to_string(KERNEL_QUEUES)
            .map(|text| control::kernel_queues(&text, &self.facts.queues))
            .unwrap_or_default();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            uptime_secs: self.facts.started.elapsed().as_secs(),
            // The config's words, which scripts compare against.
            queue_mode: match self.facts.queue_mode {
                QueueMode::Native => "native",
                QueueMode::Compat => "compat",
            }
            .to_owned(),
            queues: self.facts.queues.clone(),
            packets: PacketCounts {
                queued: sum(|p| &p.queued),
                answered: sum(|p| &p.answered),
                short_headers_logged: sum(|p| &p.short_headers_logged),
                malformed: sum(|p| &p.malformed),
            },
            detections,
            blocks: BlockCounts {
                now: sum(|p| &p.blocks_now),
                ordered: sum(|p| &p.blocks_ordered),
                refused: sum(|p| &p.blocks_refused),
                released: sum(|p| &p.blocks_released),
            },
            sources_tracked: sum(|p| &p.sources_tracked),
            sources_evicted: sum(|p| &p.sources_evicted),
            spoofed_packets: sum(|p| &p.spoofed),
            alert_lines_suppressed: sum(|p| &p.alert_lines_suppressed),
            kernel_queues,
            crowdsec: self.fleet.as_ref().map(FleetView::status),
            trigger_to_block: trigger_to_block(&self.facts.block_latency),
        }
    }

    fn list(&self) -> Answer {
        let (reply, holding) = mpsc::sync_channel(1);
        if self
            .orders
            .send(Order::ByHand(ByHand::List { reply }))
            .is_err()
        {
            return gone();
        }
        let Some(Holding { blocks, actions }) = wait(&holding) else {
            return no_answer();
        };
        let now = SystemTime::now();
        let actions: Vec<String> = actions.iter().map(|name| (*name).to_owned()).collect();
        let mut blocks: Vec<BlockEntry> = blocks
            .into_iter()
            .map(|record| BlockEntry {
                address: record.source.to_string(),
                scope: SCOPE_IP.to_owned(),
                pulled: false,
                origin: match record.kind == MANUAL_KIND {
                    true => "manual".to_owned(),
                    false => "detection".to_owned(),
                },
                left_secs: record.remaining(now).map(|left| left.as_secs()),
                kind: record.kind,
                protocol: record.protocol,
                port: record.port,
                since: record.added,
                verified: record.verified,
                actions: actions.clone(),
            })
            .collect();
        if let Some(fleet) = &self.fleet {
            blocks.extend(fleet.entries(now));
        }
        Answer::Done(Reply::List { blocks })
    }

    /// Hands a command to the packet loop and waits for its outcome.
    fn command(&self, make: impl FnOnce(Done) -> Command, reload: bool) -> Answer {
        let (done, outcome) = mpsc::sync_channel(1);
        if self.commands.send(make(done)).is_err() {
            return gone();
        }
        match wait(&outcome) {
            None => no_answer(),
            Some(Err(reason)) => Answer::Refused { reason },
            Some(Ok(Changed { summary, count })) => Answer::Done(match reload {
                true => Reply::Reloaded { summary },
                false => Reply::Changed { summary, count },
            }),
        }
    }
}

impl Handler for ControlHandler {
    fn handle(&self, request: Request) -> Answer {
        match request {
            Request::Status => Answer::Done(Reply::Status(Box::new(self.status()))),
            Request::List => self.list(),
            Request::Block {
                address,
                timeout_secs,
            } => self.command(
                |done| Command::Block {
                    address,
                    timeout: timeout_secs.map(Duration::from_secs),
                    done,
                },
                false,
            ),
            Request::Unblock { address } => {
                self.command(|done| Command::Unblock { address, done }, false)
            }
            Request::Flush => self.command(|done| Command::Flush { done }, false),
            Request::Reload => self.command(|done| Command::Reload { done }, true),
        }
    }
}

/// The status section of the histogram: its buckets and the two quantiles read from them.
fn trigger_to_block(latency: &BlockLatency) -> TriggerToBlock {
    let buckets = latency.snapshot();
    let (inline_blocks, inline_failures) = latency.inline_counts();
    TriggerToBlock {
        inline_blocks,
        inline_failures,
        blocks: buckets.iter().sum(),
        p50_us: block_latency::quantile_micros(&buckets, 0.50),
        p99_us: block_latency::quantile_micros(&buckets, 0.99),
        buckets: buckets.to_vec(),
    }
}

fn wait<T>(outcome: &Receiver<T>) -> Option<T> {
    outcome.recv_timeout(COMMAND_TIMEOUT).ok()
}

fn gone() -> Answer {
    Answer::Refused {
        reason: "nfsentry is shutting down".into(),
    }
}

fn no_answer() -> Answer {
    Answer::Refused {
        reason: format!(
            "the daemon did not carry the command out within {}s (or is shutting down); see its log",
            COMMAND_TIMEOUT.as_secs()
        ),
    }
}

impl PacketLoop {
    /// Carries out the commands waiting on the control channel, in the order they came.
    pub(super) fn obey(&mut self, commands: &Commands) {
        for command in commands.take() {
            match command {
                Command::Block {
                    address,
                    timeout,
                    done,
                } => {
                    let term = match timeout {
                        None => self.config.respond.block_timeout,
                        Some(t) if t.is_zero() => None,
                        Some(t) => Some(t),
                    };
                    let placed = self.judge.pipeline.block_by_hand(
                        address,
                        term,
                        Instant::now(),
                        SystemTime::now(),
                    );
                    match placed {
                        Ok(order) => self.hand_over(ByHand::Block { order, done }),
                        Err(reason) => {
                            let _ = done.send(Err(format!("not blocked: {reason}")));
                        }
                    }
                }
                Command::Unblock { address, done } => {
                    self.judge.pipeline.release_by_hand(address);
                    self.tell_shards(|| ToShard::Release(address));
                    self.hand_over(ByHand::Unblock {
                        source: address,
                        done,
                    });
                }
                Command::Flush { done } => {
                    self.judge.pipeline.release_all_by_hand();
                    self.tell_shards(|| ToShard::ReleaseAll);
                    self.hand_over(ByHand::Flush { done });
                }
                Command::Reload { done } => self.reload(Some(done)),
            }
        }
    }

    /// SIGHUP or `nfsentry reload`: re-reads the config, and applies it only if it passes
    /// `check-config`; otherwise the running one stays and the reason goes to the log and to
    /// whoever asked.
    pub(super) fn reload(&mut self, done: Option<Done>) {
        let fresh = match reload::load_checked(&self.config.origin) {
            Ok(fresh) => fresh,
            Err(reason) => {
                error!("reload refused, the running configuration stays: {reason}");
                if let Some(done) = done {
                    let _ = done.send(Err(reason));
                }
                return;
            }
        };
        let (merged, kept) = reload::merge(&self.config, fresh);
        // Each queue's shard takes its share of the limits, as at start.
        let share = merged.shard_share();
        self.judge.pipeline.reconfigure(&share);
        self.tell_shards(|| ToShard::Reconfigure(Box::new(share.clone())));
        let spec = RulesetSpec::from_config(&merged, self.ingress_devices.clone());
        let mut summary = format!("reloaded: {}", merged.summary());
        if !kept.is_empty() {
            summary.push_str(&format!(
                "; changes to {} take effect at the next start",
                kept.join(", ")
            ));
            warn!("{summary}");
        } else {
            info!("{summary}");
        }
        self.config = merged;
        self.hand_over(ByHand::Refill {
            spec: Box::new(spec),
            summary,
            done,
        });
    }

    fn hand_over(&self, command: ByHand) {
        if self.judge.orders.send(Order::ByHand(command)).is_err() {
            // The command's sender is dropped with it: the control thread answers "shutting
            // down" rather than wait.
            error!("the responder thread is gone: a command from the control socket is lost");
        }
    }
}
