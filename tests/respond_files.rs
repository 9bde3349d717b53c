//! The `hosts-deny` and `command` responses against real files and real processes: the admin's
//! hosts.deny surviving byte for byte, concurrent writers, the in-place path under a read-only
//! directory (in a private mount namespace), and the command's argv, timeout and logging.

mod support;

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};
use nfsentry::respond::command::{CommandAction, STDERR_KEPT_BYTES};
use nfsentry::respond::hosts_deny::HostsDenyAction;
use nfsentry::respond::Action;
use nfsentry::store::BlockRecord;
use support::ScratchDir;

/// An admin's file: comments, blank lines, a CRLF line, odd spacing, no final newline.
const ADMIN_HOSTS_DENY: &[u8] = b"# /etc/hosts.deny: list of hosts that are _not_ allowed\r\n\
#\n\
# See the manual pages hosts_access(5) and hosts_options(5).\n\
\n\
ALL: PARANOID\n\
sshd:   10.1.2.3, 10.1.2.4 : spawn (/usr/bin/logger denied %a)\n\
   # an indented comment about 192.0.2.7\n\
# nfsentry block mentioned by the admin\n\
in.telnetd: ALL";

const TEMPLATE: &str = "ALL: $TARGET$";
/// Where the read-only-directory test tells its re-executed inner half to work.
const READ_ONLY_DIR_ENV: &str = "NFSENTRY_TEST_READ_ONLY_DIR";

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last))
}

fn record(source: IpAddr) -> BlockRecord {
    BlockRecord {
        source,
        added: 1_700_000_000,
        expires: Some(1_700_003_600),
        protocol: "TCP".into(),
        port: 23,
        kind: "SYN/Normal".into(),
        verified: false,
    }
}

/// Scratch directories of this file are named `nfsentry-respond-files-…`.
const SCRATCH_PREFIX: &str = "nfsentry-respond-files";

fn read_text(path: &Path) -> String {
    String::from_utf8(fs::read(path).unwrap()).unwrap()
}

/// How many times each line occurs.
fn line_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for line in text.lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

fn rule(source: IpAddr) -> String {
    match source {
        IpAddr::V4(a) => format!("ALL: {a}"),
        IpAddr::V6(a) => format!("ALL: [{a}]"),
    }
}

/// Asserts that the file is the admin's bytes followed by nothing but entries for exactly
/// `sources`, each once.
fn assert_blocks(path: &Path, admin: &[u8], sources: &[IpAddr]) {
    let bytes = fs::read(path).unwrap();
    assert!(
        bytes.starts_with(admin),
        "the admin's bytes changed:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    let text = String::from_utf8(bytes).unwrap();
    let counts = line_counts(&text);
    for source in sources {
        assert_eq!(
            counts.get(&rule(*source)),
            Some(&1),
            "{source} is not blocked exactly once:\n{text}"
        );
    }
    let own_rules = text
        .lines()
        .filter(|line| line.starts_with("ALL: 192.0.2.") || line.starts_with("ALL: [2001:db8"))
        .count();
    assert_eq!(own_rules, sources.len(), "unexpected entries:\n{text}");
    let markers = text
        .lines()
        .filter(|line| {
            line.starts_with("# nfsentry block 192.") || line.starts_with("# nfsentry block 2001:")
        })
        .count();
    assert_eq!(markers, sources.len(), "unexpected markers:\n{text}");
}

#[test]
fn admin_lines_survive_block_release_and_restore_byte_for_byte() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "survive");
    let path = dir.join("hosts.deny");
    fs::write(&path, ADMIN_HOSTS_DENY).unwrap();
    let mut action = HostsDenyAction::new(path.clone(), TEMPLATE.into());
    let now = SystemTime::now();

    action.block(&[&record(v4(7))], now).unwrap();
    action.block(&[&record(v6(7))], now).unwrap();
    assert_blocks(&path, ADMIN_HOSTS_DENY, &[v4(7), v6(7)]);
    assert!(
        read_text(&path).ends_with("\nALL: [2001:db8::7]\n"),
        "IPv6 is written in brackets, one line per block"
    );

    action.release(&[&record(v4(7))]).unwrap();
    assert_blocks(&path, ADMIN_HOSTS_DENY, &[v6(7)]);

    // A restart: a fresh action restores what is due, some of it already in the file.
    let mut restarted = HostsDenyAction::new(path.clone(), TEMPLATE.into());
    let due = [record(v6(7)), record(v4(8)), record(v4(9))];
    let due_refs: Vec<&BlockRecord> = due.iter().collect();
    restarted.init(&due_refs, now).unwrap();
    restarted.init(&due_refs, now).unwrap();
    restarted.block(&[&record(v4(8))], now).unwrap();
    assert_blocks(&path, ADMIN_HOSTS_DENY, &[v6(7), v4(8), v4(9)]);
    assert_eq!(restarted.sources().unwrap(), vec![v6(7), v4(8), v4(9)]);

    for source in [v4(9), v6(7), v4(8)] {
        restarted.release(&[&record(source)]).unwrap();
    }
    // Releasing what is gone already changes nothing.
    restarted.release(&[&record(v4(8))]).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        ADMIN_HOSTS_DENY,
        "the admin's file, missing final newline included, is back exactly"
    );
}

