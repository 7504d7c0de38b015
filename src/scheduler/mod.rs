//! The engine thread's side: [`Scheduler`] owns every request after ingress and, once per
//! GPU iteration, turns the waiting queue and the engine's budget into a [`Decision`].
//!
//! The files of this module split the step by what each part touches:
//! `ingest.rs` (rings and notices → wait queue), `plan.rs` (running work, admission,
//! preemption), `engine.rs` (the engine's progress and finish callbacks, hand-off).

mod deadline;
mod engine;
mod fairness;
mod ingest;
mod pace;
mod plan;
mod reload;
#[cfg(feature = "metrics")]
mod tenant_metrics;

pub use reload::ConfigHandle;

use crate::budget::Budget;
use crate::class::{ClassSet, MAX_CLASSES};
use crate::config::SchedulerConfig;
use crate::counters::{ClassCounters, Conservation, Outcome, SchedCounters};
use crate::decision::{Decision, RejectReason, Rejected};
use crate::error::{BudgetError, ConfigError};
use crate::ingress::{Drain, Shared, Submitter};
use crate::queue::slab::{Place, Slab};
use crate::queue::{Candidate, Tiers};
#[cfg(feature = "slo")]
use crate::slo::{SloTracker, Violation};
use crate::sync::Arc;
#[cfg(feature = "metrics")]
use crate::telemetry::{ClassStep, StepMetrics, StepReport};
use crate::time::{Clock, MonotonicClock, SharedClock, Timestamp};
use std::time::Duration;

/// The scheduler. One engine thread owns it and calls [`Scheduler::step`] once per
/// iteration; API threads hold [`Submitter`]s.
///
/// ```
/// use triage::{Budget, Class, ManualClock, RequestSpec, Scheduler, SchedulerConfig, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::ZERO);
/// let (mut sched, submitter) =
///     Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
///
/// // API threads: submit (never blocks).
/// submitter.submit(RequestSpec::new(1, Class::LOW, 100, 20)).unwrap();
/// submitter.submit(RequestSpec::new(2, Class::HIGH, 100, 20)).unwrap();
///
/// // Engine thread, once per iteration.
/// let budget = Budget { max_num_seqs: 1, max_batched_tokens: 2048, free_blocks: 7000 };
/// let d = sched.step(clock.now(), &budget).unwrap();
/// assert_eq!(d.admitted.len(), 1);
/// assert_eq!(d.admitted[0].id.0, 2); // HIGH first
///
/// // The engine reports progress by the request's handle; the request finishes.
/// let h = d.admitted[0].handle;
/// sched.on_progress(h, clock.now(), 100, 1).unwrap();
/// sched.on_finished(h, clock.now(), triage::FinishReason::Stop).unwrap();
/// assert!(sched.conservation().is_balanced());
/// # use triage::Clock;
/// ```
pub struct Scheduler {
    shared: Arc<Shared>,
    config: SchedulerConfig,
    classes: ClassSet,
    slab: Slab,
    wait: Tiers,
    /// Running entries' keys, oldest start first.
    running: Vec<u32>,
    /// Keys in `running` whose requests ended and that are still in it: `on_finished`
    /// leaves them for the next step, which compacts `running` before it inserts anything
    /// into the slab; a cancel applied in the step's ingest leaves its key until the
    /// ingest is done (a new request drained meanwhile may reuse the slot, but waits: only
    /// live entries marked running count). Keeps `on_finished` O(1).
    running_ended: usize,
    /// The consumer side of ingress (only the scheduler pops), the slots freed this step
    /// and the capacity units held.
    drain: Drain,
    counters: SchedCounters,
    /// Requests drained from the rings so far.
    drained: u64,
    /// Whether `drain_waiting` has run: ingress is closed and every ring was emptied, so
    /// none may hold a request again (`check_invariants`).
    handed_off: bool,
    last_now: Timestamp,
    /// Steps taken, wrapping (compared for equality only).
    step_no: u32,
    max_wait: Duration,
    queue_timeout: Option<Duration>,
    /// Candidates skipped by backfill in the current step, in order taken.
    skipped: Vec<Candidate>,
    /// Requests preempted in the current step, queued again at its end.
    requeue: Vec<u32>,
    /// Scratch for the requests drained in a step (sorted by arrival before queueing).
    batch: Vec<crate::ingress::Drained>,
    /// Scratch for the drained requests' `(class, tenant slot)` (see `look_ahead`).
    ahead: Vec<(usize, u32)>,
    /// Proposed configurations, from any thread.
    pending: Arc<reload::Pending>,
    /// The configuration epoch in force; `epoch_maps[e]` maps class indexes of epoch `e`
    /// to epoch `e + 1` (for requests submitted before a reload and drained after it).
    epoch: u32,
    epoch_maps: Vec<[u8; MAX_CLASSES]>,
    /// Reloads applied and refused.
    reloads: (u64, u64),
    /// SLO tracking, fed by every lifecycle event.
    #[cfg(feature = "slo")]
    slo: SloTracker,
    /// Metric handles (registered with the recorder installed at construction).
    #[cfg(feature = "metrics")]
    metrics: StepMetrics,
    /// Per class counts of the current step, for the metrics.
    #[cfg(feature = "metrics")]
    step_counts: [ClassStep; MAX_CLASSES],
    /// Tenants held, with fairness on (`fairness.rs`).
    tenants: crate::fair::tenants::Tenants,
    /// With `fairness.tenant_metrics` on: each tenant slot's `triage_tenant_tokens_total`
    /// counters, by class and kind (`fairness.rs`), made at first use and dropped when the
    /// slot goes to another tenant.
    #[cfg(feature = "metrics")]
    tenant_tokens: Vec<[Option<metrics::Counter>; 2 * MAX_CLASSES]>,
    /// When the per-tenant gauges were last set.
    #[cfg(feature = "metrics")]
    tenant_metrics_at: Option<Timestamp>,
    /// The engine's measured pace (deadline order's estimates).
    pace: pace::Pace,
    /// Deadline order: prompt tokens that requests past `max_wait` may still take ahead of
    /// class order (earned at `deadline.overdue_share` of each step's token budget).
    overdue_credit: u64,
    /// Deadline order: how many more waiting requests this step may relegate or shed.
    late_left: u32,
    /// Scratch: decodes held back for an urgent prefill in the current step.
    withheld: Vec<u32>,
    /// Promotions counted as requests were queued in the current step (aged past a
    /// threshold before a step took them), for the step's summary.
    promoted_on_arrival: u64,
}

