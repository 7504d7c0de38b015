//! `triage bench-compare`: the same workloads through triage and through the baselines a
//! user would otherwise write ([`crate::baselines`]), in one process and one run, reported
//! as ratios (triage / baseline) so that results from a noisy machine stay comparable.
//!
//! Workloads:
//!
//! * **submit** at 1, 2, 4 and 8 producer threads: each run builds every structure empty
//!   (untimed), releases the producers together and times until the last one finishes
//!   `ops` submits in all (ids disjoint, classes one third each). The figure is ns per
//!   submit of aggregate throughput (wall time / submits), median over runs. Runs
//!   interleave the structures so drifts of the machine hit them alike. The references are
//!   a bare `SegQueue::push` of the request spec (no clock, no id index, no counters) and
//!   the three baselines' `submit`. Nothing drains during the run.
//! * **step** at 1k and 100k queued, batch 256, aging on: every structure is filled with
//!   the same requests (arrivals spread over 1.25 × LOW's promotion threshold on a manual
//!   clock, classes one third each); then each step advances the clock 10 ms and takes 256
//!   requests, after which (untimed) 256 new requests arrive so the depth stays put, and
//!   triage's engine reports its 256 admissions finished. Triage's step therefore also
//!   drains and sorts the 256 new arrivals (a baseline's `submit` does that on the API
//!   thread, untimed here), checks budgets and, in its queue order (`--order`: deadline,
//!   the default, or ladder), ages by buckets or judges the requests it comes to against
//!   their deadlines and relegates the late ones; the baselines only order and pop.
//!   Figures are p50 and p99 of the per-step time over all runs. In deadline order triage
//!   runs with relaxed prefills uncapped (see `triage_testkit::steady::config_in`) so that
//!   it, too, takes
//!   the full batch; and the fill leaves most HIGH and MEDIUM requests past their
//!   deadlines, which full steps relegate as they come to them (at most 4,096 per step).
//!   Those settling steps run before the timed ones (`filled::Settled`): the table is the
//!   steady state, and the settling steps are summarised apart (CPU per step and per
//!   request judged).
//!
//! The C allocator keeps the memory freed during the run
//! ([`crate::allocator_state::keep_freed_memory`]), so no run's figure includes page faults
//! caused by what an earlier run of another structure freed.
//!
//! Every figure is taken twice: wall time, and the CPU time of the measuring threads
//! (`CLOCK_THREAD_CPUTIME_ID`). On a shared or oversubscribed machine wall time mostly
//! measures how often the thread was descheduled; CPU time is the cost of the work itself.
//! CPU time does not count time a thread sleeps on a contended lock, so for contention
//! (the mutex baselines at several producers) read the wall-time table.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpu_time::ThreadTime;
use crossbeam_queue::SegQueue;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use triage::{
    Class, Clock, MonotonicClock, QueueOrder, RequestSpec, Scheduler, SchedulerConfig, Timestamp,
};
use triage_testkit::steady;

use crate::baselines::deque::DequeQueues;
use crate::baselines::heap::HeapQueue;
use crate::baselines::segqueue::SegQueues;
use crate::baselines::{Baseline, Item, Ladder};
use crate::contended::{contended_rows, ContendedOptions, ContendedRow};
use crate::filled::{self, Filled, Meter};
use crate::timing::{fmt_ns, Summary};

/// Name of triage in tables and JSON.
pub const TRIAGE: &str = "triage";
/// Name of the bare `SegQueue::push` reference.
pub const BARE_PUSH: &str = "bare-segqueue-push";

