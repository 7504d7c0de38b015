//! Deadline order (`order = "deadline"`): each waiting request's deadline, the judgement of
//! whether it can still meet it, and the step's plan under it.
//!
//! # The plan of a step
//!
//! 1. **Urgent demand.** The first prefill in rank order (a running request's next chunk
//!    or the next waiting request) is *urgent* if its slack — time to its deadline less its
//!    estimated prefill — is below `deadline.urgent_slack_ms`. Its remaining prefill, up to
//!    the token budget, is its demand.
//! 2. **Decode tokens**, running requests in start order: one each, except that while the
//!    urgent demand needs the tokens, a request of a lower class than the urgent one whose
//!    last token came less than `deadline.max_decode_delay_ms` ago (or its class's TPOT
//!    bound) waits an iteration: the budget share. A decode that needs a KV block that is
//!    not free preempts, demoted requests first (relegated behind every class:
//!    [`LateRule::Keep`]), then the lowest class, newest first.
//! 3. **Prefill** in rank order, running chunks and admissions merged: requests that can
//!    still meet their deadline by class, then deadline, each class's followed by its
//!    relegated ones if it serves its late requests ([`LateRule::Serve`]); the other
//!    relegated ones after them, by class, then arrival. Relaxed requests (demoted, or with
//!    more slack than `deadline.relaxed_slack_ms`) share `deadline.relaxed_chunk_tokens`
//!    per iteration. A waiting request past `max_wait` goes first while the overdue credit
//!    (a share of each iteration's budget) covers its prefill. An urgent candidate that
//!    does not fit (live, or relegated within a serving class) may preempt running
//!    requests that are demoted or of a class at least `preemption.min_class_gap` lower,
//!    demoted first, then lowest class, then least recompute; if those would not make room
//!    within `preemption.max_victims_per_step` and the candidate's class serves its late
//!    requests, the victims that do, by a best fit on KV blocks. Nobody else preempts.
//!
//! A waiting request is judged when it comes up as its tier's next: if its first token (for
//! a TTFT deadline) or its start (otherwise) cannot come before its deadline at the engine's
//! measured pace ([`super::pace::Pace`]), it is relegated or shed by its class's rule
//! (relegated within its class under [`LateRule::Serve`]). A preempted request is judged
//! like any other when it comes up again, except that one whose first token is out has no
//! TTFT deadline left to miss: it keeps its place.
//!
//! Overdue requests (waiting past `max_wait`) are found by looking at each tier's first
//! request: inside a class the first is the earliest deadline, so an overdue request behind
//! a younger one with an earlier deadline (a batch request with a shorter expected run) is
//! found once that one goes.

use super::pace::Pace;
use super::plan::Left;
use super::Scheduler;
use crate::budget::{Budget, Short};
use crate::config::{LateRule, QueueOrder, SchedulerConfig};
use crate::counters::Outcome;
use crate::decision::{Decision, RejectReason};
use crate::queue::slab::{Entry, Run, Slab};
use crate::queue::Candidate;
use crate::time::Timestamp;
use std::time::Duration;

/// The most waiting requests one step relegates or sheds; the rest are judged by the next
/// steps. Bounds a step's work when a backlog becomes hopeless all at once.
const MAX_JUDGED_LATE_PER_STEP: u32 = 4096;

/// The order of prefill work in a step: smaller goes first. `(tier group, class, within,
/// time)`: overdue requests taken on credit first, then live requests by class and
/// deadline, each class's followed by its relegated ones by arrival if it serves its late
/// requests ([`LateRule::Serve`]), then the other relegated ones by class and arrival.
type Rank = (u8, usize, u8, Timestamp);

/// The rank of a request of class `class` (see [`Rank`]); `serves`: its class's rule is
/// [`LateRule::Serve`].
fn rank(e: &Entry, class: usize, on_credit: bool, serves: bool) -> Rank {
    if on_credit {
        (0, 0, 0, Timestamp::ZERO)
    } else if e.relegated && serves {
        (1, class, 1, e.arrival)
    } else if e.relegated {
        (2, class, 0, e.arrival)
    } else {
        (1, class, 0, e.deadline)
    }
}

