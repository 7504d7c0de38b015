//! Fairness between tenants inside a class: the virtual token counter (VTC) of Sheng et al.,
//! "Fairness in Serving Large Language Models" (OSDI 2024), inside the scheduler.
//!
//! When [`FairnessConfig::enabled`] is set, each class serves its backlogged tenants (those
//! with a request waiting in it) by least weighted service: every tenant has a counter per
//! class, charged `prompt_token_weight` per prompt token at its request's first admission
//! and `output_token_weight` per output token as the engine reports them, divided by the
//! tenant's weight. The next request of a class is the oldest waiting request of the
//! backlogged tenant with the smallest counter. A tenant that becomes backlogged in a class
//! is lifted to the smallest counter of the tenants already backlogged there (or, with
//! none, to the counter of the tenant served last), so idle time is never banked as credit.
//!
//! The rest of the contract is unchanged: class order, aging (a promoted bucket carries its
//! tenants up; each becomes backlogged in the class above, with the lift), max wait (an
//! overdue request goes first whoever its tenant is), budgets and preemption.
//!
//! The files: [`share`] holds the counters and the per-class order of backlogged tenants
//! (owned by the wait queue); [`tenants`] maps tenant ids to dense slots with their weights
//! and enforces [`FairnessConfig::max_tenants`] (owned by the scheduler).

pub(crate) mod share;
pub(crate) mod tenants;

use crate::config::err;
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};

/// The most tenants a configuration may allow at once.
pub const MAX_TENANTS_LIMIT: usize = 1 << 20;

/// One tenant's share: service is divided by `weight`, so a tenant of weight 2 receives
/// twice the service of a tenant of weight 1 when both are backlogged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantWeight {
    /// The tenant, as [`crate::TenantId`] carries it.
    pub id: u64,
    /// Its weight: finite and more than 0.
    pub weight: f64,
}

/// Fairness between tenants inside each class (`[fairness]` in the TOML file).
///
/// ```
/// let mut cfg = triage::SchedulerConfig::default();
/// cfg.fairness.enabled = true;
/// cfg.fairness.tenants.push(triage::TenantWeight { id: 7, weight: 2.0 });
/// assert!(cfg.validate().is_ok());
/// cfg.fairness.tenants[0].weight = 0.0;
/// assert_eq!(cfg.validate().unwrap_err().field, "fairness.tenants[0].weight");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FairnessConfig {
    /// Whether classes serve their tenants fairly. Off: FIFO by arrival inside a class.
    pub enabled: bool,
    /// The most tenants held at once (a tenant is held while it has a request waiting or
    /// running). A request of one more tenant is refused when drained, with
    /// [`crate::RejectReason::TenantLimit`].
    pub max_tenants: usize,
    /// Service charged per prompt token (at a request's first admission).
    pub prompt_token_weight: f64,
    /// Service charged per output token (as the engine reports them).
    pub output_token_weight: f64,
    /// The weight of a tenant not listed in `tenants`, and of requests with no tenant
    /// (which share one tenant of their own).
    pub default_weight: f64,
    /// Per-tenant weights.
    pub tenants: Vec<TenantWeight>,
    /// Whether to export per-tenant metrics (service and queue depth, labelled by tenant:
    /// one series per tenant and class, so off by default).
    pub tenant_metrics: bool,
}

impl Default for FairnessConfig {
    fn default() -> Self {
        // Output tokens cost about twice the GPU time of prompt tokens at typical batch
        // sizes; the VTC paper uses the same 1:2 weighting.
        Self {
            enabled: false,
            max_tenants: 1024,
            prompt_token_weight: 1.0,
            output_token_weight: 2.0,
            default_weight: 1.0,
            tenants: Vec::new(),
            tenant_metrics: false,
        }
    }
}

fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

impl FairnessConfig {
    /// Checks every rule of the section; the first broken one is returned.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_TENANTS_LIMIT).contains(&self.max_tenants) {
            return Err(err(
                "fairness.max_tenants",
                format!("1 to {MAX_TENANTS_LIMIT}"),
                self.max_tenants,
            ));
        }
        for (field, v) in [
            ("fairness.prompt_token_weight", self.prompt_token_weight),
            ("fairness.output_token_weight", self.output_token_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(err(field, "a finite number at least 0", v));
            }
        }
        if self.prompt_token_weight == 0.0 && self.output_token_weight == 0.0 {
            return Err(err(
                "fairness.output_token_weight",
                "more than 0 when prompt_token_weight is 0 (some service must count)",
                0.0,
            ));
        }
        if !positive(self.default_weight) {
            return Err(err(
                "fairness.default_weight",
                "a finite number more than 0",
                self.default_weight,
            ));
        }
        if self.tenants.len() > self.max_tenants {
            return Err(err(
                "fairness.tenants",
                format!("at most max_tenants ({}) entries", self.max_tenants),
                self.tenants.len(),
            ));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            if !positive(t.weight) {
                return Err(err(
                    format!("fairness.tenants[{i}].weight"),
                    "a finite number more than 0",
                    t.weight,
                ));
            }
            if let Some(j) = self.tenants[..i].iter().position(|o| o.id == t.id) {
                return Err(err(
                    format!("fairness.tenants[{i}].id"),
                    format!("an id not already listed (fairness.tenants[{j}] has it)"),
                    t.id,
                ));
            }
        }
        Ok(())
    }
}
