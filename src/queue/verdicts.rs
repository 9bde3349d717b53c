//! Turns the answers for the packets read in one go into as few verdict messages as the kernel's
//! semantics allow, all to be sent in one datagram. It does no I/O and knows nothing of why a
//! packet got its verdict.
//!
//! A batch verdict (NFQNL_MSG_VERDICT_BATCH) answers every packet *still queued* whose id is not
//! after the one it names. The kernel numbers packets in the order it queues them and delivers
//! them in that order, and it handles the messages of one datagram in order; so a run of accepted
//! packets, read one after the other, is answered by one batch verdict naming the run's last id:
//! everything before the run was answered by the messages before it. A run of one gets a plain
//! verdict, which names exactly its packet.
//!
//! A run of drops is batched the same way, but only once nothing this reader never saw can be
//! left in the queue: a batch reaches every packet still queued up to its id, including any the
//! kernel queued while the socket was being configured, which its configuration requests read
//! past. So the first verdicts after the queue opens begin with a batch drop naming the id just
//! before the first packet read: it sweeps those away unjudged (fail closed, as a full queue
//! does; when there were none the kernel answers ENOENT, which the reader counts as stale and
//! otherwise ignores). From then on every packet still queued before a run's first one has been
//! read, and answered, by this reader.
//!
//! Should ids ever arrive out of order, a batch could reach a packet it was not meant for, so
//! then every packet is answered on its own. A packet message whose id cannot be read is dropped
//! by a batch verdict that reaches up to just before the next packet read: the one drop that
//! cannot name its packet.

use crate::config::Verdict;

use super::wire::{self, Reach, VERDICT_MESSAGE_BYTES};

/// One packet's answer, in the order the packets were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Packet {
        id: u32,
        verdict: Verdict,
    },
    /// A packet message without a readable id.
    Unidentified,
}

/// How many verdict messages of each kind went out; see [`Verdicts::finish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Plain verdicts, one packet each.
    pub single: u64,
    /// Batch verdicts, each for a run of packets.
    pub batch: u64,
}

/// The answers collected since the last [`finish`](Verdicts::finish).
#[derive(Debug)]
pub struct Verdicts {
    queue: u16,
    answers: Vec<Answer>,
    /// A packet without a readable id was the last one read: the next packet's id says where the
    /// batch that drops it must reach.
    unidentified_pending: bool,
    /// Nothing this reader has not read can be queued before the packets it reads next: the
    /// packets queued before its first one have been swept (see the module's notes).
    swept: bool,
    encoded: Vec<u8>,
}

/// Whether `id` comes after `previous` in the kernel's wrapping sequence, as the kernel compares
/// them (`nfq_id_after`).
fn after(id: u32, previous: u32) -> bool {
    (id.wrapping_sub(previous) as i32) > 0
}

impl Verdicts {
    pub fn new(queue: u16, capacity: usize) -> Verdicts {
        Verdicts {
            queue,
            answers: Vec::with_capacity(capacity),
            unidentified_pending: false,
            swept: false,
            encoded: Vec::with_capacity(capacity * VERDICT_MESSAGE_BYTES),
        }
    }

    pub fn push(&mut self, id: u32, verdict: Verdict) {
        self.answers.push(Answer::Packet { id, verdict });
    }

