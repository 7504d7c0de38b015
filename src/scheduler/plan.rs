//! One iteration's batch in the ladder order: running requests' work first (oldest run
//! first), then admissions in queue order with preemption and bounded backfill; and the
//! mechanics both orders share (budget accounting, admission, preemption). Deadline order's
//! plan is in `deadline.rs`. Everything here runs on the engine thread and touches only the
//! scheduler's own structures and the request table's state words.

use super::Scheduler;
use crate::budget::{Budget, Short};
use crate::config::LateRule;
use crate::counters::Outcome;
use crate::decision::{Admitted, Decision, PreemptReason, Preempted, Scheduled};
use crate::ingress::table::{QUEUED, RUNNING};
use crate::queue::slab::Place;
use crate::queue::Candidate;
use crate::time::Timestamp;

/// What is left of the budget as the step goes.
/// What a preemption must free: sequence slots, KV blocks and this step's tokens.
#[derive(Clone, Copy)]
struct Need {
    seqs: u32,
    blocks: u32,
    tokens: u32,
}

pub(super) struct Left {
    pub(super) seqs: u32,
    pub(super) tokens: u32,
    pub(super) free_blocks: u32,
    pub(super) victims: usize,
}

impl Scheduler {
    pub(super) fn plan(&mut self, now: Timestamp, budget: &Budget, out: &mut Decision) {
        if self.by_deadline() {
            return self.plan_deadline(now, budget, out);
        }
        let mut left = self.start_plan(budget, out);
        let mut freed = 0u32;
        self.plan_running(now, &mut left, &mut freed, out);
        self.admit_waiting(now, &mut left, &mut freed, out);
        self.finish_plan(now, budget, &left, freed, out);
    }

    /// The step's budget, after preempting what runs beyond a `max_num_seqs` the engine
    /// lowered.
    pub(super) fn start_plan(&mut self, budget: &Budget, out: &mut Decision) -> Left {
        let mut left = Left {
            seqs: budget
                .max_num_seqs
                .saturating_sub(u32::try_from(self.running.len()).unwrap_or(u32::MAX)),
            tokens: budget.max_batched_tokens,
            free_blocks: budget.free_blocks,
            victims: if self.config.preemption.enabled {
                self.config.preemption.max_victims_per_step
            } else {
                0
            },
        };
        let mut freed = 0u32;
        // The engine may shrink max_num_seqs below what runs: the newest, lowest-class
        // requests go back to the queue until the budget holds.
        while self.running.len() > budget.max_num_seqs as usize {
            let Some(v) = self.pick_victim(None) else {
                break;
            };
            let reason = PreemptReason::OverBudget { short: Short::Seqs };
            self.preempt(v, reason, &mut left, &mut freed, out);
        }
        left.seqs = budget
            .max_num_seqs
            .saturating_sub(u32::try_from(self.running.len()).unwrap_or(u32::MAX));
        out.summary.blocks = freed; // blocks freed before any work: counted back below
        left
    }

    /// Queues this step's victims again and totals the step.
    pub(super) fn finish_plan(
        &mut self,
        now: Timestamp,
        budget: &Budget,
        left: &Left,
        freed: u32,
        out: &mut Decision,
    ) {
        for key in std::mem::take(&mut self.requeue) {
            self.wait.insert_again(&mut self.slab, key, now);
        }
        let freed = freed + out.summary.blocks;
        out.summary.tokens = budget.max_batched_tokens - left.tokens;
        out.summary.blocks = (budget.free_blocks + freed).saturating_sub(left.free_blocks);
    }

    /// Gives every running request its next prefill chunk or decode token while tokens
    /// last, oldest run first.
    fn plan_running(
        &mut self,
        now: Timestamp,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) {
        let mut i = 0;
        while i < self.running.len() {
            if left.tokens == 0 {
                break;
            }
            let run = self.slab.run(self.running[i]);
            let tokens = if run.prefilling() {
                (run.prefill_target - run.kv_tokens).min(left.tokens)
            } else {
                1
            };
            self.give_tokens(&mut i, tokens, now, left, freed, out);
        }
    }