fn nanos(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

impl Scheduler {
    /// Sets a request's deadline as it is queued (drained, or moved to another class): its
    /// own TTFT target or its class's bounds the first token; else its class's end-to-end
    /// target, less its estimated run, bounds its start; `max_wait` bounds both.
    pub(super) fn set_deadline(&mut self, key: u32) {
        set_deadline(&self.config, &self.pace, &mut self.slab[key]);
    }

    /// How long a request may still wait and meet its deadline (negative: it cannot).
    pub(super) fn slack(&self, key: u32, now: Timestamp) -> i128 {
        self.slack_of(&self.slab[key], || self.slab.run_state(key), now)
    }

    /// [`Scheduler::slack`] of entry `e`; `run` gives its run state, asked for only if the
    /// deadline is its first token's.
    fn slack_of(&self, e: &Entry, run: impl FnOnce() -> Run, now: Timestamp) -> i128 {
        let mut slack = i128::from(e.deadline.0) - i128::from(now.0);
        if e.first_token_due {
            let run = run();
            if run.first_token.is_none() {
                let rest = run.prefill_target.saturating_sub(run.kv_tokens);
                slack -= i128::from(self.pace.prefill_ns(rest));
            }
        }
        slack
    }

    /// The rank of a waiting candidate: by the class it was queued in.
    fn rank_of_candidate(&self, c: &Candidate) -> Rank {
        let e = &self.slab[c.key];
        rank(e, c.class.index(), c.on_credit(), self.serves(e))
    }

    /// The rank of running request `key`: by the class it runs as.
    fn rank_of_running(&self, key: u32) -> Rank {
        let e = &self.slab[key];
        rank(
            e,
            self.slab.run(key).run_class.index(),
            false,
            self.serves(e),
        )
    }

    /// Whether `e`'s class serves its late requests ([`LateRule::Serve`]): relegated, it
    /// waits only behind its own class's live requests, stays urgent and is not relaxed.
    pub(super) fn serves(&self, e: &Entry) -> bool {
        self.config.classes[e.spec.class.index()].on_late == LateRule::Serve
    }

    /// Whether a request's prefill is relaxed: relegated (unless its class serves its late
    /// requests), or far from its deadline (its [`Scheduler::slack`] is `slack`).
    fn relaxed(&self, e: &Entry, slack: i128) -> bool {
        (e.relegated && !self.serves(e)) || slack > nanos(self.config.deadline.relaxed_slack())
    }

    /// The next waiting request to consider, relegating or shedding (by their class's rule)
    /// the ones that come up and can no longer meet their deadline.
    fn next_candidate(&mut self, now: Timestamp, out: &mut Decision) -> Option<Candidate> {
        loop {
            let judge = self.late_left > 0;
            let pace = &self.pace;
            let mut late = |slab: &Slab, key: u32| {
                let e = &slab[key];
                let slack = i128::from(e.deadline.0) - i128::from(now.0);
                judge
                    && if e.first_token_due {
                        // After its first token a TTFT deadline has nothing left to miss.
                        let run = slab.run_state(key);
                        run.first_token.is_none()
                            && slack < i128::from(pace.prefill_ns(run.prefill_target))
                    } else {
                        slack < 0
                    }
            };
            let cand = self.wait.pop_candidate(
                &mut self.slab,
                now,
                self.max_wait,
                self.overdue_credit,
                &mut late,
            )?;
            if let Some(timeout) = self.queue_timeout {
                // The timeout pass looks at each tier's first request; one that timed out
                // behind a younger request with an earlier deadline is ended here instead of
                // starting.
                let e = &self.slab[cand.key];
                let waited = now.saturating_since(e.arrival);
                if self.slab.run_state(cand.key).preemptions == 0 && waited >= timeout {
                    let reason = RejectReason::TimedOut { waited };
                    self.end_rejected(cand.key, Outcome::TimedOut, reason, now, out);
                    continue;
                }
            }
            if !cand.late() {
                return Some(cand);
            }
            self.judge_late(cand.key, now, out);
        }
    }

    /// Relegates or sheds (by its class's rule) waiting request `key`, a candidate that can
    /// no longer meet its deadline.
    #[cold]
    #[inline(never)]
    fn judge_late(&mut self, key: u32, now: Timestamp, out: &mut Decision) {
        let e = &self.slab[key];
        let class = e.spec.class.index();
        let rule = self.config.classes[class].on_late;
        self.late_left -= 1;
        let waited = now.saturating_since(e.arrival);
        let late_by = now
            .saturating_add(if e.first_token_due {
                self.pace.prefill(self.slab.run_state(key).prefill_target)
            } else {
                Duration::ZERO
            })
            .saturating_since(e.deadline);
        let id = e.spec.id;
        match rule {
            // Relegated; under `serve` within its class (see `Tiers::relegate_within`).
            LateRule::Keep | LateRule::Serve => {
                self.wait.relegate(&mut self.slab, key, now);
                self.counters.per_class[class].relegated += 1;
                #[cfg(feature = "metrics")]
                {
                    self.step_counts[class].relegated += 1;
                }
                tracing::debug!(
                    id = id.0,
                    class,
                    waited_ms = waited.as_millis() as u64,
                    late_by_ms = late_by.as_millis() as u64,
                    "relegated: can no longer meet its deadline"
                );
            }
            LateRule::Shed => {
                let reason = RejectReason::DeadlineMissed { waited, late_by };
                if self.end_rejected(key, Outcome::Shed, reason, now, out) {
                    tracing::debug!(
                        id = id.0,
                        class,
                        waited_ms = waited.as_millis() as u64,
                        late_by_ms = late_by.as_millis() as u64,
                        "shed: can no longer meet its deadline"
                    );
                }
            }
        }
    }

    /// The step's plan in deadline order (see the module docs).
    pub(super) fn plan_deadline(&mut self, now: Timestamp, budget: &Budget, out: &mut Decision) {
        let mut left = self.start_plan(budget, out);
        let mut freed = 0u32;
        self.late_left = MAX_JUDGED_LATE_PER_STEP;
        let share = self.config.deadline.overdue_share;
        let credit = (f64::from(budget.max_batched_tokens) * share) as u64;
        // Banked up to the largest prompt (so any overdue request can be served on credit)
        // or one budget, at least 8,192 tokens: the credit is a rate, not a reserve.
        let cap = u64::from(budget.max_batched_tokens)
            .max(u64::from(self.config.engine.max_model_len))
            .max(8192);
        self.overdue_credit = (self.overdue_credit + credit).min(cap);
        if share == 0.0 {
            self.overdue_credit = 0;
        }
        let demand = self.urgent_demand(now, out);
        let mut withheld = std::mem::take(&mut self.withheld);
        self.plan_decodes(now, demand, &mut withheld, &mut left, &mut freed, out);
        self.plan_prefills(now, &mut left, &mut freed, out);
        // Tokens the urgent prefill did not take after all go to the decodes held back.
        for key in withheld.drain(..) {
            if left.tokens == 0 {
                break;
            }
            if self.slab[key].place != crate::queue::slab::Place::Running
                || self.slab.run(key).planned_step == self.step_no
            {
                continue;
            }
            if let Some(mut i) = self.running.iter().position(|&k| k == key) {
                self.give_tokens(&mut i, 1, now, &mut left, &mut freed, out);
            }
        }
        self.withheld = withheld;
        self.finish_plan(now, budget, &left, freed, out);
    }

    /// The urgent prefill demand of the step, if the first prefill in rank order is urgent:
    /// `(tokens, class)`.
    fn urgent_demand(&mut self, now: Timestamp, out: &mut Decision) -> Option<(u32, usize)> {
        if self.config.deadline.max_decode_delay_ms == 0 {
            return None;
        }
        let urgent = nanos(self.config.deadline.urgent_slack());
        let mut best: Option<(Rank, u32, usize, i128)> = None;
        for &key in &self.running {
            let run = self.slab.run(key);
            if !run.prefilling() {
                continue;
            }
            let r = self.rank_of_running(key);
            if best.is_none_or(|b| r < b.0) {
                let rest = run.prefill_target - run.kv_tokens;
                best = Some((r, rest, run.run_class.index(), self.slack(key, now)));
            }
        }
        if let Some(cand) = self.next_candidate(now, out) {
            let r = self.rank_of_candidate(&cand);
            if best.is_none_or(|b| r < b.0) {
                let target = self.slab.run_state(cand.key).prefill_target;
                best = Some((r, target, cand.class.index(), self.slack(cand.key, now)));
            }
            self.wait.restore(&mut self.slab, cand);
        }
        let (rank, tokens, class, slack) = best?;
        (rank.0 <= 1 && slack < urgent).then_some((tokens, class))
    }

    /// Gives running requests that decode their next token (see the module docs, 2); the
    /// ones held back for the urgent prefill go to `withheld`.
    fn plan_decodes(
        &mut self,
        now: Timestamp,
        demand: Option<(u32, usize)>,
        withheld: &mut Vec<u32>,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) {
        let reserve = demand.map_or(0, |(t, _)| t.min(left.tokens));
        let max_delay = self.config.deadline.max_decode_delay();
        let mut i = 0;
        while i < self.running.len() {
            if left.tokens == 0 {
                break;
            }
            let key = self.running[i];
            let (e, run) = (&self.slab[key], self.slab.run(key));
            if run.prefilling() {
                i += 1;
                continue;
            }
            if let Some((_, class)) = demand {
                let delay = self
                    .config
                    .slo
                    .classes
                    .get(e.spec.class.index())
                    .and_then(|t| t.tpot);
                let cap = delay.map_or(max_delay, |t| t.bound().min(max_delay));
                if run.run_class.index() > class
                    && left.tokens <= reserve
                    && now.saturating_since(run.last_work) < cap
                {
                    withheld.push(key); // held back for the urgent prefill
                    i += 1;
                    continue;
                }
            }
            self.give_tokens(&mut i, 1, now, left, freed, out);
        }
    }

    /// Prefill chunks of running requests and admissions, merged in rank order (see the
    /// module docs, 3).
    fn plan_prefills(
        &mut self,
        now: Timestamp,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) {
        let mut pending: Vec<(Rank, u32)> = self
            .running
            .iter()
            .filter(|&&k| {
                let run = self.slab.run(k);
                run.prefilling() && run.planned_step != self.step_no
            })
            .map(|&k| (self.rank_of_running(k), k))
            .collect();
        pending.sort_unstable();
        let mut next_running = 0;
        let relaxed_cap = self.config.deadline.relaxed_chunk_tokens;
        // Without chunked prefill a prompt starts whole: the cap cannot cut it.
        let mut relaxed_left = if relaxed_cap == 0 || !self.config.chunked_prefill {
            u32::MAX
        } else {
            relaxed_cap
        };
        let watermark = self.config.engine.watermark_blocks();
        let lookahead = self.config.backfill_lookahead;
        let urgent = nanos(self.config.deadline.urgent_slack());
        self.skipped.clear();
        let mut cand: Option<Candidate> = None;
        // Whether waiting requests may still start in this step (running chunks go on).
        let mut admitting = true;
        loop {
            if left.tokens == 0 && left.victims == 0 {
                break;
            }
            if admitting
                && cand.is_none()
                && (left.seqs > 0 || left.victims > 0)
                && self.wait.len() > 0
            {
                cand = self.next_candidate(now, out);
            }
            let running_first = match (pending.get(next_running), &cand) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(&(r, _)), Some(c)) => r <= self.rank_of_candidate(c),
            };
            if running_first {
                let key = pending[next_running].1;
                next_running += 1;
                if left.tokens == 0 || self.slab[key].place != crate::queue::slab::Place::Running {
                    continue; // preempted meanwhile, or no tokens left
                }
                let relaxed = self.relaxed(&self.slab[key], self.slack(key, now));
                let run = self.slab.run(key);
                let mut chunk = (run.prefill_target - run.kv_tokens).min(left.tokens);
                if relaxed {
                    chunk = chunk.min(relaxed_left);
                }
                if chunk == 0 {
                    continue;
                }
                let Some(i) = self.running.iter().position(|&k| k == key) else {
                    continue;
                };
                if self.give_tokens_no_preempt(i, chunk, now, left, out) && relaxed {
                    relaxed_left -= chunk;
                }
                continue;
            }
            let c = cand.take().expect("a candidate");
            // Entry and run state looked up once for the target, the slack and the rules.
            let (e, run) = (&self.slab[c.key], self.slab.run_state(c.key));
            let target = run.prefill_target;
            let blocks =
                u32::try_from(self.config.engine.blocks_for(u64::from(target))).unwrap_or(u32::MAX);
            let slack = self.slack_of(e, || run, now);
            let relaxed = self.relaxed(e, slack);
            let may_preempt = !relaxed && (!e.relegated || self.serves(e)) && slack < urgent;
            let mut short = self.shortfall(left, target, blocks, watermark);
            if short.is_none() && relaxed && relaxed_left == 0 {
                short = Some(Short::Tokens);
            }
            if let Some(s) = short {
                if may_preempt
                    && left.victims > 0
                    && self.preempt_for(c, s, target, blocks + watermark, left, freed, out)
                {
                    short = self.shortfall(left, target, blocks, watermark);
                }
            }
            match short {
                None => {
                    let cap = if relaxed { relaxed_left } else { u32::MAX };
                    let chunk = self.admit(c, now, target, blocks, cap, left, out);
                    if relaxed {
                        relaxed_left -= chunk;
                    }
                    if c.on_credit() {
                        self.overdue_credit = self.overdue_credit.saturating_sub(u64::from(target));
                    }
                }
                Some(s) => {
                    out.summary.stopped_by.get_or_insert(s);
                    tracing::debug!(
                        id = self.slab[c.key].spec.id.0,
                        class = c.class.index(),
                        relegated = self.slab[c.key].relegated,
                        short = s.as_str(),
                        "does not fit"
                    );
                    self.skipped.push(c);
                    if self.skipped.len() > lookahead || (left.seqs == 0 && left.victims == 0) {
                        admitting = false;
                    }
                }
            }
        }
        if let Some(c) = cand {
            self.skipped.push(c);
        }
        if out.summary.stopped_by.is_none() && (self.wait.len() > 0 || !self.skipped.is_empty()) {
            // Requests still wait and none was looked at: say which budget ran out.
            if left.seqs == 0 {
                out.summary.stopped_by = Some(Short::Seqs);
            } else if left.tokens == 0 {
                out.summary.stopped_by = Some(Short::Tokens);
            }
        }
        while let Some(c) = self.skipped.pop() {
            self.wait.restore(&mut self.slab, c);
        }
    }
}

