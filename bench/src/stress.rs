//! `triage stress`: the scheduler under load on the wall clock, at a large queue depth.
//!
//! 1. **Fill**: the calling thread submits `queued` requests (stepping with a zero budget
//!    every few thousand submits to drain ingress) while a counting allocator measures the
//!    net heap bytes this adds: bytes per queued request.
//! 2. **Run**: `threads` API threads each perform `rate` operations per second — submits
//!    (paused while the queue is at or above its target depth, so it stays there), cancels
//!    and reprioritizes of recent requests, any thread's, through the handles their submits
//!    returned (published by id) — while the engine thread steps every `step_every` with a
//!    real budget (`max_num_seqs`, token budget, free KV blocks as the simulated engine,
//!    the testkit's `FakeEngine`, holds them) and reports progress like an engine, by the
//!    handle each admission carries: each admitted request prefills (in chunks if the
//!    budget says so), then decodes a few tokens, then finishes.
//! 3. **Shutdown**: API threads stop, a last step applies their notices, the waiting
//!    requests are handed off (`drain_waiting`, outcome `evicted`) and the engine runs the
//!    running ones to completion.
//! 4. **Checks**: the conservation law after every step, every request's outcome recorded
//!    exactly once (refused at submit, or exactly one of finished / cancelled / timed out /
//!    evicted), outcome totals equal to the scheduler's counters, nothing left held,
//!    `check_invariants` after the fill and at the end; every admission and scheduled
//!    iteration naming the handle its submit returned (kept across preemptions), and every
//!    handle stale (cancel answers `NotFound`) once its request ended.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use triage::{
    Budget, CancelOutcome, Class, Clock, Conservation, ControlError, Decision, EngineLimits,
    MonotonicClock, Outcome, RequestHandle, RequestId, RequestSpec, Scheduler, SchedulerConfig,
    Submitter, Timestamp,
};
use triage_testkit::steady::{FILL_CHUNK, ZERO};
use triage_testkit::{FakeEngine, Goal, Rng};

use crate::heap_counter;
use crate::timing::{fmt_ns, Summary};

/// What `triage stress` runs.
#[derive(Clone, Debug)]
pub struct StressOptions {
    /// Target queue depth: filled before the run, kept during it.
    pub queued: usize,
    /// API threads during the run.
    pub threads: usize,
    /// Operations per second per API thread (submits, cancels, reprioritizes).
    pub rate: f64,
    /// Fraction of operations that cancel a recent request.
    pub cancel_fraction: f64,
    /// Fraction of operations that reprioritize a recent request.
    pub reprioritize_fraction: f64,
    /// Length of the run phase.
    pub duration: Duration,
    /// Wall time between two engine steps.
    pub step_every: Duration,
    /// `max_num_seqs` of the engine's budget.
    pub max_num_seqs: u32,
    /// Token budget per step.
    pub max_batched_tokens: u32,
    /// Prompt tokens, drawn uniformly from this range.
    pub prompt_tokens: (u32, u32),
    /// `max_new_tokens`, drawn uniformly from this range; the engine stops each request
    /// after a uniform number of tokens from 1 to its `max_new_tokens`.
    pub max_new_tokens: (u32, u32),
    /// LOW's promotion threshold in ms (MEDIUM's is twice it, max wait three times), so
    /// that aging and overdue admission happen within a short run; `None` keeps the
    /// defaults.
    pub aging_ms: Option<u64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Draw a progress bar.
    pub progress: bool,
    /// A TOML config to run with instead of the built-in one; re-read and proposed to the
    /// running scheduler when the file changes or the process gets SIGHUP.
    pub config: Option<std::path::PathBuf>,
}

impl Default for StressOptions {
    fn default() -> Self {
        Self {
            queued: 100_000,
            threads: 4,
            rate: 20_000.0,
            cancel_fraction: 0.2,
            reprioritize_fraction: 0.2,
            duration: Duration::from_secs(10),
            step_every: Duration::from_millis(1),
            max_num_seqs: 256,
            max_batched_tokens: 2048,
            prompt_tokens: (16, 256),
            max_new_tokens: (4, 32),
            aging_ms: Some(2_000),
            seed: 7,
            progress: false,
            config: None,
        }
    }
}

