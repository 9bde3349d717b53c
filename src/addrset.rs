//! A set of address ranges (CIDRs) with a lookup cost that does not grow with the list.
//!
//! Used for the ignore list, which admins fill from files of thousands of lines and which is
//! consulted for every queued packet. It only answers "is this address in the set".

use std::net::IpAddr;

use ipnet::IpNet;

/// Sorted, merged, inclusive ranges per family.
#[derive(Debug, Clone, Default)]
pub struct AddrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl AddrSet {
    pub fn new<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        AddrSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => lookup(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => lookup(&self.v4, u32::from(v4)),
                None => lookup(&self.v6, u128::from(a)),
            },
        }
    }

    /// Number of merged ranges, for the start-up summary.
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn merge<T: Ord + Copy + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match merged.last_mut() {
            Some((_, prev_last)) if first <= prev_last.successor_saturating() => {
                if last > *prev_last {
                    *prev_last = last;
                }
            }
            _ => merged.push((first, last)),
        }
    }
    merged
}

fn lookup<T: Ord + Copy>(ranges: &[(T, T)], value: T) -> bool {
    // The first range starting after `value`; the one before it is the only candidate.
    let after = ranges.partition_point(|&(first, _)| first <= value);
    after
        .checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|&(_, last)| value <= last)
}

mod num_like {
    pub trait Successor {
        fn successor_saturating(self) -> Self;
    }
    impl Successor for u32 {
        fn successor_saturating(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Successor for u128 {
        fn successor_saturating(self) -> Self {
            self.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> AddrSet {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        AddrSet::new(&nets)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matches_inside_and_not_outside() {
        let s = set(&["192.0.2.0/25", "198.51.100.7/32", "2001:db8:1::/48"]);
        assert!(s.contains(ip("192.0.2.0")));
        assert!(s.contains(ip("192.0.2.127")));
        assert!(!s.contains(ip("192.0.2.128")));
        assert!(s.contains(ip("198.51.100.7")));
        assert!(!s.contains(ip("198.51.100.6")));
        assert!(!s.contains(ip("198.51.100.8")));
        assert!(s.contains(ip("2001:db8:1:ffff::1")));
        assert!(!s.contains(ip("2001:db8:2::1")));
        assert!(!s.contains(ip("10.0.0.1")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "10.0.3.0/24"]);
        assert_eq!(s.ranges(), 2);
        assert!(s.contains(ip("10.0.1.255")));
        assert!(!s.contains(ip("10.0.2.0")));
        assert!(s.contains(ip("10.0.3.1")));
    }

    #[test]
    fn whole_address_space_and_empty_set() {
        let all = set(&["0.0.0.0/0", "::/0"]);
        assert!(all.contains(ip("255.255.255.255")));
        assert!(all.contains(ip("ffff::1")));
        let none = set(&[]);
        assert!(!none.contains(ip("0.0.0.0")));
        assert!(!none.contains(ip("::")));
    }

    #[test]
    fn v4_mapped_v6_addresses_use_the_v4_list() {
        let s = set(&["127.0.0.0/8"]);
        assert!(s.contains(ip("::ffff:127.0.0.1")));
    }
}
