//! Ingress: the API threads' side. [`Submitter`] handles push requests into sharded,
//! bounded, lock-free rings (one per class per shard) and flag cancels and class changes
//! on the request's ticket. Nothing here ever waits for the scheduler thread.

pub(crate) mod capacity;
pub(crate) mod index;
pub(crate) mod mpsc;
pub(crate) mod notice;
pub(crate) mod ring;
pub(crate) mod table;

use crate::class::{Class, ClassSet, MAX_CLASSES};
use crate::config::SchedulerConfig;
use crate::error::{ControlError, SubmitError};
use crate::request::{RequestId, RequestSpec};
use crate::sync::{Arc, AtomicU32, AtomicU64, AtomicUsize, Ordering, SwapCell};
use crate::ticket::{Refused, Ticket, QUEUED, RUNNING};
use crate::time::{Clock, Timestamp};
use crossbeam_utils::CachePadded;
use index::IdIndex;
use notice::NoticeQueue;
use ring::{PushError, Ring};
use std::sync::OnceLock;

/// A request in flight from an API thread to the scheduler.
pub(crate) struct Envelope {
    pub(crate) ticket: Arc<Ticket>,
    /// `spec.class` is a class index of configuration epoch `epoch`.
    pub(crate) spec: RequestSpec,
    pub(crate) arrival: Timestamp,
    /// The configuration epoch the request was checked against (see `SubmitLimits`).
    pub(crate) epoch: u32,
}

/// Per-shard ingress counters, by class index at submit time. Index `MAX_CLASSES` counts
/// requests whose class was invalid.
pub(crate) struct ShardCounters {
    /// Submit calls, counted before anything can refuse them.
    pub(crate) submitted: [AtomicU64; MAX_CLASSES + 1],
    /// Submit calls refused at ingress (invalid, duplicate, full, closed).
    pub(crate) refused: [AtomicU64; MAX_CLASSES + 1],
}

/// One ingress shard: a ring per class position and its counters.
pub(crate) struct Shard {
    /// `MAX_CLASSES` slots; slot `i` is the ring of the class at index `i`. Set for every
    /// configured class before the configuration naming it is published (a reload that
    /// adds a class sets its ring first), so a submitter that sees the class finds its
    /// ring.
    rings: Box<[OnceLock<Ring<Envelope>>]>,
    pub(crate) counters: CachePadded<ShardCounters>,
}

impl Shard {
    /// The ring of class position `i`, if one was ever configured.
    pub(crate) fn ring(&self, i: usize) -> Option<&Ring<Envelope>> {
        self.rings.get(i).and_then(OnceLock::get)
    }

    /// Every ring that exists.
    pub(crate) fn rings(&self) -> impl Iterator<Item = &Ring<Envelope>> {
        self.rings.iter().filter_map(OnceLock::get)
    }
}

/// The slots of class position `i`'s rings: the configured capacity (validation keeps it
/// at [`ring::MIN_CAPACITY`] or more; [`ring::slots_for`] would raise it anyway); under loom
/// the rings shrink to that smallest capacity so the models reach wrap-around and full.
fn ring_slots(config: &SchedulerConfig, i: usize) -> usize {
    let c = ring::slots_for(config.classes[i].ring_capacity);
    if cfg!(loom) {
        c.min(ring::MIN_CAPACITY)
    } else {
        c
    }
}

/// What submit checks a request against. Replaced as a whole on a configuration reload.
pub(crate) struct SubmitLimits {
    /// Configuration epoch: 0 at start, +1 per applied reload.
    pub(crate) epoch: u32,
    pub(crate) classes: ClassSet,
    pub(crate) queue_capacity: [usize; MAX_CLASSES],
    pub(crate) max_model_len: u32,
    pub(crate) block_size: u32,
    /// Blocks one request can ever hold: all blocks less the watermark.
    pub(crate) max_blocks: u32,
}

const OPEN: u32 = 0;
const CLOSED: u32 = 1;
const ENGINE_GONE: u32 = 2;

