//! `nfsentry run`: owns the process — start-up order, privileges, signals, threads and the
//! packet loop that joins the kernel edges to the decision core.
//!
//! Start-up order matters: take the instance lock before anything in the kernel or the state
//! directory is touched (a second nfsentry must change nothing), read the blocked sets a crashed
//! run left in force before its tables are cleared, bind the queue before the rules that feed it
//! exist (packets that arrive while the binding is acknowledged go unanswered), drop
//! capabilities before any thread exists (capabilities are per thread), and install the
//! ruleset and restore blocks before the first packet is decided.

mod control;
mod host_edges;
mod inline_block;
pub mod reload;
mod shards;
mod side_watch;

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info, log, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use thiserror::Error;

use crate::config::{self, ActionKind, Config, Origin, Verdict};
use crate::control::server::ControlSocket;
use crate::error_text::with_causes;
use crate::firewall;
use crate::fleet::{Enforcer, Fleet};
use crate::heal::{self, Held};
use crate::host;
use crate::instance;
use crate::nflog::NflogSocket;
use crate::nft::ruleset::{QueueMode, RulesetSpec};
use crate::nft::watch::Watch;
use crate::pipeline::{Arrival, LogLine, Order as PipelineOrder, Pipeline};
use crate::queue::{Judge, PacketQueue, QueuedPacket, Waiting};
use crate::respond::block_latency::BlockLatency;
use crate::respond::responder::{self, Order, ResponderSetup};
use crate::respond::{self, Action};
use crate::sd_notify::Notifier;
use crate::store::{self, BlockRecord, BlockStore};
use crate::wake::{self, WakingReceiver};
use host_edges::{HostFollower, ReplySender};
use inline_block::InlineBlock;
use shards::{ShardHandle, ToShard};
use side_watch::SideWatch;

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("{0}")]
    Lock(#[from] instance::LockError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Queue(#[from] crate::queue::QueueError),
    #[error(
        "cannot read short-header packets from NFLOG group {group}: {}",
        with_causes(source)
    )]
    Nflog {
        group: u16,
        source: crate::nflog::NflogError,
    },
    #[error("{0}")]
    Firewall(String),
    #[error("{what}: {source}")]
    System {
        what: &'static str,
        source: std::io::Error,
    },
}

/// IPv4 header + the first bytes of the transport header are all a short-header report needs.
const NFLOG_COPY_BYTES: u32 = 128;
/// A status line this often, so an admin tailing the log sees the daemon is alive.
const STATUS_EVERY: Duration = Duration::from_secs(600);
/// Packets answered before the loop looks at signals, NFLOG and timers again.
const DRAIN_BATCH: usize = 1024;
/// How often the packet loop goes through everything besides its queue even when the side
/// watcher says nothing: it wakes the loop for what comes, this is for a watcher that failed.
const ATTEND_EVERY: Duration = Duration::from_secs(1);

