//! The opt-in per-tenant metrics (`fairness.tenant_metrics`, with the `metrics` feature):
//! service counted per tenant, class and kind (`triage_tenant_tokens_total`), and queue
//! depth per tenant and class (`triage_tenant_waiting`).

use super::fairness::Tokens;
use super::Scheduler;
use crate::request::TenantId;
use crate::telemetry::{TENANT_TOKENS, TENANT_WAITING};

/// A tenant as a metric label: its id in decimal, or `none`.
fn tenant_label(t: Option<TenantId>) -> String {
    t.map_or_else(|| "none".to_string(), |t| t.0.to_string())
}

impl Tokens {
    /// The `kind` label of `triage_tenant_tokens_total`.
    fn label(self) -> &'static str {
        match self {
            Tokens::Prompt => "prompt",
            Tokens::Output => "output",
        }
    }
}

impl Scheduler {
    /// Counts `tokens` of `kind` charged to the entry's tenant in the class its run was
    /// admitted in. The handle is kept per slot, class and kind: made here at the tenant's
    /// first charge of that kind in that class (registered with the recorder installed
    /// then, as `StepMetrics`' handles are), so a charge does not format two labels and
    /// look the series up in the registry every time.
    pub(super) fn count_tenant_tokens(&mut self, key: u32, kind: Tokens, tokens: u32) {
        let (e, run_class) = (&self.slab[key], self.slab.run(key).run_class);
        let (s, i) = (e.tenant as usize, 2 * run_class.index() + kind as usize);
        if self.tenant_tokens.len() <= s {
            self.tenant_tokens.resize_with(s + 1, Default::default);
        }
        let (classes, tenant) = (&self.classes, e.spec.tenant());
        self.tenant_tokens[s][i]
            .get_or_insert_with(|| {
                metrics::counter!(
                    TENANT_TOKENS,
                    "class" => classes.name(run_class).to_string(),
                    "tenant" => tenant_label(tenant),
                    "kind" => kind.label(),
                )
            })
            .increment(u64::from(tokens));
    }

    /// Sets the per-tenant queue-depth gauges (with `tenant_metrics` on): one per held
    /// tenant and class. O(tenants × classes); called with the compliance refresh.
    pub(super) fn publish_tenant_depths(&mut self) {
        if !(self.config.fairness.enabled && self.config.fairness.tenant_metrics) {
            return;
        }
        for slot in 0..self.tenants.slots() {
            if self.tenants.requests(slot) == 0 {
                continue;
            }
            let tenant = self.tenants.tenant(slot);
            for class in self.classes.iter() {
                let n = self.wait.lane_len(class.index(), slot);
                metrics::gauge!(
                    TENANT_WAITING,
                    "class" => self.classes.name(class).to_string(),
                    "tenant" => tenant_label(tenant),
                )
                .set(n as f64);
            }
        }
    }
}
