//! Contract points 5 and 7: budgets are never exceeded; bounded backfill, never past an
//! overdue head.

mod common;
use common::*;
use triage::*;
use triage_testkit::{FakeEngine, Goal, Rng};

fn five_of_300(h: &mut Harness) {
    for id in 0..5 {
        h.submit(id, Class::MEDIUM, 300, 1);
    }
}

#[test]
fn token_budget_admits_exactly_three_of_five_300_token_prompts() {
    let mut cfg = no_aging();
    cfg.chunked_prefill = false;
    cfg.backfill_lookahead = 0;
    let mut h = Harness::new(cfg);
    five_of_300(&mut h);
    let d = h.step(budget(256, 1000, 7000));
    assert_eq!(ids(&d.admitted), vec![0, 1, 2]);
    assert_eq!(d.total_tokens(), 900);
    assert_eq!(d.summary.stopped_by, Some(Short::Tokens));
}

#[test]
fn kv_budget_admits_exactly_three_when_blocks_hold_1000_tokens() {
    let mut cfg = no_aging();
    cfg.engine.watermark = 0.0;
    let mut h = Harness::new(cfg);
    five_of_300(&mut h);
    // 62 blocks of 16 = 992 tokens; each 300-token prompt needs 19 blocks.
    let d = h.step(budget(256, 8192, 62));
    assert_eq!(ids(&d.admitted), vec![0, 1, 2]);
    assert_eq!(d.summary.blocks, 57);
    assert_eq!(d.summary.stopped_by, Some(Short::KvBlocks));
}

#[test]
fn watermark_is_kept_free_for_admissions() {
    let mut cfg = no_aging();
    cfg.engine.total_blocks = 1000;
    cfg.engine.watermark = 0.05; // 50 blocks
    let mut h = Harness::new(cfg);
    five_of_300(&mut h);
    // 19 blocks each: 107 free - 50 watermark leaves room for 3 (57), not 4 (76).
    let d = h.step(budget(256, 8192, 107));
    assert_eq!(d.admitted.len(), 3);
}

#[test]
fn seq_budget_counts_running_requests() {
    let mut h = Harness::new(no_aging());
    five_of_300(&mut h);
    let d = h.step(budget(2, 8192, 7000));
    assert_eq!(d.admitted.len(), 2);
    let d = h.step(budget(3, 8192, 7000));
    assert_eq!(d.admitted.len(), 1, "two already running");
}

#[test]
fn chunked_prefill_splits_the_last_prompt_and_continues_it() {
    let mut h = Harness::new(no_aging());
    five_of_300(&mut h);
    let d = h.step(budget(256, 1000, 7000));
    assert_eq!(ids(&d.admitted), vec![0, 1, 2, 3]);
    assert_eq!(d.admitted[3].prefill_tokens, 100);
    assert_eq!(d.total_tokens(), 1000);
    for a in &d.admitted[..3] {
        h.prefill(a);
    }
    h.sched
        .on_progress(h.handle(3), h.clock.now(), 100, 0)
        .unwrap();
    let d = h.step(budget(256, 1000, 7000));
    // Three decode tokens, then request 3's remaining 200 prompt tokens, then request 4.
    assert_eq!(
        d.scheduled
            .iter()
            .map(|s| (s.id.0, s.tokens))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1, 1), (2, 1), (3, 200)]
    );
    assert_eq!(ids(&d.admitted), vec![4]);
    assert!(d.total_tokens() <= 1000);
}

/// Budgets hold in both orders, on an engine of 600 KV blocks and a tighter one of 200.
/// The run must exercise preemption and resumes (whose prefill target it checks) in each
/// order. The ladder preempts LOW for every HIGH or MEDIUM arrival that lacks blocks, and
/// does on both engines. Deadline order preempts only for a request near its deadline, and
/// on 600 blocks keeps up with this load without ever preempting; on 200 blocks requests
/// wait long enough to become urgent and preempt.
#[test]
fn budgets_hold_over_a_long_mixed_run() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        let mut resumed = 0;
        for total_blocks in [600, 200] {
            let run = long_mixed_run(order, total_blocks);
            assert!(
                run.finished > 1000,
                "{order:?}, {total_blocks} blocks: {run:?}"
            );
            resumed += run.resumed;
            if order == QueueOrder::Ladder {
                assert!(run.low_preempted > 0, "{order:?}, {total_blocks} blocks");
            }
        }
        assert!(
            resumed > 0,
            "{order:?}: the runs exercised preemption and resumes"
        );
    }
}

#[derive(Debug)]
struct MixedRun {
    finished: u64,
    low_preempted: u64,
    resumed: u64,
}

