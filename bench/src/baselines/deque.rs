//! A `VecDeque` per class with O(n) peek and scan.

use super::{Baseline, Item, Ladder};
use std::collections::VecDeque;
use std::sync::Mutex;
use triage::Timestamp;

/// A deque per base class behind one mutex. Every admission scans every queued request for
/// the smallest (effective class at `now`, arrival, id) and removes it: O(queued) per
/// admission, O(batch × queued) per step.
pub struct DequeQueues {
    deques: Mutex<Vec<VecDeque<Item>>>,
    ladder: Ladder,
}

impl DequeQueues {
    /// Empty deques for the classes of `ladder`.
    pub fn new(ladder: Ladder) -> Self {
        Self {
            deques: Mutex::new((0..ladder.classes()).map(|_| VecDeque::new()).collect()),
            ladder,
        }
    }
}

impl Baseline for DequeQueues {
    fn name(&self) -> &'static str {
        "vecdeque-per-class-scan"
    }

    fn submit(&self, item: Item) {
        self.deques.lock().expect("deque lock")[item.class as usize].push_back(item);
    }

    fn step(&self, now: Timestamp, batch: usize, out: &mut Vec<Item>) {
        out.clear();
        let mut d = self.deques.lock().expect("deque lock");
        while out.len() < batch {
            let mut best: Option<((u8, Timestamp, u64), usize, usize)> = None;
            for (c, q) in d.iter().enumerate() {
                for (i, it) in q.iter().enumerate() {
                    let key = (
                        self.ladder.effective(it.class, it.arrival, now),
                        it.arrival,
                        it.id,
                    );
                    if best.is_none_or(|(k, _, _)| key < k) {
                        best = Some((key, c, i));
                    }
                }
            }
            let Some((_, c, i)) = best else { break };
            out.extend(d[c].remove(i));
        }
    }

    fn len(&self) -> usize {
        self.deques
            .lock()
            .expect("deque lock")
            .iter()
            .map(VecDeque::len)
            .sum()
    }
}
