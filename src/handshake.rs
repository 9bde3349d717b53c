//! `verify = "handshake"`: what one TCP segment to a bait port proves about its source, and what
//! to send back. A SYN is answered with a SYN-ACK whose sequence number is a cookie; an ACK that
//! returns the cookie plus one completes a handshake, which no one off the path can fake, so its
//! source address is real and the source is *verified*; it then gets the banner and a RST. A RST
//! in answer proves nothing: it is what the kernel of an innocent host whose address was spoofed
//! sends, and it carries only the SYN's own sequence number plus one, nothing of the cookie.
//!
//! It does no I/O and keeps nothing per peer (the cookie is the state): the caller reads the
//! segment ([`forge::read_tcp`]), passes the time, sends the replies ([`crate::inject`]) and
//! decides what a verified source means for counting and blocking.

use std::time::{Duration, Instant};

use crate::cookie::Cookies;
use crate::forge::{self, TcpSegment};
use crate::packet::TcpFlags;

/// SYN-ACKs sent per second at most, by default. Every SYN-ACK goes to the SYN's source address,
/// which a flood can spoof, so the challenges are a reflection channel; this bounds it far below
/// what it costs the flood to send (each SYN-ACK answers one SYN and is never retransmitted).
pub const DEFAULT_CHALLENGES_PER_SECOND: u32 = 1000;

/// What a segment proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// A SYN, answered with a challenge (in [`Step::replies`]).
    Challenged,
    /// A SYN left unanswered because this second's challenges are spent.
    NotChallenged,
    /// An ACK returning the cookie: a completed handshake from a real address.
    Verified,
    /// The peer acknowledging the banner after a verified handshake: the same connection, not a
    /// new probe.
    AfterBanner,
    /// Nothing that proves a handshake: an ACK probe, a stale or forged answer, any other flag
    /// combination, and every RST, including the one a host's kernel answers an unexpected
    /// SYN-ACK with (which carries nothing of the cookie, so it cannot be told from a RST probe).
    Unrelated,
}

/// The outcome of one segment: what it proves and the packets to send, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub evidence: Evidence,
    /// Whole IP packets from this host to the segment's source, for [`crate::inject`].
    pub replies: Vec<Vec<u8>>,
}

impl Step {
    fn nothing(evidence: Evidence) -> Step {
        Step {
            evidence,
            replies: Vec::new(),
        }
    }
}

/// The handshake check: the cookies, the banner, and the challenge budget.
#[derive(Debug)]
pub struct Handshakes {
    cookies: Cookies,
    banner: Vec<u8>,
    budget: Budget,
}

impl Handshakes {
    /// `banner` is PortSentry's PORT_BANNER (empty for none), cut to [`forge::BANNER_MAX_BYTES`];
    /// at most `challenges_per_second` SYN-ACKs go out per second.
    pub fn new(cookies: Cookies, banner: &[u8], challenges_per_second: u32) -> Handshakes {
        let banner = banner.get(..forge::BANNER_MAX_BYTES).unwrap_or(banner);
        Handshakes {
            cookies,
            banner: banner.to_vec(),
            budget: Budget::new(challenges_per_second),
        }
    }

    /// Judges one segment of a peer arriving at `now` and says what to send back.
    pub fn step(&mut self, segment: &TcpSegment, now: Instant) -> Step {
        let flags = segment.flags.classic();
        let flow = &segment.flow;
        if flags == TcpFlags(TcpFlags::SYN) {
            if !self.budget.take(now) {
                return Step::nothing(Evidence::NotChallenged);
            }
            let cookie = self.cookies.challenge(flow, now);
            return Step {
                evidence: Evidence::Challenged,
                replies: vec![forge::syn_ack(segment, cookie)],
            };
        }
        let handshake_flags = flags.contains(TcpFlags::ACK)
            && !flags.contains(TcpFlags::SYN)
            && !flags.contains(TcpFlags::RST);
        if !handshake_flags {
            return Step::nothing(Evidence::Unrelated);
        }
        let sent = forge::banner_bytes(&self.banner);
        if self.cookies.is_answer(flow, segment.ack, now) {
            let mut replies = Vec::with_capacity(2);
            if sent > 0 {
                replies.push(forge::banner(segment, &self.banner));
            }
            replies.push(forge::reset(segment, sent));
            return Step {
                evidence: Evidence::Verified,
                replies,
            };
        }
        if sent > 0
            && self
                .cookies
                .is_answer(flow, segment.ack.wrapping_sub(sent), now)
        {
            // The peer read the banner before our RST reached it; the RST is sent again, from
            // where the peer now is, in case the first was lost.
            let mut answered = *segment;
            answered.ack = segment.ack.wrapping_sub(sent);
            return Step {
                evidence: Evidence::AfterBanner,
                replies: vec![forge::reset(&answered, sent)],
            };
        }
        Step::nothing(Evidence::Unrelated)
    }
}

