//! What the SLO tracker knows about each live request: [`Started`], its full state, kept
//! packed in the request's slab entry ([`SloSlot`]), so that the scheduler's hot path has
//! no map insert, look-up or removal per request at all.

use crate::class::Class;
use crate::time::Timestamp;

use super::violation::ViolationKind;

/// A request's class and the misses reported for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tag {
    /// Its class (the one its samples and deadlines go to).
    class: Class,
    /// [`ViolationKind::bit`]s of the misses already reported for it.
    reported: u8,
}

impl Tag {
    /// A request in `class`, nothing reported.
    pub(crate) fn new(class: Class) -> Self {
        Self { class, reported: 0 }
    }

    /// The class.
    pub(crate) fn class(self) -> Class {
        self.class
    }

    /// Moves the request to `class`.
    pub(crate) fn set_class(&mut self, class: Class) {
        self.class = class;
    }

    /// Whether a miss of `kind` was reported.
    pub(crate) fn reported(self, kind: ViolationKind) -> bool {
        self.reported & kind.bit() != 0
    }

    /// Records that a miss of `kind` was reported.
    pub(crate) fn set_reported(&mut self, kind: ViolationKind) {
        self.reported |= kind.bit();
    }
}

/// A live request's state: queued, running, or preempted and waiting again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Started {
    /// When it arrived.
    pub arrival: Timestamp,
    /// Its class and reported misses.
    pub tag: Tag,
    /// Whether it was admitted (its queue wait is recorded at the first admission only).
    pub admitted_once: bool,
    /// Whether it is in the queue (preempted and not admitted again); reports say
    /// `while_queued` then.
    pub waiting: bool,
    /// When its first output token was reported; `None` until then.
    pub first_token: Option<Timestamp>,
    /// The latest output token's time (`arrival` before the first); never decreases.
    pub last_token: Timestamp,
    /// Output tokens after the first.
    pub later_tokens: u64,
}

impl Started {
    /// A request in `class` arrived at `arrival`, before any admission or token.
    pub(crate) fn new(class: Class, arrival: Timestamp) -> Self {
        Self {
            arrival,
            tag: Tag::new(class),
            admitted_once: false,
            waiting: true,
            first_token: None,
            last_token: arrival,
            later_tokens: 0,
        }
    }
}

/// What deadline checks and reclassification read and change, wherever the request's
/// state is kept.
#[derive(Debug)]
pub(crate) struct StateMut<'a> {
    /// When it arrived.
    pub arrival: Timestamp,
    /// Whether it is waiting in the queue.
    pub waiting: bool,
    /// Whether it has produced an output token.
    pub has_first_token: bool,
    /// Its class and reported misses, where they are kept.
    pub tag: &'a mut Tag,
}

/// A request's SLO state kept by whoever holds the request (the scheduler keeps one in
/// each slab entry), so that the tracker's events for it need no look-up by id.
///
/// It holds what [`Started`] does but the arrival, which the holder keeps anyway
/// ([`SloSlot::load`] takes it), and the output-token times, which only a request that
/// has run has: those are in its [`SloTokens`], kept with its run state. 3 bytes: the
/// scheduler holds one per queued request.
///
/// The scheduler addresses its requests by slab key, and keys are reused: the tracker
/// keeps the generation of the request tracked at each key itself (`SloTracker::live`),
/// and a deadline applies only while its key's generation is still the one it carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SloSlot {
    /// Its class and reported misses. Meaningless while untracked.
    tag: Tag,
    /// [`SloSlot::TRACKED`], [`SloSlot::ADMITTED`], [`SloSlot::WAITING`] and
    /// [`SloSlot::FIRST`] bits; 0 while untracked.
    flags: u8,
}

/// What [`SloSlot::tokens`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tokens {
    /// The request is not tracked: nothing changed.
    Untracked,
    /// The first of the tokens is its first token.
    First,
    /// It had a first token; `gap_ns` passed since its previous token.
    Later {
        /// ns from its previous token to these.
        gap_ns: u64,
    },
}

/// A tracked request's output-token times, meaningful only once it has a first token
/// ([`SloSlot`]'s `FIRST` bit): before that, [`Started::last_token`] is its arrival and
/// [`Started::later_tokens`] 0, so a request that never ran needs none.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SloTokens {
    /// [`Started::first_token`].
    first_token: Timestamp,
    /// [`Started::last_token`].
    last_token: Timestamp,
    /// [`Started::later_tokens`], saturating at `u32::MAX` (a scheduler's request has at
    /// most `max_new_tokens`, a `u32`, of them).
    later_tokens: u32,
}

