//! The shipped template `rules/nfsentry.nft` is exactly what `nfsentry rules` prints for the
//! built-in defaults, so packagers never ship a ruleset the daemon no longer installs.

use std::process::Command;

#[test]
fn shipped_template_matches_the_rendered_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("eth0.toml");
    std::fs::write(&config, "[daemon]\ninterfaces = [\"eth0\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nfsentry"))
        .args(["rules", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/nfsentry.nft"))
            .unwrap();
    let shipped_body: String = shipped
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with("# The ruleset"))
        .collect();
    assert_eq!(
        shipped_body, rendered,
        "rules/nfsentry.nft is stale: regenerate it with `nfsentry rules` (see its header)"
    );
    assert!(rendered.contains("table inet nfsentry"));
    assert!(rendered.contains("devices = { \"eth0\" }"));
}

/// `rules/blocked-sets.nft` is what `nfsentry rules --blocked-sets` prints without a
/// `blocked_table` of its own, and that names the table the config gives.
#[test]
fn shipped_blocked_sets_template_matches_the_rendered_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_nfsentry"))
        .args(["rules", "--blocked-sets", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/nfsentry.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/rules/blocked-sets.nft"
    ))
    .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        shipped,
        "rules/blocked-sets.nft is stale: regenerate it with `nfsentry rules --blocked-sets`"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fw.toml");
    std::fs::write(&config, "[respond]\nblocked_table = \"inet fw\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nfsentry"))
        .args(["rules", "--blocked-sets", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let rendered = String::from_utf8(out.stdout).unwrap();
    assert!(rendered.contains("\ntable inet fw {\n"), "{rendered}");
}

#[test]
fn check_config_names_file_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[monitor]\n\ntcp_ports = [1, 70000]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nfsentry"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", config.display())) && stderr.contains("70000"),
        "{stderr}"
    );
}

#[test]
fn check_config_summarises_a_good_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_nfsentry"))
        .args(["check-config", "--config"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/nfsentry.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("26 TCP and 21 UDP ports watched"),
        "{stdout}"
    );
}
