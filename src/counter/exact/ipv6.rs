//! Distinct IPv6 addresses: `u128`s in 256 shards, each behind its own lock, each a directory
//! of small blocks picked by the address's hash.
//!
//! The hash, not the address's top bits, picks both the shard and the block, because real IPv6
//! traffic shares long prefixes and would pile into a few of them. It is seeded per process
//! (foldhash `RandomState`): addresses come from request bodies, so a fixed seed would let a
//! client send addresses that all land in one block.
//!
//! A block is a short unsorted array, scanned whole (a few cache lines, read in order), that
//! grows by an eighth when full. When a shard averages [`SPLIT_AT`] addresses a block, its
//! directory doubles and every block splits in two by the next bit of the hash. So a shard never
//! holds empty slots as a hash table kept 7/8 full does: about 19 bytes an address at any size,
//! where the hash tables had cost 28 to 33 (docs/DESIGN.md, "The IPv6 set").

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use parking_lot::Mutex;

use crate::counter::windows::{Change, Order, StaleBefore, Stamp};

const SHARDS: usize = 256;

/// A shard's directory doubles when its blocks hold this many addresses on average.
const SPLIT_AT: usize = 40;

/// One lock and what it guards, alone on its cache lines so that threads working on
/// neighbouring shards do not contend for the same line (128 bytes: x86 prefetches line pairs).
#[repr(align(128))]
#[derive(Default)]
struct Shard(Mutex<Blocks>);

/// An address and its stamp (0 in an unstamped set), 18 bytes: kept together, so that a block is
/// one allocation with or without time windows.
#[derive(Clone, Copy)]
#[repr(C, packed(2))]
struct Slot {
    ip: u128,
    stamp: Stamp,
}

impl Slot {
    fn ip(&self) -> u128 {
        self.ip
    }
}

/// A shard's addresses, in `2^bits` blocks picked by the hash bits after the shard's own.
struct Blocks {
    bits: u32,
    blocks: Vec<Vec<Slot>>,
    len: usize,
}

impl Default for Blocks {
    fn default() -> Self {
        Blocks {
            bits: 0,
            blocks: vec![Vec::new()],
            len: 0,
        }
    }
}

/// The block of `hash` in a directory of `2^bits`: the bits after the shard's top 8.
fn block_of(hash: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        ((hash << 8) >> (64 - bits)) as usize
    }
}

impl Blocks {
    fn position(&self, ip: u128, hash: u64) -> (usize, Option<usize>) {
        let at = block_of(hash, self.bits);
        (at, self.blocks[at].iter().position(|s| s.ip() == ip))
    }

    fn contains(&self, ip: u128, hash: u64) -> bool {
        self.position(ip, hash).1.is_some()
    }

    /// Adds `ip` with `stamp`; true when it was not a member.
    fn insert(&mut self, ip: u128, hash: u64, stamp: Stamp, hasher: &RandomState) -> bool {
        let (at, None) = self.position(ip, hash) else {
            return false;
        };
        let block = &mut self.blocks[at];
        if block.len() == block.capacity() {
            // By an eighth, not doubling: most blocks are never full for long.
            block.reserve_exact((block.len() / 8).max(2));
        }
        block.push(Slot { ip, stamp });
        self.len += 1;
        if self.len > self.blocks.len() * SPLIT_AT {
            self.split(hasher);
        }
        true
    }

    /// Records `ip` seen at `stamp` in a stamped set: added, or moved to a later stamp.
    fn observe(
        &mut self,
        ip: u128,
        hash: u64,
        stamp: Stamp,
        order: Order,
        hasher: &RandomState,
    ) -> Option<Change> {
        match self.position(ip, hash) {
            (at, Some(i)) => {
                let slot = &mut self.blocks[at][i];
                let from = slot.stamp;
                order.newer(stamp, from).then(|| {
                    slot.stamp = stamp;
                    Change::Moved { from, to: stamp }
                })
            }
            (_, None) => {
                self.insert(ip, hash, stamp, hasher);
                Some(Change::Added(stamp))
            }
        }
    }

