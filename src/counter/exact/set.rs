//! Exact in-memory counting: every distinct address is kept, so the count is never an estimate.
//!
//! [`AddressSet`] routes each address to its family's set ([`super::ipv4`]: one block per /16;
//! [`super::ipv6`]: staggered hash-table shards; their docs give the layouts and measured
//! bytes per address). IPv4-mapped IPv6 addresses are IPv4 here.
//!
//! Each family has an atomic counter, bumped inside the owning lock only when an insert finds
//! the address new, so [`AddressSet::counts`] is O(1), never takes a lock, and already includes
//! any address this thread has seen `insert` or `contains` report. `examples/memory.rs` measures
//! the figures (`cargo run --release --example memory -- [N_IPV4] [N_IPV6]`).

use std::fmt;
use std::net::IpAddr;

use super::ipv4::Ipv4Set;
use super::ipv6::Ipv6Set;
use super::{Bits, Family, Run, Sightings, StampedRun};
use crate::counter::Counts;
use crate::counter::windows::{Change, Order, StaleBefore, Stamp};

/// Every distinct address seen, IPv4 and IPv6 kept apart, safe to share between threads.
///
/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are stored and counted as IPv4.
pub struct AddressSet {
    ipv4: Ipv4Set,
    ipv6: Ipv6Set,
}

impl Default for AddressSet {
    fn default() -> Self {
        AddressSet::new(false)
    }
}

// Deriving Debug would print every stored address.
impl fmt::Debug for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.counts();
        f.debug_struct("AddressSet")
            .field("ipv4", &counts.ipv4)
            .field("ipv6", &counts.ipv6)
            .finish_non_exhaustive()
    }
}

impl AddressSet {
    /// An empty set; `stamped` keeps beside each address the stamp of its latest event time
    /// (time windows on; see [`crate::counter::windows`]).
    pub fn new(stamped: bool) -> Self {
        AddressSet {
            ipv4: Ipv4Set::new(stamped),
            ipv6: Ipv6Set::new(),
        }
    }

    /// In a stamped set, records each sighting: adds its address, or moves it to a later
    /// stamp; locks each part of the set once and returns what changed.
    pub fn observe_many(&self, sightings: &Sightings, order: Order) -> Vec<Change> {
        let mut changes = Vec::with_capacity(sightings.ipv4.len() + sightings.ipv6.len());
        let ipv4 = &sightings.ipv4;
        self.ipv4
            .observe_many(ipv4, &sightings.ipv4_found, order, &mut changes);
        self.ipv6.observe_many(&sightings.ipv6, order, &mut changes);
        changes
    }

    /// Keeps only the sightings that [`AddressSet::observe_many`] would change (addresses not
    /// in the set, or seen at a later stamp than theirs), locking each /16 block once; returns
    /// how many of those kept are new.
    pub fn retain_changing(&self, sightings: &mut Sightings, order: Order) -> usize {
        let found = &mut sightings.ipv4_found;
        let mut new = self.ipv4.retain_changing(&mut sightings.ipv4, found, order);
        sightings.ipv6.retain(|&(ip, stamp)| {
            let at = self.ipv6.stamp_of(ip);
            new += usize::from(at.is_none());
            at.is_none_or(|at| order.newer(stamp, at))
        });
        new
    }

    /// In a stamped set, `ip`'s stamp; `None` when it is not a member.
    pub fn stamp_of(&self, ip: IpAddr) -> Option<Stamp> {
        match Family::of(ip) {
            Family::V4(a) => self.ipv4.stamp_of(a),
            Family::V6(a) => self.ipv6.stamp_of(a),
        }
    }