impl Scheduler {
    /// A scheduler on the monotonic wall clock.
    pub fn new(config: SchedulerConfig) -> Result<(Scheduler, Submitter), ConfigError> {
        Self::with_clock(config, MonotonicClock::new())
    }

    /// A scheduler whose arrivals are stamped by `clock` (use [`crate::ManualClock`] in
    /// tests and simulators). Pass the same clock's `now()` to [`Scheduler::step`].
    ///
    /// ```
    /// use triage::*;
    /// use std::time::Duration;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// clock.advance(Duration::from_millis(250));
    /// api.submit(RequestSpec::new(1, Class::LOW, 100, 4)).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// let d = sched.step(clock.now(), &room).unwrap();
    /// assert_eq!(d.admitted[0].arrival, Timestamp::from_millis(250)); // exact, injected
    /// ```
    pub fn with_clock(
        config: SchedulerConfig,
        clock: impl Clock,
    ) -> Result<(Scheduler, Submitter), ConfigError> {
        config.validate()?;
        let (shared, drain) = Shared::new(&config, SharedClock::new(clock));
        let shared = Arc::new(shared);
        let wait = reload::new_wait_queue(&config);
        let classes = config.class_set();
        #[cfg(feature = "slo")]
        let slo = SloTracker::new(config.slo.clone(), &classes)?;
        #[cfg(feature = "metrics")]
        let metrics = StepMetrics::new(&classes, Some(&config.slo));
        let config_fairness = config.fairness.clone();
        let config_initial_iteration = config.deadline.initial_iteration_ms;
        let sched = Scheduler {
            shared: Arc::clone(&shared),
            classes,
            max_wait: config.max_wait(),
            queue_timeout: config.queue_timeout_ms.map(Duration::from_millis),
            config,
            slab: Slab::keyed_by(Arc::clone(&shared.table)),
            wait,
            running: Vec::new(),
            running_ended: 0,
            drain,
            counters: SchedCounters::default(),
            drained: 0,
            handed_off: false,
            last_now: Timestamp::ZERO,
            step_no: 0,
            skipped: Vec::new(),
            requeue: Vec::new(),
            batch: Vec::new(),
            ahead: Vec::new(),
            pending: Arc::new(reload::Pending::default()),
            epoch: 0,
            epoch_maps: Vec::new(),
            reloads: (0, 0),
            #[cfg(feature = "slo")]
            slo,
            #[cfg(feature = "metrics")]
            metrics,
            #[cfg(feature = "metrics")]
            step_counts: [ClassStep::default(); MAX_CLASSES],
            tenants: crate::fair::tenants::Tenants::new(&config_fairness),
            #[cfg(feature = "metrics")]
            tenant_tokens: Vec::new(),
            #[cfg(feature = "metrics")]
            tenant_metrics_at: None,
            pace: pace::Pace::new(Duration::from_millis(config_initial_iteration)),
            overdue_credit: 0,
            late_left: 0,
            withheld: Vec::new(),
            promoted_on_arrival: 0,
        };
        Ok((sched, Submitter { shared }))
    }

