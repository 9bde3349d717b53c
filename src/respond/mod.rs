//! Carrying out blocks: the [`Backend`] trait every blocking method implements, and the
//! responder thread that owns the backends, the block store and the nft ruleset.
//!
//! The responder is fed block orders over a channel by the packet pipeline and never feeds
//! anything back into it, so the per-packet path never waits for a disk or a firewall. It also
//! lifts blocks whose time is up, including blocks placed by an earlier run.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use log::{error, info, warn};
use thiserror::Error;

mod nft_set;
pub use nft_set::NftSetBackend;

use crate::nft::netlink::Nft;
use crate::nft::ruleset::{QueueMode, RulesetSpec};
use crate::report;
use crate::store::{BlockRecord, BlockStore};

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("{backend}: {message}")]
    Failed {
        backend: &'static str,
        message: String,
    },
}

/// One way of shutting a source out. Verbs follow block / release; `restore` re-applies what an
/// earlier run placed and must be idempotent.
pub trait Backend: Send {
    fn name(&self) -> &'static str;
    fn block(&mut self, block: &BlockRecord, now: SystemTime) -> Result<(), BackendError>;
    fn release(&mut self, block: &BlockRecord) -> Result<(), BackendError>;
    fn restore(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), BackendError> {
        for block in blocks {
            self.block(block, now)?;
        }
        Ok(())
    }
}

/// What the pipeline asks of the responder.
pub enum Order {
    Block {
        record: BlockRecord,
        history_line: String,
    },
    Shutdown,
}

/// How the responder sets up the firewall before it takes orders.
pub struct ResponderSetup {
    pub spec: RulesetSpec,
    pub prefer: Option<QueueMode>,
    pub store: BlockStore,
}

/// How often blocks are checked for expiry; a block outlives its timeout by at most this.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);

/// Starts the responder thread. It installs the ruleset, re-applies the stored blocks, then
/// reports the queue mode (or the failure) on `ready` before taking orders.
pub fn spawn(
    setup: ResponderSetup,
    orders: Receiver<Order>,
    ready: SyncSender<Result<QueueMode, String>>,
) -> std::io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("responder".into())
        .spawn(move || run(setup, orders, ready))
}

fn run(
    setup: ResponderSetup,
    orders: Receiver<Order>,
    ready: SyncSender<Result<QueueMode, String>>,
) {
    let ResponderSetup {
        spec,
        prefer,
        mut store,
    } = setup;
    let table = spec.table.clone();
    let mut nft = match Nft::open() {
        Ok(nft) => nft,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot talk to nftables: {e}")));
            return;
        }
    };
    let mode = match nft.install(&spec, prefer) {
        Ok(mode) => mode,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot install the nft ruleset: {e}")));
            return;
        }
    };
    // The backends get their own netlink session so that install/remove stay with this one.
    let set_nft = match Nft::open() {
        Ok(nft) => nft,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot talk to nftables: {e}")));
            return;
        }
    };
    let mut backends: Vec<Box<dyn Backend>> =
        vec![Box::new(NftSetBackend::new(set_nft, table.clone()))];
    restore(&mut store, &mut backends);
    let _ = ready.send(Ok(mode));

    loop {
        match orders.recv_timeout(EXPIRY_CHECK) {
            Ok(Order::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Order::Block {
                record,
                history_line,
            }) => {
                carry_out(&mut store, &mut backends, record, &history_line);
                // Take whatever else queued up meanwhile, so a burst costs one disk flush.
                while let Ok(order) = orders.try_recv() {
                    match order {
                        Order::Block {
                            record,
                            history_line,
                        } => carry_out(&mut store, &mut backends, record, &history_line),
                        Order::Shutdown => {
                            finish(&mut store, &mut nft, &table);
                            return;
                        }
                    }
                }
                sync(&mut store);
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        expire(&mut store, &mut backends, SystemTime::now());
    }
    finish(&mut store, &mut nft, &table);
}

fn carry_out(
    store: &mut BlockStore,
    backends: &mut [Box<dyn Backend>],
    record: BlockRecord,
    history_line: &str,
) {
    let now = SystemTime::now();
    let source = record.source;
    for backend in backends.iter_mut() {
        if let Err(e) = backend.block(&record, now) {
            error!("block of {source} failed: {e}");
        }
    }
    // Recorded even when a backend failed: the block is due, and the next start retries it.
    if let Err(e) = store.add(record, history_line) {
        error!("{e}");
    }
    warn!("{}", report::blocked_line(source));
}

fn restore(store: &mut BlockStore, backends: &mut [Box<dyn Backend>]) {
    let now = SystemTime::now();
    expire(store, backends, now);
    let due: Vec<&BlockRecord> = store.live().collect();
    if due.is_empty() {
        return;
    }
    for backend in backends.iter_mut() {
        if let Err(e) = backend.restore(&due, now) {
            error!("restoring {} blocks failed: {e}", due.len());
        }
    }
    info!("restored {} blocks from the state directory", due.len());
}

fn expire(store: &mut BlockStore, backends: &mut [Box<dyn Backend>], now: SystemTime) {
    let expired = store.expired(now);
    if expired.is_empty() {
        return;
    }
    for source in expired {
        let record = match store.remove(&source) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            Err(e) => {
                error!("{e}");
                continue;
            }
        };
        for backend in backends.iter_mut() {
            if let Err(e) = backend.release(&record) {
                error!("release of {source} failed: {e}");
            }
        }
        info!("{}", report::released_line(source, "block timeout expired"));
    }
    sync(store);
}

fn sync(store: &mut BlockStore) {
    if let Err(e) = store.sync() {
        error!("{e}");
    }
}

fn finish(store: &mut BlockStore, nft: &mut Nft, table: &str) {
    sync(store);
    match nft.remove(table) {
        Ok(()) => info!("removed nft tables inet {table} and netdev {table}"),
        Err(e) => error!("cannot remove nft table {table}: {e}"),
    }
}
