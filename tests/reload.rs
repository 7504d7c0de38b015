//! Live reload: applied atomically at the next step boundary, never losing or reordering
//! queued requests; refused reloads change nothing.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use triage::*;

fn with_bulk(mut c: SchedulerConfig) -> SchedulerConfig {
    c.classes.push(ClassConfig {
        name: "BULK".into(),
        vllm_priority: [101, 200],
        promote_after_ms: Some(10_000),
        ring_capacity: 1024,
        queue_capacity: 1000,
        on_late: LateRule::Keep,
    });
    c.slo.classes.push(ClassSlo::default_for(3, 4));
    c
}

#[test]
fn new_thresholds_take_effect_at_the_next_step() {
    // Aging thresholds are the ladder's.
    let ladder = SchedulerConfig {
        order: QueueOrder::Ladder,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::new(ladder.clone()); // LOW -> MEDIUM at 20 s
    h.submit(1, Class::LOW, 16, 4);
    h.advance(ms(15_000));
    h.step(budget(0, 4096, 7000));
    assert_eq!(h.sched.waiting_in(Class::LOW), 1);
    let mut faster = ladder;
    faster.classes[2].promote_after_ms = Some(10_000);
    h.sched.reload(faster.clone()).unwrap();
    assert_eq!(
        h.sched.waiting_in(Class::LOW),
        1,
        "nothing changes before the step"
    );
    let d = h.step(budget(0, 4096, 7000));
    let report = d.reload.expect("this step applied the reload").unwrap();
    assert_eq!(report.epoch, 1);
    assert_eq!(report.requeued, 1);
    assert_eq!(
        h.sched.waiting_in(Class::MEDIUM),
        1,
        "15 s old is past the new 10 s rung"
    );
    assert_eq!(h.sched.config(), &faster);
    assert_eq!(h.sched.config_epoch(), 1);
    assert_eq!(h.sched.reload_counts(), (1, 0));
}

#[test]
fn removing_a_class_that_holds_requests_is_refused_and_changes_nothing() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::MEDIUM, 16, 4);
    h.submit(2, Class::LOW, 16, 4);
    h.step(budget(0, 4096, 7000));
    let handle = h.sched.config_handle();
    let mut two = no_aging();
    two.classes.remove(1);
    two.slo.classes.remove(1);
    handle.propose(two).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(
        d.reload,
        Some(Err(ReloadError::StrandsRequests {
            class: "MEDIUM".into(),
            waiting: 1,
            running: 0
        }))
    );
    assert_eq!(handle.last_result(), d.reload);
    assert_eq!(h.sched.config(), &no_aging());
    assert_eq!(h.sched.config_epoch(), 0);
    assert_eq!(h.sched.reload_counts(), (0, 1));
    assert_eq!(h.api.classes().len(), 3);
    let d = h.step(budget(2, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1, 2], "behaviour unchanged");
}

#[test]
fn invalid_and_restart_only_changes_are_refused() {
    let mut h = Harness::new(no_aging());
    let mut bad = no_aging();
    bad.max_wait_ms = 0;
    assert_eq!(h.sched.reload(bad).unwrap_err().field, "max_wait_ms");
    let mut shards = no_aging();
    shards.shards = 8;
    h.sched.reload(shards).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    assert!(
        matches!(d.reload, Some(Err(ReloadError::NeedsRestart { ref field, .. })) if field == "shards")
    );
    // The id index is built at start (it decides whether duplicate ids are refused).
    let index = SchedulerConfig {
        id_index: true,
        ..no_aging()
    };
    h.sched.reload(index).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    let e = d.reload.unwrap().unwrap_err();
    assert_eq!(
        e.to_string(),
        "`id_index` is fixed at start (false); changing it to true needs a restart"
    );
    assert_eq!(h.sched.config(), &no_aging());
    assert_eq!(h.sched.config_epoch(), 0);
    // `ring_capacity` bounds nothing any more (ingress queues are unbounded; the class's
    // `queue_capacity` bounds it), so a change is no longer a restart; it is still
    // validated.
    let mut one = no_aging();
    one.classes[1].ring_capacity = 1;
    assert_eq!(
        h.sched.reload(one).unwrap_err().field,
        "classes[1].ring_capacity"
    );
    let mut rings = no_aging();
    rings.classes[1].ring_capacity = 64;
    h.sched.reload(rings.clone()).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    assert!(matches!(d.reload, Some(Ok(_))), "{:?}", d.reload);
    assert_eq!(h.sched.config(), &rings);
}

