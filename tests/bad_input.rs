//! Every bad input gets a typed error naming what is wrong, and changes nothing else.

mod common;
use common::*;
use triage::*;

#[test]
fn submit_refusals_are_typed_and_counted() {
    let mut cfg = no_aging();
    cfg.engine.total_blocks = 100; // 99 usable with the 1% watermark
    cfg.engine.max_model_len = 4096;
    cfg.id_index = true; // duplicate ids are refused only with the id index
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

/// Without the id index (the default), ids are the engine's business: a second request
/// with an id still held is accepted, and each is named by its own handle.
#[test]
fn duplicate_ids_are_accepted_without_the_id_index() {
    let mut h = Harness::new(no_aging());
    let first = h
        .api
        .submit(RequestSpec::new(1, Class::LOW, 16, 4))
        .unwrap();
    let second = h
        .api
        .submit(RequestSpec::new(1, Class::HIGH, 16, 4))
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(h.api.lookup(RequestId(1)), Err(ControlError::NoIdIndex));
    let d = h.step(budget(8, 4096, 7000));
    let admitted: Vec<_> = d.admitted.iter().map(|a| (a.id, a.handle)).collect();
    assert_eq!(admitted, [(RequestId(1), second), (RequestId(1), first)]);
    let c = h.sched.conservation();
    assert_eq!((c.submitted, c.refused, c.running), (2, 0, 2), "{c}");
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

/// A class's `queue_capacity` bounds the requests submitted since the last step as well
/// as those waiting: the submit past it is refused at once, naming the class and its
/// capacity, before any step (the ring size bounds nothing: the smallest accepted here).
#[test]
fn full_class_queue_is_an_immediate_queue_full_naming_the_class() {
    let mut cfg = no_aging();
    cfg.shards = 1;
    cfg.id_index = true; // so that the refused id can be seen to be free again
    for class in &mut cfg.classes {
        class.ring_capacity = ClassConfig::MIN_RING_CAPACITY;
    }
    cfg.classes[2].queue_capacity = 4;
    let mut h = Harness::new(cfg);
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
    // Other classes have their own capacity; the refused id is free again.
    h.submit(9, Class::HIGH, 16, 4);
    assert_eq!(h.api.lookup(RequestId(9)), Ok(h.handle(9)));
}

#[test]
fn queue_capacity_refuses_past_it_after_a_step_publishes_the_depth() {
    let mut cfg = no_aging();
    cfg.classes[1].queue_capacity = 3;
    let mut h = Harness::new(cfg);
    for id in 0..3 {
        h.submit(id, Class::MEDIUM, 16, 4);
    }
    let full = Err(SubmitError::QueueFull {
        class: "MEDIUM".into(),
        capacity: 3,
    });
    // Submitted since the last step: they count before any step.
    assert_eq!(
        h.api.submit(RequestSpec::new(4, Class::MEDIUM, 16, 4)),
        full
    );
    // Waiting as of the last step: they still count.
    h.step(budget(0, 4096, 7000));
    assert_eq!(
        h.api.submit(RequestSpec::new(5, Class::MEDIUM, 16, 4)),
        full
    );
    h.submit(6, Class::LOW, 16, 4);
    // An admission frees its place for later submits, one and no more.
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![0]);
    h.submit(7, Class::MEDIUM, 16, 4);
    assert_eq!(
        h.api.submit(RequestSpec::new(8, Class::MEDIUM, 16, 4)),
        full
    );
}

#[test]
fn control_calls_on_unknown_requests_and_classes() {
    let mut h = Harness::new(no_aging());
    let [unknown, _] = foreign_handles();
    assert_eq!(h.api.cancel(unknown), Err(ControlError::NotFound(unknown)));
    assert_eq!(
        h.api.reprioritize(unknown, Class::LOW),
        Err(ControlError::NotFound(unknown))
    );
    let one = h.submit(1, Class::LOW, 16, 4);
    assert!(matches!(
        h.api.reprioritize(one, Class::from_index(7)),
        Err(ControlError::Class(_))
    ));
    // A handle goes stale when its request ends.
    assert_eq!(h.api.cancel(one), Ok(CancelOutcome::WasWaiting));
    h.step(budget(8, 4096, 7000));
    assert_eq!(h.api.cancel(one), Err(ControlError::NotFound(one)));
    assert_eq!(
        h.api.reprioritize(one, Class::HIGH),
        Err(ControlError::NotFound(one))
    );
    // Look-up by id needs the id index.
    assert_eq!(h.api.lookup(RequestId(1)), Err(ControlError::NoIdIndex));
}

#[test]
fn engine_callbacks_refuse_impossible_progress() {
    let mut h = Harness::new(no_aging());
    let now = h.clock.now();
    let [unknown, _] = foreign_handles();
    assert_eq!(
        h.sched.on_progress(unknown, now, 1, 0),
        Err(ProgressError::NotRunning(unknown))
    );
    assert_eq!(
        h.sched.on_finished(unknown, now, FinishReason::Stop),
        Err(ProgressError::NotRunning(unknown))
    );
    let one = h.submit(1, Class::LOW, 100, 2);
    let two = h.submit(2, Class::LOW, 100, 2);
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1]);
    assert_eq!(d.admitted[0].handle, one);
    assert_eq!(
        h.sched.on_progress(two, now, 1, 0),
        Err(ProgressError::NotRunning(two)),
        "waiting is not running"
    );
    assert!(matches!(
        h.sched.on_progress(one, now, 101, 0),
        Err(ProgressError::PrefillOverrun { .. })
    ));
    assert!(
        matches!(
            h.sched.on_progress(one, now, 50, 1),
            Err(ProgressError::OutputOverrun { .. })
        ),
        "output before prefill done"
    );
    h.sched.on_progress(one, now, 100, 1).unwrap();
    h.sched.on_progress(one, now, 1, 1).unwrap();
    assert!(matches!(
        h.sched.on_progress(one, now, 1, 1),
        Err(ProgressError::OutputOverrun { generated: 3, .. })
    ));
    assert_eq!(h.sched.first_token_at(one), Some(now));
    h.advance(ms(5));
    h.sched.on_progress(one, h.clock.now(), 0, 0).unwrap();
    assert_eq!(
        h.sched.on_progress(one, now, 0, 0),
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
