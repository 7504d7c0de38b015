//! One iteration's batch: running requests' work first (oldest run first), then admissions
//! in queue order with preemption and bounded backfill. Everything here runs on the engine
//! thread and touches only the scheduler's own structures and the tickets' atomic words.

use super::Scheduler;
use crate::budget::{Budget, Short};
use crate::counters::Outcome;
use crate::decision::{Admitted, Decision, PreemptReason, Preempted, Scheduled};
use crate::queue::slab::Place;
use crate::queue::Candidate;
use crate::ticket::{QUEUED, RUNNING};
use crate::time::Timestamp;

/// What is left of the budget as the step goes.
struct Left {
    seqs: u32,
    tokens: u32,
    free_blocks: u32,
    victims: usize,
}

impl Scheduler {
    pub(super) fn plan(&mut self, now: Timestamp, budget: &Budget, out: &mut Decision) {
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
        self.plan_running(&mut left, &mut freed, out);
        self.admit_waiting(now, &mut left, &mut freed, out);
        for key in std::mem::take(&mut self.requeue) {
            self.wait.insert_again(&mut self.slab, key, now);
        }
        out.summary.tokens = budget.max_batched_tokens - left.tokens;
        out.summary.blocks = (budget.free_blocks + freed).saturating_sub(left.free_blocks);
    }

