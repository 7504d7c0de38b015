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
use triage_testkit::{FakeEngine, Goal, Rng};

/// Deadline order, no aging, two shards, and every class's late requests relegated
/// (`on_late = "keep"`; the default gives HIGH `serve`, which its own tests set).
fn deadline() -> SchedulerConfig {
    let mut cfg = SchedulerConfig {
        order: QueueOrder::Deadline,
        ..no_aging()
    };
    for class in &mut cfg.classes {
        class.on_late = LateRule::Keep;
    }
    cfg
}

/// A scheduler and the test kit's engine, which runs every decision to the letter:
/// prefill chunks as scheduled, one output token per decode, nothing finishes unless told.
struct Engine {
    h: Harness,
    engine: FakeEngine,
}

impl Engine {
    fn new(config: SchedulerConfig) -> Self {
        Self {
            h: Harness::new(config),
            engine: FakeEngine::new(u32::MAX, 16, Goal::Never),
        }
    }

    fn now(&self) -> Timestamp {
        self.h.clock.now()
    }

    fn submit(&mut self, spec: RequestSpec) {
        let handle = self.h.api.submit(spec).expect("submit accepted");
        self.h.handles.insert(spec.id, handle);
    }

    /// Steps with `b` and runs the decision at the step's time.
    fn step(&mut self, b: Budget) -> Decision {
        let d = self.h.step(b);
        let now = self.now();
        self.engine.carry_out(&mut self.h.sched, &d, now);
        assert_eq!(self.engine.problems(), &[] as &[String]);
        d
    }

    /// KV blocks free on an engine of `total`.
    fn free(&self, total: u32) -> u32 {
        total - self.engine.blocks_held()
    }

    fn finish(&mut self, id: u64) {
        let now = self.now();
        self.engine
            .finish(&mut self.h.sched, RequestId(id), now)
            .expect("a running request finishes");
    }

