//! Bursts and the class bound: contract point 11 (ingress), with point 9 (nothing is lost).
//! Ingress queues are unbounded; each class is bounded exactly by its `queue_capacity`,
//! counting the requests waiting in it (by base class, as of the last step) plus those
//! submitted to it since. Any burst up to `queue_capacity` is accepted; one more is
//! `QueueFull` naming the class and its capacity; every accepted request reaches the wait
//! queue.
//!
//! A `ring_capacity` below two is a configuration error (the field bounds nothing, but stays
//! validated), and the hand-off racing API threads is checked at the smallest capacities.

use triage::*;

/// One shard, every class's `ring_capacity` at `ring` and `queue_capacity` at `queue`.
fn config(ring: usize, queue: usize) -> SchedulerConfig {
    let mut cfg = SchedulerConfig {
        shards: 1,
        ..SchedulerConfig::default()
    };
    for class in &mut cfg.classes {
        class.ring_capacity = ring;
        class.queue_capacity = queue;
    }
    cfg
}

fn room() -> Budget {
    Budget {
        max_num_seqs: 64,
        max_batched_tokens: 8192,
        free_blocks: 7000,
    }
}

fn no_room() -> Budget {
    Budget {
        max_num_seqs: 0,
        ..room()
    }
}

fn seats(n: u32) -> Budget {
    Budget {
        max_num_seqs: n,
        ..room()
    }
}

fn high(id: u64) -> RequestSpec {
    RequestSpec::new(id, Class::HIGH, 10, 10)
}

fn full(class: &str, capacity: usize) -> Result<RequestHandle, SubmitError> {
    Err(SubmitError::QueueFull {
        class: class.into(),
        capacity,
    })
}

fn balanced(sched: &Scheduler) -> Conservation {
    sched.check_invariants().unwrap();
    let c = sched.conservation();
    assert!(c.is_balanced(), "{c}");
    c
}

#[test]
fn a_ring_capacity_below_two_is_refused() {
    assert_eq!(ClassConfig::MIN_RING_CAPACITY, 2);
    for ring in [0, 1] {
        let e = Scheduler::with_clock(config(ring, 16), ManualClock::default())
            .expect_err("a ring capacity below two is a configuration error");
        assert_eq!(e.field, "classes[0].ring_capacity", "{e}");
        assert_eq!(e.expected, "a power of two from 2 to 1048576", "{e}");
        assert_eq!(e.found, ring.to_string());
    }
    // A later class is named as such, and a reload to it is refused the same way.
    let mut one = SchedulerConfig::default();
    one.classes[2].ring_capacity = 1;
    assert_eq!(
        one.validate().unwrap_err().field,
        "classes[2].ring_capacity"
    );
    let (mut sched, _api) =
        Scheduler::with_clock(SchedulerConfig::default(), ManualClock::default()).unwrap();
    let e = sched.reload(one).unwrap_err();
    assert_eq!(e.field, "classes[2].ring_capacity");
    // From TOML, with the line of the key.
    let text = "shards = 1\n\n[[classes]]\nname = \"HIGH\"\nvllm_priority = [0, 0]\nring_capacity = 1\n\n[[classes]]\nname = \"MEDIUM\"\nvllm_priority = [1, 9]\n\n[[classes]]\nname = \"LOW\"\nvllm_priority = [10, 100]\n";
    let e = SchedulerConfig::from_toml_str(text).unwrap_err();
    assert_eq!(e.field, "classes[0].ring_capacity");
    assert_eq!(e.location, Some((6, 1)), "{e}");
    assert!(SchedulerConfig::from_toml_str(
        &text.replace("ring_capacity = 1", "ring_capacity = 2")
    )
    .is_ok());
}

