//! The steady-depth workload of the step benches (criterion's, `bench-compare`'s and
//! `slo-overhead`'s): a scheduler on a manual clock filled to a depth of small requests of
//! mixed classes, whose arrivals are spread over a window; each step admits a batch,
//! the engine reports the batch's prefill and finish, and as many new requests arrive, so
//! the depth holds.

use std::time::Duration;
use triage::{
    Budget, Class, Clock, Decision, FinishReason, LateRule, ManualClock, QueueOrder, RequestHandle,
    RequestSpec, Scheduler, SchedulerConfig, Submitter, TenantId, Timestamp,
};

/// Prompt tokens of every request: small, so that 256 admissions fit in a 2048-token
/// iteration (256 × 8 = 2048) and one KV block each.
pub const PROMPT: u32 = 8;
/// Output tokens of every request.
pub const MAX_NEW: u32 = 8;
/// Admissions per step.
pub const BATCH: u32 = 256;
/// Virtual time between two steps (one GPU iteration).
pub const STEP_DT: Duration = Duration::from_millis(10);
/// Submits between two draining steps while filling.
pub const FILL_CHUNK: usize = 4096;

/// A budget that admits nothing: steps with it only drain, apply notices and age.
pub const ZERO: Budget = Budget {
    max_num_seqs: 0,
    max_batched_tokens: 0,
    free_blocks: 0,
};

/// The default configuration (three classes, deadline order, 10 ms buckets) in the
/// default order, with room for `queued` waiting requests in every class: [`config_in`].
pub fn config(queued: usize) -> SchedulerConfig {
    config_in(QueueOrder::default(), queued)
}

/// The default configuration in queue order `order`, every class's `queue_capacity` at
/// least 2 × `queued` (it counts the requests waiting as of the last step plus those
/// submitted since).
///
/// In deadline order two defaults are changed:
/// * `deadline.relaxed_chunk_tokens` is 0 (no cap). The workload's LOW requests are all
///   *relaxed* (their end-to-end deadline is 35 s or more away), and relaxed prefills
///   share 512 tokens per iteration by default: 64 of these 8-token prompts, so a step
///   would admit about 235 rather than [`BATCH`] (which the ladder order admits). Without
///   the cap the step does the same work per candidate (its slack is still computed and
///   checked) and admits the batch.
/// * HIGH's `on_late` is `keep`, as every other class's. The fill leaves most of its HIGH
///   requests (a third of the depth) past their 500 ms TTFT deadline; HIGH's default,
///   `serve`, relegates them within HIGH, ahead of every MEDIUM and LOW request, so the
///   timed steps would admit that backlog while every fresh MEDIUM request went late
///   behind it and was relegated in bursts of up to 4,096 a step: an engine overloaded by
///   HIGH alone, not the steady depth the benches measure. Relegated behind every class,
///   the backlog waits behind the fresh arrivals, which the steps admit.
pub fn config_in(order: QueueOrder, queued: usize) -> SchedulerConfig {
    let mut c = SchedulerConfig {
        order,
        ..SchedulerConfig::default()
    };
    if order == QueueOrder::Deadline {
        c.deadline.relaxed_chunk_tokens = 0;
        c.classes[Class::HIGH.index()].on_late = LateRule::Keep;
    }
    for class in &mut c.classes {
        class.queue_capacity = class.queue_capacity.max(2 * queued);
    }
    c
}

/// [`config`] at 100k queued, with fairness between tenants `on` and room for `tenants`
/// tenants.
pub fn fairness_config(on: bool, tenants: u64) -> SchedulerConfig {
    let mut c = config(100_000);
    c.fairness.enabled = on;
    c.fairness.max_tenants = tenants as usize;
    c
}

/// The window the fill spreads its arrivals over: 1.25 × LOW's promotion threshold, so
/// that in the ladder order LOW buckets keep crossing into MEDIUM while the workload
/// steps. In deadline order the fill leaves most HIGH and MEDIUM requests past their TTFT
/// deadlines; the first steps relegate them as they come to them (at most 4,096 per step).
pub fn fill_window(cfg: &SchedulerConfig) -> Duration {
    let low = cfg.classes[Class::LOW.index()]
        .promote_after_ms
        .expect("LOW ages");
    Duration::from_millis(low + low / 4)
}

