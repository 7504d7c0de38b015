//! A small harness for driving the scheduler with injected time, as an engine would. The
//! fake engine and the seeded generator are the test kit's (`triage-testkit`).
// Each test binary compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;
use triage::*;

pub struct Harness {
    pub sched: Scheduler,
    pub api: Submitter,
    pub clock: ManualClock,
    /// The engine's id → handle map: filled by [`Harness::submit`] and by every admission
    /// [`Harness::step`] decides (so requests submitted through `api` are found once they
    /// start). A later request with the same id replaces the entry.
    pub handles: HashMap<RequestId, RequestHandle>,
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
        Self {
            sched,
            api,
            clock,
            handles: HashMap::new(),
        }
    }

    pub fn submit(&mut self, id: u64, class: Class, prompt: u32, max_new: u32) -> RequestHandle {
        let handle = self
            .api
            .submit(RequestSpec::new(id, class, prompt, max_new))
            .expect("submit accepted");
        self.handles.insert(RequestId(id), handle);
        handle
    }

    /// The handle of the request the engine knows as `id` (see [`Harness::handles`]).
    pub fn handle(&self, id: u64) -> RequestHandle {
        *self
            .handles
            .get(&RequestId(id))
            .unwrap_or_else(|| panic!("request {id} was submitted or admitted"))
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
        for a in &d.admitted {
            self.handles.insert(a.id, a.handle);
        }
        d
    }

    /// Runs the whole prefill of an admitted request and samples its first token.
    pub fn prefill(&mut self, a: &Admitted) {
        self.sched
            .on_progress(a.handle, self.clock.now(), a.prefill_target, 1)
            .expect("progress accepted");
    }

    /// Finishes the request the engine knows as `id`, through its handle.
    pub fn finish(&mut self, id: RequestId) {
        let handle = self.handle(id.0);
        self.sched
            .on_finished(handle, self.clock.now(), FinishReason::Stop)
            .expect("finish accepted");
    }
}

/// Handles that came from another scheduler, at slot indices a test that submits fewer than
/// 100 requests from one thread never uses: 99 (a slot of the first chunk of the table,
/// allocated once anything is submitted) and 2047 (a slot of a chunk it never allocates).
/// They name no request of the test's scheduler (whose table also starts its slots at
/// another generation).
pub fn foreign_handles() -> [RequestHandle; 2] {
    let (_sched, api) = Scheduler::new(no_aging()).expect("valid config");
    let handles: Vec<RequestHandle> = (0..2048)
        .map(|id| {
            api.submit(RequestSpec::new(id, Class::LOW, 16, 4))
                .expect("submit accepted")
        })
        .collect();
    let picked = [handles[99], handles[2047]];
    assert_eq!(picked.map(|h| h.index()), [99, 2047]);
    picked
}

pub fn ids(admitted: &[Admitted]) -> Vec<u64> {
    admitted.iter().map(|a| a.id.0).collect()
}
