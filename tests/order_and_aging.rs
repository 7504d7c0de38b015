//! Contract points 2–4: order, aging by timestamp buckets, max wait. Aging is the
//! ladder's (`order = "ladder"`); class order, max wait and the queue timeout hold in both
//! orders. Deadline order's own rules are in `tests/deadline.rs`.

mod common;
use common::*;
use triage::*;

const ORDERS: [QueueOrder; 2] = [QueueOrder::Ladder, QueueOrder::Deadline];

/// The default config (aging on) in the ladder order.
fn ladder() -> SchedulerConfig {
    SchedulerConfig {
        order: QueueOrder::Ladder,
        shards: 2,
        ..SchedulerConfig::default()
    }
}

#[test]
fn higher_class_first_and_fifo_inside_a_class() {
    for order in ORDERS {
        higher_class_first(order);
    }
}

fn higher_class_first(order: QueueOrder) {
    let mut h = Harness::new(SchedulerConfig {
        order,
        ..no_aging()
    });
    for (id, class) in [
        (1, Class::LOW),
        (2, Class::MEDIUM),
        (3, Class::HIGH),
        (4, Class::MEDIUM),
        (5, Class::HIGH),
        (6, Class::LOW),
    ] {
        h.submit(id, class, 16, 4);
        h.advance(ms(1));
    }
    let d = h.step(budget(6, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![3, 5, 2, 4, 1, 6]);
}

#[test]
fn one_admission_at_a_time_follows_the_same_order() {
    for order in ORDERS {
        one_admission_at_a_time(order);
    }
}

fn one_admission_at_a_time(order: QueueOrder) {
    let mut h = Harness::new(SchedulerConfig {
        order,
        ..no_aging()
    });
    for id in 0..20u64 {
        let class = Class::from_index((id % 3) as u8);
        h.submit(id, class, 16, 4);
        h.advance(ms(1));
    }
    let mut order = Vec::new();
    for _ in 0..20 {
        let d = h.step(budget(1, 4096, 7000));
        assert_eq!(d.admitted.len(), 1);
        let a = d.admitted[0];
        order.push(a.id.0);
        h.prefill(&a);
        h.finish(a.id);
    }
    let mut expected: Vec<u64> = (0..20).collect();
    expected.sort_by_key(|id| (id % 3, *id));
    assert_eq!(order, expected);
}

#[test]
fn low_is_promoted_after_its_threshold_then_served_before_newer_medium() {
    // LOW -> MEDIUM at 20 s, MEDIUM -> HIGH at 40 s, 10 ms buckets.
    let mut h = Harness::new(ladder());
    h.submit(1, Class::LOW, 16, 4); // t = 0, bucket [0, 10 ms)
    h.advance(ms(5_000));
    h.submit(2, Class::MEDIUM, 16, 4); // t = 5 s
    h.clock.set(Timestamp::from_millis(20_009));
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(d.summary.promoted, 0, "not before threshold + bucket width");
    assert_eq!(h.sched.waiting_in(Class::LOW), 1);
    h.clock.set(Timestamp::from_millis(20_010));
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(d.summary.promoted, 1);
    assert_eq!(h.sched.waiting_in(Class::LOW), 0);
    assert_eq!(h.sched.waiting_in(Class::MEDIUM), 2);
    h.submit(3, Class::MEDIUM, 16, 4); // newer MEDIUM work
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(
        ids(&d.admitted),
        vec![1],
        "the aged LOW request goes before newer MEDIUM work"
    );
    assert_eq!(d.admitted[0].class, Class::LOW);
    assert_eq!(d.admitted[0].effective_class, Class::MEDIUM);
    assert_eq!(h.sched.class_counters(Class::LOW).promoted, 1);
}

#[test]
fn aging_climbs_the_whole_ladder_and_a_late_step_cascades() {
    let mut h = Harness::new(ladder());
    h.submit(1, Class::LOW, 16, 4);
    h.step(budget(0, 4096, 7000));
    assert_eq!(h.sched.waiting_in(Class::LOW), 1);
    // No step until 45 s: one step moves the bucket LOW -> MEDIUM -> HIGH.
    h.clock.set(Timestamp::from_millis(45_000));
    h.submit(2, Class::HIGH, 16, 4);
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(d.summary.promoted, 2, "one request, promoted twice");
    assert_eq!(h.sched.waiting_in(Class::HIGH), 2);
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1], "older than the HIGH arrival");
}

#[test]
fn promotion_moves_whole_buckets_and_keeps_fifo_across_bases() {
    let mut h = Harness::new(ladder());
    // Interleave LOW and MEDIUM arrivals inside and across buckets.
    for i in 0..40u64 {
        let class = if i % 2 == 0 {
            Class::LOW
        } else {
            Class::MEDIUM
        };
        h.submit(i, class, 16, 4);
        h.advance(ms(3));
    }
    h.clock.set(Timestamp::from_millis(45_000));
    h.step(budget(0, 4096, 7000));
    assert_eq!(h.sched.waiting_in(Class::HIGH), 40);
    let d = h.step(budget(40, 4096, 7000));
    assert_eq!(
        ids(&d.admitted),
        (0..40).collect::<Vec<_>>(),
        "FIFO by arrival once merged"
    );
}

/// In both orders: the ladder serves an overdue request first; deadline order on the
/// overdue credit, which covers this 64-token prompt in the first step past max wait.
#[test]
fn overdue_request_is_served_while_high_traffic_keeps_arriving() {
    for order in ORDERS {
        overdue_request_is_served(order);
    }
}