    /// Running requests that generated `max_new_tokens`: the engine must finish them.
    fn done(&self) -> Vec<u64> {
        self.engine.done().into_iter().map(|id| id.0).collect()
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
    // t = 0: MEDIUM 1, first token due by 2 s. LOW 4, to be started by 60 s less its
    // estimated run: 100 ms of prefill plus one iteration per expected output token
    // (min(max_new, 128) before any LOW request finished), so by 59.85 s.
    e.submit(spec(1, Class::MEDIUM, 16));
    e.submit(RequestSpec::new(4, Class::LOW, 16, 1));
    e.h.clock.set(Timestamp::from_millis(1_000));
    e.submit(RequestSpec::new(5, Class::LOW, 16, 200)); // 1 + 60 - 6.5 = 54.5 s
    e.h.clock.set(Timestamp::from_millis(1_800));
    e.submit(spec(2, Class::HIGH, 16));
    // HIGH 2 is due by 2.3 s, after MEDIUM 1's 2 s, but goes first; inside LOW the earlier
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
    let mut e = Engine::new(deadline());
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
    assert!(e.h.sched.first_token_at(e.h.handle(1)).is_some());
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
    e.submit(spec(3, Class::MEDIUM, 16));
    // At 1.95 s MEDIUM 1's first token would come at 2.05 s at best (two iterations of
    // 50 ms): shed, 50 ms late, ended at once with its reason; HIGH 2 is relegated; MEDIUM
    // 3 (due by 3.95 s) starts.
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
    let one = e.h.handle(1);
    assert_eq!(e.h.api.cancel(one), Err(ControlError::NotFound(one)));
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

/// `(id, tokens)` of a decision's admissions or scheduled work.
type Work = Vec<(u64, u32)>;

fn scheduled(d: &Decision) -> Work {
    d.scheduled.iter().map(|s| (s.id.0, s.tokens)).collect()
}

/// With the token budget short, an urgent prefill is served before the decode tokens of
/// lower classes, not before those of its own class or above.
#[test]
fn an_urgent_prefill_gets_tokens_before_lower_class_decodes() {
    // (token budget, share on?) -> (decodes scheduled, MEDIUM 5's first chunk)
    let cases = [
        // 100 tokens are kept for MEDIUM 5; the two beyond go to decodes in running order.
        ((102, true), (vec![(4, 1), (1, 1)], 100)),
        // No tokens beyond: HIGH 4's decode still goes (a higher class), LOWs wait.
        ((100, true), (vec![(4, 1)], 99)),
        // The share off (max_decode_delay_ms = 0): every decode first.
        ((102, false), (vec![(4, 1), (1, 1), (2, 1), (3, 1)], 98)),
        ((100, false), (vec![(4, 1), (1, 1), (2, 1), (3, 1)], 96)),
    ];
    for ((tokens, share), (decodes, chunk)) in cases {
        let mut cfg = deadline();
        if !share {
            cfg.deadline.max_decode_delay_ms = 0;
        }
        let mut e = four_decoding(cfg);
        // MEDIUM 5, 100 prompt tokens, first token due in 350 ms; estimated prefill 100 ms,
        // so 250 ms of slack: urgent (under 300 ms).
        e.submit(spec(5, Class::MEDIUM, 100).with_ttft_ms(350));
        let d = e.step(budget(8, tokens, 7000));
        let what = format!("{tokens} tokens, share {share}");
        assert_eq!(d.total_tokens(), tokens, "{what}");
        assert_eq!(scheduled(&d), decodes, "{what}");
        assert_eq!(admitted(&d), vec![(5, chunk)], "{what}");
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
            assert!(e.engine.run(RequestId(5)).is_some());
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
        let run = e.engine.run(RequestId(5)).expect("MEDIUM 5 runs");
        assert!(
            run.kv < run.target,
            "MEDIUM 5 was still prefilling throughout"
        );
    }
}

fn admitted(d: &Decision) -> Work {
    d.admitted
        .iter()
        .map(|a| (a.id.0, a.prefill_tokens))
        .collect()
}

/// Prefills far from their deadlines (LOW's, 60 s away, or an own target over
/// `relaxed_slack_ms`) share `relaxed_chunk_tokens` (512) per iteration; others are not
/// held to it.
#[test]
fn far_deadline_prefills_share_the_relaxed_chunk_tokens() {
    let mut e = Engine::new(deadline());
    e.submit(spec(3, Class::HIGH, 2000));
    e.submit(spec(4, Class::MEDIUM, 300).with_ttft_ms(30_000)); // 30 s away: relaxed
    e.submit(spec(1, Class::LOW, 1000));
    e.submit(spec(2, Class::LOW, 1000));
    let mut steps = Vec::new();
    for _ in 0..5 {
        let d = e.step(budget(8, 4096, 7000));
        steps.push((admitted(&d), scheduled(&d)));
        e.h.advance(ms(50));
    }
    let expect: Vec<(Work, Work)> = vec![
        // HIGH 3 whole; then 512 relaxed tokens: MEDIUM 4's 300, LOW 1's first 212.
        (vec![(3, 2000), (4, 300), (1, 212)], vec![]),
        (vec![], vec![(3, 1), (4, 1), (1, 512)]),
        // LOW 1's last 276 and LOW 2's first 236.
        (vec![(2, 236)], vec![(3, 1), (4, 1), (1, 276)]),
        (vec![], vec![(3, 1), (4, 1), (1, 1), (2, 512)]),
        (vec![], vec![(3, 1), (4, 1), (1, 1), (2, 252)]),
    ];
    assert_eq!(steps, expect);

    // With the cap off (0) everything starts in the first step, within the budget.
    let mut cfg = deadline();
    cfg.deadline.relaxed_chunk_tokens = 0;
    let mut e = Engine::new(cfg);
    e.submit(spec(3, Class::HIGH, 2000));
    e.submit(spec(4, Class::MEDIUM, 300).with_ttft_ms(30_000));
    e.submit(spec(1, Class::LOW, 1000));
    e.submit(spec(2, Class::LOW, 1000));
    let d = e.step(budget(8, 4096, 7000));
    assert_eq!(admitted(&d), vec![(3, 2000), (4, 300), (1, 1000), (2, 796)]);
}

/// Requests past `max_wait` go ahead of class order only as far as the overdue credit
/// covers their prompts: 2% of each step's token budget (81 of 4,096), banked. Every start
/// past max wait is counted as a promise not kept.
#[test]
fn overdue_requests_go_ahead_of_class_order_only_on_the_overdue_credit() {
    let mut cfg = deadline();
    cfg.backfill_lookahead = 0; // one candidate a step: LOW never comes up behind HIGH
    let mut e = Engine::new(cfg);
    e.submit(spec(1, Class::LOW, 300));
    e.submit(spec(2, Class::LOW, 100));
    let d = e.step(budget(0, 4096, 7000)); // no seat: credit 81
    assert!(d.admitted.is_empty());
    e.h.clock.set(Timestamp::from_millis(60_000));
    for id in 10..20 {
        e.submit(spec(id, Class::HIGH, 16));
    }
    let mut order = Vec::new();
    let mut overdue = Vec::new();
    for _ in 0..5 {
        let d = e.step(budget(1, 4096, 7000));
        let a = d.admitted[0];
        order.push(a.id.0);
        overdue.push(a.overdue);
        e.finish(a.id.0);
    }
    // Credit 162, 243: not enough for LOW 1's 300, and LOW 2 is not the oldest: HIGH goes.
    // 324: LOW 1 (24 left). 105: LOW 2 (5 left). 86: HIGH again.
    assert_eq!(order, vec![10, 11, 1, 2, 12]);
    assert_eq!(overdue, vec![false, false, true, true, false]);
    let low = e.h.sched.class_counters(Class::LOW);
    assert_eq!((low.overdue, low.relegated), (2, 0));
    assert_eq!(e.h.sched.class_counters(Class::HIGH).overdue, 0);

    // No credit at all with a share of 0: HIGH traffic keeps LOW waiting.
    let mut cfg = deadline();
    cfg.backfill_lookahead = 0;
    cfg.deadline.overdue_share = 0.0;
    let mut e = Engine::new(cfg);
    e.submit(spec(1, Class::LOW, 16));
    e.h.clock.set(Timestamp::from_millis(60_000));
    for id in 10..20 {
        e.submit(spec(id, Class::HIGH, 16));
    }
    assert_eq!(one_at_a_time(&mut e, 10), (10..20).collect::<Vec<_>>());
}

/// The overdue credit banks up to the model's context, so an overdue prompt longer than
/// 8,192 tokens (or than a step's budget) is served on credit too, not held back for ever
/// behind steady traffic of a more urgent class.
#[test]
fn an_overdue_prompt_longer_than_a_budget_is_served_on_credit() {
    let mut cfg = deadline();
    cfg.backfill_lookahead = 0;
    cfg.engine.max_model_len = 16_384;
    cfg.engine.total_blocks = 20_000;
    let mut e = Engine::new(cfg);
    e.submit(RequestSpec::new(1, Class::LOW, 9_000, 1));
    let mut started = None;
    for (step, id) in (0..4_000u64).zip(10..) {
        // One HIGH request a step, one seat: without credit LOW never comes up.
        e.submit(spec(id, Class::HIGH, 16));
        let d = e.step(budget(1, 2048, e.free(20_000)));
        if let Some(a) = d.admitted.iter().find(|a| a.id.0 == 1) {
            started = Some((step, a.overdue));
            break;
        }
        for a in &d.admitted {
            e.finish(a.id.0);
        }
        e.h.advance(ms(50));
    }
    let (step, overdue) = started.expect("the 9,000-token LOW prompt started on credit");
    assert!(overdue, "it started past max wait, on the credit");
    // Overdue from 60 s (step 1,200); the credit needs 9,000 / 40 = 225 steps to cover it.
    assert!(step <= 1_200 + 225 + 1, "started at step {step}");
}

/// Requests still wait while every seat is taken and nothing may be preempted: the step says
/// the sequence budget stopped it, as in the ladder.
#[test]
fn a_step_out_of_seats_says_so() {
    let mut cfg = deadline();
    cfg.preemption.enabled = false;
    let mut e = Engine::new(cfg);
    e.submit(spec(1, Class::MEDIUM, 16));
    e.submit(spec(2, Class::MEDIUM, 16));
    let d = e.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1]);
    assert_eq!(d.summary.stopped_by, Some(Short::Seqs));
    let d = e.step(budget(1, 4096, 7000));
    assert!(d.admitted.is_empty());
    assert_eq!(d.summary.stopped_by, Some(Short::Seqs));
}

