//! The `hosts-deny` action: one TCP-wrappers rule per blocked source in hosts.deny, added and
//! removed without ever changing a byte of the admin's own lines. It knows that one file only:
//! it does not decide who is blocked and reloads nothing (libwrap re-reads the file on every
//! connection). What nfsentry's lines look like and which bytes a change may touch is
//! [`document`]'s, which does no I/O; this module reads, locks and writes the file, through
//! [`crate::atomic_file`].
//!
//! # How the file is changed
//!
//! Every change holds flock(2) on the file, so two nfsentry actions, or any other tool that
//! locks it, never lose each other's changes. A waiter re-checks after getting the lock that the
//! inode it locked is still the one at the path: a writer that replaced the file leaves waiters
//! holding a lock on the old one.
//!
//! The normal way is replacement: the new content goes to a temporary file in the same directory,
//! with the file's permissions and owner, which is fsync'd, renamed over the file, and the
//! directory fsync'd, so readers and crashes see the old file or the new one. Temporary files
//! that a crash left behind are swept once, under the lock, before the first replacement.
//!
//! A hardened unit may allow writing the file but not creating files next to it
//! (`ReadWritePaths=/etc/hosts.deny` under `ProtectSystem=strict`: /etc is read-only and the file
//! a bind mount that cannot be renamed over). When the temporary file cannot be created, owned
//! like the file, or renamed into place, the file is changed in place instead, from then on, and
//! only ever where nfsentry's own bytes are: new entries after the last byte, released entries
//! overwritten with comment lines of their own length, and a tail of nothing but those cut off.
//! The [`document`] module says why no crash during those writes can lose the admin's bytes.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use caps::Capability;
use log::{debug, info, warn};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

pub mod document;

use super::{sources, Action, ActionError};
use crate::atomic_file::{self, AtomicFileError, Ownership, Step};
use crate::store::BlockRecord;
use document::{rule_line, Change, Document, InPlace, NewEntry, TemplateError};

const ACTION_NAME: &str = "hosts-deny";
/// Permissions of a hosts.deny that nfsentry has to create; libwrap runs as every daemon's user.
const NEW_FILE_MODE: u32 = 0o644;
/// Each retry means another writer replaced the file while we waited for its lock; this many in
/// a row is a writer that never releases, not bad luck.
const LOCK_ATTEMPTS: usize = 64;

