//! The scheduler's Python classes: `Config`, `ManualClock`, `RequestHandle`, `Submitter`,
//! `Decision` (with its items `Admitted`, `Scheduled`, `Preempted`) and `Scheduler`, each
//! wrapping the library's type one to one.

use crate::convert::{
    class_arg, int, int_in, opt_int, resolve_class, string, time_ns, type_name, vllm_class,
    wrong_type, OutOfRange, ARGUMENT_ERROR, ARGUMENT_TYPE_ERROR, TTFT_MS_RANGE,
};
use crate::errors::{raise, BudgetError, ConfigError, ControlError, ProgressError, SubmitError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::time::Duration;
use triage::{
    Budget, CancelOutcome, Class, ClassSet, Clock, DeadlineConfig, FinishReason, LateRule,
    MonotonicClock, Outcome, PreemptReason, QueueOrder, RejectReason, RequestId, RequestSpec,
    SchedulerConfig, SloWindow, TenantId, Timestamp,
};

/// A scheduler configuration (the TOML file's contents), validated.
#[pyclass(module = "triage._triage", frozen)]
#[derive(Clone)]
pub(crate) struct Config {
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

    /// Loads and validates a TOML file (`path`: a `str` or `os.PathLike`).
    #[staticmethod]
    fn from_path(path: &Bound<'_, PyAny>) -> PyResult<Self> {
        let path: std::path::PathBuf = path
            .extract()
            .map_err(|_| wrong_type("path", "a str or os.PathLike", path))?;
        SchedulerConfig::from_path(&path)
            .map(|inner| Config { inner })
            .map_err(raise::<ConfigError>)
    }

    /// Parses and validates TOML text.
    #[staticmethod]
    fn from_toml(text: &Bound<'_, PyAny>) -> PyResult<Self> {
        SchedulerConfig::from_toml_str(&string(text, "text")?)
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

    /// Whether the scheduler keeps an index of held requests by id (`id_index = true`):
    /// `lookup(id)` works and a submit whose id is already held is refused.
    #[getter]
    fn id_index(&self) -> bool {
        self.inner.id_index
    }

    /// How the queue orders requests: `"deadline"` (the default) or `"ladder"` (aging by
    /// `promote_after_ms`, overdue requests first).
    #[getter]
    fn order(&self) -> &'static str {
        match self.inner.order {
            QueueOrder::Deadline => "deadline",
            QueueOrder::Ladder => "ladder",
        }
    }

    /// Each class's rule for a waiting request that can no longer meet its deadline, by
    /// class index: `"keep"` (relegated: served after those that can), `"shed"` (ended
    /// with the outcome `"shed"`) or `"serve"` (relegated within its class only).
    /// Deadline order only.
    #[getter]
    fn on_late(&self) -> Vec<&'static str> {
        self.inner
            .classes
            .iter()
            .map(|c| match c.on_late {
                LateRule::Keep => "keep",
                LateRule::Shed => "shed",
                LateRule::Serve => "serve",
            })
            .collect()
    }

    /// The `[deadline]` table: `{"urgent_slack_ms", "max_decode_delay_ms",
    /// "relaxed_slack_ms", "relaxed_chunk_tokens", "overdue_share",
    /// "initial_iteration_ms"}` (a copy; see `docs/configuration.md`).
    #[getter]
    fn deadline<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        // Destructured whole, so that a field added to the table fails to build here.
        let DeadlineConfig {
            urgent_slack_ms,
            max_decode_delay_ms,
            relaxed_slack_ms,
            relaxed_chunk_tokens,
            overdue_share,
            initial_iteration_ms,
        } = self.inner.deadline;
        let out = PyDict::new(py);
        out.set_item("urgent_slack_ms", urgent_slack_ms)?;
        out.set_item("max_decode_delay_ms", max_decode_delay_ms)?;
        out.set_item("relaxed_slack_ms", relaxed_slack_ms)?;
        out.set_item("relaxed_chunk_tokens", relaxed_chunk_tokens)?;
        out.set_item("overdue_share", overdue_share)?;
        out.set_item("initial_iteration_ms", initial_iteration_ms)?;
        Ok(out)
    }

    /// The `[engine]` table: `{"block_size", "total_blocks", "max_model_len",
    /// "watermark"}` (a copy).
    #[getter]
    fn engine<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let e = &self.inner.engine;
        let out = PyDict::new(py);
        out.set_item("block_size", e.block_size)?;
        out.set_item("total_blocks", e.total_blocks)?;
        out.set_item("max_model_len", e.max_model_len)?;
        out.set_item("watermark", e.watermark)?;
        Ok(out)
    }

    /// A copy of this configuration with the `[engine]` limits given replaced (the others
    /// kept), validated: how an engine adapter states the limits it has (vLLM's block
    /// size, its KV cache's block count, its context length). Raises `ConfigError` naming
    /// the field if the result breaks a rule (`block_size` 1 to 4096, `total_blocks` and
    /// `max_model_len` at least 1, `watermark` in [0, 0.5)).
    #[pyo3(signature = (*, block_size = None, total_blocks = None, max_model_len = None, watermark = None))]
    fn with_engine(
        &self,
        block_size: Option<&Bound<'_, PyAny>>,
        total_blocks: Option<&Bound<'_, PyAny>>,
        max_model_len: Option<&Bound<'_, PyAny>>,
        watermark: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut inner = self.inner.clone();
        if let Some(v) = opt_int::<u32>(block_size, "block_size")? {
            inner.engine.block_size = v;
        }
        if let Some(v) = opt_int::<u32>(total_blocks, "total_blocks")? {
            inner.engine.total_blocks = v;
        }
        if let Some(v) = opt_int::<u32>(max_model_len, "max_model_len")? {
            inner.engine.max_model_len = v;
        }
        if let Some(w) = watermark {
            if w.is_instance_of::<pyo3::types::PyBool>() {
                return Err(wrong_type("watermark", "a float", w));
            }
            inner.engine.watermark = w
                .extract::<f64>()
                .map_err(|_| wrong_type("watermark", "a float", w))?;
        }
        inner.validate().map_err(raise::<ConfigError>)?;
        Ok(Config { inner })
    }

    /// The class index whose range holds vLLM's `priority`; raises `ClassError` if none.
    fn class_for_priority(&self, priority: &Bound<'_, PyAny>) -> PyResult<usize> {
        let (class, _) = vllm_class(
            &self.inner.class_set(),
            priority,
            "priority",
            OutOfRange::Error,
        )?;
        Ok(class.index())
    }

    fn __repr__(&self) -> String {
        format!("Config(classes={:?})", self.class_names())
    }
}

