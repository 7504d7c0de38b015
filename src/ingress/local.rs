//! What an API thread keeps between submits, for the scheduler it last submitted to: the
//! ingress shard it pushes to, its own copy of the submit limits (re-read from the shared
//! cell only after a reload published new ones), its pending capacity units and the
//! never-used table slots it holds.
//!
//! The limits live in a [`SwapCell`] (arc-swap), whose load costs a few atomic operations
//! of its own; a submit is otherwise three. So each thread caches the `Arc` it last loaded,
//! with a copy of the epoch inside it, and per submit only compares the cell's published
//! epoch (a Relaxed load of a line no producer writes) with that copy; the submit then
//! reads the limits where the cache holds them:
//!
//! * A reload stores the new limits, then their epoch. Epochs are distinct per stored
//!   value (+1 per applied reload).
//! * The cached value is judged by its own epoch, never by the epoch read next to it, so
//!   a cache can lag only while the published epoch differs from it: the next submit
//!   loads the cell again. No stale copy outlives a reload.
//! * A submit that happens after a reload returned reads that epoch or a later one
//!   (coherence), misses its cache and loads the cell, whose own Release/Acquire gives it
//!   the new limits. A submit racing the reload may use the old ones, as with the cell
//!   alone; the scheduler re-checks requests of an old epoch when it drains them.
//!
//! The cache is keyed by the cell's process-unique id, so a thread that submits to two
//! schedulers alternately reloads on each switch and never mixes their limits.
//!
//! Next to the limits the thread keeps its pending capacity units ([`Units`]: the units it
//! took from each class and has not yet added to the shared counts) and its view of each
//! shared count (see `super::capacity`). The units are added when they fill a batch, when
//! the thread turns to another scheduler and when it exits (the thread-local's
//! destructor). A submit that cannot use the cache (re-entrant, or this thread's locals
//! gone) takes units of its own, reads the shared counts, and adds its units when it ends.
//!
//! The thread also keeps the never-used table slots it took at once
//! ([`FreshRange`], `super::table`), so that a table growing under many producers is not
//! one shared counter bumped per submit; it gives them back to the table's free slots when
//! it turns to another scheduler or exits (through a weak reference: a table already
//! dropped needs nothing back).
//!
//! Under loom the cache is bypassed (one shard, the cell's load every time, units added at
//! the end of each submit): it adds no ordering to model.

use super::capacity::{ClassCount, Pending, Seen, UNSEEN};
use super::table::{FreshRange, Table};
use super::{Payload, SubmitLimits};
use crate::class::MAX_CLASSES;
use crate::sync::SwapCell;
#[cfg(not(loom))]
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Every class position's capacity count, shared by the scheduler and the threads holding
/// units of it.
pub(crate) type Counts = Arc<[ClassCount; MAX_CLASSES]>;

/// What every submit to one scheduler shares: the limits with their published epoch, the
/// capacity counts submits take units of, and the table threads give fresh slots back to.
pub(crate) struct Limits {
    cell: SwapCell<SubmitLimits>,
    /// The epoch of the value last stored in `cell`; written after it.
    epoch: AtomicU32,
    /// Unique per `Limits` in this process: the key of the threads' cached copies.
    #[cfg_attr(loom, allow(dead_code))]
    id: u64,
    counts: Counts,
    /// The request table, for the fresh slots a thread gives back.
    #[cfg_attr(loom, allow(dead_code))]
    table: std::sync::Weak<Table<Payload>>,
}

