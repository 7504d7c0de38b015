//! Per-class queue-capacity counting for the lock-free ingress: one shared count per class
//! of the requests that count against `queue_capacity`, and per API thread the units it
//! took and has not added to the shared count yet ([`Pending`]).
//!
//! A locked read-modify-write on a shared line per submit cost about a fifth of a
//! one-thread submit and made every producer thread's submit move that line. So for a
//! class whose capacity is at least [`EXACT_BELOW`], a thread counts its own accepted
//! submits and adds them to the shared count [`BATCH`] at a time. Reading the shared count
//! on every submit still moved its line once per batch another thread added (about a
//! sixth of a two-thread submit), so the thread also keeps the count as it last saw it
//! (`seen`: the value its own add returned, or its last read) and judges a submit by that:
//!
//! * A submit is accepted when `seen` plus the thread's pending units is below the
//!   capacity. Otherwise it reads the shared count (and keeps it as `seen`), and is refused
//!   only if that plus its pending units reaches the capacity. The class's true count
//!   (requests accepted and not yet released) is the shared count plus every thread's
//!   pending units, and those are never negative, so a refusal sees a true count at or past
//!   the capacity: **a class is never refused below its `queue_capacity`** (units the
//!   scheduler returned since `seen` only send a submit to the read). One thread's burst
//!   (no other thread adding) is exact: up to the capacity accepted, the next refused.
//! * The slack: a thread accepts at most a batch ([`BATCH`], 16) judged by a `seen` that
//!   other threads' adds have overtaken; its add then returns the count as it is, and it
//!   accepts no more past the capacity. So a class can hold up to `queue_capacity` plus 16
//!   for every thread that has submitted to it. Memory stays bounded whatever the thread
//!   count: the request table has room for twice every class's capacity plus the KV
//!   blocks, and a submit past it is refused too.
//! * A thread adds its pending units when they reach `BATCH`, when it turns to another
//!   scheduler, and when it exits (its thread-local's destructor). A thread that submitted
//!   a few and went quiet keeps them pending: the slack above, never a refusal early.
//!
//! A class with a smaller capacity, where 15 a thread would be a large share of it, is
//! counted exactly: a submit takes its unit with a CAS loop on the shared count that never
//! passes the capacity (slack 0).
//!
//! The scheduler returns units in batches (one RMW per class per step) for the requests
//! that stopped counting (admitted, cancelled, timed out, ...), and so the shared count
//! can be below zero for as long as threads hold the units of requests it released; it
//! is kept as a wrapping `usize` read as signed.

use crate::sync::{AtomicUsize, Ordering};
use crossbeam_utils::CachePadded;
use std::cell::Cell;

/// Units a thread takes before it adds them to the shared count.
pub(crate) const BATCH: u8 = 16;

/// Classes with a smaller capacity are counted exactly (module docs).
pub const EXACT_BELOW: usize = 4096;

/// One class's counter.
pub struct ClassCount {
    /// Units taken less units returned, over the shared adds only (wrapping; read signed).
    used: CachePadded<AtomicUsize>,
    capacity: AtomicUsize,
}

/// A thread's units of every class position, taken and not yet added to the shared counts.
/// Each is below [`BATCH`] between submits.
pub type Pending = [u8; crate::class::MAX_CLASSES];

/// A thread's view of one class's shared count: the value it last read or its last add
/// returned, [`UNSEEN`] before either.
pub type Seen = Cell<isize>;

/// The `seen` of a thread that has not read the count: its next submit reads it.
pub const UNSEEN: isize = isize::MAX;

impl ClassCount {
    /// A counter with room for `capacity` requests.
    pub fn new(capacity: usize) -> Self {
        Self {
            used: CachePadded::new(AtomicUsize::new(0)),
            capacity: AtomicUsize::new(capacity),
        }
    }