/// The class of the `i`-th request: one third each.
pub fn mixed_class(i: u64) -> Class {
    Class::from_index((i % 3) as u8)
}

/// The request of id `id` (no tenant): [`mixed_class`], [`PROMPT`] tokens in and
/// [`MAX_NEW`] out. Workloads that submit outside a [`SteadyDepth`] (the baselines of
/// `triage bench-compare`, its contended run) build the same requests by id.
pub fn spec(id: u64) -> RequestSpec {
    RequestSpec::new(id, mixed_class(id), PROMPT, MAX_NEW)
}

/// A scheduler on a manual clock with its submitter, a reusable decision and an id
/// counter; requests are spread over `tenants` tenants round robin (0: they carry none).
///
/// ```
/// use triage_testkit::steady::{self, SteadyDepth};
/// let mut w = SteadyDepth::filled(steady::config(2_000), 2_000, 0);
/// w.advance();
/// w.step_batch();
/// assert_eq!(w.d.admitted.len(), steady::BATCH as usize);
/// w.report_admitted();
/// w.refill();
/// assert_eq!(w.sched.waiting() + steady::BATCH as usize, 2_000); // the refill is in ingress
/// ```
pub struct SteadyDepth {
    /// The scheduler (engine side).
    pub sched: Scheduler,
    /// The API side.
    pub api: Submitter,
    /// The clock arrivals are stamped with.
    pub clock: ManualClock,
    /// The last step's decision (reused).
    pub d: Decision,
    /// The next request's id.
    pub next_id: u64,
    /// Tenants the requests are spread over (0: none).
    pub tenants: u64,
    /// The budget of a batch step: exactly `batch` admissions of [`PROMPT`] tokens, every
    /// KV block free.
    pub batch_budget: Budget,
}

