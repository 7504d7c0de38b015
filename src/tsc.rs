//! A cheaper `Instant::now()` for arrival stamps: the CPU's time-stamp counter (TSC),
//! extrapolated from a per-thread anchor that is re-read from [`Instant`] at least every
//! [`WINDOW_NS`].
//!
//! Every submit stamps its arrival, and reading `Instant::now()` costs 21 to 25 ns on the
//! machines `docs/benchmarks.md` measures, about half a submit, where `rdtsc` costs 9 to 11
//! ns and a reading of this clock a few nanoseconds more (`cargo bench -p triage --bench
//! clock`). The scheme:
//!
//! * Each thread keeps an *anchor*: a TSC reading and the `Instant` read right after it,
//!   held as nanoseconds from a process-wide base instant (so a reading is integer
//!   arithmetic, no `Instant` or `Duration` maths). A stamp is the anchor plus the ticks
//!   since, converted at the process-wide rate `NS_PER_TICK`, less the clock's epoch
//!   (an [`Epoch`] keeps its own distance from the base). Once the ticks since the
//!   anchor amount to [`WINDOW_NS`] (or the TSC reads lower than the anchor: another
//!   core), the thread re-anchors: it reads `Instant` again, and uses the two anchors to
//!   measure the rate.
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

use std::time::Instant;

/// How long (as estimated) a thread extrapolates from one anchor: a quarter millisecond,
/// so that even a rate off by a tenth would misplace a stamp by 25 µs at most.
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))),
    allow(dead_code)
)]
const WINDOW_NS: u64 = 250_000;

/// The shortest span between two anchors that measures the rate: long enough that the
/// two `Instant` reads' own jitter (tens of ns) is a small fraction of it.
#[cfg_attr(
    not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))),
    allow(dead_code)
)]
const MIN_SAMPLE_NS: u64 = 50_000;

/// What [`since_nanos`] measures from: an `Instant`, and (where the TSC is used) its distance
/// from the process's base instant, so a reading is one subtraction of integers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Epoch {
    #[cfg_attr(
        all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)),
        allow(dead_code)
    )]
    instant: Instant,
    /// Nanoseconds from the base to `instant`.
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
    from_base: u64,
}

