//! Bad input at every public entry point: each invalid value a client, an engine or an
//! operator could send gets a typed error (never a panic) and leaves the scheduler as it
//! was — `conservation()`, `waiting()` and `running()` are compared before and after (a
//! refused submit only adds to `submitted` and `refused`, which is its counted outcome).

mod common;
use common::*;
use triage::*;

type State = (Conservation, usize, usize);

fn state(h: &Harness) -> State {
    (h.sched.conservation(), h.sched.waiting(), h.sched.running())
}

/// `after` is `before` plus `n` refused submits.
fn only_refused(before: State, after: State, n: u64) {
    let (mut c, w, r) = before;
    c.submitted += n;
    c.refused += n;
    assert_eq!(
        (c, w, r),
        after,
        "a refused submit changed more than its count"
    );
}

/// A harness with one running request (1), one waiting (2), one finished (3), one
/// cancelled while waiting and reaped (4), and one cancelled but not yet reaped (5); the id
/// index is on, so held ids are refused as duplicates and can be looked up.
fn populated() -> Harness {
    let mut h = Harness::new(SchedulerConfig {
        id_index: true,
        ..no_aging()
    });
    h.submit(1, Class::HIGH, 100, 4);
    h.submit(3, Class::HIGH, 16, 1);
    let d = h.step(budget(2, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1, 3]);
    h.prefill(&d.admitted[0]);
    h.prefill(&d.admitted[1]);
    h.finish(RequestId(3));
    h.submit(2, Class::LOW, 16, 4);
    h.submit(4, Class::LOW, 16, 4);
    // One slot, taken by request 1: nothing else starts (LOW cannot preempt HIGH).
    h.step(budget(1, 4096, 7000));
    h.api.cancel(h.handle(4)).unwrap();
    h.step(budget(1, 4096, 7000));
    h.submit(5, Class::MEDIUM, 16, 4);
    h.api.cancel(h.handle(5)).unwrap();
    h
}

#[test]
fn submit_refuses_every_invalid_request_with_a_typed_error_and_no_effect() {
    let mut cfg = no_aging();
    cfg.engine.total_blocks = 100; // 99 usable with the 1% watermark
    cfg.engine.max_model_len = 2000;
    cfg.id_index = true; // duplicate ids are refused only with the id index
    let mut h = Harness::new(cfg);
    h.submit(10, Class::LOW, 16, 4);
    h.submit(11, Class::HIGH, 16, 4);
    h.step(budget(1, 4096, 100)); // 11 runs, 10 waits
    h.submit(12, Class::MEDIUM, 16, 4); // in ingress
    h.api.cancel(h.handle(12)).unwrap(); // cancelled, not reaped: id still held
    let id = RequestId(1);
    let cases: Vec<(RequestSpec, SubmitError)> = vec![
        (
            RequestSpec::new(1, Class::from_index(3), 16, 4),
            SubmitError::Class(ClassError::UnknownIndex {
                index: 3,
                classes: 3,
            }),
        ),
        (
            RequestSpec::new(1, Class::from_index(255), 16, 4),
            SubmitError::Class(ClassError::UnknownIndex {
                index: 255,
                classes: 3,
            }),
        ),
        // The class is checked before the token counts.
        (
            RequestSpec::new(1, Class::from_index(8), 0, 0),
            SubmitError::Class(ClassError::UnknownIndex {
                index: 8,
                classes: 3,
            }),
        ),
        (
            RequestSpec::new(1, Class::LOW, 0, 0),
            SubmitError::ZeroPromptTokens(id),
        ),
        (
            RequestSpec::new(1, Class::LOW, 16, 0),
            SubmitError::ZeroMaxNewTokens(id),
        ),
        (
            RequestSpec::new(1, Class::LOW, 1999, 2),
            SubmitError::ExceedsContext {
                id,
                tokens: 2001,
                max_model_len: 2000,
            },
        ),
        (
            RequestSpec::new(1, Class::LOW, u32::MAX, 1),
            SubmitError::ExceedsContext {
                id,
                tokens: u64::from(u32::MAX) + 1,
                max_model_len: 2000,
            },
        ),
        (
            RequestSpec::new(1, Class::LOW, 1, u32::MAX),
            SubmitError::ExceedsContext {
                id,
                tokens: u64::from(u32::MAX) + 1,
                max_model_len: 2000,
            },
        ),
        (
            RequestSpec::new(1, Class::LOW, 1584, 1), // 1585 tokens = 100 blocks > 99
            SubmitError::NeverFits {
                id,
                blocks_needed: 100,
                blocks_available: 99,
            },
        ),
        (
            RequestSpec::new(10, Class::HIGH, 16, 4),
            SubmitError::DuplicateId(RequestId(10)), // waiting
        ),
        (
            RequestSpec::new(11, Class::LOW, 16, 4),
            SubmitError::DuplicateId(RequestId(11)), // running
        ),
        (
            RequestSpec::new(12, Class::LOW, 16, 4),
            SubmitError::DuplicateId(RequestId(12)), // cancelled, not yet reaped
        ),
    ];
    for (spec, want) in cases {
        let before = state(&h);
        assert_eq!(h.api.submit(spec), Err(want.clone()), "{spec:?}");
        only_refused(before, state(&h), 1);
        assert!(!want.to_string().is_empty());
    }
    // The boundaries themselves are accepted: exactly the usable KV, exactly the context.
    h.submit(21, Class::LOW, 1583, 1); // 1584 tokens = 99 blocks
    let d = h.step(budget(1, 4096, 100));
    assert_eq!(
        d.summary.drained, 2,
        "refused submits never reach the queue"
    );
    assert_eq!(d.cancelled, vec![RequestId(12)]);
    assert_eq!(h.sched.waiting(), 2);
    let mut big = Harness::new(no_aging());
    let max_len = big.sched.config().engine.max_model_len;
    big.submit(1, Class::LOW, max_len - 1, 1);
}

