//! Handshake cookies: the sequence number nfsentry puts in the SYN-ACK it answers a SYN to a bait
//! port with, and the check that an ACK carries it back. The cookie is a keyed MAC (SipHash-2-4)
//! of the connection's addresses and ports and a time slot, so no state is kept per SYN: a spoofed
//! SYN flood costs nothing to answer, and only a host that received the SYN-ACK can send the ACK
//! that matches it. This is the evidence that a source address is real.
//!
//! It does no I/O beyond drawing the secret ([`Cookies::generate`]), reads no clock (the time is
//! passed in), and neither builds nor reads packets (that is [`crate::forge`]).

use std::fmt;
use std::hash::Hasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use siphasher::sip::SipHasher24;

/// How long one time slot lasts. An answer is accepted in the slot its challenge was made in and
/// the next one, so for between one and two slots: plenty for a handshake (the peer's kernel
/// answers a SYN-ACK at once, and retransmits its SYN, which gets a fresh challenge, within
/// seconds), and short enough that a cookie seen on the wire is soon worthless.
pub const DEFAULT_SLOT: Duration = Duration::from_secs(64);

/// Bytes of the secret key: SipHash takes 128 bits.
pub const SECRET_BYTES: usize = 16;

/// One TCP connection as its initiator sent it: `src`:`sport` is the peer, `dst`:`dport` this
/// host's bait port. The SYN, the ACK that answers the challenge and any RST from the peer all
/// travel in this direction, so they all name the same flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// The secret and the slot clock. Cloning shares nothing: both copies accept the same answers.
#[derive(Clone)]
pub struct Cookies {
    secret: [u8; SECRET_BYTES],
    slot: Duration,
    epoch: Instant,
}

// The secret never reaches a log line, not even through `{:?}`.
impl fmt::Debug for Cookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cookies")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Why no secret could be drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot draw a secret for the handshake cookies from the system's random source: {0}")]
pub struct SecretError(getrandom::Error);

impl Cookies {
    /// Cookies with a fresh random secret from the kernel (getrandom(2)); slots are counted from
    /// `epoch`. A restart draws a new secret, so challenges sent before it are no longer answered
    /// correctly: their peers simply look unverified, as after a lost SYN-ACK.
    pub fn generate(slot: Duration, epoch: Instant) -> Result<Cookies, SecretError> {
        let mut secret = [0; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(SecretError)?;
        Ok(Cookies::from_secret(secret, slot, epoch))
    }

    /// Cookies with a given secret, for tests and for several processes that must agree. A slot
    /// shorter than a second is raised to one second.
    pub fn from_secret(secret: [u8; SECRET_BYTES], slot: Duration, epoch: Instant) -> Cookies {
        Cookies {
            secret,
            slot: slot.max(Duration::from_secs(1)),
            epoch,
        }
    }

    /// The slot length in force.
    pub fn slot(&self) -> Duration {
        self.slot
    }

    /// The sequence number for the SYN-ACK that answers `flow`'s SYN at `now`.
    pub fn challenge(&self, flow: &Flow, now: Instant) -> u32 {
        self.mac(flow, self.slot_at(now))
    }

    /// Whether `ack_number`, the acknowledgement number of a segment of `flow` arriving at `now`,
    /// acknowledges a SYN-ACK challenge made in this slot or the one before: it must be the
    /// cookie plus one, since the SYN-ACK's SYN takes one sequence number.
    ///
    /// An ACK that passes proves a completed handshake: the peer received the SYN-ACK at the
    /// source address and chose to go on. A RST proves nothing and cannot even be tied to the
    /// challenge: a kernel answers an unexpected SYN-ACK with a RST whose sequence number is the
    /// SYN-ACK's acknowledgement (the SYN's own number plus one), so it carries no cookie, and an
    /// innocent host whose address a scanner spoofed sends exactly that.
    pub fn is_answer(&self, flow: &Flow, ack_number: u32, now: Instant) -> bool {
        self.was_challenged_with(flow, ack_number.wrapping_sub(1), now)
    }

    fn was_challenged_with(&self, flow: &Flow, cookie: u32, now: Instant) -> bool {
        let slot = self.slot_at(now);
        // The previous slot too, so a challenge made just before a slot ends still counts; at the
        // very first slot there is none before it.
        self.mac(flow, slot) == cookie
            || slot
                .checked_sub(1)
                .is_some_and(|previous| self.mac(flow, previous) == cookie)
    }

    /// Slots elapsed since the epoch; a `now` before the epoch is slot 0.
    fn slot_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch);
        // `slot` is at least a second, so this cannot divide by zero.
        elapsed.as_secs() / self.slot.as_secs().max(1)
    }

    /// SipHash-2-4 of one fixed-layout message, cut to 32 bits. The family tag keeps an IPv4 flow
    /// from ever hashing like an IPv6 one whose bytes happen to match.
    fn mac(&self, flow: &Flow, slot: u64) -> u32 {
        let mut message = [0u8; MESSAGE_BYTES];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(field) = message.get_mut(at..at + bytes.len()) {
                field.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        for address in [flow.src, flow.dst] {
            match address {
                IpAddr::V4(v4) => {
                    put(&[4]);
                    put(&v4.to_ipv6_mapped().octets());
                }
                IpAddr::V6(v6) => {
                    put(&[6]);
                    put(&v6.octets());
                }
            }
        }
        put(&flow.sport.to_be_bytes());
        put(&flow.dport.to_be_bytes());
        put(&slot.to_be_bytes());
        let mut hasher = SipHasher24::new_with_key(&self.secret);
        hasher.write(&message);
        // The low half of a 64-bit MAC is as unpredictable as any other 32 bits of it.
        hasher.finish() as u32
    }
}

