//! What nfsentry must not forget across a crash or restart: the blocks in place (`blocks`, an
//! append-only journal) and PortSentry's `history` file (bounded, in [`history`]).
//!
//! The journal is appended and fsync'd once per batch of changes, so a burst of blocks costs one
//! disk flush, and a crash can at worst tear the last line, which is skipped on load. It is
//! rewritten compactly at start-up, and while running when it has grown mostly dead, by
//! replacement through [`crate::atomic_file`], so a crash leaves the old journal or the new one.
//!
//! **A full or read-only disk** loses nothing that is in memory: a batch that cannot be appended
//! is cut back off the file ([`append`]), the journal is then marked stale, and each later sync
//! tries to rewrite it whole from memory until one succeeds; history lines wait in memory. The
//! store opens on such a disk too, with a stale journal. Saying so is the caller's: [`sync`]
//! reports every failure, [`BlockStore::unsaved`] says whether blocks are only in memory.
//!
//! This module knows files only; it neither decides nor talks to the firewall.
//!
//! [`sync`]: BlockStore::sync

mod append;
mod history;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::atomic_file::{self, AtomicFileError, Ownership};
use append::LineFile;
pub use history::rotated_path as rotated_history_path;
use history::History;

const JOURNAL: &str = "blocks";
const HISTORY: &str = "history";
use crate::config::DEFAULT_HISTORY_MAX_BYTES;
/// A journal shorter than this is never compacted while running: rewriting it costs more
/// than it saves.
const COMPACT_ABOVE_LINES: usize = 4096;
const JOURNAL_HEADER: &str = "# nfsentry blocks journal: '+ ADDR ADDED EXPIRES PROTO PORT KIND \
EVIDENCE' adds (a later '+' for the same ADDR replaces it), '- ADDR' removes; EXPIRES is a unix \
time or 'never', EVIDENCE 'verified' or 'unverified' (absent: unverified). Rewritten at start.";
/// The last field of a journal `+` line.
const VERIFIED: &str = "verified";
const UNVERIFIED: &str = "unverified";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// Rewriting the journal failed; the old one is still in place.
    #[error(transparent)]
    Rewrite(#[from] AtomicFileError),
}

/// One block as remembered on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    pub source: IpAddr,
    /// Unix seconds.
    pub added: u64,
    /// Unix seconds; None = until released by hand.
    pub expires: Option<u64>,
    pub protocol: String,
    pub port: u16,
    /// The scan type word that triggered the block (`SYN/Normal`, ...).
    pub kind: String,
    /// Its source completed a handshake with us (the address is its own); unverified blocks
    /// are the ones a full table gives up first.
    pub verified: bool,
}

impl BlockRecord {
    /// Time left at `now`; None when the block never expires, zero when it is due.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let expires = self.expires?;
        let now = unix_seconds(now);
        Some(Duration::from_secs(expires.saturating_sub(now)))
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.remaining(now).is_some_and(|left| left.is_zero())
    }

    fn journal_line(&self) -> String {
        let expires = self
            .expires
            .map_or_else(|| "never".to_string(), |e| e.to_string());
        let evidence = match self.verified {
            true => VERIFIED,
            false => UNVERIFIED,
        };
        format!(
            "+ {} {} {} {} {} {} {evidence}",
            self.source, self.added, expires, self.protocol, self.port, self.kind
        )
    }

    /// The fields after `+`; journals written before blocks had evidence lack the last one,
    /// and their blocks are unverified.
    fn parse(fields: &[&str]) -> Option<BlockRecord> {
        let (fields, verified) = match fields {
            [rest @ .., last] if *last == VERIFIED => (rest, true),
            [rest @ .., last] if *last == UNVERIFIED => (rest, false),
            all => (all, false),
        };
        let [source, added, expires, protocol, port, kind] = fields else {
            return None;
        };
        Some(BlockRecord {
            source: source.parse().ok()?,
            added: added.parse().ok()?,
            expires: match *expires {
                "never" => None,
                e => Some(e.parse().ok()?),
            },
            protocol: (*protocol).to_string(),
            port: port.parse().ok()?,
            kind: (*kind).to_string(),
            verified,
        })
    }
}

