//! The configuration error type and the translation of TOML and serde errors into
//! "file:line: key: problem" form; it does not decide what is valid.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

/// Longest piece of the file quoted back in an error; longer values are cut with "...".
const QUOTED_VALUE_MAX_CHARS: usize = 60;

/// A configuration or ignore file that cannot be used, with where and why.
///
/// Displays as `FILE:LINE: MESSAGE`, or `FILE: MESSAGE` when no line applies (for example an
/// unreadable file). The message names the key and quotes the bad value.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when there is one.
    pub line: Option<usize>,
    /// What is wrong, starting with the key where a key is involved.
    pub message: String,
    /// The I/O error behind a file that could not be read; its text is also in `message`, so
    /// that the one-line display is complete on its own.
    #[source]
    pub(crate) cause: Option<std::io::Error>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                formatter,
                "{}:{line}: {}",
                self.file.display(),
                self.message
            ),
            None => write!(formatter, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl ConfigError {
    pub(crate) fn new(file: &Path, line: Option<usize>, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line,
            message,
            cause: None,
        }
    }

    /// A file that was not read: unreadable, not a regular file, or too large.
    pub(crate) fn from_file_problem(
        file: &Path,
        problem: super::files::FileProblem,
    ) -> ConfigError {
        match problem {
            super::files::FileProblem::Io(cause) => ConfigError::unreadable(file, cause),
            other => ConfigError::new(file, None, other.to_string()),
        }
    }

    /// A file that could not be read at all.
    pub(crate) fn unreadable(file: &Path, cause: std::io::Error) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: format!("cannot read the file: {cause}"),
            cause: Some(cause),
        }
    }
}

/// The text of one file, for turning byte offsets into line numbers and quoting values.
#[derive(Clone, Copy)]
pub(crate) struct SourceText<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl SourceText<'_> {
    /// 1-based line holding byte `offset`; offsets past the end count as the last line.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let before = self
            .text
            .as_bytes()
            .get(..offset)
            .unwrap_or(self.text.as_bytes());
        before.iter().filter(|byte| **byte == b'\n').count() + 1
    }

    /// The error `KEY: "VALUE" PROBLEM` on the line where `span` starts.
    pub(crate) fn value_error(
        &self,
        span: &Range<usize>,
        key: &str,
        value: &str,
        problem: impl fmt::Display,
    ) -> ConfigError {
        ConfigError::new(
            self.file,
            Some(self.line_of(span.start)),
            format!("{key}: {} {problem}", quote(value)),
        )
    }

    /// The file's own text at `span`, or "" if the span does not fit it.
    fn slice(&self, span: &Range<usize>) -> &str {
        self.text.get(span.clone()).unwrap_or("")
    }

    /// Turns a TOML syntax error or a serde type error into a [`ConfigError`] that names the
    /// key, the line and the value.
    pub(crate) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let line = error.span().map(|span| self.line_of(span.start));
        // Parsing the document a second time tells a syntax error (no document) from a type
        // error (a document, and the span of the offending key or value in it).
        let document = match DeTable::parse(self.text) {
            Ok(document) => document,
            Err(syntax) => {
                let line = syntax.span().map(|span| self.line_of(span.start)).or(line);
                return ConfigError::new(
                    self.file,
                    line,
                    format!("not valid TOML: {}", syntax.message()),
                );
            }
        };
        let Some(span) = error.span() else {
            return ConfigError::new(self.file, line, error.message().to_owned());
        };
        let entries = entries_of(document.get_ref());
        let message = error.message();
        if message.starts_with("unknown field") {
            if let Some(entry) = entries
                .iter()
                .find(|entry| entry.key_span.as_ref() == Some(&span))
            {
                return ConfigError::new(self.file, line, unknown_key_message(entry, message));
            }
        }
        let innermost = entries
            .iter()
            .filter(|entry| contains(&entry.value_span, &span))
            .min_by_key(|entry| entry.value_span.len());
        match innermost {
            Some(entry) => ConfigError::new(self.file, line, self.type_message(entry, message)),
            None => ConfigError::new(self.file, line, message.to_owned()),
        }
    }

    /// `KEY: "VALUE" is a string, expected an integer`, from serde's
    /// `invalid type: string "VALUE", expected i64`.
    fn type_message(&self, entry: &Entry, serde_message: &str) -> String {
        let key = entry.path.join(".");
        let value = match &entry.string {
            Some(string) => string.clone(),
            None => self.slice(&entry.value_span).to_owned(),
        };
        let Some((_, expected)) = serde_message.rsplit_once(", expected ") else {
            return format!("{key}: {} {serde_message}", quote(&value));
        };
        // Every top-level key is a section; serde's own expectation can be odd there (an array
        // of tables is read as a struct's field sequence, so it "expects" the first field).
        let expected = if entry.path.len() == 1 {
            "a table".to_owned()
        } else {
            readable_expectation(expected)
        };
        let found = article_for_kind(entry.kind);
        let takes_integers = found == expected || expected.contains(" number");
        if takes_integers && entry.kind == "integer" {
            // The only way an integer fails where integers are taken: it does not fit 64 bits.
            format!("{key}: {} is too large", quote(&value))
        } else {
            format!("{key}: {} is {found}, expected {expected}", quote(&value))
        }
    }
}

