//! The contended workload of `triage bench-compare`: producers submitting as fast as they
//! can while the engine thread steps and finishes what it admits, the depth held near a
//! target (producers pause at it, as `triage stress` does). Wall time throughout: under
//! contention the cost is waiting, which CPU time does not see.
//!
//! Per structure and producer count, one run: fill to the depth (untimed), start the
//! producers, then the engine steps once per [`STEP_EVERY`] (a GPU iteration, as in
//! `triage stress`; back to back it would drain the queue faster than producers refill
//! it) for the run's duration, each step taking a batch (triage: `step_into` with a batch-sized budget, then `on_progress` and
//! `on_finished` for each admission, untimed; the heap: `step`). Every step and every
//! submit is timed. Runs of triage and the heap alternate.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use triage::{
    Budget, Clock, Decision, FinishReason, MonotonicClock, QueueOrder, Scheduler, Timestamp,
};
use triage_testkit::steady::{self, FILL_CHUNK, PROMPT, ZERO};

use crate::baselines::heap::HeapQueue;
use crate::baselines::{Baseline, Item};
use crate::timing::Summary;

/// The engine's cadence: one step per iteration of this length.
pub const STEP_EVERY: Duration = Duration::from_millis(1);

/// The engine thread of a run: once per [`STEP_EVERY`] for `o.seconds`, `step` takes a
/// batch and returns the wall time of the step proper and how many it took, which stop
/// counting as outstanding. Returns the step times, ns.
fn engine(
    o: &ContendedOptions,
    outstanding: &AtomicUsize,
    mut step: impl FnMut() -> (Duration, usize),
) -> Vec<f64> {
    let mut times = Vec::new();
    let mut next = Instant::now();
    let end = next + Duration::from_secs_f64(o.seconds);
    while Instant::now() < end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += STEP_EVERY;
        let (took, taken) = step();
        times.push(took.as_nanos() as f64);
        // Relaxed: see `producers`.
        outstanding.fetch_sub(taken, Ordering::Relaxed);
    }
    times
}

/// What the contended workload runs.
#[derive(Clone, Debug, Serialize)]
pub struct ContendedOptions {
    /// Producer thread counts.
    pub producers: Vec<usize>,
    /// The depth held.
    pub queued: usize,
    /// Runs per structure and producer count (alternating).
    pub runs: usize,
    /// Seconds the engine steps per run.
    pub seconds: f64,
    /// Admissions per step.
    pub batch: usize,
    /// Triage's queue order.
    pub order: QueueOrder,
}

/// One structure's figures at one producer count, all runs pooled (wall ns).
#[derive(Clone, Debug, Serialize)]
pub struct ContendedSide {
    /// Per-step wall time of the engine thread.
    pub step: Summary,
    /// Per-submit wall time, every producer.
    pub submit: Summary,
}

/// One row: triage and the heap at one producer count.
#[derive(Clone, Debug, Serialize)]
pub struct ContendedRow {
    /// Producer threads.
    pub producers: usize,
    /// Triage.
    pub triage: ContendedSide,
    /// `Mutex<BinaryHeap>`.
    pub heap: ContendedSide,
    /// triage / heap, of the step p99.
    pub step_p99_ratio: f64,
    /// triage / heap, of the submit p99.
    pub submit_p99_ratio: f64,
}

/// Step and submit samples of one run.
struct Run {
    step: Vec<f64>,
    submit: Vec<f64>,
}

/// Runs the workload for every producer count.
pub fn contended_rows(o: &ContendedOptions, mut tick: impl FnMut()) -> Vec<ContendedRow> {
    let mut rows = Vec::new();
    for &p in &o.producers {
        let (mut t_step, mut t_submit, mut h_step, mut h_submit) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..o.runs {
            let t = run_triage(o, p);
            t_step.extend(t.step);
            t_submit.extend(t.submit);
            let h = run_heap(o, p);
            h_step.extend(h.step);
            h_submit.extend(h.submit);
            tick();
        }
        let triage = ContendedSide {
            step: Summary::of(&mut t_step),
            submit: Summary::of(&mut t_submit),
        };
        let heap = ContendedSide {
            step: Summary::of(&mut h_step),
            submit: Summary::of(&mut h_submit),
        };
        rows.push(ContendedRow {
            producers: p,
            step_p99_ratio: triage.step.p99 / heap.step.p99,
            submit_p99_ratio: triage.submit.p99 / heap.submit.p99,
            triage,
            heap,
        });
    }
    rows
}