impl BlockRecord {
    /// A block found in force in the kernel that the journal did not have (a crash between the
    /// two, or a state directory that could not be written): what triggered it is unknown, so
    /// it counts as unverified.
    pub fn adopted(source: IpAddr, now: SystemTime, remaining: Option<Duration>) -> BlockRecord {
        let added = unix_seconds(now);
        BlockRecord {
            source,
            added,
            expires: remaining.map(|left| added.saturating_add(left.as_secs())),
            protocol: "IP".to_owned(),
            port: 0,
            kind: "adopted".to_owned(),
            verified: false,
        }
    }
}

#[cfg(test)]
impl BlockRecord {
    /// A SYN/Normal block on TCP 23 added at 2023-11-14, the record the unit tests share.
    pub(crate) fn example(source: &str, expires: Option<u64>) -> BlockRecord {
        BlockRecord {
            source: source.parse().expect("a test address"),
            added: 1_700_000_000,
            expires,
            protocol: "TCP".into(),
            port: 23,
            kind: "SYN/Normal".into(),
            verified: false,
        }
    }
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The live blocks, backed by the journal in the state directory. Memory is the truth for the
/// running daemon (the firewall already holds a block, or has released it); the journal follows
/// it as far as the disk lets it.
pub struct BlockStore {
    dir: PathBuf,
    /// `None` while the journal on disk is stale: a write failed, or the start-up rewrite did.
    /// The next sync then rewrites it whole from `live`.
    journal: Option<LineFile>,
    /// Journal lines since the last sync, appended in one write.
    journal_pending: String,
    live: HashMap<IpAddr, BlockRecord>,
    history: History,
    /// Lines in the journal, live or dead: when the dead far outnumber the live, it is
    /// rewritten so that repeated floods with expiring blocks cannot grow it without end.
    journal_lines: usize,
}

/// Lines of the journal that could not be read back (a torn last line after a crash, or a hand
/// edit), reported by the daemon rather than failing the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    pub line: usize,
    pub text: String,
}

impl BlockStore {
    /// Opens (creating if needed) the state directory, replays the journal and rewrites it.
    /// Only a journal that exists and cannot be read fails it: on a full or read-only disk the
    /// store opens with a stale journal, and the first [`BlockStore::sync`] says why.
    pub fn open(dir: &Path) -> Result<(BlockStore, Vec<SkippedLine>), StoreError> {
        // A directory that cannot be created has no journal to replay.
        let _ = fs::create_dir_all(dir);
        let journal_path = dir.join(JOURNAL);
        let (live, skipped) = replay(&journal_path)?;
        // Only one nfsentry uses a state directory at a time (the daemon locks it first), so any
        // temporary journal is a crash's.
        atomic_file::sweep_temps(&journal_path);
        let mut store = BlockStore {
            dir: dir.to_path_buf(),
            journal: None,
            journal_pending: String::new(),
            live,
            history: History::open(&dir.join(HISTORY), DEFAULT_HISTORY_MAX_BYTES),
            journal_lines: 0,
        };
        let _ = store.rewrite_journal();
        Ok((store, skipped))
    }

    /// Bounds the history file: past `max_bytes` it is rotated to `history.1`.
    pub fn limit_history(&mut self, max_bytes: u64) {
        self.history.set_max_bytes(max_bytes);
    }

    pub fn live(&self) -> impl Iterator<Item = &BlockRecord> {
        self.live.values()
    }

