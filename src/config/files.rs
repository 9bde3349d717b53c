//! Reads the files a configuration names (the config itself, the ignore file, secrets): opened
//! only when they are regular files, and read only up to a bound. It does not interpret what
//! it reads.
//!
//! Why so wary: a path in a config file is whatever the admin (or a mistake) wrote. A FIFO
//! blocks the first read until someone writes to it, and `check-config` and `run` would hang
//! with it; `/dev/zero` never ends and would fill memory; opening some devices does something
//! by itself (a tape rewinds, a watchdog arms). So the type is looked up before the file is
//! opened, the file is opened without blocking and looked at again (the path may have been
//! swapped in between), and never more than the bound is read.

use std::fs::{self, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest config or ignore file read. An ignore list of a few hundred thousand CIDRs still
/// fits; `/dev/zero` behind a symlink, or a generator gone wrong, stops here.
pub(crate) const TEXT_FILE_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Why a file named in the configuration was not read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileProblem {
    /// The file could not be looked at, opened or read.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// Not a regular file: never opened (or, swapped in after the first look, never read).
    #[error("is {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    /// Larger than the bound; nothing of it is used.
    #[error("is larger than {}", size_text(*max_bytes))]
    TooLarge { max_bytes: u64 },
}

impl FileProblem {
    /// As an I/O error, for callers that report those: the problem's own words otherwise.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            FileProblem::Io(error) => error,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// The bytes of the regular file at `path`, at most `max_bytes` of them.
pub(crate) fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileProblem> {
    let looked = fs::metadata(path).map_err(FileProblem::Io)?;
    regular(looked.file_type())?;
    // O_NONBLOCK: a FIFO swapped in since the look above is opened at once instead of waiting
    // for a writer, and the second look refuses it. O_NOCTTY: a terminal never becomes ours.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(FileProblem::Io)?;
    let opened = file.metadata().map_err(FileProblem::Io)?;
    regular(opened.file_type())?;
    if opened.len() > max_bytes {
        return Err(FileProblem::TooLarge { max_bytes });
    }
    let mut bytes = Vec::new();
    // One byte past the bound tells a file that grew since the look from one that fits.
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(FileProblem::Io)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > max_bytes) {
        return Err(FileProblem::TooLarge { max_bytes });
    }
    Ok(bytes)
}

/// Why `path` can never be the directory the daemon keeps its state in: it, or a path above
/// it, exists and is not a directory, so creating it fails with ENOTDIR at every start. `None`
/// when it is a directory or could become one: missing, or not to be looked at (a directory
/// that cannot be written or searched is the daemon's to report, which then runs without
/// persisting).
pub(crate) fn not_a_directory(path: &Path) -> Option<String> {
    for (depth, at) in path.ancestors().enumerate() {
        match fs::metadata(at) {
            Ok(found) if found.is_dir() => return None,
            Ok(found) => {
                let kind = kind_of(found.file_type());
                return Some(match depth {
                    0 => format!("is {kind}, not a directory"),
                    _ => format!(
                        "lies below {}, which is {kind}, not a directory",
                        at.display()
                    ),
                });
            }
            // Missing, or below something that is not a directory: look further up.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) => {}
            Err(_) => return None,
        }
    }
    None
}

fn regular(file_type: FileType) -> Result<(), FileProblem> {
    match file_type.is_file() {
        true => Ok(()),
        false => Err(FileProblem::NotRegular {
            kind: kind_of(file_type),
        }),
    }
}

/// "a FIFO (named pipe)", for messages.
fn kind_of(file_type: FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "of an unknown type"
    }
}

/// "16 MiB", or "4096 bytes" when the bound is no whole number of MiB.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match bytes % MIB {
        0 if bytes > 0 => format!("{} MiB", bytes / MIB),
        _ => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Reads must return at once whatever sits at the path; a FIFO nobody writes to is the
    /// test that would hang if they did not.
    fn read_quickly(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileProblem> {
        let started = Instant::now();
        let read = read_regular(path, max_bytes);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            path.display()
        );
        read
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.path().join("zero-link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let cases: [(&Path, &str); 5] = [
            (&fifo, "is a FIFO (named pipe), not a regular file"),
            (
                Path::new("/dev/zero"),
                "is a character device, not a regular file",
            ),
            (&link, "is a character device, not a regular file"),
            (dir.path(), "is a directory, not a regular file"),
            (
                Path::new("/dev/null"),
                "is a character device, not a regular file",
            ),
        ];
        for (path, expected) in cases {
            let problem = read_quickly(path, TEXT_FILE_MAX_BYTES).err();
            assert_eq!(
                problem.map(|p| p.to_string()),
                Some(expected.to_owned()),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn files_up_to_the_bound_are_read_and_larger_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"12345678").unwrap();
        assert_eq!(read_quickly(&path, 8).ok(), Some(b"12345678".to_vec()));
        assert_eq!(
            read_quickly(&path, 7).err().map(|p| p.to_string()),
            Some("is larger than 7 bytes".to_owned())
        );
        assert_eq!(size_text(TEXT_FILE_MAX_BYTES), "16 MiB");
        let missing = read_quickly(&dir.path().join("absent"), 8).err();
        assert!(
            matches!(&missing, Some(FileProblem::Io(e)) if e.kind() == io::ErrorKind::NotFound),
            "{missing:?}"
        );
    }
}
