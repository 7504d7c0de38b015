//! Per-class queue-capacity counting for the lock-free ingress: one atomic per class of the
//! requests that count against `queue_capacity` (accepted at submit and not yet released by
//! the consumer).
//!
//! A submit takes a unit with a CAS loop that never goes past the capacity, so the count of
//! accepted requests never exceeds `queue_capacity` (slack 0) and a submit is refused only
//! when the count is at the capacity at its CAS: any burst up to `queue_capacity` between two
//! steps is accepted. The consumer returns units in batches (one `fetch_sub` per class per
//! step) for the requests that stopped counting (admitted, cancelled, timed out, ...). Units
//! it has not returned yet still count, so a refusal can be early by at most the units the
//! consumer holds back within one step; never late.

use crate::sync::{AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;

/// One class's counter.
pub struct ClassCount {
    used: CachePadded<AtomicUsize>,
    capacity: AtomicUsize,
}

impl ClassCount {
    /// A counter with room for `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            used: CachePadded::new(AtomicUsize::new(0)),
            capacity: AtomicUsize::new(capacity),
        }
    }

    /// Producer: takes a unit, or returns the capacity if it is used up.
    pub fn try_acquire(&self) -> Result<(), usize> {
        // Relaxed: the capacity is a plain number; a reload that changes it is a step-boundary
        // event the next submits see soon enough (no data is published with it).
        let cap = self.capacity.load(Ordering::Relaxed);
        // Relaxed: the count's single modification order is all the bound needs; no data
        // moves with it.
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < cap).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| cap)
    }

    /// Consumer: takes `n` units whatever the capacity (e.g. preempted requests returning
    /// to the queue, which must not be refused).
    pub fn force_acquire(&self, n: usize) {
        // Relaxed: as `try_acquire`.
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Consumer: returns `n` units (a step's batch).
    pub fn release(&self, n: usize) {
        // Relaxed: as `try_acquire`.
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        debug_assert!(before >= n, "released more units than were taken");
    }

    /// Units taken now.
    pub fn used(&self) -> usize {
        // Relaxed: a statistic.
        self.used.load(Ordering::Relaxed)
    }

    /// Changes the capacity (a reload). Units already taken stay taken; if the capacity
    /// shrinks below them, submits are refused until enough are released.
    pub fn set_capacity(&self, capacity: usize) {
        // Relaxed: see `try_acquire`.
        self.capacity.store(capacity, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_capacity_is_accepted_and_never_more() {
        // The default `queue_capacity`; smaller under Miri, which interprets every step.
        let cap = if cfg!(miri) { 1024 } else { 262_144 };
        let c = ClassCount::new(cap);
        for _ in 0..cap {
            c.try_acquire().unwrap();
        }
        assert_eq!(c.try_acquire(), Err(cap));
        c.release(10);
        for _ in 0..10 {
            c.try_acquire().unwrap();
        }
        assert_eq!(c.try_acquire(), Err(cap));
    }

    #[test]
    fn racing_producers_never_exceed_capacity() {
        use std::sync::Arc;
        let c = Arc::new(ClassCount::new(1000));
        // 4 × 300 = 1,200 attempts at 1,000 units.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || (0..300).filter(|_| c.try_acquire().is_ok()).count())
            })
            .collect();
        let accepted: usize = threads.into_iter().map(|j| j.join().unwrap()).sum();
        assert_eq!(accepted, 1000, "exactly the capacity, no more, no fewer");
        assert_eq!(c.used(), 1000);
    }

    #[test]
    fn forced_units_and_a_smaller_capacity() {
        let c = ClassCount::new(2);
        c.force_acquire(3);
        assert_eq!(c.try_acquire(), Err(2));
        c.release(2);
        c.try_acquire().unwrap();
        c.set_capacity(1);
        assert_eq!(c.try_acquire(), Err(1));
    }
}
