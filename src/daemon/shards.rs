//! Several queues (`daemon.queue = "0-3"`): the kernel spreads packets over them by a hash of
//! the addresses, so every packet of one source reaches one queue, and each queue gets a reader
//! thread that owns its own [`Pipeline`], a shard of the source and block tables. Nothing on the
//! packet path is shared, so no lock is taken there; blocks go to the one responder through the
//! same order channel as the first queue's.
//!
//! The first queue is read by the main thread, which also keeps the signals, the control
//! socket, the NFLOG short headers and the host watch, exactly as with a single queue (which
//! thus costs nothing more). What every shard must learn goes out from the main thread as a
//! [`ToShard`] message, with a byte on a pipe that wakes the reader's poll: the host's new
//! addresses, releases (by hand, or noticed by the responder in the kernel set), a flush, and a
//! reloaded config. Releases go to every shard: the kernel's hash has a secret seed, so which
//! shard holds a source cannot be told from here, and a shard that does not hold it does
//! nothing.
//!
//! The limits the daemon keeps as a whole (`max_sources`, `max_blocks`, `max_blocks_per_sec`)
//! are divided: each shard gets ceil(limit / queues) ([`Config::shard_share`]).

use std::net::IpAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use log::error;

use super::control::Published;
use super::host_edges::ReplySender;
use super::inline_block::InlineBlock;
use super::side_watch::SideWatch;
use super::{send_orders, QueueJudge, DRAIN_BATCH};
use crate::config::{Config, Verdict};
use crate::pipeline::{self, Pipeline};
use crate::queue::{Judge, PacketQueue, QueueError, QueuedPacket, Waiting};
use crate::respond::responder::Order;
use crate::spoof::HostFacts;
use crate::wake::{self, WakingReceiver, WakingSender};

/// What the main thread tells a queue reader.
pub(super) enum ToShard {
    /// The host's addresses or routers changed.
    HostFacts(HostFacts),
    /// A block was lifted by hand (or deleted from the kernel set by hand).
    Release(IpAddr),
    /// Every block was lifted by hand.
    ReleaseAll,
    /// A reloaded config, already this shard's share.
    Reconfigure(Box<Config>),
    Stop,
}

/// The main thread's end of one queue reader.
pub(super) struct ShardHandle {
    queue: u16,
    inbox: WakingSender<ToShard>,
    /// The reader's counters, for `nfsentry status`.
    published: Arc<Published>,
    /// The reader's last status, for the status line.
    status: Arc<Mutex<pipeline::Status>>,
    thread: Option<JoinHandle<Result<(), QueueError>>>,
}

impl ShardHandle {
    /// Starts a reader for `queue` on its own thread, with the pipeline built for it.
    pub(super) fn spawn(
        queue: PacketQueue,
        pipeline: Pipeline,
        orders: mpsc::Sender<Order>,
        replies: Option<ReplySender>,
        inline: Option<InlineBlock>,
        default_verdict: Verdict,
    ) -> std::io::Result<ShardHandle> {
        let (inbox_tx, inbox_rx) = wake::channel()?;
        let published = Arc::new(Published::default());
        let status = Arc::new(Mutex::new(pipeline.status()));
        let number = queue.number();
        let reader = ShardLoop {
            judge: QueueJudge {
                pipeline,
                replies,
                orders,
                inline,
                default_verdict,
                answered: 0,
            },
            inbox: inbox_rx,
            published: published.clone(),
            status: status.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("queue-{number}"))
            .spawn(move || reader.run(queue))?;
        Ok(ShardHandle {
            queue: number,
            inbox: inbox_tx,
            published,
            status,
            thread: Some(thread),
        })
    }

    /// Hands a message to the reader and wakes it. A reader that is gone is noticed by
    /// [`ShardHandle::failed`].
    pub(super) fn send(&self, message: ToShard) {
        let _ = self.inbox.send(message);
    }

    pub(super) fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// The reader's last published status.
    pub(super) fn status(&self) -> pipeline::Status {
        match self.status.lock() {
            Ok(status) => *status,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The reader's error when its thread has ended on its own (its queue failed).
    pub(super) fn failed(&mut self) -> Option<QueueError> {
        if !self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            return None;
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Some(e),
            Some(Err(_)) => {
                error!("the reader thread of NFQUEUE {} panicked", self.queue);
                None
            }
            _ => None,
        }
    }

    /// Tells the reader to stop and waits for it.
    pub(super) fn stop(mut self) {
        self.send(ToShard::Stop);
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!("{e}"),
                Err(_) => error!("the reader thread of NFQUEUE {} panicked", self.queue),
            }
        }
    }
}

