//! Translates a PortSentry 1.2/2.x `portsentry.conf` into an equivalent nfsentry.toml, and says
//! for each setting it could not carry over (or only in part) why. Text comes in, TOML text and
//! notes go out: the files the configuration names and the programs it runs are looked up
//! through [`Surroundings`], so nothing here touches the system, and `nfsentry
//! import-portsentry` ([`system::System`]) does the reading and printing.
//!
//! The output only uses keys and values nfsentry's own loader accepts: [`import`] loads what it
//! wrote before returning it, and says so if that ever fails.

mod conf;
mod ignore;
mod kill_route;
mod map;
mod out;
mod responses;
pub mod system;
mod words;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use system::{import_file, System};

/// What the import needs to know about the machine it runs on.
pub trait Surroundings {
    /// The text of a file the configuration names (IGNORE_FILE).
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Where `program` is found on PATH, as an absolute path.
    fn find_program(&self, program: &str) -> Option<PathBuf>;
    /// Whether `path` is an executable regular file.
    fn is_executable(&self, path: &Path) -> bool;
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The nfsentry.toml, comments included.
    pub toml: String,
    /// What could not be carried over, in the order of the PortSentry file.
    pub notes: Vec<Note>,
    /// Whether nfsentry's loader accepts `toml` (with the ignore file it names left out, as
    /// that file was read and compared already); the error text otherwise. An error here is a
    /// bug in the import, never in the admin's file.
    pub self_check: Result<(), String>,
}

/// One setting, or one line of a file it names, that was not carried over as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The file the line is in; None for the portsentry.conf being imported.
    pub file: Option<PathBuf>,
    /// 1-based; None when the setting is absent from the file.
    pub line: Option<usize>,
    /// The PortSentry setting ("KILL_RUN_CMD"); empty for a line that is no setting.
    pub key: String,
    pub kind: NoteKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// Nothing of it is in the output.
    NotMapped,
    /// It is in the output, but something of what PortSentry did with it is not.
    MappedInPart,
    /// It is in the output, and nfsentry accepts it, but does nothing with it.
    NoEffect,
}

impl Note {
    fn conf(line: usize, key: &str, kind: NoteKind, reason: impl Into<String>) -> Note {
        Note {
            file: None,
            line: Some(line),
            key: key.to_owned(),
            kind,
            reason: reason.into(),
        }
    }

    fn in_file(file: &Path, line: usize, kind: NoteKind, reason: impl Into<String>) -> Note {
        Note {
            file: Some(file.to_path_buf()),
            line: Some(line),
            key: String::new(),
            kind,
            reason: reason.into(),
        }
    }

    /// `FILE:LINE: KEY: not mapped: REASON`, with `conf` as the file when the note is about
    /// the imported file itself.
    pub fn render(&self, conf: &str) -> String {
        let file = self
            .file
            .as_ref()
            .map_or_else(|| conf.to_owned(), |file| file.display().to_string());
        let place = match self.line {
            Some(line) => format!("{file}:{line}"),
            None => file,
        };
        match self.key.is_empty() {
            true => format!("{place}: {}: {}", self.kind, self.reason),
            false => format!("{place}: {}: {}: {}", self.key, self.kind, self.reason),
        }
    }
}

impl fmt::Display for NoteKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            NoteKind::NotMapped => "not mapped",
            NoteKind::MappedInPart => "mapped in part",
            NoteKind::NoEffect => "kept, but has no effect",
        })
    }
}

/// Imports `text`, the contents of the portsentry.conf called `name` (for the output's header).
pub fn import(text: &str, name: &str, around: &dyn Surroundings) -> Import {
    let mut notes = Vec::new();
    let settings = conf::read(text, &mut notes);
    let output = map::map(&settings, name, around, &mut notes);
    notes.sort_by_key(|note| (note.file.is_some(), note.line.unwrap_or(usize::MAX)));
    let toml = output.render(None);
    let checked = output.render(Some((out::Section::Detect, "ignore_file")));
    let self_check = crate::config::Config::from_toml(&checked, Path::new(name))
        .map(|_| ())
        .map_err(|error| error.to_string());
    Import {
        toml,
        notes,
        self_check,
    }
}

/// A value as it was written, quoted and escaped so it stays on one line.
fn quoted(value: &str) -> String {
    format!("{value:?}")
}
