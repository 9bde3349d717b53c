//! The `hosts-deny` action: one TCP-wrappers rule per blocked source in hosts.deny, added and
//! removed without ever changing a byte of the admin's own lines. It knows that one file only:
//! it does not decide who is blocked and reloads nothing (libwrap re-reads the file on every
//! connection).
//!
//! # What nfsentry writes
//!
//! Each block is two lines, a marker comment and the rule made from `hosts_deny_line`:
//!
//! ```text
//! # nfsentry block 192.0.2.7
//! ALL: 192.0.2.7
//! # nfsentry block 2001:db8::7
//! ALL: [2001:db8::7]
//! ```
//!
//! The marker has a line of its own because TCP wrappers 7.6 (Venema's release, still the base
//! of every libwrap) treat `#` as a comment only at the start of a line; some patched builds also
//! cut a line at an unescaped `#`, but not all. Unpatched, in
//! `ALL: 192.0.2.7 # nfsentry` the words `#` and `nfsentry` become client patterns, `nfsentry` a
//! host name to resolve and match (checked against libwrap 0.7.6 through `hosts_ctl`: a client
//! named `nfsentry` is denied by such a line), and with `ALL: $TARGET$ : DENY` they would land in the option
//! field. Only a rule line directly under a marker that names the marker's address as one of its
//! words is ever removed, so an admin's line is never taken for ours; a marker whose rule line was
//! edited away is dropped alone. The rule text is left as written, so changing `hosts_deny_line`
//! does not orphan entries of an earlier run.
//!
//! A marker ending in `newline-added` records that the file did not end in a newline and nfsentry
//! added one to start its own line; it goes again with the last entry after it, so the admin's
//! bytes come back exactly. (While entries follow it, that last admin line, which libwrap ignores
//! while it lacks a newline, takes effect; there is no other way to start a line after it.)
//! `# nfsentry released` lines are entries released in place (below); they block nothing.
//!
//! # How the file is changed
//!
//! Every change holds flock(2) on the file, so two nfsentry backends, or any other tool that
//! locks it, never lose each other's changes. A waiter re-checks after getting the lock that the
//! inode it locked is still the one at the path: a writer that replaced the file leaves waiters
//! holding a lock on the old one.
//!
//! The normal way is replacement ([`crate::atomic_file`]): the new content goes to a temporary
//! file in the same directory, with the file's permissions and owner, which is fsync'd, renamed
//! over the file, and the directory fsync'd, so readers and crashes see the old file or the new
//! one. Temporary files that a crash left behind are swept once, under the lock, before the
//! first replacement.
//!
//! A hardened unit may allow writing the file but not creating files next to it
//! (`ReadWritePaths=/etc/hosts.deny` under `ProtectSystem=strict`: /etc is read-only and the file
//! a bind mount that cannot be renamed over). When the temporary file cannot be created, owned
//! like the file, or renamed into place, the file is changed in place instead, only ever where
//! nfsentry's own bytes are:
//! - a block is written after the last byte and fsync'd; a crash can tear only that entry. A
//!   marker followed by an unterminated last line is recognised as such a torn entry and cut off
//!   by the next change; a tear inside the marker leaves a comment line, harmless, that is left
//!   alone because it cannot be told from the admin's;
//! - a release overwrites the entry's own bytes with a `# nfsentry released` comment line of the
//!   same length (torn front to back, that write leaves the old entry or a line starting with
//!   `#`), and the file is cut short only where everything after the cut is nfsentry's released
//!   or torn lines.
//!
//! The admin's bytes are never moved, so no crash can lose them. The price is released-entry
//! comment lines that stay wherever something still wanted follows them, until a replacement
//! (when one works again) drops them.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::IpAddr;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use caps::Capability;
use log::{debug, info, warn};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

use super::{sources, Action, ActionError};
use crate::atomic_file::{self, AtomicFileError, Ownership, Step};
use crate::store::BlockRecord;

const ACTION_NAME: &str = "hosts-deny";
const TARGET_PLACEHOLDER: &str = "$TARGET$";
const MARKER_PREFIX: &str = "# nfsentry block ";
const RELEASED_PREFIX: &str = "# nfsentry released";
/// Suffix of a marker or released line whose preceding newline nfsentry wrote.
const NEWLINE_ADDED: &str = " newline-added";
/// Permissions of a hosts.deny that nfsentry has to create; libwrap runs as every daemon's user.
const NEW_FILE_MODE: u32 = 0o644;
/// Each retry means another writer replaced the file while we waited for its lock; this many in
/// a row is a writer that never releases, not bad luck.
const LOCK_ATTEMPTS: usize = 64;