/// A burst of exactly `queue_capacity` submits between two steps is accepted in full,
/// however small the ring (the smallest here, two slots, is far below the burst); the next
/// submit is refused naming the class and its capacity; the step drains every accepted
/// request and ingress is empty after it.
#[test]
fn a_burst_up_to_queue_capacity_is_accepted_and_the_next_is_refused() {
    for (ring, queue) in [(2, 1), (2, 2), (2, 3), (2, 1000), (1024, 5)] {
        let clock = ManualClock::new(Timestamp::ZERO);
        let (mut sched, api) = Scheduler::with_clock(config(ring, queue), clock.clone()).unwrap();
        let mut handles = Vec::new();
        for id in 0..queue as u64 {
            handles.push(api.submit(high(id)).expect("within the class's capacity"));
        }
        assert_eq!(api.submit(high(queue as u64)), full("HIGH", queue));
        // Other classes are bounded on their own.
        api.submit(RequestSpec::new(u64::MAX, Class::LOW, 10, 10))
            .unwrap();
        let c = balanced(&sched);
        assert_eq!((c.submitted, c.refused), (queue as u64 + 2, 1), "{c}");
        let d = sched.step(clock.now(), &no_room()).unwrap();
        assert_eq!(
            d.summary.drained as usize,
            queue + 1,
            "ring {ring}, queue {queue}"
        );
        let c = balanced(&sched);
        assert_eq!((c.in_ingress, c.waiting), (0, queue as u64 + 1), "{c}");
        // Waiting, they still count: the class is full until some start.
        assert_eq!(api.submit(high(10_000)), full("HIGH", queue));
        let d = sched.step(clock.now(), &room()).unwrap();
        assert_eq!(d.admitted.len(), (queue + 1).min(64));
        let mut admitted: Vec<RequestHandle> = d
            .admitted
            .iter()
            .filter(|a| a.class == Class::HIGH)
            .map(|a| a.handle)
            .collect();
        admitted.sort_unstable_by_key(|h| h.index());
        let mut expected = handles.clone();
        expected.truncate(64);
        expected.sort_unstable_by_key(|h| h.index());
        assert_eq!(admitted, expected, "the accepted requests start, in full");
        balanced(&sched);
    }
}

/// One API thread submits a million requests before the first step, with
/// `queue_capacity` a million and the default ring capacity: every one is accepted, the
/// next is refused, and the first step drains them all (issue 17, target 7).
#[test]
fn a_million_submits_before_the_first_step_are_all_accepted() {
    const N: u64 = 1_000_000;
    let clock = ManualClock::new(Timestamp::ZERO);
    let mut cfg = SchedulerConfig::default();
    for class in &mut cfg.classes {
        class.queue_capacity = N as usize;
    }
    let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
    for id in 0..N {
        api.submit(RequestSpec::new(id, Class::LOW, 16, 16))
            .unwrap_or_else(|e| panic!("submit {id} refused: {e}"));
    }
    assert!(matches!(
        api.submit(RequestSpec::new(N, Class::LOW, 16, 16)),
        Err(SubmitError::QueueFull { capacity, .. }) if capacity == N as usize
    ));
    let d = sched.step(clock.now(), &no_room()).unwrap();
    assert_eq!(u64::from(d.summary.drained), N);
    let c = balanced(&sched);
    assert_eq!((c.submitted, c.refused, c.waiting), (N + 1, 1, N), "{c}");
}

/// Between steps the bound counts the requests waiting as of the last step plus those
/// submitted since: with two of four waiting, a burst of two is accepted and a third
/// refused; admissions free their places at the step's end, one for one.
#[test]
fn waiting_and_newly_submitted_requests_share_the_capacity() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2, 4), clock.clone()).unwrap();
    for id in 0..2 {
        api.submit(high(id)).unwrap();
    }
    sched.step(clock.now(), &no_room()).unwrap();
    assert_eq!(sched.waiting(), 2);
    for id in 2..4 {
        api.submit(high(id)).unwrap();
    }
    assert_eq!(api.submit(high(4)), full("HIGH", 4));
    // A step with one seat: four waiting, one starts, three stay.
    let d = sched.step(clock.now(), &seats(1)).unwrap();
    assert_eq!(d.admitted.len(), 1);
    assert_eq!(sched.waiting(), 3);
    api.submit(high(5)).unwrap();
    assert_eq!(api.submit(high(6)), full("HIGH", 4));
    let c = balanced(&sched);
    assert_eq!(
        (c.submitted, c.refused, c.waiting, c.in_ingress, c.running),
        (7, 2, 3, 1, 1),
        "{c}"
    );
    let d = sched.step(clock.now(), &seats(1)).unwrap();
    assert_eq!(d.summary.drained, 1);
    assert_eq!(sched.waiting(), 4);
}