    /// Schedules `tokens` of work for `running[*i]` and moves `*i` to the next running
    /// request. The KV blocks they need come from the free ones; when too few are free,
    /// the lowest-class, most recently started request is preempted (possibly
    /// `running[*i]` itself, which then gets nothing), as vLLM does; with no victim left
    /// it waits for the next iteration.
    pub(super) fn give_tokens(
        &mut self,
        i: &mut usize,
        tokens: u32,
        now: Timestamp,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) {
        let key = self.running[*i];
        let id = self.slab[key].spec.id;
        while self.blocks_needed(key, tokens) > left.free_blocks {
            let Some(v) = self.pick_victim(None) else {
                break;
            };
            let own = self.running[v] == key;
            if v < *i {
                *i -= 1;
            }
            let reason = PreemptReason::KvExhausted { needed_by: id };
            self.preempt(v, reason, left, freed, out);
            if own {
                return; // `*i` now names the next running request
            }
        }
        self.schedule(key, tokens, now, left, out);
        *i += 1;
    }

    /// Schedules `tokens` of work for `running[i]` if its KV blocks are free, preempting
    /// nobody. Whether it was scheduled.
    pub(super) fn give_tokens_no_preempt(
        &mut self,
        i: usize,
        tokens: u32,
        now: Timestamp,
        left: &mut Left,
        out: &mut Decision,
    ) -> bool {
        let key = self.running[i];
        self.schedule(key, tokens, now, left, out)
    }

    /// KV blocks running request `key` needs beyond what it holds to compute `tokens` more.
    fn blocks_needed(&self, key: u32, tokens: u32) -> u32 {
        let run = self.slab.run(key);
        let want = self
            .config
            .engine
            .blocks_for(u64::from(run.kv_tokens) + u64::from(tokens));
        u32::try_from(want.saturating_sub(u64::from(run.blocks))).unwrap_or(u32::MAX)
    }

    /// Takes `tokens` and their KV blocks from the budget for running request `key`, if
    /// the blocks are free. Whether it did.
    fn schedule(
        &mut self,
        key: u32,
        tokens: u32,
        now: Timestamp,
        left: &mut Left,
        out: &mut Decision,
    ) -> bool {
        let need = self.blocks_needed(key, tokens);
        if need > left.free_blocks {
            return false;
        }
        let step = self.step_no;
        let (e, run) = self.slab.entry_and_run(key);
        let prefill = run.prefilling();
        run.blocks += need;
        run.planned = tokens;
        run.planned_step = step;
        run.last_work = now;
        left.free_blocks -= need;
        left.tokens -= tokens;
        out.scheduled.push(Scheduled {
            id: e.spec.id,
            handle: e.handle(),
            tokens,
            prefill,
        });
        true
    }

    /// Admits waiting requests in queue order until a budget runs out.
    fn admit_waiting(
        &mut self,
        now: Timestamp,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) {
        let watermark = self.config.engine.watermark_blocks();
        let lookahead = self.config.backfill_lookahead;
        self.skipped.clear();
        while self.wait.len() > 0 {
            if (left.seqs == 0 || left.tokens == 0) && left.victims == 0 {
                out.summary.stopped_by = Some(if left.seqs == 0 {
                    Short::Seqs
                } else {
                    Short::Tokens
                });
                break;
            }
            let Some(cand) =
                self.wait
                    .pop_candidate(&mut self.slab, now, self.max_wait, 0, &mut |_, _| false)
            else {
                break;
            };
            let target = self.slab.run_state(cand.key).prefill_target;
            let blocks =
                u32::try_from(self.config.engine.blocks_for(u64::from(target))).unwrap_or(u32::MAX);
            let mut short = self.shortfall(left, target, blocks, watermark);
            if let Some(s) = short {
                if left.victims > 0
                    && self.preempt_for(cand, s, target, blocks + watermark, left, freed, out)
                {
                    short = self.shortfall(left, target, blocks, watermark);
                }
            }
            match short {
                None => {
                    self.admit(cand, now, target, blocks, u32::MAX, left, out);
                }
                Some(s) => {
                    out.summary.stopped_by.get_or_insert(s);
                    tracing::debug!(
                        id = self.slab[cand.key].spec.id.0,
                        class = self.slab[cand.key].spec.class.index(),
                        effective_class = cand.class.index(),
                        overdue = cand.overdue,
                        short = s.as_str(),
                        "does not fit"
                    );
                    self.skipped.push(cand);
                    // Never backfill past an overdue request: it goes next, whatever waits.
                    if cand.overdue || self.skipped.len() > lookahead || self.stuck(cand, left) {
                        break;
                    }
                }
            }
        }
        while let Some(cand) = self.skipped.pop() {
            self.wait.restore(&mut self.slab, cand);
        }
    }