#[derive(Debug, Error)]
pub enum HostsDenyError {
    #[error("hosts_deny_line {template:?} {problem}")]
    Template {
        template: String,
        problem: &'static str,
    },
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

/// What one change did to the file.
#[derive(Debug, Default)]
struct Changed {
    added: Vec<NewEntry>,
    /// The sources asked to be released that had an entry, in the order asked.
    released: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NewEntry {
    source: IpAddr,
    /// The rule line, without its newline.
    rule: String,
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
        rule_line(&self.line_template, source)
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
    fn change(&mut self, block: &[IpAddr], release: &[IpAddr]) -> Result<Changed, HostsDenyError> {
        if block.is_empty() && release.is_empty() {
            return Ok(Changed::default());
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
            return Ok(Changed::default());
        };
        let text = read_all(&file, &path)?;
        let document = Document::parse(&text);
        let present: HashSet<IpAddr> = document.entries().collect();
        let mut queued = HashSet::new();
        let added: Vec<NewEntry> = wanted
            .into_iter()
            .filter(|entry| !present.contains(&entry.source) && queued.insert(entry.source))
            .collect();
        let mut releasing = HashSet::new();
        let released: Vec<IpAddr> = release
            .iter()
            .copied()
            .filter(|source| present.contains(source) && releasing.insert(*source))
            .collect();
        if added.is_empty() && released.is_empty() {
            return Ok(Changed::default());
        }
        if !added.is_empty() && text.last().is_some_and(|byte| *byte != b'\n') {
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
            let content = document.render(releasing.iter().copied(), &added);
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
                change_in_place(&file, &path, &document, &releasing, &added)?;
            }
        }
        #[cfg(test)]
        {
            self.changes_written += 1;
        }
        Ok(Changed { added, released })
    }

    /// Symlinks are followed so that replacement swaps the real file, not the admin's link.
    fn resolved_path(&self) -> PathBuf {
        fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone())
    }