impl Limits {
    pub(crate) fn new(
        limits: SubmitLimits,
        counts: Counts,
        table: std::sync::Weak<Table<Payload>>,
    ) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            epoch: AtomicU32::new(limits.epoch),
            cell: SwapCell::new(Arc::new(limits)),
            // Relaxed: only uniqueness matters; the RMW gives it.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            counts,
            table,
        }
    }

    /// Publishes new limits (a reload, on the scheduler thread).
    pub(crate) fn store(&self, limits: Arc<SubmitLimits>) {
        let epoch = limits.epoch;
        self.cell.store(limits);
        // Relaxed: a hint that the cached copies are out of date. The copies are judged by
        // their own epoch, and the limits themselves are published by the cell (see the
        // module docs), so no data rides on this store.
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Per class position: requests waiting or in ingress, against `queue_capacity` (the
    /// threads' pending units aside: see `super::capacity`).
    pub(crate) fn counts(&self) -> &[ClassCount] {
        &self.counts[..]
    }

    /// Runs `f` on the limits in force, loaded from the shared cell (off the submit path).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&SubmitLimits) -> R) -> R {
        self.cell.with(|l| f(l))
    }

    /// This thread's shard among `n_shards` (a power of two), the limits in force and the
    /// thread's pending units of this scheduler, from the thread's cache when it holds this
    /// scheduler's entry. The cache is marked busy for the submit: its limits are read where
    /// they are (not moved out and back), its units and fresh slots are copied out and put
    /// back when the returned value drops. A re-entrant submit (say from a `tracing`
    /// subscriber) finds the cache busy and uses the cell and units of its own, added to the
    /// shared counts when it ends.
    ///
    /// A value rather than a closure: a submit's result is then written once, where its
    /// caller wants it. Passed back through a closure, the 48-byte result was copied with
    /// 16-byte loads over the narrower stores that wrote it, which the CPU cannot forward
    /// (perf annotate put a fifth of a submit's time on those loads). For the same reason
    /// the cache's fields are separate cells of at most eight bytes.
    #[inline]
    pub(crate) fn local(&self, n_shards: usize) -> ThreadView<'_> {
        #[cfg(not(loom))]
        {
            // Relaxed: see `store`.
            let published = self.epoch.load(Ordering::Relaxed);
            let local = LOCAL.try_with(|local| {
                let shard = local.shard() & (n_shards - 1);
                if local.busy.replace(true) {
                    return (shard, None);
                }
                if local.id.get() != self.id {
                    local.switch_to(self);
                }
                if local.epoch.get() != Some(published) {
                    let limits = self.cell.with(Arc::clone);
                    // Judged by the loaded value's own epoch (module docs).
                    local.epoch.set(Some(limits.epoch));
                    local.limits.set(Some(limits));
                }
                (shard, Some(local as *const Local))
            });
            if let Ok((shard, Some(local))) = local {
                // SAFETY: `local` is this thread's `LOCAL`, alive until the thread exits,
                // which it cannot do while this submit runs; the view borrows it for the
                // submit only (`ThreadView` is neither `Send` nor `Sync`: `Local`'s cells).
                let local: &Local = unsafe { &*local };
                // SAFETY: `busy` is set, and only a call that finds it clear (or the
                // thread's exit) writes `local.limits`: nothing replaces the `Arc` while
                // the view reads through it. It is `Some`: set just above if it was not.
                let limits: &SubmitLimits = unsafe { &*local.limits.as_ptr() }
                    .as_deref()
                    .expect("the cache holds limits while busy");
                return ThreadView {
                    shard,
                    limits: View::Cached(limits, local),
                    units: Units {
                        counts: &self.counts,
                        pending: local.pending.get(),
                        seen: Some(&local.seen),
                    },
                    fresh: Some(local.fresh.get()),
                };
            }
            // The cache busy (a re-entrant submit) or this thread's locals gone (a submit
            // from another thread-local's destructor): the shard if known, units of its own.
            let shard = local.map_or(0, |(shard, _)| shard);
            self.uncached(shard)
        }
        #[cfg(loom)]
        {
            let _ = n_shards;
            self.uncached(0)
        }
    }

    /// A submit's view without the thread's cache: the cell's limits, and units of its own
    /// that are added to the shared counts when it ends.
    fn uncached(&self, shard: usize) -> ThreadView<'_> {
        ThreadView {
            shard,
            limits: View::Own(self.cell.with(Arc::clone)),
            units: Units {
                counts: &self.counts,
                pending: [0; MAX_CLASSES],
                seen: None,
            },
            fresh: None,
        }
    }
}

/// A submit's capacity units: its thread's pending units of one scheduler, taken by its
/// submits and not yet added to the shared counts.
pub(crate) struct Units<'a> {
    counts: &'a [ClassCount; MAX_CLASSES],
    pending: Pending,
    /// The thread's views of the shared counts, kept in its cache (`None`: a submit that
    /// could not use the cache reads the count).
    seen: Option<&'a [Seen; MAX_CLASSES]>,
}

impl Units<'_> {
    /// Takes a unit of class position `class`, or returns its capacity if it is full
    /// ([`ClassCount::try_acquire`]).
    #[inline]
    pub(crate) fn take(&mut self, class: usize) -> Result<(), usize> {
        let unseen = Seen::new(UNSEEN);
        let seen = self.seen.map_or(&unseen, |s| &s[class]);
        self.counts[class].try_acquire(&mut self.pending[class], seen)
    }

    /// Gives back the unit of `class` just taken.
    pub(crate) fn undo(&mut self, class: usize) {
        self.counts[class].undo(&mut self.pending[class]);
    }

    /// Adds the pending units to the shared counts.
    fn add_all(&mut self) {
        add_all(self.counts, std::mem::take(&mut self.pending));
    }
}

/// Adds `pending` to `counts`.
fn add_all(counts: &[ClassCount; MAX_CLASSES], pending: Pending) {
    for (count, pending) in counts.iter().zip(pending) {
        count.add(pending);
    }
}

