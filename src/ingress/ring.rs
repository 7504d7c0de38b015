//! A bounded, closable, lock-free multi-producer single-consumer ring.
//!
//! The algorithm is Dmitry Vyukov's bounded MPMC queue ("Bounded MPMC queue", 1024cores.net,
//! 2010; the same scheme as crossbeam's `ArrayQueue`), specialised to one consumer and given a
//! close bit:
//!
//! * every slot carries a sequence number (`seq`). Slot `i` starts at `i`. A producer that has
//!   claimed position `pos` may write the slot when `seq == pos`, and publishes the value by
//!   storing `pos + 1`. The consumer at position `pos` may read the slot when `seq == pos + 1`,
//!   and hands it back to producers one lap later by storing `pos + capacity`.
//! * producers claim positions by compare-and-swap on `tail`; the single consumer owns `head`.
//! * `tail` holds `position << 1 | closed`. Closing sets the low bit, so a push either claimed
//!   its position before the close (and the consumer will see it) or fails with `Closed`:
//!   there is no window in which a pushed value can be stranded.
//!
//! Positions are free-running `usize` counters compared with wrapping arithmetic; the ring
//! capacity is a power of two so `pos & mask` is the slot index.
//!
//! The capacity is at least [`MIN_CAPACITY`] (2). With one slot the scheme breaks: the value
//! published at `pos` leaves `seq == pos + 1`, which is also "free for the producer of
//! `pos + 1`", so a second push overwrites the first and the consumer, waiting for
//! `seq == pos + 1`, never reads either. With two or more slots the two states differ
//! (`pos + 1` against `pos + capacity`).

use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// Why a push did not land. The value comes back so nothing is lost.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError<T> {
    /// Every slot holds a value the consumer has not taken yet.
    Full(T),
    /// The ring was closed before this push claimed a position.
    Closed(T),
}

/// One cell of the ring.
struct Slot<T> {
    /// Invariant: `seq == pos` when the slot is free for the producer that claims `pos`;
    /// `seq == pos + 1` when it holds the value pushed at `pos`.
    seq: AtomicUsize,
    /// Initialised exactly when `seq == pos + 1` for the position `pos` that maps here.
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The ring. Shared by reference between producers; [`Ring::pop`] has a single-consumer
/// contract.
pub struct Ring<T> {
    /// Next position a producer will claim, shifted left by one; bit 0 is the closed flag.
    /// Only ever increases (by 2) or gains the closed bit.
    tail: CachePadded<AtomicUsize>,
    /// Next position the consumer will read. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// `capacity - 1`; capacity is a power of two.
    mask: usize,
    /// The slots; `slots.len() == mask + 1`.
    slots: Box<[Slot<T>]>,
}

// SAFETY: values of `T` move from producer threads to the consumer thread through the slots
// (hence `T: Send`); all slot access is arbitrated by the `seq` protocol described above, so
// no two threads touch one `value` at the same time.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; `&Ring` only permits `push` (any thread) and `pop` (the unique consumer).
unsafe impl<T: Send> Sync for Ring<T> {}

const CLOSED: usize = 1;

/// The fewest slots a ring has (see the module comment for why one does not work): the
/// configuration's smallest `ring_capacity`.
pub const MIN_CAPACITY: usize = crate::config::ClassConfig::MIN_RING_CAPACITY;

/// The number of slots a ring asked for `capacity` gets: at least [`MIN_CAPACITY`],
/// rounded up to a power of two.
pub fn slots_for(capacity: usize) -> usize {
    capacity.max(MIN_CAPACITY).next_power_of_two()
}

impl<T> Ring<T> {
    /// A ring holding up to `capacity` values, rounded up to a power of two and to at least
    /// [`MIN_CAPACITY`] ([`slots_for`]).
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_slots(slots_for(capacity))
    }

