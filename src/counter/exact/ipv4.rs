//! Distinct IPv4 addresses: one lock-guarded block per /16, indexed directly by the top 16 bits.
//!
//! A block holds the low 16 bits of its members, as a sorted `Vec<u16>` while it has at most
//! 4,096 of them (2 bytes each) and as an 8 KiB bitset beyond (never more). It is the layout of a
//! roaring bitmap's containers, with two changes that matter for a hot, uniformly random insert
//! path: the block is found by indexing, not by a binary search over a container list (that
//! search was most of the time `roaring::RoaringBitmap::insert` spent, all cache misses), and a
//! sorted array grows by an eighth instead of doubling, so it carries little spare capacity.
//! `benches/store.rs` and `examples/memory.rs` measure both against roaring.
//!
//! 65,536 blocks cost 2 MiB before the first address; that is 0.2 bytes per address at 10
//! million. Each block has its own `parking_lot::Mutex`, so concurrent requests practically
//! never wait for each other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// A sorted block turns into a bitset when it would outgrow one (8 KiB = 4,096 × 2 bytes).
const DENSE_AT: usize = 4096;
const BITSET_WORDS: usize = 1 << 16 >> 6;

/// The members of one /16, by their low 16 bits.
enum Block {
    /// Sorted, at most [`DENSE_AT`] long.
    Sparse(Vec<u16>),
    /// One bit per member.
    Dense(Box<[u64; BITSET_WORDS]>),
}

impl Block {
    fn heap_bytes(&self) -> usize {
        match self {
            Block::Sparse(v) => v.capacity() * size_of::<u16>(),
            Block::Dense(bits) => size_of_val(&**bits),
        }
    }

    fn contains(&self, low: u16) -> bool {
        match self {
            Block::Sparse(v) => v.binary_search(&low).is_ok(),
            Block::Dense(bits) => bits[usize::from(low >> 6)] & (1 << (low & 63)) != 0,
        }
    }

    /// Adds `low`; true when it was not a member.
    fn insert(&mut self, low: u16) -> bool {
        match self {
            Block::Sparse(v) => match v.binary_search(&low) {
                Ok(_) => false,
                Err(_) if v.len() == DENSE_AT => {
                    let mut bits = Box::new([0u64; BITSET_WORDS]);
                    for &member in v.iter().chain([&low]) {
                        bits[usize::from(member >> 6)] |= 1 << (member & 63);
                    }
                    *self = Block::Dense(bits);
                    true
                }
                Err(at) => {
                    if v.len() == v.capacity() {
                        v.reserve_exact((v.len() / 8).max(4));
                    }
                    v.insert(at, low);
                    true
                }
            },
            Block::Dense(bits) => {
                let (word, bit) = (usize::from(low >> 6), 1u64 << (low & 63));
                let new = bits[word] & bit == 0;
                bits[word] |= bit;
                new
            }
        }
    }
}

/// Every distinct IPv4 address, as a `u32`.
pub(super) struct Ipv4Set {
    blocks: Box<[Mutex<Block>]>,
    len: AtomicU64,
    /// Heap bytes of all blocks, kept up to date under each block's lock.
    heap: AtomicUsize,
}

impl Ipv4Set {
    pub(super) fn new() -> Self {
        Self {
            blocks: (0..1 << 16)
                .map(|_| Mutex::new(Block::Sparse(Vec::new())))
                .collect(),
            len: AtomicU64::new(0),
            heap: AtomicUsize::new(0),
        }
    }

    fn block(&self, ip: u32) -> &Mutex<Block> {
        &self.blocks[(ip >> 16) as usize]
    }

    /// Adds `ip`; true when it is new. Of threads racing to add one address, one gets true.
    pub(super) fn insert(&self, ip: u32) -> bool {
        let mut block = self.block(ip).lock();
        let before = block.heap_bytes();
        let new = block.insert(ip as u16);
        if new {
            // Under the lock, so a thread that next finds `ip` present also sees it counted.
            self.len.fetch_add(1, Ordering::Relaxed);
            // Wrapping: turning a sorted block dense can shrink it.
            let change = block.heap_bytes().wrapping_sub(before);
            self.heap.fetch_add(change, Ordering::Relaxed);
        }
        new
    }

