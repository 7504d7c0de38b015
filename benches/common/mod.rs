//! Helpers shared by the criterion benches: configurations sized for large queues, and a
//! scheduler filled to a target depth on a [`ManualClock`].

#![allow(dead_code)] // each bench uses a different subset

use std::time::Duration;
use triage::{
    Budget, Class, Clock, Decision, ManualClock, QueueOrder, RequestHandle, RequestSpec, Scheduler,
    SchedulerConfig, Submitter, Timestamp,
};

/// Prompt tokens of every bench request: small, so that 256 admissions fit in a 2048-token
/// iteration (256 × 8 = 2048) and one KV block each.
pub const PROMPT: u32 = 8;
/// Output tokens of every bench request.
pub const MAX_NEW: u32 = 8;
/// Admissions per step in the step benches.
pub const BATCH: u32 = 256;
/// Virtual time between two steps (one GPU iteration).
pub const STEP_DT: Duration = Duration::from_millis(10);

/// The default configuration (three classes, deadline order, 10 ms buckets), with room for
/// `queued` waiting requests in every class (`queue_capacity` 2 × `queued`, counting the
/// requests waiting as of the last step plus those submitted since): [`config_in`] the
/// default order.
pub fn config(queued: usize) -> SchedulerConfig {
    config_in(QueueOrder::default(), queued)
}

/// [`config`] in queue order `order`.
///
/// In deadline order one default is changed: `deadline.relaxed_chunk_tokens` is 0 (no
/// cap). The step benches' LOW requests are all *relaxed* (their end-to-end deadline is
/// 35 s or more away), and relaxed prefills share 512 tokens per iteration by default: 64
/// of these 8-token prompts, so a step would admit about 235 rather than the [`BATCH`] the
/// benches time (and that the ladder order admits). Without the cap the step does the same
/// work per candidate (its slack is still computed and checked) and admits the batch.
pub fn config_in(order: QueueOrder, queued: usize) -> SchedulerConfig {
    let mut c = SchedulerConfig {
        order,
        ..SchedulerConfig::default()
    };
    if order == QueueOrder::Deadline {
        c.deadline.relaxed_chunk_tokens = 0;
    }
    for class in &mut c.classes {
        class.queue_capacity = (2 * queued).max(class.queue_capacity);
    }
    c
}

/// [`config`] at 100k queued, with fairness between tenants `on` and room for `tenants`
/// tenants: the fairness step benches (`step`'s criterion group and `fairness_ratio`).
pub fn fairness_config(on: bool, tenants: u64) -> SchedulerConfig {
    let mut c = config(100_000);
    c.fairness.enabled = on;
    c.fairness.max_tenants = tenants as usize;
    c
}

/// The window the step benches spread the initial arrivals over: 1.25 × LOW's promotion
/// threshold, so that in the ladder order LOW buckets keep crossing into MEDIUM while the
/// benches step. In deadline order the fill leaves most HIGH and MEDIUM requests past
/// their TTFT deadlines; the first steps relegate them as they come to them (at most 4,096
/// per step), within criterion's warm-up.
pub fn fill_window(cfg: &SchedulerConfig) -> Duration {
    let low = cfg.classes[Class::LOW.index()]
        .promote_after_ms
        .expect("LOW ages");
    Duration::from_millis(low + low / 4)
}

/// A budget that admits nothing: steps with it only drain, apply notices and age.
pub const ZERO: Budget = Budget {
    max_num_seqs: 0,
    max_batched_tokens: 0,
    free_blocks: 0,
};

/// The budget of the step benches: exactly [`BATCH`] admissions of [`PROMPT`]-token
/// requests (seqs and tokens both run out at 256), with all 7450 KV blocks free.
pub const BATCH_BUDGET: Budget = Budget {
    max_num_seqs: BATCH,
    max_batched_tokens: BATCH * PROMPT,
    free_blocks: 7450,
};

/// The class of the `i`-th request of a mixed workload: one third each.
pub fn mixed_class(i: u64) -> Class {
    Class::from_index((i % 3) as u8)
}

