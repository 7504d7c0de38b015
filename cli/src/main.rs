//! `triage`: command-line tool of the triage scheduler.
//!
//! `triage simulate` with no arguments replays the bundled Azure 2023 conv + code
//! traces on a simulated Llama-2-7B / A100 engine through every registered policy
//! at several loads, prints a per-class table and writes JSON, CSV and SVG plots. The
//! other subcommands: `tenants`, `stress`, `bench-compare`, `slo-overhead`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod perf_args;

// Feeds `triage_bench::heap_counter`, which `triage stress` reads for bytes per request.
#[global_allocator]
static ALLOC: triage_bench::counting_allocator::CountingAllocator =
    triage_bench::counting_allocator::CountingAllocator;

use triage_cli::simulate::{simulate, SimulateOptions};
use triage_sim::model::model_names;
use triage_sim::policy::policy_names;

#[derive(Parser, Debug)]
#[command(
    name = "triage",
    version,
    about = "Priority request scheduler for LLM serving engines: tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replay request traces through scheduling policies on a simulated GPU engine.
    Simulate(SimulateArgs),
    /// Load the scheduler to a large queue depth on the wall clock and check every invariant.
    Stress(perf_args::StressArgs),
    /// Run the same workloads through triage and naive baselines; print and write ratios.
    BenchCompare(perf_args::BenchCompareArgs),
    /// The step's CPU time with SLO tracking on over the same step with it off, measured
    /// interleaved in one process.
    SloOverhead(perf_args::SloOverheadArgs),
    /// One heavy tenant and several light ones in one class: latency per tenant with
    /// fairness between tenants off and on.
    Tenants(TenantsArgs),
}

#[derive(Args, Debug)]
struct TenantsArgs {
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

fn run_tenants(a: TenantsArgs) -> ExitCode {
    match tenant_rows(&a) {
        Ok(rows) => match perf_args::print_and_save(
            &triage_cli::tenants::table(&rows),
            &rows,
            a.json.as_deref(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(code) => code,
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn tenant_rows(a: &TenantsArgs) -> Result<Vec<triage_cli::tenants::TenantRow>, String> {
    let mut o = triage_cli::tenants::TenantsOptions::defaults();
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
    triage_cli::tenants::run_tenants(&o).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
struct SimulateArgs {
    /// Trace(s), comma-separated: azure-conv, azure-code, azure-mixed, or a path to an
    /// Azure .csv or Mooncake .jsonl file.
    #[arg(long, default_value = "azure-mixed")]
    trace: String,
    /// Model + GPU (see --help for the list).
    #[arg(long, default_value = "llama2-7b-a100", long_help = models_help())]
    model: String,
    /// Policies to compare, comma-separated [default: all registered].
    #[arg(long, value_delimiter = ',', long_help = policies_help())]
    policies: Vec<String>,
    /// Load multipliers (arrival times divided by k), comma-separated [default: 0.15,0.3,0.5].
    #[arg(long, value_delimiter = ',')]
    loads: Vec<f64>,
    /// Seed of the class assignment.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output directory for report.json, CSV files and SVG plots.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Do not write any file (table only).
    #[arg(long)]
    no_output: bool,
    /// Do not draw SVG plots.
    #[arg(long)]
    no_plots: bool,
    /// Print the report as JSON (what report.json holds) instead of the table.
    #[arg(long)]
    json: bool,
    /// The `triage` policy's configuration (TOML, see triage.example.toml); its engine
    /// section is replaced by the simulated engine's limits.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Only replay the first SECONDS of the (merged) trace.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Class fractions HIGH,MEDIUM,LOW for non-code traces.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.7,0.0")]
    class_mix: Vec<f64>,
    /// Maximum running requests per iteration.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: u32,
    /// Token budget per iteration (prefill chunks + decode tokens).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: u32,
    /// Directory with traces/ and profiles/ [default: $TRIAGE_DATA_DIR or the repository's data/].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Worker threads [default: available cores].
    #[arg(long)]
    jobs: Option<usize>,
}

fn models_help() -> String {
    format!("Model + GPU. Valid: {}", model_names().join(", "))
}

fn policies_help() -> String {
    format!(
        "Policies to compare, comma-separated [default: all]. Valid: {}",
        policy_names().join(", ")
    )
}

fn options(a: SimulateArgs) -> Result<SimulateOptions, String> {
    let mut o = SimulateOptions::defaults();
    o.trace = a.trace;
    o.model = a.model;
    if !a.policies.is_empty() {
        o.policies = a.policies.iter().map(|p| p.trim().to_string()).collect();
    }
    if !a.loads.is_empty() {
        o.loads = a.loads;
    }
    o.seed = a.seed;
    o.out = (!a.no_output).then_some(a.out);
    o.plots = !a.no_plots;
    o.duration_s = a.duration;
    match a.class_mix[..] {
        [h, m, l] => o.class_mix = [h, m, l],
        _ => {
            return Err(format!(
                "--class-mix needs three fractions HIGH,MEDIUM,LOW, got {:?}",
                a.class_mix
            ))
        }
    }
    o.max_num_seqs = a.max_num_seqs;
    o.max_num_batched_tokens = a.max_num_batched_tokens;
    if let Some(d) = a.data_dir {
        o.data_dir = d;
    }
    if let Some(j) = a.jobs {
        o.jobs = j.max(1);
    }
    o.progress = std::io::stderr().is_terminal();
    if let Some(p) = a.config {
        o.triage_config = Some(
            triage::SchedulerConfig::from_path(&p).map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    Ok(o)
}

fn main() -> ExitCode {
    triage_bench::heap_counter::mark_installed();
    let cli = Cli::parse();
    match cli.command {
        Command::Stress(args) => perf_args::run_stress(args),
        Command::BenchCompare(args) => perf_args::run_bench_compare(args),
        Command::SloOverhead(args) => perf_args::run_slo_overhead(args),
        Command::Tenants(args) => run_tenants(args),
        Command::Simulate(args) => {
            let json = args.json;
            let opts = match options(args) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match simulate(&opts) {
                Ok(report) if json => match report.json() {
                    Ok(s) => {
                        println!("{s}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(2)
                    }
                },
                Ok(report) => {
                    print!("{}", report.table());
                    if let Some(dir) = &opts.out {
                        println!(
                            "\nwrote {}/{{report.json, classes.csv, runs.csv{}}}",
                            dir.display(),
                            if opts.plots { ", *.svg" } else { "" }
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
