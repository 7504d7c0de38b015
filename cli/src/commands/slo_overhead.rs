//! `triage slo-overhead`: its arguments and its run (the harness is
//! `triage_bench::slo_overhead`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use triage::QueueOrder;
use triage_bench::slo_overhead::{slo_overhead, OverheadOptions};

use super::{parse_order, print_and_save};

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
pub fn run(a: SloOverheadArgs) -> ExitCode {
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
