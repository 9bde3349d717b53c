//! Appends whole lines to a file that may run out of space. A batch of lines goes out in one
//! write at the end of the file, and a write that fails part-way (ENOSPC, EDQUOT, EIO) is cut
//! back to where the batch began: the file never keeps a torn line for the next batch to be
//! glued onto. A file that already ends in a torn line (a crash during an earlier write) gets a
//! line break before the first batch. It knows nothing of what the lines say, and does not
//! retry: keeping what could not be written is its callers' business.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Nothing of the batch is in the file.
    #[error("{0}")]
    Failed(#[source] io::Error),
    /// Part of the batch is in the file and could not be cut off again: the file ends in a torn
    /// line until it is rewritten.
    #[error("{write}; cutting the partial write off failed too: {cut}")]
    Torn { write: io::Error, cut: io::Error },
}

impl AppendError {
    /// The error of the write itself.
    pub fn into_io(self) -> io::Error {
        match self {
            AppendError::Failed(error) | AppendError::Torn { write: error, .. } => error,
        }
    }
}

/// A file opened for appending whole lines.
#[derive(Debug)]
pub struct LineFile {
    path: PathBuf,
    file: File,
    /// The file ended without a line break when it was opened.
    needs_line_break: bool,
}

impl LineFile {
    /// Opens `path` for appending, creating it if needed (mode 0666 less the umask).
    pub fn open(path: &Path) -> io::Result<LineFile> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let length = file.metadata()?.len();
        let mut last = [b'\n'];
        if length > 0 {
            file.read_exact_at(&mut last, length - 1)?;
        }
        Ok(LineFile {
            path: path.to_path_buf(),
            file,
            needs_line_break: last != [b'\n'],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length now (someone else may have truncated it, as logrotate's
    /// `copytruncate` does).
    pub fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Appends `lines` (whole lines, each ending in a line break) in one write, or not at all.
    pub fn append(&mut self, lines: &[u8]) -> Result<(), AppendError> {
        if lines.is_empty() {
            return Ok(());
        }
        let appended = if self.needs_line_break {
            append_whole(&mut &self.file, &[b"\n", lines].concat())
        } else {
            append_whole(&mut &self.file, lines)
        };
        if appended.is_ok() {
            self.needs_line_break = false;
        }
        appended
    }

    /// Makes what was appended durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// The three steps of an append, apart from `File` so that the cut-back can be tested with
/// writes that fail part-way, which a real disk does only when it is almost full.
trait Sink {
    /// Where the next append lands.
    fn end(&mut self) -> io::Result<u64>;
    /// Writes at the end; may write less than asked.
    fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Cuts the file back to `length`.
    fn cut(&mut self, length: u64) -> io::Result<()>;
}

impl Sink for &File {
    fn end(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // The file is opened with O_APPEND: every write lands at the end.
        self.write(bytes)
    }

    fn cut(&mut self, length: u64) -> io::Result<()> {
        self.set_len(length)
    }
}

fn append_whole(sink: &mut impl Sink, bytes: &[u8]) -> Result<(), AppendError> {
    let start = sink.end().map_err(AppendError::Failed)?;
    let mut written = 0;
    while let Some(rest) = bytes.get(written..).filter(|rest| !rest.is_empty()) {
        let error = match sink.write_at_end(rest) {
            Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
            Ok(count) => {
                written += count;
                continue;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => error,
        };
        if written == 0 {
            return Err(AppendError::Failed(error));
        }
        return match sink.cut(start) {
            Ok(()) => Err(AppendError::Failed(error)),
            Err(cut) => Err(AppendError::Torn { write: error, cut }),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `room` bytes at most, in memory, whose writes stop at the room left.
    struct Small {
        content: Vec<u8>,
        room: usize,
        cut_fails: bool,
    }

    impl Sink for Small {
        fn end(&mut self) -> io::Result<u64> {
            Ok(self.content.len() as u64)
        }

        fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let fits = bytes.len().min(self.room - self.content.len());
            if fits == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.content.extend_from_slice(&bytes[..fits]);
            Ok(fits)
        }

        fn cut(&mut self, length: u64) -> io::Result<()> {
            if self.cut_fails {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            self.content.truncate(length as usize);
            Ok(())
        }
    }

    #[test]
    fn a_write_that_runs_out_of_room_leaves_the_file_as_it_was() {
        let mut disk = Small {
            content: b"+ 192.0.2.1 1 never TCP 23 SYN\n".to_vec(),
            room: 40,
            cut_fails: false,
        };
        let before = disk.content.clone();
        let batch = b"+ 192.0.2.2 1 never TCP 23 SYN\n+ 192.0.2.3 1 never TCP 23 SYN\n";
        assert!(matches!(
            append_whole(&mut disk, batch),
            Err(AppendError::Failed(_))
        ));
        assert_eq!(disk.content, before);
        // With room again, the batch lands whole after the last good line.
        disk.room = 1000;
        append_whole(&mut disk, batch).unwrap();
        assert_eq!(disk.content, [before.as_slice(), batch].concat());
    }

    #[test]
    fn a_torn_write_that_cannot_be_cut_back_says_so() {
        let mut disk = Small {
            content: Vec::new(),
            room: 4,
            cut_fails: true,
        };
        let torn = append_whole(&mut disk, b"- 192.0.2.1\n");
        assert!(matches!(torn, Err(AppendError::Torn { .. })), "{torn:?}");
        let mut full = Small {
            content: vec![b'x'; 4],
            room: 4,
            cut_fails: true,
        };
        // Nothing written, nothing to cut.
        assert!(matches!(
            append_whole(&mut full, b"y\n"),
            Err(AppendError::Failed(_))
        ));
    }

    #[test]
    fn a_file_ending_in_a_torn_line_gets_a_line_break_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history");
        std::fs::write(&path, "whole line\ntorn li").unwrap();
        let mut file = LineFile::open(&path).unwrap();
        file.append(b"next\n").unwrap();
        file.append(b"after\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "whole line\ntorn li\nnext\nafter\n"
        );
        let fresh = dir.path().join("fresh");
        let mut file = LineFile::open(&fresh).unwrap();
        file.append(b"first\n").unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "first\n");
        assert_eq!(file.len().unwrap(), 6);
    }
}