impl Epoch {
    /// An epoch at the current instant.
    pub(crate) fn now() -> Self {
        #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
        {
            // The base first, so the epoch is never before it.
            let base = imp::base();
            let instant = Instant::now();
            Epoch {
                instant,
                from_base: imp::nanos(instant.saturating_duration_since(base)),
            }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
        {
            Epoch {
                instant: Instant::now(),
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
mod imp {
    use super::{MIN_SAMPLE_NS, WINDOW_NS};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::OnceLock;
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

    /// The instant readings count from: set by the first [`super::Epoch`], so no epoch is
    /// before it.
    static BASE: OnceLock<Instant> = OnceLock::new();

    pub(super) fn base() -> Instant {
        *BASE.get_or_init(Instant::now)
    }

    /// `d` in nanoseconds, saturating (u64 nanoseconds last 584 years).
    pub(super) fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// One thread's anchor, in nanoseconds from [`BASE`]: separate cells of 8 bytes, so
    /// a reading loads and stores words (a copied struct, read back wider than it was
    /// written, missed store forwarding).
    struct Anchor {
        /// The TSC reading.
        tsc: Cell<u64>,
        /// `Instant::now()` read right after it.
        at: Cell<u64>,
        /// The thread's latest reading (never earlier than `at`).
        last: Cell<u64>,
        /// The rate (nanoseconds per tick, 32.32 fixed point) this anchor extrapolates
        /// with: [`NS_PER_TICK`] as the thread last read or measured it.
        rate: Cell<u64>,
        /// Ticks past `tsc` within which a reading extrapolates: [`WINDOW_NS`] at `rate`;
        /// 0 without an anchor or a rate, so that every reading re-anchors.
        span: Cell<u64>,
        /// Whether `tsc` and `at` hold an anchor yet.
        anchored: Cell<bool>,
    }

    thread_local! {
        static ANCHOR: Anchor = const {
            Anchor {
                tsc: Cell::new(0),
                at: Cell::new(0),
                last: Cell::new(0),
                rate: Cell::new(0),
                span: Cell::new(0),
                anchored: Cell::new(false),
            }
        };
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

    /// Nanoseconds from the base to now, never less than this thread's previous reading.
    /// Only called after an [`super::Epoch`] was made, so the base is set.
    ///
    /// The common case is one `rdtsc`, five thread-local words and a multiply: the span
    /// check alone covers "has a rate", "the TSC did not read below the anchor" (the
    /// difference wraps far above any span) and "within the window". A thread whose TSC
    /// may not be used keeps a span of 0 and reads `Instant` every time.
    ///
    /// `try_with` rather than `with`, which the compiler left out of line, calling the
    /// thread-local's accessor through a pointer; `try_with` inlines to a direct
    /// thread-local access. A thread whose thread-locals are gone (a read from another
    /// thread-local's destructor) reads `Instant`.
    #[inline]
    pub(super) fn now() -> u64 {
        let tsc = rdtsc();
        ANCHOR
            .try_with(|a| {
                let ticks = tsc.wrapping_sub(a.tsc.get());
                if ticks < a.span.get() {
                    // Below the span the product stays below WINDOW_NS << 32, far from 2^64.
                    let t = (a.at.get() + ((ticks * a.rate.get()) >> 32)).max(a.last.get());
                    a.last.set(t);
                    t
                } else {
                    reanchor(a, tsc)
                }
            })
            .unwrap_or_else(|_| nanos(base().elapsed()))
    }

    /// Reads `Instant` as the thread's new anchor for `tsc`, measuring the rate from the
    /// previous anchor if they are far enough apart; the reading, never below the
    /// thread's previous one.
    #[cold]
    #[inline(never)]
    fn reanchor(a: &Anchor, tsc: u64) -> u64 {
        let at = nanos(base().elapsed());
        let last = at.max(a.last.get());
        a.last.set(last);
        if !tsc_usable() {
            return last;
        }
        let mut rate = NS_PER_TICK.load(Ordering::Relaxed);
        if a.anchored.get() && tsc > a.tsc.get() {
            let ns = at.saturating_sub(a.at.get());
            if ns >= MIN_SAMPLE_NS {
                let r = (u128::from(ns) << 32) / u128::from(tsc - a.tsc.get());
                rate = u64::try_from(r).unwrap_or(u64::MAX);
                NS_PER_TICK.store(rate, Ordering::Relaxed);
            } else if rate == 0 {
                // Too close to measure the first rate from: keep the older anchor, so a
                // later read is far enough from it.
                return last;
            }
        }
        a.tsc.set(tsc);
        a.at.set(at);
        a.anchored.set(true);
        a.rate.set(rate);
        // Ticks in a window at `rate`; 0 (re-anchor next time) while there is no rate.
        let span = if rate == 0 {
            0
        } else {
            u64::try_from((u128::from(WINDOW_NS) << 32) / u128::from(rate)).unwrap_or(u64::MAX)
        };
        a.span.set(span);
        last
    }
}

/// Nanoseconds since `epoch` (saturating), within a microsecond or so of
/// `epoch.instant.elapsed()` (module docs), never less than the previous value this thread
/// got for the same `epoch`.
#[inline]
pub(crate) fn since_nanos(epoch: &Epoch) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom)))]
    {
        imp::now().saturating_sub(epoch.from_base)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(miri), not(loom))))]
    {
        u64::try_from(epoch.instant.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every stamp lies between `Instant` reads taken just before and just after it, give
    /// or take the documented error (asserted at 1 ms, the contract's bound), and a
    /// thread's stamps never go backwards; on several threads at once, through many
    /// windows.
    #[test]
    fn stamps_follow_instant_and_never_go_backwards() {
        let epoch = Epoch::now();
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
                        let before = epoch.instant.elapsed();
                        let t = Duration::from_nanos(since_nanos(&epoch));
                        let after = epoch.instant.elapsed();
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
