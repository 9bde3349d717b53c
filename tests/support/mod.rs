//! Scaffolding shared by the kernel-level test files: running a program that must succeed,
//! throwaway network namespaces and scratch directories (tempfile's) that are removed on drop,
//! and running code inside a namespace. It asserts nothing about nfsentry itself; the test files do that.
//! (The end-to-end lab in `tests/common/` is separate: it drives the whole daemon.)

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

/// `{prefix}-{tag}-{pid}-{n}`: the pid keeps test binaries that run at the same time apart,
/// `n` the tests of one binary.
fn unique_name(prefix: &str, tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `program` and returns its standard output; panics with its exit status and standard
/// error when it cannot be started or fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn output_of(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program} {args:?}: {error}"))
}

/// A network namespace, with its loopback up, that exists for one test and is deleted when
/// the test ends, passed or failed. Deleting it also removes its links and nft tables.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `{prefix}-{tag}-{pid}-{n}`; the prefix says which test file owns it.
    pub fn new(prefix: &str, tag: &str) -> Netns {
        let name = unique_name(prefix, tag);
        run("ip", &["netns", "add", &name]);
        // The guard exists before anything else can fail, so a failure below still deletes it.
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args`; panics when it fails, else returns its standard output.
    pub fn ip(&self, args: &[&str]) -> String {
        run("ip", &self.with_namespace_option(args))
    }

    /// `ip -n NAME args`, failed or not.
    pub fn ip_output(&self, args: &[&str]) -> Output {
        output_of("ip", &self.with_namespace_option(args))
    }

    /// Runs `command` (program first) inside this namespace; panics when it fails, else
    /// returns its standard output.
    pub fn exec(&self, command: &[&str]) -> String {
        run("ip", &self.with_exec_prefix(command))
    }

    /// Runs `command` (program first) inside this namespace, failed or not.
    pub fn exec_output(&self, command: &[&str]) -> Output {
        output_of("ip", &self.with_exec_prefix(command))
    }

    /// Runs `work` on a thread that has entered this namespace; see [`in_namespace`].
    pub fn enter<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.name, work)
    }

    /// Adds a veth pair from `local_link` here to `peer_link` in `peer`, both ends down.
    pub fn add_veth(&self, local_link: &str, peer: &Netns, peer_link: &str) {
        self.ip(&[
            "link", "add", local_link, "type", "veth", "peer", "name", peer_link, "netns",
            &peer.name,
        ]);
    }

    /// Puts `addresses` (with prefix length) on `link` and brings it up. IPv6 addresses skip
    /// duplicate address detection so they can be used at once.
    pub fn configure_link(&self, link: &str, addresses: &[&str]) {
        for address in addresses {
            let mut args = vec!["address", "add", address, "dev", link];
            if address.contains(':') {
                args.push("nodad");
            }
            self.ip(&args);
        }
        self.ip(&["link", "set", link, "up"]);
    }

    /// Loads a ruleset text with `nft -f` in this namespace; panics with the text when `nft`
    /// refuses it.
    pub fn nft_load(&self, ruleset: &str) {
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{}-", self.name))
            .suffix(".nft")
            .tempfile()
            .unwrap_or_else(|error| panic!("create a ruleset file: {error}"));
        file.write_all(ruleset.as_bytes())
            .unwrap_or_else(|error| panic!("write {}: {error}", file.path().display()));
        let output = self.exec_output(&["nft", "-f", &file.path().to_string_lossy()]);
        assert!(
            output.status.success(),
            "nft -f failed: {}\n{ruleset}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn with_namespace_option<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        full
    }

    fn with_exec_prefix<'a>(&'a self, command: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(command);
        full
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn namespace_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn set_network_namespace(namespace: &File) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which `namespace` keeps open for the call; it
    // changes the namespace of the calling thread alone.
    let rc = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Moves the calling thread into network namespace `name`; panics when it cannot.
fn join_namespace(name: &str) {
    let path = namespace_path(name);
    let namespace =
        File::open(&path).unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
    set_network_namespace(&namespace)
        .unwrap_or_else(|error| panic!("setns {}: {error}", path.display()));
}

/// Runs `work` on a fresh thread that has joined network namespace `name`, so the sockets it
/// opens (netlink ones included) belong there: membership is per thread, and a socket stays
/// in its namespace after the thread that made it ends. A panic in `work` is passed on to the
/// caller once the thread has ended.
pub fn in_namespace<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                join_namespace(name);
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The calling thread moved into a network namespace, for code that must run on the test
/// thread itself. Dropping this moves the thread back, which must happen before the namespace
/// is deleted for the namespace to really go away; declare it before the [`Netns`] it enters.
pub struct ThreadInNamespace {
    home: File,
}

impl ThreadInNamespace {
    pub fn enter(name: &str) -> ThreadInNamespace {
        let home = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|error| panic!("open own network namespace: {error}"));
        join_namespace(name);
        ThreadInNamespace { home }
    }
}

impl Drop for ThreadInNamespace {
    fn drop(&mut self) {
        if let Err(error) = set_network_namespace(&self.home) {
            eprintln!("cannot return to the original network namespace: {error}");
        }
    }
}

/// A directory under the temp directory, removed with its contents when dropped, passed or
/// failed.
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// Creates an empty `{prefix}-{tag}-XXXXXX` under the temp directory; the name says which
    /// test left it, should a killed run leave it behind.
    pub fn new(prefix: &str, tag: &str) -> ScratchDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-{tag}-"))
            .tempdir()
            .unwrap_or_else(|error| panic!("create a scratch directory: {error}"));
        ScratchDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