/// The shard a block restored at start (or placed by hand) is kept by, for its expiry: spread
/// evenly, so that no shard's share of `max_blocks` overflows with the blocks of a full table.
/// The kernel's own choice of queue cannot be reproduced (its hash is seeded at boot), and
/// need not be: the kernel set drops a blocked source before any queue sees it.
pub(super) fn keeper_of(source: IpAddr, shards: usize) -> usize {
    let bytes = match source {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    // FNV-1a: cheap, and spreads consecutive addresses.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    usize::try_from(hash % shards.max(1) as u64).unwrap_or(0)
}

/// The sum of the shards' statuses, for the status line. The shard's status is taken apart
/// field by field, so that a counter added to it cannot be left out of the sum.
pub(super) fn add_status(total: &mut pipeline::Status, shard: &pipeline::Status) {
    let pipeline::Status {
        queued,
        short_headers_logged,
        malformed,
        detections,
        blocks_ordered,
        blocks_held_back,
        waiting,
        blocks_refused,
        blocks_evicted,
        blocks_verified,
        blocked_now,
        blocked_verified,
        blocked_unverified,
        sources_tracked,
        sources_evicted,
        alert_lines_suppressed,
        detections_by_kind,
        blocks_released,
        spoofed,
        challenges,
        handshakes,
    } = *shard;
    total.queued += queued;
    total.short_headers_logged += short_headers_logged;
    total.malformed += malformed;
    total.detections += detections;
    total.blocks_ordered += blocks_ordered;
    total.blocks_held_back += blocks_held_back;
    total.waiting += waiting;
    total.blocks_refused += blocks_refused;
    total.blocks_evicted += blocks_evicted;
    total.blocks_verified += blocks_verified;
    total.blocked_now += blocked_now;
    total.blocked_verified += blocked_verified;
    total.blocked_unverified += blocked_unverified;
    total.sources_tracked += sources_tracked;
    total.sources_evicted += sources_evicted;
    total.alert_lines_suppressed += alert_lines_suppressed;
    for (sum, count) in total.detections_by_kind.iter_mut().zip(detections_by_kind) {
        *sum += count;
    }
    total.blocks_released += blocks_released;
    total.spoofed += spoofed;
    total.challenges += challenges;
    total.handshakes += handshakes;
}

/// One reader thread: its pipeline and the main thread's messages (its queue is its `run`'s).
struct ShardLoop {
    judge: QueueJudge,
    inbox: WakingReceiver<ToShard>,
    published: Arc<Published>,
    status: Arc<Mutex<pipeline::Status>>,
}

/// A further queue's reader, as its queue sees it: [`QueueJudge`] judges, and before each batch
/// the main thread's messages are carried out, as the main thread takes its releases: a released
/// source's next packet is judged afresh.
impl Judge for ShardLoop {
    fn before_answer(&mut self) -> bool {
        self.take_messages()
    }

    fn judge(&mut self, packet: &QueuedPacket<'_>) -> Verdict {
        self.judge.judge(packet)
    }

    fn before_verdicts(&mut self) {
        self.judge.before_verdicts();
    }
}

impl ShardLoop {
    fn run(mut self, mut queue: PacketQueue) -> Result<(), QueueError> {
        let number = queue.number();
        let side = SideWatch::spawn(
            format!("side-watch-{number}"),
            &[self.inbox.fd()],
            queue.waker()?,
        )
        .map_err(|source| QueueError::Waker {
            queue: number,
            source,
        })?;
        loop {
            let read = queue.receive(Waiting::UpToIdle)?;
            let attention = side.wants_attention();
            if attention {
                self.inbox.clear_wake_ups();
                side.resume();
            }
            if queue.drain_read(read, DRAIN_BATCH, &mut self)?.is_none() {
                return Ok(());
            }
            self.judge.tick(Instant::now());
            self.publish();
        }
    }

    /// Carries out the main thread's messages; false once told to stop (or the main thread is
    /// gone).
    fn take_messages(&mut self) -> bool {
        loop {
            let message = match self.inbox.try_recv() {
                Ok(message) => message,
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            };
            match message {
                ToShard::HostFacts(facts) => {
                    let lifted = self.judge.pipeline.set_host_facts(facts, Instant::now());
                    send_orders(&self.judge.orders, lifted.orders, &lifted.lines);
                }
                ToShard::Release(source) => self.judge.pipeline.release(source),
                ToShard::ReleaseAll => {
                    self.judge.pipeline.release_all_by_hand();
                }
                ToShard::Reconfigure(config) => self.judge.pipeline.reconfigure(&config),
                ToShard::Stop => return false,
            }
        }
    }

    /// Publishes the counters; the status snapshot only when the main thread is not reading it,
    /// so the reader never waits.
    fn publish(&self) {
        let status = self.judge.pipeline.status();
        self.published.publish(&status, self.judge.answered);
        if let Ok(mut snapshot) = self.status.try_lock() {
            *snapshot = status;
        }
    }
}