#[derive(Debug, Error)]
pub enum HostsDenyError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: Errno },
    #[error("{path} was replaced {LOCK_ATTEMPTS} times in a row while waiting for its lock")]
    LockRace { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The hosts.deny writer. Single-threaded by design (the responder owns it); other writers,
/// including other instances on the same file, are kept apart by flock(2).
pub struct HostsDenyAction {
    path: PathBuf,
    line_template: String,
    /// Leftover temporary files are removed once per process, under the lock, before the first
    /// replacement.
    temps_swept: bool,
    in_place_reported: bool,
    /// Lets the tests take the in-place path without a read-only mount.
    force_in_place: bool,
    /// Lets the tests see how many times the file was written.
    #[cfg(test)]
    changes_written: usize,
}

impl HostsDenyAction {
    pub fn new(path: PathBuf, line_template: String) -> HostsDenyAction {
        HostsDenyAction {
            path,
            line_template,
            temps_swept: false,
            in_place_reported: false,
            force_in_place: false,
            #[cfg(test)]
            changes_written: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rule line written for `source` (without the marker), e.g. `ALL: [2001:db8::7]`.
    pub fn line_for(&self, source: IpAddr) -> Result<String, HostsDenyError> {
        Ok(rule_line(&self.line_template, source)?)
    }

    /// Sources that nfsentry's entries in the file block now, in file order (for inspection;
    /// the daemon itself goes by its own block records).
    pub fn sources(&self) -> Result<Vec<IpAddr>, HostsDenyError> {
        let path = self.resolved_path();
        let Some(file) = lock(&path, false)? else {
            return Ok(Vec::new());
        };
        let text = read_all(&file, &path)?;
        let document = Document::parse(&text);
        let mut seen = HashSet::new();
        Ok(document
            .entries()
            .filter(|source| seen.insert(*source))
            .collect())
    }

    /// Writes entries for the sources in `block` that have none and removes every entry for
    /// the sources in `release`, as one change under the lock: a burst of expiries costs one
    /// rewrite (two fsyncs), not one per source.
    fn change(&mut self, block: &[IpAddr], release: &[IpAddr]) -> Result<Change, HostsDenyError> {
        if block.is_empty() && release.is_empty() {
            return Ok(Change::default());
        }
        // Every line is made before the file is touched: a bad template changes nothing.
        let wanted = block
            .iter()
            .map(|source| {
                Ok(NewEntry {
                    source: *source,
                    rule: self.line_for(*source)?,
                })
            })
            .collect::<Result<Vec<_>, HostsDenyError>>()?;
        let path = self.resolved_path();
        let Some(file) = lock(&path, !wanted.is_empty())? else {
            return Ok(Change::default());
        };
        let text = read_all(&file, &path)?;
        let document = Document::parse(&text);
        let change = document.plan(wanted, release);
        if change.is_empty() {
            return Ok(Change::default());
        }
        if !change.added.is_empty() && text.last().is_some_and(|byte| *byte != b'\n') {
            warn!(
                "{} does not end in a newline; nfsentry adds one before its entries, which makes \
                 the last line effective until they are released",
                path.display()
            );
        }

        let replaced = if self.force_in_place {
            Err(Unavailable::Forced)
        } else {
            if !self.temps_swept {
                atomic_file::sweep_temps(&path);
                self.temps_swept = true;
            }
            let content = document.render(change.released.iter().copied(), &change.added);
            atomic_file::replace(&path, &content, Ownership::SameAs(&file))
                .map_err(Unavailable::from)
        };
        match replaced {
            Ok(()) => {}
            Err(Unavailable::Failed(e)) => return Err(e),
            Err(why) => {
                if !self.in_place_reported {
                    self.in_place_reported = true;
                    warn!(
                        "cannot replace {} ({why}); changing it in place from now on",
                        path.display()
                    );
                }
                let edits = document.in_place(change.released.iter().copied(), &change.added);
                change_in_place(&file, &path, &edits)?;
            }
        }
        #[cfg(test)]
        {
            self.changes_written += 1;
        }
        Ok(change)
    }

    /// Symlinks are followed so that replacement swaps the real file, not the admin's link.
    fn resolved_path(&self) -> PathBuf {
        fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }

    fn report_added(&self, changed: &Change) {
        for entry in &changed.added {
            // PortSentry's wording: admins' log watchers look for it.
            info!(
                "attackalert: Host {} has been blocked via wrappers with string: \"{}\"",
                entry.source, entry.rule
            );
        }
    }

    #[cfg(test)]
    fn in_place_only(mut self) -> Self {
        self.force_in_place = true;
        self
    }
}

impl From<HostsDenyError> for ActionError {
    fn from(error: HostsDenyError) -> ActionError {
        let io = |doing, path: PathBuf, source| ActionError::Io {
            action: ACTION_NAME,
            doing,
            path,
            source,
        };
        match error {
            HostsDenyError::Template(_) => ActionError::Config {
                action: ACTION_NAME,
                detail: error.to_string(),
            },
            HostsDenyError::Open { path, source } => io("open", path, source),
            HostsDenyError::Lock { path, source } => io("lock", path, source.into()),
            HostsDenyError::LockRace { ref path } => io(
                "lock",
                path.clone(),
                io::Error::other(format!(
                    "it was replaced {LOCK_ATTEMPTS} times in a row while waiting for its lock"
                )),
            ),
            HostsDenyError::Read { path, source } => io("read", path, source),
            HostsDenyError::Write { path, source } => io("write", path, source),
        }
    }
}

impl HostsDenyAction {
    /// Writes entries for the sources that have none, as one change of the file.
    fn add(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        let changed = self.change(&sources(blocks), &[])?;
        if changed.added.is_empty() {
            debug!("{} already has the entries asked for", self.path.display());
        }
        self.report_added(&changed);
        Ok(())
    }

    /// Where the file cannot be written, or created when it does not exist, a block would fail.
    fn writable_problem(&self) -> Option<String> {
        use nix::unistd::{access, AccessFlags};
        let path = self.resolved_path();
        let (probe, what) = match path.exists() {
            true => (path.clone(), "the file"),
            false => (
                atomic_file::directory_of(&path).to_path_buf(),
                "its directory",
            ),
        };
        access(&probe, AccessFlags::W_OK).err().map(|errno| {
            format!(
                "{} cannot be written ({what}: {})",
                self.path.display(),
                io::Error::from(errno)
            )
        })
    }
}

impl Action for HostsDenyAction {
    fn name(&self) -> &'static str {
        ACTION_NAME
    }

    fn check(&self) -> Vec<String> {
        let template = self
            .line_for(IpAddr::from([192, 0, 2, 1]))
            .err()
            .map(|e| format!("hosts_deny_line: {e}"));
        template
            .into_iter()
            .chain(self.writable_problem())
            .collect()
    }

    fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "block:   add to {}: \"{}\" (IPv6 as [addr]) under a '# nfsentry block' marker line",
                self.path.display(),
                self.line_template
            ),
            "release: remove that marker and line again".to_owned(),
        ]
    }

    /// A hosts.deny that is not root's may need the file-ownership overrides.
    fn capabilities(&self) -> &'static [Capability] {
        &[
            Capability::CAP_DAC_OVERRIDE,
            Capability::CAP_CHOWN,
            Capability::CAP_FOWNER,
        ]
    }

    /// One change for all due blocks; sources that already have an entry are left as they are.
    fn init(&mut self, due: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        self.add(due)
    }

    /// A burst of new blocks is one rewrite of the file, not one per source.
    fn block(&mut self, blocks: &[&BlockRecord], _now: SystemTime) -> Result<(), ActionError> {
        self.add(blocks)
    }

    /// All the releases are one change of the file; when that change fails, none is made.
    fn release(&mut self, blocks: &[&BlockRecord]) -> Result<(), ActionError> {
        let changed = self.change(&[], &sources(blocks))?;
        match changed.released.as_slice() {
            [] => {}
            [one] => info!("removed the entry for {one} from {}", self.path.display()),
            all => info!(
                "removed the entries for {} sources from {}",
                all.len(),
                self.path.display()
            ),
        }
        Ok(())
    }
}

