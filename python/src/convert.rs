//! Arguments: each value a caller passes is converted here, naming it on error. A wrong
//! type raises `ArgumentTypeError` (also a `TypeError`), an out-of-range number or a value
//! not allowed `ArgumentError` (also a `ValueError`), instead of PyO3's `TypeError` or
//! `OverflowError`; a class that does not exist raises `ClassError`.

use crate::errors::{raise, ClassError, DualException};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};
use triage::{Class, ClassSet, Timestamp, MAX_TTFT_MS};

pub(crate) static ARGUMENT_ERROR: DualException = DualException::new(
    "ArgumentError",
    |py| py.get_type::<PyValueError>(),
    "An argument is out of range or not one of the allowed values; the message names it. \
     Also a ValueError.",
);
pub(crate) static ARGUMENT_TYPE_ERROR: DualException = DualException::new(
    "ArgumentTypeError",
    |py| py.get_type::<PyTypeError>(),
    "An argument has the wrong type; the message names it. Also a TypeError.",
);

/// `repr(v)`, cut to 60 characters (an int may have thousands of digits).
pub(crate) fn short_repr(v: &Bound<'_, PyAny>) -> String {
    let r = v
        .repr()
        .map_or_else(|_| "<no repr>".to_string(), |r| r.to_string());
    if r.chars().count() > 60 {
        format!("{}...", r.chars().take(57).collect::<String>())
    } else {
        r
    }
}

/// The name of `v`'s type, for messages.
pub(crate) fn type_name(v: &Bound<'_, PyAny>) -> String {
    v.get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string())
}

/// `ArgumentTypeError`: "`name` must be `expected`, not `type`".
pub(crate) fn wrong_type(name: &str, expected: &str, v: &Bound<'_, PyAny>) -> PyErr {
    ARGUMENT_TYPE_ERROR.err(
        v.py(),
        format!("{name} must be {expected}, not {}", type_name(v)),
    )
}

/// `ArgumentError`: "`name` must be `expected`, got `repr`".
pub(crate) fn out_of_range(name: &str, expected: &str, v: &Bound<'_, PyAny>) -> PyErr {
    ARGUMENT_ERROR.err(
        v.py(),
        format!("{name} must be {expected}, got {}", short_repr(v)),
    )
}

/// An integer type an argument converts to, with its range in words.
pub(crate) trait IntArg: TryFrom<i128> {
    const RANGE: &'static str;
}
impl IntArg for u32 {
    const RANGE: &'static str = "an int from 0 to 4294967295";
}
impl IntArg for u64 {
    const RANGE: &'static str = "an int from 0 to 18446744073709551615";
}

/// The range of `ttft_ms` named when an int does not fit its `u32`. Inside `u32`, 0 and
/// values past `MAX_TTFT_MS` reach the library, which refuses the request at submit
/// (`SubmitError`, counted as refused), as it does a zero `prompt_tokens`.
pub(crate) const TTFT_MS_RANGE: &str = "an int from 1 to 604800000 (milliseconds; 7 days)";
// The text above spells the library's bound out; this keeps them equal.
const _: () = assert!(MAX_TTFT_MS == 604_800_000);

/// The range of a time in ns (`now_ns`, `ManualClock` times).
const TIME_NS_RANGE: &str =
    "an int from 0 to 18446744073709551615 (ns; a Timestamp holds about 584.5 years)";

/// Integer argument `name`: any int (or object with `__index__`) in `T`'s range, but not a
/// bool (an int subclass in Python, almost always a mistake here).
pub(crate) fn int<T: IntArg>(v: &Bound<'_, PyAny>, name: &str) -> PyResult<T> {
    int_in(v, name, T::RANGE)
}

/// [`int`] with the range named as `range`.
pub(crate) fn int_in<T: TryFrom<i128>>(
    v: &Bound<'_, PyAny>,
    name: &str,
    range: &str,
) -> PyResult<T> {
    if v.is_instance_of::<PyBool>() {
        return Err(wrong_type(name, "an int", v));
    }
    match v.extract::<i128>() {
        Ok(x) => T::try_from(x).map_err(|_| out_of_range(name, range, v)),
        Err(e) if e.is_instance_of::<PyOverflowError>(v.py()) => Err(out_of_range(name, range, v)),
        Err(_) => Err(wrong_type(name, "an int", v)),
    }
}

/// [`int`] for an optional argument (`None` stays `None`).
pub(crate) fn opt_int<T: IntArg>(v: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<T>> {
    v.map(|v| int(v, name)).transpose()
}

/// A time in ns: `now_ns`, `ManualClock` times.
pub(crate) fn time_ns(v: &Bound<'_, PyAny>, name: &str) -> PyResult<Timestamp> {
    int_in(v, name, TIME_NS_RANGE).map(Timestamp)
}

/// String argument `name`.
pub(crate) fn string(v: &Bound<'_, PyAny>, name: &str) -> PyResult<String> {
    let s = v
        .cast::<PyString>()
        .map_err(|_| wrong_type(name, "a str", v))?;
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| out_of_range(name, "a str without lone surrogates", v))
}

