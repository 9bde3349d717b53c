//! One nfsentry per table and per state directory. Before the daemon touches the kernel or its
//! state directory it takes two locks, which the kernel drops when the process ends, however it
//! ends: an abstract Unix socket named after the table, which is unique in a network namespace
//! just as the table is; and an flock on `state_dir/lock`, which no two processes anywhere can
//! hold. A second nfsentry given the same table or the same state directory therefore stops
//! before it has changed anything. This module writes nothing but the lock file.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use log::warn;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};

/// The lock file's name in the state directory.
const LOCK_FILE: &str = "lock";
/// Abstract socket names are `@nfsentry/table/NAME`.
const SOCKET_PREFIX: &str = "nfsentry/table/";
/// `sun_path` holds 108 bytes; the leading NUL of an abstract name takes one.
const ABSTRACT_NAME_MAX_BYTES: usize = 107;

/// Why this nfsentry may not run.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another nfsentry is running with table {table:?} in this network namespace; not \
         starting, and nothing was changed"
    )]
    TableInUse { table: String },
    #[error(
        "another nfsentry{holder} is using the state directory {}; not starting, and nothing \
         was changed",
        dir.display()
    )]
    StateDirInUse { dir: PathBuf, holder: String },
    #[error("cannot take the instance lock: {what}: {source}")]
    System {
        what: &'static str,
        #[source]
        source: Errno,
    },
}

/// Both locks, held while this value lives.
#[derive(Debug)]
pub struct InstanceLock {
    _table: OwnedFd,
    _state_dir: Option<Flock<File>>,
}

/// Takes both locks. A lock file that cannot be created (a read-only state directory, or one
/// that does not exist and cannot be made) is said and done without: the table lock still
/// keeps a second daemon of the same table out.
pub fn acquire(table: &str, state_dir: &Path) -> Result<InstanceLock, LockError> {
    let table_lock = lock_table(table)?;
    let state_lock = lock_state_dir(state_dir)?;
    Ok(InstanceLock {
        _table: table_lock,
        _state_dir: state_lock,
    })
}

fn lock_table(table: &str) -> Result<OwnedFd, LockError> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| LockError::System {
        what: "a Unix socket",
        source,
    })?;
    let address = UnixAddr::new_abstract(abstract_name(table).as_bytes()).map_err(|source| {
        LockError::System {
            what: "an abstract socket name",
            source,
        }
    })?;
    match socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &address) {
        Ok(()) => Ok(fd),
        Err(Errno::EADDRINUSE) => Err(LockError::TableInUse {
            table: table.to_owned(),
        }),
        Err(source) => Err(LockError::System {
            what: "binding the table's abstract socket",
            source,
        }),
    }
}

/// `nfsentry/table/NAME`, or a hash of the name where it would not fit (config validation
/// keeps table names far shorter).
fn abstract_name(table: &str) -> String {
    let name = format!("{SOCKET_PREFIX}{table}");
    if name.len() <= ABSTRACT_NAME_MAX_BYTES {
        return name;
    }
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{SOCKET_PREFIX}#{hash:016x}")
}

fn lock_state_dir(dir: &Path) -> Result<Option<Flock<File>>, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = match open_lock_file(dir, &path) {
        Ok(file) => file,
        Err(e) => {
            warn!(
                "cannot create the lock file {} ({e}): nothing keeps a second nfsentry with \
                 another table out of this state directory",
                path.display()
            );
            return Ok(None);
        }
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            // Best effort: the pid only makes a second daemon's message more useful.
            let _ = write_pid(&mut locked);
            Ok(Some(locked))
        }
        Err((mut file, Errno::EWOULDBLOCK)) => Err(LockError::StateDirInUse {
            dir: dir.to_path_buf(),
            holder: read_pid(&mut file)
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default(),
        }),
        Err((_, source)) => Err(LockError::System {
            what: "flock on the state directory's lock file",
            source,
        }),
    }
}

/// Opens the lock file for writing, creating the directory and file if need be, or else an
/// existing one for reading, which is all flock needs.
fn open_lock_file(dir: &Path, path: &Path) -> io::Result<File> {
    let writable = std::fs::create_dir_all(dir).and_then(|()| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    });
    writable.or_else(|error| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|_| error)
    })
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table name no other test or daemon uses.
    fn unique_table(tag: &str) -> String {
        format!("test-{tag}-{}", std::process::id())
    }

    #[test]
    fn a_second_lock_on_the_same_table_is_refused_until_the_first_is_dropped() {
        let scratch = tempfile::tempdir().unwrap();
        let table = unique_table("table");
        let first = acquire(&table, &scratch.path().join("one")).unwrap();
        let second = acquire(&table, &scratch.path().join("two"));
        assert!(
            matches!(&second, Err(LockError::TableInUse { table: t }) if *t == table),
            "{second:?}"
        );
        drop(first);
        acquire(&table, &scratch.path().join("two")).unwrap();
    }

    #[test]
    fn a_second_lock_on_the_same_state_directory_names_the_holder() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("state");
        let _first = acquire(&unique_table("dir-a"), &dir).unwrap();
        let second = acquire(&unique_table("dir-b"), &dir);
        let Err(error @ LockError::StateDirInUse { .. }) = second else {
            panic!("expected the state directory to be in use: {second:?}");
        };
        assert!(
            error
                .to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{error}"
        );
    }

    #[test]
    fn a_state_directory_without_a_lock_file_is_no_reason_to_stop() {
        let lock = acquire(
            &unique_table("nodir"),
            Path::new("/proc/nfsentry-no-such-dir/state"),
        );
        assert!(matches!(
            lock,
            Ok(InstanceLock {
                _state_dir: None,
                ..
            })
        ));
    }

    #[test]
    fn long_table_names_are_hashed_into_the_abstract_name() {
        assert_eq!(abstract_name("nfsentry"), "nfsentry/table/nfsentry");
        let long = "t".repeat(200);
        let name = abstract_name(&long);
        assert!(name.len() <= ABSTRACT_NAME_MAX_BYTES, "{name}");
        assert_ne!(name, abstract_name(&"u".repeat(200)));
    }
}
