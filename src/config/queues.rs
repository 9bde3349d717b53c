//! `daemon.queue`: one NFQUEUE number (`0`, `"0"`) or a range of them (`"0-3"`), over which the
//! kernel spreads packets by address, one reader thread per queue.

use std::fmt;
use std::ops::RangeInclusive;

/// The most queues one nfsentry reads: one thread each, and each thread's share of the tables
/// shrinks with their number; past a core or two per queue more threads only cost memory.
pub const MAX_QUEUES: u16 = 16;

/// The NFQUEUE numbers nfsentry binds: `first` to `last`, both included; never empty, never
/// longer than [`MAX_QUEUES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueRange {
    first: u16,
    last: u16,
}

impl QueueRange {
    /// One queue.
    pub const fn single(number: u16) -> QueueRange {
        QueueRange {
            first: number,
            last: number,
        }
    }

    /// `first` to `last` included; the problem, worded for a config error, when the range is
    /// backwards or longer than [`MAX_QUEUES`].
    pub fn new(first: u16, last: u16) -> Result<QueueRange, String> {
        if first > last {
            return Err(format!(
                "is not a queue range: its first queue {first} is after its last {last}"
            ));
        }
        let count = u32::from(last) - u32::from(first) + 1;
        if count > u32::from(MAX_QUEUES) {
            return Err(format!(
                "spans {count} queues; at most {MAX_QUEUES} are read"
            ));
        }
        Ok(QueueRange { first, last })
    }

    /// `"N"` or `"first-last"`, as the config file writes them; the problem otherwise.
    pub fn parse(text: &str) -> Result<QueueRange, String> {
        let number = |part: &str| -> Result<u16, String> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(NOT_A_QUEUE.to_owned());
            }
            part.parse::<u16>().map_err(|_| NOT_A_QUEUE.to_owned())
        };
        match text.split_once('-') {
            None => number(text).map(QueueRange::single),
            Some((first, last)) => QueueRange::new(number(first)?, number(last)?),
        }
    }

    /// The first queue: the one read by the main thread.
    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    /// How many queues; 1 to [`MAX_QUEUES`].
    pub fn count(self) -> u16 {
        self.last - self.first + 1
    }

    pub fn numbers(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }
}

/// What a value that is neither a queue number nor a range is told.
pub const NOT_A_QUEUE: &str =
    "is not a queue number or range (0-65535, or \"first-last\" such as \"0-3\")";

/// `3` or `0-3`: what the config says and `nft list` shows after `queue num`.
impl fmt::Display for QueueRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

/// One shard's part of a limit the whole daemon keeps: each of `shards` readers gets
/// ceil(limit / shards), so together they never hold less than the limit (and at most
/// shards - 1 more). 0 stays 0 (for `max_blocks_per_sec`, unlimited).
pub fn share(limit: usize, shards: u16) -> usize {
    limit.div_ceil(usize::from(shards.max(1)))
}

impl super::Config {
    /// What each of the daemon's queue readers runs on: this config with the limits the daemon
    /// keeps as a whole (`detect.max_sources`, `respond.max_blocks`,
    /// `respond.max_blocks_per_sec`) replaced by one reader's [`share`] of them. With one queue,
    /// the config itself.
    pub fn shard_share(&self) -> super::Config {
        let shards = self.daemon.queue.count();
        let mut shard = self.clone();
        shard.detect.max_sources = share(self.detect.max_sources, shards);
        shard.respond.max_blocks = share(self.respond.max_blocks, shards);
        let per_sec = usize::try_from(self.respond.max_blocks_per_sec).unwrap_or(usize::MAX);
        shard.respond.max_blocks_per_sec =
            u32::try_from(share(per_sec, shards)).unwrap_or(u32::MAX);
        shard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_numbers_and_ranges_parse() {
        assert_eq!(QueueRange::parse("7"), Ok(QueueRange::single(7)));
        assert_eq!(QueueRange::parse("0-3"), QueueRange::new(0, 3));
        assert_eq!(QueueRange::parse(" 4 - 4 "), Ok(QueueRange::single(4)));
        assert_eq!(QueueRange::parse("65520-65535").map(|q| q.count()), Ok(16));
        let range = QueueRange::parse("2-5").unwrap();
        assert_eq!((range.first(), range.last(), range.count()), (2, 5, 4));
        assert_eq!(range.numbers().collect::<Vec<_>>(), [2, 3, 4, 5]);
        assert_eq!(range.to_string(), "2-5");
        assert_eq!(QueueRange::single(9).to_string(), "9");
    }

    #[test]
    fn bad_ranges_say_why() {
        for text in [
            "", "-", "a", "1-", "-3", "1-2-3", "0x3", "+1", "65536", "0-65536", "1.5",
        ] {
            assert_eq!(
                QueueRange::parse(text),
                Err(NOT_A_QUEUE.to_owned()),
                "{text:?}"
            );
        }
        assert_eq!(
            QueueRange::parse("3-1"),
            Err("is not a queue range: its first queue 3 is after its last 1".to_owned())
        );
        assert_eq!(
            QueueRange::parse("0-16"),
            Err("spans 17 queues; at most 16 are read".to_owned())
        );
        assert_eq!(
            QueueRange::parse("0-65535"),
            Err("spans 65536 queues; at most 16 are read".to_owned())
        );
    }

    #[test]
    fn limits_are_shared_rounding_up() {
        assert_eq!(share(10, 1), 10);
        assert_eq!(share(10, 4), 3);
        assert_eq!(share(8, 4), 2);
        assert_eq!(share(1, 4), 1);
        assert_eq!(share(0, 4), 0);
        assert_eq!(share(usize::MAX, 16), usize::MAX / 16 + 1);
    }
}