#[test]
fn removing_an_empty_class_renumbers_the_rest_keeping_their_order() {
    let mut h = Harness::new(no_aging());
    for id in 0..6 {
        h.submit(
            id,
            if id % 2 == 0 { Class::LOW } else { Class::HIGH },
            16,
            4,
        );
        h.advance(ms(1));
    }
    h.step(budget(0, 4096, 7000));
    let mut two = no_aging();
    two.classes.remove(1); // MEDIUM is empty
    two.slo.classes.remove(1);
    h.sched.reload(two).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    let r = d.reload.unwrap().unwrap();
    assert_eq!(r.classes_removed, vec!["MEDIUM".to_string()]);
    let low = h.api.classes().parse_name("LOW").unwrap();
    assert_eq!(low.index(), 1);
    assert!(h.api.classes().parse_name("MEDIUM").is_err());
    assert!(matches!(
        h.api
            .submit(RequestSpec::new(50, Class::from_index(2), 16, 4)),
        Err(SubmitError::Class(ClassError::UnknownIndex {
            index: 2,
            classes: 2
        }))
    ));
    h.submit(7, low, 16, 4);
    let d = h.step(budget(7, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1, 3, 5, 0, 2, 4, 7]);
    assert_eq!(d.admitted[3].class, low);
    assert!(h.sched.conservation().is_balanced());
}

