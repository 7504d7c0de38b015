//! Every bad input gets a typed error naming what is wrong, and changes nothing else.

mod common;
use common::*;
use triage::*;

#[test]
fn submit_refusals_are_typed_and_counted() {
    let mut cfg = no_aging();
    cfg.engine.total_blocks = 100; // 99 usable with the 1% watermark
    cfg.engine.max_model_len = 4096;
    let mut h = Harness::new(cfg);
    let submit = |spec| h.api.submit(spec);
    assert_eq!(
        submit(RequestSpec::new(1, Class::from_index(3), 16, 4)),
        Err(SubmitError::Class(ClassError::UnknownIndex {
            index: 3,
            classes: 3
        }))
    );
    assert_eq!(
        submit(RequestSpec::new(1, Class::LOW, 0, 4)),
        Err(SubmitError::ZeroPromptTokens(RequestId(1)))
    );
    assert_eq!(
        submit(RequestSpec::new(1, Class::LOW, 16, 0)),
        Err(SubmitError::ZeroMaxNewTokens(RequestId(1)))
    );
    assert_eq!(
        submit(RequestSpec::new(1, Class::LOW, 4000, 100)),
        Err(SubmitError::ExceedsContext {
            id: RequestId(1),
            tokens: 4100,
            max_model_len: 4096
        })
    );
    assert_eq!(
        submit(RequestSpec::new(1, Class::LOW, u32::MAX, u32::MAX)),
        Err(SubmitError::ExceedsContext {
            id: RequestId(1),
            tokens: 2 * u64::from(u32::MAX),
            max_model_len: 4096
        })
    );
    assert_eq!(
        submit(RequestSpec::new(1, Class::LOW, 1600, 1)),
        Err(SubmitError::NeverFits {
            id: RequestId(1),
            blocks_needed: 101,
            blocks_available: 99
        })
    );
    submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
    assert_eq!(
        submit(RequestSpec::new(1, Class::HIGH, 16, 4)),
        Err(SubmitError::DuplicateId(RequestId(1)))
    );
    let c = h.sched.conservation();
    assert_eq!((c.submitted, c.refused), (8, 7));
    h.step(budget(8, 4096, 100));
    assert_eq!(h.sched.waiting() + h.sched.running(), 1);
    assert_eq!(h.sched.class_counters(Class::LOW).refused, 5);
}

#[test]
fn errors_read_well() {
    let e = SubmitError::QueueFull {
        class: "LOW".into(),
        capacity: 4,
    };
    assert_eq!(e.to_string(), "queue full for class LOW (capacity 4)");
    let classes = SchedulerConfig::default().class_set();
    let e = classes.parse_name("urgent").unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown class \"urgent\"; known classes: HIGH, MEDIUM, LOW"
    );
    let e = classes.from_vllm_priority(1000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "priority 1000 is in no class's range; ranges: HIGH=[0, 0] MEDIUM=[1, 9] LOW=[10, 100]"
    );
}

#[test]
fn class_parsing_from_api_metadata() {
    let classes = SchedulerConfig::default().class_set();
    assert_eq!(classes.parse_name("Low"), Ok(Class::LOW));
    assert_eq!(classes.parse_name("MEDIUM"), Ok(Class::MEDIUM));
    assert_eq!(classes.from_vllm_priority(0), Ok(Class::HIGH));
    assert_eq!(classes.from_vllm_priority(9), Ok(Class::MEDIUM));
    assert_eq!(classes.from_vllm_priority(10), Ok(Class::LOW));
    assert!(matches!(
        classes.from_vllm_priority(-5),
        Err(ClassError::PriorityOutOfRange { priority: -5, .. })
    ));
    assert!(matches!(
        classes.parse_name(""),
        Err(ClassError::UnknownName { .. })
    ));
}