    /// Gives every running request its next prefill chunk or decode token while tokens
    /// last. A decode that crosses into a new KV block needs a free block; when there is
    /// none, the lowest-class, most recently started request is preempted (possibly the
    /// one that needed the block), as vLLM does.
    fn plan_running(&mut self, left: &mut Left, freed: &mut u32, out: &mut Decision) {
        let mut i = 0;
        while i < self.running.len() {
            if left.tokens == 0 {
                break;
            }
            let key = self.running[i];
            let e = &self.slab[key];
            let id = e.spec.id;
            let tokens = if e.prefilling() {
                (e.prefill_target - e.kv_tokens).min(left.tokens)
            } else {
                1
            };
            let want_blocks = self
                .config
                .engine
                .blocks_for(u64::from(e.kv_tokens) + u64::from(tokens));
            let need =
                u32::try_from(want_blocks.saturating_sub(u64::from(e.blocks))).unwrap_or(u32::MAX);
            let mut self_preempted = false;
            while need > left.free_blocks {
                let Some(v) = self.pick_victim(None) else {
                    break;
                };
                self_preempted = self.running[v] == key;
                if v < i {
                    i -= 1;
                }
                self.preempt(
                    v,
                    PreemptReason::KvExhausted { needed_by: id },
                    left,
                    freed,
                    out,
                );
                if self_preempted {
                    break;
                }
            }
            if self_preempted {
                continue; // `i` now points at the next running request
            }
            if need > left.free_blocks {
                i += 1; // no victim left: it waits for the next iteration
                continue;
            }
            let e = &mut self.slab[key];
            e.blocks += need;
            e.planned = tokens;
            e.planned_step = self.step_no;
            left.free_blocks -= need;
            left.tokens -= tokens;
            out.scheduled.push(Scheduled { id, tokens });
            i += 1;
        }
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
            let Some(cand) = self.wait.pop_candidate(&mut self.slab, now, self.max_wait) else {
                break;
            };
            let target = self.slab[cand.key].prefill_target;
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
                None => self.admit(cand, now, target, blocks, left, out),
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
    fn shortfall(&self, left: &Left, target: u32, blocks: u32, watermark: u32) -> Option<Short> {
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
    fn admit(
        &mut self,
        cand: Candidate,
        now: Timestamp,
        target: u32,
        blocks: u32,
        left: &mut Left,
        out: &mut Decision,
    ) {
        let key = cand.key;
        if self.slab[key].ticket.transition(QUEUED, RUNNING).is_err() {
            let id = self.slab[key].spec.id;
            self.end(key, Outcome::Cancelled, self.last_now);
            out.cancelled.push(id);
            return;
        }
        let chunk = target.min(left.tokens);
        left.seqs -= 1;
        left.tokens -= chunk;
        left.free_blocks -= blocks;
        let step = self.step_no;
        let e = &mut self.slab[key];
        e.place = Place::Running;
        e.blocks = blocks;
        e.run_class = cand.class;
        e.started = now;
        // Progress for this run may be reported at the step's time, even for a request
        // stamped a moment after the engine read `now`.
        e.last_event = e.last_event.min(now);
        e.run_step = step;
        e.planned = chunk;
        e.planned_step = step;
        let admitted = Admitted {
            id: e.spec.id,
            class: e.spec.class,
            effective_class: cand.class,
            prefill_tokens: chunk,
            prefill_target: target,
            blocks,
            waited: now.saturating_since(e.arrival),
            overdue: cand.overdue,
            resumed: e.preemptions > 0,
        };
        self.counters.per_class[e.spec.class.index()].admitted += 1;
        self.step_counts[e.spec.class.index()].admitted += 1;
        let first_run = e.preemptions == 0;
        let prompt = e.spec.prompt_tokens;
        self.running.push(key);
        if first_run {
            // The prompt counts once toward the tenant's fair share; a recompute after a
            // preemption is the scheduler's cost, not more service to the tenant.
            self.charge(key, super::fairness::Tokens::Prompt, prompt);
        }
        self.slo.admitted_held(&mut self.slab[key], now);
        self.metrics.queue_wait(admitted.class, admitted.waited);
        tracing::debug!(
            id = admitted.id.0,
            class = admitted.class.index(),
            effective_class = admitted.effective_class.index(),
            tenant = ?self.slab[key].spec.tenant.map(|t| t.0),
            waited_ms = admitted.waited.as_millis() as u64,
            overdue = admitted.overdue,
            resumed = admitted.resumed,
            chunk,
            blocks,
            "admitted"
        );
        out.admitted.push(admitted);
    }

    /// Preempts the fewest running requests of a low enough class to let `cand` start,
    /// lowest class first and newest first. Preempts nobody if even all eligible victims
    /// would not make room. Returns whether it preempted.
    #[allow(clippy::too_many_arguments)]
    fn preempt_for(
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
        order.sort_by_key(|&i| std::cmp::Reverse((self.slab[self.running[i]].run_class, i)));
        let (mut seqs, mut blocks, mut tokens, mut n) = (0u32, 0u32, 0u32, 0usize);
        for &i in &order {
            if seqs >= need_seqs && blocks >= need_blocks && tokens >= need_tokens {
                break;
            }
            let e = &self.slab[self.running[i]];
            seqs += 1;
            blocks += e.blocks;
            tokens += if e.planned_step == self.step_no {
                e.planned
            } else {
                0
            };
            n += 1;
        }
        if n == 0
            || seqs < need_seqs
            || blocks < need_blocks
            || tokens < need_tokens
            || n > left.victims
        {
            return false;
        }
        let by = self.slab[cand.key].spec.id;
        // Remove from the highest index down so earlier indexes stay valid.
        let mut chosen: Vec<usize> = order[..n].to_vec();
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

    /// Whether `running[i]` may be preempted: not started in this step, and of class
    /// `min_class` or lower when a minimum is given.
    fn is_victim(&self, i: usize, min_class: Option<usize>) -> bool {
        let e = &self.slab[self.running[i]];
        e.run_step != self.step_no && min_class.is_none_or(|m| e.run_class.index() >= m)
    }

    /// The index in `running` of the lowest-class, most recently started request that may
    /// be preempted.
    fn pick_victim(&self, min_class: Option<usize>) -> Option<usize> {
        (0..self.running.len())
            .filter(|&i| self.is_victim(i, min_class))
            .max_by_key(|&i| (self.slab[self.running[i]].run_class, i))
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
        let e = &mut self.slab[key];
        let id = e.spec.id;
        left.free_blocks += e.blocks;
        *freed += e.blocks;
        left.seqs += 1;
        if e.planned_step == step {
            left.tokens += e.planned;
            e.planned = 0;
            out.scheduled.retain(|s| s.id != id);
        }
        if e.ticket.transition(RUNNING, QUEUED).is_err() {
            // Cancelled while running: the engine must stop it either way.
            out.aborted.push(id);
            self.end(key, Outcome::Cancelled, self.last_now);
            return;
        }
        let preempted = Preempted {
            id,
            class: e.run_class,
            freed_blocks: e.blocks,
            reason,
        };
        e.kv_tokens = 0;
        e.blocks = 0;
        e.prefill_target = e.spec.prompt_tokens + e.generated;
        e.preemptions += 1;
        self.counters.per_class[e.spec.class.index()].preempted += 1;
        self.step_counts[e.spec.class.index()].preempted += 1;
        self.slo.preempted_held(e);
        tracing::debug!(
            id = id.0,
            class = preempted.class.index(),
            freed_blocks = preempted.freed_blocks,
            reason = ?reason,
            "preempted: lowest class, newest started"
        );
        out.preempted.push(preempted);
        // Queued again only after this step's admissions: a victim never restarts in the
        // step that preempted it.
        self.requeue.push(key);
    }
}
