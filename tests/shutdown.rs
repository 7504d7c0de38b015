//! Close, hand-off of waiting requests, and an engine thread that panics.

mod common;
use common::*;
use triage::*;

#[test]
fn close_refuses_new_work_and_drain_hands_off_everything_waiting() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    h.advance(ms(3));
    h.submit(2, Class::HIGH, 16, 4);
    h.submit(3, Class::MEDIUM, 16, 4);
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![2]);
    h.submit(4, Class::LOW, 16, 4); // still in ingress at hand-off
    h.api.close();
    assert!(h.api.is_closed());
    assert_eq!(
        h.api.submit(RequestSpec::new(5, Class::HIGH, 16, 4)),
        Err(SubmitError::Closed)
    );
    let handed = h.sched.drain_waiting(h.clock.now());
    let got: Vec<(u64, Class, Timestamp)> = handed
        .iter()
        .map(|x| (x.spec.id.0, x.spec.class, x.arrival))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, Class::MEDIUM, Timestamp::from_millis(3)),
            (1, Class::LOW, Timestamp::ZERO),
            (4, Class::LOW, Timestamp::from_millis(3)),
        ]
    );
    let c = h.sched.conservation();
    assert_eq!((c.evicted, c.running, c.waiting, c.refused), (3, 1, 0, 1));
    assert!(c.is_balanced(), "{c}");
    // The running request still finishes normally.
    h.prefill(&d.admitted[0]);
    h.finish(RequestId(2));
    assert!(h.sched.conservation().is_balanced());
}

/// Found by the fuzz target (`fuzz/`, issue 15): with fairness on and the tenant limit
/// reached, a request still in ingress at the hand-off was refused for the limit into a
/// decision no one reads: accepted by `submit`, counted `refused`, and neither handed off
/// nor reported. A hand-off now takes it past the limit and hands it off.
#[test]
fn drain_waiting_hands_off_requests_past_the_tenant_limit() {
    let mut cfg = no_aging();
    cfg.fairness.enabled = true;
    cfg.fairness.max_tenants = 1;
    let mut h = Harness::new(cfg);
    let spec = |id, tenant| RequestSpec::new(id, Class::LOW, 16, 4).with_tenant(TenantId(tenant));
    h.api.submit(spec(1, 7)).unwrap();
    h.api.submit(spec(2, 8)).unwrap(); // a second tenant: one past the limit
    let handed = h.sched.drain_waiting(h.clock.now());
    let mut ids: Vec<u64> = handed.iter().map(|x| x.spec.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    let c = h.sched.conservation();
    assert_eq!(
        (c.evicted, c.refused, c.waiting, c.in_ingress),
        (2, 0, 0, 0),
        "{c}"
    );
    assert!(c.is_balanced(), "{c}");
    h.sched.check_invariants().unwrap();
    // A step, by contrast, refuses the second tenant and says so in its decision.
    let mut cfg = no_aging();
    cfg.fairness.enabled = true;
    cfg.fairness.max_tenants = 1;
    let mut h = Harness::new(cfg);
    h.api.submit(spec(1, 7)).unwrap();
    h.api.submit(spec(2, 8)).unwrap();
    let d = h.step(budget(0, 4096, 7000));
    assert_eq!(d.rejected.len(), 1);
    assert!(matches!(
        d.rejected[0].reason,
        RejectReason::TenantLimit { max_tenants: 1, .. }
    ));
}

#[test]
fn submits_racing_a_close_land_or_fail() {
    let mut h = Harness::new(no_aging());
    let api = h.api.clone();
    let accepted = std::thread::scope(|s| {
        let t = s.spawn(move || {
            let mut ok = Vec::new();
            for id in 0..2_000u64 {
                if api.submit(RequestSpec::new(id, Class::LOW, 16, 4)).is_ok() {
                    ok.push(id);
                }
            }
            ok
        });
        // Close at some point while the producer runs.
        while h.sched.conservation().submitted < 500 {
            std::hint::spin_loop();
        }
        let handed = h.sched.drain_waiting(h.clock.now());
        let ok = t.join().unwrap();
        (handed, ok)
    });
    let (handed, ok) = accepted;
    let mut handed: Vec<u64> = handed.iter().map(|x| x.spec.id.0).collect();
    handed.sort();
    // Anything still queued after drain_waiting was accepted after the close: impossible.
    let late = h.sched.step(h.clock.now(), &budget(0, 4096, 7000)).unwrap();
    assert_eq!(late.summary.drained, 0);
    assert_eq!(
        handed, ok,
        "every accepted submit was handed off; the rest were refused"
    );
    let c = h.sched.conservation();
    assert_eq!(c.submitted, 2_000);
    assert!(c.is_balanced(), "{c}");
}

#[test]
fn api_calls_fail_instead_of_hanging_when_the_engine_thread_panics() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (sched, api) = Scheduler::with_clock(no_aging(), clock).unwrap();
    api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
    let engine = std::thread::spawn(move || {
        let _owned = sched;
        panic!("engine failure mid-step");
    });
    assert!(engine.join().is_err());
    assert_eq!(
        api.submit(RequestSpec::new(2, Class::LOW, 16, 4)),
        Err(SubmitError::EngineGone)
    );
    assert!(api.is_closed());
}

#[test]
fn dropping_the_scheduler_closes_ingress() {
    let (sched, api) = Scheduler::new(no_aging()).unwrap();
    drop(sched);
    assert_eq!(
        api.submit(RequestSpec::new(2, Class::LOW, 16, 4)),
        Err(SubmitError::Closed)
    );
}