    /// As [`AddressSet::for_each_run`], in a stamped set, with each address's stamp.
    pub fn for_each_stamped_run<E>(
        &self,
        mut f: impl FnMut(StampedRun<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ipv4
            .for_each_stamped_block(|run| f(StampedRun::Ipv4(run)))?;
        self.ipv6
            .for_each_stamped_shard(|run| f(StampedRun::Ipv6(run)))
    }

    /// Clears the stamps that have left the largest window, one lock at a time.
    pub fn clear_stale(&self, stale: &StaleBefore) {
        self.ipv4.clear_stale(stale);
        self.ipv6.clear_stale(stale);
    }

    /// Adds `ip`; returns `true` when it was not seen before.
    ///
    /// Of any number of threads inserting the same new address at once, exactly one gets `true`.
    pub fn insert(&self, ip: IpAddr) -> bool {
        match Family::of(ip) {
            Family::V4(a) => self.ipv4.insert(a),
            Family::V6(a) => self.ipv6.insert(a),
        }
    }

    /// Adds every address of `ips`, locking each part of the store once per call; returns how
    /// many were new. The same promises as [`AddressSet::insert`] hold for each address.
    pub fn insert_many(&self, ips: impl ExactSizeIterator<Item = IpAddr>) -> u64 {
        let Bits { mut ipv4, ipv6 } = Bits::split(ips);
        self.ipv4.insert_many(&mut ipv4) + self.ipv6.insert_many(&ipv6)
    }

    /// Keeps only the addresses of `bits` that are not in the store; locks each /16 block once.
    pub fn retain_missing(&self, bits: &mut Bits) {
        self.ipv4.retain_missing(&mut bits.ipv4);
        bits.ipv6.retain(|&ip| !self.ipv6.contains(ip));
    }

    /// Adds addresses given as bits: `ipv4` (sorted in place) and `ipv6`, which must hold no
    /// IPv4-mapped address. Returns how many were new. For loading a snapshot, where the
    /// addresses are already split by family.
    pub fn insert_bits(&self, ipv4: &mut [u32], ipv6: &[u128]) -> u64 {
        self.ipv4.insert_many(ipv4) + self.ipv6.insert_many(ipv6)
    }

    /// Calls `f` with runs of stored addresses, every address exactly once: IPv4 runs (each
    /// ascending, one /16) first, then IPv6 runs. Locks one part of the store at a time, so
    /// inserts go on meanwhile and may or may not be included.
    pub fn for_each_run<E>(&self, mut f: impl FnMut(Run<'_>) -> Result<(), E>) -> Result<(), E> {
        self.ipv4.for_each_block(|run| f(Run::Ipv4(run)))?;
        self.ipv6.for_each_shard(|run| f(Run::Ipv6(run)))
    }

    /// Whether `ip` has been seen.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match Family::of(ip) {
            Family::V4(a) => self.ipv4.contains(a),
            Family::V6(a) => self.ipv6.contains(a),
        }
    }

    /// The distinct counts by family, read in O(1) without locking.
    ///
    /// Includes every address whose `insert` or `contains` has returned on this thread.
    pub fn counts(&self) -> Counts {
        Counts {
            ipv4: self.ipv4.len(),
            ipv6: self.ipv6.len(),
        }
    }

    /// Heap bytes held by both sets right now, from their allocations' real sizes.
    ///
    /// Locks each IPv6 shard in turn: cheap enough for every `/stats` request and scrape, not
    /// for a per-entry path.
    pub fn memory_bytes(&self) -> usize {
        self.ipv4.memory_bytes() + self.ipv6.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Barrier;

    use proptest::prelude::*;

    use super::*;

    fn v4(bits: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from_bits(bits))
    }