#[test]
fn full_ring_is_an_immediate_queue_full_naming_the_class() {
    let mut cfg = no_aging();
    cfg.shards = 1;
    cfg.classes[2].ring_capacity = 4;
    let h = Harness::new(cfg);
    for id in 0..4 {
        h.submit(id, Class::LOW, 16, 4);
    }
    assert_eq!(
        h.api.submit(RequestSpec::new(9, Class::LOW, 16, 4)),
        Err(SubmitError::QueueFull {
            class: "LOW".into(),
            capacity: 4
        })
    );
    // Other classes have their own rings; the refused id is free again.
    h.submit(9, Class::HIGH, 16, 4);
}

#[test]
fn queue_capacity_refuses_past_it_after_a_step_publishes_the_depth() {
    let mut cfg = no_aging();
    cfg.classes[1].queue_capacity = 3;
    let mut h = Harness::new(cfg);
    for id in 0..3 {
        h.submit(id, Class::MEDIUM, 16, 4);
    }
    h.step(budget(0, 4096, 7000));
    assert!(matches!(
        h.api.submit(RequestSpec::new(5, Class::MEDIUM, 16, 4)),
        Err(SubmitError::QueueFull { .. })
    ));
    h.submit(6, Class::LOW, 16, 4);
}

#[test]
fn control_calls_on_unknown_requests_and_classes() {
    let h = Harness::new(no_aging());
    assert_eq!(
        h.api.cancel(RequestId(42)),
        Err(ControlError::NotFound(RequestId(42)))
    );
    assert_eq!(
        h.api.reprioritize(RequestId(42), Class::LOW),
        Err(ControlError::NotFound(RequestId(42)))
    );
    h.submit(1, Class::LOW, 16, 4);
    assert!(matches!(
        h.api.reprioritize(RequestId(1), Class::from_index(7)),
        Err(ControlError::Class(_))
    ));
}

#[test]
fn engine_callbacks_refuse_impossible_progress() {
    let mut h = Harness::new(no_aging());
    let now = h.clock.now();
    assert_eq!(
        h.sched.on_progress(RequestId(1), now, 1, 0),
        Err(ProgressError::NotRunning(RequestId(1)))
    );
    assert_eq!(
        h.sched.on_finished(RequestId(1), now, FinishReason::Stop),
        Err(ProgressError::NotRunning(RequestId(1)))
    );
    h.submit(1, Class::LOW, 100, 2);
    h.submit(2, Class::LOW, 100, 2);
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1]);
    assert_eq!(
        h.sched.on_progress(RequestId(2), now, 1, 0),
        Err(ProgressError::NotRunning(RequestId(2))),
        "waiting is not running"
    );
    assert!(matches!(
        h.sched.on_progress(RequestId(1), now, 101, 0),
        Err(ProgressError::PrefillOverrun { .. })
    ));
    assert!(
        matches!(
            h.sched.on_progress(RequestId(1), now, 50, 1),
            Err(ProgressError::OutputOverrun { .. })
        ),
        "output before prefill done"
    );
    h.sched.on_progress(RequestId(1), now, 100, 1).unwrap();
    h.sched.on_progress(RequestId(1), now, 1, 1).unwrap();
    assert!(matches!(
        h.sched.on_progress(RequestId(1), now, 1, 1),
        Err(ProgressError::OutputOverrun { generated: 3, .. })
    ));
    assert_eq!(h.sched.first_token_at(RequestId(1)), Some(now));
    h.advance(ms(5));
    h.sched
        .on_progress(RequestId(1), h.clock.now(), 0, 0)
        .unwrap();
    assert_eq!(
        h.sched.on_progress(RequestId(1), now, 0, 0),
        Err(ProgressError::TimeWentBackwards(RequestId(1)))
    );
    h.sched.check_invariants().unwrap();
}

#[test]
fn bad_budgets_are_refused_without_effect() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    assert_eq!(
        h.sched.step(h.clock.now(), &budget(8, 4096, 7451)),
        Err(BudgetError::FreeBlocksExceedTotal {
            free: 7451,
            total: 7450
        })
    );
    h.advance(ms(10));
    h.step(budget(0, 4096, 7000));
    assert!(matches!(
        h.sched.step(Timestamp::ZERO, &budget(8, 4096, 7000)),
        Err(BudgetError::TimeWentBackwards { .. })
    ));
    assert_eq!(h.sched.waiting(), 1, "refused steps changed nothing");
}
