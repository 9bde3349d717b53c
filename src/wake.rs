//! A channel whose receiver sleeps in `poll`: each send also writes a byte to a pipe whose read
//! end the receiving thread polls beside its sockets, so a message is taken at once instead of
//! at the thread's next timeout or packet.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, SendError, Sender, TryRecvError};

use nix::fcntl::OFlag;
use nix::unistd::{pipe2, read, write};

/// The sending end; clones share the pipe.
#[derive(Debug, Clone)]
pub struct WakingSender<T> {
    messages: Sender<T>,
    wake: std::sync::Arc<OwnedFd>,
}

/// The receiving end: poll [`WakingReceiver::fd`], then [`WakingReceiver::take`].
#[derive(Debug)]
pub struct WakingReceiver<T> {
    messages: Receiver<T>,
    wake: OwnedFd,
}

/// A new channel; fails only if the process is out of file descriptors.
pub fn channel<T>() -> io::Result<(WakingSender<T>, WakingReceiver<T>)> {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    let (messages_tx, messages_rx) = mpsc::channel();
    Ok((
        WakingSender {
            messages: messages_tx,
            wake: std::sync::Arc::new(write_end),
        },
        WakingReceiver {
            messages: messages_rx,
            wake: read_end,
        },
    ))
}

impl<T> WakingSender<T> {
    /// Queues `message` and wakes the receiver; fails only when the receiver is gone.
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        self.messages.send(message)?;
        // A full pipe already holds a wake-up, and the write end never blocks.
        let _ = write(self.wake.as_fd(), b"w");
        Ok(())
    }
}

impl<T> WakingReceiver<T> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Empties the pipe, then takes every message waiting. A message sent after the pipe was
    /// emptied wakes the next poll, so none is left behind.
    pub fn take(&self) -> Vec<T> {
        self.clear_wake_ups();
        self.messages.try_iter().collect()
    }

    /// Empties the pipe; call it before reading the messages with
    /// [`WakingReceiver::try_recv`], for the reason [`WakingReceiver::take`] gives.
    pub fn clear_wake_ups(&self) {
        let mut sink = [0u8; 64];
        while matches!(read(&self.wake, &mut sink), Ok(n) if n > 0) {}
    }

    /// The next message, or why there is none: none waiting, or every sender gone.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.messages.try_recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn readable<T>(receiver: &WakingReceiver<T>) -> bool {
        let mut fds = [PollFd::new(receiver.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    #[test]
    fn a_send_wakes_the_poll_and_take_empties_both_the_pipe_and_the_channel() {
        let (tx, rx) = channel().unwrap();
        assert!(!readable(&rx));
        tx.send(1).unwrap();
        tx.clone().send(2).unwrap();
        assert!(readable(&rx));
        assert_eq!(rx.take(), vec![1, 2]);
        assert!(!readable(&rx), "taken messages leave no wake-up behind");
        assert!(rx.take().is_empty());
    }

    #[test]
    fn the_receiver_learns_that_every_sender_is_gone() {
        let (tx, rx) = channel::<u8>().unwrap();
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        drop(tx);
        let mut fds = [PollFd::new(rx.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap();
        assert!(fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_send_to_a_dropped_receiver_fails() {
        let (tx, rx) = channel().unwrap();
        drop(rx);
        assert!(tx.send(1).is_err());
    }
}
