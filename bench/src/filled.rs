//! A scheduler filled to a depth on a manual clock, for the CLI's step measurements
//! (`triage slo-overhead` and the step workload of `triage bench-compare`).
//!
//! The workload: [`config`] (the defaults with room for the depth, in either queue order),
//! filled with `depth` requests of [`spec`] (8-token prompts, classes one third each)
//! whose arrivals are stamped one by one, evenly spread over [`fill_window`] (1.25 × LOW's
//! promotion threshold) so that, in the ladder order, buckets keep crossing the aging
//! thresholds while it steps. Each [`Filled::timed_step`] advances the clock by
//! [`STEP_DT`] and times one `step_into` that admits a batch; then, untimed, the engine
//! reports the admitted requests finished and as many new ones are submitted, so the depth
//! stays put and every step starts with nothing running.
//!
//! In deadline order the same fill leaves most HIGH and MEDIUM requests past their TTFT
//! deadlines (0.5 s and 2 s; the fill spans 25 s). A request is judged when it comes up as
//! its tier's next, and the fill's draining steps always find a fresh HIGH request first,
//! so the backlog (most of the MEDIUM third) is judged by the first full steps, at most
//! 4,096 per step: a transient of how the fill is built, not of the depth. [`Filled::new`]
//! runs full steps until every HIGH and MEDIUM request of the fill was admitted or judged,
//! before any timed one, and keeps their CPU time apart ([`Settled`]), so
//! the timed steps measure the steady state: the fresh HIGH and MEDIUM arrivals and the LOW
//! requests with the earliest deadlines, a full batch drained and admitted as in the ladder
//! order.
//!
//! The criterion benches (`benches/common`) run the same steps, but their fill stamps a
//! whole chunk of 4,096 submits with one arrival time and time wall clock only.

use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use triage::{
    Budget, Class, Clock, Decision, FinishReason, ManualClock, QueueOrder, RequestSpec, Scheduler,
    SchedulerConfig, Submitter, Timestamp,
};

/// Virtual time between two steps (one GPU iteration).
pub(crate) const STEP_DT: Duration = Duration::from_millis(10);

/// Prompt (and output) tokens of every request: small, so that a batch of 256 fills a
/// 2048-token step exactly and each request needs one KV block.
pub(crate) const PROMPT: u32 = 8;

/// A budget that admits nothing: steps with it only drain the ingress queues, apply notices
/// and age (the fills here and in `triage stress`).
pub(crate) const ZERO: Budget = Budget {
    max_num_seqs: 0,
    max_batched_tokens: 0,
    free_blocks: 0,
};

/// Submits a fill makes between two draining steps.
const FILL_CHUNK: u64 = 4096;

/// The default configuration (three classes, the default aging ladder and deadline
/// tunables) in queue order `order`, with room for `queued` waiting requests in every class
/// (`queue_capacity` 2 × `queued`: it counts the requests waiting as of the last step plus
/// those submitted since, so a fill drained every [`FILL_CHUNK`] submits, and the submit
/// workload of `triage bench-compare`, which drains nothing, fit).
///
/// One default is changed, in deadline order only: `deadline.relaxed_chunk_tokens` is 0
/// (no cap). The workload's LOW requests are all *relaxed* (their end-to-end deadline is
/// 35 s or more away), and relaxed prefills share 512 tokens per iteration by default: 64
/// of these 8-token prompts, so a step would admit about 235 instead of the full batch
/// that the measurement compares (and that the baselines pop). Without the cap the step
/// does the same work per candidate (its slack is still computed and checked) and admits
/// the batch.
pub(crate) fn config(queued: usize, order: QueueOrder) -> SchedulerConfig {
    let mut c = SchedulerConfig {
        order,
        ..SchedulerConfig::default()
    };
    if order == QueueOrder::Deadline {
        c.deadline.relaxed_chunk_tokens = 0;
    }
    for class in &mut c.classes {
        class.queue_capacity = class.queue_capacity.max(2 * queued);
    }
    c
}

/// The window initial arrivals are spread over: 1.25 × LOW's promotion threshold in
/// `cfg`, so LOW buckets keep crossing into MEDIUM while the scheduler steps.
pub(crate) fn fill_window(cfg: &SchedulerConfig) -> Duration {
    let low = cfg.classes[Class::LOW.index()]
        .promote_after_ms
        .expect("LOW ages");
    Duration::from_millis(low + low / 4)
}

