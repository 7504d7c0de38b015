//! The timed step of the step benches (`step`, `fairness_ratio`), on the steady-depth
//! workload of [`triage_testkit::steady`].

use std::time::{Duration, Instant};
use triage_testkit::steady::SteadyDepth;

/// One step of the step benches, timed: advance the clock by `STEP_DT` and time the batch
/// step (which must admit a full batch); then, untimed, finish the admitted requests and
/// submit as many new ones, so the queue keeps its depth and the next step starts with
/// nothing running.
pub fn timed_batch_step(w: &mut SteadyDepth) -> Duration {
    w.advance();
    let t = Instant::now();
    w.step_batch();
    let took = t.elapsed();
    w.finish_admitted();
    w.refill();
    took
}
