//! What a client asks for: the request's identity, class and token counts.

use crate::class::Class;
use crate::time::Timestamp;
use std::fmt;

/// The engine's id for a request. Unique among the requests the scheduler currently holds;
/// it may be reused once the request has reached its terminal outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "req#{}", self.0)
    }
}

/// A tenant (API key, organisation) for fairness inside a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(pub u64);

/// A request as submitted. The arrival time is stamped by the scheduler's clock at submit.
///
/// ```
/// use triage::*;
/// // Id 7 (the engine's own), class LOW, a 900-token prompt, at most 64 new tokens.
/// let spec = RequestSpec::new(7, Class::LOW, 900, 64).with_tenant(TenantId(3));
/// let spec = RequestSpec { ttft_ms: Some(2_000), ..spec }; // its own TTFT target
/// let (_sched, api) = Scheduler::new(SchedulerConfig::default()).unwrap();
/// api.submit(spec).unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestSpec {
    /// The engine's id for the request.
    pub id: RequestId,
    /// Its priority class.
    pub class: Class,
    /// Prompt length in tokens (at least 1).
    pub prompt_tokens: u32,
    /// The most tokens it may generate (at least 1).
    pub max_new_tokens: u32,
    /// The tenant it belongs to, if the engine tracks tenants.
    pub tenant: Option<TenantId>,
    /// Its own time-to-first-token target in milliseconds (1 to [`MAX_TTFT_MS`]), instead
    /// of its class's: in deadline order its deadline is its arrival plus this.
    pub ttft_ms: Option<u32>,
}

/// The longest per-request TTFT target: 7 days, the longest SLO bound.
pub const MAX_TTFT_MS: u32 = 7 * 24 * 3600 * 1000;

impl RequestSpec {
    /// A request with no tenant and its class's TTFT target.
    ///
    /// ```
    /// use triage::*;
    /// let spec = RequestSpec::new(1, Class::HIGH, 100, 16);
    /// assert_eq!((spec.id, spec.tenant, spec.ttft_ms), (RequestId(1), None, None));
    /// ```
    pub fn new(id: u64, class: Class, prompt_tokens: u32, max_new_tokens: u32) -> Self {
        Self {
            id: RequestId(id),
            class,
            prompt_tokens,
            max_new_tokens,
            tenant: None,
            ttft_ms: None,
        }
    }

    /// The same request with a tenant (fairness between tenants orders by it when on).
    ///
    /// ```
    /// use triage::*;
    /// let spec = RequestSpec::new(1, Class::HIGH, 100, 16).with_tenant(TenantId(9));
    /// assert_eq!(spec.tenant, Some(TenantId(9)));
    /// ```
    pub fn with_tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = Some(tenant);
        self
    }

    /// The same request with its own time-to-first-token target, in milliseconds.
    ///
    /// ```
    /// use triage::{Class, RequestSpec};
    /// let spec = RequestSpec::new(7, Class::MEDIUM, 512, 64).with_ttft_ms(250);
    /// assert_eq!(spec.ttft_ms, Some(250));
    /// ```
    pub fn with_ttft_ms(mut self, ttft_ms: u32) -> Self {
        self.ttft_ms = Some(ttft_ms);
        self
    }
}

/// A [`RequestSpec`] as the scheduler stores it, in the request table's payload and in
/// the slab's entry: the same values in 32 bytes instead of 48, the two options' tags in
/// one byte of flags. [`Spec::unpack`] gives back exactly the spec it was made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Spec {
    /// [`RequestSpec::id`].
    pub(crate) id: RequestId,
    /// The tenant's id if [`Spec::TENANT`] is set, else 0.
    tenant: u64,
    /// [`RequestSpec::prompt_tokens`].
    pub(crate) prompt_tokens: u32,
    /// [`RequestSpec::max_new_tokens`].
    pub(crate) max_new_tokens: u32,
    /// The TTFT target if [`Spec::TTFT`] is set, else 0.
    ttft_ms: u32,
    /// [`RequestSpec::class`] (the scheduler updates it on reprioritize and reload).
    pub(crate) class: Class,
    /// [`Spec::TENANT`] and [`Spec::TTFT`]: which options are `Some`.
    flags: u8,
}

