//! The watched-port set (a fixed 65536-bit bitmap) and the parser for one port-list item; it
//! knows nothing of TOML keys, files or which protocol a set belongs to.

use std::fmt;

/// Number of `u64` words that hold one bit for each of the 65536 port numbers.
const WORDS: usize = 65536 / 64;

/// A set of port numbers stored as a bitmap, so membership is one load and a set never grows.
///
/// Port 0 can be stored, but the configuration never puts it there: it is not a real port.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    /// Boxed because 8 KiB is too much to copy around on the stack with every `Monitor`.
    words: Box<[u64; WORDS]>,
}

impl PortSet {
    /// An empty set.
    pub fn new() -> PortSet {
        PortSet {
            words: Box::new([0; WORDS]),
        }
    }

    /// Adds `port`; returns whether it was absent before.
    pub fn insert(&mut self, port: u16) -> bool {
        let (word, bit) = position(port);
        let was_absent = self.words[word] & bit == 0;
        self.words[word] |= bit;
        was_absent
    }

    /// Adds every port from `first` to `last`, both included; nothing if `first > last`.
    pub fn insert_range(&mut self, first: u16, last: u16) {
        for port in first..=last {
            self.insert(port);
        }
    }

    /// Removes `port`; returns whether it was present.
    pub fn remove(&mut self, port: u16) -> bool {
        let (word, bit) = position(port);
        let was_present = self.words[word] & bit != 0;
        self.words[word] &= !bit;
        was_present
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        let (word, bit) = position(port);
        self.words[word] & bit != 0
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.words
            .iter()
            .map(|word| word.count_ones() as usize)
            .sum()
    }

    /// Whether the set holds no port at all.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|word| *word == 0)
    }

    /// The ports in ascending order.
    pub fn iter(&self) -> Ports<'_> {
        Ports {
            words: &self.words[..],
            word_index: 0,
            remaining: self.words.first().copied().unwrap_or(0),
        }
    }

    /// The ports as maximal runs of consecutive numbers, `(first, last)` inclusive, ascending;
    /// this is the shape an nft interval set wants.
    pub fn ranges(&self) -> PortRanges<'_> {
        PortRanges {
            ports: self.iter().peekable(),
        }
    }
}

/// Word index and bit mask of `port`; the index is at most 1023, so it always fits `WORDS`.
fn position(port: u16) -> (usize, u64) {
    (usize::from(port >> 6), 1u64 << (port & 63))
}

impl Default for PortSet {
    fn default() -> PortSet {
        PortSet::new()
    }
}

/// Shows the ranges rather than 1024 words.
impl fmt::Debug for PortSet {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("PortSet {")?;
        for (index, (first, last)) in self.ranges().enumerate() {
            let separator = if index == 0 { "" } else { "," };
            if first == last {
                write!(formatter, "{separator}{first}")?;
            } else {
                write!(formatter, "{separator}{first}-{last}")?;
            }
        }
        formatter.write_str("}")
    }
}

impl FromIterator<u16> for PortSet {
    fn from_iter<I: IntoIterator<Item = u16>>(ports: I) -> PortSet {
        let mut set = PortSet::new();
        set.extend(ports);
        set
    }
}

impl Extend<u16> for PortSet {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, ports: I) {
        for port in ports {
            self.insert(port);
        }
    }
}

impl<'a> IntoIterator for &'a PortSet {
    type Item = u16;
    type IntoIter = Ports<'a>;

    fn into_iter(self) -> Ports<'a> {
        self.iter()
    }
}

/// Ascending iterator over the ports of a [`PortSet`]; skips empty words whole.
#[derive(Clone, Debug)]
pub struct Ports<'a> {
    words: &'a [u64],
    word_index: usize,
    /// Bits of the current word not yet returned.
    remaining: u64,
}

impl Iterator for Ports<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        while self.remaining == 0 {
            self.word_index += 1;
            self.remaining = *self.words.get(self.word_index)?;
        }
        let bit = self.remaining.trailing_zeros() as usize;
        self.remaining &= self.remaining - 1;
        u16::try_from(self.word_index * 64 + bit).ok()
    }
}

/// Iterator over the runs of consecutive ports of a [`PortSet`].
#[derive(Clone, Debug)]
pub struct PortRanges<'a> {
    ports: std::iter::Peekable<Ports<'a>>,
}

impl Iterator for PortRanges<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let first = self.ports.next()?;
        let mut last = first;
        while let Some(port) = self
            .ports
            .next_if(|next| Some(*next) == last.checked_add(1))
        {
            last = port;
        }
        Some((first, last))
    }
}

/// Why one port-list item was refused; the caller adds the key and the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PortError {
    #[error("is not a port (1-65535)")]
    NotAPort,
    #[error("is not a port range (both ends must be ports, 1-65535)")]
    RangeEndNotAPort,
    #[error("is not a port range (first port {first} is above last port {last})")]
    Reversed { first: u16, last: u16 },
    #[error("is neither a port nor a \"first-last\" range")]
    Unreadable,
}

/// Checks a number from a port list: 1-65535.
pub(crate) fn port_from_number(number: i64) -> Result<u16, PortError> {
    match u16::try_from(number) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PortError::NotAPort),
    }
}