/// Opens and locks the file; `None` when it does not exist and `create` is false.
fn lock(path: &Path, create: bool) -> Result<Option<Flock<File>>, HostsDenyError> {
    for _ in 0..LOCK_ATTEMPTS {
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .mode(NEW_FILE_MODE)
            .custom_flags(libc::O_CLOEXEC)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(HostsDenyError::Open {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let locked = lock_exclusive(file).map_err(|source| HostsDenyError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
        let held = locked.metadata().map_err(|source| HostsDenyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        match fs::metadata(path) {
            Ok(current) if current.dev() == held.dev() && current.ino() == held.ino() => {
                return Ok(Some(locked))
            }
            // Replaced or removed while we waited: the lock guards a file nobody reads.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HostsDenyError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(HostsDenyError::LockRace {
        path: path.to_path_buf(),
    })
}

fn lock_exclusive(file: File) -> Result<Flock<File>, Errno> {
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => return Ok(locked),
            Err((returned, Errno::EINTR)) => file = returned,
            Err((_, errno)) => return Err(errno),
        }
    }
}

fn read_all(file: &File, path: &Path) -> Result<Vec<u8>, HostsDenyError> {
    let mut text = Vec::new();
    // A fresh descriptor reads from the start; `&File` reads leave the lock in place.
    let mut reader = file;
    reader
        .read_to_end(&mut text)
        .map_err(|source| HostsDenyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(text)
}

impl From<AtomicFileError> for HostsDenyError {
    fn from(error: AtomicFileError) -> HostsDenyError {
        let AtomicFileError { step, path, source } = error;
        match step {
            Step::Read => HostsDenyError::Read { path, source },
            Step::Name => HostsDenyError::Open { path, source },
            _ => HostsDenyError::Write { path, source },
        }
    }
}

/// Why replacement was not done; all but `Failed` send the change down the in-place path.
#[derive(Debug, Error)]
enum Unavailable {
    #[error("cannot create {}: {source}", path.display())]
    CreateTemp { path: PathBuf, source: io::Error },
    #[error("cannot give {} the file's owner: {source}", path.display())]
    Owner { path: PathBuf, source: io::Error },
    #[error("cannot rename over it: {source}")]
    Rename { source: io::Error },
    #[error("in-place writing forced")]
    Forced,
    #[error(transparent)]
    Failed(HostsDenyError),
}

impl From<AtomicFileError> for Unavailable {
    fn from(error: AtomicFileError) -> Unavailable {
        match (error.step, error.refused()) {
            (Step::CreateTemp, true) => Unavailable::CreateTemp {
                path: error.path,
                source: error.source,
            },
            (Step::GiveOwner, true) => Unavailable::Owner {
                path: error.path,
                source: error.source,
            },
            (Step::Rename, true) => Unavailable::Rename {
                source: error.source,
            },
            _ => Unavailable::Failed(error.into()),
        }
    }
}

/// Makes `edits` on the locked file itself, each step durable before the next; see
/// [`document`] for why each can only ever touch nfsentry's bytes.
fn change_in_place(file: &File, path: &Path, edits: &InPlace) -> Result<(), AtomicFileError> {
    atomic_file::write_at(file, path, &edits.overwrite)?;
    if let Some(len) = edits.truncate_to {
        atomic_file::truncate(file, path, len)?;
    }
    if !edits.append.is_empty() {
        atomic_file::write_at(file, path, &[(edits.append_at, &edits.append)])?;
    }
    Ok(())
}

/// Documentation addresses that the tests of the action and of its document share.
#[cfg(test)]
mod test_addresses {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    pub const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    pub const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
    pub const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
}

#[cfg(test)]
mod tests {
    use super::test_addresses::{V4, V4_OTHER, V6};
    use super::*;
    use std::net::Ipv4Addr;

    fn record(source: IpAddr) -> BlockRecord {
        BlockRecord {
            source,
            added: 0,
            expires: None,
            protocol: "TCP".into(),
            port: 23,
            kind: "SYN/Normal".into(),
            verified: false,
        }
    }

    /// A hosts.deny holding `text`, in a directory removed when the test ends, and a action
    /// on it that changes it in place when `in_place` is set.
    fn scratch(text: &[u8], in_place: bool) -> (tempfile::TempDir, PathBuf, HostsDenyAction) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.deny");
        fs::write(&path, text).unwrap();
        let mut action = HostsDenyAction::new(path.clone(), "ALL: $TARGET$".into());
        if in_place {
            action = action.in_place_only();
        }
        (dir, path, action)
    }

    #[test]
    fn in_place_changes_keep_the_inode_and_the_admin_bytes() {
        let admin = b"# admin\nALL: 10.0.0.1";
        let (_dir, path, mut action) = scratch(admin, true);
        let inode = fs::metadata(&path).unwrap().ino();
        let now = SystemTime::now();

        action.block(&[&record(V4)], now).unwrap();
        action.block(&[&record(V6)], now).unwrap();
        // The admin then adds a line below nfsentry's entries.
        let mut appended = fs::read(&path).unwrap();
        appended.extend_from_slice(b"sshd: 10.0.0.2\n");
        fs::write(&path, &appended).unwrap();

        action.release(&[&record(V4)]).unwrap();
        let text = fs::read(&path).unwrap();
        assert_eq!(
            text.len(),
            appended.len(),
            "a release in place keeps the length"
        );
        assert_eq!(action.sources().unwrap(), vec![V6]);
        let document = Document::parse(&text);
        assert_eq!(
            document.render(None, &[]),
            b"# admin\nALL: 10.0.0.1\n# nfsentry block 2001:db8::7 newline-added\n\
ALL: [2001:db8::7]\nsshd: 10.0.0.2\n"
                .to_vec()
        );
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    }

    #[test]
    fn in_place_release_of_the_tail_gives_back_the_exact_admin_bytes() {
        let admin = b"# admin\nALL: 10.0.0.1";
        let (_dir, path, mut action) = scratch(admin, true);
        let now = SystemTime::now();
        action.block(&[&record(V4)], now).unwrap();
        action.block(&[&record(V6)], now).unwrap();
        action.block(&[&record(V4_OTHER)], now).unwrap();
        // Releasing the middle one leaves a released line; releasing the rest cuts them all.
        action.release(&[&record(V6)]).unwrap();
        assert_eq!(action.sources().unwrap(), vec![V4, V4_OTHER]);
        action.release(&[&record(V4_OTHER)]).unwrap();
        action.release(&[&record(V4)]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), admin.to_vec());
    }

    /// Blocks five sources, lets the admin add a line below them, releases three of them (and
    /// a source without an entry) in one call, then the other two in a second.
    fn release_three_of_five_in_one_call(in_place: bool) {
        let admin = b"# admin\nALL: 10.0.0.1";
        let (_dir, path, mut action) = scratch(admin, in_place);
        let inode = fs::metadata(&path).unwrap().ino();
        let sources: Vec<IpAddr> = (1..=5)
            .map(|host| IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)))
            .collect();
        let records: Vec<BlockRecord> = sources.iter().map(|source| record(*source)).collect();
        let all: Vec<&BlockRecord> = records.iter().collect();
        action.block(&all, SystemTime::now()).unwrap();
        assert_eq!(action.sources().unwrap(), sources);
        let mut with_admin_line = fs::read(&path).unwrap();
        with_admin_line.extend_from_slice(b"sshd: 10.0.0.2\n");
        fs::write(&path, &with_admin_line).unwrap();

        let absent = record(V4);
        let first_batch = [&records[0], &records[2], &absent, &records[4]];
        let written_before = action.changes_written;
        action.release(&first_batch).unwrap();
        assert_eq!(action.changes_written, written_before + 1, "one change");
        assert_eq!(action.sources().unwrap(), vec![sources[1], sources[3]]);
        let text = fs::read(&path).unwrap();
        assert!(text.starts_with(admin), "the admin's bytes moved");
        if in_place {
            assert_eq!(text.len(), with_admin_line.len(), "nothing could be cut");
            assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        }
        let expected = b"# admin\nALL: 10.0.0.1\n\
# nfsentry block 198.51.100.2 newline-added\nALL: 198.51.100.2\n\
# nfsentry block 198.51.100.4\nALL: 198.51.100.4\nsshd: 10.0.0.2\n";
        assert_eq!(
            String::from_utf8(Document::parse(&text).render(None, &[])).unwrap(),
            String::from_utf8(expected.to_vec()).unwrap()
        );
        if !in_place {
            assert_eq!(
                text,
                expected.to_vec(),
                "replacement drops released entries"
            );
        }

        action.release(&[&records[3], &records[1]]).unwrap();
        assert_eq!(action.sources().unwrap(), Vec::<IpAddr>::new());
        let text = fs::read(&path).unwrap();
        assert!(text.starts_with(admin), "the admin's bytes moved");
        // The newline nfsentry added stays: the admin's later line needs it.
        assert_eq!(
            Document::parse(&text).render(None, &[]),
            b"# admin\nALL: 10.0.0.1\nsshd: 10.0.0.2\n".to_vec()
        );
    }

    #[test]
    fn releasing_three_of_five_in_one_call_replacing_the_file() {
        release_three_of_five_in_one_call(false);
    }

    #[test]
    fn releasing_three_of_five_in_one_call_in_place() {
        release_three_of_five_in_one_call(true);
    }

    #[test]
    fn a_batch_release_of_the_tail_in_place_gives_back_the_exact_admin_bytes() {
        let admin = b"# admin\nALL: 10.0.0.1";
        let (_dir, path, mut action) = scratch(admin, true);
        let records = [record(V4), record(V6), record(V4_OTHER)];
        let all: Vec<&BlockRecord> = records.iter().collect();
        action.block(&all, SystemTime::now()).unwrap();
        action.release(&all).unwrap();
        assert_eq!(fs::read(&path).unwrap(), admin.to_vec());
    }

    #[test]
    fn in_place_block_drops_a_torn_append_first() {
        let (_dir, path, mut action) = scratch(
            b"ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0",
            true,
        );
        action.block(&[&record(V4)], SystemTime::now()).unwrap();
        assert_eq!(
            String::from_utf8(fs::read(&path).unwrap()).unwrap(),
            "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n"
        );
    }
}
