//! The SLO tracker's deadlines: when a request's TTFT or end-to-end bound passes, in a
//! queue per class and target that `tick` pops as time reaches them. Deadlines of a class
//! are arrival plus a constant, so they come nearly in order: a sorted deque, with a heap
//! beside it for the few that do not.

use crate::time::Timestamp;
use std::collections::{BinaryHeap, VecDeque};

/// A deadline to check at `tick`: the request misses its target if still pending after
/// `at`. 16 bytes: one is pushed per request queued, into a ring that is cold by then.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline<W> {
    /// When the bound passes: the request's arrival plus its class's bound.
    pub(super) at: Timestamp,
    /// The request ([`SlotRef`]; tests use plain numbers). The deadline is that request's
    /// if its slot still has the generation it carries, the request is still in the
    /// queue's class and its arrival plus the class's bound is `at`; otherwise the
    /// request ended or moved and the deadline is skipped.
    pub(super) who: W,
}

/// Where a tracked request's deadline points: a slot of the scheduler's slab, as it was when
/// the deadline was pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotRef {
    /// The slab key.
    pub(super) key: u32,
    /// The key's generation at the push (`SloTracker::live`); another generation there
    /// now means the request ended (and the key may have been reused).
    pub(super) gen: u32,
}

/// Deadlines by `at`, then by the order they were pushed. Deadlines of one class are
/// arrival plus a constant, so nearly every push is at the back of a sorted deque (O(1));
/// a push out of order (arrivals drained out of order, a reclassified request) goes into a
/// min-heap beside it (O(log n), where an insert into the deque would move every later
/// deadline: at 1M queued, megabytes per reclassification). A pop takes the earlier of the
/// two fronts.
#[derive(Debug)]
pub(super) struct DeadlineQueue<W> {
    /// In `at` order, pushed in that order.
    sorted: VecDeque<Deadline<W>>,
    /// The pushes that came out of order, keyed by (`at`, push number).
    late: BinaryHeap<Late<W>>,
    /// Pushes so far (the tie-break among equal `at` in `late`).
    pushes: u64,
}

/// An out-of-order deadline in [`DeadlineQueue::late`]: ordered so that the heap's top is
/// the earliest `at`, first pushed among equals.
#[derive(Debug)]
struct Late<W> {
    deadline: Deadline<W>,
    seq: u64,
}

impl<W> Late<W> {
    fn key(&self) -> (Timestamp, u64) {
        (self.deadline.at, self.seq)
    }
}

impl<W> PartialEq for Late<W> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<W> Eq for Late<W> {}

impl<W> PartialOrd for Late<W> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<W> Ord for Late<W> {
    /// Reversed: `BinaryHeap` is a max-heap, and the earliest must be on top.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key().cmp(&self.key())
    }
}

impl<W> Default for DeadlineQueue<W> {
    fn default() -> Self {
        Self {
            sorted: VecDeque::new(),
            late: BinaryHeap::new(),
            pushes: 0,
        }
    }
}

impl<W> DeadlineQueue<W> {
    pub(super) fn push(&mut self, d: Deadline<W>) {
        self.pushes += 1;
        if self.sorted.back().is_none_or(|b| b.at <= d.at) {
            self.sorted.push_back(d);
        } else {
            self.late.push(Late {
                deadline: d,
                seq: self.pushes,
            });
        }
    }

    /// The earliest deadline if it is before `now`, removed. Between equal `at`s the one
    /// pushed first: a deadline in `sorted` was pushed before any equal one in `late` (a
    /// push goes to `late` only when `sorted`'s back is later, and `sorted` only grows at
    /// the back).
    pub(super) fn pop_expired(&mut self, now: Timestamp) -> Option<Deadline<W>> {
        let from_late = match (self.sorted.front(), self.late.peek()) {
            (Some(s), Some(l)) => l.deadline.at < s.at,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if from_late {
            if self.late.peek().is_some_and(|l| l.deadline.at < now) {
                return self.late.pop().map(|l| l.deadline);
            }
            None
        } else if self.sorted.front().is_some_and(|d| d.at < now) {
            self.sorted.pop_front()
        } else {
            None
        }
    }

    /// Deadlines held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sorted.len() + self.late.len()
    }
}