    /// Whether no request after `cand` (which did not fit) can start in this step: no
    /// sequence slot or no token is left, so any start needs a victim, and no running
    /// request may be preempted for `cand`'s class. Later candidates are of the same or a
    /// less urgent class (an overdue one would have come first), so their victims are a
    /// subset of `cand`'s: none either. Stopping here changes no decision; it saves taking
    /// and putting back `backfill_lookahead` candidates in every full step.
    fn stuck(&self, cand: Candidate, left: &Left) -> bool {
        if left.seqs > 0 && left.tokens > 0 {
            return false;
        }
        left.victims == 0 || !self.any_victim(self.victim_floor(cand))
    }

    /// The most urgent class a request running may be in to be preempted for `cand`.
    fn victim_floor(&self, cand: Candidate) -> usize {
        cand.class.index() + usize::from(self.config.preemption.min_class_gap)
    }

    /// Whether any running request may be preempted for a request needing victims of
    /// class `min_class` or lower.
    fn any_victim(&self, min_class: usize) -> bool {
        (0..self.running.len()).any(|i| self.is_victim(i, Some(min_class)))
    }

    /// The first budget that a request needing `target` prefill tokens and `blocks` KV
    /// blocks does not fit in, if any.
    pub(super) fn shortfall(
        &self,
        left: &Left,
        target: u32,
        blocks: u32,
        watermark: u32,
    ) -> Option<Short> {
        if left.seqs == 0 {
            Some(Short::Seqs)
        } else if left.free_blocks < blocks.saturating_add(watermark) {
            Some(Short::KvBlocks)
        } else if left.tokens == 0 || (!self.config.chunked_prefill && target > left.tokens) {
            Some(Short::Tokens)
        } else {
            None
        }
    }

