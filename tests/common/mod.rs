//! A small harness for driving the scheduler with injected time, as an engine would, and
//! the pieces several test engines share (a seeded PRNG, a decision's work list).
// Each test binary compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::time::Duration;
use triage::*;

pub struct Harness {
    pub sched: Scheduler,
    pub api: Submitter,
    pub clock: ManualClock,
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A config with no aging (for tests of other rules) and fixed shards.
pub fn no_aging() -> SchedulerConfig {
    let mut c = SchedulerConfig::default();
    for class in &mut c.classes {
        class.promote_after_ms = None;
    }
    c.shards = 2;
    c
}

pub fn budget(seqs: u32, tokens: u32, blocks: u32) -> Budget {
    Budget {
        max_num_seqs: seqs,
        max_batched_tokens: tokens,
        free_blocks: blocks,
    }
}

impl Harness {
    pub fn new(config: SchedulerConfig) -> Self {
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(config, clock.clone()).expect("valid config");
        Self { sched, api, clock }
    }

    pub fn submit(&self, id: u64, class: Class, prompt: u32, max_new: u32) {
        self.api
            .submit(RequestSpec::new(id, class, prompt, max_new))
            .expect("submit accepted");
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub fn step(&mut self, b: Budget) -> Decision {
        let d = self.sched.step(self.clock.now(), &b).expect("valid budget");
        self.sched.check_invariants().expect("invariants hold");
        assert!(
            self.sched.conservation().is_balanced(),
            "{}",
            self.sched.conservation()
        );
        d
    }

    /// Runs the whole prefill of an admitted request and samples its first token.
    pub fn prefill(&mut self, a: &Admitted) {
        self.sched
            .on_progress(a.id, self.clock.now(), a.prefill_target, 1)
            .expect("progress accepted");
    }

    pub fn finish(&mut self, id: RequestId) {
        self.sched
            .on_finished(id, self.clock.now(), FinishReason::Stop)
            .expect("finish accepted");
    }
}

pub fn ids(admitted: &[Admitted]) -> Vec<u64> {
    admitted.iter().map(|a| a.id.0).collect()
}

/// Xorshift64 (13, 7, 17): a tiny seeded PRNG, so a run is repeatable from its seed.
/// `seed` must not be 0.
pub fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The tokens a decision asks the engine to compute this iteration, as `(id, tokens)`:
/// the admitted requests' prefill chunks, then the running requests' scheduled work (the
/// order `Decision::total_tokens` sums them in).
pub fn work(d: &Decision) -> Vec<(RequestId, u32)> {
    d.admitted
        .iter()
        .map(|a| (a.id, a.prefill_tokens))
        .chain(d.scheduled.iter().map(|s| (s.id, s.tokens)))
        .collect()
}
