//! An intrusive, closable multi-producer single-consumer queue over the request table's
//! slots: Dmitry Vyukov's "Intrusive MPSC node-based queue" (1024cores.net), with slot
//! indices for pointers and a close bit. No allocation per request; unbounded up to the
//! table.
//!
//! * `tail` is one 64-bit word: its low half is the last slot pushed (or the stub), with
//!   bit 31 the closed flag; its high half counts the producers' pushes (wrapping). A push
//!   sets its slot's `next` to NIL, swings `tail` to its slot and adds one to the count in
//!   one CAS (refusing if the closed bit is set), then links the previous tail's `next` to
//!   its slot.
//! * The count is how ingress knows what it holds without a counter of its own: the
//!   consumer counts its pops, and pushes less pops (mod 2^32) is what is in the queue,
//!   exact because a queue never holds 2^31 requests (each is a table slot).
//! * The consumer owns `head` (in its [`Consumer`], not shared) and follows `next` links. A
//!   stub node (outside the table, index [`STUB`]) keeps the queue non-empty so a producer
//!   always has a previous node to link.
//! * Between a producer's CAS on `tail` and its link, the chain is broken: the consumer sees
//!   `head != tail` with `head.next == NIL`. It then returns [`Pop::Busy`] (stop draining this
//!   queue for this step) instead of spinning; the producer links a few instructions later.
//!   The last node linked before the break waits with it (it cannot leave the chain until
//!   its `next` is set), so a Busy holds back at most that one request besides the
//!   unlinked ones.
//! * Close sets bit 31 of `tail`. A push's CAS expects a tail without it, so every push
//!   either swung `tail` before the close (and is in the chain: the consumer will drain it)
//!   or fails with [`Closed`] and gets its slot back. [`Consumer::pop_closed`] drains a
//!   closed queue to the end, waiting out the bounded Busy window.
//!
//! The pop side is a [`Consumer`], which is not `Clone` and pops through `&mut self`, so the
//! single-consumer rule is the type's, not a convention.

use super::table::{Entry, RequestHandle, Reserved, Table, NIL};
use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering};

/// The stub node's index (above every slot index, see [`super::table::MAX_CAPACITY`]).
pub(crate) const STUB: u32 = (1 << 31) - 1;
const CLOSED: u32 = 1 << 31;
/// One push in `tail`'s count half.
const PUSH: u64 = 1 << 32;

/// The slot index and closed bit of a `tail` word.
fn low(tail: u64) -> u32 {
    tail as u32
}

/// A push refused because the queue was closed; the reserved slot comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed(pub Reserved);

/// What a pop found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    /// The oldest request; the consumer now owns it.
    Item(Entry),
    /// Nothing queued.
    Empty,
    /// A producer is between its tail swap and its link: more is coming, in order. Try again
    /// later (the next step).
    Busy,
}

struct Inner<P> {
    table: Arc<Table<P>>,
    /// Low half: last node pushed, `| CLOSED` once closed. High half: producers' pushes
    /// so far, mod 2^32.
    tail: AtomicU64,
    /// The stub node's `next`.
    stub_next: AtomicU32,
}

impl<P: Copy> Inner<P> {
    fn next_of(&self, index: u32) -> &AtomicU32 {
        if index == STUB {
            &self.stub_next
        } else {
            &self
                .table
                .slot(index)
                .expect("a queued slot's chunk is installed")
                .next
        }
    }

    /// Links `index` at the tail. `force` ignores the closed bit (the consumer's stub
    /// re-insertion must not fail on a closed queue).
    fn push_index(&self, index: u32, force: bool) -> Result<(), ()> {
        // A reserved slot's link is NIL already (`Table::reserve`); the stub's is reset.
        if index == STUB {
            // Relaxed: published with the node by the AcqRel CAS below.
            self.stub_next.store(NIL, Ordering::Relaxed);
        }
        // Relaxed: a first guess; the CAS decides.
        let mut tail = self.tail.load(Ordering::Relaxed);
        // The consumer's stub re-insertion is not a request: it leaves the count alone.
        let count = if force { 0 } else { PUSH };
        let prev = loop {
            if low(tail) & CLOSED != 0 && !force {
                return Err(());
            }
            let swung = (tail & !u64::from(u32::MAX)).wrapping_add(count)
                | u64::from(index | (low(tail) & CLOSED));
            match self.tail.compare_exchange_weak(
                tail,
                swung,
                // AcqRel: Release pairs with the Acquire of the next pusher's CAS (which then
                // writes our `next`): our node's NIL store (above, or in `reserve`) is
                // ordered before its link, so the link is not overwritten by the NIL.
                // Acquire is the same pairing with the previous pusher, whose node's `next`
                // we write below.
                Ordering::AcqRel,
                // Relaxed on failure: retried; nothing read through it.
                Ordering::Relaxed,
            ) {
                Ok(_) => break low(tail) & !CLOSED,
                Err(actual) => tail = actual,
            }
        };
        // Release: pairs with the Acquire loads of `next` in `pop`: the payload and state
        // written before this push happen before the consumer reads them.
        self.next_of(prev).store(index, Ordering::Release);
        Ok(())
    }
}

