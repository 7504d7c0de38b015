//! Cumulative counters and the conservation law that proves nothing is lost:
//! every submitted request is refused at ingress, in flight from ingress, waiting, running,
//! or has exactly one terminal outcome.

use crate::class::MAX_CLASSES;
use std::fmt;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The engine finished it.
    Finished,
    /// The client cancelled it.
    Cancelled,
    /// Refused at submit (invalid, duplicate, full, closed), or when drained (one tenant
    /// past the tenant limit).
    Refused,
    /// It waited past `queue_timeout`.
    TimedOut,
    /// Handed off by [`crate::Scheduler::drain_waiting`] for another replica.
    Evicted,
    /// Shed by deadline order: it could no longer meet its deadline and its class's rule
    /// is [`crate::LateRule::Shed`].
    Shed,
}

/// Why the engine finished a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_new_tokens` reached.
    Length,
    /// The engine failed or aborted it.
    Error,
}

/// Counters of one class. Flows in (`drained`) and terminal outcomes are counted under the
/// request's base class at that moment; a reprioritized request moves between classes, so
/// the conservation law holds on the totals, not per class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounters {
    /// Submit calls for this class.
    pub submitted: u64,
    /// Refused at submit.
    pub refused: u64,
    /// Taken from the ingress rings by the scheduler.
    pub drained: u64,
    /// Starts, including resumes after preemption.
    pub admitted: u64,
    /// Preemptions of running requests of this class.
    pub preempted: u64,
    /// Requests promoted out of this class by aging.
    pub promoted: u64,
    /// Finished by the engine.
    pub finished: u64,
    /// Cancelled by the client.
    pub cancelled: u64,
    /// Timed out waiting.
    pub timed_out: u64,
    /// Handed off to another replica.
    pub evicted: u64,
    /// Shed: could no longer meet their deadline (deadline order, rule `shed`).
    pub shed: u64,
    /// Relegated: could no longer meet their deadline and waited after those that could
    /// (deadline order, rule `keep`; rule `serve`: after those of their own class). Not an
    /// outcome: they are still served.
    pub relegated: u64,
    /// Started after waiting past `max_wait` (deadline order keeps max wait only while the
    /// engine can; each of these is a promise it could not keep).
    pub overdue: u64,
    /// Moved into this class by reprioritize.
    pub reprioritized_in: u64,
    /// Moved out of this class by reprioritize.
    pub reprioritized_out: u64,
    /// Waiting now (base class).
    pub waiting: u64,
    /// Running now (base class).
    pub running: u64,
}

/// The conservation law at one instant: `submitted = refused + in_ingress + waiting +
/// running + finished + cancelled + timed_out + evicted + shed`. Serializes as an object
/// with those ten fields (servers report it as JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Conservation {
    /// Submit calls.
    pub submitted: u64,
    /// Refused at submit.
    pub refused: u64,
    /// Accepted by ingress, not yet drained by a step (0 once the API threads are quiet and
    /// a step has run).
    pub in_ingress: u64,
    /// Waiting in the scheduler.
    pub waiting: u64,
    /// Running on the engine.
    pub running: u64,
    /// Finished by the engine.
    pub finished: u64,
    /// Cancelled by the client.
    pub cancelled: u64,
    /// Timed out.
    pub timed_out: u64,
    /// Handed off.
    pub evicted: u64,
    /// Shed by deadline order.
    pub shed: u64,
}

impl Conservation {
    /// Requests with a terminal outcome.
    pub fn ended(&self) -> u64 {
        self.refused + self.finished + self.cancelled + self.timed_out + self.evicted + self.shed
    }

    /// Whether the law holds.
    pub fn is_balanced(&self) -> bool {
        self.submitted == self.ended() + self.in_ingress + self.waiting + self.running
    }
}

impl fmt::Display for Conservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "submitted {} = refused {} + in_ingress {} + waiting {} + running {} + finished {} + cancelled {} + timed_out {} + evicted {} + shed {}",
            self.submitted,
            self.refused,
            self.in_ingress,
            self.waiting,
            self.running,
            self.finished,
            self.cancelled,
            self.timed_out,
            self.evicted,
            self.shed
        )
    }
}

/// The scheduler thread's own counters (no atomics: one writer).
#[derive(Clone, Debug, Default)]
pub(crate) struct SchedCounters {
    pub(crate) per_class: [ClassCounters; MAX_CLASSES],
    /// Counters of classes a reload removed (kept for the conservation law).
    pub(crate) retired: ClassCounters,
}

impl ClassCounters {
    /// Adds another class's cumulative counters to these (gauges are left alone).
    pub(crate) fn absorb(&mut self, o: &ClassCounters) {
        self.submitted += o.submitted;
        self.refused += o.refused;
        self.drained += o.drained;
        self.admitted += o.admitted;
        self.preempted += o.preempted;
        self.promoted += o.promoted;
        self.finished += o.finished;
        self.cancelled += o.cancelled;
        self.timed_out += o.timed_out;
        self.evicted += o.evicted;
        self.shed += o.shed;
        self.relegated += o.relegated;
        self.overdue += o.overdue;
        self.reprioritized_in += o.reprioritized_in;
        self.reprioritized_out += o.reprioritized_out;
    }
}

impl SchedCounters {
    pub(crate) fn outcome(&mut self, class: usize, outcome: Outcome) {
        let c = &mut self.per_class[class];
        match outcome {
            Outcome::Finished => c.finished += 1,
            Outcome::Cancelled => c.cancelled += 1,
            Outcome::TimedOut => c.timed_out += 1,
            Outcome::Evicted => c.evicted += 1,
            Outcome::Refused => c.refused += 1,
            Outcome::Shed => c.shed += 1,
        }
    }
}
