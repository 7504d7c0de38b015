//! Metrics through the `metrics` crate's facade. The library installs no recorder: an
//! engine (or the `triage` binary) installs one, e.g. `metrics-exporter-prometheus`, and
//! these calls feed it; with none installed they cost next to nothing.
//!
//! Every family is listed, with its type, labels and meaning, in `docs/metrics.md`.
//!
//! * [`describe`] describes every family once (call it after installing the recorder).
//! * [`StepMetrics`] holds a handle per family and label set, registered when it is built
//!   (so build it after installing the recorder). The engine thread calls
//!   [`StepMetrics::publish`] at the end of each step with what the step knows,
//!   [`StepMetrics::queue_wait`] per first admission. With the `slo` feature the
//!   scheduler also publishes its `SloTracker`'s figures (violation counters every step,
//!   compliance gauges at most once per `StepMetrics::with_compliance_interval`).
//! * [`record_refused`] counts a refusal at submit, from any thread.
//!
//! The module exists with the `metrics` feature (on by default); the SLO families
//! (violations, compliance, bounds) also need the `slo` feature, and are in `slo.rs`.

use crate::class::{Class, ClassSet};
use crate::error::SubmitError;
use crate::slo::SloConfig;
#[cfg(feature = "slo")]
use crate::slo::SloTracker;
#[cfg(feature = "slo")]
use crate::time::Timestamp;
use ::metrics::{Counter, Gauge, Histogram, Unit};
use std::time::Duration;

#[cfg(feature = "slo")]
mod slo;

/// Gauge `{class}`: requests waiting in the queue, by base class.
pub const QUEUE_DEPTH: &str = "triage_queue_depth";
/// Gauge `{class}`: requests running on the engine, by base class.
pub const RUNNING: &str = "triage_running_requests";
/// Histogram `{class}`, seconds: arrival to first admission.
pub const QUEUE_WAIT: &str = "triage_queue_wait_seconds";
/// Counter `{class}`: admissions, including resumes after preemption.
pub const ADMITTED: &str = "triage_admitted_total";
/// Counter `{class}`: running requests preempted.
pub const PREEMPTED: &str = "triage_preempted_total";
/// Counter `{class}`: waiting requests promoted out of this class by aging.
pub const PROMOTED: &str = "triage_promoted_total";
/// Counter `{class, reason}`: requests refused at submit.
pub const REFUSED: &str = "triage_refused_total";
/// Counter `{class}`: requests that waited past `queue_timeout`.
pub const TIMED_OUT: &str = "triage_timed_out_total";
/// Counter `{class}`: requests cancelled by the client.
pub const CANCELLED: &str = "triage_cancelled_total";
/// Counter `{class}`: waiting requests relegated by deadline order (they could no longer
/// meet their deadline; served after those that can).
pub const RELEGATED: &str = "triage_relegated_total";
/// Counter `{class}`: waiting requests shed by deadline order (outcome `shed`).
pub const SHED: &str = "triage_shed_total";
/// Counter `{class}`: requests started after waiting past `max_wait_ms` in deadline order,
/// each a max-wait promise the engine could not keep.
pub const MAX_WAIT_MISSED: &str = "triage_max_wait_missed_total";
/// Counter `{class, kind}`: SLO violations reported (`kind` = `ttft`, `tpot`, `e2e`).
pub const SLO_VIOLATIONS: &str = "triage_slo_violations_total";
/// Counter: violation reports dropped because a subscriber's channel was full.
pub const SLO_REPORTS_DROPPED: &str = "triage_slo_violation_reports_dropped_total";
/// Gauge `{class, window, target}`: fraction of samples meeting the target's bound.
pub const SLO_COMPLIANCE: &str = "triage_slo_compliance_ratio";
/// Gauge `{class, window, target}`, seconds: measured latency at the target's quantile.
pub const SLO_MEASURED: &str = "triage_slo_measured_seconds";
/// Gauge `{class, target}`, seconds: the target's bound.
pub const SLO_BOUND: &str = "triage_slo_bound_seconds";
/// Histogram, seconds: how long the scheduler's step took.
pub const STEP_DURATION: &str = "triage_step_duration_seconds";
/// Gauge: requests waiting, all classes (the name vLLM exports; routers scrape it).
pub const VLLM_WAITING: &str = "vllm:num_requests_waiting";
/// Gauge: requests running, all classes (the name vLLM exports; routers scrape it).
pub const VLLM_RUNNING: &str = "vllm:num_requests_running";
/// Gauge, 0 to 1: KV-cache usage, `1 - free / total` blocks (the name vLLM exports).
pub const VLLM_KV_USAGE: &str = "vllm:kv_cache_usage_perc";
/// Counter: configuration reloads, by `result` (`applied` or `refused`).
pub const CONFIG_RELOADS: &str = "triage_config_reloads_total";

