//! The counting structures: every distinct address seen, and the counts read from them.
//!
//! [`Store`] is the seam between the HTTP layer and the kinds of store. Today there is one kind,
//! [`Store::Exact`]; approximate (HyperLogLog), time-windowed and Redis-backed kinds are planned
//! as further variants, so callers never name a concrete structure.

mod exact;
mod ipv4;
mod ipv6;

use std::net::IpAddr;

pub use exact::ExactStore;

/// How many distinct addresses a store holds, by family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct IPv4 addresses (IPv4-mapped IPv6 addresses count here).
    pub ipv4: u64,
    /// Distinct IPv6 addresses.
    pub ipv6: u64,
}

impl Counts {
    /// Both families together.
    pub fn total(&self) -> u64 {
        self.ipv4 + self.ipv6
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
    pub fn split(ips: &[IpAddr]) -> Bits {
        let mut bits = Bits {
            ipv4: Vec::with_capacity(ips.len()),
            ipv6: Vec::new(),
        };
        for ip in ips {
            match ip {
                IpAddr::V4(a) => bits.ipv4.push(a.to_bits()),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(a) => bits.ipv4.push(a.to_bits()),
                    None => bits.ipv6.push(a.to_bits()),
                },
            }
        }
        bits
    }

    /// `ips` split by family, each family sorted and without repeats.
    pub fn distinct(ips: &[IpAddr]) -> Bits {
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
}

/// A run of stored addresses, from [`Store::for_each_run`].
#[derive(Debug, Clone, Copy)]
pub enum Run<'a> {
    /// IPv4 addresses as bits, ascending.
    Ipv4(&'a [u32]),
    /// IPv6 addresses as bits, never IPv4-mapped, in no order.
    Ipv6(&'a [u128]),
}

/// A set of distinct client addresses, shared by every request handler.
#[derive(Debug)]
pub enum Store {
    /// Exact in-memory counting: IPv4 as `u32`, IPv6 as `u128`.
    Exact(ExactStore),
}

impl Store {
    /// An empty exact in-memory store.
    pub fn exact() -> Self {
        Store::Exact(ExactStore::default())
    }

    /// Adds `ip`; returns `true` when it was not seen before.
    pub fn insert(&self, ip: IpAddr) -> bool {
        match self {
            Store::Exact(s) => s.insert(ip),
        }
    }

    /// Adds every address of a batch, locking each part of the store once; returns how many
    /// were new.
    pub fn insert_many(&self, ips: &[IpAddr]) -> u64 {
        match self {
            Store::Exact(s) => s.insert_many(ips),
        }
    }

    /// Adds addresses already split by family (see [`ExactStore::insert_bits`]); returns how
    /// many were new.
    pub fn insert_bits(&self, ipv4: &mut [u32], ipv6: &[u128]) -> u64 {
        match self {
            Store::Exact(s) => s.insert_bits(ipv4, ipv6),
        }
    }

    /// Calls `f` with runs that together hold every stored address once (see
    /// [`ExactStore::for_each_run`]).
    pub fn for_each_run<E>(&self, f: impl FnMut(Run<'_>) -> Result<(), E>) -> Result<(), E> {
        match self {
            Store::Exact(s) => s.for_each_run(f),
        }
    }

    /// Keeps only the addresses of `bits` (each family sorted) that are not in the store.
    pub fn retain_missing(&self, bits: &mut Bits) {
        match self {
            Store::Exact(s) => s.retain_missing(bits),
        }
    }

    /// Whether `ip` has been seen.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Store::Exact(s) => s.contains(ip),
        }
    }

    /// The distinct counts, read in O(1).
    pub fn counts(&self) -> Counts {
        match self {
            Store::Exact(s) => s.counts(),
        }
    }

    /// Heap bytes held by the counting structures right now.
    pub fn memory_bytes(&self) -> usize {
        match self {
            Store::Exact(s) => s.memory_bytes(),
        }
    }
}
