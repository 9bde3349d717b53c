//! The receive buffers of one queue and the recvmmsg headers that point into them.
//!
//! The headers are built once, when the queue opens, and serve every receive call after: the
//! kernel writes only each header's length and flags, and the buffers' contents. Building 64 of
//! them for each call (zeroing 5 KiB, then pointing each at its slot) was most of a receive's
//! own work at a paced rate, where a call reads one packet.
//!
//! The buffers and the header arrays are held by raw pointers taken once from their boxes, so
//! that no later borrow of a box can invalidate the pointers the headers hold (a box is a unique
//! owner: moving or reborrowing it would). Everything is freed in `Drop`.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use nix::errno::Errno;

/// Packets read per receive call at most. Under a deep queue one call and one verdict datagram
/// serve this many packets; past a few dozen the saving per packet is too small to matter.
pub(super) const RECEIVE_SLOTS: usize = 64;
/// Room for one datagram: the largest copy range plus every attribute the kernel may add (packet
/// header, marks, interfaces, hardware address, timestamp...). The buffer is allocated zeroed and
/// the kernel only writes what a packet needs, so small packets touch a page or two of a slot.
pub(super) const SLOT_BYTES: usize = 68 << 10;

/// RECEIVE_SLOTS buffers of SLOT_BYTES, back to back, and one iovec and one mmsghdr per buffer.
pub(super) struct ReceiveSlots {
    buffers: NonNull<[u8]>,
    vectors: NonNull<[libc::iovec]>,
    headers: NonNull<[libc::mmsghdr]>,
}

// SAFETY: the pointers are to heap memory this value alone owns (no other pointer to it exists
// outside the headers, which are part of it), so it can move to another thread as a whole.
unsafe impl Send for ReceiveSlots {}

impl ReceiveSlots {
    pub(super) fn new() -> ReceiveSlots {
        let buffers = NonNull::from(Box::leak(
            vec![0u8; RECEIVE_SLOTS * SLOT_BYTES].into_boxed_slice(),
        ));
        let mut vectors = NonNull::from(Box::leak(
            (0..RECEIVE_SLOTS)
                .map(|slot| libc::iovec {
                    // SAFETY: slot * SLOT_BYTES is inside the buffers' allocation.
                    iov_base: unsafe { buffers.cast::<u8>().add(slot * SLOT_BYTES) }
                        .as_ptr()
                        .cast(),
                    iov_len: SLOT_BYTES,
                })
                .collect::<Box<[_]>>(),
        ));
        // SAFETY: just allocated, and not aliased yet.
        let vector_base = unsafe { vectors.as_mut() }.as_mut_ptr();
        let headers = NonNull::from(Box::leak(
            (0..RECEIVE_SLOTS)
                .map(|slot| {
                    // SAFETY: all-zero is a valid mmsghdr (null pointers, zero lengths); this
                    // also clears the padding some libcs declare as fields.
                    let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    // SAFETY: slot < RECEIVE_SLOTS, the vectors' length.
                    header.msg_hdr.msg_iov = unsafe { vector_base.add(slot) };
                    header.msg_hdr.msg_iovlen = 1;
                    header
                })
                .collect::<Box<[_]>>(),
        ));
        ReceiveSlots {
            buffers,
            vectors,
            headers,
        }
    }

    /// Reads up to one datagram per slot, in the first `offered` slots (at least one, at most
    /// all), with one recvmmsg call; returns how many slots were filled.
    ///
    /// The sender's address is not asked for: the socket is connected to the kernel, which then
    /// refuses datagrams from anyone else (netlink_wire's socket tests show it); anything that
    /// slipped in between the socket's bind and its connect was read, and ignored, by `open`'s
    /// acknowledged requests before the first packet. Copying an address out per packet is a
    /// measurable part of reading a deep queue.
    pub(super) fn receive(
        &mut self,
        socket: BorrowedFd<'_>,
        flags: libc::c_int,
        offered: usize,
    ) -> Result<usize, Errno> {
        let offered = offered.clamp(1, RECEIVE_SLOTS);
        // SAFETY: the descriptor is open (borrowed) for the call. Each header points at its own
        // iovec, which points at its own disjoint slot of the buffers; all are owned by `self`,
        // borrowed mutably for the call, and the kernel writes no more than the lengths given,
        // in no more than the `offered` (<= RECEIVE_SLOTS) headers given.
        // No address, control data or timeout is passed.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.cast::<libc::mmsghdr>().as_ptr(),
                offered as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        Ok(usize::try_from(Errno::result(count)?).unwrap_or_default())
    }

