//! `fcfs`: vLLM's default scheduling policy (first come, first served).

use super::vllm_like::{FifoQueue, VictimRule, VllmLike};
use super::{EngineView, Plan, Policy, PolicyContext, SimRequest};

/// Arrival order; stop at the first waiting request that does not fit; when a
/// running request needs a KV block and none is free, preempt the most recently
/// started running request and put it back at the front of the queue.
#[derive(Debug)]
pub struct Fcfs {
    inner: VllmLike<FifoQueue>,
}

impl Fcfs {
    /// A new FCFS policy.
    pub fn new(ctx: &PolicyContext) -> Self {
        Self {
            inner: VllmLike::new(FifoQueue::default(), VictimRule::LastStarted, ctx),
        }
    }
}

impl Policy for Fcfs {
    fn name(&self) -> &str {
        "fcfs"
    }
    fn on_arrival(&mut self, req: &SimRequest, _now: f64) {
        self.inner.on_arrival(req);
    }
    fn plan(&mut self, view: &EngineView) -> Plan {
        self.inner.plan(view)
    }
}
