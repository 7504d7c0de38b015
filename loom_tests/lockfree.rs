//! Loom models of the lock-free request table and intrusive ingress queue
//! (`src/ingress/table.rs`, `src/ingress/mpsc.rs`): chunk installation, pushes racing pops
//! through the unlinked-next window, close racing a push, freed slots returned while
//! producers take them (the tagged stack's ABA case), a producer's range of never-used slots
//! given back while another producer takes slots, and a cancel by a stale handle racing
//! the slot's reuse. Chunks are two slots under loom, so small tables span several chunks.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_lockfree`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use triage::lockfree::*;

#[test]
fn chunks_are_two_slots_under_loom() {
    assert_eq!(CHUNK, 2);
}

/// Asserts that `handles` name every slot of a `slots`-slot table, each once.
fn each_slot_once(handles: &[RequestHandle], slots: u32) {
    let mut indices: Vec<u32> = handles.iter().map(|h| h.index()).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..slots).collect::<Vec<_>>());
}

/// Drains everything left once every producer has joined (no push is mid-link then).
fn drain(c: &mut Consumer<u32>, out: &mut Vec<u32>) {
    loop {
        match c.pop() {
            Pop::Item(e) => out.push(c.table().payload(&e)),
            Pop::Empty => return,
            Pop::Busy => panic!("Busy with every producer joined"),
        }
    }
}

/// Two producers on a fresh table (both race to install chunk 0, then fill it) push one
/// request each while the consumer pops once, so the pop can land in the window where a
/// producer has swung the tail but not linked. Every request is popped exactly once with
/// the payload its producer wrote.
#[test]
fn pushes_race_a_pop_and_nothing_is_lost() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(4, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let p = p.clone();
                let t = Arc::clone(&t);
                thread::spawn(move || {
                    p.push(t.reserve(0, v).unwrap()).unwrap();
                })
            })
            .collect();
        let mut got = Vec::new();
        if let Pop::Item(e) = c.pop() {
            got.push(t.payload(&e));
        }
        for j in producers {
            j.join().unwrap();
        }
        drain(&mut c, &mut got);
        got.sort();
        assert_eq!(got, vec![1, 2]);
    });
}

/// A producer pushes twice while the consumer pops twice: the consumer sees the producer's
/// requests in order, each once, and the payload written before each push.
#[test]
fn one_producer_is_fifo_against_a_concurrent_consumer() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(2, 1));
        // The chunk exists before the model's threads start (installation is modelled
        // above); this model is about the links.
        let (p, mut c) = queue(Arc::clone(&t));
        let t2 = Arc::clone(&t);
        let producer = thread::spawn(move || {
            p.push(t2.reserve(0, 1).unwrap()).unwrap();
            p.push(t2.reserve(0, 2).unwrap()).unwrap();
        });
        let mut got = Vec::new();
        for _ in 0..2 {
            if let Pop::Item(e) = c.pop() {
                got.push(t.payload(&e));
            }
        }
        producer.join().unwrap();
        drain(&mut c, &mut got);
        assert_eq!(got, vec![1, 2]);
    });
}

/// A push racing a close either lands (and the closed drain returns it) or fails with
/// `Closed` and gets its slot back; never both, never neither.
#[test]
fn close_racing_push_strands_nothing() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(2, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        p.push(t.reserve(0, 1).unwrap()).unwrap();
        let t2 = Arc::clone(&t);
        let p2 = p.clone();
        let producer = thread::spawn(move || match p2.push(t2.reserve(0, 2).unwrap()) {
            Ok(_) => true,
            Err(Closed(back)) => {
                t2.unreserve(0, back);
                false
            }
        });
        c.close();
        let mut got = Vec::new();
        while let Some(e) = c.pop_closed() {
            got.push(t.payload(&e));
        }
        let landed = producer.join().unwrap();
        // After the join nothing more can arrive.
        assert_eq!(c.pop(), Pop::Empty);
        assert_eq!(got, if landed { vec![1, 2] } else { vec![1] });
    });
}

/// The consumer reads a request's payload, frees it and returns it with one CAS while a
/// producer (on the same free stack) takes slots: a slot is handed out only after the
/// consumer's last read of it, and never twice.
#[test]
fn freed_slots_return_to_a_racing_producer() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(2, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        p.push(t.reserve(0, 10).unwrap()).unwrap();
        p.push(t.reserve(0, 11).unwrap()).unwrap();
        let Pop::Item(a) = c.pop() else { panic!() };
        let Pop::Item(b) = c.pop() else { panic!() };
        // One slot is already back on the stack before the producer starts.
        let mut batch = FreeBatch::new();
        t.free(&mut batch, a);
        t.release(0, &mut batch);
        let t2 = Arc::clone(&t);
        let producer = thread::spawn(move || {
            let mut got = Vec::new();
            for v in [20, 21] {
                if let Ok(r) = t2.reserve(0, v) {
                    got.push(r.handle());
                }
            }
            got
        });
        assert_eq!(t.payload(&b), 11);
        t.free(&mut batch, b);
        t.release(0, &mut batch);
        let got = producer.join().unwrap();
        assert!(!got.is_empty(), "the first slot was free all along");
        if got.len() == 2 {
            assert_ne!(got[0].index(), got[1].index());
        }
        for h in got {
            assert_eq!(t.phase(h), Ok(QUEUED));
        }
    });
}

