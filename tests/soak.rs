//! Concurrency soak: several API threads submit, cancel and reprioritize at random while the
//! engine thread steps and plays the engine (prefill chunks, decode tokens, preemptions,
//! aborts, finishes). It runs for a bounded time or number of API operations, then stops
//! the API threads, hands off what is still waiting and runs the rest to completion, and
//! checks: the conservation law at every step; every submitted request has exactly one
//! terminal outcome; every acknowledged cancel ended as `Cancelled`; a refused submit never
//! reached the scheduler.
//!
//! `TRIAGE_SOAK_MS` bounds the run time (default 2000 ms), `TRIAGE_SOAK_OPS` the API
//! operations (default unbounded), `TRIAGE_SOAK_THREADS` the API threads (default 3).

mod common;

use common::xorshift;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triage::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// What one API thread saw.
#[derive(Default)]
struct ApiLog {
    accepted: Vec<u64>,
    refused: Vec<u64>,
    cancelled: Vec<u64>,
    ops: u64,
}

struct Run {
    handle: RequestHandle,
    kv: u32,
    target: u32,
    generated: u32,
    blocks: u32,
}

/// The engine thread's side: the scheduler and the engine's copy of what runs.
struct Engine {
    sched: Scheduler,
    clock: ManualClock,
    /// Output tokens of every held request (kept across preemptions).
    generated: HashMap<u64, u32>,
    /// The handle of every request admitted and not ended: a resumed request keeps it.
    handles: HashMap<u64, RequestHandle>,
    running: HashMap<u64, Run>,
    outcomes: HashMap<u64, Outcome>,
    total_blocks: u32,
    steps: u64,
    seed: u64,
}

impl Engine {
    fn end(&mut self, id: u64, o: Outcome) {
        self.generated.remove(&id);
        self.handles.remove(&id);
        let prev = self.outcomes.insert(id, o);
        assert!(prev.is_none(), "req#{id} ended twice: {prev:?} then {o:?}");
    }

    fn step(&mut self, seqs: u32, tokens: u32) -> Decision {
        self.clock.advance(Duration::from_millis(1));
        let now = self.clock.now();
        let held: u32 = self.running.values().map(|r| r.blocks).sum();
        let b = Budget {
            max_num_seqs: seqs,
            max_batched_tokens: tokens,
            free_blocks: self.total_blocks - held,
        };
        let d = self.sched.step(now, &b).expect("valid budget");
        self.steps += 1;
        let c = self.sched.conservation();
        assert!(c.is_balanced(), "step {}: {c}", self.steps);
        assert!(d.total_tokens() <= tokens);
        for id in d.cancelled.iter() {
            self.end(id.0, Outcome::Cancelled);
        }
        for id in d.aborted.iter() {
            assert!(self.running.remove(&id.0).is_some(), "abort of idle {id}");
            self.end(id.0, Outcome::Cancelled);
        }
        for r in &d.rejected {
            self.end(r.id.0, Outcome::TimedOut);
        }
        for p in &d.preempted {
            let run = self.running.remove(&p.id.0).expect("victim was running");
            assert!(p.freed_blocks >= run.blocks);
        }
        for a in &d.admitted {
            assert!(
                !self.running.contains_key(&a.id.0),
                "{} started twice",
                a.id
            );
            let generated = *self.generated.get(&a.id.0).unwrap_or(&0);
            let first = *self.handles.entry(a.id.0).or_insert(a.handle);
            assert_eq!(first, a.handle, "{} resumed under another handle", a.id);
            self.running.insert(
                a.id.0,
                Run {
                    handle: a.handle,
                    kv: 0,
                    target: a.prefill_target,
                    generated,
                    blocks: a.blocks,
                },
            );
        }
        let work: Vec<(u64, RequestHandle, u32)> = d
            .scheduled
            .iter()
            .map(|s| (s.id.0, s.handle, s.tokens))
            .chain(
                d.admitted
                    .iter()
                    .map(|a| (a.id.0, a.handle, a.prefill_tokens)),
            )
            .collect();
        let held: u32 = self.running.values().map(|r| r.blocks).sum::<u32>();
        assert!(held <= self.total_blocks);
        for (id, handle, tokens) in work {
            let run = self
                .running
                .get_mut(&id)
                .expect("work for a running request");
            assert_eq!(run.handle, handle, "req#{id}: work under its handle");
            run.kv += tokens;
            run.blocks = run.blocks.max(run.kv.div_ceil(16));
            let out = u32::from(run.kv >= run.target);
            self.sched
                .on_progress(handle, now, tokens, out)
                .expect("progress");
            run.generated += out;
            self.generated.insert(id, run.generated);
            // Finish at the request's length (encoded in its id) or, now and then, early.
            let max_new = (id % 16 + 1) as u32;
            let stop = xorshift(&mut self.seed) % 64 == 0 && run.generated > 0;
            if run.generated == max_new || stop {
                let reason = if stop {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                };
                let o = self.sched.on_finished(handle, now, reason).expect("finish");
                self.running.remove(&id);
                self.end(id, o);
            }
        }
        d
    }
}

