//! Python bindings of triage (module `triage._triage`; the package `triage` re-exports it).
//!
//! Thin over the library: [`Scheduler`] and [`Submitter`] wrap the Rust types one to one,
//! with `now` injectable (a [`ManualClock`] or an explicit `now_ns`), the GIL released in
//! `step`, and each Rust error mapped to a typed Python exception whose message is the Rust
//! error's (which names what is wrong). [`VllmQueue`] is the ordered queue behind
//! `triage.vllm.TriageRequestQueue`: the library's [`WaitingQueue`] holding the Python
//! request objects.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyIndexError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList};
use pyo3::PyTypeInfo;
use std::cmp::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triage::{
    Budget, CancelOutcome, Class, ClassSet, Clock, FinishReason, MonotonicClock, Outcome,
    PreemptReason, RejectReason, RequestId, RequestSpec, SchedulerConfig, SloWindow, TenantId,
    Timestamp, WaitingError, WaitingOptions, WaitingQueue,
};

create_exception!(
    _triage,
    TriageError,
    PyException,
    "Base class of every error triage raises."
);
create_exception!(
    _triage,
    ConfigError,
    TriageError,
    "A configuration breaks a rule; the message names the field, what is allowed, and where."
);
create_exception!(
    _triage,
    ClassError,
    TriageError,
    "A class name, index or vLLM priority maps to no configured class."
);
create_exception!(
    _triage,
    SubmitError,
    TriageError,
    "submit refused the request (queue full, duplicate id, unknown class, too long, closed)."
);
create_exception!(
    _triage,
    ControlError,
    TriageError,
    "cancel or reprioritize found no request to act on."
);
create_exception!(
    _triage,
    ProgressError,
    TriageError,
    "on_progress or on_finished was refused (request not running, overrun)."
);
create_exception!(
    _triage,
    BudgetError,
    TriageError,
    "step was refused (more free blocks than the engine has, or time went backwards)."
);

/// The Python exception `E` carrying `e`'s message (a Rust error's, which names what is
/// wrong): `.map_err(raise::<ConfigError>)`.
fn raise<E: PyTypeInfo>(e: impl std::fmt::Display) -> PyErr {
    PyErr::new::<E, _>(e.to_string())
}

/// A scheduler configuration (the TOML file's contents), validated.
#[pyclass(module = "triage._triage", frozen)]
#[derive(Clone)]
struct Config {
    inner: SchedulerConfig,
}

#[pymethods]
impl Config {
    /// The default configuration (HIGH, MEDIUM, LOW).
    #[new]
    fn new() -> Self {
        Config {
            inner: SchedulerConfig::default(),
        }
    }

    /// Loads and validates a TOML file.
    #[staticmethod]
    fn from_path(path: std::path::PathBuf) -> PyResult<Self> {
        SchedulerConfig::from_path(&path)
            .map(|inner| Config { inner })
            .map_err(raise::<ConfigError>)
    }

    /// Parses and validates TOML text.
    #[staticmethod]
    fn from_toml(text: &str) -> PyResult<Self> {
        SchedulerConfig::from_toml_str(text)
            .map(|inner| Config { inner })
            .map_err(raise::<ConfigError>)
    }

    /// Class names, most urgent first.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.inner.classes.iter().map(|c| c.name.clone()).collect()
    }

    /// Each class's inclusive vLLM priority range, by class index.
    #[getter]
    fn priority_ranges(&self) -> Vec<(i64, i64)> {
        self.inner
            .classes
            .iter()
            .map(|c| (c.vllm_priority[0], c.vllm_priority[1]))
            .collect()
    }

    /// Each class's aging threshold in ms (`None`: never promoted out of it).
    #[getter]
    fn promote_after_ms(&self) -> Vec<Option<u64>> {
        self.inner
            .classes
            .iter()
            .map(|c| c.promote_after_ms)
            .collect()
    }

    /// Age in ms past which a waiting request is overdue.
    #[getter]
    fn max_wait_ms(&self) -> u64 {
        self.inner.max_wait_ms
    }

    /// Width of the arrival buckets that age together, in ms.
    #[getter]
    fn bucket_width_ms(&self) -> u64 {
        self.inner.bucket_width_ms
    }

    /// The class index whose range holds vLLM's `priority`; raises `ClassError` if none.
    fn class_for_priority(&self, priority: i64) -> PyResult<usize> {
        vllm_class(&self.inner.class_set(), priority, OutOfRange::Error).map(Class::index)
    }

    fn __repr__(&self) -> String {
        format!("Config(classes={:?})", self.class_names())
    }
}