    /// Producer: takes a unit, or returns the capacity if the class is full. Below
    /// `EXACT_BELOW` the unit goes straight to the shared count; from it on, into
    /// `pending` (this thread's units of this class), which is added to the shared count
    /// once it reaches `BATCH`, judged by `seen` (this thread's view of the shared count)
    /// unless that says full (module docs).
    #[inline]
    pub fn try_acquire(&self, pending: &mut u8, seen: &Seen) -> Result<(), usize> {
        // Relaxed: the capacity is a plain number; a reload that changes it is a step-boundary
        // event the next submits see soon enough (no data is published with it).
        let cap = self.capacity.load(Ordering::Relaxed);
        if cap < EXACT_BELOW {
            // Units pending from before a reload lowered the capacity count from now on.
            self.add(std::mem::take(pending));
            // Relaxed: the count's single modification order is all the bound needs; no
            // data moves with it.
            return self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    ((n as isize) < cap as isize).then_some(n.wrapping_add(1))
                })
                .map(|_| ())
                .map_err(|_| cap);
        }
        if seen.get().saturating_add(isize::from(*pending)) >= cap as isize {
            // Relaxed: a count; no data moves with it. A racing return may or may not be
            // seen, as with any snapshot: the submit is then ordered before it.
            let shared = self.used.load(Ordering::Relaxed) as isize;
            seen.set(shared);
            if shared.saturating_add(isize::from(*pending)) >= cap as isize {
                return Err(cap);
            }
        }
        *pending += 1;
        if *pending == BATCH {
            *pending = 0;
            // The count as of our add: a fresh `seen`.
            seen.set(self.force_acquire(usize::from(BATCH)));
        }
        Ok(())
    }

    /// Producer: gives back a unit just taken with [`try_acquire`](Self::try_acquire) into
    /// `pending` (the submit failed after it).
    pub fn undo(&self, pending: &mut u8) {
        if *pending > 0 {
            *pending -= 1;
        } else {
            // The take filled a batch and added it.
            self.release(1);
        }
    }

    /// Adds a thread's pending units to the shared count.
    pub fn add(&self, pending: u8) {
        if pending > 0 {
            self.force_acquire(usize::from(pending));
        }
    }

    /// Takes `n` units whatever the capacity: the consumer's for requests that must not be
    /// refused (e.g. preempted ones returning to the queue), a producer's to add its
    /// pending units. Returns the shared count as of this add (read signed, as
    /// [`used`](Self::used)).
    pub fn force_acquire(&self, n: usize) -> isize {
        // Relaxed: as `try_acquire`.
        (self.used.fetch_add(n, Ordering::Relaxed) as isize).wrapping_add(n as isize)
    }

    /// Consumer: returns `n` units (a step's batch).
    pub fn release(&self, n: usize) {
        // Relaxed: as `try_acquire`. Wrapping below zero is the documented state of units
        // still pending in threads (module docs).
        self.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// The shared count: units taken and added, less those returned (below the true count
    /// by the units threads hold; module docs). Negative while threads hold units of
    /// requests already returned.
    pub fn used(&self) -> isize {
        // Relaxed: a statistic.
        self.used.load(Ordering::Relaxed) as isize
    }

    /// The most requests of the class a step drains: the shared count plus the capacity,
    /// which is at least every request in ingress (the true count is the shared count plus
    /// the threads' pending units, fewer than the capacity unless the class is over it by
    /// the slack) and bounds the step however fast API threads keep pushing.
    pub fn drain_limit(&self) -> usize {
        usize::try_from(self.used().max(0))
            .unwrap_or(0)
            .saturating_add(self.capacity())
    }

    /// The capacity in force.
    pub fn capacity(&self) -> usize {
        // Relaxed: see `try_acquire`.
        self.capacity.load(Ordering::Relaxed)
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
    fn one_threads_burst_up_to_capacity_is_accepted_and_never_more() {
        // The default `queue_capacity`, and one counted exactly; smaller under Miri, which
        // interprets every step.
        let caps = if cfg!(miri) {
            [EXACT_BELOW - 1, EXACT_BELOW]
        } else {
            [EXACT_BELOW - 1, 262_144]
        };
        for cap in caps {
            let c = ClassCount::new(cap);
            let mut pending = 0;
            let seen = Seen::new(UNSEEN);
            for _ in 0..cap {
                c.try_acquire(&mut pending, &seen).unwrap();
                assert!(pending < BATCH);
            }
            assert_eq!(c.try_acquire(&mut pending, &seen), Err(cap));
            assert_eq!(c.used() + isize::from(pending), cap as isize);
            c.release(10);
            for _ in 0..10 {
                c.try_acquire(&mut pending, &seen).unwrap();
            }
            assert_eq!(c.try_acquire(&mut pending, &seen), Err(cap));
        }
    }

    #[test]
    fn the_shared_count_lags_by_the_pending_units_and_may_go_below_zero() {
        let c = ClassCount::new(EXACT_BELOW);
        let mut pending = 0;
        let seen = Seen::new(UNSEEN);
        for _ in 0..BATCH - 1 {
            c.try_acquire(&mut pending, &seen).unwrap();
        }
        assert_eq!((c.used(), pending), (0, BATCH - 1));
        c.try_acquire(&mut pending, &seen).unwrap();
        assert_eq!(
            (c.used(), pending),
            (isize::from(BATCH), 0),
            "a full batch is added"
        );
        c.try_acquire(&mut pending, &seen).unwrap();
        // The scheduler returns all 17; one is still pending here.
        c.release(usize::from(BATCH) + 1);
        assert_eq!(c.used(), -1);
        c.add(pending);
        assert_eq!(c.used(), 0);
    }

    #[test]
    fn a_small_capacity_is_counted_exactly_and_takes_in_pending_units() {
        let c = ClassCount::new(EXACT_BELOW);
        let mut pending = 0;
        let seen = Seen::new(UNSEEN);
        c.try_acquire(&mut pending, &seen).unwrap();
        assert_eq!((c.used(), pending), (0, 1));
        c.set_capacity(2);
        c.try_acquire(&mut pending, &seen).unwrap();
        assert_eq!(
            (c.used(), pending),
            (2, 0),
            "the pending unit is added first"
        );
        assert_eq!(c.try_acquire(&mut pending, &seen), Err(2));
    }

    #[test]
    fn undo_gives_back_the_unit_just_taken() {
        for cap in [EXACT_BELOW - 1, EXACT_BELOW] {
            let c = ClassCount::new(cap);
            let mut pending = 0;
            let seen = Seen::new(UNSEEN);
            c.try_acquire(&mut pending, &seen).unwrap();
            c.undo(&mut pending);
            assert_eq!(c.used() + isize::from(pending), 0);
            for _ in 0..BATCH {
                c.try_acquire(&mut pending, &seen).unwrap();
            }
            assert_eq!(pending, 0, "a full batch is added (or nothing was pending)");
            c.undo(&mut pending);
            assert_eq!((c.used(), pending), (isize::from(BATCH) - 1, 0));
        }
    }

    /// A thread's `seen` may lag both ways: units returned since only send its submit to
    /// the shared count (never a refusal below the capacity), and another thread's adds
    /// since let it accept at most the rest of one batch past the capacity.
    #[test]
    fn a_stale_view_never_refuses_early_and_overshoots_by_a_batch_at_most() {
        let cap = EXACT_BELOW;
        let c = ClassCount::new(cap);
        let (mut a, seen_a) = (0, Seen::new(UNSEEN));
        let (mut b, seen_b) = (0, Seen::new(UNSEEN));
        for _ in 0..cap {
            c.try_acquire(&mut a, &seen_a).unwrap();
        }
        assert_eq!(c.try_acquire(&mut a, &seen_a), Err(cap));
        // The scheduler returns 100: A's view says full, the count says otherwise.
        c.release(100);
        for _ in 0..100 {
            c.try_acquire(&mut a, &seen_a).unwrap();
        }
        assert_eq!(c.try_acquire(&mut a, &seen_a), Err(cap));
        // B saw the count with room for 40, then A took the rest (and B's pending unit's
        // worth: it does not see it).
        c.release(40);
        c.try_acquire(&mut b, &seen_b).unwrap();
        let took = (0..100)
            .take_while(|_| c.try_acquire(&mut a, &seen_a).is_ok())
            .count();
        assert_eq!(took, 40);
        // B, judging by its view, accepts up to the batch it is filling, then sees the
        // count at its add and accepts no more.
        let more = (0..100)
            .take_while(|_| c.try_acquire(&mut b, &seen_b).is_ok())
            .count();
        let over = c.used() + isize::from(a) + isize::from(b) - cap as isize;
        assert!(
            more >= 1 && over <= isize::from(BATCH),
            "{more} more, {over} over"
        );
        assert_eq!(c.try_acquire(&mut b, &seen_b), Err(cap));
    }

    /// Racing threads are never refused below the capacity; a small capacity is exact, a
    /// large one exceeded by at most a batch per thread.
    #[test]
    fn racing_producers_stay_within_the_slack() {
        use std::sync::Arc;
        const THREADS: usize = 4;
        for (cap, slack) in [(1000, 0), (EXACT_BELOW, THREADS * BATCH as usize)] {
            let c = Arc::new(ClassCount::new(cap));
            // 4 × 1.2 × cap / 4 attempts at `cap` units.
            let each = cap * 12 / 10 / THREADS;
            let threads: Vec<_> = (0..THREADS)
                .map(|_| {
                    let c = Arc::clone(&c);
                    std::thread::spawn(move || {
                        let mut pending = 0;
                        let seen = Seen::new(UNSEEN);
                        let n = (0..each)
                            .filter(|_| c.try_acquire(&mut pending, &seen).is_ok())
                            .count();
                        c.add(pending);
                        n
                    })
                })
                .collect();
            let accepted: usize = threads.into_iter().map(|j| j.join().unwrap()).sum();
            assert!(
                (cap..=cap + slack).contains(&accepted),
                "{accepted} accepted, capacity {cap}, slack {slack}"
            );
            assert_eq!(c.used(), accepted as isize);
        }
    }

    #[test]
    fn forced_units_and_a_smaller_capacity() {
        let c = ClassCount::new(2);
        let mut pending = 0;
        let seen = Seen::new(UNSEEN);
        c.force_acquire(3);
        assert_eq!(c.try_acquire(&mut pending, &seen), Err(2));
        c.release(2);
        c.try_acquire(&mut pending, &seen).unwrap();
        c.set_capacity(1);
        assert_eq!(c.try_acquire(&mut pending, &seen), Err(1));
        assert_eq!(c.capacity(), 1);
    }
}
