//! Minimal reproducers of failures found by the model-based property tests
//! (`tests/model.rs`), kept so each stays fixed. Each test names the contract point it
//! checks and the shrunk case it came from.

mod common;
use common::*;
use std::time::Duration;
use triage::*;

/// The deadline and reload regressions' base: one shard (so ingress and steps are exact),
/// no aging ladder, queue order `order`, max wait `max_wait_ms`.
fn one_shard(order: QueueOrder, max_wait_ms: u64) -> SchedulerConfig {
    SchedulerConfig {
        shards: 1,
        order,
        max_wait_ms,
        ..no_aging()
    }
}

/// contract point 5: a step respects `max_num_seqs`. When the engine lowers `max_num_seqs`
/// below the number already running, preempting one victim must not open a slot for an
/// admission: the seq budget was already overdrawn.
///
/// Shrunk case: LOW running, budget drops to `max_num_seqs: 0`, a HIGH request arrives;
/// the scheduler preempted the LOW request and admitted the HIGH one, leaving 1 running
/// with a budget of 0.
#[test]
fn preemption_does_not_admit_past_a_lowered_seq_budget() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        lowered_seq_budget(order);
    }
}

fn lowered_seq_budget(order: QueueOrder) {
    let mut h = Harness::new(SchedulerConfig {
        order,
        ..no_aging()
    });
    h.submit(1, Class::LOW, 16, 8);
    let d = h.step(budget(1, 4096, 7000));
    h.prefill(&d.admitted[0]);
    h.submit(2, Class::HIGH, 16, 8);
    let d = h.step(budget(0, 4096, 7000));
    assert!(
        h.sched.running() == 0 || d.admitted.is_empty(),
        "max_num_seqs 0 but {} running after admitting {:?} (preempted {:?})",
        h.sched.running(),
        ids(&d.admitted),
        d.preempted
    );
}

/// Same budget, through a KV-exhausted decode: with two running and the budget lowered to
/// `max_num_seqs: 1`, the slot of the decode-block victim must not be handed to a waiting
/// request.
#[test]
fn kv_preemption_does_not_admit_past_a_lowered_seq_budget() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        kv_preemption_lowered_seq_budget(order);
    }
}

fn kv_preemption_lowered_seq_budget(order: QueueOrder) {
    let mut cfg = no_aging();
    cfg.order = order;
    cfg.engine.total_blocks = 40;
    cfg.engine.watermark = 0.0;
    let mut h = Harness::new(cfg);
    // Two requests of exactly 16 blocks: their first decode crosses a block boundary.
    h.submit(1, Class::MEDIUM, 256, 8);
    h.submit(2, Class::LOW, 256, 8);
    let d = h.step(budget(2, 4096, 40));
    assert_eq!(d.admitted.len(), 2);
    for a in &d.admitted {
        h.prefill(a);
    }
    h.submit(3, Class::HIGH, 16, 8);
    // No free block: request 1's decode preempts request 2 (KvExhausted).
    let d = h.step(budget(1, 4096, 0));
    assert!(
        h.sched.running() <= 1,
        "max_num_seqs 1 but {} running (admitted {:?}, preempted {:?})",
        h.sched.running(),
        ids(&d.admitted),
        d.preempted
    );
}

/// contract point 9 and the `cancel` contract: a cancel of a running request is acknowledged
/// (`WasRunning`) and the engine learns of it from a decision's `aborted`. If
/// `drain_waiting` runs before the next step, its internal ingest ends the request as
/// cancelled but puts the abort in a scratch decision that is thrown away: the engine is
/// never told, keeps running the request, and every later callback for it is refused with
/// `NotRunning`.
///
/// Shrunk case: submit, step (admitted), cancel (`WasRunning`), `drain_waiting`.
#[test]
fn drain_waiting_does_not_swallow_the_abort_of_a_cancelled_running_request() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::HIGH, 16, 8);
    let d = h.step(budget(8, 4096, 7000));
    h.prefill(&d.admitted[0]);
    assert_eq!(h.api.cancel(h.handle(1)), Ok(CancelOutcome::WasRunning));
    let handed = h.sched.drain_waiting(h.clock.now());
    assert!(handed.is_empty());
    // The engine must be told to stop request 1: either it is still running (and the next
    // step aborts it), or drain_waiting must report the abort some other way.
    let running = h.sched.running();
    let d = h.step(budget(8, 4096, 7000));
    assert!(
        running == 1 && d.aborted == vec![RequestId(1)],
        "the abort of req#1 was lost: running after drain {running}, next step aborted {:?}",
        d.aborted
    );
}