/// The `id`-th request of the workload: class `id % 3` (one third each), [`PROMPT`]
/// tokens in and out.
pub(crate) fn spec(id: u64) -> RequestSpec {
    RequestSpec::new(id, Class::from_index((id % 3) as u8), PROMPT, PROMPT)
}

/// Which clocks [`Filled::timed_step`] reads around `step_into`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Meter {
    /// The thread's CPU time only.
    Cpu,
    /// The thread's CPU time and wall time (the wall reading nested inside the CPU one).
    CpuAndWall,
}

/// What one [`Filled::timed_step`] took.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Took {
    /// Thread CPU time (`CLOCK_THREAD_CPUTIME_ID`) of the `step_into` call.
    pub(crate) cpu: Duration,
    /// Wall time of the call, if [`Meter::CpuAndWall`] asked for it.
    pub(crate) wall: Option<Duration>,
    /// Thread CPU time of the engine's reports after the step: for each admitted request
    /// one `on_progress` (its prompt computed and its first token) and one `on_finished`.
    pub(crate) callbacks: Duration,
}

/// A scheduler on a [`ManualClock`], filled to a depth that its steps keep.
pub(crate) struct Filled {
    /// The scheduler under measurement.
    pub(crate) sched: Scheduler,
    /// Its submit handle.
    api: Submitter,
    /// The clock arrivals are stamped by; advanced [`STEP_DT`] per step.
    clock: ManualClock,
    /// The decision of the last step (reused).
    pub(crate) d: Decision,
    /// Id of the next request submitted.
    next_id: u64,
    /// Requests admitted per step, and submitted after each step.
    batch: u32,
    /// The steps' budget: `batch` seqs of [`PROMPT`] tokens, every KV block free.
    budget: Budget,
    /// The steps that judged the fill's backlog of late requests (deadline order).
    pub(crate) settled: Settled,
}

/// The steps [`Filled::new`] runs after the fill in deadline order, before any timed step:
/// full steps of the workload (each followed by its finishes and refill) until the
/// requests the steps admitted from the fill's HIGH and MEDIUM thirds and the requests
/// judged late since the fill began add up to those thirds, every one of them having come up once. Empty in the
/// ladder order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Settled {
    /// Thread CPU ns of each of the steps.
    pub(crate) cpu: Vec<f64>,
    /// Requests relegated or shed in them.
    pub(crate) judged: u64,
}

impl Filled {
    /// A scheduler with `cfg` on a manual clock, filled to `depth` waiting requests of
    /// [`spec`] whose arrivals are spread evenly over [`fill_window`] (each stamped at its
    /// own time), draining every [`FILL_CHUNK`] submits with a [`ZERO`] step, then settled
    /// (see [`Settled`]); its steps admit `batch` and then submit `batch`. The depth must hold a batch (callers refuse
    /// less with an error naming their options): a shallower queue would grow to the batch
    /// at the first step.
    pub(crate) fn new(cfg: SchedulerConfig, depth: usize, batch: u32) -> Filled {
        assert!(depth >= batch as usize, "depth {depth} below batch {batch}");
        let span = fill_window(&cfg).as_nanos() as u64;
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(cfg, clock.clone()).expect("valid config");
        let budget = Budget {
            max_num_seqs: batch,
            max_batched_tokens: batch * PROMPT,
            free_blocks: sched.config().engine.total_blocks,
        };
        let mut f = Filled {
            sched,
            api,
            clock,
            d: Decision::default(),
            next_id: 0,
            batch,
            budget,
            settled: Settled::default(),
        };
        let n = depth as u64;
        for i in 0..n {
            f.clock.set(Timestamp(span * i / n));
            f.submit();
            if i % FILL_CHUNK == FILL_CHUNK - 1 {
                f.step(&ZERO);
            }
        }
        f.clock.set(Timestamp(span));
        f.step(&ZERO);
        assert_eq!(f.sched.waiting(), depth, "fill reached its target");
        if f.sched.config().order == QueueOrder::Deadline {
            f.settle();
        }
        f
    }

