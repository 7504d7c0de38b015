//! Deadline order's contract (`order = "deadline"`, the default), with injected time: the
//! order across and inside classes, per-request targets, relegation and shedding, the
//! budget share for urgent prefills, the relaxed chunk cap, the overdue share, preemption,
//! the measured pace, and conservation throughout. Each rule is its own test.
//!
//! The time model the numbers below are chosen from (see `src/scheduler/pace.rs`):
//! the iteration estimate `I` starts at `deadline.initial_iteration_ms` (50 ms) and moves
//! only with steps that follow a step that scheduled work, 0 to 2 s apart (steps here are
//! 0 or 50 ms apart unless a test says otherwise, so `I` stays exactly 50 ms); a prefill of
//! `P` tokens is estimated at `(ceil(P / max(0.8 × max_batched_tokens, 256)) + 1) × I`,
//! so 100 ms for any prompt of at most 256 tokens (3,276 with a budget of 4,096 tokens).
//! Default targets: HIGH first token by 500 ms, MEDIUM by 2 s, LOW started in time to
//! finish within 60 s; a request with an own `ttft_ms` has its first token due by then.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use triage::*;

/// Deadline order, no aging, two shards.
fn deadline() -> SchedulerConfig {
    SchedulerConfig {
        order: QueueOrder::Deadline,
        ..no_aging()
    }
}

/// A scheduler with a test engine that runs every decision to the letter: prefill chunks
/// as scheduled, one output token per decode, nothing finishes unless told.
struct Engine {
    h: Harness,
    /// Running requests: `(prefill target, KV tokens)`.
    running: BTreeMap<RequestId, (u32, u32)>,
}

impl Engine {
    fn new(config: SchedulerConfig) -> Self {
        Self {
            h: Harness::new(config),
            running: BTreeMap::new(),
        }
    }

    fn now(&self) -> Timestamp {
        self.h.clock.now()
    }

    fn submit(&self, spec: RequestSpec) {
        self.h.api.submit(spec).expect("submit accepted");
    }

    /// Steps with `b` and runs the decision at the step's time.
    fn step(&mut self, b: Budget) -> Decision {
        let d = self.h.step(b);
        for p in &d.preempted {
            self.running.remove(&p.id);
        }
        for a in &d.aborted {
            self.running.remove(a);
        }
        for a in &d.admitted {
            self.running.insert(a.id, (a.prefill_target, 0));
        }
        let now = self.now();
        for (id, tokens) in work(&d) {
            let (target, kv) = self.running.get_mut(&id).expect("runs");
            *kv += tokens;
            let out = u32::from(*kv >= *target);
            self.h
                .sched
                .on_progress(id, now, tokens, out)
                .expect("progress accepted");
        }
        d
    }

    fn finish(&mut self, id: u64) {
        self.running.remove(&RequestId(id));
        self.h.finish(RequestId(id));
    }
}

fn spec(id: u64, class: Class, prompt: u32) -> RequestSpec {
    RequestSpec::new(id, class, prompt, 1000)
}

/// Steps one admission at a time at the clock's time (each admitted request finishes
/// before the next step), `n` times; the ids admitted, in order.
fn one_at_a_time(e: &mut Engine, n: usize) -> Vec<u64> {
    let mut order = Vec::new();
    for _ in 0..n {
        let d = e.step(budget(1, 4096, 7000));
        assert_eq!(d.admitted.len(), 1, "one start per step: {d:?}");
        order.push(d.admitted[0].id.0);
        e.finish(d.admitted[0].id.0);
    }
    order
}

#[test]
fn live_requests_go_by_class_then_deadline() {
    let mut e = Engine::new(deadline());
    e.submit(spec(1, Class::MEDIUM, 16)); // t = 0: first token due by 2 s
                                          // LOW: started by 60 s less the estimated run, 100 ms of prefill plus one iteration
                                          // per expected output token (min(max_new, 128) before any LOW request finished).
    e.submit(RequestSpec::new(4, Class::LOW, 16, 1)); // due to start by 59.85 s
    e.h.clock.set(Timestamp::from_millis(1_000));
    e.submit(RequestSpec::new(5, Class::LOW, 16, 200)); // 1 + 60 - 6.5 = 54.5 s
    e.h.clock.set(Timestamp::from_millis(1_800));
    e.submit(spec(2, Class::HIGH, 16)); // due by 2.3 s, after MEDIUM 1's 2 s
                                        // MEDIUM 1's deadline is the earliest, but HIGH goes first; inside LOW the earlier
                                        // deadline (LOW 5, the later arrival) goes first.
    assert_eq!(one_at_a_time(&mut e, 4), vec![2, 1, 5, 4]);
    let c = e.h.sched.class_counters(Class::MEDIUM);
    assert_eq!(c.relegated, 0, "everyone could still meet their deadline");
}