/// Sets `e`'s deadline under `config` (see [`Scheduler::set_deadline`]), and its queue time:
/// the deadline in deadline order, its arrival in the ladder (which has no use for the
/// deadline and leaves it). It is live again.
///
/// In ns throughout: it runs for every request drained.
pub(super) fn set_deadline(config: &SchedulerConfig, pace: &Pace, e: &mut Entry) {
    e.relegated = false;
    if config.order != QueueOrder::Deadline {
        e.due = e.arrival;
        return;
    }
    const MS: u64 = 1_000_000;
    let class = e.spec.class.index();
    let max_wait = config.max_wait_ms.saturating_mul(MS);
    let targets = config.slo.classes.get(class);
    let ttft_ms = e
        .spec
        .ttft_ms()
        .map(u64::from)
        .or_else(|| targets.and_then(|t| t.ttft).map(|t| t.bound_ms));
    let (bound, first_token_due) = match ttft_ms {
        Some(ms) => (ms.saturating_mul(MS), true),
        None => {
            let latest_start = targets.and_then(|t| t.e2e).map(|t| {
                let run = pace.run_ns(class, e.spec.prompt_tokens, e.spec.max_new_tokens);
                t.bound_ms.saturating_mul(MS).saturating_sub(run)
            });
            (latest_start.unwrap_or(max_wait), false)
        }
    };
    e.deadline = Timestamp(e.arrival.0.saturating_add(bound.min(max_wait)));
    e.first_token_due = first_token_due;
    e.due = e.deadline;
}