pub fn run(config: Config) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        warn!("{e}; systemd will not hear from nfsentry");
        Notifier::disabled()
    });
    match &config.origin {
        Origin::File(path) => info!("nfsentry starting with config {}", path.display()),
        Origin::Defaults => info!(
            "nfsentry starting on built-in defaults: no config file at {}",
            config::DEFAULT_PATH
        ),
    }
    info!("{}", config.summary());
    // Held until the process ends.
    let _instance = instance::acquire(&config.daemon.table, &config.daemon.state_dir)?;

    let (host_follower, host_facts) = HostFollower::open();
    let devices = host::ingress_devices(&config);
    let spec = RulesetSpec::from_config(&config, devices.clone());

    let (mut store, skipped) = BlockStore::open(&config.daemon.state_dir)?;
    store.limit_history(config.daemon.history_max_bytes);
    for line in skipped {
        warn!(
            "{}/blocks:{}: unreadable line skipped: {:?}",
            config.daemon.state_dir.display(),
            line.line,
            line.text
        );
    }
    let sets_hold_blocks = config.respond.actions.contains(&ActionKind::NftSet);
    let released_while_away = match sets_hold_blocks {
        true => take_over_kernel_blocks(spec.blocks_table(), &mut store),
        false => Vec::new(),
    };
    // Blocks that expired while nfsentry was down are lifted by the responder at start.
    let restored: Vec<BlockRecord> = store
        .live()
        .filter(|block| !block.is_expired(SystemTime::now()))
        .cloned()
        .collect();

    let signals = block_signals()?;
    let keep_blocks = config.daemon.keep_blocks_on_exit && sets_hold_blocks;
    let due: Vec<Held> = restored
        .iter()
        .map(|block| (block.source, block.remaining(SystemTime::now())))
        .collect();
    if !(keep_blocks && firewall::reduce_stale(&spec, &due)) {
        firewall::clear_stale(&config.daemon.table);
    }
    // Every queue is bound now, before the rules that spread packets over them exist.
    let mut queues = config
        .daemon
        .queue
        .numbers()
        .map(PacketQueue::open)
        .collect::<Result<Vec<_>, _>>()?;
    let mut queue = queues.remove(0);
    let mut nflog = match devices.is_empty() {
        true => None,
        false => Some(
            NflogSocket::bind(config.daemon.nflog_group, NFLOG_COPY_BYTES).map_err(|source| {
                DaemonError::Nflog {
                    group: config.daemon.nflog_group,
                    source,
                }
            })?,
        ),
    };
    // Raw sockets are opened while CAP_NET_RAW is still there; sending needs no capability.
    let handshake = ReplySender::open(&config, Instant::now());
    // Each further queue's reader sends its own replies, with its own secret: a source's ACK
    // reaches the reader that challenged its SYN, as every packet of one source does.
    let shard_handshakes: Vec<_> = queues
        .iter()
        .map(|_| ReplySender::open(&config, Instant::now()))
        .collect();
    let actions = respond::build(&config.respond, &config.daemon.table);
    // Opened now, while every capability is there, and read once the ruleset is in: what
    // happens in between waits in its buffer.
    let watch = Watch::open(
        &config.daemon.table,
        config.respond.blocked_table.as_deref(),
    )
    .map_err(|e| {
        warn!(
            "cannot follow nftables changes ({}): a deleted or flushed table is not \
                 repaired, nor a block deleted by hand noticed, until nfsentry restarts",
            with_causes(&e)
        )
    })
    .ok();
    let detached = respond::detached_status(&actions);
    // Bound while the daemon may still create the socket's directory; answered once the
    // ruleset is in. Without it nfsentry still protects the host, so a failure is logged only.
    let control_socket = ControlSocket::bind(&config.daemon.control_socket)
        .map_err(|e| {
            error!("{e}; `nfsentry status` and the other commands will not reach this daemon")
        })
        .ok();
    let (command_sender, commands) =
        control::command_channel().map_err(|source| DaemonError::System {
            what: "cannot create the control command pipe",
            source,
        })?;
    drop_capabilities(&actions);

    let prefer = config.daemon.queue_mode;
    let (order_tx, order_rx) = mpsc::channel();
    let (fleet, enforcer) = start_fleet(&config, &order_tx)?;
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (released_tx, released_rx) = wake::channel().map_err(|e| DaemonError::System {
        what: "cannot create the release channel",
        source: e,
    })?;
    let block_latency = Arc::new(BlockLatency::default());
    // With the blocked sets in use, each queue reader puts its blocks into them itself,
    // through a socket of its own (CAP_NET_ADMIN is kept for every thread).
    let inline_table = config
        .respond
        .blocked_table
        .as_deref()
        .unwrap_or(&config.daemon.table)
        .to_owned();
    let open_inline = || match sets_hold_blocks {
        true => InlineBlock::open(&inline_table, block_latency.clone()),
        false => None,
    };
    let responder = responder::spawn(
        ResponderSetup {
            spec,
            prefer,
            store,
            actions,
            sets_hold_blocks,
            keep_blocks_on_exit: keep_blocks,
            released: released_tx,
            released_while_away,
            fleet: enforcer,
            block_latency: block_latency.clone(),
        },
        order_rx,
        ready_tx,
    )
    .map_err(|source| DaemonError::System {
        what: "cannot start the responder thread",
        source,
    })?;
    let installed = ready_rx
        .recv()
        .map_err(|_| DaemonError::Firewall("the responder thread died during set-up".into()))?
        .map_err(DaemonError::Firewall)?;
    info!(
        "nft ruleset installed: table inet {table} queues to NFQUEUE {queue} using {mode}{why}",
        table = config.daemon.table,
        queue = config.daemon.queue,
        mode = installed.mode,
        why = match (installed.mode, prefer) {
            (QueueMode::Compat, None) => " (this kernel has no nft_queue)",
            (QueueMode::Compat, Some(_)) => " (as configured)",
            (QueueMode::Native, _) => "",
        }
    );
    if let Some(admin) = &config.respond.blocked_table {
        info!(
            "blocks go into the sets blocked_v4 and blocked_v6 of your table inet {admin} \
             (respond.blocked_table); nfsentry changes only their elements"
        );
    }
    if let Some(watch) = watch {
        let orders = order_tx.clone();
        let watching = watch.spawn(move |seen| orders.send(Order::Ruleset(seen)).is_ok());
        if let Err(e) = watching {
            warn!("cannot start the thread that follows nftables changes: {e}");
        }
    }
    let devices = installed.ingress_devices;
    if devices.is_empty() {
        warn!("no network interface for the netdev ingress chain: short IPv4 headers go unseen");
    } else {
        info!(
            "short IPv4 headers are caught on {} via NFLOG group {}",
            devices.join(", "),
            config.daemon.nflog_group
        );
    }

    let (replies, handshakes) = handshake.unzip();
    let share = config.shard_share();
    let shard_count = usize::from(config.daemon.queue.count());
    let restored_by_shard = |shard: usize| -> Vec<BlockRecord> {
        restored
            .iter()
            .filter(|block| shards::keeper_of(block.source, shard_count) == shard)
            .cloned()
            .collect()
    };
    let mut pipeline = Pipeline::new(&share, host_facts.clone()).with_handshakes(handshakes);
    pipeline.restore_blocked(&restored_by_shard(0), Instant::now(), SystemTime::now());
    let mut shards = Vec::with_capacity(queues.len());
    for (index, (queue, handshake)) in queues.into_iter().zip(shard_handshakes).enumerate() {
        let (replies, handshakes) = handshake.unzip();
        let mut shard_pipeline =
            Pipeline::new(&share, host_facts.clone()).with_handshakes(handshakes);
        shard_pipeline.restore_blocked(
            &restored_by_shard(index + 1),
            Instant::now(),
            SystemTime::now(),
        );
        let number = queue.number();
        let shard = ShardHandle::spawn(
            queue,
            shard_pipeline,
            order_tx.clone(),
            replies,
            open_inline(),
            config.respond.verdict,
        )
        .map_err(|source| DaemonError::System {
            what: "cannot start a queue reader thread",
            source,
        })?;
        debug!("NFQUEUE {number} is read by its own thread");
        shards.push(shard);
    }
    let inline = open_inline();
    let published = Arc::new(control::Published::default());
    let all_published: Vec<_> = std::iter::once(published.clone())
        .chain(shards.iter().map(ShardHandle::published))
        .collect();
    let control_server = control_socket.and_then(|socket| {
        let handler = control::ControlHandler::new(
            command_sender,
            order_tx.clone(),
            all_published,
            control::Facts {
                started: Instant::now(),
                queue_mode: installed.mode,
                queues: config.daemon.queue.numbers().collect(),
                block_latency,
            },
        )
        .with_fleet(fleet.as_ref().map(Fleet::view));
        match socket.serve(Arc::new(handler)) {
            Ok(server) => {
                info!("control socket {}", server.path().display());
                Some(server)
            }
            Err(e) => {
                error!("cannot start answering on the control socket: {e}");
                None
            }
        }
    });

    let watching = format!("watching; {} blocks in place", restored.len());
    info!("{watching}");
    if let Err(e) = notifier.ready(&watching) {
        warn!("cannot tell systemd nfsentry is ready: {e}");
    }

    let mut packet_loop = PacketLoop {
        judge: QueueJudge {
            pipeline,
            replies,
            orders: order_tx.clone(),
            inline,
            default_verdict: config.respond.verdict,
            answered: 0,
        },
        released: released_rx,
        notifier,
        detached,
        config,
        ingress_devices: devices,
        published,
        fleet,
        host_follower,
        shards,
    };
    let result = packet_loop.run(&mut queue, nflog.as_mut(), &signals, &commands);
    // No command is taken any more: stop answering before the responder goes.
    drop(control_server);
    let _ = packet_loop.notifier.stopping();
    packet_loop.log_status("stopping");
    // Their last orders reach the responder ahead of its shutdown.
    for shard in packet_loop.shards.drain(..) {
        shard.stop();
    }
    // The worker goes first: nothing it pulls from now on could be enforced.
    if let Some(fleet) = packet_loop.fleet.take() {
        fleet.stop();
    }
    let _ = order_tx.send(Order::Shutdown);
    if responder.join().is_err() {
        error!("the responder thread panicked");
    }
    result
}