/// One key of the parsed document, with the full dotted path to it.
struct Entry {
    path: Vec<String>,
    /// None for array elements, which have no key of their own.
    key_span: Option<Range<usize>>,
    value_span: Range<usize>,
    kind: &'static str,
    /// The text of a string value, so the message quotes it once instead of showing the TOML
    /// quotes and escapes as well.
    string: Option<String>,
}

/// A value still to visit: its path, its key's span (none for array elements), the value.
type PendingValue<'d, 'i> = (
    Vec<String>,
    Option<Range<usize>>,
    &'d toml::Spanned<DeValue<'i>>,
);

/// Every key and every array element of the document, depth first. Array elements carry the
/// path of their array, because the key is what the user needs to find.
fn entries_of(document: &DeTable<'_>) -> Vec<Entry> {
    let mut entries = Vec::new();
    // An explicit stack: the nesting depth is the user's to choose.
    let mut pending: Vec<PendingValue<'_, '_>> = Vec::new();
    for (key, value) in document.iter() {
        pending.push((vec![key.get_ref().to_string()], Some(key.span()), value));
    }
    while let Some((path, key_span, value)) = pending.pop() {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, child) in table.iter() {
                    let mut child_path = path.clone();
                    child_path.push(key.get_ref().to_string());
                    pending.push((child_path, Some(key.span()), child));
                }
            }
            DeValue::Array(array) => {
                for element in array.iter() {
                    pending.push((path.clone(), None, element));
                }
            }
            _ => {}
        }
        entries.push(Entry {
            key_span,
            value_span: value.span(),
            kind: value.get_ref().type_str(),
            string: value.get_ref().as_str().map(str::to_owned),
            path,
        });
    }
    entries
}

/// Whether `outer` covers `inner`; an empty `inner` (end of input) counts if it starts inside.
fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && !outer.is_empty()
}

/// `unknown key "verdic" in [respond] (expected one of: verdict, block_timeout, ...)`, from
/// serde's ``unknown field `verdic`, expected one of `verdict`, ...``.
fn unknown_key_message(entry: &Entry, serde_message: &str) -> String {
    let (section, key) = match entry.path.split_last() {
        Some((key, section)) => (section.join("."), key.as_str()),
        None => (String::new(), ""),
    };
    // The key is taken from the document, not from the message, so a key holding a backtick
    // cannot confuse the split below.
    let listed = serde_message
        .strip_prefix(&format!("unknown field `{key}`"))
        .unwrap_or("");
    let expected: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
    let place = if section.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in [{section}]")
    };
    if expected.is_empty() {
        format!("unknown key {} {place}", quote(key))
    } else {
        format!(
            "unknown key {} {place} (expected one of: {})",
            quote(key),
            expected.join(", ")
        )
    }
}

/// Serde names Rust types ("i64", "a sequence", "struct RawDaemon"); say what they are in TOML.
fn readable_expectation(expected: &str) -> String {
    match expected {
        "i64" | "u64" | "i32" | "u32" | "u16" => "an integer".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "a table".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

fn article_for_kind(kind: &str) -> String {
    match kind {
        "integer" | "array" => format!("an {kind}"),
        "datetime" => "a date-time".to_owned(),
        other => format!("a {other}"),
    }
}

/// The value in double quotes, escaped so it stays on one line, cut if very long.
pub(crate) fn quote(value: &str) -> String {
    if value.chars().count() <= QUOTED_VALUE_MAX_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(QUOTED_VALUE_MAX_CHARS).collect();
    format!("{head:?}...")
}