/// The push side: cheap to clone, `Send + Sync`, never blocks (lock-free: a push retries its
/// CAS only when another push or the close won).
pub struct Producer<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for Producer<P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// The pop side: exactly one per queue.
pub struct Consumer<P> {
    inner: Arc<Inner<P>>,
    /// The oldest node still in the chain (the stub or the last one popped's successor).
    head: u32,
    /// Requests popped so far.
    popped: u64,
}

/// A new open queue over `table`'s slots.
pub fn queue<P: Copy>(table: Arc<Table<P>>) -> (Producer<P>, Consumer<P>) {
    let inner = Arc::new(Inner {
        table,
        tail: AtomicU64::new(STUB as u64),
        stub_next: AtomicU32::new(NIL),
    });
    (
        Producer {
            inner: Arc::clone(&inner),
        },
        Consumer {
            inner,
            head: STUB,
            popped: 0,
        },
    )
}

impl<P: Copy> Producer<P> {
    /// Queues a reserved slot; its handle names the request from now on. Fails with the
    /// slot back if the queue is closed (give it back with [`Table::unreserve`]).
    pub fn push(&self, reserved: Reserved) -> Result<RequestHandle, Closed> {
        let handle = reserved.handle;
        match self.inner.push_index(handle.index(), false) {
            Ok(()) => Ok(handle),
            Err(()) => Err(Closed(reserved)),
        }
    }

    /// Closes the queue: every later push fails. Idempotent.
    pub fn close(&self) {
        close(&self.inner);
    }

    /// The table this queue links.
    pub fn table(&self) -> &Table<P> {
        &self.inner.table
    }
}

fn close<P>(inner: &Inner<P>) {
    // Relaxed: the RMW sits in `tail`'s single modification order with every push's CAS,
    // which is all the close guarantee needs (a push ordered after it sees the bit and
    // fails); the consumer's drain reads the chain through `next`'s Release/Acquire, not
    // through this.
    inner.tail.fetch_or(u64::from(CLOSED), Ordering::Relaxed);
}

impl<P: Copy> Consumer<P> {
    /// Takes the oldest request, or says the queue is empty or a push is mid-link.
    ///
    /// Always inlined: returned through memory, the entry was read back wider than it had
    /// been written (a store-forwarding stall per request drained).
    #[inline(always)]
    pub fn pop(&mut self) -> Pop {
        let inner = &*self.inner;
        let mut head = self.head;
        // Acquire: pairs with the Release link store in `push_index` of the node after
        // `head`, whose push CAS acquired `head`'s push (the tail's AcqRel chain): when we
        // return `head` on this load, its payload and state happen before we use them. (On
        // the stub, it is the link of the first node we return.)
        let mut next = inner.next_of(head).load(Ordering::Acquire);
        if head == STUB {
            if next == NIL {
                // Relaxed: a state check; nothing is read through it.
                let tail = low(inner.tail.load(Ordering::Relaxed)) & !CLOSED;
                return if tail == STUB { Pop::Empty } else { Pop::Busy };
            }
            // Skip the stub.
            self.head = next;
            head = next;
            // Acquire: pairs with the Release link store in `push_index` of `head`'s
            // successor. Its payload would be acquired when it is returned, but the next
            // `pop` finds its `next` through its chunk pointer first: that chunk may have
            // been installed by its producer alone (a chunk its shard claimed), and the
            // link is what orders the install before our look-up.
            next = inner.next_of(head).load(Ordering::Acquire);
        }
        if next != NIL {
            self.head = next;
            return Pop::Item(self.take(head));
        }
        // `head` is the last linked node. If it is not the tail, a producer has swung the
        // tail past it and not linked yet.
        // Relaxed: a state check; a stale tail only makes us re-insert the stub, which is
        // correct at any moment (Vyukov's algorithm).
        let tail = low(inner.tail.load(Ordering::Relaxed)) & !CLOSED;
        if head != tail {
            return Pop::Busy;
        }
        // Re-insert the stub behind `head` so `head` can leave the chain. Its AcqRel CAS
        // reads the tail at or after `head`'s push, so it also acquires `head`'s payload.
        let _ = inner.push_index(STUB, true);
        // Relaxed: `head` is covered by the CAS just above. What follows it is the stub, or
        // a producer's node whose push swung the tail before our CAS did (it expected
        // `head` there and linked after it): our AcqRel CAS read that push's value or a
        // later one of the tail's RMWs, so the producer's install of the node's chunk
        // and its payload are already ours when the next `pop` looks the node up.
        next = inner.next_of(head).load(Ordering::Relaxed);
        if next != NIL {
            self.head = next;
            return Pop::Item(self.take(head));
        }
        // A producer swung the tail between our check and the stub push, and has not
        // linked yet.
        Pop::Busy
    }

