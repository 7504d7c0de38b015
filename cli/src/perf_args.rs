//! Command-line arguments of `triage stress`, `triage bench-compare` and
//! `triage slo-overhead`, and their runs.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use triage::QueueOrder;
use triage_bench::bench_compare::{bench_compare, CompareOptions};
use triage_bench::slo_overhead::{slo_overhead, OverheadOptions};
use triage_bench::stress::{stress, StressOptions};

/// `triage stress`.
#[derive(Args, Debug)]
pub struct StressArgs {
    /// Queue depth to fill to and keep during the run.
    #[arg(long, default_value_t = 100_000)]
    queued: usize,
    /// API threads submitting, cancelling and reprioritizing during the run.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Operations per second per API thread.
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Fraction of operations that cancel a recent request.
    #[arg(long, default_value_t = 0.2)]
    cancel_fraction: f64,
    /// Fraction of operations that reprioritize a recent request.
    #[arg(long, default_value_t = 0.2)]
    reprioritize_fraction: f64,
    /// Seconds of the run phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Milliseconds of wall time between two engine steps.
    #[arg(long, default_value_t = 1.0)]
    step_ms: f64,
    /// Most running requests (the budget's max_num_seqs).
    #[arg(long, default_value_t = 256)]
    max_num_seqs: u32,
    /// Tokens per step (the budget's max_num_batched_tokens).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: u32,
    /// LOW's promotion threshold in ms (MEDIUM's is twice it, max wait three times), so
    /// aging happens within the run; 0 keeps the library defaults.
    #[arg(long, default_value_t = 2000)]
    aging_ms: u64,
    /// Seed of the workload.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run with this TOML config (see triage.example.toml) instead of the built-in one;
    /// the file is re-read and applied live when it changes or on SIGHUP.
    #[arg(long)]
    config: Option<PathBuf>,
}

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

/// A queue order by its configuration-file name.
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

fn parse_order(s: &str) -> Result<QueueOrder, String> {
    match s {
        "deadline" => Ok(QueueOrder::Deadline),
        "ladder" => Ok(QueueOrder::Ladder),
        _ => Err(format!("{s:?} is not a queue order: deadline or ladder")),
    }
}

/// Prints a command's text report and, if asked, writes the report as JSON to `json`
/// (exit code 2 if that fails).
pub fn print_and_save(
    text: &str,
    report: &impl serde::Serialize,
    json: Option<&std::path::Path>,
) -> Result<(), ExitCode> {
    print!("{text}");
    if let Some(p) = json {
        let out = serde_json::to_string_pretty(report).expect("report serialises");
        if let Err(e) = std::fs::write(p, out) {
            eprintln!("error: {}: {e}", p.display());
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

/// Runs `triage stress`; non-zero exit if an invariant broke.
pub fn run_stress(a: StressArgs) -> ExitCode {
    let o = StressOptions {
        queued: a.queued,
        threads: a.threads,
        rate: a.rate,
        cancel_fraction: a.cancel_fraction,
        reprioritize_fraction: a.reprioritize_fraction,
        duration: Duration::from_secs_f64(a.duration.max(0.0)),
        step_every: Duration::from_secs_f64(a.step_ms.max(0.0) / 1e3),
        max_num_seqs: a.max_num_seqs,
        max_batched_tokens: a.max_num_batched_tokens,
        aging_ms: (a.aging_ms > 0).then_some(a.aging_ms),
        seed: a.seed,
        progress: std::io::stderr().is_terminal(),
        config: a.config,
        ..StressOptions::default()
    };
    match stress(&o) {
        Ok(r) => {
            if let Err(code) = print_and_save(&r.text(), &r, a.json.as_deref()) {
                return code;
            }
            if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `triage bench-compare`.
pub fn run_bench_compare(a: BenchCompareArgs) -> ExitCode {
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

/// `triage slo-overhead`.
#[derive(Args, Debug)]
pub struct SloOverheadArgs {
    /// Requests queued in each of the two schedulers.
    #[arg(long, default_value_t = 100_000)]
    queued: usize,
    /// Admissions per step.
    #[arg(long, default_value_t = 256)]
    batch: u32,
    /// Steps per block.
    #[arg(long, default_value_t = 300)]
    block_steps: usize,
    /// Timed blocks per configuration (on and off alternate).
    #[arg(long, default_value_t = 28)]
    blocks: usize,
    /// Untimed blocks per configuration first.
    #[arg(long, default_value_t = 2)]
    warmup_blocks: usize,
    /// The schedulers' queue order: deadline (the default) or ladder.
    #[arg(long, default_value = "deadline", value_parser = parse_order)]
    order: QueueOrder,
    /// Also write the report (every block's means) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `triage slo-overhead`.
pub fn run_slo_overhead(a: SloOverheadArgs) -> ExitCode {
    let o = OverheadOptions {
        queued: a.queued,
        batch: a.batch,
        block_steps: a.block_steps,
        blocks: a.blocks,
        warmup_blocks: a.warmup_blocks,
        order: a.order,
    };
    match slo_overhead(&o) {
        Ok(r) => {
            if let Err(code) = print_and_save(&r.text(), &r, a.json.as_deref()) {
                return code;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
