//! Distinct IPv6 addresses: `u128`s in 256 hash tables, each behind its own lock.
//!
//! The shard is picked by a hash of the address, not its top bits, because real IPv6 traffic
//! shares long prefixes and would pile into a few shards. The hash is seeded per process
//! (foldhash `RandomState`): addresses come from request bodies, so a fixed seed would let a
//! client send addresses that all collide.
//!
//! A bucket costs 16 bytes plus one control byte and a table doubles when 7/8 full, so one table
//! costs 19.4 to 38.9 bytes per address depending on where it is in its doubling cycle. With
//! equal shares all 256 tables double at the same moment and the whole store swings with them
//! (measured by RSS: 39.5 bytes per address at 1 million, 25.3 at 3 million). So the shares are
//! unequal on purpose: shard `i` gets a share proportional to 2^(i/256), spreading the shards'
//! sizes evenly over one doubling. Measured by RSS from 100 thousand to 15 million addresses
//! this stays between 28.2 and 32.8 bytes (31.5 at 1 million, 28.2 at 10 million); the price is
//! that the busiest shard takes twice the traffic of the quietest.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use parking_lot::Mutex;

const SHARDS: usize = 256;

/// One lock and what it guards, alone on its cache lines so that threads working on
/// neighbouring shards do not contend for the same line (128 bytes: x86 prefetches line pairs).
#[repr(align(128))]
#[derive(Default)]
struct Shard<T>(Mutex<T>);

fn new_shards<T: Default>() -> Box<[Shard<T>]> {
    (0..SHARDS).map(|_| Shard::default()).collect()
}

/// Bits of the hash that pick an IPv6 shard, through [`staggered_shard_table`].
const SHARD_PICK_BITS: u32 = 12;

/// Distinct IPv6 addresses as `u128`s in hash-sharded hash tables.
pub(super) struct Ipv6Set {
    shards: Box<[Shard<HashTable<u128>>]>,
    /// Hash bits → shard; shard `i` gets a share of the addresses proportional to 2^(i/256).
    shard_of: Box<[u8; 1 << SHARD_PICK_BITS]>,
    hasher: RandomState,
    len: AtomicU64,
}

impl Ipv6Set {
    pub(super) fn new() -> Self {
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
        let (hash, shard) = self.shard_index(ip);
        (hash, &self.shards[shard].0)
    }

    fn shard_index(&self, ip: u128) -> (u64, usize) {
        let hash = self.hasher.hash_one(ip);
        let pick = (hash >> (57 - SHARD_PICK_BITS)) as usize % (1 << SHARD_PICK_BITS);
        (hash, usize::from(self.shard_of[pick]))
    }

    pub(super) fn insert(&self, ip: u128) -> bool {
        let (hash, shard) = self.locate(ip);
        let mut table = shard.lock();
        match table.entry(hash, |&x| x == ip, |&x| self.hasher.hash_one(x)) {
            Entry::Vacant(slot) => {
                slot.insert(ip);
                // Under the lock, so a thread that next finds `ip` present also sees it counted.
                self.len.fetch_add(1, Ordering::Relaxed);
                true
            }
            Entry::Occupied(_) => false,
        }
    }

    /// Adds every address of `ips`, locking each shard once; returns how many were new.
    pub(super) fn insert_many(&self, ips: &[u128]) -> u64 {
        let mut located: Vec<(usize, u64, u128)> = ips
            .iter()
            .map(|&ip| {
                let (hash, shard) = self.shard_index(ip);
                (shard, hash, ip)
            })
            .collect();
        located.sort_unstable_by_key(|&(shard, ..)| shard);
        let mut new = 0;
        for group in located.chunk_by(|a, b| a.0 == b.0) {
            let mut table = self.shards[group[0].0].0.lock();
            let mut added = 0;
            for &(_, hash, ip) in group {
                if let Entry::Vacant(slot) =
                    table.entry(hash, |&x| x == ip, |&x| self.hasher.hash_one(x))
                {
                    slot.insert(ip);
                    added += 1;
                }
            }
            // Under the lock, as in `insert`.
            self.len.fetch_add(added, Ordering::Relaxed);
            new += added;
        }
        new
    }

    pub(super) fn contains(&self, ip: u128) -> bool {
        let (hash, shard) = self.locate(ip);
        shard.lock().find(hash, |&x| x == ip).is_some()
    }

    /// Calls `f` with the members of each non-empty shard, locking one shard at a time:
    /// addresses added meanwhile may or may not be included.
    pub(super) fn for_each_shard<E>(
        &self,
        mut f: impl FnMut(&[u128]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut members = Vec::new();
        for shard in &self.shards {
            members.clear();
            members.extend(shard.0.lock().iter().copied());
            if !members.is_empty() {
                f(&members)?;
            }
        }
        Ok(())
    }

    /// Distinct addresses, O(1).
    pub(super) fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Heap bytes of the shard tables; locks each shard in turn.
    pub(super) fn memory_bytes(&self) -> usize {
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
    use super::*;

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
        let set = Ipv6Set::new();
        let empty = set.memory_bytes();
        let n = 250_000u32;
        for i in 0..n {
            set.insert(0x2001_0db8 << 96 | (u128::from(i) * 0x1_0000_0001));
        }
        let per_address = (set.memory_bytes() - empty) as f64 / f64::from(n);
        assert!(per_address < 31.0, "{per_address}");
    }
}