/// Label: the class name.
pub const LABEL_CLASS: &str = "class";
/// Label: why a request was refused ([`RefuseReason::as_str`]).
pub const LABEL_REASON: &str = "reason";
/// Label: which target was violated (`ViolationKind::as_str`).
pub const LABEL_KIND: &str = "kind";
/// Label: the window (`SloWindow::label`: `1m`, `5m`, `1h`, `cumulative`).
pub const LABEL_WINDOW: &str = "window";
/// Label: the target (`ttft`, `tpot`, `e2e`).
pub const LABEL_TARGET: &str = "target";
/// Label: how a configuration reload went.
pub const LABEL_RESULT: &str = "result";

/// Every family the scheduler always emits with the default features (the `SLO_*` ones
/// need `slo`), for documentation checks. The opt-in
/// per-tenant families are in [`TENANT_NAMES`].
pub const ALL_NAMES: [&str; 22] = [
    QUEUE_DEPTH,
    RUNNING,
    QUEUE_WAIT,
    ADMITTED,
    PREEMPTED,
    PROMOTED,
    REFUSED,
    TIMED_OUT,
    CANCELLED,
    RELEGATED,
    SHED,
    MAX_WAIT_MISSED,
    SLO_VIOLATIONS,
    SLO_REPORTS_DROPPED,
    SLO_COMPLIANCE,
    SLO_MEASURED,
    SLO_BOUND,
    STEP_DURATION,
    VLLM_WAITING,
    VLLM_RUNNING,
    VLLM_KV_USAGE,
    CONFIG_RELOADS,
];

/// Counter `triage_tenant_tokens_total{class, tenant, kind}`: tokens charged to a tenant's
/// fair share (`kind` = `prompt` | `output`). Only with `fairness.tenant_metrics`.
pub const TENANT_TOKENS: &str = "triage_tenant_tokens_total";
/// Gauge `triage_tenant_waiting{class, tenant}`: a held tenant's requests waiting in a
/// class, refreshed every [`DEFAULT_COMPLIANCE_INTERVAL`] of step time. Only with
/// `fairness.tenant_metrics`.
pub const TENANT_WAITING: &str = "triage_tenant_waiting";

/// The per-tenant families, emitted only with `fairness.tenant_metrics`.
pub const TENANT_NAMES: [&str; 2] = [TENANT_TOKENS, TENANT_WAITING];

/// Why a request was refused at submit, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// The class's ring or queue is full.
    QueueFull,
    /// A request with this id is still held.
    DuplicateId,
    /// The class does not exist.
    UnknownClass,
    /// Zero prompt tokens or zero `max_new_tokens`.
    Invalid,
    /// Prompt plus output exceeds the model's context.
    ExceedsContext,
    /// It needs more KV blocks than the engine has.
    NeverFits,
    /// The scheduler is closed.
    Closed,
    /// The engine thread panicked.
    EngineGone,
    /// Refused when drained: its tenant would have been one past `fairness.max_tenants`.
    TenantLimit,
}

impl RefuseReason {
    /// How many reasons there are.
    pub const COUNT: usize = 9;

    /// Every reason, in index order.
    pub const ALL: [RefuseReason; RefuseReason::COUNT] = [
        RefuseReason::QueueFull,
        RefuseReason::DuplicateId,
        RefuseReason::UnknownClass,
        RefuseReason::Invalid,
        RefuseReason::ExceedsContext,
        RefuseReason::NeverFits,
        RefuseReason::Closed,
        RefuseReason::EngineGone,
        RefuseReason::TenantLimit,
    ];

