//! Heap accounting for `triage stress`: the counters that
//! [`CountingAllocator`](crate::counting_allocator::CountingAllocator) feeds when a binary
//! (the `triage` command) declares it as its global allocator.
//!
//! Counting is off by default and costs one relaxed load per allocation when off. While on,
//! every allocation adds its size and every deallocation subtracts its size (a reallocation
//! adds the difference) to one signed counter, so the change of [`live_bytes`] across a
//! window is the change in live heap bytes requested through the allocator in that window,
//! from every thread, excluding the allocator's own per-block overhead and any memory
//! mapped without it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

static INSTALLED: AtomicBool = AtomicBool::new(false);
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

/// Called once by the binary that installs the counting allocator.
pub fn mark_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

/// Whether a counting allocator feeds these counters in this process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Turns counting on or off.
pub fn set_counting(on: bool) {
    COUNTING.store(on, Ordering::SeqCst);
}

/// Net bytes allocated while counting was on, since the process started.
pub fn live_bytes() -> i64 {
    LIVE.load(Ordering::SeqCst)
}

/// Records a change of `delta` live bytes (called by the allocator).
#[inline]
pub fn record(delta: i64) {
    // Relaxed: a statistic read after the measured window ends on the same thread, or
    // after joining the threads that allocated.
    if COUNTING.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}