    /// The first `count` datagrams the last [`receive`](Self::receive) read: each one's bytes
    /// and whether it was longer than its slot (MSG_TRUNC: only its start is there).
    pub(super) fn datagrams(&self, count: usize) -> impl Iterator<Item = (&[u8], bool)> {
        // SAFETY: no mutable borrow of the buffers or headers exists while `self` is borrowed
        // (the kernel writes them only within `receive`, which takes `&mut self`).
        let (buffers, headers) = unsafe { (self.buffers.as_ref(), self.headers.as_ref()) };
        buffers
            .chunks(SLOT_BYTES)
            .zip(headers)
            .take(count.min(RECEIVE_SLOTS))
            .map(|(slot, header)| {
                let length = (header.msg_len as usize).min(SLOT_BYTES);
                let cut = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                (slot.get(..length).unwrap_or_default(), cut)
            })
    }

    /// All of the buffers, for a receive that is not recvmmsg's (the answers to `open`'s
    /// configuration requests).
    pub(super) fn buffer_mut(&mut self) -> &mut [u8] {
        // SAFETY: `&mut self` is the only way to the buffers; the headers' pointers are used only
        // by `receive`, which also takes `&mut self`.
        unsafe { self.buffers.as_mut() }
    }
}

impl Drop for ReceiveSlots {
    fn drop(&mut self) {
        // SAFETY: each pointer came from Box::leak in `new` and is freed once, here.
        unsafe {
            drop(Box::from_raw(self.headers.as_ptr()));
            drop(Box::from_raw(self.vectors.as_ptr()));
            drop(Box::from_raw(self.buffers.as_ptr()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn datagrams_land_in_their_own_slots_and_long_ones_are_marked_cut() {
        let (sender, receiver) = UnixDatagram::pair().unwrap();
        let long = vec![7u8; SLOT_BYTES + 10];
        sender.send(b"first").unwrap();
        sender.send(&long).unwrap();
        sender.send(b"third").unwrap();
        let mut slots = ReceiveSlots::new();
        // Moved, as a PacketQueue moves to its reader thread: the headers still point right.
        let mut slots =
            std::hint::black_box(Box::new(std::mem::replace(&mut slots, ReceiveSlots::new())));
        let count = slots
            .receive(receiver.as_fd(), libc::MSG_DONTWAIT, RECEIVE_SLOTS)
            .unwrap();
        assert_eq!(count, 3);
        let read: Vec<(Vec<u8>, bool)> = slots
            .datagrams(count)
            .map(|(bytes, cut)| (bytes.to_vec(), cut))
            .collect();
        assert_eq!(read[0], (b"first".to_vec(), false));
        assert_eq!(read[1].0.len(), SLOT_BYTES);
        assert!(read[1].1, "the long datagram is marked cut");
        assert_eq!(read[2], (b"third".to_vec(), false));

        // The same headers serve the next call: lengths and flags are the new datagrams'.
        sender.send(b"again").unwrap();
        let count = slots
            .receive(receiver.as_fd(), libc::MSG_DONTWAIT, RECEIVE_SLOTS)
            .unwrap();
        assert_eq!(count, 1);
        let again: Vec<_> = slots.datagrams(count).collect();
        assert_eq!(again, vec![(&b"again"[..], false)]);
        assert_eq!(
            slots.receive(receiver.as_fd(), libc::MSG_DONTWAIT, RECEIVE_SLOTS),
            Err(Errno::EAGAIN)
        );
    }

    #[test]
    fn an_offer_of_one_slot_reads_one_datagram_and_leaves_the_rest_queued() {
        let (sender, receiver) = UnixDatagram::pair().unwrap();
        for datagram in [&b"first"[..], b"second", b"third"] {
            sender.send(datagram).unwrap();
        }
        let mut slots = ReceiveSlots::new();
        assert_eq!(
            slots.receive(receiver.as_fd(), libc::MSG_DONTWAIT, 1),
            Ok(1)
        );
        assert_eq!(
            slots.datagrams(1).collect::<Vec<_>>(),
            vec![(&b"first"[..], false)]
        );
        // An offer of none is taken as one: the call always has a slot to fill.
        assert_eq!(
            slots.receive(receiver.as_fd(), libc::MSG_DONTWAIT, 0),
            Ok(1)
        );
        assert_eq!(
            slots.datagrams(1).collect::<Vec<_>>(),
            vec![(&b"second"[..], false)]
        );
        let count = slots
            .receive(receiver.as_fd(), libc::MSG_DONTWAIT, RECEIVE_SLOTS)
            .unwrap();
        assert_eq!(
            slots.datagrams(count).collect::<Vec<_>>(),
            vec![(&b"third"[..], false)]
        );
    }
}
