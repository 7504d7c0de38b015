//! Ingress: the API threads' side. A submit takes a slot of the request table
//! ([`table`]), writes the request into it and links the slot into its (shard, class)
//! ingress queue ([`mpsc`]); the [`RequestHandle`] it returns names the slot. Cancels and
//! class changes are CASes on the slot's state word plus a notice for the scheduler.
//! Nothing here ever waits for the scheduler thread, takes a lock or allocates per request
//! (the table grows by whole chunks; the opt-in id index is the one exception).
//!
//! The scheduler's side is [`Drain`]: the consumer handles of every ingress queue, owned by
//! the one [`crate::Scheduler`], so only it can pop.

pub(crate) mod capacity;
pub(crate) mod index;
mod local;
pub(crate) mod mpsc;
pub(crate) mod notice;
pub(crate) mod table;

use crate::class::{Class, ClassSet, MAX_CLASSES};
use crate::config::SchedulerConfig;
use crate::error::{ControlError, SubmitError};
use crate::request::{RequestId, RequestSpec, Spec};
use crate::sync::{Arc, AtomicU32, AtomicU64, Ordering};
use crate::time::{SharedClock, Timestamp};
use capacity::ClassCount;
use crossbeam_utils::CachePadded;
use index::IdIndex;
use mpsc::{Consumer, Pop, Producer};
use notice::NoticeQueue;
pub use table::RequestHandle;
use table::{FreeBatch, Table, TicketError, RUNNING};

/// What a producer writes into its slot and the scheduler reads when it drains it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Payload {
    /// `spec.class` is a class index of configuration epoch `epoch`.
    pub(crate) spec: Spec,
    /// When it was submitted (the scheduler's clock at submit).
    pub(crate) arrival: Timestamp,
    /// The configuration epoch the request was checked against (see `SubmitLimits`).
    pub(crate) epoch: u32,
}

/// A request drained from ingress: the token that owns its slot, through which the
/// scheduler reads its payload ([`Table::payload`]). Only the token is collected, not a copy
/// of the payload: copied out of the slot and into the batch, the payload was read back
/// across two of the stores that wrote it (a store-forwarding stall per request).
pub(crate) type Drained = table::Entry;

/// One ingress shard: the producer side of a queue per class position, and its refusals.
///
/// Accepted submits need no counter of their own: each ingress queue counts its pushes in
/// the word its push swings anyway, and the scheduler counts what it drained (see
/// [`Drain::totals`]).
pub(crate) struct Shard {
    /// `MAX_CLASSES` queues, all made at construction (a queue is two words and a stub), so
    /// a reload that adds a class needs none made.
    queues: Box<[Producer<Payload>]>,
    /// Submit calls refused at ingress (invalid, duplicate, full, closed), by class index
    /// at submit time; index `MAX_CLASSES` counts requests whose class was invalid.
    refused: CachePadded<[AtomicU64; MAX_CLASSES + 1]>,
}

/// What submit checks a request against. Replaced as a whole on a configuration reload.
pub(crate) struct SubmitLimits {
    /// Configuration epoch: 0 at start, +1 per applied reload.
    pub(crate) epoch: u32,
    pub(crate) classes: ClassSet,
    pub(crate) max_model_len: u32,
    pub(crate) block_size: u32,
    /// Blocks one request can ever hold: all blocks less the watermark.
    pub(crate) max_blocks: u32,
    /// The most tokens those blocks hold (`max_blocks × block_size`): a request fits iff its
    /// tokens are at most this, so submit divides only to report a request that does not.
    pub(crate) max_fit_tokens: u64,
}

const OPEN: u32 = 0;
const CLOSED: u32 = 1;
const ENGINE_GONE: u32 = 2;

