//! `triage`: this crate's scheduler, the real library, driven through its public API
//! exactly as an engine embeds it: a [`triage::Submitter`] submits each arrival (stamped by
//! a [`triage::ManualClock`] set to simulated time), [`triage::Scheduler::step`] runs once
//! per iteration with the engine's budget, and the engine's progress and finish events go
//! back through the scheduler's callbacks.
//!
//! The simulated engine names requests by id; the scheduler's callbacks take the
//! [`triage::RequestHandle`] each admission carries. The policy keeps the handles of the
//! running requests by id, as an engine keyed by its own ids would.

use std::collections::HashMap;

use super::{EngineView, Plan, Policy, PolicyContext, ReqId, SimRequest};
use triage::{
    Budget, Class, Clock, Decision, FinishReason, ManualClock, RequestHandle, RequestSpec,
    Scheduler, SchedulerConfig, Submitter, TenantId, Timestamp,
};

/// The triage policy.
pub struct Triage {
    sched: Scheduler,
    api: Submitter,
    clock: ManualClock,
    decision: Decision,
    /// Arrivals refused at submit, reported to the engine with the next plan.
    refused: Vec<(ReqId, String)>,
    /// Handles of the running requests, by id: set at admission (a request resumed after
    /// a preemption keeps its handle), dropped when it stops running.
    handles: HashMap<ReqId, RequestHandle>,
    /// The policy's name in reports.
    name: &'static str,
}

impl std::fmt::Debug for Triage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Triage")
            .field("sched", &self.sched)
            .finish()
    }
}

fn at(seconds: f64) -> Timestamp {
    Timestamp((seconds.max(0.0) * 1e9).round() as u64)
}

impl Triage {
    /// The configuration from `--config`, or [`SchedulerConfig::default`], on the simulated engine's
    /// limits.
    pub fn new(ctx: &PolicyContext) -> Self {
        Self::with_order(ctx, None)
    }

    /// As [`Triage::new`], with the queue order forced to `order` if given.
    pub fn with_order(ctx: &PolicyContext, order: Option<triage::QueueOrder>) -> Self {
        let mut config = ctx.triage_config.clone().unwrap_or_default();
        if let Some(order) = order {
            config.order = order;
        }
        config.engine.block_size = ctx.block_size;
        config.engine.total_blocks = ctx.total_blocks;
        config.engine.max_model_len = ctx.max_model_len;
        config.engine.watermark =
            f64::from(ctx.watermark_blocks) / f64::from(ctx.total_blocks.max(1));
        // One producer thread (the simulator): one shard is enough.
        config.shards = 1;
        let name = if config.order == triage::QueueOrder::Ladder {
            "triage-ladder"
        } else {
            "triage"
        };
        let mut t = Self::with_config(config);
        t.name = name;
        t
    }

    /// The policy on an explicit configuration.
    pub fn with_config(config: SchedulerConfig) -> Self {
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(config, clock.clone())
            .expect("the simulator builds a valid triage config");
        Self {
            sched,
            api,
            clock,
            decision: Decision::default(),
            refused: Vec::new(),
            handles: HashMap::new(),
            name: "triage",
        }
    }
}

impl Policy for Triage {
    fn name(&self) -> &str {
        self.name
    }

    fn on_arrival(&mut self, req: &SimRequest, now: f64) {
        self.clock.set(at(req.arrival.max(now)));
        let mut spec = RequestSpec::new(
            req.id,
            Class::from_index(req.class),
            req.prompt_tokens,
            req.output_tokens.max(1),
        );
        if let Some(t) = req.tenant {
            spec = spec.with_tenant(TenantId(t));
        }
        if let Err(e) = self.api.submit(spec) {
            self.refused.push((req.id, e.to_string()));
        }
    }

    fn plan(&mut self, view: &EngineView) -> Plan {
        self.clock.set(at(view.now));
        let budget = Budget {
            max_num_seqs: view.max_num_seqs,
            max_batched_tokens: view.token_budget,
            free_blocks: view.free_blocks,
        };
        self.sched
            .step_into(self.clock.now(), &budget, &mut self.decision)
            .expect("the simulated engine reports a valid budget");
        let d = &self.decision;
        for p in &d.preempted {
            self.handles.remove(&p.id.0);
        }
        for id in &d.aborted {
            self.handles.remove(&id.0);
        }
        for a in &d.admitted {
            self.handles.insert(a.id.0, a.handle);
        }
        Plan {
            start: d
                .admitted
                .iter()
                .map(|a| (a.id.0, a.prefill_tokens))
                .collect(),
            run: d.scheduled.iter().map(|s| (s.id.0, s.tokens)).collect(),
            preempt: d
                .preempted
                .iter()
                .map(|p| p.id.0)
                .chain(d.aborted.iter().map(|id| id.0))
                .collect(),
            reject: self
                .refused
                .drain(..)
                .chain(
                    d.rejected
                        .iter()
                        .map(|r| (r.id.0, format!("{:?}", r.reason))),
                )
                .collect(),
        }
    }

    fn on_iteration_done(
        &mut self,
        now: f64,
        progressed: &[(ReqId, u32, u32)],
        finished: &[ReqId],
    ) {
        self.clock.set(at(now));
        let now = self.clock.now();
        for &(id, prefill, out) in progressed {
            // The simulator reports 0 prefill tokens for a decode step, which computes one.
            let computed = if prefill > 0 { prefill } else { 1 };
            let handle = *self
                .handles
                .get(&id)
                .expect("progress for a running request");
            self.sched
                .on_progress(handle, now, computed, out)
                .expect("progress for a running request");
        }
        for &id in finished {
            let handle = self
                .handles
                .remove(&id)
                .expect("a finished request was running");
            self.sched
                .on_finished(handle, now, FinishReason::Length)
                .expect("finish of a running request");
        }
    }
}
