//! One `crossbeam_queue::SegQueue` per class; aging by scanning every queued request.

use super::{Baseline, Item, Ladder};
use crossbeam_queue::SegQueue;
use triage::Timestamp;

/// A lock-free queue per effective class. Each step pops every request of every aging
/// class once and pushes it to the queue of its effective class at `now` (back to its own
/// queue if it has not aged): O(queued) per step. Inside a class, order is FIFO by the time
/// a request entered that class's queue.
pub struct SegQueues {
    queues: Vec<SegQueue<Item>>,
    ladder: Ladder,
}

impl SegQueues {
    /// Empty queues for the classes of `ladder`.
    pub fn new(ladder: Ladder) -> Self {
        Self {
            queues: (0..ladder.classes()).map(|_| SegQueue::new()).collect(),
            ladder,
        }
    }
}

impl Baseline for SegQueues {
    fn name(&self) -> &'static str {
        "segqueue-per-class-scan"
    }

    fn submit(&self, item: Item) {
        self.queues[item.class as usize].push(item);
    }

    fn step(&self, now: Timestamp, batch: usize, out: &mut Vec<Item>) {
        out.clear();
        // Age: visit every request of every class that can be left.
        for c in 1..self.queues.len() {
            let q = &self.queues[c];
            for _ in 0..q.len() {
                let Some(item) = q.pop() else { break };
                let eff = self.ladder.effective(item.class, item.arrival, now) as usize;
                self.queues[eff.min(c)].push(item);
            }
        }
        for q in &self.queues {
            while out.len() < batch {
                match q.pop() {
                    Some(i) => out.push(i),
                    None => break,
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.queues.iter().map(SegQueue::len).sum()
    }
}