    /// Adds every address of `ips` (sorting it), locking each /16 block once; returns how many
    /// were new. Counts are updated per block, under its lock, as [`Ipv4Set::insert`] does.
    pub(super) fn insert_many(&self, ips: &mut [u32]) -> u64 {
        ips.sort_unstable();
        let mut new = 0;
        for group in ips.chunk_by(|a, b| a >> 16 == b >> 16) {
            let mut block = self.block(group[0]).lock();
            let before = block.heap_bytes();
            let added = group.iter().filter(|&&ip| block.insert(ip as u16)).count() as u64;
            if added > 0 {
                self.len.fetch_add(added, Ordering::Relaxed);
                let change = block.heap_bytes().wrapping_sub(before);
                self.heap.fetch_add(change, Ordering::Relaxed);
                new += added;
            }
        }
        new
    }

    pub(super) fn contains(&self, ip: u32) -> bool {
        self.block(ip).lock().contains(ip as u16)
    }

    /// Keeps only the addresses of `ips` (sorted) that are not members, locking each /16 block
    /// once.
    pub(super) fn retain_missing(&self, ips: &mut Vec<u32>) {
        let mut kept = 0;
        let mut at = 0;
        while at < ips.len() {
            let high = ips[at] >> 16;
            let block = self.block(ips[at]).lock();
            while at < ips.len() && ips[at] >> 16 == high {
                if !block.contains(ips[at] as u16) {
                    ips[kept] = ips[at];
                    kept += 1;
                }
                at += 1;
            }
        }
        ips.truncate(kept);
    }

    /// Calls `f` with the members of each non-empty /16 in ascending order, locking one block
    /// at a time: addresses added meanwhile may or may not be included.
    pub(super) fn for_each_block<E>(
        &self,
        mut f: impl FnMut(&[u32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut members = Vec::with_capacity(1 << 16);
        for (high, block) in (0u32..).zip(&self.blocks) {
            members.clear();
            match &*block.lock() {
                Block::Sparse(lows) => {
                    members.extend(lows.iter().map(|&low| high << 16 | u32::from(low)));
                }
                Block::Dense(bits) => {
                    for (word, &set) in (0u32..).zip(bits.iter()) {
                        let mut set = set;
                        while set != 0 {
                            members.push(high << 16 | word << 6 | set.trailing_zeros());
                            set &= set - 1;
                        }
                    }
                }
            }
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

    /// The block index plus every block's heap allocation, O(1).
    pub(super) fn memory_bytes(&self) -> usize {
        size_of_val(&*self.blocks) + self.heap.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_turns_dense_past_4096_members_and_keeps_them_all() {
        let set = Ipv4Set::new();
        let base = 0x0a00_0000u32;
        for low in 0..=DENSE_AT as u32 {
            assert!(set.insert(base | (low * 7 % 65_536)));
        }
        assert!(matches!(*set.block(base).lock(), Block::Dense(_)));
        for low in 0..=DENSE_AT as u32 {
            assert!(set.contains(base | (low * 7 % 65_536)));
            assert!(!set.insert(base | (low * 7 % 65_536)));
        }
        assert!(!set.contains(base | 1));
        assert_eq!(set.len(), DENSE_AT as u64 + 1);
    }

    #[test]
    fn memory_bytes_follows_the_blocks_allocations() {
        let set = Ipv4Set::new();
        let index = set.memory_bytes();
        assert_eq!(index, (1 << 16) * size_of::<Mutex<Block>>());
        set.insert(0x0102_0304);
        // The first member reserves room for four.
        assert_eq!(set.memory_bytes(), index + 4 * 2);
        for low in 0..=DENSE_AT as u32 {
            set.insert(0x0a0b_0000 | low);
        }
        assert_eq!(set.memory_bytes(), index + 4 * 2 + 8192);
    }

    #[test]
    fn sparse_blocks_carry_little_spare_capacity() {
        let set = Ipv4Set::new();
        for low in 0..1000u32 {
            set.insert(0x0a0b_0000 | (low * 31 % 65_536));
        }
        let Block::Sparse(v) = &*set.block(0x0a0b_0000).lock() else {
            panic!("1000 members stay sparse");
        };
        assert!(v.is_sorted());
        assert!(v.capacity() <= 1000 + 1000 / 8 + 4, "{}", v.capacity());
    }
}
