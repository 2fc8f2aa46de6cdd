//! The id index: a compact open-addressing hash table from a u128 id to a dense u32 index.
//!
//! A slot is one `u64`: the low 32 bits of the id's hash (the tag) in the high half and
//! `index + 1` in the low half, 0 meaning empty. The table stores no keys: a tag match is
//! confirmed by the caller against the record the index points at. Eight slots share a cache
//! line, linear probing stays inside it for most lookups, and growing needs no rehash because
//! the home position is derived from the stored tag. Memory is 8 bytes per slot, at most
//! 8 / 0.25 = 32 bytes per entry just after a doubling, 16 bytes when full.
//!
//! The hash is a fixed non-cryptographic folded multiply (replicas must agree on nothing here:
//! snapshots are encoded in insertion order, not table order). Ids chosen by an adversary to
//! collide degrade lookups to a linear scan of a cluster, never to a wrong answer.

/// Hashes a u128 id to 64 bits. Ids that differ only in their low three bits (8 sequential
/// ids, as time-based ids handed out by a client are) get hashes that differ only in the low
/// three bits, so they sit in one cache line of the table; everything above is well mixed.
///
/// Ids that differ only in their top two bits (`t`, `2^126 + t`, `2^127 + t` and
/// `2^127 + 2^126 + t`: a user id and the system ids a sharded cluster derives from it, see
/// [`crate::SYSTEM_ID_MIN`]) get hashes that differ only in bits 3 and 4: their groups of
/// eight slots are the four 64-byte blocks of one aligned 256-byte block of the table, so
/// on one page. A cluster posts the pending transfer `2^126 + t` with the id `2^127 + t`,
/// which looks up both ids: the second lookup finds its page in the TLB instead of walking
/// the page tables again for a random slot. Those two take the upper half of the block
/// (`FAMILY_BLOCK`), one 128-byte pair, which the CPU's adjacent-line prefetch loads
/// together.
#[inline]
pub(crate) fn hash_id(id: u128) -> u64 {
    const K0: u64 = 0x9E37_79B9_7F4A_7C15;
    const K1: u64 = 0xD6E8_FEB8_6659_FD93;
    const K2: u64 = 0xA076_1D64_78BD_642F;
    const FAMILY_SHIFT: u32 = 126;
    /// The 64-byte block, within its aligned 256-byte block, of each value of the top two
    /// bits: user ids, pending legs `2^126 + t`, their resolutions `2^127 + t`, the rest.
    const FAMILY_BLOCK: [u64; 4] = [0, 2, 3, 1];
    let family = FAMILY_BLOCK[(id >> FAMILY_SHIFT) as usize];
    let group = (id & ((1 << FAMILY_SHIFT) - 1)) >> 3;
    let low = group as u64;
    let high = (group >> 64) as u64;
    let a = folded_multiply(low ^ K0, K1);
    let b = folded_multiply(high ^ K1, K2);
    let mixed = folded_multiply(a ^ b.rotate_left(29), K0);
    ((mixed & !7) ^ (family << 3)) | (id as u64 & 7)
}

#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// Where a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The id is present at this dense index.
    Found(u32),
    /// The id is absent; inserting it must use this slot (valid until the next insert or grow).
    Vacant(usize),
}

/// The largest dense index the table can hold (`index + 1` must fit in 32 bits).
pub(crate) const INDEX_MAX: u32 = u32::MAX - 1;

/// Maps ids to dense indices; see the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdIndex {
    slots: Vec<u64>,
    entry_count: usize,
}