/// State shared by every [`Submitter`] and the scheduler.
pub(crate) struct Shared {
    pub(crate) shards: Box<[Shard]>,
    pub(crate) index: IdIndex,
    pub(crate) notices: NoticeQueue,
    /// Requests waiting per class as of the last step, published by the scheduler for the
    /// queue-capacity check.
    pub(crate) published_waiting: CachePadded<[AtomicUsize; MAX_CLASSES]>,
    /// OPEN, CLOSED or ENGINE_GONE; only says which error a refused push reports (the
    /// rings' close bit is what refuses it).
    status: AtomicU32,
    /// The arrival clock. A plain std `Arc`: it is immutable shared configuration, not
    /// state loom needs to model (a `ManualClock`'s own atomic comes from the facade).
    pub(crate) clock: std::sync::Arc<dyn Clock>,
    /// The limits in force; swapped by a reload at a step boundary.
    pub(crate) limits: SwapCell<SubmitLimits>,
}

impl SubmitLimits {
    pub(crate) fn new(config: &SchedulerConfig, epoch: u32) -> Self {
        let mut queue_capacity = [0; MAX_CLASSES];
        for (i, c) in config.classes.iter().enumerate() {
            queue_capacity[i] = c.queue_capacity;
        }
        SubmitLimits {
            epoch,
            classes: config.class_set(),
            queue_capacity,
            max_model_len: config.engine.max_model_len,
            block_size: config.engine.block_size,
            max_blocks: config
                .engine
                .total_blocks
                .saturating_sub(config.engine.watermark_blocks()),
        }
    }
}

impl Shared {
    pub(crate) fn new(config: &SchedulerConfig, clock: std::sync::Arc<dyn Clock>) -> Self {
        let n_shards = config.resolved_shards();
        let shards = (0..n_shards)
            .map(|_| Shard {
                rings: (0..MAX_CLASSES)
                    .map(|i| {
                        let slot = OnceLock::new();
                        if i < config.classes.len() {
                            let _ = slot.set(Ring::with_capacity(ring_slots(config, i)));
                        }
                        slot
                    })
                    .collect(),
                counters: CachePadded::new(ShardCounters {
                    submitted: std::array::from_fn(|_| AtomicU64::new(0)),
                    refused: std::array::from_fn(|_| AtomicU64::new(0)),
                }),
            })
            .collect();
        Self {
            shards,
            index: IdIndex::new(n_shards * 4),
            notices: NoticeQueue::new(),
            published_waiting: CachePadded::new(std::array::from_fn(|_| AtomicUsize::new(0))),
            status: AtomicU32::new(OPEN),
            clock,
            limits: SwapCell::new(std::sync::Arc::new(SubmitLimits::new(config, 0))),
        }
    }

    /// Creates the rings of any class position `config` has that has none yet, and
    /// returns the first position whose existing rings have another capacity than
    /// `config` asks (ring geometry is fixed once created).
    pub(crate) fn ensure_rings(&self, config: &SchedulerConfig) -> Result<(), (usize, usize)> {
        for i in 0..config.classes.len() {
            let want = ring_slots(config, i);
            if let Some(have) = self.shards[0].ring(i).map(Ring::capacity) {
                if have != want {
                    return Err((i, have));
                }
            }
        }
        let closed = self.is_closed();
        for shard in self.shards.iter() {
            for i in 0..config.classes.len() {
                if shard.rings[i].get().is_none() {
                    let ring = Ring::with_capacity(ring_slots(config, i));
                    if closed {
                        ring.close();
                    }
                    let _ = shard.rings[i].set(ring);
                }
            }
        }
        Ok(())
    }