/// At most `per_second` challenges in each whole second.
#[derive(Debug)]
struct Budget {
    per_second: u32,
    left: u32,
    second_start: Option<Instant>,
}

impl Budget {
    fn new(per_second: u32) -> Budget {
        Budget {
            per_second,
            left: per_second,
            second_start: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let new_second = self.second_start.map_or(true, |start| {
            now.saturating_duration_since(start) >= Duration::from_secs(1)
        });
        if new_second {
            self.second_start = Some(now);
            self.left = self.per_second;
        }
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookie::{Flow, DEFAULT_SLOT};
    use std::net::{IpAddr, Ipv6Addr};

    const BANNER: &[u8] = b"220 mail ESMTP\r\n";
    const PEER_SEQ: u32 = 0x7000_0000;

    fn flow() -> Flow {
        Flow {
            src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7)),
            dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
            sport: 40000,
            dport: 25,
        }
    }

    fn segment(flags: u8, seq: u32, ack: u32) -> TcpSegment {
        TcpSegment {
            flow: flow(),
            seq,
            ack,
            flags: TcpFlags(flags),
            payload_len: 0,
        }
    }

    fn handshakes(banner: &[u8], epoch: Instant) -> Handshakes {
        let cookies = Cookies::from_secret(*b"0123456789abcdef", DEFAULT_SLOT, epoch);
        Handshakes::new(cookies, banner, DEFAULT_CHALLENGES_PER_SECOND)
    }

    /// The cookie the SYN-ACK in `step` carries.
    fn cookie_of(step: &Step) -> u32 {
        let [reply] = step.replies.as_slice() else {
            panic!("one reply expected: {step:?}");
        };
        forge::read_tcp(reply).expect("a TCP reply").seq
    }

    #[test]
    fn a_connect_is_challenged_verified_and_sent_banner_and_reset() {
        let now = Instant::now();
        let mut h = handshakes(BANNER, now);
        let challenge = h.step(&segment(TcpFlags::SYN, PEER_SEQ, 0), now);
        assert_eq!(challenge.evidence, Evidence::Challenged);
        let cookie = cookie_of(&challenge);

        let ack = segment(TcpFlags::ACK, PEER_SEQ + 1, cookie.wrapping_add(1));
        let verified = h.step(&ack, now + Duration::from_millis(1));
        assert_eq!(verified.evidence, Evidence::Verified);
        let replies: Vec<_> = verified
            .replies
            .iter()
            .map(|packet| forge::read_tcp(packet).expect("a TCP reply"))
            .collect();
        let [banner, reset] = replies.as_slice() else {
            panic!("banner and reset expected: {replies:?}");
        };
        assert_eq!(banner.flags, TcpFlags(TcpFlags::PSH | TcpFlags::ACK));
        assert_eq!(banner.payload_len, BANNER.len() as u32);
        assert_eq!(banner.seq, cookie.wrapping_add(1));
        assert_eq!(reset.flags, TcpFlags(TcpFlags::RST | TcpFlags::ACK));
        assert_eq!(
            reset.seq,
            cookie.wrapping_add(1).wrapping_add(BANNER.len() as u32)
        );

        // The peer acknowledges the banner before the RST reaches it.
        let after = segment(
            TcpFlags::ACK,
            PEER_SEQ + 1,
            cookie.wrapping_add(1 + BANNER.len() as u32),
        );
        let step = h.step(&after, now + Duration::from_millis(2));
        assert_eq!(step.evidence, Evidence::AfterBanner);
        assert_eq!(cookie_of(&step), reset.seq);
    }

    #[test]
    fn without_a_banner_a_verified_peer_gets_the_reset_alone() {
        let now = Instant::now();
        let mut h = handshakes(b"", now);
        let cookie = cookie_of(&h.step(&segment(TcpFlags::SYN, PEER_SEQ, 0), now));
        let step = h.step(
            &segment(TcpFlags::ACK, PEER_SEQ + 1, cookie.wrapping_add(1)),
            now,
        );
        assert_eq!(step.evidence, Evidence::Verified);
        let [reset] = step.replies.as_slice() else {
            panic!("{step:?}");
        };
        let reset = forge::read_tcp(reset).expect("a TCP reply");
        assert_eq!(reset.seq, cookie.wrapping_add(1));
        assert_eq!(reset.flags, TcpFlags(TcpFlags::RST | TcpFlags::ACK));
    }