fn overdue_request_is_served(order: QueueOrder) {
    // No aging: only max_wait (60 s) can rescue the LOW request.
    let mut h = Harness::new(SchedulerConfig {
        order,
        ..no_aging()
    });
    h.submit(0, Class::LOW, 64, 4);
    let mut next = 1u64;
    let mut low_admitted_at = None;
    // One admission per 100 ms step, and two HIGH arrivals per step: HIGH never drains.
    for _ in 0..800 {
        for _ in 0..2 {
            h.submit(next, Class::HIGH, 64, 4);
            next += 1;
        }
        let d = h.step(budget(1, 4096, 7000));
        assert_eq!(d.admitted.len(), 1);
        let a = d.admitted[0];
        if a.id.0 == 0 {
            low_admitted_at = Some(h.clock.now());
            assert!(a.overdue);
            assert!(
                h.sched.waiting_in(Class::HIGH) > 0,
                "HIGH was still waiting"
            );
            break;
        }
        h.prefill(&a);
        h.finish(a.id);
        h.advance(ms(100));
    }
    let at = low_admitted_at.expect("the LOW request was served");
    assert!(
        at >= Timestamp::from_millis(60_000) && at < Timestamp::from_millis(60_100),
        "served at {at}"
    );
}

/// In both orders: the ladder serves overdue requests first, deadline order on the overdue
/// credit (2% of 4096 tokens a step covers these 16-token prompts), oldest first.
#[test]
fn overdue_requests_go_oldest_first_across_classes() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        overdue_oldest_first(order);
    }
}

fn overdue_oldest_first(order: QueueOrder) {
    let mut h = Harness::new(SchedulerConfig {
        order,
        ..no_aging()
    });
    h.submit(1, Class::LOW, 16, 4);
    h.advance(ms(10));
    h.submit(2, Class::MEDIUM, 16, 4);
    h.advance(ms(10));
    h.submit(3, Class::HIGH, 16, 4);
    h.clock.set(Timestamp::from_millis(61_000));
    h.submit(4, Class::HIGH, 16, 4);
    let d = h.step(budget(4, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1, 2, 3, 4]);
    assert!(d.admitted[..3].iter().all(|a| a.overdue));
    assert!(!d.admitted[3].overdue);
}

#[test]
fn queue_timeout_ends_requests_with_an_explicit_outcome() {
    for order in ORDERS {
        queue_timeout_ends_requests(order);
    }
}

fn queue_timeout_ends_requests(order: QueueOrder) {
    let mut cfg = no_aging();
    cfg.order = order;
    cfg.queue_timeout_ms = Some(80_000);
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 16, 4);
    h.advance(ms(40_000));
    h.submit(2, Class::LOW, 16, 4);
    h.clock.set(Timestamp::from_millis(80_000));
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].id, RequestId(1));
    assert!(
        matches!(d.rejected[0].reason, RejectReason::TimedOut { waited } if waited == ms(80_000))
    );
    assert_eq!(h.sched.waiting(), 1);
    assert_eq!(h.sched.conservation().timed_out, 1);
}

#[test]
fn queue_timeout_spares_a_preempted_request() {
    for order in ORDERS {
        queue_timeout_spares_a_preempted(order);
    }
}

fn queue_timeout_spares_a_preempted(order: QueueOrder) {
    let mut cfg = no_aging();
    cfg.order = order;
    cfg.queue_timeout_ms = Some(80_000);
    cfg.engine.total_blocks = 40;
    cfg.engine.watermark = 0.0;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 300, 50); // 19 blocks
    h.submit(2, Class::LOW, 300, 50); // never starts: no room
    let d = h.step(budget(1, 4096, 40));
    assert_eq!(ids(&d.admitted), vec![1]);
    h.prefill(&d.admitted[0]);
    h.clock.set(Timestamp::from_millis(50_000));
    h.submit(3, Class::HIGH, 600, 10); // 38 blocks: LOW 1 must go
                                       // 250 ms later: in deadline order HIGH 3's slack is then 500 - 250 - its estimated
                                       // prefill of 2 iterations × 50 ms = 150 ms, under the 300 ms that makes it urgent and
                                       // lets it preempt (the ladder lets any HIGH request preempt LOW).
    h.advance(ms(250));
    let d = h.step(budget(2, 4096, 21));
    assert_eq!(
        d.preempted.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(ids(&d.admitted), vec![3]);
    h.clock.set(Timestamp::from_millis(81_000));
    let d = h.step(budget(2, 4096, 0));
    let timed_out: Vec<u64> = d.rejected.iter().map(|r| r.id.0).collect();
    assert_eq!(
        timed_out,
        vec![2],
        "the never-started request times out; the preempted one keeps its place"
    );
    assert_eq!(h.sched.waiting(), 1);
}

#[test]
fn a_request_stamped_after_the_steps_now_can_report_progress_at_that_now() {
    for order in ORDERS {
        stamped_after_now(order);
    }
}

fn stamped_after_now(order: QueueOrder) {
    let mut h = Harness::new(SchedulerConfig {
        order,
        ..no_aging()
    });
    let now = h.clock.now(); // the engine reads its clock ...
    h.advance(ms(1));
    h.submit(1, Class::HIGH, 16, 4); // ... and a request arrives a moment later
    let d = h.sched.step(now, &budget(1, 4096, 7000)).unwrap();
    assert_eq!(ids(&d.admitted), vec![1]);
    h.sched.on_progress(h.handle(1), d.now, 16, 1).unwrap();
}