#[test]
fn submit_after_close_and_after_drop_is_refused() {
    let h = populated();
    h.api.close();
    h.api.close(); // idempotent
    let before = state(&h);
    for spec in [
        RequestSpec::new(100, Class::HIGH, 16, 4),
        RequestSpec::new(1, Class::HIGH, 16, 4), // also a duplicate: Closed comes first
    ] {
        assert_eq!(h.api.submit(spec), Err(SubmitError::Closed));
    }
    // Invalid requests still get their specific error.
    assert_eq!(
        h.api.submit(RequestSpec::new(101, Class::HIGH, 0, 4)),
        Err(SubmitError::ZeroPromptTokens(RequestId(101)))
    );
    only_refused(before, state(&h), 3);
    // Cancel and reprioritize still work on held requests after a close.
    assert_eq!(h.api.cancel(h.handle(2)), Ok(CancelOutcome::WasWaiting));
    let Harness { sched, api, .. } = h;
    drop(sched);
    assert_eq!(
        api.submit(RequestSpec::new(102, Class::HIGH, 16, 4)),
        Err(SubmitError::Closed)
    );
}

#[test]
fn cancel_refuses_unknown_ended_and_already_cancelled_ids() {
    let h = populated();
    let [foreign, far] = foreign_handles();
    for (handle, want) in [
        (foreign, ControlError::NotFound(foreign)), // never issued by this scheduler
        (far, ControlError::NotFound(far)),
        (h.handle(3), ControlError::NotFound(h.handle(3))), // finished: stale
        (h.handle(4), ControlError::NotFound(h.handle(4))), // cancelled and reaped: stale
        (h.handle(5), ControlError::AlreadyCancelled(h.handle(5))),
    ] {
        let before = state(&h);
        assert_eq!(h.api.cancel(handle), Err(want.clone()));
        assert_eq!(state(&h), before);
        assert!(!want.to_string().is_empty());
    }
    // By id, through the index: ids never submitted or ended are unknown; a cancelled
    // request not yet reaped is still held.
    let before = state(&h);
    for id in [0, u64::MAX, 3, 4] {
        assert_eq!(
            h.api.lookup(RequestId(id)),
            Err(ControlError::UnknownId(RequestId(id)))
        );
    }
    assert_eq!(h.api.lookup(RequestId(5)), Ok(h.handle(5)));
    assert_eq!(state(&h), before);
}