/// `drain_waiting` documents its order as "most urgent class first and oldest first", but
/// it does not age the queue first: a request whose bucket aged up since the last step is
/// still listed under its old class, after a newer request of the class it has reached.
///
/// Shrunk case (MEDIUM promotes after 15 ms): MEDIUM #1 at 0 ms, step, at 16 ms HIGH #2,
/// drain. #1 is HIGH by age (older than #2) but is handed off after it.
#[test]
fn drain_waiting_orders_by_the_class_aging_has_reached() {
    let mut cfg = no_aging();
    cfg.order = QueueOrder::Ladder; // aging is the ladder's
    cfg.bucket_width_ms = 1;
    cfg.classes[1].promote_after_ms = Some(15);
    cfg.classes[2].promote_after_ms = Some(10);
    cfg.max_wait_ms = 25;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::MEDIUM, 16, 8);
    h.step(budget(0, 4096, 7000));
    h.advance(ms(16));
    h.submit(2, Class::HIGH, 16, 8);
    let handed: Vec<u64> = h
        .sched
        .drain_waiting(h.clock.now())
        .iter()
        .map(|x| x.spec.id.0)
        .collect();
    assert_eq!(
        handed,
        vec![1, 2],
        "#1 has aged into HIGH and arrived first"
    );
}

/// Found by `tests/bad_input_more.rs`. `ManualClock::advance` must keep the clock monotonic (the `Clock` contract: "must never
/// go backwards"), as `set` does. A huge advance wraps the counter instead.
#[test]
fn manual_clock_never_goes_backwards() {
    let clock = ManualClock::new(Timestamp(10));
    clock.advance(Duration::MAX);
    assert!(
        clock.now() >= Timestamp(10),
        "advance(Duration::MAX) moved the clock back to {:?}",
        clock.now()
    );
    clock.set(Timestamp(5));
    assert!(clock.now() >= Timestamp(10));
}

/// Hand-off after preemptions (contract point 2 and the rolling-restart contract): a request that
/// ran, generated tokens and was preempted is handed off with its original arrival, its
/// current class and the tokens it generated; a request reprioritized while waiting keeps
/// its arrival; nothing running is handed off, and nothing is lost between close and
/// drain.
///
/// In both orders: a hand-off must keep all this whatever the order.
#[test]
fn hand_off_after_preemption_keeps_arrival_class_and_generated_tokens() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        hand_off_after_preemption(order);
    }
}

fn hand_off_after_preemption(order: QueueOrder) {
    let mut cfg = no_aging();
    cfg.order = order;
    cfg.engine.total_blocks = 50;
    cfg.engine.watermark = 0.0;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 320, 50); // 20 blocks
    h.advance(ms(2));
    h.submit(2, Class::MEDIUM, 320, 50); // 20 blocks
    let d = h.step(budget(8, 4096, 50));
    assert_eq!(ids(&d.admitted), vec![2, 1]);
    for a in &d.admitted {
        h.prefill(a); // one token each
    }
    for _ in 0..3 {
        let d = h.step(budget(8, 4096, 10));
        for s in &d.scheduled {
            h.sched.on_progress(s.handle, h.clock.now(), 1, 1).unwrap();
        }
    }
    // A HIGH request that needs 30 blocks preempts LOW #1 (20 blocks + 10 free). It steps
    // 250 ms after arriving, when in deadline order it is urgent enough to preempt (slack
    // 500 - 250 - 100 ms estimated prefill = 150 ms, under 300 ms).
    h.advance(ms(5));
    h.submit(3, Class::HIGH, 480, 10);
    h.advance(ms(250));
    let d = h.step(budget(8, 4096, 10));
    assert_eq!(ids(&d.admitted), vec![3]);
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].id, RequestId(1));
    h.submit(4, Class::LOW, 16, 4); // still in ingress at the hand-off
    h.api.reprioritize(h.handle(4), Class::MEDIUM).unwrap();
    h.api.close();
    let handed = h.sched.drain_waiting(h.clock.now());
    let got: Vec<(u64, Class, Timestamp, u32)> = handed
        .iter()
        .map(|x| (x.spec.id.0, x.spec.class, x.arrival, x.generated_tokens))
        .collect();
    assert_eq!(
        got,
        vec![
            (4, Class::MEDIUM, Timestamp::from_millis(257), 0),
            (1, Class::LOW, Timestamp::ZERO, 4),
        ]
    );
    assert_eq!(handed[1].spec.prompt_tokens, 320);
    assert_eq!(handed[1].spec.max_new_tokens, 50);
    let c = h.sched.conservation();
    assert_eq!((c.evicted, c.running, c.waiting), (2, 2, 0), "{c}");
    assert!(c.is_balanced(), "{c}");
    // The running requests finish normally after the hand-off.
    h.finish(RequestId(2));
    let three = d.admitted[0];
    h.prefill(&three);
    h.finish(RequestId(3));
    let c = h.sched.conservation();
    assert_eq!(c.submitted, c.ended(), "{c}");
}

