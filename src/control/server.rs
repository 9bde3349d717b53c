//! The daemon's end of the control socket: a Unix stream socket, mode 0600, answered one
//! request at a time on a thread of its own, so that no client, however slow or hostile, can
//! hold up the packet loop. What a request does is the [`Handler`]'s business; this module only
//! moves lines.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{debug, warn};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{pipe2, write, Uid};

use super::protocol::{decode_request, encode, Answer, Request, MAX_REQUEST_BYTES};

/// How long a client may take to send its request or read the answer; a stuck client costs
/// the next one at most this.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many 4 KiB reads of what a refused client sent beyond its request.
const DRAIN_READS: usize = 16;
/// The socket's mode: the daemon's user (and root) only.
const SOCKET_MODE: u32 = 0o600;

/// Carries out one request. Called on the control thread, one request at a time.
pub trait Handler: Send + Sync {
    fn handle(&self, request: Request) -> Answer;
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another nfsentry already answers on {}", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot {doing} {}: {source}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The bound socket, not yet answering. Bind before the daemon drops privileges it needs to
/// create the socket's directory; answer once there is something to answer with.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A socket left by a crashed run (nobody answers on it) is
    /// replaced; a live one means another daemon uses the path, and that is an error. The
    /// socket is bound under a temporary name, given its mode, then renamed into place, so it is
    /// never reachable with a wider mode.
    pub fn bind(path: &Path) -> Result<ControlSocket, ServeError> {
        let io_error = |doing, source| ServeError::Io {
            doing,
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent).map_err(|e| io_error("create the directory of", e))?;
                let _ = fs::set_permissions(parent, fs::Permissions::from_mode(0o750));
            }
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ServeError::NotASocket(path.to_path_buf()))
            }
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ServeError::InUse(path.to_path_buf()));
                }
                fs::remove_file(path).map_err(|e| io_error("remove the stale socket", e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", e)),
        }
        let staging = staging_name(path);
        let _ = fs::remove_file(&staging);
        let listener = UnixListener::bind(&staging).map_err(|e| io_error("bind", e))?;
        let placed = fs::set_permissions(&staging, fs::Permissions::from_mode(SOCKET_MODE))
            .and_then(|()| fs::rename(&staging, path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&staging);
            return Err(io_error("put in place", e));
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| io_error("configure", e))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts answering on a thread of its own.
    pub fn serve(self, handler: Arc<dyn Handler>) -> io::Result<ControlServer> {
        let (wake_read, wake_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let path = self.path.clone();
        let thread = thread::Builder::new()
            .name("control".into())
            .spawn(move || self.answer_until_stopped(&*handler, wake_read))?;
        Ok(ControlServer {
            path,
            wake: wake_write,
            thread: Some(thread),
        })
    }

    fn answer_until_stopped(self, handler: &dyn Handler, wake: OwnedFd) {
        loop {
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!("the control socket stops answering: poll failed: {e}");
                    return;
                }
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            match self.listener.accept() {
                Ok((stream, _)) => answer(stream, handler),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => debug!("control socket accept failed: {e}"),
            }
        }
    }
}

/// The answering thread; stopping it removes the socket.
pub struct ControlServer {
    path: PathBuf,
    wake: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops answering once the request in hand (if any) is answered, and removes the socket.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        let _ = write(&self.wake, b"x");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shut();
    }
}

/// `PATH.PID.new` beside the final path, so the rename stays within one directory.
fn staging_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.new", std::process::id()));
    PathBuf::from(name)
}

/// Reads one request, answers it, closes the connection. Only the daemon's own user and root
/// are answered: the socket's mode says so already, and the peer's credentials say it again
/// should the mode have been widened by hand.
fn answer(stream: UnixStream, handler: &dyn Handler) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(CLIENT_IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(CLIENT_IO_TIMEOUT)).is_err()
    {
        return;
    }
    let answer = match peer_allowed(&stream) {
        false => Answer::Refused {
            reason: "only the daemon's user and root may use the control socket".into(),
        },
        true => match read_request(&stream) {
            Ok(request) => handler.handle(request),
            Err(reason) => Answer::Refused { reason },
        },
    };
    let mut stream = stream;
    if let Err(e) = stream.write_all(&encode(&answer)) {
        debug!("control client went away before its answer: {e}");
    }
    // Closing with unread bytes (an oversized request) would reset the connection and could
    // throw the answer away on the client's side: read what is already there first, bounded.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        for _ in 0..DRAIN_READS {
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

