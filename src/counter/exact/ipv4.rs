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
//! In a stamped set (time windows on) a sparse block keeps each member beside its stamp in one
//! `u32`; a dense one keeps the stamps in a 65,536-entry array.
//!
//! 65,536 blocks cost 2 MiB before the first address; that is 0.2 bytes per address at 10
//! million. Each block has its own `parking_lot::Mutex`, so concurrent requests practically
//! never wait for each other.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::counter::windows::{Change, Order, StaleBefore, Stamp};

/// A sorted block turns into a bitset when it would outgrow one (8 KiB = 4,096 × 2 bytes).
const DENSE_AT: usize = 4096;
const BITSET_WORDS: usize = 1 << 16 >> 6;

/// The members of one /16, by their low 16 bits.
enum Members {
    /// Sorted, at most [`DENSE_AT`] long.
    Sparse(Vec<u16>),
    /// In a stamped set: each member as `low << 16 | stamp`, so sorted by its low bits, at most
    /// [`DENSE_AT`] long. Beside each other, a member and its stamp cost one cache miss to find
    /// and one move to insert (two arrays cost the windows a fifth of their batch time).
    Stamped(Vec<u32>),
    /// One bit per member.
    Dense(Box<[u64; BITSET_WORDS]>),
}

/// A /16's members and, once dense in a stamped set (time windows on), each member's stamp at
/// its low bits (65,536 of them); empty otherwise.
struct Block {
    members: Members,
    stamps: Vec<Stamp>,
}

impl Block {
    /// An empty block, `stamped` or not.
    fn new(stamped: bool) -> Block {
        let members = if stamped {
            Members::Stamped(Vec::new())
        } else {
            Members::Sparse(Vec::new())
        };
        Block {
            members,
            stamps: Vec::new(),
        }
    }

    fn heap_bytes(&self) -> usize {
        let members = match &self.members {
            Members::Sparse(v) => v.capacity() * size_of::<u16>(),
            Members::Stamped(v) => v.capacity() * size_of::<u32>(),
            Members::Dense(bits) => size_of_val(&**bits),
        };
        members + self.stamps.capacity() * size_of::<Stamp>()
    }

    /// Where `low` is, if it is a member: `Ok(index)`; else `Err(where it would go)`.
    fn find(&self, low: u16) -> Result<usize, usize> {
        match &self.members {
            Members::Sparse(v) => v.binary_search(&low),
            Members::Stamped(v) => v.binary_search_by(|&m| ((m >> 16) as u16).cmp(&low)),
            Members::Dense(bits) if bits[usize::from(low >> 6)] & (1 << (low & 63)) != 0 => {
                Ok(usize::from(low))
            }
            Members::Dense(_) => Err(usize::from(low)),
        }
    }

    fn contains(&self, low: u16) -> bool {
        self.find(low).is_ok()
    }

    /// The stamp of the member [`Block::find`] found at `at` (0 in an unstamped block).
    fn stamp(&self, at: usize) -> Stamp {
        match &self.members {
            Members::Stamped(v) => v[at] as Stamp,
            Members::Dense(_) if !self.stamps.is_empty() => self.stamps[at],
            Members::Sparse(_) | Members::Dense(_) => 0,
        }
    }

    /// Gives the member at `at` (of a stamped block) `stamp`; returns its stamp before.
    fn restamp(&mut self, at: usize, stamp: Stamp) -> Stamp {
        match &mut self.members {
            Members::Stamped(v) => {
                let from = v[at] as Stamp;
                v[at] = v[at] & !0xffff | u32::from(stamp);
                from
            }
            _ => std::mem::replace(&mut self.stamps[at], stamp),
        }
    }

    /// Adds `low` with `stamp` (kept only in a stamped block); true when it was not a member.
    fn insert(&mut self, low: u16, stamp: Stamp) -> bool {
        let Err(at) = self.find(low) else {
            return false;
        };
        self.insert_at(at, low, stamp);
        true
    }

