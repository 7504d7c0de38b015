//! The request table: per-request state in slots addressed by a dense `u32` index, each with
//! a generation, so a request is named by a small `Copy` [`RequestHandle`] instead of an id looked
//! up in a map.
//!
//! # Storage
//!
//! Slots live in chunks of [`CHUNK`] slots. The table holds a fixed array of chunk pointers
//! sized for its capacity (given at construction); a chunk is allocated by the first producer
//! that needs one of its slots and installed by compare-and-swap (a loser frees its
//! allocation and uses the winner's). Nothing is allocated for capacity never used. Chunks
//! are freed only when the table is dropped, so a `&Slot` stays valid for the table's life.
//!
//! # The state word
//!
//! Each slot has one `AtomicU64`: the generation in the high 32 bits and the ticket bits of
//! `src/ticket.rs` in the low 32 (phase in bits 0–2, `NOTIFY` in bit 3, requested class + 1
//! in bits 4–7), plus one more phase, `FREE`, for a slot nobody holds. Every API-side change
//! is a CAS on the whole word, so a CAS made with a stale handle's generation fails: an API
//! thread that read the word, lost the CPU while the slot was freed and reused, and then
//! CASes cannot touch the new occupant.
//!
//! Freeing a slot bumps its generation (wrapping after 2^32 reuses of one slot; a handle
//! would have to be held across all of them to alias). Each table starts its slots at its
//! own generation, so a handle from another table is refused too (except with probability
//! about 2^-32).
//!
//! # Free slots
//!
//! The consumer frees slots into a [`FreeBatch`] (linked through the slots' `next` field)
//! and returns the batch with one CAS onto a Treiber stack. The table has one stack per
//! shard so producers of different shards stay off one cache line. A stack head is a tagged
//! word: slot index in the low 32 bits, a tag bumped by every push and pop in the high 32
//! (the ABA guard: a pop that read a head, slept while it was popped and pushed back, fails
//! its CAS because the tag moved). A producer takes a slot from its shard's stack, else
//! another shard's stack, else a never-used slot, else the table is full.
//!
//! # Never-used slots
//!
//! Each shard hands out never-used slots from a chunk of its own, through a cursor (the
//! chunk and the next offset in it): when its chunk is out, the producer that finds it so
//! claims the next chunk of the table (a shared counter, one RMW per 1,024 slots) and
//! makes it the shard's. Chunks are claimed in order of need, so slot indices stay dense
//! (one producer thread uses chunks 0, 1, 2, ...; the scheduler's per-slot arrays stay as
//! short as the table). Once every chunk is claimed, a producer takes what other shards'
//! chunks still hold, so the table is full only when every slot is held, or the last
//! chunks are claimed by producers that have not yet made them their shard's (a few
//! instructions: the claim, then the cursor's CAS) or given back what they do not take. A
//! producer that claimed a chunk while another of its shard installed one first keeps its
//! range and puts the rest of its chunk on the shard's free stack. The chunk is installed,
//! its slots initialised, by the producer that first takes a range in it: with one producer
//! thread per shard every line of the chunk is written by the core that then writes the
//! requests into it, not moved over from another producer's core.
//!
//! A producer thread that keeps a [`FreshRange`] ([`Table::reserve_from`]) takes its
//! never-used slots [`FRESH_BATCH`] at a time (never across a chunk's end), so a growing
//! table is not one counter every producer bumps per submit; it uses them right after its
//! own stack, and gives back what it leaves ([`Table::give_back`]).
//!
//! # Ownership tokens
//!
//! Who may write a slot's payload or free it is carried by non-`Copy` tokens: [`Reserved`]
//! (a producer's freshly allocated slot, consumed by a push or given back) and [`Entry`]
//! (the consumer's popped request, consumed by [`Table::free`]). So a slot cannot be freed
//! twice or written by two producers without `unsafe`.

use crate::class::Class;
pub use crate::request::RequestHandle;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, UnsafeCell};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;

/// Slots per chunk. Two under loom, so a model reaches a second chunk.
pub const CHUNK: usize = if cfg!(loom) { 2 } else { 1024 };

/// "No slot": the end of a link or an empty stack.
pub(crate) const NIL: u32 = u32::MAX;

/// How far down its free chain a freed slot names another (`Slot::home_or_ahead`): a
/// producer that pops a slot starts loading the one this far ahead, so in a steady state
/// each reused slot's line (last written on the consumer's core) is on its way this many
/// submits before it is needed, not one.
const AHEAD: usize = 4;

/// The most never-used slots a producer thread takes at once ([`Table::reserve_from`]).
pub const FRESH_BATCH: u32 = if cfg!(loom) { 2 } else { 32 };

/// Never-used slot indices `next..end` that one producer thread took from the table at
/// once and holds alone ([`Table::reserve_from`]); empty by default. All in one chunk,
/// installed before the table handed the range out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FreshRange {
    next: u32,
    end: u32,
}

impl FreshRange {
    /// No slots.
    pub const EMPTY: Self = Self { next: 0, end: 0 };

    /// The next index, if any is left.
    fn take(&mut self) -> Option<u32> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Slots left.
    pub fn len(&self) -> u32 {
        self.end.saturating_sub(self.next)
    }

    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The largest capacity a table accepts: indices stay below `2^31 - 2` so the ingress queue
/// can keep a closed bit and a stub index above them.
pub const MAX_CAPACITY: u32 = (1 << 31) - 2;

const PHASE_MASK: u64 = 0b111;
/// Waiting (in an ingress queue or the wait queue).
pub const QUEUED: u32 = 0;
/// Admitted and running on the engine.
pub const RUNNING: u32 = 1;
/// Cancelled while waiting; the consumer has yet to reap it.
pub const CANCEL_QUEUED: u32 = 2;
/// Cancelled while running; the consumer has yet to abort it.
pub const CANCEL_RUNNING: u32 = 3;
/// Ended; the consumer has yet to free the slot.
pub const DONE: u32 = 4;
/// Held by nobody: never used, or freed.
pub const FREE: u32 = 5;
const NOTIFY: u64 = 1 << 3;
const CLASS_SHIFT: u32 = 4;
const CLASS_MASK: u64 = 0xF << CLASS_SHIFT;
const GEN_SHIFT: u32 = 32;

fn phase(word: u64) -> u32 {
    (word & PHASE_MASK) as u32
}

fn generation(word: u64) -> u32 {
    (word >> GEN_SHIFT) as u32
}

/// A slot a producer has allocated and filled, not yet pushed; its link (`next`) is `NIL`,
/// so the push need not write it. Push it
/// ([`super::mpsc::Producer::push`]) or give it back ([`Table::unreserve`]); dropping it
/// leaks the slot until the table is dropped.
#[must_use = "a reserved slot is lost unless pushed or given back"]
#[derive(Debug, PartialEq, Eq)]
pub struct Reserved {
    pub(crate) handle: RequestHandle,
}

impl Reserved {
    /// The handle the request will have.
    pub fn handle(&self) -> RequestHandle {
        self.handle
    }
}

/// A request the consumer has popped and now owns: it may read the payload and, once the
/// request has ended, free the slot ([`Table::free`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub(crate) handle: RequestHandle,
}