/// What `bench-compare` runs.
#[derive(Clone, Debug, Serialize)]
pub struct CompareOptions {
    /// Producer counts of the submit workload.
    pub producers: Vec<usize>,
    /// Submits per run (split across the producers).
    pub submit_ops: usize,
    /// Runs of the submit workload per producer count.
    pub submit_runs: usize,
    /// Queue depths of the step workload.
    pub queued: Vec<usize>,
    /// Runs of the step workload per depth (each refills).
    pub step_runs: usize,
    /// Most steps timed per run.
    pub steps: usize,
    /// Most wall time per run of one structure's steps, seconds.
    pub step_seconds: f64,
    /// Admissions per step.
    pub batch: usize,
    /// Triage's queue order (see `triage_testkit::steady::config_in` for the one tunable
    /// the step workload changes in deadline order).
    pub order: QueueOrder,
    /// Producer counts of the contended workload ([`crate::contended`]; empty: skipped).
    pub contended_producers: Vec<usize>,
    /// Depth the contended workload holds.
    pub contended_queued: usize,
    /// Runs of it per structure and producer count.
    pub contended_runs: usize,
    /// Seconds the engine steps per contended run.
    pub contended_seconds: f64,
    /// Where to write the JSON report (`None`: do not write).
    #[serde(skip)]
    pub out: Option<PathBuf>,
    /// Draw a progress bar.
    #[serde(skip)]
    pub progress: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            producers: vec![1, 2, 4, 8],
            submit_ops: 1 << 16,
            submit_runs: 21,
            queued: vec![1_000, 100_000],
            step_runs: 3,
            steps: 2_000,
            step_seconds: 2.0,
            batch: 256,
            order: QueueOrder::default(),
            contended_producers: vec![1, 3],
            contended_queued: 100_000,
            contended_runs: 3,
            contended_seconds: 1.0,
            out: Some(PathBuf::from("bench-compare.json")),
            progress: false,
        }
    }
}

/// One submit row: ns per submit (median over runs) per structure.
#[derive(Clone, Debug, Serialize)]
pub struct SubmitRow {
    /// Producer threads.
    pub producers: usize,
    /// Median ns per submit (wall / submits) per structure, triage first.
    pub ns_per_op: Vec<(String, f64)>,
    /// 99th percentile over runs of the same, per structure.
    pub p99_ns_per_op: Vec<(String, f64)>,
    /// triage / structure, of the wall-time medians.
    pub ratios: Vec<(String, f64)>,
    /// Median CPU ns per submit (producer threads' CPU time / submits) per structure.
    pub cpu_ns_per_op: Vec<(String, f64)>,
    /// triage / structure, of the CPU-time medians.
    pub cpu_ratios: Vec<(String, f64)>,
}

/// One step row: per-step latency per structure.
#[derive(Clone, Debug, Serialize)]
pub struct StepRow {
    /// Queue depth.
    pub queued: usize,
    /// Per-step latency per structure, triage first.
    pub latency: Vec<(String, Summary)>,
    /// triage / structure, of p50.
    pub ratios_p50: Vec<(String, f64)>,
    /// triage / structure, of p99.
    pub ratios_p99: Vec<(String, f64)>,
    /// Per-step CPU time (the engine thread's) per structure, triage first.
    pub cpu_latency: Vec<(String, Summary)>,
    /// triage / structure, of CPU-time p50.
    pub cpu_ratios_p50: Vec<(String, f64)>,
    /// triage / structure, of CPU-time p99.
    pub cpu_ratios_p99: Vec<(String, f64)>,
    /// Requests triage promoted by aging per step, on average (ladder order).
    pub triage_promoted_per_step: f64,
    /// Requests triage relegated or shed per timed step, on average (deadline order).
    pub triage_relegated_per_step: f64,
    /// Deadline order: CPU time per step of the steps that judged the fill's backlog of
    /// late requests before the timed ones (`Settled` in the filled module; none in the
    /// ladder order), all runs.
    pub triage_backlog_cpu: Summary,
    /// Requests relegated or shed by those steps, all runs.
    pub triage_backlog_judged: u64,
    /// CPU time of the engine's reports after each timed step: one `on_progress` and one
    /// `on_finished` per admitted request (a batch of each).
    pub triage_callbacks_cpu: Summary,
    /// `triage_callbacks_cpu` p50 / the `Mutex<BinaryHeap>`'s step (pop a batch) CPU p50.
    pub triage_callbacks_ratio_heap_p50: f64,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// What ran.
    pub options: CompareOptions,
    /// Submit rows.
    pub submit: Vec<SubmitRow>,
    /// Step rows.
    pub step: Vec<StepRow>,
    /// Contended rows (wall time).
    pub contended: Vec<ContendedRow>,
    /// step p99 at the largest depth / step p99 at the smallest, for triage (wall time).
    pub triage_step_growth_p99: f64,
    /// The same ratio of CPU-time p99.
    pub triage_step_growth_cpu_p99: f64,
    /// The same ratio of CPU-time p50.
    pub triage_step_growth_cpu_p50: f64,
}

