//! Loom models of the per-request ticket (`src/ticket.rs`): a client's cancel racing the
//! scheduler's admission, preemption and finish has exactly one winner.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_ticket`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use triage::loom_internals::*;
use triage::{Class, RequestId};

#[test]
fn cancel_racing_admission_has_one_winner() {
    loom::model(|| {
        let t = Arc::new(Ticket::new(RequestId(1)));
        let t1 = t.clone();
        let api = thread::spawn(move || t1.cancel().ok().map(|c| (c.phase, c.must_notify)));
        let admitted = t.transition(QUEUED, RUNNING).is_ok();
        let cancel = api
            .join()
            .unwrap()
            .expect("a live request can always be cancelled once");
        match (admitted, cancel.0) {
            // Admitted first: the cancel saw RUNNING and the engine must abort it.
            (true, RUNNING) => assert_eq!(t.finish(), CANCEL_RUNNING),
            // Cancelled first: admission lost and the request never starts.
            (false, QUEUED) => assert_eq!(t.finish(), CANCEL_QUEUED),
            other => panic!("impossible interleaving outcome {other:?}"),
        }
        assert!(cancel.1, "the first change sets NOTIFY");
    });
}

#[test]
fn cancel_racing_preemption_and_finish() {
    loom::model(|| {
        let t = Arc::new(Ticket::new(RequestId(1)));
        t.transition(QUEUED, RUNNING).unwrap();
        let t1 = t.clone();
        let api = thread::spawn(move || t1.cancel().map(|c| c.phase));
        let preempted = t.transition(RUNNING, QUEUED).is_ok();
        let seen = api.join().unwrap().unwrap();
        let last = t.finish();
        if preempted {
            assert_eq!(seen, QUEUED, "cancel after preemption sees it waiting");
            assert_eq!(last, CANCEL_QUEUED);
        } else {
            assert_eq!(seen, RUNNING);
            assert_eq!(last, CANCEL_RUNNING);
        }
        assert_eq!(t.finish(), DONE, "finish is idempotent");
    });
}

#[test]
fn racing_class_changes_notify_once_and_last_writer_wins() {
    loom::model(|| {
        let t = Arc::new(Ticket::new(RequestId(1)));
        let t1 = t.clone();
        let a = thread::spawn(move || t1.request_class(Class::HIGH).unwrap().must_notify);
        let b = t.request_class(Class::MEDIUM).unwrap().must_notify;
        let a = a.join().unwrap();
        assert!(a ^ b, "exactly one caller pushes the notice");
        t.take_notice();
        let c = t.take_requested_class().expect("a class is pending");
        assert!(c == Class::HIGH || c == Class::MEDIUM);
        assert_eq!(t.take_requested_class(), None);
    });
}
