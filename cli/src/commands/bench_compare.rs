//! `triage bench-compare`: its arguments and its run (the harness is
//! `triage_bench::bench_compare`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use triage::QueueOrder;
use triage_bench::bench_compare::{bench_compare, CompareOptions};

use super::parse_order;

/// `triage bench-compare`.
#[derive(Args, Debug)]
pub struct BenchCompareArgs {
    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-compare.json")]
    out: PathBuf,
    /// Producer counts of the submit workload, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    producers: Vec<usize>,
    /// Queue depths of the step workload, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    queued: Vec<usize>,
    /// Timed runs of the submit workload per producer count.
    #[arg(long, default_value_t = 21)]
    submit_runs: usize,
    /// Submits per run.
    #[arg(long, default_value_t = 65_536)]
    submit_ops: usize,
    /// Runs of the step workload per depth.
    #[arg(long, default_value_t = 3)]
    step_runs: usize,
    /// Most steps timed per structure and run.
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Most seconds of steps per structure and run.
    #[arg(long, default_value_t = 2.0)]
    step_seconds: f64,
    /// Triage's queue order: deadline (the default) or ladder.
    #[arg(long, default_value = "deadline", value_parser = parse_order)]
    order: QueueOrder,
    /// Producer counts of the contended workload, comma-separated; given with no value
    /// (`--contended-producers` alone, or `--contended-producers=`), the workload is skipped.
    #[arg(long, value_delimiter = ',', default_value = "1,3", num_args = 0..=1, default_missing_value = "", value_parser = parse_count_or_empty)]
    contended_producers: Vec<Option<usize>>,
    /// Depth the contended workload holds.
    #[arg(long, default_value_t = 100_000)]
    contended_queued: usize,
    /// Runs of the contended workload per structure and producer count.
    #[arg(long, default_value_t = 3)]
    contended_runs: usize,
    /// Seconds the engine steps per contended run.
    #[arg(long, default_value_t = 1.0)]
    contended_seconds: f64,
}

/// A producer count, or nothing for an empty value (which skips the workload).
fn parse_count_or_empty(s: &str) -> Result<Option<usize>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(format!("{s:?} is not a producer count (1 or more)")),
    }
}

/// Runs `triage bench-compare`.
pub fn run(a: BenchCompareArgs) -> ExitCode {
    let o = CompareOptions {
        producers: a.producers,
        submit_ops: a.submit_ops,
        submit_runs: a.submit_runs,
        queued: a.queued,
        step_runs: a.step_runs,
        steps: a.steps,
        step_seconds: a.step_seconds,
        order: a.order,
        contended_producers: a.contended_producers.into_iter().flatten().collect(),
        contended_queued: a.contended_queued,
        contended_runs: a.contended_runs,
        contended_seconds: a.contended_seconds,
        out: Some(a.out),
        progress: std::io::stderr().is_terminal(),
        ..CompareOptions::default()
    };
    match bench_compare(&o) {
        Ok(r) => {
            print!("{}", r.table());
            if let Some(p) = &o.out {
                println!("\nwrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