impl Default for SloSlot {
    /// Untracked.
    fn default() -> Self {
        Self {
            tag: Tag::new(Class::from_index(0)),
            flags: 0,
        }
    }
}

impl SloSlot {
    /// The tracker tracks the request: set from `SloTracker::queue` with tracking on and a known
    /// class until the request ends; clear before, after, and always with tracking off.
    const TRACKED: u8 = 1;
    /// [`Started::admitted_once`].
    const ADMITTED: u8 = 2;
    /// [`Started::waiting`].
    const WAITING: u8 = 4;
    /// It has a first token (its [`SloTokens`] hold its token times).
    const FIRST: u8 = 8;

    /// A tracked request in `class`, before any admission or token; `arrival` is its
    /// arrival.
    pub(crate) fn start(class: Class, arrival: Timestamp) -> Self {
        let mut slot = Self::default();
        slot.store(None, &Started::new(class, arrival));
        slot
    }

    /// Whether the tracker tracks the request.
    pub(crate) fn is_tracked(&self) -> bool {
        self.flags & Self::TRACKED != 0
    }

    /// The full state of a tracked request that arrived at `arrival`, whose token times
    /// are `tokens` (`None` for a request that never ran); `None` if untracked.
    ///
    /// # Panics
    ///
    /// If it has a first token and `tokens` is `None`.
    pub(crate) fn load(&self, tokens: Option<&SloTokens>, arrival: Timestamp) -> Option<Started> {
        self.is_tracked().then(|| {
            let t = (self.flags & Self::FIRST != 0)
                .then(|| tokens.expect("a request with a first token has run"));
            Started {
                arrival,
                tag: self.tag,
                admitted_once: self.flags & Self::ADMITTED != 0,
                waiting: self.flags & Self::WAITING != 0,
                first_token: t.map(|t| t.first_token),
                last_token: t.map_or(arrival, |t| t.last_token),
                later_tokens: t.map_or(0, |t| u64::from(t.later_tokens)),
            }
        })
    }

    /// Makes `st` the state of the tracked request (its arrival is not kept; its token
    /// times go to `tokens` once it has a first token).
    ///
    /// # Panics
    ///
    /// If `st` has a first token and `tokens` is `None`.
    pub(crate) fn store(&mut self, tokens: Option<&mut SloTokens>, st: &Started) {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        self.flags = Self::TRACKED
            | bit(st.admitted_once, Self::ADMITTED)
            | bit(st.waiting, Self::WAITING)
            | bit(st.first_token.is_some(), Self::FIRST);
        self.tag = st.tag;
        match st.first_token {
            Some(first_token) => {
                *tokens.expect("a request with a first token has run") = SloTokens {
                    first_token,
                    last_token: st.last_token,
                    later_tokens: u32::try_from(st.later_tokens).unwrap_or(u32::MAX),
                };
            }
            None => debug_assert!(
                st.last_token == st.arrival && st.later_tokens == 0,
                "token times before the first token"
            ),
        }
    }

