//! The one piece of per-request state that API threads and the scheduler thread both
//! change: a single atomic word, changed only by compare-and-swap, so a cancel racing a
//! drain, an admission, a preemption or a finish has exactly one winner.
//!
//! The word packs:
//!
//! | bits | meaning |
//! |------|---------|
//! | 0–2  | phase: `QUEUED`, `RUNNING`, `CANCEL_QUEUED`, `CANCEL_RUNNING`, `DONE` |
//! | 3    | `NOTIFY`: a notice for this ticket sits in the notice queue |
//! | 4–7  | requested class + 1 from `reprioritize` (0 = none pending) |
//!
//! Transitions (API = any API thread, S = the scheduler thread):
//!
//! ```text
//! QUEUED  --S admit-->        RUNNING  --S preempt--> QUEUED
//! QUEUED  --API cancel-->     CANCEL_QUEUED  --S reap--> DONE (cancelled)
//! RUNNING --API cancel-->     CANCEL_RUNNING --S abort--> DONE (cancelled)
//! QUEUED  --S timeout/evict-> DONE          RUNNING --S finish--> DONE (finished)
//! ```
//!
//! The `NOTIFY` bit makes each ticket appear in the notice queue at most once at a time, so
//! that queue never holds more entries than there are live requests.

use crate::class::Class;
use crate::request::RequestId;
use crate::sync::{AtomicU32, Ordering};

const PHASE_MASK: u32 = 0b111;
/// Waiting (in a ring or the wait queue).
pub const QUEUED: u32 = 0;
/// Admitted and running on the engine.
pub const RUNNING: u32 = 1;
/// Cancelled while waiting; the scheduler has yet to reap it.
pub const CANCEL_QUEUED: u32 = 2;
/// Cancelled while running; the scheduler has yet to abort it.
pub const CANCEL_RUNNING: u32 = 3;
/// Ended; the outcome is counted.
pub const DONE: u32 = 4;
const NOTIFY: u32 = 1 << 3;
const CLASS_SHIFT: u32 = 4;
const CLASS_MASK: u32 = 0xF << CLASS_SHIFT;

/// What an API-side change did, when it succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Changed {
    /// The phase the change saw (QUEUED or RUNNING).
    pub phase: u32,
    /// Whether the caller set `NOTIFY` and so must push a notice.
    pub must_notify: bool,
}

/// Why an API-side change did not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The request is already cancelled (by an earlier cancel).
    Cancelled,
    /// The request has reached its terminal outcome.
    Done,
}

/// Shared per-request state. Lives in an `Arc` held by the id index, the ingress envelope
/// and the scheduler's entry.
#[derive(Debug)]
pub struct Ticket {
    /// The request's id; immutable.
    pub(crate) id: RequestId,
    /// The packed state word described in the module docs.
    state: AtomicU32,
}

/// The phase part of a state word.
pub(crate) fn phase(word: u32) -> u32 {
    word & PHASE_MASK
}

impl Ticket {
    /// A ticket for a request just submitted (phase `QUEUED`).
    pub fn new(id: RequestId) -> Self {
        Self {
            id,
            state: AtomicU32::new(QUEUED),
        }
    }

    /// The current phase. Acquire: pairs with the AcqRel CAS of whichever side last moved
    /// the phase, so the reader sees what that side wrote before it.
    pub(crate) fn phase(&self) -> u32 {
        phase(self.state.load(Ordering::Acquire))
    }

    /// API side: cancel. Exactly one of a racing cancel, admission, preemption or finish
    /// takes effect first; the others see its result.
    pub fn cancel(&self) -> Result<Changed, Refused> {
        self.update(|word| match phase(word) {
            QUEUED => Ok((word & !PHASE_MASK) | CANCEL_QUEUED),
            RUNNING => Ok((word & !PHASE_MASK) | CANCEL_RUNNING),
            CANCEL_QUEUED | CANCEL_RUNNING => Err(Refused::Cancelled),
            _ => Err(Refused::Done),
        })
    }

    /// API side: ask for a new class. The scheduler applies it when it handles the notice
    /// (or at drain, if it has not drained the request yet). A later request overwrites an
    /// earlier one that was not applied yet: the last writer wins.
    pub fn request_class(&self, class: Class) -> Result<Changed, Refused> {
        let bits = (class.index() as u32 + 1) << CLASS_SHIFT;
        self.update(|word| match phase(word) {
            QUEUED | RUNNING => Ok((word & !CLASS_MASK) | bits),
            CANCEL_QUEUED | CANCEL_RUNNING => Err(Refused::Cancelled),
            _ => Err(Refused::Done),
        })
    }

