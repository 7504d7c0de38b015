//! `Mutex<BinaryHeap>` keyed by (class, arrival), without aging.

use super::{Baseline, Item};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Mutex;
use triage::Timestamp;

/// An item ordered by (class, arrival, id): the smallest is the most urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Keyed(Item);

impl Ord for Keyed {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.0.class, self.0.arrival, self.0.id).cmp(&(o.0.class, o.0.arrival, o.0.id))
    }
}

impl PartialOrd for Keyed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// One binary heap behind one mutex.
#[derive(Default)]
pub struct HeapQueue {
    heap: Mutex<BinaryHeap<Reverse<Keyed>>>,
}

impl HeapQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Baseline for HeapQueue {
    fn name(&self) -> &'static str {
        "mutex-binaryheap"
    }

    fn submit(&self, item: Item) {
        self.heap
            .lock()
            .expect("heap lock")
            .push(Reverse(Keyed(item)));
    }

    fn step(&self, _now: Timestamp, batch: usize, out: &mut Vec<Item>) {
        out.clear();
        let mut h = self.heap.lock().expect("heap lock");
        while out.len() < batch {
            match h.pop() {
                Some(Reverse(Keyed(i))) => out.push(i),
                None => break,
            }
        }
    }

    fn len(&self) -> usize {
        self.heap.lock().expect("heap lock").len()
    }
}
