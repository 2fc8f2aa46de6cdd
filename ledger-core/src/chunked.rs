//! A vector stored in fixed-size chunks: indices stay dense, growing never copies more than one
//! chunk, and the capacity slack is at most one chunk (a doubling `Vec` of transfers would
//! copy gigabytes and could hold twice the memory it needs).

/// Elements per chunk (a power of two): 16 Ki transfers are 2 MiB.
const CHUNK_SHIFT: u32 = 14;
const CHUNK_LEN: usize = 1 << CHUNK_SHIFT;
const CHUNK_MASK: usize = CHUNK_LEN - 1;

/// A dense, append-mostly vector; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `value`. The first chunk grows by doubling (small ledgers stay small); later
    /// chunks are allocated whole. The last chunk is always the one being filled.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_LEN => chunk.push(value),
            _ => self.push_to_new_chunk(value),
        }
        self.len += 1;
    }

    #[cold]
    #[inline(never)]
    fn push_to_new_chunk(&mut self, value: T) {
        let capacity = if self.chunks.is_empty() { 0 } else { CHUNK_LEN };
        let mut chunk = Vec::with_capacity(capacity);
        chunk.push(value);
        self.chunks.push(chunk);
    }

    /// Removes and returns the last element; an emptied chunk (other than the first) is freed,
    /// so the last chunk stays the one being filled.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let chunk = self.chunks.last_mut()?;
        // Only the first chunk can be empty, and then the whole vector is.
        let value = chunk.pop()?;
        if chunk.is_empty() && self.chunks.len() > 1 {
            self.chunks.pop();
        }
        self.len -= 1;
        Some(value)
    }

    #[inline]
    pub(crate) fn get(&self, index: usize) -> &T {
        &self.chunks[index >> CHUNK_SHIFT][index & CHUNK_MASK]
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index >> CHUNK_SHIFT][index & CHUNK_MASK]
    }

    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }

    /// Heap bytes held, counted from capacities.
    pub(crate) fn capacity_bytes(&self) -> usize {
        let elements: usize = self.chunks.iter().map(Vec::capacity).sum();
        elements * size_of::<T>() + self.chunks.capacity() * size_of::<Vec<T>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_get_pop_across_chunk_boundaries() {
        let mut chunked = Chunked::default();
        let count = CHUNK_LEN * 2 + 3;
        for value in 0..count {
            chunked.push(value);
        }
        assert_eq!(chunked.len(), count);
        assert_eq!(*chunked.get(CHUNK_LEN), CHUNK_LEN);
        *chunked.get_mut(5) = 99;
        assert_eq!(*chunked.get(5), 99);
        assert!(
            chunked
                .iter()
                .copied()
                .eq((0..count).map(|v| if v == 5 { 99 } else { v }))
        );
        for expected in (CHUNK_LEN - 2..count).rev() {
            assert_eq!(chunked.pop(), Some(expected));
        }
        chunked.push(7);
        assert_eq!(*chunked.get(CHUNK_LEN - 2), 7);
        assert_eq!(chunked.len(), CHUNK_LEN - 1);
        assert_eq!(Chunked::<u8>::default().pop(), None);
        // Slack is bounded: three chunks of capacity at most, never a doubled whole.
        assert!(chunked.capacity_bytes() <= 3 * CHUNK_LEN * size_of::<usize>() + 256);
    }
}
