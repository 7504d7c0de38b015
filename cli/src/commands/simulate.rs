//! `triage simulate`: its arguments, its progress bar and its run (the simulation is
//! `triage_sim::run`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use triage_sim::model::model_names;
use triage_sim::policies::policy_names;
use triage_sim::run::{simulate_with_progress, SimulateOptions, UNITS_PER_RUN};

/// `triage simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
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
    config: Option<PathBuf>,
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

/// Runs `triage simulate`: the table (or the JSON report with `--json`) on stdout.
pub fn run(a: SimulateArgs) -> ExitCode {
    let json = a.json;
    let opts = match options(a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        let runs = (opts.loads.len() * opts.policies.len()) as u64;
        let b = ProgressBar::new(runs * UNITS_PER_RUN);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} simulating {wide_bar} {percent:>3}% ({elapsed})",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let result = simulate_with_progress(&opts, &|n| bar.inc(n));
    bar.finish_and_clear();
    match result {
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

/// The simulation's options from the arguments (an error for a malformed `--class-mix`
/// or an unreadable `--config`).
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
    if let Some(p) = a.config {
        o.triage_config = Some(
            triage::SchedulerConfig::from_path(&p).map_err(|e| format!("{}: {e}", p.display()))?,
        );
    }
    Ok(o)
}
