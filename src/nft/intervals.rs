//! The contents of nftables interval sets (ports, address ranges): ranges merged the way `nft`
//! merges them, their kernel encoding (start and end elements) and their `nft` text. Pure data;
//! what the sets are for is [`super::ruleset`]'s. The tests are the ruleset's, which show the
//! encodings in the sets they fill.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

/// A key type of an interval set: ports and addresses.
pub trait IntervalKey: Copy + Ord + fmt::Debug {
    /// The smallest key.
    const MIN: Self;

    /// The next key, `None` at the largest.
    fn successor(self) -> Option<Self>;

    /// The range as `nft` writes it (and lists it): one key, `first-last`, or a CIDR prefix.
    fn nft_text(range: &RangeInclusive<Self>) -> String;
}

impl IntervalKey for u16 {
    const MIN: Self = 0;

    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }

    fn nft_text(range: &RangeInclusive<Self>) -> String {
        if range.start() == range.end() {
            range.start().to_string()
        } else {
            format!("{}-{}", range.start(), range.end())
        }
    }
}

impl IntervalKey for Ipv4Addr {
    const MIN: Self = Ipv4Addr::UNSPECIFIED;

    fn successor(self) -> Option<Self> {
        u32::from(self).checked_add(1).map(Ipv4Addr::from)
    }

    fn nft_text(range: &RangeInclusive<Self>) -> String {
        let prefix = prefix_len(
            u128::from(u32::from(*range.start())),
            u128::from(u32::from(*range.end())),
            32,
        );
        address_range_text(range, prefix, 32)
    }
}

impl IntervalKey for Ipv6Addr {
    const MIN: Self = Ipv6Addr::UNSPECIFIED;

    fn successor(self) -> Option<Self> {
        u128::from(self).checked_add(1).map(Ipv6Addr::from)
    }

    fn nft_text(range: &RangeInclusive<Self>) -> String {
        let prefix = prefix_len(u128::from(*range.start()), u128::from(*range.end()), 128);
        address_range_text(range, prefix, 128)
    }
}

/// The prefix length if `first..=last` is exactly one CIDR block of a `bits`-wide address.
fn prefix_len(first: u128, last: u128, bits: u32) -> Option<u32> {
    let host_mask = last.checked_sub(first)?;
    // A block spans 2^k addresses (host_mask is k one-bits) starting on a 2^k boundary.
    let is_block = host_mask & host_mask.wrapping_add(1) == 0 && first & host_mask == 0;
    is_block.then(|| bits - host_mask.count_ones())
}

fn address_range_text<A: fmt::Display>(
    range: &RangeInclusive<A>,
    prefix: Option<u32>,
    bits: u32,
) -> String {
    match prefix {
        Some(len) if len == bits => range.start().to_string(),
        Some(len) => format!("{}/{len}", range.start()),
        None => format!("{}-{}", range.start(), range.end()),
    }
}

/// The contents of an interval set: sorted ranges, none overlapping or touching another. The
/// only way to build one is by merging, so the kernel encoding below can rely on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntervalList<K> {
    ranges: Vec<RangeInclusive<K>>,
}

/// What an element of the kernel's interval encoding marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalBoundary {
    /// The first key of a range.
    Start,
    /// The first key of a range that runs to the largest key, so no end element follows.
    /// `nft` tags these with the "interval open" element flag in the element's user data.
    StartOpen,
    /// One past the last key of a range (sent with `NFT_SET_ELEM_INTERVAL_END`).
    End,
}

/// One element of the kernel's interval encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntervalElement<K> {
    pub key: K,
    pub boundary: IntervalBoundary,
}

impl<K: IntervalKey> IntervalList<K> {
    /// Merges overlapping and adjacent ranges, in any order. An empty range (start after end)
    /// contributes nothing.
    pub fn from_ranges(ranges: impl IntoIterator<Item = RangeInclusive<K>>) -> Self {
        let mut sorted: Vec<RangeInclusive<K>> =
            ranges.into_iter().filter(|r| !r.is_empty()).collect();
        sorted.sort_by_key(|r| *r.start());
        let mut merged: Vec<RangeInclusive<K>> = Vec::with_capacity(sorted.len());
        for range in sorted {
            if let Some(last) = merged.last_mut() {
                // `None` means `last` already reaches the largest key: everything joins it.
                let touches = match last.end().successor() {
                    Some(next) => *range.start() <= next,
                    None => true,
                };
                if touches {
                    let end = (*last.end()).max(*range.end());
                    *last = *last.start()..=end;
                    continue;
                }
            }
            merged.push(range);
        }
        IntervalList { ranges: merged }
    }

    /// The merged ranges, ascending.
    pub fn ranges(&self) -> &[RangeInclusive<K>] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The elements `nft` sends for this set, in the order it sends them: a range is a start
    /// element and an end element at one past its last key; the gap before the first range is
    /// closed by an end element at the smallest key; a range reaching the largest key has no end
    /// element and an open start instead.
    pub fn kernel_elements(&self) -> Vec<IntervalElement<K>> {
        let mut elements = Vec::with_capacity(self.ranges.len() * 2 + 1);
        if let Some(first) = self.ranges.first() {
            if *first.start() != K::MIN {
                elements.push(IntervalElement {
                    key: K::MIN,
                    boundary: IntervalBoundary::End,
                });
            }
        }
        for range in &self.ranges {
            match range.end().successor() {
                Some(after) => {
                    elements.push(IntervalElement {
                        key: *range.start(),
                        boundary: IntervalBoundary::Start,
                    });
                    elements.push(IntervalElement {
                        key: after,
                        boundary: IntervalBoundary::End,
                    });
                }
                None => elements.push(IntervalElement {
                    key: *range.start(),
                    boundary: IntervalBoundary::StartOpen,
                }),
            }
        }
        elements
    }

    /// The elements in `nft` syntax, comma separated: `1, 11, 32771-32774`.
    pub fn nft_text(&self) -> String {
        self.ranges
            .iter()
            .map(K::nft_text)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