impl Entry {
    /// A token naming no slot, for entries kept outside any table (the standalone queue's).
    /// No table operation may be given it.
    pub(crate) fn detached() -> Self {
        Self {
            handle: RequestHandle::new(NIL, 0),
        }
    }

    /// The request's handle.
    pub fn handle(&self) -> RequestHandle {
        self.handle
    }
}

/// What an API-side change did, when it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The phase the change saw (`QUEUED` or `RUNNING`).
    pub phase: u32,
    /// Whether the caller set `NOTIFY` and so must push a notice.
    pub must_notify: bool,
}

/// Why an API-side change by handle did not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TicketError {
    /// The handle is stale (its slot was freed, maybe reused) or names no slot.
    NotFound,
    /// The request is already cancelled.
    Cancelled,
    /// The request has reached its terminal outcome.
    Done,
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull {
    /// The table's capacity.
    pub capacity: u32,
}

/// One slot. Aligned to a cache line: the scheduler's slot (state, link, home and its
/// 48-byte payload) is exactly one line, so a request's hand-off between a producer's core
/// and the consumer's moves one line each way instead of the two a misaligned slot
/// straddles.
#[repr(align(64))]
pub(crate) struct Slot<P> {
    /// Generation and ticket bits (module docs).
    state: AtomicU64,
    /// Intrusive link: the next slot in an ingress queue or in a free stack/batch (a slot is
    /// in at most one of them at a time). Atomic because a producer popping a free stack
    /// may read it after another producer took the slot and relinked it (its CAS then fails).
    pub(crate) next: AtomicU32,
    /// While held: the free stack (shard) the slot was last reserved from, so the consumer
    /// returns it there: slots circulate within a shard, and a shard's producers find the
    /// slots their requests freed instead of growing the table. Written at `reserve`, read
    /// at `free`. While free: the slot [`AHEAD`] places further down its free chain (or
    /// `NIL`), written by the consumer's `free`, read by the producer that pops this slot
    /// as a prefetch hint only (a racing popper may read a new holder's shard instead and
    /// hint a wrong slot, which costs nothing).
    home_or_ahead: AtomicU32,
    /// Written by the producer that holds the [`Reserved`] token, before the push that
    /// publishes the slot; read by the consumer after the pop.
    payload: UnsafeCell<MaybeUninit<P>>,
}

impl<P> Slot<P> {
    /// The generation, read with `Relaxed` (the caller explains why that suffices).
    pub(crate) fn generation_relaxed(&self) -> u32 {
        // Relaxed: see the caller.
        generation(self.state.load(Ordering::Relaxed))
    }

    /// A free slot whose first occupant gets generation `first_generation`.
    fn new(first_generation: u32) -> Self {
        Self {
            state: AtomicU64::new((u64::from(first_generation) << GEN_SHIFT) | u64::from(FREE)),
            next: AtomicU32::new(NIL),
            home_or_ahead: AtomicU32::new(NIL),
            payload: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }
}

/// The request table. `P` is the payload a producer writes and the consumer reads (the
/// request's spec, arrival and configuration epoch in the scheduler).
pub struct Table<P> {
    /// One pointer per chunk, null until installed; each points at `CHUNK` slots.
    chunks: Box<[AtomicPtr<Slot<P>>]>,
    capacity: u32,
    /// Chunks claimed by shards so far: chunks `claimed..` hold only never-used slots and
    /// belong to no shard yet.
    claimed: CachePadded<AtomicU32>,
    /// Per shard: the chunk it hands never-used slots out of, plus one, in the high half (0:
    /// none yet), and the next offset in it in the low half; the chunk is out once the
    /// offset reaches its size. Each value is written once (chunks are claimed once,
    /// offsets only grow), so a CAS on it cannot be fooled by a value that came back.
    cursor: Box<[CachePadded<AtomicU64>]>,
    /// Per-shard free stacks: `tag << 32 | index` (module docs).
    free: Box<[CachePadded<AtomicU64>]>,
    /// The generation every slot starts at: different for each table made in a process, so
    /// a handle from another table (another scheduler) is refused like a stale one, except
    /// with probability about 2^-32.
    first_generation: u32,
}

/// Tables made so far in this process (see `Table::first_generation`).
static TABLES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

// SAFETY: payloads move from producer threads to the consumer (hence `P: Send`); each
// payload cell is written only by the holder of the slot's `Reserved` token and read only by
// the holder of its `Entry`, and the hand-offs between them (ingress queue, free stack) are
// Release/Acquire pairs, so no two threads access one cell concurrently.
unsafe impl<P: Send> Send for Table<P> {}
// SAFETY: as above; `&Table` hands out slots only through those tokens.
unsafe impl<P: Send> Sync for Table<P> {}

fn chunk_of(index: u32) -> (usize, usize) {
    (index as usize / CHUNK, index as usize % CHUNK)
}

/// Slots `offset .. offset + len` of chunk `c`.
fn range_in(c: u32, offset: u32, len: u32) -> FreshRange {
    let first = c * CHUNK as u32 + offset;
    FreshRange {
        next: first,
        end: first + len,
    }
}

impl<P: Copy> Table<P> {
    /// A table of up to `capacity` slots (at most [`MAX_CAPACITY`]) with `shards` free stacks
    /// (at least one). Allocates only the chunk-pointer array.
    pub fn new(capacity: u32, shards: usize) -> Self {
        assert!(
            capacity <= MAX_CAPACITY,
            "table capacity above MAX_CAPACITY"
        );
        let n_chunks = (capacity as usize).div_ceil(CHUNK);
        let shards = shards.max(1);
        Self {
            chunks: (0..n_chunks)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            capacity,
            claimed: CachePadded::new(AtomicU32::new(0)),
            cursor: (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            free: (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(u64::from(NIL))))
                .collect(),
            // Relaxed: only distinctness matters. The multiplier (odd, about 2^32 / φ)
            // spreads consecutive tables' generations far apart.
            first_generation: TABLES
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9),
        }
    }

