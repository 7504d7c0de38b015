//! The simulation report: a table for the terminal, JSON and CSV files.
//!
//! Everything written is a pure function of the inputs and the seed: vectors in
//! a fixed order, no hash-map iteration, no wall-clock times.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde::Serialize;

use super::class::SloTarget;
use super::cost::{FitReport, VidurCost};
use super::engine::EngineConfig;
use super::metrics::RunSummary;
use super::model::ModelSpec;
use super::workload::SourceStats;

/// Inputs of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    /// Trace sources.
    pub traces: Vec<String>,
    /// Model.
    pub model: ModelSpec,
    /// Engine limits.
    pub engine: EngineConfig,
    /// Policies, in run order.
    pub policies: Vec<String>,
    /// Load multipliers.
    pub loads: Vec<f64>,
    /// Seed.
    pub seed: u64,
    /// Trace window, s.
    pub duration_s: Option<f64>,
    /// Class mix of non-code sources.
    pub class_mix: [f64; 3],
    /// SLO targets per class.
    pub slos: Vec<SloTarget>,
}

/// The workload as replayed at load 1.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadReport {
    /// Requests.
    pub requests: usize,
    /// Requests per class (HIGH, MEDIUM, LOW).
    pub per_class: Vec<usize>,
    /// Trace span at load 1, s.
    pub span_s: f64,
    /// Per-source counts (incl. clipped requests).
    pub sources: Vec<SourceStats>,
    /// Requests clipped to the model context.
    pub clipped: usize,
}

/// The cost model and how well it fits.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    /// Coefficients.
    pub params: VidurCost,
    /// Fit errors.
    pub fit: FitReport,
}

/// Everything `triage simulate` writes.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Producer.
    pub tool: String,
    /// Inputs.
    pub config: ReportConfig,
    /// Workload.
    pub workload: WorkloadReport,
    /// Cost model.
    pub cost_model: CostReport,
    /// One summary per (load, policy), loads outer.
    pub runs: Vec<RunSummary>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.0}", x * 1e3))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.1}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = &self.workload;
        let _ = writeln!(
            s,
            "workload: {} requests over {:.0} s at load 1 (HIGH {}, MEDIUM {}, LOW {}); {} clipped to the {}-token context",
            w.requests,
            w.span_s,
            w.per_class.first().unwrap_or(&0),
            w.per_class.get(1).unwrap_or(&0),
            w.per_class.get(2).unwrap_or(&0),
            w.clipped,
            self.config.engine.max_model_len
        );
        let e = &self.config.engine;
        let _ = writeln!(
            s,
            "engine: {} | {} KV blocks x {} tokens | max_num_seqs {} | max_num_batched_tokens {} | linear fit max err {:.1}%",
            self.config.model.name,
            e.total_blocks,
            e.block_size,
            e.max_num_seqs,
            e.max_num_batched_tokens,
            self.cost_model.fit.linear.max_rel * 100.0
        );
        let header = format!(
            "{:>5} {:<14} {:<7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:<12} {:>7} {:>7} {:>7}",
            "load",
            "policy",
            "class",
            "n",
            "TTFTp50",
            "TTFTp95",
            "TTFTp99",
            "TPOTp99",
            "E2Ep99",
            "maxwait",
            "SLO",
            "attain",
            "preempt",
            "refused"
        );
        let _ = writeln!(s, "\n{header}");
        let _ = writeln!(
            s,
            "{:>5} {:<14} {:<7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "", "", "", "", "ms", "ms", "ms", "ms", "s", "s"
        );
        let mut last_load = None;
        for r in &self.runs {
            if last_load.is_some_and(|l| l != r.load) {
                let _ = writeln!(s);
            }
            last_load = Some(r.load);
            for c in &r.classes {
                let _ = writeln!(
                    s,
                    "{:>5} {:<14} {:<7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:<12} {:>7} {:>7} {:>7}",
                    r.load,
                    r.policy,
                    c.name,
                    c.count,
                    ms(c.ttft_p50_s),
                    ms(c.ttft_p95_s),
                    ms(c.ttft_p99_s),
                    ms(c.tpot_p99_s),
                    secs(c.e2e_p99_s),
                    secs(c.max_queue_wait_s),
                    c.slo,
                    pct(c.slo_attainment),
                    c.preemptions,
                    c.refused
                );
            }
            let _ = writeln!(
                s,
                "{:>5} {:<14} {:<7} {:>6} {:>53} {:<12} {:>7} {:>7} {:>7}",
                r.load,
                r.policy,
                "total",
                r.requests,
                format!("goodput {:.0} tok/s", r.goodput_tok_s),
                "in SLO",
                pct(Some(r.slo_attainment)),
                r.preemptions,
                r.refused
            );
        }
        let _ = writeln!(
            s,
            "\n{:>5} {:<14} {:>9} {:>7} {:>8} {:>9} {:>10} {:>8} {:>10} {:>9} {:>10}",
            "load",
            "policy",
            "finished",
            "in SLO",
            "goodput",
            "req/s",
            "out tok/s",
            "util",
            "makespan",
            "preempt",
            "iters"
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{:>5} {:<14} {:>9} {:>6.1}% {:>8.0} {:>9.2} {:>10.0} {:>7.1}% {:>9.0}s {:>9} {:>10}",
                r.load,
                r.policy,
                r.finished,
                r.slo_attainment * 100.0,
                r.goodput_tok_s,
                r.throughput_req_s,
                r.throughput_tok_s,
                r.utilisation * 100.0,
                r.makespan_s,
                r.preemptions,
                r.iterations
            );
        }
        s
    }

    /// Per (load, policy, class) rows as CSV.
    pub fn classes_csv(&self) -> String {
        let mut s = String::from(
            "load,policy,class,count,finished,refused,ttft_p50_s,ttft_p95_s,ttft_p99_s,tpot_p99_s,e2e_p99_s,max_queue_wait_s,slo,slo_attainment,preemptions\n",
        );
        let o = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
        for r in &self.runs {
            for c in &r.classes {
                let _ = writeln!(
                    s,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.load,
                    r.policy,
                    c.name,
                    c.count,
                    c.finished,
                    c.refused,
                    o(c.ttft_p50_s),
                    o(c.ttft_p95_s),
                    o(c.ttft_p99_s),
                    o(c.tpot_p99_s),
                    o(c.e2e_p99_s),
                    o(c.max_queue_wait_s),
                    c.slo,
                    o(c.slo_attainment),
                    c.preemptions
                );
            }
        }
        s
    }

    /// Per (load, policy) rows as CSV.
    pub fn runs_csv(&self) -> String {
        let mut s = String::from(
            "load,policy,requests,finished,refused,iterations,makespan_s,throughput_req_s,throughput_tok_s,utilisation,peak_blocks_used,peak_running,preemptions\n",
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.load,
                r.policy,
                r.requests,
                r.finished,
                r.refused,
                r.iterations,
                r.makespan_s,
                r.throughput_req_s,
                r.throughput_tok_s,
                r.utilisation,
                r.peak_blocks_used,
                r.peak_running,
                r.preemptions
            );
        }
        s
    }

    /// Pretty JSON.
    pub fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self).map(|mut s| {
            s.push('\n');
            s
        })
    }

    /// Write `report.json`, `classes.csv` and `runs.csv` into `dir` (created if needed).
    pub fn write_files(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = self.json().map_err(io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("classes.csv"), self.classes_csv())?;
        std::fs::write(dir.join("runs.csv"), self.runs_csv())?;
        Ok(())
    }
}