/// A clock that moves only when told to, shared with the scheduler it is given to: tests
/// and simulators inject time with it. Times are nanoseconds from an arbitrary epoch.
#[pyclass(module = "triage._triage", frozen)]
#[derive(Clone)]
struct ManualClock {
    inner: triage::ManualClock,
}

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start_ns = 0))]
    fn new(start_ns: u64) -> Self {
        ManualClock {
            inner: triage::ManualClock::new(Timestamp(start_ns)),
        }
    }

    /// The current time in ns.
    fn now_ns(&self) -> u64 {
        self.inner.now().0
    }

    /// Sets the time (it must not go backwards for the scheduler's sake).
    fn set_ns(&self, t: u64) {
        self.inner.set(Timestamp(t));
    }

    /// Moves the time forward by `ms` milliseconds.
    fn advance_ms(&self, ms: u64) {
        self.inner.advance(Duration::from_millis(ms));
    }

    /// Moves the time forward by `ns` nanoseconds.
    fn advance_ns(&self, ns: u64) {
        self.inner.advance(Duration::from_nanos(ns));
    }
}

#[derive(Clone)]
enum AnyClock {
    Manual(triage::ManualClock),
    Mono(MonotonicClock),
}

impl Clock for AnyClock {
    fn now(&self) -> Timestamp {
        match self {
            AnyClock::Manual(c) => c.now(),
            AnyClock::Mono(c) => c.now(),
        }
    }
}

/// What to do with a vLLM priority that is in no class's range.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OutOfRange {
    /// The class of the nearest range (the more urgent class on a tie).
    Clamp,
    /// Raise `ClassError`.
    Error,
}

/// The class vLLM's integer `priority` maps to: the one whose configured range holds it
/// (the library's `ClassSet::from_vllm_priority`), else as `out_of_range` says. The one
/// path from a vLLM priority to a class: `submit`/`reprioritize`, `Config` and `VllmQueue`.
fn vllm_class(classes: &ClassSet, priority: i64, out_of_range: OutOfRange) -> PyResult<Class> {
    match out_of_range {
        OutOfRange::Clamp => Ok(classes.from_vllm_priority_nearest(priority)),
        OutOfRange::Error => classes
            .from_vllm_priority(priority)
            .map_err(raise::<ClassError>),
    }
}

/// A class given as a name (`str`) or an index (`int`), or as vLLM's `priority` (which
/// must be in a class's range).
fn resolve_class(
    classes: &ClassSet,
    cls: Option<&Bound<'_, PyAny>>,
    priority: Option<i64>,
) -> PyResult<Class> {
    match (cls, priority) {
        (Some(_), Some(_)) => Err(PyValueError::new_err(
            "give either cls (a class name or index) or priority (vLLM's integer), not both",
        )),
        (None, None) => Err(PyValueError::new_err(
            "give cls (a class name or index) or priority (vLLM's integer)",
        )),
        (None, Some(p)) => vllm_class(classes, p, OutOfRange::Error),
        (Some(c), None) => {
            if let Ok(name) = c.extract::<String>() {
                classes.parse_name(&name).map_err(raise::<ClassError>)
            } else if let Ok(i) = c.extract::<u8>() {
                classes
                    .check(Class::from_index(i))
                    .map_err(raise::<ClassError>)
            } else {
                Err(ClassError::new_err(format!(
                    "cls must be a class name (str) or index (int), not {}",
                    c.get_type().name()?
                )))
            }
        }
    }
}

/// The API threads' handle: submit, cancel, reprioritize. Safe to share between Python
/// threads and usable while the engine thread is inside `Scheduler.step`.
#[pyclass(module = "triage._triage", frozen)]
struct Submitter {
    inner: triage::Submitter,
}