/// 100 KV blocks of 16 tokens, no watermark.
fn small_engine() -> SchedulerConfig {
    let mut cfg = deadline();
    cfg.engine.total_blocks = 100;
    cfg.engine.watermark = 0.0;
    cfg
}

/// Starts each `(id, class, prompt)` (50 output tokens at most) in its own step, 50 ms
/// apart (so the iteration estimate stays 50 ms), the running ones decoding meanwhile.
fn start_each(e: &mut Engine, reqs: &[(u64, Class, u32)]) {
    for &(id, class, prompt) in reqs {
        e.submit(RequestSpec::new(id, class, prompt, 50));
        let d = e.step(budget(16, 4096, e.free(100)));
        assert_eq!(ids(&d.admitted), vec![id]);
        e.h.advance(ms(50));
    }
}

/// Only a request near its deadline preempts (slack under 300 ms), and it takes the
/// lowest class's request with the least KV to recompute, not the newest (the ladder's).
#[test]
fn only_an_urgent_request_preempts_the_lowest_class_with_the_least_kv() {
    let mut e = Engine::new(small_engine());
    // LOW 2 (250 tokens, 16 blocks) starts before LOW 1 (400, 25) and MEDIUM 3 (200, 13).
    start_each(
        &mut e,
        &[
            (2, Class::LOW, 250),
            (1, Class::LOW, 400),
            (3, Class::MEDIUM, 200),
        ],
    );
    // HIGH 4 needs 57 blocks; about 45 are free. Its prefill is estimated at 100 ms, so
    // its slack is 400 ms at arrival and falls 50 ms a step: 400, 350, 300 (not under the
    // 300 ms bound), then 250 at 150 ms: urgent.
    e.submit(RequestSpec::new(4, Class::HIGH, 900, 10));
    let mut waited = Vec::new();
    let d = loop {
        let d = e.step(budget(16, 4096, e.free(100)));
        if !d.preempted.is_empty() || !d.admitted.is_empty() {
            break d;
        }
        assert_eq!(d.summary.stopped_by, Some(Short::KvBlocks));
        waited.push(e.now());
        e.h.advance(ms(50));
    };
    assert_eq!(waited.len(), 3, "not urgent at 0, 50, 100 ms after arrival");
    assert_eq!(
        d.preempted.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![2],
        "LOW 2 holds less KV than LOW 1, the newest LOW"
    );
    assert!(matches!(
        d.preempted[0].reason,
        PreemptReason::ForWaiting {
            by: RequestId(4),
            by_class: Class::HIGH,
            short: Short::KvBlocks,
        }
    ));
    assert_eq!(ids(&d.admitted), vec![4]);
}