/// Per-request bookkeeping flags (one byte per id).
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;
/// Added once per terminal outcome the scheduler reports.
const OUTCOME: u8 = 4;

/// What the API threads did.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ApiCounts {
    /// Submits accepted.
    pub submitted: u64,
    /// Submits refused (any reason).
    pub refused: u64,
    /// Submits skipped because the queue was at its target depth.
    pub skipped_full: u64,
    /// Cancels that found a waiting request.
    pub cancelled_waiting: u64,
    /// Cancels that found a running request.
    pub cancelled_running: u64,
    /// Cancels or reprioritizes of a request no longer held (already ended: its handle is
    /// stale).
    pub not_found: u64,
    /// Cancels or reprioritizes skipped because the id picked had no handle: its submit had
    /// not returned yet, or was refused.
    pub no_handle: u64,
    /// Cancels of an already-cancelled request.
    pub already_cancelled: u64,
    /// Reprioritizes accepted.
    pub reprioritized: u64,
    /// Answers a cancel or reprioritize by handle never gives (a class error from a cancel,
    /// an id-index error from either): a broken check unless 0.
    pub unexpected: u64,
}

impl ApiCounts {
    fn add(&mut self, o: &ApiCounts) {
        self.submitted += o.submitted;
        self.refused += o.refused;
        self.skipped_full += o.skipped_full;
        self.cancelled_waiting += o.cancelled_waiting;
        self.cancelled_running += o.cancelled_running;
        self.not_found += o.not_found;
        self.no_handle += o.no_handle;
        self.already_cancelled += o.already_cancelled;
        self.reprioritized += o.reprioritized;
        self.unexpected += o.unexpected;
    }
}

/// Terminal outcomes as the stress engine saw them.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SeenOutcomes {
    /// `on_finished` answered `Finished`.
    pub finished: u64,
    /// Listed as cancelled or aborted, or `on_finished` answered `Cancelled`.
    pub cancelled: u64,
    /// Listed as rejected (timed out).
    pub timed_out: u64,
    /// Handed off by `drain_waiting`.
    pub evicted: u64,
}

/// The result of a stress run.
#[derive(Clone, Debug, Serialize)]
pub struct StressReport {
    /// Target depth.
    pub queued: usize,
    /// API threads.
    pub threads: usize,
    /// Seconds the fill took.
    pub fill_seconds: f64,
    /// Net heap bytes the fill added, divided by the requests it queued; `None` when no
    /// counting allocator is installed.
    pub bytes_per_request: Option<f64>,
    /// Seconds the run phase took.
    pub run_seconds: f64,
    /// Submit latency during the run, ns.
    pub submit_latency: Summary,
    /// `step_into` latency during the run, ns.
    pub step_latency: Summary,
    /// Steps during the run.
    pub steps: u64,
    /// What the slowest step of the run did.
    pub slowest_step: String,
    /// Waiting requests after each run step: smallest, mean, largest.
    pub depth_min: usize,
    /// Mean waiting requests over the run's steps.
    pub depth_mean: f64,
    /// Largest waiting requests over the run's steps.
    pub depth_max: usize,
    /// Requests admitted (including resumes) during the run.
    pub admitted: u64,
    /// Requests preempted during the run.
    pub preempted: u64,
    /// Requests promoted by aging during the run.
    pub promoted: u64,
    /// API-side counts.
    pub api: ApiCounts,
    /// Outcomes the engine saw.
    pub outcomes: SeenOutcomes,
    /// The final conservation line.
    pub conservation: String,
    /// Steps after which the conservation law did not hold.
    pub unbalanced_steps: u64,
    /// Every broken check, in words (empty if all held).
    pub failures: Vec<String>,
}

