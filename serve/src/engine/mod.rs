//! The engine thread: the simulated engine of `triage simulate`, in real time, driving the
//! real [`Scheduler`].
//!
//! One `std::thread` owns the scheduler. Each iteration it answers the handlers' commands,
//! builds the [`Budget`] from its own KV accounting, calls [`Scheduler::step`], applies the
//! decision, asks the cost model how long the iteration takes, sleeps that long (divided
//! by the speed factor), then reports progress and finishes and sends each request its
//! tokens. With nothing to run it parks until a handler wakes it (or 5 ms pass, so that
//! SLO ticks, metrics and the queue stay current).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use tokio::sync::{mpsc, oneshot};
use triage::{
    Budget, Class, Clock, Conservation, Decision, FinishReason, MonotonicClock, RejectReason,
    RequestHandle, Scheduler, SchedulerConfig, Submitter, Violation, MAX_CLASSES,
};
use triage_sim::cost::{CostModel, IterationWork, VidurCost};

use crate::error::ServeError;
use crate::metrics as m;
use crate::protocol::{Command, Ended, Event, Finish, Registration, ReloadOutcome, Snapshot};

mod snapshot;

/// How long an idle engine parks before it steps again anyway.
const IDLE_PARK: Duration = Duration::from_millis(5);
/// Most recent violations kept for the snapshot.
const RECENT_VIOLATIONS: usize = 50;
/// Span of the rates (drain, output tokens), sampled once a second.
const RATE_SPAN: usize = 10;

/// The simulated engine: its model, cost model and limits.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    /// The model and GPU.
    pub model: triage_sim::model::ModelSpec,
    /// Its context length.
    pub max_model_len: u32,
    /// Its fitted iteration-time model.
    pub cost: VidurCost,
    /// `max_num_seqs`.
    pub max_num_seqs: u32,
    /// `max_num_batched_tokens`.
    pub max_num_batched_tokens: u32,
    /// Speed relative to the cost model (1: real time).
    pub speed: f64,
}

impl EngineSpec {
    /// `config` with its `engine` section replaced by this engine's KV cache and context.
    pub fn apply_limits(&self, mut config: SchedulerConfig) -> SchedulerConfig {
        config.engine.block_size = self.model.block_size;
        config.engine.total_blocks = self.model.num_kv_blocks();
        config.engine.max_model_len = self.model.max_model_len;
        config
    }
}

/// What the engine thread publishes for the handlers, without a lock.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Waiting requests per base class at the last step.
    waiting: [AtomicU64; MAX_CLASSES],
    /// First admissions per second over the last seconds (`f64` bits).
    drain_per_s: AtomicU64,
    /// Set when the shutdown began.
    shutting_down: AtomicBool,
}

impl EngineStats {
    /// Requests waiting in `class` and every more urgent class: those ahead of a new
    /// request of `class`.
    pub fn waiting_through(&self, class: Class) -> u64 {
        self.waiting[..=class.index().min(MAX_CLASSES - 1)]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .sum()
    }