#[test]
fn reprioritize_refuses_unknown_classes_and_ids() {
    let mut h = populated();
    let before = state(&h);
    let [foreign, _] = foreign_handles();
    for class in [3u8, 7, 8, 255] {
        for handle in [h.handle(1), h.handle(2), foreign] {
            // The class is checked first, whatever the handle.
            assert_eq!(
                h.api.reprioritize(handle, Class::from_index(class)),
                Err(ControlError::Class(ClassError::UnknownIndex {
                    index: class,
                    classes: 3
                }))
            );
        }
    }
    for (handle, want) in [
        (foreign, ControlError::NotFound(foreign)),
        (h.handle(3), ControlError::NotFound(h.handle(3))),
        (h.handle(4), ControlError::NotFound(h.handle(4))),
        (h.handle(5), ControlError::AlreadyCancelled(h.handle(5))),
    ] {
        assert_eq!(h.api.reprioritize(handle, Class::HIGH), Err(want));
    }
    assert_eq!(state(&h), before);
    // The refused class changes really changed nothing: request 2 is still LOW.
    let d = h.step(budget(8, 4096, 7000));
    let two = d.admitted.iter().find(|a| a.id == RequestId(2)).unwrap();
    assert_eq!(two.class, Class::LOW);
}

#[test]
fn engine_callbacks_refuse_every_impossible_report() {
    let mut h = populated();
    let now = h.clock.now();
    let not_running = ProgressError::NotRunning;
    let [foreign, far] = foreign_handles();
    // Unknown, waiting, finished, reaped, cancelled-but-waiting.
    for handle in [
        foreign,
        far,
        h.handle(2),
        h.handle(3),
        h.handle(4),
        h.handle(5),
    ] {
        let before = state(&h);
        assert_eq!(
            h.sched.on_progress(handle, now, 1, 1),
            Err(not_running(handle))
        );
        assert_eq!(
            h.sched.on_finished(handle, now, FinishReason::Error),
            Err(not_running(handle))
        );
        assert_eq!(state(&h), before);
    }
    // Request 1 is running: prompt 100 prefilled, 1 of 4 tokens generated.
    let (one, one_id) = (h.handle(1), RequestId(1));
    let before = state(&h);
    let bad = [
        (u32::MAX, 0),
        (u32::MAX, u32::MAX),
        (2, 0), // KV may hold at most prompt + generated = 101 tokens
        (0, u32::MAX),
        (0, 4), // 1 + 4 > max_new_tokens 4
        (1, 4),
    ];
    for (computed, new_output) in bad {
        let e = h
            .sched
            .on_progress(one, now, computed, new_output)
            .expect_err("impossible progress refused");
        assert!(
            matches!(
                e,
                ProgressError::PrefillOverrun { id, .. } | ProgressError::OutputOverrun { id, .. }
                    if id == one_id
            ),
            "({computed}, {new_output}): {e}"
        );
        assert!(!e.to_string().is_empty());
    }
    h.advance(ms(5));
    h.sched.on_progress(one, h.clock.now(), 1, 1).unwrap();
    for t in [Timestamp::ZERO, Timestamp(h.clock.now().0 - 1)] {
        assert_eq!(
            h.sched.on_progress(one, t, 0, 0),
            Err(ProgressError::TimeWentBackwards(one_id))
        );
        assert_eq!(
            h.sched.on_finished(one, t, FinishReason::Stop),
            Err(ProgressError::TimeWentBackwards(one_id))
        );
    }
    assert_eq!(state(&h), before);
    h.sched.check_invariants().unwrap();
    assert_eq!(
        h.sched
            .on_finished(one, h.clock.now(), FinishReason::Length),
        Ok(Outcome::Finished)
    );
    assert_eq!(
        h.sched
            .on_finished(one, h.clock.now(), FinishReason::Length),
        Err(not_running(one)),
        "finishing twice"
    );
}