    /// Takes the oldest request of a queue that is closed, waiting out a producer that is
    /// between its tail swap and its link (bounded: it links a few instructions later and
    /// never blocks in between). `None` once everything pushed before the close is taken.
    pub fn pop_closed(&mut self) -> Option<Entry> {
        debug_assert!(self.is_closed(), "pop_closed on an open queue");
        loop {
            match self.pop() {
                Pop::Item(e) => return Some(e),
                Pop::Empty => return None,
                Pop::Busy => crate::sync::yield_now(),
            }
        }
    }

    /// Whether nothing is queued: no request left to pop and no push mid-link.
    pub fn is_empty(&self) -> bool {
        let inner = &*self.inner;
        // Relaxed (both): a state check for the invariant checker, run by the consumer
        // between steps; a push racing it may or may not be counted, as with any snapshot.
        self.head == STUB
            && inner.stub_next.load(Ordering::Relaxed) == NIL
            && low(inner.tail.load(Ordering::Relaxed)) & !CLOSED == STUB
    }

    /// Requests in the queue: pushed (their tail swung) and not yet popped, including any
    /// between their swing and their link.
    pub fn len(&self) -> u64 {
        // Relaxed: a count. Every request we popped was acquired through its link, which
        // its push's CAS happens before, so this load reads a count that includes it
        // (coherence): pushes less pops never goes below zero. Pushes racing the load
        // may or may not be counted, as with any snapshot.
        let pushed = (self.inner.tail.load(Ordering::Relaxed) >> 32) as u32;
        u64::from(pushed.wrapping_sub(self.popped as u32))
    }

    /// Starts loading the node the next [`pop`](Self::pop) reads (a hint that changes no
    /// state). A producer on another core wrote that node last, so a drain
    /// that pops queue after queue waits for each node in turn; one that takes a request
    /// from each queue in rotation and hints the next node of each has their loads in
    /// flight together.
    #[inline]
    pub fn prefetch_next(&self) {
        if self.head != STUB {
            self.inner.table.prefetch(self.head);
        }
    }

    /// Requests popped so far.
    pub fn popped(&self) -> u64 {
        self.popped
    }

    /// Closes the queue (as [`Producer::close`]).
    pub fn close(&self) {
        close(&self.inner);
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        // Relaxed: a flag only; `pop_closed` reads the chain through `next`.
        low(self.inner.tail.load(Ordering::Relaxed)) & CLOSED != 0
    }

    /// The table this queue links.
    pub fn table(&self) -> &Table<P> {
        &self.inner.table
    }

    /// The popped request at `index`, counted.
    fn take(&mut self, index: u32) -> Entry {
        self.popped += 1;
        self.entry(index)
    }

