//! The vLLM request queue: `TriageRequestQueue`, vLLM's `RequestQueue` interface over
//! triage's `WaitingQueue` (classes, aging, max wait), with vLLM's orderings of requests
//! that tie; or, in the vLLM-exact mode (`aging=False`), over [`ExactQueue`]: vLLM's own
//! order for any integer priorities.

use crate::convert::{
    boolean, out_of_range, saturating_i64, short_repr, string, type_name, vllm_class, wrong_type,
    OutOfRange, ARGUMENT_ERROR, ARGUMENT_TYPE_ERROR,
};
use crate::errors::{raise, ClassError, ConfigError, ALREADY_QUEUED, NOT_QUEUED, QUEUE_EMPTY};
use crate::scheduler::config_arg;
use crate::vllm_order::{ExactQueue, PyItem};
use pyo3::exceptions::PyOverflowError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyString};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use triage::{Class, ClassSet, Timestamp, WaitingError, WaitingOptions, WaitingQueue};

/// What the queue says when an `arrival_time` is outside a `Timestamp`'s range.
const ARRIVAL_RANGE: &str =
    "finite seconds from 0 to 18446744073.709551615 (a triage Timestamp: u64::MAX ns)";

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
pub(crate) struct VllmQueue {
    queue: WaitingQueue<PyItem>,
    /// The vLLM-exact mode's queue (`policy="priority"`, `aging=False`), which then holds
    /// every request instead of `queue`.
    exact: Option<ExactQueue>,
    policy: Policy,
    aging: bool,
    clock: Option<Py<PyAny>>,
    out_of_range: OutOfRange,
    classes: ClassSet,
    /// FCFS: next append and prepend keys.
    back: u64,
    front: u64,
    /// Adds and prepends whose priority was in no class's range, mapped to the nearest
    /// (`out_of_range="clamp"`).
    clamped_priorities: u64,
    /// Adds and prepends whose `arrival_time` a `Timestamp` cannot hold, queued at the
    /// queue's current time instead (`out_of_range="clamp"`).
    clamped_arrivals: u64,
    /// Adds and prepends whose client-named class (`vllm_xargs`) was not a class, queued
    /// by their priority instead (`out_of_range="clamp"`).
    clamped_classes: u64,
}

/// The key of `vllm_xargs` (vLLM's `SamplingParams.extra_args`) by which a client names
/// its request's class.
pub(crate) const CLIENT_CLASS: &str = "triage_class";

/// Logs `message` on the `triage.vllm` logger at warning level when `count` (the clamps so
/// far, this one included) is a power of two: the first clamp is always seen, and a client
/// that sends bad values on every request does not flood the log. Called after the request
/// is queued, so a failure to log must not raise (the caller would think the add failed):
/// it is reported as unraisable (`sys.unraisablehook`), as Python does for errors it
/// cannot raise.
fn warn_clamped(py: Python<'_>, count: u64, message: String) {
    if !count.is_power_of_two() {
        return;
    }
    let log = || -> PyResult<()> {
        py.import("logging")?
            .call_method1("getLogger", ("triage.vllm",))?
            .call_method1(
                "warning",
                (format!(
                    "{message} ({count} so far; logged at the 1st, 2nd, 4th, 8th, ... time)"
                ),),
            )?;
        Ok(())
    };
    if let Err(e) = log() {
        e.write_unraisable(py, None);
    }
}

/// `request.<name>`; a missing attribute raises `ArgumentTypeError` naming `request`.
fn request_attr<'py>(
    py: Python<'py>,
    request: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    request.getattr(name).map_err(|e| {
        if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(py) {
            ARGUMENT_TYPE_ERROR.err(
                py,
                format!(
                    "request must be a vLLM Request (with arrival_time, priority and request_id), not {}: {}",
                    type_name(request),
                    e.value(py)
                ),
            )
        } else {
            e
        }
    })
}

/// `repr(request.request_id)`, for messages.
fn request_label(py: Python<'_>, request: &Bound<'_, PyAny>) -> String {
    request
        .getattr(intern!(py, "request_id"))
        .map_or_else(|_| "?".to_string(), |r| short_repr(&r))
}

