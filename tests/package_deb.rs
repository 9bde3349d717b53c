//! The Debian package, end to end on this machine: `cargo deb` builds it from the binary under
//! test, `dpkg -i` installs it, the *installed* binary accepts the installed conffile (also as
//! the service user, as the unit's ExecStartPre runs it), the files, the conffile flags and the
//! system user are where they belong, and `dpkg --purge` takes all of it away again.
//!
//! It changes the machine (a package, a system user), so it refuses to run where a package or
//! user named nfsentry already exists, and purges what it installed even when it fails. Needs
//! root (skipped otherwise) and cargo-deb (`cargo install cargo-deb --locked`; scripts/setup.sh
//! does it).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_nfsentry");
const PACKAGE: &str = "nfsentry";
const USER: &str = "nfsentry";
const STATE_DIR: &str = "/var/lib/nfsentry";
const CONFFILE: &str = "/etc/nfsentry/nfsentry.toml";
const UNIT: &str = "/lib/systemd/system/nfsentry.service";
/// Every file the package must install; the man pages are compressed, as Debian wants.
const INSTALLED: [&str; 9] = [
    "/usr/sbin/nfsentry",
    CONFFILE,
    "/etc/logrotate.d/nfsentry",
    "/usr/share/nfsentry/rules/nfsentry.nft",
    "/usr/share/nfsentry/rules/blocked-sets.nft",
    UNIT,
    "/usr/share/man/man8/nfsentry.8.gz",
    "/usr/share/man/man5/nfsentry.toml.5.gz",
    "/usr/share/doc/nfsentry/README.md",
];
const CONFFILES: [&str; 2] = [CONFFILE, "/etc/logrotate.d/nfsentry"];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn package_installed() -> bool {
    let output = run("dpkg-query", &["-W", "-f=${db:Status-Status}", PACKAGE]);
    output.status.success() && String::from_utf8_lossy(&output.stdout).trim() != "not-installed"
}

fn user_exists() -> bool {
    run("getent", &["passwd", USER]).status.success()
}

fn group_exists() -> bool {
    run("getent", &["group", USER]).status.success()
}

/// The `path-exclude` pattern of this machine's dpkg configuration (minimal container images
/// drop man pages and docs) that keeps `file` off the disk, if any. Only trailing-`*` patterns,
/// the form those images use, are understood.
fn excluded_by_dpkg(file: &str) -> Option<String> {
    let entries = fs::read_dir("/etc/dpkg/dpkg.cfg.d").ok()?;
    let mut patterns = Vec::new();
    for entry in entries.flatten() {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        patterns.extend(
            text.lines()
                .filter_map(|line| line.trim().strip_prefix("path-exclude"))
                .map(|pattern| pattern.trim_start_matches([' ', '=']).trim().to_owned()),
        );
    }
    patterns
        .into_iter()
        .find(|pattern| file.starts_with(pattern.trim_end_matches('*')))
}