/// Two tagged addresses, two ports, the slot.
const MESSAGE_BYTES: usize = 2 * (1 + 16) + 2 + 2 + 8;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SECRET: [u8; SECRET_BYTES] = *b"0123456789abcdef";

    fn flow_v4() -> Flow {
        Flow {
            src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            sport: 40000,
            dport: 23,
        }
    }

    fn flow_v6() -> Flow {
        Flow {
            src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
            sport: 40000,
            dport: 23,
        }
    }

    fn cookies(epoch: Instant) -> Cookies {
        Cookies::from_secret(SECRET, DEFAULT_SLOT, epoch)
    }

    /// The reference vectors of the SipHash paper (key 00..0f, message 00..n-1), so the MAC is
    /// SipHash-2-4 and not the 1-3 variant std's hasher uses.
    #[test]
    fn the_mac_is_siphash_2_4() {
        let key: [u8; 16] = std::array::from_fn(|i| i as u8);
        let message: Vec<u8> = (0u8..15).collect();
        let vectors = [(0, 0x726f_db47_dd0e_0e31u64), (15, 0xa129_ca61_49be_45e5)];
        for (length, expected) in vectors {
            let mut hasher = SipHasher24::new_with_key(&key);
            hasher.write(&message[..length]);
            assert_eq!(hasher.finish(), expected, "{length} bytes");
        }
    }

    #[test]
    fn the_cookie_plus_one_is_an_answer_in_the_same_and_the_next_slot() {
        let epoch = Instant::now();
        let c = cookies(epoch);
        for flow in [flow_v4(), flow_v6()] {
            let at_syn = epoch + Duration::from_secs(100);
            let cookie = c.challenge(&flow, at_syn);
            for later in [0, 1, 27, 63, 64, 90] {
                let at_ack = at_syn + Duration::from_secs(later);
                assert!(
                    c.is_answer(&flow, cookie.wrapping_add(1), at_ack),
                    "{later}s"
                );
                assert!(!c.is_answer(&flow, cookie, at_ack), "the cookie itself");
                assert!(!c.is_answer(&flow, cookie.wrapping_add(2), at_ack));
            }
            // 100 s is in slot 1; 192 s is slot 3, two slots on.
            assert!(!c.is_answer(
                &flow,
                cookie.wrapping_add(1),
                epoch + Duration::from_secs(192)
            ));
        }
    }

    #[test]
    fn every_field_of_the_flow_changes_the_cookie() {
        let epoch = Instant::now();
        let c = cookies(epoch);
        let base = flow_v4();
        let cookie = c.challenge(&base, epoch);
        let variants = [
            Flow {
                src: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 8)),
                ..base
            },
            Flow {
                dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
                ..base
            },
            Flow {
                sport: 40001,
                ..base
            },
            Flow { dport: 24, ..base },
            // Source and destination swapped: the reply direction is not the same flow.
            Flow {
                src: base.dst,
                dst: base.src,
                sport: base.dport,
                dport: base.sport,
            },
            // The same four bytes as an IPv4-mapped IPv6 address: another family.
            Flow {
                src: IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped()),
                dst: IpAddr::V6(Ipv4Addr::new(192, 0, 2, 10).to_ipv6_mapped()),
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(c.challenge(&variant, epoch), cookie, "{variant:?}");
            assert!(!c.is_answer(&variant, cookie.wrapping_add(1), epoch));
        }
    }

    #[test]
    fn another_secret_gives_other_cookies() {
        let epoch = Instant::now();
        let mine = cookies(epoch);
        let theirs = Cookies::from_secret(*b"fedcba9876543210", DEFAULT_SLOT, epoch);
        let flow = flow_v6();
        let cookie = mine.challenge(&flow, epoch);
        assert_ne!(theirs.challenge(&flow, epoch), cookie);
        assert!(!theirs.is_answer(&flow, cookie.wrapping_add(1), epoch));
    }

    #[test]
    fn generated_secrets_differ() {
        let epoch = Instant::now();
        let a = Cookies::generate(DEFAULT_SLOT, epoch).expect("getrandom works here");
        let b = Cookies::generate(DEFAULT_SLOT, epoch).expect("getrandom works here");
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.secret, [0; SECRET_BYTES]);
    }

    #[test]
    fn times_before_the_epoch_and_tiny_slots_are_harmless() {
        let epoch = Instant::now() + Duration::from_secs(10);
        let c = Cookies::from_secret(SECRET, Duration::ZERO, epoch);
        assert_eq!(c.slot(), Duration::from_secs(1));
        let early = Instant::now();
        let flow = flow_v4();
        let cookie = c.challenge(&flow, early);
        assert!(c.is_answer(&flow, cookie.wrapping_add(1), early));
        assert!(c.is_answer(&flow, cookie.wrapping_add(1), epoch));
    }

    #[test]
    fn the_secret_is_not_in_the_debug_text() {
        let text = format!("{:?}", cookies(Instant::now()));
        assert!(!text.contains("0123"), "{text}");
        assert!(text.contains("slot"), "{text}");
    }

    /// Over many flows the cookies spread: no two of a thousand collide, as a 32-bit MAC should
    /// almost never do (chance about 1 in 8600).
    #[test]
    fn cookies_spread_over_the_sequence_space() {
        let epoch = Instant::now();
        let c = cookies(epoch);
        let mut seen = std::collections::HashSet::new();
        for port in 1000..2000u16 {
            let flow = Flow {
                sport: port,
                ..flow_v4()
            };
            assert!(seen.insert(c.challenge(&flow, epoch)), "port {port}");
        }
    }
}