    pub fn get(&self, source: &IpAddr) -> Option<&BlockRecord> {
        self.live.get(source)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Records a block and its history line; durable after the next [`BlockStore::sync`],
    /// which also reports a failed write.
    pub fn add(&mut self, record: BlockRecord, history_line: &str) {
        self.history.add(history_line);
        self.adopt(record);
    }

    /// Records a block without a history line: one taken over from the kernel, whose history
    /// line was written when it was placed, or never.
    pub fn adopt(&mut self, record: BlockRecord) {
        self.append_journal(&record.journal_line());
        self.live.insert(record.source, record);
    }

    /// Forgets a block; durable after the next [`BlockStore::sync`].
    pub fn remove(&mut self, source: &IpAddr) -> Option<BlockRecord> {
        let record = self.live.remove(source)?;
        self.append_journal(&format!("- {source}"));
        Some(record)
    }

    /// Replaces a live block's record (made verified, with its new end); durable after the
    /// next [`BlockStore::sync`]. No history line: the block is not a new one.
    pub fn renew(&mut self, record: BlockRecord) {
        self.adopt(record);
    }

    /// The blocks whose time is up at `now`.
    pub fn expired(&self, now: SystemTime) -> Vec<IpAddr> {
        self.live
            .values()
            .filter(|r| r.is_expired(now))
            .map(|r| r.source)
            .collect()
    }

    /// Writes everything recorded since the last sync to disk with one fsync per file,
    /// compacting the journal when it has grown mostly dead, or rewriting it whole when it is
    /// stale. Returns the first failure; what failed is tried again at the next sync, and
    /// nothing recorded is lost from memory meanwhile.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let journal = self.sync_journal();
        let history = self.history.flush();
        journal.and(history)
    }

    /// Whether blocks or releases are recorded in memory only: the journal is stale or has
    /// lines waiting.
    pub fn unsaved(&self) -> bool {
        self.journal.is_none() || !self.journal_pending.is_empty()
    }

    /// Whether anything (journal or history) waits to be written.
    pub fn behind(&self) -> bool {
        self.unsaved() || self.history.has_pending()
    }

    /// History lines dropped since the last call, for want of room on disk and in memory.
    pub fn take_dropped_history_lines(&mut self) -> u64 {
        self.history.take_dropped()
    }

    fn sync_journal(&mut self) -> Result<(), StoreError> {
        let pending = std::mem::take(&mut self.journal_pending);
        let Some(journal) = self.journal.as_mut() else {
            return self.rewrite_journal();
        };
        if pending.is_empty() {
            return Ok(());
        }
        let written = journal
            .append(pending.as_bytes())
            .map_err(append::AppendError::into_io)
            .and_then(|()| journal.sync());
        if let Err(source) = written {
            // Whether or not the failed batch was cut back off, memory is ahead of the file now.
            let path = journal.path().to_path_buf();
            self.journal = None;
            return Err(StoreError::Write { path, source });
        }
        if self.journal_lines > COMPACT_ABOVE_LINES.max(4 * self.live.len()) {
            // A failed compaction leaves the appended journal as good as it was.
            self.rewrite_journal()?;
        }
        Ok(())
    }

