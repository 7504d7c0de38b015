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
//! The workload is that of the crate's `filled` module, the steps of the criterion bench
//! `step_slo_tracking_100k` (`benches/step.rs`) but not its exact fill or timer: the
//! default configuration (deadline order unless `--order ladder`; relaxed prefills
//! uncapped) with queue capacities raised, arrivals each stamped at its own
//! time, spread over 1.25 × LOW's promotion threshold, classes one third each, 8-token
//! prompts; each step advances the clock 10 ms and admits 256 (budget 256 seqs, 2048
//! tokens), after which (untimed) the engine reports the 256 finished and 256 new requests
//! are submitted. (The bench stamps each chunk of 4,096 fill submits with one time and
//! times wall clock.)

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use triage::QueueOrder;
use triage_testkit::steady;

use crate::filled::{Filled, Meter};

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
    /// The schedulers' queue order.
    pub order: QueueOrder,
}

impl Default for OverheadOptions {
    fn default() -> Self {
        Self {
            queued: 100_000,
            batch: 256,
            block_steps: 300,
            blocks: 28,
            warmup_blocks: 2,
            order: QueueOrder::default(),
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

/// A scheduler of the pair: [`Filled`] with SLO tracking `on`, filled to `o.queued`.
fn side(o: &OverheadOptions, on: bool) -> Filled {
    let mut cfg = steady::config_in(o.order, o.queued);
    cfg.slo.enabled = on;
    Filled::new(cfg, o.queued, o.batch)
}

/// Runs `steps` steps of the workload on `side`; returns the CPU time of the `step_into`
/// calls.
fn block(side: &mut Filled, steps: usize) -> Duration {
    (0..steps).map(|_| side.timed_step(Meter::Cpu).cpu).sum()
}

/// Runs the measurement. Both schedulers live for the whole run, on the calling thread.
pub fn slo_overhead(o: &OverheadOptions) -> Result<OverheadReport, String> {
    if o.blocks == 0 || o.block_steps == 0 {
        return Err("--blocks and --block-steps must be at least 1".into());
    }
    if o.batch == 0 || o.queued < o.batch as usize {
        return Err("--batch must be at least 1 and at most --queued".into());
    }
    let mut on = side(o, true);
    let mut off = side(o, false);
    for _ in 0..o.warmup_blocks {
        block(&mut on, o.block_steps);
        block(&mut off, o.block_steps);
    }
    let per_step = |d: Duration| d.as_nanos() as f64 / o.block_steps as f64;
    let mut blocks = Vec::with_capacity(o.blocks);
    for i in 0..o.blocks {
        // Alternate which goes first, so neither always follows the other's cache state.
        let (a, b) = if i % 2 == 0 {
            let a = block(&mut on, o.block_steps);
            (a, block(&mut off, o.block_steps))
        } else {
            let b = block(&mut off, o.block_steps);
            (block(&mut on, o.block_steps), b)
        };
        blocks.push((per_step(a), per_step(b)));
    }
    for side in [&on, &off] {
        assert!(side.steady.sched.conservation().is_balanced());
    }
    let on_mean_ns = blocks.iter().map(|b| b.0).sum::<f64>() / blocks.len() as f64;
    let off_mean_ns = blocks.iter().map(|b| b.1).sum::<f64>() / blocks.len() as f64;
    let mut ratios: Vec<f64> = blocks.iter().map(|b| b.0 / b.1).collect();
    let median_block_ratio = crate::timing::Summary::of(&mut ratios).p50;
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
            order: QueueOrder::Ladder,
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
