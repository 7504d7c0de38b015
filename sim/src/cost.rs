//! Iteration-time cost model of one engine step, calibrated on Vidur profiles.
//!
//! ```text
//! t_iter = overhead
//!        + linear(batched_tokens)                                  (piecewise-linear fit, Vidur mlp.csv)
//!        + n_layers * sum_decode(context) * kv_bytes_per_token_layer / hbm_bandwidth
//!        + n_layers * sum_prefill_chunks(a*c + b*c*kv + q*c^2) * attn_scale
//! ```
//! `linear` is fitted at start-up from the bundled CSV (TP=1 rows, 32 layers +
//! embedding); the prefill-attention coefficients `a, b, q` are fitted to the four
//! A100 attention rows quoted in `data/profiles/README.md` (Vidur attention.csv);
//! `attn_scale` is 1 on A100 and, on H100, the H100/A100 ratio of the fitted linear
//! time at 4096 tokens (about 0.32). See `docs/simulator.md` for numbers and errors.

use std::path::Path;

use serde::Serialize;

use super::fit::{fit_error, power_of_two_knots, relative_lsq, FitError, PiecewiseLinear};
use super::model::ModelSpec;
use super::profile::{read_profile, ProfileError, ProfilePoint};

/// Fixed per-iteration overhead (CPU scheduling, input preparation, LM head and
/// sampling, which the Vidur linear profile does not include): an assumption.
pub const DEFAULT_OVERHEAD_MS: f64 = 2.0;

/// Vidur attention rows (A100, Llama-2-7B, TP=1, FlashAttention, ms per layer):
/// `(chunk tokens, kv tokens already in cache, time)`, from `data/profiles/README.md`.
pub const PREFILL_ATTN_ROWS: [(f64, f64, f64); 4] = [
    (640.0, 0.0, 0.138),
    (608.0, 1024.0, 0.213),
    (3072.0, 0.0, 1.61),
    (3008.0, 1024.0, 1.88),
];

/// Vidur decode attention rows (same source): `(batch, context tokens, ms per layer)`.
pub const DECODE_ATTN_ROWS: [(f64, f64, f64); 5] = [
    (1.0, 1728.0, 0.025),
    (8.0, 1728.0, 0.184),
    (32.0, 1728.0, 0.521),
    (64.0, 1728.0, 1.016),
    (128.0, 1664.0, 1.75),
];

/// The work of one engine iteration, as the cost model sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IterationWork {
    /// Total tokens in the batch (prefill chunk tokens + one per decoding request).
    pub batched_tokens: u32,
    /// Sum over decoding requests of their context length (tokens in KV incl. the new one).
    pub decode_context_tokens: u64,
    /// Number of decoding requests.
    pub decode_seqs: u32,
    /// Prefill chunks as `(chunk tokens, tokens already computed before the chunk)`.
    pub prefill_chunks: Vec<(u32, u32)>,
}

impl IterationWork {
    /// Reset to an empty batch, keeping the allocation.
    pub fn clear(&mut self) {
        self.batched_tokens = 0;
        self.decode_context_tokens = 0;
        self.decode_seqs = 0;
        self.prefill_chunks.clear();
    }
}

/// Anything that can price an iteration. Tests inject simple constant models.
pub trait CostModel {
    /// Duration of an iteration doing `work`, in seconds.
    fn iteration_time(&self, work: &IterationWork) -> f64;
}

/// A cost model that charges `fixed_s` per iteration plus `per_token_s` per batched token.
#[derive(Debug, Clone, Copy)]
pub struct LinearCost {
    /// Seconds per iteration.
    pub fixed_s: f64,
    /// Seconds per batched token.
    pub per_token_s: f64,
}

impl CostModel for LinearCost {
    fn iteration_time(&self, work: &IterationWork) -> f64 {
        self.fixed_s + self.per_token_s * f64::from(work.batched_tokens)
    }
}

/// The calibrated model (see the module docs).
#[derive(Debug, Clone, Serialize)]
pub struct VidurCost {
    /// Whole-model linear time in ms as a function of batched tokens.
    pub linear_ms: PiecewiseLinear,
    /// Per-layer prefill attention coefficients `[a, b, q]` (ms), before `attn_scale`.
    pub prefill_attn: [f64; 3],
    /// Multiplier on prefill attention for this GPU relative to A100.
    pub attn_scale: f64,
    /// Decode attention seconds per context token per iteration (all layers).
    pub decode_s_per_ctx_token: f64,
    /// Transformer layers.
    pub n_layers: u32,
    /// Fixed per-iteration overhead, ms.
    pub overhead_ms: f64,
}

impl VidurCost {
    /// Per-layer prefill attention time (ms) of a chunk of `c` tokens after `kv` cached ones, A100.
    pub fn prefill_attn_layer_ms(coef: &[f64; 3], c: f64, kv: f64) -> f64 {
        (coef[0] * c + coef[1] * c * kv + coef[2] * c * c).max(0.0)
    }
}

impl CostModel for VidurCost {
    fn iteration_time(&self, w: &IterationWork) -> f64 {
        if w.batched_tokens == 0 {
            return 0.0;
        }
        let linear = self.linear_ms.eval(f64::from(w.batched_tokens));
        let prefill: f64 = w
            .prefill_chunks
            .iter()
            .map(|&(c, kv)| {
                Self::prefill_attn_layer_ms(&self.prefill_attn, f64::from(c), f64::from(kv))
            })
            .sum::<f64>()
            * f64::from(self.n_layers)
            * self.attn_scale;
        (self.overhead_ms + linear + prefill) / 1e3
            + self.decode_s_per_ctx_token * w.decode_context_tokens as f64
    }
}