impl Spec {
    /// `tenant` holds a tenant.
    const TENANT: u8 = 1;
    /// `ttft_ms` holds a target.
    const TTFT: u8 = 2;

    /// The request's tenant, if any.
    pub(crate) fn tenant(&self) -> Option<TenantId> {
        (self.flags & Self::TENANT != 0).then_some(TenantId(self.tenant))
    }

    /// Its own TTFT target, if any.
    pub(crate) fn ttft_ms(&self) -> Option<u32> {
        (self.flags & Self::TTFT != 0).then_some(self.ttft_ms)
    }

    /// The spec it was made from (with the class as last updated).
    pub(crate) fn unpack(&self) -> RequestSpec {
        RequestSpec {
            id: self.id,
            class: self.class,
            prompt_tokens: self.prompt_tokens,
            max_new_tokens: self.max_new_tokens,
            tenant: self.tenant(),
            ttft_ms: self.ttft_ms(),
        }
    }
}

impl From<RequestSpec> for Spec {
    fn from(s: RequestSpec) -> Self {
        Self::from(&s)
    }
}

/// Field by field from the caller's spec: the submit path converts through a reference, so
/// the spec is never copied whole (see `Submitter::submit`).
impl From<&RequestSpec> for Spec {
    fn from(s: &RequestSpec) -> Self {
        Self {
            id: s.id,
            tenant: s.tenant.map_or(0, |t| t.0),
            prompt_tokens: s.prompt_tokens,
            max_new_tokens: s.max_new_tokens,
            ttft_ms: s.ttft_ms.unwrap_or(0),
            class: s.class,
            flags: if s.tenant.is_some() { Self::TENANT } else { 0 }
                | if s.ttft_ms.is_some() { Self::TTFT } else { 0 },
        }
    }
}

/// A waiting request handed back by [`crate::Scheduler::drain_waiting`], with what another
/// replica needs to queue it in the same place: its class and original arrival.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandOff {
    /// The request as submitted, with its class as last reprioritized.
    pub spec: RequestSpec,
    /// When it first arrived.
    pub arrival: Timestamp,
    /// Output tokens it had already generated before being preempted (0 if never run).
    pub generated_tokens: u32,
}

/// A request's name while the scheduler holds it, returned by
/// [`crate::Submitter::submit`]: slot index and generation, 8 bytes, `Copy`. Cancel,
/// reprioritize and the engine's callbacks take it; no map is searched. It goes stale when
/// the request ends (its slot is freed), and every later use answers "not found" (a reused
/// slot has another generation, so a stale handle never reaches the new request).
///
/// ```
/// use triage::*;
/// let (_sched, api) = Scheduler::new(SchedulerConfig::default()).unwrap();
/// let h: RequestHandle = api.submit(RequestSpec::new(7, Class::LOW, 100, 16)).unwrap();
/// assert_eq!(std::mem::size_of::<RequestHandle>(), 8);
/// let copy = h; // Copy: keep one wherever the request is tracked
/// assert_eq!(api.cancel(copy), Ok(CancelOutcome::WasWaiting));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestHandle {
    /// The request table slot.
    pub(crate) index: u32,
    /// The slot's generation when the handle was issued.
    pub(crate) generation: u32,
}

impl RequestHandle {
    pub(crate) fn new(index: u32, generation: u32) -> Self {
        Self { index, generation }
    }

    /// The slot index (dense, below the table's capacity): usable to index per-request
    /// arrays on the consumer side.
    pub fn index(self) -> u32 {
        self.index
    }

    /// The slot's generation when this handle was issued.
    pub fn generation(self) -> u32 {
        self.generation
    }
}

impl std::fmt::Display for RequestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request handle {}.{}", self.index, self.generation)
    }
}