/// Parses a string port-list item: `"80"` or `"first-last"`, inclusive, blanks around the
/// numbers allowed. Returns the inclusive range (`first == last` for a single port).
pub(crate) fn port_range_from_text(text: &str) -> Result<(u16, u16), PortError> {
    match text.split_once('-') {
        None => {
            let port = parse_decimal(text).ok_or(PortError::Unreadable)?;
            let port = port_from_number(port)?;
            Ok((port, port))
        }
        Some((first, last)) => {
            let first = parse_decimal(first).ok_or(PortError::Unreadable)?;
            let last = parse_decimal(last).ok_or(PortError::Unreadable)?;
            let first = port_from_number(first).map_err(|_| PortError::RangeEndNotAPort)?;
            let last = port_from_number(last).map_err(|_| PortError::RangeEndNotAPort)?;
            if first > last {
                return Err(PortError::Reversed { first, last });
            }
            Ok((first, last))
        }
    }
}

/// Plain decimal digits only: `i64::from_str` would also take a sign, and "+80" or "-0" in a
/// port list is more likely a typo than a wish.
fn parse_decimal(text: &str) -> Option<i64> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Too many digits for i64 is still "a number", just not a port.
    Some(digits.parse::<i64>().unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_set_has_nothing() {
        let set = PortSet::new();
        assert!(set.is_empty());
        assert_eq!(set.len(), 0);
        assert_eq!(set.iter().next(), None);
        assert_eq!(set.ranges().next(), None);
        assert!(!set.contains(0));
        assert!(!set.contains(65535));
    }

    #[test]
    fn insert_contains_remove_at_the_edges() {
        let mut set = PortSet::new();
        for port in [0, 1, 63, 64, 65, 1023, 1024, 65534, 65535] {
            assert!(set.insert(port), "{port} was new");
            assert!(!set.insert(port), "{port} was already there");
            assert!(set.contains(port));
        }
        assert_eq!(set.len(), 9);
        assert!(!set.contains(2));
        assert!(!set.contains(62));
        assert!(set.remove(64));
        assert!(!set.remove(64));
        assert!(!set.contains(64));
        assert_eq!(set.len(), 8);
    }

    #[test]
    fn iter_is_ascending_and_complete() {
        let ports = [65535, 7, 0, 64, 128, 129, 4000, 63];
        let set: PortSet = ports.into_iter().collect();
        let mut expected = ports.to_vec();
        expected.sort_unstable();
        assert_eq!(set.iter().collect::<Vec<_>>(), expected);
        assert_eq!((&set).into_iter().count(), set.len());
    }

    #[test]
    fn full_set_iterates_every_port() {
        let mut set = PortSet::new();
        set.insert_range(0, 65535);
        assert_eq!(set.len(), 65536);
        assert!(set.iter().eq(0..=65535));
        assert_eq!(set.ranges().collect::<Vec<_>>(), vec![(0, 65535)]);
    }

    #[test]
    fn ranges_merge_consecutive_ports_across_words() {
        let mut set = PortSet::new();
        set.insert(1);
        set.insert_range(60, 70);
        set.insert(72);
        set.insert_range(32771, 32774);
        set.insert(65535);
        assert_eq!(
            set.ranges().collect::<Vec<_>>(),
            vec![(1, 1), (60, 70), (72, 72), (32771, 32774), (65535, 65535)]
        );
        assert_eq!(format!("{set:?}"), "PortSet {1,60-70,72,32771-32774,65535}");
    }

    #[test]
    fn insert_range_reversed_is_empty() {
        let mut set = PortSet::new();
        set.insert_range(10, 9);
        assert!(set.is_empty());
    }

    #[test]
    fn port_numbers() {
        assert_eq!(port_from_number(1), Ok(1));
        assert_eq!(port_from_number(65535), Ok(65535));
        assert_eq!(port_from_number(0), Err(PortError::NotAPort));
        assert_eq!(port_from_number(65536), Err(PortError::NotAPort));
        assert_eq!(port_from_number(70000), Err(PortError::NotAPort));
        assert_eq!(port_from_number(-1), Err(PortError::NotAPort));
    }

    #[test]
    fn port_range_text() {
        assert_eq!(port_range_from_text("32771-32774"), Ok((32771, 32774)));
        assert_eq!(port_range_from_text(" 5 - 5 "), Ok((5, 5)));
        assert_eq!(port_range_from_text("80"), Ok((80, 80)));
        assert_eq!(
            port_range_from_text("9-3"),
            Err(PortError::Reversed { first: 9, last: 3 })
        );
        assert_eq!(
            port_range_from_text("0-5"),
            Err(PortError::RangeEndNotAPort)
        );
        assert_eq!(
            port_range_from_text("1-70000"),
            Err(PortError::RangeEndNotAPort)
        );
        assert_eq!(
            port_range_from_text("1-99999999999999999999999"),
            Err(PortError::RangeEndNotAPort)
        );
        assert_eq!(port_range_from_text("70000"), Err(PortError::NotAPort));
        for unreadable in ["", "-", "1-", "-5", "a-b", "+80", "1-2-3", "http", "1..5"] {
            assert_eq!(
                port_range_from_text(unreadable),
                Err(PortError::Unreadable),
                "{unreadable:?}"
            );
        }
    }
}
