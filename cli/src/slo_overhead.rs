//! `triage slo-overhead`: the cost of SLO tracking in the step, as the ratio of the step's
//! thread CPU time with tracking on to the same step with tracking off.
//!
//! Criterion's wall-time means of two separate runs swing by more than the effect on a
//! shared machine, so this measures both configurations in one process, interleaved: two
//! schedulers (`slo.enabled` true and false) are filled to the same depth with the same
//! requests, then blocks of steps alternate between them (on, off, then off, on, ...) so
//! that drifts of the machine's load hit both alike, and only the thread CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) of each `step_into` is counted, not time the thread waited
//! for a core.
//!
//! The workload is the criterion bench `step_slo_tracking_100k` (`benches/step.rs`): the
//! default configuration with queue capacities raised, arrivals spread over 1.25 × LOW's
//! promotion threshold, classes one third each, 8-token prompts; each step advances the
//! clock 10 ms and admits 256 (budget 256 seqs, 2048 tokens), after which (untimed) the
//! engine reports the 256 finished and 256 new requests are submitted.

use std::fmt::Write as _;
use std::time::Duration;

use cpu_time::ThreadTime;
use serde::Serialize;
use triage::{
    Budget, Class, Clock, Decision, FinishReason, ManualClock, RequestSpec, Scheduler,
    SchedulerConfig, Submitter, Timestamp,
};

/// What `slo-overhead` runs.
#[derive(Clone, Debug, Serialize)]
pub struct OverheadOptions {
    /// Requests queued in each scheduler, kept through the run.
    pub queued: usize,
    /// Admissions per step (prompts are 8 tokens, so the token budget is 8 × this).
    pub batch: u32,
    /// Steps per block.
    pub block_steps: usize,
    /// Timed blocks per configuration.
    pub blocks: usize,
    /// Untimed blocks per configuration before the timed ones.
    pub warmup_blocks: usize,
}

impl Default for OverheadOptions {
    fn default() -> Self {
        Self {
            queued: 100_000,
            batch: 256,
            block_steps: 300,
            blocks: 28,
            warmup_blocks: 2,
        }
    }
}

/// The result: per configuration, the mean thread CPU time of a step, and their ratios.
#[derive(Clone, Debug, Serialize)]
pub struct OverheadReport {
    /// What ran.
    pub options: OverheadOptions,
    /// Mean CPU ns per step with SLO tracking on, over every timed step.
    pub on_mean_ns: f64,
    /// Mean CPU ns per step with SLO tracking off, over every timed step.
    pub off_mean_ns: f64,
    /// `on_mean_ns / off_mean_ns`: the figure issue 4 bounds by 1.2.
    pub ratio_of_means: f64,
    /// The median over blocks of (on block's mean / the adjacent off block's mean): less
    /// sensitive to one disturbed block.
    pub median_block_ratio: f64,
    /// Per timed block `i`: (on mean ns, off mean ns) of the two blocks run back to back.
    pub blocks: Vec<(f64, f64)>,
}

impl OverheadReport {
    /// A short human-readable summary.
    pub fn text(&self) -> String {
        let o = &self.options;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "SLO tracking on/off: {} queued, batch {}, {} blocks of {} steps each, interleaved",
            o.queued, o.batch, o.blocks, o.block_steps
        );
        let _ = writeln!(
            s,
            "step CPU time, mean: on {:.1} µs, off {:.1} µs",
            self.on_mean_ns / 1e3,
            self.off_mean_ns / 1e3
        );
        let _ = writeln!(
            s,
            "on / off: {:.3}× (ratio of means), {:.3}× (median of block ratios)",
            self.ratio_of_means, self.median_block_ratio
        );
        s
    }
}

/// One scheduler of the pair, with its clock, API handle and request counter.
struct Side {
    /// The scheduler under measurement.
    sched: Scheduler,
    /// Its submit handle.
    api: Submitter,
    /// The manual clock its arrivals are stamped by; advanced 10 ms per step.
    clock: ManualClock,
    /// Reused decision.
    d: Decision,
    /// Id of the next request submitted.
    next_id: u64,
}

/// Virtual time between two steps.
const STEP_DT: Duration = Duration::from_millis(10);
/// Prompt (and output) tokens of every request.
const PROMPT: u32 = 8;

impl Side {
    /// A scheduler with SLO tracking `on`, filled to `o.queued` waiting requests.
    fn filled(o: &OverheadOptions, on: bool) -> Side {
        let mut cfg = SchedulerConfig::default();
        for class in &mut cfg.classes {
            class.queue_capacity = class.queue_capacity.max(2 * o.queued);
            class.ring_capacity = 8192;
        }
        cfg.slo.enabled = on;
        let low = cfg.classes[Class::LOW.index()]
            .promote_after_ms
            .expect("the default LOW class ages");
        let window = Duration::from_millis(low + low / 4).as_nanos() as u64;
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(cfg, clock.clone()).expect("valid config");
        let mut side = Side {
            sched,
            api,
            clock,
            d: Decision::default(),
            next_id: 0,
        };
        let n = o.queued as u64;
        for i in 0..n {
            side.clock.set(Timestamp(window * i / n.max(1)));
            side.submit();
            if i % 4096 == 4095 {
                side.step(&ZERO);
            }
        }
        side.clock.set(Timestamp(window));
        side.step(&ZERO);
        assert_eq!(side.sched.waiting(), o.queued, "fill reached its target");
        side
    }