/// The name of a queue order in tables (as in the configuration file).
pub fn order_name(order: QueueOrder) -> &'static str {
    match order {
        QueueOrder::Deadline => "deadline",
        QueueOrder::Ladder => "ladder",
    }
}

// ---- submit ------------------------------------------------------------------------------

/// Runs `producers` threads each calling `op(i)` for its share of `0..ops`; returns the
/// wall time from the first producer's start to the last one's end, and the CPU time the
/// producer threads spent in all.
///
/// The producers start together: each waits at a start line, spinning (and yielding, for
/// more producers than cores), until all have reached it, so none runs its share while
/// another's virtual CPU is still waking from a sleep. Each then reads its own clocks: a
/// thread that released them would run only when a core came free, maybe after one ended.
fn timed_producers(
    producers: usize,
    ops: usize,
    op: &(dyn Fn(u64) + Sync),
) -> (Duration, Duration) {
    let arrived = AtomicUsize::new(0);
    let per = ops.div_ceil(producers) as u64;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..producers as u64)
            .map(|p| {
                let arrived = &arrived;
                s.spawn(move || {
                    let lo = p * per;
                    let hi = (lo + per).min(ops as u64);
                    start_line(arrived, producers);
                    let start = Instant::now();
                    let cpu = ThreadTime::now();
                    for i in lo..hi {
                        op(i);
                    }
                    (start, Instant::now(), cpu.elapsed())
                })
            })
            .collect();
        let mut cpu = Duration::ZERO;
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        for h in hs {
            let (start, end, c) = h.join().expect("producer panicked");
            cpu += c;
            first = Some(first.map_or(start, |f| f.min(start)));
            last = Some(last.map_or(end, |l| l.max(end)));
        }
        let wall = match (first, last) {
            (Some(f), Some(l)) => l.saturating_duration_since(f),
            _ => Duration::ZERO,
        };
        (wall, cpu)
    })
}

