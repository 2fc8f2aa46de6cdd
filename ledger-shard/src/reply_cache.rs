//! The replies of recently applied entries, by the entry's nonce, so that a client's retry of
//! an entry that had already committed gets the original results back (I3: a retry never flips
//! a result), while a genuine duplicate from a user still answers `Exists`.
//!
//! The cache is part of the replicated state: it changes only in `apply`, in log order, and
//! evicts oldest-first by a byte budget, so every replica holds the same cache (I5) and the
//! snapshot carries it. A retry arrives within the client's request timeout, long before a
//! reply is evicted unless the budget is exhausted by a flood of entries; after eviction the
//! retry simply answers what re-applying answers (`Exists` for the committed events).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// The default byte budget of the cache (replies are about 4 bytes per event).
pub const REPLY_CACHE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The most entries the cache holds, whatever their size.
pub const REPLY_CACHE_COUNT_MAX: usize = 1 << 16;

/// Recent replies by nonce, evicted oldest-first.
#[derive(Debug, Default, Clone)]
pub struct ReplyCache {
    replies: HashMap<u128, Bytes>,
    order: VecDeque<u128>,
    size_bytes: usize,
}

impl ReplyCache {
    /// The reply recorded for `nonce`, if still cached.
    pub fn get(&self, nonce: u128) -> Option<&Bytes> {
        self.replies.get(&nonce)
    }

    /// Records the reply of a newly applied entry.
    pub fn insert(&mut self, nonce: u128, reply: Bytes) {
        assert!(
            !self.replies.contains_key(&nonce),
            "an applied nonce is applied once (I3)"
        );
        self.size_bytes += reply.len();
        self.replies.insert(nonce, reply);
        self.order.push_back(nonce);
        while self.size_bytes > REPLY_CACHE_BYTES_MAX || self.order.len() > REPLY_CACHE_COUNT_MAX {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let evicted = self.replies.remove(&oldest);
            self.size_bytes -= evicted.map_or(0, |reply| reply.len());
        }
        assert_eq!(self.order.len(), self.replies.len());
    }

    /// Number of cached replies.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Appends the cache, oldest first, to `out`: `count u32`, then per entry `nonce u128,
    /// length u32, reply bytes`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.order.len() as u32).to_le_bytes());
        for nonce in &self.order {
            let reply = &self.replies[nonce];
            out.extend_from_slice(&nonce.to_le_bytes());
            out.extend_from_slice(&(reply.len() as u32).to_le_bytes());
            out.extend_from_slice(reply);
        }
    }

    /// Decodes what [`ReplyCache::encode`] wrote; `None` if the bytes are malformed. Never
    /// allocates more than the input's size.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut reader = Reader::new(bytes);
        let count = reader.u32()? as usize;
        if count > REPLY_CACHE_COUNT_MAX {
            return None;
        }
        let mut cache = Self::default();
        for _ in 0..count {
            let nonce = reader.u128()?;
            let length = reader.u32()? as usize;
            let reply = reader.take(length)?;
            if cache.replies.contains_key(&nonce) {
                return None;
            }
            cache.size_bytes += reply.len();
            cache.replies.insert(nonce, Bytes::copy_from_slice(reply));
            cache.order.push_back(nonce);
        }
        reader.is_empty().then_some(cache)
    }
}

/// A bounds-checked little-endian reader over a byte slice.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(crate) fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn evicts_oldest_first_by_count() {
        let mut cache = ReplyCache::default();
        for nonce in 0..(REPLY_CACHE_COUNT_MAX as u128 + 2) {
            cache.insert(nonce, Bytes::from_static(b"r"));
        }
        assert_eq!(cache.len(), REPLY_CACHE_COUNT_MAX);
        assert!(cache.get(0).is_none());
        assert!(cache.get(1).is_none());
        assert_eq!(cache.get(2).unwrap().as_ref(), b"r");
    }

    #[test]
    fn evicts_by_bytes() {
        let mut cache = ReplyCache::default();
        let big = Bytes::from(vec![7u8; REPLY_CACHE_BYTES_MAX / 2 + 1]);
        cache.insert(1, big.clone());
        cache.insert(2, big);
        assert!(cache.get(1).is_none());
        assert!(cache.get(2).is_some());
    }

    #[test]
    fn round_trips_in_order() {
        let mut cache = ReplyCache::default();
        cache.insert(9, Bytes::from_static(b"nine"));
        cache.insert(3, Bytes::from_static(b""));
        let mut bytes = Vec::new();
        cache.encode(&mut bytes);
        let decoded = ReplyCache::decode(&bytes).unwrap();
        let mut again = Vec::new();
        decoded.encode(&mut again);
        assert_eq!(bytes, again);
        assert_eq!(decoded.get(9).unwrap().as_ref(), b"nine");
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ReplyCache::decode(&bytes);
        }
    }
}
