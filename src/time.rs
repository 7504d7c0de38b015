//! Time as the scheduler sees it: a monotonic nanosecond [`Timestamp`] and the [`Clock`]
//! that API threads use to stamp arrivals. The engine passes `now` to every step, so aging,
//! max-wait and SLO behaviour is exact under test: inject a [`ManualClock`].

use crate::sync::{Arc, AtomicU64, Ordering};
use std::fmt;
use std::time::Duration;

/// Nanoseconds since the clock's epoch. Only differences between timestamps of one clock
/// are meaningful.
///
/// The range is 0 to [`Timestamp::MAX`], `u64::MAX` ns: 18,446,744,073.709551615 s, about
/// 584.5 years after the epoch (with the Unix epoch, up to the year 2554). The checked
/// constructors ([`Timestamp::checked_from_secs_f64`], [`Timestamp::checked_from_duration`])
/// refuse anything outside it; [`Timestamp::from_duration`] saturates at `MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// The latest timestamp the type holds: `u64::MAX` ns after the epoch
    /// (18,446,744,073.709551615 s, about 584.5 years).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `d` after the epoch, saturating at [`Timestamp::MAX`] (see
    /// [`Timestamp::checked_from_duration`] to refuse a `d` beyond it instead).
    pub fn from_duration(d: Duration) -> Self {
        Self::checked_from_duration(d).unwrap_or(Self::MAX)
    }

    /// A timestamp `d` after the epoch, or `None` if `d` is past [`Timestamp::MAX`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use triage::Timestamp;
    /// assert_eq!(Timestamp::checked_from_duration(Duration::from_secs(2)), Some(Timestamp(2_000_000_000)));
    /// assert_eq!(Timestamp::checked_from_duration(Duration::from_nanos(u64::MAX)), Some(Timestamp::MAX));
    /// assert_eq!(Timestamp::checked_from_duration(Duration::from_secs(18_446_744_074)), None);
    /// ```
    pub fn checked_from_duration(d: Duration) -> Option<Self> {
        u64::try_from(d.as_nanos()).ok().map(Timestamp)
    }

    /// A timestamp `secs` seconds after the epoch, rounded to the nearest nanosecond; `None`
    /// if `secs` is NaN, infinite, negative, or rounds past [`Timestamp::MAX`]
    /// (18,446,744,073.709551615 s). Monotone: a larger `secs` never gives an earlier
    /// timestamp. Exact to the nanosecond while `secs * 1e9` is below 2^53 (about 104
    /// days); at today's Unix time in seconds, steps are 256 ns (the float's precision).
    ///
    /// ```
    /// # use triage::Timestamp;
    /// assert_eq!(Timestamp::checked_from_secs_f64(1.5), Some(Timestamp(1_500_000_000)));
    /// assert_eq!(Timestamp::checked_from_secs_f64(-0.0), Some(Timestamp::ZERO));
    /// for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1e-9, 1e300, 18_446_744_074.0] {
    ///     assert_eq!(Timestamp::checked_from_secs_f64(bad), None, "{bad}");
    /// }
    /// ```
    ///
    /// ```
    /// use triage::Timestamp;
    /// assert_eq!(Timestamp::checked_from_secs_f64(1.5), Some(Timestamp(1_500_000_000)));
    /// assert_eq!(Timestamp::checked_from_secs_f64(f64::NAN), None);
    /// assert_eq!(Timestamp::checked_from_secs_f64(-1.0), None);
    /// assert_eq!(Timestamp::checked_from_secs_f64(1e300), None);
    /// ```
    pub fn checked_from_secs_f64(secs: f64) -> Option<Self> {
        // 2^64 as a float, exactly: every float below it converts to u64 without loss of
        // range (`as` would saturate, silently, above it).
        const LIMIT: f64 = 18_446_744_073_709_551_616.0;
        let ns = (secs * 1e9).round();
        // NaN is in no range; -0.0 rounds to -0.0, which is >= 0.0.
        (0.0..LIMIT).contains(&ns).then_some(Timestamp(ns as u64))
    }

    /// A timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// This timestamp moved `d` later, saturating.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}ms", self.0 as f64 / 1e6)
    }
}

/// A monotonic time source shared by the API threads (arrival stamps) and whoever drives
/// the scheduler.
pub trait Clock: Send + Sync + 'static {
    /// The current time. Must never go backwards.
    fn now(&self) -> Timestamp;
}

/// Wall-clock monotonic time, with its epoch at construction: [`std::time::Instant`]'s,
/// read cheaply.
///
/// Every submit stamps its arrival with the scheduler's clock, so reading it is on the API
/// threads' hot path. On x86_64 Linux, where the kernel keeps time with the CPU's
/// time-stamp counter, a reading is the counter extrapolated from the calling thread's
/// last `Instant` reading, which is taken again at least every 250 µs: a bare `rdtsc` and
/// a few nanoseconds, 15.6 ns against `Instant::now()`'s 24.9 and `rdtsc`'s 10.9 on an
/// Intel Xeon VM (`cargo bench -p triage --bench clock`), within a microsecond or so of
/// `Instant` (a millisecond at the very most). Elsewhere it reads `Instant`. Either way a
/// thread's readings never go backwards.
///
/// ```
/// use triage::{Clock, MonotonicClock};
/// let clock = MonotonicClock::new();
/// let (a, b) = (clock.now(), clock.now());
/// assert!(b >= a);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    epoch: crate::tsc::Epoch,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: crate::tsc::Epoch::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now(&self) -> Timestamp {
        Timestamp(crate::tsc::since_nanos(&self.epoch))
    }
}

