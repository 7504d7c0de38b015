//! A simulation run, as `triage simulate` makes it: build the workload, fit the cost model,
//! replay every (load, policy) pair, and write the report and plots.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::class::{default_slos, NUM_CLASSES};
use crate::cost::{fit_cost_model, CostModel};
use crate::engine::{self, EngineConfig, SimError};
use crate::metrics::{summarize, RunSummary};
use crate::model::model_by_name;
use crate::plot;
use crate::policies::{check_policy_name, make_policy, PolicyContext, SimRequest};
use crate::profile::ProfileError;
use crate::report::{CostReport, Report, ReportConfig, WorkloadReport};
use crate::trace::TraceError;
use crate::workload::{Source, Workload, WorkloadSpec};

/// Default load multipliers.
pub const DEFAULT_LOADS: [f64; 3] = [0.15, 0.3, 0.5];
/// Default `max_num_batched_tokens` (vLLM's chunked-prefill default for online serving).
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: u32 = 2048;
/// Default `max_num_seqs`.
pub const DEFAULT_MAX_NUM_SEQS: u32 = 256;
/// KV watermark as a fraction of all blocks.
pub const WATERMARK_FRACTION: f64 = 0.01;

/// Everything `simulate` needs.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// `--trace` value.
    pub trace: String,
    /// Model name.
    pub model: String,
    /// Policy names.
    pub policies: Vec<String>,
    /// Load multipliers.
    pub loads: Vec<f64>,
    /// Seed.
    pub seed: u64,
    /// Output directory (`None`: write nothing).
    pub out: Option<PathBuf>,
    /// Trace window in seconds.
    pub duration_s: Option<f64>,
    /// Class mix for non-code sources.
    pub class_mix: [f64; 3],
    /// `max_num_seqs`.
    pub max_num_seqs: u32,
    /// `max_num_batched_tokens`.
    pub max_num_batched_tokens: u32,
    /// Where bundled traces and profiles live.
    pub data_dir: PathBuf,
    /// Worker threads.
    pub jobs: usize,
    /// Draw SVG plots.
    pub plots: bool,
    /// The `triage` policy's configuration (its engine limits are replaced by the simulated
    /// engine's); `None` for the library defaults.
    pub triage_config: Option<triage::SchedulerConfig>,
}

impl SimulateOptions {
    /// The bundled default run (see the crate docs).
    pub fn defaults() -> Self {
        Self {
            trace: "azure-mixed".into(),
            model: "llama2-7b-a100".into(),
            policies: crate::policies::policy_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            loads: DEFAULT_LOADS.to_vec(),
            seed: 42,
            out: Some(PathBuf::from("sim-out")),
            duration_s: None,
            class_mix: [0.3, 0.7, 0.0],
            max_num_seqs: DEFAULT_MAX_NUM_SEQS,
            max_num_batched_tokens: DEFAULT_MAX_NUM_BATCHED_TOKENS,
            data_dir: default_data_dir(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            plots: true,
            triage_config: None,
        }
    }
}

/// `$TRIAGE_DATA_DIR`, else the repository's `data/` next to this package.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("TRIAGE_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("data"),
    }
}

/// Why `simulate` failed.
#[derive(Debug)]
pub enum SimulateError {
    /// Bad option value.
    Usage(String),
    /// Profile could not be read.
    Profile(ProfileError),
    /// Trace could not be read.
    Trace(TraceError),
    /// A run failed.
    Sim(SimError),
    /// Output could not be written.
    Output {
        /// What was being written.
        path: PathBuf,
        /// Error text.
        message: String,
    },
}

impl fmt::Display for SimulateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(s) => f.write_str(s),
            Self::Profile(e) => write!(f, "cost model: {e}"),
            Self::Trace(e) => write!(f, "trace: {e}"),
            Self::Sim(e) => write!(f, "simulation: {e}"),
            Self::Output { path, message } => write!(f, "writing {}: {message}", path.display()),
        }
    }
}

impl std::error::Error for SimulateError {}

