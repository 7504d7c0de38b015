//! The SLO tracker's deadlines: when a request's TTFT or end-to-end bound passes, in a
//! queue per class and target that `tick` pops as time reaches them. Deadlines of a class
//! are arrival plus a constant, so they come nearly in order: a sorted deque (in chunks of
//! 1,024, so it holds little spare room), with a heap beside it for the few that do not.

use crate::time::Timestamp;
use std::collections::{BinaryHeap, VecDeque};

/// A deadline to check at `tick`: the request misses its target if still pending after
/// `at`. 16 bytes: one is pushed per request queued (per target its class has), into a
/// deque that is cold by then.
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
/// the deadline was pushed. The slab key and the key's generation at the push
/// (`SloTracker::live`; another generation there now means the request ended and the key
/// may have been reused), in one word: a [`Deadline`] of two words is built in registers
/// and stored as two, where one of three fields was built on the stack and copied with a
/// load wider than the stores that wrote it (a stalled load per request queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SlotRef(u64);

impl SlotRef {
    /// Slab key `key` at generation `gen`.
    pub(super) fn new(key: u32, gen: u32) -> Self {
        Self(u64::from(key) | u64::from(gen) << 32)
    }

    /// The slab key.
    pub(super) fn key(self) -> u32 {
        self.0 as u32
    }

    /// The key's generation at the push.
    pub(super) fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }
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
    sorted: Fifo<Deadline<W>>,
    /// The latest `at` ever pushed into `sorted` (its back's while it holds any): a push
    /// at or after it goes there, any other to `late`. Kept apart so that a push does not
    /// look up the back chunk twice; after `sorted` empties it can send to `late` a push
    /// that `sorted` could have taken, which changes no order (see `pop_expired`).
    sorted_max: Timestamp,
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
            sorted: Fifo::default(),
            sorted_max: Timestamp::ZERO,
            late: BinaryHeap::new(),
            pushes: 0,
        }
    }
}

impl<W: Copy> DeadlineQueue<W> {
    /// Queues `d`. Inlined, as is the sorted deque's push: a deadline built by the caller
    /// and passed by reference to an out-of-line push was read back wider than it had been
    /// written, a stalled load for every request queued.
    #[inline]
    pub(super) fn push(&mut self, d: Deadline<W>) {
        self.pushes += 1;
        if d.at >= self.sorted_max {
            self.sorted_max = d.at;
            self.sorted.push_back(d);
        } else {
            self.push_late(d);
        }
    }

    /// [`DeadlineQueue::push`] of a deadline before the sorted deque's last.
    #[cold]
    fn push_late(&mut self, d: Deadline<W>) {
        self.late.push(Late {
            deadline: d,
            seq: self.pushes,
        });
    }

    /// The earliest deadline if it is before `now`, removed. Between equal `at`s the one
    /// pushed first: a deadline in `sorted` was pushed before any equal one in `late` (a
    /// push goes to `late` only when an earlier push to `sorted` was later, and `sorted`
    /// takes only pushes at or after every earlier one it took).
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

/// Items per chunk of a [`Fifo`].
const FIFO_CHUNK: usize = if cfg!(test) { 4 } else { 1024 };

/// A first-in first-out queue in chunks of [`FIFO_CHUNK`] items: growing never copies what
/// it holds and never leaves more than two chunks of spare room, where a doubling
/// `VecDeque` can leave half its capacity unused (the SLO tracker holds a deadline per
/// queued request: at 100k queued a doubling deque cost 21 bytes a request, not 16).
#[derive(Debug)]
struct Fifo<T> {
    /// The items, oldest first: every chunk has capacity [`FIFO_CHUNK`] and is full but
    /// the last; none is empty, and the front one holds more than `head` items.
    chunks: VecDeque<Vec<T>>,
    /// Items of the front chunk already popped.
    head: usize,
    /// The last chunk emptied, cleared, kept for the next one needed: a queue whose length
    /// hovers at a chunk boundary does not allocate and free a chunk each time.
    spare: Option<Vec<T>>,
}

impl<T> Default for Fifo<T> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
            head: 0,
            spare: None,
        }
    }
}

