//! The `nft-set` action: blocked sources go into nfsentry's own `blocked_v4` / `blocked_v6`
//! sets, which the prerouting chain drops first thing; the kernel expires timed elements itself.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::{Backend, BackendError};
use crate::nft::netlink::{Nft, NftError};
use crate::store::BlockRecord;

pub struct NftSetBackend {
    nft: Nft,
    table: String,
}

impl NftSetBackend {
    pub fn new(nft: Nft, table: String) -> Self {
        NftSetBackend { nft, table }
    }

    fn failed(e: NftError) -> BackendError {
        BackendError::Failed {
            backend: "nft-set",
            message: e.to_string(),
        }
    }
}

impl Backend for NftSetBackend {
    fn name(&self) -> &'static str {
        "nft-set"
    }

    fn block(&mut self, block: &BlockRecord, now: SystemTime) -> Result<(), BackendError> {
        self.nft
            .block(&self.table, block.source, block.remaining(now))
            .map_err(Self::failed)
    }

    fn release(&mut self, block: &BlockRecord) -> Result<(), BackendError> {
        self.nft
            .release(&self.table, block.source)
            .map_err(Self::failed)
    }

    fn release_all(&mut self, blocks: &[&BlockRecord]) -> Result<(), BackendError> {
        let sources: Vec<IpAddr> = blocks.iter().map(|b| b.source).collect();
        self.nft
            .release_many(&self.table, &sources)
            .map_err(Self::failed)
    }

    fn block_all(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), BackendError> {
        self.restore(blocks, now)
    }

    fn restore(&mut self, blocks: &[&BlockRecord], now: SystemTime) -> Result<(), BackendError> {
        let entries: Vec<(IpAddr, Option<Duration>)> = blocks
            .iter()
            .map(|b| (b.source, b.remaining(now)))
            .collect();
        self.nft
            .block_many(&self.table, &entries)
            .map_err(Self::failed)
    }
}