/// `HandOff::spec` documents "its class as last reprioritized". A reprioritize of a
/// waiting request that was acknowledged (`Ok`) but not yet applied by a step must still
/// be reflected in the hand-off (found by the model test once `drain_waiting` stopped
/// applying notices).
///
/// Shrunk case: LOW #36 submitted, step (waiting), reprioritize to HIGH, drain.
#[test]
fn hand_off_carries_a_pending_reprioritize() {
    let mut h = Harness::new(no_aging());
    h.submit(36, Class::LOW, 37, 1);
    h.step(budget(0, 4096, 7000));
    h.api.reprioritize(h.handle(36), Class::HIGH).unwrap();
    let handed = h.sched.drain_waiting(h.clock.now());
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].spec.class, Class::HIGH, "{:?}", handed[0]);
}

/// Deadline order, found by the model test: a candidate skipped in a step was put back at
/// the front of its run although an older request of its class had been relegated into that
/// run in the same step, leaving the run out of order (a debug assertion, and
/// `check_invariants` in release). The shrunk case below reproduced it before overdue
/// requests were compared by arrival across classes; `queue::tests` has the direct case.
#[test]
fn a_skipped_candidate_goes_back_behind_an_older_request_relegated_in_the_same_step() {
    let mut cfg = SchedulerConfig {
        bucket_width_ms: 1,
        backfill_lookahead: 1,
        chunked_prefill: false,
        ..one_shard(QueueOrder::Deadline, 134)
    };
    cfg.preemption.enabled = false;
    cfg.deadline.max_decode_delay_ms = 0;
    cfg.deadline.overdue_share = 0.3;
    let mut h = Harness::new(cfg);
    h.step(budget(0, 234, 7000)); // earns 70 tokens of overdue credit
    for spec in [
        RequestSpec::new(0, Class::HIGH, 4, 1).with_ttft_ms(300),
        RequestSpec::new(1, Class::MEDIUM, 119, 1).with_ttft_ms(1),
        RequestSpec::new(2, Class::HIGH, 4, 1).with_ttft_ms(1),
    ] {
        h.api.submit(spec).unwrap();
    }
    h.advance(Duration::from_millis(118));
    h.step(budget(0, 0, 7000));
    h.advance(Duration::from_millis(16));
    h.step(budget(1, 1, 7000)); // `Harness::step` checks every invariant
}

/// Deadline order, found by the model test: the queue timeout looks at each class's first
/// request, so a request that timed out behind a younger one with an earlier deadline could
/// still start. It is now ended as timed out when it comes up.
#[test]
fn a_request_past_the_queue_timeout_never_starts_in_deadline_order() {
    let mut cfg = SchedulerConfig {
        queue_timeout_ms: Some(150),
        ..one_shard(QueueOrder::Deadline, 100)
    };
    // Neither a budget share nor preemption: a step without seats looks at no candidate
    // (looking would relegate both, and the timeout pass would then find #0 by arrival).
    cfg.deadline.max_decode_delay_ms = 0;
    cfg.preemption.enabled = false;
    let mut h = Harness::new(cfg);
    h.submit(0, Class::LOW, 10, 1); // deadline 100 ms (max wait)
    h.advance(Duration::from_millis(60));
    // An own 1 ms target: deadline 61 ms, so #1 heads LOW's queue.
    h.api
        .submit(RequestSpec::new(1, Class::LOW, 10, 1).with_ttft_ms(1))
        .unwrap();
    h.step(budget(0, 0, 7000));
    h.advance(Duration::from_millis(90)); // #0 waited 150 ms = queue_timeout
    let mut timed_out = Vec::new();
    for seats in [0, 4] {
        let d = h.step(budget(seats, 1000, 7000));
        for a in &d.admitted {
            assert!(
                a.waited < Duration::from_millis(150),
                "{:?} started after the queue timeout",
                a.id
            );
        }
        timed_out.extend(d.rejected.iter().map(|r| r.id.0));
    }
    assert_eq!(timed_out, vec![0]);
    assert_eq!(h.sched.class_counters(Class::LOW).timed_out, 1);
}

