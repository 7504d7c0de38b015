//! The subcommands of `triage`, one file each (its clap arguments and its run), and the
//! two things several of them share: printing and saving a report, and parsing a queue
//! order.

use std::path::Path;
use std::process::ExitCode;

use triage::QueueOrder;

pub mod bench_compare;
pub mod serve;
pub mod simulate;
pub mod slo_overhead;
pub mod stress;
pub mod tenants;

/// Prints a command's text report and, if asked, writes the report as JSON to `json`
/// (exit code 2 if that fails).
pub fn print_and_save(
    text: &str,
    report: &impl serde::Serialize,
    json: Option<&Path>,
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

/// A queue order by its configuration-file name (`--order` of `bench-compare` and
/// `slo-overhead`).
pub fn parse_order(s: &str) -> Result<QueueOrder, String> {
    match s {
        "deadline" => Ok(QueueOrder::Deadline),
        "ladder" => Ok(QueueOrder::Ladder),
        _ => Err(format!("{s:?} is not a queue order: deadline or ladder")),
    }
}