    /// The CAS loop shared by the API-side changes: applies `f` and sets `NOTIFY`.
    fn update(&self, f: impl Fn(u32) -> Result<u32, Refused>) -> Result<Changed, Refused> {
        // Relaxed: only a first guess for the CAS; the CAS re-reads the word.
        let mut word = self.state.load(Ordering::Relaxed);
        loop {
            let next = f(word)? | NOTIFY;
            // AcqRel on success: Release publishes nothing the scheduler needs beyond the
            // word itself, but Acquire makes the API side see the scheduler's last change
            // (e.g. DONE) consistently with the index it came from. Acquire on failure:
            // the retry must reason about the scheduler's latest word.
            match self
                .state
                .compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Changed {
                        phase: phase(word),
                        must_notify: word & NOTIFY == 0,
                    })
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Scheduler side: take the pending notice. Clears `NOTIFY` and returns the word as it
    /// was, so the caller acts on the latest state; a change made after this will set
    /// `NOTIFY` again and push a fresh notice.
    pub fn take_notice(&self) -> u32 {
        // AcqRel: Acquire pairs with the API side's CAS that set NOTIFY (we see the phase or
        // class it wrote); Release orders our clear before any later notice push.
        self.state.fetch_and(!NOTIFY, Ordering::AcqRel)
    }

    /// Scheduler side: take a pending class request, if any (clears it).
    pub fn take_requested_class(&self) -> Option<Class> {
        // AcqRel: same pairing as `take_notice`.
        let word = self.state.fetch_and(!CLASS_MASK, Ordering::AcqRel);
        match (word & CLASS_MASK) >> CLASS_SHIFT {
            0 => None,
            c => Some(Class::from_index((c - 1) as u8)),
        }
    }

    /// Scheduler side: move the phase from `from` to `to` if it is still `from`, keeping the
    /// other bits. Returns the phase found if it was not `from` (a cancel won).
    pub fn transition(&self, from: u32, to: u32) -> Result<(), u32> {
        // Relaxed first guess; the CAS decides.
        let mut word = self.state.load(Ordering::Relaxed);
        loop {
            if phase(word) != from {
                return Err(phase(word));
            }
            // AcqRel: the single modification order of this word is what decides the race
            // with `cancel`; Acquire on failure so the retry sees the winner's phase.
            match self.state.compare_exchange_weak(
                word,
                (word & !PHASE_MASK) | to,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Scheduler side: end the request whatever its phase, returning the phase it had. Used
    /// once the scheduler has decided the outcome (finish, reap of a cancel, timeout).
    pub fn finish(&self) -> u32 {
        // AcqRel: Acquire pairs with a racing cancel's CAS (we learn it won); Release makes
        // DONE visible to API threads that later find this ticket.
        let word = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some((w & !PHASE_MASK) | DONE)
            })
            .unwrap_or_else(|w| w);
        phase(word)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn cancel_wins_once() {
        let t = Ticket::new(RequestId(1));
        let c = t.cancel().unwrap();
        assert_eq!(c.phase, QUEUED);
        assert!(c.must_notify);
        assert_eq!(t.cancel(), Err(Refused::Cancelled));
        assert_eq!(t.transition(QUEUED, RUNNING), Err(CANCEL_QUEUED));
        assert_eq!(t.finish(), CANCEL_QUEUED);
        assert_eq!(t.cancel(), Err(Refused::Done));
    }

    #[test]
    fn notify_is_set_once_until_taken() {
        let t = Ticket::new(RequestId(1));
        assert!(t.request_class(Class::LOW).unwrap().must_notify);
        assert!(!t.request_class(Class::HIGH).unwrap().must_notify);
        t.take_notice();
        assert_eq!(t.take_requested_class(), Some(Class::HIGH));
        assert_eq!(t.take_requested_class(), None);
        assert!(t.request_class(Class::LOW).unwrap().must_notify);
    }

    #[test]
    fn cancel_while_running() {
        let t = Ticket::new(RequestId(1));
        t.transition(QUEUED, RUNNING).unwrap();
        assert_eq!(t.cancel().unwrap().phase, RUNNING);
        assert_eq!(t.transition(RUNNING, QUEUED), Err(CANCEL_RUNNING));
    }
}