/// Counts this thread in and waits, spinning, until `n` threads have been counted.
fn start_line(arrived: &AtomicUsize, n: usize) {
    // Relaxed: only the count matters; the run's data is set up before the threads start.
    arrived.fetch_add(1, Ordering::Relaxed);
    let mut spins = 0u32;
    while arrived.load(Ordering::Relaxed) < n {
        spins += 1;
        if spins % 64 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn submit_once(
    name: &str,
    order: QueueOrder,
    producers: usize,
    ops: usize,
) -> (Duration, Duration) {
    let spec = |i: u64| RequestSpec::new(i, Class::from_index((i % 3) as u8), 100, 100);
    match name {
        TRIAGE => {
            let (sched, api) = Scheduler::new(steady::config_in(order, ops)).expect("valid config");
            let d = timed_producers(producers, ops, &|i| {
                api.submit(spec(i)).expect("submit refused");
            });
            assert!(sched.conservation().is_balanced());
            d
        }
        BARE_PUSH => {
            let q = SegQueue::new();
            timed_producers(producers, ops, &|i| q.push(spec(i)))
        }
        _ => {
            let clock = MonotonicClock::new();
            let b = baseline(name);
            let d = timed_producers(producers, ops, &|i| {
                let s = spec(i);
                b.submit(Item {
                    id: s.id.0,
                    class: s.class.index() as u8,
                    prompt_tokens: s.prompt_tokens,
                    max_new_tokens: s.max_new_tokens,
                    arrival: clock.now(),
                })
            });
            assert_eq!(b.len(), ops);
            d
        }
    }
}

fn baseline(name: &str) -> Box<dyn Baseline> {
    let ladder = Ladder::of(&SchedulerConfig::default());
    match name {
        "mutex-binaryheap" => Box::new(HeapQueue::new()),
        "segqueue-per-class-scan" => Box::new(SegQueues::new(ladder)),
        "vecdeque-per-class-scan" => Box::new(DequeQueues::new(ladder)),
        _ => unreachable!("unknown baseline {name}"),
    }
}

const BASELINES: [&str; 3] = [
    "mutex-binaryheap",
    "segqueue-per-class-scan",
    "vecdeque-per-class-scan",
];

fn submit_rows(o: &CompareOptions, bar: &ProgressBar) -> Vec<SubmitRow> {
    let mut names = vec![TRIAGE, BARE_PUSH];
    names.extend(BASELINES);
    let mut rows = Vec::new();
    for &p in &o.producers {
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        let mut cpu_samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
        // One untimed warm-up round, then interleaved timed runs.
        for n in &names {
            submit_once(n, o.order, p, o.submit_ops / 4);
        }
        for run in 0..o.submit_runs {
            for k in 0..names.len() {
                // Rotate the order per run.
                let j = (k + run) % names.len();
                let (wall, cpu) = submit_once(names[j], o.order, p, o.submit_ops);
                samples[j].push(wall.as_nanos() as f64 / o.submit_ops as f64);
                cpu_samples[j].push(cpu.as_nanos() as f64 / o.submit_ops as f64);
            }
            bar.inc(1);
        }
        let mut ns = Vec::new();
        let mut p99 = Vec::new();
        for (n, s) in names.iter().zip(samples.iter_mut()) {
            let sum = Summary::of(s);
            ns.push((n.to_string(), sum.p50));
            p99.push((n.to_string(), sum.p99));
        }
        let cpu: Vec<(String, f64)> = names
            .iter()
            .zip(cpu_samples.iter_mut())
            .map(|(n, s)| (n.to_string(), Summary::of(s).p50))
            .collect();
        let ratio = |v: &[(String, f64)]| -> Vec<(String, f64)> {
            v[1..]
                .iter()
                .map(|(n, x)| (n.clone(), v[0].1 / x))
                .collect()
        };
        rows.push(SubmitRow {
            producers: p,
            ratios: ratio(&ns),
            cpu_ratios: ratio(&cpu),
            ns_per_op: ns,
            p99_ns_per_op: p99,
            cpu_ns_per_op: cpu,
        });
    }
    rows
}

// ---- step --------------------------------------------------------------------------------

/// What one run of triage's steps at a depth measured.
struct TriageRun {
    /// Wall ns per timed step.
    wall: Vec<f64>,
    /// CPU ns per timed step.
    cpu: Vec<f64>,
    /// Requests promoted by aging in the timed steps.
    promoted: u64,
    /// Requests relegated or shed in the timed steps.
    late: u64,
    /// The steps that judged the fill's backlog, untimed in the table.
    settled: filled::Settled,
    /// CPU ns of the engine's reports after each timed step.
    callbacks: Vec<f64>,
}

/// Times up to `o.steps` steps of triage at depth `n`.
fn step_triage(o: &CompareOptions, n: usize) -> TriageRun {
    let mut f = Filled::new(steady::config_in(o.order, n), n, o.batch as u32);
    let mut late = 0;
    let mut callbacks = Vec::with_capacity(o.steps);
    let mut out = Vec::with_capacity(o.steps);
    let mut cpu = Vec::with_capacity(o.steps);
    let mut promoted = 0;
    let start = Instant::now();
    while out.len() < o.steps && start.elapsed().as_secs_f64() < o.step_seconds {
        let before = f.steady.judged_late();
        let took = f.timed_step(Meter::CpuAndWall);
        late += f.steady.judged_late() - before;
        out.push(took.wall.expect("metered").as_nanos() as f64);
        cpu.push(took.cpu.as_nanos() as f64);
        callbacks.push(took.callbacks.as_nanos() as f64);
        promoted += f.steady.d.summary.promoted;
    }
    assert!(f.steady.sched.conservation().is_balanced());
    TriageRun {
        wall: out,
        cpu,
        promoted,
        late,
        settled: f.settled.clone(),
        callbacks,
    }
}

/// Times up to `o.steps` steps of baseline `name` at depth `n`: wall and CPU ns per step.
fn step_baseline(o: &CompareOptions, name: &str, n: usize) -> (Vec<f64>, Vec<f64>) {
    let window = steady::fill_window(&steady::config_in(o.order, n));
    let b = baseline(name);
    // The same requests as triage's side ([`steady::spec`] by id).
    let mut next_id = 0u64;
    let mut next_spec = || {
        next_id += 1;
        steady::spec(next_id - 1)
    };
    let span = window.as_nanos() as u64;
    let item = |spec: RequestSpec, at: Timestamp| Item {
        id: spec.id.0,
        class: spec.class.index() as u8,
        prompt_tokens: spec.prompt_tokens,
        max_new_tokens: spec.max_new_tokens,
        arrival: at,
    };
    for i in 0..n as u64 {
        b.submit(item(next_spec(), Timestamp(span * i / n as u64)));
    }
    let mut now = Timestamp(span);
    let mut popped = Vec::with_capacity(o.batch);
    let mut out = Vec::with_capacity(o.steps);
    let mut cpu = Vec::with_capacity(o.steps);
    let start = Instant::now();
    while out.len() < 5 || (out.len() < o.steps && start.elapsed().as_secs_f64() < o.step_seconds) {
        now = now.saturating_add(steady::STEP_DT);
        let c = ThreadTime::now();
        let t = Instant::now();
        b.step(now, o.batch, &mut popped);
        out.push(t.elapsed().as_nanos() as f64);
        cpu.push(c.elapsed().as_nanos() as f64);
        assert_eq!(popped.len(), o.batch);
        for _ in 0..o.batch {
            b.submit(item(next_spec(), now));
        }
    }
    (out, cpu)
}

fn step_rows(o: &CompareOptions, bar: &ProgressBar) -> Vec<StepRow> {
    let mut rows = Vec::new();
    for &n in &o.queued {
        let mut wall: Vec<Vec<f64>> = vec![Vec::new(); BASELINES.len() + 1];
        let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); BASELINES.len() + 1];
        let mut promoted = 0u64;
        // Deadline order: the settling steps' CPU ns, and what they judged.
        let (mut backlog, mut judged) = (Vec::new(), 0u64);
        let mut callbacks = Vec::new();
        let mut late = 0u64;
        for _ in 0..o.step_runs {
            let t = step_triage(o, n);
            promoted += t.promoted;
            late += t.late;
            backlog.extend(&t.settled.cpu);
            judged += t.settled.judged;
            callbacks.extend(&t.callbacks);
            wall[0].extend(t.wall);
            cpu[0].extend(t.cpu);
            for (k, name) in BASELINES.iter().enumerate() {
                let (w, c) = step_baseline(o, name, n);
                wall[k + 1].extend(w);
                cpu[k + 1].extend(c);
            }
            bar.inc(1);
        }
        let steps = wall[0].len().max(1);
        let names = std::iter::once(TRIAGE).chain(BASELINES);
        let summarise = |v: &mut Vec<Vec<f64>>| -> Vec<(String, Summary)> {
            names
                .clone()
                .zip(v.iter_mut())
                .map(|(n, s)| (n.to_string(), Summary::of(s)))
                .collect()
        };
        let latency = summarise(&mut wall);
        let cpu_latency = summarise(&mut cpu);
        let ratio = |v: &[(String, Summary)], f: fn(&Summary) -> f64| -> Vec<(String, f64)> {
            v[1..]
                .iter()
                .map(|(n, s)| (n.clone(), f(&v[0].1) / f(s)))
                .collect()
        };
        let callbacks_cpu = Summary::of(&mut callbacks);
        // The heap baseline is the first after triage.
        let heap_p50 = cpu_latency[1].1.p50;
        rows.push(StepRow {
            queued: n,
            ratios_p50: ratio(&latency, |s| s.p50),
            ratios_p99: ratio(&latency, |s| s.p99),
            cpu_ratios_p50: ratio(&cpu_latency, |s| s.p50),
            cpu_ratios_p99: ratio(&cpu_latency, |s| s.p99),
            latency,
            cpu_latency,
            triage_promoted_per_step: promoted as f64 / steps as f64,
            triage_relegated_per_step: late as f64 / steps as f64,
            triage_backlog_cpu: Summary::of(&mut backlog),
            triage_backlog_judged: judged,
            triage_callbacks_ratio_heap_p50: callbacks_cpu.p50 / heap_p50,
            triage_callbacks_cpu: callbacks_cpu,
        });
    }
    rows
}