    /// The reason for a submit error.
    pub fn of(e: &SubmitError) -> Self {
        match e {
            SubmitError::QueueFull { .. } => RefuseReason::QueueFull,
            SubmitError::DuplicateId(_) => RefuseReason::DuplicateId,
            SubmitError::Class(_) => RefuseReason::UnknownClass,
            SubmitError::ZeroPromptTokens(_)
            | SubmitError::ZeroMaxNewTokens(_)
            | SubmitError::InvalidTtftTarget { .. } => RefuseReason::Invalid,
            SubmitError::ExceedsContext { .. } => RefuseReason::ExceedsContext,
            SubmitError::NeverFits { .. } => RefuseReason::NeverFits,
            SubmitError::Closed => RefuseReason::Closed,
            SubmitError::EngineGone => RefuseReason::EngineGone,
        }
    }

    /// A stable lower-case name, the `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::QueueFull => "queue_full",
            RefuseReason::DuplicateId => "duplicate_id",
            RefuseReason::UnknownClass => "unknown_class",
            RefuseReason::Invalid => "invalid",
            RefuseReason::ExceedsContext => "exceeds_context",
            RefuseReason::NeverFits => "never_fits",
            RefuseReason::Closed => "closed",
            RefuseReason::EngineGone => "engine_gone",
            RefuseReason::TenantLimit => "tenant_limit",
        }
    }

    /// A dense index, in the order of [`RefuseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Describes every family (type, unit, help text) to the installed recorder. Call once,
/// after installing it.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        CONFIG_RELOADS,
        Unit::Count,
        "Configuration reloads applied or refused (label result)."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Requests waiting in the queue, by base class."
    );
    describe_gauge!(
        RUNNING,
        Unit::Count,
        "Requests running on the engine, by base class."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time from arrival to first admission, by class."
    );
    describe_counter!(
        ADMITTED,
        Unit::Count,
        "Requests admitted to run, including resumes after preemption."
    );
    describe_counter!(
        PREEMPTED,
        Unit::Count,
        "Running requests preempted, by class."
    );
    describe_counter!(
        PROMOTED,
        Unit::Count,
        "Waiting requests promoted out of this class by aging."
    );
    describe_counter!(
        REFUSED,
        Unit::Count,
        "Requests refused at submit, by class and reason."
    );
    describe_counter!(
        TENANT_TOKENS,
        Unit::Count,
        "Tokens charged to a tenant's fair share, by class, tenant and kind (prompt, output); with fairness.tenant_metrics."
    );
    describe_gauge!(
        TENANT_WAITING,
        Unit::Count,
        "A held tenant's requests waiting, by class and tenant; with fairness.tenant_metrics."
    );
    describe_counter!(
        TIMED_OUT,
        Unit::Count,
        "Requests that waited past queue_timeout, by class."
    );
    describe_counter!(
        RELEGATED,
        Unit::Count,
        "Waiting requests relegated by deadline order (could no longer meet their deadline), by class."
    );
    describe_counter!(
        SHED,
        Unit::Count,
        "Waiting requests shed by deadline order (could no longer meet their deadline), by class."
    );
    describe_counter!(
        MAX_WAIT_MISSED,
        Unit::Count,
        "Requests started after waiting past max_wait_ms in deadline order, by class."
    );
    describe_counter!(
        CANCELLED,
        Unit::Count,
        "Requests cancelled by the client, by class."
    );
    #[cfg(feature = "slo")]
    slo::describe();
    describe_histogram!(
        STEP_DURATION,
        Unit::Seconds,
        "Duration of one scheduler step."
    );
    describe_gauge!(VLLM_WAITING, Unit::Count, "Requests waiting, all classes.");
    describe_gauge!(VLLM_RUNNING, Unit::Count, "Requests running, all classes.");
    describe_gauge!(
        VLLM_KV_USAGE,
        "KV-cache usage: 1 - free / total blocks (1 means full)."
    );
}

/// Counts a configuration reload, applied or refused (`triage_config_reloads_total`).
pub fn record_reload(applied: bool) {
    let result = if applied { "applied" } else { "refused" };
    ::metrics::counter!(CONFIG_RELOADS, LABEL_RESULT => result).increment(1);
}

