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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use triage::*;
use triage_testkit::{FakeEngine, Goal, Rng};

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

/// The engine thread's side: the scheduler, the test kit's engine (finishing each request
/// at an output length drawn at its first start, up to its `max_new_tokens`) and the
/// outcome of every request that ended.
struct Engine {
    sched: Scheduler,
    clock: ManualClock,
    engine: FakeEngine,
    outcomes: HashMap<u64, Outcome>,
    steps: u64,
}

impl Engine {
    fn end(&mut self, id: u64, o: Outcome) {
        let prev = self.outcomes.insert(id, o);
        assert!(prev.is_none(), "req#{id} ended twice: {prev:?} then {o:?}");
    }

    fn step(&mut self, seqs: u32, tokens: u32) -> Decision {
        self.clock.advance(Duration::from_millis(1));
        let now = self.clock.now();
        let b = self.engine.budget(seqs, tokens);
        let d = self.sched.step(now, &b).expect("valid budget");
        self.steps += 1;
        let c = self.sched.conservation();
        assert!(c.is_balanced(), "step {}: {c}", self.steps);
        assert!(d.total_tokens() <= tokens);
        let carried = self.engine.carry_out(&mut self.sched, &d, now);
        assert_eq!(
            self.engine.problems(),
            &[] as &[String],
            "step {}",
            self.steps
        );
        for (id, o) in carried.ended {
            self.end(id.0, o);
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
                let mut rng = Rng::new(0x2545_F491_4F6C_DD1D ^ (t + 1));
                let mut next = 0u64;
                // Handles by counter (`None`: refused), for cancels and class changes.
                let mut handles: Vec<Option<RequestHandle>> = Vec::new();
                while !stop.load(Ordering::Relaxed) && ops.fetch_add(1, Ordering::Relaxed) < max_ops
                {
                    log.ops += 1;
                    let r = rng.next_u64();
                    // Ids are unique per thread: (thread << 40) | counter; the low 4 bits
                    // of the counter set max_new.
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
        engine: FakeEngine::new(total_blocks, 16, Goal::Drawn(0x9E37_79B9_7F4A_7C15)),
        outcomes: HashMap::new(),
        steps: 0,
    };
    let mut rng = Rng::new(7);
    while start.elapsed() < Duration::from_millis(run_ms)
        && !producers.iter().all(|p| p.is_finished())
    {
        let r = rng.next_u64();
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
