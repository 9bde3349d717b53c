//! Writes the imported nfsentry.toml: a header, then the sections in a fixed order, each a run
//! of comments and keys. Values are written by the toml crate, so whatever text the admin's file
//! held comes out quoted and escaped; comments are wrapped and never carry a line break of
//! their own. It decides nothing about what goes in.

use std::fmt::Write as _;

/// Comment lines are wrapped to this many columns, as in config/nfsentry.toml.
const COMMENT_WIDTH: usize = 96;

/// The sections of nfsentry.toml, in the order they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Daemon,
    Monitor,
    Detect,
    Respond,
}

impl Section {
    const ALL: [Section; 4] = [
        Section::Daemon,
        Section::Monitor,
        Section::Detect,
        Section::Respond,
    ];

    fn name(self) -> &'static str {
        match self {
            Section::Daemon => "daemon",
            Section::Monitor => "monitor",
            Section::Detect => "detect",
            Section::Respond => "respond",
        }
    }

    fn index(self) -> usize {
        match self {
            Section::Daemon => 0,
            Section::Monitor => 1,
            Section::Detect => 2,
            Section::Respond => 3,
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    Comment(String),
    /// A comment written as one line, unwrapped (a commented-out key).
    CommentLine(String),
    Key(&'static str, toml::Value),
    Blank,
}

/// The file being built.
#[derive(Debug, Clone, Default)]
pub(super) struct TomlOut {
    header: Vec<String>,
    sections: [Vec<Item>; 4],
}

impl TomlOut {
    /// A paragraph of the header comment.
    pub(super) fn header(&mut self, text: impl Into<String>) {
        self.header.push(text.into());
    }

    /// A comment paragraph in `section`, wrapped when written.
    pub(super) fn comment(&mut self, section: Section, text: impl Into<String>) {
        self.sections[section.index()].push(Item::Comment(text.into()));
    }

    /// `# key = value`, a setting shown but not made.
    pub(super) fn commented_key(&mut self, section: Section, key: &str, value: toml::Value) {
        self.sections[section.index()].push(Item::CommentLine(format!("{key} = {value}")));
    }

    pub(super) fn key(&mut self, section: Section, key: &'static str, value: toml::Value) {
        self.sections[section.index()].push(Item::Key(key, value));
    }

    pub(super) fn blank(&mut self, section: Section) {
        self.sections[section.index()].push(Item::Blank);
    }

    /// The TOML text; `leave_out` drops one key (for the self-check, which must not read the
    /// ignore file again).
    pub(super) fn render(&self, leave_out: Option<(Section, &str)>) -> String {
        let mut text = String::new();
        for paragraph in &self.header {
            wrap_into(&mut text, paragraph);
        }
        for section in Section::ALL {
            let items = &self.sections[section.index()];
            if items.is_empty() {
                continue;
            }
            let _ = write!(text, "\n[{}]\n", section.name());
            for item in items {
                match item {
                    Item::Comment(paragraph) => wrap_into(&mut text, paragraph),
                    Item::CommentLine(line) => {
                        let _ = writeln!(text, "# {}", one_line(line));
                    }
                    Item::Key(key, _) if leave_out == Some((section, *key)) => {}
                    Item::Key(key, value) => {
                        let _ = writeln!(text, "{key} = {value}");
                    }
                    Item::Blank => text.push('\n'),
                }
            }
        }
        text
    }
}

/// Appends `paragraph` as `# ` comment lines of at most [`COMMENT_WIDTH`] columns (a single
/// longer word, such as a path, gets a line of its own).
fn wrap_into(text: &mut String, paragraph: &str) {
    let mut line = String::from("#");
    for word in one_line(paragraph)
        .split(' ')
        .filter(|word| !word.is_empty())
    {
        if line.len() > 1 && line.len() + 1 + word.len() > COMMENT_WIDTH {
            text.push_str(&line);
            text.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    text.push_str(&line);
    text.push('\n');
}

/// Control characters would end the comment line and let the rest be read as TOML.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_wrap_and_keys_are_quoted_by_toml() {
        let mut out = TomlOut::default();
        out.header("Imported.");
        out.comment(Section::Respond, "word ".repeat(40));
        out.key(
            Section::Respond,
            "hosts_deny_line",
            toml::Value::from("ALL: $TARGET$ \"x\"\nnext"),
        );
        out.commented_key(
            Section::Respond,
            "actions",
            toml::Value::from(vec!["nft-set"]),
        );
        let text = out.render(None);
        assert!(
            text.starts_with("# Imported.\n\n[respond]\n# word"),
            "{text}"
        );
        assert!(
            text.lines().all(|line| line.len() <= COMMENT_WIDTH),
            "{text}"
        );
        assert!(text.contains("# actions = [\"nft-set\"]\n"), "{text}");
        let parsed: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            parsed["respond"]["hosts_deny_line"].as_str(),
            Some("ALL: $TARGET$ \"x\"\nnext")
        );
        assert!(!out
            .render(Some((Section::Respond, "hosts_deny_line")))
            .contains("hosts_deny_line"));
    }

    #[test]
    fn a_line_break_in_a_comment_cannot_start_a_key() {
        let mut out = TomlOut::default();
        out.comment(Section::Daemon, "from KILL_ROUTE \"x\nqueue = 7\"");
        let parsed: toml::Table = out.render(None).parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(parsed["daemon"].as_table().is_some_and(|t| t.is_empty()));
    }
}