    /// Chunks of the request table allocated so far (tests of its growth).
    #[cfg(test)]
    pub(crate) fn table_chunks(&self) -> usize {
        self.shared.table.chunks_allocated()
    }

    /// A new handle for API threads.
    pub fn submitter(&self) -> Submitter {
        Submitter {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// The configured classes.
    pub fn classes(&self) -> &ClassSet {
        &self.classes
    }

    /// Whether the queue is in deadline order.
    pub(crate) fn by_deadline(&self) -> bool {
        self.config.order == crate::config::QueueOrder::Deadline
    }

    /// The engine's mean iteration time as the scheduler has measured it from the times of
    /// consecutive steps that gave it work (`deadline.initial_iteration_ms` until then).
    /// Deadline order estimates first-token and run times from it.
    pub fn iteration_estimate(&self) -> Duration {
        self.pace.iteration()
    }

    /// Decides the next iteration. See [`Scheduler::step_into`].
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// api.submit(RequestSpec::new(1, Class::LOW, 100, 4)).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// assert_eq!(sched.step(clock.now(), &room).unwrap().admitted.len(), 1);
    /// // A budget claiming more free blocks than the engine has is refused.
    /// let bad = Budget { free_blocks: u32::MAX, ..room };
    /// assert!(matches!(sched.step(clock.now(), &bad), Err(BudgetError::FreeBlocksExceedTotal { .. })));
    /// ```
    pub fn step(&mut self, now: Timestamp, budget: &Budget) -> Result<Decision, BudgetError> {
        let mut d = Decision::default();
        self.step_into(now, budget, &mut d)?;
        Ok(d)
    }

    /// Decides the next iteration into `out` (cleared first), reusing its allocations.
    ///
    /// In order: promote aged buckets; take new requests from the ingress rings and apply
    /// cancels and class changes; time out requests past `queue_timeout`; give running
    /// requests their next prefill chunk or decode token (preempting the lowest-class,
    /// newest request when a decode needs a KV block that is not free); then admit waiting
    /// requests in order — overdue first, then by effective class, FIFO inside a class —
    /// preempting lower classes where allowed and backfilling a bounded number past a head
    /// that does not fit (never past an overdue one).
    ///
    /// A budget with more free blocks than the engine has, or a `now` earlier than the
    /// previous step's, is refused and changes nothing.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// let mut d = Decision::default(); // one decision, reused by every step
    /// for id in 0..3 {
    ///     api.submit(RequestSpec::new(id, Class::HIGH, 100, 4)).unwrap();
    ///     sched.step_into(clock.now(), &room, &mut d).unwrap();
    ///     assert_eq!(d.admitted.len(), 1); // cleared first: only this step's
    /// }
    /// ```
    pub fn step_into(
        &mut self,
        now: Timestamp,
        budget: &Budget,
        out: &mut Decision,
    ) -> Result<(), BudgetError> {
        if budget.free_blocks > self.config.engine.total_blocks {
            return Err(BudgetError::FreeBlocksExceedTotal {
                free: budget.free_blocks,
                total: self.config.engine.total_blocks,
            });
        }
        if now < self.last_now {
            return Err(BudgetError::TimeWentBackwards {
                now: now.0,
                previous: self.last_now.0,
            });
        }
        #[cfg(feature = "metrics")]
        let started = std::time::Instant::now();
        self.pace.step(now, budget.max_batched_tokens);
        self.last_now = now;
        self.step_no = self.step_no.wrapping_add(1);
        out.clear(now);
        let span = tracing::debug_span!("triage.step", step = self.step_no, now = now.0);
        let _enter = span.enter();

        // Before anything is inserted into the slab: no ended key may name a new entry.
        self.compact_running();
        let mut promoted = [0u64; MAX_CLASSES];
        out.summary.promoted = self.wait.promote(&mut self.slab, now, &mut promoted);
        for (c, &n) in promoted.iter().enumerate() {
            self.counters.per_class[c].promoted += n;
            #[cfg(feature = "metrics")]
            {
                self.step_counts[c].promoted += n;
            }
            if n > 0 {
                tracing::debug!(class = c, promoted = n, "buckets aged into the class above");
            }
        }
        self.ingest(now, out);
        self.compact_running();
        out.summary.promoted += std::mem::take(&mut self.promoted_on_arrival);
        out.reload = self.apply_pending_reload(now);
        self.expire(now, out);
        self.plan(now, budget, out);
        // What the plan left of this step's arrivals joins its lanes.
        self.wait.flush(&mut self.slab);

        out.summary.waiting = self.wait.len();
        out.summary.running = self.running.len();
        self.pace.worked(out.summary.tokens);
        #[cfg(feature = "slo")]
        self.slo.tick(now, &mut self.slab);
        #[cfg(feature = "metrics")]
        self.publish_metrics(now, budget, started.elapsed());
        self.settle_ingress();
        tracing::debug!(
            drained = out.summary.drained,
            promoted = out.summary.promoted,
            admitted = out.admitted.len(),
            preempted = out.preempted.len(),
            aborted = out.aborted.len(),
            rejected = out.rejected.len(),
            waiting = out.summary.waiting,
            running = out.summary.running,
            tokens = out.summary.tokens,
            stopped_by = out.summary.stopped_by.map(|s| s.as_str()),
            "step decided"
        );
        Ok(())
    }

    #[cfg(feature = "metrics")]
    fn publish_metrics(&mut self, now: Timestamp, budget: &Budget, took: Duration) {
        let n = self.classes.len();
        for c in 0..n {
            self.step_counts[c].waiting = self.wait.base_len(c) as u64;
            self.step_counts[c].running = 0;
        }
        for &k in &self.running {
            self.step_counts[self.slab[k].spec.class.index()].running += 1;
        }
        self.metrics.publish(&StepReport {
            classes: &self.step_counts[..n],
            step_duration: took,
            kv_free_blocks: budget.free_blocks,
            kv_total_blocks: self.config.engine.total_blocks,
        });
        #[cfg(feature = "slo")]
        self.metrics.publish_slo(&mut self.slo, now);
        if self.tenant_metrics_at.is_none_or(|t| {
            now.saturating_since(t) >= crate::telemetry::DEFAULT_COMPLIANCE_INTERVAL
        }) {
            self.tenant_metrics_at = Some(now);
            self.publish_tenant_depths();
        }
        self.step_counts = [ClassStep::default(); MAX_CLASSES];
    }

    /// The SLO tracker, read-only: compliance per class and window, percentiles,
    /// violation totals. With the `slo` feature (on by default).
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// let h = api.submit(RequestSpec::new(1, Class::HIGH, 100, 1)).unwrap();
    /// sched.step(clock.now(), &room).unwrap();
    /// clock.advance(std::time::Duration::from_millis(120));
    /// sched.on_progress(h, clock.now(), 100, 1).unwrap(); // first token after 120 ms
    /// let c = sched.slo().compliance(Class::HIGH, SloWindow::Cumulative, clock.now()).unwrap();
    /// let ttft = c.ttft.unwrap(); // HIGH's default target: p99 TTFT within 500 ms
    /// assert_eq!((ttft.samples, ttft.is_met()), (1, Some(true)));
    /// ```
    #[cfg(feature = "slo")]
    pub fn slo(&self) -> &SloTracker {
        &self.slo
    }

    /// A bounded channel of SLO violations as they happen (a queued request past its TTFT
    /// bound is reported while still queued). A slow consumer never blocks the step:
    /// reports that do not fit are dropped and counted. With the `slo` feature.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let violations = sched.subscribe_violations(64);
    /// api.submit(RequestSpec::new(1, Class::HIGH, 100, 1)).unwrap();
    /// let full = Budget { max_num_seqs: 0, max_batched_tokens: 0, free_blocks: 0 };
    /// sched.step(clock.now(), &full).unwrap(); // queued; nothing can start
    /// clock.advance(std::time::Duration::from_millis(600));
    /// sched.step(clock.now(), &full).unwrap(); // past HIGH's 500 ms TTFT bound, still queued
    /// let v = violations.try_recv().unwrap();
    /// assert_eq!((v.id, v.kind, v.while_queued), (RequestId(1), ViolationKind::Ttft, true));
    /// ```
    #[cfg(feature = "slo")]
    pub fn subscribe_violations(
        &mut self,
        capacity: usize,
    ) -> crossbeam_channel::Receiver<Violation> {
        self.slo.subscribe(capacity)
    }

    #[cfg(feature = "metrics")]
    /// Re-registers the metric handles with the recorder installed now (the library never
    /// installs one; handles taken before a recorder exists are no-ops).
    pub fn refresh_metrics(&mut self) {
        self.metrics = StepMetrics::new(&self.classes, Some(&self.config.slo));
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.wait.len()
    }

    /// Requests waiting in effective class `class` (after aging).
    pub fn waiting_in(&self, class: crate::Class) -> usize {
        if self.classes.contains(class) {
            self.wait.class_len(class.index())
        } else {
            0
        }
    }

    /// Relegated requests of `class` waiting now (deadline order: they could no longer
    /// meet their deadline and wait after every request that can, or, under
    /// [`crate::LateRule::Serve`], after those of their own class).
    pub fn relegated_in(&self, class: crate::Class) -> usize {
        if self.classes.contains(class) {
            self.wait.relegated_len(class.index())
        } else {
            0
        }
    }

    /// Requests running now.
    pub fn running(&self) -> usize {
        self.running.len() - self.running_ended
    }

    /// Keys of the requests running now, in start order (`running` less the ended ones
    /// not compacted yet).
    fn running_keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.running
            .iter()
            .copied()
            .filter(|&k| still_running(&self.slab, k))
    }

    /// Ends the step's business with ingress: the capacity units held become the requests
    /// waiting per base class, and the slots of ended requests go back to producers. The
    /// running list may still name an ended slot; the next step compacts it before it
    /// drains anything into the slab, so a reused slot never meets a stale key.
    fn settle_ingress(&mut self) {
        let live = self.classes.len();
        let wait = &self.wait;
        self.drain.settle(self.shared.limits.counts(), |c| {
            if c < live {
                wait.base_len(c)
            } else {
                0
            }
        });
        self.drain.release(&self.shared.table);
    }

    /// Drops the ended requests' keys from `running` (see [`Scheduler::running_ended`]).
    fn compact_running(&mut self) {
        if self.running_ended > 0 {
            let slab = &self.slab;
            self.running.retain(|&k| still_running(slab, k));
            self.running_ended = 0;
        }
    }

    /// Counters of one class, ingress included.
    pub fn class_counters(&self, class: crate::Class) -> ClassCounters {
        let (submitted, refused) = self.drain.totals(&self.shared);
        let i = class.index().min(MAX_CLASSES - 1);
        let mut c = self.counters.per_class[i];
        c.submitted = submitted[i];
        // Refused at submit, plus refused when drained (past the tenant limit).
        c.refused += refused[i];
        c.waiting = self.wait.base_len(i) as u64;
        c.running = self
            .running_keys()
            .filter(|&k| self.slab[k].spec.class.index() == i)
            .count() as u64;
        c
    }

    /// The conservation law now. Balanced at every step boundary.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// api.submit(RequestSpec::new(1, Class::LOW, 100, 4)).unwrap();
    /// assert!(api.submit(RequestSpec::new(2, Class::LOW, 0, 4)).is_err()); // refused
    /// let c = sched.conservation();
    /// assert_eq!((c.submitted, c.refused, c.in_ingress), (2, 1, 1));
    /// let no_room = Budget { max_num_seqs: 0, max_batched_tokens: 0, free_blocks: 1000 };
    /// sched.step(clock.now(), &no_room).unwrap();
    /// let c = sched.conservation();
    /// assert_eq!((c.in_ingress, c.waiting), (0, 1));
    /// assert!(c.is_balanced());
    /// ```
    pub fn conservation(&self) -> Conservation {
        let (submitted, refused) = self.drain.totals(&self.shared);
        let submitted: u64 = submitted.iter().sum();
        let refused: u64 = refused.iter().sum();
        let mut c = Conservation {
            submitted,
            refused,
            in_ingress: submitted.saturating_sub(refused + self.drained),
            waiting: self.wait.len() as u64,
            running: self.running() as u64,
            ..Conservation::default()
        };
        for pc in self
            .counters
            .per_class
            .iter()
            .chain([&self.counters.retired])
        {
            c.refused += pc.refused; // refused when drained
            c.finished += pc.finished;
            c.cancelled += pc.cancelled;
            c.timed_out += pc.timed_out;
            c.evicted += pc.evicted;
            c.shed += pc.shed;
        }
        c
    }

    /// Checks every internal invariant: the conservation law on the scheduler's side (every
    /// drained request is waiting, running or ended), ingress never negative, every ingress
    /// ring consistent (no accepted request overwritten) and, after
    /// [`Scheduler::drain_waiting`], empty (nothing stranded in ingress), the wait queue's
    /// structure, and the indexes agreeing. For tests; O(requests held + rings).
    pub fn check_invariants(&self) -> Result<(), String> {
        // Closed and drained: every push landed before the close and was taken, so any
        // request still in a queue was accepted and will never be taken.
        if self.handed_off && !self.drain.all_empty() {
            return Err(
                "requests stranded in ingress after drain_waiting emptied the \
                        closed queues"
                    .to_string(),
            );
        }
        let c = self.conservation();
        let refused_when_drained: u64 = self
            .counters
            .per_class
            .iter()
            .chain([&self.counters.retired])
            .map(|pc| pc.refused)
            .sum();
        if c.submitted < c.refused - refused_when_drained + self.drained {
            return Err(format!(
                "more drained than accepted: {c}, drained {}",
                self.drained
            ));
        }
        let ended =
            refused_when_drained + c.finished + c.cancelled + c.timed_out + c.evicted + c.shed;
        if self.drained != c.waiting + c.running + ended {
            return Err(format!("drained {} != held + ended: {c}", self.drained));
        }
        self.wait.check(&self.slab)?;
        if self.slab.len() != self.wait.len() + self.running() {
            return Err(format!(
                "slab {} / waiting {} + running {} disagree",
                self.slab.len(),
                self.wait.len(),
                self.running()
            ));
        }
        if self.running_keys().count() != self.running() {
            return Err(format!(
                "{} running keys, {} ended not compacted, {} live",
                self.running.len(),
                self.running_ended,
                self.running_keys().count()
            ));
        }
        let mut started = 0;
        for (k, e) in self.slab.iter() {
            let h = e.handle();
            if h.index() != k {
                return Err(format!("{} held at slab key {k}", e.spec.id));
            }
            // Every running request has its run record (made at its first admission).
            if e.run != crate::queue::slab::NIL {
                started += 1;
            } else if e.place == crate::queue::slab::Place::Running {
                return Err(format!("{} is running without a run record", e.spec.id));
            }
            // A held request's slot is live under its handle: never freed while held.
            if self.shared.table.phase(h).is_err() {
                return Err(format!("{} is held but its {h} is stale", e.spec.id));
            }
        }
        if started != self.slab.runs_held() {
            return Err(format!(
                "{started} held requests have run records, {} records are held",
                self.slab.runs_held()
            ));
        }
        Ok(())
    }

    /// Ends `key` as `outcome` (a refusal or a timeout) and reports it in `out.rejected`
    /// with `reason`, unless a cancel won the race to the table slot: then it ended
    /// `Cancelled` and is reported in `out.cancelled`. Whether it was rejected.
    fn end_rejected(
        &mut self,
        key: u32,
        outcome: Outcome,
        reason: RejectReason,
        now: Timestamp,
        out: &mut Decision,
    ) -> bool {
        let (id, class) = (self.slab[key].spec.id, self.slab[key].spec.class);
        if self.end(key, outcome, now) == Outcome::Cancelled {
            out.cancelled.push(id);
            return false;
        }
        out.rejected.push(Rejected { id, class, reason });
        true
    }

    /// Ends a held entry: frees it everywhere and counts it. The outcome is `outcome`
    /// unless a client's cancel reached the table slot first, in which case it is `Cancelled`:
    /// the table slot's single atomic word decides, so the cancel that was acknowledged is the
    /// one that counts. Returns the outcome counted.
    fn end(&mut self, key: u32, outcome: Outcome, now: Timestamp) -> Outcome {
        // Read in place, then dropped in place: moving the entry out would copy all of it.
        let e = &self.slab[key];
        let (tenant, id, handle, class) = (e.tenant, e.spec.id, e.handle(), e.spec.class.index());
        let outcome = match self.shared.table.finish(&e.token) {
            crate::ingress::table::CANCEL_QUEUED | crate::ingress::table::CANCEL_RUNNING => {
                Outcome::Cancelled
            }
            _ => outcome,
        };
        self.release_tenant(tenant);
        if let Some(index) = &self.shared.index {
            index.remove(id, handle);
        }
        self.counters.outcome(class, outcome);
        #[cfg(feature = "metrics")]
        match outcome {
            Outcome::Finished => {}
            Outcome::TimedOut => self.step_counts[class].timed_out += 1,
            Outcome::Shed => self.step_counts[class].shed += 1,
            Outcome::Cancelled | Outcome::Evicted | Outcome::Refused => {
                self.step_counts[class].cancelled += u64::from(outcome == Outcome::Cancelled);
            }
        }
        // Anything but a finish is censored like a cancel (a hand-off too): no latency
        // sample, only the misses so far.
        #[cfg(feature = "slo")]
        self.slo.ended(
            key,
            &mut self.slab.tracked(key),
            now,
            outcome == Outcome::Finished,
        );
        #[cfg(not(feature = "slo"))]
        let _ = now; // only the SLO tracker samples when a request ended

        // The handle is stale from here on; the slot returns to producers with the step's
        // batch.
        let token = self.slab.remove_in_place(key);
        self.drain.free(&self.shared.table, token);
        outcome
    }
}

impl Drop for Scheduler {
    /// Closes ingress so API threads get an error instead of queueing into a scheduler that
    /// no longer runs: [`crate::SubmitError::EngineGone`] if the engine thread is
    /// unwinding from a panic, [`crate::SubmitError::Closed`] otherwise.
    fn drop(&mut self) {
        self.shared.close(std::thread::panicking());
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("waiting", &self.wait.len())
            .field("running", &self.running())
            .field("step", &self.step_no)
            .finish_non_exhaustive()
    }
}

/// Whether `key` in the running list still names a running request (not one ended since
/// the list was last compacted, nor a waiting request drained into its slot meanwhile).
fn still_running(slab: &crate::queue::slab::Slab, key: u32) -> bool {
    slab.get(key).is_some_and(|e| e.place == Place::Running)
}
