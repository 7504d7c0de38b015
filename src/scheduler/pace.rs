//! The engine's pace as the scheduler sees it, for deadline order: how long one iteration
//! takes (learned from the times of consecutive steps that gave the engine work) and how
//! many tokens a request of each class generates (learned from finished requests). From
//! these it estimates when a waiting request's first token could come and how long a
//! request runs, which decide whether the request can still meet its deadline.
//!
//! Estimates only: they order and relegate requests, never account for budgets.

use crate::class::MAX_CLASSES;
use crate::time::Timestamp;
use std::time::Duration;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.1;
/// A gap between two steps longer than this is idleness, not an iteration.
const MAX_ITERATION: Duration = Duration::from_secs(2);
/// Output tokens assumed for a class before any of its requests has finished.
const INITIAL_OUTPUT: f64 = 128.0;
/// The share of an iteration's token budget a prefill is assumed to get: the rest goes to
/// decode tokens and other prefills.
const PREFILL_SHARE: f64 = 0.8;
/// The fewest prefill tokens per iteration assumed, whatever the budget.
const MIN_PREFILL_PER_ITERATION: f64 = 256.0;

/// See the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Pace {
    /// Mean iteration time, in ns (every estimate is made in ns).
    iteration: f64,
    /// The previous step's time, and whether it gave the engine any work.
    last: Option<(Timestamp, bool)>,
    /// Mean output tokens of finished requests, by class.
    output: [f64; MAX_CLASSES],
    /// Prefill tokens one iteration is assumed to run (from the current step's budget).
    per_iteration: f64,
    /// The most prompt tokens that take one iteration's prefill: `per_iteration`, whole.
    one_chunk_tokens: u32,
    /// [`Pace::prefill_ns`] of 1 to `one_chunk_tokens` tokens: two iterations, the one in
    /// flight and its own. Kept with `iteration` and `per_iteration`, so that the estimate
    /// a step makes for nearly every candidate is a comparison, not a chain of floating
    /// point operations.
    one_chunk_ns: u64,
}

impl Pace {
    /// A pace that assumes `iteration` per iteration until it has measured one.
    pub(crate) fn new(iteration: Duration) -> Self {
        let mut pace = Self {
            iteration: iteration.as_nanos() as f64,
            last: None,
            output: [INITIAL_OUTPUT; MAX_CLASSES],
            per_iteration: MIN_PREFILL_PER_ITERATION,
            one_chunk_tokens: 0,
            one_chunk_ns: 0,
        };
        pace.one_chunk();
        pace
    }

    /// Sets `one_chunk_tokens` and `one_chunk_ns` from `iteration` and `per_iteration`.
    fn one_chunk(&mut self) {
        // `as` truncates: a whole number of tokens is at most `per_iteration` exactly when
        // it is at most this (`per_iteration` is at least 256 and below `u32::MAX`).
        self.one_chunk_tokens = self.per_iteration as u32;
        // What `prefill_ns` computes for them: `ceil(tokens / per_iteration)` is 1.
        self.one_chunk_ns = to_ns((1.0 + 1.0) * self.iteration);
    }

    /// A step begins at `now` with a budget of `max_batched_tokens`: the time since the
    /// previous step is one iteration if that step gave the engine work.
    pub(crate) fn step(&mut self, now: Timestamp, max_batched_tokens: u32) {
        if let Some((then, true)) = self.last {
            let dt = now.saturating_since(then);
            if !dt.is_zero() && dt <= MAX_ITERATION {
                self.iteration += ALPHA * (dt.as_nanos() as f64 - self.iteration);
            }
        }
        self.last = Some((now, false));
        self.per_iteration =
            (f64::from(max_batched_tokens) * PREFILL_SHARE).max(MIN_PREFILL_PER_ITERATION);
        self.one_chunk();
    }

    /// The step that began last gave the engine `tokens` tokens of work.
    pub(crate) fn worked(&mut self, tokens: u32) {
        if let Some((_, worked)) = &mut self.last {
            *worked = tokens > 0;
        }
    }

    /// A request of class `class` finished after generating `generated` tokens.
    pub(crate) fn finished(&mut self, class: usize, generated: u32) {
        if let Some(o) = self.output.get_mut(class) {
            *o += ALPHA * (f64::from(generated) - *o);
        }
    }

    /// The mean iteration time.
    pub(crate) fn iteration(&self) -> Duration {
        Duration::from_nanos(to_ns(self.iteration))
    }

    /// How long until the first token of a request with `tokens` left to prefill, if it
    /// started now: its chunks, plus the iteration in flight.
    pub(crate) fn prefill(&self, tokens: u32) -> Duration {
        Duration::from_nanos(self.prefill_ns(tokens))
    }

