//! The hosts.deny document: the admin's lines and nfsentry's entries told apart, and what a
//! change of entries makes of them, as a whole new text or as in-place edits of nfsentry's own
//! bytes. It does no I/O: bytes come in, bytes and byte ranges go out. Reading, locking and
//! writing the file are the action's ([`super`]); making the writes crash-safe is
//! [`crate::atomic_file`]'s.
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
//! # What a change makes of the file
//!
//! [`Document::render`] gives the whole new text, for replacing the file: the admin's lines byte
//! for byte, the entries kept, released and dead pieces dropped, new entries at the end.
//!
//! [`Document::in_place`] gives the same change as edits of the file where it lies, for when it
//! cannot be replaced. They only ever touch nfsentry's own bytes:
//! - a block is written after the last byte; a crash can tear only that entry. A marker followed
//!   by an unterminated last line is recognised as such a torn entry and cut off by the next
//!   change; a tear inside the marker leaves a comment line, harmless, that is left alone because
//!   it cannot be told from the admin's;
//! - a release overwrites the entry's own bytes with a `# nfsentry released` comment line of the
//!   same length (torn front to back, that write leaves the old entry or a line starting with
//!   `#`), and the file is cut short only where everything after the cut is nfsentry's released
//!   or torn lines.
//!
//! The admin's bytes are never moved, so no crash can lose them. The price is released-entry
//! comment lines that stay wherever something still wanted follows them, until a replacement
//! (when one works again) drops them.

use std::collections::HashSet;
use std::net::IpAddr;
use std::ops::Range;

use thiserror::Error;

const TARGET_PLACEHOLDER: &str = "$TARGET$";
const MARKER_PREFIX: &str = "# nfsentry block ";
const RELEASED_PREFIX: &str = "# nfsentry released";
/// Suffix of a marker or released line whose preceding newline nfsentry wrote.
const NEWLINE_ADDED: &str = " newline-added";

/// A `hosts_deny_line` that cannot make rule lines the parser would recognise as nfsentry's.
#[derive(Debug, Error)]
#[error("hosts_deny_line {template:?} {problem}")]
pub struct TemplateError {
    pub template: String,
    pub problem: &'static str,
}

/// An entry to write: the source it blocks and its rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub source: IpAddr,
    /// The rule line, without its newline.
    pub rule: String,
}

/// What a change does to the file, as [`Document::plan`] finds it.
#[derive(Debug, Default)]
pub struct Change {
    /// Entries for sources that had none, each source once, in the order asked.
    pub added: Vec<NewEntry>,
    /// The sources asked to be released that had an entry, each once, in the order asked.
    pub released: Vec<IpAddr>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.released.is_empty()
    }
}

