//! Exact in-memory counting: every distinct address is kept, so the count is never an estimate.
//!
//! This module owns the two sets behind [`ExactStore`] and their counters:
//!
//! - **IPv4**: 256 shards, each a `parking_lot::Mutex<RoaringBitmap>` of the address as a `u32`.
//!   Roaring keeps one container per /16 (a sorted `u16` array up to 4,096 members, then an
//!   8 KiB bitset), so a shard is chosen from the top 16 bits only and a /16 never straddles two
//!   shards. The shard index mixes the first and second octets so that one busy /8 still spreads
//!   over every shard. 10 million uniformly random addresses cost about 4.1 bytes each in process
//!   RSS, 3.5 by `memory_bytes()` (a `HashSet<u32>` needs 5.7 to 11.4 bytes, 8.4 at 10 million).
//! - **IPv6**: 256 shards, each a `parking_lot::Mutex<hashbrown::HashTable<u128>>`, chosen by a
//!   hash of the address because real IPv6 traffic shares long prefixes and sharding by top bits
//!   would pile it into a few shards. A bucket costs 16 bytes plus one control byte and a table
//!   doubles when 7/8 full, so one table costs 19.4 to 38.9 bytes per address depending on where
//!   it is in its doubling cycle. With equal shares all 256 tables double at the same moment and
//!   the whole store swings with them: measured by RSS, 1 million addresses cost 39.5 bytes each,
//!   3 million 25.3. So the shares are unequal on purpose: shard `i` gets a share proportional to
//!   2^(i/256), spreading the shards' sizes evenly over one doubling, so only a few tables have
//!   just grown at any total. Measured by RSS from 100 thousand to 15 million addresses this
//!   stays between 28.2 and 32.8 bytes (31.5 at 1 million, 28.2 at 10 million); the price is
//!   that the busiest shard takes twice the traffic of the quietest.
//!   The hash is seeded per process (foldhash `RandomState`): addresses come from request
//!   bodies, so a fixed seed would let a client send addresses that all collide.
//!
//! Each family has an atomic counter, bumped inside the shard's lock only when an insert finds
//! the address new, so [`ExactStore::counts`] is O(1), never takes a lock, and already includes
//! any address this thread has seen `insert` or `contains` report. `examples/memory.rs` measures
//! the figures above (`cargo run --release --example memory -- [N_IPV4] [N_IPV6]`).

use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use parking_lot::Mutex;
use roaring::RoaringBitmap;

use super::Counts;

/// log2 of the number of shards per family.
const SHARD_BITS: u32 = 8;
const SHARDS: usize = 1 << SHARD_BITS;

/// Every distinct address seen, IPv4 and IPv6 kept apart, safe to share between threads.
///
/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are stored and counted as IPv4.
pub struct ExactStore {
    ipv4: Ipv4Set,
    ipv6: Ipv6Set,
}

impl Default for ExactStore {
    fn default() -> Self {
        Self {
            ipv4: Ipv4Set::new(),
            ipv6: Ipv6Set::new(),
        }
    }
}

// Deriving Debug would print every stored address.
impl fmt::Debug for ExactStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = self.counts();
        f.debug_struct("ExactStore")
            .field("ipv4", &counts.ipv4)
            .field("ipv6", &counts.ipv6)
            .finish_non_exhaustive()
    }
}

impl ExactStore {
    /// Adds `ip`; returns `true` when it was not seen before.
    ///
    /// Of any number of threads inserting the same new address at once, exactly one gets `true`.
    pub fn insert(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ipv4.insert(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.ipv4.insert(v4.to_bits()),
                None => self.ipv6.insert(v6.to_bits()),
            },
        }
    }

    /// Whether `ip` has been seen.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.ipv4.contains(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.ipv4.contains(v4.to_bits()),
                None => self.ipv6.contains(v6.to_bits()),
            },
        }
    }

    /// The distinct counts by family, read in O(1) without locking.
    ///
    /// Includes every address whose `insert` or `contains` has returned on this thread.
    pub fn counts(&self) -> Counts {
        Counts {
            ipv4: self.ipv4.len.load(Ordering::Relaxed),
            ipv6: self.ipv6.len.load(Ordering::Relaxed),
        }
    }

    /// Heap bytes held by both sets right now, summed from each shard's allocations.
    ///
    /// Locks one shard at a time, so it is cheap enough for every `/stats` request but not for
    /// a hot loop.
    pub fn memory_bytes(&self) -> usize {
        self.ipv4.memory_bytes() + self.ipv6.memory_bytes()
    }
}

/// One lock and what it guards, alone on its cache lines so that threads working on
/// neighbouring shards do not contend for the same line (128 bytes: x86 prefetches line pairs).
#[repr(align(128))]
#[derive(Default)]
struct Shard<T>(Mutex<T>);

fn new_shards<T: Default>() -> Box<[Shard<T>]> {
    (0..SHARDS).map(|_| Shard::default()).collect()
}

