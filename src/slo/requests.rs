//! What the SLO tracker knows about each live request, in two maps so that the large one
//! stays small per entry and cache friendly.
//!
//! Nearly every tracked request is waiting for its first admission: with 100k queued and
//! 256 running, 99.7% of them. The tracker needs only three things about such a request
//! (arrival, class, which misses were reported), which fit in 16 bytes ([`Fresh`]); the
//! output-token bookkeeping ([`Started`]) exists only once it is admitted or produces a
//! token. Keeping the two apart makes the map every queued request is inserted into 24
//! bytes a bucket instead of 72, and [`RunHasher`] keeps consecutive ids in neighbouring
//! buckets: together they cut the cache lines and pages touched per insert and per first
//! admission, which is where the tracker spent most of its time in the step benchmark.
//! Events for running requests (tokens, finish, preemption) hit the small `started` map,
//! which stays in cache.
//!
//! Those maps serve the tracker's public, id-keyed methods. The scheduler does not use
//! them: it keeps each request's [`Started`] state in the request's slab entry
//! ([`SloSlot`]) and the tracker's deadlines name the slot, so its hot path has no map
//! insert, look-up or removal per request at all.

use crate::class::Class;
use crate::hash::{mix_bytes, FIB};
use crate::request::RequestId;
use crate::time::Timestamp;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::violation::ViolationKind;

/// A hasher for request ids that keeps runs of 16 consecutive ids in consecutive buckets.
///
/// Engines number requests in order, and a step queues a batch of consecutive ids and
/// admits mostly consecutive ones, so keeping neighbours together makes a batch touch a
/// few cache lines per 16 requests instead of one or two per request. The bucket position
/// (hashbrown takes it from the low bits) is a mixed hash of `id / 16` times 16 plus
/// `id % 16`; the 7-bit tag (hashbrown takes it from the top 7 bits) is a hash of the
/// whole id, so neighbours in one group still have distinct tags.
///
/// Ids that are all multiples of 16 (or another stride) use one bucket of each run's
/// sixteen; the runs are still spread by the mixed hash, so lookups stay O(1), with the
/// table's groups less full than with a plain hash.
#[derive(Default, Clone, Copy)]
pub(crate) struct RunHasher(
    /// The hash of what was written so far (0 before anything).
    u64,
);

impl RunHasher {
    /// The bits hashbrown takes its 7-bit tag from.
    const TAG_BITS: u64 = 0x7f << 57;
    /// An odd multiplier that spreads its input over the high bits.
    const K: u64 = FIB;
}

impl Hasher for RunHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (a `RequestId` hashes as one `u64`); this keeps any
        // other input well mixed all the same.
        self.0 = mix_bytes(self.0, bytes);
    }

    fn write_u64(&mut self, id: u64) {
        let run = (id >> 4).wrapping_mul(Self::K);
        let run = run ^ (run >> 29);
        let pos = (run << 4) | (id & 15);
        let tag = id.wrapping_mul(Self::K);
        self.0 = (pos & !Self::TAG_BITS) | (tag & Self::TAG_BITS);
    }
}

/// A map keyed by request id with [`RunHasher`].
pub(crate) type RunMap<V> = HashMap<RequestId, V, BuildHasherDefault<RunHasher>>;

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

/// A request queued and neither admitted nor given an output token since: waiting, no
/// first token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fresh {
    /// When it arrived (as the scheduler stamped it).
    pub arrival: Timestamp,
    /// Its class and reported misses.
    pub tag: Tag,
}

/// A request admitted at least once or given an output token: running, or preempted and
/// waiting again.
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
        Self::from_fresh(Fresh {
            arrival,
            tag: Tag::new(class),
        })
    }

    /// The state of `f` before any admission or token.
    fn from_fresh(f: Fresh) -> Self {
        Self {
            arrival: f.arrival,
            tag: f.tag,
            admitted_once: false,
            waiting: true,
            first_token: None,
            last_token: f.arrival,
            later_tokens: 0,
        }
    }
}

/// What deadline checks and reclassification read and change, whichever map the request
/// is in.
#[derive(Debug)]
pub(crate) struct StateMut<'a> {
    /// When it arrived.
    pub arrival: Timestamp,
    /// Whether it is waiting in the queue.
    pub waiting: bool,
    /// Whether it has produced an output token.
    pub has_first_token: bool,
    /// Its class and reported misses, in its map.
    pub tag: &'a mut Tag,
}