#[pymethods]
impl Submitter {
    /// Submits a request; returns its arrival time in ns. Give its class as `cls` (name or
    /// index) or as vLLM's integer `priority`. Raises `SubmitError` if refused.
    #[pyo3(signature = (id, prompt_tokens, max_new_tokens, *, cls = None, priority = None, tenant = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        id: u64,
        prompt_tokens: u32,
        max_new_tokens: u32,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<i64>,
        tenant: Option<u64>,
    ) -> PyResult<u64> {
        let class = resolve_class(&self.inner.classes(), cls, priority)?;
        let mut spec = RequestSpec::new(id, class, prompt_tokens, max_new_tokens);
        if let Some(t) = tenant {
            spec = spec.with_tenant(TenantId(t));
        }
        let inner = &self.inner;
        py.detach(|| inner.submit(spec))
            .map(|t| t.0)
            .map_err(raise::<SubmitError>)
    }

    /// Cancels a request; returns `"waiting"` or `"running"` (where it was). Raises
    /// `ControlError` if it is unknown or already ended.
    fn cancel(&self, id: u64) -> PyResult<&'static str> {
        match self
            .inner
            .cancel(RequestId(id))
            .map_err(raise::<ControlError>)?
        {
            CancelOutcome::WasWaiting => Ok("waiting"),
            CancelOutcome::WasRunning => Ok("running"),
        }
    }

    /// Moves a request to another class (name or index, or vLLM `priority`); applied at
    /// the next step, keeping its original arrival.
    #[pyo3(signature = (id, cls = None, *, priority = None))]
    fn reprioritize(
        &self,
        id: u64,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<i64>,
    ) -> PyResult<()> {
        let class = resolve_class(&self.inner.classes(), cls, priority)?;
        self.inner
            .reprioritize(RequestId(id), class)
            .map_err(raise::<ControlError>)
    }

    /// Closes ingress: later submits raise `SubmitError`.
    fn close(&self) {
        self.inner.close();
    }

    /// Class names, most urgent first.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.inner.classes().names().to_vec()
    }
}

/// A request that starts (or resumes) in this iteration.
#[pyclass(module = "triage._triage", frozen, get_all)]
#[derive(Clone)]
struct Admitted {
    /// The request id.
    id: u64,
    /// Its base class name.
    cls: String,
    /// The class it was served from (more urgent than `cls` if it aged).
    effective_cls: String,
    /// Prompt tokens to prefill in this iteration.
    prefill_tokens: u32,
    /// Tokens to prefill in all for this run.
    prefill_target: u32,
    /// KV blocks reserved for it.
    blocks: u32,
    /// How long it waited since arrival, in ns.
    waited_ns: u64,
    /// It waited past max_wait.
    overdue: bool,
    /// It resumes after a preemption.
    resumed: bool,
}

/// A running request preempted in this iteration (free its KV; it is queued again).
#[pyclass(module = "triage._triage", frozen, get_all)]
#[derive(Clone)]
struct Preempted {
    /// The request id.
    id: u64,
    /// The class it ran as.
    cls: String,
    /// KV blocks it held.
    freed_blocks: u32,
    /// `"for_waiting"`, `"over_budget"` or `"kv_exhausted"`.
    reason: String,
    /// The request it made room for (`for_waiting`) or that needed the block
    /// (`kv_exhausted`).
    by: Option<u64>,
}

/// What one step decided.
#[pyclass(module = "triage._triage", frozen, get_all)]
struct Decision {
    /// The step's time in ns.
    now_ns: u64,
    /// Requests to start, in the order chosen.
    admitted: Vec<Admitted>,
    /// `(id, tokens)` of running requests' work this iteration.
    scheduled: Vec<(u64, u32)>,
    /// Running requests to preempt.
    preempted: Vec<Preempted>,
    /// Running requests the client cancelled: stop them.
    aborted: Vec<u64>,
    /// Waiting requests the client cancelled.
    cancelled: Vec<u64>,
    /// `(id, class name, waited_ns)` of waiting requests that timed out.
    timed_out: Vec<(u64, String, u64)>,
    /// `(id, class name, tenant)` of requests refused when drained because their tenant
    /// would have been one past `fairness.max_tenants`.
    tenant_limited: Vec<(u64, String, Option<u64>)>,
    /// Tokens the iteration processes.
    total_tokens: u32,
    /// Waiting after the step.
    waiting: usize,
    /// Running after the step.
    running: usize,
    /// The budget that stopped admissions (`"seqs"`, `"tokens"`, `"kv_blocks"`), if any.
    stopped_by: Option<&'static str>,
}

#[pymethods]
impl Decision {
    fn __repr__(&self) -> String {
        format!(
            "Decision(now_ns={}, admitted={:?}, scheduled={}, preempted={:?}, aborted={:?}, cancelled={:?}, timed_out={})",
            self.now_ns,
            self.admitted.iter().map(|a| a.id).collect::<Vec<_>>(),
            self.scheduled.len(),
            self.preempted.iter().map(|p| p.id).collect::<Vec<_>>(),
            self.aborted,
            self.cancelled,
            self.timed_out.len()
        )
    }
}

fn ns(d: Duration) -> u64 {
    Timestamp::from_duration(d).0
}