/// The configuration argument `name` (default: the default configuration).
pub(crate) fn config_arg(v: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<SchedulerConfig> {
    match v {
        None => Ok(SchedulerConfig::default()),
        Some(v) => v
            .cast::<Config>()
            .map(|c| c.get().inner.clone())
            .map_err(|_| wrong_type(name, "a triage.Config", v)),
    }
}

/// A clock that moves only when told to, shared with the scheduler it is given to: tests
/// and simulators inject time with it. Times are nanoseconds from an arbitrary epoch.
#[pyclass(module = "triage._triage", frozen)]
#[derive(Clone)]
pub(crate) struct ManualClock {
    inner: triage::ManualClock,
}

#[pymethods]
impl ManualClock {
    /// A clock at `start_ns` (default 0).
    #[new]
    #[pyo3(signature = (start_ns = None))]
    fn new(start_ns: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let start = start_ns
            .map(|v| time_ns(v, "start_ns"))
            .transpose()?
            .unwrap_or(Timestamp::ZERO);
        Ok(ManualClock {
            inner: triage::ManualClock::new(start),
        })
    }

    /// The current time in ns.
    fn now_ns(&self) -> u64 {
        self.inner.now().0
    }

    /// Sets the time to `t` ns; raises `ArgumentError` if `t` is earlier than the current
    /// time (the clock is then unchanged: it never goes backwards).
    fn set_ns(&self, t: &Bound<'_, PyAny>) -> PyResult<()> {
        let to = time_ns(t, "t")?;
        self.inner
            .try_set(to)
            .map_err(|e| ARGUMENT_ERROR.err(t.py(), format!("t: {e}")))
    }

    /// Moves the time forward by `ms` milliseconds (saturating at the largest time).
    fn advance_ms(&self, ms: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner
            .advance(Duration::from_millis(int::<u64>(ms, "ms")?));
        Ok(())
    }

    /// Moves the time forward by `ns` nanoseconds (saturating at the largest time).
    fn advance_ns(&self, ns: &Bound<'_, PyAny>) -> PyResult<()> {
        self.inner
            .advance(Duration::from_nanos(int::<u64>(ns, "ns")?));
        Ok(())
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

/// A request's name while the scheduler holds it (Python `triage.RequestHandle`): returned
/// by `submit` and `lookup`, and carried by `Admitted.handle` and `Scheduled.handle`;
/// `cancel`, `reprioritize`, `on_progress`, `on_finished` and `first_token_at` take it.
/// Immutable and hashable (a dict key or set member); equal handles name the same slot and
/// generation. It goes stale when its request ends: calls with it then raise
/// `ControlError` / `ProgressError`. It means something only to the scheduler that issued
/// it. Not constructible from Python, and not picklable (it names a slot in this process).
#[pyclass(module = "triage._triage", name = "RequestHandle", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Handle {
    inner: triage::RequestHandle,
}

impl From<triage::RequestHandle> for Handle {
    fn from(inner: triage::RequestHandle) -> Self {
        Handle { inner }
    }
}

#[pymethods]
impl Handle {
    /// The slot index (small and dense: slots are reused as requests end).
    #[getter]
    fn index(&self) -> u32 {
        self.inner.index()
    }

    /// The slot's generation when the handle was issued.
    #[getter]
    fn generation(&self) -> u32 {
        self.inner.generation()
    }

    fn __repr__(&self) -> String {
        format!(
            "RequestHandle(index={}, generation={})",
            self.inner.index(),
            self.inner.generation()
        )
    }

    /// `"request handle 3.0"`, as the library's messages name it.
    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    /// Immutable: a copy is the handle itself.
    fn __copy__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __deepcopy__<'py>(slf: PyRef<'py, Self>, _memo: &Bound<'py, PyAny>) -> PyRef<'py, Self> {
        slf
    }
}

/// Request handle argument `name`: a `RequestHandle` (from `submit`, `lookup` or a
/// decision). An int is most likely a request id, and the message says how to get a handle.
fn handle_arg(v: &Bound<'_, PyAny>, name: &str) -> PyResult<triage::RequestHandle> {
    v.cast::<Handle>().map(|h| h.get().inner).map_err(|_| {
        ARGUMENT_TYPE_ERROR.err(
            v.py(),
            format!(
                "{name} must be a triage.RequestHandle (returned by submit; lookup(id) finds \
                 one with id_index = true), not {}",
                type_name(v)
            ),
        )
    })
}

/// The API threads' side: submit, cancel, reprioritize, lookup. Safe to share between
/// Python threads and usable while the engine thread is inside `Scheduler.step`.
#[pyclass(module = "triage._triage", frozen)]
pub(crate) struct Submitter {
    inner: triage::Submitter,
}

#[pymethods]
impl Submitter {
    /// Submits a request; returns its `RequestHandle`. Give its class as `cls` (name or
    /// index) or as vLLM's integer `priority`; `ttft_ms` is the request's own
    /// time-to-first-token target in milliseconds (1 to `MAX_TTFT_MS`), instead of its
    /// class's (deadline order: its deadline is its arrival plus this). Raises
    /// `SubmitError` if refused.
    #[pyo3(signature = (id, prompt_tokens, max_new_tokens, *, cls = None, priority = None, tenant = None, ttft_ms = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        prompt_tokens: &Bound<'_, PyAny>,
        max_new_tokens: &Bound<'_, PyAny>,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
        ttft_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        let id: u64 = int(id, "id")?;
        let prompt_tokens: u32 = int(prompt_tokens, "prompt_tokens")?;
        let max_new_tokens: u32 = int(max_new_tokens, "max_new_tokens")?;
        let class = resolve_class(py, &self.inner.classes(), cls, priority)?;
        let mut spec = RequestSpec::new(id, class, prompt_tokens, max_new_tokens);
        if let Some(t) = opt_int::<u64>(tenant, "tenant")? {
            spec = spec.with_tenant(TenantId(t));
        }
        if let Some(ms) = ttft_ms {
            spec = spec.with_ttft_ms(int_in::<u32>(ms, "ttft_ms", TTFT_MS_RANGE)?);
        }
        let inner = &self.inner;
        py.detach(|| inner.submit(spec))
            .map(Handle::from)
            .map_err(raise::<SubmitError>)
    }

    /// Cancels the request `handle` names; returns `"waiting"` or `"running"` (where it
    /// was). Raises `ControlError` if the handle is stale (the request ended) or the
    /// request is already cancelled.
    fn cancel(&self, handle: &Bound<'_, PyAny>) -> PyResult<&'static str> {
        match self
            .inner
            .cancel(handle_arg(handle, "handle")?)
            .map_err(raise::<ControlError>)?
        {
            CancelOutcome::WasWaiting => Ok("waiting"),
            CancelOutcome::WasRunning => Ok("running"),
        }
    }

    /// Moves the request `handle` names to another class (name or index, or vLLM
    /// `priority`); applied at the next step, keeping its original arrival. Raises
    /// `ControlError` if the handle is stale.
    #[pyo3(signature = (handle, cls = None, *, priority = None))]
    fn reprioritize(
        &self,
        py: Python<'_>,
        handle: &Bound<'_, PyAny>,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let handle = handle_arg(handle, "handle")?;
        let class = resolve_class(py, &self.inner.classes(), cls, priority)?;
        self.inner
            .reprioritize(handle, class)
            .map_err(raise::<ControlError>)
    }

    /// The handle of the held request (submitted and not ended) with engine id `id`. Needs
    /// `id_index = true` in the configuration; raises `ControlError` without it, or if no
    /// held request has that id.
    fn lookup(&self, id: &Bound<'_, PyAny>) -> PyResult<Handle> {
        self.inner
            .lookup(RequestId(int(id, "id")?))
            .map(Handle::from)
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
pub(crate) struct Admitted {
    /// The request id.
    id: u64,
    /// Its handle, for `on_progress` / `on_finished` (a resumed request keeps the handle
    /// it had).
    handle: Handle,
    /// When it was submitted, in ns (the scheduler's clock).
    arrival_ns: u64,
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
    /// Its max_new_tokens, as submitted (a resumed request counts what it generated
    /// before its preemption toward it).
    max_new_tokens: u32,
    /// How long it waited since arrival, in ns.
    waited_ns: u64,
    /// It waited past max_wait.
    overdue: bool,
    /// It resumes after a preemption.
    resumed: bool,
    /// It was relegated (deadline order): it could no longer meet its deadline and starts
    /// because nothing that can meet one is waiting.
    relegated: bool,
}

/// Work for a request already running: its next prefill chunk, or one decode token.
#[pyclass(module = "triage._triage", frozen, get_all)]
#[derive(Clone)]
pub(crate) struct Scheduled {
    /// The request id.
    id: u64,
    /// Its handle.
    handle: Handle,
    /// Tokens to process in this iteration.
    tokens: u32,
    /// A prefill chunk (its prefill target is not computed yet): report `computed=tokens`,
    /// and one output token only if the chunk completes the prefill. Else one decode
    /// token: `computed=1, new_output=1`.
    prefill: bool,
}

#[pymethods]
impl Scheduled {
    fn __repr__(&self) -> String {
        format!(
            "Scheduled(id={}, handle={}, tokens={}, prefill={})",
            self.id,
            self.handle.__repr__(),
            self.tokens,
            if self.prefill { "True" } else { "False" }
        )
    }
}

/// A running request preempted in this iteration (free its KV; it is queued again).
#[pyclass(module = "triage._triage", frozen, get_all)]
#[derive(Clone)]
pub(crate) struct Preempted {
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
pub(crate) struct Decision {
    /// The step's time in ns.
    now_ns: u64,
    /// Requests to start, in the order chosen.
    admitted: Vec<Admitted>,
    /// Running requests' work this iteration.
    scheduled: Vec<Scheduled>,
    /// Running requests to preempt.
    preempted: Vec<Preempted>,
    /// Running requests the client cancelled: stop them.
    aborted: Vec<u64>,
    /// Waiting requests the client cancelled.
    cancelled: Vec<u64>,
    /// `(id, class name, waited_ns)` of waiting requests that timed out.
    timed_out: Vec<(u64, String, u64)>,
    /// `(id, class name, waited_ns, late_by_ns)` of waiting requests shed by deadline order
    /// (their class's `on_late = "shed"`): they could no longer meet their deadline.
    /// `late_by_ns`: how far past it they were, or would have been at their estimated
    /// first token or start (0 if that is still ahead but out of reach).
    shed: Vec<(u64, String, u64, u64)>,
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
            "Decision(now_ns={}, admitted={:?}, scheduled={}, preempted={:?}, aborted={:?}, cancelled={:?}, timed_out={}, shed={})",
            self.now_ns,
            self.admitted.iter().map(|a| a.id).collect::<Vec<_>>(),
            self.scheduled.len(),
            self.preempted.iter().map(|p| p.id).collect::<Vec<_>>(),
            self.aborted,
            self.cancelled,
            self.timed_out.len(),
            self.shed.len()
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
                handle: a.handle.into(),
                arrival_ns: a.arrival.0,
                cls: name(a.class),
                effective_cls: name(a.effective_class),
                prefill_tokens: a.prefill_tokens,
                prefill_target: a.prefill_target,
                blocks: a.blocks,
                max_new_tokens: a.max_new_tokens,
                waited_ns: ns(a.waited),
                overdue: a.overdue,
                resumed: a.resumed,
                relegated: a.relegated,
            })
            .collect(),
        scheduled: d
            .scheduled
            .iter()
            .map(|s| Scheduled {
                id: s.id.0,
                handle: s.handle.into(),
                tokens: s.tokens,
                prefill: s.prefill,
            })
            .collect(),
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
                RejectReason::TenantLimit { .. } | RejectReason::DeadlineMissed { .. } => None,
            })
            .collect(),
        shed: d
            .rejected
            .iter()
            .filter_map(|r| match r.reason {
                RejectReason::DeadlineMissed { waited, late_by } => {
                    Some((r.id.0, name(r.class), ns(waited), ns(late_by)))
                }
                RejectReason::TimedOut { .. } | RejectReason::TenantLimit { .. } => None,
            })
            .collect(),
        tenant_limited: d
            .rejected
            .iter()
            .filter_map(|r| match r.reason {
                RejectReason::TenantLimit { tenant, .. } => {
                    Some((r.id.0, name(r.class), tenant.map(|t| t.0)))
                }
                RejectReason::TimedOut { .. } | RejectReason::DeadlineMissed { .. } => None,
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
pub(crate) struct Scheduler {
    inner: triage::Scheduler,
    submitter: triage::Submitter,
    clock: AnyClock,
    step_buf: triage::Decision,
}

impl Scheduler {
    /// `now_ns` if given, else the clock's time.
    fn now(&self, now_ns: Option<&Bound<'_, PyAny>>) -> PyResult<Timestamp> {
        match now_ns {
            Some(v) => time_ns(v, "now_ns"),
            None => Ok(self.clock.now()),
        }
    }
}

#[pymethods]
impl Scheduler {
    /// A scheduler with `config` (default: `Config()`). With `clock` (a `ManualClock`),
    /// arrivals and every call without an explicit `now_ns` read that clock; without it,
    /// the monotonic wall clock.
    #[new]
    #[pyo3(signature = (config = None, clock = None))]
    fn new(config: Option<&Bound<'_, PyAny>>, clock: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let config = config_arg(config, "config")?;
        let clock = match clock {
            Some(c) => AnyClock::Manual(
                c.cast::<ManualClock>()
                    .map_err(|_| wrong_type("clock", "a triage.ManualClock", c))?
                    .get()
                    .inner
                    .clone(),
            ),
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

    /// The `Submitter` for API threads (submit, cancel, reprioritize, lookup).
    fn submitter(&self) -> Submitter {
        Submitter {
            inner: self.submitter.clone(),
        }
    }

    /// Same as `Submitter.submit`, from the engine thread.
    #[pyo3(signature = (id, prompt_tokens, max_new_tokens, *, cls = None, priority = None, tenant = None, ttft_ms = None))]
    #[allow(clippy::too_many_arguments)]
    fn submit(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        prompt_tokens: &Bound<'_, PyAny>,
        max_new_tokens: &Bound<'_, PyAny>,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
        tenant: Option<&Bound<'_, PyAny>>,
        ttft_ms: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Handle> {
        self.submitter().submit(
            py,
            id,
            prompt_tokens,
            max_new_tokens,
            cls,
            priority,
            tenant,
            ttft_ms,
        )
    }

    /// Same as `Submitter.cancel`.
    fn cancel(&self, handle: &Bound<'_, PyAny>) -> PyResult<&'static str> {
        self.submitter().cancel(handle)
    }

    /// Same as `Submitter.reprioritize`.
    #[pyo3(signature = (handle, cls = None, *, priority = None))]
    fn reprioritize(
        &self,
        py: Python<'_>,
        handle: &Bound<'_, PyAny>,
        cls: Option<&Bound<'_, PyAny>>,
        priority: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.submitter().reprioritize(py, handle, cls, priority)
    }

    /// Same as `Submitter.lookup`.
    fn lookup(&self, id: &Bound<'_, PyAny>) -> PyResult<Handle> {
        self.submitter().lookup(id)
    }

    /// Decides the next iteration under the engine's budget, at `now_ns` (default: the
    /// clock's now). Releases the GIL while it runs. Raises `BudgetError` if refused.
    #[pyo3(signature = (max_num_seqs, max_batched_tokens, free_blocks, now_ns = None))]
    fn step(
        &mut self,
        py: Python<'_>,
        max_num_seqs: &Bound<'_, PyAny>,
        max_batched_tokens: &Bound<'_, PyAny>,
        free_blocks: &Bound<'_, PyAny>,
        now_ns: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Decision> {
        let budget = Budget {
            max_num_seqs: int(max_num_seqs, "max_num_seqs")?,
            max_batched_tokens: int(max_batched_tokens, "max_batched_tokens")?,
            free_blocks: int(free_blocks, "free_blocks")?,
        };
        let now = self.now(now_ns)?;
        let (inner, buf) = (&mut self.inner, &mut self.step_buf);
        py.detach(|| inner.step_into(now, &budget, buf))
            .map_err(raise::<BudgetError>)?;
        Ok(decision_to_py(&self.step_buf, self.inner.classes()))
    }

    /// Reports one iteration's work on the running request `handle` names: `computed`
    /// tokens ran through the model and `new_output` tokens were sampled. Raises
    /// `ProgressError` if the handle names no running request, or on an overrun.
    #[pyo3(signature = (handle, computed, new_output, now_ns = None))]
    fn on_progress(
        &mut self,
        handle: &Bound<'_, PyAny>,
        computed: &Bound<'_, PyAny>,
        new_output: &Bound<'_, PyAny>,
        now_ns: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let handle = handle_arg(handle, "handle")?;
        let computed = int(computed, "computed")?;
        let new_output = int(new_output, "new_output")?;
        let now = self.now(now_ns)?;
        self.inner
            .on_progress(handle, now, computed, new_output)
            .map_err(raise::<ProgressError>)
    }

    /// Reports that the running request `handle` names finished (`reason`: `"stop"` (the
    /// default), `"length"` or `"error"`); returns its outcome, `"finished"` or
    /// `"cancelled"`. The handle is stale afterwards.
    #[pyo3(signature = (handle, reason = None, now_ns = None))]
    fn on_finished(
        &mut self,
        py: Python<'_>,
        handle: &Bound<'_, PyAny>,
        reason: Option<&Bound<'_, PyAny>>,
        now_ns: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let handle = handle_arg(handle, "handle")?;
        let reason = match reason.map(|r| string(r, "reason")).transpose()?.as_deref() {
            None | Some("stop") => FinishReason::Stop,
            Some("length") => FinishReason::Length,
            Some("error") => FinishReason::Error,
            Some(other) => {
                return Err(ARGUMENT_ERROR.err(
                    py,
                    format!("reason {other:?}: expected \"stop\", \"length\" or \"error\""),
                ))
            }
        };
        let now = self.now(now_ns)?;
        let outcome = self
            .inner
            .on_finished(handle, now, reason)
            .map_err(raise::<ProgressError>)?;
        Ok(outcome_name(outcome).to_string())
    }

    /// When the request `handle` names produced its first token, in ns (the `now` of the
    /// `on_progress` that reported it); `None` before that, or if the handle is stale.
    fn first_token_at(&self, handle: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        Ok(self
            .inner
            .first_token_at(handle_arg(handle, "handle")?)
            .map(|t| t.0))
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

    /// Requests waiting in class `cls` (a name or an index): its effective class after
    /// aging, relegated requests of the class included (see `relegated_in`).
    fn waiting_in(&self, cls: &Bound<'_, PyAny>) -> PyResult<usize> {
        let class = class_arg(self.inner.classes(), cls, "cls")?;
        Ok(self.inner.waiting_in(class))
    }

    /// Relegated requests waiting now whose base class is `cls` (a name or an index):
    /// deadline order found they could no longer meet their deadline, and they wait after
    /// every request that can.
    fn relegated_in(&self, cls: &Bound<'_, PyAny>) -> PyResult<usize> {
        let class = class_arg(self.inner.classes(), cls, "cls")?;
        Ok(self.inner.relegated_in(class))
    }

    /// The engine's mean iteration time in ns as the scheduler has measured it from the
    /// times of consecutive steps that gave it work (`deadline.initial_iteration_ms` until
    /// then). Deadline order estimates first-token and run times from it.
    fn iteration_estimate_ns(&self) -> u64 {
        ns(self.inner.iteration_estimate())
    }

    /// Tenants with a request held (waiting or running) while fairness is on; 0 with it
    /// off (tenants are then not tracked).
    #[getter]
    fn tenants_held(&self) -> usize {
        self.inner.tenants_held()
    }

    /// The service counted for `tenant` (an int, or `None` for the requests submitted
    /// without one) in class `cls` (name or index): weighted tokens divided by the
    /// tenant's weight, the counter that orders the class's tenants. `None` while fairness
    /// is off or the tenant holds no request.
    fn tenant_service(
        &self,
        tenant: Option<&Bound<'_, PyAny>>,
        cls: &Bound<'_, PyAny>,
    ) -> PyResult<Option<f64>> {
        let tenant = opt_int::<u64>(tenant, "tenant")?.map(TenantId);
        let class = class_arg(self.inner.classes(), cls, "cls")?;
        Ok(self.inner.tenant_service(tenant, class))
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
            ("shed", c.shed),
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
                ("shed", k.shed),
                ("relegated", k.relegated),
                ("overdue", k.overdue),
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
    #[pyo3(signature = (window = None, now_ns = None))]
    fn slo_report<'py>(
        &mut self,
        py: Python<'py>,
        window: Option<&Bound<'py, PyAny>>,
        now_ns: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let window = match window {
            Some(w) => string(w, "window")?,
            None => "cumulative".to_string(),
        };
        let w = window
            .parse::<SloWindow>()
            .map_err(|e| ARGUMENT_ERROR.err(py, format!("window: {e}")))?;
        let now = self.now(now_ns)?;
        let out = PyDict::new(py);
        let classes: Vec<(Class, String)> = self
            .inner
            .classes()
            .iter()
            .map(|c| (c, self.inner.classes().name(c).to_string()))
            .collect();
        for (class, name) in classes {
            let Some(cc) = self.inner.slo().compliance(class, w, now) else {
                let configured: Vec<String> = self
                    .inner
                    .config()
                    .slo
                    .windows()
                    .iter()
                    .map(|w| format!("\"{w}\""))
                    .collect();
                return Err(ARGUMENT_ERROR.err(
                    py,
                    format!(
                        "window {window:?} is not configured (slo.windows_s); configured: {}",
                        configured.join(", ")
                    ),
                ));
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
    fn reload(&self, config: &Bound<'_, PyAny>) -> PyResult<()> {
        let config = config_arg(Some(config), "config")?;
        self.inner
            .config_handle()
            .propose(config)
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
        Outcome::Shed => "shed",
    }
}