/// A request cancelled since the last step still counts until the step reaps it; a request
/// moved to another class counts against the class it was submitted to until the step's
/// end, then against its new class.
#[test]
fn cancels_and_class_changes_count_from_the_step_that_applies_them() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2, 2), clock.clone()).unwrap();
    let low = |id| RequestSpec::new(id, Class::LOW, 10, 10);
    let a = api.submit(low(1)).unwrap();
    let b = api.submit(low(2)).unwrap();
    assert_eq!(api.cancel(a), Ok(CancelOutcome::WasWaiting));
    api.reprioritize(b, Class::HIGH).unwrap();
    // Neither has left LOW yet.
    assert_eq!(api.submit(low(3)), full("LOW", 2));
    let d = sched.step(clock.now(), &no_room()).unwrap();
    assert_eq!(d.cancelled, vec![RequestId(1)]);
    // From the step's end: LOW holds nothing, HIGH holds request 2.
    api.submit(low(4)).unwrap();
    api.submit(low(5)).unwrap();
    assert_eq!(api.submit(low(6)), full("LOW", 2));
    api.submit(high(7)).unwrap();
    assert_eq!(api.submit(high(8)), full("HIGH", 2));
    let c = balanced(&sched);
    assert_eq!((c.submitted, c.refused, c.cancelled), (8, 3, 1), "{c}");
    sched.step(clock.now(), &no_room()).unwrap();
    assert_eq!(sched.waiting_in(Class::HIGH), 2);
    assert_eq!(sched.waiting_in(Class::LOW), 2);
}

/// A preempted request goes back to its queue even when its class is full (it is never
/// refused or lost); the class then holds more than its capacity and refuses submits until
/// enough start.
#[test]
fn a_preempted_request_returns_to_a_full_class() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2, 1), clock.clone()).unwrap();
    let one = api.submit(high(1)).unwrap();
    let d = sched.step(clock.now(), &room()).unwrap();
    assert_eq!(d.admitted[0].handle, one);
    sched.on_progress(one, clock.now(), 10, 1).unwrap();
    api.submit(high(2)).unwrap();
    assert_eq!(api.submit(high(3)), full("HIGH", 1));
    // No seat: request 1 is preempted and waits with request 2.
    let d = sched.step(clock.now(), &no_room()).unwrap();
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].id, RequestId(1));
    assert_eq!(sched.waiting_in(Class::HIGH), 2);
    assert_eq!(api.submit(high(4)), full("HIGH", 1));
    // One seat: request 1 resumes under its handle; request 2 still fills the class.
    let d = sched.step(clock.now(), &seats(1)).unwrap();
    assert_eq!(d.admitted[0].handle, one);
    assert!(d.admitted[0].resumed);
    assert_eq!(api.submit(high(5)), full("HIGH", 1));
    let d = sched.step(clock.now(), &seats(2)).unwrap();
    assert_eq!(d.admitted.len(), 1);
    api.submit(high(6)).unwrap();
    let c = balanced(&sched);
    assert_eq!((c.submitted, c.refused, c.running), (6, 3, 2), "{c}");
}

/// A reload's capacities bind the submits after the step that applies it: lowered below
/// the requests waiting, the class refuses until enough start; raised, a larger burst is
/// accepted at once.
#[test]
fn a_reload_changes_the_capacity_for_later_submits() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2, 4), clock.clone()).unwrap();
    for id in 0..4 {
        api.submit(high(id)).unwrap();
    }
    sched.step(clock.now(), &no_room()).unwrap();
    sched.reload(config(2, 2)).unwrap();
    // Proposed, not yet applied: the old capacity holds.
    assert_eq!(api.submit(high(4)), full("HIGH", 4));
    let d = sched.step(clock.now(), &seats(1)).unwrap();
    assert!(matches!(d.reload, Some(Ok(_))), "{:?}", d.reload);
    assert_eq!(sched.waiting(), 3);
    assert_eq!(api.submit(high(5)), full("HIGH", 2));
    let d = sched.step(clock.now(), &seats(3)).unwrap();
    assert_eq!(d.admitted.len(), 2);
    assert_eq!(sched.waiting(), 1);
    api.submit(high(6)).unwrap();
    assert_eq!(api.submit(high(7)), full("HIGH", 2));
    sched.reload(config(2, 100)).unwrap();
    let d = sched.step(clock.now(), &seats(3)).unwrap();
    assert!(matches!(d.reload, Some(Ok(_))), "{:?}", d.reload);
    assert_eq!(sched.waiting(), 2);
    for id in 8..106 {
        api.submit(high(id)).unwrap();
    }
    assert_eq!(api.submit(high(106)), full("HIGH", 100));
    let d = sched.step(clock.now(), &seats(3)).unwrap();
    assert_eq!(d.summary.drained, 98);
    let c = balanced(&sched);
    assert_eq!((c.refused, c.waiting, c.in_ingress), (4, 100, 0), "{c}");
}