/// Starts the CrowdSec worker when `[crowdsec]` is configured, with the responder's half that
/// enforces what it pulls and reports what nfsentry blocks. Runs after capabilities are
/// dropped, like every thread.
fn start_fleet(
    config: &Config,
    orders: &mpsc::Sender<Order>,
) -> Result<(Option<Fleet>, Option<Enforcer>), DaemonError> {
    let Some(section) = &config.crowdsec else {
        return Ok((None, None));
    };
    let fleet = Fleet::start(section, orders.clone()).map_err(|source| DaemonError::System {
        what: "cannot start the crowdsec thread",
        source,
    })?;
    let sets_table = config
        .respond
        .blocked_table
        .as_deref()
        .unwrap_or(&config.daemon.table);
    let enforcer = Enforcer::new(
        &config.daemon.table,
        sets_table,
        section,
        Some(fleet.reporter()),
    );
    Ok((Some(fleet), Some(enforcer)))
}

/// Reads the blocked sets the tables of an earlier run still hold (they outlive a crash or a
/// SIGKILL) and merges them into the store as [`heal::reconcile`] says: blocks in force that
/// the journal missed are taken over, blocks deleted by hand meanwhile are dropped from it and
/// returned, for the actions to release them too. Without such tables the journal stands as it
/// is.
fn take_over_kernel_blocks(table: &str, store: &mut BlockStore) -> Vec<BlockRecord> {
    let kernel = match firewall::read_blocked(table) {
        Ok(Some(kernel)) => kernel,
        Ok(None) => return Vec::new(),
        Err(e) => {
            warn!(
                "cannot read the blocked sets of the nft table {table} an earlier run left: {}; \
                 starting from the journal alone",
                with_causes(&e)
            );
            return Vec::new();
        }
    };
    let now = SystemTime::now();
    let journal: Vec<Held> = store
        .live()
        .filter(|block| !block.is_expired(now))
        .map(|block| (block.source, block.remaining(now)))
        .collect();
    let reconciled = heal::reconcile(&journal, &kernel);
    let in_kernel = kernel
        .v4
        .iter()
        .chain(&kernel.v6)
        .map(Vec::len)
        .sum::<usize>();
    info!(
        "the nft table {table} of an earlier run holds {in_kernel} blocks: taking them over \
         ({} missing from the journal)",
        reconciled.adopt.len()
    );
    for (source, remaining) in reconciled.adopt {
        store.adopt(BlockRecord::adopted(source, now, remaining));
    }
    for family in reconciled.flushed {
        warn!(
            "the {family} blocked set was emptied while nfsentry was not running: its blocks \
             are put back from the journal"
        );
    }
    let released = reconciled
        .released_by_hand
        .iter()
        .filter_map(|source| store.remove(source))
        .collect();
    // A failure is said by the responder, which keeps trying.
    let _ = store.sync();
    released
}