    /// First admissions per second over the last few seconds (0 before any).
    pub fn drain_per_s(&self) -> f64 {
        f64::from_bits(self.drain_per_s.load(Ordering::Relaxed))
    }

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

/// The handlers' side of the engine thread.
#[derive(Debug)]
pub struct Engine {
    commands: Sender<Command>,
    thread: Thread,
    join: Mutex<Option<JoinHandle<Conservation>>>,
    stats: Arc<EngineStats>,
    submitter: Submitter,
    config: triage::ConfigHandle,
}

impl Engine {
    /// Starts the engine thread on `config` (its engine limits replaced by `spec`'s), with
    /// `recorder` as the thread's metrics recorder.
    pub fn start(
        config: SchedulerConfig,
        spec: EngineSpec,
        recorder: Arc<PrometheusRecorder>,
    ) -> Result<Engine, ServeError> {
        let config = spec.apply_limits(config);
        let (commands, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(EngineStats::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stats = Arc::clone(&stats);
        let join = std::thread::Builder::new()
            .name("triage-engine".into())
            .spawn(move || {
                let _local = metrics::set_default_local_recorder(&*recorder);
                m::describe();
                let clock = MonotonicClock::new();
                let (sched, submitter) = match Scheduler::with_clock(config, clock) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return Conservation::default();
                    }
                };
                let _ = ready_tx.send(Ok((submitter, sched.config_handle())));
                Loop::new(sched, clock, spec, rx, thread_stats, recorder.handle()).run()
            })
            .map_err(ServeError::Io)?;
        let (submitter, config) = match ready_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = join.join();
                return Err(ServeError::Scheduler(e));
            }
            Err(_) => return Err(ServeError::EngineDied),
        };
        Ok(Engine {
            commands,
            thread: join.thread().clone(),
            join: Mutex::new(Some(join)),
            stats,
            submitter,
            config,
        })
    }

    /// Sends `command` and wakes the engine.
    pub fn send(&self, command: Command) {
        // The receiver lives as long as the engine thread; after it exits, nothing answers.
        let _ = self.commands.send(command);
        self.thread.unpark();
    }

    /// Wakes the engine (after a submit or a cancel).
    pub fn wake(&self) {
        self.thread.unpark();
    }

    /// The API threads' handle on the scheduler.
    pub fn submitter(&self) -> &Submitter {
        &self.submitter
    }

    /// The scheduler's configuration handle (static validation of reloads).
    pub fn config_handle(&self) -> &triage::ConfigHandle {
        &self.config
    }

    /// The queue and the engine now, as of the engine's next step boundary (at most one
    /// iteration away); `None` once the engine thread has ended.
    pub async fn query(&self) -> Option<Snapshot> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Query(tx));
        rx.await.ok()
    }

    /// Proposes `config` (its engine limits replaced by the simulated engine's) and waits
    /// for the step that applies or refuses it; `Err` says why it was refused.
    pub async fn reload(&self, config: SchedulerConfig) -> Result<ReloadOutcome, String> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Reload(Box::new(config), tx));
        rx.await
            .unwrap_or_else(|_| Err("the engine stopped before applying it".into()))
    }

    /// What the engine publishes without a lock.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Waits for the engine thread to end (after a shutdown) and returns the scheduler's
    /// final conservation law; `None` if already joined or if the thread panicked.
    pub fn join(&self) -> Option<Conservation> {
        let handle = self.join.lock().ok()?.take()?;
        handle.join().ok()
    }
}

/// A running request's state in the simulated engine.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Prefill of this run (prompt, plus earlier output after a preemption).
    target: u32,
    /// Of it, computed.
    computed: u32,
    /// Tokens in its KV cache.
    kv: u32,
    /// KV blocks held.
    blocks: u32,
}

/// A request the engine knows.
#[derive(Debug)]
struct Req {
    events: mpsc::UnboundedSender<Event>,
    class: Class,
    arrival: Instant,
    prompt: u32,
    handle: Option<RequestHandle>,
    run: Option<Run>,
    generated: u32,
    max_new: u32,
}

impl Req {
    fn send(&self, e: Event) {
        // The client may be gone; its cancel is on its way.
        let _ = self.events.send(e);
    }
}

/// Metric handles of the engine's own figures.
struct Gauges {
    kv_used: Gauge,
    kv_total: Gauge,
    kv_usage: Gauge,
    running: Gauge,
    waiting: Gauge,
    iteration: Histogram,
    ttft: Vec<Histogram>,
    vllm_ttft: Histogram,
    prompt_tokens: Counter,
    generation_tokens: Counter,
}

