//! `vllm-priority`: vLLM's priority scheduling policy.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vllm_like::{VictimRule, VllmLike, Waiting, WaitingQueue};
use super::{EngineView, Plan, Policy, PolicyContext, SimRequest};

/// Heap entry ordered so that the *smallest* `(class, arrival, id)` is on top.
#[derive(Debug)]
struct ByPriority(Waiting);

impl PartialEq for ByPriority {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ByPriority {}
impl PartialOrd for ByPriority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ByPriority {
    fn cmp(&self, other: &Self) -> Ordering {
        let a = &self.0;
        let b = &other.0;
        // Reversed: BinaryHeap is a max-heap.
        (b.class, b.arrival, b.id)
            .partial_cmp(&(a.class, a.arrival, a.id))
            .unwrap_or_else(|| b.arrival.total_cmp(&a.arrival))
    }
}

/// `(priority, arrival)` min-heap, like vLLM's `PriorityRequestQueue`; preempted
/// requests are pushed back with their original arrival.
#[derive(Debug, Default)]
pub struct PriorityQueue(BinaryHeap<ByPriority>);

impl WaitingQueue for PriorityQueue {
    fn peek(&self) -> Option<&Waiting> {
        self.0.peek().map(|e| &e.0)
    }
    fn pop(&mut self) -> Option<Waiting> {
        self.0.pop().map(|e| e.0)
    }
    fn push_arrival(&mut self, w: Waiting) {
        self.0.push(ByPriority(w));
    }
    fn push_preempted(&mut self, w: Waiting) {
        self.0.push(ByPriority(w));
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Waiting requests by `(class, arrival)`; victim when KV runs out = lowest class,
/// latest arrival among running requests; no waiting-to-running preemption, no aging.
#[derive(Debug)]
pub struct VllmPriority {
    inner: VllmLike<PriorityQueue>,
}

impl VllmPriority {
    /// A new vLLM priority policy.
    pub fn new(ctx: &PolicyContext) -> Self {
        Self {
            inner: VllmLike::new(
                PriorityQueue::default(),
                VictimRule::LowestPriorityLatestArrival,
                ctx,
            ),
        }
    }
}

impl Policy for VllmPriority {
    fn name(&self) -> &str {
        "vllm-priority"
    }
    fn on_arrival(&mut self, req: &SimRequest, _now: f64) {
        self.inner.on_arrival(req);
    }
    fn plan(&mut self, view: &EngineView) -> Plan {
        self.inner.plan(view)
    }
}