/// The scheduler's clock as the API threads read it: [`MonotonicClock`], the default, is
/// called directly (inlined into submit); any other clock through its trait object.
#[derive(Clone)]
pub(crate) enum SharedClock {
    /// The default clock, read without a virtual call.
    Monotonic(MonotonicClock),
    /// An injected clock.
    Other(std::sync::Arc<dyn Clock>),
}

impl SharedClock {
    /// `clock`, called directly if it is a [`MonotonicClock`].
    pub(crate) fn new<C: Clock>(clock: C) -> Self {
        match (&clock as &dyn std::any::Any).downcast_ref::<MonotonicClock>() {
            Some(&m) => SharedClock::Monotonic(m),
            None => SharedClock::Other(std::sync::Arc::new(clock)),
        }
    }

    /// The clock's time.
    #[inline]
    pub(crate) fn now(&self) -> Timestamp {
        match self {
            SharedClock::Monotonic(m) => m.now(),
            SharedClock::Other(c) => c.now(),
        }
    }
}

/// A clock that moves only when told to: for tests and simulators. Clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(start.0)),
        }
    }

    /// Sets the time to `t` if `t` is not earlier than the current time; an earlier `t`
    /// leaves the clock unchanged, silently, so the clock stays monotonic (the [`Clock`]
    /// contract) even when several threads set it. Use [`ManualClock::try_set`] to be told
    /// instead.
    pub fn set(&self, t: Timestamp) {
        // Relaxed: the clock value carries no other data; readers only need *a* recent
        // value, and fetch_max keeps it monotonic.
        self.nanos.fetch_max(t.0, Ordering::Relaxed);
    }

    /// Sets the time to `t`, or refuses if `t` is earlier than the current time (the clock
    /// is then unchanged). Atomic: of two threads setting the clock, the later time wins
    /// and an earlier one is refused, never lost silently.
    ///
    /// ```
    /// # use triage::{Clock, ManualClock, Timestamp};
    /// let clock = ManualClock::new(Timestamp(10));
    /// assert!(clock.try_set(Timestamp(20)).is_ok());
    /// let e = clock.try_set(Timestamp(15)).unwrap_err();
    /// assert_eq!((e.requested, e.current), (Timestamp(15), Timestamp(20)));
    /// assert_eq!(clock.now(), Timestamp(20));
    /// ```
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage::{Clock, ManualClock, Timestamp};
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// clock.advance(Duration::from_millis(5));
    /// assert_eq!(clock.now(), Timestamp(5_000_000));
    /// assert!(clock.try_set(Timestamp(1)).is_err()); // never backwards
    /// assert_eq!(clock.now(), Timestamp(5_000_000));
    /// ```
    pub fn try_set(&self, t: Timestamp) -> Result<(), ClockWentBackwards> {
        // Relaxed: see `set`. The closure refuses instead of moving the value back.
        self.nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (t.0 >= n).then_some(t.0)
            })
            .map(|_| ())
            .map_err(|current| ClockWentBackwards {
                requested: t,
                current: Timestamp(current),
            })
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: see `set`. Saturating, so a huge step never wraps the clock backwards.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(add))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        // Relaxed: see `set`.
        Timestamp(self.nanos.load(Ordering::Relaxed))
    }
}

/// [`crate::ManualClock::try_set`] was asked to move the clock back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockWentBackwards {
    /// The time asked for.
    pub requested: Timestamp,
    /// The clock's time, unchanged.
    pub current: Timestamp,
}

impl std::fmt::Display for ClockWentBackwards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "time {}ns is earlier than the clock's {}ns; a ManualClock never goes backwards",
            self.requested.0, self.current.0
        )
    }
}

impl std::error::Error for ClockWentBackwards {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default clock is read without a virtual call; any other clock through its own
    /// `now`, so an injected time is what the API threads stamp.
    #[test]
    fn the_shared_clock_reads_the_clock_it_was_given() {
        assert!(matches!(
            SharedClock::new(MonotonicClock::new()),
            SharedClock::Monotonic(_)
        ));
        let manual = ManualClock::new(Timestamp::from_millis(5));
        let shared = SharedClock::new(manual.clone());
        assert!(matches!(shared, SharedClock::Other(_)));
        assert_eq!(shared.now(), Timestamp::from_millis(5));
        manual.advance(std::time::Duration::from_millis(2));
        assert_eq!(shared.now(), Timestamp::from_millis(7));
    }
}