/// State shared by every [`Submitter`] and the scheduler.
pub(crate) struct Shared {
    /// Every request's slot, from submit until the scheduler frees it.
    pub(crate) table: Arc<Table<Payload>>,
    pub(crate) shards: Box<[Shard]>,
    /// With `id_index` on: id → handle, for duplicate refusal and [`Submitter::lookup`].
    pub(crate) index: Option<IdIndex>,
    pub(crate) notices: NoticeQueue,
    /// OPEN, CLOSED or ENGINE_GONE; only says which error a refused push reports (the
    /// queues' close bit is what refuses it). Every access is Relaxed: no data rides on it,
    /// and the closed bit in each queue's `tail` decides which pushes land. A submit racing
    /// the engine thread's panic may report `Closed` where `EngineGone` was being stored;
    /// every submit after the panic's close is over reports `EngineGone`.
    status: AtomicU32,
    /// The arrival clock. An injected one is held in a plain std `Arc`: it is immutable
    /// shared configuration, not state loom needs to model (a `ManualClock`'s own atomic
    /// comes from the facade).
    pub(crate) clock: SharedClock,
    /// The limits in force; swapped by a reload at a step boundary.
    pub(crate) limits: local::Limits,
}

impl SubmitLimits {
    pub(crate) fn new(config: &SchedulerConfig, epoch: u32) -> Self {
        let max_blocks = config
            .engine
            .total_blocks
            .saturating_sub(config.engine.watermark_blocks());
        SubmitLimits {
            epoch,
            classes: config.class_set(),
            max_model_len: config.engine.max_model_len,
            block_size: config.engine.block_size,
            max_blocks,
            max_fit_tokens: u64::from(max_blocks) * u64::from(config.engine.block_size),
        }
    }
}

/// The table's capacity for `config`: room for every class's `queue_capacity` plus as many
/// running requests as there are KV blocks (each holds one at least), doubled for reloads
/// that raise capacities and for the slots of one step's ended requests, which return to
/// producers at the step's end. Under loom a few slots, so models reach a second chunk.
pub(crate) fn table_capacity(config: &SchedulerConfig) -> u32 {
    if cfg!(loom) {
        return 16;
    }
    let queued: u64 = config.classes.iter().map(|c| c.queue_capacity as u64).sum();
    let need = queued.saturating_add(u64::from(config.engine.total_blocks));
    need.saturating_mul(2).min(u64::from(table::MAX_CAPACITY)) as u32
}

/// A weak reference to `table` for the API threads' caches, which give their fresh slots
/// back through it (`local`). Empty under loom, whose models bypass those caches.
fn weak(table: &Arc<Table<Payload>>) -> std::sync::Weak<Table<Payload>> {
    #[cfg(not(loom))]
    {
        Arc::downgrade(table)
    }
    #[cfg(loom)]
    {
        let _ = table;
        std::sync::Weak::new()
    }
}

/// Sets each configured class position's capacity from `config`. Positions past its
/// classes keep theirs: a submit checked against the limits of before a reload that
/// dropped a position still counts against the capacity of the class it named then (the
/// units are re-based at the end of the step that applies the reload).
pub(crate) fn set_capacities(capacity: &[ClassCount], config: &SchedulerConfig) {
    for (c, class) in capacity.iter().zip(&config.classes) {
        c.set_capacity(class.queue_capacity);
    }
}

impl Shared {
    /// The shared state and the scheduler's [`Drain`] of it.
    pub(crate) fn new(config: &SchedulerConfig, clock: SharedClock) -> (Self, Drain) {
        let n_shards = config.resolved_shards();
        let table = Arc::new(Table::new(table_capacity(config), n_shards));
        let mut consumers = Vec::with_capacity(n_shards * MAX_CLASSES);
        let shards = (0..n_shards)
            .map(|_| Shard {
                queues: (0..MAX_CLASSES)
                    .map(|_| {
                        let (p, c) = mpsc::queue(Arc::clone(&table));
                        consumers.push(c);
                        p
                    })
                    .collect(),
                refused: CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))),
            })
            .collect();
        let counts: local::Counts =
            std::sync::Arc::new(std::array::from_fn(|_| ClassCount::new(0)));
        set_capacities(&counts[..], config);
        let limits = local::Limits::new(SubmitLimits::new(config, 0), counts, weak(&table));
        let shared = Self {
            table,
            shards,
            index: config.id_index.then(|| IdIndex::new(n_shards * 4)),
            notices: NoticeQueue::new(),
            status: AtomicU32::new(OPEN),
            clock,
            limits,
        };
        let drain = Drain {
            consumers: consumers.into_boxed_slice(),
            free: (0..n_shards).map(|_| FreeBatch::new()).collect(),
            units: [0; MAX_CLASSES],
            active: Vec::new(),
        };
        (shared, drain)
    }

    /// Whether ingress is closed (a snapshot: the queues' closed bits decide).
    pub(crate) fn is_closed(&self) -> bool {
        // Relaxed: a hint that spares a closed scheduler's submits the slot and the unit;
        // a push that gets past it fails on the queue's closed bit (see `status`).
        self.status.load(Ordering::Relaxed) != OPEN
    }

    /// Closes every queue: later submits fail. `engine_gone` says whether it is because the
    /// scheduler was dropped mid-panic.
    pub(crate) fn close(&self, engine_gone: bool) {
        let status = if engine_gone { ENGINE_GONE } else { CLOSED };
        // Relaxed: which error a refused push reports, nothing more (see `status`). Stored
        // before the queues close, so a submit that starts after `close` returns finds it.
        self.status.fetch_max(status, Ordering::Relaxed);
        for shard in self.shards.iter() {
            for q in shard.queues.iter() {
                q.close();
            }
        }
    }

    fn closed_error(&self) -> SubmitError {
        // Relaxed: see `status`.
        if self.status.load(Ordering::Relaxed) == ENGINE_GONE {
            SubmitError::EngineGone
        } else {
            SubmitError::Closed
        }
    }
}