    /// The most slots the table holds.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// The number of free stacks.
    pub fn shards(&self) -> usize {
        self.free.len()
    }

    /// Chunks allocated so far.
    pub fn chunks_allocated(&self) -> usize {
        self.chunks
            .iter()
            // Relaxed: a statistic; no slot is reached through it.
            .filter(|c| !c.load(Ordering::Relaxed).is_null())
            .count()
    }

    /// Where slot `index` lives, if its chunk is installed, its chunk pointer loaded with
    /// `order` (the caller says why that order).
    fn slot_ptr(&self, index: u32, order: Ordering) -> Option<*mut Slot<P>> {
        let (c, off) = chunk_of(index);
        let ptr = self.chunks.get(c)?.load(order);
        // `off < CHUNK`: within the chunk's allocation.
        (!ptr.is_null()).then(|| ptr.wrapping_add(off))
    }

    /// The slot at `index`, if its chunk is installed.
    pub(crate) fn slot(&self, index: u32) -> Option<&Slot<P>> {
        // Acquire: pairs with the Release CAS in `install`: the chunk's slots are
        // initialised before we touch them.
        let ptr = self.slot_ptr(index, Ordering::Acquire)?;
        // SAFETY: a non-null chunk pointer points at `CHUNK` initialised slots that stay
        // allocated until the table is dropped (which needs `&mut self`), and `slot_ptr`
        // stepped less than `CHUNK` slots into it.
        Some(unsafe { &*ptr })
    }

    /// Starts loading slot `index` (see [`crate::prefetch`]); nothing for `NIL`, an index
    /// past the capacity or in a chunk not installed. Nothing under loom: a hint orders
    /// nothing, and the load would only widen the models.
    #[inline(always)]
    pub(crate) fn prefetch(&self, index: u32) {
        // Relaxed: only an address for a hint; nothing is read through it.
        #[cfg(not(loom))]
        if let Some(ptr) = self.slot_ptr(index, Ordering::Relaxed) {
            crate::prefetch::prefetch(ptr);
        }
        #[cfg(loom)]
        let _ = index;
    }

    /// The slot at `index`, which the caller knows is allocated (it holds a token for it or
    /// found it in a link).
    fn slot_held(&self, index: u32) -> &Slot<P> {
        self.slot(index).expect("a held slot's chunk is installed")
    }

    /// Installs chunk `c` if nobody has yet.
    fn install(&self, c: usize) {
        // Relaxed: only a fast check; `slot` re-loads with Acquire before any access.
        if !self.chunks[c].load(Ordering::Relaxed).is_null() {
            return;
        }
        let fresh: Box<[Slot<P>]> = (0..CHUNK)
            .map(|_| Slot::new(self.first_generation))
            .collect();
        let raw = Box::into_raw(fresh) as *mut Slot<P>;
        match self.chunks[c].compare_exchange(
            std::ptr::null_mut(),
            raw,
            // Release: pairs with the Acquire load in `slot`: the slots' initialisation
            // happens before any thread that finds the pointer uses them.
            Ordering::Release,
            // Relaxed on failure: we use nothing of the winner's here; `slot` acquires it.
            Ordering::Relaxed,
        ) {
            Ok(_) => {}
            Err(_) => {
                // SAFETY: `raw` came from `Box::into_raw` of a `CHUNK`-slot boxed slice just
                // above and was never published (our CAS failed), so we own it alone.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(raw, CHUNK)) });
            }
        }
    }

    /// Producer: allocates a slot, writes `payload` into it and marks it `QUEUED` with a
    /// fresh generation. Tries shard `shard`'s free stack, then the other shards' stacks,
    /// then never-used slots: freed slots are reused before the table grows, so in a
    /// steady state it holds about as many slots as requests are live. Never blocks;
    /// lock-free.
    pub fn reserve(&self, shard: usize, payload: P) -> Result<Reserved, TableFull> {
        self.reserve_in(shard, payload, None)
    }

    /// Producer: [`reserve`](Self::reserve) for a thread that keeps never-used slots of its
    /// own in `fresh`: after shard `shard`'s free stack it takes from `fresh`, and when the
    /// table must grow it refills `fresh` with up to [`FRESH_BATCH`] slots at once (one RMW
    /// on a shard's cursor of never-used slots for all of them). The thread gives what it
    /// leaves back with [`give_back`](Self::give_back).
    #[inline]
    pub fn reserve_from(
        &self,
        shard: usize,
        payload: P,
        fresh: &mut FreshRange,
    ) -> Result<Reserved, TableFull> {
        self.reserve_in(shard, payload, Some(fresh))
    }

    #[inline(always)]
    fn reserve_in(
        &self,
        shard: usize,
        payload: P,
        mut fresh: Option<&mut FreshRange>,
    ) -> Result<Reserved, TableFull> {
        let n = self.free.len();
        // Submit passes a shard below `n` already: no division on its path.
        let home = if shard < n { shard } else { shard % n };
        // The common cases inline (a freed slot of the home shard, or one of the thread's
        // never-used ones), so the payload is stored into the slot where it was computed:
        // passed on to a call, it was read back from the stack over the narrower stores
        // that wrote it (a missed store forwarding). A held range's chunk is installed.
        let index = match self
            .pop_free(home)
            .or_else(|| fresh.as_deref_mut().and_then(|r| r.take()))
        {
            Some(index) => index,
            None => self.reserve_slow(home, fresh)?,
        };
        let slot = self.slot_held(index);
        // Relaxed: read by the consumer after it pops the slot, through the ingress
        // queue's Release/Acquire like the payload (or by our own `unreserve`).
        slot.home_or_ahead.store(home as u32, Ordering::Relaxed);
        // Relaxed: a reserved slot's link is NIL, ready to be an ingress queue's last node
        // (the push relies on it); the push's Release CAS publishes it with the slot.
        slot.next.store(NIL, Ordering::Relaxed);
        // SAFETY: we took `index` from a free stack or a shard's cursor of never-used
        // slots, so no other thread holds it: the consumer's last read of the payload
        // happened before it pushed the slot on the stack (Release there, Acquire in
        // `pop_free`), and nobody reads it until we push it.
        slot.payload.with_mut(|p| unsafe { (*p).write(payload) });
        // Relaxed: we own the slot, so the word can only have been written by the consumer's
        // `free`, which happened before (through the free stack's Release/Acquire, or it is
        // the initial value published with the chunk).
        let gen = generation(slot.state.load(Ordering::Relaxed));
        // Relaxed: the word publishes nothing; the consumer sees it (and the payload) through
        // the ingress queue's Release/Acquire, and an API thread that gets the handle from
        // us gets it through its own synchronisation.
        slot.state.store(
            (u64::from(gen) << GEN_SHIFT) | u64::from(QUEUED),
            Ordering::Relaxed,
        );
        Ok(Reserved {
            handle: RequestHandle {
                index,
                generation: gen,
            },
        })
    }