/// A scheduler on a manual clock with its submitter, a reusable decision and an id counter.
pub struct Bench {
    /// The scheduler (engine side).
    pub sched: Scheduler,
    /// The API side.
    pub api: Submitter,
    /// The clock arrivals are stamped with.
    pub clock: ManualClock,
    /// Reused decision.
    pub d: Decision,
    /// Next request id.
    pub next_id: u64,
    /// Tenants the requests are spread over, round robin (0: requests carry no tenant).
    pub tenants: u64,
}

impl Bench {
    /// An empty scheduler with `cfg`, clock at zero.
    pub fn new(cfg: SchedulerConfig) -> Self {
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(cfg, clock.clone()).expect("valid config");
        Self {
            sched,
            api,
            clock,
            d: Decision::default(),
            next_id: 0,
            tenants: 0,
        }
    }

    /// The scheduler of the step benches: `cfg` filled to `n` waiting requests of
    /// [`mixed_class`] spread over [`fill_window`], round robin over `tenants` tenants.
    pub fn filled(cfg: SchedulerConfig, n: usize, tenants: u64) -> Self {
        let window = fill_window(&cfg);
        let mut b = Bench::new(cfg);
        b.tenants = tenants;
        b.fill(n, window, 4096, mixed_class);
        b
    }

    /// Submits one request of `class` stamped at the clock's current time; returns its
    /// handle.
    pub fn submit(&mut self, class: Class) -> RequestHandle {
        let id = self.next_id;
        self.next_id += 1;
        let mut spec = RequestSpec::new(id, class, PROMPT, MAX_NEW);
        if self.tenants > 0 {
            spec = spec.with_tenant(triage::TenantId(id % self.tenants));
        }
        self.api.submit(spec).expect("bench submit refused")
    }

    /// A step at the clock's time with `budget`.
    pub fn step(&mut self, budget: &Budget) {
        let now = self.clock.now();
        self.sched
            .step_into(now, budget, &mut self.d)
            .expect("bench budget is valid");
    }

    /// Fills to `n` waiting requests whose arrivals are spread evenly over `window`
    /// (ending at the clock's time on return), classes from `class_of(i)`, draining every
    /// `chunk` submits with a zero-budget step. Returns their handles, in submit order.
    pub fn fill(
        &mut self,
        n: usize,
        window: Duration,
        chunk: usize,
        class_of: impl Fn(u64) -> Class,
    ) -> Vec<RequestHandle> {
        let start = self.clock.now();
        let span = window.as_nanos() as u64;
        let mut handles = Vec::with_capacity(n);
        let mut i = 0u64;
        while (i as usize) < n {
            let t = start.0 + span * i / n as u64;
            self.clock.set(Timestamp(t));
            for _ in 0..chunk.min(n - i as usize) {
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

    /// One step of the step benches, timed: advance the clock by [`STEP_DT`], step with
    /// [`BATCH_BUDGET`] (which must admit [`BATCH`]); then, untimed, finish the admitted
    /// requests and submit [`BATCH`] new ones of [`mixed_class`], so the queue keeps its
    /// depth and the next step starts with nothing running.
    pub fn timed_batch_step(&mut self) -> std::time::Duration {
        self.clock.advance(STEP_DT);
        let t = std::time::Instant::now();
        self.step(&BATCH_BUDGET);
        let took = t.elapsed();
        assert_eq!(self.d.admitted.len(), BATCH as usize);
        self.finish_admitted();
        for _ in 0..BATCH {
            let i = self.next_id;
            self.submit(mixed_class(i));
        }
        took
    }

    /// Reports every admitted request of the last decision finished, so the next step
    /// starts with no running requests.
    pub fn finish_admitted(&mut self) {
        let now = self.clock.now();
        for i in 0..self.d.admitted.len() {
            let handle = self.d.admitted[i].handle;
            self.sched
                .on_finished(handle, now, triage::FinishReason::Stop)
                .expect("admitted request is running");
        }
    }
}