#[test]
fn releases_remove_only_nfsentry_lines_even_when_the_admin_wrote_the_same_rule() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "same-rule");
    let path = dir.join("hosts.deny");
    let admin = b"ALL: 192.0.2.7\n";
    fs::write(&path, admin).unwrap();
    let mut action = HostsDenyAction::new(path.clone(), TEMPLATE.into());
    action.block(&[&record(v4(7))], SystemTime::now()).unwrap();
    assert_eq!(
        read_text(&path),
        "ALL: 192.0.2.7\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n"
    );
    action.release(&[&record(v4(7))]).unwrap();
    assert_eq!(fs::read(&path).unwrap(), admin);
}

#[test]
fn replacement_keeps_permissions_owner_and_symlink_and_sweeps_stale_temps() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "replace");
    let real = dir.join("hosts.deny.real");
    fs::write(&real, b"ALL: 10.0.0.1\n").unwrap();
    fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        std::os::unix::fs::chown(&real, Some(1234), Some(2345)).unwrap();
    }
    let link = dir.join("hosts.deny");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let stale = dir.join(".hosts.deny.real.nfsentry-999999-0");
    fs::write(&stale, b"left by a crash").unwrap();
    let inode_before = fs::metadata(&real).unwrap().ino();

    let mut action = HostsDenyAction::new(link.clone(), TEMPLATE.into());
    action.block(&[&record(v4(7))], SystemTime::now()).unwrap();

    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let after = fs::metadata(&real).unwrap();
    assert_ne!(
        after.ino(),
        inode_before,
        "the file was replaced, not edited"
    );
    assert_eq!(after.mode() & 0o7777, 0o640);
    if as_root {
        assert_eq!((after.uid(), after.gid()), (1234, 2345));
    }
    assert_eq!(
        read_text(&real),
        "ALL: 10.0.0.1\n# nfsentry block 192.0.2.7\nALL: 192.0.2.7\n"
    );
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["hosts.deny", "hosts.deny.real"]);
}

#[test]
fn a_missing_file_is_created_by_a_block_but_not_by_a_release() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "missing");
    let path = dir.join("hosts.deny");
    let mut action = HostsDenyAction::new(path.clone(), TEMPLATE.into());
    action.release(&[&record(v4(7))]).unwrap();
    assert!(!path.exists());
    action.block(&[&record(v6(1))], SystemTime::now()).unwrap();
    assert_eq!(
        read_text(&path),
        "# nfsentry block 2001:db8::1\nALL: [2001:db8::1]\n"
    );
    action.release(&[&record(v6(1))]).unwrap();
    assert_eq!(read_text(&path), "");
}

