//! Addresses as bits, the form the sets and the log take them in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::counter::windows::{Order, Stamp};

/// One address as bits, by family; an IPv4-mapped IPv6 address is IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// An IPv4 address.
    V4(u32),
    /// An IPv6 address, never IPv4-mapped.
    V6(u128),
}

impl Family {
    /// The bits of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(a) => Family::V4(a.to_bits()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => Family::V4(a.to_bits()),
                None => Family::V6(a.to_bits()),
            },
        }
    }
}

/// Addresses as bits, split by family; IPv4-mapped IPv6 addresses are IPv4.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bits {
    /// IPv4 addresses.
    pub ipv4: Vec<u32>,
    /// IPv6 addresses, none IPv4-mapped.
    pub ipv6: Vec<u128>,
}

impl Bits {
    /// `ips` split by family, in their order.
    pub fn split(ips: impl ExactSizeIterator<Item = IpAddr>) -> Bits {
        let mut bits = Bits {
            ipv4: Vec::with_capacity(ips.len()),
            ipv6: Vec::new(),
        };
        for ip in ips {
            match Family::of(ip) {
                Family::V4(a) => bits.ipv4.push(a),
                Family::V6(a) => bits.ipv6.push(a),
            }
        }
        bits
    }

    /// `ips` split by family, each family sorted and without repeats.
    pub fn distinct(ips: impl ExactSizeIterator<Item = IpAddr>) -> Bits {
        let mut bits = Bits::split(ips);
        bits.ipv4.sort_unstable();
        bits.ipv4.dedup();
        bits.ipv6.sort_unstable();
        bits.ipv6.dedup();
        bits
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_empty() && self.ipv6.is_empty()
    }

    /// The addresses, IPv4 first.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self
            .ipv4
            .iter()
            .map(|&a| IpAddr::V4(Ipv4Addr::from_bits(a)));
        v4.chain(
            self.ipv6
                .iter()
                .map(|&a| IpAddr::V6(Ipv6Addr::from_bits(a))),
        )
    }
}

/// Addresses seen with their stamps, split by family like [`Bits`], each family sorted by
/// address and holding each address once, at its latest stamp.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sightings {
    /// IPv4 addresses and their stamps.
    pub ipv4: Vec<(u32, Stamp)>,
    /// IPv6 addresses, none IPv4-mapped, and their stamps.
    pub ipv6: Vec<(u128, Stamp)>,
    /// Where `AddressSet::retain_changing` found each IPv4 sighting in its block, or where it
    /// would go: a hint `AddressSet::observe_many` checks before it searches. Empty before.
    pub ipv4_found: Vec<u32>,
}

impl Sightings {
    /// `seen` split, sorted and reduced to each address's latest stamp (read with `order`).
    pub fn latest(seen: impl ExactSizeIterator<Item = (IpAddr, Stamp)>, order: Order) -> Self {
        let mut sightings = Sightings {
            ipv4: Vec::with_capacity(seen.len()),
            ipv6: Vec::new(),
            ipv4_found: Vec::new(),
        };
        for (ip, stamp) in seen {
            match Family::of(ip) {
                Family::V4(a) => sightings.ipv4.push((a, stamp)),
                Family::V6(a) => sightings.ipv6.push((a, stamp)),
            }
        }
        latest_of_each(&mut sightings.ipv4, order);
        latest_of_each(&mut sightings.ipv6, order);
        sightings
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ipv4.is_empty() && self.ipv6.is_empty()
    }

    /// The addresses and their stamps, IPv4 first.
    pub fn ips(&self) -> impl Iterator<Item = (IpAddr, Stamp)> + '_ {
        let v4 = self
            .ipv4
            .iter()
            .map(|&(a, s)| (IpAddr::V4(Ipv4Addr::from_bits(a)), s));
        v4.chain(
            self.ipv6
                .iter()
                .map(|&(a, s)| (IpAddr::V6(Ipv6Addr::from_bits(a)), s)),
        )
    }
}

/// Sorts `seen` by address and keeps one sighting of each, the latest.
fn latest_of_each<A: Ord + Copy>(seen: &mut Vec<(A, Stamp)>, order: Order) {
    seen.sort_unstable_by_key(|&(a, _)| a);
    seen.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same && order.newer(later.1, kept.1) {
            kept.1 = later.1;
        }
        same
    });
}

/// A run of stored addresses, from [`AddressSet::for_each_run`](super::AddressSet::for_each_run).
#[derive(Debug, Clone, Copy)]
pub enum Run<'a> {
    /// IPv4 addresses as bits, ascending.
    Ipv4(&'a [u32]),
    /// IPv6 addresses as bits, never IPv4-mapped, in no order.
    Ipv6(&'a [u128]),
}

/// A run of stored addresses with their stamps, from
/// [`AddressSet::for_each_stamped_run`](super::AddressSet::for_each_stamped_run).
#[derive(Debug, Clone, Copy)]
pub enum StampedRun<'a> {
    /// IPv4 addresses as bits, ascending.
    Ipv4(&'a [(u32, Stamp)]),
    /// IPv6 addresses as bits, never IPv4-mapped, in no order.
    Ipv6(&'a [(u128, Stamp)]),
}