    /// Replaces the journal with the live blocks and opens it for appending; on failure the
    /// old file stays as it was, and so does `self.journal`.
    fn rewrite_journal(&mut self) -> Result<(), StoreError> {
        fs::create_dir_all(&self.dir).map_err(|source| StoreError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        rewrite(&self.dir, &self.live)?;
        let path = self.dir.join(JOURNAL);
        let journal = LineFile::open(&path).map_err(|source| StoreError::Write { path, source })?;
        self.journal = Some(journal);
        self.journal_pending.clear();
        self.journal_lines = self.live.len();
        Ok(())
    }

    fn append_journal(&mut self, line: &str) {
        // A stale journal is rewritten whole from memory; lines for it would be doubled.
        if self.journal.is_none() {
            return;
        }
        self.journal_lines += 1;
        self.journal_pending.push_str(line);
        self.journal_pending.push('\n');
    }
}

fn replay(path: &Path) -> Result<(HashMap<IpAddr, BlockRecord>, Vec<SkippedLine>), StoreError> {
    let mut live = HashMap::new();
    let mut skipped = Vec::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((live, skipped)),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    for (index, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8_lossy(&line);
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.split_first() {
            None => {}
            Some((first, _)) if first.starts_with('#') => {}
            Some((&"+", rest)) => match BlockRecord::parse(rest) {
                Some(record) => {
                    live.insert(record.source, record);
                }
                None => skipped.push(SkippedLine {
                    line: index + 1,
                    text: text.to_string(),
                }),
            },
            Some((&"-", [addr])) => match addr.parse::<IpAddr>() {
                Ok(addr) => {
                    live.remove(&addr);
                }
                Err(_) => skipped.push(SkippedLine {
                    line: index + 1,
                    text: text.to_string(),
                }),
            },
            Some(_) => skipped.push(SkippedLine {
                line: index + 1,
                text: text.to_string(),
            }),
        }
    }
    Ok((live, skipped))
}

/// Replaces the journal with one `+` line per live block, crash-safely.
fn rewrite(dir: &Path, live: &HashMap<IpAddr, BlockRecord>) -> Result<(), StoreError> {
    let mut records: Vec<&BlockRecord> = live.values().collect();
    records.sort_by_key(|r| (r.added, r.source));
    let mut text = String::with_capacity(64 * (records.len() + 1));
    text.push_str(JOURNAL_HEADER);
    text.push('\n');
    for record in records {
        text.push_str(&record.journal_line());
        text.push('\n');
    }
    atomic_file::replace(&dir.join(JOURNAL), text.as_bytes(), Ownership::Fresh)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory that `open` has to create, in a scratch directory removed when the
    /// test ends.
    fn state_dir() -> (tempfile::TempDir, PathBuf) {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("state");
        (scratch, dir)
    }

    fn record(addr: &str, expires: Option<u64>) -> BlockRecord {
        BlockRecord::example(addr, expires)
    }

    #[test]
    fn blocks_survive_reopen_and_removals_stick() {
        let (_scratch, dir) = state_dir();
        {
            let (mut store, skipped) = BlockStore::open(&dir).unwrap();
            assert!(skipped.is_empty());
            store.add(record("198.51.100.7", None), "h1");
            store.add(record("2001:db8::7", Some(1_900_000_000)), "h2");
            store.add(record("198.51.100.8", None), "h3");
            store.remove(&"198.51.100.8".parse().unwrap());
            store.sync().unwrap();
        }
        let (store, _) = BlockStore::open(&dir).unwrap();
        let mut live: Vec<String> = store.live().map(|r| r.source.to_string()).collect();
        live.sort();
        assert_eq!(live, vec!["198.51.100.7", "2001:db8::7"]);
        assert_eq!(
            store.get(&"2001:db8::7".parse().unwrap()).unwrap(),
            &record("2001:db8::7", Some(1_900_000_000))
        );
        let history = fs::read_to_string(dir.join(HISTORY)).unwrap();
        assert_eq!(history, "h1\nh2\nh3\n");
        let journal = fs::read_to_string(dir.join(JOURNAL)).unwrap();
        assert_eq!(
            journal.lines().filter(|l| l.starts_with('+')).count(),
            2,
            "{journal}"
        );
    }

    #[test]
    fn a_journal_of_mostly_released_blocks_is_compacted_while_running() {
        let (_scratch, dir) = state_dir();
        let (mut store, _) = BlockStore::open(&dir).unwrap();
        store.add(record("198.51.100.7", None), "kept");
        for i in 0..3000u32 {
            let addr = std::net::Ipv4Addr::from(0x0a00_0000 | i).to_string();
            store.add(record(&addr, Some(1)), "flood");
            store.remove(&addr.parse().unwrap());
        }
        store.sync().unwrap();
        let journal = fs::read_to_string(dir.join(JOURNAL)).unwrap();
        assert!(
            journal.lines().count() < 100,
            "{} lines",
            journal.lines().count()
        );
        store.add(record("198.51.100.8", None), "after");
        store.sync().unwrap();
        drop(store);
        let (store, skipped) = BlockStore::open(&dir).unwrap();
        assert!(skipped.is_empty());
        let mut live: Vec<String> = store.live().map(|r| r.source.to_string()).collect();
        live.sort();
        assert_eq!(live, vec!["198.51.100.7", "198.51.100.8"]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_not_fatal() {
        let (_scratch, dir) = state_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(JOURNAL),
            "+ 198.51.100.7 1700000000 never TCP 23 SYN/Normal\n+ 198.51.100.9 17000",
        )
        .unwrap();
        let (store, skipped) = BlockStore::open(&dir).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].line, 2);
    }