    /// A packet was read whose id is unknown: it is to be dropped.
    pub fn push_unidentified(&mut self) {
        self.answers.push(Answer::Unidentified);
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The verdict messages for everything pushed since the last call, back to back, ready to be
    /// sent as one datagram (empty when there is nothing to say), and how many of each kind.
    pub fn finish(&mut self) -> (&[u8], Sent) {
        self.encoded.clear();
        let mut sent = Sent::default();
        let in_order = self
            .answers
            .iter()
            .filter_map(|answer| match answer {
                Answer::Packet { id, .. } => Some(*id),
                Answer::Unidentified => None,
            })
            .try_fold(None, |previous: Option<u32>, id| match previous {
                Some(previous) if !after(id, previous) => Err(()),
                _ => Ok(Some(id)),
            })
            .is_ok();
        if in_order {
            self.sweep_before_first(&mut sent);
            self.encode_runs(&mut sent);
        } else {
            self.encode_singly(&mut sent);
        }
        self.answers.clear();
        (&self.encoded, sent)
    }

    fn encode_runs(&mut self, sent: &mut Sent) {
        // (last id, verdict, length) of the run being built.
        let mut run: Option<(u32, Verdict, usize)> = None;
        let answers = std::mem::take(&mut self.answers);
        for answer in &answers {
            match *answer {
                Answer::Unidentified => {
                    if let Some(ended) = run.take() {
                        self.put_run(ended, sent);
                    }
                    self.unidentified_pending = true;
                }
                Answer::Packet { id, verdict } => {
                    if std::mem::take(&mut self.unidentified_pending) {
                        // Everything queued before this packet and not yet answered is the
                        // unidentified one(s).
                        self.put(Reach::UpTo, Verdict::Drop, id.wrapping_sub(1), sent);
                    }
                    run = match run {
                        Some((_, same, length)) if same == verdict => {
                            Some((id, verdict, length + 1))
                        }
                        Some(ended) => {
                            self.put_run(ended, sent);
                            Some((id, verdict, 1))
                        }
                        None => Some((id, verdict, 1)),
                    };
                }
            }
        }
        if let Some(ended) = run {
            self.put_run(ended, sent);
        }
        self.answers = answers;
    }

    /// Before the first verdicts this reader sends: a batch drop of whatever was queued before
    /// the first packet it read, so that batches never reach a packet it has not seen.
    fn sweep_before_first(&mut self, sent: &mut Sent) {
        if self.swept {
            return;
        }
        let first = self.answers.iter().find_map(|answer| match answer {
            Answer::Packet { id, .. } => Some(*id),
            Answer::Unidentified => None,
        });
        // An unidentified packet first: its batch drop, up to just before the next packet,
        // sweeps the same way.
        if matches!(self.answers.first(), Some(Answer::Unidentified)) {
            self.swept = first.is_some();
            return;
        }
        let Some(first) = first else {
            return;
        };
        // Ids start at 1: nothing can be queued before the first packet there is.
        if first.wrapping_sub(1) != 0 {
            self.put(Reach::UpTo, Verdict::Drop, first.wrapping_sub(1), sent);
        }
        self.swept = true;
    }

    /// Out of order: each packet on its own, and nothing batched, not even the drop of an
    /// unidentified one.
    fn encode_singly(&mut self, sent: &mut Sent) {
        let answers = std::mem::take(&mut self.answers);
        for answer in &answers {
            if let Answer::Packet { id, verdict } = *answer {
                self.put(Reach::One, verdict, id, sent);
            }
        }
        self.unidentified_pending = false;
        self.answers = answers;
    }

    fn put_run(&mut self, (last_id, verdict, length): (u32, Verdict, usize), sent: &mut Sent) {
        let reach = if length == 1 { Reach::One } else { Reach::UpTo };
        self.put(reach, verdict, last_id, sent);
    }

    fn put(&mut self, reach: Reach, verdict: Verdict, id: u32, sent: &mut Sent) {
        self.encoded
            .extend_from_slice(&wire::verdict_message(reach, self.queue, verdict, id));
        match reach {
            Reach::One => sent.single += 1,
            Reach::UpTo => sent.batch += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink_wire::{read_u16_ne, Messages};

    const QUEUE: u16 = 3;
    use Verdict::{Accept, Drop};

    /// The messages as (batch?, verdict, id).
    fn decoded(bytes: &[u8]) -> Vec<(Reach, Verdict, u32)> {
        Messages::new(bytes)
            .map(|message| {
                let reach = match message.kind {
                    wire::VERDICT => Reach::One,
                    wire::VERDICT_BATCH => Reach::UpTo,
                    other => panic!("not a verdict: {other:#x}"),
                };
                assert_eq!(message.payload.get(2..4), Some(&QUEUE.to_be_bytes()[..]));
                assert_eq!(read_u16_ne(message.payload, 6), Some(2));
                let field = |at: usize| {
                    u32::from_be_bytes(
                        message
                            .payload
                            .get(at..at + 4)
                            .and_then(|b| b.try_into().ok())
                            .unwrap_or_else(|| panic!("short verdict {message:?}")),
                    )
                };
                let verdict = match field(8) {
                    0 => Drop,
                    1 => Accept,
                    other => panic!("verdict {other}"),
                };
                (reach, verdict, field(12))
            })
            .collect()
    }

    fn encode(verdicts: &mut Verdicts, answers: &[(u32, Verdict)]) -> Vec<(Reach, Verdict, u32)> {
        for &(id, verdict) in answers {
            verdicts.push(id, verdict);
        }
        let (bytes, sent) = verdicts.finish();
        let messages = decoded(bytes);
        let batches = messages.iter().filter(|m| m.0 == Reach::UpTo).count() as u64;
        assert_eq!(sent.batch, batches);
        assert_eq!(sent.single + sent.batch, messages.len() as u64);
        messages
    }

    #[test]
    fn a_run_of_accepts_is_one_batch_naming_its_last_id() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        let answers: Vec<_> = (1..65).map(|id| (id, Accept)).collect();
        assert_eq!(
            encode(&mut verdicts, &answers),
            vec![(Reach::UpTo, Accept, 64)]
        );
        assert!(verdicts.is_empty());
        assert_eq!(verdicts.finish().0, &[] as &[u8]);
    }

    #[test]
    fn runs_of_the_same_verdict_are_batched_and_a_run_of_one_names_its_packet() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        let answers = [
            (1, Accept),
            (2, Accept),
            (3, Drop),
            (4, Accept),
            (5, Drop),
            (6, Drop),
            (7, Drop),
            (9, Accept),
        ];
        assert_eq!(
            encode(&mut verdicts, &answers),
            vec![
                (Reach::UpTo, Accept, 2),
                (Reach::One, Drop, 3),
                (Reach::One, Accept, 4),
                (Reach::UpTo, Drop, 7),
                (Reach::One, Accept, 9),
            ]
        );
    }

    #[test]
    fn ids_that_wrap_around_are_still_in_order() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        let answers = [
            (u32::MAX - 1, Accept),
            (u32::MAX, Accept),
            (0, Accept),
            (1, Accept),
        ];
        assert_eq!(
            encode(&mut verdicts, &answers),
            vec![(Reach::UpTo, Drop, u32::MAX - 2), (Reach::UpTo, Accept, 1)]
        );
    }

