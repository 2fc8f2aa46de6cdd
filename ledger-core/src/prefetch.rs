//! A software prefetch hint, so `create_transfers` can overlap the cache misses of upcoming
//! events (id index slots, account records) with the work on the current one.

/// Hints the CPU to load the cache lines of `value` (up to `size_of::<T>()` bytes, at most
/// three lines). A no-op on targets other than `x86_64`.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        let start = std::ptr::from_ref(value).cast::<i8>();
        let last = start.wrapping_add(size_of::<T>().saturating_sub(1));
        for line in [start, start.wrapping_add(64), last] {
            if line <= last {
                #[allow(unsafe_code)]
                // SAFETY: `_mm_prefetch` is only a hint: it never faults, whatever the address,
                // and has no architectural effect. SSE is part of the x86_64 baseline.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