impl Gauges {
    fn new(model: &str, classes: &triage::ClassSet) -> Self {
        let model = model.to_string();
        Self {
            kv_used: metrics::gauge!(m::ENGINE_KV_USED),
            kv_total: metrics::gauge!(m::ENGINE_KV_TOTAL),
            kv_usage: metrics::gauge!(m::ENGINE_KV_USAGE),
            running: metrics::gauge!(m::ENGINE_RUNNING),
            waiting: metrics::gauge!(m::ENGINE_WAITING),
            iteration: metrics::histogram!(m::ENGINE_ITERATION),
            ttft: ttft_handles(classes),
            vllm_ttft: metrics::histogram!(m::VLLM_TTFT, m::LABEL_MODEL => model.clone()),
            prompt_tokens: metrics::counter!(m::VLLM_PROMPT_TOKENS, m::LABEL_MODEL => model.clone()),
            generation_tokens: metrics::counter!(m::VLLM_GENERATION_TOKENS, m::LABEL_MODEL => model),
        }
    }
}

/// `triage_serve_time_to_first_token_seconds{class}`, one per class in force.
fn ttft_handles(classes: &triage::ClassSet) -> Vec<Histogram> {
    classes
        .names()
        .iter()
        .map(|name| metrics::histogram!(m::TTFT, "class" => name.clone()))
        .collect()
}

/// Sets `triage_serve_queue_capacity{class}` from the configuration in force.
fn publish_capacities(sched: &Scheduler) {
    for c in &sched.config().classes {
        metrics::gauge!(m::QUEUE_CAPACITY, "class" => c.name.clone()).set(c.queue_capacity as f64);
    }
}

/// The engine thread's state.
struct Loop {
    sched: Scheduler,
    clock: MonotonicClock,
    spec: EngineSpec,
    rx: Receiver<Command>,
    stats: Arc<EngineStats>,
    prometheus: PrometheusHandle,
    gauges: Gauges,
    reqs: HashMap<u64, Req>,
    violations: Receiver<Violation>,
    recent: VecDeque<(Violation, Instant)>,
    pending_reload: Option<oneshot::Sender<Result<ReloadOutcome, String>>>,
    /// Queries to answer at the end of this step.
    queries: Vec<oneshot::Sender<Snapshot>>,
    /// When the running requests must be done by, once the shutdown began.
    shutdown: Option<Instant>,
    started: Instant,
    iterations: u64,
    first_admissions: u64,
    output_tokens: u64,
    /// `(when, first admissions, output tokens)` once a second.
    rates: VecDeque<(Instant, u64, u64)>,
    last_upkeep: Instant,
}

impl Loop {
    fn new(
        mut sched: Scheduler,
        clock: MonotonicClock,
        spec: EngineSpec,
        rx: Receiver<Command>,
        stats: Arc<EngineStats>,
        prometheus: PrometheusHandle,
    ) -> Self {
        let violations = sched.subscribe_violations(1024);
        let gauges = Gauges::new(spec.model.name, sched.classes());
        gauges
            .kv_total
            .set(f64::from(sched.config().engine.total_blocks));
        publish_capacities(&sched);
        let now = Instant::now();
        Self {
            sched,
            clock,
            spec,
            rx,
            stats,
            prometheus,
            gauges,
            reqs: HashMap::new(),
            violations,
            recent: VecDeque::new(),
            pending_reload: None,
            queries: Vec::new(),
            shutdown: None,
            started: now,
            iterations: 0,
            first_admissions: 0,
            output_tokens: 0,
            rates: VecDeque::from([(now, 0, 0)]),
            last_upkeep: now,
        }
    }