/// A relegated request running is the first victim, before any lower class, and even for
/// a request of its own class.
#[test]
fn a_running_relegated_request_is_the_first_victim() {
    let mut e = Engine::new(small_engine());
    e.submit(RequestSpec::new(7, Class::HIGH, 400, 10)); // 25 blocks
    e.h.clock.set(Timestamp::from_millis(600)); // past its 500 ms deadline
    let d = e.step(budget(16, 4096, 100));
    assert_eq!(ids(&d.admitted), vec![7]);
    assert!(
        d.admitted[0].relegated,
        "nothing live waits: it starts relegated"
    );
    e.h.advance(ms(50));
    // LOW 8: 25 blocks.
    start_each(&mut e, &[(8, Class::LOW, 400)]);
    // HIGH 9 needs 63 blocks, about 49 are free: one victim will do. It becomes urgent
    // 150 ms after arrival.
    e.submit(RequestSpec::new(9, Class::HIGH, 1000, 10));
    let d = loop {
        let d = e.step(budget(16, 4096, e.free(100)));
        if !d.preempted.is_empty() {
            break d;
        }
        e.h.advance(ms(50));
    };
    assert_eq!(
        d.preempted.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![7]
    );
    assert_eq!(ids(&d.admitted), vec![9]);
}

/// At most `preemption.max_victims_per_step` victims a step: a request that needs more
/// preempts nobody.
#[test]
fn an_urgent_request_takes_at_most_max_victims_per_step() {
    for max_victims in [2, 3] {
        let mut cfg = small_engine();
        cfg.preemption.max_victims_per_step = max_victims;
        let mut e = Engine::new(cfg);
        start_each(
            &mut e,
            &[
                (1, Class::LOW, 300),
                (2, Class::LOW, 300),
                (3, Class::MEDIUM, 300),
            ],
        );
        // HIGH 4 needs 96 blocks: all three must go (about 43 free + 19 each).
        e.submit(RequestSpec::new(4, Class::HIGH, 1536, 10).with_ttft_ms(350)); // urgent at once
        let d = e.step(budget(16, 4096, e.free(100)));
        let mut victims: Vec<u64> = d.preempted.iter().map(|p| p.id.0).collect();
        victims.sort_unstable();
        if max_victims == 2 {
            assert!(victims.is_empty(), "two victims would not make room");
            assert!(d.admitted.is_empty());
        } else {
            assert_eq!(victims, vec![1, 2, 3]);
            assert_eq!(ids(&d.admitted), vec![4]);
        }
    }
}

