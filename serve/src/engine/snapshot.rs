//! The engine's answer to a query: the queue, the engine and the conservation law at the
//! end of a step ([`Snapshot`]).

use std::time::{Duration, Instant};

use triage::{Clock, SloMetric, SloWindow};

use super::Loop;
use crate::protocol::{
    ClassSnapshot, ComplianceSnapshot, ConservationSnapshot, CountersSnapshot, EngineSnapshot,
    Percentiles, Snapshot, ViolationSnapshot,
};

impl Loop {
    /// What `GET /admin/queue` and the dashboard show, as of now.
    pub(super) fn snapshot(&self) -> Snapshot {
        let now = self.clock.now();
        let wall = Instant::now();
        let classes = self.sched.classes();
        let slo = self.sched.slo();
        let windows = slo.windows();
        let minute = windows.first().copied().unwrap_or(SloWindow::Cumulative);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let class_snapshots = classes
            .iter()
            .map(|c| {
                let cc = self.sched.class_counters(c);
                let oldest = self
                    .reqs
                    .values()
                    .filter(|r| r.class == c && r.run.is_none())
                    .map(|r| wall.saturating_duration_since(r.arrival))
                    .max()
                    .unwrap_or_default();
                let pct = |q: f64| slo.percentile(c, SloMetric::Ttft, minute, q, now).map(ms);
                let mut targets = Vec::new();
                for &w in &windows {
                    let Some(comp) = slo.compliance(c, w, now) else {
                        continue;
                    };
                    for (name, t) in [("ttft", comp.ttft), ("tpot", comp.tpot), ("e2e", comp.e2e)] {
                        if let Some(t) = t {
                            targets.push(ComplianceSnapshot {
                                window: w.label(),
                                target: name.into(),
                                bound_ms: ms(t.bound),
                                quantile: t.quantile,
                                measured_ms: t.measured.map(ms),
                                fraction_met: t.fraction_met,
                                met: t.is_met(),
                                samples: t.samples,
                            });
                        }
                    }
                }
                let range = self
                    .sched
                    .config()
                    .classes
                    .get(c.index())
                    .map_or([0, 0], |cfg| cfg.vllm_priority);
                ClassSnapshot {
                    name: classes.name(c).to_string(),
                    vllm_priority: range,
                    waiting: cc.waiting,
                    relegated: self.sched.relegated_in(c) as u64,
                    running: cc.running,
                    oldest_wait_s: oldest.as_secs_f64(),
                    counters: CountersSnapshot {
                        submitted: cc.submitted,
                        refused: cc.refused,
                        admitted: cc.admitted,
                        preempted: cc.preempted,
                        finished: cc.finished,
                        cancelled: cc.cancelled,
                        timed_out: cc.timed_out,
                        shed: cc.shed,
                    },
                    ttft_ms: Percentiles {
                        p50: pct(0.5),
                        p90: pct(0.9),
                        p99: pct(0.99),
                        samples: slo.samples(c, SloMetric::Ttft, minute, now),
                    },
                    slo: targets,
                }
            })
            .collect();
        let used = self.held_blocks();
        let total = self.sched.config().engine.total_blocks;
        let (drain, tokens) = self.rates_per_s();
        let cons = self.sched.conservation();
        Snapshot {
            model: self.spec.model.name.to_string(),
            uptime_s: wall.duration_since(self.started).as_secs_f64(),
            shutting_down: self.shutdown.is_some(),
            classes: class_snapshots,
            engine: EngineSnapshot {
                running: self.sched.running() as u64,
                waiting: self.sched.waiting() as u64,
                kv_blocks_used: used,
                kv_blocks_total: total,
                kv_usage: f64::from(used) / f64::from(total.max(1)),
                iterations: self.iterations,
                output_tokens_per_s: tokens,
                drain_per_s: drain,
                max_num_seqs: self.spec.max_num_seqs,
                max_num_batched_tokens: self.spec.max_num_batched_tokens,
                speed: self.spec.speed,
            },
            conservation: ConservationSnapshot {
                counts: cons,
                balanced: cons.is_balanced(),
            },
            violations: self
                .recent
                .iter()
                .map(|(v, at)| {
                    let kind = v.kind.as_str();
                    let class = classes.name(v.class).to_string();
                    ViolationSnapshot {
                        id: v.id.0,
                        reason: format!(
                            "{kind} {:.0} ms over the {:.0} ms bound{}",
                            ms(v.observed),
                            ms(v.bound),
                            if v.while_queued {
                                " while still queued"
                            } else {
                                ""
                            }
                        ),
                        class,
                        kind: kind.to_string(),
                        bound_ms: ms(v.bound),
                        observed_ms: ms(v.observed),
                        while_queued: v.while_queued,
                        age_s: wall.saturating_duration_since(*at).as_secs_f64(),
                    }
                })
                .collect(),
        }
    }
}