/// One reference row and what the model predicts for it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    /// What the row is (e.g. `decode B=8 L=1728`).
    pub label: String,
    /// Measured value, ms.
    pub measured_ms: f64,
    /// Model value, ms.
    pub model_ms: f64,
}

/// How well the fitted model reproduces its calibration data.
#[derive(Debug, Clone, Serialize)]
pub struct FitReport {
    /// Model name.
    pub model: String,
    /// Relative error of the linear fit over all TP=1 rows.
    pub linear: FitError,
    /// Prefill attention rows (A100 values, per layer).
    pub prefill_attn_rows: Vec<CheckRow>,
    /// Decode attention rows vs the bandwidth model (per layer; A100 Llama-2 data).
    pub decode_attn_rows: Vec<CheckRow>,
}

/// Knots of the linear fit: powers of two up to 64; then, because the GEMMs step up
/// whenever the token count crosses a multiple of the 128-row tile, a knot pair at
/// `m` and `m + 8` for every multiple `m` of 64 up to 1024 (where rows are 8 apart),
/// a knot at every multiple of 128 up to 4096, and powers of two beyond.
pub fn linear_knots(max_x: f64) -> Vec<f64> {
    let mut k: Vec<f64> = power_of_two_knots(max_x.min(64.0));
    let mut m = 64.0;
    while m <= 1024.0 && m < max_x {
        k.extend([m, m + 8.0]);
        m += 64.0;
    }
    m = 1024.0 + 128.0;
    while m <= 4096.0 && m < max_x {
        k.push(m);
        m += 128.0;
    }
    k.extend(
        power_of_two_knots(max_x)
            .into_iter()
            .filter(|&x| x > 4096.0 || x >= max_x),
    );
    k.sort_by(f64::total_cmp);
    k.dedup();
    k
}

/// Fit the linear part to profile points (knots from [`linear_knots`]).
pub fn fit_linear(points: &[ProfilePoint]) -> Option<(PiecewiseLinear, FitError)> {
    let samples: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (f64::from(p.num_tokens), p.linear_ms))
        .collect();
    let max_x = samples.iter().map(|s| s.0).fold(1.0, f64::max);
    let pl = PiecewiseLinear::fit(linear_knots(max_x), &samples)?;
    let err = fit_error(&samples, |x| pl.eval(x));
    Some((pl, err))
}

/// Fit `[a, b, q]` of the prefill attention term to [`PREFILL_ATTN_ROWS`].
pub fn fit_prefill_attention() -> [f64; 3] {
    let features: Vec<Vec<f64>> = PREFILL_ATTN_ROWS
        .iter()
        .map(|&(c, kv, _)| vec![c, c * kv, c * c])
        .collect();
    let ys: Vec<f64> = PREFILL_ATTN_ROWS.iter().map(|r| r.2).collect();
    match relative_lsq(&features, &ys) {
        Some(v) => [v[0].max(0.0), v[1].max(0.0), v[2].max(0.0)],
        None => [0.0; 3],
    }
}

/// Build the calibrated cost model of `model` from the profiles in `profiles_dir`.
pub fn fit_cost_model(
    model: &ModelSpec,
    profiles_dir: &Path,
) -> Result<(VidurCost, FitReport), ProfileError> {
    let path = profiles_dir.join(model.profile_file);
    let points = read_profile(&path, model.n_layers)?;
    let (linear_ms, linear_err) =
        fit_linear(&points).ok_or(ProfileError::Empty { path: path.clone() })?;
    let prefill_attn = fit_prefill_attention();
    // Prefill attention is compute bound: scale the A100 rows by this GPU's linear speed-up.
    let attn_scale = if model.gpu.starts_with("A100") {
        1.0
    } else {
        let ref_path = profiles_dir.join("vidur_a100_llama2-7b_mlp.csv");
        let reference = read_profile(&ref_path, model.n_layers)?;
        let (ref_fit, _) = fit_linear(&reference).ok_or(ProfileError::Empty { path: ref_path })?;
        linear_ms.eval(4096.0) / ref_fit.eval(4096.0)
    };
    let decode_s_per_ctx_token =
        f64::from(model.n_layers) * model.kv_bytes_per_token_layer as f64 / model.hbm_bytes_per_s;
    let cost = VidurCost {
        linear_ms,
        prefill_attn,
        attn_scale,
        decode_s_per_ctx_token,
        n_layers: model.n_layers,
        overhead_ms: DEFAULT_OVERHEAD_MS,
    };
    let prefill_attn_rows = PREFILL_ATTN_ROWS
        .iter()
        .map(|&(c, kv, t)| CheckRow {
            label: format!("prefill chunk={c} kv={kv}"),
            measured_ms: t,
            model_ms: VidurCost::prefill_attn_layer_ms(&prefill_attn, c, kv),
        })
        .collect();
    // The decode rows are A100 Llama-2 (16 KiB/token/layer, 1.9 TB/s) measurements.
    let decode_attn_rows = DECODE_ATTN_ROWS
        .iter()
        .map(|&(b, l, t)| CheckRow {
            label: format!("decode B={b} L={l}"),
            measured_ms: t,
            model_ms: b * l * 16384.0 / 1.9e12 * 1e3,
        })
        .collect();
    let report = FitReport {
        model: model.name.to_string(),
        linear: linear_err,
        prefill_attn_rows,
        decode_attn_rows,
    };
    Ok((cost, report))
}
