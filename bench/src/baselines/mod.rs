//! The queues a user would write instead of triage, for `triage bench-compare`.
//!
//! Each holds [`Item`]s submitted concurrently from API threads through `&self` and hands
//! the engine thread a batch per step, most urgent first:
//!
//! * [`heap::HeapQueue`]: a `Mutex<BinaryHeap>` keyed by (class, arrival). It does **no
//!   aging** (a heap cannot re-key its elements as they age without a rebuild), so its step
//!   does less work than the others': a generous baseline.
//! * [`segqueue::SegQueues`]: one `crossbeam_queue::SegQueue` per class; each step ages by
//!   popping and re-pushing every queued request (the textbook design).
//! * [`deque::DequeQueues`]: a `VecDeque` per class behind one mutex; every admission
//!   scans all queued requests for the most urgent one by effective class and arrival and
//!   removes it from the middle (the naive reference).
//!
//! None of them checks budgets, tracks running requests, cancels or counts outcomes; they
//! only order and pop, which again favours them in the comparison.

pub mod deque;
pub mod heap;
pub mod segqueue;

use triage::{SchedulerConfig, Timestamp};

/// A queued request as the baselines store it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Request id.
    pub id: u64,
    /// Base class (0 = most urgent).
    pub class: u8,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Output token limit.
    pub max_new_tokens: u32,
    /// Arrival time.
    pub arrival: Timestamp,
}

/// The aging ladder of a triage configuration: a request of base class `c` leaves class `c`
/// once its age passes `promote_after[c]`, the same rule as triage's (without buckets).
#[derive(Clone, Debug)]
pub struct Ladder {
    promote_after_ns: Vec<Option<u64>>,
}

impl Ladder {
    /// The ladder of `cfg`.
    pub fn of(cfg: &SchedulerConfig) -> Ladder {
        Ladder {
            promote_after_ns: cfg
                .classes
                .iter()
                .map(|c| c.promote_after_ms.map(|ms| ms * 1_000_000))
                .collect(),
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.promote_after_ns.len()
    }

    /// The effective class at `now` of a request of base class `base` that arrived at
    /// `arrival`.
    #[inline]
    pub fn effective(&self, base: u8, arrival: Timestamp, now: Timestamp) -> u8 {
        let age = now.0.saturating_sub(arrival.0);
        let mut c = base as usize;
        while c > 0 && self.promote_after_ns[c].is_some_and(|t| age >= t) {
            c -= 1;
        }
        c as u8
    }
}

/// What every baseline offers the comparison.
pub trait Baseline: Sync {
    /// A short name for tables.
    fn name(&self) -> &'static str;
    /// API side: queue a request (any thread).
    fn submit(&self, item: Item);
    /// Engine side: age what needs aging at `now` and pop up to `batch` requests, most
    /// urgent first, into `out` (cleared first).
    fn step(&self, now: Timestamp, batch: usize, out: &mut Vec<Item>);
    /// Requests queued.
    fn len(&self) -> usize;
    /// Whether nothing is queued.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