/// Collects a popped request into `out`; the capacity unit it took at submit (of its
/// submit-time class) is now held by the scheduler, in `units`.
fn take(
    table: &Table<Payload>,
    units: &mut [usize; MAX_CLASSES],
    entry: table::Entry,
    out: &mut Vec<Drained>,
) {
    units[table.payload(&entry).spec.class.index()] += 1;
    out.push(entry);
}

/// The scheduler's side of ingress: the consumer handle of every ingress queue (so only the
/// scheduler pops, by type), the slots freed in the current step, and the capacity units
/// the scheduler holds for the requests it drained.
pub(crate) struct Drain {
    /// Queue of (shard `s`, class position `c`) at `s * MAX_CLASSES + c`.
    consumers: Box<[Consumer<Payload>]>,
    /// Slots of requests ended since the last release, one batch per shard (the free stack
    /// each slot came from); they return to producers at the step's end, after the running
    /// list no longer names them.
    free: Box<[FreeBatch]>,
    /// Capacity units held per class position for drained requests (see
    /// [`Drain::settle`]).
    units: [usize; MAX_CLASSES],
    /// The queues a drain still takes from (scratch, kept for its allocation).
    active: Vec<usize>,
}

impl Drain {
    /// Pops every request queued now into `out`, at most `limit[c]` per class position `c`
    /// over all shards, so producers that keep pushing cannot hold a step. A queue whose
    /// producer is between its tail swap and its link is left for the next step.
    ///
    /// The queues are taken from in rotation, one request each, and each pop hints the
    /// queue's next node ([`Consumer::prefetch_next`]): with producers on other cores every
    /// node is a line to fetch from theirs, and a queue's next node is known only once its
    /// current one has arrived, so draining queue after queue waited for every node in
    /// turn. Each queue's requests keep their order in `out` (the order within a class is
    /// all that matters: see `Scheduler::ingest`).
    pub(crate) fn drain(
        &mut self,
        table: &Table<Payload>,
        limit: [usize; MAX_CLASSES],
        out: &mut Vec<Drained>,
    ) {
        let mut left = limit;
        let mut active = std::mem::take(&mut self.active);
        active.clear();
        active.extend(0..self.consumers.len());
        while !active.is_empty() {
            let mut k = 0;
            while k < active.len() {
                let i = active[k];
                let c = i % MAX_CLASSES;
                let q = &mut self.consumers[i];
                if left[c] > 0 {
                    if let Pop::Item(e) = q.pop() {
                        q.prefetch_next();
                        left[c] -= 1;
                        take(table, &mut self.units, e, out);
                        k += 1;
                        continue;
                    }
                }
                // Empty, a push mid-link, or the class's limit reached: done with it.
                active.swap_remove(k);
            }
        }
        self.active = active;
    }

    /// Pops everything from closed queues (the hand-off), waiting out pushes mid-link.
    pub(crate) fn drain_closed(&mut self, table: &Table<Payload>, out: &mut Vec<Drained>) {
        for q in self.consumers.iter_mut() {
            while let Some(e) = q.pop_closed() {
                take(table, &mut self.units, e, out);
            }
        }
    }

