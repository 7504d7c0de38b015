//! vLLM's order of waiting requests, as its `Request.__lt__` defines it: `priority`, then
//! `arrival_time`, then `request_id`, then `id()`. [`PyItem`] is a queued request with the
//! tie-breaks after the priority (the triage queue orders by class and arrival bucket
//! first); [`ExactQueue`] is the whole order for any integer priorities, the queue of the
//! vLLM-exact mode.

use pyo3::intern;
use pyo3::prelude::*;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A queued Python request: its exact `arrival_time` and the object. Orders requests that
/// arrive in the same nanosecond as vLLM's `Request.__lt__` does after the priority:
/// arrival time, then `request_id`, then `id()`.
pub(crate) struct PyItem {
    pub(crate) arrival: f64,
    pub(crate) obj: Py<PyAny>,
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

/// Where a request sorts in [`ExactQueue`]: vLLM's key, read once at insert. The
/// `request_id` is kept as Rust text when it is a `str` (UTF-8 byte order is code-point
/// order, which is Python's string order), so comparing keys calls no Python.
#[derive(Clone)]
struct Key {
    priority: i64,
    arrival: f64,
    request_id: Option<Arc<str>>,
    /// `id()`: the last tie-break, and identity.
    ptr: usize,
}

impl Key {
    fn of(priority: i64, arrival: f64, obj: &Bound<'_, PyAny>) -> Self {
        let request_id = obj
            .getattr(intern!(obj.py(), "request_id"))
            .ok()
            .and_then(|v| v.extract::<String>().ok())
            .map(Arc::from);
        Key {
            priority,
            arrival,
            request_id,
            ptr: obj.as_ptr() as usize,
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        // Arrivals are finite here (the queue clamps the others), so `partial_cmp` is total
        // but for -0.0 == 0.0, as Python's `<` has it.
        self.priority
            .cmp(&other.priority)
            .then_with(|| {
                self.arrival
                    .partial_cmp(&other.arrival)
                    .unwrap_or(Ordering::Equal)
            })
            .then_with(|| match (&self.request_id, &other.request_id) {
                (Some(a), Some(b)) => a.cmp(b),
                // A request_id that is not a `str` (not vLLM's): order the two by
                // identity alone, consistently.
                _ => Ordering::Equal,
            })
            .then_with(|| self.ptr.cmp(&other.ptr))
    }
}

/// The vLLM-exact queue: requests in vLLM's order for any integer priorities, O(log n)
/// per add, pop and removal, no Python call to compare. Requests are identified by
/// identity (`id()`), as vLLM's queues hold them.
#[derive(Default)]
pub(crate) struct ExactQueue {
    order: BTreeMap<Key, Py<PyAny>>,
    /// A queued request's key by identity.
    by_id: HashMap<u64, Key>,
}

impl ExactQueue {
    /// Queues `obj` (identity `id`) with `priority` and `arrival` at its place; `false`
    /// if it is already queued.
    pub(crate) fn insert(
        &mut self,
        id: u64,
        priority: i64,
        arrival: f64,
        obj: &Bound<'_, PyAny>,
    ) -> bool {
        if self.by_id.contains_key(&id) {
            return false;
        }
        let key = Key::of(priority, arrival, obj);
        self.by_id.insert(id, key.clone());
        self.order.insert(key, obj.clone().unbind());
        true
    }

    /// Takes the first request.
    pub(crate) fn pop(&mut self) -> Option<Py<PyAny>> {
        let (key, obj) = self.order.pop_first()?;
        self.by_id.remove(&(key.ptr as u64));
        Some(obj)
    }

    /// The first request.
    pub(crate) fn peek(&self) -> Option<&Py<PyAny>> {
        self.order.first_key_value().map(|(_, obj)| obj)
    }

    /// Removes the request of identity `id` if it is queued, and gives it back (for the
    /// caller to drop once it no longer borrows the queue: dropping may run Python code).
    pub(crate) fn remove(&mut self, id: u64) -> Option<Py<PyAny>> {
        let key = self.by_id.remove(&id)?;
        self.order.remove(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The requests in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Py<PyAny>> {
        self.order.values()
    }
}