/// The packet loop: reads the kernel edges, hands each packet to the pipeline with the time,
/// and carries out what comes back.
struct PacketLoop {
    /// The first queue's pipeline and where its packets' orders go.
    judge: QueueJudge,
    /// Sources the responder released by hand, which the pipeline must stop dropping.
    released: WakingReceiver<IpAddr>,
    /// systemd's readiness, status and watchdog; does nothing outside a Type=notify unit.
    notifier: Notifier,
    /// The queues of the actions that run off the responder thread, for the status line.
    detached: respond::detached::StatusSuffix,
    /// The configuration in force: as loaded, then as reloaded.
    config: Config,
    /// The devices the short-header chain hooks, kept across a reload.
    ingress_devices: Vec<String>,
    /// The counters `nfsentry status` reads.
    published: Arc<control::Published>,
    /// The CrowdSec worker, with `[crowdsec]`.
    fleet: Option<Fleet>,
    /// The host's addresses and routers, never counted nor blocked.
    host_follower: HostFollower,
    /// The readers of the queues after the first, each on its own thread with its own shard of
    /// the tables; empty with one queue. The first queue, the signals, the control commands,
    /// NFLOG and the host watch stay on this thread: they are what a single queue has always
    /// been read with, so one queue costs nothing more, and short headers are rare enough (the
    /// kernel drops them before any queue) that one shard counting them all is no bottleneck.
    shards: Vec<ShardHandle>,
}

