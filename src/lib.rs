//! # triage
//!
//! The priority request scheduler inside an LLM serving engine.
//!
//! Many API threads call [`Submitter::submit`], [`Submitter::cancel`] and
//! [`Submitter::reprioritize`]; these push into sharded, bounded, lock-free rings (one per
//! class per shard) or flip one atomic word per request, and never wait for the engine. One
//! engine thread calls [`Scheduler::step`] once per GPU iteration with the iteration's
//! [`Budget`] (running sequences, tokens, free KV blocks) and gets a [`Decision`]: which
//! requests start and with what prefill chunk, what running requests do this iteration,
//! which are preempted and why, which were cancelled or timed out.
//!
//! The contract (see `docs/design.md`):
//!
//! 1. **Classes**: up to 8, by name or vLLM integer priority ([`ClassSet`]).
//! 2. **Order** ([`QueueOrder`]): by default *deadline order* — every waiting request has a
//!    deadline (its own [`RequestSpec::ttft_ms`], else its class's TTFT target, else the
//!    latest start that meets its class's end-to-end target; never past `max_wait`), and the
//!    requests that can still meet theirs go first, by class, then deadline. The *ladder*
//!    order is the alternative: higher effective class first, FIFO by arrival inside a class.
//!    Either way a preempted request keeps its arrival and so its place.
//! 3. **Overload control** (deadline order): a request that can no longer meet its deadline
//!    at the engine's measured pace is relegated behind every request that can, relegated
//!    behind its own class only (HIGH by default), or shed ([`Outcome::Shed`]), by its
//!    class's [`LateRule`]. Deadlines are kept in timestamp
//!    buckets; no step scans the queue. (The ladder ages whole buckets up a class instead.)
//! 4. **Max wait**: deadline order gives requests past `max_wait` a bounded share of each
//!    iteration ahead of class order, and counts every start past it; the ladder serves an
//!    overdue request first and backfills nothing past it. An optional `queue_timeout` ends
//!    requests with an explicit outcome.
//! 5. **Budgets**: `max_num_seqs`, the token budget, free KV blocks with a watermark.
//! 6. **Preemption**: lower classes make room for higher ones (class gap configurable),
//!    only as many as needed, at most a few per step. Deadline order preempts only for a
//!    request near its deadline that can still meet it, relegated victims first, then the
//!    lowest class, then the least KV to recompute; the ladder preempts lowest class and
//!    newest first. The budget share lets an urgent prefill go before lower classes' decode
//!    tokens for a bounded delay.
//! 7. **Head-of-line**: bounded backfill lookahead; requests that could never fit are
//!    refused at submit.
//! 9. **Nothing lost**: every submitted request has exactly one terminal outcome, and
//!    [`Scheduler::conservation`] proves it.
//!
//! ```
//! use triage::{Budget, Class, ManualClock, RequestSpec, Scheduler, SchedulerConfig, Timestamp, Clock};
//!
//! let clock = ManualClock::new(Timestamp::ZERO);
//! let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone())?;
//!
//! // An API thread (any number of them, each with a clone of `api`):
//! std::thread::scope(|s| {
//!     s.spawn(|| api.submit(RequestSpec::new(7, Class::MEDIUM, 512, 128)).unwrap());
//! });
//!
//! // The engine thread, once per iteration:
//! let d = sched.step(clock.now(), &Budget { max_num_seqs: 256, max_batched_tokens: 2048, free_blocks: 7000 })?;
//! assert_eq!(d.admitted[0].prefill_tokens, 512);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod budget;
mod class;
mod config;
#[cfg(feature = "toml")]
mod config_file;
mod counters;
mod decision;
mod error;
mod fair;
mod hash;
mod ingress;
mod prefetch;
mod queue;
mod request;
mod scheduler;
mod slo;
mod sync;
#[cfg(feature = "metrics")]
pub mod telemetry;
mod time;
mod tsc;
mod waiting;

pub use budget::{Budget, Short};
pub use class::{Class, ClassSet, MAX_CLASSES};
pub use config::{
    ClassConfig, DeadlineConfig, EngineLimits, LateRule, PreemptionConfig, QueueOrder,
    SchedulerConfig,
};
pub use counters::{ClassCounters, Conservation, FinishReason, Outcome};
pub use decision::{
    Admitted, Decision, PreemptReason, Preempted, RejectReason, Rejected, ReloadReport, Scheduled,
    StepSummary,
};
pub use error::{
    BudgetError, ClassError, ClockWentBackwards, ConfigError, ControlError, ProgressError,
    ReloadError, SubmitError,
};
pub use fair::{
    FairnessConfig, TenantWeight, MAX_TENANTS_LIMIT, MAX_TOKEN_WEIGHT_RATIO, MAX_WEIGHT_RATIO,
};
pub use ingress::{CancelOutcome, Submitter};
pub use request::{HandOff, RequestHandle, RequestId, RequestSpec, TenantId, MAX_TTFT_MS};
pub use scheduler::{ConfigHandle, Scheduler};
#[cfg(feature = "slo")]
pub use slo::{
    ClassCompliance, ParseSloWindowError, SloMetric, SloTracker, SloWindow, TargetCompliance,
    Violation, ViolationKind,
};
pub use slo::{ClassSlo, SloConfig, SloTarget};
pub use time::{Clock, ManualClock, MonotonicClock, Timestamp};
pub use waiting::{WaitingError, WaitingOptions, WaitingQueue};

/// The README's example runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

/// The lock-free request table and intrusive ingress queue under [`Submitter`], exposed
/// for the loom models and the `lockfree_push` bench. Not a stable API.
#[doc(hidden)]
pub mod lockfree {
    pub use crate::ingress::capacity::ClassCount;
    pub use crate::ingress::mpsc::{queue, Closed, Consumer, Pop, Producer};
    pub use crate::ingress::table::{
        Changed, Entry, FreeBatch, FreshRange, RequestHandle, Reserved, Table, TableFull,
        TicketError, CANCEL_QUEUED, CANCEL_RUNNING, CHUNK, DONE, FREE, FRESH_BATCH, MAX_CAPACITY,
        QUEUED, RUNNING,
    };
}

/// The example loop of `docs/engine.md`, run as a doctest so that the document stays true.
#[cfg(doctest)]
#[doc = include_str!("../docs/engine.md")]
struct EngineDoc;