    /// Whether ingress is closed.
    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: pairs with the Release in `close`.
        self.status.load(Ordering::Acquire) != OPEN
    }

    /// Closes every ring: later submits fail. `engine_gone` says whether it is because the
    /// scheduler was dropped mid-panic.
    pub(crate) fn close(&self, engine_gone: bool) {
        let status = if engine_gone { ENGINE_GONE } else { CLOSED };
        // Release: a submitter that sees the closed ring bit and then reads the status
        // (Acquire) sees this value. Stored before closing the rings for that reason.
        self.status.fetch_max(status, Ordering::Release);
        for shard in self.shards.iter() {
            for ring in shard.rings() {
                ring.close();
            }
        }
    }

    fn closed_error(&self) -> SubmitError {
        // Acquire: pairs with the Release in `close`.
        if self.status.load(Ordering::Acquire) == ENGINE_GONE {
            SubmitError::EngineGone
        } else {
            SubmitError::Closed
        }
    }

    /// Total submitted and refused so far, over all shards.
    pub(crate) fn ingress_totals(&self) -> ([u64; MAX_CLASSES + 1], [u64; MAX_CLASSES + 1]) {
        let mut submitted = [0; MAX_CLASSES + 1];
        let mut refused = [0; MAX_CLASSES + 1];
        for shard in self.shards.iter() {
            for (sum, n) in refused.iter_mut().zip(&shard.counters.refused) {
                // Acquire on `refused`, read first: pairs with the Release increment in
                // `refuse`, so every refusal we count has its earlier `submitted`
                // increment visible to the loads below (refused never exceeds submitted).
                *sum += n.load(Ordering::Acquire);
            }
        }
        for shard in self.shards.iter() {
            for (sum, n) in submitted.iter_mut().zip(&shard.counters.submitted) {
                // Relaxed: see above; drained requests' increments are visible through the
                // ring's Release/Acquire on the slot.
                *sum += n.load(Ordering::Relaxed);
            }
        }
        (submitted, refused)
    }
}

/// The API threads' handle: cheap to clone, `Send + Sync`, never blocks.
///
/// Every call answers at once: a request is queued or refused with a typed error, a cancel
/// or class change is recorded on the request and applied by the scheduler's next step.
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

