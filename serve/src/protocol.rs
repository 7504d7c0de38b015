//! What the HTTP handlers and the engine thread tell each other: a handler registers a
//! request's event channel before it submits, the engine sends each request its tokens and
//! its end, and answers queries, reloads and the shutdown between two iterations.

use serde::Serialize;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use triage::{Class, RequestId};

/// A generation request, as the engine needs to know it besides the scheduler.
#[derive(Debug)]
pub struct Registration {
    /// The scheduler's id of the request.
    pub id: RequestId,
    /// Its class (base).
    pub class: Class,
    /// When the handler took it (for the oldest wait and the TTFT clients see).
    pub arrival: std::time::Instant,
    /// Prompt tokens (for `vllm:prompt_tokens_total`, at its first admission).
    pub prompt_tokens: u32,
    /// Where its events go.
    pub events: mpsc::UnboundedSender<Event>,
}

/// How a generation ended, for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It generated `max_tokens` tokens (`finish_reason: "length"`).
    Length,
    /// The shutdown grace expired while it ran (`finish_reason: "abort"`).
    Abort,
}

/// Why a request ended without running to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Shed by deadline order: it could no longer meet its deadline.
    Shed {
        /// How long it had waited.
        waited: Duration,
        /// How far past its deadline it was or would have been.
        late_by: Duration,
    },
    /// It waited past `queue_timeout_ms`.
    TimedOut {
        /// How long it waited.
        waited: Duration,
    },
    /// Its tenant would have been one past `fairness.max_tenants`.
    TenantLimit {
        /// The limit.
        max_tenants: usize,
    },
    /// The server is shutting down and the request had not started (or was preempted).
    ShuttingDown,
    /// It was cancelled (the client went away, or the engine aborted it).
    Cancelled,
}

/// One thing that happened to a request, in order: tokens, then exactly one of
/// [`Event::Finished`] or [`Event::Ended`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Output token number `index` (0-based) was generated.
    Token {
        /// Its index.
        index: u32,
    },
    /// The request finished; no more events follow.
    Finished(Finish),
    /// The request ended without finishing; no more events follow.
    Ended(Ended),
}

/// A message to the engine thread.
#[derive(Debug)]
pub enum Command {
    /// A request about to be submitted.
    Register(Registration),
    /// A registered request the scheduler refused at submit: forget it.
    Forget(RequestId),
    /// What the queue and the engine look like now.
    Query(oneshot::Sender<Snapshot>),
    /// Apply this configuration at the next step; the answer says whether it was applied.
    Reload(
        Box<triage::SchedulerConfig>,
        oneshot::Sender<Result<ReloadOutcome, String>>,
    ),
    /// Stop: refuse new requests, end the waiting ones, let the running ones finish within
    /// the grace.
    Shutdown {
        /// How long running requests may still take.
        grace: Duration,
    },
}

/// An applied reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// The configuration epoch now in force.
    pub epoch: u32,
    /// Classes added, by name.
    pub classes_added: Vec<String>,
    /// Classes removed, by name.
    pub classes_removed: Vec<String>,
    /// Waiting requests re-queued under the new configuration.
    pub requeued: usize,
}

/// The queue and the engine at one step boundary (`GET /admin/queue`, the dashboard).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The simulated model.
    pub model: String,
    /// Seconds since the server started.
    pub uptime_s: f64,
    /// Whether the server is shutting down.
    pub shutting_down: bool,
    /// Per class, most urgent first.
    pub classes: Vec<ClassSnapshot>,
    /// The simulated engine.
    pub engine: EngineSnapshot,
    /// The scheduler's conservation law (every submitted request accounted for).
    pub conservation: ConservationSnapshot,
    /// The most recent SLO violations, newest first (at most 50).
    pub violations: Vec<ViolationSnapshot>,
}

