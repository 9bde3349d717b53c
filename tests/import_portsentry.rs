//! `nfsentry import-portsentry` as an admin runs it: on PortSentry 1.2's shipped
//! portsentry.conf (tests/fixtures/portsentry-1.2), and on that file as an admin edits it. What
//! it prints must pass `nfsentry check-config`, which also checks that the chosen firewall
//! tools are installed and that hosts.deny can be written (so run as root, like the suite).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_nfsentry");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/portsentry-1.2");

fn nfsentry(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running nfsentry {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Imports `conf`, writes the TOML next to it and returns (toml, stderr, check-config output).
fn import_and_check(dir: &Path, conf: &Path) -> (String, String, Output) {
    let conf_arg = conf.to_string_lossy();
    let imported = nfsentry(&["import-portsentry", &conf_arg]);
    let stderr = text(&imported.stderr);
    assert_eq!(imported.status.code(), Some(0), "import failed: {stderr}");
    let toml = text(&imported.stdout);
    let out = dir.join("nfsentry.toml");
    std::fs::write(&out, &toml).unwrap_or_else(|e| panic!("{e}"));
    let checked = nfsentry(&["check-config", "--config", &out.to_string_lossy()]);
    (toml, stderr, checked)
}

fn assert_checks(toml: &str, checked: &Output) {
    assert_eq!(
        checked.status.code(),
        Some(0),
        "check-config refused the import: {}\n{toml}",
        text(&checked.stderr)
    );
}

/// Each note is `FILE:LINE: KEY: WHAT: REASON`.
fn assert_notes_name_file_and_line(stderr: &str, conf: &Path) {
    let prefix = format!("{}:", conf.display());
    for line in stderr.lines() {
        let rest = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("note without the file: {line}"));
        let (number, _) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("note without a line: {line}"));
        assert!(number.parse::<usize>().is_ok(), "{line}");
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|directory| directory.join(program).is_file())
    })
}

#[test]
fn the_shipped_portsentry_conf_imports_to_a_config_check_config_accepts() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let conf = Path::new(FIXTURES).join("portsentry.conf");
    let (toml, stderr, checked) = import_and_check(dir.path(), &conf);
    assert_checks(&toml, &checked);
    assert!(
        text(&checked.stdout).contains("actions hosts-deny,"),
        "{}",
        text(&checked.stdout)
    );
    assert_notes_name_file_and_line(&stderr, &conf);
    for key in [
        "IGNORE_FILE",
        "HISTORY_FILE",
        "BLOCKED_FILE",
        "RESOLVE_HOST",
    ] {
        assert!(
            stderr.contains(&format!(": {key}: not mapped: ")),
            "{key} not named: {stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 4, "{stderr}");
}

#[test]
fn the_shipped_file_as_an_admin_edits_it_imports_too() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ignore: PathBuf = Path::new(FIXTURES).join("portsentry.ignore");
    let shipped = std::fs::read_to_string(Path::new(FIXTURES).join("portsentry.conf"))
        .unwrap_or_else(|e| panic!("{e}"));
    // The edits the shipped comments ask for: the ignore file where it lives, the iptables
    // recipe turned on, and a command to run.
    let edited = shipped
        .replace(
            "IGNORE_FILE=\"/usr/local/psionic/portsentry/portsentry.ignore\"",
            &format!("IGNORE_FILE=\"{}\"", ignore.display()),
        )
        .replace(
            "#KILL_ROUTE=\"/usr/local/bin/iptables",
            "KILL_ROUTE=\"/usr/local/bin/iptables",
        )
        .replace(
            "#KILL_RUN_CMD=\"/some/path/here/script $TARGET$ $PORT$\"",
            "KILL_RUN_CMD=\"/bin/true $TARGET$ $PORT$\"",
        );
    assert_ne!(edited, shipped);
    let conf = dir.path().join("portsentry.conf");
    std::fs::write(&conf, &edited).unwrap_or_else(|e| panic!("{e}"));
    let (toml, stderr, checked) = import_and_check(dir.path(), &conf);
    assert_checks(&toml, &checked);
    assert_notes_name_file_and_line(&stderr, &conf);

    let parsed: toml::Table = toml.parse().unwrap_or_else(|e| panic!("{e}"));
    let respond = parsed["respond"]
        .as_table()
        .unwrap_or_else(|| panic!("{toml}"));
    assert_eq!(
        parsed["detect"]["ignore_file"].as_str(),
        Some(ignore.to_string_lossy().as_ref()),
        "the shipped ignore file reads the same in nfsentry: {toml}"
    );
    let actions: Vec<&str> = respond["actions"]
        .as_array()
        .map(|actions| actions.iter().filter_map(|a| a.as_str()).collect())
        .unwrap_or_default();
    // check-config has just found iptables and ip6tables where the import found them.
    if on_path("iptables") && on_path("ip6tables") {
        assert_eq!(actions, ["hosts-deny", "iptables", "command"], "{toml}");
        assert!(text(&checked.stdout).contains("actions hosts-deny,iptables,command,"));
    } else {
        assert_eq!(actions, ["hosts-deny", "command"], "{toml}");
        assert!(stderr.contains(": KILL_ROUTE: not mapped: "), "{stderr}");
    }
    assert_eq!(
        respond["command"].as_array().map(Vec::len),
        Some(3),
        "{toml}"
    );
}

#[test]
fn an_unreadable_file_is_a_config_error() {
    let out = nfsentry(&["import-portsentry", "/nonexistent/portsentry.conf"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("nfsentry: /nonexistent/portsentry.conf: cannot read the file:"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