    /// [`Pace::prefill`] in ns, for the comparisons a step makes per candidate.
    pub(crate) fn prefill_ns(&self, tokens: u32) -> u64 {
        if (1..=self.one_chunk_tokens).contains(&tokens) {
            return self.one_chunk_ns;
        }
        let iterations = ceil(f64::from(tokens) / self.per_iteration) + 1.0;
        to_ns(iterations * self.iteration)
    }

    /// How long a request of class `class` with `prompt` tokens and at most `max_new`
    /// output runs, from start to finish: its prefill, then one iteration per output token
    /// (the class's mean output, if fewer than `max_new`).
    /// In ns (it is estimated for every request drained).
    pub(crate) fn run_ns(&self, class: usize, prompt: u32, max_new: u32) -> u64 {
        let output = self
            .output
            .get(class)
            .copied()
            .unwrap_or(INITIAL_OUTPUT)
            .min(f64::from(max_new));
        self.prefill_ns(prompt)
            .saturating_add(to_ns(output * self.iteration))
    }
}

/// `ns` (not negative) rounded to whole ns, saturating at `u64::MAX`. Plain arithmetic
/// (`as` saturates), not `Duration::try_from_secs_f64` nor `f64::round`: it runs for every
/// candidate a step weighs, and both of those are calls.
fn to_ns(ns: f64) -> u64 {
    (ns + 0.5) as u64
}

/// `x.ceil()` for `0 <= x < 2^63`, inline: without SSE4.1 (the default target) `f64::ceil`
/// is a call into libm.
fn ceil(x: f64) -> f64 {
    let t = x as u64 as f64;
    if t < x {
        t + 1.0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inline_ceil_and_rounding_agree_with_std() {
        for x in [0.0, 0.2, 1.0, 1.5, 255.999, 256.0, 1e15 + 0.5] {
            assert_eq!(ceil(x), f64::ceil(x), "{x}");
        }
        assert_eq!(to_ns(1.49), 1);
        assert_eq!(to_ns(1.5), 2);
        assert_eq!(to_ns(f64::INFINITY), u64::MAX);
        assert_eq!(to_ns(1e30), u64::MAX);
    }

    /// The one-chunk shortcut answers what the arithmetic does, at every budget and pace.
    #[test]
    fn one_chunk_prefills_take_what_the_arithmetic_gives() {
        let slow = |p: &Pace, tokens: u32| {
            to_ns((ceil(f64::from(tokens) / p.per_iteration) + 1.0) * p.iteration)
        };
        for (iteration_ns, budget) in [(1u64, 0u32), (33_333_333, 2048), (7, 1000), (1, 4097)] {
            let mut p = Pace::new(Duration::from_nanos(iteration_ns));
            p.step(Timestamp::ZERO, budget);
            let max = p.one_chunk_tokens;
            for tokens in [0, 1, 2, max / 2, max - 1, max, max + 1, 3 * max, u32::MAX] {
                assert_eq!(
                    p.prefill_ns(tokens),
                    slow(&p, tokens),
                    "{tokens} at {budget}"
                );
            }
        }
    }

    #[test]
    fn learns_the_iteration_time_from_steps_that_worked() {
        let mut p = Pace::new(Duration::from_millis(50));
        let mut t = Timestamp::ZERO;
        p.step(t, 2048);
        p.worked(100);
        for _ in 0..200 {
            t = t.saturating_add(Duration::from_millis(100));
            p.step(t, 2048);
            p.worked(100);
        }
        assert!((p.iteration().as_secs_f64() - 0.1).abs() < 1e-3);
        // An idle gap (the previous step scheduled nothing) is not an iteration.
        p.worked(0);
        p.step(t.saturating_add(Duration::from_millis(1500)), 2048);
        assert!((p.iteration().as_secs_f64() - 0.1).abs() < 1e-3);
    }

    #[test]
    fn prefill_counts_chunks_and_the_iteration_in_flight() {
        let mut p = Pace::new(Duration::from_millis(100));
        p.step(Timestamp::ZERO, 1000); // 800 prefill tokens per iteration
        assert_eq!(p.prefill(800), Duration::from_millis(200));
        assert_eq!(p.prefill(801), Duration::from_millis(300));
        assert_eq!(p.prefill(1), Duration::from_millis(200));
        assert_eq!(p.prefill(0), Duration::from_millis(100));
        // The run adds one iteration per expected output token, at most max_new.
        assert_eq!(p.run_ns(0, 800, 3), 500_000_000);
        p.finished(0, 0);
        assert!(p.run_ns(0, 800, 1000) < (200 + 12_800) * 1_000_000);
    }
}