    /// Doubles the directory: block `i` becomes blocks `2i` and `2i + 1` by the next hash bit.
    fn split(&mut self, hasher: &RandomState) {
        let bits = self.bits + 1;
        let mut blocks = Vec::with_capacity(self.blocks.len() * 2);
        for old in std::mem::take(&mut self.blocks) {
            let (mut low, mut high): (Vec<Slot>, Vec<Slot>) = old
                .into_iter()
                .partition(|s| block_of(hasher.hash_one(s.ip()), bits).is_multiple_of(2));
            low.shrink_to_fit();
            high.shrink_to_fit();
            blocks.push(low);
            blocks.push(high);
        }
        self.blocks = blocks;
        self.bits = bits;
    }

    fn heap_bytes(&self) -> usize {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| b.capacity() * size_of::<Slot>())
            .sum();
        blocks + self.blocks.capacity() * size_of::<Vec<Slot>>()
    }
}

/// Distinct IPv6 addresses as `u128`s in hash-sharded blocks.
pub(super) struct Ipv6Set {
    shards: Box<[Shard]>,
    hasher: RandomState,
    len: AtomicU64,
}

impl Ipv6Set {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::default(),
            len: AtomicU64::new(0),
        }
    }

    /// The address's hash and its shard (the hash's top 8 bits).
    fn locate(&self, ip: u128) -> (u64, usize) {
        let hash = self.hasher.hash_one(ip);
        (hash, (hash >> 56) as usize % SHARDS)
    }

    pub(super) fn insert(&self, ip: u128) -> bool {
        let (hash, shard) = self.locate(ip);
        let mut shard = self.shards[shard].0.lock();
        let new = shard.insert(ip, hash, 0, &self.hasher);
        if new {
            // Under the lock, so a thread that next finds `ip` present also sees it counted.
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    /// Adds every address of `ips`, locking each shard once; returns how many were new.
    pub(super) fn insert_many(&self, ips: &[u128]) -> u64 {
        let mut located: Vec<(usize, u64, u128)> = ips
            .iter()
            .map(|&ip| {
                let (hash, shard) = self.locate(ip);
                (shard, hash, ip)
            })
            .collect();
        located.sort_unstable_by_key(|&(shard, ..)| shard);
        let mut new = 0;
        for group in located.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[group[0].0].0.lock();
            let added = group
                .iter()
                .filter(|&&(_, hash, ip)| shard.insert(ip, hash, 0, &self.hasher))
                .count() as u64;
            // Under the lock, as in `insert`.
            self.len.fetch_add(added, Ordering::Relaxed);
            new += added;
        }
        new
    }

    pub(super) fn contains(&self, ip: u128) -> bool {
        let (hash, shard) = self.locate(ip);
        self.shards[shard].0.lock().contains(ip, hash)
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
            members.extend(shard.0.lock().blocks.iter().flatten().map(Slot::ip));
            if !members.is_empty() {
                f(&members)?;
            }
        }
        Ok(())
    }

    /// Records each `(ip, stamp)` of `seen` as [`Blocks::observe`] does, locking each shard
    /// once; pushes what changed onto `changes`.
    pub(super) fn observe_many(
        &self,
        seen: &[(u128, Stamp)],
        order: Order,
        changes: &mut Vec<Change>,
    ) {
        let mut located: Vec<(usize, u64, u128, Stamp)> = seen
            .iter()
            .map(|&(ip, stamp)| {
                let (hash, shard) = self.locate(ip);
                (shard, hash, ip, stamp)
            })
            .collect();
        located.sort_unstable_by_key(|&(shard, ..)| shard);
        for group in located.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = self.shards[group[0].0].0.lock();
            let mut added = 0;
            for &(_, hash, ip, stamp) in group {
                if let Some(change) = shard.observe(ip, hash, stamp, order, &self.hasher) {
                    added += u64::from(matches!(change, Change::Added(_)));
                    changes.push(change);
                }
            }
            self.len.fetch_add(added, Ordering::Relaxed);
        }
    }

    /// In a stamped set, `ip`'s stamp; `None` when it is not a member.
    pub(super) fn stamp_of(&self, ip: u128) -> Option<Stamp> {
        let (hash, shard) = self.locate(ip);
        let shard = self.shards[shard].0.lock();
        let (at, found) = shard.position(ip, hash);
        found.map(|i| shard.blocks[at][i].stamp)
    }

    /// As [`Ipv6Set::for_each_shard`], with each member's stamp.
    pub(super) fn for_each_stamped_shard<E>(
        &self,
        mut f: impl FnMut(&[(u128, Stamp)]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut members = Vec::new();
        for shard in &self.shards {
            members.clear();
            members.extend(
                shard
                    .0
                    .lock()
                    .blocks
                    .iter()
                    .flatten()
                    .map(|s| (s.ip(), s.stamp)),
            );
            if !members.is_empty() {
                f(&members)?;
            }
        }
        Ok(())
    }

    /// Clears the stamps that `stale` names, one shard at a time.
    pub(super) fn clear_stale(&self, stale: &StaleBefore) {
        for shard in &self.shards {
            let mut shard = shard.0.lock();
            for slot in shard.blocks.iter_mut().flatten() {
                if stale.stale(slot.stamp) {
                    slot.stamp = 0;
                }
            }
        }
    }

    /// Distinct addresses, O(1).
    pub(super) fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    /// Heap bytes of the shards; locks each shard in turn.
    pub(super) fn memory_bytes(&self) -> usize {
        let blocks: usize = self.shards.iter().map(|s| s.0.lock().heap_bytes()).sum();
        size_of_val(&*self.shards) + blocks
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a BTreeSet, across directory splits, with addresses from a small pool
        /// (repeats), prefixes shared as real traffic shares them, and the extremes.
        #[test]
        fn a_shard_agrees_with_a_btree_set(
            ops in proptest::collection::vec(
                prop_oneof![
                    (0u128..3000).prop_map(|i| (0x2001_0db8 << 96) | (i * 7)),
                    any::<u128>(),
                    Just(0u128),
                    Just(u128::MAX),
                ],
                0..3000,
            )
        ) {
            let hasher = RandomState::default();
            let mut blocks = Blocks::default();
            let mut model = BTreeSet::new();
            for ip in ops {
                let hash = hasher.hash_one(ip);
                prop_assert_eq!(blocks.contains(ip, hash), model.contains(&ip));
                let stamp = (ip % 1000) as Stamp + 1;
                prop_assert_eq!(blocks.insert(ip, hash, stamp, &hasher), model.insert(ip));
            }
            // Each address's stamp stayed with it through the splits.
            for slot in blocks.blocks.iter().flatten() {
                let stamp = slot.stamp;
                prop_assert_eq!(stamp, (slot.ip() % 1000) as Stamp + 1);
            }
            prop_assert_eq!(blocks.len, model.len());
            prop_assert_eq!(blocks.blocks.len(), 1 << blocks.bits);
            let mut all: Vec<u128> = blocks.blocks.iter().flatten().map(Slot::ip).collect();
            all.sort_unstable();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        }
    }

    /// Under 22 heap bytes an address whatever the size: no doubling cycle to peak in.
    #[test]
    fn ipv6_memory_stays_under_twenty_bytes_an_address() {
        let set = Ipv6Set::new();
        let empty = set.memory_bytes();
        let mut next = 0u128;
        for n in [50_000u32, 250_000, 600_000] {
            while set.len() < u64::from(n) {
                next += 1;
                set.insert(0x2001_0db8 << 96 | next.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            }
            let per_address = (set.memory_bytes() - empty) as f64 / f64::from(n);
            assert!((18.0..22.0).contains(&per_address), "{n}: {per_address}");
        }
    }
}