    fn run(mut self) -> Conservation {
        let mut decision = Decision::default();
        let mut work: Vec<(u64, u32)> = Vec::new();
        let mut iw = IterationWork::default();
        loop {
            self.commands();
            let start = Instant::now();
            if self.shutdown.is_some_and(|deadline| start >= deadline) {
                self.abort_running();
            }
            let now = self.clock.now();
            let total = self.sched.config().engine.total_blocks;
            let budget = Budget {
                max_num_seqs: self.spec.max_num_seqs,
                max_batched_tokens: self.spec.max_num_batched_tokens,
                free_blocks: total.saturating_sub(self.held_blocks()),
            };
            if let Err(e) = self.sched.step_into(now, &budget, &mut decision) {
                // Nothing was decided: apply nothing (the last decision is not replayed).
                tracing::error!(error = %e, "step refused");
                decision = Decision::default();
            }
            // Registrations sent before a submit this step drained.
            self.commands();
            work.clear();
            iw.clear();
            self.apply(&mut decision, &mut work, &mut iw);
            if self.shutdown.is_some() {
                self.end_waiting();
            }
            self.after_step();
            self.answer_queries();
            if work.is_empty() {
                if self.shutdown.is_some() && self.sched.running() == 0 {
                    break;
                }
                std::thread::park_timeout(IDLE_PARK);
                continue;
            }
            let dt = self.spec.cost.iteration_time(&iw) / self.spec.speed;
            let dt = Duration::from_secs_f64(if dt.is_finite() { dt.max(0.0) } else { 0.0 });
            if let Some(left) = (start + dt).checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
            self.iterations += 1;
            self.gauges.iteration.record(dt.as_secs_f64());
            let now = self.clock.now();
            self.report(&work, now);
        }
        // Whatever is still registered never reached the scheduler or ended in it already.
        for (_, r) in self.reqs.drain() {
            r.send(Event::Ended(Ended::ShuttingDown));
        }
        self.after_step();
        self.commands();
        self.answer_queries();
        self.sched.conservation()
    }

    /// Answers the queries received this step, as of its end (its metrics published).
    fn answer_queries(&mut self) {
        if self.queries.is_empty() {
            return;
        }
        let snapshot = self.snapshot();
        for reply in self.queries.drain(..) {
            let _ = reply.send(snapshot.clone());
        }
    }

    fn held_blocks(&self) -> u32 {
        self.reqs
            .values()
            .filter_map(|r| r.run.map(|run| run.blocks))
            .sum()
    }