    /// The rest of [`reserve_in`](Self::reserve_in)'s search, once the home free stack and
    /// the thread's never-used slots are out: the other shards' free stacks, then never-used
    /// slots from the shards' cursors (refilling `fresh` if the thread keeps some).
    #[cold]
    #[inline(never)]
    fn reserve_slow(&self, home: usize, fresh: Option<&mut FreshRange>) -> Result<u32, TableFull> {
        let n = self.free.len();
        (1..n)
            .find_map(|k| self.pop_free((home + k) % n))
            .or_else(|| match fresh {
                Some(r) => {
                    *r = self.never_used_range(home, FRESH_BATCH)?;
                    r.take()
                }
                None => self.never_used_range(home, 1)?.take(),
            })
            .ok_or(TableFull {
                capacity: self.capacity,
            })
    }

    /// Up to `n` never-used slots (at least one) of one chunk: from shard `home`'s chunk,
    /// claiming it a new one when it is out, or else (every chunk claimed) from another
    /// shard's; `None` if there are none left. Their chunk is installed before they are
    /// returned, so a thread takes slots from a range it holds without a look at the chunk.
    fn never_used_range(&self, home: usize, n: u32) -> Option<FreshRange> {
        let shards = self.cursor.len();
        let range = self.take_never_used(home, n, true).or_else(|| {
            (1..shards).find_map(|k| self.take_never_used((home + k) % shards, n, false))
        })?;
        // A range never crosses its chunk's end: one chunk for all of it.
        self.install(chunk_of(range.next).0);
        Some(range)
    }

