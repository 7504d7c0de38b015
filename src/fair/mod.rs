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

use crate::error::err;
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};

/// The most tenants a configuration may allow at once.
pub const MAX_TENANTS_LIMIT: usize = 1 << 20;

/// How far apart tenant weights may be: the greatest (`default_weight` or a listed one) at
/// most this many times the least. Weights are relative, so their magnitude is free; their
/// spread, with [`MAX_TOKEN_WEIGHT_RATIO`]'s, sets how many counter units the dearest token
/// costs against the cheapest, and so the counters' precision (`docs/design.md`).
pub const MAX_WEIGHT_RATIO: f64 = 1e6;

/// How far apart the token weights may be when neither is 0: the greater at most this many
/// times the smaller (see [`MAX_WEIGHT_RATIO`]).
pub const MAX_TOKEN_WEIGHT_RATIO: f64 = 1e4;

/// One tenant's share: service is divided by `weight`, so a tenant of weight 2 receives
/// twice the service of a tenant of weight 1 when both are backlogged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantWeight {
    /// The tenant, as [`crate::TenantId`] carries it.
    pub id: u64,
    /// Its weight: finite, more than 0, and within [`MAX_WEIGHT_RATIO`] of every other
    /// tenant weight (`default_weight` included).
    pub weight: f64,
}

/// Fairness between tenants inside each class (`[fairness]` in the TOML file).
///
/// Weights are relative: multiplying every tenant weight, or both token weights, by one
/// factor changes nothing. Their magnitude is free, their spread is bounded
/// ([`MAX_WEIGHT_RATIO`], [`MAX_TOKEN_WEIGHT_RATIO`]).
///
/// ```
/// let mut cfg = triage::SchedulerConfig::default();
/// cfg.fairness.enabled = true;
/// cfg.fairness.tenants.push(triage::TenantWeight { id: 7, weight: 2.0 });
/// assert!(cfg.validate().is_ok());
/// cfg.fairness.tenants[0].weight = 0.0;
/// assert_eq!(cfg.validate().unwrap_err().field, "fairness.tenants[0].weight");
/// cfg.fairness.tenants[0].weight = 2e6; // two million times default_weight (1)
/// assert_eq!(cfg.validate().unwrap_err().field, "fairness.tenants[0].weight");
/// cfg.fairness.default_weight = 1e5;
/// assert!(cfg.validate().is_ok());
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
    /// Service charged per prompt token (at a request's first admission): finite, at
    /// least 0, and if neither is 0 within [`MAX_TOKEN_WEIGHT_RATIO`] of
    /// `output_token_weight`.
    pub prompt_token_weight: f64,
    /// Service charged per output token (as the engine reports them); as
    /// `prompt_token_weight`, and not both 0.
    pub output_token_weight: f64,
    /// The weight of a tenant not listed in `tenants`, and of requests with no tenant
    /// (which share one tenant of their own): finite, more than 0, and within
    /// [`MAX_WEIGHT_RATIO`] of every listed weight.
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
        let (p, o) = (self.prompt_token_weight, self.output_token_weight);
        if p == 0.0 && o == 0.0 {
            return Err(err(
                "fairness.output_token_weight",
                "more than 0 when prompt_token_weight is 0 (some service must count)",
                0.0,
            ));
        }
        // The smaller of two nonzero token weights is the one named.
        let ((small, field), (big, other)) = if p <= o {
            ((p, "prompt_token_weight"), (o, "output_token_weight"))
        } else {
            ((o, "output_token_weight"), (p, "prompt_token_weight"))
        };
        if small > 0.0 && big / small > MAX_TOKEN_WEIGHT_RATIO {
            return Err(err(
                format!("fairness.{field}"),
                format!(
                    "0, or at least 1/{MAX_TOKEN_WEIGHT_RATIO} of {other} ({big}): token \
                     weights are relative, and counters are exact within that spread"
                ),
                small,
            ));
        }
        if !positive(self.default_weight) {
            return Err(err(
                "fairness.default_weight",
                "a finite number more than 0",
                self.default_weight,
            ));
        }
        // The least and greatest tenant weight so far, with the field that set each.
        let mut least = (self.default_weight, "fairness.default_weight".to_string());
        let mut greatest = least.clone();
        if self.tenants.len() > self.max_tenants {
            return Err(err(
                "fairness.tenants",
                format!("at most max_tenants ({}) entries", self.max_tenants),
                self.tenants.len(),
            ));
        }
        for (i, t) in self.tenants.iter().enumerate() {
            let field = format!("fairness.tenants[{i}].weight");
            if !positive(t.weight) {
                return Err(err(field, "a finite number more than 0", t.weight));
            }
            if t.weight / least.0 > MAX_WEIGHT_RATIO {
                return Err(err(
                    field,
                    format!(
                        "at most {MAX_WEIGHT_RATIO} times the least tenant weight ({} = {}): \
                         weights are relative, and counters are exact within that spread",
                        least.1, least.0
                    ),
                    t.weight,
                ));
            }
            if greatest.0 / t.weight > MAX_WEIGHT_RATIO {
                return Err(err(
                    field,
                    format!(
                        "at least 1/{MAX_WEIGHT_RATIO} of the greatest tenant weight ({} = {}): \
                         weights are relative, and counters are exact within that spread",
                        greatest.1, greatest.0
                    ),
                    t.weight,
                ));
            }
            if t.weight < least.0 {
                least = (t.weight, field.clone());
            }
            if t.weight > greatest.0 {
                greatest = (t.weight, field);
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