fn validate(opts: &SimulateOptions) -> Result<(), SimulateError> {
    let usage = |s: String| Err(SimulateError::Usage(s));
    if opts.policies.is_empty() {
        return usage("no policy given".into());
    }
    for p in &opts.policies {
        check_policy_name(p).map_err(SimulateError::Usage)?;
    }
    if opts.loads.is_empty() || opts.loads.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
        return usage(format!(
            "loads must be positive numbers, got {:?}",
            opts.loads
        ));
    }
    if opts.class_mix.iter().any(|f| !(0.0..=1.0).contains(f))
        || (opts.class_mix.iter().sum::<f64>() - 1.0).abs() > 1e-6
    {
        return usage(format!(
            "class mix must be three fractions summing to 1, got {:?}",
            opts.class_mix
        ));
    }
    if opts.duration_s.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
        return usage("duration must be a positive number of seconds".into());
    }
    if opts.max_num_seqs == 0 || opts.max_num_batched_tokens == 0 {
        return usage("max_num_seqs and max_num_batched_tokens must be at least 1".into());
    }
    Ok(())
}

/// The (load x policy) matrix of runs to replay.
pub struct Matrix<'a> {
    /// One request stream per load.
    pub streams: &'a [Vec<SimRequest>],
    /// Load multipliers (parallel to `streams`).
    pub loads: &'a [f64],
    /// Policy names.
    pub policies: &'a [String],
    /// Context handed to policy constructors.
    pub ctx: &'a PolicyContext,
    /// Cost model.
    pub cost: &'a (dyn CostModel + Sync),
    /// Engine limits.
    pub cfg: &'a EngineConfig,
}

/// Progress units of one (load, policy) run: a run reports its share of simulated time
/// done in thousandths, so a matrix of `n` runs reports `n × UNITS_PER_RUN` in all.
pub const UNITS_PER_RUN: u64 = 1000;

/// Called with the units of progress done since the last call (see [`UNITS_PER_RUN`]),
/// from the worker threads.
pub type OnProgress<'a> = &'a (dyn Fn(u64) + Sync);

/// Replay every (load, policy) pair of `m`, in parallel on `jobs` threads, reporting
/// progress to `progress`; results in (load, policy) order whatever the thread count.
pub fn run_matrix(
    m: &Matrix,
    jobs: usize,
    progress: OnProgress<'_>,
) -> Result<Vec<RunSummary>, SimError> {
    let Matrix {
        streams,
        loads,
        policies,
        ctx,
        cost,
        cfg,
    } = *m;
    let pairs: Vec<(usize, usize)> = (0..loads.len())
        .flat_map(|l| (0..policies.len()).map(move |p| (l, p)))
        .collect();
    let results: Mutex<Vec<Option<Result<RunSummary, SimError>>>> =
        Mutex::new(vec![None; pairs.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, pairs.len().max(1)) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(li, pi)) = pairs.get(k) else { break };
                let reqs = &streams[li];
                let horizon = reqs.last().map_or(1.0, |r| r.arrival).max(1e-9);
                let mut shown = 0u64;
                let mut tick = |now: f64| {
                    let permille = ((now / horizon) * UNITS_PER_RUN as f64)
                        .clamp(0.0, UNITS_PER_RUN as f64) as u64;
                    if permille > shown {
                        progress(permille - shown);
                        shown = permille;
                    }
                };
                let res = match make_policy(&policies[pi], ctx) {
                    Ok(mut policy) => {
                        engine::run(reqs, policy.as_mut(), cost, cfg, Some(&mut tick))
                            .map(|r| summarize(&policies[pi], loads[li], &r, &ctx.slos))
                    }
                    Err(e) => Err(SimError::Invariant(e)),
                };
                progress(UNITS_PER_RUN.saturating_sub(shown));
                if let Ok(mut g) = results.lock() {
                    g[k] = Some(res);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| SimError::Invariant("worker panicked".into()))?;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(SimError::Invariant("run missing".into()))))
        .collect()
}

/// What every replay of a `simulate`-style command needs: the model, the fitted cost model,
/// the workload at load 1, the engine and the policies' context.
pub struct Prepared {
    /// The model and GPU.
    pub model: crate::model::ModelSpec,
    /// The trace sources.
    pub sources: Vec<Source>,
    /// The cost model fitted on the model's profile.
    pub cost: crate::cost::VidurCost,
    /// How well it fits.
    pub fit: crate::cost::FitReport,
    /// The classed arrivals at load 1.
    pub workload: Workload,
    /// The simulated engine.
    pub cfg: EngineConfig,
    /// What policies are built from.
    pub ctx: PolicyContext,
}