    /// Runs workload steps until the fill's HIGH and MEDIUM requests have all come up
    /// (see [`Settled`]), into [`Filled::settled`].
    fn settle(&mut self) {
        let fill = self.next_id;
        let urgent = |id: u64| spec(id).class < Class::LOW;
        let thirds = (0..fill).filter(|&id| urgent(id)).count() as u64;
        let mut admitted = 0u64;
        // Judged late since the fill began: its draining steps judge most of HIGH.
        while admitted + self.judged_late() < thirds {
            let before = self.judged_late();
            let took = self.timed_step(Meter::Cpu);
            self.settled.judged += self.judged_late() - before;
            self.settled.cpu.push(took.cpu.as_nanos() as f64);
            let from_fill = self.d.admitted.iter().map(|a| a.id.0);
            admitted += from_fill.filter(|&id| id < fill && urgent(id)).count() as u64;
        }
    }

    /// Submits the next request of [`spec`], stamped at the clock's time.
    fn submit(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        self.api.submit(spec(id)).expect("submit within capacity");
    }

    /// Waiting requests relegated or shed so far (deadline order), all classes.
    pub(crate) fn judged_late(&self) -> u64 {
        (0..self.sched.classes().len())
            .map(|c| {
                let k = self.sched.class_counters(Class::from_index(c as u8));
                k.relegated + k.shed
            })
            .sum()
    }

    /// An untimed step at the clock's time.
    fn step(&mut self, budget: &Budget) {
        let now = self.clock.now();
        self.sched
            .step_into(now, budget, &mut self.d)
            .expect("valid budget");
    }

    /// One step of the workload: advances the clock by [`STEP_DT`] and times, with the
    /// clocks of `meter`, the `step_into` that must admit `batch`; then reports each
    /// admitted request's prefill and first token and its finish (CPU time taken apart, in
    /// [`Took::callbacks`]) and, untimed, submits `batch` new requests.
    pub(crate) fn timed_step(&mut self, meter: Meter) -> Took {
        self.clock.advance(STEP_DT);
        let now = self.clock.now();
        let c = ThreadTime::now();
        // The wall reading nested inside the CPU one.
        let t = matches!(meter, Meter::CpuAndWall).then(Instant::now);
        self.sched
            .step_into(now, &self.budget, &mut self.d)
            .expect("valid budget");
        let wall = t.map(|t| t.elapsed());
        let cpu = c.elapsed();
        assert_eq!(self.d.admitted.len(), self.batch as usize, "a full batch");
        let c = ThreadTime::now();
        for a in &self.d.admitted {
            self.sched
                .on_progress(a.handle, now, a.prefill_tokens, 1)
                .expect("admitted request runs");
            self.sched
                .on_finished(a.handle, now, FinishReason::Stop)
                .expect("admitted request runs");
        }
        let took = Took {
            cpu,
            wall,
            callbacks: c.elapsed(),
        };
        for _ in 0..self.batch {
            self.submit();
        }
        took
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_depth_and_the_books_balanced() {
        let mut f = Filled::new(config(1_000, QueueOrder::Deadline), 1_000, 16);
        for meter in [Meter::Cpu, Meter::CpuAndWall, Meter::Cpu] {
            let took = f.timed_step(meter);
            assert_eq!(took.wall.is_some(), matches!(meter, Meter::CpuAndWall));
        }
        // The last 16 submits wait in ingress until the next step drains them.
        assert_eq!(f.sched.waiting() + 16, 1_000);
        assert!(f.sched.conservation().is_balanced());
    }

    #[test]
    fn every_step_admits_a_full_batch_in_both_orders() {
        // The steps of `bench-compare` and `slo-overhead`: 256 per step, at a depth whose
        // fill leaves HIGH and MEDIUM requests past their deadlines in deadline order.
        for order in [QueueOrder::Deadline, QueueOrder::Ladder] {
            let mut f = Filled::new(config(20_000, order), 20_000, 256);
            if order == QueueOrder::Deadline {
                // About 6,000 MEDIUM requests the fill left past their 2 s deadline were
                // relegated by the settling steps, 4,096 at most per step.
                let s = &f.settled;
                assert!(s.judged > 4_096, "{s:?}");
                assert!(s.cpu.len() as u64 > s.judged / 4_096, "{s:?}");
            } else {
                assert_eq!(f.settled.cpu.len(), 0);
            }
            for _ in 0..50 {
                let before = f.judged_late();
                f.timed_step(Meter::Cpu); // asserts the full batch
                let late = f.judged_late() - before;
                assert!(late < 256, "a settled queue judged {late} in one step");
            }
            assert!(f.sched.conservation().is_balanced());
        }
    }
}