    #[test]
    fn ids_out_of_order_are_answered_one_by_one() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        let answers = [(5, Accept), (6, Accept), (4, Accept), (7, Drop), (7, Drop)];
        assert_eq!(
            encode(&mut verdicts, &answers),
            vec![
                (Reach::One, Accept, 5),
                (Reach::One, Accept, 6),
                (Reach::One, Accept, 4),
                (Reach::One, Drop, 7),
                (Reach::One, Drop, 7),
            ]
        );
        // The next round batches again, after sweeping what it has not seen.
        assert_eq!(
            encode(&mut verdicts, &[(8, Accept), (9, Accept)]),
            vec![(Reach::UpTo, Drop, 7), (Reach::UpTo, Accept, 9)]
        );
    }

    #[test]
    fn an_unidentified_packet_is_dropped_by_a_batch_up_to_the_next_packet() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        verdicts.push(1, Accept);
        verdicts.push(2, Accept);
        verdicts.push_unidentified();
        verdicts.push(4, Accept);
        verdicts.push(5, Accept);
        let (bytes, _) = verdicts.finish();
        assert_eq!(
            decoded(bytes),
            vec![
                (Reach::UpTo, Accept, 2),
                (Reach::UpTo, Drop, 3),
                (Reach::UpTo, Accept, 5),
            ]
        );
    }

    #[test]
    fn an_unidentified_last_packet_is_dropped_when_the_next_one_is_read() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        verdicts.push(1, Drop);
        verdicts.push_unidentified();
        assert_eq!(decoded(verdicts.finish().0), vec![(Reach::One, Drop, 1)]);
        assert_eq!(
            encode(&mut verdicts, &[(9, Accept)]),
            vec![(Reach::UpTo, Drop, 8), (Reach::One, Accept, 9)]
        );
        // Said once only.
        assert_eq!(
            encode(&mut verdicts, &[(10, Accept)]),
            vec![(Reach::One, Accept, 10)]
        );
    }

    #[test]
    fn the_first_verdicts_sweep_what_was_queued_before_the_first_packet_read_and_only_they() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        // Packets 1 to 9 were queued while the socket was being configured, and read past.
        assert_eq!(
            encode(&mut verdicts, &[(10, Drop), (11, Drop), (12, Accept)]),
            vec![
                (Reach::UpTo, Drop, 9),
                (Reach::UpTo, Drop, 11),
                (Reach::One, Accept, 12)
            ]
        );
        assert_eq!(
            encode(&mut verdicts, &[(13, Drop), (14, Drop)]),
            vec![(Reach::UpTo, Drop, 14)]
        );
        // A reader whose first packet is the queue's first has nothing to sweep.
        let mut fresh = Verdicts::new(QUEUE, 8);
        assert_eq!(
            encode(&mut fresh, &[(1, Drop), (2, Drop)]),
            vec![(Reach::UpTo, Drop, 2)]
        );
    }

    #[test]
    fn nothing_read_says_nothing() {
        let mut verdicts = Verdicts::new(QUEUE, 8);
        let (bytes, sent) = verdicts.finish();
        assert!(bytes.is_empty());
        assert_eq!(sent, Sent::default());
    }
}