    /// Up to `n` never-used slots from shard `s`'s chunk; when that is out, a new chunk
    /// for the shard if `claim` and one is left (module docs).
    fn take_never_used(&self, s: usize, n: u32, claim: bool) -> Option<FreshRange> {
        let cursor = &self.cursor[s];
        // Relaxed, here and in the CASes: the cursor only has to hand each slot out once
        // (each CAS takes its slots from the value it replaces); the slots' memory is
        // published through the chunk pointer.
        let mut word = cursor.load(Ordering::Relaxed);
        loop {
            let (chunk, offset) = ((word >> 32) as u32, word as u32);
            if chunk > 0 {
                let size = self.chunk_size(chunk - 1);
                if offset < size {
                    let len = n.min(size - offset);
                    match cursor.compare_exchange_weak(
                        word,
                        word + u64::from(len),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Some(range_in(chunk - 1, offset, len)),
                        Err(actual) => {
                            word = actual;
                            continue;
                        }
                    }
                }
            }
            if !claim {
                return None;
            }
            let n_chunks = self.chunks.len() as u32;
            let c = self
                .claimed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    (c < n_chunks).then_some(c + 1)
                })
                .ok()?;
            let size = self.chunk_size(c);
            let len = n.min(size);
            let mine = range_in(c, 0, len);
            let claimed = (u64::from(c + 1) << 32) | u64::from(len);
            if cursor
                .compare_exchange(word, claimed, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                // Another producer of the shard moved the cursor first (it took slots or
                // installed a chunk of its own): chunk `c` is ours alone. Keep our range,
                // and give the rest to the shard's free stack rather than strand it.
                self.give_back(s, &mut range_in(c, len, size - len));
            }
            return Some(mine);
        }
    }

    /// Slots in chunk `c`: `CHUNK`, but for the table's last chunk when the capacity is not
    /// a multiple of it.
    fn chunk_size(&self, c: u32) -> u32 {
        (self.capacity - c * CHUNK as u32).min(CHUNK as u32)
    }

    /// Producer: gives back the never-used slots a thread kept in `fresh` (it turns to
    /// another scheduler or exits), onto free stack `shard`. Empties `fresh`.
    pub fn give_back(&self, shard: usize, fresh: &mut FreshRange) {
        let FreshRange { next, end } = std::mem::take(fresh);
        if next >= end {
            return;
        }
        // A range is one chunk's (claimed but maybe not installed yet, for the rest a
        // claim's loser gives back).
        self.install(chunk_of(next).0);
        for index in next..end {
            let link = if index + 1 < end { index + 1 } else { NIL };
            let slot = self.slot_held(index);
            // Relaxed: published by the Release CAS in `push_free`.
            slot.next.store(link, Ordering::Relaxed);
            // Relaxed: as `next`. Never-used slots are not in another core's cache: no
            // hint needed.
            slot.home_or_ahead.store(NIL, Ordering::Relaxed);
        }
        self.push_free(shard % self.free.len(), next, end - 1);
    }

    /// Pops a slot from free stack `s`.
    #[inline]
    fn pop_free(&self, s: usize) -> Option<u32> {
        let stack = &self.free[s];
        // Acquire: pairs with the Release CAS in `push_free` that put the head there (or
        // heads the release sequence a later pop's CAS continued): the head's `next` link,
        // its generation bump and the consumer's last payload read happen before our use.
        let mut head = stack.load(Ordering::Acquire);
        loop {
            let index = head as u32;
            if index == NIL {
                return None;
            }
            // Relaxed: ordered by the Acquire above. It may be stale if another producer
            // popped this slot meanwhile and relinked it; then the head's tag has moved and
            // our CAS fails.
            let slot = self.slot_held(index);
            let next = slot.next.load(Ordering::Relaxed);
            let tagged = (((head >> 32).wrapping_add(1)) << 32) | u64::from(next);
            match stack.compare_exchange_weak(
                head,
                tagged,
                // Relaxed on success: an unchanged tag means no push or pop since our
                // Acquire read of this very value, so we are already synchronised with it.
                Ordering::Relaxed,
                // Acquire on failure: we retry with the new head and read its `next`, as
                // for the first load.
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // The slot the next reserve from this stack takes, and the one
                    // `AHEAD` places down: the consumer freed them last, so their lines
                    // are in the consumer's cache; start the transfers ahead of need.
                    self.prefetch(next);
                    #[cfg(not(loom))]
                    {
                        // Relaxed: a hint; the slot is ours, its field as the consumer
                        // left it (ordered by the Acquire above).
                        let ahead = slot.home_or_ahead.load(Ordering::Relaxed);
                        self.prefetch(ahead);
                    }
                    return Some(index);
                }
                Err(actual) => head = actual,
            }
        }
    }

    /// Pushes the chain `first ..= last` (linked through `next`) onto free stack `s`.
    fn push_free(&self, s: usize, first: u32, last: u32) {
        let stack = &self.free[s];
        let last_slot = self.slot_held(last);
        // Relaxed: a first guess; the CAS decides.
        let mut head = stack.load(Ordering::Relaxed);
        loop {
            // Relaxed: published by the Release CAS below.
            last_slot.next.store(head as u32, Ordering::Relaxed);
            let tagged = (((head >> 32).wrapping_add(1)) << 32) | u64::from(first);
            match stack.compare_exchange_weak(
                head,
                tagged,
                // Release: pairs with the Acquire in `pop_free`: the links, the generation
                // bumps in `free` and our last reads of the payloads happen before a
                // producer that pops one of these slots writes it.
                Ordering::Release,
                // Relaxed on failure: we only relink to the new head and retry.
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => head = actual,
            }
        }
    }

    /// Producer: gives back a slot it reserved but could not push (e.g. the queue was
    /// closed). Its handle becomes stale.
    pub fn unreserve(&self, shard: usize, reserved: Reserved) {
        let index = reserved.handle.index;
        self.retire(index);
        let slot = self.slot_held(index);
        // Relaxed: published by the Release CAS in `push_free`.
        slot.next.store(NIL, Ordering::Relaxed);
        // Relaxed: as `next`; no slot ahead to name.
        slot.home_or_ahead.store(NIL, Ordering::Relaxed);
        self.push_free(shard % self.free.len(), index, index);
    }

    /// Bumps the slot's generation and marks it `FREE`.
    fn retire(&self, index: u32) {
        let slot = self.slot_held(index);
        // Relaxed: API threads only CAS this word, and a CAS expecting the old generation
        // now fails; the next producer reads it through the free stack's Release/Acquire.
        let word = slot.state.load(Ordering::Relaxed);
        let next_gen = generation(word).wrapping_add(1);
        // Relaxed, and a plain store: a racing API CAS expects the old word, so it fails
        // and re-reads this one (generation mismatch: `NotFound`).
        slot.state.store(
            (u64::from(next_gen) << GEN_SHIFT) | u64::from(FREE),
            Ordering::Relaxed,
        );
    }

    /// Consumer: the free stack the slot of `entry` was reserved from (below
    /// [`Table::shards`]), where [`Table::free`] should batch it.
    pub fn home(&self, entry: &Entry) -> usize {
        // Relaxed: written before the push that published the slot to us (see `reserve`).
        self.slot_held(entry.handle.index)
            .home_or_ahead
            .load(Ordering::Relaxed) as usize
    }

    /// Consumer: frees the slot of an ended request into `batch`. Its handle becomes stale
    /// at once; the slot returns to producers when the batch is released.
    pub fn free(&self, batch: &mut FreeBatch, entry: Entry) {
        let index = entry.handle.index;
        self.retire(index);
        let slot = self.slot_held(index);
        // Relaxed: published by the Release CAS in `push_free`.
        slot.next.store(batch.first, Ordering::Relaxed);
        // The chain runs from the latest freed to the first, so the slot `AHEAD` places
        // down it is the one freed `AHEAD` frees ago.
        let ring = batch.len % AHEAD;
        let ahead = if batch.len >= AHEAD {
            batch.recent[ring]
        } else {
            NIL
        };
        // Relaxed: as `next`.
        slot.home_or_ahead.store(ahead, Ordering::Relaxed);
        batch.recent[ring] = index;
        if batch.first == NIL {
            batch.last = index;
        }
        batch.first = index;
        batch.len += 1;
    }

    /// Consumer: returns a batch of freed slots to producers with one CAS on free stack
    /// `shard`. Empties the batch.
    pub fn release(&self, shard: usize, batch: &mut FreeBatch) {
        if batch.first != NIL {
            self.push_free(shard % self.free.len(), batch.first, batch.last);
        }
        *batch = FreeBatch::new();
    }

    /// Consumer: the payload of a request it owns.
    pub fn payload(&self, entry: &Entry) -> P {
        // SAFETY: `Entry` is only made by the consumer's pop, which acquired the producer's
        // payload write (ingress queue Release/Acquire), and the slot is not given to a
        // producer again until this entry is consumed by `free` and released.
        unsafe { self.read_payload(entry.handle.index) }
    }

    /// Reads slot `index`'s payload.
    ///
    /// # Safety
    ///
    /// The payload was written and its write happens before this call, and no producer
    /// holds the slot (the caller owns it as consumer).
    pub(crate) unsafe fn read_payload(&self, index: u32) -> P {
        // SAFETY: the caller guarantees the cell is initialised and not being written.
        self.slot_held(index)
            .payload
            .with(|p| unsafe { (*p).assume_init_read() })
    }

    /// The current word of a handle's slot, if the handle is current.
    fn current(&self, h: RequestHandle) -> Result<(&Slot<P>, u64), TicketError> {
        let slot = self.slot(h.index).ok_or(TicketError::NotFound)?;
        // Relaxed: the word carries no data but itself; every decision on it is re-checked
        // by a CAS on the whole word.
        let word = slot.state.load(Ordering::Relaxed);
        if generation(word) != h.generation || phase(word) == FREE {
            return Err(TicketError::NotFound);
        }
        Ok((slot, word))
    }

    /// Any thread: the request's phase, or `NotFound` if the handle is stale.
    pub fn phase(&self, h: RequestHandle) -> Result<u32, TicketError> {
        self.current(h).map(|(_, w)| phase(w))
    }

    /// API side: cancel. Exactly one of a racing cancel, admission, preemption, finish or
    /// free takes effect first; a stale handle is refused with `NotFound`.
    pub fn cancel(&self, h: RequestHandle) -> Result<Changed, TicketError> {
        self.update(h, |word| match phase(word) {
            QUEUED => Ok((word & !PHASE_MASK) | u64::from(CANCEL_QUEUED)),
            RUNNING => Ok((word & !PHASE_MASK) | u64::from(CANCEL_RUNNING)),
            CANCEL_QUEUED | CANCEL_RUNNING => Err(TicketError::Cancelled),
            _ => Err(TicketError::Done),
        })
    }

    /// API side: ask for a new class; the last writer wins until the consumer takes it.
    pub fn request_class(&self, h: RequestHandle, class: Class) -> Result<Changed, TicketError> {
        let bits = (class.index() as u64 + 1) << CLASS_SHIFT;
        self.update(h, |word| match phase(word) {
            QUEUED | RUNNING => Ok((word & !CLASS_MASK) | bits),
            CANCEL_QUEUED | CANCEL_RUNNING => Err(TicketError::Cancelled),
            _ => Err(TicketError::Done),
        })
    }

    /// The CAS loop of the API-side changes: checks the generation, applies `f`, sets
    /// `NOTIFY`. The generation is part of the CASed word, so a CAS prepared against an
    /// occupant that has since been freed fails and the retry reports `NotFound`.
    fn update(
        &self,
        h: RequestHandle,
        f: impl Fn(u64) -> Result<u64, TicketError>,
    ) -> Result<Changed, TicketError> {
        let (slot, mut word) = self.current(h)?;
        loop {
            if generation(word) != h.generation || phase(word) == FREE {
                return Err(TicketError::NotFound);
            }
            let next = f(word)? | NOTIFY;
            match slot.state.compare_exchange_weak(
                word,
                next,
                // Relaxed: the word's single modification order decides the race with the
                // consumer and with reuse; the change publishes no other data (the class
                // request is in the word itself).
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Changed {
                        phase: phase(word),
                        must_notify: word & NOTIFY == 0,
                    })
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Consumer: takes the pending notice of a request it owns (clears `NOTIFY`) and returns
    /// the phase and requested class as they were.
    ///
    /// A word read without `NOTIFY` is returned as read, with no write: the scheduler drains
    /// every request through here, and nearly none has a notice. That read may miss a change
    /// an API thread is making at that moment; such a change set `NOTIFY` and queued the
    /// handle, so the notice queue brings it to a later call, which reads the word again.
    /// (A notice popped before this call was popped by this thread, after the change that
    /// queued it, so this read sees that change's `NOTIFY`.)
    pub fn take_notice(&self, entry: &Entry) -> (u32, Option<Class>) {
        let state = &self.slot_held(entry.handle.index).state;
        // Relaxed: a value of the word's modification order no older than any this thread
        // has seen (coherence), which is all the paragraph above needs.
        let seen = state.load(Ordering::Relaxed);
        if seen & (NOTIFY | CLASS_MASK) == 0 {
            return (phase(seen), None);
        }
        // Relaxed: an RMW reads the latest word; nothing else is published through it.
        let word = state.fetch_and(!(NOTIFY | CLASS_MASK), Ordering::Relaxed);
        let class = match (word & CLASS_MASK) >> CLASS_SHIFT {
            0 => None,
            c => Some(Class::from_index((c - 1) as u8)),
        };
        (phase(word), class)
    }

    /// Consumer: moves a request it owns from phase `from` to `to` if it is still `from`;
    /// returns the phase found otherwise (a cancel won).
    pub fn transition(&self, entry: &Entry, from: u32, to: u32) -> Result<(), u32> {
        let slot = self.slot_held(entry.handle.index);
        // Relaxed: the RMW decides the race with `cancel` through the word's modification
        // order; no other data moves with it.
        slot.state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (phase(w) == from).then_some((w & !PHASE_MASK) | u64::from(to))
            })
            .map(|_| ())
            .map_err(phase)
    }

    /// Consumer: ends a request it owns whatever its phase; returns the phase it had.
    pub fn finish(&self, entry: &Entry) -> u32 {
        // Relaxed: as `transition`.
        let word = self
            .slot_held(entry.handle.index)
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some((w & !PHASE_MASK) | u64::from(DONE))
            })
            .unwrap_or_else(|w| w);
        phase(word)
    }
}

