//! `triage`: command-line tool of the triage scheduler.
//!
//! `triage simulate` with no arguments replays the bundled Azure 2023 conv + code
//! traces on a simulated Llama-2-7B / A100 engine through every registered policy
//! at several loads, prints a per-class table and writes JSON, CSV and SVG plots. The
//! other subcommands: `serve`, `tenants`, `stress`, `bench-compare`, `slo-overhead`.
//!
//! This file holds the list of subcommands and the dispatch; each subcommand's
//! arguments and run are in `commands/<name>.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

use commands::{bench_compare, serve, simulate, slo_overhead, stress, tenants};

// Feeds `triage_bench::heap_counter`, which `triage stress` reads for bytes per request.
#[global_allocator]
static ALLOC: triage_bench::counting_allocator::CountingAllocator =
    triage_bench::counting_allocator::CountingAllocator;

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
    Simulate(simulate::SimulateArgs),
    /// Load the scheduler to a large queue depth on the wall clock and check every invariant.
    Stress(stress::StressArgs),
    /// Run the same workloads through triage and naive baselines; print and write ratios.
    BenchCompare(bench_compare::BenchCompareArgs),
    /// The step's CPU time with SLO tracking on over the same step with it off, measured
    /// interleaved in one process.
    SloOverhead(slo_overhead::SloOverheadArgs),
    /// A vLLM-compatible HTTP server on the scheduler and the simulated engine, in real
    /// time, with Prometheus metrics, admin routes and a live dashboard (docs/serve.md).
    Serve(serve::ServeArgs),
    /// One heavy tenant and several light ones in one class: latency per tenant with
    /// fairness between tenants off and on.
    Tenants(tenants::TenantsArgs),
}

fn main() -> ExitCode {
    triage_bench::heap_counter::mark_installed();
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate(args) => simulate::run(args),
        Command::Stress(args) => stress::run(args),
        Command::BenchCompare(args) => bench_compare::run(args),
        Command::SloOverhead(args) => slo_overhead::run(args),
        Command::Tenants(args) => tenants::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
