//! The shipped unit `systemd/nfsentry.service` passes `systemd-analyze verify` with the built
//! binary at its install path, and `systemd-analyze security` rates it 2.0 or better, so a
//! loosened sandbox fails here rather than in a packager's review. Needs systemd-analyze (the
//! `systemd` package); without it the tests say so and pass. They need neither root nor a
//! running systemd.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/nfsentry.service");
const MAN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man");
/// The worst overall exposure the unit may have; README states the current figure.
const EXPOSURE_LIMIT: f64 = 2.0;

/// None, after saying so, when systemd-analyze is not installed.
fn systemd_analyze(args: &[&str], manpath: Option<&Path>) -> Option<Output> {
    let mut command = Command::new("systemd-analyze");
    command
        .args(args)
        .env("SYSTEMD_PAGER", "")
        .env("LC_ALL", "C");
    if let Some(manpath) = manpath {
        command.env("MANPATH", manpath);
    }
    match command.output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: systemd-analyze is not installed (the systemd package has it)");
            None
        }
        Err(e) => panic!("cannot run systemd-analyze {args:?}: {e}"),
    }
}

fn copy(from: &Path, to: &Path) {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    }
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path()).expect("symlink target");
            std::os::unix::fs::symlink(link, &target)
                .unwrap_or_else(|e| panic!("{}: {e}", target.display()));
        } else {
            copy(&entry.path(), &target);
        }
    }
}

/// An installed system in miniature: systemd's own units (for the targets ours refers to),
/// the binary, /bin/kill for ExecReload, the unit and the man pages its Documentation= names.
fn install_root() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("temporary root");
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|dir| dir.join("multi-user.target").exists())
        .expect("systemd-analyze is installed, but systemd's own units are not");
    copy_tree(system_units, &root.path().join("usr/lib/systemd/system"));
    copy(
        Path::new(env!("CARGO_BIN_EXE_nfsentry")),
        &root.path().join("usr/sbin/nfsentry"),
    );
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("no kill program on this machine");
    copy(kill, &root.path().join("bin/kill"));
    copy(
        Path::new(UNIT),
        &root.path().join("etc/systemd/system/nfsentry.service"),
    );
    let man = root.path().join("usr/share/man");
    for (page, section) in [("nfsentry.8", "man8"), ("nfsentry.toml.5", "man5")] {
        copy(
            &Path::new(MAN_DIR).join(page),
            &man.join(section).join(page),
        );
    }
    (root, man)
}

#[test]
fn unit_verifies_with_the_binary_at_its_install_path() {
    let (root, man) = install_root();
    let root_arg = format!("--root={}", root.path().display());
    let Some(output) = systemd_analyze(&["verify", &root_arg, "nfsentry.service"], Some(&man))
    else {
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Unknown or misspelt settings are only warnings: any output at all is a failure.
    assert!(
        output.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {UNIT} ({}):\n{stderr}",
        output.status
    );

    // The check bites: without the binary the same call fails.
    fs::remove_file(root.path().join("usr/sbin/nfsentry")).expect("remove binary");
    let output = systemd_analyze(&["verify", &root_arg, "nfsentry.service"], Some(&man))
        .expect("ran before");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/usr/sbin/nfsentry"),
        "verify did not notice the missing binary: {output:?}"
    );
}

#[test]
fn unit_security_exposure_is_at_most_two() {
    let Some(output) = systemd_analyze(&["security", "--offline=true", "--no-pager", UNIT], None)
    else {
        return;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure in the output ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    // "→ Overall exposure level for nfsentry.service: 1.5 OK 🙂"
    let score: f64 = summary
        .rsplit(": ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {summary:?}"));
    let failing: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with('✗'))
        .collect();
    assert!(
        score <= EXPOSURE_LIMIT,
        "{UNIT}: exposure {score} is above {EXPOSURE_LIMIT}; settings that count:\n{}",
        failing.join("\n")
    );
}