#[test]
fn step_refuses_impossible_budgets_and_times_and_takes_extreme_valid_ones() {
    let mut h = populated();
    h.advance(ms(10));
    h.step(budget(8, 4096, 7000));
    let last = h.clock.now();
    h.submit(6, Class::LOW, 16, 4); // in ingress: must stay there on a refused step
    let before = state(&h);
    for free in [7451, u32::MAX] {
        assert_eq!(
            h.sched.step(last, &budget(8, 4096, free)),
            Err(BudgetError::FreeBlocksExceedTotal { free, total: 7450 })
        );
    }
    for t in [Timestamp::ZERO, Timestamp(last.0 - 1)] {
        let e = h.sched.step(t, &budget(8, 4096, 7000)).unwrap_err();
        assert_eq!(
            e,
            BudgetError::TimeWentBackwards {
                now: t.0,
                previous: last.0
            }
        );
        assert!(!e.to_string().is_empty());
    }
    let mut out = Decision::default();
    assert!(h
        .sched
        .step_into(Timestamp::ZERO, &budget(1, 1, 1), &mut out)
        .is_err());
    assert_eq!(state(&h), before, "refused steps change nothing");
    assert_eq!(before.0.in_ingress, 1);
    // Extreme but valid budgets: no overflow, no panic.
    let d = h.step(budget(u32::MAX, u32::MAX, 7450));
    assert_eq!(d.summary.tokens, d.total_tokens());
    let d = h.step(budget(0, 0, 0));
    assert!(d.admitted.is_empty() && d.scheduled.is_empty());
}

#[test]
fn extreme_times_do_not_overflow() {
    let mut cfg = SchedulerConfig::default(); // aging on
    cfg.queue_timeout_ms = Some(cfg.max_wait_ms + 30_000);
    cfg.shards = 1;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 16, 4);
    h.submit(2, Class::LOW, 16, 4);
    h.step(budget(1, 4096, 7000));
    h.clock.set(Timestamp(u64::MAX - 1));
    h.submit(3, Class::LOW, 16, 4);
    let d = h.step(budget(0, 4096, 7000));
    // Request 2 waited forever: timed out; 3 has just arrived.
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].id, RequestId(2));
    let d = h
        .sched
        .step(Timestamp(u64::MAX), &budget(8, 4096, 7000))
        .unwrap();
    // Request 1 was preempted when max_num_seqs fell to 0; a preempted request is spared
    // by the queue timeout and resumes first (it is the oldest).
    assert_eq!(ids(&d.admitted), vec![1, 3]);
    assert!(d.admitted[0].resumed);
    assert!(h.sched.conservation().is_balanced());
    h.sched.check_invariants().unwrap();
}

