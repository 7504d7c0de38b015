//! Many API threads and the engine thread at once: every request ends in exactly one
//! outcome and the counters balance.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use triage::*;
use triage_testkit::{FakeEngine, Goal, Rng};

const THREADS: u64 = 8;
const PER_THREAD: u64 = 12_500; // 100,000 in all

#[test]
fn eight_api_threads_100k_requests_each_end_exactly_once() {
    let mut cfg = SchedulerConfig {
        shards: 4,
        ..SchedulerConfig::default()
    };
    // Each class holds at most 4,096 requests waiting or submitted since the last step;
    // past that a submit is refused (`QueueFull`), which is that request's one outcome.
    cfg.classes.iter_mut().for_each(|c| c.queue_capacity = 4096);
    let clock = ManualClock::new(Timestamp::ZERO);
    let (mut sched, api) = Scheduler::with_clock(cfg, clock.clone()).unwrap();
    let total = (THREADS * PER_THREAD) as usize;
    // outcomes[id] counts terminal outcomes seen for the request; must end at exactly 1.
    let outcomes: Arc<Vec<AtomicU8>> = Arc::new((0..total).map(|_| AtomicU8::new(0)).collect());
    let producers_done = Arc::new(AtomicBool::new(false));

    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let api = api.clone();
            let outcomes = Arc::clone(&outcomes);
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x9E37_79B9 ^ (t + 1));
                let (mut refused, mut cancels) = (0u64, 0u64);
                // Our requests' handles by submit order (`None`: refused).
                let mut handles: Vec<Option<RequestHandle>> =
                    Vec::with_capacity(PER_THREAD as usize);
                for i in 0..PER_THREAD {
                    let id = t * PER_THREAD + i;
                    let r = rng.next_u64();
                    let spec = RequestSpec::new(
                        id,
                        Class::from_index((r % 3) as u8),
                        1 + (r >> 8) as u32 % 512,
                        1 + (r >> 20) as u32 % 64,
                    );
                    match api.submit(spec) {
                        Ok(h) => handles.push(Some(h)),
                        Err(SubmitError::QueueFull { .. }) => {
                            handles.push(None);
                            outcomes[id as usize].fetch_add(1, Ordering::Relaxed);
                            refused += 1;
                            std::thread::yield_now();
                            continue;
                        }
                        Err(e) => panic!("unexpected refusal: {e}"),
                    }
                    // Now and then cancel or reprioritize an earlier request of ours (its
                    // handle may be stale by now: then the call is refused, `NotFound`).
                    let earlier = || handles[((r >> 32) % i) as usize];
                    if r % 7 == 0 && i > 0 {
                        if let Some(victim) = earlier() {
                            if api.cancel(victim).is_ok() {
                                cancels += 1;
                            }
                        }
                    } else if r % 5 == 0 && i > 0 {
                        if let Some(h) = earlier() {
                            let _ = api.reprioritize(h, Class::from_index(((r >> 40) % 3) as u8));
                        }
                    }
                }
                (refused, cancels)
            })
        })
        .collect();

    let engine = {
        let outcomes = Arc::clone(&outcomes);
        let producers_done = Arc::clone(&producers_done);
        std::thread::spawn(move || {
            let mut d = Decision::default();
            // Every running request completes its work and finishes at its first token.
            let mut engine = FakeEngine::new(7450, 16, Goal::Output(1));
            let mut steps = 0u64;
            loop {
                let done = producers_done.load(Ordering::Acquire);
                clock.advance(std::time::Duration::from_millis(1)); // one iteration
                let now = clock.now();
                sched
                    .step_into(now, &engine.budget(256, 8192), &mut d)
                    .unwrap();
                steps += 1;
                // A cancel that won the race with a finish counts as cancelled: still one
                // outcome.
                for (id, _) in engine.carry_out(&mut sched, &d, now).ended {
                    outcomes[id.0 as usize].fetch_add(1, Ordering::Relaxed);
                }
                assert_eq!(engine.problems(), &[] as &[String]);
                assert!(sched.conservation().is_balanced());
                let c = sched.conservation();
                if done && c.in_ingress == 0 && c.waiting == 0 && c.running == 0 {
                    sched.check_invariants().unwrap();
                    return (c, steps);
                }
            }
        })
    };

    let mut refused = 0;
    for p in producers {
        refused += p.join().unwrap().0;
    }
    producers_done.store(true, Ordering::Release);
    let (c, steps) = engine.join().unwrap();
    assert_eq!(c.submitted, THREADS * PER_THREAD);
    assert_eq!(c.refused, refused);
    assert!(c.is_balanced(), "{c}");
    assert!(steps > 1, "the scheduler stepped while producers ran");
    let wrong: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.load(Ordering::Relaxed) != 1)
        .map(|(i, _)| i)
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "requests without exactly one outcome: {wrong:?} ({c})"
    );
    assert_eq!(c.finished + c.cancelled + c.refused, THREADS * PER_THREAD);
}
