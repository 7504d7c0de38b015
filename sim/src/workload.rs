//! From trace files to the arrival stream the engine replays.
//!
//! * **Sources.** `azure-conv`, `azure-code` (bundled), `azure-mixed` (both), or a
//!   path to an Azure `.csv` / Mooncake `.jsonl` file. Several sources are merged
//!   by time: Azure traces are aligned on their wall-clock timestamps (the code
//!   trace starts 77 s after the conv trace), other traces start at 0.
//! * **Window.** `duration` keeps arrivals in the first `duration` seconds of the
//!   merged trace (before scaling).
//! * **Classes** (seeded, per request, independent of merge order): every
//!   `azure-code` request is LOW; any other request draws `u = uniform(seed,
//!   source, row)` and is HIGH if `u < mix[0]`, MEDIUM if `u < mix[0] + mix[1]`,
//!   else LOW. Default mix `0.3, 0.7, 0.0`: conv requests are HIGH with
//!   probability 0.3, else MEDIUM.
//! * **Context clipping.** Output is raised to at least 1 and capped at
//!   `max_model_len - 1`; the prompt is capped at `max_model_len - output`. Clipped
//!   requests are counted and reported.
//! * **Load.** [`Workload::scaled`] divides arrival times by the multiplier `k`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::class::{HIGH, LOW, MEDIUM};
use super::rng::uniform_at;
use super::trace::{read_trace_file, TraceError};
use crate::policies::SimRequest;

/// Where requests come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Bundled Azure 2023 conversation trace.
    AzureConv,
    /// Bundled Azure 2023 code trace (all LOW).
    AzureCode,
    /// A trace file.
    File(PathBuf),
}