/// A change as edits of the file where it lies, to be made in this order, each durable before
/// the next: the overwrites, the cut, the append.
#[derive(Debug, PartialEq, Eq)]
pub struct InPlace {
    /// Released entries' bytes, each to be overwritten with a comment line of its own length.
    pub overwrite: Vec<(u64, Vec<u8>)>,
    /// The length to cut the file to, where everything after it is nfsentry's and unwanted.
    pub truncate_to: Option<u64>,
    /// Where the new entries go: the end of the file once it is cut.
    pub append_at: u64,
    /// The new entries' bytes; empty when there are none.
    pub append: Vec<u8>,
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
pub fn rule_line(template: &str, source: IpAddr) -> Result<String, TemplateError> {
    let problem = |problem| TemplateError {
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
pub struct Document<'a> {
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
    pub fn parse(text: &'a [u8]) -> Document<'a> {
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
    pub fn entries(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.pieces.iter().filter_map(|piece| match piece.kind {
            PieceKind::Entry { source, .. } => Some(source),
            _ => None,
        })
    }

    /// Which of `wanted` to write and which of `release` to remove: sources that already have an
    /// entry are not written again, and sources without one have nothing to release.
    pub fn plan(&self, wanted: Vec<NewEntry>, release: &[IpAddr]) -> Change {
        let present: HashSet<IpAddr> = self.entries().collect();
        let mut queued = HashSet::new();
        let added = wanted
            .into_iter()
            .filter(|entry| !present.contains(&entry.source) && queued.insert(entry.source))
            .collect();
        let mut releasing = HashSet::new();
        let released = release
            .iter()
            .copied()
            .filter(|source| present.contains(source) && releasing.insert(*source))
            .collect();
        Change { added, released }
    }

    /// The whole file after the change: admin lines as they are, entries kept with their rule
    /// text, `release`d and dead pieces dropped, repeated entries collapsed into the first.
    pub fn render(&self, release: impl IntoIterator<Item = IpAddr>, add: &[NewEntry]) -> Vec<u8> {
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

    /// The change as edits where the file lies; see the module documentation for why each one
    /// can only ever touch nfsentry's bytes. Repeated and dead pieces stay unless they are in the
    /// tail that is cut.
    pub fn in_place(&self, release: impl IntoIterator<Item = IpAddr>, add: &[NewEntry]) -> InPlace {
        let release: HashSet<IpAddr> = release.into_iter().collect();
        let unwanted = |piece: &Piece| match piece.kind {
            PieceKind::Admin => false,
            PieceKind::Dead => true,
            PieceKind::Entry { source, .. } => release.contains(&source),
        };
        // Everything after the last wanted piece is nfsentry's and can be cut off.
        let kept = self
            .pieces
            .iter()
            .rposition(|piece| !unwanted(piece))
            .map_or(0, |last| last + 1);
        let cut = self
            .pieces
            .get(kept)
            .map_or(self.text.len(), |piece| piece.span.start);

        let overwrite = self
            .pieces
            .iter()
            .take(kept)
            .filter_map(|piece| match piece.kind {
                PieceKind::Entry { source, .. } if release.contains(&source) => {
                    let start = piece.span.start + usize::from(piece.newline_added);
                    let len = piece.span.end.saturating_sub(start);
                    Some((start as u64, released_line(len, piece.newline_added)))
                }
                _ => None,
            })
            .collect();
        let before = self.text.get(..cut).unwrap_or_default();
        let mut appended = before.last().map(|byte| vec![*byte]).unwrap_or_default();
        for entry in add {
            let rule = format!("{}\n", entry.rule);
            push_entry(&mut appended, entry.source, rule.as_bytes());
        }
        // The seed byte only told push_entry how the file ends; it is already there.
        let append = appended
            .get(usize::from(!before.is_empty())..)
            .unwrap_or_default()
            .to_vec();
        InPlace {
            overwrite,
            truncate_to: (cut < self.text.len()).then_some(cut as u64),
            append_at: cut as u64,
            append,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::hosts_deny::test_addresses::{V4, V4_OTHER, V6};

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
                matches!(rule_line(template, V4), Err(TemplateError { .. })),
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

    /// One change of a file, as the action makes it: the text before, the sources blocked and
    /// released in one call, and the file after a replacement and after in-place edits.
    struct Case {
        name: &'static str,
        before: &'static str,
        block: &'static [IpAddr],
        release: &'static [IpAddr],
        replaced: &'static str,
        in_place: &'static str,
    }

    const CASES: &[Case] = &[
        Case {
            name: "a block in an empty file",
            before: "",
            block: &[V4],
            release: &[],
            replaced: "# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
            in_place: "# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
        },
        Case {
            name: "IPv6 after an admin's CRLF line",
            before: "ALL: PARANOID\r\n",
            block: &[V6],
            release: &[],
            replaced: "ALL: PARANOID\r\n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
            in_place: "ALL: PARANOID\r\n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
        },
        Case {
            name: "a block after an unterminated last line adds the newline and says so",
            before: "ALL: 10.0.0.1",
            block: &[V4],
            release: &[],
            replaced: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7 newline-added\nALL: 192.0.2.7\n",
            in_place: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7 newline-added\nALL: 192.0.2.7\n",
        },
        Case {
            name: "releasing that entry gives the unterminated line back",
            before: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7 newline-added\nALL: 192.0.2.7\n",
            block: &[],
            release: &[V4],
            replaced: "ALL: 10.0.0.1",
            in_place: "ALL: 10.0.0.1",
        },
        Case {
            name: "an admin line after the entry keeps the added newline",
            before: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7 newline-added\nALL: 192.0.2.7\nsshd: 10.0.0.2\n",
            block: &[],
            release: &[V4],
            replaced: "ALL: 10.0.0.1\nsshd: 10.0.0.2\n",
            in_place: "ALL: 10.0.0.1\n# nfsentry released newline-added                      \nsshd: 10.0.0.2\n",
        },
        Case {
            name: "a released entry between live ones stays as a comment in place",
            before: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry block 198.51.100.9\nALL: 198.51.100.9\n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
            block: &[],
            release: &[V4_OTHER],
            replaced: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
            in_place: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry released                            \n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
        },
        Case {
            name: "released lines at the tail are cut with the entry released now",
            before: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry released                            \n",
            block: &[],
            release: &[V4],
            replaced: "# admin\n",
            in_place: "# admin\n",
        },
        Case {
            name: "block and release in one change",
            before: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
            block: &[V6],
            release: &[V4],
            replaced: "# admin\n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
            in_place: "# admin\n# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n",
        },
        Case {
            name: "a torn append is dropped before the next block",
            before: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 19",
            block: &[V4],
            release: &[],
            replaced: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
            in_place: "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
        },
        Case {
            name: "a marker whose rule the admin edited is dropped alone",
            before: "# nfsentry block 192.0.2.7\nALL: 10.9.9.9\n",
            block: &[V4],
            release: &[],
            replaced: "ALL: 10.9.9.9\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
            in_place: "# nfsentry block 192.0.2.7\nALL: 10.9.9.9\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
        },
        Case {
            name: "the admin's identical rule is not ours to release",
            before: "ALL: 192.0.2.7\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
            block: &[],
            release: &[V4],
            replaced: "ALL: 192.0.2.7\n",
            in_place: "ALL: 192.0.2.7\n",
        },
        Case {
            name: "sources with an entry are not written again, repeats are written once",
            before: "# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n",
            block: &[V4, V4_OTHER, V4_OTHER],
            release: &[],
            replaced: "# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry block 198.51.100.9\nALL: 198.51.100.9\n",
            in_place: "# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry block 198.51.100.9\nALL: 198.51.100.9\n",
        },
        Case {
            name: "a block already there and a release of a source without an entry change nothing",
            before: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry released                            \n",
            block: &[V4],
            release: &[V6],
            replaced: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry released                            \n",
            in_place: "# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n# nfsentry released                            \n",
        },
    ];

    /// What the edits do to `text`, in the order the action makes them.
    fn apply(text: &[u8], edits: &InPlace) -> Vec<u8> {
        let mut out = text.to_vec();
        for (offset, bytes) in &edits.overwrite {
            let start = usize::try_from(*offset).unwrap();
            out.splice(start..start + bytes.len(), bytes.iter().copied());
        }
        if let Some(len) = edits.truncate_to {
            out.truncate(usize::try_from(len).unwrap());
        }
        if !edits.append.is_empty() {
            assert_eq!(
                usize::try_from(edits.append_at).unwrap(),
                out.len(),
                "append at the end"
            );
            out.extend_from_slice(&edits.append);
        }
        out
    }

    #[test]
    fn changes_by_replacement_and_in_place() {
        for case in CASES {
            let document = Document::parse(case.before.as_bytes());
            let wanted = case.block.iter().map(|source| entry(*source)).collect();
            let change = document.plan(wanted, case.release);
            // As the action does: a change that asks nothing writes nothing.
            let (replaced, in_place) = if change.is_empty() {
                (
                    case.before.as_bytes().to_vec(),
                    case.before.as_bytes().to_vec(),
                )
            } else {
                let released = change.released.iter().copied();
                let edits = document.in_place(released.clone(), &change.added);
                (
                    document.render(released, &change.added),
                    apply(case.before.as_bytes(), &edits),
                )
            };
            assert_eq!(
                String::from_utf8(replaced).unwrap(),
                case.replaced,
                "{}: replaced",
                case.name
            );
            assert_eq!(
                String::from_utf8(in_place).unwrap(),
                case.in_place,
                "{}: in place",
                case.name
            );
            let blocked = |text: &str| -> HashSet<IpAddr> {
                Document::parse(text.as_bytes()).entries().collect()
            };
            assert_eq!(
                blocked(case.replaced),
                blocked(case.in_place),
                "{}: both ways block the same sources",
                case.name
            );
        }
    }

    #[test]
    fn in_place_edits_touch_only_the_released_entries_and_the_tail() {
        let text = b"# admin\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\nsshd: 10.0.0.2\n\
# nfsentry block 198.51.100.9\nALL: 198.51.100.9\n";
        let edits = Document::parse(text).in_place([V4, V4_OTHER], &[entry(V6)]);
        assert_eq!(edits.overwrite.len(), 1);
        assert_eq!(edits.overwrite[0].0, 8, "the entry's own first byte");
        assert_eq!(edits.overwrite[0].1.len(), 42, "the entry's own length");
        let tail = u64::try_from(text.len() - 48).unwrap();
        assert_eq!(edits.truncate_to, Some(tail));
        assert_eq!(edits.append_at, tail);
        assert_eq!(
            edits.append,
            b"# nfsentry block 2001:db8::7\nALL: [2001:db8::7]\n"
        );
    }
}