/// One producer takes a range of never-used slots (two under loom), uses one and gives the
/// other back to the free stack while a second producer reserves the plain way (free stack,
/// then a never-used slot): every slot of the table is handed out exactly once, the given
/// back one included, and a payload written into it is the one read.
#[test]
fn a_fresh_range_given_back_is_handed_out_once() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(4, 1));
        let t2 = Arc::clone(&t);
        let ranged = thread::spawn(move || {
            let mut fresh = FreshRange::default();
            let r = t2.reserve_from(0, 1, &mut fresh).unwrap();
            // A range stops at its chunk's end: one slot left, or none if the other
            // producer took the chunk's first.
            assert!(fresh.len() < FRESH_BATCH);
            t2.give_back(0, &mut fresh);
            assert!(fresh.is_empty());
            r.handle()
        });
        let (p, mut c) = queue(Arc::clone(&t));
        let mut handles = vec![];
        for v in [2, 3] {
            let r = t.reserve(0, v).unwrap();
            handles.push(r.handle());
            p.push(r).unwrap();
        }
        handles.push(ranged.join().unwrap());
        // The one slot left, given back or never used: then the table is full.
        let last = t.reserve(0, 4).unwrap();
        handles.push(last.handle());
        p.push(last).unwrap();
        assert!(t.reserve(0, 5).is_err(), "four slots, all handed out");
        each_slot_once(&handles, 4);
        let mut seen = vec![];
        drain(&mut c, &mut seen);
        assert_eq!(seen, [2, 3, 4]);
    });
}

/// Producers of two shards take never-used slots, each from a chunk its shard claimed and,
/// once every chunk is claimed (and the claim published), from the other's: every slot is
/// handed out once, and the table is full only when all are.
#[test]
fn shards_take_their_own_chunks_then_each_others() {
    loom::model(|| {
        // Two chunks of two slots.
        let t = Arc::new(Table::<u32>::new(4, 2));
        let t2 = Arc::clone(&t);
        let other = thread::spawn(move || t2.reserve(1, 7).unwrap().handle());
        let mut handles: Vec<_> = (0..2).map(|v| t.reserve(0, v).unwrap().handle()).collect();
        handles.push(other.join().unwrap());
        // Shard 0's chunk is out and none is left to claim: the rest of shard 1's.
        handles.push(t.reserve(0, 8).unwrap().handle());
        assert!(
            t.reserve(0, 9).is_err() && t.reserve(1, 9).is_err(),
            "all four out"
        );
        each_slot_once(&handles, 4);
        for h in handles {
            assert_eq!(t.phase(h), Ok(QUEUED));
        }
    });
}

/// Two producers of one shard find it without a chunk and both claim one: one becomes the
/// shard's, the other's producer keeps its slot and gives the rest of its chunk to the free
/// stack. Every slot is handed out once, and the table is full only when all are.
#[test]
fn producers_of_one_shard_racing_to_claim_a_chunk_strand_nothing() {
    loom::model(|| {
        // Two chunks of two slots, one shard.
        let t = Arc::new(Table::<u32>::new(4, 1));
        let t2 = Arc::clone(&t);
        let other = thread::spawn(move || t2.reserve(0, 1).unwrap().handle());
        let mut handles = vec![t.reserve(0, 2).unwrap().handle()];
        handles.push(other.join().unwrap());
        handles.extend((0..2).map(|v| t.reserve(0, v).unwrap().handle()));
        assert!(t.reserve(0, 9).is_err(), "all four out");
        each_slot_once(&handles, 4);
    });
}

/// Two producers pop one free stack while one of them gives a slot back (the ABA shape: a
/// head read, popped and pushed back in between): no slot is handed to both.
#[test]
fn free_stack_aba_hands_each_slot_once() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(2, 1));
        let r0 = t.reserve(0, 0).unwrap();
        let r1 = t.reserve(0, 0).unwrap();
        t.unreserve(0, r1);
        t.unreserve(0, r0);
        let t2 = Arc::clone(&t);
        let other = thread::spawn(move || t2.reserve(0, 1).ok().map(|r| r.handle()));
        let first = t.reserve(0, 2).unwrap();
        let h_first = first.handle();
        t.unreserve(0, first);
        let mine = t.reserve(0, 3).ok().map(|r| r.handle());
        let theirs = other.join().unwrap();
        let theirs = theirs.expect("two slots for at most two holders");
        let mine = mine.expect("two slots for at most two holders");
        assert_ne!(mine.index(), theirs.index());
        assert_ne!(h_first, mine);
        assert_eq!(t.phase(h_first), Err(TicketError::NotFound));
    });
}

/// An API thread cancels by a handle while the consumer finishes that request, frees its
/// slot and a producer reuses it: the cancel applies to the old request or is refused, and
/// never touches the new occupant.
#[test]
fn stale_cancel_never_touches_the_new_occupant() {
    loom::model(|| {
        let t = Arc::new(Table::<u32>::new(1, 1));
        let (p, mut c) = queue(Arc::clone(&t));
        let old = p.push(t.reserve(0, 1).unwrap()).unwrap();
        let t2 = Arc::clone(&t);
        let api = thread::spawn(move || t2.cancel(old));
        let Pop::Item(e) = c.pop() else { panic!() };
        t.finish(&e);
        let mut batch = FreeBatch::new();
        t.free(&mut batch, e);
        t.release(0, &mut batch);
        let new = p.push(t.reserve(0, 2).unwrap()).unwrap();
        assert_eq!(new.index(), old.index());
        let outcome = api.join().unwrap();
        assert!(matches!(
            outcome,
            Ok(Changed { phase: QUEUED, .. }) | Err(TicketError::Done) | Err(TicketError::NotFound)
        ));
        assert_eq!(t.phase(new), Ok(QUEUED), "the new occupant is untouched");
        assert!(t.cancel(new).unwrap().must_notify, "no stale NOTIFY either");
    });
}