impl VllmQueue {
    /// The queue's clock in seconds (the injected `clock()`, else the wall clock) and as a
    /// timestamp. Read for aging, and for clamping an arrival whatever the aging.
    fn clock_now(&self, py: Python<'_>) -> PyResult<(f64, Timestamp)> {
        let (secs, given) = match &self.clock {
            Some(c) => {
                let v = c.bind(py).call0()?;
                let secs = v
                    .extract::<f64>()
                    .map_err(|_| wrong_type("clock()", "a float (seconds)", &v))?;
                (secs, Some(v))
            }
            None => (
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
                None,
            ),
        };
        // The same conversion as arrivals', so that their order agrees with the floats'.
        match Timestamp::checked_from_secs_f64(secs) {
            Some(t) => Ok((secs, t)),
            None => Err(ARGUMENT_ERROR.err(
                py,
                format!(
                    "clock() returned {}: expected {ARRIVAL_RANGE}",
                    given.map_or_else(|| secs.to_string(), |v| short_repr(&v))
                ),
            )),
        }
    }

    /// The time aging is judged at: the clock's, or zero with aging off.
    fn now(&self, py: Python<'_>) -> PyResult<Timestamp> {
        if !self.aging {
            return Ok(Timestamp::ZERO);
        }
        Ok(self.clock_now(py)?.1)
    }

