//! What the package ships beside the binary cannot rot: the man pages name every subcommand and
//! option of `nfsentry --help` and every key of `config/nfsentry.toml` (and nothing that is
//! gone), `man` renders them without a warning, and the logrotate rule rotates the history
//! file while a writer keeps it open the way `src/store.rs` does. Needs `man` (man-db) and
//! `logrotate`; scripts/setup.sh installs both.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_nfsentry");

fn read(relative: &str) -> String {
    let path = Path::new(ROOT).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn help(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{BIN} {args:?} --help: {e}"));
    assert!(output.status.success(), "{args:?} --help: {output:?}");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The first word of each indented line of a clap help section (`Commands:`, `Options:`).
fn help_section(help: &str, heading: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != heading)
        .skip(1)
        .take_while(|line| line.starts_with(' '))
        .filter_map(|line| line.split_whitespace().next())
        .map(|word| word.trim_end_matches(',').to_owned())
        .collect()
}

/// The long options (`--config`) a help text lists.
fn long_options(help: &str) -> BTreeSet<String> {
    help_section(help, "Options:")
        .into_iter()
        .chain(
            help.lines()
                .skip_while(|line| line.trim() != "Options:")
                .flat_map(|line| line.split_whitespace())
                .filter(|word| word.starts_with("--"))
                .map(|word| word.trim_end_matches(',').to_owned()),
        )
        .filter(|word| word.starts_with("--"))
        .collect()
}

/// Lines of a man page split by `.SH` heading.
fn man_sections(page: &str) -> BTreeMap<String, Vec<&str>> {
    let mut sections: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut current = String::new();
    for line in page.lines() {
        if let Some(title) = line.strip_prefix(".SH ") {
            current = title.trim().trim_matches('"').to_owned();
        } else {
            sections.entry(current.clone()).or_default().push(line);
        }
    }
    sections
}

/// The tags of a section's `.TP` entries written as `.B tag`.
fn entry_tags(lines: &[&str]) -> BTreeSet<String> {
    lines
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .filter_map(|pair| pair[1].strip_prefix(".B "))
        .map(|tag| tag.trim().to_owned())
        .collect()
}

#[test]
fn nfsentry_8_describes_every_subcommand_and_option() {
    let page = read("man/nfsentry.8");
    let sections = man_sections(&page);
    let documented = entry_tags(sections.get("COMMANDS").expect("a COMMANDS section"));
    let top = help(&[]);
    let commands: BTreeSet<String> = help_section(&top, "Commands:").into_iter().collect();
    assert!(
        commands.contains("run"),
        "cannot read commands from:\n{top}"
    );
    assert_eq!(
        documented, commands,
        "man/nfsentry.8 COMMANDS differs from `nfsentry --help`"
    );

    let mut options = long_options(&top);
    for command in commands.iter().filter(|command| *command != "help") {
        let command_help = help(&[command]);
        let own = long_options(&command_help);
        assert!(
            own.contains("--help"),
            "no options read from:\n{command_help}"
        );
        options.extend(own);
    }
    // roff writes a literal minus as \-.
    let missing: Vec<&String> = options
        .iter()
        .filter(|option| !page.contains(&option.replace('-', "\\-")))
        .collect();
    assert!(
        missing.is_empty(),
        "man/nfsentry.8 does not mention {missing:?}"
    );
    for command in &commands {
        assert!(
            sections["SYNOPSIS"]
                .iter()
                .any(|line| line.contains(&format!("nfsentry {command}"))),
            "SYNOPSIS of man/nfsentry.8 lacks {command}"
        );
    }
}

#[test]
fn nfsentry_toml_5_describes_exactly_the_keys_of_the_shipped_config() {
    let config: toml::Table = read("config/nfsentry.toml")
        .parse()
        .expect("config/nfsentry.toml is TOML");
    let page = read("man/nfsentry.toml.5");
    let sections = man_sections(&page);
    for (name, value) in &config {
        let keys: BTreeSet<String> = value
            .as_table()
            .unwrap_or_else(|| panic!("[{name}] is not a table"))
            .keys()
            .cloned()
            .collect();
        let heading = format!("[{name}]");
        let lines = sections
            .get(&heading)
            .unwrap_or_else(|| panic!("man/nfsentry.toml.5 has no .SH {heading}"));
        assert_eq!(
            entry_tags(lines),
            keys,
            "man/nfsentry.toml.5 {heading} differs from config/nfsentry.toml"
        );
    }
    let table_headings: Vec<&String> = sections.keys().filter(|h| h.starts_with('[')).collect();
    assert_eq!(
        table_headings.len(),
        config.len(),
        "man/nfsentry.toml.5 has sections the config lacks: {table_headings:?}"
    );
}

#[test]
fn man_renders_both_pages_without_warnings() {
    for page in ["man/nfsentry.8", "man/nfsentry.toml.5"] {
        let path = Path::new(ROOT).join(page);
        let output = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env_remove("MAN_KEEP_FORMATTING")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run man (install man-db; scripts/setup.sh does): {e}")
            });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.trim().is_empty(),
            "man -l {page} ({}):\n{stderr}",
            output.status
        );
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("NAME"), "{page} rendered empty:\n{text}");
    }
}

/// The shipped rule, pointed at a scratch file: after logrotate has run, the writer's next
/// line (through the descriptor it opened before, with O_APPEND like the daemon's) starts the
/// emptied file, with no hole in front, and the old lines are in history.1.
#[test]
fn logrotate_rule_rotates_history_under_an_open_append_writer() {
    let rule = read("packaging/logrotate/nfsentry");
    const SHIPPED_PATH: &str = "/var/lib/nfsentry/history";
    assert_eq!(rule.matches(SHIPPED_PATH).count(), 1, "{rule}");
    assert!(
        rule.lines().any(|line| line.trim() == "copytruncate"),
        "{rule}"
    );

    let dir = tempfile::tempdir().expect("scratch directory");
    let history = dir.path().join("history");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&history)
        .expect("open history");
    writeln!(
        writer,
        "1795564518 - 11/24/2026 23:55:18 Host: 192.0.2.7/192.0.2.7 Port: 23 TCP Blocked"
    )
    .unwrap();
    let config = dir.path().join("logrotate.conf");
    fs::write(
        &config,
        rule.replace(SHIPPED_PATH, &history.to_string_lossy()),
    )
    .expect("write logrotate.conf");

    let output = Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg(&config)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run logrotate (install it; scripts/setup.sh does): {e}")
        });
    assert!(output.status.success(), "logrotate: {output:?}");

    let rotated = fs::read_to_string(dir.path().join("history.1")).expect("history.1");
    assert!(rotated.contains("192.0.2.7"), "{rotated:?}");
    let second = "1795564519 - 11/24/2026 23:55:19 Host: 192.0.2.8/192.0.2.8 Port: 23 TCP Blocked";
    writeln!(writer, "{second}").unwrap();
    let current = fs::read(&history).expect("history");
    assert_eq!(
        String::from_utf8_lossy(&current),
        format!("{second}\n"),
        "the line after rotation did not start the emptied file"
    );
}
