//! The scheduling step of vLLM v1's `Scheduler.schedule()`, shared by the `fcfs`
//! and `vllm-priority` baselines. They differ only in the waiting-queue order and
//! in the preemption victim, which are parameters here.
//!
//! Modelled after `vllm/v1/core/sched/scheduler.py`:
//! 1. Running requests first, in start order, while tokens remain: each gets the
//!    rest of its prefill (capped by the token budget) or one decode token. If it
//!    needs a KV block and none is free, a victim is preempted (recompute) —
//!    repeatedly, until the block fits or the victim is the request itself (then the
//!    running pass stops). `fcfs`: the victim is the last-started running request
//!    (`self.running.pop()`); `vllm-priority`: the running request with the largest
//!    `(priority, arrival)`, i.e. lowest class, latest arrival; a victim already
//!    scheduled in this step gives its tokens and blocks back.
//! 2. Only if nothing was preempted in this step: waiting requests in queue order,
//!    stopping at the first that does not fit (`max_num_seqs`, token budget with
//!    chunked prefill, KV blocks for the whole prompt above the watermark).
//! 3. Preempted requests go back to the waiting queue keeping their arrival time
//!    (`fcfs`: at the front; `vllm-priority`: into the `(priority, arrival)` heap).
//!
//! Deviations from vLLM (the engine model's choices): KV blocks for the whole
//! prompt are reserved at admission (vLLM allocates per chunk) and admissions keep a
//! 1% watermark free (vLLM v0's block manager did; v1 has none).

use std::collections::VecDeque;

use super::{EngineView, Plan, PolicyContext, ReqId, RunningView, SimRequest};
use crate::budget::{blocks_for, Budget};

/// A waiting request as a policy queues it.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// Identifier.
    pub id: ReqId,
    /// Class.
    pub class: u8,
    /// Original arrival time (kept across preemptions).
    pub arrival: f64,
    /// Tokens to prefill when started (prompt, plus generated tokens after a preemption).
    pub prefill_tokens: u32,
}

/// The waiting queue of a vLLM-like policy.
pub trait WaitingQueue {
    /// The request that would be admitted next.
    fn peek(&self) -> Option<&Waiting>;
    /// Remove and return [`WaitingQueue::peek`].
    fn pop(&mut self) -> Option<Waiting>;
    /// A new arrival.
    fn push_arrival(&mut self, w: Waiting);
    /// A preempted request coming back.
    fn push_preempted(&mut self, w: Waiting);
    /// Number of queued requests.
    fn len(&self) -> usize;
    /// Whether no request is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Arrival-order queue; preempted requests go back to the front (vLLM FCFS).
#[derive(Debug, Default)]
pub struct FifoQueue(VecDeque<Waiting>);

impl WaitingQueue for FifoQueue {
    fn peek(&self) -> Option<&Waiting> {
        self.0.front()
    }
    fn pop(&mut self) -> Option<Waiting> {
        self.0.pop_front()
    }
    fn push_arrival(&mut self, w: Waiting) {
        self.0.push_back(w);
    }
    fn push_preempted(&mut self, w: Waiting) {
        self.0.push_front(w);
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// How a victim is chosen when a running request needs a KV block and none is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VictimRule {
    /// The most recently started running request (vLLM FCFS: `running.pop()`).
    LastStarted,
    /// Largest `(class, arrival, id)`: lowest priority, latest arrival (vLLM PRIORITY).
    LowestPriorityLatestArrival,
}

fn victim_index(running: &[&RunningView], rule: VictimRule) -> usize {
    match rule {
        VictimRule::LastStarted => running.len() - 1,
        VictimRule::LowestPriorityLatestArrival => {
            let mut best = 0;
            for (i, r) in running.iter().enumerate().skip(1) {
                let b = running[best];
                let later = (r.class, r.arrival, r.id) > (b.class, b.arrival, b.id);
                if later {
                    best = i;
                }
            }
            best
        }
    }
}

/// State shared by the vLLM-like baselines: the queue, the victim rule and the
/// refusals waiting to be reported.
#[derive(Debug)]
pub struct VllmLike<Q: WaitingQueue> {
    /// Waiting requests.
    pub queue: Q,
    /// Victim rule.
    pub victim: VictimRule,
    /// Refusals decided at arrival, reported in the next plan.
    pub pending_rejects: Vec<(ReqId, String)>,
    ctx: PolicyContext,
}

impl<Q: WaitingQueue> VllmLike<Q> {
    /// A scheduler with an empty `queue`.
    pub fn new(queue: Q, victim: VictimRule, ctx: &PolicyContext) -> Self {
        Self {
            queue,
            victim,
            pending_rejects: Vec::new(),
            ctx: ctx.clone(),
        }
    }