/// A relegated waiting request never preempts: past its deadline, it waits for room.
#[test]
fn a_relegated_request_never_preempts() {
    let mut e = Engine::new(small_engine());
    start_each(&mut e, &[(1, Class::LOW, 1200)]); // 75 blocks
    e.submit(RequestSpec::new(2, Class::HIGH, 800, 10)); // 50 blocks: needs LOW 1's
    let d = e.step(budget(16, 4096, e.free(100)));
    assert!(
        d.preempted.is_empty() && d.admitted.is_empty(),
        "not urgent yet"
    );
    // No step while it was urgent; now it is past its deadline: relegated, no preemption.
    e.h.advance(ms(600));
    let d = e.step(budget(16, 4096, e.free(100)));
    assert!(d.preempted.is_empty() && d.admitted.is_empty());
    assert_eq!(e.h.sched.relegated_in(Class::HIGH), 1);
}

/// A late request of a class whose rule is `serve` (the default's HIGH) is relegated within
/// its class: after its class's live requests, ahead of every lower class.
#[test]
fn a_late_request_of_a_serve_class_waits_behind_its_class_only() {
    let mut cfg = deadline();
    cfg.classes[0].on_late = LateRule::Serve;
    let mut e = Engine::new(cfg);
    e.submit(spec(1, Class::HIGH, 16)); // t = 0, due by 500 ms
    e.h.clock.set(Timestamp::from_millis(2_500));
    e.submit(spec(2, Class::MEDIUM, 16)); // live: due by 4.5 s
    e.submit(spec(3, Class::LOW, 16));
    e.submit(spec(4, Class::HIGH, 16)); // live: due by 3 s

    // HIGH 1 is 2 s past its deadline: relegated, behind live HIGH 4 only.
    assert_eq!(one_at_a_time(&mut e, 4), vec![4, 1, 2, 3]);
    assert_eq!(e.h.sched.class_counters(Class::HIGH).relegated, 1);
    // Under `keep` the same arrivals put HIGH 1 behind every live request.
    let mut e = Engine::new(deadline());
    e.submit(spec(1, Class::HIGH, 16));
    e.h.clock.set(Timestamp::from_millis(2_500));
    e.submit(spec(2, Class::MEDIUM, 16));
    e.submit(spec(3, Class::LOW, 16));
    e.submit(spec(4, Class::HIGH, 16));
    assert_eq!(one_at_a_time(&mut e, 4), vec![4, 2, 3, 1]);
    assert_eq!(e.h.sched.class_counters(Class::HIGH).relegated, 1);
}