impl StressReport {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report as a human-readable block.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let l = &self.submit_latency;
        let st = &self.step_latency;
        let _ = writeln!(
            s,
            "stress: {} queued, {} API threads, {:.1} s run",
            self.queued, self.threads, self.run_seconds
        );
        let _ = writeln!(s, "  fill                {:.2} s", self.fill_seconds);
        match self.bytes_per_request {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "  memory              {b:.0} bytes per queued request (net heap bytes allocated by the fill / requests queued)"
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  memory              not measured (no counting allocator)"
                );
            }
        }
        let _ = writeln!(
            s,
            "  submit latency      p50 {}  p99 {}  p99.9 {}  max {}  ({} submits)",
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.p999),
            fmt_ns(l.max),
            l.count
        );
        let _ = writeln!(
            s,
            "  step latency        p50 {}  p99 {}  max {}  ({} steps)",
            fmt_ns(st.p50),
            fmt_ns(st.p99),
            fmt_ns(st.max),
            st.count
        );
        let _ = writeln!(s, "  slowest step        {}", self.slowest_step);
        let _ = writeln!(
            s,
            "  queue depth         min {}  mean {:.0}  max {}",
            self.depth_min, self.depth_mean, self.depth_max
        );
        let a = &self.api;
        let _ = writeln!(
            s,
            "  api                 {} submitted, {} refused, {} skipped at target depth; cancels {} waiting + {} running; {} reprioritized; {} not found, {} already cancelled, {} with no handle yet",
            a.submitted,
            a.refused,
            a.skipped_full,
            a.cancelled_waiting,
            a.cancelled_running,
            a.reprioritized,
            a.not_found,
            a.already_cancelled,
            a.no_handle
        );
        let o = &self.outcomes;
        let _ = writeln!(
            s,
            "  engine              {} admitted, {} preempted, {} promoted by aging; outcomes: {} finished, {} cancelled, {} timed out, {} evicted at shutdown",
            self.admitted, self.preempted, self.promoted, o.finished, o.cancelled, o.timed_out, o.evicted
        );
        let _ = writeln!(s, "  conservation        {}", self.conservation);
        if self.ok() {
            let _ = writeln!(
                s,
                "  invariants          OK: balanced after every step, every request has exactly one outcome, handles consistent and stale at the end, check_invariants passed"
            );
        } else {
            let _ = writeln!(s, "  invariants          BROKEN:");
            for f in &self.failures {
                let _ = writeln!(s, "    - {f}");
            }
        }
        s
    }
}

/// The configuration stress runs with: the defaults, with room for the target depth and,
/// if `aging_ms` is set, the aging ladder LOW→MEDIUM at `aging_ms`, MEDIUM→HIGH at twice
/// it and max wait at three times it.
pub fn stress_config(queued: usize, aging_ms: Option<u64>) -> SchedulerConfig {
    let mut cfg = SchedulerConfig::default();
    if let Some(a) = aging_ms {
        cfg.classes[Class::LOW.index()].promote_after_ms = Some(a);
        cfg.classes[Class::MEDIUM.index()].promote_after_ms = Some(2 * a);
        cfg.max_wait_ms = 3 * a;
    }
    for c in &mut cfg.classes {
        c.queue_capacity = c.queue_capacity.max(2 * queued + 65_536);
    }
    cfg
}

/// State shared by the API threads and the engine thread.
struct Shared {
    /// One byte per id: ACCEPTED / REFUSED flags plus OUTCOME per outcome.
    book: Vec<AtomicU8>,
    /// The handle each accepted submit returned, by id: set by the submitting thread once
    /// `submit` returns (so possibly after the engine admitted the request).
    handles: Vec<OnceLock<RequestHandle>>,
    next_id: AtomicU64,
    stop: AtomicBool,
    /// Waiting requests as of the last step.
    depth: AtomicUsize,
}

impl Shared {
    fn mark(&self, id: RequestId, bits: u8) {
        // Relaxed: read only after every thread is joined.
        self.book[id.0 as usize].fetch_add(bits, Ordering::Relaxed);
    }

    /// Records an accepted submit: its book flag and its handle.
    fn accepted(&self, id: RequestId, handle: RequestHandle) {
        self.mark(id, ACCEPTED);
        self.handles[id.0 as usize]
            .set(handle)
            .expect("one submit per id");
    }

    /// The handle of `id`'s request, once its submit has returned it.
    fn handle(&self, id: u64) -> Option<RequestHandle> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.handles.get(i))
            .and_then(|h| h.get().copied())
    }
}

fn random_spec(rng: &mut Rng, id: u64, o: &StressOptions) -> RequestSpec {
    let class = match rng.range(0, 9) {
        0..=1 => Class::HIGH,
        2..=6 => Class::MEDIUM,
        _ => Class::LOW,
    };
    let prompt = rng.range(u64::from(o.prompt_tokens.0), u64::from(o.prompt_tokens.1)) as u32;
    let max_new = rng.range(u64::from(o.max_new_tokens.0), u64::from(o.max_new_tokens.1)) as u32;
    RequestSpec::new(id, class, prompt, max_new)
}