/// A request's SLO state kept by whoever holds the request (the scheduler keeps one in
/// each slab entry), so that the tracker's events for it need no look-up by id.
///
/// It holds what [`Started`] does but the arrival, which the holder keeps anyway
/// ([`SloSlot::load`] takes it), in 24 bytes: the scheduler holds one per queued request.
///
/// The scheduler addresses its requests by slab key, and keys are reused: the tracker
/// keeps the generation of the request tracked at each key itself (`SloTracker::live`),
/// and a deadline applies only while its key's generation is still the one it carries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SloSlot {
    /// The first output token's time; meaningful only with [`SloSlot::FIRST`] set.
    first_token: Timestamp,
    /// [`Started::last_token`] (the arrival before the first token).
    last_token: Timestamp,
    /// [`Started::later_tokens`], saturating at `u32::MAX` (a scheduler's request has at
    /// most `max_new_tokens`, a `u32`, of them).
    later_tokens: u32,
    /// Its class and reported misses. Meaningless while untracked.
    tag: Tag,
    /// [`SloSlot::TRACKED`], [`SloSlot::ADMITTED`], [`SloSlot::WAITING`] and
    /// [`SloSlot::FIRST`] bits; 0 while untracked.
    flags: u8,
}

impl Default for SloSlot {
    /// Untracked.
    fn default() -> Self {
        Self {
            first_token: Timestamp::ZERO,
            last_token: Timestamp::ZERO,
            later_tokens: 0,
            tag: Tag::new(Class::from_index(0)),
            flags: 0,
        }
    }
}

impl SloSlot {
    /// The tracker tracks the request: set from `queue_held` with tracking on and a known
    /// class until the request ends; clear before, after, and always with tracking off.
    const TRACKED: u8 = 1;
    /// [`Started::admitted_once`].
    const ADMITTED: u8 = 2;
    /// [`Started::waiting`].
    const WAITING: u8 = 4;
    /// It has a first token (`first_token` is its time).
    const FIRST: u8 = 8;

    /// A tracked request in `class`, before any admission or token; `arrival` is its
    /// arrival.
    pub(crate) fn start(class: Class, arrival: Timestamp) -> Self {
        let mut slot = Self::default();
        slot.store(&Started::new(class, arrival));
        slot
    }

    /// Whether the tracker tracks the request.
    pub(crate) fn is_tracked(&self) -> bool {
        self.flags & Self::TRACKED != 0
    }

    /// The full state of a tracked request that arrived at `arrival`; `None` if untracked.
    pub(crate) fn load(&self, arrival: Timestamp) -> Option<Started> {
        self.is_tracked().then(|| Started {
            arrival,
            tag: self.tag,
            admitted_once: self.flags & Self::ADMITTED != 0,
            waiting: self.flags & Self::WAITING != 0,
            first_token: (self.flags & Self::FIRST != 0).then_some(self.first_token),
            last_token: self.last_token,
            later_tokens: u64::from(self.later_tokens),
        })
    }

    /// Makes `st` the state of the tracked request (its arrival is not kept).
    pub(crate) fn store(&mut self, st: &Started) {
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        self.flags = Self::TRACKED
            | bit(st.admitted_once, Self::ADMITTED)
            | bit(st.waiting, Self::WAITING)
            | bit(st.first_token.is_some(), Self::FIRST);
        self.first_token = st.first_token.unwrap_or(Timestamp::ZERO);
        self.last_token = st.last_token;
        self.later_tokens = u32::try_from(st.later_tokens).unwrap_or(u32::MAX);
        self.tag = st.tag;
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

/// Every live request the tracker holds, by id.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// Requests with no admission and no output token since they were queued. No id is in
    /// both `fresh` and `started`.
    fresh: RunMap<Fresh>,
    /// Requests admitted at least once or given an output token, until they end.
    started: RunMap<Started>,
}

impl Requests {
    /// How many requests are held.
    pub(crate) fn len(&self) -> usize {
        self.fresh.len() + self.started.len()
    }