fn shard_index(n: usize) -> usize {
    #[cfg(loom)]
    {
        let _ = n;
        0
    }
    #[cfg(not(loom))]
    {
        use std::cell::Cell;
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            /// This thread's shard seed, assigned round-robin on first use and kept for the
            /// thread's life so producers rarely share a ring.
            static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        MINE.with(|m| {
            if m.get() == usize::MAX {
                // Relaxed: only uniqueness-ish spreading matters, no data is published.
                m.set(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            }
            m.get() & (n - 1)
        })
    }
}

impl Submitter {
    /// Queues a request; returns its arrival time (stamped now by the scheduler's clock).
    ///
    /// Refused requests get a typed error and are counted under the `refused` outcome:
    /// an unknown class, zero token counts, a request longer than the model's context or
    /// larger than the KV cache, a duplicate id, a full queue, or a closed scheduler.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// // Any thread: a clone of the submitter per API thread.
    /// let arrival = api.submit(RequestSpec::new(1, Class::HIGH, 100, 16)).unwrap();
    /// assert_eq!(arrival, Timestamp::ZERO); // stamped with the scheduler's clock
    /// // A duplicate id, or a prompt past the context, is refused with a typed error.
    /// assert!(matches!(api.submit(RequestSpec::new(1, Class::LOW, 10, 1)), Err(SubmitError::DuplicateId(_))));
    /// assert!(matches!(api.submit(RequestSpec::new(2, Class::LOW, 1_000_000, 1)), Err(SubmitError::ExceedsContext { .. })));
    /// assert_eq!(sched.step(clock.now(), &room).unwrap().admitted.len(), 1);
    /// ```
    pub fn submit(&self, spec: RequestSpec) -> Result<Timestamp, SubmitError> {
        self.shared
            .limits
            .with(|limits| self.submit_with(limits, spec))
    }

    fn submit_with(
        &self,
        limits: &SubmitLimits,
        spec: RequestSpec,
    ) -> Result<Timestamp, SubmitError> {
        let shared = &*self.shared;
        let shard = &shared.shards[shard_index(shared.shards.len())];
        let slot = if limits.classes.contains(spec.class) {
            spec.class.index()
        } else {
            MAX_CLASSES
        };
        // Relaxed: a statistic; its visibility to the scheduler rides on the ring's
        // Release/Acquire (for drained requests) or on the Release of `refused`.
        shard.counters.submitted[slot].fetch_add(1, Ordering::Relaxed);
        let refuse = |e: SubmitError| {
            // Release: pairs with the Acquire in `ingress_totals`, which reads `refused`
            // before `submitted` and must see this thread's `submitted` increment.
            shard.counters.refused[slot].fetch_add(1, Ordering::Release);
            // The error path only: a labelled counter through the `metrics` facade.
            let class = limits
                .classes
                .names()
                .get(slot)
                .map_or("unknown", String::as_str);
            crate::telemetry::record_refused(class, crate::telemetry::RefuseReason::of(&e));
            tracing::debug!(id = spec.id.0, class, error = %e, "refused at submit");
            Err(e)
        };
        if let Err(e) = check(limits, &spec) {
            return refuse(e);
        }
        if shared.is_closed() {
            // Closed rather than a misleading QueueFull once nothing drains the queue.
            return refuse(shared.closed_error());
        }
        let class = spec.class.index();
        // Relaxed: a capacity hint the scheduler refreshes every step; the ring bound
        // limits how far past it a burst between two steps can go.
        if shared.published_waiting[class].load(Ordering::Relaxed) >= limits.queue_capacity[class] {
            return refuse(SubmitError::QueueFull {
                class: limits.classes.name(spec.class).to_string(),
                capacity: limits.queue_capacity[class],
            });
        }
        let Some(ring) = shard.ring(class) else {
            unreachable!("every configured class has its ring before the config is published");
        };
        let ticket = Arc::new(Ticket::new(spec.id));
        if !shared.index.insert(&ticket) {
            return refuse(SubmitError::DuplicateId(spec.id));
        }
        let arrival = shared.clock.now();
        let env = Envelope {
            ticket: Arc::clone(&ticket),
            spec,
            arrival,
            epoch: limits.epoch,
        };
        match ring.push(env) {
            Ok(()) => Ok(arrival),
            Err(push) => {
                // The request never reached the scheduler: end its ticket (a racing cancel
                // that found it in the index sees DONE or loses to us) and free the id.
                ticket.finish();
                shared.index.remove(&ticket);
                match push {
                    PushError::Full(_) => refuse(SubmitError::QueueFull {
                        class: limits.classes.name(spec.class).to_string(),
                        capacity: ring.capacity(),
                    }),
                    PushError::Closed(_) => refuse(shared.closed_error()),
                }
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
    /// api.submit(RequestSpec::new(1, Class::LOW, 100, 16)).unwrap();
    /// assert_eq!(api.cancel(RequestId(1)), Ok(CancelOutcome::WasWaiting));
    /// let d = sched.step(clock.now(), &room).unwrap();
    /// assert_eq!(d.cancelled, vec![RequestId(1)]); // it never starts
    /// assert!(api.cancel(RequestId(1)).is_err()); // ended: nothing left to cancel
    /// ```
    pub fn cancel(&self, id: RequestId) -> Result<CancelOutcome, ControlError> {
        let ticket = self
            .shared
            .index
            .get(id)
            .ok_or(ControlError::NotFound(id))?;
        let changed = ticket.cancel().map_err(|r| refused(id, r))?;
        if changed.must_notify {
            self.shared.notices.push(ticket);
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
    /// api.submit(RequestSpec::new(1, Class::LOW, 100, 16)).unwrap();
    /// api.submit(RequestSpec::new(2, Class::MEDIUM, 100, 16)).unwrap();
    /// api.reprioritize(RequestId(1), Class::HIGH).unwrap();
    /// let one = Budget { max_num_seqs: 1, ..room };
    /// let d = sched.step(clock.now(), &one).unwrap();
    /// assert_eq!(d.admitted[0].id, RequestId(1)); // now HIGH, ahead of MEDIUM
    /// ```
    pub fn reprioritize(&self, id: RequestId, class: Class) -> Result<(), ControlError> {
        self.shared
            .limits
            .with(|l| l.classes.check(class))
            .map_err(ControlError::Class)?;
        let ticket = self
            .shared
            .index
            .get(id)
            .ok_or(ControlError::NotFound(id))?;
        let changed = ticket.request_class(class).map_err(|r| refused(id, r))?;
        debug_assert!(changed.phase == QUEUED || changed.phase == RUNNING);
        if changed.must_notify {
            self.shared.notices.push(ticket);
        }
        Ok(())
    }

    /// The classes in force, for parsing API metadata (a copy: a configuration reload
    /// may change them).
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
    let blocks = tokens.div_ceil(u64::from(limits.block_size));
    if blocks > u64::from(limits.max_blocks) {
        return Err(SubmitError::NeverFits {
            id: spec.id,
            blocks_needed: blocks,
            blocks_available: limits.max_blocks,
        });
    }
    Ok(())
}

fn refused(id: RequestId, r: Refused) -> ControlError {
    match r {
        Refused::Cancelled => ControlError::AlreadyCancelled(id),
        Refused::Done => ControlError::NotFound(id),
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