/// Purges the package if a check failed half-way, so the machine is left as it was found.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if package_installed() {
            let output = run("dpkg", &["--purge", PACKAGE]);
            if !output.status.success() {
                eprintln!(
                    "cleanup: dpkg --purge {PACKAGE} failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }
}

/// `cargo deb --no-build` packages the binary this test runs against: the profile it was built
/// with decides which target directory cargo-deb reads.
fn build_package(output_dir: &Path) -> PathBuf {
    let profile_dir = Path::new(BIN)
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .expect("binary in a profile directory");
    let profile = match profile_dir {
        "debug" => "dev",
        other => other,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = Path::new(ROOT).join("Cargo.toml");
    let output = Command::new(&cargo)
        .arg("deb")
        .args([
            "--no-build",
            "--fast",
            "--profile",
            profile,
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--output")
        .arg(output_dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} deb: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("no such command"),
        "cargo-deb is not installed: cargo install cargo-deb --locked (scripts/setup.sh does)"
    );
    assert!(output.status.success(), "cargo deb failed:\n{stderr}");
    let debs: Vec<PathBuf> = fs::read_dir(output_dir)
        .expect("cargo deb output directory")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    match debs.as_slice() {
        [deb] => deb.clone(),
        other => panic!("expected one .deb in {}: {other:?}", output_dir.display()),
    }
}

#[test]
fn package_installs_runs_and_purges_cleanly() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: installing a .deb needs root; run the suite as root");
        return;
    }
    assert!(
        !package_installed(),
        "a package named {PACKAGE} is installed on this machine; this test installs and purges \
         its own and will not replace it (dpkg --purge {PACKAGE} if it is a leftover)"
    );
    assert!(
        !user_exists() && !group_exists(),
        "a user or group named {USER} exists without the package; purging would delete it, so \
         the test stops (deluser --system {USER} if it is a leftover)"
    );

    let scratch = tempfile::tempdir().expect("scratch directory");
    let started = Instant::now();
    let deb = build_package(scratch.path());
    eprintln!("cargo deb took {:?}", started.elapsed());
    let deb = deb.to_str().expect("UTF-8 path");

    let guard = Installed;
    run_ok("dpkg", &["-i", deb]);
    assert!(package_installed(), "dpkg -i {deb} did not install it");

    // Files, and the conffile flags dpkg keeps for them.
    let listed = run_ok("dpkg", &["-L", PACKAGE]);
    for file in INSTALLED {
        if let Some(pattern) = excluded_by_dpkg(file) {
            eprintln!("{file} not checked: this machine's dpkg excludes {pattern}");
            continue;
        }
        assert!(
            listed.lines().any(|line| line == file),
            "dpkg -L {PACKAGE} lacks {file}:\n{listed}"
        );
        assert!(Path::new(file).is_file(), "{file} is not on disk");
    }
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    for file in CONFFILES {
        assert!(
            conffiles
                .lines()
                .any(|line| line.split_whitespace().next() == Some(file)),
            "{file} is not a conffile: {conffiles:?}"
        );
    }
    let depends = run_ok("dpkg-query", &["-W", "-f=${Depends}", PACKAGE]);
    assert!(depends.contains("libnftnl11"), "Depends: {depends}");
    for (installed, source) in [
        (CONFFILE, "config/nfsentry.toml"),
        (UNIT, "systemd/nfsentry.service"),
    ] {
        assert_eq!(
            fs::read_to_string(installed).expect("installed file"),
            fs::read_to_string(Path::new(ROOT).join(source)).expect("source file"),
            "{installed} differs from {source}"
        );
    }
    let binary_mode = fs::metadata("/usr/sbin/nfsentry")
        .expect("binary")
        .permissions();
    assert_eq!(binary_mode.mode() & 0o777, 0o755);

    // The system user and its state directory.
    let passwd = run_ok("getent", &["passwd", USER]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields.get(2).and_then(|uid| uid.parse().ok()).expect("uid");
    assert!(uid < 1000, "{USER} is not a system user: {passwd}");
    assert_eq!(fields.get(5), Some(&STATE_DIR), "home: {passwd}");
    assert!(
        fields
            .get(6)
            .is_some_and(|shell| shell.ends_with("nologin")),
        "login shell: {passwd}"
    );
    assert!(group_exists(), "no group {USER}");
    let state = fs::metadata(STATE_DIR).expect("state directory");
    assert!(state.is_dir());
    assert_eq!(state.uid(), uid, "{STATE_DIR} is not owned by {USER}");
    assert_eq!(state.mode() & 0o777, 0o750, "{STATE_DIR} mode");

    // The installed binary on the installed conffile: as root, and as the service user the way
    // the unit's ExecStartPre runs it.
    let summary = run_ok("/usr/sbin/nfsentry", &["check-config"]);
    assert!(
        summary.starts_with(CONFFILE) && summary.contains("ports watched"),
        "check-config without --config did not read {CONFFILE}: {summary}"
    );
    let as_user = format!("--reuid={USER}");
    let as_group = format!("--regid={USER}");
    let summary = run_ok(
        "setpriv",
        &[
            &as_user,
            &as_group,
            "--clear-groups",
            "/usr/sbin/nfsentry",
            "check-config",
            "--config",
            CONFFILE,
        ],
    );
    assert!(summary.contains("ports watched"), "{summary}");

    // The installed unit against the installed system, where systemd-analyze exists.
    match Command::new("systemd-analyze")
        .args(["verify", UNIT])
        .env("SYSTEMD_PAGER", "")
        .output()
    {
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() && stderr.trim().is_empty(),
                "systemd-analyze verify {UNIT} ({}):\n{stderr}",
                output.status
            );
        }
        Err(_) => eprintln!("systemd-analyze not installed: installed unit not verified"),
    }

    run_ok("dpkg", &["--purge", PACKAGE]);
    drop(guard);
    assert!(
        !package_installed(),
        "{PACKAGE} still installed after purge"
    );
    assert!(!user_exists(), "user {USER} survived the purge");
    assert!(!group_exists(), "group {USER} survived the purge");
    for path in INSTALLED
        .iter()
        .copied()
        .chain([STATE_DIR, "/etc/nfsentry"])
    {
        assert!(!Path::new(path).exists(), "{path} survived the purge");
    }
    eprintln!(
        "build, install, checks and purge took {:?}",
        started.elapsed()
    );
}