    /// Adds `low`, which is not a member, where [`Block::find`] said it would go.
    fn insert_at(&mut self, at: usize, low: u16, stamp: Stamp) {
        match &mut self.members {
            Members::Sparse(v) if v.len() == DENSE_AT => {
                self.members = Members::Dense(bitset(v.iter().copied().chain([low])));
            }
            Members::Stamped(v) if v.len() == DENSE_AT => {
                let mut dense = vec![0; 1 << 16];
                for &m in v.iter() {
                    dense[(m >> 16) as usize] = m as Stamp;
                }
                dense[usize::from(low)] = stamp;
                self.stamps = dense;
                let lows = v.iter().map(|&m| (m >> 16) as u16);
                self.members = Members::Dense(bitset(lows.chain([low])));
            }
            Members::Sparse(v) => {
                grow(v);
                v.insert(at, low);
            }
            Members::Stamped(v) => {
                grow(v);
                v.insert(at, u32::from(low) << 16 | u32::from(stamp));
            }
            Members::Dense(bits) => {
                bits[usize::from(low >> 6)] |= 1 << (low & 63);
                if !self.stamps.is_empty() {
                    self.stamps[at] = stamp;
                }
            }
        }
    }

    /// As [`Block::find`], trying `hint` first in a stamped sparse block: where `low` was found
    /// (or would have gone) before.
    fn find_near(&self, low: u16, hint: Option<usize>) -> Result<usize, usize> {
        if let (Some(at), Members::Stamped(v)) = (hint, &self.members) {
            let low_at = |i: usize| v.get(i).map(|&m| (m >> 16) as u16);
            match low_at(at) {
                Some(here) if here == low => return Ok(at),
                here if here.is_none_or(|h| h > low)
                    && (at == 0 || low_at(at - 1).is_some_and(|b| b < low)) =>
                {
                    return Err(at);
                }
                _ => {}
            }
        }
        self.find(low)
    }

    /// Records `low` seen at `stamp` in a stamped block: added, or moved to a later stamp.
    /// `hint` as [`Block::find_near`] takes it.
    fn observe(
        &mut self,
        low: u16,
        stamp: Stamp,
        order: Order,
        hint: Option<usize>,
    ) -> Option<Change> {
        match self.find_near(low, hint) {
            Ok(at) if order.newer(stamp, self.stamp(at)) => {
                let from = self.restamp(at, stamp);
                Some(Change::Moved { from, to: stamp })
            }
            Ok(_) => None,
            Err(at) => {
                self.insert_at(at, low, stamp);
                Some(Change::Added(stamp))
            }
        }
    }

    /// Zeroes every stamp `stale` names.
    fn clear_stale(&mut self, stale: &StaleBefore) {
        if let Members::Stamped(v) = &mut self.members {
            for m in v.iter_mut().filter(|m| stale.stale(**m as Stamp)) {
                *m &= !0xffff;
            }
        }
        for stamp in self.stamps.iter_mut().filter(|s| stale.stale(**s)) {
            *stamp = 0;
        }
    }
}

/// A full sorted array doubles while small (from 4 to 16), then grows by 16 and, past 128, by
/// an eighth: little spare capacity in a large array, and few moves of a small one (growing by
/// 4 moved a stamped block's allocation every fourth insert, a fifth of what time windows
/// added to a batch).
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(v.len().clamp(4, 16)));
    }
}

/// The bitset of `lows`.
fn bitset(lows: impl Iterator<Item = u16>) -> Box<[u64; BITSET_WORDS]> {
    let mut bits = Box::new([0u64; BITSET_WORDS]);
    for low in lows {
        bits[usize::from(low >> 6)] |= 1 << (low & 63);
    }
    bits
}

/// Every distinct IPv4 address, as a `u32`.
pub(super) struct Ipv4Set {
    blocks: Box<[Mutex<Block>]>,
    /// Whether each member keeps a stamp (time windows on).
    stamped: bool,
    len: AtomicU64,
    /// Heap bytes of all blocks, kept up to date under each block's lock.
    heap: AtomicUsize,
}