/// Distinct IPv4 addresses as `u32`s in sharded roaring bitmaps.
struct Ipv4Set {
    shards: Box<[Shard<RoaringBitmap>]>,
    len: AtomicU64,
}

/// Heap bytes of one roaring bitmap container entry (`key: u16` + the store enum); roaring
/// keeps the type private, so this is its size on 64-bit targets.
const ROARING_CONTAINER_BYTES: usize = 32;
/// Heap bytes of a roaring bitset container (`Box<[u64; 1024]>`).
const ROARING_BITSET_BYTES: usize = 8192;

impl Ipv4Set {
    fn new() -> Self {
        Self {
            shards: new_shards(),
            len: AtomicU64::new(0),
        }
    }

    /// Shard by the top 16 bits only (one roaring container never splits), first octet XOR
    /// second so that a crowded /8 still uses every shard.
    fn shard(&self, ip: u32) -> &Mutex<RoaringBitmap> {
        &self.shards[((ip >> 24) ^ (ip >> 16)) as usize % SHARDS].0
    }

    fn insert(&self, ip: u32) -> bool {
        let mut bitmap = self.shard(ip).lock();
        let new = bitmap.insert(ip);
        if new {
            // Under the lock, so a thread that next finds `ip` present also sees it counted.
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    fn contains(&self, ip: u32) -> bool {
        self.shard(ip).lock().contains(ip)
    }

    fn memory_bytes(&self) -> usize {
        let bitmaps: usize = self
            .shards
            .iter()
            .map(|s| roaring_heap_bytes(&s.0.lock()))
            .sum();
        size_of_val(&*self.shards) + bitmaps
    }
}

/// Heap bytes of one bitmap, from its containers' capacities.
fn roaring_heap_bytes(bitmap: &RoaringBitmap) -> usize {
    let stats = bitmap.statistics();
    // roaring 0.11 reports array containers as capacity × 4 bytes, but they hold `u16`s; the
    // `roaring_array_statistics_unit` test catches a release that changes this.
    let arrays = stats.n_bytes_array_containers as usize / 4 * size_of::<u16>();
    // ... and bitset containers in bits.
    let bitsets = stats.n_bitset_containers as usize * ROARING_BITSET_BYTES;
    let runs = stats.n_bytes_run_containers as usize;
    // The container vector's capacity is not visible; its length is a lower bound.
    let containers = stats.n_containers as usize * ROARING_CONTAINER_BYTES;
    arrays + bitsets + runs + containers
}

/// Bits of the hash that pick an IPv6 shard, through [`staggered_shard_table`].
const SHARD_PICK_BITS: u32 = 12;

/// Distinct IPv6 addresses as `u128`s in hash-sharded hash tables.
struct Ipv6Set {
    shards: Box<[Shard<HashTable<u128>>]>,
    /// Hash bits → shard; shard `i` gets a share of the addresses proportional to 2^(i/256).
    shard_of: Box<[u8; 1 << SHARD_PICK_BITS]>,
    hasher: RandomState,
    len: AtomicU64,
}

impl Ipv6Set {
    fn new() -> Self {
        Self {
            shards: new_shards(),
            shard_of: staggered_shard_table(),
            hasher: RandomState::default(),
            len: AtomicU64::new(0),
        }
    }

    /// The address's hash and its shard. One hash serves both: hashbrown places an entry by the
    /// low bits and tags it with the top 7, so the shard comes from bits 45..57, which neither
    /// uses until a single shard holds 2^45 buckets.
    fn locate(&self, ip: u128) -> (u64, &Mutex<HashTable<u128>>) {
        let hash = self.hasher.hash_one(ip);
        let pick = (hash >> (57 - SHARD_PICK_BITS)) as usize % (1 << SHARD_PICK_BITS);
        (hash, &self.shards[usize::from(self.shard_of[pick])].0)
    }

    fn insert(&self, ip: u128) -> bool {
        let (hash, shard) = self.locate(ip);
        let mut table = shard.lock();
        match table.entry(hash, |&x| x == ip, |&x| self.hasher.hash_one(x)) {
            Entry::Vacant(slot) => {
                slot.insert(ip);
                // Under the lock, as for IPv4.
                self.len.fetch_add(1, Ordering::Relaxed);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    fn contains(&self, ip: u128) -> bool {
        let (hash, shard) = self.locate(ip);
        shard.lock().find(hash, |&x| x == ip).is_some()
    }

    fn memory_bytes(&self) -> usize {
        let tables: usize = self
            .shards
            .iter()
            .map(|s| s.0.lock().allocation_size())
            .sum();
        size_of_val(&*self.shards) + size_of_val(&*self.shard_of) + tables
    }
}

/// Maps hash bits to shards so that shard `i` receives a share proportional to 2^(i/256): the
/// shard sizes spread evenly over one doubling, so at any total only a few shards have just
/// grown their tables. With equal shares all 256 tables double at the same moment and the cost
/// per address swings between 19 and 39 heap bytes; staggered it stays between 26 and 29.5
/// (computed for 100 thousand to 20 million addresses; the module docs give measured RSS).
fn staggered_shard_table() -> Box<[u8; 1 << SHARD_PICK_BITS]> {
    let slots = f64::from(1u32 << SHARD_PICK_BITS);
    let mut table = Box::new([0u8; 1 << SHARD_PICK_BITS]);
    for (slot, shard) in table.iter_mut().enumerate() {
        // The inverse of the cumulative share 2^(i/256) - 1, sampled at the slot's middle.
        let position = (slot as f64 + 0.5) / slots;
        *shard = (SHARDS as f64 * (1.0 + position).log2()) as u8;
    }
    table
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
        let store = ExactStore::default();
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
        let store = ExactStore::default();
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
        let store = ExactStore::default();
        for ip in [v4(0), v4(u32::MAX), v6(0), v6(1), v6(u128::MAX)] {
            assert!(store.insert(ip), "{ip}");
        }
        assert_eq!(store.counts(), Counts { ipv4: 2, ipv6: 3 });
    }

    #[test]
    fn mapped_ipv6_counts_as_ipv4() {
        let store = ExactStore::default();
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
        let store = ExactStore::default();
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
        let store = ExactStore::default();
        let empty = store.memory_bytes();
        assert!(empty > 0, "the shard arrays alone are on the heap");

        let n = 100_000u32;
        for i in 0..n {
            // About 150 /16s with 670 members each: array containers, as with real traffic.
            store.insert(v4(i * 97));
        }
        let with_v4 = store.memory_bytes();
        // A roaring array container spends at least 2 bytes on each member.
        assert!(with_v4 >= empty + 2 * n as usize, "{with_v4}");
        assert!(with_v4 <= empty + 16 * n as usize, "{with_v4}");

        for i in 0..n {
            store.insert(v6(0x2001_0db8 << 96 | u128::from(i)));
        }
        let with_v6 = store.memory_bytes();
        assert!(with_v6 >= with_v4 + 17 * n as usize, "{with_v6}");
        assert!(with_v6 <= with_v4 + 40 * n as usize, "{with_v6}");
    }

    /// `roaring_heap_bytes` relies on how roaring 0.11 reports array container sizes: one
    /// value pushes an empty `Vec<u16>` to capacity 4, reported as 16 bytes.
    #[test]
    fn ipv6_shard_shares_spread_over_one_doubling() {
        let table = staggered_shard_table();
        assert!(table.is_sorted());
        let mut slots = [0u32; SHARDS];
        for &shard in table.iter() {
            slots[usize::from(shard)] += 1;
        }
        assert!(
            slots.iter().all(|&n| n > 0),
            "every shard is used: {slots:?}"
        );
        let first: u32 = slots[..32].iter().sum();
        let last: u32 = slots[SHARDS - 32..].iter().sum();
        // 2^(224/256) = 1.83
        let ratio = f64::from(last) / f64::from(first);
        assert!((1.7..1.95).contains(&ratio), "{ratio}");
    }

    /// At 250,000 addresses equal shares would put 976 in each shard, all of whose tables would
    /// just have doubled to 2,048 buckets: 35.7 bytes per address.
    #[test]
    fn ipv6_memory_has_no_peak_where_equal_shards_would_double() {
        let store = ExactStore::default();
        let empty = store.memory_bytes();
        let n = 250_000u32;
        for i in 0..n {
            store.insert(v6(0x2001_0db8 << 96 | (u128::from(i) * 0x1_0000_0001)));
        }
        let per_address = (store.memory_bytes() - empty) as f64 / f64::from(n);
        assert!(per_address < 31.0, "{per_address}");
    }

    #[test]
    fn roaring_array_statistics_unit() {
        let mut bitmap = RoaringBitmap::new();
        bitmap.insert(1);
        let stats = bitmap.statistics();
        assert_eq!(stats.n_array_containers, 1);
        assert_eq!(stats.n_bytes_array_containers, 16);
        assert_eq!(roaring_heap_bytes(&bitmap), 4 * 2 + ROARING_CONTAINER_BYTES);
    }

    #[test]
    fn bitset_containers_are_counted() {
        let mut bitmap = RoaringBitmap::new();
        // One at a time: `insert_range` would make a run container.
        for i in 0..10_000 {
            bitmap.insert(i * 2);
        }
        assert_eq!(
            roaring_heap_bytes(&bitmap),
            ROARING_BITSET_BYTES + ROARING_CONTAINER_BYTES
        );
    }

    /// Eight threads insert overlapping ranges, released together so that they race on the
    /// same addresses: every address is counted once and reported new to exactly one thread.
    #[test]
    fn concurrent_inserts_never_double_count() {
        const THREADS: u32 = 8;
        const PER_THREAD: u32 = 20_000;
        const STEP: u32 = 5_000;
        let store = ExactStore::default();
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
        let store = ExactStore::default();
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
            let store = ExactStore::default();
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
    }
}