    /// Starts a new request `id` in `class`, arrived at `arrival`, replacing any request
    /// held under that id.
    pub(crate) fn queue(&mut self, id: RequestId, class: Class, arrival: Timestamp) {
        if !self.started.is_empty() {
            self.started.remove(&id);
        }
        let tag = Tag::new(class);
        self.fresh.insert(id, Fresh { arrival, tag });
    }

    /// The full state of `id`, moving it to `started` first if it was fresh; `None` if
    /// not held.
    pub(crate) fn start(&mut self, id: RequestId) -> Option<&mut Started> {
        // Checked first: the small map, and re-admissions and tokens only find it there.
        if self.started.contains_key(&id) {
            return self.started.get_mut(&id);
        }
        let f = self.fresh.remove(&id)?;
        Some(self.started.entry(id).or_insert(Started::from_fresh(f)))
    }

    /// The state of a started `id`; `None` if it is fresh or not held.
    pub(crate) fn started_mut(&mut self, id: RequestId) -> Option<&mut Started> {
        self.started.get_mut(&id)
    }

    /// What deadline checks and reclassification need of `id`; `None` if not held.
    pub(crate) fn get_mut(&mut self, id: RequestId) -> Option<StateMut<'_>> {
        if let Some(s) = self.started.get_mut(&id) {
            return Some(StateMut {
                arrival: s.arrival,
                waiting: s.waiting,
                has_first_token: s.first_token.is_some(),
                tag: &mut s.tag,
            });
        }
        self.fresh.get_mut(&id).map(|f| StateMut {
            arrival: f.arrival,
            waiting: true,
            has_first_token: false,
            tag: &mut f.tag,
        })
    }

    /// Forgets `id` and returns its state; `None` if not held.
    pub(crate) fn remove(&mut self, id: RequestId) -> Option<Started> {
        if let Some(s) = self.started.remove(&id) {
            return Some(s);
        }
        self.fresh.remove(&id).map(Started::from_fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn tags_and_fresh_states_are_small() {
        let mut t = Tag::new(Class::from_index(255));
        for k in ViolationKind::ALL {
            assert!(!t.reported(k));
        }
        t.set_reported(ViolationKind::Tpot);
        t.set_class(Class::from_index(2));
        assert_eq!(t.class(), Class::from_index(2));
        assert!(t.reported(ViolationKind::Tpot));
        assert!(!t.reported(ViolationKind::Ttft) && !t.reported(ViolationKind::EndToEnd));
        assert_eq!(std::mem::size_of::<Fresh>(), 16);
    }

    #[test]
    fn slots_are_small_and_keep_every_field_but_the_arrival() {
        assert_eq!(std::mem::size_of::<SloSlot>(), 24);
        let arrival = Timestamp(7);
        let mut slot = SloSlot::start(Class::from_index(2), arrival);
        assert!(slot.is_tracked());
        assert_eq!(
            slot.load(arrival),
            Some(Started::new(Class::from_index(2), arrival))
        );
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
                last_token: Timestamp(100),
                later_tokens: 12,
            };
            slot.store(&st);
            assert_eq!(slot.load(arrival), Some(st));
            let v = slot.view(arrival).unwrap();
            assert_eq!(
                (v.waiting, v.has_first_token),
                (waiting, first_token.is_some())
            );
        }
        slot.set_waiting();
        assert!(slot.load(arrival).unwrap().waiting);
        assert!(slot.untrack());
        assert!(!slot.untrack());
        assert!(slot.load(arrival).is_none() && slot.view(arrival).is_none());
        slot.set_waiting();
        assert!(!slot.is_tracked());
        assert!(!SloSlot::default().is_tracked());
    }

