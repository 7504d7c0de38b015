//! Time as the scheduler sees it: a monotonic nanosecond [`Timestamp`] and the [`Clock`]
//! that API threads use to stamp arrivals. The engine passes `now` to every step, so aging,
//! max-wait and SLO behaviour is exact under test: inject a [`ManualClock`].

use crate::sync::{Arc, AtomicU64, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

/// Nanoseconds since the clock's epoch. Only differences between timestamps of one clock
/// are meaningful.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The clock's epoch.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `d` after the epoch.
    pub fn from_duration(d: Duration) -> Self {
        Timestamp(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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

/// Wall-clock monotonic time from [`Instant`], with its epoch at construction.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl MonotonicClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.epoch.elapsed())
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

    /// Sets the time. Going backwards is ignored, so the clock stays monotonic.
    pub fn set(&self, t: Timestamp) {
        // Relaxed: the clock value carries no other data; readers only need *a* recent
        // value, and fetch_max keeps it monotonic.
        self.nanos.fetch_max(t.0, Ordering::Relaxed);
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