/// Two writers, each with its own action on the same file, block and release at once; every
/// change of both must be there at the end.
fn race_two_writers(path: &Path) {
    const PER_WRITER: u8 = 30;
    let barrier = Arc::new(Barrier::new(2));
    let writers: Vec<_> = [0u8, 100]
        .into_iter()
        .map(|base| {
            let path = path.to_path_buf();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                let mut action = HostsDenyAction::new(path, TEMPLATE.into());
                barrier.wait();
                for i in 1..=PER_WRITER {
                    action
                        .block(&[&record(v4(base + i))], SystemTime::now())
                        .unwrap();
                    if i % 3 == 0 {
                        action.release(&[&record(v4(base + i - 1))]).unwrap();
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
}

fn race_survivors() -> Vec<IpAddr> {
    [0u8, 100]
        .into_iter()
        .flat_map(|base| (1..=30u8).filter(|i| i % 3 != 2).map(move |i| v4(base + i)))
        .collect()
}

#[test]
fn concurrent_writers_lose_nothing() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "race");
    let path = dir.join("hosts.deny");
    fs::write(&path, ADMIN_HOSTS_DENY).unwrap();
    race_two_writers(&path);
    assert_blocks(&path, ADMIN_HOSTS_DENY, &race_survivors());
}

/// Runs the named `#[ignore]`d test of this binary inside a private mount namespace, so its
/// mounts vanish with it whatever happens.
fn run_in_mount_namespace(test_name: &str, dir: &Path) {
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test_name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(READ_ONLY_DIR_ENV, dir)
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "{test_name} in a mount namespace failed: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn read_only_directory_falls_back_to_in_place_writes() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let dir = ScratchDir::new(SCRATCH_PREFIX, "read-only");
    let path = dir.join("hosts.deny");
    fs::write(&path, ADMIN_HOSTS_DENY).unwrap();
    let inode = fs::metadata(&path).unwrap().ino();

    run_in_mount_namespace("in_place_writes_under_a_read_only_directory", dir.path());

    // Out here the directory is writable again; the inner half's work is in the same inode.
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    let survivors = race_survivors();
    let mut expected = vec![v6(7)];
    expected.extend(&survivors);
    assert_blocks(&path, ADMIN_HOSTS_DENY, &expected);

    // Released entries may sit as comment lines between live ones; the next replacement
    // (the directory is writable out here) drops them and keeps everything else.
    let mut action = HostsDenyAction::new(path.clone(), TEMPLATE.into());
    for source in &expected {
        action.release(&[&record(*source)]).unwrap();
    }
    assert_eq!(fs::read(&path).unwrap(), ADMIN_HOSTS_DENY);
}

/// The inner half of `read_only_directory_falls_back_to_in_place_writes`, run by it in a private
/// mount namespace: the directory is made read-only with the file bind-mounted writable on
/// itself, as systemd's `ProtectSystem=strict` + `ReadWritePaths=/etc/hosts.deny` does.
#[test]
#[ignore = "run by read_only_directory_falls_back_to_in_place_writes in a mount namespace"]
fn in_place_writes_under_a_read_only_directory() {
    let dir = PathBuf::from(std::env::var_os(READ_ONLY_DIR_ENV).expect("run by the outer test"));
    let path = dir.join("hosts.deny");
    let mount = |args: &[&Path]| {
        let status = Command::new("mount").args(args).status().unwrap();
        assert!(status.success(), "mount {args:?}: {status}");
    };
    mount(&[Path::new("--bind"), &dir, &dir]);
    mount(&[Path::new("--bind"), &path, &path]);
    mount(&[Path::new("-o"), Path::new("remount,bind,ro"), &dir]);
    let probe = fs::File::create(dir.join("probe")).unwrap_err();
    assert_eq!(
        probe.raw_os_error(),
        Some(libc::EROFS),
        "the directory must be read-only"
    );
    let inode = fs::metadata(&path).unwrap().ino();

    let mut action = HostsDenyAction::new(path.clone(), TEMPLATE.into());
    let now = SystemTime::now();
    action.block(&[&record(v4(7))], now).unwrap();
    action.block(&[&record(v6(7))], now).unwrap();
    action.block(&[&record(v4(7))], now).unwrap();
    assert_blocks(&path, ADMIN_HOSTS_DENY, &[v4(7), v6(7)]);
    action.release(&[&record(v4(7))]).unwrap();
    assert_blocks(&path, ADMIN_HOSTS_DENY, &[v6(7)]);
    let due = [record(v6(7))];
    action.init(&[&due[0]], now).unwrap();
    assert_blocks(&path, ADMIN_HOSTS_DENY, &[v6(7)]);

    race_two_writers(&path);
    let mut expected = vec![v6(7)];
    expected.extend(race_survivors());
    assert_blocks(&path, ADMIN_HOSTS_DENY, &expected);
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
}

// ---- command ----

/// Log records captured from every test in this binary; tests pick theirs by a unique word.
static RECORDS: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());

struct CaptureLogger;

impl Log for CaptureLogger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        if let Ok(mut records) = RECORDS.lock() {
            records.push((record.level(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CaptureLogger).unwrap();
        log::set_max_level(LevelFilter::Trace);
    });
}

fn logged_with(word: &str) -> Vec<(Level, String)> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, message)| message.contains(word))
        .cloned()
        .collect()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[test]
fn command_gets_exactly_the_configured_argv_with_placeholders_filled() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "argv");
    let script = dir.join("record-argv");
    let out = dir.join("argv.out");
    fs::write(
        &script,
        "#!/bin/sh\nout=\"$1\"\nshift\nprintf '%s\\0' \"$@\" > \"$out\"\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut action = CommandAction::new(
        argv(&[
            script.to_str().unwrap(),
            out.to_str().unwrap(),
            "$TARGET$",
            "--port=$PORT$",
            "$MODE$",
            "x;$TARGET$|`id` $(touch pwned) && echo '\"",
            "",
        ]),
        Duration::from_secs(5),
        false,
    );
    let mut block = record(v6(7));
    block.protocol = "UDP".into();
    block.port = 161;
    action.block(&[&block], SystemTime::now()).unwrap();

    let recorded = fs::read(&out).unwrap();
    let args: Vec<&[u8]> = recorded.split(|b| *b == 0).collect();
    assert_eq!(
        args,
        vec![
            b"2001:db8::7".as_slice(),
            b"--port=161",
            b"udp",
            b"x;2001:db8::7|`id` $(touch pwned) && echo '\"",
            b"",
            b"" // after the last NUL
        ]
    );
    assert!(!Path::new("/pwned").exists());
}