/// The default configuration serves HIGH's late requests and relegates the others'.
#[test]
fn the_default_serves_highs_late_requests_and_relegates_the_rest() {
    let cfg = SchedulerConfig::default();
    let rules: Vec<LateRule> = cfg.classes.iter().map(|c| c.on_late).collect();
    assert_eq!(rules, vec![LateRule::Serve, LateRule::Keep, LateRule::Keep]);
    // A class read from a file without `on_late` keeps, HIGH too.
    let file = "[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\n\n\
                [[classes]]\nname = \"MEDIUM\"\nvllm_priority = [1, 9]\n\n\
                [[classes]]\nname = \"LOW\"\nvllm_priority = [10, 100]\n";
    let cfg = SchedulerConfig::from_toml_str(file).expect("a valid file");
    assert!(cfg.classes.iter().all(|c| c.on_late == LateRule::Keep));
}

/// A late request of a `serve` class stays urgent: relegated within its class, it preempts
/// a lower class for room. Under `keep` the same request waits
/// (`a_relegated_request_never_preempts`).
#[test]
fn a_late_request_of_a_serve_class_preempts_for_room() {
    let mut cfg = small_engine();
    cfg.classes[0].on_late = LateRule::Serve;
    let mut e = Engine::new(cfg);
    start_each(&mut e, &[(1, Class::LOW, 1200)]); // 75 blocks
    e.submit(RequestSpec::new(2, Class::HIGH, 800, 10)); // 50 blocks: needs LOW 1's
    e.h.advance(ms(600)); // past its deadline before any step saw it
    let d = e.step(budget(16, 4096, e.free(100)));
    assert_eq!(
        d.preempted.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(ids(&d.admitted), vec![2]);
    assert!(d.admitted[0].relegated);
    assert_eq!(e.h.sched.relegated_in(Class::HIGH), 0);
}

/// A running request relegated within its class (`serve`) is not the first victim for
/// everyone, as one relegated behind every class is: a MEDIUM request preempts a LOW one,
/// not the late HIGH one.
#[test]
fn a_running_request_relegated_within_its_class_keeps_its_class_among_victims() {
    let mut cfg = small_engine();
    cfg.classes[0].on_late = LateRule::Serve;
    let mut e = Engine::new(cfg);
    e.submit(RequestSpec::new(7, Class::HIGH, 400, 10)); // 25 blocks
    e.h.clock.set(Timestamp::from_millis(600)); // past its 500 ms deadline
    let d = e.step(budget(16, 4096, 100));
    assert_eq!(ids(&d.admitted), vec![7]);
    assert!(d.admitted[0].relegated);
    e.h.advance(ms(50));
    start_each(&mut e, &[(8, Class::LOW, 400)]); // 25 blocks

    // MEDIUM 9 needs 63 blocks, about 49 are free: one victim will do; urgent at once.
    e.submit(RequestSpec::new(9, Class::MEDIUM, 1000, 10).with_ttft_ms(350));
    let d = e.step(budget(16, 4096, e.free(100)));
    assert_eq!(
        d.preempted.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![8]
    );
    assert_eq!(ids(&d.admitted), vec![9]);
}

/// A `serve` class's urgent request whose cheapest victims (least KV) would not make room
/// within `max_victims_per_step` preempts the ones that do, fewest blocks to spare first;
/// a `keep` class's preempts nobody.
#[test]
fn a_serve_class_preempts_the_victims_that_make_room_not_only_the_cheapest() {
    for rule in [LateRule::Keep, LateRule::Serve] {
        let mut cfg = small_engine();
        cfg.classes[0].on_late = rule;
        let mut e = Engine::new(cfg);
        // LOW 1 and 2: 150 tokens, 10 blocks each; LOW 3: 600 tokens, 38 blocks; LOW 4:
        // 470 tokens, 30 blocks (their few decoded tokens fit in those blocks). 12 blocks
        // are free (the engine has 100).
        start_each(
            &mut e,
            &[
                (1, Class::LOW, 150),
                (2, Class::LOW, 150),
                (3, Class::LOW, 600),
                (4, Class::LOW, 470),
            ],
        );
        assert_eq!(e.free(100), 12);
        // HIGH 5 needs 44 blocks: 32 more than are free. The two cheapest give 20.
        e.submit(RequestSpec::new(5, Class::HIGH, 700, 10).with_ttft_ms(350)); // urgent at once
        let d = e.step(budget(16, 4096, e.free(100)));
        let victims: Vec<u64> = d.preempted.iter().map(|p| p.id.0).collect();
        match rule {
            LateRule::Keep => {
                assert!(
                    victims.is_empty(),
                    "two least-KV victims would not make room"
                );
                assert!(d.admitted.is_empty());
            }
            _ => {
                // LOW 3 alone covers 32 (LOW 4's 30 would not): one victim, not three.
                assert_eq!(victims, vec![3]);
                assert_eq!(ids(&d.admitted), vec![5]);
            }
        }
    }
}

/// The ladder's `promoted` counter (issue 16's counter fix): a request that aged past one
/// or more thresholds before the step that first drains it is queued straight into the
/// class it reached, and is counted as promoted out of every class it skipped, exactly as
/// if a step had drained it on arrival and aging had moved it. In the counters and in
/// `triage_promoted_total`.
#[test]
fn a_request_aged_before_its_first_step_is_counted_promoted() {
    let run = |step_on_arrival: bool| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let (counters, waiting) = ::metrics::with_local_recorder(&recorder, || {
            // The ladder: LOW -> MEDIUM at 20 s, MEDIUM -> HIGH at 40 s.
            let mut h = Harness::new(SchedulerConfig {
                order: QueueOrder::Ladder,
                shards: 2,
                ..SchedulerConfig::default()
            });
            h.submit(1, Class::LOW, 16, 4); // t = 0: past both thresholds at 45 s
            h.submit(2, Class::MEDIUM, 16, 4); // t = 0: past MEDIUM's
            if step_on_arrival {
                h.step(budget(0, 4096, 7000));
            }
            h.clock.set(Timestamp::from_millis(20_000));
            h.submit(3, Class::LOW, 16, 4); // 25 s old at 45 s: past LOW's only
            if step_on_arrival {
                h.step(budget(0, 4096, 7000));
            }
            h.clock.set(Timestamp::from_millis(45_000));
            let d = h.step(budget(0, 4096, 7000));
            // The step that aged or drained them says so in its summary too: all four
            // promotions (1 and 3 out of LOW, 1 and 2 out of MEDIUM) happen in this step.
            assert_eq!(d.summary.promoted, 4, "the step's summary");
            let counters: Vec<u64> = [Class::HIGH, Class::MEDIUM, Class::LOW]
                .iter()
                .map(|&c| h.sched.class_counters(c).promoted)
                .collect();
            let waiting: Vec<usize> = [Class::HIGH, Class::MEDIUM, Class::LOW]
                .iter()
                .map(|&c| h.sched.waiting_in(c))
                .collect();
            (counters, waiting)
        });
        let text = handle.render();
        let metric: Vec<f64> = ["HIGH", "MEDIUM", "LOW"]
            .iter()
            .map(|class| {
                let prefix = format!("{}{{class=\"{class}\"}} ", triage::telemetry::PROMOTED);
                text.lines()
                    .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                    .unwrap_or(0.0)
            })
            .collect();
        (counters, waiting, metric)
    };
    for step_on_arrival in [true, false] {
        let (counters, waiting, metric) = run(step_on_arrival);
        let what = if step_on_arrival {
            "drained on arrival, then aged"
        } else {
            "aged before its first step"
        };
        // Out of MEDIUM: 1 and 2; out of LOW: 1 and 3.
        assert_eq!(counters, vec![0, 2, 2], "{what}");
        assert_eq!(metric, vec![0.0, 2.0, 2.0], "{what}");
        assert_eq!(waiting, vec![2, 1, 0], "{what}: where aging put them");
    }
}