    /// Starts a candidate, unless a cancel reached it first.
    /// Returns the chunk it starts with (0 if it was cancelled), at most `cap`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit(
        &mut self,
        cand: Candidate,
        now: Timestamp,
        target: u32,
        blocks: u32,
        cap: u32,
        left: &mut Left,
        out: &mut Decision,
    ) -> u32 {
        let key = cand.key;
        let table = &self.shared.table;
        if table
            .transition(&self.slab[key].token, QUEUED, RUNNING)
            .is_err()
        {
            let id = self.slab[key].spec.id;
            self.end(key, Outcome::Cancelled, self.last_now);
            out.cancelled.push(id);
            return 0;
        }
        let chunk = target.min(left.tokens).min(cap);
        left.seqs -= 1;
        left.tokens -= chunk;
        left.free_blocks -= blocks;
        let step = self.step_no;
        let run = self.slab.begin_run(key);
        run.blocks = blocks;
        run.run_class = cand.class;
        run.run_tier = cand.tier;
        run.last_work = now;
        run.started = now;
        // Progress for this run may be reported at the step's time, even for a request
        // stamped a moment after the engine read `now`.
        run.last_event = run.last_event.min(now);
        run.run_step = step;
        run.planned = chunk;
        run.planned_step = step;
        let first_run = run.preemptions == 0;
        let e = &mut self.slab[key];
        e.place = Place::Running;
        let (id, handle, arrival, class) = (e.spec.id, e.handle(), e.arrival, e.spec.class);
        let (max_new_tokens, relegated, prompt) =
            (e.spec.max_new_tokens, e.relegated, e.spec.prompt_tokens);
        let waited = now.saturating_since(arrival);
        self.counters.per_class[class.index()].admitted += 1;
        #[cfg(feature = "metrics")]
        {
            self.step_counts[class.index()].admitted += 1;
        }
        self.running.push(key);
        if first_run {
            // The prompt counts once toward the tenant's fair share; a recompute after a
            // preemption is the scheduler's cost, not more service to the tenant.
            self.charge(key, super::fairness::Tokens::Prompt, prompt);
        }
        #[cfg(feature = "slo")]
        self.slo.admitted(&mut self.slab[key], now);
        #[cfg(feature = "metrics")]
        self.metrics.queue_wait(class, waited);
        tracing::debug!(
            id = id.0,
            class = class.index(),
            effective_class = cand.class.index(),
            tenant = ?self.slab[key].spec.tenant().map(|t| t.0),
            waited_ms = waited.as_millis() as u64,
            overdue = cand.overdue,
            resumed = !first_run,
            chunk,
            blocks,
            "admitted"
        );
        if cand.overdue && self.by_deadline() && first_run {
            self.counters.per_class[class.index()].overdue += 1;
            #[cfg(feature = "metrics")]
            {
                self.step_counts[class.index()].max_wait_missed += 1;
            }
            tracing::warn!(
                id = id.0,
                class = class.index(),
                waited_ms = waited.as_millis() as u64,
                max_wait_ms = self.config.max_wait_ms,
                "max wait not kept: the engine is overloaded"
            );
        }
        // Built here from its fields, not before the calls above: held across them, the
        // record was copied into the vector wider than it had been written (a
        // store-forwarding stall per admission).
        out.admitted.push(Admitted {
            id,
            handle,
            arrival,
            class,
            effective_class: cand.class,
            prefill_tokens: chunk,
            prefill_target: target,
            blocks,
            max_new_tokens,
            waited,
            overdue: cand.overdue,
            resumed: !first_run,
            relegated,
        });
        chunk
    }

    /// Preempts running requests of a low enough class to let `cand` start, lowest class
    /// first and newest first (deadline order: demoted ones first, then lowest class, then
    /// least KV to recompute; for a class that serves its late requests, a best fit when
    /// those would not do: [`Scheduler::choose_victims`]). Preempts nobody if no choice of
    /// at most `preemption.max_victims_per_step` makes room. Returns whether it preempted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn preempt_for(
        &mut self,
        cand: Candidate,
        short: Short,
        target: u32,
        blocks_with_watermark: u32,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) -> bool {
        let min_class = self.victim_floor(cand);
        let need_seqs = u32::from(left.seqs == 0);
        let need_blocks = blocks_with_watermark.saturating_sub(left.free_blocks);
        let need_tokens = if self.config.chunked_prefill {
            u32::from(left.tokens == 0)
        } else {
            target.saturating_sub(left.tokens)
        };
        // Victim order: lowest class, then most recently started (later in `running`).
        let mut order: Vec<usize> = (0..self.running.len())
            .filter(|&i| self.is_victim(i, Some(min_class)))
            .collect();
        // The common case when the engine is full of work of the candidate's own class:
        // nobody is eligible (and the empty order allocated nothing).
        if order.is_empty() {
            return false;
        }
        if self.by_deadline() {
            order.sort_by_key(|&i| {
                let key = self.running[i];
                let run = self.slab.run(key);
                (
                    !self.demoted(key),
                    std::cmp::Reverse(run.run_class),
                    run.kv_tokens,
                    i,
                )
            });
        } else {
            order
                .sort_by_key(|&i| std::cmp::Reverse((self.slab.run(self.running[i]).run_class, i)));
        }
        let need = Need {
            seqs: need_seqs,
            blocks: need_blocks,
            tokens: need_tokens,
        };
        let best_fit = self.by_deadline()
            && self.config.classes[cand.class.index()].on_late == LateRule::Serve;
        let Some(mut chosen) = self.choose_victims(&order, need, left.victims, best_fit) else {
            return false;
        };
        let by = self.slab[cand.key].spec.id;
        // Remove from the highest index down so earlier indexes stay valid.
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        for i in chosen {
            left.victims -= 1;
            self.preempt(
                i,
                PreemptReason::ForWaiting {
                    by,
                    by_class: cand.class,
                    short,
                },
                left,
                freed,
                out,
            );
        }
        true
    }

    /// What running request `running[i]` gives back if preempted: (blocks, tokens planned
    /// for it in this step).
    fn yield_of(&self, i: usize) -> (u32, u32) {
        let run = self.slab.run(self.running[i]);
        let tokens = if run.planned_step == self.step_no {
            run.planned
        } else {
            0
        };
        (run.blocks, tokens)
    }

    /// At most `max` victims from `order` (indexes in `running`, most preferred first) that
    /// together cover `need`: the shortest prefix of `order` if it is short enough; else,
    /// if `best_fit` (the candidate's class is latency-critical, [`LateRule::Serve`]),
    /// widening the pool along `order` one preference group (demoted, class) at a time,
    /// a best fit on blocks — the victim whose blocks alone cover what is still needed
    /// with the least to spare, else the one with the most — so that a large prompt is not
    /// refused because the cheapest victims are small. Freeing a number of blocks costs
    /// about that much recompute whoever gives them, so the best fit mostly saves victims.
    fn choose_victims(
        &self,
        order: &[usize],
        need: Need,
        max: usize,
        best_fit: bool,
    ) -> Option<Vec<usize>> {
        let covers = |set: &[usize]| {
            let (mut blocks, mut tokens) = (0u32, 0u32);
            for &i in set {
                let (b, t) = self.yield_of(i);
                blocks += b;
                tokens += t;
            }
            set.len() as u32 >= need.seqs && blocks >= need.blocks && tokens >= need.tokens
        };
        let mut n = 0;
        while n < order.len() && n <= max && !covers(&order[..n]) {
            n += 1;
        }
        if n > 0 && n <= max && covers(&order[..n]) {
            return Some(order[..n].to_vec());
        }
        if !best_fit {
            return None;
        }
        let group = |i: usize| {
            let key = self.running[i];
            (
                !self.demoted(key),
                std::cmp::Reverse(self.slab.run(key).run_class),
            )
        };
        let mut end = 0;
        while end < order.len() {
            let g = group(order[end]);
            while end < order.len() && group(order[end]) == g {
                end += 1;
            }
            let mut pool: Vec<usize> = order[..end].to_vec();
            let mut chosen = Vec::new();
            let mut blocks = 0u32;
            while chosen.len() < max && !pool.is_empty() && !covers(&chosen) {
                let rest = need.blocks.saturating_sub(blocks);
                let fit = pool
                    .iter()
                    .enumerate()
                    .filter(|&(_, &i)| self.yield_of(i).0 >= rest)
                    .min_by_key(|&(_, &i)| self.yield_of(i).0)
                    .or_else(|| {
                        pool.iter()
                            .enumerate()
                            .max_by_key(|&(_, &i)| self.yield_of(i).0)
                    })
                    .map(|(p, _)| p)?;
                let i = pool.swap_remove(fit);
                blocks += self.yield_of(i).0;
                chosen.push(i);
            }
            if !chosen.is_empty() && covers(&chosen) {
                return Some(chosen);
            }
        }
        None
    }

    /// Whether request `key` is relegated behind every live request (deadline order,
    /// `on_late = "keep"`): the first victim for anyone. One relegated within its class
    /// (`serve`) keeps its class's place among victims.
    fn demoted(&self, key: u32) -> bool {
        let e = &self.slab[key];
        e.relegated && !self.serves(e)
    }

    /// Whether `running[i]` may be preempted: not started in this step, and of class
    /// `min_class` or lower when a minimum is given (or, in deadline order, demoted).
    fn is_victim(&self, i: usize, min_class: Option<usize>) -> bool {
        let key = self.running[i];
        let run = self.slab.run(key);
        run.run_step != self.step_no
            && (min_class.is_none_or(|m| run.run_class.index() >= m) || self.demoted(key))
    }

    /// The index in `running` of the lowest-class, most recently started request that may
    /// be preempted (deadline order: demoted ones first).
    fn pick_victim(&self, min_class: Option<usize>) -> Option<usize> {
        (0..self.running.len())
            .filter(|&i| self.is_victim(i, min_class))
            .max_by_key(|&i| {
                let key = self.running[i];
                (self.demoted(key), self.slab.run(key).run_class, i)
            })
    }

    /// Sends `running[i]` back to the queue at its original arrival, returning its blocks,
    /// sequence slot and any tokens planned for it in this step. If a cancel reached it
    /// first, it is aborted instead.
    fn preempt(
        &mut self,
        i: usize,
        reason: PreemptReason,
        left: &mut Left,
        freed: &mut u32,
        out: &mut Decision,
    ) {
        let key = self.running.remove(i);
        let step = self.step_no;
        let (e, run) = self.slab.entry_and_run(key);
        let id = e.spec.id;
        left.free_blocks += run.blocks;
        *freed += run.blocks;
        left.seqs += 1;
        if run.planned_step == step {
            left.tokens += run.planned;
            run.planned = 0;
            out.scheduled.retain(|s| s.id != id);
        }
        if self
            .shared
            .table
            .transition(&e.token, RUNNING, QUEUED)
            .is_err()
        {
            // Cancelled while running: the engine must stop it either way.
            out.aborted.push(id);
            self.end(key, Outcome::Cancelled, self.last_now);
            return;
        }
        let preempted = Preempted {
            id,
            class: run.run_class,
            freed_blocks: run.blocks,
            reason,
        };
        run.kv_tokens = 0;
        run.blocks = 0;
        run.prefill_target = e.spec.prompt_tokens + run.generated;
        run.preemptions += 1;
        self.counters.per_class[e.spec.class.index()].preempted += 1;
        #[cfg(feature = "metrics")]
        {
            self.step_counts[e.spec.class.index()].preempted += 1;
        }
        #[cfg(feature = "slo")]
        self.slo.preempted(e);
        tracing::debug!(
            id = id.0,
            class = preempted.class.index(),
            freed_blocks = preempted.freed_blocks,
            reason = ?reason,
            "preempted"
        );
        out.preempted.push(preempted);
        // Queued again only after this step's admissions: a victim never restarts in the
        // step that preempted it.
        self.requeue.push(key);
    }
}
