//! What one step decided: the batch for the engine's next iteration and everything that
//! left the scheduler, each with its reason.

use crate::budget::Short;
use crate::class::Class;
use crate::error::ReloadError;
use crate::request::RequestHandle;
use crate::request::RequestId;
use crate::time::Timestamp;
use std::time::Duration;

/// A waiting request that starts (or resumes after preemption) in this iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The request.
    pub id: RequestId,
    /// Its handle, for the engine's callbacks ([`crate::Scheduler::on_progress`],
    /// [`crate::Scheduler::on_finished`]).
    pub handle: RequestHandle,
    /// When it was submitted (stamped by the scheduler's clock).
    pub arrival: Timestamp,
    /// Its base class.
    pub class: Class,
    /// The class it was served from (higher than `class` if it aged).
    pub effective_class: Class,
    /// Prompt tokens to prefill in this iteration (the whole prompt, or a first chunk).
    pub prefill_tokens: u32,
    /// Tokens to prefill in all for this run (prompt, plus earlier output when resuming a
    /// request preempted by recompute).
    pub prefill_target: u32,
    /// KV blocks reserved for it.
    pub blocks: u32,
    /// Its `max_new_tokens`, as submitted: the engine stops it there (a resumed request
    /// counts the tokens it generated before its preemption toward it).
    pub max_new_tokens: u32,
    /// How long it had waited since arrival.
    pub waited: Duration,
    /// It had waited past `max_wait`.
    pub overdue: bool,
    /// It is resuming after a preemption.
    pub resumed: bool,
    /// It was relegated (deadline order): it could no longer meet its deadline and starts
    /// now because nothing that can meet one is waiting (of its own class and those above
    /// it, if its class's rule is [`crate::LateRule::Serve`]; of any class otherwise).
    pub relegated: bool,
}

/// Work for a request that was already running: its next prefill chunk, or one decode
/// token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// The request.
    pub id: RequestId,
    /// Its handle.
    pub handle: RequestHandle,
    /// Tokens to process in this iteration.
    pub tokens: u32,
    /// A prefill chunk (the request's prefill target is not computed yet): report it with
    /// `computed = tokens` and one output token only if it completes the prefill. Else one
    /// decode token: `computed = 1`, `new_output = 1`.
    pub prefill: bool,
}

/// Why a running request was preempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreemptReason {
    /// To make room for a waiting request of a more urgent class.
    ForWaiting {
        /// The request it made room for.
        by: RequestId,
        /// That request's effective class.
        by_class: Class,
        /// The budget that was short.
        short: Short,
    },
    /// The engine's budget shrank below what was running (e.g. `max_num_seqs`).
    OverBudget {
        /// The budget that shrank.
        short: Short,
    },
    /// A running request needed a new KV block and none was free.
    KvExhausted {
        /// The running request that needed the block (may be the victim itself).
        needed_by: RequestId,
    },
}

/// A running request sent back to the queue. The engine frees its KV blocks (preemption by
/// recompute); it keeps its original arrival and so its place in line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preempted {
    /// The request.
    pub id: RequestId,
    /// The class it was running as.
    pub class: Class,
    /// KV blocks it held.
    pub freed_blocks: u32,
    /// Why.
    pub reason: PreemptReason,
}

/// Why a waiting request was ended by the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// It waited past `queue_timeout`.
    TimedOut {
        /// How long it waited.
        waited: Duration,
    },
    /// Shed by deadline order: it could no longer meet its deadline and its class's rule
    /// is `shed` (outcome [`crate::Outcome::Shed`]).
    DeadlineMissed {
        /// How long it had waited.
        waited: Duration,
        /// How far past its deadline it was, or would have been at its estimated first
        /// token or start (zero if that is still ahead but out of reach).
        late_by: Duration,
    },
    /// Its tenant would have been one more than `fairness.max_tenants` (refused when
    /// drained; the scheduler had not seen the tenant).
    TenantLimit {
        /// The tenant (`None`: the requests that carry none).
        tenant: Option<crate::TenantId>,
        /// The limit in force.
        max_tenants: usize,
    },
}

