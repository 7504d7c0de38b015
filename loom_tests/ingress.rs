//! Loom models of the whole ingress path through the public API: `Submitter` calls on one
//! thread racing the scheduler's step on another, with the smallest rings the configuration
//! accepts (two slots).
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
        class.ring_capacity = ClassConfig::MIN_RING_CAPACITY;
    }
    c
}

/// The models' counts are written for two-slot rings, the smallest accepted.
#[test]
fn the_models_use_the_smallest_accepted_ring() {
    assert_eq!(ClassConfig::MIN_RING_CAPACITY, 2);
    assert!(config().classes.iter().all(|c| c.ring_capacity == 2));
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
        api.submit(RequestSpec::new(1, Class::HIGH, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.cancel(RequestId(1)));
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
        api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.reprioritize(RequestId(1), Class::HIGH));
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

/// A submit racing the hand-off on a two-slot ring that has wrapped: one request already
/// drained by a step, one waiting in the ring, and the racing submit claims the position
/// that maps back to the first slot. It is handed off with the others or refused with
/// `Closed`, and nothing is left in ingress (`check_invariants` checks the rings).
#[test]
fn submit_racing_the_hand_off_of_a_wrapped_ring() {
    model(|| {
        let (mut sched, api, clock) = new();
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        sched.step(clock.now(), &no_room).unwrap();
        api.submit(RequestSpec::new(2, Class::LOW, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.submit(RequestSpec::new(3, Class::LOW, 16, 4)));
        let handed = sched.drain_waiting(clock.now());
        let accepted = match t.join().unwrap() {
            Ok(_) => 3,
            Err(SubmitError::Closed) => 2,
            Err(e) => panic!("unexpected {e}"),
        };
        assert_eq!(
            handed.len(),
            accepted,
            "every accepted request is handed off"
        );
        let c = sched.conservation();
        assert_eq!((c.in_ingress, c.evicted), (0, accepted as u64));
        assert!(c.is_balanced());
        sched.check_invariants().unwrap();
    });
}

/// Two producers fill the shrunken ring while the scheduler drains: every accepted
/// request is drained once, and refusals are `QueueFull`.
#[test]
fn two_submitters_and_a_step() {
    model(|| {
        let (mut sched, api, clock) = new();
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
        assert_eq!(sched.waiting() as u64, mine + theirs);
        let c = sched.conservation();
        assert_eq!(c.submitted, 3);
        assert_eq!(c.refused, 3 - mine - theirs);
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
        api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        let (a, b) = (api.clone(), api.clone());
        let t1 = thread::spawn(move || a.cancel(RequestId(1)));
        let t2 = thread::spawn(move || b.reprioritize(RequestId(1), Class::HIGH));
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

/// The one piece of shared state the scheduler publishes to API threads: the waiting depth
/// per class, read by submit's queue-capacity check. A submit racing the step that
/// publishes it is either queued or refused with `QueueFull`, and counted either way.
#[test]
fn capacity_hint_racing_the_step_that_publishes_it() {
    model(|| {
        let clock = ManualClock::new(Timestamp::ZERO);
        let mut cfg = config();
        cfg.classes[2].queue_capacity = 1;
        let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
        api.submit(RequestSpec::new(1, Class::LOW, 16, 4)).unwrap();
        let api2 = api.clone();
        let t = thread::spawn(move || api2.submit(RequestSpec::new(2, Class::LOW, 16, 4)));
        let no_room = Budget {
            max_num_seqs: 0,
            ..budget()
        };
        sched.step(clock.now(), &no_room).unwrap();
        let r = t.join().unwrap();
        sched.step(clock.now(), &no_room).unwrap();
        match r {
            Ok(_) => assert_eq!(sched.waiting(), 2, "landed before the depth was published"),
            Err(SubmitError::QueueFull { .. }) => assert_eq!(sched.waiting(), 1),
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(sched.conservation().is_balanced());
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
