//! Loom models of the ingress ring (`src/ingress/ring.rs`): producers racing each other and
//! the consumer, through wrap-around and full.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_ring`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use triage::loom_internals::{PushError, Ring};
use triage::ClassConfig;

/// The models run the smallest ring the configuration accepts. Their counts ("exactly two
/// land") are written for two slots: if the minimum changes, rewrite them for it.
const SLOTS: usize = ClassConfig::MIN_RING_CAPACITY;

#[test]
fn the_models_use_the_smallest_accepted_ring() {
    assert_eq!(SLOTS, 2);
    // Loom's atomics exist only inside a model.
    loom::model(|| assert_eq!(Ring::<u32>::with_capacity(SLOTS).capacity(), 2));
}

/// Two producers push three items into a two-slot ring with no consumer: exactly two land,
/// exactly one is refused as full, and the two that landed pop in claim order.
#[test]
fn two_producers_fill_the_ring_and_full_is_exact() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(SLOTS));
        let r1 = ring.clone();
        let a = thread::spawn(move || {
            let x = r1.push(10).is_ok() as u32;
            let y = r1.push(11).is_ok() as u32;
            x + y
        });
        let b = ring.push(20).is_ok() as u32;
        let ok = a.join().unwrap() + b;
        assert_eq!(ok, 2, "a two-slot ring takes exactly two");
        let mut got = Vec::new();
        // SAFETY: all producers have finished; this thread is the only consumer.
        while let Some(v) = unsafe { ring.pop() } {
            got.push(v);
        }
        assert_eq!(got.len(), 2);
        // Per-producer order: 10 before 11 if both landed.
        if got.contains(&11) {
            assert!(got.iter().position(|&v| v == 10) < got.iter().position(|&v| v == 11));
        }
    });
}

/// Two producers and the consumer race through wrap-around: three pushes into a two-slot
/// ring while the consumer takes one, so in some interleavings a push lands in a slot the
/// consumer has just recycled. Every item that was accepted is drained exactly once, each
/// producer's items arrive in order, and a refusal is only `Full` when two items were
/// already waiting (at most one pop happened, so at most one push of three can fail, and
/// only if the pop had not yet freed its slot).
#[test]
fn producers_and_consumer_wrap_around() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(SLOTS));
        let producers: Vec<_> = [(0u32, 2u32), (100, 1)]
            .into_iter()
            .map(|(base, n)| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for v in base..base + n {
                        match ring.push(v) {
                            Ok(()) => accepted.push(v),
                            Err(PushError::Full(_)) => {}
                            Err(PushError::Closed(_)) => unreachable!("never closed here"),
                        }
                    }
                    accepted
                })
            })
            .collect();
        // SAFETY: this thread is the ring's only consumer.
        let first = unsafe { ring.pop() };
        let mut accepted: Vec<u32> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        let mut got: Vec<u32> = first.into_iter().collect();
        // SAFETY: as above.
        while let Some(v) = unsafe { ring.pop() } {
            got.push(v);
        }
        let refused = 3 - accepted.len();
        assert!(
            refused <= 1,
            "with one pop, at most one of three pushes can find the ring full"
        );
        if first.is_none() {
            assert_eq!(
                refused, 1,
                "no pop before the pushes ended: exactly one was full"
            );
        }
        let mine = |base: u32| {
            got.iter()
                .copied()
                .filter(|v| v / 100 == base / 100)
                .collect::<Vec<_>>()
        };
        assert!(
            mine(0).windows(2).all(|w| w[0] < w[1]),
            "producer order kept: {got:?}"
        );
        let mut sorted = got.clone();
        sorted.sort();
        accepted.sort();
        assert_eq!(sorted, accepted, "every accepted item drained exactly once");
    });
}

/// Two producers with two pushes each and a consumer popping twice in between, all racing:
/// claims, publishes and recycles interleave in every bounded order. Every accepted item
/// is drained exactly once and in its producer's order.
#[test]
fn two_by_two_with_interleaved_pops() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(SLOTS));
        let producers: Vec<_> = [0u32, 100]
            .into_iter()
            .map(|base| {
                let ring = ring.clone();
                thread::spawn(move || {
                    (base..base + 2)
                        .filter(|&v| ring.push(v).is_ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..2 {
            // SAFETY: this thread is the ring's only consumer.
            if let Some(v) = unsafe { ring.pop() } {
                got.push(v);
            }
        }
        let mut accepted: Vec<u32> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        // SAFETY: as above.
        while let Some(v) = unsafe { ring.pop() } {
            got.push(v);
        }
        for base in [0u32, 100] {
            let mine: Vec<u32> = got
                .iter()
                .copied()
                .filter(|v| v / 100 == base / 100)
                .collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "order of producer {base}: {got:?}"
            );
        }
        let mut sorted = got.clone();
        sorted.sort();
        accepted.sort();
        assert_eq!(sorted, accepted);
        assert!(
            accepted.len() >= 2,
            "an empty two-slot ring takes at least two pushes"
        );
    });
}

/// Close racing a push: the push lands (and is poppable) or fails with Closed.
#[test]
fn close_racing_push() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(SLOTS));
        let r1 = ring.clone();
        let p = thread::spawn(move || r1.push(7).is_ok());
        ring.close();
        let landed = p.join().unwrap();
        // SAFETY: the producer has finished; this thread is the only consumer.
        let popped = unsafe { ring.pop() };
        assert_eq!(popped.is_some(), landed);
        assert!(matches!(ring.push(8), Err(PushError::Closed(8))));
    });
}

/// `drain_waiting`'s loop: the ring is closed while two producers push, then emptied with
/// `pop_closed`, which waits only for a push that claimed its position before the close and
/// has not published it yet. It ends in every interleaving, takes exactly the accepted
/// items (through wrap-around: one item was pushed and popped first), and leaves the ring
/// empty and in protocol.
#[test]
fn pop_closed_takes_every_push_claimed_before_the_close() {
    loom::model(|| {
        let ring = Arc::new(Ring::with_capacity(SLOTS));
        ring.push(0).unwrap();
        // SAFETY: this thread is the ring's only consumer.
        assert_eq!(unsafe { ring.pop() }, Some(0));
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let ring = ring.clone();
                thread::spawn(move || match ring.push(v) {
                    Ok(()) => Some(v),
                    Err(PushError::Closed(_)) => None,
                    Err(PushError::Full(_)) => unreachable!("two pushes fit in two slots"),
                })
            })
            .collect();
        ring.close();
        let mut got = Vec::new();
        // SAFETY: as above.
        while let Some(v) = unsafe { ring.pop_closed() } {
            got.push(v);
        }
        let mut accepted: Vec<u32> = producers
            .into_iter()
            .filter_map(|p| p.join().unwrap())
            .collect();
        got.sort();
        accepted.sort();
        assert_eq!(got, accepted, "exactly the accepted items, once each");
        assert_eq!(ring.check_head(), Ok(()));
    });
}