    /// Submits the next request (classes one third each).
    fn submit(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let class = Class::from_index((id % 3) as u8);
        self.api
            .submit(RequestSpec::new(id, class, PROMPT, PROMPT))
            .expect("submit within capacity");
    }

    /// One step at the clock's time.
    fn step(&mut self, budget: &Budget) {
        let now = self.clock.now();
        self.sched
            .step_into(now, budget, &mut self.d)
            .expect("valid budget");
    }

    /// Runs `steps` steps of the workload; returns the CPU time of the `step_into` calls.
    fn block(&mut self, steps: usize, batch: u32) -> Duration {
        let budget = Budget {
            max_num_seqs: batch,
            max_batched_tokens: batch * PROMPT,
            free_blocks: self.sched.config().engine.total_blocks,
        };
        let mut cpu = Duration::ZERO;
        for _ in 0..steps {
            self.clock.advance(STEP_DT);
            let t = ThreadTime::now();
            self.step(&budget);
            cpu += t.elapsed();
            assert_eq!(self.d.admitted.len(), batch as usize, "a full batch");
            let now = self.clock.now();
            for a in &self.d.admitted {
                self.sched
                    .on_finished(a.id, now, FinishReason::Stop)
                    .expect("admitted request runs");
            }
            for _ in 0..batch {
                self.submit();
            }
        }
        cpu
    }
}

/// A budget that admits nothing (the fill's steps only drain).
const ZERO: Budget = Budget {
    max_num_seqs: 0,
    max_batched_tokens: 0,
    free_blocks: 0,
};

/// Runs the measurement. Both schedulers live for the whole run, on the calling thread.
pub fn slo_overhead(o: &OverheadOptions) -> Result<OverheadReport, String> {
    if o.blocks == 0 || o.block_steps == 0 {
        return Err("--blocks and --block-steps must be at least 1".into());
    }
    if o.batch == 0 || o.queued < o.batch as usize {
        return Err("--batch must be at least 1 and at most --queued".into());
    }
    let mut on = Side::filled(o, true);
    let mut off = Side::filled(o, false);
    for _ in 0..o.warmup_blocks {
        on.block(o.block_steps, o.batch);
        off.block(o.block_steps, o.batch);
    }
    let per_step = |d: Duration| d.as_nanos() as f64 / o.block_steps as f64;
    let mut blocks = Vec::with_capacity(o.blocks);
    for i in 0..o.blocks {
        // Alternate which goes first, so neither always follows the other's cache state.
        let (a, b) = if i % 2 == 0 {
            let a = on.block(o.block_steps, o.batch);
            (a, off.block(o.block_steps, o.batch))
        } else {
            let b = off.block(o.block_steps, o.batch);
            (on.block(o.block_steps, o.batch), b)
        };
        blocks.push((per_step(a), per_step(b)));
    }
    for side in [&on, &off] {
        assert!(side.sched.conservation().is_balanced());
    }
    let on_mean_ns = blocks.iter().map(|b| b.0).sum::<f64>() / blocks.len() as f64;
    let off_mean_ns = blocks.iter().map(|b| b.1).sum::<f64>() / blocks.len() as f64;
    let mut ratios: Vec<f64> = blocks.iter().map(|b| b.0 / b.1).collect();
    ratios.sort_by(f64::total_cmp);
    let median_block_ratio = crate::timing::percentile(&ratios, 50.0);
    Ok(OverheadReport {
        options: o.clone(),
        on_mean_ns,
        off_mean_ns,
        ratio_of_means: on_mean_ns / off_mean_ns,
        median_block_ratio,
        blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_every_block_and_consistent_ratios() {
        let o = OverheadOptions {
            queued: 2_000,
            batch: 16,
            block_steps: 5,
            blocks: 3,
            warmup_blocks: 1,
        };
        let r = slo_overhead(&o).unwrap();
        assert_eq!(r.blocks.len(), 3);
        assert!(r.on_mean_ns > 0.0 && r.off_mean_ns > 0.0);
        assert!((r.ratio_of_means - r.on_mean_ns / r.off_mean_ns).abs() < 1e-12);
        let lo = r
            .blocks
            .iter()
            .map(|b| b.0 / b.1)
            .fold(f64::INFINITY, f64::min);
        let hi = r.blocks.iter().map(|b| b.0 / b.1).fold(0.0, f64::max);
        assert!(lo <= r.median_block_ratio && r.median_block_ratio <= hi);
        assert!(r.text().contains("on / off"));
    }

    #[test]
    fn empty_runs_are_refused() {
        let o = OverheadOptions {
            blocks: 0,
            ..OverheadOptions::default()
        };
        assert!(slo_overhead(&o).is_err());
        let o = OverheadOptions {
            queued: 10,
            ..OverheadOptions::default()
        };
        assert!(slo_overhead(&o).is_err());
    }
}