    /// Requests submitted and refused so far by class position at submit time (index
    /// `MAX_CLASSES`: an invalid class), over all shards. Submitted = refused + accepted,
    /// and accepted = what each queue's consumer popped + what it holds now, so the two
    /// can never disagree (a refusal racing this read is counted in both or in neither).
    pub(crate) fn totals(
        &self,
        shared: &Shared,
    ) -> ([u64; MAX_CLASSES + 1], [u64; MAX_CLASSES + 1]) {
        let mut submitted = [0; MAX_CLASSES + 1];
        let mut refused = [0; MAX_CLASSES + 1];
        for shard in shared.shards.iter() {
            for (sum, n) in refused.iter_mut().zip(shard.refused.iter()) {
                // Relaxed: a count; no data rides on it.
                *sum += n.load(Ordering::Relaxed);
            }
        }
        for (i, q) in self.consumers.iter().enumerate() {
            submitted[i % MAX_CLASSES] += q.popped() + q.len();
        }
        for (s, r) in submitted.iter_mut().zip(&refused) {
            *s += r;
        }
        (submitted, refused)
    }

    /// Whether every queue is empty (ended requests aside); for the invariant check after a
    /// hand-off.
    pub(crate) fn all_empty(&self) -> bool {
        self.consumers.iter().all(|q| q.is_empty())
    }

    /// Brings the capacity units the scheduler holds to `waiting[c]` per class position: a
    /// drained request took a unit of its submit-time class; from the step's end on, the
    /// units held are exactly the requests waiting in each base class (an admitted one
    /// gives its unit back, a preempted one takes one again, a class change moves it).
    pub(crate) fn settle(&mut self, capacity: &[ClassCount], waiting: impl Fn(usize) -> usize) {
        for (c, held) in self.units.iter_mut().enumerate() {
            let want = waiting(c);
            if *held > want {
                capacity[c].release(*held - want);
            } else if want > *held {
                capacity[c].force_acquire(want - *held);
            }
            *held = want;
        }
    }

    /// Frees the slot of an ended request (its handle is stale from now on) into the batch
    /// of the shard it came from.
    pub(crate) fn free(&mut self, table: &Table<Payload>, entry: table::Entry) {
        let home = table.home(&entry);
        table.free(&mut self.free[home], entry);
    }

    /// Returns the slots freed so far to producers: one CAS per shard that has any.
    pub(crate) fn release(&mut self, table: &Table<Payload>) {
        for (shard, batch) in self.free.iter_mut().enumerate() {
            if !batch.is_empty() {
                table.release(shard, batch);
            }
        }
    }
}

/// The API threads' handle: cheap to clone, `Send + Sync`, never blocks.
///
/// Every call answers at once: a request is queued or refused with a typed error, a cancel
/// or class change is recorded on the request and applied by the scheduler's next step.
///
/// ```
/// use triage::*;
/// let (mut sched, api) = Scheduler::new(SchedulerConfig::default()).unwrap();
/// let threads: Vec<_> = (0..4u64)
///     .map(|t| {
///         let api = api.clone(); // one per API thread
///         std::thread::spawn(move || api.submit(RequestSpec::new(t, Class::LOW, 10, 1)).unwrap())
///     })
///     .collect();
/// let handles: Vec<RequestHandle> = threads.into_iter().map(|t| t.join().unwrap()).collect();
/// assert_eq!(handles.len(), 4);
/// assert_eq!(sched.conservation().in_ingress, 4);
/// ```
#[derive(Clone)]
pub struct Submitter {
    pub(crate) shared: Arc<Shared>,
}

/// What a successful cancel found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The request was waiting; it will not start. Its outcome is `cancelled`.
    WasWaiting,
    /// The request was running; the next step's decision lists it under `aborted` so the
    /// engine stops it. Its outcome is `cancelled`.
    WasRunning,
}