#[test]
fn an_own_ttft_target_orders_a_request_among_its_class() {
    let mut e = Engine::new(deadline());
    e.submit(spec(1, Class::MEDIUM, 16)); // t = 0, due by 2 s (the class's target)
    e.submit(spec(3, Class::MEDIUM, 16).with_ttft_ms(5_000)); // t = 0, due by 5 s
    e.submit(spec(4, Class::HIGH, 16).with_ttft_ms(10_000)); // due by 10 s: still HIGH
    e.h.advance(ms(100));
    e.submit(spec(2, Class::MEDIUM, 16).with_ttft_ms(1_000)); // t = 100 ms, due by 1.1 s
    assert_eq!(one_at_a_time(&mut e, 4), vec![4, 2, 1, 3]);
}

#[test]
fn an_invalid_ttft_target_is_refused_at_submit_and_counted() {
    let e = Engine::new(deadline());
    for (id, ttft_ms) in [(1, 0), (2, MAX_TTFT_MS + 1), (3, u32::MAX)] {
        assert_eq!(
            e.h.api
                .submit(spec(id, Class::MEDIUM, 16).with_ttft_ms(ttft_ms)),
            Err(SubmitError::InvalidTtftTarget {
                id: RequestId(id),
                ttft_ms
            })
        );
    }
    // The bounds themselves are accepted.
    e.submit(spec(4, Class::MEDIUM, 16).with_ttft_ms(1));
    e.submit(spec(5, Class::MEDIUM, 16).with_ttft_ms(MAX_TTFT_MS));
    let c = e.h.sched.class_counters(Class::MEDIUM);
    assert_eq!((c.submitted, c.refused), (5, 3));
    let c = e.h.sched.conservation();
    assert_eq!((c.submitted, c.refused, c.in_ingress), (5, 3, 2), "{c}");
    assert!(c.is_balanced(), "{c}");
}

#[test]
fn iteration_estimate_learns_from_steps_that_gave_the_engine_work() {
    let mut cfg = deadline();
    cfg.deadline.initial_iteration_ms = 80;
    let mut e = Engine::new(cfg);
    let est = |e: &Engine| e.h.sched.iteration_estimate();
    // The moving average as the scheduler keeps it: 10% of each new gap.
    let mut expect = 0.08f64;
    let mut learn = |gap: Duration| {
        expect += 0.1 * (gap.as_secs_f64() - expect);
        Duration::from_secs_f64(expect)
    };
    assert_eq!(est(&e), ms(80));
    // Idle steps (nothing scheduled) teach nothing, whatever their spacing.
    e.step(budget(8, 4096, 7000));
    e.h.advance(ms(100));
    e.step(budget(8, 4096, 7000));
    assert_eq!(est(&e), ms(80));
    // A step with work, then one 100 ms later: one iteration of 100 ms.
    e.submit(spec(1, Class::LOW, 16));
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(d.admitted.len(), 1);
    e.h.advance(ms(100));
    e.step(budget(8, 4096, 7000)); // LOW 1 decodes: work again
    assert_eq!(est(&e), learn(ms(100)));
    // A second step at the same instant: no time passed, nothing learnt.
    let now = est(&e);
    e.step(budget(8, 4096, 7000));
    assert_eq!(est(&e), now);
    // Gaps up to 2 s are iterations; longer ones are idleness.
    e.h.advance(ms(2_000));
    e.step(budget(8, 4096, 7000));
    assert_eq!(est(&e), learn(ms(2_000)));
    let before = est(&e);
    e.h.advance(ms(2_001));
    e.step(budget(8, 4096, 7000));
    assert_eq!(
        est(&e),
        before,
        "a gap over 2 s is idleness, not an iteration"
    );
    // The gap after a step with work is an iteration even if the next step has none; the
    // gap after a step that scheduled nothing is not.
    e.finish(1);
    e.h.advance(ms(10));
    e.step(budget(8, 4096, 7000)); // nothing to do
    let idle = learn(ms(10));
    assert_eq!(est(&e), idle);
    e.h.advance(ms(10));
    e.step(budget(8, 4096, 7000));
    assert_eq!(est(&e), idle);
}