/// API threads race for one class's capacity between two steps, on several shards: exactly
/// `queue_capacity` are accepted in all, the rest refused, and the step drains every
/// accepted one.
#[test]
fn racing_bursts_take_exactly_the_capacity() {
    const THREADS: u64 = 4;
    const EACH: u64 = 400;
    const CAPACITY: usize = 1000;
    let clock = ManualClock::new(Timestamp::ZERO);
    let mut cfg = config(2, CAPACITY);
    cfg.shards = 4;
    let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS as usize));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (api, barrier) = (api.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut accepted = Vec::new();
                for i in 0..EACH {
                    match api.submit(high(t << 32 | i)) {
                        Ok(h) => accepted.push(h),
                        Err(e) => assert_eq!(Err(e), full("HIGH", CAPACITY)),
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted: Vec<RequestHandle> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(accepted.len(), CAPACITY);
    let c = balanced(&sched);
    assert_eq!(
        (c.submitted, c.refused),
        (THREADS * EACH, THREADS * EACH - CAPACITY as u64),
        "{c}"
    );
    let d = sched.step(clock.now(), &no_room()).unwrap();
    assert_eq!(d.summary.drained as usize, CAPACITY);
    let handed = sched.drain_waiting(clock.now());
    assert_eq!(handed.len(), CAPACITY);
    accepted.sort_unstable_by_key(|h| (h.index(), h.generation()));
    accepted.dedup();
    assert_eq!(accepted.len(), CAPACITY, "every handle is distinct");
    let c = balanced(&sched);
    assert_eq!(
        (c.evicted, c.in_ingress, c.waiting),
        (CAPACITY as u64, 0, 0),
        "{c}"
    );
}

/// The issue's reproduction, at the smallest capacities accepted: two submits, a step with
/// room admits both; two more, then `drain_waiting` returns (it used to spin) and hands
/// both off; nothing is left in ingress and every request has one outcome.
#[test]
fn the_issue_reproduction_admits_and_hands_off_everything() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2, 2), clock.clone()).unwrap();
    api.submit(high(1)).unwrap();
    api.submit(high(2)).unwrap();
    let d = sched.step(clock.now(), &room()).unwrap();
    assert_eq!(d.admitted.len(), 2);
    api.submit(high(3)).unwrap();
    api.submit(high(4)).unwrap();
    let handed = sched.drain_waiting(clock.now());
    let mut ids: Vec<u64> = handed.iter().map(|h| h.spec.id.0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 4]);
    assert_eq!(api.submit(high(5)), Err(SubmitError::Closed));
    let c = sched.conservation();
    assert_eq!(
        (c.submitted, c.refused, c.in_ingress, c.running, c.evicted),
        (5, 1, 0, 2, 2),
        "{c}"
    );
    assert!(c.is_balanced());
    sched.check_invariants().unwrap();
}