impl Source {
    /// Parse a `--trace` value (comma-separated; `azure-mixed` = conv + code).
    pub fn parse_list(s: &str) -> Result<Vec<Source>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "azure-conv" => out.push(Source::AzureConv),
                "azure-code" => out.push(Source::AzureCode),
                "azure-mixed" => out.extend([Source::AzureConv, Source::AzureCode]),
                p if p.ends_with(".csv") || p.ends_with(".jsonl") || p.ends_with(".json") => {
                    out.push(Source::File(PathBuf::from(p)))
                }
                other => {
                    return Err(format!(
                        "unknown trace `{other}`; valid: azure-conv, azure-code, azure-mixed, or a path to a .csv (Azure) or .jsonl (Mooncake) file"
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err("no trace given".into());
        }
        Ok(out)
    }

    /// Short label for reports.
    pub fn label(&self) -> String {
        match self {
            Source::AzureConv => "azure-conv".into(),
            Source::AzureCode => "azure-code".into(),
            Source::File(p) => p.display().to_string(),
        }
    }

    fn path(&self, data_dir: &Path) -> PathBuf {
        match self {
            Source::AzureConv => data_dir.join("traces/azure2023_conv.csv"),
            Source::AzureCode => data_dir.join("traces/azure2023_code.csv"),
            Source::File(p) => p.clone(),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Sources to merge.
    pub sources: Vec<Source>,
    /// Keep only the first `duration` seconds (merged trace time), if set.
    pub duration_s: Option<f64>,
    /// Seed of class assignment.
    pub seed: u64,
    /// Class fractions `[HIGH, MEDIUM, LOW]` for non-code sources.
    pub class_mix: [f64; 3],
    /// Model context length for clipping.
    pub max_model_len: u32,
}

/// Per-source counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceStats {
    /// Source label.
    pub source: String,
    /// Rows in the file.
    pub rows: usize,
    /// Rows inside the time window.
    pub kept: usize,
    /// Kept rows whose prompt/output were clipped to the model context.
    pub clipped: usize,
    /// Kept rows with 0 output tokens, raised to 1.
    pub zero_output_raised: usize,
}

/// A classed arrival stream at load 1.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Requests sorted by arrival, ids `0..n` in that order.
    pub requests: Vec<SimRequest>,
    /// Counts per source.
    pub sources: Vec<SourceStats>,
}

fn class_for(source: &Source, seed: u64, stream: u64, row: u64, mix: &[f64; 3]) -> u8 {
    if *source == Source::AzureCode {
        return LOW;
    }
    let u = uniform_at(seed, stream, row);
    if u < mix[0] {
        HIGH
    } else if u < mix[0] + mix[1] {
        MEDIUM
    } else {
        LOW
    }
}

/// Clip `(prompt, output)` to a context of `ctx` tokens. Returns `(prompt, output, clipped)`.
pub fn clip_to_context(prompt: u32, output: u32, ctx: u32) -> (u32, u32, bool) {
    let out = output.max(1).min(ctx.saturating_sub(1).max(1));
    let p = prompt.min(ctx.saturating_sub(out).max(1));
    (p, out, p != prompt || out != output.max(1))
}

impl Workload {
    /// Read and merge the sources of `spec`; bundled traces come from `data_dir`.
    pub fn build(spec: &WorkloadSpec, data_dir: &Path) -> Result<Self, TraceError> {
        let mut traces = Vec::new();
        for s in &spec.sources {
            traces.push(read_trace_file(&s.path(data_dir))?);
        }
        let base = traces.iter().filter_map(|t| t.origin_100ns).min();
        // (time, source, row, prompt, output)
        let mut all: Vec<(f64, usize, usize, u32, u32)> = Vec::new();
        let mut stats = Vec::new();
        for (si, (src, tr)) in spec.sources.iter().zip(&traces).enumerate() {
            let shift = match (tr.origin_100ns, base) {
                (Some(o), Some(b)) => (o - b) as f64 / 1e7,
                _ => 0.0,
            };
            let mut st = SourceStats {
                source: src.label(),
                rows: tr.rows.len(),
                kept: 0,
                clipped: 0,
                zero_output_raised: 0,
            };
            for (ri, r) in tr.rows.iter().enumerate() {
                let t = r.time_s + shift;
                if spec.duration_s.is_some_and(|d| t >= d) {
                    continue;
                }
                let (p, o, clipped) =
                    clip_to_context(r.prompt_tokens, r.output_tokens, spec.max_model_len);
                st.kept += 1;
                st.clipped += usize::from(clipped);
                st.zero_output_raised += usize::from(r.output_tokens == 0);
                all.push((t, si, ri, p, o));
            }
            stats.push(st);
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let requests = all
            .iter()
            .enumerate()
            .map(|(id, &(t, si, ri, p, o))| SimRequest {
                id: id as u64,
                class: class_for(
                    &spec.sources[si],
                    spec.seed,
                    si as u64,
                    ri as u64,
                    &spec.class_mix,
                ),
                arrival: t,
                prompt_tokens: p,
                output_tokens: o,
                tenant: None,
            })
            .collect();
        Ok(Self {
            requests,
            sources: stats,
        })
    }

    /// The stream at load multiplier `k`: arrival times divided by `k`.
    pub fn scaled(&self, k: f64) -> Vec<SimRequest> {
        self.requests
            .iter()
            .map(|r| SimRequest {
                arrival: r.arrival / k,
                ..r.clone()
            })
            .collect()
    }

    /// Total clipped requests over all sources.
    pub fn clipped(&self) -> usize {
        self.sources.iter().map(|s| s.clipped).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        assert_eq!(clip_to_context(100, 10, 4096), (100, 10, false));
        assert_eq!(clip_to_context(5000, 10, 4096), (4086, 10, true));
        assert_eq!(clip_to_context(5000, 5000, 4096), (1, 4095, true));
        assert_eq!(clip_to_context(10, 0, 4096), (10, 1, false));
    }

    #[test]
    fn parse_sources() {
        assert_eq!(
            Source::parse_list("azure-mixed").unwrap(),
            vec![Source::AzureConv, Source::AzureCode]
        );
        assert!(Source::parse_list("nope")
            .unwrap_err()
            .contains("azure-mixed"));
    }
}
