//! Cache prefetch hints. A hint changes no result: it asks the CPU to start loading the
//! cache lines of a value that is about to be read, so that their misses overlap other
//! work instead of each stalling the read that needs it. Used where a thread knows ahead
//! which scattered state it will touch: the scheduler its per-tenant state (see
//! `Scheduler::look_ahead` and `Tiers::next_of`) and the wait queue's next entries, a
//! producer the free slot it will take next (`Table::pop_free`).

/// Below this many tenants held, their state stays in cache between uses: there is no miss
/// to hide, and looking ahead (a map look-up per drained request, a heap scan per pick)
/// would be work for nothing.
pub(crate) const MIN_TENANTS: usize = 64;

/// Bytes in a cache line (on the targets that take hints, and a safe guess elsewhere).
const LINE: usize = 64;

/// Starts loading every cache line of the `T` at `p`. Any address may be given (a hint
/// never faults and reads nothing the program sees); on targets without a hint it does
/// nothing.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    // A hint every LINE bytes from `p`, then one at its last byte unless the type is whole
    // lines at a line's alignment, covers every line the value spans. The counts are
    // constants, so the loop unrolls with no branch to mispredict (a data-dependent count,
    // by `p`'s alignment, cost more than it saved).
    let size = std::mem::size_of::<T>().max(1);
    let whole_lines = std::mem::align_of::<T>() % LINE == 0 && size % LINE == 0;
    let p = p.cast::<u8>();
    for k in 0..size.div_ceil(LINE) {
        hint(p.wrapping_add(k * LINE));
    }
    if !whole_lines {
        hint(p.wrapping_add(size - 1));
    }
}

#[inline(always)]
fn hint(p: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: `_mm_prefetch` only hints the cache: it accesses no memory the program can
    // observe and cannot fault, whatever the address. It needs SSE, which every x86_64 CPU
    // has.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = p;
}