impl Submitter {
    /// Queues a request and returns its [`RequestHandle`]; its arrival is stamped now by the
    /// scheduler's clock. Never blocks, takes no lock and allocates nothing per request
    /// (with `id_index` off).
    ///
    /// Refused requests get a typed error and are counted under the `refused` outcome:
    /// an unknown class, zero token counts, a request longer than the model's context or
    /// larger than the KV cache, a full class queue (`queue_capacity` requests waiting or
    /// submitted since the last step), a duplicate id (only with `id_index` on), or a
    /// closed scheduler.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// // Any thread: a clone of the submitter per API thread.
    /// let h = api.submit(RequestSpec::new(1, Class::HIGH, 100, 16)).unwrap();
    /// // A prompt past the context is refused with a typed error.
    /// assert!(matches!(api.submit(RequestSpec::new(2, Class::LOW, 1_000_000, 1)), Err(SubmitError::ExceedsContext { .. })));
    /// let d = sched.step(clock.now(), &room).unwrap();
    /// assert_eq!(d.admitted[0].handle, h);
    /// assert_eq!(d.admitted[0].arrival, Timestamp::ZERO); // stamped with the scheduler's clock
    /// ```
    pub fn submit(&self, spec: RequestSpec) -> Result<RequestHandle, SubmitError> {
        let n_shards = self.shared.shards.len();
        let mut local = self.shared.limits.local(n_shards);
        let shard = local.shard;
        let (limits, units, fresh) = local.parts();
        // By reference from here on: a copy of the spec, read with 16-byte loads over the
        // caller's narrower stores, missed store forwarding (about 10 ns a submit here).
        self.submit_with(shard, limits, units, fresh, &spec)
    }

    fn submit_with(
        &self,
        shard_i: usize,
        limits: &SubmitLimits,
        units: &mut local::Units,
        fresh: Option<&mut table::FreshRange>,
        spec: &RequestSpec,
    ) -> Result<RequestHandle, SubmitError> {
        let shared = &*self.shared;
        let shard = &shared.shards[shard_i];
        let slot = if limits.classes.contains(spec.class) {
            spec.class.index()
        } else {
            MAX_CLASSES
        };
        let refuse = |e: SubmitError| {
            // Relaxed: a count; no data rides on it (an accepted submit is counted by its
            // queue's push instead: see `Drain::totals`).
            shard.refused[slot].fetch_add(1, Ordering::Relaxed);
            // The error path only: a labelled counter through the `metrics` facade.
            let class = limits
                .classes
                .names()
                .get(slot)
                .map_or("unknown", String::as_str);
            #[cfg(feature = "metrics")]
            crate::telemetry::record_refused(class, crate::telemetry::RefuseReason::of(&e));
            tracing::debug!(id = spec.id.0, class, error = %e, "refused at submit");
            Err(e)
        };
        if let Err(e) = check(limits, spec) {
            return refuse(e);
        }
        if shared.is_closed() {
            // Closed rather than a misleading QueueFull once nothing drains the queue.
            return refuse(shared.closed_error());
        }
        let class = spec.class.index();
        let full = |capacity: usize| SubmitError::QueueFull {
            class: limits.classes.name(spec.class).to_string(),
            capacity,
        };
        if let Err(capacity) = units.take(class) {
            return refuse(full(capacity));
        }
        let payload = Payload {
            spec: spec.into(),
            arrival: shared.clock.now(),
            epoch: limits.epoch,
        };
        let reserved = match fresh {
            Some(fresh) => shared.table.reserve_from(shard_i, payload, fresh),
            None => shared.table.reserve(shard_i, payload),
        };
        let reserved = match reserved {
            Ok(r) => r,
            Err(t) => {
                // Only past the table's room for twice every capacity: reloads that
                // raised capacities far, or tens of thousands of API threads each over
                // the capacity by its pending units and holding never-used slots.
                units.undo(class);
                return refuse(full(t.capacity as usize));
            }
        };
        let handle = reserved.handle();
        if let Some(index) = &shared.index {
            if !index.insert(spec.id, handle) {
                shared.table.unreserve(shard_i, reserved);
                units.undo(class);
                return refuse(SubmitError::DuplicateId(spec.id));
            }
        }
        match shard.queues[class].push(reserved) {
            Ok(h) => Ok(h),
            Err(mpsc::Closed(reserved)) => {
                // Never reached the scheduler: the slot goes back, and so do the unit and
                // the id.
                if let Some(index) = &shared.index {
                    index.remove(spec.id, handle);
                }
                shared.table.unreserve(shard_i, reserved);
                units.undo(class);
                refuse(shared.closed_error())
            }
        }
    }