    /// A ring of exactly `cap` slots (a power of two). Private so that only the unit test
    /// of [`Ring::check_head`] can build the broken one-slot ring.
    fn with_slots(cap: usize) -> Self {
        debug_assert!(cap.is_power_of_two());
        let slots = (0..cap)
            .map(|i| Slot {
                seq: AtomicUsize::new(i),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            tail: CachePadded::new(AtomicUsize::new(0)),
            head: CachePadded::new(AtomicUsize::new(0)),
            mask: cap - 1,
            slots,
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Pushes `value`, or gives it back if the ring is full or closed. Never blocks.
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        // Relaxed: the tail is only a hint of which slot to try; the slot's `seq` (Acquire
        // below) is what proves the slot is free.
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & CLOSED != 0 {
                return Err(PushError::Closed(value));
            }
            let pos = tail >> 1;
            let slot = &self.slots[pos & self.mask];
            // Acquire: pairs with the Release store of `pos + capacity` in `pop`, so the
            // consumer's move out of this slot happens before we overwrite it.
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                // The slot is free for `pos`: claim the position.
                match self.tail.compare_exchange_weak(
                    tail,
                    tail.wrapping_add(2),
                    // Relaxed on success: the claim only has to be unique (the CAS
                    // guarantees that); publication happens through `seq` below.
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: we won position `pos` and `seq == pos`, so no producer
                        // and not the consumer can touch this slot until we store
                        // `pos + 1` below.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        // Release: pairs with the Acquire load in `pop`; the value written
                        // above is visible to the consumer that sees `pos + 1`.
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => tail = current,
                }
            } else if diff < 0 {
                // The slot still holds the value pushed one lap ago: the ring is full.
                // Re-check the tail so we never report Full for a stale position.
                let current = self.tail.load(Ordering::Relaxed);
                if current == tail {
                    return Err(PushError::Full(value));
                }
                tail = current;
            } else {
                // Another producer claimed `pos` and moved on; catch up.
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Takes the oldest published value, if any.
    ///
    /// # Safety
    ///
    /// Only one thread may ever call `pop` on a given ring (the scheduler thread, which
    /// reaches it through `&mut Scheduler`).
    pub unsafe fn pop(&self) -> Option<T> {
        // Relaxed: only this thread writes `head`.
        let pos = self.head.load(Ordering::Relaxed);
        let slot = &self.slots[pos & self.mask];
        // Acquire: pairs with the Release store of `pos + 1` in `push`, making the value
        // written there visible here.
        let seq = slot.seq.load(Ordering::Acquire);
        if seq != pos.wrapping_add(1) {
            // Empty, or the producer that claimed `pos` has not published yet; it will be
            // taken on a later call, in order.
            return None;
        }
        // SAFETY: `seq == pos + 1` means the value at `pos` is initialised and published,
        // and no producer writes this slot until we store `pos + capacity` below; the
        // caller guarantees we are the only consumer.
        let value = slot.value.with_mut(|p| unsafe { (*p).assume_init_read() });
        // Release: pairs with the Acquire load of `seq` in `push`; our read of the value
        // happens before the next producer overwrites it.
        slot.seq
            .store(pos.wrapping_add(self.capacity()), Ordering::Release);
        self.head.store(pos.wrapping_add(1), Ordering::Relaxed);
        Some(value)
    }

    /// Closes the ring: every later push fails with [`PushError::Closed`]. Values already
    /// pushed stay poppable. Idempotent.
    pub fn close(&self) {
        // AcqRel: the RMW is ordered with every push's CAS on `tail` (a single modification
        // order), which is what the close guarantee needs; Release/Acquire make the close
        // visible with the state the closer wrote before it.
        self.tail.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Takes the oldest value of a **closed** ring, waiting for it if a producer has
    /// claimed its position but not published it yet; `None` once every position claimed
    /// before the close has been taken.
    ///
    /// The wait is bounded: a producer publishes a few instructions after its claim and
    /// never blocks in between. It also stops, returning `None` with values left behind,
    /// if the head slot is out of protocol (see [`Ring::check_head`]): that is a defect
    /// the caller's invariant check reports, and spinning on it would never end.
    ///
    /// # Safety
    ///
    /// As [`Ring::pop`]: only the ring's single consumer may call it.
    pub unsafe fn pop_closed(&self) -> Option<T> {
        loop {
            // Relaxed: once the closed bit is seen the tail is final (a push's CAS expects
            // a tail without it, so none succeeds after the close), and every position
            // below it was claimed by a push whose value `pop` acquires through `seq`.
            let tail = self.tail.load(Ordering::Relaxed);
            debug_assert!(tail & CLOSED != 0, "pop_closed on an open ring");
            // Relaxed: only this thread writes `head`.
            let pos = self.head.load(Ordering::Relaxed);
            if pos == tail >> 1 {
                return None;
            }
            // Relaxed: only the state is read here; `pop` loads it again with Acquire
            // before touching the value.
            let seq = self.slots[pos & self.mask].seq.load(Ordering::Relaxed);
            match seq.wrapping_sub(pos) {
                // SAFETY: the caller is the only consumer (this function's contract).
                1 => return unsafe { self.pop() },
                // Claimed, not yet published: the producer is about to store `pos + 1`.
                0 => crate::sync::yield_now(),
                _ => return None,
            }
        }
    }

    /// Checks the consumer's view of the protocol: the slot at the head holds either
    /// `seq == head` (free, or claimed and not yet published) or `seq == head + 1`
    /// (published). Producers cannot move it further until the consumer pops, so this
    /// holds at every moment, with pushes in flight too. Anything else means a push
    /// overwrote a value the consumer had not taken: that value is lost.
    ///
    /// Call it from the consumer's thread (a racing pop could make it report falsely).
    pub fn check_head(&self) -> Result<(), String> {
        // Relaxed: only the consumer writes `head`, and we are on its thread.
        let pos = self.head.load(Ordering::Relaxed);
        // Relaxed: a state check; no data is read through it.
        let seq = self.slots[pos & self.mask].seq.load(Ordering::Relaxed);
        match seq.wrapping_sub(pos) {
            0 | 1 => Ok(()),
            d => Err(format!(
                "ring of {} slots: the slot at head {pos} is {d} positions ahead \
                 (a push overwrote a value not yet taken)",
                self.capacity()
            )),
        }
    }

    /// Values claimed but not yet popped; exact when no push or pop is in flight.
    pub(crate) fn len(&self) -> usize {
        let tail = self.tail.load(Ordering::Acquire) >> 1;
        let head = self.head.load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread holds the ring, so we are its consumer.
        // SAFETY: exclusive access makes this the only caller of `pop`.
        while unsafe { self.pop() }.is_some() {}
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fifo_wraps_and_reports_full() {
        let r = Ring::with_capacity(3);
        assert_eq!(r.capacity(), 4);
        for round in 0..5 {
            for i in 0..4 {
                r.push(round * 10 + i).unwrap();
            }
            assert_eq!(r.push(99), Err(PushError::Full(99)));
            assert_eq!(r.len(), 4);
            for i in 0..4 {
                // SAFETY: single-threaded test: this is the only consumer.
                assert_eq!(unsafe { r.pop() }, Some(round * 10 + i));
            }
            // SAFETY: as above.
            assert_eq!(unsafe { r.pop() }, None);
        }
    }

    #[test]
    fn capacity_is_at_least_two() {
        assert_eq!(Ring::<u32>::with_capacity(0).capacity(), MIN_CAPACITY);
        assert_eq!(Ring::<u32>::with_capacity(1).capacity(), MIN_CAPACITY);
        assert_eq!(slots_for(2), 2);
        assert_eq!(slots_for(5), 8);
    }

    /// The defect a one-slot ring has, and that `check_head` and `pop_closed` report
    /// instead of losing silently or spinning: the second push overwrites the first.
    #[test]
    fn check_head_catches_the_one_slot_overwrite() {
        let r = Ring::with_slots(1);
        r.push(1).unwrap();
        assert_eq!(r.check_head(), Ok(()));
        r.push(2).unwrap(); // accepted: the slot looks free for position 1
        assert!(r.check_head().is_err());
        r.close();
        // SAFETY: single-threaded test: this is the only consumer.
        assert_eq!(unsafe { r.pop_closed() }, None, "stops instead of spinning");
        assert_eq!(r.len(), 2, "both values are stranded");
        // `drop` would read the slot as empty and leak; that is fine for `u32`.
    }

    #[test]
    fn pop_closed_takes_everything_claimed_before_the_close() {
        let r = Ring::with_capacity(2);
        for round in 0..3 {
            r.push(round * 2).unwrap();
            r.push(round * 2 + 1).unwrap();
            assert_eq!(r.check_head(), Ok(()));
            // SAFETY: single-threaded test.
            assert_eq!(unsafe { r.pop() }, Some(round * 2));
            // SAFETY: as above.
            assert_eq!(unsafe { r.pop() }, Some(round * 2 + 1));
        }
        r.push(10).unwrap();
        r.close();
        assert_eq!(r.push(11), Err(PushError::Closed(11)));
        // SAFETY: single-threaded test.
        assert_eq!(unsafe { r.pop_closed() }, Some(10));
        // SAFETY: as above.
        assert_eq!(unsafe { r.pop_closed() }, None);
        assert_eq!(r.len(), 0);
        assert_eq!(r.check_head(), Ok(()));
    }

    #[test]
    fn close_refuses_pushes_but_keeps_values() {
        let r = Ring::with_capacity(2);
        r.push(1).unwrap();
        r.close();
        assert_eq!(r.push(2), Err(PushError::Closed(2)));
        // SAFETY: single-threaded test.
        assert_eq!(unsafe { r.pop() }, Some(1));
    }

    #[test]
    fn drop_releases_unpopped_values() {
        let item = std::sync::Arc::new(());
        {
            let r = Ring::with_capacity(4);
            r.push(item.clone()).unwrap();
            r.push(item.clone()).unwrap();
        }
        assert_eq!(std::sync::Arc::strong_count(&item), 1);
    }
}
