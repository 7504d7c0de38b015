//! What the engine can give one iteration.

/// The engine's limits for one iteration, passed to every [`crate::Scheduler::step`].
///
/// Whatever the budget, a step drains the rings, applies cancels and re-prioritisations,
/// ages or judges the waiting requests and reports SLO violations, so an engine with
/// nothing to give can still step to keep the queue current: a budget of all zeros admits
/// and schedules nothing, and (by `max_num_seqs`) sends back whatever is running.
///
/// ```
/// use triage::{Budget, Class, ManualClock, RequestSpec, Scheduler, SchedulerConfig, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::ZERO);
/// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock).unwrap();
/// api.submit(RequestSpec::new(1, Class::HIGH, 16, 4)).unwrap();
/// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
/// assert_eq!(sched.step(Timestamp::ZERO, &room).unwrap().admitted.len(), 1);
///
/// let zero = Budget { max_num_seqs: 0, max_batched_tokens: 0, free_blocks: 0 };
/// let d = sched.step(Timestamp::ZERO, &zero).unwrap();
/// assert_eq!(d.preempted.len(), 1); // back to the queue, at its place
/// assert_eq!((sched.running(), sched.waiting()), (0, 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most requests running at once (vLLM's `max_num_seqs`). Below the number running,
    /// the step first preempts running requests, lowest class first and newest first
    /// within a class, until it holds ([`crate::PreemptReason::OverBudget`]); 0 preempts
    /// every running request and admits nothing.
    pub max_num_seqs: u32,
    /// Tokens the iteration may process: prefill chunks plus one per decoding request
    /// (vLLM's `max_num_batched_tokens`). 0 schedules nothing and preempts nothing.
    pub max_batched_tokens: u32,
    /// KV-cache blocks free right now, as the engine's block manager reports them. Block
    /// size and watermark are engine constants from [`crate::EngineLimits`]. A decoding
    /// request that needs a new block when none is free preempts another (relegated ones
    /// first in deadline order, then the lowest class, newest first); admissions keep the
    /// watermark free.
    pub free_blocks: u32,
}

/// Which budget stopped a request from starting or forced a preemption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Short {
    /// `max_num_seqs` reached.
    Seqs,
    /// The iteration's token budget is used up.
    Tokens,
    /// Not enough free KV blocks (above the watermark, for admissions).
    KvBlocks,
}

impl Short {
    /// A stable lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Short::Seqs => "seqs",
            Short::Tokens => "tokens",
            Short::KvBlocks => "kv_blocks",
        }
    }
}