/// Runs the comparison.
pub fn bench_compare(o: &CompareOptions) -> Result<CompareReport, String> {
    if o.producers.is_empty() || o.queued.is_empty() || o.batch == 0 {
        return Err("need at least one producer count, one depth and a batch".into());
    }
    // Each step admits a full batch and submits as many again, so a depth below the batch
    // would grow to it after the first step and stop being the depth measured.
    if let Some(&n) = o.queued.iter().find(|&&n| n < o.batch) {
        return Err(format!(
            "--queued {n} is below --batch {}: every depth must hold at least one batch",
            o.batch
        ));
    }
    // Every run builds its structures fresh: keep what one run frees from turning into the
    // next run's page faults (see `allocator_state`).
    crate::allocator_state::keep_freed_memory();
    let total = (o.producers.len() * o.submit_runs
        + o.queued.len() * o.step_runs
        + o.contended_producers.len() * o.contended_runs) as u64;
    let bar = if o.progress {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("bench-compare [{bar:30}] {pos}/{len} runs {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let submit = submit_rows(o, &bar);
    let step = step_rows(o, &bar);
    let contended = contended_rows(
        &ContendedOptions {
            producers: o.contended_producers.clone(),
            queued: o.contended_queued,
            runs: o.contended_runs,
            seconds: o.contended_seconds,
            batch: o.batch,
            order: o.order,
        },
        || bar.inc(1),
    );
    bar.finish_and_clear();
    let growth = |f: fn(&StepRow) -> f64| match (step.first(), step.last()) {
        (Some(a), Some(b)) => f(b) / f(a),
        _ => f64::NAN,
    };
    let report = CompareReport {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        options: o.clone(),
        submit,
        triage_step_growth_p99: growth(|r| r.latency[0].1.p99),
        triage_step_growth_cpu_p99: growth(|r| r.cpu_latency[0].1.p99),
        triage_step_growth_cpu_p50: growth(|r| r.cpu_latency[0].1.p50),
        step,
        contended,
    };
    if let Some(path) = &o.out {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report)
}

impl CompareReport {
    /// The tables as text.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let o = &self.options;
        for (title, cpu) in [
            (
                "CPU ns per submit (producer threads' CPU time / submits)",
                true,
            ),
            (
                "wall ns per submit (wall time / submits: inverse throughput)",
                false,
            ),
        ] {
            let _ = writeln!(
                s,
                "submit, {title}, median of {} runs of {} submits; (ratio = triage / other)",
                o.submit_runs, o.submit_ops
            );
            if let Some(r) = self.submit.first() {
                let _ = write!(s, "{:>9}", "producers");
                for (n, _) in &r.ns_per_op {
                    let _ = write!(s, " {:>24}", n);
                }
                let _ = writeln!(s);
            }
            for r in &self.submit {
                let (v, ratios) = if cpu {
                    (&r.cpu_ns_per_op, &r.cpu_ratios)
                } else {
                    (&r.ns_per_op, &r.ratios)
                };
                let _ = write!(s, "{:>9}", r.producers);
                let _ = write!(s, " {:>24}", format!("{:.0} ns", v[0].1));
                for ((_, x), (_, ratio)) in v[1..].iter().zip(ratios) {
                    let _ = write!(s, " {:>24}", format!("{x:.0} ns ({ratio:.2}x)"));
                }
                let _ = writeln!(s);
            }
            let _ = writeln!(s);
        }
        for (title, cpu) in [("CPU time", true), ("wall time", false)] {
            let _ = writeln!(
                s,
                "step, batch {}, triage in {} order, aging on, {title} per step: p50 / p99 (ratio triage / other of p50, p99)",
                o.batch,
                order_name(o.order),
            );
            if let Some(r) = self.step.first() {
                let _ = write!(s, "{:>9}", "queued");
                for (n, _) in &r.latency {
                    let _ = write!(s, " {:>36}", n);
                }
                let _ = writeln!(s);
            }
            for r in &self.step {
                let (lat, r50, r99) = if cpu {
                    (&r.cpu_latency, &r.cpu_ratios_p50, &r.cpu_ratios_p99)
                } else {
                    (&r.latency, &r.ratios_p50, &r.ratios_p99)
                };
                let _ = write!(s, "{:>9}", r.queued);
                let t = &lat[0].1;
                let _ = write!(
                    s,
                    " {:>36}",
                    format!("{} / {}", fmt_ns(t.p50), fmt_ns(t.p99))
                );
                for (((_, l), (_, a)), (_, b)) in lat[1..].iter().zip(r50).zip(r99) {
                    let _ = write!(
                        s,
                        " {:>36}",
                        format!("{} / {} ({a:.3}x, {b:.3}x)", fmt_ns(l.p50), fmt_ns(l.p99))
                    );
                }
                let _ = writeln!(s);
            }
            let _ = writeln!(s);
        }
        for r in &self.step {
            let _ = writeln!(
                s,
                "at {} queued triage promoted {:.1} requests per step by aging and relegated or shed {:.1} ({} steps timed)",
                r.queued,
                r.triage_promoted_per_step,
                r.triage_relegated_per_step,
                r.latency[0].1.count
            );
        }
        for r in self.step.iter().filter(|r| r.triage_backlog_cpu.count > 0) {
            let b = &r.triage_backlog_cpu;
            let _ = writeln!(
                s,
                "at {} queued the fill's backlog of late requests took {} settling steps before the timed ones (all runs): {} relegated or shed, CPU p50 {} / max {} per step, {} more per request judged than a timed step's mean",
                r.queued,
                b.count,
                r.triage_backlog_judged,
                fmt_ns(b.p50),
                fmt_ns(b.max),
                fmt_ns(
                    (b.mean - r.cpu_latency[0].1.mean) * b.count as f64
                        / r.triage_backlog_judged.max(1) as f64
                ),
            );
        }
        for r in &self.step {
            let c = &r.triage_callbacks_cpu;
            let _ = writeln!(
                s,
                "at {} queued the engine's reports after a step (on_progress + on_finished per admitted request): CPU p50 {} / p99 {}, p50 {:.3}x {}'s step p50",
                r.queued,
                fmt_ns(c.p50),
                fmt_ns(c.p99),
                r.triage_callbacks_ratio_heap_p50,
                r.cpu_latency[1].0,
            );
        }
        let _ = writeln!(
            s,
            "triage step growth from {} to {} queued: CPU p50 {:.2}x, CPU p99 {:.2}x, wall p99 {:.2}x",
            self.step.first().map_or(0, |r| r.queued),
            self.step.last().map_or(0, |r| r.queued),
            self.triage_step_growth_cpu_p50,
            self.triage_step_growth_cpu_p99,
            self.triage_step_growth_p99,
        );
        if !self.contended.is_empty() {
            let _ = writeln!(
                s,
                "\ncontended, {} queued held, one engine step per ms, wall time: p50 / p99 (ratio triage / mutex-binaryheap of p99)",
                self.options.contended_queued
            );
            let _ = writeln!(
                s,
                "{:>9} {:>22} {:>22} {:>8} {:>22} {:>22} {:>8}",
                "producers",
                "triage step",
                "heap step",
                "ratio",
                "triage submit",
                "heap submit",
                "ratio"
            );
            let pair = |x: &Summary| format!("{} / {}", fmt_ns(x.p50), fmt_ns(x.p99));
            for r in &self.contended {
                let _ = writeln!(
                    s,
                    "{:>9} {:>22} {:>22} {:>7.3}x {:>22} {:>22} {:>7.3}x",
                    r.producers,
                    pair(&r.triage.step),
                    pair(&r.heap.step),
                    r.step_p99_ratio,
                    pair(&r.triage.submit),
                    pair(&r.heap.submit),
                    r.submit_p99_ratio,
                );
            }
        }
        s
    }
}