impl SteadyDepth {
    /// An empty scheduler with `cfg`, clock at zero, batches of [`BATCH`].
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self::with_batch(cfg, BATCH)
    }

    /// An empty scheduler with `cfg`, clock at zero, batches of `batch`.
    pub fn with_batch(cfg: SchedulerConfig, batch: u32) -> Self {
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(cfg, clock.clone()).expect("valid config");
        let batch_budget = Budget {
            max_num_seqs: batch,
            max_batched_tokens: batch * PROMPT,
            free_blocks: sched.config().engine.total_blocks,
        };
        Self {
            sched,
            api,
            clock,
            d: Decision::default(),
            next_id: 0,
            tenants: 0,
            batch_budget,
        }
    }

    /// `cfg` filled to `n` waiting requests of [`mixed_class`] spread over
    /// [`fill_window`], round robin over `tenants` tenants.
    pub fn filled(cfg: SchedulerConfig, n: usize, tenants: u64) -> Self {
        Self::filled_with_batch(cfg, n, tenants, BATCH)
    }

    /// [`SteadyDepth::filled`] with batches of `batch`.
    pub fn filled_with_batch(cfg: SchedulerConfig, n: usize, tenants: u64, batch: u32) -> Self {
        let window = fill_window(&cfg);
        let mut w = Self::with_batch(cfg, batch);
        w.tenants = tenants;
        w.fill(n, window, FILL_CHUNK, mixed_class);
        w
    }

    /// `cfg` filled to `n` waiting requests as [`SteadyDepth::filled_with_batch`] fills
    /// them (no tenants), but each arrival stamped at its own time (the `i`-th at
    /// `fill_window × i / n`) rather than a chunk's at once: the fill of `triage
    /// bench-compare` and `triage slo-overhead`.
    pub fn filled_each(cfg: SchedulerConfig, n: usize, batch: u32) -> Self {
        let window = fill_window(&cfg);
        let mut w = Self::with_batch(cfg, batch);
        w.fill_stamped(n, window, FILL_CHUNK, mixed_class, true);
        w
    }

    /// The batch size.
    pub fn batch(&self) -> u32 {
        self.batch_budget.max_num_seqs
    }

    /// The spec of the next request, of `class`.
    fn next_spec(&mut self, class: Class) -> RequestSpec {
        let id = self.next_id;
        self.next_id += 1;
        let spec = RequestSpec::new(id, class, PROMPT, MAX_NEW);
        if self.tenants > 0 {
            spec.with_tenant(TenantId(id % self.tenants))
        } else {
            spec
        }
    }

    /// Submits one request of `class` stamped at the clock's time; its handle.
    pub fn submit(&mut self, class: Class) -> RequestHandle {
        let spec = self.next_spec(class);
        self.api.submit(spec).expect("submit within capacity")
    }

    /// A step at the clock's time with `budget`, into [`SteadyDepth::d`].
    pub fn step(&mut self, budget: &Budget) {
        let now = self.clock.now();
        self.sched
            .step_into(now, budget, &mut self.d)
            .expect("valid budget");
    }

    /// Fills to `n` waiting requests whose arrivals are spread evenly over `window`
    /// (ending at the clock's time on return), classes from `class_of(i)`, draining every
    /// `chunk` submits with a zero-budget step. Their handles, in submit order.
    ///
    /// The submits of a chunk share one arrival time, the first one's: the fill of the
    /// criterion benches. [`SteadyDepth::filled_each`] stamps each at its own.
    pub fn fill(
        &mut self,
        n: usize,
        window: Duration,
        chunk: usize,
        class_of: impl Fn(u64) -> Class,
    ) -> Vec<RequestHandle> {
        self.fill_stamped(n, window, chunk, class_of, false)
    }

    /// [`SteadyDepth::fill`], each arrival stamped at its own time if `each`.
    fn fill_stamped(
        &mut self,
        n: usize,
        window: Duration,
        chunk: usize,
        class_of: impl Fn(u64) -> Class,
        each: bool,
    ) -> Vec<RequestHandle> {
        let start = self.clock.now();
        let span = window.as_nanos() as u64;
        let at = |i: u64| Timestamp(start.0 + span * i / n as u64);
        let mut handles = Vec::with_capacity(n);
        let mut i = 0u64;
        while (i as usize) < n {
            self.clock.set(at(i));
            for _ in 0..chunk.min(n - i as usize) {
                if each {
                    self.clock.set(at(i));
                }
                handles.push(self.submit(class_of(i)));
                i += 1;
            }
            self.step(&ZERO);
        }
        self.clock.set(Timestamp(start.0 + span));
        self.step(&ZERO);
        assert_eq!(self.sched.waiting(), n, "fill reached its target");
        handles
    }

    /// Moves the clock one iteration ([`STEP_DT`]) on.
    pub fn advance(&mut self) {
        self.clock.advance(STEP_DT);
    }

    /// The batch step: a step with the batch budget, which must admit a full batch.
    pub fn step_batch(&mut self) {
        let budget = self.batch_budget;
        self.step(&budget);
        assert_eq!(self.d.admitted.len(), self.batch() as usize, "a full batch");
    }

    /// Reports each admitted request's whole prefill with its first token, then its
    /// finish: the engine's callbacks after a batch step.
    pub fn report_admitted(&mut self) {
        let now = self.clock.now();
        for a in &self.d.admitted {
            self.sched
                .on_progress(a.handle, now, a.prefill_tokens, 1)
                .expect("admitted request runs");
            self.sched
                .on_finished(a.handle, now, FinishReason::Stop)
                .expect("admitted request runs");
        }
    }

    /// Reports each admitted request finished (no progress): the next step starts with
    /// nothing running.
    pub fn finish_admitted(&mut self) {
        let now = self.clock.now();
        for a in &self.d.admitted {
            self.sched
                .on_finished(a.handle, now, FinishReason::Stop)
                .expect("admitted request runs");
        }
    }

    /// Submits a batch of new requests of [`mixed_class`], so the depth holds.
    pub fn refill(&mut self) {
        for _ in 0..self.batch() {
            let i = self.next_id;
            self.submit(mixed_class(i));
        }
    }

    /// Requests the scheduler has relegated or shed, all classes.
    pub fn judged_late(&self) -> u64 {
        (0..self.sched.classes().len())
            .map(|c| {
                let k = self.sched.class_counters(Class::from_index(c as u8));
                k.relegated + k.shed
            })
            .sum()
    }
}