    /// Answers every command waiting.
    fn commands(&mut self) {
        while let Ok(c) = self.rx.try_recv() {
            match c {
                Command::Register(r) => self.register(r),
                Command::Forget(id) => {
                    self.reqs.remove(&id.0);
                }
                // Answered after the step, so that what it says the metrics say too.
                Command::Query(reply) => self.queries.push(reply),
                Command::Reload(config, reply) => {
                    let config = self.spec.apply_limits(*config);
                    match self.sched.reload(config) {
                        Ok(()) => {
                            // A reload proposed earlier and not yet answered is superseded.
                            if let Some(old) = self.pending_reload.replace(reply) {
                                let _ = old.send(Err(
                                    "superseded by a later reload before it was applied".into(),
                                ));
                            }
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
                Command::Shutdown { grace } => {
                    if self.shutdown.is_none() {
                        self.shutdown = Some(Instant::now() + grace);
                        self.stats.shutting_down.store(true, Ordering::Relaxed);
                        self.end_waiting();
                    }
                }
            }
        }
    }

    fn register(&mut self, r: Registration) {
        self.gauges
            .prompt_tokens
            .increment(u64::from(r.prompt_tokens));
        self.reqs.insert(
            r.id.0,
            Req {
                events: r.events,
                class: r.class,
                arrival: r.arrival,
                prompt: r.prompt_tokens,
                handle: None,
                run: None,
                generated: 0,
                max_new: u32::MAX,
            },
        );
    }

    /// Applies a decision: ends, preemptions, admissions and the iteration's work.
    fn apply(&mut self, d: &mut Decision, work: &mut Vec<(u64, u32)>, iw: &mut IterationWork) {
        for p in &d.preempted {
            if let Some(r) = self.reqs.get_mut(&p.id.0) {
                r.run = None;
            }
        }
        for id in d.aborted.iter().chain(&d.cancelled) {
            if let Some(r) = self.reqs.remove(&id.0) {
                r.send(Event::Ended(Ended::Cancelled));
            }
        }
        for rj in &d.rejected {
            let ended = match rj.reason {
                RejectReason::TimedOut { waited } => Ended::TimedOut { waited },
                RejectReason::DeadlineMissed { waited, late_by } => Ended::Shed { waited, late_by },
                RejectReason::TenantLimit { max_tenants, .. } => Ended::TenantLimit { max_tenants },
            };
            if let Some(r) = self.reqs.remove(&rj.id.0) {
                r.send(Event::Ended(ended));
            }
        }
        for a in &d.admitted {
            let r = self.reqs.entry(a.id.0).or_insert_with(|| {
                // Not registered (cannot happen: handlers register before they submit).
                tracing::error!(id = a.id.0, "admitted a request no handler registered");
                Req {
                    events: mpsc::unbounded_channel().0,
                    class: a.class,
                    arrival: Instant::now(),
                    prompt: 0,
                    handle: None,
                    run: None,
                    generated: 0,
                    max_new: a.max_new_tokens,
                }
            });
            r.handle = Some(a.handle);
            r.max_new = a.max_new_tokens;
            r.run = Some(Run {
                target: a.prefill_target,
                computed: 0,
                kv: 0,
                blocks: a.blocks,
            });
            if !a.resumed {
                self.first_admissions += 1;
                self.gauges.prompt_tokens.increment(u64::from(r.prompt));
            }
            work.push((a.id.0, a.prefill_tokens));
            iw.batched_tokens += a.prefill_tokens;
            iw.prefill_chunks.push((a.prefill_tokens, 0));
        }
        for s in &d.scheduled {
            let Some(run) = self.reqs.get(&s.id.0).and_then(|r| r.run) else {
                tracing::error!(id = s.id.0, "scheduled a request the engine does not run");
                continue;
            };
            if run.computed < run.target {
                iw.prefill_chunks.push((s.tokens, run.computed));
            } else {
                iw.decode_seqs += 1;
                iw.decode_context_tokens += u64::from(run.kv) + 1;
            }
            iw.batched_tokens += s.tokens;
            work.push((s.id.0, s.tokens));
        }
        if let Some(result) = d.reload.take() {
            if result.is_ok() {
                publish_capacities(&self.sched);
                self.gauges.ttft = ttft_handles(self.sched.classes());
            }
            if let Some(reply) = self.pending_reload.take() {
                let _ = reply.send(
                    result
                        .map(|r| ReloadOutcome {
                            epoch: r.epoch,
                            classes_added: r.classes_added,
                            classes_removed: r.classes_removed,
                            requeued: r.requeued,
                        })
                        .map_err(|e| e.to_string()),
                );
            }
        }
    }

    /// Reports the iteration: progress, tokens to the clients, finishes.
    fn report(&mut self, work: &[(u64, u32)], now: triage::Timestamp) {
        let block_size = self.sched.config().engine.block_size.max(1);
        let wall = Instant::now();
        for &(id, tokens) in work {
            let Some(r) = self.reqs.get_mut(&id) else {
                continue;
            };
            let (Some(run), Some(handle)) = (r.run.as_mut(), r.handle) else {
                continue;
            };
            let new_output = if run.computed < run.target {
                run.computed += tokens;
                u32::from(run.computed >= run.target)
            } else {
                1
            };
            run.kv += tokens;
            run.blocks = run.blocks.max(run.kv.div_ceil(block_size));
            if let Err(e) = self.sched.on_progress(handle, now, tokens, new_output) {
                tracing::error!(id, error = %e, "progress refused; ending the request");
                let _ = self.sched.on_finished(handle, now, FinishReason::Error);
                if let Some(r) = self.reqs.remove(&id) {
                    r.send(Event::Ended(Ended::Cancelled));
                }
                continue;
            }
            if new_output > 0 {
                if r.generated == 0 {
                    let ttft = wall.saturating_duration_since(r.arrival).as_secs_f64();
                    if let Some(h) = self.gauges.ttft.get(r.class.index()) {
                        h.record(ttft);
                    }
                    self.gauges.vllm_ttft.record(ttft);
                }
                r.send(Event::Token { index: r.generated });
                r.generated += 1;
                self.output_tokens += 1;
                self.gauges.generation_tokens.increment(1);
            }
            if r.generated >= r.max_new {
                if let Err(e) = self.sched.on_finished(handle, now, FinishReason::Length) {
                    tracing::error!(id, error = %e, "finish refused");
                }
                if let Some(r) = self.reqs.remove(&id) {
                    r.send(Event::Finished(Finish::Length));
                }
            }
        }
    }

    /// Shutdown: hands every waiting request back (ingress closed) and tells its client.
    fn end_waiting(&mut self) {
        let now = self.clock.now();
        for h in self.sched.drain_waiting(now) {
            if let Some(r) = self.reqs.remove(&h.spec.id.0) {
                r.send(Event::Ended(Ended::ShuttingDown));
            }
        }
    }

    /// Shutdown grace expired: ends every running request (outcome finished, reason
    /// error; the client gets `finish_reason: "abort"`).
    fn abort_running(&mut self) {
        let now = self.clock.now();
        let running: Vec<u64> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.run.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in running {
            if let Some(r) = self.reqs.remove(&id) {
                if let Some(h) = r.handle {
                    let _ = self.sched.on_finished(h, now, FinishReason::Error);
                }
                r.send(Event::Finished(Finish::Abort));
            }
        }
    }

    /// Publishes what the handlers and Prometheus read.
    fn after_step(&mut self) {
        while let Ok(v) = self.violations.try_recv() {
            if self.recent.len() == RECENT_VIOLATIONS {
                self.recent.pop_back();
            }
            self.recent.push_front((v, Instant::now()));
        }
        let classes = self.sched.classes().clone();
        for (i, w) in self.stats.waiting.iter().enumerate() {
            let n = if i < classes.len() {
                self.sched
                    .class_counters(Class::from_index(i as u8))
                    .waiting
            } else {
                0
            };
            w.store(n, Ordering::Relaxed);
        }
        let used = self.held_blocks();
        let total = self.sched.config().engine.total_blocks;
        let running = self.sched.running();
        self.gauges.kv_used.set(f64::from(used));
        self.gauges.kv_total.set(f64::from(total));
        self.gauges
            .kv_usage
            .set(f64::from(used) / f64::from(total.max(1)));
        self.gauges.running.set(running as f64);
        self.gauges
            .waiting
            .set(self.reqs.len().saturating_sub(running) as f64);
        let now = Instant::now();
        if self
            .rates
            .back()
            .is_none_or(|&(t, _, _)| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.rates
                .push_back((now, self.first_admissions, self.output_tokens));
            if self.rates.len() > RATE_SPAN + 1 {
                self.rates.pop_front();
            }
            let (drain, _) = self.rates_per_s();
            self.stats
                .drain_per_s
                .store(drain.to_bits(), Ordering::Relaxed);
        }
        if now.duration_since(self.last_upkeep) >= Duration::from_secs(5) {
            self.prometheus.run_upkeep();
            self.last_upkeep = now;
        }
    }

    /// (first admissions, output tokens) per second over the sampled span.
    fn rates_per_s(&self) -> (f64, f64) {
        match (self.rates.front(), self.rates.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                let dt = b.0.duration_since(a.0).as_secs_f64();
                ((b.1 - a.1) as f64 / dt, (b.2 - a.2) as f64 / dt)
            }
            _ => (0.0, 0.0),
        }
    }
}