/// A waiting request the scheduler ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The request.
    pub id: RequestId,
    /// Its base class.
    pub class: Class,
    /// Why.
    pub reason: RejectReason,
}

/// Totals of the step, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepSummary {
    /// Requests taken from the ingress rings.
    pub drained: u32,
    /// Requests moved up a class by aging.
    pub promoted: u64,
    /// Waiting after the step.
    pub waiting: usize,
    /// Running after the step (including this step's admissions).
    pub running: usize,
    /// Tokens scheduled in all.
    pub tokens: u32,
    /// KV blocks reserved by this step (admissions and decode growth).
    pub blocks: u32,
    /// The budget that stopped admissions, if one did while requests were waiting.
    pub stopped_by: Option<Short>,
}

/// A step's decision. Reuse one across steps with [`crate::Scheduler::step_into`] to avoid
/// allocating in the engine loop.
///
/// ```
/// use triage::*;
/// let clock = ManualClock::new(Timestamp::ZERO);
/// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
/// let waiting = api.submit(RequestSpec::new(1, Class::LOW, 100, 4)).unwrap();
/// api.submit(RequestSpec::new(2, Class::HIGH, 100, 4)).unwrap();
/// api.cancel(waiting).unwrap();
/// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
/// let d = sched.step(clock.now(), &room).unwrap();
/// assert_eq!(d.admitted.len(), 1); // start these: allocate `blocks`, run `prefill_tokens`
/// assert_eq!(d.cancelled, vec![RequestId(1)]); // ended while waiting: tell the client
/// assert!(d.preempted.is_empty() && d.aborted.is_empty() && d.rejected.is_empty());
/// assert_eq!((d.summary.drained, d.summary.waiting, d.summary.running), (2, 0, 1));
/// // The next step: the running request gets its decode token in `scheduled`.
/// sched.on_progress(d.admitted[0].handle, clock.now(), 100, 1).unwrap();
/// let d = sched.step(clock.now(), &room).unwrap();
/// assert_eq!((d.scheduled.len(), d.scheduled[0].prefill), (1, false));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The step's time.
    pub now: Timestamp,
    /// Requests to start, in the order they were chosen.
    pub admitted: Vec<Admitted>,
    /// Running requests' work for the iteration, oldest run first.
    pub scheduled: Vec<Scheduled>,
    /// Running requests to preempt (free their KV; they are queued again).
    pub preempted: Vec<Preempted>,
    /// Running requests cancelled by the client: stop them and free their KV.
    pub aborted: Vec<RequestId>,
    /// Waiting requests cancelled by the client (nothing for the engine to do).
    pub cancelled: Vec<RequestId>,
    /// Waiting requests ended by the scheduler.
    pub rejected: Vec<Rejected>,
    /// Totals.
    pub summary: StepSummary,
    /// The configuration reload this step applied or refused, if one was pending.
    pub reload: Option<Result<ReloadReport, ReloadError>>,
}

impl Decision {
    pub(crate) fn clear(&mut self, now: Timestamp) {
        self.now = now;
        self.admitted.clear();
        self.scheduled.clear();
        self.preempted.clear();
        self.aborted.clear();
        self.cancelled.clear();
        self.rejected.clear();
        self.summary = StepSummary::default();
        self.reload = None;
    }

    /// Tokens the iteration processes: admitted prefill chunks plus running work.
    pub fn total_tokens(&self) -> u32 {
        self.admitted.iter().map(|a| a.prefill_tokens).sum::<u32>()
            + self.scheduled.iter().map(|s| s.tokens).sum::<u32>()
    }
}

/// What an applied reload changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadReport {
    /// The configuration epoch now in force (0 at start, +1 per applied reload).
    pub epoch: u32,
    /// Classes the new configuration added, by name.
    pub classes_added: Vec<String>,
    /// Classes it removed (all empty when removed), by name.
    pub classes_removed: Vec<String>,
    /// Waiting requests re-queued under the new thresholds.
    pub requeued: usize,
}