#[test]
fn a_request_past_its_deadline_is_relegated_behind_every_live_request() {
    let mut e = Engine::new(deadline());
    e.submit(spec(5, Class::MEDIUM, 16)); // t = 0, due by 2 s
    e.submit(spec(6, Class::HIGH, 16)); // t = 0, due by 500 ms
    e.h.clock.set(Timestamp::from_millis(100));
    e.submit(spec(1, Class::HIGH, 16)); // due by 600 ms
    e.h.clock.set(Timestamp::from_millis(2_500));
    e.submit(spec(2, Class::HIGH, 16));
    e.submit(spec(3, Class::MEDIUM, 16));
    e.submit(spec(4, Class::LOW, 16));
    // The first step judges every request that comes up: 5, 6 and 1 are past their
    // deadlines and are relegated (the default rule, keep).
    let d = e.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![2]);
    assert!(!d.admitted[0].relegated);
    assert!(d.rejected.is_empty(), "keep never ends a request");
    assert_eq!(e.h.sched.relegated_in(Class::HIGH), 2);
    assert_eq!(e.h.sched.relegated_in(Class::MEDIUM), 1);
    assert_eq!(e.h.sched.relegated_in(Class::LOW), 0);
    assert_eq!(e.h.sched.class_counters(Class::HIGH).relegated, 2);
    assert_eq!(e.h.sched.class_counters(Class::MEDIUM).relegated, 1);
    e.finish(2);
    // Live ones first, of every class; then the relegated ones by class, then arrival
    // (MEDIUM 5 arrived before HIGH 1, HIGH 6 before HIGH 1).
    let mut order = Vec::new();
    let mut relegated = Vec::new();
    for _ in 0..5 {
        let d = e.step(budget(1, 4096, 7000));
        let a = d.admitted[0];
        order.push(a.id.0);
        relegated.push(a.relegated);
        e.finish(a.id.0);
    }
    assert_eq!(order, vec![3, 4, 6, 1, 5]);
    assert_eq!(relegated, vec![false, false, true, true, true]);
    assert_eq!(
        e.h.sched.class_counters(Class::HIGH).relegated,
        2,
        "once each"
    );
}

#[test]
fn a_request_whose_first_token_cannot_come_in_time_at_the_measured_pace_is_relegated() {
    let mut e = Engine::new(deadline());
    // At the initial 50 ms per iteration a 16-token HIGH prompt's first token is 100 ms
    // away, well inside its 500 ms target.
    e.submit(spec(1, Class::HIGH, 16));
    e.submit(spec(2, Class::LOW, 16)); // keeps the engine busy: one decode a step
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1, 2]);
    assert!(d.admitted.iter().all(|a| !a.relegated));
    e.finish(1);
    // The engine slows to 400 ms per iteration: after 20 such steps the estimate is
    // 400 - 350 × 0.9^20 ≈ 357 ms, so a first token is two iterations ≈ 714 ms away.
    for _ in 0..20 {
        e.h.advance(ms(400));
        e.step(budget(8, 4096, 7000));
    }
    let it = e.h.sched.iteration_estimate();
    assert!(it > ms(300) && it < ms(400), "{it:?}");
    // A fresh HIGH request, 500 ms before its deadline, can no longer make it: relegated
    // at once, although its deadline has not passed. With nothing live waiting it still
    // starts in the same step.
    e.submit(spec(3, Class::HIGH, 16));
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![3]);
    assert!(d.admitted[0].relegated);
    assert_eq!(e.h.sched.class_counters(Class::HIGH).relegated, 1);
    // The same request with a target the engine can meet is not.
    e.finish(3);
    e.submit(spec(4, Class::HIGH, 16).with_ttft_ms(1_000));
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![4]);
    assert!(!d.admitted[0].relegated);
}

/// A request preempted after its first token has met its TTFT deadline: it is never
/// relegated for it, however long it waits to resume.
#[test]
fn a_request_preempted_after_its_first_token_is_never_relegated_for_ttft() {
    let mut e = Engine::new(deadline());
    e.submit(spec(1, Class::HIGH, 16));
    let d = e.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1]);
    assert!(e.h.sched.first_token_at(RequestId(1)).is_some());
    // The engine takes its seat away: HIGH 1 goes back to the queue.
    let d = e.step(budget(0, 4096, 7000));
    assert_eq!(d.preempted.len(), 1);
    // Far past its 500 ms deadline, and behind a fresh HIGH request with a live one.
    e.h.clock.set(Timestamp::from_millis(10_000));
    e.submit(spec(2, Class::HIGH, 16));
    let d = e.step(budget(1, 4096, 7000));
    assert_eq!(
        ids(&d.admitted),
        vec![1],
        "it keeps its place: arrival 0, deadline 500 ms"
    );
    assert!(d.admitted[0].resumed && !d.admitted[0].relegated);
    assert_eq!(e.h.sched.class_counters(Class::HIGH).relegated, 0);
}