#[test]
fn an_added_class_takes_requests_at_once() {
    let mut h = Harness::new(no_aging());
    h.sched.reload(with_bulk(no_aging())).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(
        d.reload.unwrap().unwrap().classes_added,
        vec!["BULK".to_string()]
    );
    let bulk = h.api.classes().parse_name("bulk").unwrap();
    assert_eq!(h.api.classes().from_vllm_priority(150), Ok(bulk));
    h.submit(1, bulk, 16, 4);
    h.submit(2, Class::LOW, 16, 4);
    let d = h.step(budget(2, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![2, 1]);
}

#[test]
fn reloads_under_concurrent_submit_and_step_load_keep_every_request() {
    let mut cfg = no_aging();
    cfg.shards = 4;
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(cfg.clone(), clock.clone()).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u64, 0u64);
                for i in 0..5_000u64 {
                    let class = Class::from_index((i % 3) as u8);
                    match api.submit(RequestSpec::new(t * 1_000_000 + i, class, 8, 2)) {
                        Ok(_) => ok += 1,
                        Err(SubmitError::QueueFull { .. }) => refused += 1,
                        Err(e) => panic!("unexpected refusal {e}"),
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    // Deadline order (the default), with a fourth class, and the ladder with fast aging: the
    // reloads switch the order back and forth under load.
    let configs = [cfg.clone(), with_bulk(cfg.clone()), {
        let mut c = with_bulk(cfg.clone());
        c.order = QueueOrder::Ladder;
        c.classes[3].promote_after_ms = Some(2);
        c.classes[2].promote_after_ms = Some(5);
        c.classes[1].promote_after_ms = Some(50);
        c.max_wait_ms = 100;
        c
    }];
    let handle = sched.config_handle();
    let (mut finished, mut applied, mut steps) = (0u64, 0u64, 0u64);
    let mut d = Decision::default();
    loop {
        if steps % 7 == 0 {
            handle
                .propose(configs[(steps / 7) as usize % configs.len()].clone())
                .unwrap();
        }
        clock.advance(ms(1));
        let now = clock.now();
        sched
            .step_into(now, &budget(64, 4096, 7000), &mut d)
            .unwrap();
        steps += 1;
        if let Some(r) = &d.reload {
            applied += u64::from(r.is_ok());
        }
        for a in d.admitted.clone() {
            sched
                .on_progress(a.handle, now, a.prefill_target, 1)
                .unwrap();
            sched
                .on_finished(a.handle, now, FinishReason::Stop)
                .unwrap();
            finished += 1;
        }
        sched.check_invariants().unwrap();
        let c = sched.conservation();
        assert!(c.is_balanced(), "{c}");
        if done.load(Ordering::Acquire) && c.in_ingress == 0 && c.waiting == 0 {
            break;
        }
        if producers.iter().all(|p| p.is_finished()) {
            done.store(true, Ordering::Release);
        }
    }
    let (mut ok, mut refused) = (0, 0);
    for p in producers {
        let (o, r) = p.join().unwrap();
        ok += o;
        refused += r;
    }
    let c = sched.conservation();
    assert_eq!(c.submitted, 20_000);
    assert_eq!(c.refused, refused);
    assert_eq!(finished, ok, "every accepted request ran exactly once: {c}");
    assert!(
        applied >= 3,
        "reloads were applied while the load ran ({applied})"
    );
}

/// A reload may switch the order either way. Every waiting request is queued again under
/// the new order: a request relegated in deadline order waits in its class in the ladder
/// (which has no relegation), and after a switch back it is judged again when it comes up.
#[test]
fn switching_the_order_by_reload_requeues_relegated_requests() {
    // Deadline order with HIGH's late requests relegated (the default serves them).
    let deadline = || {
        let mut cfg = no_aging();
        cfg.classes[0].on_late = LateRule::Keep;
        cfg
    };
    let ladder = SchedulerConfig {
        order: QueueOrder::Ladder,
        ..deadline()
    };
    let mut h = Harness::new(deadline());
    h.submit(1, Class::HIGH, 16, 4);
    h.submit(2, Class::MEDIUM, 16, 4);
    h.advance(ms(600)); // HIGH 1 is past its 500 ms TTFT bound
    h.submit(3, Class::HIGH, 16, 4);
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![3], "HIGH 1 relegated, HIGH 3 live");
    assert_eq!(h.sched.relegated_in(Class::HIGH), 1);

    // To the ladder: HIGH 1 goes before MEDIUM 2 again (deadline order would start the
    // live MEDIUM 2 before the relegated HIGH 1).
    h.sched.reload(ladder).unwrap();
    let d = h.step(budget(2, 4096, 7000));
    assert!(matches!(d.reload, Some(Ok(_))), "{:?}", d.reload);
    assert_eq!(h.sched.relegated_in(Class::HIGH), 0);
    assert_eq!(ids(&d.admitted), vec![1]);
    assert!(!d.admitted[0].relegated);

    // Back to deadline order at 2.5 s: MEDIUM 2 (2 s TTFT bound) is judged when it comes
    // up and relegated; a fresh MEDIUM 4 starts instead.
    h.clock.set(Timestamp::from_millis(2_500));
    h.submit(4, Class::MEDIUM, 16, 4);
    h.sched.reload(deadline()).unwrap();
    let d = h.step(budget(3, 4096, 7000));
    assert!(matches!(d.reload, Some(Ok(_))), "{:?}", d.reload);
    assert_eq!(ids(&d.admitted), vec![4]);
    assert_eq!(h.sched.relegated_in(Class::MEDIUM), 1);
    assert_eq!(h.sched.class_counters(Class::MEDIUM).relegated, 1);
    // The relegated request still starts once the engine has room.
    let d = h.step(budget(4, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![2]);
    assert!(d.admitted[0].relegated);
}