/// The stress engine: the testkit's [`FakeEngine`] runs the requests (KV blocks, chunked
/// prefill, decode, a finish at a goal drawn from 1 to each request's `max_new_tokens` at
/// its first admission) and checks what each decision asks of it; around it, what stress
/// counts and checks on top: outcomes by kind and in the book, admissions, preemptions and
/// promotions, and each admission's handle against the one its submit returned.
struct Engine {
    /// Carries out each decision.
    fake: FakeEngine,
    /// How many of `fake.problems()` have been reported through [`Engine::fail`].
    problems_reported: usize,
    seen: SeenOutcomes,
    failures: Vec<String>,
    admitted: u64,
    preempted: u64,
    promoted: u64,
}

impl Engine {
    /// An engine with `limits`' KV blocks whose output goals are drawn from `seed`.
    fn new(limits: &EngineLimits, seed: u64) -> Self {
        Engine {
            fake: FakeEngine::new(limits.total_blocks, limits.block_size, Goal::Drawn(seed)),
            problems_reported: 0,
            seen: SeenOutcomes::default(),
            failures: Vec::new(),
            admitted: 0,
            preempted: 0,
            promoted: 0,
        }
    }

    /// The budget of the next iteration: the configured limits and the blocks not held.
    fn budget(&self, o: &StressOptions) -> Budget {
        self.fake.budget(o.max_num_seqs, o.max_batched_tokens)
    }

    /// One step at the clock's time, applied as an engine would.
    fn step_and_apply(
        &mut self,
        sched: &mut Scheduler,
        d: &mut Decision,
        clock: &MonotonicClock,
        shared: &Shared,
        o: &StressOptions,
    ) -> Result<(), String> {
        let budget = self.budget(o);
        sched
            .step_into(clock.now(), &budget, d)
            .map_err(|e| e.to_string())?;
        self.apply(sched, d, clock.now(), shared);
        Ok(())
    }

    /// Records a broken check: the first 20 in words, then one line saying more followed.
    fn fail(&mut self, what: String) {
        const LISTED: usize = 20;
        match self.failures.len() {
            n if n < LISTED => self.failures.push(what),
            LISTED => self.failures.push(format!(
                "more checks broke; only the first {LISTED} are listed"
            )),
            _ => {}
        }
    }

    /// Records the checks the fake engine found broken since the last call as failures.
    fn report_problems(&mut self) {
        while let Some(p) = self.fake.problems().get(self.problems_reported).cloned() {
            self.problems_reported += 1;
            self.fail(p);
        }
    }

    /// Records `id` handed off by `drain_waiting`: its outcome, and the engine forgets it.
    fn evicted(&mut self, id: RequestId, shared: &Shared) {
        self.fake.forget(id);
        self.seen.evicted += 1;
        shared.mark(id, OUTCOME);
    }

    /// Applies one decision as an engine would and reports the iteration's progress at
    /// `now`, the end of the iteration (read from the clock after the step: a request
    /// submitted while the step ran can be stamped later than the step's own `now`).
    fn apply(&mut self, sched: &mut Scheduler, d: &Decision, now: Timestamp, shared: &Shared) {
        self.admitted += d.admitted.len() as u64;
        self.preempted += d.preempted.len() as u64;
        self.promoted += d.summary.promoted;
        for a in &d.admitted {
            // Published once the submit returned: a request that a step drained before
            // its submit returned is not compared here (the fake engine compares its later
            // iterations and resumes with its first admission).
            if let Some(h) = shared.handle(a.id.0) {
                if h != a.handle {
                    self.fail(format!(
                        "{} admitted with {}, submitted as {h}",
                        a.id, a.handle
                    ));
                }
            }
        }
        let carried = self.fake.carry_out(sched, d, now);
        for &(id, outcome) in &carried.ended {
            match outcome {
                // Reached its goal, or listed as cancelled or aborted (or cancelled while
                // it ran, which `on_finished` answers).
                Outcome::Finished => self.seen.finished += 1,
                Outcome::Cancelled => self.seen.cancelled += 1,
                // Listed as rejected, whatever the reason: the report counts them all as
                // timed out (a rejection of another reason then shows as a mismatch with
                // the scheduler's timed-out count).
                _ if d.rejected.iter().any(|r| r.id == id) => self.seen.timed_out += 1,
                o => self.fail(format!("on_finished({id}) answered {o:?}")),
            }
            shared.mark(id, OUTCOME);
        }
        self.report_problems();
    }
}

