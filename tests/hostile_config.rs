//! Configs that could hurt, given to the real binary: `check-config` refuses each one, `run`
//! refuses to start with the same message and changes nothing in the kernel, and neither
//! hangs on a FIFO nor reads a device. Each command runs in a network namespace of its own
//! (`unshare --net`, gone with its last process), so a `run` that did start could not touch
//! the host's ruleset.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nfsentry");
/// `check-config` exits 2 on a bad file, `run` 78 (EX_CONFIG, which stops systemd restarts).
const EXIT_CHECK: i32 = 2;
const EXIT_RUN: i32 = 78;
/// A guard against a hang, not a speed bound: a refusal takes milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(60);

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `nfsentry ARGS` in a fresh network namespace after the shell lines `setup`, then
/// prints the nft tables that namespace holds as the last stdout line (`tables: ...`).
fn in_fresh_netns(setup: &str, args: &[&str]) -> Outcome {
    let script = format!(
        "set -e\n{setup}\nset +e\n\"$@\"\nstatus=$?\necho \"tables: $(nft list tables)\"\n\
         exit $status\n"
    );
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", &script, "sh", BIN])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("unshare runs");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let deadline = Instant::now() + HANG_GUARD;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let group = nix::unistd::Pid::from_raw(-i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!("nfsentry {args:?} did not return within {HANG_GUARD:?}: it hangs");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap().expect("stdout"),
        stderr: err.join().unwrap().expect("stderr"),
    }
}

/// `check-config` and `run` on `config`: both refuse with `expected` on stderr, `run` exits
/// EX_CONFIG and leaves the namespace without an nft table.
fn both_refuse(setup: &str, config: &Path, expected: &str) {
    let config = config.to_str().unwrap();
    let check = in_fresh_netns(setup, &["check-config", "--config", config]);
    assert_eq!(
        check.code,
        Some(EXIT_CHECK),
        "check-config: {}",
        check.stderr
    );
    assert_eq!(
        check.stderr,
        format!("nfsentry: {expected}\n"),
        "check-config"
    );
    let run = in_fresh_netns(setup, &["run", "--config", config]);
    assert_eq!(run.code, Some(EXIT_RUN), "run: {}", run.stderr);
    assert_eq!(run.stderr, format!("nfsentry: {expected}\n"), "run");
    assert_eq!(run.stdout, "tables: \n", "run installed something");
}

struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Scratch {
        Scratch(tempfile::tempdir().expect("scratch directory"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// A config whose state lives in the scratch directory, with `body` from line 4 on (it
    /// starts with its own section header).
    fn config(&self, name: &str, body: &str) -> PathBuf {
        let text = format!(
            "[daemon]\nstate_dir = {:?}\ncontrol_socket = {:?}\n{body}",
            self.path("state").display().to_string(),
            self.path("control.sock").display().to_string(),
        );
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

#[test]
fn files_that_are_no_regular_files_are_refused_unread() {
    let scratch = Scratch::new();
    let fifo = scratch.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let zero = scratch.config("zero.toml", "[detect]\nignore_file = \"/dev/zero\"\n");
    both_refuse(
        "",
        &zero,
        &format!(
            "{}:5: detect.ignore_file: \"/dev/zero\" cannot be used: /dev/zero: is a character \
             device, not a regular file",
            zero.display()
        ),
    );
    let pipe = scratch.config(
        "fifo.toml",
        &format!("[detect]\nignore_file = {:?}\n", fifo.display().to_string()),
    );
    both_refuse(
        "",
        &pipe,
        &format!(
            "{}:5: detect.ignore_file: {:?} cannot be used: {}: is a FIFO (named pipe), not a \
             regular file",
            pipe.display(),
            fifo.display().to_string(),
            fifo.display()
        ),
    );
    // The config file itself.
    both_refuse(
        "",
        &fifo,
        &format!(
            "{}: is a FIFO (named pipe), not a regular file",
            fifo.display()
        ),
    );
}

#[test]
fn a_timeout_the_kernel_cannot_hold_is_refused_with_the_largest_it_can() {
    let scratch = Scratch::new();
    let config = scratch.config(
        "timeout.toml",
        "[respond]\nblock_timeout = \"200000000d\"\n",
    );
    both_refuse(
        "",
        &config,
        &format!(
            "{}:5: respond.block_timeout: \"200000000d\" is longer than the kernel accepts for \
             an nft element timeout (at most \"213503d23h34m33s708ms\", about 584 years)",
            config.display()
        ),
    );
}

/// The bound in that message is the kernel's: nft takes the largest timeout and refuses one
/// millisecond more with ERANGE.
#[test]
fn the_kernel_takes_the_largest_timeout_and_refuses_one_millisecond_more() {
    let element = |timeout: &str| {
        let script = format!(
            "printf 'table inet t {{ set s {{ type ipv4_addr; flags timeout; }}; }}\\n\
             add element inet t s {{ 192.0.2.1 timeout {timeout} }}\\n' | nft -f -"
        );
        let out = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let largest = nfsentry::config::format_duration(nfsentry::config::NFT_TIMEOUT_MAX);
    assert_eq!(largest, "213503d23h34m33s708ms");
    let (taken, stderr) = element(&largest);
    assert!(taken, "{stderr}");
    let (taken, stderr) = element("213503d23h34m33s709ms");
    assert!(!taken);
    assert!(stderr.contains("Numerical result out of range"), "{stderr}");
}

#[test]
fn gateways_that_never_send_replies_away_are_refused() {
    let scratch = Scratch::new();
    for gateway in ["0.0.0.0", "127.0.0.1", "ff02::1"] {
        let config = scratch.config(
            "gateway.toml",
            &format!("[respond]\nactions = [\"route\"]\nroute = \"{gateway}\"\n"),
        );
        let refusal = both_refuse_text(&config);
        assert!(
            refusal.starts_with(&format!(
                "{}:6: respond.route: \"{gateway}\" is ",
                config.display()
            )),
            "{refusal}"
        );
    }
    // This host's own address, and its network's broadcast address, take the host to know.
    let setup = "ip link add nfs-local type veth peer name nfs-peer\n\
                 ip address add 192.0.2.1/24 dev nfs-local\n\
                 ip link set nfs-local up";
    for (gateway, problem) in [
        (
            "192.0.2.1",
            "is one of this host's own addresses, which hands the replies back to this host \
             instead of sending them away; \"blackhole\" drops them, or name another host",
        ),
        (
            "192.0.2.255",
            "is the broadcast address of a network this host is on; a gateway is one host on it",
        ),
    ] {
        let config = scratch.config(
            "local.toml",
            &format!("[respond]\nactions = [\"route\"]\nroute = \"{gateway}\"\n"),
        );
        both_refuse(
            setup,
            &config,
            &format!(
                "{}: action route: respond.route: \"{gateway}\" {problem}",
                config.display()
            ),
        );
    }
}

/// What `check-config` says of `config` in a fresh namespace, after checking that `run` says
/// the same and exits as it should.
fn both_refuse_text(config: &Path) -> String {
    let check = in_fresh_netns("", &["check-config", "--config", config.to_str().unwrap()]);
    let text = check
        .stderr
        .strip_prefix("nfsentry: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("one line: {:?}", check.stderr))
        .to_owned();
    both_refuse("", config, &text);
    text
}

#[test]
fn a_state_dir_below_a_regular_file_is_refused() {
    let scratch = Scratch::new();
    let file = scratch.path("file");
    std::fs::write(&file, "not a directory\n").unwrap();
    let below = file.join("state");
    let config = scratch.path("state.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = {:?}\ncontrol_socket = {:?}\n",
            below.display().to_string(),
            scratch.path("control.sock").display().to_string()
        ),
    )
    .unwrap();
    both_refuse(
        "",
        &config,
        &format!(
            "{}:2: daemon.state_dir: {:?} lies below {}, which is a regular file, not a \
             directory",
            config.display(),
            below.display().to_string(),
            file.display()
        ),
    );
}

/// `run` used to start with these and fail every block, logging "has been blocked" each time.
#[test]
fn run_refuses_what_check_config_refuses() {
    let scratch = Scratch::new();
    let deny_all = scratch.config(
        "deny.toml",
        &format!(
            "[respond]\nactions = [\"hosts-deny\"]\nhosts_deny = {:?}\n\
             hosts_deny_line = \"ALL: ALL EXCEPT $TARGET$\"\n",
            scratch.path("hosts.deny").display().to_string()
        ),
    );
    both_refuse(
        "",
        &deny_all,
        &format!(
            "{}:7: respond.hosts_deny_line: \"ALL: ALL EXCEPT $TARGET$\" denies more than the \
             scanner: its client \"ALL\" matches other hosts too; \"ALL: $TARGET$\" denies the \
             scanner alone",
            deny_all.display()
        ),
    );
    let missing = scratch.path("no-such-program");
    let command = scratch.config(
        "command.toml",
        &format!(
            "[respond]\nactions = [\"command\"]\ncommand = [{:?}, \"$TARGET$\"]\n",
            missing.display().to_string()
        ),
    );
    both_refuse(
        "",
        &command,
        &format!(
            "{}: action command: {} does not exist or is not executable",
            command.display(),
            missing.display()
        ),
    );
}
