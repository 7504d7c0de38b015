//! Latency samples and their percentiles, for `triage stress` and `triage bench-compare`.

use serde::Serialize;

use triage_sim::percentile::{nearest_rank, sort_samples};

/// Percentiles of a set of nanosecond samples (nearest rank).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median, ns.
    pub p50: f64,
    /// 99th percentile, ns.
    pub p99: f64,
    /// 99.9th percentile, ns.
    pub p999: f64,
    /// Largest sample, ns.
    pub max: f64,
    /// Mean, ns.
    pub mean: f64,
}

/// The nearest-rank `p`-th percentile (0–100) of sorted samples; 0 if there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    nearest_rank(sorted, p).unwrap_or(0.0)
}

impl Summary {
    /// Summarises `samples` (ns), sorting them in place.
    pub fn of(samples: &mut [f64]) -> Summary {
        sort_samples(samples);
        let count = samples.len();
        Summary {
            count,
            p50: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            p999: percentile(samples, 99.9),
            max: samples.last().copied().unwrap_or(0.0),
            mean: if count == 0 {
                0.0
            } else {
                samples.iter().sum::<f64>() / count as f64
            },
        }
    }

    /// Summarises integer nanosecond samples.
    pub fn of_u32(samples: &[u32]) -> Summary {
        let mut v: Vec<f64> = samples.iter().map(|&s| f64::from(s)).collect();
        Summary::of(&mut v)
    }
}

/// A duration in ns as a short human string (`850 ns`, `12.3 µs`, `4.56 ms`).
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}
