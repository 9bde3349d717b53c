//! Crash-safe changes to one file. A whole new content is written to a temporary file next to
//! it, fsync'd, renamed over it, and the directory fsync'd, so readers and crashes see the old
//! file or the new one and never a mix. Temporary files that a crash left behind are swept.
//! Where a file cannot be replaced, [`write_at`] and [`truncate`] change it in place, each step
//! durable before it returns.
//!
//! It knows bytes and paths only: what the content means, which bytes an in-place change may
//! touch without losing anyone's data, and locking against other writers are the callers'.

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use log::{debug, info};
use thiserror::Error;

/// Temporary files are `.<name><TEMP_INFIX><pid>-<sequence>` next to the file they replace.
const TEMP_INFIX: &str = ".nfsentry-";
/// The mode a temporary file is created with before it is given the replaced file's: nobody
/// else may read the new content before its owner and mode are the old file's.
const PRIVATE_MODE: u32 = 0o600;
/// The mode of a file that is not modelled on another, less the umask, as `File::create` does.
const FRESH_MODE: u32 = 0o666;

static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Who owns the new file and what its mode is.
#[derive(Debug, Clone, Copy)]
pub enum Ownership<'a> {
    /// The writing process's user and group, mode 0666 less the umask: a file of its own.
    Fresh,
    /// The owner, group and mode of this open file, normally the one being replaced, so that
    /// replacing it does not hand it to anyone else or open it to more readers.
    SameAs(&'a File),
}

/// The step of a change that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the owner and mode of the file that the new one is modelled on.
    Read,
    /// Naming the temporary file: the path has no file name to derive it from.
    Name,
    /// Creating the temporary file; the error names it.
    CreateTemp,
    /// Giving the temporary file the replaced file's owner and group; the error names it.
    GiveOwner,
    Write,
    Sync,
    /// Renaming the temporary file over the file; the error names the file.
    Rename,
    /// Making the rename durable; the error names the directory.
    SyncDirectory,
    Truncate,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Read => "read",
            Step::Name => "name a temporary file for",
            Step::CreateTemp => "create",
            Step::GiveOwner => "give the file's owner to",
            Step::Write => "write",
            Step::Sync => "sync",
            Step::Rename => "rename a temporary file over",
            Step::SyncDirectory => "sync the directory",
            Step::Truncate => "truncate",
        })
    }
}

