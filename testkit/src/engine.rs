//! A fake engine that carries out a [`Decision`] to the letter: each admitted request's
//! prefill chunk and each scheduled chunk or decode token run in the iteration, KV blocks
//! grow with the tokens computed, a sample comes out once a run's prefill is done, and a
//! request finishes at its output goal. Preempted requests lose their KV and keep their
//! output; ended ones are forgotten.

use crate::Rng;
use std::collections::BTreeMap;
use triage::{
    Budget, Decision, FinishReason, Outcome, RejectReason, RequestHandle, RequestId, Scheduler,
    Timestamp,
};

/// When a request finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    /// At its `max_new_tokens` ([`FinishReason::Length`]).
    MaxNew,
    /// At a length drawn uniformly from 1 to its `max_new_tokens` at its first admission,
    /// from a generator seeded with this ([`FinishReason::Stop`] when short of
    /// `max_new_tokens`).
    Drawn(u64),
    /// At this many output tokens, or its `max_new_tokens` if fewer.
    Output(u32),
    /// Never on its own: the test ends it ([`FakeEngine::finish`]). [`FakeEngine::done`]
    /// lists the running requests that generated their `max_new_tokens`.
    Never,
}

/// One running request, as the engine holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Its handle (the same on every run of a request).
    pub handle: RequestHandle,
    /// Tokens to prefill in this run (the admission's `prefill_target`).
    pub target: u32,
    /// Tokens whose KV this run has computed.
    pub kv: u32,
    /// KV blocks this run holds.
    pub blocks: u32,
}

/// What the engine knows of a request from its first admission until it ends.
#[derive(Clone, Copy, Debug)]
struct Held {
    handle: RequestHandle,
    generated: u32,
    max_new: u32,
    /// Output tokens after which it finishes (`u32::MAX`: never on its own).
    goal: u32,
}

/// What carrying out one decision did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carried {
    /// Requests that ended, with their outcome: those the decision ended (cancelled or
    /// aborted: [`Outcome::Cancelled`]; rejected: by reason) and those that reached their
    /// goal (the outcome `on_finished` answered).
    pub ended: Vec<(RequestId, Outcome)>,
    /// Output tokens sampled in this iteration, per request that sampled any.
    pub output: Vec<(RequestId, u32)>,
}

/// See the module docs. Keyed by the engine's request id, as a decision names requests;
/// ordered by it, so that a seeded run goes the same way every time.
#[derive(Debug)]
pub struct FakeEngine {
    total_blocks: u32,
    block_size: u32,
    goal: Goal,
    rng: Rng,
    running: BTreeMap<RequestId, Run>,
    held: BTreeMap<RequestId, Held>,
    /// Sum of `running`'s blocks.
    blocks_held: u64,
    /// Checks a decision broke, in words.
    problems: Vec<String>,
}

/// The outcome a rejection gives.
fn rejected_outcome(reason: RejectReason) -> Outcome {
    match reason {
        RejectReason::TimedOut { .. } => Outcome::TimedOut,
        RejectReason::DeadlineMissed { .. } => Outcome::Shed,
        RejectReason::TenantLimit { .. } => Outcome::Refused,
    }
}

impl FakeEngine {
    /// An engine with `total_blocks` KV blocks of `block_size` tokens whose requests
    /// finish at `goal`.
    ///
    /// ```
    /// use triage::*;
    /// use triage_testkit::{FakeEngine, Goal};
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let mut engine = FakeEngine::new(1_000, 16, Goal::MaxNew);
    /// api.submit(RequestSpec::new(1, Class::HIGH, 40, 2)).unwrap();
    /// let mut ended = Vec::new();
    /// while ended.is_empty() {
    ///     let d = sched.step(clock.now(), &engine.budget(8, 2048)).unwrap();
    ///     ended = engine.carry_out(&mut sched, &d, clock.now()).ended;
    ///     clock.advance(std::time::Duration::from_millis(10));
    /// }
    /// assert_eq!(ended, vec![(RequestId(1), Outcome::Finished)]);
    /// assert!(engine.problems().is_empty());
    /// ```
    pub fn new(total_blocks: u32, block_size: u32, goal: Goal) -> Self {
        let seed = match goal {
            Goal::Drawn(seed) => seed,
            _ => 0,
        };
        Self {
            total_blocks,
            block_size,
            goal,
            rng: Rng::new(seed),
            running: BTreeMap::new(),
            held: BTreeMap::new(),
            blocks_held: 0,
            problems: Vec::new(),
        }
    }

