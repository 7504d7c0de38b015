//! The experiment of `triage tenants`: one heavy tenant and several light ones share one class;
//! the bundled conversation trace is replayed through the triage policy with fairness
//! between tenants off and on, and each tenant's latency is reported side by side.
//!
//! Tenants are drawn per request (seeded): the heavy tenant sends `heavy_share` times as
//! many requests as each light tenant. Every request is MEDIUM, so class order plays no
//! part; what differs between the two runs is only `fairness.enabled`.

use serde::Serialize;

use crate::engine::{self, Outcome};
use crate::percentile::{nearest_rank, sort_samples};
use crate::policies::triage_policy::Triage;
use crate::policies::SimRequest;
use crate::rng::uniform_at;

use crate::run::{prepare, SimulateError, SimulateOptions};

/// The heavy tenant's id; light tenants are `1..=light`.
pub const HEAVY: u64 = 0;

/// What `triage tenants` runs.
#[derive(Debug, Clone)]
pub struct TenantsOptions {
    /// Trace, model, seed, window, engine and triage config (loads, policies and class mix
    /// are ignored: see the fields below).
    pub sim: SimulateOptions,
    /// Load multipliers to run at.
    pub loads: Vec<f64>,
    /// Light tenants.
    pub light: u32,
    /// How many times a light tenant's traffic the heavy tenant sends.
    pub heavy_share: f64,
}

impl TenantsOptions {
    /// The defaults: the bundled conversation trace, 4 light tenants, a heavy tenant sending
    /// 10× each of them, at loads 0.5 and 0.7.
    pub fn defaults() -> Self {
        let mut sim = SimulateOptions::defaults();
        sim.trace = "azure-conv".into();
        Self {
            sim,
            loads: vec![0.5, 0.7],
            light: 4,
            heavy_share: 10.0,
        }
    }
}

/// One tenant's latencies at one load, fairness off and on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantRow {
    /// Load multiplier.
    pub load: f64,
    /// Tenant id ([`HEAVY`] is the heavy one).
    pub tenant: u64,
    /// Requests it sent.
    pub requests: usize,
    /// TTFT p99 with fairness off, s.
    pub ttft_p99_off_s: Option<f64>,
    /// TTFT p99 with fairness on, s.
    pub ttft_p99_on_s: Option<f64>,
    /// TTFT p50 with fairness off, s.
    pub ttft_p50_off_s: Option<f64>,
    /// TTFT p50 with fairness on, s.
    pub ttft_p50_on_s: Option<f64>,
    /// Queue wait p99 with fairness off, s.
    pub wait_p99_off_s: Option<f64>,
    /// Queue wait p99 with fairness on, s.
    pub wait_p99_on_s: Option<f64>,
}

/// The tenant of request `id`: heavy with probability `share / (share + light)`, else one
/// of the light tenants uniformly.
pub fn tenant_of(seed: u64, id: u64, light: u32, share: f64) -> u64 {
    let u = uniform_at(seed, 0x007E_4A47, id);
    let p_heavy = share / (share + f64::from(light));
    if u < p_heavy || light == 0 {
        HEAVY
    } else {
        let v = (u - p_heavy) / (1.0 - p_heavy);
        1 + ((v * f64::from(light)) as u64).min(u64::from(light) - 1)
    }
}

/// Sorted TTFT and queue-wait samples of one tenant's finished requests.
fn samples(outcomes: &[Outcome], reqs: &[SimRequest], tenant: u64) -> (Vec<f64>, Vec<f64>) {
    let (mut ttft, mut wait) = (Vec::new(), Vec::new());
    for (o, r) in outcomes.iter().zip(reqs) {
        if r.tenant != Some(tenant) {
            continue;
        }
        if let Some(t) = o.first_token {
            ttft.push(t - o.arrival);
        }
        if let Some(s) = o.first_start {
            wait.push(s - o.arrival);
        }
    }
    sort_samples(&mut ttft);
    sort_samples(&mut wait);
    (ttft, wait)
}

/// Runs the comparison and returns one row per (load, tenant).
pub fn run_tenants(opts: &TenantsOptions) -> Result<Vec<TenantRow>, SimulateError> {
    let mut sim = opts.sim.clone();
    sim.class_mix = [0.0, 1.0, 0.0]; // one class: MEDIUM
    let mut p = prepare(&sim)?;
    for r in &mut p.workload.requests {
        r.tenant = Some(tenant_of(sim.seed, r.id, opts.light, opts.heavy_share));
    }
    let tenants = 0..=u64::from(opts.light);
    let requests: Vec<usize> = tenants
        .clone()
        .map(|t| {
            let of_t = |r: &&SimRequest| r.tenant == Some(t);
            p.workload.requests.iter().filter(of_t).count()
        })
        .collect();
    let mut rows = Vec::new();
    for &load in &opts.loads {
        let stream = p.workload.scaled(load);
        let mut results = Vec::new();
        for fair in [false, true] {
            let mut ctx = p.ctx.clone();
            let mut config = ctx.triage_config.clone().unwrap_or_default();
            config.fairness.enabled = fair;
            ctx.triage_config = Some(config);
            let mut policy = Triage::new(&ctx);
            let r = engine::run(&stream, &mut policy, &p.cost, &p.cfg, None)
                .map_err(SimulateError::Sim)?;
            results.push(r.outcomes);
        }
        for (tenant, &requests) in tenants.clone().zip(&requests) {
            let (ttft_off, wait_off) = samples(&results[0], &stream, tenant);
            let (ttft_on, wait_on) = samples(&results[1], &stream, tenant);
            rows.push(TenantRow {
                load,
                tenant,
                requests,
                ttft_p99_off_s: nearest_rank(&ttft_off, 99.0),
                ttft_p99_on_s: nearest_rank(&ttft_on, 99.0),
                ttft_p50_off_s: nearest_rank(&ttft_off, 50.0),
                ttft_p50_on_s: nearest_rank(&ttft_on, 50.0),
                wait_p99_off_s: nearest_rank(&wait_off, 99.0),
                wait_p99_on_s: nearest_rank(&wait_on, 99.0),
            });
        }
    }
    Ok(rows)
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |s| format!("{s:.2}"))
}

/// The rows as a text table.
pub fn table(rows: &[TenantRow]) -> String {
    let mut out = String::from(
        "load  tenant    requests  TTFT p99 off  TTFT p99 on  TTFT p50 off  TTFT p50 on  wait p99 off  wait p99 on\n",
    );
    for r in rows {
        let name = if r.tenant == HEAVY {
            "heavy".to_string()
        } else {
            format!("light{}", r.tenant)
        };
        out.push_str(&format!(
            "{:<5} {:<9} {:>8}  {:>12}  {:>11}  {:>12}  {:>11}  {:>12}  {:>11}\n",
            r.load,
            name,
            r.requests,
            secs(r.ttft_p99_off_s),
            secs(r.ttft_p99_on_s),
            secs(r.ttft_p50_off_s),
            secs(r.ttft_p50_on_s),
            secs(r.wait_p99_off_s),
            secs(r.wait_p99_on_s),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heavy_tenant_sends_its_share() {
        let n = 20_000;
        let heavy = (0..n)
            .filter(|&i| tenant_of(7, i, 4, 10.0) == HEAVY)
            .count();
        let frac = heavy as f64 / n as f64;
        assert!((frac - 10.0 / 14.0).abs() < 0.02, "{frac}");
        assert!((0..n).all(|i| tenant_of(7, i, 4, 10.0) <= 4));
        assert_eq!(tenant_of(7, 5, 4, 10.0), tenant_of(7, 5, 4, 10.0));
    }
}
