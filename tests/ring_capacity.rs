//! Issue 15, item 0: a one-slot ingress ring overwrote accepted requests (`submit` said
//! `Ok`, the scheduler never saw them, `conservation()` kept them "in ingress" for ever) and
//! `drain_waiting` spun for ever on them. Rings now have at least two slots: a capacity
//! below that is a configuration error, and the smallest accepted ring refuses what does
//! not fit (`QueueFull`) instead of losing it.

use triage::*;

/// The issue's configuration: every class's `ring_capacity` set to `ring`, one shard.
fn config(ring: usize) -> SchedulerConfig {
    let mut cfg = SchedulerConfig {
        shards: 1,
        ..SchedulerConfig::default()
    };
    for class in &mut cfg.classes {
        class.ring_capacity = ring;
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

fn high(id: u64) -> RequestSpec {
    RequestSpec::new(id, Class::HIGH, 10, 10)
}

#[test]
fn a_ring_capacity_below_two_is_refused() {
    assert_eq!(ClassConfig::MIN_RING_CAPACITY, 2);
    for ring in [0, 1] {
        let e = Scheduler::with_clock(config(ring), ManualClock::default())
            .expect_err("a one-slot ring cannot keep what it accepts");
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

/// The smallest ring takes exactly two submits between steps and refuses the third with
/// `QueueFull` naming the ring's capacity; every accepted request reaches the wait queue,
/// and ingress is empty after each step.
#[test]
fn the_smallest_ring_refuses_past_capacity_and_loses_nothing() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2), clock.clone()).unwrap();
    let no_room = Budget {
        max_num_seqs: 0,
        ..room()
    };
    let mut accepted = 0;
    for round in 0..4u64 {
        for k in 0..3 {
            let r = api.submit(high(round * 10 + k));
            if k < 2 {
                r.unwrap();
                accepted += 1;
            } else {
                assert_eq!(
                    r,
                    Err(SubmitError::QueueFull {
                        class: "HIGH".into(),
                        capacity: 2
                    })
                );
            }
            sched.check_invariants().unwrap();
        }
        let d = sched.step(clock.now(), &no_room).unwrap();
        assert_eq!(d.summary.drained, 2);
        let c = sched.conservation();
        assert_eq!((c.in_ingress, c.waiting), (0, accepted));
        assert!(c.is_balanced(), "{c}");
        sched.check_invariants().unwrap();
    }
    let d = sched.step(clock.now(), &room()).unwrap();
    assert_eq!(d.admitted.len() as u64, accepted);
}

/// The issue's reproduction, at the smallest capacity now accepted: two submits, a step
/// with room admits both; two more, then `drain_waiting` returns (it used to spin) and
/// hands both off; nothing is left in ingress and every request has one outcome.
#[test]
fn the_issue_reproduction_admits_and_hands_off_everything() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(config(2), clock.clone()).unwrap();
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

/// Hand-off under load at the smallest ring: API threads submit until the scheduler
/// closes; each submit is accepted or refused (`QueueFull`, then `Closed`), and every
/// accepted one is admitted by a step or handed off, never stranded in ingress.
#[test]
fn drain_waiting_strands_nothing_with_submitters_racing_it() {
    let clock = ManualClock::new(Timestamp::ZERO);
    let mut cfg = config(2);
    cfg.shards = 2;
    let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                let mut accepted = 0u64;
                for i in 0.. {
                    match api.submit(high(t << 32 | i)) {
                        Ok(_) => accepted += 1,
                        Err(SubmitError::QueueFull { capacity: 2, .. }) => {}
                        Err(SubmitError::Closed) => return accepted,
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
                .on_finished(a.id, clock.now(), FinishReason::Stop)
                .unwrap();
        }
        admitted += d.admitted.len() as u64;
        sched.check_invariants().unwrap();
    }
    let handed = sched.drain_waiting(clock.now()).len() as u64;
    let accepted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    sched.check_invariants().unwrap();
    let c = sched.conservation();
    assert_eq!(c.in_ingress, 0, "{c}");
    assert_eq!(admitted + handed, accepted, "{c}");
    assert!(c.is_balanced(), "{c}");
}