fn decision_to_py(d: &triage::Decision, classes: &ClassSet) -> Decision {
    let name = |c: Class| classes.name(c).to_string();
    Decision {
        now_ns: d.now.0,
        admitted: d
            .admitted
            .iter()
            .map(|a| Admitted {
                id: a.id.0,
                cls: name(a.class),
                effective_cls: name(a.effective_class),
                prefill_tokens: a.prefill_tokens,
                prefill_target: a.prefill_target,
                blocks: a.blocks,
                waited_ns: ns(a.waited),
                overdue: a.overdue,
                resumed: a.resumed,
            })
            .collect(),
        scheduled: d.scheduled.iter().map(|s| (s.id.0, s.tokens)).collect(),
        preempted: d
            .preempted
            .iter()
            .map(|p| {
                let (reason, by) = match p.reason {
                    PreemptReason::ForWaiting { by, .. } => ("for_waiting", Some(by.0)),
                    PreemptReason::OverBudget { .. } => ("over_budget", None),
                    PreemptReason::KvExhausted { needed_by } => ("kv_exhausted", Some(needed_by.0)),
                };
                Preempted {
                    id: p.id.0,
                    cls: name(p.class),
                    freed_blocks: p.freed_blocks,
                    reason: reason.to_string(),
                    by,
                }
            })
            .collect(),
        aborted: d.aborted.iter().map(|r| r.0).collect(),
        cancelled: d.cancelled.iter().map(|r| r.0).collect(),
        timed_out: d
            .rejected
            .iter()
            .filter_map(|r| match r.reason {
                RejectReason::TimedOut { waited } => Some((r.id.0, name(r.class), ns(waited))),
                RejectReason::TenantLimit { .. } => None,
            })
            .collect(),
        tenant_limited: d
            .rejected
            .iter()
            .filter_map(|r| match r.reason {
                RejectReason::TenantLimit { tenant, .. } => {
                    Some((r.id.0, name(r.class), tenant.map(|t| t.0)))
                }
                RejectReason::TimedOut { .. } => None,
            })
            .collect(),
        total_tokens: d.total_tokens(),
        waiting: d.summary.waiting,
        running: d.summary.running,
        stopped_by: d.summary.stopped_by.map(|s| s.as_str()),
    }
}

/// The engine thread's scheduler. Call `step` once per iteration, then report progress
/// with `on_progress` / `on_finished`. Not for concurrent use: API threads take a
/// `Submitter` (`scheduler.submitter()`).
#[pyclass(module = "triage._triage")]
struct Scheduler {
    inner: triage::Scheduler,
    submitter: triage::Submitter,
    clock: AnyClock,
    step_buf: triage::Decision,
}

impl Scheduler {
    fn now(&self, now_ns: Option<u64>) -> Timestamp {
        now_ns.map_or_else(|| self.clock.now(), Timestamp)
    }

    fn class(&self, id: &str) -> PyResult<Class> {
        self.inner
            .classes()
            .parse_name(id)
            .map_err(raise::<ClassError>)
    }
}

#[pymethods]
impl Scheduler {
    /// A scheduler with `config` (default: `Config()`). With `clock` (a `ManualClock`),
    /// arrivals and every call without an explicit `now_ns` read that clock; without it,
    /// the monotonic wall clock.
    #[new]
    #[pyo3(signature = (config = None, clock = None))]
    fn new(config: Option<Config>, clock: Option<ManualClock>) -> PyResult<Self> {
        let config = config.map_or_else(SchedulerConfig::default, |c| c.inner);
        let clock = match clock {
            Some(c) => AnyClock::Manual(c.inner),
            None => AnyClock::Mono(MonotonicClock::new()),
        };
        let (inner, submitter) =
            triage::Scheduler::with_clock(config, clock.clone()).map_err(raise::<ConfigError>)?;
        Ok(Scheduler {
            inner,
            submitter,
            clock,
            step_buf: triage::Decision::default(),
        })
    }

    /// A handle for API threads (submit, cancel, reprioritize).
    fn submitter(&self) -> Submitter {
        Submitter {
            inner: self.submitter.clone(),
        }
    }

