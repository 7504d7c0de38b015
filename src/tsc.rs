//! A cheaper `Instant::now()` for arrival stamps: the CPU's time-stamp counter (TSC),
//! extrapolated from a per-thread anchor that is re-read from [`Instant`] at least every
//! [`WINDOW_NS`].
//!
//! Every submit stamps its arrival, and on the machines this was measured on reading
//! `Instant::now()` cost about 29 ns, a third of a submit, where `rdtsc` costs 11 ns. The
//! scheme:
//!
//! * Each thread keeps an *anchor*: a TSC reading and the `Instant` read right after it.
//!   A stamp is the anchor's `Instant` plus the ticks since, converted at the process-wide
//!   rate [`NS_PER_TICK`]. Once the ticks since the anchor amount to [`WINDOW_NS`] (or the
//!   TSC reads lower than the anchor: another core), the thread re-anchors: it reads
//!   `Instant` again, and uses the two anchors to measure the rate.
//! * The error against `Instant` is so bounded by the rate's error over one window: the
//!   rate comes from anchors at least [`MIN_SAMPLE_NS`] apart, each read within tens of
//!   nanoseconds, so it is off by well under 1 %, and a stamp by well under a
//!   microsecond. Until a thread has a rate, every stamp reads `Instant`.
//! * Stamps of one thread never go backwards: each is at least the thread's previous one
//!   (an estimate slightly ahead of `Instant` is held until `Instant` passes it).
//! * The TSC is used only where the kernel itself keeps time with it (Linux's current
//!   clocksource is `tsc`, checked once per process): there it ticks at a constant rate and
//!   agrees across cores. Anywhere else (other systems, other architectures, Miri, loom)
//!   every stamp reads `Instant`.

use std::time::{Duration, Instant};

/// How long (as estimated) a thread extrapolates from one anchor: a quarter millisecond,
/// so that even a rate off by a tenth would misplace a stamp by 25 µs at most.
const WINDOW_NS: u64 = 250_000;

/// The shortest span between two anchors that measures the rate: long enough that the
/// two `Instant` reads' own jitter (tens of ns) is a small fraction of it.
const MIN_SAMPLE_NS: u64 = 50_000;

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
mod imp {
    use super::{MIN_SAMPLE_NS, WINDOW_NS};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::time::{Duration, Instant};

    /// Nanoseconds per TSC tick in 32.32 fixed point, as last measured by any thread; 0
    /// until the first measurement. Relaxed everywhere: a thread that reads an older
    /// measurement (or 0) only extrapolates with a slightly different rate (or reads
    /// `Instant`); no other data rides on it.
    static NS_PER_TICK: AtomicU64 = AtomicU64::new(0);

    /// Whether the TSC may be used: [`UNKNOWN`] until checked, then [`USE`] or [`AVOID`].
    /// Relaxed: threads racing to check all reach the same answer.
    static TSC: AtomicU8 = AtomicU8::new(UNKNOWN);
    const UNKNOWN: u8 = 0;
    const USE: u8 = 1;
    const AVOID: u8 = 2;

    /// One thread's anchor.
    #[derive(Clone, Copy)]
    struct Anchor {
        /// The TSC reading.
        tsc: u64,
        /// `Instant::now()` read right after it.
        at: Instant,
        /// The thread's latest stamp (never earlier than `at`).
        last: Instant,
    }

    thread_local! {
        static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
    }

    fn tsc_usable() -> bool {
        match TSC.load(Ordering::Relaxed) {
            USE => true,
            AVOID => false,
            _ => {
                let source = std::fs::read_to_string(
                    "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                );
                let usable = source.is_ok_and(|s| s.trim() == "tsc");
                TSC.store(if usable { USE } else { AVOID }, Ordering::Relaxed);
                usable
            }
        }
    }

    fn rdtsc() -> u64 {
        // SAFETY: `rdtsc` reads the time-stamp counter; it touches no memory and every
        // x86_64 CPU has it. (Newer compilers declare the intrinsic safe.)
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }

    pub(super) fn now() -> Instant {
        if !tsc_usable() {
            return Instant::now();
        }
        let tsc = rdtsc();
        let rate = NS_PER_TICK.load(Ordering::Relaxed);
        let anchor = ANCHOR.with(Cell::get);
        if let Some(a) = anchor.filter(|a| rate != 0 && tsc >= a.tsc) {
            let ns = (u128::from(tsc - a.tsc) * u128::from(rate)) >> 32;
            if ns < u128::from(WINDOW_NS) {
                let t = (a.at + Duration::from_nanos(ns as u64)).max(a.last);
                ANCHOR.with(|c| c.set(Some(Anchor { last: t, ..a })));
                return t;
            }
        }
        reanchor(tsc, anchor)
    }

    /// Reads `Instant` as the thread's new anchor for `tsc`, measuring the rate from the
    /// previous anchor if they are far enough apart.
    #[cold]
    fn reanchor(tsc: u64, previous: Option<Anchor>) -> Instant {
        let at = Instant::now();
        let last = previous.map_or(at, |p| at.max(p.last));
        let mut anchor = Anchor { tsc, at, last };
        if let Some(p) = previous.filter(|p| tsc > p.tsc) {
            let ns = at.saturating_duration_since(p.at).as_nanos();
            if ns >= u128::from(MIN_SAMPLE_NS) {
                let rate = (ns << 32) / u128::from(tsc - p.tsc);
                NS_PER_TICK.store(u64::try_from(rate).unwrap_or(u64::MAX), Ordering::Relaxed);
            } else if NS_PER_TICK.load(Ordering::Relaxed) == 0 {
                // Too close to measure the first rate from: keep the older anchor, so a
                // later read is far enough from it.
                anchor = Anchor { last, ..p };
            }
        }
        ANCHOR.with(|c| c.set(Some(anchor)));
        last
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
mod imp {
    use std::time::Instant;

    pub(super) fn now() -> Instant {
        Instant::now()
    }
}

/// The time since `epoch`, within a microsecond or so of `epoch.elapsed()` (module docs),
/// never less than the previous value this thread got for the same `epoch`.
pub(crate) fn since(epoch: Instant) -> Duration {
    imp::now().saturating_duration_since(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stamp lies between `Instant` reads taken just before and just after it, give
    /// or take the documented error (asserted at 1 ms, the contract's bound), and a
    /// thread's stamps never go backwards; on several threads at once, through many
    /// windows.
    #[test]
    fn stamps_follow_instant_and_never_go_backwards() {
        let epoch = Instant::now();
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(move || {
                    let bound = Duration::from_millis(1);
                    let (mut prev, mut worst) = (Duration::ZERO, Duration::ZERO);
                    let started = Instant::now();
                    let mut n = 0u64;
                    // At least 20 windows, at most 2 s: bounded in time and count.
                    while (started.elapsed() < Duration::from_millis(20) || n < 1_000)
                        && n < 20_000_000
                    {
                        let before = epoch.elapsed();
                        let t = since(epoch);
                        let after = epoch.elapsed();
                        assert!(t >= prev, "went backwards: {t:?} after {prev:?}");
                        assert!(
                            t + bound >= before && t <= after + bound,
                            "{t:?} not within {bound:?} of [{before:?}, {after:?}]"
                        );
                        worst = worst
                            .max(before.saturating_sub(t))
                            .max(t.saturating_sub(after));
                        prev = t;
                        n += 1;
                    }
                    worst
                })
            })
            .collect();
        for t in threads {
            let worst = t.join().unwrap();
            assert!(worst < Duration::from_millis(1), "{worst:?}");
        }
    }
}
