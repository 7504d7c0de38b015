//! Per-class latency statistics and SLO attainment of one run.
//!
//! Definitions (all times in seconds):
//! * TTFT = first output token - arrival; end-to-end = last token - arrival.
//! * TPOT of a request = (last token - first token) / (output tokens - 1), i.e. its
//!   mean inter-token time (vLLM benchmark definition); requests with one output
//!   token have none. "TPOT p99" is the p99 of that per-request mean.
//! * Queue wait = first admission - arrival (later re-admissions after preemption
//!   do not count).
//! * Percentiles are exact nearest-rank over finished requests of the class.
//! * SLO attainment = requests meeting the class target / all requests of the class
//!   (refused requests count as misses). The run's total is the same over all classes.
//! * Goodput = output tokens of the requests that met their class's target, per second of
//!   the arrivals' span (first to last arrival): the same denominator for every policy at
//!   a load, so a policy cannot raise it by doing less work or finishing sooner.

use serde::Serialize;

use super::class::{self, SloKind, SloTarget, NUM_CLASSES};
use super::engine::RunResult;
use super::percentile::{nearest_rank, sort_samples};

/// Statistics of one class in one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassStats {
    /// Class number.
    pub class: u8,
    /// Class name.
    pub name: String,
    /// Requests of the class.
    pub count: usize,
    /// Finished requests.
    pub finished: usize,
    /// Refused requests.
    pub refused: usize,
    /// TTFT p50.
    pub ttft_p50_s: Option<f64>,
    /// TTFT p95.
    pub ttft_p95_s: Option<f64>,
    /// TTFT p99.
    pub ttft_p99_s: Option<f64>,
    /// p99 of per-request mean inter-token time.
    pub tpot_p99_s: Option<f64>,
    /// End-to-end p99.
    pub e2e_p99_s: Option<f64>,
    /// Longest queue wait (arrival to first admission).
    pub max_queue_wait_s: Option<f64>,
    /// The class's SLO, e.g. `TTFT<=0.5s`.
    pub slo: String,
    /// Fraction of requests meeting the SLO (`None` if the class is empty).
    pub slo_attainment: Option<f64>,
    /// Requests meeting the SLO.
    pub slo_met: usize,
    /// Output tokens of the requests meeting the SLO.
    pub slo_met_tokens: u64,
    /// Preemption events suffered by requests of the class.
    pub preemptions: u64,
    /// Sorted TTFT samples (for CDF plots; not serialised).
    #[serde(skip)]
    pub ttft_sorted: Vec<f64>,
}

/// Whole-run statistics of one policy at one load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunSummary {
    /// Policy name.
    pub policy: String,
    /// Load multiplier.
    pub load: f64,
    /// Requests replayed.
    pub requests: usize,
    /// Finished requests.
    pub finished: usize,
    /// Refused requests.
    pub refused: usize,
    /// Engine iterations.
    pub iterations: u64,
    /// First arrival to last completion, s.
    pub makespan_s: f64,
    /// Finished requests per second of makespan.
    pub throughput_req_s: f64,
    /// Output tokens per second of makespan.
    pub throughput_tok_s: f64,
    /// Busy time / makespan.
    pub utilisation: f64,
    /// Most KV blocks in use at once.
    pub peak_blocks_used: u32,
    /// Most running requests at once.
    pub peak_running: u32,
    /// Preemption events.
    pub preemptions: u64,
    /// Requests meeting their class's SLO, all classes.
    pub slo_met: usize,
    /// Fraction of all requests meeting their class's SLO (refused ones count as misses).
    pub slo_attainment: f64,
    /// Output tokens of the requests meeting their SLO per second of the arrivals' span.
    pub goodput_tok_s: f64,
    /// Per-class statistics (HIGH, MEDIUM, LOW).
    pub classes: Vec<ClassStats>,
}

fn meets(slo: &SloTarget, ttft: Option<f64>, e2e: Option<f64>) -> bool {
    let v = match slo.kind {
        SloKind::Ttft => ttft,
        SloKind::EndToEnd => e2e,
    };
    v.is_some_and(|x| x <= slo.target_s + 1e-12)
}