/// One submit's view of its thread: the shard it pushes to, the limits it checks against
/// and the thread's units ([`Limits::local`]). Dropping it puts the units back in the
/// thread's cache and frees the cache for the next submit (or, for a submit that could not
/// use the cache, adds its units to the shared counts).
pub(crate) struct ThreadView<'a> {
    /// This thread's shard.
    pub(crate) shard: usize,
    limits: View<'a>,
    units: Units<'a>,
    /// The thread's fresh slots, if the cache is this view's and they go back to it
    /// (`None`: a submit that could not use the cache, which reserves its slot without a
    /// range).
    fresh: Option<FreshRange>,
}

/// Where a view's limits are.
enum View<'a> {
    /// In the thread's cache, which this view holds busy.
    #[cfg(not(loom))]
    Cached(&'a SubmitLimits, &'a Local),
    /// Loaded from the cell for this submit alone.
    Own(Arc<SubmitLimits>),
    /// Keeps `'a` used under loom, where the cache (and so `Cached`) does not exist.
    #[cfg(loom)]
    _Loom(std::marker::PhantomData<&'a ()>),
}

impl<'a> ThreadView<'a> {
    /// The limits in force, the units and the thread's fresh slots (if cached).
    pub(crate) fn parts(&mut self) -> (&SubmitLimits, &mut Units<'a>, Option<&mut FreshRange>) {
        let limits = match &self.limits {
            #[cfg(not(loom))]
            View::Cached(l, _) => l,
            View::Own(l) => &**l,
            #[cfg(loom)]
            View::_Loom(_) => unreachable!("never made"),
        };
        (limits, &mut self.units, self.fresh.as_mut())
    }
}

impl Drop for ThreadView<'_> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        if let (View::Cached(_, local), Some(fresh)) = (&self.limits, self.fresh) {
            local.pending.set(self.units.pending);
            local.fresh.set(fresh);
            local.busy.set(false);
            return;
        }
        self.units.add_all();
    }
}

#[cfg(not(loom))]
struct Local {
    /// This thread's shard seed, assigned round-robin on first use and kept for the
    /// thread's life so producers rarely share a queue; `usize::MAX` until then.
    shard: Cell<usize>,
    /// Whether a submit has the cache's limits and units out.
    busy: Cell<bool>,
    /// The [`Limits`] the fields below belong to (`u64::MAX`: none yet).
    id: Cell<u64>,
    /// The limits this thread last used (`None` before the first submit). Read in place
    /// by the submit that holds the cache busy; written only while it is not busy.
    limits: Cell<Option<Arc<SubmitLimits>>>,
    /// Their epoch (`None` with none), so a submit checks it without reading them.
    epoch: Cell<Option<u32>>,
    /// This thread's pending units of that scheduler.
    pending: Cell<Pending>,
    /// Its views of that scheduler's shared counts (`super::capacity`).
    seen: [Seen; MAX_CLASSES],
    /// That scheduler's counts, to add the pending units to when the thread turns to
    /// another scheduler or exits.
    counts: Cell<Option<Counts>>,
    /// Never-used slots of that scheduler's table this thread holds.
    fresh: Cell<FreshRange>,
    /// That table, to give them back to.
    table: Cell<Option<std::sync::Weak<Table<Payload>>>>,
}

#[cfg(not(loom))]
impl Local {
    fn shard(&self) -> usize {
        if self.shard.get() == usize::MAX {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            // Relaxed: only the spreading matters, no data is published.
            self.shard.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        self.shard.get()
    }

    /// Makes the cache `limits`' scheduler's, settling what it held for the previous one.
    fn switch_to(&self, limits: &Limits) {
        self.settle();
        self.id.set(limits.id);
        for seen in &self.seen {
            seen.set(UNSEEN);
        }
        self.limits.set(None);
        self.epoch.set(None);
        self.counts.set(Some(Arc::clone(&limits.counts)));
        self.table.set(Some(limits.table.clone()));
    }

    /// Adds the pending units to their scheduler's counts and gives the fresh slots back
    /// to its table (if it is still there).
    fn settle(&self) {
        let pending = self.pending.take();
        if let Some(counts) = self.counts.take() {
            add_all(&counts, pending);
        }
        let mut fresh = self.fresh.take();
        if let Some(table) = self.table.take().and_then(|t| t.upgrade()) {
            table.give_back(self.shard(), &mut fresh);
        }
    }
}

#[cfg(not(loom))]
impl Drop for Local {
    fn drop(&mut self) {
        // The thread exits: its units count from now on, its fresh slots go back.
        self.settle();
    }
}

#[cfg(not(loom))]
thread_local! {
    static LOCAL: Local = const {
        Local {
            shard: Cell::new(usize::MAX),
            busy: Cell::new(false),
            id: Cell::new(u64::MAX),
            limits: Cell::new(None),
            epoch: Cell::new(None),
            pending: Cell::new([0; MAX_CLASSES]),
            seen: [const { Cell::new(UNSEEN) }; MAX_CLASSES],
            counts: Cell::new(None),
            fresh: Cell::new(FreshRange::EMPTY),
            table: Cell::new(None),
        }
    };
}