/// Deadline order (the default): relegation, the budget share, the relaxed chunk and the
/// overdue credit under the same traffic.
#[test]
fn api_threads_and_engine_soak() {
    soak(false, QueueOrder::Deadline, env("TRIAGE_SOAK_MS", 2_000));
}

/// The aging ladder: promotions, overdue-first.
#[test]
fn api_threads_and_engine_soak_in_the_ladder() {
    soak(false, QueueOrder::Ladder, env("TRIAGE_SOAK_MS", 1_000));
}

/// The same with fairness between 12 tenants on: lanes, counters and lifts under cancels,
/// class changes, relegation into the relegated tiers' own counters, timeouts and
/// preemption.
#[test]
fn api_threads_and_engine_soak_with_fairness() {
    soak(true, QueueOrder::Deadline, env("TRIAGE_SOAK_MS", 1_000));
}

fn soak(fair: bool, order: QueueOrder, run_ms: u64) {
    let max_ops = env("TRIAGE_SOAK_OPS", u64::MAX);
    let threads = env("TRIAGE_SOAK_THREADS", 3);
    let mut cfg = SchedulerConfig {
        shards: 2,
        bucket_width_ms: 2,
        max_wait_ms: 400,
        queue_timeout_ms: Some(2_000),
        backfill_lookahead: 2,
        order,
        ..SchedulerConfig::default()
    };
    cfg.classes[1].promote_after_ms = Some(200);
    cfg.classes[2].promote_after_ms = Some(100);
    cfg.classes
        .iter_mut()
        .for_each(|c| c.queue_capacity = 2_000);
    cfg.engine.total_blocks = 600;
    cfg.engine.max_model_len = 2048;
    cfg.fairness.enabled = fair;
    cfg.fairness.tenants = vec![TenantWeight { id: 3, weight: 4.0 }];
    let total_blocks = cfg.engine.total_blocks;
    let clock = ManualClock::new(Timestamp::ZERO);
    let (sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let logs: Arc<Mutex<Vec<ApiLog>>> = Arc::default();
    let start = Instant::now();
    let producers: Vec<_> = (0..threads)
        .map(|t| {
            let (api, stop, ops, logs) = (api.clone(), stop.clone(), ops.clone(), logs.clone());
            std::thread::spawn(move || {
                let mut log = ApiLog::default();
                let mut seed = 0x2545_F491_4F6C_DD1D ^ (t + 1);
                let mut next = 0u64;
                // Handles by counter (`None`: refused), for cancels and class changes.
                let mut handles: Vec<Option<RequestHandle>> = Vec::new();
                while !stop.load(Ordering::Relaxed) && ops.fetch_add(1, Ordering::Relaxed) < max_ops
                {
                    log.ops += 1;
                    let r = xorshift(&mut seed);
                    // Ids are unique per thread: (thread << 40) | counter; the low 4 bits
                    // of the counter set max_new so the engine knows when to stop.
                    match r % 10 {
                        0..=5 => {
                            let id = (t << 40) | next;
                            next += 1;
                            let class = Class::from_index((r >> 8) as u8 % 3);
                            let prompt = 1 + (r >> 16) as u32 % 300;
                            let spec = RequestSpec::new(id, class, prompt, (id % 16 + 1) as u32)
                                .with_tenant(TenantId((r >> 32) % 12));
                            match api.submit(spec) {
                                Ok(h) => {
                                    handles.push(Some(h));
                                    log.accepted.push(id);
                                }
                                Err(SubmitError::QueueFull { .. }) => {
                                    handles.push(None);
                                    log.refused.push(id);
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                                Err(e) => panic!("unexpected refusal of {id}: {e}"),
                            }
                        }
                        6 | 7 if next > 0 => {
                            let n = (r >> 20) % next;
                            let Some(h) = handles[n as usize] else {
                                continue;
                            };
                            match api.cancel(h) {
                                Ok(_) => log.cancelled.push((t << 40) | n),
                                Err(ControlError::NotFound(_))
                                | Err(ControlError::AlreadyCancelled(_)) => {}
                                Err(e) => panic!("cancel: {e}"),
                            }
                        }
                        _ if next > 0 => {
                            let Some(h) = handles[((r >> 20) % next) as usize] else {
                                continue;
                            };
                            let class = Class::from_index((r >> 12) as u8 % 3);
                            match api.reprioritize(h, class) {
                                Ok(()) => {}
                                Err(ControlError::NotFound(_))
                                | Err(ControlError::AlreadyCancelled(_)) => {}
                                Err(e) => panic!("reprioritize: {e}"),
                            }
                        }
                        _ => {}
                    }
                }
                logs.lock().unwrap().push(log);
            })
        })
        .collect();

    let mut engine = Engine {
        sched,
        clock,
        generated: HashMap::new(),
        handles: HashMap::new(),
        running: HashMap::new(),
        outcomes: HashMap::new(),
        total_blocks,
        steps: 0,
        seed: 0x9E37_79B9_7F4A_7C15,
    };
    let mut seed = 7u64;
    while start.elapsed() < Duration::from_millis(run_ms)
        && !producers.iter().all(|p| p.is_finished())
    {
        let r = xorshift(&mut seed);
        engine.step(1 + (r % 48) as u32, 64 + (r >> 8) as u32 % 2048);
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    // Quiet API: take the notices, hand off what waits, run the rest to completion.
    engine.step(64, 4096);
    for h in engine.sched.drain_waiting(engine.clock.now()) {
        engine.end(h.spec.id.0, Outcome::Evicted);
    }
    let mut guard = 0;
    while engine.sched.running() > 0 {
        engine.step(64, 4096);
        guard += 1;
        assert!(guard < 100_000, "running requests never finish");
    }
    let c = engine.sched.conservation();
    assert!(c.is_balanced(), "{c}");
    assert_eq!(
        (c.in_ingress, c.waiting, c.running),
        (0, 0, 0),
        "everything ended: {c}"
    );
    engine.sched.check_invariants().unwrap();

    let logs = logs.lock().unwrap();
    let total_ops: u64 = logs.iter().map(|l| l.ops).sum();
    let accepted: usize = logs.iter().map(|l| l.accepted.len()).sum();
    let refused: usize = logs.iter().map(|l| l.refused.len()).sum();
    for l in logs.iter() {
        for id in &l.accepted {
            assert!(engine.outcomes.contains_key(id), "req#{id} has no outcome");
        }
        for id in &l.refused {
            assert!(
                !engine.outcomes.contains_key(id),
                "refused req#{id} has an outcome"
            );
        }
        for id in &l.cancelled {
            assert_eq!(
                engine.outcomes.get(id),
                Some(&Outcome::Cancelled),
                "req#{id}: acknowledged cancel"
            );
        }
    }
    assert_eq!(
        engine.outcomes.len(),
        accepted,
        "outcomes only for accepted ids"
    );
    assert_eq!(c.submitted, (accepted + refused) as u64);
    assert_eq!(c.refused, refused as u64);
    let mut by = HashMap::new();
    for o in engine.outcomes.values() {
        *by.entry(format!("{o:?}")).or_insert(0u64) += 1;
    }
    eprintln!(
        "soak: {total_ops} API operations ({accepted} accepted, {refused} refused submits) by {threads} threads, {} engine steps in {:.1} s; outcomes {by:?}",
        engine.steps,
        start.elapsed().as_secs_f64()
    );
}