/// Summarise `res` of `policy` at `load` against `slos`.
pub fn summarize(
    policy: &str,
    load: f64,
    res: &RunResult,
    slos: &[SloTarget; NUM_CLASSES],
) -> RunSummary {
    let mut classes = Vec::new();
    for c in 0..NUM_CLASSES as u8 {
        let slo = slos[c as usize];
        let mut ttft = Vec::new();
        let mut tpot = Vec::new();
        let mut e2e = Vec::new();
        let mut max_wait: Option<f64> = None;
        let (mut count, mut finished, mut refused, mut met, mut pre) = (0, 0, 0, 0, 0u64);
        let mut met_tokens = 0u64;
        for o in res.outcomes.iter().filter(|o| o.class == c) {
            count += 1;
            pre += u64::from(o.preemptions);
            if o.rejected.is_some() {
                refused += 1;
                continue;
            }
            let t = o.first_token.map(|f| f - o.arrival);
            let e = o.finish.map(|f| f - o.arrival);
            if let Some(w) = o.first_start.map(|s| s - o.arrival) {
                max_wait = Some(max_wait.map_or(w, |m: f64| m.max(w)));
            }
            if let (Some(t), Some(e)) = (t, e) {
                finished += 1;
                ttft.push(t);
                e2e.push(e);
                if o.generated_tokens >= 2 {
                    tpot.push((e - t) / f64::from(o.generated_tokens - 1));
                }
            }
            if meets(&slo, t, e) {
                met += 1;
                met_tokens += u64::from(o.generated_tokens);
            }
        }
        sort_samples(&mut ttft);
        sort_samples(&mut tpot);
        sort_samples(&mut e2e);
        classes.push(ClassStats {
            class: c,
            name: class::name(c),
            count,
            finished,
            refused,
            ttft_p50_s: nearest_rank(&ttft, 50.0),
            ttft_p95_s: nearest_rank(&ttft, 95.0),
            ttft_p99_s: nearest_rank(&ttft, 99.0),
            tpot_p99_s: nearest_rank(&tpot, 99.0),
            e2e_p99_s: nearest_rank(&e2e, 99.0),
            max_queue_wait_s: max_wait,
            slo: slo.describe(),
            slo_attainment: (count > 0).then(|| met as f64 / count as f64),
            slo_met: met,
            slo_met_tokens: met_tokens,
            preemptions: pre,
            ttft_sorted: ttft,
        });
    }
    let finished: usize = classes.iter().map(|c| c.finished).sum();
    let refused: usize = classes.iter().map(|c| c.refused).sum();
    let out_tokens: u64 = res
        .outcomes
        .iter()
        .filter(|o| o.finish.is_some())
        .map(|o| u64::from(o.generated_tokens))
        .sum();
    let makespan = (res.end_s - res.start_s).max(0.0);
    let per_s = |x: f64| if makespan > 0.0 { x / makespan } else { 0.0 };
    let (first, last) = res
        .outcomes
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), o| {
            (a.min(o.arrival), b.max(o.arrival))
        });
    let span = last - first;
    let slo_met: usize = classes.iter().map(|c| c.slo_met).sum();
    let met_tokens: u64 = classes.iter().map(|c| c.slo_met_tokens).sum();
    RunSummary {
        policy: policy.to_string(),
        load,
        requests: res.outcomes.len(),
        finished,
        refused,
        iterations: res.iterations,
        makespan_s: makespan,
        throughput_req_s: per_s(finished as f64),
        throughput_tok_s: per_s(out_tokens as f64),
        utilisation: per_s(res.busy_s),
        peak_blocks_used: res.peak_blocks_used,
        peak_running: res.peak_running,
        preemptions: classes.iter().map(|c| c.preemptions).sum(),
        slo_met,
        slo_attainment: if res.outcomes.is_empty() {
            0.0
        } else {
            slo_met as f64 / res.outcomes.len() as f64
        },
        goodput_tok_s: if span > 0.0 {
            met_tokens as f64 / span
        } else {
            0.0
        },
        classes,
    }
}
