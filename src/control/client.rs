//! The command's end of the control socket: sends one request to the running daemon and reads
//! its answer, with a deadline, so that `nfsentry status` never hangs on a stuck daemon. It
//! prints nothing; [`super::render`] does.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{decode_answer, encode, Answer, Request, MAX_ANSWER_BYTES};

/// Long enough for a block or unblock that the daemon carries out through every action before
/// it answers (a hung legacy tool is killed after 10 s), short enough that a wedged daemon is
/// reported rather than waited for.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the daemon is not running (nothing answers on {})", .0.display())]
    NotRunning(PathBuf),
    #[error("not allowed to use {} (run as root or as the daemon's user)", .0.display())]
    NotAllowed(PathBuf),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the daemon on {} gave no answer within {timeout:?}", path.display())]
    NoAnswer { path: PathBuf, timeout: Duration },
    #[error("the daemon on {} answered something unreadable: {reason}", path.display())]
    Garbled { path: PathBuf, reason: String },
}

/// Sends `request` to the daemon listening on `path` and waits for its answer.
pub fn ask(path: &Path, request: &Request, timeout: Duration) -> Result<Answer, AskError> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            AskError::NotRunning(path.to_path_buf())
        }
        io::ErrorKind::PermissionDenied => AskError::NotAllowed(path.to_path_buf()),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => AskError::NoAnswer {
            path: path.to_path_buf(),
            timeout,
        },
        _ => AskError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    let mut stream = UnixStream::connect(path).map_err(io_error)?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(io_error)?;
    stream.write_all(&encode(request)).map_err(io_error)?;
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_ANSWER_BYTES + 1).unwrap_or(u64::MAX);
    BufReader::new((&stream).take(limit))
        .read_until(b'\n', &mut line)
        .map_err(io_error)?;
    if line.pop() != Some(b'\n') {
        return Err(AskError::Garbled {
            path: path.to_path_buf(),
            reason: match line.is_empty() {
                true => "the connection closed without an answer".into(),
                false => "the answer was cut short".into(),
            },
        });
    }
    decode_answer(&line).map_err(|e| AskError::Garbled {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