    /// Same as `Submitter.submit`, from the engine thread.
    #[pyo3(signature = (id, prompt_tokens, max_new_tokens, *, cls = None, priority = None, tenant = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        id: u64,
        prompt_tokens: u32,
        max_new_tokens: u32,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<i64>,
        tenant: Option<u64>,
    ) -> PyResult<u64> {
        self.submitter()
            .submit(py, id, prompt_tokens, max_new_tokens, cls, priority, tenant)
    }

    /// Same as `Submitter.cancel`.
    fn cancel(&self, id: u64) -> PyResult<&'static str> {
        self.submitter().cancel(id)
    }

    /// Same as `Submitter.reprioritize`.
    #[pyo3(signature = (id, cls = None, *, priority = None))]
    fn reprioritize(
        &self,
        id: u64,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<i64>,
    ) -> PyResult<()> {
        self.submitter().reprioritize(id, cls, priority)
    }

    /// Decides the next iteration under the engine's budget, at `now_ns` (default: the
    /// clock's now). Releases the GIL while it runs. Raises `BudgetError` if refused.
    #[pyo3(signature = (max_num_seqs, max_batched_tokens, free_blocks, now_ns = None))]
    fn step(
        &mut self,
        py: Python<'_>,
        max_num_seqs: u32,
        max_batched_tokens: u32,
        free_blocks: u32,
        now_ns: Option<u64>,
    ) -> PyResult<Decision> {
        let now = self.now(now_ns);
        let budget = Budget {
            max_num_seqs,
            max_batched_tokens,
            free_blocks,
        };
        let (inner, buf) = (&mut self.inner, &mut self.step_buf);
        py.detach(|| inner.step_into(now, &budget, buf))
            .map_err(raise::<BudgetError>)?;
        Ok(decision_to_py(&self.step_buf, self.inner.classes()))
    }

    /// Reports one iteration's work on a running request: `computed` tokens ran through
    /// the model and `new_output` tokens were sampled.
    #[pyo3(signature = (id, computed, new_output, now_ns = None))]
    fn on_progress(
        &mut self,
        id: u64,
        computed: u32,
        new_output: u32,
        now_ns: Option<u64>,
    ) -> PyResult<()> {
        let now = self.now(now_ns);
        self.inner
            .on_progress(RequestId(id), now, computed, new_output)
            .map_err(raise::<ProgressError>)
    }

    /// Reports that a running request finished (`reason`: `"stop"`, `"length"` or
    /// `"error"`); returns its outcome, `"finished"` or `"cancelled"`.
    #[pyo3(signature = (id, reason = "stop", now_ns = None))]
    fn on_finished(&mut self, id: u64, reason: &str, now_ns: Option<u64>) -> PyResult<String> {
        let reason = match reason {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "error" => FinishReason::Error,
            other => {
                return Err(PyValueError::new_err(format!(
                    "reason {other:?}: expected \"stop\", \"length\" or \"error\""
                )))
            }
        };
        let now = self.now(now_ns);
        let outcome = self
            .inner
            .on_finished(RequestId(id), now, reason)
            .map_err(raise::<ProgressError>)?;
        Ok(outcome_name(outcome).to_string())
    }

    /// Requests waiting.
    #[getter]
    fn waiting(&self) -> usize {
        self.inner.waiting()
    }

    /// Requests running.
    #[getter]
    fn running(&self) -> usize {
        self.inner.running()
    }

    /// Class names, most urgent first.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.inner.classes().names().to_vec()
    }

    /// Requests waiting whose base class is `cls`.
    fn waiting_in(&self, cls: &str) -> PyResult<usize> {
        Ok(self.inner.waiting_in(self.class(cls)?))
    }

    /// A snapshot of the counters: `{"waiting", "running", "conservation": {...},
    /// "balanced": bool, "classes": {name: {submitted, refused, ..., running}}}`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("waiting", self.inner.waiting())?;
        out.set_item("running", self.inner.running())?;
        let c = self.inner.conservation();
        let cons = PyDict::new(py);
        for (k, v) in [
            ("submitted", c.submitted),
            ("refused", c.refused),
            ("in_ingress", c.in_ingress),
            ("waiting", c.waiting),
            ("running", c.running),
            ("finished", c.finished),
            ("cancelled", c.cancelled),
            ("timed_out", c.timed_out),
            ("evicted", c.evicted),
        ] {
            cons.set_item(k, v)?;
        }
        out.set_item("conservation", cons)?;
        out.set_item("balanced", c.is_balanced())?;
        let classes = PyDict::new(py);
        for class in self.inner.classes().iter() {
            let k = self.inner.class_counters(class);
            let d = PyDict::new(py);
            for (n, v) in [
                ("submitted", k.submitted),
                ("refused", k.refused),
                ("drained", k.drained),
                ("admitted", k.admitted),
                ("preempted", k.preempted),
                ("promoted", k.promoted),
                ("finished", k.finished),
                ("cancelled", k.cancelled),
                ("timed_out", k.timed_out),
                ("evicted", k.evicted),
                ("reprioritized_in", k.reprioritized_in),
                ("reprioritized_out", k.reprioritized_out),
                ("waiting", k.waiting),
                ("running", k.running),
            ] {
                d.set_item(n, v)?;
            }
            classes.set_item(self.inner.classes().name(class), d)?;
        }
        out.set_item("classes", classes)?;
        Ok(out)
    }

    /// The SLO report over `window` (`"cumulative"`, or a configured sliding window such
    /// as `"1m"`, `"5m"`, `"1h"`) as of `now_ns`: `{class: {"ttft"|"tpot"|"e2e": {bound_ms,
    /// quantile, measured_ms, fraction_met, samples, met}}}`, only the targets a class has.
    #[pyo3(signature = (window = "cumulative", now_ns = None))]
    fn slo_report<'py>(
        &mut self,
        py: Python<'py>,
        window: &str,
        now_ns: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let w = window.parse::<SloWindow>().map_err(raise::<PyValueError>)?;
        let now = self.now(now_ns);
        let out = PyDict::new(py);
        let classes: Vec<(Class, String)> = self
            .inner
            .classes()
            .iter()
            .map(|c| (c, self.inner.classes().name(c).to_string()))
            .collect();
        for (class, name) in classes {
            let Some(cc) = self.inner.slo().compliance(class, w, now) else {
                return Err(PyValueError::new_err(format!(
                    "window {window:?} is not configured (slo.windows_s)"
                )));
            };
            let d = PyDict::new(py);
            for (key, t) in [("ttft", cc.ttft), ("tpot", cc.tpot), ("e2e", cc.e2e)] {
                let Some(t) = t else { continue };
                let td = PyDict::new(py);
                td.set_item("bound_ms", t.bound.as_secs_f64() * 1e3)?;
                td.set_item("quantile", t.quantile)?;
                td.set_item("measured_ms", t.measured.map(|m| m.as_secs_f64() * 1e3))?;
                td.set_item("fraction_met", t.fraction_met)?;
                td.set_item("samples", t.samples)?;
                td.set_item("met", t.is_met())?;
                d.set_item(key, td)?;
            }
            out.set_item(name, d)?;
        }
        Ok(out)
    }

    /// Proposes a new configuration, applied at the next step boundary (see
    /// `docs/configuration.md` for what may change). Raises `ConfigError` if invalid.
    fn reload(&self, config: Config) -> PyResult<()> {
        self.inner
            .config_handle()
            .propose(config.inner)
            .map_err(raise::<ConfigError>)
    }

    /// The configuration in force.
    #[getter]
    fn config(&self) -> Config {
        Config {
            inner: self.inner.config().clone(),
        }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Finished => "finished",
        Outcome::Cancelled => "cancelled",
        Outcome::Refused => "refused",
        Outcome::TimedOut => "timed_out",
        Outcome::Evicted => "evicted",
    }
}