    /// The class a client named for `request`: `request.sampling_params.extra_args
    /// ["triage_class"]`, which vLLM's OpenAI server fills from the request body's
    /// `vllm_xargs`. `None` when it names none. A name that is not a configured class is
    /// refused with `ClassError` under `out_of_range="error"`; under `"clamp"` it is
    /// counted, logged, and the priority decides.
    fn class_from_client(
        &mut self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Class>> {
        let Ok(params) = request.getattr(intern!(py, "sampling_params")) else {
            return Ok(None);
        };
        let Ok(extra) = params.getattr(intern!(py, "extra_args")) else {
            return Ok(None);
        };
        if extra.is_none() {
            return Ok(None);
        }
        // A missing key (or extra_args that is not a mapping) names no class.
        let Ok(v) = extra.get_item(intern!(py, CLIENT_CLASS)) else {
            return Ok(None);
        };
        let found = v
            .extract::<String>()
            .ok()
            .and_then(|name| self.classes.parse_name(&name).ok());
        match found {
            Some(class) => Ok(Some(class)),
            None if self.out_of_range == OutOfRange::Error => Err(ClassError::new_err(format!(
                "request {}: vllm_xargs {CLIENT_CLASS} {} is not a class; classes: {}",
                request_label(py, request),
                short_repr(&v),
                self.classes.names().join(", ")
            ))),
            None => {
                self.clamped_classes += 1;
                warn_clamped(
                    py,
                    self.clamped_classes,
                    format!(
                        "triage: request {}: vllm_xargs {CLIENT_CLASS} {} is not a class (classes: {}); its priority decides",
                        request_label(py, request),
                        short_repr(&v),
                        self.classes.names().join(", ")
                    ),
                );
                Ok(None)
            }
        }
    }

    fn push(&mut self, py: Python<'_>, request: &Bound<'_, PyAny>, front: bool) -> PyResult<()> {
        let id = request.as_ptr() as u64;
        let item = |arrival: f64| PyItem {
            arrival,
            obj: request.clone().unbind(),
        };
        // What to count and log once the request is queued.
        let mut clamped_priority = None;
        let mut clamped_arrival = None;
        let res = match self.policy {
            Policy::Priority => {
                let attr = |name| request_attr(py, request, name);
                let arrival_v = attr(intern!(py, "arrival_time"))?;
                let arrival_secs = match arrival_v.extract::<f64>() {
                    Ok(secs) => Some(secs),
                    // An int too large for a float: out of range.
                    Err(e) if e.is_instance_of::<PyOverflowError>(py) => None,
                    Err(_) => {
                        return Err(wrong_type(
                            "request.arrival_time",
                            "a float (seconds)",
                            &arrival_v,
                        ))
                    }
                };
                let priority_v = attr(intern!(py, "priority"))?;
                // The exact mode orders by the priority itself: no class, nothing clamped.
                let class = if self.exact.is_some() {
                    Class::HIGH
                } else if let Some(class) = self.class_from_client(py, request)? {
                    class
                } else {
                    let (class, clamped) = vllm_class(
                        &self.classes,
                        &priority_v,
                        "request.priority",
                        self.out_of_range,
                    )?;
                    if clamped {
                        clamped_priority = Some((short_repr(&priority_v), class));
                    }
                    class
                };
                let (arrival_secs, arrival) = match arrival_secs
                    .and_then(|s| Timestamp::checked_from_secs_f64(s).map(|t| (s, t)))
                {
                    Some(ok) => ok,
                    None if self.out_of_range == OutOfRange::Clamp => {
                        let (now_secs, now) = self.clock_now(py)?;
                        clamped_arrival = Some((short_repr(&arrival_v), now_secs));
                        (now_secs, now)
                    }
                    None => {
                        return Err(out_of_range(
                            "request.arrival_time",
                            ARRIVAL_RANGE,
                            &arrival_v,
                        ))
                    }
                };
                if let Some(exact) = &mut self.exact {
                    let priority = saturating_i64(&priority_v, "request.priority")?;
                    if exact.insert(id, priority, arrival_secs, request) {
                        Ok(())
                    } else {
                        Err(WaitingError::Duplicate { id })
                    }
                } else if front {
                    let now = self.now(py)?;
                    self.queue
                        .requeue(id, item(arrival_secs), class, arrival, now)
                } else {
                    let now = self.now(py)?;
                    self.queue
                        .insert(id, item(arrival_secs), class, arrival, now)
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
            WaitingError::Duplicate { .. } => ALREADY_QUEUED.err(
                py,
                format!(
                    "request {} is already in this queue",
                    request_label(py, request)
                ),
            ),
            WaitingError::UnknownClass { .. } => raise::<ClassError>(e),
            WaitingError::Options(_) => raise::<ConfigError>(e),
        })?;
        if let Some((priority, class)) = clamped_priority {
            self.clamped_priorities += 1;
            warn_clamped(
                py,
                self.clamped_priorities,
                format!(
                    "triage: request {}: priority {priority} is in no class's range; queued as {} (the nearest range)",
                    request_label(py, request),
                    self.classes.name(class)
                ),
            );
        }
        if let Some((arrival, now_secs)) = clamped_arrival {
            self.clamped_arrivals += 1;
            warn_clamped(
                py,
                self.clamped_arrivals,
                format!(
                    "triage: request {}: arrival_time {arrival} is not {ARRIVAL_RANGE}; queued at the queue's current time, {now_secs}",
                    request_label(py, request)
                ),
            );
        }
        Ok(())
    }
}

/// The requests of the iterable argument `requests`.
fn collect<'py>(requests: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    requests
        .try_iter()
        .map_err(|_| wrong_type("requests", "an iterable of requests", requests))?
        .collect()
}

/// String argument `name`, one of `allowed` (each with its value); `default` if not given.
fn choice<T: Copy>(
    v: Option<&Bound<'_, PyAny>>,
    name: &str,
    default: T,
    allowed: &[(&str, T)],
) -> PyResult<T> {
    let Some(v) = v else { return Ok(default) };
    let s = string(v, name)?;
    allowed
        .iter()
        .find(|(k, _)| *k == s)
        .map(|&(_, t)| t)
        .ok_or_else(|| {
            let names: Vec<String> = allowed.iter().map(|(k, _)| format!("{k:?}")).collect();
            ARGUMENT_ERROR.err(
                v.py(),
                format!("{name} {s:?}: expected {}", names.join(" or ")),
            )
        })
}

#[pymethods]
impl VllmQueue {
    #[new]
    #[pyo3(signature = (config = None, *, policy = None, aging = None, clock = None, out_of_range = None))]
    fn new(
        config: Option<&Bound<'_, PyAny>>,
        policy: Option<&Bound<'_, PyAny>>,
        aging: Option<&Bound<'_, PyAny>>,
        clock: Option<&Bound<'_, PyAny>>,
        out_of_range: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let config = config_arg(config, "config")?;
        let policy = choice(
            policy,
            "policy",
            Policy::Priority,
            &[("priority", Policy::Priority), ("fcfs", Policy::Fcfs)],
        )?;
        let aging = aging
            .map(|a| boolean(a, "aging"))
            .transpose()?
            .unwrap_or(true);
        let clock = match clock {
            Some(c) if !c.is_callable() => {
                return Err(wrong_type("clock", "a callable returning seconds", c))
            }
            c => c.map(|c| c.clone().unbind()),
        };
        let out_of_range = choice(
            out_of_range,
            "out_of_range",
            OutOfRange::Clamp,
            &[("clamp", OutOfRange::Clamp), ("error", OutOfRange::Error)],
        )?;
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
            exact: (policy == Policy::Priority && !aging).then(ExactQueue::default),
            policy,
            aging: aging && policy == Policy::Priority,
            clock,
            out_of_range,
            classes: config.class_set(),
            back: FCFS_ORIGIN,
            front: FCFS_ORIGIN,
            clamped_priorities: 0,
            clamped_arrivals: 0,
            clamped_classes: 0,
        })
    }

    /// Adds a request at its place (priority: by class and arrival; fcfs: at the back).
    fn add_request(&mut self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        self.push(py, request, false)
    }

    /// Takes the next request; raises `QueueEmpty` (an `IndexError`) if the queue is empty.
    fn pop_request(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let popped = match &mut self.exact {
            Some(exact) => exact.pop(),
            None => {
                let now = self.now(py)?;
                self.queue.pop(now).map(|(_, item)| item.obj)
            }
        };
        popped.ok_or_else(|| QUEUE_EMPTY.err(py, "pop_request: the queue is empty"))
    }

    /// The next request, left in place; raises `QueueEmpty` (an `IndexError`) if the queue
    /// is empty.
    fn peek_request(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let peeked = match &self.exact {
            Some(exact) => exact.peek().map(|o| o.clone_ref(py)),
            None => {
                let now = self.now(py)?;
                self.queue.peek(now).map(|(_, item)| item.obj.clone_ref(py))
            }
        };
        peeked.ok_or_else(|| QUEUE_EMPTY.err(py, "peek_request: the queue is empty"))
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

    /// Removes a request; raises `NotQueued` (a `ValueError`) if it is not in the queue.
    fn remove_request(&mut self, py: Python<'_>, request: &Bound<'_, PyAny>) -> PyResult<()> {
        // The caller holds `request`: dropping our reference to it runs no Python code.
        let removed = match &mut self.exact {
            Some(exact) => exact.remove(request.as_ptr() as u64).is_some(),
            None => self.queue.remove(request.as_ptr() as u64).is_some(),
        };
        match removed {
            true => Ok(()),
            false => Err(NOT_QUEUED.err(
                py,
                format!(
                    "remove_request: request {} is not in the queue",
                    request_label(py, request)
                ),
            )),
        }
    }

    /// Removes every given request that is in the queue; others are ignored.
    fn remove_requests(slf: &Bound<'_, Self>, requests: &Bound<'_, PyAny>) -> PyResult<()> {
        // Identities first (iterating may borrow this queue, if it is the argument). A
        // queued request is alive, so no other object seen here can share its id.
        let ids = requests
            .try_iter()
            .map_err(|_| wrong_type("requests", "an iterable of requests", requests))?
            .map(|r| r.map(|r| r.as_ptr() as u64))
            .collect::<PyResult<Vec<u64>>>()?;
        let mut me = slf.borrow_mut();
        // Dropped once the queue is no longer borrowed: dropping may run Python code.
        let removed: Vec<Py<PyAny>> = match &mut me.exact {
            Some(exact) => ids.into_iter().filter_map(|id| exact.remove(id)).collect(),
            None => me
                .queue
                .remove_many(ids)
                .into_iter()
                .map(|(_, item)| item.obj)
                .collect(),
        };
        drop(me);
        drop(removed);
        Ok(())
    }

    fn __len__(&self) -> usize {
        match &self.exact {
            Some(exact) => exact.len(),
            None => self.queue.len(),
        }
    }

    fn __bool__(&self) -> bool {
        self.__len__() > 0
    }

    /// The request at `index` of the order `pop_request` would take them in now (negative
    /// from the end), as `deque` and `list` index: O(n), a snapshot's element. Raises
    /// `IndexError` past either end.
    fn __getitem__(&mut self, py: Python<'_>, index: isize) -> PyResult<Py<PyAny>> {
        let n = self.__len__();
        let i = if index < 0 { index + n as isize } else { index };
        if i < 0 || i >= n as isize {
            return Err(pyo3::exceptions::PyIndexError::new_err(format!(
                "TriageRequestQueue index {index} out of range ({n} queued)"
            )));
        }
        let i = i as usize;
        match &self.exact {
            Some(exact) => Ok(exact.iter().nth(i).expect("i < len").clone_ref(py)),
            None => {
                let now = self.now(py)?;
                Ok(self
                    .queue
                    .iter_at(now)
                    .nth(i)
                    .map(|(_, item)| item.obj.clone_ref(py))
                    .expect("i < len"))
            }
        }
    }

    /// The requests in the order `pop_request` would return them now (a snapshot).
    fn __iter__<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        let items: Vec<Py<PyAny>> = match &self.exact {
            Some(exact) => exact.iter().map(|o| o.clone_ref(py)).collect(),
            None => {
                let now = self.now(py)?;
                self.queue
                    .iter_at(now)
                    .map(|(_, item)| item.obj.clone_ref(py))
                    .collect()
            }
        };
        PyList::new(py, items)?.try_iter()
    }

    /// Whether `request` is in the queue (by identity).
    fn __contains__(&self, request: &Bound<'_, PyAny>) -> bool {
        let id = request.as_ptr() as u64;
        match &self.exact {
            Some(exact) => exact.contains(id),
            None => self.queue.contains(id),
        }
    }

    /// The class index vLLM's `priority` maps to under this queue's configuration (and
    /// its out-of-range rule). Not counted as a clamp.
    fn class_for_priority(&self, priority: &Bound<'_, PyAny>) -> PyResult<usize> {
        let (class, _) = vllm_class(&self.classes, priority, "priority", self.out_of_range)?;
        Ok(class.index())
    }

    /// The class name of a queued request at the current time (aging included); None if
    /// it is not queued.
    fn effective_class(
        &mut self,
        py: Python<'_>,
        request: &Bound<'_, PyAny>,
    ) -> PyResult<Option<String>> {
        if let Some(exact) = &self.exact {
            // No aging: the class its priority maps to.
            if !exact.contains(request.as_ptr() as u64) {
                return Ok(None);
            }
            let priority = request_attr(py, request, intern!(py, "priority"))?;
            let (class, _) = vllm_class(
                &self.classes,
                &priority,
                "request.priority",
                OutOfRange::Clamp,
            )?;
            return Ok(Some(self.classes.name(class).to_string()));
        }
        let now = self.now(py)?;
        Ok(self
            .queue
            .effective_class(request.as_ptr() as u64, now)
            .map(|c| self.classes.name(c).to_string()))
    }

    /// Takes `config` (a reload): its classes, `vllm_priority` ranges, aging thresholds and
    /// max wait from now on. Every queued request is queued again under it, by its
    /// priority (or client-named class) and original arrival, so it keeps its place in
    /// line; O(n log n). A request whose priority or class name the new configuration has
    /// no room for is clamped, whatever `out_of_range` says: a reload loses no request. The
    /// fcfs policy and the vLLM-exact mode read nothing of the configuration, so there it
    /// only records the classes.
    fn reconfigure(slf: &Bound<'_, Self>, config: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let config = config_arg(Some(config), "config")?;
        let mut me = slf.borrow_mut();
        me.classes = config.class_set();
        if me.policy != Policy::Priority || me.exact.is_some() {
            return Ok(());
        }
        let options = WaitingOptions::from_config(&config);
        let fresh = WaitingQueue::new(options).map_err(raise::<ConfigError>)?;
        let now = me.now(py)?;
        let items = std::mem::replace(&mut me.queue, fresh).drain_at(now);
        // Back in under the new classes; each keeps the arrival it was queued with. None may
        // be lost: a priority or class name the new configuration has no room for is
        // clamped (counted and logged) even under out_of_range="error".
        let rule = std::mem::replace(&mut me.out_of_range, OutOfRange::Clamp);
        let mut result = Ok(());
        for (_, item) in items {
            let request = item.obj.bind(py).clone();
            if let Err(e) = me.push(py, &request, true) {
                result = result.and(Err(e));
            }
        }
        me.out_of_range = rule;
        result
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

    /// Adds and prepends whose `priority` was in no class's range and was mapped to the
    /// nearest range (`out_of_range="clamp"`).
    #[getter]
    fn clamped_priorities(&self) -> u64 {
        self.clamped_priorities
    }

    /// Adds and prepends whose `arrival_time` was non-finite, negative or past the
    /// largest `Timestamp` (18446744073.709551615 s) and was replaced by the queue's
    /// current time (`out_of_range="clamp"`).
    #[getter]
    fn clamped_arrivals(&self) -> u64 {
        self.clamped_arrivals
    }

    /// Adds and prepends whose `vllm_xargs` `triage_class` was not a configured class and
    /// was ignored for the priority (`out_of_range="clamp"`).
    #[getter]
    fn clamped_classes(&self) -> u64 {
        self.clamped_classes
    }
}