    fn report_added(&self, changed: &Changed) {
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
            HostsDenyError::Template { .. } => ActionError::Config {
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

/// How libwrap names a client address: IPv6 in brackets.
fn target_text(source: IpAddr) -> String {
    match source {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// `template` with every `$TARGET$` replaced, checked to be one rule line that the file parser
/// will recognise as belonging to `source`.
fn rule_line(template: &str, source: IpAddr) -> Result<String, HostsDenyError> {
    let problem = |problem| HostsDenyError::Template {
        template: template.to_string(),
        problem,
    };
    if !template.contains(TARGET_PLACEHOLDER) {
        // Without it every block would write the same line, for instance `ALL: ALL`.
        return Err(problem("does not contain $TARGET$"));
    }
    let line = template.replace(TARGET_PLACEHOLDER, &target_text(source));
    if line.contains(['\n', '\r', '\0']) {
        return Err(problem("must be a single line"));
    }
    if line.ends_with('\\') {
        // libwrap would join the next line onto it.
        return Err(problem("must not end in a backslash"));
    }
    if line.trim_start().starts_with('#') {
        return Err(problem("is a comment"));
    }
    if !line.contains(':') {
        return Err(problem(
            "lacks the ':' between daemons and clients that TCP wrappers require",
        ));
    }
    if !is_rule_for(line.as_bytes(), source) {
        return Err(problem("must have $TARGET$ as a word of its own"));
    }
    Ok(line)
}

/// Whether `line` (without its newline) is a rule naming `source` as one of its words.
fn is_rule_for(line: &[u8], source: IpAddr) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    if line.trim_start().starts_with('#') {
        return false;
    }
    let target = target_text(source);
    match source {
        // Brackets delimit an IPv6 address already; colons inside it forbid splitting at ':'.
        IpAddr::V6(_) => line.contains(&target),
        IpAddr::V4(_) => line
            .split(|c: char| c.is_whitespace() || c == ',' || c == ':')
            .any(|word| {
                word.strip_prefix(target.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }),
    }
}

fn marker_line(source: IpAddr, newline_added: bool) -> String {
    let suffix = if newline_added { NEWLINE_ADDED } else { "" };
    format!("{MARKER_PREFIX}{source}{suffix}\n")
}

/// A comment line of exactly `len` bytes (newline included) that takes a released entry's place.
fn released_line(len: usize, newline_added: bool) -> Vec<u8> {
    let mut line = RELEASED_PREFIX.as_bytes().to_vec();
    if newline_added {
        line.extend_from_slice(NEWLINE_ADDED.as_bytes());
    }
    if line.len() + 1 > len {
        // Unreachable for real entries (a marker alone is longer); still a comment line.
        line = b"#".to_vec();
    }
    line.resize(len.saturating_sub(1), b' ');
    line.push(b'\n');
    line.truncate(len);
    line
}

/// nfsentry's own kinds of line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnLine {
    Marker { source: IpAddr, newline_added: bool },
    Released { newline_added: bool },
}

/// Recognises only the exact forms nfsentry writes, so an admin's comment that merely mentions
/// nfsentry stays the admin's.
fn own_line(content: &[u8]) -> Option<OwnLine> {
    let text = std::str::from_utf8(content).ok()?;
    if let Some(rest) = text.strip_prefix(MARKER_PREFIX) {
        let (address, newline_added) = match rest.strip_suffix(NEWLINE_ADDED) {
            Some(address) => (address, true),
            None => (rest, false),
        };
        let source = address.parse().ok()?;
        return Some(OwnLine::Marker {
            source,
            newline_added,
        });
    }
    let rest = text.strip_prefix(RELEASED_PREFIX)?.trim_end_matches(' ');
    match rest {
        "" => Some(OwnLine::Released {
            newline_added: false,
        }),
        NEWLINE_ADDED => Some(OwnLine::Released {
            newline_added: true,
        }),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PieceKind {
    /// One of the admin's lines, byte for byte, with its newline if it has one.
    Admin,
    /// A block in force: marker plus `rule`, the rule line with its newline.
    Entry { source: IpAddr, rule: Range<usize> },
    /// nfsentry's lines that block nothing: released in place, a marker without its rule, or a
    /// torn append.
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    span: Range<usize>,
    /// The span starts with a newline nfsentry added after an unterminated admin line.
    newline_added: bool,
    kind: PieceKind,
}

/// hosts.deny split into the admin's lines and nfsentry's pieces; spans cover the text exactly.
#[derive(Debug)]
struct Document<'a> {
    text: &'a [u8],
    pieces: Vec<Piece>,
}

/// One line: `start..end` includes the newline, `content_end` excludes it.
#[derive(Debug, Clone, Copy)]
struct Line {
    start: usize,
    content_end: usize,
    end: usize,
}

impl Line {
    fn terminated(&self) -> bool {
        self.end > self.content_end
    }
}

fn split_lines(text: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let line = match text
            .get(start..)
            .and_then(|rest| rest.iter().position(|b| *b == b'\n'))
        {
            Some(offset) => Line {
                start,
                content_end: start + offset,
                end: start + offset + 1,
            },
            None => Line {
                start,
                content_end: text.len(),
                end: text.len(),
            },
        };
        start = line.end;
        lines.push(line);
    }
    lines
}

impl<'a> Document<'a> {
    fn parse(text: &'a [u8]) -> Document<'a> {
        let lines = split_lines(text);
        let content = |line: &Line| text.get(line.start..line.content_end).unwrap_or_default();
        let mut document = Document {
            text,
            pieces: Vec::new(),
        };
        let mut index = 0;
        while let Some(line) = lines.get(index) {
            match own_line(content(line)) {
                Some(OwnLine::Marker {
                    source,
                    newline_added,
                }) => {
                    let next = lines.get(index + 1).filter(|_| line.terminated());
                    let (end, kind, used) = match next {
                        Some(rule) if rule.terminated() && is_rule_for(content(rule), source) => {
                            let rule = rule.start..rule.end;
                            (rule.end, PieceKind::Entry { source, rule }, 2)
                        }
                        // The last line, unterminated, under a marker: an append cut short.
                        Some(rule) if !rule.terminated() => (rule.end, PieceKind::Dead, 2),
                        _ => (line.end, PieceKind::Dead, 1),
                    };
                    document.push_own(line.start..end, newline_added, kind);
                    index += used;
                }
                Some(OwnLine::Released { newline_added }) => {
                    document.push_own(line.start..line.end, newline_added, PieceKind::Dead);
                    index += 1;
                }
                None => {
                    document.pieces.push(Piece {
                        span: line.start..line.end,
                        newline_added: false,
                        kind: PieceKind::Admin,
                    });
                    index += 1;
                }
            }
        }
        document
    }

    /// The newline a marker says nfsentry added is the last byte of the admin line above it:
    /// it moves into this piece, so the admin line keeps exactly its own bytes.
    fn push_own(&mut self, span: Range<usize>, newline_added: bool, kind: PieceKind) {
        let mut span = span;
        let mut moved = false;
        if newline_added {
            if let Some(above) = self.pieces.last_mut() {
                let ends_in_newline =
                    above.span.end.checked_sub(1).and_then(|i| self.text.get(i)) == Some(&b'\n');
                if above.kind == PieceKind::Admin && above.span.end == span.start && ends_in_newline
                {
                    above.span.end -= 1;
                    span.start -= 1;
                    moved = true;
                    if above.span.is_empty() {
                        self.pieces.pop();
                    }
                }
            }
        }
        self.pieces.push(Piece {
            span,
            newline_added: moved,
            kind,
        });
    }

    fn bytes(&self, range: &Range<usize>) -> &'a [u8] {
        self.text.get(range.clone()).unwrap_or_default()
    }

    /// Sources of the entries in force, in file order, repeats included.
    fn entries(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pieces.iter().filter_map(|piece| match piece.kind {
            PieceKind::Entry { source, .. } => Some(source),
            _ => None,
        })
    }

    /// The whole file after the change: admin lines as they are, entries kept with their rule
    /// text, `release`d and dead pieces dropped, repeated entries collapsed into the first.
    fn render(&self, release: impl IntoIterator<Item = IpAddr>, add: &[NewEntry]) -> Vec<u8> {
        let release: HashSet<IpAddr> = release.into_iter().collect();
        let mut out = Vec::with_capacity(self.text.len() + add.len() * 64);
        let mut written = HashSet::new();
        for piece in &self.pieces {
            match &piece.kind {
                PieceKind::Admin => {
                    // Only after a dropped entry that had added it: the admin line that
                    // follows needs it now, so it stays for good.
                    if out.last().is_some_and(|byte| *byte != b'\n') {
                        out.push(b'\n');
                    }
                    out.extend_from_slice(self.bytes(&piece.span));
                }
                PieceKind::Entry { source, rule }
                    if !release.contains(source) && written.insert(*source) =>
                {
                    push_entry(&mut out, *source, self.bytes(rule));
                }
                PieceKind::Entry { .. } | PieceKind::Dead => {}
            }
        }
        for entry in add {
            if written.insert(entry.source) {
                let rule = format!("{}\n", entry.rule);
                push_entry(&mut out, entry.source, rule.as_bytes());
            }
        }
        out
    }
}

/// Appends marker and rule to `out`, starting a line first when `out` ends mid-line.
fn push_entry(out: &mut Vec<u8>, source: IpAddr, rule_with_newline: &[u8]) {
    let newline_added = out.last().is_some_and(|byte| *byte != b'\n');
    if newline_added {
        out.push(b'\n');
    }
    out.extend_from_slice(marker_line(source, newline_added).as_bytes());
    out.extend_from_slice(rule_with_newline);
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

/// The change written over the locked file itself; see the module documentation for why each
/// step can only ever touch nfsentry's bytes.
fn change_in_place(
    file: &File,
    path: &Path,
    document: &Document<'_>,
    release: &HashSet<IpAddr>,
    add: &[NewEntry],
) -> Result<(), HostsDenyError> {
    let unwanted = |piece: &Piece| match piece.kind {
        PieceKind::Admin => false,
        PieceKind::Dead => true,
        PieceKind::Entry { source, .. } => release.contains(&source),
    };
    // Everything after the last wanted piece is nfsentry's and can be cut off.
    let kept = document
        .pieces
        .iter()
        .rposition(|piece| !unwanted(piece))
        .map_or(0, |last| last + 1);
    let cut = document
        .pieces
        .get(kept)
        .map_or(document.text.len(), |piece| piece.span.start);

    let mut overwrites = Vec::new();
    for piece in document.pieces.iter().take(kept) {
        if matches!(piece.kind, PieceKind::Entry { source, .. } if release.contains(&source)) {
            let start = piece.span.start + usize::from(piece.newline_added);
            let len = piece.span.end.saturating_sub(start);
            overwrites.push((start as u64, released_line(len, piece.newline_added)));
        }
    }
    atomic_file::write_at(file, path, &overwrites)?;
    if cut < document.text.len() {
        atomic_file::truncate(file, path, cut as u64)?;
    }
    if !add.is_empty() {
        let before = document.text.get(..cut).unwrap_or_default();
        let mut appended = before.last().map(|byte| vec![*byte]).unwrap_or_default();
        for entry in add {
            let rule = format!("{}\n", entry.rule);
            push_entry(&mut appended, entry.source, rule.as_bytes());
        }
        // The seed byte only told push_entry how the file ends; it is already there.
        let appended = appended
            .get(usize::from(!before.is_empty())..)
            .unwrap_or_default();
        atomic_file::write_at(file, path, &[(cut as u64, appended)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    const V4_OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));

    fn entry(source: IpAddr) -> NewEntry {
        NewEntry {
            source,
            rule: rule_line("ALL: $TARGET$", source).unwrap(),
        }
    }

    fn kinds(document: &Document<'_>) -> Vec<PieceKind> {
        document.pieces.iter().map(|p| p.kind.clone()).collect()
    }

    #[test]
    fn rule_lines_bracket_ipv6_and_substitute_every_placeholder() {
        assert_eq!(rule_line("ALL: $TARGET$", V4).unwrap(), "ALL: 192.0.2.7");
        assert_eq!(
            rule_line("ALL: $TARGET$", V6).unwrap(),
            "ALL: [2001:db8::7]"
        );
        assert_eq!(
            rule_line(
                "sshd,in.telnetd: $TARGET$, $TARGET$/255.255.255.255 : DENY",
                V4
            )
            .unwrap(),
            "sshd,in.telnetd: 192.0.2.7, 192.0.2.7/255.255.255.255 : DENY"
        );
    }

    #[test]
    fn rule_lines_that_could_not_be_told_apart_or_read_are_refused() {
        for template in [
            "ALL: ALL",
            "ALL: $TARGET$\nALL: ALL",
            "ALL: $TARGET$ \\",
            "# ALL: $TARGET$",
            "$TARGET$",
            "ALL: x$TARGET$",
        ] {
            assert!(
                matches!(
                    rule_line(template, V4),
                    Err(HostsDenyError::Template { .. })
                ),
                "{template:?} was accepted"
            );
        }
    }

    #[test]
    fn markers_are_recognised_only_in_their_exact_form() {
        assert_eq!(
            own_line(b"# nfsentry block 192.0.2.7"),
            Some(OwnLine::Marker {
                source: V4,
                newline_added: false
            })
        );
        assert_eq!(
            own_line(b"# nfsentry block 2001:db8::7 newline-added"),
            Some(OwnLine::Marker {
                source: V6,
                newline_added: true
            })
        );
        assert_eq!(
            own_line(b"# nfsentry released newline-added     "),
            Some(OwnLine::Released {
                newline_added: true
            })
        );
        for admin in [
            "# nfsentry block 192.0.2.7 because it scanned us",
            "# nfsentry block me",
            "#nfsentry block 192.0.2.7",
            "# nfsentry released the kraken",
            "# nfsentry",
        ] {
            assert_eq!(own_line(admin.as_bytes()), None, "{admin:?}");
        }
    }

    #[test]
    fn a_rule_is_ours_only_if_it_names_the_marker_address_as_a_word() {
        assert!(is_rule_for(b"ALL: 192.0.2.7", V4));
        assert!(is_rule_for(b"ALL:192.0.2.7 : DENY", V4));
        assert!(is_rule_for(b"sshd: 10.0.0.1, 192.0.2.7/32", V4));
        assert!(!is_rule_for(b"ALL: 192.0.2.77", V4));
        assert!(!is_rule_for(b"ALL: 192.0.2.", V4));
        assert!(!is_rule_for(b"# ALL: 192.0.2.7", V4));
        assert!(is_rule_for(b"ALL: [2001:db8::7]", V6));
        assert!(!is_rule_for(b"ALL: [2001:db8::77]", V6));
    }

    #[test]
    fn parse_separates_admin_lines_entries_and_dead_lines() {
        let text = b"# admin\nALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n\
# nfsentry block 198.51.100.9\nsshd: 10.9.9.9\n# nfsentry released     \n";
        let document = Document::parse(text);
        let kinds = kinds(&document);
        assert_eq!(kinds.len(), 6, "{kinds:?}");
        assert_eq!(kinds[0], PieceKind::Admin);
        assert_eq!(kinds[1], PieceKind::Admin);
        assert!(matches!(kinds[2], PieceKind::Entry { source, .. } if source == V4));
        // The marker lost its rule line to an admin edit: the marker alone is ours.
        assert_eq!(kinds[3], PieceKind::Dead);
        assert_eq!(kinds[4], PieceKind::Admin);
        assert_eq!(kinds[5], PieceKind::Dead);
        assert_eq!(document.entries().collect::<Vec<_>>(), vec![V4]);
        let spans: usize = document.pieces.iter().map(|p| p.span.len()).sum();
        assert_eq!(spans, text.len());
    }

    #[test]
    fn an_unterminated_line_under_a_marker_is_a_torn_append() {
        let document = Document::parse(b"ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 19");
        assert_eq!(kinds(&document), vec![PieceKind::Admin, PieceKind::Dead]);
        assert_eq!(
            document.render(None, &[]),
            b"ALL: 10.0.0.1\n".to_vec(),
            "the torn entry is dropped on the next rewrite"
        );
    }

    #[test]
    fn render_round_trips_admin_bytes_including_a_missing_final_newline() {
        let admin: &[u8] = b"# hosts.deny\r\nALL: 10.0.0.1\n\n  # indented\nsshd: 10.0.0.2";
        let added = Document::parse(admin).render(None, &[entry(V4), entry(V6)]);
        assert_eq!(
            added,
            [
                admin,
                b"\n# nfsentry block 192.0.2.7 newline-added\nALL: 192.0.2.7\n",
                b"# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n"
            ]
            .concat()
        );
        let first_released = Document::parse(&added).render(Some(V4), &[]);
        assert_eq!(
            first_released,
            [
                admin,
                b"\n# nfsentry block 2001:db8::7 newline-added\nALL: [2001:db8::7]\n"
            ]
            .concat(),
            "the added newline passes to the next entry"
        );
        assert_eq!(
            Document::parse(&first_released).render(Some(V6), &[]),
            admin
        );
    }

    #[test]
    fn render_keeps_a_needed_newline_when_the_admin_wrote_after_our_entry() {
        let text = b"ALL: 10.0.0.1\n# nfsentry block 192.0.2.7 newline-added\nALL: 192.0.2.7\nsshd: 10.0.0.2\n";
        let released = Document::parse(text).render(Some(V4), &[]);
        assert_eq!(released, b"ALL: 10.0.0.1\nsshd: 10.0.0.2\n".to_vec());
    }

    #[test]
    fn render_collapses_repeated_entries_and_skips_known_sources() {
        let text = b"# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n";
        let rendered =
            Document::parse(text).render(None, &[entry(V4), entry(V4_OTHER), entry(V4_OTHER)]);
        assert_eq!(
            String::from_utf8(rendered).unwrap(),
            "# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n\
             # nfsentry block 198.51.100.9\nALL: 198.51.100.9\n"
        );
    }

    #[test]
    fn released_lines_have_the_exact_length_and_stay_comments() {
        for len in [20, 33, 80] {
            let line = released_line(len, false);
            assert_eq!(line.len(), len);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(
                own_line(&line[..len - 1]),
                Some(OwnLine::Released {
                    newline_added: false
                })
            );
        }
        let short = released_line(5, true);
        assert_eq!(short, b"#   \n".to_vec());
    }

    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(name: &str) -> ScratchDir {
            let dir = std::env::temp_dir().join(format!(
                "nfsentry-hosts-deny-unit-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            ScratchDir(dir)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(source: IpAddr) -> BlockRecord {
        BlockRecord {
            source,
            added: 0,
            expires: None,
            protocol: "TCP".into(),
            port: 23,
            kind: "SYN/Normal".into(),
        }
    }

    #[test]
    fn in_place_changes_keep_the_inode_and_the_admin_bytes() {
        let dir = ScratchDir::new("in-place");
        let path = dir.0.join("hosts.deny");
        let admin = b"# admin\nALL: 10.0.0.1";
        fs::write(&path, admin).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let mut backend =
            HostsDenyAction::new(path.clone(), "ALL: $TARGET$".into()).in_place_only();
        let now = SystemTime::now();

        backend.block(&[&record(V4)], now).unwrap();
        backend.block(&[&record(V6)], now).unwrap();
        // The admin then adds a line below nfsentry's entries.
        let mut appended = fs::read(&path).unwrap();
        appended.extend_from_slice(b"sshd: 10.0.0.2\n");
        fs::write(&path, &appended).unwrap();

        backend.release(&[&record(V4)]).unwrap();
        let text = fs::read(&path).unwrap();
        assert_eq!(
            text.len(),
            appended.len(),
            "a release in place keeps the length"
        );
        assert_eq!(backend.sources().unwrap(), vec![V6]);
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
        let dir = ScratchDir::new("tail");
        let path = dir.0.join("hosts.deny");
        let admin = b"# admin\nALL: 10.0.0.1";
        fs::write(&path, admin).unwrap();
        let mut backend =
            HostsDenyAction::new(path.clone(), "ALL: $TARGET$".into()).in_place_only();
        let now = SystemTime::now();
        backend.block(&[&record(V4)], now).unwrap();
        backend.block(&[&record(V6)], now).unwrap();
        backend.block(&[&record(V4_OTHER)], now).unwrap();
        // Releasing the middle one leaves a released line; releasing the rest cuts them all.
        backend.release(&[&record(V6)]).unwrap();
        assert_eq!(backend.sources().unwrap(), vec![V4, V4_OTHER]);
        backend.release(&[&record(V4_OTHER)]).unwrap();
        backend.release(&[&record(V4)]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), admin.to_vec());
    }

    /// Blocks five sources, lets the admin add a line below them, releases three of them (and
    /// a source without an entry) in one call, then the other two in a second.
    fn release_three_of_five_in_one_call(in_place: bool) {
        let dir = ScratchDir::new(if in_place {
            "batch-in-place"
        } else {
            "batch-replace"
        });
        let path = dir.0.join("hosts.deny");
        let admin = b"# admin\nALL: 10.0.0.1";
        fs::write(&path, admin).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let mut backend = HostsDenyAction::new(path.clone(), "ALL: $TARGET$".into());
        if in_place {
            backend = backend.in_place_only();
        }
        let sources: Vec<IpAddr> = (1..=5)
            .map(|host| IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)))
            .collect();
        let records: Vec<BlockRecord> = sources.iter().map(|source| record(*source)).collect();
        let all: Vec<&BlockRecord> = records.iter().collect();
        backend.block(&all, SystemTime::now()).unwrap();
        assert_eq!(backend.sources().unwrap(), sources);
        let mut with_admin_line = fs::read(&path).unwrap();
        with_admin_line.extend_from_slice(b"sshd: 10.0.0.2\n");
        fs::write(&path, &with_admin_line).unwrap();

        let absent = record(V4);
        let first_batch = [&records[0], &records[2], &absent, &records[4]];
        let written_before = backend.changes_written;
        backend.release(&first_batch).unwrap();
        assert_eq!(backend.changes_written, written_before + 1, "one change");
        assert_eq!(backend.sources().unwrap(), vec![sources[1], sources[3]]);
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

        backend.release(&[&records[3], &records[1]]).unwrap();
        assert_eq!(backend.sources().unwrap(), Vec::<IpAddr>::new());
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
        let dir = ScratchDir::new("batch-tail");
        let path = dir.0.join("hosts.deny");
        let admin = b"# admin\nALL: 10.0.0.1";
        fs::write(&path, admin).unwrap();
        let mut backend =
            HostsDenyAction::new(path.clone(), "ALL: $TARGET$".into()).in_place_only();
        let records = [record(V4), record(V6), record(V4_OTHER)];
        let all: Vec<&BlockRecord> = records.iter().collect();
        backend.block(&all, SystemTime::now()).unwrap();
        backend.release(&all).unwrap();
        assert_eq!(fs::read(&path).unwrap(), admin.to_vec());
    }

    #[test]
    fn in_place_block_drops_a_torn_append_first() {
        let dir = ScratchDir::new("torn");
        let path = dir.0.join("hosts.deny");
        fs::write(
            &path,
            b"ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0",
        )
        .unwrap();
        let mut backend =
            HostsDenyAction::new(path.clone(), "ALL: $TARGET$".into()).in_place_only();
        backend.block(&[&record(V4)], SystemTime::now()).unwrap();
        assert_eq!(
            String::from_utf8(fs::read(&path).unwrap()).unwrap(),
            "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n"
        );
    }
}