/// Deadline order, found by the model test: a waiting request moved to another class was
/// ranked against running prefills by its old class, so a running LOW prefill took the
/// tokens before the new HIGH request.
#[test]
fn a_request_moved_to_another_class_is_ranked_by_its_new_class() {
    let mut cfg = one_shard(QueueOrder::Deadline, 100);
    cfg.preemption.enabled = false;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 8, 2);
    h.submit(2, Class::LOW, 8, 2);
    let d = h.step(budget(1, 1, 7000)); // LOW #1 starts with 1 of its 8 prompt tokens
    assert_eq!(ids(&d.admitted), vec![1]);
    h.sched
        .on_progress(h.handle(1), h.clock.now(), 1, 0)
        .unwrap();
    h.api.reprioritize(h.handle(2), Class::HIGH).unwrap();
    let d = h.step(budget(2, 8, 7000));
    assert_eq!(ids(&d.admitted), vec![2]);
    assert_eq!(
        d.admitted[0].prefill_tokens, 8,
        "HIGH #2 takes the tokens first"
    );
    assert!(d.scheduled.is_empty(), "{:?}", d.scheduled);
}

/// Deadline order with chunked prefill off: a prompt starts whole. The relaxed chunk (far
/// deadlines) used to cut a LOW prompt to 512 tokens anyway.
#[test]
fn without_chunked_prefill_a_relaxed_prompt_starts_whole() {
    let cfg = SchedulerConfig {
        shards: 1,
        chunked_prefill: false,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 1000, 10); // deadline about 60 s away: relaxed
    let d = h.step(budget(8, 2048, 7000));
    assert_eq!(ids(&d.admitted), vec![1]);
    assert_eq!(d.admitted[0].prefill_tokens, 1000);
}

/// Found by the model test: a request running across a reload that switched the order kept
/// its queue time from the old order, so once preempted it was queued by arrival in
/// deadline order and went before a request with an earlier deadline.
#[test]
fn a_running_request_takes_the_new_order_across_a_reload() {
    let mut cfg = one_shard(QueueOrder::Ladder, 100);
    cfg.deadline.initial_iteration_ms = 1;
    cfg.preemption.enabled = false;
    let mut h = Harness::new(cfg.clone());
    h.api
        .submit(RequestSpec::new(1, Class::HIGH, 10, 5).with_ttft_ms(50))
        .unwrap();
    h.step(budget(1, 2048, 7000)); // #1 runs; deadline 50 ms
    h.advance(Duration::from_millis(10));
    h.api
        .submit(RequestSpec::new(2, Class::HIGH, 10, 5).with_ttft_ms(20))
        .unwrap(); // deadline 30 ms
    h.sched
        .reload(SchedulerConfig {
            order: QueueOrder::Deadline,
            ..cfg
        })
        .unwrap();
    let d = h.step(budget(0, 2048, 7000)); // the reload applies; no seat: #1 preempted
    assert_eq!(d.preempted.len(), 1);
    let d = h.step(budget(1, 2048, 7000));
    assert_eq!(ids(&d.admitted), vec![2], "the earlier deadline goes first");
}

/// Found by the model test after the previous fix: a reload re-keyed running requests and
/// so marked a running relegated request live; it then ranked by its past deadline ahead
/// of the live requests of its class. A relegated request stays relegated across a reload
/// in deadline order.
#[test]
fn a_running_relegated_request_stays_relegated_across_a_reload() {
    let mut cfg = one_shard(QueueOrder::Deadline, 100);
    cfg.preemption.enabled = false;
    cfg.deadline.initial_iteration_ms = 1;
    cfg.deadline.relaxed_chunk_tokens = 0;
    cfg.deadline.max_decode_delay_ms = 0;
    for reload in [false, true] {
        let mut h = Harness::new(cfg.clone());
        h.api
            .submit(RequestSpec::new(1, Class::LOW, 100, 2).with_ttft_ms(1))
            .unwrap();
        let d = h.step(budget(1, 10, 1000)); // #1 relegated, starts with 10 tokens
        assert!(d.admitted[0].relegated);
        h.sched
            .on_progress(h.handle(1), h.clock.now(), 10, 0)
            .unwrap();
        h.advance(Duration::from_millis(1));
        h.submit(2, Class::LOW, 100, 2); // live, deadline 100 ms
        if reload {
            h.sched.reload(h.sched.config().clone()).unwrap();
        }
        let d = h.step(budget(2, 10, 1000));
        assert_eq!(ids(&d.admitted), vec![2], "reload: {reload}");
        assert_eq!(d.admitted[0].prefill_tokens, 10, "reload: {reload}");
        assert!(
            d.scheduled.is_empty(),
            "reload: {reload}: {:?}",
            d.scheduled
        );
    }
}