    fn v6(bits: u128) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from_bits(bits))
    }

    #[test]
    fn ipv4_insert_contains_counts() {
        let store = AddressSet::default();
        let a: IpAddr = "83.150.59.250".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(!store.contains(a));
        assert!(store.insert(a));
        assert!(store.contains(a));
        assert!(!store.contains(b));
        assert!(store.insert(b));
        assert_eq!(store.counts(), Counts { ipv4: 2, ipv6: 0 });
    }

    #[test]
    fn ipv6_insert_contains_counts() {
        let store = AddressSet::default();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(!store.contains(a));
        assert!(store.insert(a));
        assert!(store.contains(a));
        assert!(!store.contains(b));
        assert!(store.insert(b));
        assert_eq!(store.counts(), Counts { ipv4: 0, ipv6: 2 });
    }

    #[test]
    fn extreme_addresses_are_distinct() {
        let store = AddressSet::default();
        for ip in [v4(0), v4(u32::MAX), v6(0), v6(1), v6(u128::MAX)] {
            assert!(store.insert(ip), "{ip}");
        }
        assert_eq!(store.counts(), Counts { ipv4: 2, ipv6: 3 });
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let store = AddressSet::default();
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        let plain: IpAddr = "1.2.3.4".parse().unwrap();
        assert!(store.insert(mapped));
        assert_eq!(store.counts(), Counts { ipv4: 1, ipv6: 0 });
        assert!(store.contains(plain));
        assert!(!store.insert(plain));
        assert_eq!(store.counts(), Counts { ipv4: 1, ipv6: 0 });
        // IPv4-compatible (`::1.2.3.4`) is deprecated and not the same address.
        assert!(store.insert("::1.2.3.4".parse().unwrap()));
        assert_eq!(store.counts(), Counts { ipv4: 1, ipv6: 1 });
    }

    #[test]
    fn duplicates_count_once() {
        let store = AddressSet::default();
        for _ in 0..3 {
            for i in 0..1000u32 {
                store.insert(v4(i.wrapping_mul(2_654_435_761)));
                store.insert(v6(u128::from(i) << 64 | 7));
            }
        }
        assert_eq!(
            store.counts(),
            Counts {
                ipv4: 1000,
                ipv6: 1000
            }
        );
        assert_eq!(store.counts().total(), 2000);
    }

    #[test]
    fn memory_bytes_grows_with_inserts() {
        let store = AddressSet::default();
        let empty = store.memory_bytes();
        assert!(empty > 0, "the shard arrays alone are on the heap");

        let n = 100_000u32;
        for i in 0..n {
            // About 150 /16s with 670 members each: array containers, as with real traffic.
            store.insert(v4(i * 97));
        }
        let with_v4 = store.memory_bytes();
        // A sorted block spends at least 2 bytes on each member.
        assert!(with_v4 >= empty + 2 * n as usize, "{with_v4}");
        assert!(with_v4 <= empty + 16 * n as usize, "{with_v4}");

        for i in 0..n {
            store.insert(v6(0x2001_0db8 << 96 | u128::from(i)));
        }
        let with_v6 = store.memory_bytes();
        assert!(with_v6 >= with_v4 + 17 * n as usize, "{with_v6}");
        assert!(with_v6 <= with_v4 + 40 * n as usize, "{with_v6}");
    }

    /// Eight threads insert overlapping ranges, released together so that they race on the
    /// same addresses: every address is counted once and reported new to exactly one thread.
    #[test]
    fn concurrent_inserts_never_double_count() {
        const THREADS: u32 = 8;
        const PER_THREAD: u32 = 20_000;
        const STEP: u32 = 5_000;
        let store = AddressSet::default();
        let start = Barrier::new(THREADS as usize);
        let new_per_thread: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, start) = (&store, &start);
                    s.spawn(move || {
                        start.wait();
                        let mut new = 0;
                        for i in t * STEP..t * STEP + PER_THREAD {
                            new += u64::from(store.insert(v4(i)));
                            new += u64::from(store.insert(v6(u128::from(i) * 0x9E37_79B9)));
                        }
                        new
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let distinct = u64::from((THREADS - 1) * STEP + PER_THREAD);
        assert_eq!(
            store.counts(),
            Counts {
                ipv4: distinct,
                ipv6: distinct
            }
        );
        assert_eq!(new_per_thread.iter().sum::<u64>(), 2 * distinct);
        for i in 0..(THREADS - 1) * STEP + PER_THREAD {
            assert!(store.contains(v4(i)) && store.contains(v6(u128::from(i) * 0x9E37_79B9)));
        }
    }

    /// One thread inserts 0, 1, 2, ... in order; another waits for each to be present and
    /// checks the count already includes it and everything before it.
    #[test]
    fn an_address_seen_present_is_already_counted() {
        const N: u32 = 20_000;
        let store = AddressSet::default();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..N {
                    store.insert(v4(i));
                    store.insert(v6(u128::from(i)));
                }
            });
            s.spawn(|| {
                for i in 0..N {
                    while !store.contains(v6(u128::from(i))) {
                        std::thread::yield_now();
                    }
                    let counts = store.counts();
                    assert!(
                        counts.ipv4 > u64::from(i) && counts.ipv6 > u64::from(i),
                        "{i}: {counts:?}"
                    );
                }
            });
        });
    }

    /// Addresses from small pools, so sequences repeat themselves, plus mapped forms of the
    /// IPv4 pool.
    fn address() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (0u32..64).prop_map(|i| v4(i << 20 | i)),
            (0u32..64).prop_map(|i| IpAddr::V6(Ipv4Addr::from_bits(i << 20 | i).to_ipv6_mapped())),
            (0u128..64).prop_map(|i| v6(0x2001_0db8 << 96 | i << 3)),
            any::<u32>().prop_map(v4),
            any::<u128>().prop_map(v6),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_a_hash_set(ops in proptest::collection::vec((any::<bool>(), address()), 0..300)) {
            let store = AddressSet::default();
            let mut model = HashSet::new();
            for (insert, ip) in ops {
                let canonical = ip.to_canonical();
                if insert {
                    prop_assert_eq!(store.insert(ip), model.insert(canonical));
                } else {
                    prop_assert_eq!(store.contains(ip), model.contains(&canonical));
                }
            }
            let ipv4 = model.iter().filter(|ip| ip.is_ipv4()).count() as u64;
            let ipv6 = model.len() as u64 - ipv4;
            prop_assert_eq!(store.counts(), Counts { ipv4, ipv6 });
        }

        /// Batches repeat addresses within themselves and across each other.
        #[test]
        fn insert_many_agrees_with_a_hash_set(
            batches in proptest::collection::vec(proptest::collection::vec(address(), 0..200), 0..8)
        ) {
            let store = AddressSet::default();
            let mut model = HashSet::new();
            for batch in batches {
                let new = batch.iter().filter(|ip| model.insert(ip.to_canonical())).count();
                prop_assert_eq!(store.insert_many(batch.iter().copied()), new as u64);
                for ip in &batch {
                    prop_assert!(store.contains(*ip));
                }
            }
            let ipv4 = model.iter().filter(|ip| ip.is_ipv4()).count() as u64;
            let ipv6 = model.len() as u64 - ipv4;
            prop_assert_eq!(store.counts(), Counts { ipv4, ipv6 });
        }
    }

    #[test]
    fn runs_give_back_every_address_once() {
        let store = AddressSet::default();
        let mut v4: Vec<u32> = (0..20_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        // One /16 past the dense threshold.
        v4.extend((0..5_000u32).map(|i| 0x0a0a_0000 | (i * 13 % 65_536)));
        let v6: Vec<u128> = (0..3_000u128).map(|i| 0x2001_0db8 << 96 | i << 9).collect();
        store.insert_bits(&mut v4.clone(), &v6);
        let (mut got4, mut got6) = (Vec::new(), Vec::new());
        store
            .for_each_run(|run| {
                match run {
                    Run::Ipv4(r) => {
                        assert!(r.is_sorted() && r.iter().all(|a| a >> 16 == r[0] >> 16));
                        got4.extend_from_slice(r);
                    }
                    Run::Ipv6(r) => got6.extend_from_slice(r),
                }
                Ok::<(), ()>(())
            })
            .unwrap();
        v4.sort_unstable();
        v4.dedup();
        let mut v6 = v6;
        v6.sort_unstable();
        got6.sort_unstable();
        assert!(got4.is_sorted());
        assert_eq!((got4, got6), (v4, v6));
    }

    /// Four threads insert the same addresses in batches, in different orders: each address is
    /// reported new by exactly one call.
    #[test]
    fn concurrent_batches_never_double_count() {
        const THREADS: usize = 4;
        const N: u32 = 50_000;
        let all: Vec<IpAddr> = (0..N)
            .flat_map(|i| [v4(i.wrapping_mul(2_654_435_761)), v6(u128::from(i) << 70)])
            .collect();
        let store = AddressSet::default();
        let start = Barrier::new(THREADS);
        let new: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, start, all) = (&store, &start, &all);
                    s.spawn(move || {
                        let mut mine = all.clone();
                        mine.rotate_left(t * all.len() / THREADS);
                        start.wait();
                        mine.chunks(1_000)
                            .map(|b| store.insert_many(b.iter().copied()))
                            .sum::<u64>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(new, 2 * u64::from(N));
        assert_eq!(
            store.counts(),
            Counts {
                ipv4: u64::from(N),
                ipv6: u64::from(N)
            }
        );
    }
}