impl<P> Drop for Table<P> {
    fn drop(&mut self) {
        for c in self.chunks.iter() {
            // Relaxed: `&mut self`, no other thread can hold the table.
            let ptr = c.load(Ordering::Relaxed);
            if !ptr.is_null() {
                // SAFETY: installed pointers come from `Box::into_raw` of a `CHUNK`-slot
                // boxed slice; we are the last user (`&mut self`). Payloads are `Copy`
                // in every constructor (`Table<P: Copy>`), so nothing in them needs dropping.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, CHUNK)) });
            }
        }
    }
}

/// Freed slots the consumer collects during a step and returns in one CAS
/// ([`Table::release`]). Linked through the slots themselves: no allocation.
#[derive(Debug)]
pub struct FreeBatch {
    first: u32,
    last: u32,
    len: usize,
    /// The last `AHEAD` slots freed into the batch, at `len % AHEAD` (see `free`).
    recent: [u32; AHEAD],
}

impl FreeBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            first: NIL,
            last: NIL,
            len: 0,
            recent: [NIL; AHEAD],
        }
    }

    /// Slots in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for FreeBatch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn entry(r: Reserved) -> Entry {
        Entry { handle: r.handle }
    }

    /// A freed slot names the slot `AHEAD` places down its batch's chain (`NIL` for the
    /// last `AHEAD`), for the producer that pops it to prefetch.
    #[test]
    fn freed_slots_name_the_slot_ahead_in_their_chain() {
        let t = Table::<u32>::new(16, 1);
        let mut batch = FreeBatch::new();
        let mut freed = Vec::new();
        for v in 0..7 {
            let r = t.reserve(0, v).unwrap();
            freed.push(r.handle().index());
            t.free(&mut batch, entry(r));
        }
        // The chain runs from the last freed to the first.
        let chain: Vec<u32> = freed.iter().rev().copied().collect();
        for (i, &index) in chain.iter().enumerate() {
            let ahead = t.slot_held(index).home_or_ahead.load(Ordering::Relaxed);
            assert_eq!(
                ahead,
                chain.get(i + AHEAD).copied().unwrap_or(NIL),
                "at {i}"
            );
        }
        t.release(0, &mut batch);
        // Popped in chain order.
        for &index in &chain {
            assert_eq!(t.reserve(0, 0).unwrap().handle().index(), index);
        }
    }

    /// Each shard takes never-used slots from a chunk it claimed, claiming the next when it
    /// is out (chunks claimed in order of need: indices stay dense), ranges never cross a
    /// chunk's end, and once every chunk is claimed a shard takes what the others' chunks
    /// hold: every slot is handed out once before the table is full.
    #[test]
    fn shards_claim_chunks_in_order_of_need_then_take_each_others() {
        let shards = 3;
        // Four full chunks and a short fifth.
        let cap = 4 * CHUNK as u32 + 5;
        let t = Table::<u32>::new(cap, shards);
        let mut got = Vec::new();
        for (s, chunk) in [(0, 0), (2, 1), (1, 2)] {
            let r = t.reserve(s, 0).unwrap();
            assert_eq!(r.handle().index() as usize, chunk * CHUNK, "shard {s}");
            got.push(r.handle().index());
        }
        // Shard 2 takes ranges: the rest of its chunk 1, then chunks 3 and 4 (claimed in
        // turn), then what shards 0 and 1 hold.
        let mut fresh = FreshRange::EMPTY;
        let mut ranges = Vec::new();
        loop {
            let before = fresh.len();
            let Ok(r) = t.reserve_from(2, 0, &mut fresh) else {
                break;
            };
            if before == 0 {
                ranges.push((r.handle().index(), fresh.len() + 1));
            }
            got.push(r.handle().index());
        }
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), cap as usize, "every slot once, then full");
        let chunk = |i: u32| i as usize / CHUNK;
        let mut chunks: Vec<usize> = ranges.iter().map(|&(i, _)| chunk(i)).collect();
        chunks.dedup();
        assert_eq!(
            chunks,
            [1, 3, 4, 0, 2],
            "own chunks first, then the others'"
        );
        assert!(
            ranges.contains(&(4 * CHUNK as u32, 5)),
            "the short chunk, whole"
        );
        for &(first, len) in &ranges {
            assert_eq!(
                chunk(first),
                chunk(first + len - 1),
                "range at {first} of {len}"
            );
        }
        assert_eq!(t.chunks_allocated(), 5);
    }

    /// A thread's range: the own free stack first, then the range (one CAS on the shard's
    /// cursor for `FRESH_BATCH` slots), refilled when empty, cut short at the capacity;
    /// what is left goes back to the free stack and is handed out from there.
    #[test]
    fn fresh_ranges_are_taken_at_once_and_given_back() {
        let cap = FRESH_BATCH + 3;
        let t = Table::<u32>::new(cap, 1);
        let mut fresh = FreshRange::EMPTY;
        let a = t.reserve_from(0, 1, &mut fresh).unwrap();
        assert_eq!(a.handle().index(), 0);
        assert_eq!(fresh.len(), FRESH_BATCH - 1, "one CAS took the batch");
        // A plain reserve goes past the range: the shard's cursor is already beyond it.
        let b = t.reserve(0, 2).unwrap();
        assert_eq!(b.handle().index(), FRESH_BATCH);
        // A freed slot on the own stack is taken before the range.
        t.unreserve(0, a);
        let c = t.reserve_from(0, 3, &mut fresh).unwrap();
        assert_eq!(c.handle().index(), 0);
        assert_eq!(fresh.len(), FRESH_BATCH - 1);
        for i in 1..FRESH_BATCH {
            let r = t.reserve_from(0, 0, &mut fresh).unwrap();
            assert_eq!(r.handle().index(), i);
        }
        // Refilled, cut at the capacity: two slots left.
        let d = t.reserve_from(0, 4, &mut fresh).unwrap();
        assert_eq!((d.handle().index(), fresh.len()), (FRESH_BATCH + 1, 1));
        t.give_back(0, &mut fresh);
        assert!(fresh.is_empty());
        let e = t.reserve(0, 5).unwrap();
        assert_eq!(
            e.handle().index(),
            FRESH_BATCH + 2,
            "given back, handed out again"
        );
        assert_eq!(t.reserve(0, 6), Err(TableFull { capacity: cap }));
        assert_eq!(
            t.reserve_from(0, 6, &mut fresh),
            Err(TableFull { capacity: cap })
        );
    }

    #[test]
    fn handle_is_eight_bytes_and_slot_is_small() {
        assert_eq!(std::mem::size_of::<RequestHandle>(), 8);
        // State word, link, home and payload, padded to a line.
        assert_eq!(std::mem::size_of::<Slot<[u64; 5]>>(), 64);
        // The scheduler's payload (packed spec, arrival, epoch) fills a slot's line exactly.
        assert_eq!(std::mem::size_of::<crate::ingress::Payload>(), 48);
        assert_eq!(std::mem::size_of::<Slot<crate::ingress::Payload>>(), 64);
        assert_eq!(std::mem::align_of::<Slot<crate::ingress::Payload>>(), 64);
    }

    #[test]
    fn freed_slots_are_reused_before_the_table_grows() {
        let t = Table::new(4 * CHUNK as u32, 2);
        let mut batches = [FreeBatch::new(), FreeBatch::new()];
        // Shard 1's producer takes a slot; it is freed back to shard 1's stack.
        let first = entry(t.reserve(1, 0u32).unwrap());
        assert_eq!(t.home(&first), 1);
        let index = first.handle().index();
        t.free(&mut batches[t.home(&first)], first);
        t.release(1, &mut batches[1]);
        // Shard 0's producer finds its own stack empty and takes shard 1's slot rather
        // than a never-used one.
        let again = t.reserve(0, 0u32).unwrap();
        assert_eq!(again.handle().index(), index);
        assert_eq!(
            t.home(&entry(again)),
            0,
            "now homed at the shard that took it"
        );
        assert_eq!(t.chunks_allocated(), 1);
    }

    #[test]
    fn a_handle_from_another_table_is_refused() {
        let (a, b) = (Table::new(4, 1), Table::new(4, 1));
        let ha = a.reserve(0, 1u32).unwrap().handle();
        let hb = b.reserve(0, 2u32).unwrap().handle();
        assert_eq!(ha.index(), hb.index(), "the same slot in both tables");
        assert_ne!(ha, hb, "under different generations");
        assert_eq!(b.cancel(ha), Err(TicketError::NotFound));
        assert_eq!(a.cancel(hb), Err(TicketError::NotFound));
        assert_eq!(b.phase(hb), Ok(QUEUED));
    }

    #[test]
    fn chunks_are_allocated_on_demand() {
        let t = Table::<u64>::new(3 * CHUNK as u32, 1);
        assert_eq!(t.chunks_allocated(), 0);
        let r = t.reserve(0, 7).unwrap();
        assert_eq!(t.chunks_allocated(), 1);
        assert_eq!(t.payload(&entry(r)), 7);
        for _ in 1..CHUNK {
            let _ = t.reserve(0, 0).unwrap();
        }
        assert_eq!(t.chunks_allocated(), 1);
        let _ = t.reserve(0, 0).unwrap();
        assert_eq!(t.chunks_allocated(), 2);
    }

    #[test]
    fn full_at_capacity_and_freed_slots_come_back() {
        let t = Table::<u32>::new(3, 2);
        let rs: Vec<_> = (0..3).map(|i| t.reserve(0, i).unwrap()).collect();
        assert_eq!(t.reserve(0, 9), Err(TableFull { capacity: 3 }));
        let mut batch = FreeBatch::new();
        let freed: Vec<RequestHandle> = rs.iter().map(Reserved::handle).collect();
        for r in rs {
            t.free(&mut batch, entry(r));
        }
        assert_eq!(batch.len(), 3);
        // Freed but not released: still full.
        assert_eq!(t.reserve(0, 9), Err(TableFull { capacity: 3 }));
        // Released to shard 1's stack: a shard-0 producer falls back to it.
        t.release(1, &mut batch);
        assert!(batch.is_empty());
        let again: Vec<_> = (10..13).map(|i| t.reserve(0, i).unwrap()).collect();
        assert_eq!(t.reserve(0, 9), Err(TableFull { capacity: 3 }));
        let mut idx: Vec<u32> = again.iter().map(|r| r.handle.index).collect();
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2]);
        for (r, i) in again.into_iter().zip(10..) {
            let old = freed.iter().find(|h| h.index == r.handle.index).unwrap();
            assert_eq!(r.handle.generation, old.generation + 1);
            assert_eq!(t.payload(&entry(r)), i);
        }
    }

    #[test]
    fn a_stale_handle_never_touches_the_new_occupant() {
        let t = Table::<u32>::new(1, 1);
        let r = t.reserve(0, 1).unwrap();
        let old = r.handle();
        let mut batch = FreeBatch::new();
        t.free(&mut batch, entry(r));
        assert_eq!(t.cancel(old), Err(TicketError::NotFound), "freed");
        t.release(0, &mut batch);
        let r2 = t.reserve(0, 2).unwrap();
        assert_eq!(r2.handle.index, old.index);
        assert_eq!(t.cancel(old), Err(TicketError::NotFound));
        assert_eq!(t.request_class(old, Class::LOW), Err(TicketError::NotFound));
        assert_eq!(t.phase(old), Err(TicketError::NotFound));
        assert_eq!(t.phase(r2.handle()), Ok(QUEUED));
        assert_eq!(t.cancel(r2.handle()).unwrap().phase, QUEUED);
    }

    #[test]
    fn a_forged_handle_is_not_found() {
        let t = Table::<u32>::new(4 * CHUNK as u32, 1);
        let h = RequestHandle {
            index: 3 * CHUNK as u32,
            generation: 0,
        };
        assert_eq!(
            t.cancel(h),
            Err(TicketError::NotFound),
            "chunk not installed"
        );
        let h = RequestHandle {
            index: u32::MAX - 5,
            generation: 0,
        };
        assert_eq!(t.cancel(h), Err(TicketError::NotFound), "beyond capacity");
        let _r = t.reserve(0, 0).unwrap();
        let h = RequestHandle {
            index: 1,
            generation: 0,
        };
        assert_eq!(t.cancel(h), Err(TicketError::NotFound), "never-used slot");
    }

    #[test]
    fn ticket_semantics_follow_ticket_rs() {
        let t = Table::<u32>::new(2, 1);
        let e = entry(t.reserve(0, 0).unwrap());
        let h = e.handle();
        let c = t.cancel(h).unwrap();
        assert_eq!(
            c,
            Changed {
                phase: QUEUED,
                must_notify: true
            }
        );
        assert_eq!(t.cancel(h), Err(TicketError::Cancelled));
        assert_eq!(t.transition(&e, QUEUED, RUNNING), Err(CANCEL_QUEUED));
        assert_eq!(t.finish(&e), CANCEL_QUEUED);
        assert_eq!(t.cancel(h), Err(TicketError::Done));

        let e = entry(t.reserve(0, 0).unwrap());
        let h = e.handle();
        assert!(t.request_class(h, Class::LOW).unwrap().must_notify);
        assert!(!t.request_class(h, Class::HIGH).unwrap().must_notify);
        assert_eq!(t.take_notice(&e), (QUEUED, Some(Class::HIGH)));
        assert_eq!(t.take_notice(&e), (QUEUED, None));
        assert!(t.request_class(h, Class::LOW).unwrap().must_notify);
        t.transition(&e, QUEUED, RUNNING).unwrap();
        assert_eq!(t.cancel(h).unwrap().phase, RUNNING);
        assert_eq!(t.transition(&e, RUNNING, QUEUED), Err(CANCEL_RUNNING));
    }

    #[test]
    fn unreserve_makes_the_handle_stale_and_the_slot_reusable() {
        let t = Table::<u32>::new(1, 1);
        let r = t.reserve(0, 0).unwrap();
        let h = r.handle();
        t.unreserve(0, r);
        assert_eq!(t.cancel(h), Err(TicketError::NotFound));
        let r = t.reserve(0, 5).unwrap();
        assert_eq!(r.handle.index, h.index);
    }

    #[test]
    fn concurrent_reserve_and_release_hand_out_each_slot_once() {
        use std::sync::Arc;
        let t = Arc::new(Table::<u64>::new(64, 2));
        let threads: Vec<_> = (0..4)
            .map(|s| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let rounds = if cfg!(miri) { 10 } else { 200 };
                    for round in 0..rounds {
                        let mut mine = Vec::new();
                        while let Ok(r) = t.reserve(s, round) {
                            mine.push(r);
                            if mine.len() == 8 {
                                break;
                            }
                        }
                        let mut batch = FreeBatch::new();
                        for r in mine {
                            got.push(r.handle);
                            // Each thread frees only its own slots: a stand-in for the
                            // consumer here (the free stack is what is under test).
                            let e = entry(r);
                            assert_eq!(t.payload(&e), round);
                            t.free(&mut batch, e);
                        }
                        t.release(s, &mut batch);
                    }
                    got
                })
            })
            .collect();
        let mut all: Vec<RequestHandle> = threads
            .into_iter()
            .flat_map(|j| j.join().unwrap())
            .collect();
        let n = all.len();
        all.sort_by_key(|h| (h.index, h.generation));
        all.dedup();
        assert_eq!(all.len(), n, "a (slot, generation) was handed out twice");
    }
}