fn peer_allowed(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(credentials) => {
            let uid = Uid::from_raw(credentials.uid());
            uid.is_root() || uid == Uid::effective()
        }
        Err(_) => false,
    }
}

/// One line, at most [`MAX_REQUEST_BYTES`]; anything else is refused with a reason.
fn read_request(stream: &UnixStream) -> Result<Request, String> {
    let mut line = Vec::with_capacity(128);
    let limit = u64::try_from(MAX_REQUEST_BYTES + 1).unwrap_or(u64::MAX);
    BufReader::new(stream.take(limit))
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() > MAX_REQUEST_BYTES {
        return Err(format!("request longer than {MAX_REQUEST_BYTES} bytes"));
    }
    decode_request(&line).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::client::{ask, AskError};
    use super::super::protocol::{Reply, StatusReport};
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Mutex;

    /// Answers status with its pid field set to how many requests it has seen, and refuses the
    /// rest, so the tests see which request reached it.
    #[derive(Default)]
    struct Counting(Mutex<Vec<Request>>);

    impl Handler for Counting {
        fn handle(&self, request: Request) -> Answer {
            let mut seen = self.0.lock().unwrap();
            seen.push(request.clone());
            match request {
                Request::Status => Answer::Done(Reply::Status(Box::new(StatusReport {
                    pid: u32::try_from(seen.len()).unwrap(),
                    ..StatusReport::default()
                }))),
                other => Answer::Refused {
                    reason: format!("{other:?} is not for this test"),
                },
            }
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_request_is_answered_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("control.sock");
        let handler = Arc::new(Counting::default());
        let server = ControlSocket::bind(&path)
            .unwrap()
            .serve(handler.clone())
            .unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        for expected in 1..=3 {
            let Answer::Done(Reply::Status(status)) = ask(&path, &Request::Status, WAIT).unwrap()
            else {
                panic!("status was not answered");
            };
            assert_eq!(status.pid, expected);
        }
        let refused = ask(&path, &Request::Flush, WAIT).unwrap();
        assert!(matches!(refused, Answer::Refused { .. }));
        server.stop();
        assert!(!path.exists(), "stopping removes the socket");
        assert!(matches!(
            ask(&path, &Request::Status, WAIT),
            Err(AskError::NotRunning(_))
        ));
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // A crashed run's socket: bound once, nobody listening any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let first = ControlSocket::bind(&path)
            .unwrap()
            .serve(Arc::new(Counting::default()))
            .unwrap();
        match ControlSocket::bind(&path) {
            Err(ServeError::InUse(p)) => assert_eq!(p, path),
            Err(other) => panic!("expected InUse, got {other}"),
            Ok(_) => panic!("a second daemon took a live socket"),
        }
        assert!(
            ask(&path, &Request::Status, WAIT).is_ok(),
            "the first still answers"
        );
        first.stop();

        let file = dir.path().join("not-a-socket");
        fs::write(&file, "admin's file").unwrap();
        assert!(matches!(
            ControlSocket::bind(&file),
            Err(ServeError::NotASocket(_))
        ));
        assert_eq!(fs::read_to_string(&file).unwrap(), "admin's file");
    }

    #[test]
    fn hostile_clients_are_refused_and_cannot_stall_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let handler = Arc::new(Counting::default());
        let _server = ControlSocket::bind(&path)
            .unwrap()
            .serve(handler.clone())
            .unwrap();
        let read_answer = |mut stream: UnixStream| {
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        };

        let mut oversized = UnixStream::connect(&path).unwrap();
        let _ = oversized.write_all(&vec![b'x'; MAX_REQUEST_BYTES * 4]);
        assert!(read_answer(oversized).contains("\"refused\""));

        let mut garbage = UnixStream::connect(&path).unwrap();
        garbage.write_all(b"{\"command\":\"rm -rf /\"}\n").unwrap();
        assert!(read_answer(garbage).contains("not a request nfsentry understands"));

        // A client that connects and says nothing holds the socket for the I/O timeout only.
        let silent = UnixStream::connect(&path).unwrap();
        let started = std::time::Instant::now();
        assert!(ask(&path, &Request::Status, WAIT).is_ok());
        assert!(started.elapsed() < CLIENT_IO_TIMEOUT + Duration::from_secs(2));
        drop(silent);
        assert_eq!(*handler.0.lock().unwrap(), vec![Request::Status]);
    }
}