impl<T: Copy> Fifo<T> {
    /// The oldest item.
    fn front(&self) -> Option<&T> {
        self.chunks.front().map(|c| &c[self.head])
    }

    /// The newest item.
    #[cfg(test)]
    fn back(&self) -> Option<&T> {
        self.chunks.back().and_then(|c| c.last())
    }

    #[inline]
    fn push_back(&mut self, item: T) {
        match self.chunks.back_mut() {
            Some(c) if c.len() < FIFO_CHUNK => c.push(item),
            _ => self.push_in_new_chunk(item),
        }
    }

    /// [`Fifo::push_back`] when the last chunk is full or there is none.
    #[cold]
    fn push_in_new_chunk(&mut self, item: T) {
        let mut chunk = self
            .spare
            .take()
            .unwrap_or_else(|| Vec::with_capacity(FIFO_CHUNK));
        chunk.push(item);
        self.chunks.push_back(chunk);
    }

    fn pop_front(&mut self) -> Option<T> {
        let front = self.chunks.front()?;
        let item = front[self.head];
        self.head += 1;
        if self.head == front.len() {
            // Emptied (a chunk that is not full is the last one: the queue is empty too).
            let mut chunk = self.chunks.pop_front().expect("the front chunk");
            chunk.clear();
            self.spare = Some(chunk);
            self.head = 0;
        }
        Some(item)
    }

    /// Items held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum::<usize>() - self.head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deadlines come out by `at`, the first pushed first among equal ones, through rounds
    /// of mostly rising pushes with some late ones and ties, pops up to a rising `now`
    /// that empty the queue now and then, and pushes earlier than any before after that.
    #[test]
    fn deadlines_pop_by_time_then_push_order() {
        let mut q = DeadlineQueue::<u32>::default();
        let mut model: Vec<(u64, u32)> = Vec::new(); // (at, push number), unpopped
        let mut x = 0x9E37_79B9u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut base, mut pushed) = (1_000u64, 0u32);
        for round in 0..300 {
            for _ in 0..(next() % 12) {
                let at = match next() % 5 {
                    0 => base.saturating_sub(next() % 50), // late
                    1 => base,                             // a tie
                    _ => base + next() % 20,
                };
                base = base.max(at);
                q.push(Deadline {
                    at: Timestamp(at),
                    who: pushed,
                });
                model.push((at, pushed));
                pushed += 1;
            }
            // Every few rounds `now` passes everything: the queue empties, and the next
            // pushes may be earlier than the latest ever pushed.
            let now = if round % 7 == 6 {
                base + 100
            } else {
                base.saturating_sub(next() % 30)
            };
            model.sort_unstable();
            let due = model.iter().take_while(|(at, _)| *at < now).count();
            for &(at, who) in &model[..due] {
                let d = q.pop_expired(Timestamp(now)).expect("a deadline is due");
                assert_eq!((d.at.0, d.who), (at, who), "round {round}");
            }
            assert!(q.pop_expired(Timestamp(now)).is_none(), "round {round}");
            model.drain(..due);
            assert_eq!(q.len(), model.len());
            if round % 7 == 6 {
                base = base.saturating_sub(200);
            }
        }
    }

    #[test]
    fn fifo_matches_a_deque_across_chunk_boundaries() {
        let (mut fifo, mut model) = (Fifo::default(), VecDeque::new());
        let mut next = 0u32;
        // Pushes and pops in runs of every length up to three chunks, so the queue empties,
        // fills chunks exactly, and reuses its spare chunk.
        for round in 0..200usize {
            let (pushes, pops) = (
                round % (3 * FIFO_CHUNK + 1),
                (round * 7) % (3 * FIFO_CHUNK + 2),
            );
            for _ in 0..pushes {
                fifo.push_back(next);
                model.push_back(next);
                next += 1;
            }
            for _ in 0..pops {
                assert_eq!(fifo.pop_front(), model.pop_front());
            }
            assert_eq!(fifo.front(), model.front());
            assert_eq!(fifo.back(), model.back());
            assert_eq!(fifo.len(), model.len());
            assert!(fifo.chunks.iter().all(|c| c.capacity() == FIFO_CHUNK));
            assert!(fifo.chunks.len() <= model.len().div_ceil(FIFO_CHUNK) + 1);
        }
    }
}
