//! Loom models of the whole ingress path through the public API: `Submitter` calls on one
//! thread racing the scheduler's step on another. Under loom the request table has chunks
//! of two slots, so the models also cross chunk boundaries and reuse freed slots.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_ingress`
#![cfg(loom)]

use loom::thread;
use triage::*;

fn config() -> SchedulerConfig {
    let mut c = SchedulerConfig::default();
    c.shards = 1;
    for class in &mut c.classes {
        class.promote_after_ms = None;
    }
    c
}

fn budget() -> Budget {
    Budget {
        max_num_seqs: 8,
        max_batched_tokens: 4096,
        free_blocks: 7000,
    }
}

/// Stack of the thread a model's body runs on. The scheduler's step needs more than the
/// small stack loom gives a model's main thread (its coroutine overflowed in deadline
/// order's plan).
const STACK: usize = 4 << 20;

/// `loom::model`, with the body on a thread of [`STACK`] bytes. The extra thread only
/// starts and joins the body: spawn and join order it as the model's start and end do.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let f = std::sync::Arc::new(f);
    loom::model(move || {
        let f = f.clone();
        thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || f())
            .expect("spawn the model's body")
            .join()
            .expect("the model's body");
    });
}

fn new() -> (Scheduler, Submitter, ManualClock) {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (s, api) = Scheduler::with_clock(config(), clock.clone()).unwrap();
    (s, api, clock)
}

