//! Contract point 6: preemption of lower classes, lowest class and newest first, only as
//! many as needed; a preempted request keeps its place in line. These are the ladder's
//! rules (`order = "ladder"`), where any waiting request may preempt a lower class.
//! Deadline order lets only urgent requests preempt and picks victims its own way:
//! `tests/deadline.rs`. A decode short of a KV block preempts the same way in both.

mod common;
use common::*;
use triage::*;

/// 100 blocks, no watermark; each 300-token prompt holds 19 blocks (room for 4 decode
/// tokens before it needs a 20th). The ladder order.
fn small_engine() -> SchedulerConfig {
    let mut cfg = no_aging();
    cfg.order = QueueOrder::Ladder;
    cfg.engine.total_blocks = 100;
    cfg.engine.watermark = 0.0;
    cfg
}

/// Starts LOW 1, LOW 2, MEDIUM 3 in three separate steps (so 3 is the newest).
fn three_running(h: &mut Harness) {
    let mut free = 100;
    for (id, class) in [(1, Class::LOW), (2, Class::LOW), (3, Class::MEDIUM)] {
        h.submit(id, class, 300, 50);
        let d = h.step(budget(16, 4096, free));
        assert_eq!(ids(&d.admitted), vec![id]);
        h.prefill(&d.admitted[0]);
        free -= 19;
        h.advance(ms(10));
    }
}

#[test]
fn lowest_class_newest_first_only_as_many_as_needed() {
    let mut h = Harness::new(small_engine());
    three_running(&mut h);
    // HIGH needs 48 blocks; 43 are free: one LOW victim is enough. LOW 2 is the newest LOW.
    h.submit(4, Class::HIGH, 768, 10);
    let d = h.step(budget(16, 4096, 43));
    assert_eq!(d.preempted.len(), 1);
    let p = d.preempted[0];
    assert_eq!(p.id, RequestId(2));
    assert_eq!(p.freed_blocks, 19);
    assert_eq!(p.class, Class::LOW);
    assert!(matches!(
        p.reason,
        PreemptReason::ForWaiting {
            by: RequestId(4),
            short: Short::KvBlocks,
            ..
        }
    ));
    assert_eq!(ids(&d.admitted), vec![4]);
    assert!(
        !d.scheduled.iter().any(|s| s.id == RequestId(2)),
        "a victim gets no work"
    );
    assert_eq!(h.sched.running(), 3);
    assert_eq!(h.sched.class_counters(Class::LOW).preempted, 1);
}

#[test]
fn victims_climb_classes_only_when_lower_ones_are_not_enough() {
    let mut cfg = small_engine();
    cfg.preemption.max_victims_per_step = 3; // the default is 2; this needs 3
    let mut h = Harness::new(cfg);
    three_running(&mut h);
    // HIGH needs 96 blocks: both LOW and the MEDIUM must go (43 + 57 = 100).
    h.submit(4, Class::HIGH, 1536, 10);
    let d = h.step(budget(16, 4096, 43));
    let mut victims: Vec<u64> = d.preempted.iter().map(|p| p.id.0).collect();
    victims.sort();
    assert_eq!(victims, vec![1, 2, 3]);
    assert_eq!(ids(&d.admitted), vec![4]);
}

#[test]
fn nobody_is_preempted_when_all_eligible_victims_would_not_make_room() {
    let mut cfg = small_engine();
    cfg.preemption.min_class_gap = 2; // HIGH may preempt LOW only
    let mut h = Harness::new(cfg);
    three_running(&mut h);
    // 43 free + 38 from the two LOWs = 81 < 96: preempting them would be wasted.
    h.submit(4, Class::HIGH, 1536, 10);
    let d = h.step(budget(16, 4096, 43));
    assert!(d.preempted.is_empty());
    assert!(d.admitted.is_empty());
}