impl PacketLoop {
    fn run(
        &mut self,
        queue: &mut PacketQueue,
        mut nflog: Option<&mut NflogSocket>,
        signals: &SignalFd,
        commands: &control::Commands,
    ) -> Result<(), DaemonError> {
        let mut next_status = Instant::now() + STATUS_EVERY;
        let mut next_attend = Instant::now() + ATTEND_EVERY;
        let side = {
            let mut watched = vec![signals.as_fd(), commands.fd(), self.released.fd()];
            watched.extend(nflog.as_deref().map(|n| n.as_fd()));
            watched.extend(self.host_follower.fd());
            SideWatch::spawn("side-watch".into(), &watched, queue.waker()?).map_err(|e| {
                DaemonError::System {
                    what: "cannot start the thread that watches signals and commands",
                    source: e,
                }
            })?
        };
        loop {
            // Sleeps here, in the queue's own receive, until a packet or a wake-up comes, or a
            // second has passed.
            let read = queue.receive(Waiting::UpToIdle)?;
            let mut stop = false;
            // Everything else, when the side watcher says something is waiting, and once a
            // second whatever it says, busy or idle, so that nothing depends on it alone.
            let attention = side.wants_attention();
            let now = Instant::now();
            if attention || now >= next_attend {
                next_attend = now + ATTEND_EVERY;
                stop = self.attend(nflog.as_deref_mut(), signals, commands)?;
                if attention {
                    side.resume();
                }
            }
            // With a signal to stop: these packets answered, and no more read.
            let limit = if stop { 0 } else { DRAIN_BATCH };
            queue.drain_read(read, limit, self)?;
            if stop {
                return Ok(());
            }
            let now = Instant::now();
            if let Err(e) = self.notifier.keep_alive(now) {
                debug!("watchdog ping failed: {e}");
            }
            self.judge.tick(now);
            if now >= next_status {
                self.log_status("status");
                next_status = now + STATUS_EVERY;
            }
            self.published
                .publish(&self.judge.pipeline.status(), self.judge.answered);
        }
    }

    /// Goes through everything besides the queue: the host's addresses, the other queues'
    /// readers, releases, short headers, signals and control commands. Each is read without
    /// waiting, so what has nothing to say costs a call at most. True when a signal says stop.
    fn attend(
        &mut self,
        nflog: Option<&mut NflogSocket>,
        signals: &SignalFd,
        commands: &control::Commands,
    ) -> Result<bool, DaemonError> {
        // First, so that a packet spoofed from an address that has just become the host's
        // own is already screened out.
        self.follow_host();
        if let Some(e) = self.shards.iter_mut().find_map(ShardHandle::failed) {
            return Err(e.into());
        }
        self.released.clear_wake_ups();
        self.take_releases();
        if let Some(n) = nflog {
            let result =
                n.recv_batch(|logged| self.note_short_header(logged.payload, logged.in_ifindex));
            if let Err(e) = result {
                error!("NFLOG receive failed: {e}");
            }
        }
        let mut stop = false;
        match signals.read_signal() {
            Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => self.log_status("status"),
                Ok(Signal::SIGHUP) => self.reload(None),
                Ok(signal) => {
                    info!("{signal} received, shutting down");
                    stop = true;
                }
                Err(_) => {}
            },
            Ok(None) => {}
            Err(e) => warn!("reading signals failed: {e}"),
        }
        self.obey(commands);
        Ok(stop)
    }

    /// Takes the releases the responder has sent, and passes them on to the other queues'
    /// readers.
    fn take_releases(&mut self) {
        while let Ok(source) = self.released.try_recv() {
            self.judge.pipeline.release(source);
            self.tell_shards(|| ToShard::Release(source));
        }
    }

    /// The host's addresses or routers changed (rtnetlink said so): a block of an address that
    /// is now one never blocked is lifted at once.
    fn follow_host(&mut self) {
        if let Some(facts) = self.host_follower.changed() {
            self.tell_shards(|| ToShard::HostFacts(facts.clone()));
            let lifted = self.judge.pipeline.set_host_facts(facts, Instant::now());
            send_orders(&self.judge.orders, lifted.orders, &lifted.lines);
        }
    }

    /// Short-header packets reach nfsentry through NFLOG: the kernel drops them anyway, so there
    /// is no verdict to give, only a source to count.
    fn note_short_header(&mut self, bytes: &[u8], in_ifindex: Option<u32>) {
        let mut handled = self.judge.pipeline.handle(
            bytes,
            Arrival::ShortHeaderLog,
            in_ifindex,
            Instant::now(),
            SystemTime::now(),
        );
        hand_over(
            self.judge.inline.as_mut(),
            &self.judge.orders,
            handled.orders,
            &mut handled.lines,
        );
        self.judge.pipeline.recycle(handled.lines);
    }

    /// Sends a message to every further queue's reader.
    fn tell_shards(&self, message: impl Fn() -> ToShard) {
        for shard in &self.shards {
            shard.send(message());
        }
    }

    /// The status of all queues' shards together.
    fn total_status(&self) -> crate::pipeline::Status {
        let mut total = self.judge.pipeline.status();
        for shard in &self.shards {
            shards::add_status(&mut total, &shard.status());
        }
        total
    }

    fn log_status(&self, what: &str) {
        let mut status = format!("{}{}", self.total_status(), self.detached);
        if let Some(fleet) = &self.fleet {
            status.push_str("; ");
            status.push_str(&fleet.summary());
        }
        info!("{what}: {status}");
        if let Err(e) = self.notifier.status(&status) {
            debug!("cannot send the status to systemd: {e}");
        }
    }
}

