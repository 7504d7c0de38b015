//! Cancel and reprioritize, while queued, in flight and running: exactly one effect.

mod common;
use common::*;
use triage::*;

#[test]
fn cancel_while_in_the_ring_ends_at_drain() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    assert_eq!(h.api.cancel(h.handle(1)), Ok(CancelOutcome::WasWaiting));
    assert_eq!(
        h.api.cancel(h.handle(1)),
        Err(ControlError::AlreadyCancelled(h.handle(1)))
    );
    let d = h.step(budget(8, 4096, 7000));
    assert!(d.admitted.is_empty());
    assert_eq!(d.cancelled, vec![RequestId(1)]);
    assert_eq!(h.sched.conservation().cancelled, 1);
    assert_eq!(
        h.api.cancel(h.handle(1)),
        Err(ControlError::NotFound(h.handle(1)))
    );
}

#[test]
fn cancel_while_waiting_removes_it_at_the_next_step() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    h.submit(2, Class::LOW, 16, 4);
    h.step(budget(0, 4096, 7000));
    assert_eq!(h.sched.waiting(), 2);
    assert_eq!(h.api.cancel(h.handle(1)), Ok(CancelOutcome::WasWaiting));
    let d = h.step(budget(8, 4096, 7000));
    assert_eq!(d.cancelled, vec![RequestId(1)]);
    assert_eq!(ids(&d.admitted), vec![2]);
}

#[test]
fn cancel_while_running_aborts_once() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    let d = h.step(budget(8, 4096, 7000));
    h.prefill(&d.admitted[0]);
    assert_eq!(h.api.cancel(h.handle(1)), Ok(CancelOutcome::WasRunning));
    let d = h.step(budget(8, 4096, 7000));
    assert_eq!(d.aborted, vec![RequestId(1)]);
    assert!(d.scheduled.is_empty());
    assert_eq!(
        h.sched.on_progress(h.handle(1), h.clock.now(), 1, 1),
        Err(ProgressError::NotRunning(h.handle(1)))
    );
    let c = h.sched.conservation();
    assert_eq!((c.cancelled, c.finished, c.running), (1, 0, 0));
}

#[test]
fn finish_after_an_acknowledged_cancel_counts_as_cancelled() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    let d = h.step(budget(8, 4096, 7000));
    h.prefill(&d.admitted[0]);
    h.api.cancel(h.handle(1)).unwrap();
    let outcome = h
        .sched
        .on_finished(h.handle(1), h.clock.now(), FinishReason::Stop)
        .unwrap();
    assert_eq!(outcome, Outcome::Cancelled);
    let d = h.step(budget(8, 4096, 7000));
    assert!(d.aborted.is_empty(), "already ended: no second effect");
    assert_eq!(h.sched.conservation().cancelled, 1);
    assert_eq!(h.sched.conservation().finished, 0);
}

#[test]
fn reprioritize_while_waiting_moves_it_keeping_its_arrival() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    h.advance(ms(5));
    h.submit(2, Class::LOW, 16, 4);
    h.advance(ms(5));
    h.submit(3, Class::HIGH, 16, 4);
    h.step(budget(0, 4096, 7000));
    h.api.reprioritize(h.handle(2), Class::HIGH).unwrap();
    let d = h.step(budget(2, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![2, 3], "older than HIGH 3 by arrival");
    assert_eq!(h.sched.class_counters(Class::HIGH).reprioritized_in, 1);
    assert_eq!(h.sched.class_counters(Class::LOW).reprioritized_out, 1);
}

#[test]
fn reprioritize_in_flight_applies_at_drain_and_last_call_wins() {
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::LOW, 16, 4);
    h.submit(2, Class::MEDIUM, 16, 4);
    h.api.reprioritize(h.handle(1), Class::MEDIUM).unwrap();
    h.api.reprioritize(h.handle(1), Class::HIGH).unwrap();
    let d = h.step(budget(1, 4096, 7000));
    assert_eq!(ids(&d.admitted), vec![1]);
    assert_eq!(d.admitted[0].class, Class::HIGH);
}

#[test]
fn reprioritize_while_running_changes_victim_choice() {
    let mut cfg = no_aging();
    cfg.engine.total_blocks = 40;
    cfg.engine.watermark = 0.0;
    let mut h = Harness::new(cfg);
    h.submit(1, Class::LOW, 320, 50);
    let d = h.step(budget(8, 4096, 40));
    h.prefill(&d.admitted[0]);
    h.submit(2, Class::LOW, 320, 50);
    let d = h.step(budget(8, 4096, 21)); // 1 block for 1's first decode, 20 for 2
    h.prefill(&d.admitted[0]);
    // 2 is the newest LOW, but promoted to HIGH it is no longer the victim.
    h.api.reprioritize(h.handle(2), Class::HIGH).unwrap();
    h.submit(3, Class::MEDIUM, 320, 50);
    let d = h.step(budget(8, 4096, 0));
    assert_eq!(
        d.preempted.iter().map(|p| p.id.0).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(ids(&d.admitted), vec![3]);
}

#[test]
fn cancel_racing_admission_in_one_step_has_one_winner() {
    // The cancel lands between drain and admission of the same step is impossible to
    // arrange from one thread; instead cancel before the step and check admission skips it
    // even when the notice is processed after the drain put it in the queue.
    let mut h = Harness::new(no_aging());
    h.submit(1, Class::HIGH, 16, 4);
    h.step(budget(0, 4096, 7000));
    h.api.cancel(h.handle(1)).unwrap();
    let d = h.step(budget(8, 4096, 7000));
    assert!(d.admitted.is_empty());
    assert_eq!(d.cancelled, vec![RequestId(1)]);
}