#[test]
fn a_request_past_its_deadline_is_shed_by_its_classs_rule() {
    let mut cfg = deadline();
    cfg.classes[1].on_late = LateRule::Shed;
    let mut e = Engine::new(cfg);
    e.submit(spec(1, Class::MEDIUM, 16)); // t = 0, due by 2 s
    e.submit(spec(2, Class::HIGH, 16)); // due by 500 ms: HIGH keeps its late requests
    e.h.clock.set(Timestamp::from_millis(1_950));
    e.submit(spec(3, Class::MEDIUM, 16)); // due by 3.95 s
                                          // At 1.95 s MEDIUM 1's first token would come at 2.05 s at best (two iterations of
                                          // 50 ms): shed, 50 ms late, ended at once with its reason; HIGH 2 is relegated.
    let d = e.step(budget(1, 4096, 7000));
    assert_eq!(
        d.rejected,
        vec![Rejected {
            id: RequestId(1),
            class: Class::MEDIUM,
            reason: RejectReason::DeadlineMissed {
                waited: ms(1_950),
                late_by: ms(50),
            },
        }]
    );
    assert_eq!(
        ids(&d.admitted),
        vec![3],
        "live MEDIUM 3 before relegated HIGH 2"
    );
    let c = e.h.sched.class_counters(Class::MEDIUM);
    assert_eq!((c.shed, c.relegated), (1, 0));
    let c = e.h.sched.class_counters(Class::HIGH);
    assert_eq!((c.shed, c.relegated), (0, 1));
    let c = e.h.sched.conservation();
    assert_eq!((c.shed, c.waiting, c.running), (1, 1, 1), "{c}");
    assert!(c.is_balanced(), "{c}");
    // Shed is final: the id is free, nothing of it comes back.
    assert_eq!(
        e.h.api.cancel(RequestId(1)),
        Err(ControlError::NotFound(RequestId(1)))
    );
    e.finish(3);
    let d = e.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![2]);
    assert!(d.rejected.is_empty());
    e.finish(2);
    let c = e.h.sched.conservation();
    assert_eq!((c.submitted, c.finished, c.shed), (3, 2, 1), "{c}");
    assert_eq!(c.ended(), c.submitted);
}

/// HIGH 4 and LOW 1, 2, 3 running and decoding, each last given a token at 50 ms (steps at
/// 0 and 50 ms); the clock at 100 ms. Running order: HIGH 4, LOW 1, LOW 2, LOW 3.
fn four_decoding(cfg: SchedulerConfig) -> Engine {
    let mut e = Engine::new(cfg);
    for (id, class) in [
        (1, Class::LOW),
        (2, Class::LOW),
        (3, Class::LOW),
        (4, Class::HIGH),
    ] {
        e.submit(spec(id, class, 16));
    }
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![4, 1, 2, 3]);
    e.h.advance(ms(50));
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(d.scheduled.len(), 4);
    e.h.advance(ms(50));
    e
}

fn scheduled(d: &Decision) -> Vec<(u64, u32)> {
    d.scheduled.iter().map(|s| (s.id.0, s.tokens)).collect()
}

/// With the token budget short, an urgent prefill is served before the decode tokens of
/// lower classes, not before those of its own class or above.
#[test]
fn an_urgent_prefill_gets_tokens_before_lower_class_decodes() {
    for share in [true, false] {
        let mut cfg = deadline();
        if !share {
            cfg.deadline.max_decode_delay_ms = 0; // the share off
        }
        let mut e = four_decoding(cfg);
        // MEDIUM 5, 100 prompt tokens, first token due in 350 ms; estimated prefill 100 ms,
        // so 250 ms of slack: urgent (under 300 ms).
        e.submit(spec(5, Class::MEDIUM, 100).with_ttft_ms(350));
        let d = e.step(budget(8, 102, 7000));
        assert_eq!(d.total_tokens(), 102);
        if share {
            // 100 tokens are kept for MEDIUM 5: HIGH 4's decode (a higher class) and LOW
            // 1's (the tokens beyond the reserve) go; LOW 2 and 3 wait.
            assert_eq!(scheduled(&d), vec![(4, 1), (1, 1)]);
            assert_eq!(d.admitted[0].prefill_tokens, 100);
        } else {
            assert_eq!(scheduled(&d), vec![(4, 1), (1, 1), (2, 1), (3, 1)]);
            assert_eq!(d.admitted[0].prefill_tokens, 98);
        }
    }
}