/// Hand-off under load at the smallest ring and queue capacity: API threads submit until
/// the scheduler closes; each submit is accepted or refused (`QueueFull`, then `Closed`),
/// and every accepted one is admitted by a step or handed off, never stranded in ingress.
#[test]
fn drain_waiting_strands_nothing_with_submitters_racing_it() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let mut cfg = config(2, 2);
    cfg.shards = 2;
    let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                let (mut accepted, mut full) = (0u64, 0u64);
                for i in 0.. {
                    match api.submit(high(t << 32 | i)) {
                        Ok(_) => accepted += 1,
                        Err(SubmitError::QueueFull { capacity: 2, .. }) => full += 1,
                        Err(SubmitError::Closed) => return (accepted, full),
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    let mut admitted = 0u64;
    // Run until both threads have had submits accepted and drained, then hand off.
    while sched.conservation().submitted < 2_000 {
        let d = sched.step(clock.now(), &room()).unwrap();
        for a in &d.admitted {
            sched
                .on_finished(a.handle, clock.now(), FinishReason::Stop)
                .unwrap();
        }
        admitted += d.admitted.len() as u64;
        sched.check_invariants().unwrap();
    }
    let handed = sched.drain_waiting(clock.now()).len() as u64;
    let (accepted, full): (Vec<u64>, Vec<u64>) =
        threads.into_iter().map(|t| t.join().unwrap()).unzip();
    let accepted: u64 = accepted.iter().sum();
    sched.check_invariants().unwrap();
    let c = sched.conservation();
    assert_eq!(c.in_ingress, 0, "{c}");
    assert_eq!(admitted + handed, accepted, "{c}");
    assert!(handed <= 2, "never more than the capacity waits: {handed}");
    assert_eq!(c.refused, full.iter().sum::<u64>() + 2, "{c}");
    assert!(c.is_balanced(), "{c}");
}

/// From 4,096 on, a thread counts its submits locally and adds them 16 at a time; what it
/// holds still counts once it exits or turns to another scheduler, so the class then
/// refuses at exactly its capacity. (Were the units lost, the class would take more.)
#[test]
fn a_threads_pending_units_count_once_it_exits_or_turns_away() {
    const CAPACITY: usize = 4096;
    for turn_away in [false, true] {
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(config(2, CAPACITY), clock.clone()).unwrap();
        let (_other_sched, other) =
            Scheduler::with_clock(config(2, CAPACITY), clock.clone()).unwrap();
        let api2 = api.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (turned_tx, turned) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // 5 units: fewer than a batch, all pending.
            for id in 0..5 {
                api2.submit(high(id)).unwrap();
            }
            if turn_away {
                other.submit(high(0)).unwrap();
                turned_tx.send(()).unwrap();
                // Stay alive: only the turn may have added the units.
                rx.recv().unwrap();
            }
        });
        let mut t = Some(t);
        if turn_away {
            turned.recv().unwrap();
        } else {
            t.take().unwrap().join().unwrap();
        }
        // This thread alone now: exact.
        for id in 5..CAPACITY as u64 {
            api.submit(high(id)).expect("within the capacity");
        }
        assert_eq!(
            api.submit(high(CAPACITY as u64)),
            full("HIGH", CAPACITY),
            "turn away: {turn_away}"
        );
        let c = balanced(&sched);
        assert_eq!((c.submitted, c.refused), (CAPACITY as u64 + 1, 1), "{c}");
        if let Some(t) = t {
            tx.send(()).unwrap();
            t.join().unwrap();
        }
    }
}

/// A submit from inside a submit (here a `tracing` subscriber that submits when it sees a
/// refusal) finds the thread's cache busy and takes its capacity unit on its own: the unit
/// counts once, so this thread's burst afterwards is refused at exactly the capacity.
#[test]
fn a_reentrant_submit_counts_its_unit_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tracing::{span, Event, Metadata, Subscriber};

    /// Submits one request the first time it sees an event.
    struct SubmitOnEvent {
        api: Submitter,
        done: AtomicBool,
        inner: Mutex<Option<Result<RequestHandle, SubmitError>>>,
    }
    impl Subscriber for SubmitOnEvent {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, _: &Event<'_>) {
            if !self.done.swap(true, Ordering::Relaxed) {
                let r = self.api.submit(high(1));
                *self.inner.lock().unwrap() = Some(r);
            }
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    const CAPACITY: usize = 4096;
    let clock = ManualClock::new(Timestamp::ZERO);
    let (sched, api) = Scheduler::with_clock(config(2, CAPACITY), clock.clone()).unwrap();
    let subscriber = Arc::new(SubmitOnEvent {
        api: api.clone(),
        done: AtomicBool::new(false),
        inner: Mutex::new(None),
    });
    tracing::subscriber::with_default(Arc::clone(&subscriber), || {
        // Refused (no prompt): the refusal's event submits request 1 from inside.
        let refused = api.submit(RequestSpec::new(0, Class::HIGH, 0, 1));
        assert_eq!(refused, Err(SubmitError::ZeroPromptTokens(RequestId(0))));
    });
    assert!(subscriber.inner.lock().unwrap().take().unwrap().is_ok());
    for id in 2..=CAPACITY as u64 {
        api.submit(high(id)).expect("within the capacity");
    }
    assert_eq!(api.submit(high(0)), full("HIGH", CAPACITY));
    let c = balanced(&sched);
    assert_eq!((c.submitted, c.refused), (CAPACITY as u64 + 2, 2), "{c}");
}