/// Cancel racing the drain and the admission of the same request: exactly one effect.
#[test]
fn cancel_racing_drain_and_admission() {
    model(|| {
        let (mut sched, api, clock) = new();
        let h = api.submit(RequestSpec::new(1, Class::HIGH, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.cancel(h));
        let d1 = sched.step(clock.now(), &budget()).unwrap();
        let cancel = t
            .join()
            .unwrap()
            .expect("the request is live when cancelled");
        let d2 = sched.step(clock.now(), &budget()).unwrap();
        let admitted = d1.admitted.len() + d2.admitted.len();
        let cancelled = d1.cancelled.len() + d2.cancelled.len();
        let aborted = d1.aborted.len() + d2.aborted.len();
        match cancel {
            CancelOutcome::WasWaiting => assert_eq!((admitted, cancelled, aborted), (0, 1, 0)),
            CancelOutcome::WasRunning => assert_eq!((admitted, cancelled, aborted), (1, 0, 1)),
        }
        let c = sched.conservation();
        assert_eq!((c.cancelled, c.waiting, c.running), (1, 0, 0));
        assert!(c.is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// Reprioritize racing the drain: the request ends up in exactly one class queue, once,
/// and in the requested class.
#[test]
fn reprioritize_racing_drain() {
    model(|| {
        let (mut sched, api, clock) = new();
        let h = api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.reprioritize(h, Class::HIGH));
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        sched.step(clock.now(), &no_room).unwrap();
        t.join().unwrap().unwrap();
        sched.step(clock.now(), &no_room).unwrap();
        sched.check_invariants().unwrap();
        assert_eq!(sched.waiting(), 1);
        assert_eq!(sched.waiting_in(Class::HIGH), 1);
        assert_eq!(sched.waiting_in(Class::LOW), 0);
        let d = sched.step(clock.now(), &budget()).unwrap();
        assert_eq!(d.admitted.len(), 1);
        assert_eq!(d.admitted[0].class, Class::HIGH);
    });
}

/// Close (hand-off) racing a submit: the submit lands and is handed off, or fails with
/// `Closed`; nothing is stranded.
#[test]
fn close_racing_submit() {
    model(|| {
        let (mut sched, api, clock) = new();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.submit(RequestSpec::new(2, Class::LOW, 16, 4)));
        let handed = sched.drain_waiting(clock.now());
        let r = t.join().unwrap();
        match r {
            Ok(_) => assert_eq!(handed.len(), 1),
            Err(SubmitError::Closed) => assert!(handed.is_empty()),
            Err(e) => panic!("unexpected {e}"),
        }
        let d = sched.step(clock.now(), &budget()).unwrap();
        assert_eq!(d.summary.drained, 0, "nothing landed after the hand-off");
        assert!(sched.conservation().is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// A submit that reuses a freed slot racing the hand-off: two requests were cancelled and
/// their slots returned to producers at the step's end; one new request takes a freed slot
/// and waits in ingress, and the racing submit takes the other. It is handed off with the others or refused with `Closed`,
/// and nothing is left in ingress (`check_invariants` checks the queues).
#[test]
fn submit_reusing_a_freed_slot_racing_the_hand_off() {
    model(|| {
        let (mut sched, api, clock) = new();
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        let gone = [0, 1].map(|id| api.submit(RequestSpec::new(id, Class::LOW, 16, 4)).unwrap());
        for h in gone {
            api.cancel(h).unwrap();
        }
        sched.step(clock.now(), &no_room).unwrap();
        api.submit(RequestSpec::new(2, Class::LOW, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.submit(RequestSpec::new(3, Class::LOW, 16, 4)));
        let handed = sched.drain_waiting(clock.now());
        let accepted = match t.join().unwrap() {
            Ok(h) => {
                let old = gone.iter().find(|g| g.index() == h.index());
                assert!(old.is_some_and(|&g| g != h), "a freed slot, new generation");
                2
            }
            Err(SubmitError::Closed) => 1,
            Err(e) => panic!("unexpected {e}"),
        };
        assert_eq!(
            handed.len(),
            accepted,
            "every accepted request is handed off"
        );
        let c = sched.conservation();
        assert_eq!(
            (c.in_ingress, c.evicted, c.cancelled),
            (0, accepted as u64, 2)
        );
        assert!(c.is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// Two producers race for the last units of a class's queue capacity (2) while the
/// scheduler drains: exactly the capacity is accepted (never more, never fewer), every
/// accepted request is drained once, and the refusal is `QueueFull`.
#[test]
fn two_submitters_and_a_step() {
    model(|| {
        let clock = ManualClock::new(Timestamp::ZERO);
        let mut cfg = config();
        cfg.classes[2].queue_capacity = 2;
        let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || {
            (10..12)
                .map(|id| api2.submit(RequestSpec::new(id, Class::LOW, 16, 4)).is_ok() as u64)
                .sum::<u64>()
        });
        let mine = api.submit(RequestSpec::new(20, Class::LOW, 16, 4)).is_ok() as u64;
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        sched.step(clock.now(), &no_room).unwrap();
        let theirs = t.join().unwrap();
        sched.step(clock.now(), &no_room).unwrap();
        assert_eq!(mine + theirs, 2, "exactly the capacity is accepted");
        assert_eq!(sched.waiting() as u64, mine + theirs);
        let c = sched.conservation();
        assert_eq!(c.submitted, 3);
        assert_eq!(c.refused, 1);
        assert!(c.is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// Cancel and reprioritize of one request on two threads, racing the step that drains and
/// admits it: one terminal outcome, counted once; a class change never resurrects a
/// cancelled request.
#[test]
fn cancel_and_reprioritize_racing_a_step() {
    model(|| {
        let (mut sched, api, clock) = new();
        let h = api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        let (a, b) = (api.clone(), api.clone());
        let t1 = thread::spawn(move || a.cancel(h));
        let t2 = thread::spawn(move || b.reprioritize(h, Class::HIGH));
        let d1 = sched.step(clock.now(), &budget()).unwrap();
        let cancel = t1.join().unwrap();
        let _ = t2.join().unwrap(); // Ok, or refused because the cancel won
        let d2 = sched.step(clock.now(), &budget()).unwrap();
        assert!(
            cancel.is_ok(),
            "the first cancel of a live request succeeds"
        );
        let admitted = d1.admitted.len() + d2.admitted.len();
        let ended = d1.cancelled.len() + d2.cancelled.len() + d1.aborted.len() + d2.aborted.len();
        assert_eq!(ended, 1, "exactly one cancel effect");
        assert!(admitted <= 1);
        let c = sched.conservation();
        assert_eq!((c.cancelled, c.waiting, c.running), (1, 0, 0));
        assert!(c.is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// The capacity units a step settles: with `queue_capacity` 1 and one request held, a
/// submit races the step that admits that request and gives its unit back. The submit is
/// queued (it took the unit returned) or refused with `QueueFull` (it came first), and
/// counted either way; the class never holds more than its capacity.
#[test]
fn capacity_units_racing_the_step_that_returns_them() {
    model(|| {
        let clock = ManualClock::new(Timestamp::ZERO);
        let mut cfg = config();
        cfg.classes[2].queue_capacity = 1;
        let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
        api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.submit(RequestSpec::new(2, Class::LOW, 16, 4)));
        let one = Budget {
            max_num_seqs: 1,
            ..budget()
        };
        let d = sched.step(clock.now(), &one).unwrap();
        assert_eq!(d.admitted.len(), 1);
        let r = t.join().unwrap();
        sched.step(clock.now(), &one).unwrap();
        match r {
            Ok(_) => assert_eq!(sched.waiting(), 1, "queued in the unit the step returned"),
            Err(SubmitError::QueueFull { capacity: 1, .. }) => assert_eq!(sched.waiting(), 0),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(sched.conservation().is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// A cancel with a handle whose request finishes, and whose slot is then freed and reused by
/// a new submit, racing all of it: the cancel applies to the old request (its outcome is
/// `cancelled`) or answers `NotFound`; the new request in the same slot is never touched.
#[test]
fn stale_cancel_racing_finish_and_reuse() {
    model(|| {
        let (mut sched, api, clock) = new();
        let old = api.submit(RequestSpec::new(1, Class::HIGH, 16, 1)).unwrap();
        let d = sched.step(clock.now(), &budget()).unwrap();
        assert_eq!(d.admitted[0].handle, old);
        let api2 = api.clone();
        let t = thread::spawn(move || api2.cancel(old));
        sched.on_progress(old, clock.now(), 16, 1).unwrap();
        let first = sched
            .on_finished(old, clock.now(), FinishReason::Length)
            .unwrap();
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        sched.step(clock.now(), &no_room).unwrap(); // frees the slot to producers
        let new = api.submit(RequestSpec::new(2, Class::HIGH, 16, 1)).unwrap();
        assert_eq!(new.index(), old.index(), "the slot is reused");
        let cancel = t.join().unwrap();
        let d = sched.step(clock.now(), &no_room).unwrap();
        assert!(
            d.cancelled.is_empty() && d.aborted.is_empty(),
            "the new request is untouched"
        );
        match cancel {
            Ok(CancelOutcome::WasRunning) => assert_eq!(first, Outcome::Cancelled),
            Err(ControlError::NotFound(h)) => {
                assert_eq!(h, old);
                assert_eq!(first, Outcome::Finished);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(sched.waiting(), 1);
        assert!(sched.conservation().is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// A configuration reload that renumbers classes (MEDIUM removed, LOW moves from index 2
/// to 1) racing a submit checked against the old numbering: the request lands in LOW
/// under either order, or is refused as an unknown class if it was checked against the
/// new limits with the old index — never queued in the wrong class, never lost.
#[test]
fn reload_swap_racing_submit() {
    model(|| {
        let (mut sched, api, clock) = new();
        let mut two = config();
        two.classes.remove(1);
        two.slo.classes.remove(1);
        sched.reload(two).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.submit(RequestSpec::new(1, Class::LOW, 16, 4)));
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        let d = sched.step(clock.now(), &no_room).unwrap();
        assert!(matches!(d.reload, Some(Ok(_))));
        let r = t.join().unwrap();
        sched.step(clock.now(), &no_room).unwrap();
        let low = sched.classes().parse_name("LOW").unwrap();
        match r {
            Ok(_) => assert_eq!(sched.waiting_in(low), 1),
            Err(SubmitError::Class(_)) => assert_eq!(sched.waiting(), 0),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(sched.conservation().is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// A proposal from another thread (`ConfigHandle::propose`) racing the steps that take
/// it: applied by exactly one of two steps, never lost between the flag and the mutex
/// (the flag is Relaxed; the mutex orders the configuration).
#[test]
fn propose_racing_the_step_that_takes_it() {
    model(|| {
        let (mut sched, _api, clock) = new();
        let handle = sched.config_handle();
        let t = thread::spawn(move || {
            let mut next = config();
            next.max_wait_ms += 1;
            handle.propose(next)
        });
        let first = sched.step(clock.now(), &budget()).unwrap().reload;
        let proposed = t.join().unwrap();
        assert!(proposed.is_ok(), "{proposed:?}");
        let second = sched.step(clock.now(), &budget()).unwrap().reload;
        let applied = [&first, &second]
            .iter()
            .filter(|r| matches!(r, Some(Ok(_))))
            .count();
        assert_eq!(
            applied,
            1,
            "first {first:?}, second {second:?}, epoch {}, counts {:?}, last {:?}",
            sched.config_epoch(),
            sched.reload_counts(),
            sched.config_handle().last_result()
        );
        assert_eq!(sched.config().max_wait_ms, config().max_wait_ms + 1);
    });
}

/// A refusal racing a read of the counters: `conservation` never shows more refused than
/// submitted (submitted is counted as refused plus accepted, from one read of `refused`).
#[test]
fn a_refusal_racing_a_conservation_read() {
    model(|| {
        let (sched, api, _clock) = new();
        let t = thread::spawn(move || api.submit(RequestSpec::new(1, Class::LOW, 0, 4)));
        let c = sched.conservation();
        assert!(c.refused <= c.submitted, "{c}");
        assert!(matches!(
            t.join().unwrap(),
            Err(SubmitError::ZeroPromptTokens(_))
        ));
        let c = sched.conservation();
        assert_eq!((c.submitted, c.refused), (1, 1));
    });
}

/// An accepted submit racing a read of the counters: `conservation` counts it in ingress
/// or not at all, never half (submitted is its queue's push count, which the same read
/// turns into what the queue holds), and a step then drains it.
#[test]
fn an_accepted_submit_racing_a_conservation_read() {
    model(|| {
        let (mut sched, api, clock) = new();
        let t = thread::spawn(move || api.submit(RequestSpec::new(1, Class::LOW, 4, 4)));
        let c = sched.conservation();
        assert!(c.is_balanced(), "{c}");
        assert!(c.submitted == c.in_ingress && c.submitted <= 1, "{c}");
        t.join().unwrap().unwrap();
        let c = sched.conservation();
        assert_eq!((c.submitted, c.in_ingress), (1, 1));
        let room = Budget {
            max_num_seqs: 0,
            max_batched_tokens: 0,
            free_blocks: 0,
        };
        sched.step(clock.now(), &room).unwrap();
        let c = sched.conservation();
        assert_eq!((c.submitted, c.in_ingress, c.waiting), (1, 0, 1));
    });
}