    /// What deadline checks and reclassification need of a tracked request that arrived
    /// at `arrival`; `None` if untracked.
    pub(crate) fn view(&mut self, arrival: Timestamp) -> Option<StateMut<'_>> {
        if !self.is_tracked() {
            return None;
        }
        Some(StateMut {
            arrival,
            waiting: self.flags & Self::WAITING != 0,
            has_first_token: self.flags & Self::FIRST != 0,
            tag: &mut self.tag,
        })
    }

    /// Marks a tracked request admitted (not waiting): what [`Started`] goes through at an
    /// admission, without unpacking it. `Some(class)` at its first admission (its queue
    /// wait is then recorded in `class`); `None` at a later one, or if untracked.
    pub(crate) fn admit(&mut self) -> Option<Class> {
        if !self.is_tracked() {
            return None;
        }
        self.flags &= !Self::WAITING;
        if self.flags & Self::ADMITTED != 0 {
            return None;
        }
        self.flags |= Self::ADMITTED;
        Some(self.tag.class)
    }

    /// `n` (at least 1) output tokens of a tracked request at `now`, whose token times are
    /// `tokens`, applied in place as [`Started`] would take them: it is no longer waiting;
    /// with a first token already, its latest token time rises to `now` and `n` more come
    /// after the first ([`Tokens::Later`], with the gap since its previous token); else
    /// `now` is its first token and the other `n - 1` come after it ([`Tokens::First`]).
    /// [`Tokens::Untracked`] (nothing changed) if untracked.
    ///
    /// # Panics
    ///
    /// If it is tracked and `tokens` is `None`.
    pub(crate) fn tokens(
        &mut self,
        tokens: Option<&mut SloTokens>,
        now: Timestamp,
        n: u32,
    ) -> Tokens {
        if !self.is_tracked() {
            return Tokens::Untracked;
        }
        let t = tokens.expect("a request with a first token has run");
        self.flags &= !Self::WAITING;
        if self.flags & Self::FIRST != 0 {
            let gap_ns = now.0.saturating_sub(t.last_token.0);
            t.last_token = t.last_token.max(now);
            t.later_tokens = t.later_tokens.saturating_add(n);
            return Tokens::Later { gap_ns };
        }
        self.flags |= Self::FIRST;
        *t = SloTokens {
            first_token: now,
            last_token: now,
            later_tokens: n - 1,
        };
        Tokens::First
    }

    /// Whether it is tracked and has its first token.
    pub(crate) fn has_first_token(&self) -> bool {
        self.flags & Self::FIRST != 0
    }

    /// Its class and reported misses (meaningless while untracked).
    pub(crate) fn tag_mut(&mut self) -> &mut Tag {
        &mut self.tag
    }

    /// Marks a tracked request waiting (preempted).
    pub(crate) fn set_waiting(&mut self) {
        if self.is_tracked() {
            self.flags |= Self::WAITING;
        }
    }

    /// Stops tracking; returns whether it was tracked.
    pub(crate) fn untrack(&mut self) -> bool {
        let was = self.is_tracked();
        self.flags = 0;
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_class_and_reports() {
        let mut t = Tag::new(Class::from_index(255));
        for k in ViolationKind::ALL {
            assert!(!t.reported(k));
        }
        t.set_reported(ViolationKind::Tpot);
        t.set_class(Class::from_index(2));
        assert_eq!(t.class(), Class::from_index(2));
        assert!(t.reported(ViolationKind::Tpot));
        assert!(!t.reported(ViolationKind::Ttft) && !t.reported(ViolationKind::EndToEnd));
    }

    #[test]
    fn slots_are_small_and_keep_every_field_but_the_arrival() {
        assert_eq!(std::mem::size_of::<SloSlot>(), 3);
        let arrival = Timestamp(7);
        let mut slot = SloSlot::start(Class::from_index(2), arrival);
        assert!(slot.is_tracked());
        assert_eq!(
            slot.load(None, arrival),
            Some(Started::new(Class::from_index(2), arrival))
        );
        let mut tokens = SloTokens::default();
        let mut tag = Tag::new(Class::from_index(1));
        tag.set_reported(ViolationKind::EndToEnd);
        for (admitted_once, waiting, first_token) in [
            (true, false, Some(Timestamp(0))),
            (false, true, None),
            (true, true, Some(Timestamp(u64::MAX))),
        ] {
            let st = Started {
                arrival,
                tag,
                admitted_once,
                waiting,
                first_token,
                // Before the first token: the arrival, and no later tokens.
                last_token: first_token.map_or(arrival, |_| Timestamp(100)),
                later_tokens: first_token.map_or(0, |_| 12),
            };
            slot.store(Some(&mut tokens), &st);
            assert_eq!(slot.load(Some(&tokens), arrival), Some(st));
            if first_token.is_none() {
                // A request that never ran needs no token times.
                assert_eq!(slot.load(None, arrival), Some(st));
            }
            let v = slot.view(arrival).unwrap();
            assert_eq!(
                (v.waiting, v.has_first_token),
                (waiting, first_token.is_some())
            );
        }
        slot.set_waiting();
        assert!(slot.load(Some(&tokens), arrival).unwrap().waiting);
        assert!(slot.untrack());
        assert!(!slot.untrack());
        assert!(slot.load(None, arrival).is_none() && slot.view(arrival).is_none());
        slot.set_waiting();
        assert!(!slot.is_tracked());
        assert!(!SloSlot::default().is_tracked());
    }
}
