//! `triage tenants`: its arguments and its run (the comparison is
//! `triage_sim::tenants`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use triage_sim::tenants::{run_tenants, table, TenantRow, TenantsOptions};

use super::print_and_save;

/// `triage tenants`.
#[derive(Args, Debug)]
pub struct TenantsArgs {
    /// Load multipliers (arrival times divided by k), comma-separated [default: 0.5,0.7].
    #[arg(long, value_delimiter = ',')]
    loads: Vec<f64>,
    /// Light tenants.
    #[arg(long, default_value_t = 4)]
    light: u32,
    /// How many times a light tenant's traffic the heavy tenant sends.
    #[arg(long, default_value_t = 10.0)]
    heavy_share: f64,
    /// Seed of the tenant assignment.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Keep only the first N seconds of the trace.
    #[arg(long)]
    duration: Option<f64>,
    /// Scheduler configuration (TOML) for the triage policy; fairness is set per run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `triage tenants`.
pub fn run(a: TenantsArgs) -> ExitCode {
    match rows(&a) {
        Ok(rows) => match print_and_save(&table(&rows), &rows, a.json.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The options the arguments name, run.
fn rows(a: &TenantsArgs) -> Result<Vec<TenantRow>, String> {
    let mut o = TenantsOptions::defaults();
    if !a.loads.is_empty() {
        o.loads = a.loads.clone();
    }
    o.light = a.light;
    o.heavy_share = a.heavy_share;
    o.sim.seed = a.seed;
    o.sim.duration_s = a.duration;
    if let Some(p) = &a.config {
        o.sim.triage_config = Some(
            triage::SchedulerConfig::from_path(p).map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    run_tenants(&o).map_err(|e| e.to_string())
}