/// Boolean argument `name`: a `bool`, not any truthy value.
pub(crate) fn boolean(v: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    v.cast::<PyBool>()
        .map(|b| b.is_true())
        .map_err(|_| wrong_type(name, "a bool", v))
}

/// vLLM's integer priority `v` as an `i64`; an int beyond 64 bits counts as `i64`'s
/// minimum or maximum (so a range open to `i64::MAX` holds it).
pub(crate) fn saturating_i64(v: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    if v.is_instance_of::<PyBool>() {
        return Err(wrong_type(name, "an int", v));
    }
    match v.extract::<i64>() {
        Ok(p) => Ok(p),
        Err(e) if e.is_instance_of::<PyOverflowError>(v.py()) => {
            Ok(if v.gt(0)? { i64::MAX } else { i64::MIN })
        }
        Err(_) => Err(wrong_type(name, "an int", v)),
    }
}

/// What to do with a vLLM priority that is in no class's range.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutOfRange {
    /// The class of the nearest range (the more urgent class on a tie).
    Clamp,
    /// Raise `ClassError`.
    Error,
}

/// The class vLLM's integer priority `v` (the argument or attribute `name`) maps to: the
/// one whose configured range holds it (the library's `ClassSet::from_vllm_priority`),
/// else as `out_of_range` says; with whether it was clamped. The one path from a vLLM
/// priority to a class: `submit`/`reprioritize`, `Config` and `VllmQueue`.
pub(crate) fn vllm_class(
    classes: &ClassSet,
    v: &Bound<'_, PyAny>,
    name: &str,
    out_of_range: OutOfRange,
) -> PyResult<(Class, bool)> {
    let priority = saturating_i64(v, name)?;
    match classes.from_vllm_priority(priority) {
        Ok(c) => Ok((c, false)),
        Err(_) if out_of_range == OutOfRange::Clamp => {
            Ok((classes.from_vllm_priority_nearest(priority), true))
        }
        Err(triage::ClassError::PriorityOutOfRange { ranges, .. }) => {
            // The library's message, with the argument's name and its exact value (which
            // may be beyond i64).
            let mut m = format!("{name} {} is in no class's range; ranges:", short_repr(v));
            for (n, (lo, hi)) in ranges {
                m.push_str(&format!(" {n}=[{lo}, {hi}]"));
            }
            Err(ClassError::new_err(m))
        }
        Err(e) => Err(raise::<ClassError>(e)),
    }
}

/// A class given as `cls`, a name (`str`) or an index (`int`), or as vLLM's `priority`
/// (which must be in a class's range); exactly one of the two.
pub(crate) fn resolve_class(
    py: Python<'_>,
    classes: &ClassSet,
    cls: Option<&Bound<'_, PyAny>>,
    priority: Option<&Bound<'_, PyAny>>,
) -> PyResult<Class> {
    match (cls, priority) {
        (Some(_), Some(_)) => Err(ARGUMENT_ERROR.err(
            py,
            "give either cls (a class name or index) or priority (vLLM's integer), not both",
        )),
        (None, None) => Err(ARGUMENT_ERROR.err(
            py,
            "give cls (a class name or index) or priority (vLLM's integer)",
        )),
        (None, Some(p)) => Ok(vllm_class(classes, p, "priority", OutOfRange::Error)?.0),
        (Some(c), None) => class_arg(classes, c, "cls"),
    }
}

/// A class given by name (`str`) or index (`int`, not `bool`) as argument `name`.
pub(crate) fn class_arg(classes: &ClassSet, c: &Bound<'_, PyAny>, name: &str) -> PyResult<Class> {
    let expected = "a class name (str) or index (int)";
    if let Ok(s) = c.cast::<PyString>() {
        let s = string(s.as_any(), name)?;
        return classes
            .parse_name(&s)
            .map_err(|e| ClassError::new_err(format!("{name}: {e}")));
    }
    if c.is_instance_of::<PyBool>() {
        return Err(wrong_type(name, expected, c));
    }
    match c.extract::<i128>() {
        Ok(i) => u8::try_from(i)
            .ok()
            .map(Class::from_index)
            .filter(|&k| classes.contains(k))
            .ok_or_else(|| {
                ClassError::new_err(format!(
                    "{name}: unknown class index {i}; configured classes are 0..{}",
                    classes.len()
                ))
            }),
        Err(e) if e.is_instance_of::<PyOverflowError>(c.py()) => Err(ClassError::new_err(format!(
            "{name}: unknown class index {}; configured classes are 0..{}",
            short_repr(c),
            classes.len()
        ))),
        Err(_) => Err(wrong_type(name, expected, c)),
    }
}
