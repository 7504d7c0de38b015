//! What an API thread keeps between submits: the ingress shard it pushes to, and its own
//! copy of the submit limits, re-read from the shared cell only after a reload published
//! new ones.
//!
//! The limits live in a [`SwapCell`] (arc-swap), whose load costs a few atomic operations
//! of its own; a submit is otherwise three. So each thread caches the `Arc` it last loaded
//! and, per submit, only compares the cell's published epoch (a Relaxed load of a line no
//! producer writes) with the epoch *inside* the cached value:
//!
//! * A reload stores the new limits, then their epoch. Epochs are distinct per stored
//!   value (+1 per applied reload).
//! * The cached value is compared by its own epoch, never by the epoch read next to it, so
//!   a cache can lag only while the published epoch differs from it: the next submit
//!   loads the cell again. No stale copy outlives a reload.
//! * A submit that happens after a reload returned reads that epoch or a later one
//!   (coherence), misses its cache and loads the cell, whose own Release/Acquire gives it
//!   the new limits. A submit racing the reload may use the old ones, as with the cell
//!   alone; the scheduler re-checks requests of an old epoch when it drains them.
//!
//! The cache is keyed by the cell's process-unique id, so a thread that submits to two
//! schedulers alternately reloads on each switch and never mixes their limits. Under loom
//! the cache is bypassed (one shard, the cell's load every time): it adds no ordering to
//! model.

use super::SubmitLimits;
use crate::sync::SwapCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The shared limits with their published epoch.
pub(crate) struct Limits {
    cell: SwapCell<SubmitLimits>,
    /// The epoch of the value last stored in `cell`; written after it.
    epoch: AtomicU32,
    /// Unique per `Limits` in this process: the key of the threads' cached copies.
    #[cfg_attr(loom, allow(dead_code))]
    id: u64,
}

impl Limits {
    pub(crate) fn new(limits: SubmitLimits) -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            epoch: AtomicU32::new(limits.epoch),
            cell: SwapCell::new(Arc::new(limits)),
            // Relaxed: only uniqueness matters; the RMW gives it.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
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

    /// Runs `f` on the limits in force, loaded from the shared cell (off the submit path).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&SubmitLimits) -> R) -> R {
        self.cell.with(|l| f(l))
    }

    /// This thread's shard among `n_shards` (a power of two) and the limits in force, from
    /// this thread's cached copy when it is current. The copy is taken out of the thread's
    /// cache for the submit and put back when the returned value drops, so no reference
    /// into the thread-local is held meanwhile (a re-entrant submit, say from a `tracing`
    /// subscriber, finds no copy and loads the cell).
    ///
    /// A value rather than a closure: a submit's result is then written once, where its
    /// caller wants it. Passed back through a closure, the 48-byte result was copied with
    /// 16-byte loads over the narrower stores that wrote it, which the CPU cannot forward
    /// (perf annotate put a fifth of a submit's time on those loads).
    pub(crate) fn local(&self, n_shards: usize) -> ThreadLimits<'_> {
        #[cfg(loom)]
        {
            let _ = n_shards;
            ThreadLimits {
                owner: self,
                shard: 0,
                limits: Some(self.cell.with(Arc::clone)),
            }
        }
        #[cfg(not(loom))]
        {
            // Relaxed: see `store`.
            let published = self.epoch.load(Ordering::Relaxed);
            let local = LOCAL.try_with(|local| {
                let shard = local.shard() & (n_shards - 1);
                let cached = local
                    .limits
                    .take()
                    .filter(|(id, l)| *id == self.id && l.epoch == published);
                (shard, cached)
            });
            // With this thread's locals gone (a submit from another thread-local's
            // destructor): shard 0 and the cell.
            let (shard, cached) = local.unwrap_or((0, None));
            let limits = cached.map_or_else(|| self.cell.with(Arc::clone), |(_, l)| l);
            ThreadLimits {
                owner: self,
                shard,
                limits: Some(limits),
            }
        }
    }
}

/// One submit's view of its thread: the shard it pushes to and the limits it checks
/// against ([`Limits::local`]). Dropping it puts the limits back in the thread's cache.
pub(crate) struct ThreadLimits<'a> {
    #[cfg_attr(loom, allow(dead_code))]
    owner: &'a Limits,
    /// This thread's shard.
    pub(crate) shard: usize,
    /// `Some` until dropped.
    limits: Option<Arc<SubmitLimits>>,
}

impl std::ops::Deref for ThreadLimits<'_> {
    type Target = SubmitLimits;

    fn deref(&self) -> &SubmitLimits {
        self.limits.as_deref().expect("taken only by drop")
    }
}

impl Drop for ThreadLimits<'_> {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        if let Some(limits) = self.limits.take() {
            let id = self.owner.id;
            let _ = LOCAL.try_with(|local| local.limits.set(Some((id, limits))));
        }
    }
}

#[cfg(not(loom))]
struct Local {
    /// This thread's shard seed, assigned round-robin on first use and kept for the
    /// thread's life so producers rarely share a queue; `usize::MAX` until then.
    shard: std::cell::Cell<usize>,
    /// The limits this thread last used, with the id of the [`Limits`] they came from.
    limits: std::cell::Cell<Option<(u64, Arc<SubmitLimits>)>>,
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
}

#[cfg(not(loom))]
thread_local! {
    static LOCAL: Local = const {
        Local {
            shard: std::cell::Cell::new(usize::MAX),
            limits: std::cell::Cell::new(None),
        }
    };
}
