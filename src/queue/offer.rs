//! How many slots a waiting receive offers the kernel: many when packets are queuing up, one
//! when they come one at a time.
//!
//! recvmmsg with MSG_WAITFORONE, once its first datagram is in, tries the socket again for the
//! next slot, and returns only when a try finds it empty (or the slots run out). At a low rate
//! every packet comes alone, so every receive of many paid for one empty try on top of the bare
//! loop's work. On the reference machine a non-blocking receive that finds a netlink socket
//! empty costs 610 ns, against 275 ns for a bare system call; under a paced flood of 10,000
//! packets/s, the medians of six alternated runs moved by about 0.5 µs of CPU a packet. A queue
//! that is building up, though, wants many packets per call and one verdict datagram for them
//! all.
//!
//! Nothing on the socket says how many packets are waiting, so the reader learns it from its
//! receives:
//! - a receive that offered many and read one found the socket empty right after it: the next
//!   one offers one;
//! - a receive that offered one and returned at once, without sleeping, found its packet
//!   already waiting: the next one offers all the slots.
//!
//! A wrong guess costs only speed, never a packet: every packet is read in order whatever the
//! offer, and the one read that follows a wrong guess corrects it.

use std::time::Duration;

/// A receive of one that took less than this did not sleep: a call that finds its datagram
/// waiting takes a few microseconds, one that sleeps first takes at least a wake-up.
pub(super) const AT_ONCE: Duration = Duration::from_micros(10);

/// The number of slots the next waiting receive offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReceiveOffer {
    slots: usize,
    all: usize,
}

impl ReceiveOffer {
    /// An offer of up to `all` slots, starting with all of them.
    pub(super) fn new(all: usize) -> ReceiveOffer {
        ReceiveOffer { slots: all, all }
    }

    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    /// Whether the next receive must be timed: only a receive of one learns from how long it
    /// took.
    pub(super) fn wants_timing(&self) -> bool {
        self.slots == 1 && self.all > 1
    }

    /// Learns from a waiting receive that read `read` datagrams, in `took` when it was timed.
    pub(super) fn learn(&mut self, read: usize, took: Option<Duration>) {
        self.slots = if self.slots == 1 {
            // One packet at once: it was waiting, so others may be too.
            if read == 1 && took.is_some_and(|took| took < AT_ONCE) {
                self.all
            } else {
                1
            }
        } else if read <= 1 {
            // Nothing, or one packet and then an empty socket.
            1
        } else {
            self.all
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Option<Duration> = Some(Duration::from_millis(3));
    const FAST: Option<Duration> = Some(Duration::from_micros(2));

    #[test]
    fn packets_one_at_a_time_are_read_one_per_offer() {
        let mut offer = ReceiveOffer::new(64);
        assert_eq!(offer.slots(), 64);
        assert!(!offer.wants_timing());
        offer.learn(1, None);
        assert_eq!(offer.slots(), 1);
        assert!(offer.wants_timing());
        // Each packet slept for: the offer stays at one.
        for _ in 0..3 {
            offer.learn(1, SLOW);
            assert_eq!(offer.slots(), 1);
        }
    }

    #[test]
    fn a_packet_found_waiting_opens_all_the_slots_again() {
        let mut offer = ReceiveOffer::new(64);
        offer.learn(1, None);
        offer.learn(1, FAST);
        assert_eq!(offer.slots(), 64);
        // A queue that keeps more than one waiting keeps them all offered.
        offer.learn(17, None);
        assert_eq!(offer.slots(), 64);
        offer.learn(64, None);
        assert_eq!(offer.slots(), 64);
    }

    #[test]
    fn an_idle_wait_that_ran_out_offers_one() {
        let mut offer = ReceiveOffer::new(64);
        offer.learn(0, None);
        assert_eq!(offer.slots(), 1);
        // Ran out while offering one: nothing came at once, so still one.
        offer.learn(0, FAST);
        assert_eq!(offer.slots(), 1);
    }

    #[test]
    fn a_receive_of_one_that_was_not_timed_does_not_open_the_slots() {
        let mut offer = ReceiveOffer::new(64);
        offer.learn(1, None);
        offer.learn(1, None);
        assert_eq!(offer.slots(), 1);
    }

    #[test]
    fn a_single_slot_queue_never_times_its_receives() {
        let mut offer = ReceiveOffer::new(1);
        assert!(!offer.wants_timing());
        offer.learn(1, FAST);
        assert_eq!(offer.slots(), 1);
    }
}