/// Runs the stress test. Errors are configuration errors; broken invariants are in the
/// report (see [`StressReport::ok`]).
pub fn stress(o: &StressOptions) -> Result<StressReport, String> {
    if o.threads == 0 || o.queued == 0 || o.rate <= 0.0 {
        return Err("--threads, --queued and --rate must be positive".into());
    }
    let cfg = match &o.config {
        Some(p) => SchedulerConfig::from_path(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => stress_config(o.queued, o.aging_ms),
    };
    let engine_limits = cfg.engine.clone();
    let clock = MonotonicClock::new();
    let (mut sched, api) = Scheduler::with_clock(cfg, clock).map_err(|e| e.to_string())?;
    let _watcher = match &o.config {
        Some(p) => Some(
            crate::config_watch::ConfigWatcher::spawn(
                p.clone(),
                sched.config_handle(),
                Duration::from_millis(200),
            )
            .map_err(|e| format!("watching {}: {e}", p.display()))?,
        ),
        None => None,
    };
    let submit_fraction = (1.0 - o.cancel_fraction - o.reprioritize_fraction).max(0.0);
    let max_ids = o.queued as u64
        + (o.threads as f64 * o.rate * submit_fraction * o.duration.as_secs_f64() * 1.2) as u64
        + 4096;
    let shared = Shared {
        book: (0..max_ids).map(|_| AtomicU8::new(0)).collect(),
        handles: (0..max_ids).map(|_| OnceLock::new()).collect(),
        next_id: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        depth: AtomicUsize::new(0),
    };
    let mut engine = Engine::new(&engine_limits, o.seed ^ 0xE4);
    let mut d = Decision::default();

    let bar = if o.progress {
        let b = ProgressBar::new(o.queued as u64);
        b.set_style(
            ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    // ---- fill ----------------------------------------------------------------------------
    let (fill_seconds, bytes_per_request) = fill(
        o,
        &mut sched,
        &api,
        clock,
        &shared,
        &mut engine,
        &mut d,
        &bar,
    )?;

    // ---- run -----------------------------------------------------------------------------
    bar.set_prefix("run");
    bar.set_length(o.duration.as_millis() as u64);
    bar.set_position(0);
    let mut step_ns: Vec<f64> = Vec::with_capacity(
        (o.duration.as_secs_f64() / o.step_every.as_secs_f64().max(1e-6)) as usize + 16,
    );
    let mut depth_sum = 0f64;
    let mut depth_min = usize::MAX;
    let mut depth_max = 0usize;
    let mut unbalanced = 0u64;
    let mut slowest = (Duration::ZERO, String::new());
    let (admitted0, preempted0, promoted0) = (engine.admitted, engine.preempted, engine.promoted);
    let run_start = Instant::now();
    let (api_counts, submit_ns) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.threads)
            .map(|t| {
                let api = api.clone();
                let shared = &shared;
                s.spawn(move || api_thread(t, &api, shared, o))
            })
            .collect();

        // The engine loop.
        let mut next = Instant::now();
        while run_start.elapsed() < o.duration {
            let budget = engine.budget(o);
            let now = clock.now();
            let t = Instant::now();
            let r = sched.step_into(now, &budget, &mut d);
            let took = t.elapsed();
            match &d.reload {
                Some(Ok(rep)) => eprintln!(
                    "config: epoch {} in force ({} waiting re-queued)",
                    rep.epoch, rep.requeued
                ),
                Some(Err(e)) => eprintln!("config: reload refused: {e}"),
                None => {}
            }
            step_ns.push(took.as_nanos() as f64);
            if took > slowest.0 {
                let m = &d.summary;
                slowest = (
                    took,
                    format!(
                        "step {} at {:.3} s: drained {}, promoted {}, admitted {}, preempted {}, cancelled {}, aborted {}, waiting {}, running {}",
                        step_ns.len(),
                        run_start.elapsed().as_secs_f64(),
                        m.drained,
                        m.promoted,
                        d.admitted.len(),
                        d.preempted.len(),
                        d.cancelled.len(),
                        d.aborted.len(),
                        m.waiting,
                        m.running
                    ),
                );
            }
            if let Err(e) = r {
                engine.fail(format!("step refused: {e}"));
                break;
            }
            engine.apply(&mut sched, &d, clock.now(), &shared);
            if !sched.conservation().is_balanced() {
                unbalanced += 1;
            }
            let depth = sched.waiting();
            shared.depth.store(depth, Ordering::Relaxed);
            depth_sum += depth as f64;
            depth_min = depth_min.min(depth);
            depth_max = depth_max.max(depth);
            if step_ns.len() & 63 == 0 {
                bar.set_position(run_start.elapsed().as_millis() as u64);
                bar.set_message(format!("depth {depth}, running {}", sched.running()));
            }
            next += o.step_every;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now; // behind: do not burst to catch up
            }
        }
        shared.stop.store(true, Ordering::Relaxed);
        let mut counts = ApiCounts::default();
        let mut lat: Vec<u32> = Vec::new();
        for h in handles {
            let (c, l) = h.join().expect("API thread panicked");
            counts.add(&c);
            lat.extend_from_slice(&l);
        }
        (counts, lat)
    });
    if api_counts.unexpected > 0 {
        engine.fail(format!(
            "{} cancels or reprioritizes by handle answered an error they never give",
            api_counts.unexpected
        ));
    }
    let run_seconds = run_start.elapsed().as_secs_f64();
    let steps = step_ns.len() as u64;
    let (admitted, preempted, promoted) = (
        engine.admitted - admitted0,
        engine.preempted - preempted0,
        engine.promoted - promoted0,
    );

    // ---- shutdown ------------------------------------------------------------------------
    bar.set_prefix("drain");
    // A last step applies the notices of the API threads' final calls and drains ingress.
    engine.step_and_apply(&mut sched, &mut d, &clock, &shared, o)?;
    let handed = sched.drain_waiting(clock.now());
    for h in &handed {
        engine.evicted(h.spec.id, &shared);
    }
    let mut guard = 0;
    while sched.running() > 0 && guard < 100_000 {
        engine.step_and_apply(&mut sched, &mut d, &clock, &shared, o)?;
        if !sched.conservation().is_balanced() {
            unbalanced += 1;
        }
        guard += 1;
    }
    bar.finish_and_clear();

    // ---- checks --------------------------------------------------------------------------
    let c = check_outcomes(&sched, &api, &shared, &mut engine, max_ids, unbalanced);

    Ok(StressReport {
        queued: o.queued,
        threads: o.threads,
        fill_seconds,
        bytes_per_request,
        run_seconds,
        submit_latency: Summary::of_u32(&submit_ns),
        step_latency: Summary::of(&mut step_ns),
        steps,
        slowest_step: slowest.1,
        depth_min: if steps == 0 { 0 } else { depth_min },
        depth_mean: depth_sum / steps.max(1) as f64,
        depth_max,
        admitted,
        preempted,
        promoted,
        api: api_counts,
        outcomes: engine.seen,
        conservation: c.to_string(),
        unbalanced_steps: unbalanced,
        failures: engine.failures,
    })
}