fn long_mixed_run(order: QueueOrder, total_blocks: u32) -> MixedRun {
    let mut cfg = SchedulerConfig {
        shards: 2,
        order,
        ..SchedulerConfig::default()
    };
    cfg.engine.total_blocks = total_blocks;
    let mut h = Harness::new(cfg);
    let mut engine = FakeEngine::new(total_blocks, 16, Goal::Never);
    let mut resumed = 0;
    let mut prompt: std::collections::HashMap<RequestId, u32> = Default::default();
    let mut next = 0u64;
    let mut rng = Rng::new(0x2545F4914F6CDD1D);
    let mut rand = move |n: u64| rng.next_u64() % n;
    for _ in 0..3000 {
        for _ in 0..rand(3) {
            let class = Class::from_index(rand(3) as u8);
            let (m, p) = (1 + rand(200) as u32, 1 + rand(900) as u32);
            h.submit(next, class, p, m);
            prompt.insert(RequestId(next), p);
            next += 1;
        }
        let seqs_before = engine.running();
        let d = h.step(engine.budget(32, 512));
        assert!(seqs_before - d.preempted.len() + d.admitted.len() <= 32);
        assert!(d.total_tokens() <= 512);
        for a in &d.admitted {
            resumed += u64::from(a.resumed);
            // A resumed request recomputes its prompt and the output it had generated.
            let generated = engine.generated(a.id).unwrap_or(0);
            assert_eq!(a.prefill_target, prompt[&a.id] + generated);
        }
        // Apply the iteration: prefill chunks and decode tokens.
        engine.carry_out(&mut h.sched, &d, h.clock.now());
        assert_eq!(engine.problems(), &[] as &[String]);
        assert!(
            engine.blocks_held() <= total_blocks,
            "KV over capacity: {}",
            engine.blocks_held()
        );
        // Those at their length finish, and some earlier (a stop token) once they have
        // output.
        let done = engine.done();
        let early: Vec<RequestId> = engine
            .running_ids()
            .into_iter()
            .filter(|&id| engine.generated(id) >= Some(1) && (done.contains(&id) || rand(8) == 0))
            .collect();
        for id in early {
            engine.finish(&mut h.sched, id, h.clock.now());
        }
        h.advance(ms(25));
    }
    MixedRun {
        finished: h.sched.conservation().finished,
        low_preempted: h.sched.class_counters(Class::LOW).preempted,
        resumed,
    }
}

#[test]
fn backfill_looks_past_a_head_that_does_not_fit() {
    let mut cfg = no_aging();
    cfg.engine.watermark = 0.0;
    cfg.backfill_lookahead = 2;
    cfg.preemption.enabled = false;
    let mut h = Harness::new(cfg.clone());
    h.submit(1, Class::HIGH, 1600, 1); // 100 blocks
    h.submit(2, Class::LOW, 160, 1); // 10 blocks
    let d = h.step(budget(8, 8192, 50));
    assert_eq!(ids(&d.admitted), vec![2]);
    assert_eq!(
        h.sched.waiting_in(Class::HIGH),
        1,
        "the head keeps its place"
    );

    cfg.backfill_lookahead = 0;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::HIGH, 1600, 1);
    h.submit(2, Class::LOW, 160, 1);
    let d = h.step(budget(8, 8192, 50));
    assert!(d.admitted.is_empty(), "no lookahead: stop at the head");
}

/// The ladder's rule: an overdue request goes first and blocks backfill. (Deadline order
/// lets an overdue request ahead only on the overdue credit: `tests/deadline.rs`.)
#[test]
fn backfill_never_passes_an_overdue_head() {
    let mut cfg = no_aging();
    cfg.order = QueueOrder::Ladder;
    cfg.engine.watermark = 0.0;
    cfg.backfill_lookahead = 8;
    cfg.preemption.enabled = false;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 1600, 1); // 100 blocks
    h.clock.set(Timestamp::from_millis(60_000));
    h.submit(2, Class::HIGH, 160, 1); // 10 blocks, fits
    let d = h.step(budget(8, 8192, 50));
    assert!(
        d.admitted.is_empty(),
        "the overdue head blocks backfill: {:?}",
        ids(&d.admitted)
    );
    // Once the engine frees enough, the overdue request goes first.
    let d = h.step(budget(8, 8192, 110));
    assert_eq!(ids(&d.admitted), vec![1, 2]);
}

#[test]
fn a_zero_budget_admits_nothing_and_sends_every_running_request_back() {
    // Documented on `Budget`: max_num_seqs 0 preempts what runs (newest, lowest class
    // first), and a zero budget still drains, so the queue stays current.
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::HIGH, 16, 4);
    h.submit(2, Class::LOW, 16, 4);
    let d = h.step(budget(8, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1, 2]);
    h.submit(3, Class::MEDIUM, 16, 4);
    let zero = Budget {
        max_num_seqs: 0,
        max_batched_tokens: 0,
        free_blocks: 0,
    };
    let d = h.step(zero);
    assert!(d.admitted.is_empty() && d.scheduled.is_empty());
    let preempted: Vec<u64> = d.preempted.iter().map(|p| p.id.0).collect();
    assert_eq!(preempted, vec![2, 1], "lowest class first");
    let over = PreemptReason::OverBudget { short: Short::Seqs };
    assert!(d.preempted.iter().all(|p| p.reason == over), "{d:?}");
    assert_eq!(h.sched.running(), 0);
    assert_eq!(
        h.sched.waiting(),
        3,
        "request 3 drained, 1 and 2 queued again"
    );
}
