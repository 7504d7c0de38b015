//! `triage stress`: its arguments and its run (the harness is `triage_bench::stress`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use triage_bench::stress::{stress, StressOptions};

use super::print_and_save;

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

/// Runs `triage stress`; non-zero exit if an invariant broke.
pub fn run(a: StressArgs) -> ExitCode {
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