/// One class in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct ClassSnapshot {
    /// Its name.
    pub name: String,
    /// Its vLLM priority range `[low, high]`.
    pub vllm_priority: [i64; 2],
    /// Requests of the class waiting (base class).
    pub waiting: u64,
    /// Of them, relegated by deadline order (they can no longer meet their deadline).
    pub relegated: u64,
    /// Requests of the class running.
    pub running: u64,
    /// How long the oldest waiting request of the class has waited, seconds (0 if none).
    pub oldest_wait_s: f64,
    /// Cumulative counts.
    pub counters: CountersSnapshot,
    /// TTFT percentiles over the last minute, milliseconds (`None` without samples).
    pub ttft_ms: Percentiles,
    /// SLO compliance of each of the class's targets, per window.
    pub slo: Vec<ComplianceSnapshot>,
}

/// Percentiles in milliseconds; `None` without samples.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Samples in the window.
    pub samples: u64,
}

/// Cumulative counts of one class.
#[derive(Debug, Clone, Serialize)]
pub struct CountersSnapshot {
    /// Submitted (accepted or refused).
    pub submitted: u64,
    /// Refused at submit or when drained.
    pub refused: u64,
    /// Admissions, resumes included.
    pub admitted: u64,
    /// Preemptions.
    pub preempted: u64,
    /// Finished by the engine.
    pub finished: u64,
    /// Cancelled by the client.
    pub cancelled: u64,
    /// Timed out waiting.
    pub timed_out: u64,
    /// Shed by deadline order.
    pub shed: u64,
}

/// One target over one window.
#[derive(Debug, Clone, Serialize)]
pub struct ComplianceSnapshot {
    /// `1m`, `5m`, `1h` or `cumulative`.
    pub window: String,
    /// `ttft`, `tpot` or `e2e`.
    pub target: String,
    /// The bound, milliseconds.
    pub bound_ms: f64,
    /// The target quantile (0.99 for p99).
    pub quantile: f64,
    /// Measured latency at the quantile, milliseconds.
    pub measured_ms: Option<f64>,
    /// Fraction of samples within the bound.
    pub fraction_met: Option<f64>,
    /// Whether the target is met.
    pub met: Option<bool>,
    /// Samples in the window.
    pub samples: u64,
}

/// The simulated engine in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct EngineSnapshot {
    /// Requests running.
    pub running: u64,
    /// Requests waiting in the scheduler's queue.
    pub waiting: u64,
    /// KV blocks held by running requests.
    pub kv_blocks_used: u32,
    /// KV blocks in all.
    pub kv_blocks_total: u32,
    /// `kv_blocks_used / kv_blocks_total`.
    pub kv_usage: f64,
    /// Iterations run.
    pub iterations: u64,
    /// Output tokens generated per second over the last few seconds.
    pub output_tokens_per_s: f64,
    /// First admissions per second over the last few seconds (the queue's drain rate).
    pub drain_per_s: f64,
    /// `max_num_seqs`.
    pub max_num_seqs: u32,
    /// `max_num_batched_tokens`.
    pub max_num_batched_tokens: u32,
    /// Speed relative to the cost model (1: real time).
    pub speed: f64,
}

/// The conservation law in a [`Snapshot`]: the scheduler's counts and whether they balance.
#[derive(Debug, Clone, Serialize)]
pub struct ConservationSnapshot {
    /// The counts (`submitted`, `refused`, `in_ingress`, `waiting`, `running`, `finished`,
    /// `cancelled`, `timed_out`, `evicted`, `shed`), inline in the JSON object.
    #[serde(flatten)]
    pub counts: triage::Conservation,
    /// Whether every submitted request is accounted for exactly once.
    pub balanced: bool,
}

/// One SLO violation in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct ViolationSnapshot {
    /// The request id.
    pub id: u64,
    /// Its class.
    pub class: String,
    /// `ttft`, `tpot` or `e2e`.
    pub kind: String,
    /// The bound, milliseconds.
    pub bound_ms: f64,
    /// What was observed, milliseconds.
    pub observed_ms: f64,
    /// Whether it was still waiting in the queue.
    pub while_queued: bool,
    /// The reason in words.
    pub reason: String,
    /// Seconds ago.
    pub age_s: f64,
}