/// The fill (calling thread): submits `o.queued` requests and drains them with zero-budget
/// steps, counting the heap bytes the scheduler allocates meanwhile. Returns the fill's
/// seconds and the bytes per queued request (if the counting allocator is installed).
#[allow(clippy::too_many_arguments)]
fn fill(
    o: &StressOptions,
    sched: &mut Scheduler,
    api: &Submitter,
    clock: MonotonicClock,
    shared: &Shared,
    engine: &mut Engine,
    d: &mut Decision,
    bar: &ProgressBar,
) -> Result<(f64, Option<f64>), String> {
    bar.set_prefix("fill");
    let mut rng = Rng::new(o.seed);
    // Specs are drawn before counting so the measured window holds only the scheduler's
    // own allocations (the caller's payload would be the prompt, which we do not have).
    let fill_specs: Vec<RequestSpec> = (0..o.queued as u64)
        .map(|id| random_spec(&mut rng, id, o))
        .collect();
    shared.next_id.store(o.queued as u64, Ordering::Relaxed);
    let fill_start = Instant::now();
    let before = heap_counter::live_bytes();
    heap_counter::set_counting(true);
    let mut refused_fill = 0u64;
    for (i, spec) in fill_specs.iter().enumerate() {
        match api.submit(*spec) {
            Ok(h) => shared.accepted(spec.id, h),
            Err(_) => {
                refused_fill += 1;
                shared.mark(spec.id, REFUSED);
            }
        }
        if (i + 1) % FILL_CHUNK == 0 {
            sched
                .step_into(clock.now(), &ZERO, d)
                .map_err(|e| e.to_string())?;
            bar.set_position(i as u64 + 1);
        }
    }
    sched
        .step_into(clock.now(), &ZERO, d)
        .map_err(|e| e.to_string())?;
    heap_counter::set_counting(false);
    let after = heap_counter::live_bytes();
    let fill_seconds = fill_start.elapsed().as_secs_f64();
    bar.set_position(o.queued as u64);
    let filled = sched.waiting();
    let bytes_per_request =
        (heap_counter::installed() && filled > 0).then(|| (after - before) as f64 / filled as f64);
    if refused_fill > 0 {
        engine.fail(format!("{refused_fill} fill submits refused"));
    }
    if filled != o.queued {
        engine.fail(format!("fill queued {filled}, wanted {}", o.queued));
    }
    if let Err(e) = sched.check_invariants() {
        engine.fail(format!("check_invariants after fill: {e}"));
    }
    shared.depth.store(filled, Ordering::Relaxed);
    Ok((fill_seconds, bytes_per_request))
}

