//! Python bindings of triage (module `triage._triage`; the package `triage` re-exports it).
//!
//! Thin over the library: [`Scheduler`] and [`Submitter`] wrap the Rust types one to one,
//! with `now` injectable (a [`ManualClock`] or an explicit `now_ns`), the GIL released in
//! `step`, and each Rust error mapped to a typed Python exception whose message is the Rust
//! error's (which names what is wrong). A request is named by the [`Handle`] (Python
//! `RequestHandle`) that `submit` returns, as in Rust; `lookup` finds it by id when the
//! configuration keeps the id index. [`VllmQueue`] is the ordered queue behind
//! `triage.vllm.TriageRequestQueue`: the library's [`WaitingQueue`] holding the Python
//! request objects.
//!
//! Every error raised here is a `TriageError` subclass. Arguments arrive as Python objects
//! and are converted by the helpers in `convert` (`int`, `string`, ...), so a wrong type or
//! an out-of-range number raises `ArgumentTypeError` / `ArgumentError` naming the argument,
//! instead of PyO3's `TypeError` or `OverflowError`.
//!
//! [`WaitingQueue`]: triage::WaitingQueue

mod convert;
mod errors;
mod scheduler;
mod vllm_order;
mod vllm_queue;

use convert::{ARGUMENT_ERROR, ARGUMENT_TYPE_ERROR};
use errors::{
    BudgetError, ClassError, ConfigError, ControlError, ProgressError, SubmitError, TriageError,
    ALREADY_QUEUED, NOT_QUEUED, QUEUE_EMPTY,
};
use pyo3::prelude::*;
use scheduler::{
    Admitted, Config, Decision, Handle, ManualClock, Preempted, Scheduled, Scheduler, Submitter,
};
use triage::MAX_TTFT_MS;
use vllm_queue::VllmQueue;

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
    for e in [
        &ARGUMENT_ERROR,
        &ARGUMENT_TYPE_ERROR,
        &QUEUE_EMPTY,
        &NOT_QUEUED,
        &ALREADY_QUEUED,
    ] {
        m.add(e.name, e.type_object(py)?)?;
    }
    m.add("MAX_TTFT_MS", MAX_TTFT_MS)?;
    m.add_class::<Config>()?;
    m.add_class::<ManualClock>()?;
    m.add_class::<Submitter>()?;
    m.add_class::<Scheduler>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Handle>()?;
    m.add_class::<Admitted>()?;
    m.add_class::<Scheduled>()?;
    m.add_class::<Preempted>()?;
    m.add_class::<VllmQueue>()?;
    Ok(())
}