#[test]
fn lookups_with_unknown_classes_and_ids_answer_without_panicking() {
    let h = populated();
    for i in [3u8, 7, 8, 255] {
        let c = Class::from_index(i);
        assert_eq!(h.sched.waiting_in(c), 0);
        let _ = h.sched.class_counters(c);
        assert!(!h.sched.classes().contains(c));
        assert!(h.sched.classes().check(c).is_err());
        assert_eq!(h.sched.classes().name(c), "<unknown>");
    }
    let [foreign, far] = foreign_handles();
    assert_eq!(h.sched.first_token_at(foreign), None);
    assert_eq!(h.sched.first_token_at(far), None);
    assert_eq!(h.sched.first_token_at(h.handle(3)), None, "ended: stale");
    assert_eq!(
        h.api.lookup(RequestId(12345)),
        Err(ControlError::UnknownId(RequestId(12345)))
    );
    let classes = h.api.classes();
    for name in ["", "   ", "HIGHEST", "hígh", "\0", &"x".repeat(100_000)] {
        assert!(matches!(
            classes.parse_name(name),
            Err(ClassError::UnknownName { .. })
        ));
    }
    for p in [i64::MIN, -1, 101, i64::MAX] {
        let e = classes.from_vllm_priority(p).unwrap_err();
        assert!(matches!(e, ClassError::PriorityOutOfRange { priority, .. } if priority == p));
    }
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let base = SchedulerConfig::default();
    let check = |f: &dyn Fn(&mut SchedulerConfig), field: &str| {
        let mut c = base.clone();
        f(&mut c);
        let e = c.validate().expect_err(field);
        assert_eq!(e.field, field, "{e}");
        assert!(!e.to_string().is_empty());
        assert!(Scheduler::new(c.clone()).is_err());
        assert!(Scheduler::with_clock(c, ManualClock::default()).is_err());
    };
    check(
        &|c| {
            let extra = c.classes[2].clone();
            for i in 0..6 {
                let mut x = extra.clone();
                x.name = format!("extra{i}");
                x.vllm_priority = [200 + i, 200 + i];
                x.promote_after_ms = None;
                c.classes.push(x);
            }
        },
        "classes",
    );
    check(&|c| c.classes[1].name = "  ".into(), "classes[1].name");
    check(&|c| c.classes[2].name = "Medium".into(), "classes[2].name");
    check(
        &|c| c.classes[1].promote_after_ms = Some(0),
        "classes[1].promote_after_ms",
    );
    check(
        &|c| c.classes[0].ring_capacity = 0,
        "classes[0].ring_capacity",
    );
    check(
        &|c| c.classes[2].ring_capacity = 1,
        "classes[2].ring_capacity",
    );
    check(
        &|c| c.classes[0].ring_capacity = 1 << 21,
        "classes[0].ring_capacity",
    );
    check(&|c| c.bucket_width_ms = 60_001, "bucket_width_ms");
    check(
        &|c| {
            for x in &mut c.classes {
                x.promote_after_ms = None;
            }
            c.max_wait_ms = 0;
        },
        "max_wait_ms",
    );
    check(&|c| c.queue_timeout_ms = Some(30_000), "queue_timeout_ms");
    check(&|c| c.shards = 1025, "shards");
    check(
        &|c| c.preemption.max_victims_per_step = 0,
        "preemption.max_victims_per_step",
    );
    check(&|c| c.engine.block_size = 4097, "engine.block_size");
    check(&|c| c.engine.max_model_len = 0, "engine.max_model_len");
    check(&|c| c.engine.watermark = f64::NAN, "engine.watermark");
    check(&|c| c.engine.watermark = -0.1, "engine.watermark");
    check(&|c| c.engine.watermark = 0.5, "engine.watermark");
    // The other side of each range above, and the rules checked nowhere else (these came
    // from the older test in bad_input.rs).
    check(&|c| c.classes.clear(), "classes");
    check(
        &|c| c.classes[1].vllm_priority = [0, 3], // overlaps HIGH's [0, 0]
        "classes[1].vllm_priority",
    );
    check(
        &|c| c.classes[2].vllm_priority = [5, 1], // low > high
        "classes[2].vllm_priority",
    );
    check(
        &|c| c.classes[0].promote_after_ms = Some(5), // the top class cannot promote
        "classes[0].promote_after_ms",
    );
    check(
        &|c| c.classes[2].promote_after_ms = Some(45_000), // not below MEDIUM's threshold
        "classes[2].promote_after_ms",
    );
    check(
        &|c| c.classes[1].ring_capacity = 1000, // not a power of two
        "classes[1].ring_capacity",
    );
    check(
        &|c| c.classes[1].queue_capacity = 0,
        "classes[1].queue_capacity",
    );
    check(&|c| c.max_wait_ms = 30_000, "max_wait_ms"); // below the aging thresholds
    check(&|c| c.bucket_width_ms = 0, "bucket_width_ms");
    check(
        &|c| c.preemption.min_class_gap = 0,
        "preemption.min_class_gap",
    );
    check(&|c| c.engine.block_size = 0, "engine.block_size");
    check(&|c| c.engine.total_blocks = 0, "engine.total_blocks");
    // Preemption off needs no victims.
    let mut c = base.clone();
    c.preemption.enabled = false;
    c.preemption.max_victims_per_step = 0;
    assert!(c.validate().is_ok());
}

#[test]
fn drain_waiting_twice_and_on_an_empty_scheduler_is_harmless() {
    let mut h = Harness::new(no_aging());
    assert!(h.sched.drain_waiting(h.clock.now()).is_empty());
    assert!(h.sched.drain_waiting(h.clock.now()).is_empty());
    assert_eq!(
        h.api.submit(RequestSpec::new(1, Class::LOW, 16, 4)),
        Err(SubmitError::Closed)
    );
    let c = h.sched.conservation();
    assert!(c.is_balanced() && c.refused == 1, "{c}");
}