/// Decodes held back for an urgent prefill that then cannot start (no seat, no preemption)
/// are given the tokens it leaves, after the step's other prefill work.
#[test]
fn withheld_decodes_get_the_tokens_left_at_the_end_of_the_step() {
    let mut cfg = deadline();
    cfg.preemption.enabled = false;
    let mut e = Engine::new(cfg);
    for (id, class) in [
        (1, Class::LOW),
        (2, Class::LOW),
        (3, Class::LOW),
        (4, Class::HIGH),
    ] {
        e.submit(spec(id, class, 16));
    }
    e.step(budget(8, 4096, 7000));
    e.h.advance(ms(50));
    // LOW 6 starts its 130-token prompt with the 100 tokens the decodes leave.
    e.submit(spec(6, Class::LOW, 130));
    let d = e.step(budget(8, 104, 7000));
    assert_eq!(ids(&d.admitted), vec![6]);
    assert_eq!(d.admitted[0].prefill_tokens, 100);
    e.h.advance(ms(50));
    // MEDIUM 5 is urgent but every seat is taken: LOW 2 and 3 are held back for it, LOW
    // 6's last 30 prompt tokens go, then LOW 2 and 3 get what is left.
    e.submit(spec(5, Class::MEDIUM, 100).with_ttft_ms(350));
    let d = e.step(budget(5, 102, 7000));
    assert!(d.admitted.is_empty());
    assert_eq!(e.h.sched.waiting(), 1);
    assert_eq!(scheduled(&d), vec![(4, 1), (1, 1), (6, 30), (2, 1), (3, 1)]);
}

/// A long urgent prefill holds lower-class decodes back step after step, but none waits
/// longer than `deadline.max_decode_delay_ms` (300 ms) since its last token, or than its
/// class's TPOT bound when that is shorter.
#[test]
fn a_decode_is_withheld_at_most_max_decode_delay_or_its_classs_tpot_bound() {
    for tpot_ms in [None, Some(100)] {
        let mut cfg = deadline();
        if let Some(ms) = tpot_ms {
            cfg.slo.classes[2].tpot = Some(SloTarget::new(ms, 0.99));
        }
        let cap = ms(tpot_ms.unwrap_or(300));
        let mut e = four_decoding(cfg);
        // MEDIUM 5: 1,000 prompt tokens at about 100 a step, estimated at 250 ms (four
        // chunks of 256 and the iteration in flight), due in 500 ms: urgent until done.
        e.submit(spec(5, Class::MEDIUM, 1000).with_ttft_ms(500));
        let mut last_token: BTreeMap<u64, Timestamp> =
            (1..=3).map(|id| (id, Timestamp::from_millis(50))).collect();
        let mut low_steps = Vec::new();
        for _ in 0..7 {
            let d = e.step(budget(8, 102, 7000));
            assert!(scheduled(&d).contains(&(4, 1)), "HIGH 4 is never held back");
            let lows: Vec<u64> = scheduled(&d)
                .iter()
                .filter(|&&(id, _)| id <= 3)
                .map(|&(id, _)| id)
                .collect();
            if !lows.is_empty() {
                assert_eq!(lows, vec![1, 2, 3]);
                low_steps.push(e.now().0 / 1_000_000);
            }
            for id in 1..=3 {
                let gap = e.now().saturating_since(last_token[&id]);
                assert!(gap <= cap, "LOW {id} waited {gap:?}");
                if lows.contains(&id) {
                    last_token.insert(id, e.now());
                }
            }
            assert!(e.running.contains_key(&RequestId(5)));
            e.h.advance(ms(50));
        }
        // Steps at 100 to 400 ms; the LOW decodes run exactly when their last token is
        // `cap` old.
        let expect = if tpot_ms.is_some() {
            vec![150, 250, 350]
        } else {
            vec![350]
        };
        assert_eq!(low_steps, expect, "TPOT bound {tpot_ms:?}");
        let (target, kv) = e.running[&RequestId(5)];
        assert!(kv < target, "MEDIUM 5 was still prefilling throughout");
    }
}
