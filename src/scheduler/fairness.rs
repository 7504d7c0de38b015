//! The scheduler's side of fairness between tenants: giving drained requests their
//! tenant's slot (or refusing one tenant too many), charging service to the fair counters,
//! and tenant slots across reloads. The order itself lives in the wait queue; the opt-in
//! per-tenant metrics are in `tenant_metrics.rs`.

use super::Scheduler;
use crate::counters::Outcome;
use crate::decision::{Decision, RejectReason};
use crate::fair::tenants::Tenants;
use crate::queue::slab::NO_SLOT;
use crate::request::TenantId;
use crate::time::Timestamp;

/// Which tokens a charge is for.
#[derive(Clone, Copy)]
pub(super) enum Tokens {
    Prompt = 0,
    Output = 1,
}

/// Whether a drained request may be refused for the tenant limit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TenantLimit {
    /// A step's drain: the limit bounds the tenants held for serving.
    Apply,
    /// A hand-off's drain: the request is handed off, not served here, and a refusal there
    /// would reach no one (the hand-off returns only what it hands off).
    Lift,
}

impl Scheduler {
    /// Gives a drained entry its tenant's slot (`hint`: the slot [`Scheduler::look_ahead`]
    /// found, or `NO_SLOT`; see [`Tenants::acquire`]). Fairness on only: with it off the
    /// drain builds every entry in slot 0 (`take_new`). Returns `false`, having ended the
    /// entry as refused, if its tenant is new and the tenant limit is reached, unless
    /// `limit` is [`TenantLimit::Lift`].
    pub(super) fn assign_tenant(
        &mut self,
        key: u32,
        hint: u32,
        limit: TenantLimit,
        now: Timestamp,
        out: &mut Decision,
    ) -> bool {
        debug_assert!(
            self.config.fairness.enabled,
            "fairness off: slot 0 at the drain"
        );
        let tenant = self.slab[key].spec.tenant();
        let acquired = match limit {
            TenantLimit::Apply => self.tenants.acquire(tenant, hint),
            TenantLimit::Lift => Ok(self.tenants.acquire_past_limit(tenant)),
        };
        match acquired {
            Ok((slot, fresh)) => {
                if fresh {
                    if let Some(f) = self.wait.fair_mut() {
                        f.forget(slot);
                    }
                    // The slot's counters were labelled with its previous tenant.
                    #[cfg(feature = "metrics")]
                    if let Some(handles) = self.tenant_tokens.get_mut(slot as usize) {
                        *handles = Default::default();
                    }
                }
                self.slab[key].tenant = slot;
                true
            }
            Err(_) => {
                let (id, class) = (self.slab[key].spec.id, self.slab[key].spec.class);
                self.slab[key].tenant = NO_SLOT;
                let max_tenants = self.config.fairness.max_tenants;
                let reason = RejectReason::TenantLimit {
                    tenant,
                    max_tenants,
                };
                // Counted only if the refusal stands: a cancel that won the race to the
                // slot's state word makes the outcome `Cancelled`, and `triage_refused_total` would
                // then count a request that was never refused.
                if self.end_rejected(key, Outcome::Refused, reason, now, out) {
                    tracing::debug!(
                        id = id.0,
                        class = class.index(),
                        tenant = ?tenant.map(|t| t.0),
                        max_tenants,
                        "refused: one tenant past the tenant limit"
                    );
                    #[cfg(feature = "metrics")]
                    crate::telemetry::record_refused(
                        self.classes.name(class),
                        crate::telemetry::RefuseReason::TenantLimit,
                    );
                }
                false
            }
        }
    }

    /// Before a drain queues `batch` (with fairness on): looks up each request's tenant slot
    /// into `ahead` (`(class, slot)`, `NO_SLOT` for a tenant not yet held) and starts
    /// loading its lane and counter. With many tenants each is a cache miss; started
    /// together here they overlap, where one at a time each stalled its request. The
    /// slots found also spare [`Tenants::acquire`] its look-up.
    pub(super) fn look_ahead(
        &self,
        batch: &[crate::ingress::Drained],
        ahead: &mut Vec<(usize, u32)>,
    ) {
        ahead.clear();
        if !self.config.fairness.enabled || self.tenants.len() < crate::prefetch::MIN_TENANTS {
            return;
        }
        for entry in batch {
            let payload = self.shared.table.payload(entry);
            let class = payload.spec.class.index();
            let slot = self
                .tenants
                .slot_of(payload.spec.tenant())
                .unwrap_or(NO_SLOT);
            self.wait.prefetch_lane(class, slot);
            ahead.push((class, slot));
        }
    }

    /// Frees an ending entry's hold on its tenant.
    #[inline]
    pub(super) fn release_tenant(&mut self, slot: u32) {
        if self.config.fairness.enabled && slot != NO_SLOT {
            self.tenants.release(slot);
        }
    }

    /// Charges `tokens` tokens of service to the entry's tenant in the wait-queue tier its
    /// run was admitted from (its class, or in deadline order that class's relegated tier):
    /// the fair counters that ordered it.
    ///
    /// Inlined: with fairness off (the default) it is one test, made for every request
    /// admitted and every progress report.
    #[inline]
    pub(super) fn charge(&mut self, key: u32, kind: Tokens, tokens: u32) {
        if self.config.fairness.enabled && tokens > 0 {
            self.charge_tenant(key, kind, tokens);
        }
    }

    /// [`Scheduler::charge`] with fairness on, of at least one token.
    fn charge_tenant(&mut self, key: u32, kind: Tokens, tokens: u32) {
        let e = &self.slab[key];
        let slot = e.tenant;
        if slot == NO_SLOT {
            return;
        }
        // Whole units per token, so the counter adds exactly (`crate::fair::share::Pricing`).
        let amount = u128::from(tokens) * u128::from(self.tenants.cost(slot, kind as usize));
        if let Some(f) = self.wait.fair_mut() {
            f.charge(usize::from(self.slab.run(key).run_tier), slot, amount);
        }
        #[cfg(feature = "metrics")]
        if self.config.fairness.tenant_metrics {
            self.count_tenant_tokens(key, kind, tokens);
        }
    }

    /// Tenants with a request held (waiting or running), with fairness on (0 with it off:
    /// the registry is then never given a tenant).
    pub fn tenants_held(&self) -> usize {
        self.tenants.len()
    }

    /// The service `tenant` has been counted in `class` (weighted tokens divided by its
    /// weight, after lifts), while fairness is on and the tenant is held. The counter that
    /// orders the class's tenants (exact in its own units; this is it as an `f64`).
    pub fn tenant_service(&self, tenant: Option<TenantId>, class: crate::Class) -> Option<f64> {
        let f = self.wait.fair()?;
        let slot = self.tenants.slot_of(tenant)?;
        Some(self.tenants.service(f.counter(class.index(), slot)))
    }

    /// A fresh registry for `config`, with every held entry given its slot again (a
    /// reload: the queue is being rebuilt, and the fair counters start afresh). Tenants
    /// held past a lowered limit stay until they drain.
    pub(super) fn reassign_tenants(&mut self, config: &crate::fair::FairnessConfig) {
        self.tenants = Tenants::new(config);
        #[cfg(feature = "metrics")]
        self.tenant_tokens.clear();
        let enabled = config.enabled;
        let keys: Vec<u32> = self.slab.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.slab[k].tenant = if enabled {
                self.tenants.acquire_held(self.slab[k].spec.tenant())
            } else {
                0
            };
        }
    }
}