/// The end-of-run checks, failures recorded in `engine`: the conservation law (balanced at
/// every step and at the end, nothing left held), the invariants, exactly one outcome per
/// id in the book, a handle for every accepted id and every handle stale, and the engine's
/// and API threads' counts against the scheduler's.
fn check_outcomes(
    sched: &Scheduler,
    api: &Submitter,
    shared: &Shared,
    engine: &mut Engine,
    max_ids: u64,
    unbalanced: u64,
) -> Conservation {
    let c = sched.conservation();
    if unbalanced > 0 {
        engine.fail(format!("conservation unbalanced after {unbalanced} steps"));
    }
    if !c.is_balanced() {
        engine.fail(format!("conservation unbalanced at the end: {c}"));
    }
    if c.waiting != 0 || c.running != 0 || c.in_ingress != 0 {
        engine.fail(format!("requests still held at the end: {c}"));
    }
    if let Err(e) = sched.check_invariants() {
        engine.fail(format!("check_invariants at the end: {e}"));
    }
    let used = shared.next_id.load(Ordering::Relaxed).min(max_ids);
    let (mut refused, mut bad) = (0u64, Vec::new());
    for id in 0..used {
        let v = shared.book[id as usize].load(Ordering::Relaxed);
        let flags = v & 3;
        let outcomes = v >> 2;
        let ok = match flags {
            ACCEPTED => outcomes == 1 && shared.handle(id).is_some(),
            REFUSED => {
                refused += 1;
                outcomes == 0
            }
            _ => false,
        };
        if !ok && bad.len() < 5 {
            bad.push(format!(
                "req#{id}: accepted {}, refused {}, {outcomes} outcomes",
                flags & ACCEPTED != 0,
                flags & REFUSED != 0
            ));
        }
    }
    for b in bad {
        engine.fail(format!("not exactly one outcome (or no handle): {b}"));
    }
    // Every request ended, so every handle is stale: a cancel finds nothing (and changes
    // nothing), whichever request its slot went to since.
    let mut live = Vec::new();
    for id in 0..used {
        if let Some(h) = shared.handle(id) {
            match api.cancel(h) {
                Err(ControlError::NotFound(n)) if n == h => {}
                r => {
                    if live.len() < 5 {
                        live.push(format!("req#{id} ({h}): cancel answered {r:?}"));
                    }
                }
            }
        }
    }
    for l in live {
        engine.fail(format!("handle not stale at the end: {l}"));
    }
    let s = engine.seen;
    let checks = [
        ("finished", s.finished, c.finished),
        ("cancelled", s.cancelled, c.cancelled),
        ("timed out", s.timed_out, c.timed_out),
        ("evicted", s.evicted, c.evicted),
        ("refused", refused, c.refused),
        ("submitted", used, c.submitted),
    ];
    for (what, seen, counted) in checks {
        if seen != counted {
            engine.fail(format!(
                "{what}: engine and API saw {seen}, scheduler counted {counted}"
            ));
        }
    }
    c
}

