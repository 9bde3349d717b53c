//! PortSentry's history file, one line per block, with a bound: once it would pass
//! `max_bytes`, it is renamed to `history.1` (replacing an older one) and started afresh, so the
//! two together never hold much more than twice the bound. Lines go out in batches through
//! [`LineFile`]; lines that cannot be written (a full or read-only disk) wait in memory, up to
//! [`PENDING_MAX_BYTES`], until they can. It knows nothing of what the lines say.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use log::warn;

use super::append::LineFile;
use super::StoreError;

/// Lines waiting for room on disk, at most; later ones are counted and dropped. A history line
/// is about 90 bytes, so this is some 11,000 blocks.
pub const PENDING_MAX_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct History {
    path: PathBuf,
    /// `None` until it could be opened.
    file: Option<LineFile>,
    pending: String,
    /// Lines dropped because `pending` was full, since the last [`History::take_dropped`].
    dropped: u64,
    max_bytes: u64,
    /// A failed rotation is said once; the file then grows past the bound.
    rotation_failed: bool,
}

impl History {
    /// Opens `path` for appending; a file that cannot be opened now is tried again at the next
    /// flush.
    pub fn open(path: &Path, max_bytes: u64) -> History {
        History {
            path: path.to_path_buf(),
            file: LineFile::open(path).ok(),
            pending: String::new(),
            dropped: 0,
            max_bytes,
            rotation_failed: false,
        }
    }

    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    /// Queues one line for the next [`History::flush`].
    pub fn add(&mut self, line: &str) {
        if self.pending.len() + line.len() + 1 > PENDING_MAX_BYTES {
            self.dropped += 1;
            return;
        }
        self.pending.push_str(line);
        self.pending.push('\n');
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Lines dropped for want of room since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Writes and syncs the queued lines, rotating first when they would pass the bound. On
    /// failure the lines stay queued and the file as it was.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let failed = |source: io::Error, path: &Path| StoreError::Write {
            path: path.to_path_buf(),
            source,
        };
        if self.file.is_none() {
            self.file = Some(LineFile::open(&self.path).map_err(|e| failed(e, &self.path))?);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let length = file.len().map_err(|e| failed(e, &self.path))?;
        if length > 0 && length + self.pending.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.append(self.pending.as_bytes())
            .map_err(|e| failed(e.into_io(), &self.path))?;
        self.pending.clear();
        file.sync().map_err(|e| failed(e, &self.path))
    }

    /// Renames the file to `history.1` and opens a fresh one. A rename that fails (say, a
    /// directory that is writable only for this file) is said once, and the lines go on into
    /// the old file.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let rotated = rotated_path(&self.path);
        if let Err(e) = fs::rename(&self.path, &rotated) {
            if !self.rotation_failed {
                warn!(
                    "cannot rotate {} to {}: {e}; it grows past the bound",
                    self.path.display(),
                    rotated.display()
                );
                self.rotation_failed = true;
            }
            return Ok(());
        }
        self.rotation_failed = false;
        self.file = None;
        let file = LineFile::open(&self.path).map_err(|source| StoreError::Write {
            path: self.path.clone(),
            source,
        })?;
        self.file = Some(file);
        Ok(())
    }
}

/// `history` → `history.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "1795564518 - 11/24/2026 23:55:18 Host: 192.0.2.7/192.0.2.7 Port: 23 TCP Blocked";

    #[test]
    fn past_the_bound_the_file_is_rotated_once_to_history_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        let line_bytes = LINE.len() as u64 + 1;
        let mut history = History::open(&path, 10 * line_bytes);
        for _ in 0..10 {
            history.add(LINE);
            history.flush().unwrap();
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), 10 * line_bytes);
        assert!(!rotated_path(&path).exists());
        // The 11th line would pass the bound: the ten go to history.1.
        history.add(LINE);
        history.flush().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), line_bytes);
        let rotated = fs::read_to_string(rotated_path(&path)).unwrap();
        assert_eq!(rotated.lines().count(), 10);
        // Twenty more: history.1 is replaced, there is no history.2.
        for _ in 0..20 {
            history.add(LINE);
            history.flush().unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= 10 * line_bytes);
        assert_eq!(
            fs::read_to_string(rotated_path(&path))
                .unwrap()
                .lines()
                .count(),
            10
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn lines_wait_for_a_file_that_cannot_be_opened_and_overflow_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-yet");
        let path = missing.join("history");
        let mut history = History::open(&path, 1 << 20);
        history.add(LINE);
        assert!(history.flush().is_err());
        assert!(history.has_pending());
        let many = PENDING_MAX_BYTES / (LINE.len() + 1);
        for _ in 0..many {
            history.add(LINE);
        }
        assert_eq!(history.take_dropped(), 1);
        fs::create_dir(&missing).unwrap();
        history.flush().unwrap();
        assert!(!history.has_pending());
        assert_eq!(
            fs::read_to_string(&path).unwrap().lines().count(),
            many,
            "every line that was kept is written"
        );
    }
}