/// A random mixed run in deadline order, overloaded in bursts, with MEDIUM shedding its
/// late requests and the other classes keeping theirs, own TTFT targets, tight KV,
/// changing budgets, cancels (waiting and running) and class changes: the conservation
/// law and every internal invariant hold after every step (`Harness::step` checks both),
/// and once the load stops everything ends, each request exactly once.
#[test]
fn conservation_and_invariants_hold_at_every_step_of_a_mixed_run() {
    let mut cfg = deadline();
    cfg.classes[1].on_late = LateRule::Shed;
    cfg.max_wait_ms = 10_000; // within the 60 s run: max wait is missed in the bursts
    cfg.engine.total_blocks = 400;
    cfg.engine.watermark = 0.0;
    let mut e = Engine::new(cfg);
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let mut rand = move |n: u64| rng.next_u64() % n;
    let mut next = 0u64;
    let (mut preempted, mut cancelled, mut shed) = (0, 0, 0);
    let mut max_waiting = 0;
    for step in 0..3_000u64 {
        // Bursts: every other second, three times the arrivals.
        let arrivals = if (step / 50) % 2 == 0 {
            rand(5)
        } else {
            rand(2)
        };
        for _ in 0..arrivals {
            let class = Class::from_index(rand(3) as u8);
            let mut s = RequestSpec::new(next, class, 1 + rand(1500) as u32, 1 + rand(100) as u32);
            if rand(8) == 0 {
                s = s.with_ttft_ms(100 + rand(5_000) as u32);
            }
            e.submit(s);
            next += 1;
        }
        if next > 0 && rand(20) == 0 {
            let _ = e.h.api.cancel(e.h.handle(rand(next)));
        }
        if next > 0 && rand(20) == 0 {
            let handle = e.h.handle(rand(next));
            let _ =
                e.h.api
                    .reprioritize(handle, Class::from_index(rand(3) as u8));
        }
        let b = budget(1 + rand(32) as u32, 256 + rand(1792) as u32, e.free(400));
        let d = e.step(b);
        max_waiting = max_waiting.max(e.h.sched.waiting());
        preempted += d.preempted.len();
        cancelled += d.cancelled.len() + d.aborted.len();
        for r in &d.rejected {
            assert!(
                matches!(r.reason, RejectReason::DeadlineMissed { .. }),
                "{r:?}"
            );
            assert_eq!(r.class, Class::MEDIUM, "only MEDIUM sheds");
            shed += 1;
        }
        for id in e.done() {
            e.finish(id);
        }
        // Some finish early (a stop token) once they have output.
        let early: Vec<RequestId> = e
            .engine
            .running_ids()
            .into_iter()
            .filter(|&id| e.engine.generated(id) > Some(0))
            .collect();
        for id in early {
            if rand(10) == 0 {
                e.finish(id.0);
            }
        }
        e.h.advance(ms(20));
    }
    let c = |class| e.h.sched.class_counters(class);
    let relegated: u64 = [Class::HIGH, Class::LOW]
        .iter()
        .map(|&k| c(k).relegated)
        .sum();
    let overdue: u64 = [Class::HIGH, Class::MEDIUM, Class::LOW]
        .iter()
        .map(|&k| c(k).overdue)
        .sum();
    // The run went where it was meant to: every rule it exercises came into play.
    assert!(
        preempted > 10
            && cancelled > 10
            && shed > 10
            && relegated > 10
            && overdue > 0
            && max_waiting > 200,
        "{preempted} preempted, {cancelled} cancelled, {shed} shed, {relegated} relegated, \
         {overdue} overdue, {max_waiting} waiting at most"
    );
    assert_eq!(
        (c(Class::MEDIUM).shed, c(Class::MEDIUM).relegated),
        (shed, 0)
    );
    assert_eq!(e.h.sched.conservation().shed, shed);
    // The load stops; everything ends.
    let mut guard = 0;
    while e.h.sched.waiting() + e.h.sched.running() > 0 {
        e.step(budget(32, 2048, e.free(400)));
        for id in e.engine.running_ids() {
            if e.engine.generated(id) > Some(0) {
                e.finish(id.0);
            }
        }
        e.h.advance(ms(20));
        guard += 1;
        assert!(guard < 100_000, "the queue never drained");
    }
    let c = e.h.sched.conservation();
    assert_eq!((c.in_ingress, c.waiting, c.running), (0, 0, 0), "{c}");
    assert_eq!(c.ended(), c.submitted, "{c}");
}