    /// KV blocks no running request holds.
    pub fn free_blocks(&self) -> u32 {
        self.total_blocks
            .saturating_sub(u32::try_from(self.blocks_held).unwrap_or(u32::MAX))
    }

    /// The next iteration's budget: `seqs` and `tokens`, and the blocks free.
    pub fn budget(&self, seqs: u32, tokens: u32) -> Budget {
        Budget {
            max_num_seqs: seqs,
            max_batched_tokens: tokens,
            free_blocks: self.free_blocks(),
        }
    }

    /// The running request `id`, if it runs.
    pub fn run(&self, id: RequestId) -> Option<&Run> {
        self.running.get(&id)
    }

    /// Requests running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The ids of the requests running, in order.
    pub fn running_ids(&self) -> Vec<RequestId> {
        self.running.keys().copied().collect()
    }

    /// KV blocks the running requests hold.
    pub fn blocks_held(&self) -> u32 {
        u32::try_from(self.blocks_held).unwrap_or(u32::MAX)
    }

    /// Output tokens `id` has generated (kept across preemptions), while it is held.
    pub fn generated(&self, id: RequestId) -> Option<u32> {
        self.held.get(&id).map(|h| h.generated)
    }

    /// Running requests that generated their `max_new_tokens` (with [`Goal::Never`] they
    /// wait for [`FakeEngine::finish`]), in id order.
    pub fn done(&self) -> Vec<RequestId> {
        self.running
            .keys()
            .filter(|id| self.held[id].generated >= self.held[id].max_new)
            .copied()
            .collect()
    }

    /// The checks decisions broke so far, in words (empty if every decision made sense).
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    fn problem(&mut self, what: String) {
        self.problems.push(what);
    }

    fn stop_running(&mut self, id: RequestId) -> Option<Run> {
        let run = self.running.remove(&id)?;
        self.blocks_held -= u64::from(run.blocks);
        Some(run)
    }

    /// Forgets `id` without a word to the scheduler (if it runs, its KV blocks are free
    /// again): for a request the scheduler gave up outside a decision, such as one
    /// [`Scheduler::drain_waiting`] handed off.
    pub fn forget(&mut self, id: RequestId) {
        self.stop_running(id);
        self.held.remove(&id);
    }

