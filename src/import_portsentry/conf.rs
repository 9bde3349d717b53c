//! Reads a portsentry.conf the way PortSentry did: `KEY="value"` lines and `#` comments. It
//! keeps the last value of each setting it knows, with its line, and notes every line it cannot
//! use; what a setting means to nfsentry is [`super::map`]'s business.

use std::collections::BTreeMap;

use super::{Note, NoteKind};

/// Every setting PortSentry 1.2 and 2.x read from portsentry.conf.
pub(super) const KEYS: [&str; 18] = [
    "TCP_PORTS",
    "UDP_PORTS",
    "ADVANCED_PORTS_TCP",
    "ADVANCED_PORTS_UDP",
    "ADVANCED_EXCLUDE_TCP",
    "ADVANCED_EXCLUDE_UDP",
    "IGNORE_FILE",
    "HISTORY_FILE",
    "BLOCKED_FILE",
    "RESOLVE_HOST",
    "BLOCK_TCP",
    "BLOCK_UDP",
    "KILL_ROUTE",
    "KILL_HOSTS_DENY",
    "KILL_RUN_CMD",
    "KILL_RUN_CMD_FIRST",
    "SCAN_TRIGGER",
    "PORT_BANNER",
];

/// One setting's value as written between the quotes, and the line it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Setting {
    pub(super) value: String,
    pub(super) line: usize,
}

/// The settings of one file, the later assignment of a key winning.
#[derive(Debug, Default)]
pub(super) struct Settings {
    values: BTreeMap<&'static str, Setting>,
}

impl Settings {
    pub(super) fn get(&self, key: &str) -> Option<&Setting> {
        self.values.get(key)
    }

    /// The value, or None when the key is absent.
    pub(super) fn value(&self, key: &str) -> Option<&str> {
        self.get(key).map(|setting| setting.value.as_str())
    }

    /// The line of the key, for notes and comments.
    pub(super) fn line(&self, key: &str) -> Option<usize> {
        self.get(key).map(|setting| setting.line)
    }
}

/// Splits the file into settings. Lines PortSentry skipped are skipped with a note, except
/// comments and blank lines.
///
/// PortSentry 1.2 read each key with a fresh pass over the file and used its first assignment;
/// 2.x reads the file once and the last assignment wins. The later one wins here, and a key set
/// twice is noted so that the admin can see which value was taken.
pub(super) fn read(text: &str, notes: &mut Vec<Note>) -> Settings {
    let mut settings = Settings::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim_end();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let Some((key, value)) = assignment(content, line, notes) else {
            continue;
        };
        let Some(known) = KEYS.iter().copied().find(|known| *known == key) else {
            notes.push(Note::conf(
                line,
                key,
                NoteKind::NotMapped,
                "not a PortSentry setting (PortSentry 1.2 ignored it; 2.x refused to start)",
            ));
            continue;
        };
        let setting = Setting {
            value: value.to_owned(),
            line,
        };
        if let Some(earlier) = settings.values.insert(known, setting) {
            notes.push(Note::conf(
                earlier.line,
                known,
                NoteKind::NotMapped,
                format!(
                    "set again on line {line}, and the later value is used (as PortSentry 2.x \
                     read the file; 1.2 used the first)"
                ),
            ));
        }
    }
    settings
}

/// `KEY = "value"` → (KEY, value). Text after the closing quote is ignored, as PortSentry did,
/// which is how `KEY="value" # comment` works.
fn assignment<'a>(
    content: &'a str,
    line: usize,
    notes: &mut Vec<Note>,
) -> Option<(&'a str, &'a str)> {
    let key_length = content
        .bytes()
        .take_while(|byte| byte.is_ascii_uppercase() || *byte == b'_')
        .count();
    let (key, rest) = content.split_at(key_length);
    let not_a_setting = |notes: &mut Vec<Note>| {
        notes.push(Note::conf(
            line,
            "",
            NoteKind::NotMapped,
            format!(
                "{} is not a KEY=\"value\" setting; PortSentry skipped it",
                super::quoted(content)
            ),
        ));
    };
    let Some(rest) = rest.trim_start_matches([' ', '\t']).strip_prefix('=') else {
        not_a_setting(notes);
        return None;
    };
    if key.is_empty() {
        not_a_setting(notes);
        return None;
    }
    let Some(quoted) = rest.trim_start_matches([' ', '\t']).strip_prefix('"') else {
        notes.push(Note::conf(
            line,
            key,
            NoteKind::NotMapped,
            "the value is not in double quotes, so PortSentry skipped the setting",
        ));
        return None;
    };
    match quoted.split_once('"') {
        Some((value, _after)) => Some((key, value)),
        None => {
            notes.push(Note::conf(
                line,
                key,
                NoteKind::MappedInPart,
                "the closing quote is missing; the value is taken to the end of the line, as \
                 PortSentry 1.2 read it (2.x refused the file)",
            ));
            Some((key, quoted))
        }
    }
}