/// Counts one refusal at submit of a request of class `class` (its name; `unknown` when
/// the class itself was the problem). Callable from any thread.
pub fn record_refused(class: &str, reason: RefuseReason) {
    ::metrics::counter!(REFUSED, LABEL_CLASS => class.to_string(), LABEL_REASON => reason.as_str())
        .increment(1);
}

/// What one class did in a step: the gauges as of the end of the step and the counts
/// since the previous publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStep {
    /// Waiting now (base class).
    pub waiting: u64,
    /// Running now (base class).
    pub running: u64,
    /// Admitted since the last publish (including resumes).
    pub admitted: u64,
    /// Preempted since the last publish.
    pub preempted: u64,
    /// Promoted out of this class by aging since the last publish.
    pub promoted: u64,
    /// Timed out since the last publish.
    pub timed_out: u64,
    /// Cancelled since the last publish.
    pub cancelled: u64,
    /// Relegated by deadline order since the last publish.
    pub relegated: u64,
    /// Shed by deadline order since the last publish.
    pub shed: u64,
    /// Started past `max_wait_ms` in deadline order since the last publish.
    pub max_wait_missed: u64,
    /// Refused at submit since the last publish, by [`RefuseReason::index`] (leave zero if
    /// refusals are counted with [`record_refused`] instead).
    pub refused: [u64; RefuseReason::COUNT],
}

/// What the scheduler knows at the end of a step.
#[derive(Clone, Copy, Debug)]
pub struct StepReport<'a> {
    /// One entry per class, by class index (extra entries are ignored).
    pub classes: &'a [ClassStep],
    /// How long the step took.
    pub step_duration: Duration,
    /// KV blocks free, as the engine reported them for this step.
    pub kv_free_blocks: u32,
    /// KV blocks the engine has in all (0 skips the KV usage gauge).
    pub kv_total_blocks: u32,
}

/// Handles of one class's families.
struct ClassHandles {
    depth: Gauge,
    running: Gauge,
    queue_wait: Histogram,
    admitted: Counter,
    preempted: Counter,
    promoted: Counter,
    timed_out: Counter,
    cancelled: Counter,
    relegated: Counter,
    shed: Counter,
    max_wait_missed: Counter,
    refused: [Counter; RefuseReason::COUNT],
}

/// Publishes a scheduler's metrics; owned by the engine thread. Handles are registered
/// with the recorder installed when this is built.
pub struct StepMetrics {
    classes: Vec<ClassHandles>,
    step_duration: Histogram,
    vllm_waiting: Gauge,
    vllm_running: Gauge,
    vllm_kv: Gauge,
    #[cfg(feature = "slo")]
    slo: slo::SloMetrics,
}

impl std::fmt::Debug for StepMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepMetrics")
            .field("classes", &self.classes.len())
            .finish_non_exhaustive()
    }
}

/// How often the compliance gauges are refreshed by default (injected time): 10 s. Each
/// refresh reads every class's, window's and target's histogram (tens of thousands of
/// counters each), and Prometheus scrapes every 15 s by default, so refreshing more often
/// computes values nobody reads; at one second it cost more than the rest of SLO tracking
/// in the step bench.
pub const DEFAULT_COMPLIANCE_INTERVAL: Duration = Duration::from_secs(10);

