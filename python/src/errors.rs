//! The exceptions triage raises, every one a `TriageError`, and the mapping of a Rust error
//! to one: [`raise`] makes the Python exception carrying the Rust error's message (which
//! names what is wrong). [`DualException`] makes the classes that are also a built-in
//! exception (`ArgumentError` is a `ValueError`, `QueueEmpty` an `IndexError`, ...).

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::PyTypeInfo;

create_exception!(
    triage._triage,
    TriageError,
    PyException,
    "Base class of every error triage raises."
);
create_exception!(
    triage._triage,
    ConfigError,
    TriageError,
    "A configuration breaks a rule; the message names the field, what is allowed, and where."
);
create_exception!(
    triage._triage,
    ClassError,
    TriageError,
    "A class name, index or vLLM priority maps to no configured class."
);
create_exception!(
    triage._triage,
    SubmitError,
    TriageError,
    "submit refused the request (queue full, duplicate id, unknown class, too long, closed)."
);
create_exception!(
    triage._triage,
    ControlError,
    TriageError,
    "cancel, reprioritize or lookup found no request to act on (a stale handle, one already \
     cancelled, an unknown id, or no id index)."
);
create_exception!(
    triage._triage,
    ProgressError,
    TriageError,
    "on_progress or on_finished was refused (handle names no running request, overrun, time \
     went backwards)."
);
create_exception!(
    triage._triage,
    BudgetError,
    TriageError,
    "step was refused (more free blocks than the engine has, or time went backwards)."
);

/// The Python exception `E` carrying `e`'s message (a Rust error's, which names what is
/// wrong): `.map_err(raise::<ConfigError>)`.
pub(crate) fn raise<E: PyTypeInfo>(e: impl std::fmt::Display) -> PyErr {
    PyErr::new::<E, _>(e.to_string())
}

/// An exception class that is both a `TriageError` and a built-in exception, so that code
/// written for the built-in (vLLM's, or `except ValueError`) still catches it and users can
/// catch `TriageError`. `create_exception!` takes one base; these are made with `type()`
/// when first needed (the module adds them at import).
pub(crate) struct DualException {
    cell: PyOnceLock<Py<PyType>>,
    pub(crate) name: &'static str,
    doc: &'static str,
    builtin: fn(Python<'_>) -> Bound<'_, PyType>,
}

impl DualException {
    pub(crate) const fn new(
        name: &'static str,
        builtin: fn(Python<'_>) -> Bound<'_, PyType>,
        doc: &'static str,
    ) -> Self {
        DualException {
            cell: PyOnceLock::new(),
            name,
            doc,
            builtin,
        }
    }

    pub(crate) fn type_object<'py>(&self, py: Python<'py>) -> PyResult<&Bound<'py, PyType>> {
        self.cell
            .get_or_try_init(py, || {
                let dict = PyDict::new(py);
                dict.set_item("__module__", "triage._triage")?;
                dict.set_item("__doc__", self.doc)?;
                let bases = PyTuple::new(py, [py.get_type::<TriageError>(), (self.builtin)(py)])?;
                let t = py
                    .get_type::<PyType>()
                    .call1((self.name, bases, dict))?
                    .cast_into::<PyType>()?;
                Ok(t.unbind())
            })
            .map(|t| t.bind(py))
    }

    /// This exception with `message`.
    pub(crate) fn err(&self, py: Python<'_>, message: impl Into<String>) -> PyErr {
        match self.type_object(py) {
            Ok(t) => PyErr::from_type(t.clone(), message.into()),
            Err(e) => e,
        }
    }
}

pub(crate) static QUEUE_EMPTY: DualException = DualException::new(
    "QueueEmpty",
    |py| py.get_type::<PyIndexError>(),
    "pop_request or peek_request on an empty queue. Also an IndexError, as vLLM's queues \
     raise.",
);
pub(crate) static NOT_QUEUED: DualException = DualException::new(
    "NotQueued",
    |py| py.get_type::<PyValueError>(),
    "remove_request of a request that is not in the queue. Also a ValueError, as vLLM's \
     queues raise.",
);
pub(crate) static ALREADY_QUEUED: DualException = DualException::new(
    "AlreadyQueued",
    |py| py.get_type::<PyValueError>(),
    "add_request or prepend_request of a request that is already in the queue. Also a \
     ValueError.",
);