    /// Cancels a waiting or running request. Exactly one of this and a racing admission,
    /// preemption or finish takes effect first; the answer says which state it found.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// let h = api.submit(RequestSpec::new(1, Class::LOW, 100, 16)).unwrap();
    /// assert_eq!(api.cancel(h), Ok(CancelOutcome::WasWaiting));
    /// let d = sched.step(clock.now(), &room).unwrap();
    /// assert_eq!(d.cancelled, vec![RequestId(1)]); // it never starts
    /// assert_eq!(api.cancel(h), Err(ControlError::NotFound(h))); // ended: the handle is stale
    /// ```
    pub fn cancel(&self, handle: RequestHandle) -> Result<CancelOutcome, ControlError> {
        let changed = self
            .shared
            .table
            .cancel(handle)
            .map_err(|r| refused(handle, r))?;
        if changed.must_notify {
            self.shared.notices.push(handle);
        }
        Ok(match changed.phase {
            RUNNING => CancelOutcome::WasRunning,
            _ => CancelOutcome::WasWaiting,
        })
    }

    /// Moves a waiting or running request to another class. A waiting request is re-queued
    /// in the new class at its original arrival (its place by age is kept); a running one
    /// keeps running and is ranked by its new class when victims are chosen. Applied at the
    /// scheduler's next step; the last of several racing calls wins.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// let low = api.submit(RequestSpec::new(1, Class::LOW, 100, 16)).unwrap();
    /// api.submit(RequestSpec::new(2, Class::MEDIUM, 100, 16)).unwrap();
    /// api.reprioritize(low, Class::HIGH).unwrap();
    /// let one = Budget { max_num_seqs: 1, ..room };
    /// let d = sched.step(clock.now(), &one).unwrap();
    /// assert_eq!(d.admitted[0].id, RequestId(1)); // now HIGH, ahead of MEDIUM
    /// ```
    pub fn reprioritize(&self, handle: RequestHandle, class: Class) -> Result<(), ControlError> {
        self.shared
            .limits
            .with(|l| l.classes.check(class))
            .map_err(ControlError::Class)?;
        let changed = self
            .shared
            .table
            .request_class(handle, class)
            .map_err(|r| refused(handle, r))?;
        if changed.must_notify {
            self.shared.notices.push(handle);
        }
        Ok(())
    }

    /// The handle of the held request with the engine's id `id`, through the id index. The
    /// index is opt-in (`id_index = true` in the configuration): it costs a lock and a map
    /// insert per submit, and makes duplicate ids refused. Without it, keep the handle
    /// [`Submitter::submit`] returned.
    ///
    /// ```
    /// use triage::*;
    /// let config = SchedulerConfig { id_index: true, ..SchedulerConfig::default() };
    /// let (_sched, api) = Scheduler::new(config).unwrap();
    /// let h = api.submit(RequestSpec::new(42, Class::LOW, 100, 16)).unwrap();
    /// assert_eq!(api.lookup(RequestId(42)), Ok(h));
    /// // With the index on, a second request with a held id is refused.
    /// assert!(matches!(api.submit(RequestSpec::new(42, Class::LOW, 10, 1)), Err(SubmitError::DuplicateId(_))));
    /// assert_eq!(api.lookup(RequestId(7)), Err(ControlError::UnknownId(RequestId(7))));
    /// ```
    pub fn lookup(&self, id: RequestId) -> Result<RequestHandle, ControlError> {
        let index = self.shared.index.as_ref().ok_or(ControlError::NoIdIndex)?;
        index.get(id).ok_or(ControlError::UnknownId(id))
    }

    /// The classes in force, for parsing API metadata (a copy: a configuration reload
    /// may change them).
    ///
    /// ```
    /// use triage::*;
    /// let (_sched, api) = Scheduler::new(SchedulerConfig::default()).unwrap();
    /// let classes = api.classes();
    /// assert_eq!(classes.parse_name("medium").unwrap(), Class::MEDIUM);
    /// assert_eq!(classes.from_vllm_priority(0).unwrap(), Class::HIGH);
    /// ```
    pub fn classes(&self) -> ClassSet {
        self.shared.limits.with(|l| l.classes.clone())
    }

    /// Stops taking requests: every later submit fails with [`SubmitError::Closed`].
    /// Requests already accepted stay queued; the engine can run them or hand them off with
    /// [`crate::Scheduler::drain_waiting`].
    pub fn close(&self) {
        self.shared.close(false);
    }

