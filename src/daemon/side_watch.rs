//! Watches a queue reader's other descriptors (signals, control commands, releases, NFLOG, the
//! host's addresses) on a thread of its own, so that the reader can sleep in its queue's
//! receive instead of in `poll`: at a low packet rate every packet is a wake-up, and a receive
//! that waits is half the system calls of a poll followed by a receive, and a fraction of the
//! cost of polling half a dozen descriptors.
//!
//! When one of them is readable, the watcher raises a flag, wakes the reader through its queue
//! ([`QueueWaker`]) and waits until the reader says it has been through them; only then does it
//! poll again, so it never spins on a descriptor the reader has not read yet. It reads nothing
//! itself: the reader owns what the descriptors carry.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use log::warn;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use crate::queue::QueueWaker;

/// The reader's side of a watcher; dropping it stops the watcher's thread and waits for it.
pub(crate) struct SideWatch {
    attention: Arc<AtomicBool>,
    resume: Option<mpsc::Sender<()>>,
    /// Closed on drop: the watcher sees its read end hang up and stops.
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl SideWatch {
    /// Starts watching copies of `descriptors` (dup'ed here, so the reader keeps its own) for
    /// readability, waking the reader through `waker`.
    pub(crate) fn spawn(
        name: String,
        descriptors: &[BorrowedFd<'_>],
        waker: QueueWaker,
    ) -> std::io::Result<SideWatch> {
        let watched = descriptors
            .iter()
            .map(|fd| fd.try_clone_to_owned())
            .collect::<std::io::Result<Vec<OwnedFd>>>()?;
        let (stop_read, stop_write) = pipe2(OFlag::O_CLOEXEC)?;
        let attention = Arc::new(AtomicBool::new(false));
        let (resume_tx, resume_rx) = mpsc::channel();
        let watcher = Watcher {
            watched,
            stop: stop_read,
            attention: attention.clone(),
            resume: resume_rx,
            waker,
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || watcher.run())?;
        Ok(SideWatch {
            attention,
            resume: Some(resume_tx),
            stop: Some(stop_write),
            thread: Some(thread),
        })
    }

    /// Whether something the watcher watches wants the reader's attention. When true, the
    /// reader goes through its descriptors, then calls [`SideWatch::resume`].
    pub(crate) fn wants_attention(&self) -> bool {
        self.attention.swap(false, Ordering::Acquire)
    }

    /// The reader has been through its descriptors: the watcher may poll them again.
    pub(crate) fn resume(&self) {
        if let Some(resume) = &self.resume {
            let _ = resume.send(());
        }
    }
}

impl Drop for SideWatch {
    fn drop(&mut self) {
        // Either wakes the watcher wherever it sleeps: its poll sees the pipe hang up, its wait
        // for the reader sees the channel close.
        self.stop.take();
        self.resume.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Watcher {
    watched: Vec<OwnedFd>,
    stop: OwnedFd,
    attention: Arc<AtomicBool>,
    resume: mpsc::Receiver<()>,
    waker: QueueWaker,
}

impl Watcher {
    fn run(mut self) {
        loop {
            let mut fds: Vec<PollFd> = Vec::with_capacity(self.watched.len() + 1);
            fds.push(PollFd::new(self.stop.as_fd(), PollFlags::POLLIN));
            fds.extend(
                self.watched
                    .iter()
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    // Not expected with valid descriptors; the reader's idle wake-ups still go
                    // through everything once a second, so nothing is lost, only later.
                    warn!("watching the reader's other descriptors failed: {e}");
                    return;
                }
            }
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                return;
            }
            // A descriptor whose writers are all gone (a channel nobody sends on any more, e.g.
            // control commands without a control socket) says so at every poll: the reader is
            // told once, then it is watched no more.
            let hung_up: Vec<bool> = fds[1..]
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)))
                .collect();
            drop(fds);
            let mut hung_up = hung_up.into_iter();
            self.watched.retain(|_| !hung_up.next().unwrap_or(false));
            self.attention.store(true, Ordering::Release);
            if let Err(e) = self.waker.wake() {
                warn!("cannot wake the queue reader: {e}; it looks again within a second");
            }
            if self.resume.recv().is_err() {
                return;
            }
        }
    }
}