/// Validates `opts`, fits the cost model and builds the workload and the engine.
pub fn prepare(opts: &SimulateOptions) -> Result<Prepared, SimulateError> {
    validate(opts)?;
    let model = model_by_name(&opts.model).map_err(SimulateError::Usage)?;
    let sources = Source::parse_list(&opts.trace).map_err(SimulateError::Usage)?;
    let (cost, fit) =
        fit_cost_model(&model, &opts.data_dir.join("profiles")).map_err(SimulateError::Profile)?;
    let spec = WorkloadSpec {
        sources: sources.clone(),
        duration_s: opts.duration_s,
        seed: opts.seed,
        class_mix: opts.class_mix,
        max_model_len: model.max_model_len,
    };
    let workload = Workload::build(&spec, &opts.data_dir).map_err(SimulateError::Trace)?;
    let total_blocks = model.num_kv_blocks();
    let cfg = EngineConfig {
        max_num_seqs: opts.max_num_seqs,
        max_num_batched_tokens: opts.max_num_batched_tokens,
        total_blocks,
        block_size: model.block_size,
        watermark_blocks: EngineConfig::watermark_for(total_blocks, WATERMARK_FRACTION),
        max_model_len: model.max_model_len,
    };
    let slos = default_slos();
    let ctx = PolicyContext {
        max_model_len: cfg.max_model_len,
        total_blocks,
        block_size: cfg.block_size,
        watermark_blocks: cfg.watermark_blocks,
        slos,
        seed: opts.seed,
        triage_config: opts.triage_config.clone(),
    };
    Ok(Prepared {
        model,
        sources,
        cost,
        fit,
        workload,
        cfg,
        ctx,
    })
}

/// Run the simulation described by `opts` and return its report (files are written
/// when `opts.out` is set). [`simulate_with_progress`] also reports progress.
pub fn simulate(opts: &SimulateOptions) -> Result<Report, SimulateError> {
    simulate_with_progress(opts, &|_| {})
}

/// [`simulate`], reporting progress to `progress`: `loads × policies × UNITS_PER_RUN`
/// units in all.
pub fn simulate_with_progress(
    opts: &SimulateOptions,
    progress: OnProgress<'_>,
) -> Result<Report, SimulateError> {
    let Prepared {
        model,
        sources,
        cost,
        fit,
        workload,
        cfg,
        ctx,
    } = prepare(opts)?;
    let slos = ctx.slos;
    let streams: Vec<Vec<SimRequest>> = opts.loads.iter().map(|&k| workload.scaled(k)).collect();
    let matrix = Matrix {
        streams: &streams,
        loads: &opts.loads,
        policies: &opts.policies,
        ctx: &ctx,
        cost: &cost,
        cfg: &cfg,
    };
    let runs = run_matrix(&matrix, opts.jobs, progress).map_err(SimulateError::Sim)?;

    let mut per_class = vec![0usize; NUM_CLASSES];
    for r in &workload.requests {
        if let Some(c) = per_class.get_mut(r.class as usize) {
            *c += 1;
        }
    }
    let span_s = match (workload.requests.first(), workload.requests.last()) {
        (Some(a), Some(b)) => b.arrival - a.arrival,
        _ => 0.0,
    };
    let report = Report {
        tool: format!("triage simulate {}", env!("CARGO_PKG_VERSION")),
        config: ReportConfig {
            traces: sources.iter().map(Source::label).collect(),
            model,
            engine: cfg.clone(),
            policies: opts.policies.clone(),
            loads: opts.loads.clone(),
            seed: opts.seed,
            duration_s: opts.duration_s,
            class_mix: opts.class_mix,
            slos: slos.to_vec(),
        },
        workload: WorkloadReport {
            requests: workload.requests.len(),
            per_class,
            span_s,
            clipped: workload.clipped(),
            sources: workload.sources.clone(),
        },
        cost_model: CostReport { params: cost, fit },
        runs,
    };
    if let Some(dir) = &opts.out {
        report.write_files(dir).map_err(|e| SimulateError::Output {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        if opts.plots {
            let p = dir.join("slo_attainment.svg");
            plot::slo_attainment(&p, &report.runs).map_err(|e| SimulateError::Output {
                path: p.clone(),
                message: e.to_string(),
            })?;
            for &load in &opts.loads {
                let p = dir.join(format!("ttft_cdf_load{load}.svg"));
                plot::ttft_cdf(&p, &report.runs, load).map_err(|e| SimulateError::Output {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
            }
        }
    }
    Ok(report)
}