/// The producers of one run: each submits through `submit` while fewer than `depth` are
/// outstanding, timing every call, until `stop`.
fn producers<S>(
    p: usize,
    depth: usize,
    outstanding: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
    next_id: &Arc<AtomicU64>,
    submit: S,
) -> Vec<std::thread::JoinHandle<Vec<f64>>>
where
    S: Fn(u64) + Clone + Send + 'static,
{
    (0..p)
        .map(|_| {
            let (outstanding, stop, next_id, submit) = (
                Arc::clone(outstanding),
                Arc::clone(stop),
                Arc::clone(next_id),
                submit.clone(),
            );
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                // Relaxed: a flag and two counters that only pace the producers; nothing
                // is published through them.
                while !stop.load(Ordering::Relaxed) {
                    if outstanding.load(Ordering::Relaxed) >= depth {
                        std::thread::yield_now();
                        continue;
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    submit(id);
                    lat.push(t.elapsed().as_nanos() as f64);
                    outstanding.fetch_add(1, Ordering::Relaxed);
                }
                lat
            })
        })
        .collect()
}

/// Stops the producers and collects their submit latencies.
fn stop_producers(stop: &AtomicBool, threads: Vec<std::thread::JoinHandle<Vec<f64>>>) -> Vec<f64> {
    // Relaxed: see `producers`; the joins order everything after.
    stop.store(true, Ordering::Relaxed);
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("producer"))
        .collect()
}

fn run_triage(o: &ContendedOptions, p: usize) -> Run {
    let cfg = steady::config_in(o.order, o.queued);
    let clock = MonotonicClock::new();
    let (mut sched, api) = Scheduler::with_clock(cfg, clock).expect("valid config");
    let mut d = Decision::default();
    for id in 0..o.queued as u64 {
        api.submit(steady::spec(id)).expect("fill within capacity");
        if (id as usize + 1) % FILL_CHUNK == 0 {
            sched.step_into(clock.now(), &ZERO, &mut d).expect("valid");
        }
    }
    sched.step_into(clock.now(), &ZERO, &mut d).expect("valid");
    let budget = Budget {
        max_num_seqs: o.batch as u32,
        max_batched_tokens: o.batch as u32 * PROMPT,
        free_blocks: sched.config().engine.total_blocks,
    };
    let outstanding = Arc::new(AtomicUsize::new(o.queued));
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(o.queued as u64));
    let submit = {
        let api = api.clone();
        move |id| {
            // A refusal (a full class: `queue_capacity` is twice the depth held) is timed
            // like an acceptance; the pacing keeps it from happening.
            let _ = api.submit(steady::spec(id));
        }
    };
    let threads = producers(p, o.queued, &outstanding, &stop, &next_id, submit);
    let step = engine(o, &outstanding, || {
        let now = clock.now();
        let t = Instant::now();
        sched.step_into(now, &budget, &mut d).expect("valid budget");
        let took = t.elapsed();
        for a in &d.admitted {
            sched
                .on_progress(a.handle, now, a.prefill_tokens, 1)
                .expect("admitted request runs");
            sched
                .on_finished(a.handle, now, FinishReason::Stop)
                .expect("admitted request runs");
        }
        (took, d.admitted.len())
    });
    let submit = stop_producers(&stop, threads);
    sched.step_into(clock.now(), &ZERO, &mut d).expect("valid");
    assert!(sched.conservation().is_balanced());
    Run { step, submit }
}

fn run_heap(o: &ContendedOptions, p: usize) -> Run {
    let clock = MonotonicClock::new();
    let heap = Arc::new(HeapQueue::new());
    let item = move |id: u64, at: Timestamp| {
        let spec = steady::spec(id);
        Item {
            id,
            class: spec.class.index() as u8,
            prompt_tokens: spec.prompt_tokens,
            max_new_tokens: spec.max_new_tokens,
            arrival: at,
        }
    };
    for id in 0..o.queued as u64 {
        heap.submit(item(id, clock.now()));
    }
    let outstanding = Arc::new(AtomicUsize::new(o.queued));
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(o.queued as u64));
    let submit = {
        let heap = Arc::clone(&heap);
        move |id| heap.submit(item(id, clock.now()))
    };
    let threads = producers(p, o.queued, &outstanding, &stop, &next_id, submit);
    let mut out = Vec::with_capacity(o.batch);
    let step = engine(o, &outstanding, || {
        let now = clock.now();
        let t = Instant::now();
        heap.step(now, o.batch, &mut out);
        (t.elapsed(), out.len())
    });
    let submit = stop_producers(&stop, threads);
    Run { step, submit }
}