    /// Whether every line of the journal is one the journal writes, whole.
    fn journal_lines_are_whole(dir: &Path) -> bool {
        let journal = fs::read_to_string(dir.join(JOURNAL)).unwrap();
        journal.ends_with('\n')
            && journal.lines().all(|line| {
                line.starts_with('#')
                    || (line.starts_with("+ ") && line.split_whitespace().count() == 8)
                    || (line.starts_with("- ") && line.split_whitespace().count() == 2)
            })
    }

    fn sources(store: &BlockStore) -> Vec<String> {
        let mut live: Vec<String> = store.live().map(|r| r.source.to_string()).collect();
        live.sort();
        live
    }

    #[test]
    fn a_full_disk_leaves_no_torn_line_and_the_journal_catches_up_from_memory() {
        let (_scratch, dir) = state_dir();
        let (mut store, _) = BlockStore::open(&dir).unwrap();
        store.add(record("198.51.100.1", None), "h1");
        store.sync().unwrap();
        // /dev/full refuses every write with ENOSPC, as a full state directory does.
        store.journal = Some(LineFile::open(Path::new("/dev/full")).unwrap());
        store.add(record("198.51.100.2", None), "h2");
        let failed = store.sync();
        assert!(
            matches!(&failed, Err(StoreError::Write { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC)),
            "{failed:?}"
        );
        assert!(store.unsaved());
        // Memory keeps everything, and later changes while stale are not lost either.
        store.add(record("198.51.100.3", None), "h3");
        store.remove(&"198.51.100.1".parse().unwrap());
        assert_eq!(sources(&store), ["198.51.100.2", "198.51.100.3"]);
        // Room again: the next sync rewrites the journal whole.
        store.sync().unwrap();
        assert!(!store.unsaved());
        store.add(record("198.51.100.4", None), "h4");
        store.sync().unwrap();
        drop(store);
        assert!(journal_lines_are_whole(&dir));
        let (store, skipped) = BlockStore::open(&dir).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(
            sources(&store),
            ["198.51.100.2", "198.51.100.3", "198.51.100.4"]
        );
        assert_eq!(
            fs::read_to_string(dir.join(HISTORY)).unwrap(),
            "h1\nh2\nh3\nh4\n"
        );
    }

    #[test]
    fn history_lines_wait_while_the_disk_is_full() {
        let (_scratch, dir) = state_dir();
        let (mut store, _) = BlockStore::open(&dir).unwrap();
        store.history = History::open(Path::new("/dev/full"), DEFAULT_HISTORY_MAX_BYTES);
        store.add(record("198.51.100.1", None), "h1");
        assert!(store.sync().is_err());
        assert!(store.behind() && !store.unsaved());
        store.history = History::open(&dir.join(HISTORY), DEFAULT_HISTORY_MAX_BYTES);
        store.history.add("h1");
        store.sync().unwrap();
        assert!(!store.behind());
        assert_eq!(fs::read_to_string(dir.join(HISTORY)).unwrap(), "h1\n");
    }

    #[test]
    fn a_state_directory_that_cannot_be_created_still_opens_and_keeps_blocks_in_memory() {
        let dir = Path::new("/proc/nfsentry-no-such-dir/state");
        let (mut store, skipped) = BlockStore::open(dir).unwrap();
        assert!(skipped.is_empty());
        assert!(store.unsaved());
        store.add(record("198.51.100.1", None), "h1");
        assert!(store.sync().is_err());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn adopted_blocks_are_journaled_without_a_history_line() {
        let (_scratch, dir) = state_dir();
        let (mut store, _) = BlockStore::open(&dir).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let adopted = BlockRecord::adopted(
            "2001:db8::9".parse().unwrap(),
            now,
            Some(Duration::from_millis(90_500)),
        );
        assert_eq!(adopted.expires, Some(1_800_000_090));
        store.adopt(adopted.clone());
        store.sync().unwrap();
        drop(store);
        let (store, skipped) = BlockStore::open(&dir).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(store.get(&adopted.source), Some(&adopted));
        assert_eq!(fs::read_to_string(dir.join(HISTORY)).unwrap(), "");
    }

    #[test]
    fn the_journal_keeps_each_blocks_evidence_and_reads_lines_without_it_as_unverified() {
        let (_scratch, dir) = state_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(JOURNAL),
            "+ 198.51.100.7 1700000000 never TCP 23 SYN/Normal\n\
             + 198.51.100.8 1700000000 1700003600 UDP 161 UDP verified\n\
             + 198.51.100.9 1700000000 1700003600 TCP 1 FIN unverified\n\
             + 198.51.100.10 1700000000 never TCP 1 FIN maybe\n",
        )
        .unwrap();
        let (mut store, skipped) = BlockStore::open(&dir).unwrap();
        assert_eq!(skipped.len(), 1, "an unknown evidence word is no record");
        let verified =
            |store: &BlockStore, addr: &str| store.get(&addr.parse().unwrap()).map(|r| r.verified);
        assert_eq!(verified(&store, "198.51.100.7"), Some(false));
        assert_eq!(verified(&store, "198.51.100.8"), Some(true));
        assert_eq!(verified(&store, "198.51.100.9"), Some(false));
        let journal = fs::read_to_string(dir.join(JOURNAL)).unwrap();
        assert!(
            journal.contains("\n+ 198.51.100.7 1700000000 never TCP 23 SYN/Normal unverified\n"),
            "{journal}"
        );
        assert!(journal.contains("+ 198.51.100.8 1700000000 1700003600 UDP 161 UDP verified\n"));

        // A renewal replaces the record, writes no history line, and survives a reopen.
        let mut renewed = store.get(&"198.51.100.9".parse().unwrap()).unwrap().clone();
        renewed.verified = true;
        renewed.expires = None;
        store.renew(renewed.clone());
        store.sync().unwrap();
        drop(store);
        let (store, _) = BlockStore::open(&dir).unwrap();
        assert_eq!(store.get(&renewed.source), Some(&renewed));
        assert_eq!(fs::read_to_string(dir.join(HISTORY)).unwrap(), "");
    }

    #[test]
    fn expiry_is_computed_from_unix_time() {
        let r = record("198.51.100.7", Some(1_000));
        assert!(r.is_expired(UNIX_EPOCH + Duration::from_secs(1_000)));
        assert!(!r.is_expired(UNIX_EPOCH + Duration::from_secs(999)));
        assert_eq!(
            r.remaining(UNIX_EPOCH + Duration::from_secs(400)),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            record("198.51.100.7", None).remaining(SystemTime::now()),
            None
        );
    }

    #[test]
    fn the_history_file_is_appended_never_truncated() {
        let (_scratch, dir) = state_dir();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(HISTORY), "old line from PortSentry\n").unwrap();
        let (mut store, _) = BlockStore::open(&dir).unwrap();
        store.add(record("198.51.100.7", None), "new line");
        store.sync().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(HISTORY)).unwrap(),
            "old line from PortSentry\nnew line\n"
        );
    }
}