/// What judges one queue's packets: its pipeline and where their orders, lines and replies go.
/// The first queue's loop and every further queue's reader judge their packets through one, so
/// all queues judge alike.
struct QueueJudge {
    pipeline: Pipeline,
    /// With `verify = "handshake"`: where the handshake check's replies go out.
    replies: Option<ReplySender>,
    orders: mpsc::Sender<Order>,
    /// With the blocked sets in use: the reader's own way into them. The packets' orders and
    /// lines wait here for the blocks to be in the kernel, until their verdicts are due.
    inline: Option<InlineBlock>,
    /// What a queued packet gets if the pipeline gave no verdict (it always gives one).
    default_verdict: Verdict,
    /// Verdicts given to the kernel.
    answered: u64,
}

impl QueueJudge {
    /// Expiries, tokens for sources waiting to be blocked, and the summaries of what the limits
    /// held back.
    fn tick(&mut self, now: Instant) {
        let mut ticked = self.pipeline.tick(now, SystemTime::now());
        hand_over(
            self.inline.as_mut(),
            &self.orders,
            ticked.orders,
            &mut ticked.lines,
        );
    }
}

impl Judge for QueueJudge {
    /// One queued packet through the pipeline: its replies sent, its lines written and its
    /// orders handed to the responder (both held for the inline block when there is one), its
    /// line buffer given back (so the next packet does not allocate); the verdict for the
    /// kernel.
    fn judge(&mut self, packet: &QueuedPacket<'_>) -> Verdict {
        self.answered += 1;
        let now = Instant::now();
        let mut handled = self.pipeline.handle(
            packet.payload,
            Arrival::Queued,
            packet.in_ifindex,
            now,
            SystemTime::now(),
        );
        if let Some(sender) = self.replies.as_mut() {
            sender.send(&handled.replies, now);
        }
        match self.inline.as_mut() {
            Some(inline) => inline.hold(handled.orders, &mut handled.lines),
            None => send_orders(&self.orders, handled.orders, &handled.lines),
        }
        self.pipeline.recycle(handled.lines);
        handled.verdict.unwrap_or(self.default_verdict)
    }

    /// The blocks the packets just judged ordered go into the kernel before their verdicts.
    fn before_verdicts(&mut self) {
        if let Some(inline) = self.inline.as_mut() {
            inline.commit(&self.orders);
        }
    }
}

/// The first queue's reader, as its queue sees it: [`QueueJudge`] judges, and before each
/// batch the releases the responder sent are taken. A packet of a source the responder has just
/// released may have arrived with the release, and it must be judged afresh, not dropped as
/// blocked. A release wakes the side watcher too, but this costs no system call.
impl Judge for PacketLoop {
    fn before_answer(&mut self) -> bool {
        self.take_releases();
        true
    }

    fn judge(&mut self, packet: &QueuedPacket<'_>) -> Verdict {
        self.judge.judge(packet)
    }

    fn before_verdicts(&mut self) {
        self.judge.before_verdicts();
    }
}