    #[test]
    fn neighbouring_ids_share_groups_and_differ_in_tag() {
        let hash = |id: u64| {
            let mut h = RunHasher::default();
            h.write_u64(id);
            h.finish()
        };
        for run in [0u64, 1, 77, 1 << 40] {
            let base = hash(run * 16) & !RunHasher::TAG_BITS;
            let mut tags: Vec<u64> = (0..16).map(|j| hash(run * 16 + j) >> 57).collect();
            for j in 0..16 {
                assert_eq!(hash(run * 16 + j) & !RunHasher::TAG_BITS, base + j);
            }
            tags.sort_unstable();
            tags.dedup();
            assert!(tags.len() >= 12, "{tags:?}");
        }
        // Runs land far apart.
        let spread = (0..64u64)
            .map(|r| hash(r * 16) & 0xffff)
            .collect::<std::collections::BTreeSet<_>>();
        assert_eq!(spread.len(), 64);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Queue(u64, u8, u64),
        /// `start`, then: 0 nothing, 1 admit, 2 first token, 3 a later token.
        Start(u64, u8),
        Preempt(u64),
        Reclass(u64, u8),
        Report(u64, u8),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 0u64..12;
        prop_oneof![
            3 => (id.clone(), 0u8..3, 0u64..1_000).prop_map(|(i, c, a)| Op::Queue(i, c, a)),
            2 => (id.clone(), 0u8..4).prop_map(|(i, m)| Op::Start(i, m)),
            1 => id.clone().prop_map(Op::Preempt),
            1 => (id.clone(), 0u8..3).prop_map(|(i, c)| Op::Reclass(i, c)),
            1 => (id.clone(), 0u8..3).prop_map(|(i, k)| Op::Report(i, k)),
            2 => id.prop_map(Op::Remove),
        ]
    }

    /// What a caller sees of a request through [`Requests::get_mut`].
    fn view(s: &StateMut<'_>) -> (Timestamp, bool, bool, Tag) {
        (s.arrival, s.waiting, s.has_first_token, *s.tag)
    }

    proptest! {
        /// The two maps behave as the one map of full states they replace: after any
        /// sequence of events every request reads the same, and `start` and `remove`
        /// return the same states.
        #[test]
        fn two_maps_behave_as_one(ops in prop::collection::vec(op(), 1..200)) {
            let mut r = Requests::default();
            let mut model: HashMap<RequestId, Started> = HashMap::new();
            for op in ops {
                match op {
                    Op::Queue(i, c, a) => {
                        let (id, class, arrival) = (RequestId(i), Class::from_index(c), Timestamp(a));
                        r.queue(id, class, arrival);
                        let tag = Tag::new(class);
                        model.insert(id, Started::from_fresh(Fresh { arrival, tag }));
                    }
                    Op::Start(i, m) => {
                        let id = RequestId(i);
                        let got = r.start(id);
                        let want = model.get_mut(&id);
                        prop_assert_eq!(got.as_deref(), want.as_deref());
                        if let (Some(g), Some(w)) = (got, want) {
                            for s in [g, w] {
                                match m {
                                    1 => { s.admitted_once = true; s.waiting = false; }
                                    2 => { s.first_token = Some(Timestamp(5)); s.waiting = false; }
                                    3 => s.later_tokens += 1,
                                    _ => {}
                                }
                            }
                        }
                    }
                    Op::Preempt(i) => {
                        let id = RequestId(i);
                        if let Some(s) = r.started_mut(id) {
                            s.waiting = true;
                        }
                        if let Some(s) = model.get_mut(&id) {
                            s.waiting = true;
                        }
                    }
                    Op::Reclass(i, c) => {
                        if let Some(s) = r.get_mut(RequestId(i)) {
                            s.tag.set_class(Class::from_index(c));
                        }
                        if let Some(s) = model.get_mut(&RequestId(i)) {
                            s.tag.set_class(Class::from_index(c));
                        }
                    }
                    Op::Report(i, k) => {
                        let kind = ViolationKind::ALL[usize::from(k)];
                        if let Some(s) = r.get_mut(RequestId(i)) {
                            s.tag.set_reported(kind);
                        }
                        if let Some(s) = model.get_mut(&RequestId(i)) {
                            s.tag.set_reported(kind);
                        }
                    }
                    Op::Remove(i) => {
                        prop_assert_eq!(r.remove(RequestId(i)), model.remove(&RequestId(i)));
                    }
                }
                prop_assert_eq!(r.len(), model.len());
                for i in 0..12 {
                    let id = RequestId(i);
                    let got = r.get_mut(id).map(|s| view(&s));
                    let want = model.get_mut(&id).map(|s| {
                        (s.arrival, s.waiting, s.first_token.is_some(), s.tag)
                    });
                    prop_assert_eq!(got, want);
                    prop_assert!(!(r.fresh.contains_key(&id) && r.started.contains_key(&id)));
                }
            }
        }
    }
}
