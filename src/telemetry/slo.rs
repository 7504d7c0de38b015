//! The SLO families (with the `slo` feature): violations counted per class and kind, the
//! dropped violation reports, each target's bound, and compliance per class, window and
//! target, refreshed at most once per compliance interval.

use super::{
    DEFAULT_COMPLIANCE_INTERVAL, LABEL_CLASS, LABEL_KIND, LABEL_TARGET, LABEL_WINDOW, SLO_BOUND,
    SLO_COMPLIANCE, SLO_MEASURED, SLO_REPORTS_DROPPED, SLO_VIOLATIONS,
};
use crate::class::{Class, ClassSet};
use crate::slo::{ClassCompliance, SloConfig, SloTracker, SloWindow, ViolationKind};
use crate::time::Timestamp;
use ::metrics::{Counter, Gauge, Unit};
use std::time::Duration;

/// Describes the SLO families (see [`super::describe`]).
pub(super) fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_counter!(
        SLO_VIOLATIONS,
        Unit::Count,
        "SLO violations reported, by class and kind (ttft, tpot, e2e)."
    );
    describe_counter!(
        SLO_REPORTS_DROPPED,
        Unit::Count,
        "SLO violation reports dropped because a subscriber's channel was full."
    );
    describe_gauge!(
        SLO_COMPLIANCE,
        "Fraction of samples meeting the target's bound, by class, window and target."
    );
    describe_gauge!(
        SLO_MEASURED,
        Unit::Seconds,
        "Measured latency at the target's quantile, by class, window and target."
    );
    describe_gauge!(
        SLO_BOUND,
        Unit::Seconds,
        "The target's latency bound, by class and target."
    );
}

/// The compliance gauges of one class, window and target.
struct ComplianceHandles {
    class: Class,
    window: SloWindow,
    kind: ViolationKind,
    ratio: Gauge,
    measured: Gauge,
}

/// The SLO part of [`super::StepMetrics`].
pub(super) struct SloMetrics {
    /// Per class, by [`ViolationKind::index`].
    violations: Vec<[Counter; 3]>,
    /// Ordered by class, then window, so one compliance query serves the targets of a
    /// (class, window) pair.
    compliance: Vec<ComplianceHandles>,
    reports_dropped: Counter,
    pub(super) compliance_every: Duration,
    last_compliance: Option<Timestamp>,
}

impl SloMetrics {
    /// Registers the violation counters of `classes` and, if given, the bound and
    /// compliance gauges of `slo`'s targets (bounds set now).
    pub(super) fn new(classes: &ClassSet, slo: Option<&SloConfig>) -> Self {
        let violations = classes
            .iter()
            .map(|c| {
                let name = classes.name(c).to_string();
                ViolationKind::ALL.map(|k| {
                    ::metrics::counter!(SLO_VIOLATIONS, LABEL_CLASS => name.clone(), LABEL_KIND => k.as_str())
                })
            })
            .collect();
        let mut compliance = Vec::new();
        if let Some(slo) = slo {
            let windows = slo.windows();
            for (c, targets) in classes.iter().zip(&slo.classes) {
                let name = classes.name(c).to_string();
                let targets: Vec<_> = [
                    (ViolationKind::Ttft, targets.ttft),
                    (ViolationKind::Tpot, targets.tpot),
                    (ViolationKind::EndToEnd, targets.e2e),
                ]
                .into_iter()
                .filter_map(|(kind, t)| t.map(|t| (kind, t)))
                .collect();
                for &(kind, target) in &targets {
                    ::metrics::gauge!(SLO_BOUND, LABEL_CLASS => name.clone(), LABEL_TARGET => kind.as_str())
                        .set(target.bound().as_secs_f64());
                }
                for &window in &windows {
                    for &(kind, _) in &targets {
                        let labels = [
                            (LABEL_CLASS, name.clone()),
                            (LABEL_WINDOW, window.label()),
                            (LABEL_TARGET, kind.as_str().to_string()),
                        ];
                        compliance.push(ComplianceHandles {
                            class: c,
                            window,
                            kind,
                            ratio: ::metrics::gauge!(SLO_COMPLIANCE, &labels),
                            measured: ::metrics::gauge!(SLO_MEASURED, &labels),
                        });
                    }
                }
            }
        }
        Self {
            violations,
            compliance,
            reports_dropped: ::metrics::counter!(SLO_REPORTS_DROPPED),
            compliance_every: DEFAULT_COMPLIANCE_INTERVAL,
            last_compliance: None,
        }
    }

    /// See [`super::StepMetrics::publish_slo`].
    pub(super) fn publish(&mut self, tracker: &mut SloTracker, now: Timestamp) {
        for (ci, counters) in self.violations.iter().enumerate() {
            let class = Class::from_index(ci as u8);
            for kind in ViolationKind::ALL {
                counters[kind.index()].absolute(tracker.violations_total(class, kind));
            }
        }
        self.reports_dropped.absolute(tracker.violations_dropped());
        let due = self
            .last_compliance
            .is_none_or(|last| now.saturating_since(last) >= self.compliance_every);
        if !due || self.compliance.is_empty() {
            return;
        }
        self.last_compliance = Some(now);
        // The queries below then read stored totals.
        tracker.sync(now);
        let mut cached: Option<ClassCompliance> = None;
        for h in &self.compliance {
            let fresh = cached.filter(|c| c.class == h.class && c.window == h.window);
            let cc = match fresh {
                Some(c) => Some(c),
                None => tracker.compliance(h.class, h.window, now),
            };
            cached = cc;
            let Some(t) = cc.as_ref().and_then(|c| c.target(h.kind)) else {
                continue;
            };
            h.ratio.set(t.fraction_met.unwrap_or(f64::NAN));
            h.measured
                .set(t.measured.map_or(f64::NAN, |m| m.as_secs_f64()));
        }
    }
}