    /// Carries out `d`, the decision of the step at `now`, and reports the iteration's
    /// progress to `sched` at `now`.
    pub fn carry_out(&mut self, sched: &mut Scheduler, d: &Decision, now: Timestamp) -> Carried {
        let mut carried = Carried::default();
        for &id in &d.cancelled {
            if self.running.contains_key(&id) {
                self.problem(format!("{id} cancelled as waiting while it runs"));
            }
            self.forget(id);
            carried.ended.push((id, Outcome::Cancelled));
        }
        for &id in &d.aborted {
            if !self.running.contains_key(&id) {
                self.problem(format!("{id} aborted while not running"));
            }
            self.forget(id);
            carried.ended.push((id, Outcome::Cancelled));
        }
        for r in &d.rejected {
            self.forget(r.id);
            carried.ended.push((r.id, rejected_outcome(r.reason)));
        }
        for p in &d.preempted {
            match self.stop_running(p.id) {
                Some(run) if p.freed_blocks < run.blocks => self.problem(format!(
                    "{} preempted freeing {} blocks, held {}",
                    p.id, p.freed_blocks, run.blocks
                )),
                Some(_) => {}
                None => self.problem(format!("{} preempted while not running", p.id)),
            }
        }
        for a in &d.admitted {
            if self.running.contains_key(&a.id) {
                self.problem(format!("{} admitted while running", a.id));
                continue;
            }
            let (goal_rule, rng) = (self.goal, &mut self.rng);
            // The goal is set at the first admission; a resumed request keeps it.
            let held = *self.held.entry(a.id).or_insert_with(|| Held {
                handle: a.handle,
                generated: 0,
                max_new: a.max_new_tokens,
                goal: match goal_rule {
                    Goal::MaxNew => a.max_new_tokens,
                    Goal::Output(n) => n.min(a.max_new_tokens),
                    Goal::Drawn(_) => 1 + (rng.next_u64() % u64::from(a.max_new_tokens)) as u32,
                    Goal::Never => u32::MAX,
                },
            });
            if held.handle != a.handle {
                self.problem(format!(
                    "{} resumed as {}, first admitted as {}",
                    a.id, a.handle, held.handle
                ));
            }
            self.running.insert(
                a.id,
                Run {
                    handle: a.handle,
                    target: a.prefill_target,
                    kv: 0,
                    blocks: a.blocks,
                },
            );
            self.blocks_held += u64::from(a.blocks);
        }
        let work = d
            .admitted
            .iter()
            .map(|a| (a.id, a.handle, a.prefill_tokens))
            .chain(d.scheduled.iter().map(|s| (s.id, s.handle, s.tokens)));
        for (id, handle, tokens) in work {
            self.compute(sched, id, handle, tokens, now, &mut carried);
        }
        carried
    }

    /// Runs `tokens` of `id`'s work and reports them; finishes it at its goal.
    fn compute(
        &mut self,
        sched: &mut Scheduler,
        id: RequestId,
        handle: RequestHandle,
        tokens: u32,
        now: Timestamp,
        carried: &mut Carried,
    ) {
        let Some(run) = self.running.get_mut(&id) else {
            return self.problem(format!("work for {id}, which is not running"));
        };
        if run.handle != handle {
            let what = format!("work for {id} under {handle}, running as {}", run.handle);
            return self.problem(what);
        }
        run.kv += tokens;
        let blocks = run.blocks.max(run.kv.div_ceil(self.block_size));
        self.blocks_held += u64::from(blocks - run.blocks);
        run.blocks = blocks;
        let out = u32::from(run.kv >= run.target);
        if let Err(e) = sched.on_progress(handle, now, tokens, out) {
            return self.problem(format!("on_progress of {id}: {e}"));
        }
        let held = self.held.get_mut(&id).expect("a running request is held");
        held.generated += out;
        if out > 0 {
            carried.output.push((id, out));
        }
        if held.generated >= held.goal {
            let reason = if held.generated >= held.max_new {
                FinishReason::Length
            } else {
                FinishReason::Stop
            };
            self.end(sched, id, reason, now, carried);
        }
    }

    fn end(
        &mut self,
        sched: &mut Scheduler,
        id: RequestId,
        reason: FinishReason,
        now: Timestamp,
        carried: &mut Carried,
    ) {
        let handle = self.held[&id].handle;
        match sched.on_finished(handle, now, reason) {
            Ok(outcome) => carried.ended.push((id, outcome)),
            Err(e) => self.problem(format!("on_finished of {id}: {e}")),
        }
        self.forget(id);
    }

    /// Finishes the running request `id` now ([`FinishReason::Stop`]); its outcome, or
    /// `None` if it is not running or the scheduler refused the report.
    pub fn finish(
        &mut self,
        sched: &mut Scheduler,
        id: RequestId,
        now: Timestamp,
    ) -> Option<Outcome> {
        if !self.running.contains_key(&id) {
            return None;
        }
        let mut carried = Carried::default();
        self.end(sched, id, FinishReason::Stop, now, &mut carried);
        carried.ended.first().map(|&(_, o)| o)
    }
}