impl Ipv4Set {
    /// An empty set; `stamped` keeps a stamp beside each member.
    pub(super) fn new(stamped: bool) -> Self {
        Self {
            blocks: (0..1 << 16)
                .map(|_| Mutex::new(Block::new(stamped)))
                .collect(),
            stamped,
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
        let new = block.insert(ip as u16, 0);
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
            let added = group
                .iter()
                .filter(|&&ip| block.insert(ip as u16, 0))
                .count() as u64;
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
        self.retain_by_block(ips, |&ip| ip, |block, &ip| !block.contains(ip as u16));
    }

    /// Keeps the items of `items` (sorted by the address `ip` gives) for which `keep`, given
    /// the address's block, says so; locks each /16 block once.
    fn retain_by_block<T: Copy>(
        &self,
        items: &mut Vec<T>,
        ip: impl Fn(&T) -> u32,
        mut keep: impl FnMut(&Block, &T) -> bool,
    ) {
        debug_assert!(items.is_sorted_by_key(&ip));
        let (mut kept, mut at) = (0, 0);
        while at < items.len() {
            let high = ip(&items[at]) >> 16;
            let block = self.block(ip(&items[at])).lock();
            while at < items.len() && ip(&items[at]) >> 16 == high {
                if keep(&block, &items[at]) {
                    items[kept] = items[at];
                    kept += 1;
                }
                at += 1;
            }
        }
        items.truncate(kept);
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
            match &block.lock().members {
                Members::Sparse(lows) => {
                    members.extend(lows.iter().map(|&low| high << 16 | u32::from(low)));
                }
                Members::Stamped(v) => members.extend(v.iter().map(|&m| high << 16 | m >> 16)),
                Members::Dense(bits) => {
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

    /// Records `ip` seen at `stamp` in a stamped set; what changed, if anything.
    #[cfg(test)]
    fn observe(&self, ip: u32, stamp: Stamp, order: Order) -> Option<Change> {
        debug_assert!(self.stamped);
        let mut block = self.block(ip).lock();
        let before = block.heap_bytes();
        let change = block.observe(ip as u16, stamp, order, None)?;
        if let Change::Added(_) = change {
            self.len.fetch_add(1, Ordering::Relaxed);
            let grown = block.heap_bytes().wrapping_sub(before);
            self.heap.fetch_add(grown, Ordering::Relaxed);
        }
        Some(change)
    }

    /// Records each `(ip, stamp)` of `seen` (sorted by address) as [`Block::observe`] does,
    /// locking each /16 block once; pushes what changed onto `changes`. `found`, when not
    /// empty, holds what [`Ipv4Set::retain_changing`] found for each: where to look first.
    pub(super) fn observe_many(
        &self,
        seen: &[(u32, Stamp)],
        found: &[u32],
        order: Order,
        changes: &mut Vec<Change>,
    ) {
        debug_assert!(self.stamped);
        debug_assert!(seen.is_sorted_by_key(|&(ip, _)| ip));
        let mut found = found.iter();
        for group in seen.chunk_by(|a, b| a.0 >> 16 == b.0 >> 16) {
            let mut block = self.block(group[0].0).lock();
            let before = block.heap_bytes();
            let mut added = 0;
            for &(ip, stamp) in group {
                // Each member added before it in this block moved it one place on.
                let hint = found.next().map(|&at| at as usize + added);
                if let Some(change) = block.observe(ip as u16, stamp, order, hint) {
                    added += usize::from(matches!(change, Change::Added(_)));
                    changes.push(change);
                }
            }
            if added > 0 {
                self.len.fetch_add(added as u64, Ordering::Relaxed);
                let grown = block.heap_bytes().wrapping_sub(before);
                self.heap.fetch_add(grown, Ordering::Relaxed);
            }
        }
    }

    /// Keeps only the sightings of `seen` (sorted by address) that are not members or are
    /// later than their member's stamp, locking each /16 block once; returns how many of
    /// those kept are not members. `found` gets, for each kept, where it is in its block or
    /// would go.
    pub(super) fn retain_changing(
        &self,
        seen: &mut Vec<(u32, Stamp)>,
        found: &mut Vec<u32>,
        order: Order,
    ) -> usize {
        found.clear();
        let mut new = 0;
        self.retain_by_block(
            seen,
            |&(ip, _)| ip,
            |block, &(ip, stamp)| match block.find(ip as u16) {
                Ok(i) if order.newer(stamp, block.stamp(i)) => {
                    found.push(i as u32);
                    true
                }
                Ok(_) => false,
                Err(i) => {
                    new += 1;
                    found.push(i as u32);
                    true
                }
            },
        );
        new
    }

    /// In a stamped set, `ip`'s stamp; `None` when it is not a member.
    pub(super) fn stamp_of(&self, ip: u32) -> Option<Stamp> {
        let block = self.block(ip).lock();
        block.find(ip as u16).ok().map(|at| block.stamp(at))
    }

    /// As [`Ipv4Set::for_each_block`], in a stamped set, with each member's stamp.
    pub(super) fn for_each_stamped_block<E>(
        &self,
        mut f: impl FnMut(&[(u32, Stamp)]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut members = Vec::with_capacity(1 << 16);
        for (high, block) in (0u32..).zip(&self.blocks) {
            members.clear();
            let block = block.lock();
            match &block.members {
                Members::Stamped(v) => {
                    members.extend(v.iter().map(|&m| (high << 16 | m >> 16, m as Stamp)));
                }
                Members::Sparse(lows) => {
                    members.extend(lows.iter().map(|&low| (high << 16 | u32::from(low), 0)));
                }
                Members::Dense(bits) => {
                    for (word, &set) in (0u32..).zip(bits.iter()) {
                        let mut set = set;
                        while set != 0 {
                            let low = word << 6 | set.trailing_zeros();
                            members.push((high << 16 | low, block.stamp(low as usize)));
                            set &= set - 1;
                        }
                    }
                }
            }
            drop(block);
            if !members.is_empty() {
                f(&members)?;
            }
        }
        Ok(())
    }

    /// Clears the stamps that `stale` names, one block at a time.
    pub(super) fn clear_stale(&self, stale: &StaleBefore) {
        for block in &self.blocks {
            block.lock().clear_stale(stale);
        }
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
        let set = Ipv4Set::new(false);
        let base = 0x0a00_0000u32;
        for low in 0..=DENSE_AT as u32 {
            assert!(set.insert(base | (low * 7 % 65_536)));
        }
        assert!(matches!(set.block(base).lock().members, Members::Dense(_)));
        for low in 0..=DENSE_AT as u32 {
            assert!(set.contains(base | (low * 7 % 65_536)));
            assert!(!set.insert(base | (low * 7 % 65_536)));
        }
        assert!(!set.contains(base | 1));
        assert_eq!(set.len(), DENSE_AT as u64 + 1);
    }

    #[test]
    fn memory_bytes_follows_the_blocks_allocations() {
        let set = Ipv4Set::new(false);
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
        let set = Ipv4Set::new(false);
        for low in 0..1000u32 {
            set.insert(0x0a0b_0000 | (low * 31 % 65_536));
        }
        let block = set.block(0x0a0b_0000).lock();
        let Members::Sparse(v) = &block.members else {
            panic!("1000 members stay sparse");
        };
        assert!(v.is_sorted());
        assert!(v.capacity() <= 1000 + 1000 / 8 + 16, "{}", v.capacity());
    }

    /// A stamped block keeps each member's stamp through inserts and its turn dense, moves it
    /// only to a later one, and clears the stale ones.
    #[test]
    fn a_stamped_block_keeps_each_members_latest_stamp() {
        let set = Ipv4Set::new(true);
        let base = 0x0a00_0000u32;
        let order = Order::at(1_000, 10);
        let stamp_of = |low: u32| (low % 900 + 1) as Stamp;
        for low in (0..=DENSE_AT as u32).rev() {
            let change = set.observe(base | low, stamp_of(low), order);
            assert_eq!(change, Some(Change::Added(stamp_of(low))));
        }
        assert!(matches!(set.block(base).lock().members, Members::Dense(_)));
        assert_eq!(set.len(), DENSE_AT as u64 + 1);
        for low in 0..=DENSE_AT as u32 {
            let block = set.block(base).lock();
            let at = block.find(low as u16).unwrap();
            assert_eq!(block.stamp(at), stamp_of(low), "{low}");
        }
        // Earlier: nothing; later: moved.
        assert_eq!(set.observe(base | 5, 1, order), None);
        let moved = set.observe(base | 5, 950, order);
        let expected = Change::Moved {
            from: stamp_of(5),
            to: 950,
        };
        assert_eq!(moved, Some(expected));
    }

    /// A hint is only tried: right, stale or out of range, the block ends up as searching
    /// alone would leave it.
    #[test]
    fn observing_with_any_hint_leaves_the_block_as_searching_does() {
        let order = Order::at(1_000, 10);
        let lows: Vec<u16> = (0..200).map(|i| (i * 7919 % 4000) as u16).collect();
        for wrong in [0usize, 1, 3, 50, 10_000] {
            let (mut hinted, mut searched) = (Block::new(true), Block::new(true));
            for (i, &low) in lows.iter().enumerate() {
                let stamp = (i % 30 + 1) as Stamp;
                let right = hinted.find(low).unwrap_or_else(|at| at);
                let hint = if i % 2 == 0 { right } else { right + wrong };
                let a = hinted.observe(low, stamp, order, Some(hint));
                let b = searched.observe(low, stamp, order, None);
                assert_eq!(a, b, "{low} with hint {hint}");
            }
            let (Members::Stamped(a), Members::Stamped(b)) = (&hinted.members, &searched.members)
            else {
                panic!("200 members stay sparse");
            };
            assert_eq!(a, b, "off by {wrong}");
            assert!(a.is_sorted());
        }
    }
}