    /// Whether the scheduler is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

/// Checks a request against the limits: class, token counts, context, KV size.
fn check(limits: &SubmitLimits, spec: &RequestSpec) -> Result<(), SubmitError> {
    limits
        .classes
        .check(spec.class)
        .map_err(SubmitError::Class)?;
    if spec.prompt_tokens == 0 {
        return Err(SubmitError::ZeroPromptTokens(spec.id));
    }
    if spec.max_new_tokens == 0 {
        return Err(SubmitError::ZeroMaxNewTokens(spec.id));
    }
    if let Some(ttft_ms) = spec.ttft_ms {
        if ttft_ms == 0 || ttft_ms > crate::request::MAX_TTFT_MS {
            return Err(SubmitError::InvalidTtftTarget {
                id: spec.id,
                ttft_ms,
            });
        }
    }
    let tokens = u64::from(spec.prompt_tokens) + u64::from(spec.max_new_tokens);
    if tokens > u64::from(limits.max_model_len) {
        return Err(SubmitError::ExceedsContext {
            id: spec.id,
            tokens,
            max_model_len: limits.max_model_len,
        });
    }
    // ceil(tokens / block_size) > max_blocks  <=>  tokens > max_blocks × block_size.
    if tokens > limits.max_fit_tokens {
        return Err(SubmitError::NeverFits {
            id: spec.id,
            blocks_needed: tokens.div_ceil(u64::from(limits.block_size)),
            blocks_available: limits.max_blocks,
        });
    }
    Ok(())
}

fn refused(handle: RequestHandle, r: TicketError) -> ControlError {
    match r {
        TicketError::Cancelled => ControlError::AlreadyCancelled(handle),
        TicketError::NotFound | TicketError::Done => ControlError::NotFound(handle),
    }
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("shards", &self.shared.shards.len())
            .field("classes", &self.shared.limits.with(|l| l.classes.len()))
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::*;

    /// In a steady state (a batch submitted, admitted and finished per step) the request
    /// table does not grow: freed slots return to the stack of the shard that took them,
    /// and a producer takes freed slots before never-used ones.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "a whole scheduler for 200 steps takes many minutes under Miri; the \
                  table's and queue's own tests cover the unsafe code"
    )]
    fn a_steady_state_reuses_slots_and_allocates_no_chunk() {
        let config = SchedulerConfig {
            shards: 2,
            ..SchedulerConfig::default()
        };
        let clock = ManualClock::new(Timestamp::ZERO);
        let (mut sched, api) = Scheduler::with_clock(config, clock.clone()).unwrap();
        let room = Budget {
            max_num_seqs: 64,
            max_batched_tokens: 64 * 16,
            free_blocks: 7000,
        };
        let mut id = 0;
        for _ in 0..200 {
            for _ in 0..64 {
                id += 1;
                api.submit(RequestSpec::new(id, Class::HIGH, 16, 1))
                    .unwrap();
            }
            clock.advance(std::time::Duration::from_millis(10));
            let d = sched.step(clock.now(), &room).unwrap();
            assert_eq!(d.admitted.len(), 64);
            for a in &d.admitted {
                sched.on_progress(a.handle, clock.now(), 16, 1).unwrap();
                sched
                    .on_finished(a.handle, clock.now(), FinishReason::Stop)
                    .unwrap();
            }
        }
        // 12,800 requests, at most 192 slots live at once (64 in ingress, 64 ended in the
        // step's batch, 64 returned): one chunk of 1,024.
        assert_eq!(sched.table_chunks(), 1);
    }

    /// Each API thread takes `FRESH_BATCH` never-used slots at once; those it leaves go back
    /// to the table when it exits, so threads that come and go do not grow the table.
    #[test]
    #[cfg_attr(miri, ignore = "100 threads and a scheduler: slow under Miri")]
    fn exiting_threads_give_their_fresh_slots_back() {
        let config = SchedulerConfig {
            shards: 1,
            ..SchedulerConfig::default()
        };
        let (sched, api) = Scheduler::new(config).unwrap();
        for t in 0..100 {
            let api = api.clone();
            std::thread::spawn(move || api.submit(RequestSpec::new(t, Class::LOW, 16, 1)))
                .join()
                .unwrap()
                .unwrap();
        }
        // 100 slots in use; without the give-backs, 100 × 32 slots taken: four chunks.
        assert_eq!(sched.table_chunks(), 1);
    }
}