// ---------------------------------------------------------------------------------------
// The vLLM request queue.

/// A queued Python request: its exact `arrival_time` and the object. Orders requests that
/// arrive in the same nanosecond as vLLM's `Request.__lt__` does after the priority:
/// arrival time, then `request_id`, then `id()`.
struct PyItem {
    arrival: f64,
    obj: Py<PyAny>,
}

impl PartialEq for PyItem {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for PyItem {}
impl PartialOrd for PyItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PyItem {
    fn cmp(&self, other: &Self) -> Ordering {
        let by_arrival = self
            .arrival
            .partial_cmp(&other.arrival)
            .unwrap_or(Ordering::Equal);
        by_arrival
            .then_with(|| {
                Python::attach(|py| {
                    let key = intern!(py, "request_id");
                    let (a, b) = (self.obj.bind(py), other.obj.bind(py));
                    match (a.getattr(key), b.getattr(key)) {
                        (Ok(a), Ok(b)) => {
                            if a.lt(&b).unwrap_or(false) {
                                Ordering::Less
                            } else if b.lt(&a).unwrap_or(false) {
                                Ordering::Greater
                            } else {
                                Ordering::Equal
                            }
                        }
                        _ => Ordering::Equal,
                    }
                })
            })
            .then_with(|| (self.obj.as_ptr() as usize).cmp(&(other.obj.as_ptr() as usize)))
    }
}

/// Seconds (vLLM's `time.time()` arrivals) to queue nanoseconds: shifted by 2^62 ns (about
/// 146 years) so that any arrival from 1824 on maps in order into `u64`.
const EPOCH_SHIFT_NS: i128 = 1 << 62;

fn secs_to_ts(secs: f64) -> Timestamp {
    // Monotone (IEEE rounding is, and the shift is exact integer arithmetic), so the
    // queue's order agrees with the float's; equal results are told apart by `PyItem`'s
    // exact comparison. Nanosecond-exact for small values, 256 ns steps at today's epoch
    // seconds.
    let ns = (secs * 1e9).round() as i128 + EPOCH_SHIFT_NS;
    Timestamp(ns.clamp(0, i128::from(u64::MAX)) as u64)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Priority,
    Fcfs,
}

/// FCFS mode keys: appends count up from here, prepends count down, one bucket apart.
const FCFS_ORIGIN: u64 = 1 << 62;
const FCFS_BUCKET_NS: u64 = 1024;

/// The ordered queue behind `triage.vllm.TriageRequestQueue` (see there).
#[pyclass(module = "triage._triage", subclass)]
struct VllmQueue {
    queue: WaitingQueue<PyItem>,
    policy: Policy,
    aging: bool,
    clock: Option<Py<PyAny>>,
    out_of_range: OutOfRange,
    classes: ClassSet,
    /// FCFS: next append and prepend keys.
    back: u64,
    front: u64,
}

impl VllmQueue {
    fn now(&self, py: Python<'_>) -> PyResult<Timestamp> {
        if !self.aging {
            return Ok(Timestamp::ZERO);
        }
        match &self.clock {
            Some(c) => Ok(secs_to_ts(c.bind(py).call0()?.extract::<f64>()?)),
            None => {
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                Ok(secs_to_ts(t))
            }
        }
    }