fn process_is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie is dead; it waits for its new parent to reap it.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn command_over_its_time_is_killed_with_everything_it_started() {
    capture_logs();
    let dir = ScratchDir::new(SCRATCH_PREFIX, "timeout");
    let pid_file = dir.join("sleeper.pid");
    let timeout = Duration::from_millis(300);
    let action = CommandAction::new(
        argv(&[
            "/bin/sh",
            "-c",
            &format!(
                "sleep 30 & echo $! > {}; echo timeout-test-stderr >&2; wait",
                pid_file.display()
            ),
        ]),
        timeout,
        false,
    );
    let started = Instant::now();
    let outcome = action.run(&record(v4(7))).unwrap();
    let took = started.elapsed();
    assert!(outcome.timed_out);
    assert!(!outcome.succeeded());
    assert!(took >= timeout, "returned before the timeout: {took:?}");
    assert!(
        took < timeout + Duration::from_millis(500),
        "the responder waited {took:?} for a {timeout:?} command"
    );
    assert_eq!(outcome.stderr, b"timeout-test-stderr\n");

    let sleeper: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_is_gone(sleeper) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        process_is_gone(sleeper),
        "the grandchild sleep {sleeper} survived"
    );

    let mut direct = CommandAction::new(argv(&["/bin/sleep", "30"]), timeout, false);
    let started = Instant::now();
    let result = direct.block(&[&record(v4(77))], SystemTime::now());
    assert!(result.is_err());
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    let logged = logged_with("for 192.0.2.77 killed after");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, Level::Warn);
}

#[test]
fn command_exit_status_and_stderr_are_logged() {
    capture_logs();
    let mut failing = CommandAction::new(
        argv(&[
            "/bin/sh",
            "-c",
            "echo \"cannot reach $1\" >&2; echo second line >&2; exit 3",
            "notify",
            "$TARGET$",
        ]),
        Duration::from_secs(5),
        false,
    );
    let outcome = failing.run(&record(v4(201))).unwrap();
    assert_eq!(outcome.status.code(), Some(3));
    assert!(!outcome.timed_out);
    assert_eq!(outcome.stderr, b"cannot reach 192.0.2.201\nsecond line\n");

    let error = failing
        .block(&[&record(v4(201))], SystemTime::now())
        .unwrap_err();
    assert!(error.to_string().contains("exit status: 3"), "{error}");
    let logged = logged_with("cannot reach 192.0.2.201");
    assert_eq!(logged.len(), 1, "{logged:?}");
    let (level, message) = &logged[0];
    assert_eq!(*level, Level::Warn);
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("second line"), "{message}");
    assert!(!message.contains('\n'), "one log line: {message}");

    let mut fine = CommandAction::new(
        argv(&["/bin/sh", "-c", "echo all-good-$0 >&2", "$PORT$"]),
        Duration::from_secs(5),
        false,
    );
    fine.block(&[&record(v4(202))], SystemTime::now()).unwrap();
    let logged = logged_with("all-good-23");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].0, Level::Info);
    assert!(logged[0].1.contains("exit status: 0"), "{}", logged[0].1);
}

#[test]
fn command_stderr_flood_is_cut_to_its_first_bytes_without_stalling_the_child() {
    let action = CommandAction::new(
        argv(&[
            "/bin/sh",
            "-c",
            "head -c 1000000 /dev/zero | tr '\\0' e >&2",
        ]),
        Duration::from_secs(10),
        false,
    );
    let outcome = action.run(&record(v4(7))).unwrap();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.stderr.len(), STDERR_KEPT_BYTES);
    assert!(outcome.stderr.iter().all(|b| *b == b'e'));
    assert!(outcome.stderr_truncated);
}

#[test]
fn command_release_and_restore_run_nothing() {
    let dir = ScratchDir::new(SCRATCH_PREFIX, "no-undo");
    let marker = dir.join("ran");
    let mut action = CommandAction::new(
        argv(&["/usr/bin/touch", marker.to_str().unwrap()]),
        Duration::from_secs(5),
        false,
    );
    let block = record(v4(7));
    action.release(&[&block]).unwrap();
    action.init(&[&block], SystemTime::now()).unwrap();
    assert!(!marker.exists());
    action.block(&[&block], SystemTime::now()).unwrap();
    assert!(marker.exists());
}

#[test]
fn a_missing_program_is_an_error() {
    let mut action = CommandAction::new(
        argv(&["/nonexistent/nfsentry-test-program", "$TARGET$"]),
        Duration::from_secs(5),
        false,
    );
    let error = action
        .block(&[&record(v4(7))], SystemTime::now())
        .unwrap_err();
    assert!(error.to_string().contains("cannot start"), "{error}");
}
