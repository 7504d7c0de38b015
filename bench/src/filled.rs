//! The steady-depth workload of the testkit ([`SteadyDepth`]) metered for the CLI's step
//! measurements (`triage slo-overhead` and the step workload of `triage bench-compare`).
//!
//! The workload: [`steady::config_in`] (the defaults with room for the depth, in either
//! queue order), filled with `depth` requests of [`steady::spec`] (8-token prompts, classes
//! one third each) whose arrivals are stamped one by one ([`SteadyDepth::filled_each`]),
//! evenly spread over [`steady::fill_window`] (1.25 × LOW's promotion threshold) so that,
//! in the ladder order, buckets keep crossing the aging thresholds while it steps. Each
//! [`Filled::timed_step`] advances the clock by [`steady::STEP_DT`] and times one
//! `step_into` that admits a batch; then, untimed, the engine reports the admitted
//! requests finished and as many new ones are submitted, so the depth stays put and every
//! step starts with nothing running.
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
//! The criterion benches (`benches/step.rs`) run the same steps, but their fill
//! ([`SteadyDepth::filled`]) stamps a whole chunk of 4,096 submits with one arrival time
//! and they time wall clock only.

use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use triage::{Class, QueueOrder, SchedulerConfig};
use triage_testkit::steady::{self, SteadyDepth};

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

/// A [`SteadyDepth`] filled to a depth that its steps keep, settled, and metered.
pub(crate) struct Filled {
    /// The scheduler under measurement, its clock, its last decision.
    pub(crate) steady: SteadyDepth,
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
    /// [`steady::spec`] whose arrivals are spread evenly over [`steady::fill_window`] (each
    /// stamped at its own time), draining every [`steady::FILL_CHUNK`] submits with a zero
    /// step, then settled (see [`Settled`]); its steps admit `batch` and then submit
    /// `batch`. The depth must hold a batch (callers refuse less with an error naming their
    /// options): a shallower queue would grow to the batch at the first step.
    pub(crate) fn new(cfg: SchedulerConfig, depth: usize, batch: u32) -> Filled {
        assert!(depth >= batch as usize, "depth {depth} below batch {batch}");
        let mut f = Filled {
            steady: SteadyDepth::filled_each(cfg, depth, batch),
            settled: Settled::default(),
        };
        if f.steady.sched.config().order == QueueOrder::Deadline {
            f.settle();
        }
        f
    }

    /// Runs workload steps until the fill's HIGH and MEDIUM requests have all come up
    /// (see [`Settled`]), into [`Filled::settled`].
    fn settle(&mut self) {
        let fill = self.steady.next_id;
        let urgent = |id: u64| steady::mixed_class(id) < Class::LOW;
        let thirds = (0..fill).filter(|&id| urgent(id)).count() as u64;
        let mut admitted = 0u64;
        // Judged late since the fill began: its draining steps judge most of HIGH.
        while admitted + self.steady.judged_late() < thirds {
            let before = self.steady.judged_late();
            let took = self.timed_step(Meter::Cpu);
            self.settled.judged += self.steady.judged_late() - before;
            self.settled.cpu.push(took.cpu.as_nanos() as f64);
            let from_fill = self.steady.d.admitted.iter().map(|a| a.id.0);
            admitted += from_fill.filter(|&id| id < fill && urgent(id)).count() as u64;
        }
    }

    /// One step of the workload: advances the clock by [`steady::STEP_DT`] and times,
    /// with the clocks of `meter`, the batch step (which must admit `batch`); then reports
    /// each admitted request's prefill and first token and its finish (CPU time taken
    /// apart, in [`Took::callbacks`]) and, untimed, submits `batch` new requests.
    pub(crate) fn timed_step(&mut self, meter: Meter) -> Took {
        let w = &mut self.steady;
        w.advance();
        let c = ThreadTime::now();
        // The wall reading nested inside the CPU one.
        let t = matches!(meter, Meter::CpuAndWall).then(Instant::now);
        w.step_batch();
        let wall = t.map(|t| t.elapsed());
        let cpu = c.elapsed();
        let c = ThreadTime::now();
        w.report_admitted();
        let took = Took {
            cpu,
            wall,
            callbacks: c.elapsed(),
        };
        w.refill();
        took
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_the_depth_and_the_books_balanced() {
        let mut f = Filled::new(steady::config_in(QueueOrder::Deadline, 1_000), 1_000, 16);
        for meter in [Meter::Cpu, Meter::CpuAndWall, Meter::Cpu] {
            let took = f.timed_step(meter);
            assert_eq!(took.wall.is_some(), matches!(meter, Meter::CpuAndWall));
        }
        // The last 16 submits wait in ingress until the next step drains them.
        assert_eq!(f.steady.sched.waiting() + 16, 1_000);
        assert!(f.steady.sched.conservation().is_balanced());
    }

    #[test]
    fn every_step_admits_a_full_batch_in_both_orders() {
        // The steps of `bench-compare` and `slo-overhead`: 256 per step, at a depth whose
        // fill leaves HIGH and MEDIUM requests past their deadlines in deadline order.
        for order in [QueueOrder::Deadline, QueueOrder::Ladder] {
            let mut f = Filled::new(steady::config_in(order, 20_000), 20_000, 256);
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
                let before = f.steady.judged_late();
                f.timed_step(Meter::Cpu); // asserts the full batch
                let late = f.steady.judged_late() - before;
                assert!(late < 256, "a settled queue judged {late} in one step");
            }
            assert!(f.steady.sched.conservation().is_balanced());
        }
    }
}