/// A change that failed: which step, on which path, and the system's reason.
#[derive(Debug, Error)]
#[error("cannot {step} {}: {source}", path.display())]
pub struct AtomicFileError {
    pub step: Step,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl AtomicFileError {
    fn at(step: Step, path: &Path) -> impl FnOnce(io::Error) -> AtomicFileError + '_ {
        move |source| AtomicFileError {
            step,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether replacement is not allowed here, as against broken: the directory is read-only
    /// or hardened (a systemd unit's `ProtectSystem=strict` with the file alone in
    /// `ReadWritePaths=`), the file is a mount point that cannot be renamed over, or the
    /// process may not give a new file the old one's owner. Nothing was changed then, and a
    /// caller may change the file in place instead.
    pub fn refused(&self) -> bool {
        match self.step {
            Step::GiveOwner => true,
            Step::CreateTemp | Step::Rename => matches!(
                self.source.raw_os_error(),
                Some(libc::EROFS | libc::EACCES | libc::EPERM | libc::EBUSY | libc::EXDEV)
            ),
            _ => false,
        }
    }
}

/// The directory `path` is in; `.` for a bare file name.
pub fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn temp_name_prefix(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    Some(format!(".{name}{TEMP_INFIX}"))
}

/// Removes the temporary file unless the rename consumed it.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Puts `content` in place at `path` (which need not exist yet) so that a crash or a reader at
/// any moment sees the old file or the whole new one: temporary file in the same directory,
/// owner and mode per `ownership`, fsync, rename over `path`, fsync of the directory. A failed
/// attempt leaves no temporary file behind. `path` is replaced as a name: a symlink there is
/// replaced by the file, so callers resolve links they mean to keep.
pub fn replace(
    path: &Path,
    content: &[u8],
    ownership: Ownership<'_>,
) -> Result<(), AtomicFileError> {
    let model = match ownership {
        Ownership::Fresh => None,
        Ownership::SameAs(file) => Some(
            file.metadata()
                .map_err(AtomicFileError::at(Step::Read, path))?,
        ),
    };
    let dir = directory_of(path);
    let prefix = temp_name_prefix(path).ok_or_else(|| AtomicFileError {
        step: Step::Name,
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    let sequence = TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let temp_path = dir.join(format!("{prefix}{}-{sequence}", std::process::id()));
    let mut temp = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if model.is_some() {
            PRIVATE_MODE
        } else {
            FRESH_MODE
        })
        .custom_flags(libc::O_CLOEXEC)
        .open(&temp_path)
        .map_err(AtomicFileError::at(Step::CreateTemp, &temp_path))?;
    let mut guard = TempFile {
        path: temp_path.clone(),
        renamed: false,
    };
    if let Some(model) = model {
        let created = temp
            .metadata()
            .map_err(AtomicFileError::at(Step::Write, &temp_path))?;
        if created.uid() != model.uid() || created.gid() != model.gid() {
            // Without CAP_CHOWN this fails, and replacing would hand the file to us.
            std::os::unix::fs::fchown(&temp, Some(model.uid()), Some(model.gid()))
                .map_err(AtomicFileError::at(Step::GiveOwner, &temp_path))?;
        }
        temp.set_permissions(Permissions::from_mode(model.mode() & 0o7777))
            .map_err(AtomicFileError::at(Step::Write, &temp_path))?;
    }
    temp.write_all(content)
        .map_err(AtomicFileError::at(Step::Write, &temp_path))?;
    temp.sync_all()
        .map_err(AtomicFileError::at(Step::Sync, &temp_path))?;
    fs::rename(&temp_path, path).map_err(AtomicFileError::at(Step::Rename, path))?;
    guard.renamed = true;
    // The rename is only durable once the directory entry is.
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(AtomicFileError::at(Step::SyncDirectory, dir))
}

/// Removes the temporary files of earlier [`replace`]s of `path`, which a crash between
/// creating and renaming one left behind. Only safe where no other writer can be replacing
/// `path` meanwhile: the caller holds the file's lock, or owns the directory alone. Failures
/// are logged, not returned: a leftover costs disk space, not correctness.
pub fn sweep_temps(path: &Path) {
    let Some(prefix) = temp_name_prefix(path) else {
        return;
    };
    let Ok(entries) = fs::read_dir(directory_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            match fs::remove_file(entry.path()) {
                Ok(()) => info!(
                    "removed {} left by an interrupted write",
                    entry.path().display()
                ),
                Err(e) => debug!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Writes each `(offset, bytes)` into `file` (open at `path`, which errors name), then makes
/// them durable with one fdatasync; nothing at all when `writes` is empty. Overwriting a range
/// keeps the file's length, writing at its end appends; a crash may leave any of the writes
/// torn, so callers choose bytes whose torn forms are harmless.
pub fn write_at<B: AsRef<[u8]>>(
    file: &File,
    path: &Path,
    writes: &[(u64, B)],
) -> Result<(), AtomicFileError> {
    if writes.is_empty() {
        return Ok(());
    }
    for (offset, bytes) in writes {
        file.write_all_at(bytes.as_ref(), *offset)
            .map_err(AtomicFileError::at(Step::Write, path))?;
    }
    file.sync_data()
        .map_err(AtomicFileError::at(Step::Sync, path))
}

/// Cuts `file` (open at `path`, which errors name) to `len` bytes and makes that durable.
pub fn truncate(file: &File, path: &Path, len: u64) -> Result<(), AtomicFileError> {
    file.set_len(len)
        .map_err(AtomicFileError::at(Step::Truncate, path))?;
    file.sync_data()
        .map_err(AtomicFileError::at(Step::Sync, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_fresh_file_is_created_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        replace(&path, b"first\n", Ownership::Fresh).unwrap();
        replace(&path, b"second\n", Ownership::Fresh).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second\n");
        assert_eq!(names_in(dir.path()), ["journal"]);
        // As File::create would have made it. The umask is read, not set: setting it would
        // change the files that tests on other threads create meanwhile.
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))
            .map(|octal| u32::from_str_radix(octal.trim(), 8).unwrap())
            .unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, FRESH_MODE & !umask);
    }

    #[test]
    fn a_replacement_modelled_on_the_old_file_keeps_its_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.deny");
        fs::write(&path, b"old\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let as_root = nix::unistd::geteuid().is_root();
        if as_root {
            std::os::unix::fs::chown(&path, Some(1234), Some(2345)).unwrap();
        }
        let inode = fs::metadata(&path).unwrap().ino();
        let held = File::open(&path).unwrap();
        replace(&path, b"new\n", Ownership::SameAs(&held)).unwrap();
        let after = fs::metadata(&path).unwrap();
        assert_ne!(after.ino(), inode, "replaced, not edited");
        assert_eq!(after.mode() & 0o7777, 0o640);
        if as_root {
            assert_eq!((after.uid(), after.gid()), (1234, 2345));
        }
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(names_in(dir.path()), ["hosts.deny"]);
    }

    #[test]
    fn errors_name_the_step_and_the_path_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent").join("journal");
        let error = replace(&missing, b"x", Ownership::Fresh).unwrap_err();
        assert_eq!(error.step, Step::CreateTemp);
        assert!(
            !error.refused(),
            "a missing directory is broken, not hardened"
        );
        let text = error.to_string();
        let temp_prefix = format!(
            "cannot create {}/.journal.nfsentry-",
            missing.parent().unwrap().display()
        );
        assert!(text.starts_with(&temp_prefix), "{text}");

        // A directory in the way cannot be renamed over; the temporary file goes again.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"").unwrap();
        let error = replace(&blocked, b"x", Ownership::Fresh).unwrap_err();
        assert_eq!(error.step, Step::Rename);
        assert_eq!(error.path, blocked);
        assert!(
            error.to_string().starts_with(&format!(
                "cannot rename a temporary file over {}: ",
                blocked.display()
            )),
            "{error}"
        );
        assert_eq!(names_in(dir.path()), ["blocked"]);

        let error = replace(Path::new("/"), b"x", Ownership::Fresh).unwrap_err();
        assert_eq!(error.step, Step::Name);
    }

    #[test]
    fn refusals_are_the_errors_of_a_hardened_directory_or_a_mount_point() {
        let refusal = |step, errno| {
            AtomicFileError {
                step,
                path: PathBuf::from("/etc/hosts.deny"),
                source: io::Error::from_raw_os_error(errno),
            }
            .refused()
        };
        assert!(refusal(Step::CreateTemp, libc::EROFS));
        assert!(refusal(Step::CreateTemp, libc::EACCES));
        assert!(refusal(Step::Rename, libc::EBUSY));
        assert!(refusal(Step::Rename, libc::EXDEV));
        assert!(refusal(Step::GiveOwner, libc::EINVAL));
        assert!(!refusal(Step::CreateTemp, libc::ENOSPC));
        assert!(!refusal(Step::Write, libc::EROFS));
        assert!(!refusal(Step::SyncDirectory, libc::EIO));
    }

    #[test]
    fn sweeping_removes_only_the_temporary_files_of_that_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts.deny");
        for name in [
            "hosts.deny",
            ".hosts.deny.nfsentry-999999-0",
            ".hosts.deny.nfsentry-999999-1",
            ".hosts.allow.nfsentry-999999-0",
            "hosts.deny.nfsentry-1-0",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        sweep_temps(&path);
        assert_eq!(
            names_in(dir.path()),
            [
                ".hosts.allow.nfsentry-999999-0",
                "hosts.deny",
                "hosts.deny.nfsentry-1-0"
            ]
        );
    }

    #[test]
    fn in_place_writes_overwrite_append_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        fs::write(&path, b"0123456789").unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        write_at(&file, &path, &[(2, b"ab".as_slice()), (6, b"cd")]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"01ab45cd89");
        truncate(&file, &path, 4).unwrap();
        write_at(&file, &path, &[(4, b"-end\n")]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"01ab-end\n");
        write_at::<&[u8]>(&file, &path, &[]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"01ab-end\n");
    }
}