#[test]
fn class_gap_protects_the_adjacent_class() {
    let mut cfg = small_engine();
    cfg.preemption.min_class_gap = 2;
    let mut h = Harness::new(cfg);
    // Fill the engine with MEDIUM work; a HIGH arrival may not preempt MEDIUM at gap 2.
    let mut free = 100;
    for id in 1..=5 {
        h.submit(id, Class::MEDIUM, 300, 50);
        let d = h.step(budget(16, 4096, free));
        h.prefill(&d.admitted[0]);
        free -= 19;
    }
    h.submit(9, Class::HIGH, 300, 10);
    let d = h.step(budget(16, 4096, free));
    assert!(d.preempted.is_empty());
    assert!(d.admitted.is_empty());
}

#[test]
fn seq_budget_preemption_frees_one_slot() {
    let mut h = Harness::new(small_engine());
    three_running(&mut h);
    h.submit(4, Class::HIGH, 32, 10);
    let d = h.step(budget(3, 4096, 43));
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].id, RequestId(2));
    assert!(matches!(
        d.preempted[0].reason,
        PreemptReason::ForWaiting {
            short: Short::Seqs,
            ..
        }
    ));
    assert_eq!(ids(&d.admitted), vec![4]);
}

#[test]
fn preempted_request_resumes_ahead_of_later_arrivals_of_its_class() {
    let mut h = Harness::new(small_engine());
    three_running(&mut h);
    let two = h.handle(2);
    h.submit(4, Class::HIGH, 768, 10);
    let d = h.step(budget(16, 4096, 43));
    assert_eq!(d.preempted[0].id, RequestId(2));
    h.prefill(&d.admitted[0]);
    h.advance(ms(10));
    h.submit(5, Class::LOW, 32, 10); // a later LOW arrival
    h.finish(RequestId(4));
    h.finish(RequestId(1));
    h.finish(RequestId(3));
    let d = h.step(budget(1, 4096, 100));
    assert_eq!(
        ids(&d.admitted),
        vec![2],
        "the victim keeps its original arrival"
    );
    let a = d.admitted[0];
    assert!(a.resumed);
    assert_eq!(a.handle, two, "a preempted request keeps its handle");
    assert_eq!(
        a.prefill_target,
        300 + 1,
        "recompute: prompt plus the token generated before"
    );
}

#[test]
fn decode_that_needs_a_block_preempts_the_lowest_newest_running() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        decode_needs_a_block(order);
    }
}

fn decode_needs_a_block(order: QueueOrder) {
    let mut cfg = small_engine();
    cfg.order = order;
    cfg.engine.total_blocks = 40;
    let mut h = Harness::new(cfg);
    // Two requests of exactly 20 blocks (320 tokens): their first decode crosses a block.
    h.submit(1, Class::MEDIUM, 320, 50);
    h.submit(2, Class::LOW, 320, 50);
    let d = h.step(budget(16, 4096, 40));
    assert_eq!(d.admitted.len(), 2);
    for a in &d.admitted {
        h.prefill(a);
    }
    let d = h.step(budget(16, 4096, 0));
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].id, RequestId(2));
    assert!(matches!(
        d.preempted[0].reason,
        PreemptReason::KvExhausted {
            needed_by: RequestId(1)
        }
    ));
    assert_eq!(
        d.scheduled,
        vec![Scheduled {
            id: RequestId(1),
            handle: h.handle(1),
            tokens: 1,
            prefill: false,
        }]
    );
    assert_eq!(
        d.summary.blocks, 1,
        "the freed 20 blocks pay for the new one"
    );
}

#[test]
fn preemption_can_be_turned_off() {
    let mut cfg = small_engine();
    cfg.preemption.enabled = false;
    let mut h = Harness::new(cfg);
    three_running(&mut h);
    h.submit(4, Class::HIGH, 768, 10);
    let d = h.step(budget(16, 4096, 43));
    assert!(d.preempted.is_empty());
    assert!(d.admitted.is_empty());
}

#[test]
fn victims_per_step_are_capped() {
    let mut cfg = small_engine();
    cfg.preemption.max_victims_per_step = 1;
    let mut h = Harness::new(cfg);
    three_running(&mut h);
    h.submit(4, Class::HIGH, 1536, 10); // needs three victims
    let d = h.step(budget(16, 4096, 43));
    assert!(d.preempted.is_empty());
}