/// One API thread: `rate` operations per second until told to stop. Returns its counts and
/// the latency of each submit in ns.
fn api_thread(
    t: usize,
    api: &Submitter,
    shared: &Shared,
    o: &StressOptions,
) -> (ApiCounts, Vec<u32>) {
    let mut rng = Rng::new(o.seed.wrapping_mul(31).wrapping_add(t as u64 + 1));
    let mut c = ApiCounts::default();
    let mut lat: Vec<u32> = Vec::with_capacity((o.rate * o.duration.as_secs_f64()) as usize + 16);
    let period = 1.0 / o.rate;
    let start = Instant::now();
    let mut done: u64 = 0;
    let max_ids = shared.book.len() as u64;
    // Relaxed: a stop flag; the joins order everything after it.
    while !shared.stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() / period) as u64;
        if done >= due {
            let wait =
                Duration::from_secs_f64((done + 1) as f64 * period).saturating_sub(start.elapsed());
            // Sleep rather than spin, even for short waits: spinning API threads would
            // starve the engine thread on a small machine. Operations due meanwhile run as
            // a short burst on waking, so the average rate holds.
            std::thread::sleep(wait.max(Duration::from_micros(100)));
            continue;
        }
        done += 1;
        let u = rng.next_f64();
        // The handle of a recent request (any thread's), if its submit has returned one.
        let recent = || {
            let hi = shared.next_id.load(Ordering::Relaxed);
            let window = (o.queued as u64).min(hi).max(1);
            shared.handle(hi - 1 - (rng_pick(hi, window, t, done)))
        };
        if u < o.cancel_fraction {
            let Some(h) = recent() else {
                c.no_handle += 1;
                continue;
            };
            match api.cancel(h) {
                Ok(CancelOutcome::WasWaiting) => c.cancelled_waiting += 1,
                Ok(CancelOutcome::WasRunning) => c.cancelled_running += 1,
                Err(ControlError::NotFound(_)) => c.not_found += 1,
                Err(ControlError::AlreadyCancelled(_)) => c.already_cancelled += 1,
                Err(
                    ControlError::Class(_) | ControlError::UnknownId(_) | ControlError::NoIdIndex,
                ) => c.unexpected += 1,
            }
        } else if u < o.cancel_fraction + o.reprioritize_fraction {
            let class = Class::from_index(rng.range(0, 2) as u8);
            let Some(h) = recent() else {
                c.no_handle += 1;
                continue;
            };
            match api.reprioritize(h, class) {
                Ok(()) => c.reprioritized += 1,
                Err(ControlError::NotFound(_)) => c.not_found += 1,
                Err(ControlError::AlreadyCancelled(_)) => c.already_cancelled += 1,
                Err(ControlError::Class(_)) => {}
                Err(ControlError::UnknownId(_) | ControlError::NoIdIndex) => c.unexpected += 1,
            }
        } else {
            // Relaxed: a depth hint; the queue stays near its target, not exactly at it.
            if shared.depth.load(Ordering::Relaxed) >= o.queued {
                c.skipped_full += 1;
                continue;
            }
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            if id >= max_ids {
                shared.next_id.fetch_sub(1, Ordering::Relaxed);
                c.skipped_full += 1;
                continue;
            }
            let spec = random_spec(&mut rng, id, o);
            let t0 = Instant::now();
            let r = api.submit(spec);
            lat.push(t0.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
            match r {
                Ok(h) => {
                    c.submitted += 1;
                    shared.accepted(spec.id, h);
                }
                Err(_) => {
                    c.refused += 1;
                    shared.mark(spec.id, REFUSED);
                }
            }
        }
    }
    (c, lat)
}

/// A pseudo-random offset below `window` for the `done`-th operation of thread `t`.
fn rng_pick(hi: u64, window: u64, t: usize, done: u64) -> u64 {
    let mut r = Rng::new(hi ^ ((t as u64) << 48) ^ done.wrapping_mul(0x9E37_79B9));
    r.next_u64() % window
}