    fn push(&mut self, py: Python<'_>, request: &Bound<'_, PyAny>, front: bool) -> PyResult<()> {
        let id = request.as_ptr() as u64;
        let item = |arrival: f64| PyItem {
            arrival,
            obj: request.clone().unbind(),
        };
        let res = match self.policy {
            Policy::Priority => {
                let arrival_secs: f64 = request.getattr(intern!(py, "arrival_time"))?.extract()?;
                let item = item(arrival_secs);
                let priority: i64 = request.getattr(intern!(py, "priority"))?.extract()?;
                let class = vllm_class(&self.classes, priority, self.out_of_range)?;
                let now = self.now(py)?;
                let arrival = secs_to_ts(arrival_secs);
                if front {
                    self.queue.requeue(id, item, class, arrival, now)
                } else {
                    self.queue.insert(id, item, class, arrival, now)
                }
            }
            Policy::Fcfs => {
                // FCFS keys are unique (`back` counts up, `front` down), so the item's
                // tie-break never runs: no need to read `arrival_time`.
                let item = item(0.0);
                let arrival = if front {
                    self.front -= FCFS_BUCKET_NS;
                    Timestamp(self.front)
                } else {
                    self.back += 1;
                    Timestamp(self.back)
                };
                self.queue
                    .insert(id, item, Class::HIGH, arrival, Timestamp::ZERO)
            }
        };
        res.map_err(|e| match e {
            WaitingError::Duplicate { .. } => PyValueError::new_err(format!(
                "request {} is already in this queue",
                request
                    .getattr(intern!(py, "request_id"))
                    .map_or_else(|_| "?".to_string(), |r| r.to_string())
            )),
            other => raise::<PyValueError>(other),
        })
    }
}

fn collect<'py>(requests: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    requests.try_iter()?.collect()
}

#[pymethods]
impl VllmQueue {
    #[new]
    #[pyo3(signature = (config = None, *, policy = "priority", aging = true, clock = None, out_of_range = "clamp"))]
    fn new(
        config: Option<Config>,
        policy: &str,
        aging: bool,
        clock: Option<Py<PyAny>>,
        out_of_range: &str,
    ) -> PyResult<Self> {
        let config = config.map_or_else(SchedulerConfig::default, |c| c.inner);
        let policy = match policy {
            "priority" => Policy::Priority,
            "fcfs" => Policy::Fcfs,
            other => {
                return Err(PyValueError::new_err(format!(
                "policy {other:?}: expected \"priority\" or \"fcfs\" (vLLM's --scheduling-policy)"
            )))
            }
        };
        let out_of_range = match out_of_range {
            "clamp" => OutOfRange::Clamp,
            "error" => OutOfRange::Error,
            other => {
                return Err(PyValueError::new_err(format!(
                    "out_of_range {other:?}: expected \"clamp\" or \"error\""
                )))
            }
        };
        let options = match (policy, aging) {
            (Policy::Fcfs, _) => WaitingOptions {
                bucket_width: Duration::from_nanos(FCFS_BUCKET_NS),
                ..WaitingOptions::without_aging(1)
            },
            (Policy::Priority, false) => WaitingOptions::without_aging(config.classes.len()),
            (Policy::Priority, true) => WaitingOptions::from_config(&config),
        };
        let queue = WaitingQueue::new(options).map_err(raise::<ConfigError>)?;
        Ok(VllmQueue {
            queue,
            policy,
            aging: aging && policy == Policy::Priority,
            clock,
            out_of_range,
            classes: config.class_set(),
            back: FCFS_ORIGIN,
            front: FCFS_ORIGIN,
        })
    }

