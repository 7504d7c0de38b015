//! Keeping the allocator's state out of the figures: every workload of `triage
//! bench-compare` builds its structures fresh per run and drops them after, and what the
//! next run's allocations cost then depends on what the C allocator did with the memory
//! the last run freed. By default glibc returns freed memory at the top of a heap to the
//! system (`M_TRIM_THRESHOLD`, 128 KiB) and serves large blocks by `mmap`, so a run may
//! fault in fresh pages where another would reuse freed ones, depending on the layout of
//! whatever was dropped before it: one structure's figure moved with another's
//! allocations (the bare `SegQueue` push doubled from 14 to 31 ns when triage's slot
//! chunks became 64-byte-aligned allocations, while nothing in `SegQueue` changed).
//!
//! [`keep_freed_memory`] turns both off for the process, the state a long-running server's
//! allocator settles into: freed memory stays with the allocator and is reused, and no run
//! pays page faults that another run's frees caused.

/// Tells glibc's allocator to keep the memory freed in this process instead of returning
/// it to the system (no trimming; `mmap` only above 32 MiB). Returns whether both settings
/// took; on other C libraries it does nothing and returns `false`.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // The largest threshold glibc accepts for `M_MMAP_THRESHOLD` on 64-bit targets.
        const MMAP_MAX: libc::c_int = 32 << 20;
        // SAFETY: `mallopt` only changes the allocator's tuning parameters; glibc takes its
        // own lock to do so, so racing allocations on other threads are safe.
        #[allow(unsafe_code)]
        let ok = unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_MAX) == 1
        };
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