    /// Queue an arrival, or refuse it if it can never run (like vLLM's API-level checks).
    pub fn on_arrival(&mut self, req: &SimRequest) {
        let total = req.prompt_tokens.saturating_add(req.output_tokens);
        if total > self.ctx.max_model_len {
            self.pending_rejects.push((
                req.id,
                format!(
                    "prompt+output {total} tokens exceeds max_model_len {}",
                    self.ctx.max_model_len
                ),
            ));
        } else if !Budget::fits_ever(
            total,
            self.ctx.total_blocks,
            self.ctx.watermark_blocks,
            self.ctx.block_size,
        ) {
            self.pending_rejects.push((
                req.id,
                format!(
                    "needs {} KV blocks, engine has {}",
                    blocks_for(total, self.ctx.block_size),
                    self.ctx.total_blocks
                ),
            ));
        } else {
            self.queue.push_arrival(Waiting {
                id: req.id,
                class: req.class,
                arrival: req.arrival,
                prefill_tokens: req.prompt_tokens,
            });
        }
    }

    /// One vLLM v1 scheduling step (see the module docs).
    pub fn plan(&mut self, view: &EngineView) -> Plan {
        let mut plan = Plan {
            reject: std::mem::take(&mut self.pending_rejects),
            ..Plan::default()
        };
        let mut budget = Budget::from_view(view);
        let mut running: Vec<&RunningView> = view.running.iter().collect();
        // Parallel to `running`: what each scheduled request took, `(tokens, blocks)`.
        let mut taken: Vec<Option<(u32, u32)>> = vec![None; running.len()];
        let mut preempted: Vec<&RunningView> = Vec::new();

        let mut idx = 0;
        while idx < running.len() && budget.tokens_left > 0 {
            let rv = running[idx];
            let mut self_preempted = false;
            loop {
                match budget.try_run(rv) {
                    Ok(t) => {
                        taken[idx] = Some(t);
                        break;
                    }
                    Err(_) => {
                        let v = victim_index(&running, self.victim);
                        let victim = running.remove(v);
                        if let Some((tokens, blocks)) = taken.remove(v) {
                            budget.undo_run(tokens, blocks);
                        }
                        budget.release(victim);
                        preempted.push(victim);
                        if v == idx {
                            self_preempted = true;
                            break;
                        }
                        if v < idx {
                            idx -= 1;
                        }
                    }
                }
            }
            if self_preempted {
                break;
            }
            idx += 1;
        }
        for (rv, t) in running.iter().zip(&taken) {
            if let Some((tokens, _)) = t {
                plan.run.push((rv.id, *tokens));
            }
        }
        for rv in &preempted {
            plan.preempt.push(rv.id);
            self.queue.push_preempted(Waiting {
                id: rv.id,
                class: rv.class,
                arrival: rv.arrival,
                prefill_tokens: rv.recompute_tokens,
            });
        }

        if preempted.is_empty() {
            while let Some(head) = self.queue.peek() {
                match budget.try_start(head.prefill_tokens) {
                    Ok(chunk) => {
                        let id = head.id;
                        self.queue.pop();
                        plan.start.push((id, chunk));
                    }
                    Err(_) => break,
                }
            }
        }
        plan
    }
}