    /// Adds a request at its place (priority: by class and arrival; fcfs: at the back).
    fn add_request(&mut self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push(py, request, false)
    }

    /// Takes the next request; raises IndexError if the queue is empty.
    fn pop_request(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let now = self.now(py)?;
        match self.queue.pop(now) {
            Some((_, item)) => Ok(item.obj),
            None => Err(PyIndexError::new_err("pop from an empty queue")),
        }
    }

    /// The next request, left in place; raises IndexError if the queue is empty.
    fn peek_request(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let now = self.now(py)?;
        match self.queue.peek(now) {
            Some((_, item)) => Ok(item.obj.clone_ref(py)),
            None => Err(PyIndexError::new_err("peek from an empty queue")),
        }
    }

    /// Puts a request back (preempted, or skipped this step). priority: at its original
    /// arrival, so it keeps its place; fcfs: at the front.
    fn prepend_request(&mut self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push(py, request, true)
    }

    /// `prepend_request` for each request in turn (fcfs: so the last ends up first, as
    /// `deque.extendleft`).
    fn prepend_requests(slf: &Bound<'_, Self>, requests: &Bound<'_, PyAny>) -> PyResult<()> {
        let items = collect(requests)?;
        let py = slf.py();
        let mut me = slf.borrow_mut();
        for r in &items {
            me.push(py, r, true)?;
        }
        Ok(())
    }

    /// Removes a request; raises ValueError if it is not in the queue.
    fn remove_request(&mut self, request: &Bound<'_, PyAny>) -> PyResult<()> {
        match self.queue.remove(request.as_ptr() as u64) {
            Some(_) => Ok(()),
            None => Err(PyValueError::new_err(
                "remove_request: the request is not in the queue",
            )),
        }
    }

    /// Removes every given request that is in the queue; others are ignored.
    fn remove_requests(slf: &Bound<'_, Self>, requests: &Bound<'_, PyAny>) -> PyResult<()> {
        // Identities first (iterating may borrow this queue, if it is the argument). A
        // queued request is alive, so no other object seen here can share its id.
        let ids = requests
            .try_iter()?
            .map(|r| r.map(|r| r.as_ptr() as u64))
            .collect::<PyResult<Vec<u64>>>()?;
        let removed = slf.borrow_mut().queue.remove_many(ids);
        drop(removed);
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.queue.len()
    }

    fn __bool__(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The requests in the order `pop_request` would return them now (a snapshot).
    fn __iter__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let now = self.now(py)?;
        let items: Vec<Py<PyAny>> = self
            .queue
            .iter_at(now)
            .map(|(_, item)| item.obj.clone_ref(py))
            .collect();
        PyList::new(py, items)?.try_iter()
    }

    /// Whether `request` is in the queue (by identity).
    fn __contains__(&self, request: &Bound<'_, PyAny>) -> bool {
        self.queue.contains(request.as_ptr() as u64)
    }

    /// The class index vLLM's `priority` maps to under this queue's configuration (and
    /// its out-of-range rule).
    fn class_for_priority(&self, priority: i64) -> PyResult<usize> {
        vllm_class(&self.classes, priority, self.out_of_range).map(Class::index)
    }

    /// The class name of a queued request at the current time (aging included); None if
    /// it is not queued.
    fn effective_class(
        &mut self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Option<String>> {
        let now = self.now(py)?;
        Ok(self
            .queue
            .effective_class(request.as_ptr() as u64, now)
            .map(|c| self.classes.name(c).to_string()))
    }

    /// `"priority"` or `"fcfs"`.
    #[getter]
    fn policy(&self) -> &'static str {
        match self.policy {
            Policy::Priority => "priority",
            Policy::Fcfs => "fcfs",
        }
    }

    /// Whether aging and max wait are on.
    #[getter]
    fn aging(&self) -> bool {
        self.aging
    }
}

/// The `triage._triage` extension module.
#[pymodule]
fn _triage(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("TriageError", py.get_type::<TriageError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("ClassError", py.get_type::<ClassError>())?;
    m.add("SubmitError", py.get_type::<SubmitError>())?;
    m.add("ControlError", py.get_type::<ControlError>())?;
    m.add("ProgressError", py.get_type::<ProgressError>())?;
    m.add("BudgetError", py.get_type::<BudgetError>())?;
    m.add_class::<Config>()?;
    m.add_class::<ManualClock>()?;
    m.add_class::<Submitter>()?;
    m.add_class::<Scheduler>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Admitted>()?;
    m.add_class::<Preempted>()?;
    m.add_class::<VllmQueue>()?;
    Ok(())
}