/// Orders made outside a queue's receive call (by the tick, which hands out the tokens of
/// rate-limited blocks, or for a short header from NFLOG): their blocks go into the kernel at
/// once through the reader's inline block when it has one, as a receive call's do, then the
/// lines are written (taken out of `lines`) and the orders go to the responder.
fn hand_over(
    inline: Option<&mut InlineBlock>,
    to: &mpsc::Sender<Order>,
    orders: Vec<PipelineOrder>,
    lines: &mut Vec<LogLine>,
) {
    if orders.is_empty() && lines.is_empty() {
        return;
    }
    match inline {
        Some(inline) => {
            inline.hold(orders, lines);
            inline.commit(to);
        }
        None => {
            send_orders(to, orders, lines);
            lines.clear();
        }
    }
}

/// Writes the lines, then hands the orders to the responder thread.
fn send_orders(to: &mpsc::Sender<Order>, orders: Vec<PipelineOrder>, lines: &[LogLine]) {
    for line in lines {
        write_line(line);
    }
    for order in orders {
        let source = match &order {
            PipelineOrder::Block(block) => block.record.source,
            PipelineOrder::Release(release) => release.source,
            PipelineOrder::Renew(renew) => renew.source,
        };
        if to.send(Order::from(order)).is_err() {
            error!("the responder thread is gone: {source} is dropped inline but not blocked");
        }
    }
}

/// A pipeline line at its level; the text is only built when the level is logged.
fn write_line(line: &LogLine) {
    log!(line.level(), "{line}");
}

/// Signals are read from a signalfd in the packet loop; blocked here, before any thread
/// starts, so that every thread inherits the mask and none is interrupted.
fn block_signals() -> Result<SignalFd, DaemonError> {
    let mut mask = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|e| DaemonError::System {
        what: "cannot block signals",
        source: e.into(),
    })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(|e| {
        DaemonError::System {
            what: "cannot create a signalfd",
            source: e.into(),
        }
    })
}

/// Keeps only what the configured actions need once the sockets and files are open:
/// CAP_NET_ADMIN always (queue, NFLOG, nftables, routes), and what each action says it needs
/// (CAP_NET_RAW for the programs it starts, file-ownership overrides for a hosts.deny that is
/// not root's). Children inherit the bounding set, so it is reduced too.
///
/// Root's children get the bounding set when they exec. A daemon running as its own user (the
/// packaged unit) passes capabilities on only through the ambient set, which needs them in the
/// inheritable set too; so when an action runs programs, the network capabilities it keeps are
/// made ambient, and nothing else is.
fn drop_capabilities(actions: &[Box<dyn Action>]) {
    use caps::{CapSet, Capability, CapsHashSet};
    let mut keep: CapsHashSet = [Capability::CAP_NET_ADMIN].into_iter().collect();
    keep.extend(
        actions
            .iter()
            .flat_map(|action| action.capabilities().iter().copied()),
    );
    let has_admin =
        caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_ADMIN).unwrap_or(false);
    if !has_admin {
        warn!("running without CAP_NET_ADMIN: nftables changes will fail");
        return;
    }
    // What a service manager already withheld cannot be kept; asking for it would fail the
    // whole set call and leave everything in place.
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let keep: CapsHashSet = keep.intersection(&permitted).copied().collect();
    let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
    for cap in bounding.difference(&keep) {
        if let Err(e) = caps::drop(None, CapSet::Bounding, *cap) {
            debug!("cannot drop {cap} from the bounding set: {e}");
        }
    }
    let mut keep_names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    keep_names.sort();
    let keep_names = keep_names.join(", ");
    let for_programs: CapsHashSet =
        match actions.iter().any(|a| a.runs_programs()) && !nix::unistd::geteuid().is_root() {
            true => [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]
                .into_iter()
                .filter(|cap| keep.contains(cap))
                .collect(),
            false => CapsHashSet::new(),
        };
    let targets = [
        (CapSet::Inheritable, for_programs.clone()),
        (CapSet::Effective, keep.clone()),
        (CapSet::Permitted, keep),
    ];
    for (set, target) in targets {
        if let Err(e) = caps::set(None, set, &target) {
            warn!("cannot reduce {set:?} capabilities: {e}");
        }
    }
    for cap in &for_programs {
        if let Err(e) = caps::raise(None, CapSet::Ambient, *cap) {
            warn!("programs nfsentry runs will lack {cap}: {e}");
        }
    }
    debug!("capabilities reduced to {keep_names}");
}