    fn entry(&self, index: u32) -> Entry {
        let slot = self
            .inner
            .table
            .slot(index)
            .expect("a queued slot's chunk is installed");
        // Relaxed: the Acquire on the link that led here ordered the producer's writes,
        // including this word, before us; and only the consumer frees (changes the
        // generation).
        let generation = slot.generation_relaxed();
        Entry {
            handle: RequestHandle::new(index, generation),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ingress::table::FreeBatch;

    fn items(c: &mut Consumer<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Pop::Item(e) = c.pop() {
            out.push(c.table().payload(&e));
        }
        out
    }

    #[test]
    fn fifo_through_many_rounds() {
        let t = Arc::new(Table::new(8, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        assert_eq!(c.pop(), Pop::Empty);
        let mut batch = FreeBatch::new();
        for round in 0..5u32 {
            for i in 0..8 {
                p.push(t.reserve(0, round * 10 + i).unwrap()).unwrap();
            }
            assert!(t.reserve(0, 0).is_err());
            for i in 0..8 {
                let Pop::Item(e) = c.pop() else {
                    panic!("item expected")
                };
                assert_eq!(t.payload(&e), round * 10 + i);
                t.free(&mut batch, e);
            }
            assert_eq!(c.pop(), Pop::Empty);
            t.release(0, &mut batch);
        }
    }

    #[test]
    fn the_handle_pushed_is_the_handle_popped() {
        let t = Arc::new(Table::new(4, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        let h = p.push(t.reserve(0, 1).unwrap()).unwrap();
        let Pop::Item(e) = c.pop() else { panic!() };
        assert_eq!(e.handle(), h);
    }

    #[test]
    fn a_half_done_push_is_busy_not_lost() {
        let t = Arc::new(Table::new(4, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        p.push(t.reserve(0, 1).unwrap()).unwrap();
        // Simulate a producer that swung the tail to slot 1 and has not linked yet.
        let r = t.reserve(0, 2).unwrap();
        let idx = r.handle().index();
        let inner = &*p.inner;
        inner.next_of(idx).store(NIL, Ordering::Relaxed);
        // Relaxed here and below: a single-threaded test standing in for a producer.
        let old = inner.tail.load(Ordering::Relaxed);
        inner.tail.store(
            (old & !u64::from(u32::MAX)) + PUSH + u64::from(idx),
            Ordering::Relaxed,
        );
        let prev = low(old);
        assert_eq!(c.len(), 2, "counted at its swing, before its link");
        // Slot 0 is the last linked node and the tail has moved past it: it cannot leave
        // the chain until the link lands (Vyukov's queue holds back that one node).
        assert_eq!(c.pop(), Pop::Busy);
        assert_eq!(c.pop(), Pop::Busy, "still busy, no spinning");
        inner.next_of(prev).store(idx, Ordering::Relaxed);
        assert_eq!(items(&mut c), vec![1, 2]);
        assert_eq!(c.pop(), Pop::Empty);
        assert_eq!((c.len(), c.popped()), (0, 2));
    }

    #[test]
    fn len_counts_pushes_less_pops_across_the_count_wrapping() {
        let t = Arc::new(Table::new(4, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        // Start the push count just below 2^32 (the consumer's pops start at 0: pretend
        // it popped as many, mod 2^32).
        let start = u32::MAX - 1;
        p.inner.tail.store(
            (u64::from(start) << 32) | u64::from(STUB),
            Ordering::Relaxed,
        );
        c.popped = u64::from(start);
        let mut batch = FreeBatch::new();
        for i in 0..3 {
            p.push(t.reserve(0, i).unwrap()).unwrap();
            assert_eq!(c.len(), 1, "one in the queue, push {i}");
            let Pop::Item(e) = c.pop() else {
                panic!("item")
            };
            assert_eq!(c.len(), 0);
            t.free(&mut batch, e);
            t.release(0, &mut batch);
        }
        p.push(t.reserve(0, 9).unwrap()).unwrap();
        p.push(t.reserve(0, 9).unwrap()).unwrap();
        assert_eq!(c.len(), 2);
        p.close();
        assert!(p.push(t.reserve(0, 9).unwrap()).is_err());
        assert_eq!(c.len(), 2, "a refused push is not counted");
    }

    #[test]
    fn close_refuses_later_pushes_and_keeps_earlier_ones() {
        let t = Arc::new(Table::new(4, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        p.push(t.reserve(0, 1).unwrap()).unwrap();
        p.push(t.reserve(0, 2).unwrap()).unwrap();
        p.close();
        assert!(c.is_closed());
        let r = t.reserve(0, 3).unwrap();
        let h = r.handle();
        let Err(Closed(back)) = p.push(r) else {
            panic!("closed")
        };
        assert_eq!(back.handle(), h);
        t.unreserve(0, back);
        let mut got = Vec::new();
        while let Some(e) = c.pop_closed() {
            got.push(t.payload(&e));
        }
        assert_eq!(got, vec![1, 2]);
        assert_eq!(c.pop(), Pop::Empty);
    }

    #[test]
    fn producers_on_threads_lose_nothing_and_keep_their_order() {
        let t = Arc::new(Table::<u32>::new(4096, 2));
        let (p, mut c) = queue(Arc::clone(&t));
        let per = if cfg!(miri) { 50 } else { 1000u32 };
        let threads: Vec<_> = (0..2u32)
            .map(|k| {
                let p = p.clone();
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..per {
                        p.push(t.reserve(k as usize, k * per + i).unwrap()).unwrap();
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut batch = FreeBatch::new();
        while got.len() < 2 * per as usize {
            match c.pop() {
                Pop::Item(e) => {
                    got.push(t.payload(&e));
                    t.free(&mut batch, e);
                }
                Pop::Empty | Pop::Busy => std::thread::yield_now(),
            }
        }
        for j in threads {
            j.join().unwrap();
        }
        assert_eq!(c.pop(), Pop::Empty);
        for k in 0..2 {
            let mine: Vec<u32> = got.iter().copied().filter(|v| v / per == k).collect();
            let want: Vec<u32> = (k * per..(k + 1) * per).collect();
            assert_eq!(mine, want, "producer {k}'s requests, each once, in order");
        }
    }
}