impl IdIndex {
    const CAPACITY_MIN: usize = 16;

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.entry_count
    }

    /// Heap bytes held by the table.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u64>()
    }

    /// Makes room for `additional` inserts without growing in between, so that a `Vacant`
    /// answer stays valid across a batch's lookups.
    pub(crate) fn reserve(&mut self, additional: usize) {
        let needed = self.entry_count + additional;
        // Maximum load 1/2: an unsuccessful linear probe (every new id) reads about 2.5 slots.
        if self.slots.len() / 2 >= needed {
            return;
        }
        let mut capacity = self.slots.len().max(Self::CAPACITY_MIN);
        while capacity / 2 < needed {
            capacity *= 2;
        }
        self.grow_to(capacity);
    }

    fn grow_to(&mut self, capacity: usize) {
        assert!(capacity.is_power_of_two());
        assert!(capacity <= 1 << 33, "id index capacity beyond 2^33 slots");
        let mut slots = vec![0; capacity];
        // A large zeroed table comes from `calloc` as fresh pages the kernel maps lazily, and
        // the reinsertion below (and every later probe) *reads* a slot before writing it: each
        // page would be mapped to the shared zero page first and copied on the first write,
        // and every such copy flushes the TLB of all the process's CPUs by inter-processor
        // interrupt (in a VM, a trap to the hypervisor). That was a quarter of the CPU of a
        // growing ledger (BENCHMARKS.md). Writing one word per 4 KiB page first maps each page
        // once, writable; `black_box` keeps the compiler from dropping the stores of zero.
        for page in slots.chunks_mut(4096 / size_of::<u64>()) {
            *std::hint::black_box(&mut page[0]) = 0;
        }
        let old = std::mem::replace(&mut self.slots, slots);
        let mask = capacity - 1;
        for slot in old.into_iter().filter(|&slot| slot != 0) {
            let mut position = (slot >> 32) as usize & mask;
            while self.slots[position] != 0 {
                position = (position + 1) & mask;
            }
            self.slots[position] = slot;
        }
    }

    /// Looks `hash` up; `is_match(index)` confirms a tag match against the stored record.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_match: impl FnMut(u32) -> bool) -> Probe {
        assert!(!self.slots.is_empty(), "reserve before find");
        let mask = self.slots.len() - 1;
        let tag = hash & 0xFFFF_FFFF;
        let mut position = tag as usize & mask;
        loop {
            let slot = self.slots[position];
            if slot == 0 {
                return Probe::Vacant(position);
            }
            if slot >> 32 == tag {
                let index = (slot as u32) - 1;
                if is_match(index) {
                    return Probe::Found(index);
                }
            }
            position = (position + 1) & mask;
        }
    }

    /// Looks `hash` up in a table that may be empty (queries on a fresh ledger).
    #[inline]
    pub(crate) fn get(&self, hash: u64, is_match: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        match self.find(hash, is_match) {
            Probe::Found(index) => Some(index),
            Probe::Vacant(_) => None,
        }
    }

    /// Prefetches the home slot of `hash`.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            let position = (hash & 0xFFFF_FFFF) as usize & (self.slots.len() - 1);
            crate::prefetch::prefetch(&self.slots[position]);
        }
    }

    /// The record index in `hash`'s home slot if its tag matches: a guess, unconfirmed (the
    /// caller only prefetches it), `None` on an empty table, an empty slot or another tag.
    #[inline]
    pub(crate) fn peek(&self, hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = hash & 0xFFFF_FFFF;
        let slot = self.slots[tag as usize & (self.slots.len() - 1)];
        (slot != 0 && slot >> 32 == tag).then(|| (slot as u32) - 1)
    }

    /// Inserts at the slot a preceding [`Self::find`] returned as `Vacant`.
    #[inline]
    pub(crate) fn insert_at(&mut self, position: usize, hash: u64, index: u32) {
        assert!(index <= INDEX_MAX);
        assert_eq!(self.slots[position], 0, "insert_at needs a vacant slot");
        assert!(
            self.slots.len() / 2 > self.entry_count,
            "reserve before insert"
        );
        self.slots[position] = ((hash & 0xFFFF_FFFF) << 32) | u64::from(index + 1);
        self.entry_count += 1;
    }

    /// Removes the entry for (`hash`, `index`), which must be present. Backward-shift deletion
    /// keeps every remaining entry reachable from its home slot without tombstones.
    pub(crate) fn remove(&mut self, hash: u64, index: u32) {
        let mask = self.slots.len() - 1;
        let wanted = ((hash & 0xFFFF_FFFF) << 32) | u64::from(index + 1);
        let mut hole = (hash & 0xFFFF_FFFF) as usize & mask;
        while self.slots[hole] != wanted {
            assert_ne!(self.slots[hole], 0, "removing an absent id");
            hole = (hole + 1) & mask;
        }
        let mut position = hole;
        loop {
            position = (position + 1) & mask;
            let slot = self.slots[position];
            if slot == 0 {
                break;
            }
            let home = (slot >> 32) as usize & mask;
            // The entry may move into the hole unless its home lies cyclically in (hole, position].
            let distance_to_home = position.wrapping_sub(home) & mask;
            let distance_to_hole = position.wrapping_sub(hole) & mask;
            if distance_to_home >= distance_to_hole {
                self.slots[hole] = slot;
                hole = position;
            }
        }
        self.slots[hole] = 0;
        self.entry_count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(index: &IdIndex, ids: &[u128], id: u128) -> Option<u32> {
        index.get(hash_id(id), |i| ids[i as usize] == id)
    }

    fn insert(index: &mut IdIndex, ids: &mut Vec<u128>, id: u128) {
        index.reserve(1);
        let Probe::Vacant(position) = index.find(hash_id(id), |i| ids[i as usize] == id) else {
            panic!("duplicate id {id}");
        };
        index.insert_at(position, hash_id(id), ids.len() as u32);
        ids.push(id);
    }

    #[test]
    fn insert_find_grow_and_remove_in_reverse_order() {
        let mut index = IdIndex::default();
        let mut ids = Vec::new();
        for id in 1..=5_000_u128 {
            insert(&mut index, &mut ids, id * 0x1_0000_0001);
        }
        assert_eq!(index.len(), 5_000);
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(lookup(&index, &ids, id), Some(i as u32));
        }
        assert_eq!(lookup(&index, &ids, 7), None);
        while let Some(id) = ids.pop() {
            index.remove(hash_id(id), ids.len() as u32);
            assert_eq!(lookup(&index, &ids, id), None);
            if let Some(&last) = ids.last() {
                assert_eq!(lookup(&index, &ids, last), Some(ids.len() as u32 - 1));
            }
        }
        assert_eq!(index.len(), 0);
    }

    #[test]
    fn colliding_tags_are_told_apart_by_the_record() {
        // Force every entry into one cluster by using a tiny table and many ids.
        let mut index = IdIndex::default();
        let mut ids = Vec::new();
        for id in 0..10_u128 {
            insert(&mut index, &mut ids, u128::MAX - id);
        }
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(lookup(&index, &ids, id), Some(i as u32));
        }
        assert!(index.capacity_bytes() >= 16 * 8);
    }

    #[test]
    fn hash_groups_sequential_ids_and_spreads_groups() {
        // Eight sequential ids share one aligned group of eight slots.
        let base = hash_id(8_000) & !7;
        for id in 8_000..8_008_u128 {
            assert_eq!(hash_id(id), base | (id as u64 & 7));
        }
        // Groups spread like a random function: 1,024 groups over 1,024 eight-slot buckets fill
        // about 63 % of them; a poor mix fills far fewer.
        let mut buckets = std::collections::HashSet::new();
        for group in 0..1024_u128 {
            buckets.insert((hash_id(group * 8) >> 3) & 1023);
        }
        assert!(
            buckets.len() > 550,
            "only {} distinct buckets",
            buckets.len()
        );
        // High bits matter too.
        assert_ne!(hash_id(1) & !7, hash_id(1 | (1 << 100)) & !7);
    }

    #[test]
    fn ids_differing_in_their_top_two_bits_share_a_256_byte_block() {
        for t in [
            1_u128,
            8_000,
            0x1234_5678_9abc_def0_1122_3344,
            (1 << 126) - 1,
        ] {
            let hashes: Vec<u64> = (0..4_u128)
                .map(|family| hash_id((family << 126) | t))
                .collect();
            // One aligned block of 32 slots (8 bytes each)...
            for hash in &hashes {
                assert_eq!(hash & !31, hashes[0] & !31, "t = {t}");
            }
            // ...and four distinct slots (so four distinct tags) in it.
            let distinct: std::collections::HashSet<u64> = hashes.iter().copied().collect();
            assert_eq!(distinct.len(), 4, "t = {t}");
            // A pending leg and its resolution share one aligned 128-byte pair.
            assert_eq!(hashes[1] & !15, hashes[2] & !15, "t = {t}");
            assert_ne!(hashes[0] & !15, hashes[1] & !15, "t = {t}");
        }
        // Different users' ids still land in different blocks.
        assert_ne!(hash_id(1 << 126 | 8) & !31, hash_id(1 << 126 | 16) & !31);
    }
}