impl StepMetrics {
    /// Registers the handles for `classes` and, with the `slo` feature, the SLO targets and
    /// windows of `slo` if given (whose bound gauges are set now; without the feature `slo`
    /// is not read). Compliance is published at most once per [`DEFAULT_COMPLIANCE_INTERVAL`]
    /// unless `StepMetrics::with_compliance_interval` says otherwise.
    pub fn new(classes: &ClassSet, slo: Option<&SloConfig>) -> Self {
        let class_handles = classes
            .iter()
            .map(|c| {
                let name = classes.name(c).to_string();
                let counter = |family: &'static str| {
                    ::metrics::counter!(family, LABEL_CLASS => name.clone())
                };
                ClassHandles {
                    depth: ::metrics::gauge!(QUEUE_DEPTH, LABEL_CLASS => name.clone()),
                    running: ::metrics::gauge!(RUNNING, LABEL_CLASS => name.clone()),
                    queue_wait: ::metrics::histogram!(QUEUE_WAIT, LABEL_CLASS => name.clone()),
                    admitted: counter(ADMITTED),
                    preempted: counter(PREEMPTED),
                    promoted: counter(PROMOTED),
                    timed_out: counter(TIMED_OUT),
                    cancelled: counter(CANCELLED),
                    relegated: counter(RELEGATED),
                    shed: counter(SHED),
                    max_wait_missed: counter(MAX_WAIT_MISSED),
                    refused: RefuseReason::ALL.map(|r| {
                        ::metrics::counter!(REFUSED, LABEL_CLASS => name.clone(), LABEL_REASON => r.as_str())
                    }),
                }
            })
            .collect();
        #[cfg(not(feature = "slo"))]
        let _ = slo;
        Self {
            #[cfg(feature = "slo")]
            slo: slo::SloMetrics::new(classes, slo),
            classes: class_handles,
            step_duration: ::metrics::histogram!(STEP_DURATION),
            vllm_waiting: ::metrics::gauge!(VLLM_WAITING),
            vllm_running: ::metrics::gauge!(VLLM_RUNNING),
            vllm_kv: ::metrics::gauge!(VLLM_KV_USAGE),
        }
    }

    /// Publishes compliance at most once per `every` of injected time (zero: every call).
    #[cfg(feature = "slo")]
    pub fn with_compliance_interval(mut self, every: Duration) -> Self {
        self.slo.compliance_every = every;
        self
    }

    /// Records one first admission's queue wait for `class`.
    pub fn queue_wait(&self, class: Class, waited: Duration) {
        if let Some(h) = self.classes.get(class.index()) {
            h.queue_wait.record(waited.as_secs_f64());
        }
    }

    /// Publishes the end of a step: per class gauges and counts, the step duration, the
    /// totals and KV usage under the vLLM names.
    pub fn publish(&self, step: &StepReport<'_>) {
        let (mut waiting, mut running) = (0u64, 0u64);
        for (h, s) in self.classes.iter().zip(step.classes) {
            waiting += s.waiting;
            running += s.running;
            h.depth.set(s.waiting as f64);
            h.running.set(s.running as f64);
            for (counter, n) in [
                (&h.admitted, s.admitted),
                (&h.preempted, s.preempted),
                (&h.promoted, s.promoted),
                (&h.timed_out, s.timed_out),
                (&h.cancelled, s.cancelled),
                (&h.relegated, s.relegated),
                (&h.shed, s.shed),
                (&h.max_wait_missed, s.max_wait_missed),
            ] {
                if n > 0 {
                    counter.increment(n);
                }
            }
            for (counter, &n) in h.refused.iter().zip(&s.refused) {
                if n > 0 {
                    counter.increment(n);
                }
            }
        }
        self.step_duration.record(step.step_duration.as_secs_f64());
        self.vllm_waiting.set(waiting as f64);
        self.vllm_running.set(running as f64);
        if step.kv_total_blocks > 0 {
            let free = step.kv_free_blocks.min(step.kv_total_blocks);
            self.vllm_kv
                .set(1.0 - f64::from(free) / f64::from(step.kv_total_blocks));
        }
    }

    /// Publishes the tracker's violation counts (every call, cheap) and, when the
    /// compliance interval has passed since the last time, compliance for every class,
    /// window and target (a window with no samples publishes NaN).
    #[cfg(feature = "slo")]
    pub(crate) fn publish_slo(&mut self, tracker: &mut SloTracker, now: Timestamp) {
        self.slo.publish(tracker, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_reasons_are_dense_and_distinct() {
        for (i, r) in RefuseReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = RefuseReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RefuseReason::COUNT);
        assert_eq!(RefuseReason::of(&SubmitError::Closed), RefuseReason::Closed);
    }

    #[test]
    fn names_follow_the_conventions() {
        for name in ALL_NAMES {
            assert!(
                name.starts_with("triage_") || name.starts_with("vllm:"),
                "{name}"
            );
        }
    }
}