    #[test]
    fn answers_that_prove_nothing_get_nothing() {
        let now = Instant::now();
        let mut h = handshakes(BANNER, now);
        let cookie = cookie_of(&h.step(&segment(TcpFlags::SYN, PEER_SEQ, 0), now));
        let cases = [
            // What a spoofed host's kernel answers the SYN-ACK with: the SYN's number plus one.
            (segment(TcpFlags::RST, PEER_SEQ + 1, 0), Evidence::Unrelated),
            // A RST, even one that names the cookie, completes no handshake.
            (
                segment(
                    TcpFlags::RST | TcpFlags::ACK,
                    PEER_SEQ + 1,
                    cookie.wrapping_add(1),
                ),
                Evidence::Unrelated,
            ),
            // A blind guess, an ACK scan, a stale cookie.
            (
                segment(TcpFlags::ACK, PEER_SEQ + 1, 12345),
                Evidence::Unrelated,
            ),
            (
                segment(TcpFlags::ACK, PEER_SEQ + 1, cookie),
                Evidence::Unrelated,
            ),
            (segment(TcpFlags::RST, 77, 0), Evidence::Unrelated),
            // Flag sets no handshake answer has, even with the right number.
            (
                segment(
                    TcpFlags::SYN | TcpFlags::ACK,
                    PEER_SEQ,
                    cookie.wrapping_add(1),
                ),
                Evidence::Unrelated,
            ),
            (segment(TcpFlags::FIN, PEER_SEQ + 1, 0), Evidence::Unrelated),
            (
                segment(0, PEER_SEQ + 1, cookie.wrapping_add(1)),
                Evidence::Unrelated,
            ),
        ];
        for (segment, evidence) in cases {
            let step = h.step(&segment, now);
            assert_eq!(step.evidence, evidence, "{segment:?}");
            assert!(step.replies.is_empty(), "{segment:?}");
        }
        // The right ACK from another port is someone else's answer.
        let mut elsewhere = segment(TcpFlags::ACK, PEER_SEQ + 1, cookie.wrapping_add(1));
        elsewhere.flow.sport += 1;
        assert_eq!(h.step(&elsewhere, now).evidence, Evidence::Unrelated);
        // Two slots later the cookie is worthless.
        let late = now + 2 * DEFAULT_SLOT;
        let ack = segment(TcpFlags::ACK, PEER_SEQ + 1, cookie.wrapping_add(1));
        assert_eq!(h.step(&ack, late).evidence, Evidence::Unrelated);
    }

    #[test]
    fn an_ecn_syn_is_challenged_too() {
        let now = Instant::now();
        let mut h = handshakes(BANNER, now);
        let ecn_syn = segment(TcpFlags::SYN | TcpFlags::ECE | TcpFlags::CWR, PEER_SEQ, 0);
        assert_eq!(h.step(&ecn_syn, now).evidence, Evidence::Challenged);
    }

    #[test]
    fn challenges_are_rationed_per_second() {
        let now = Instant::now();
        let cookies = Cookies::from_secret([7; 16], DEFAULT_SLOT, now);
        let mut h = Handshakes::new(cookies, b"", 3);
        let syn = segment(TcpFlags::SYN, PEER_SEQ, 0);
        let evidence: Vec<_> = (0..5).map(|_| h.step(&syn, now).evidence).collect();
        assert_eq!(
            evidence,
            [
                Evidence::Challenged,
                Evidence::Challenged,
                Evidence::Challenged,
                Evidence::NotChallenged,
                Evidence::NotChallenged
            ]
        );
        let next_second = now + Duration::from_secs(1);
        assert_eq!(h.step(&syn, next_second).evidence, Evidence::Challenged);
        // Answers are never rationed.
        let cookie = Cookies::from_secret([7; 16], DEFAULT_SLOT, now).challenge(&flow(), now);
        for _ in 0..3 {
            h.step(&syn, next_second);
        }
        let ack = segment(TcpFlags::ACK, PEER_SEQ + 1, cookie.wrapping_add(1));
        assert_eq!(h.step(&ack, next_second).evidence, Evidence::Verified);
    }
}
