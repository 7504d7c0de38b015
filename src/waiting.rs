//! [`WaitingQueue`]: the scheduler's wait queue on its own, for engines that keep their own
//! scheduling loop and only want triage's order (the Python bindings' vLLM queue uses it).
//!
//! It is the same structure the [`crate::Scheduler`] queues its waiting requests in
//! (slab, timestamp buckets, aging by whole buckets, max wait), driven by one thread with
//! an explicit `now`: there are no rings, budgets or outcomes here.

use crate::class::{ladder_break, Class, LadderBreak, MAX_CLASSES};
use crate::config::SchedulerConfig;
use crate::hash::FastMap;
use crate::queue::slab::{Entry, Slab};
use crate::queue::{Candidate, Tiers};
use crate::request::{RequestId, RequestSpec};
use crate::time::Timestamp;
use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

/// How a [`WaitingQueue`] orders and ages its requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingOptions {
    /// How many classes (1 to [`MAX_CLASSES`]); class 0 is the most urgent.
    pub classes: usize,
    /// Width of the arrival-time buckets that age together (at least 1 ns).
    pub bucket_width: Duration,
    /// Per class, the age at which a waiting request leaves it for the class above; `None`
    /// never (always `None` for class 0). Thresholds must grow with urgency.
    pub promote_after: Vec<Option<Duration>>,
    /// A request waiting this long is overdue and goes before every other; `None` never.
    pub max_wait: Option<Duration>,
}

impl WaitingOptions {
    /// Strict class order and FIFO by arrival inside a class: no aging, no max wait.
    pub fn without_aging(classes: usize) -> Self {
        Self {
            classes,
            bucket_width: Duration::from_millis(10),
            promote_after: vec![None; classes],
            max_wait: None,
        }
    }

    /// The classes, bucket width, aging thresholds and max wait of a scheduler
    /// configuration (validate it first: [`SchedulerConfig::validate`]).
    pub fn from_config(config: &SchedulerConfig) -> Self {
        Self {
            classes: config.classes.len(),
            bucket_width: config.bucket_width(),
            promote_after: config.promote_after(),
            max_wait: Some(config.max_wait()),
        }
    }

    fn validate(&self) -> Result<(), WaitingError> {
        let bad = |what: String| Err(WaitingError::Options(what));
        if self.classes == 0 || self.classes > MAX_CLASSES {
            return bad(format!(
                "classes must be 1 to {MAX_CLASSES}, not {}",
                self.classes
            ));
        }
        if self.promote_after.len() != self.classes {
            return bad(format!(
                "promote_after needs one entry per class ({}), not {}",
                self.classes,
                self.promote_after.len()
            ));
        }
        if self.bucket_width.is_zero() {
            return bad("bucket_width must be at least 1 ns".into());
        }
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let thresholds: Vec<Option<u64>> = self.promote_after.iter().map(|t| t.map(ns)).collect();
        for c in 0..self.classes {
            let t = self.promote_after[c].unwrap_or_default();
            match ladder_break(&thresholds, c) {
                Some(LadderBreak::TopClassPromotes) => {
                    return bad(
                        "promote_after[0] must be None: the top class has nowhere to go".into(),
                    )
                }
                Some(LadderBreak::Zero) => {
                    return bad(format!("promote_after[{c}] must be more than zero"))
                }
                Some(LadderBreak::NotGrowing { above, at }) => {
                    let at = Duration::from_nanos(at);
                    return bad(format!(
                        "promote_after[{c}] ({t:?}) must be less than promote_after[{above}] \
                         ({at:?}): thresholds grow with urgency"
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// Why a [`WaitingQueue`] call was refused (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitingError {
    /// A request with this id is already queued.
    Duplicate {
        /// The id.
        id: u64,
    },
    /// The class does not exist in this queue.
    UnknownClass {
        /// The class asked for.
        class: Class,
        /// How many classes the queue has.
        classes: usize,
    },
    /// The options are inconsistent; the message says which field and why.
    Options(String),
}

impl fmt::Display for WaitingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitingError::Duplicate { id } => write!(f, "request {id} is already queued"),
            WaitingError::UnknownClass { class, classes } => write!(
                f,
                "class index {} does not exist (the queue has {classes} classes)",
                class.index()
            ),
            WaitingError::Options(why) => write!(f, "invalid waiting-queue options: {why}"),
        }
    }
}

impl std::error::Error for WaitingError {}

/// Maps of `u64` keys (request ids, arrival nanoseconds).
type U64Map<V> = FastMap<u64, V>;

/// The requests that share one arrival time, sorted by `(item, id)` (see [`WaitingQueue`]).
enum Tie {
    One(u32),
    Many(Vec<u32>),
}

/// The caller's id and item of a queued request, by slab key.
struct Slot<T> {
    id: u64,
    item: T,
}

/// An ordered, single-threaded queue of waiting requests with triage's contract:
///
/// * **order**: most urgent effective class first; inside a class by arrival, then by the
///   item's [`Ord`] (the tie-break for equal arrivals), then by id;
/// * **aging**: a request's effective class rises as it ages, by whole arrival buckets
///   (see [`WaitingOptions::promote_after`]);
/// * **max wait**: a request that waited past [`WaitingOptions::max_wait`] goes before
///   every other, oldest first.
///
/// Each request has a caller-chosen `u64` id (unique among queued requests) and carries an
/// item `T` that the queue hands back. [`WaitingQueue::requeue`] puts a request back at its
/// original arrival (a preempted request keeps its place in line).
///
/// Time is whatever the caller passes as `now` (the same clock as the arrivals). It never
/// goes backwards: a `now` earlier than one already seen counts as that latest one.
///
/// | operation | cost |
/// |---|---|
/// | `insert`, `requeue` | O(log B) for B buckets of its class, plus O(k) for k requests of its bucket that sort after it |
/// | `pop`, `peek` | O(C·R + log B): the heads of C classes, each a bucket of R ≤ 2C runs |
/// | `remove` | O(log B + C) |
/// | aging, at any call with a later `now` | O(C + buckets moved × C); no request is visited |
/// | `iter_at` | O(n log n) |
///
/// ```
/// use std::time::Duration;
/// use triage::{Class, Timestamp, WaitingOptions, WaitingQueue};
///
/// let ms = Timestamp::from_millis;
/// // Two classes; class 1 moves up after 100 ms; anything 1 s old is overdue.
/// let mut q = WaitingQueue::new(WaitingOptions {
///     classes: 2,
///     bucket_width: Duration::from_millis(10),
///     promote_after: vec![None, Some(Duration::from_millis(100))],
///     max_wait: Some(Duration::from_secs(1)),
/// })?;
/// q.insert(1, "batch", Class::from_index(1), ms(0), ms(0))?;
/// q.insert(2, "chat", Class::from_index(0), ms(50), ms(50))?;
/// // At 60 ms the class order holds...
/// assert_eq!(q.peek(ms(60)).map(|(id, item)| (id, *item)), Some((2, "chat")));
/// // ...at 120 ms the batch request has aged into class 0, where it is older.
/// let order: Vec<u64> = q.iter_at(ms(120)).map(|(id, _)| id).collect();
/// assert_eq!(order, [1, 2]);
/// assert_eq!(q.pop(ms(120)), Some((1, "batch")));
/// // Removal by id; unknown ids are not an error.
/// assert_eq!(q.remove(2), Some("chat"));
/// assert_eq!(q.remove(2), None);
/// assert!(q.is_empty());
/// # Ok::<(), triage::WaitingError>(())
/// ```
pub struct WaitingQueue<T> {
    options: WaitingOptions,
    slab: Slab,
    queue: Tiers,
    slots: Vec<Option<Slot<T>>>,
    ids: U64Map<u32>,
    /// Requests by arrival (ns), for the tie-break among equal arrivals.
    ties: U64Map<Tie>,
    max_wait: Duration,
    now: Timestamp,
    /// The request the last `peek` found, while it is still the next one: nothing was
    /// inserted or removed since, and a later `now` neither promoted a bucket nor made an
    /// older request overdue (see `advance`). The next `pop` takes it without looking
    /// again: vLLM's scheduler peeks and then pops each request it considers, with the
    /// clock moving in between.
    peeked: Option<Candidate>,
}

/// The label of the only request of its arrival time (labels order equal arrivals).
const MID_LABEL: u64 = 1 << 63;

impl<T: Ord> WaitingQueue<T> {
    /// An empty queue, or why the options are inconsistent.
    pub fn new(options: WaitingOptions) -> Result<Self, WaitingError> {
        options.validate()?;
        let queue = Tiers::new(
            options.classes,
            options.bucket_width,
            options.promote_after.clone(),
            false, // one lane: this queue knows no tenants
            false, // (class, arrival) order, with the aging ladder if configured
        );
        Ok(Self {
            max_wait: options.max_wait.unwrap_or(Duration::MAX),
            options,
            slab: Slab::default(),
            queue,
            slots: Vec::new(),
            ids: U64Map::default(),
            ties: U64Map::default(),
            now: Timestamp::ZERO,
            peeked: None,
        })
    }

    /// The options it was built with.
    pub fn options(&self) -> &WaitingOptions {
        &self.options
    }

    /// Requests queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.len() == 0
    }

    /// Whether a request with this id is queued.
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains_key(&id)
    }

    /// The item of the queued request `id`.
    pub fn get(&self, id: u64) -> Option<&T> {
        let key = *self.ids.get(&id)?;
        self.slots[key as usize].as_ref().map(|s| &s.item)
    }

    /// The latest `now` seen.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Queues a new request of base class `class` that arrived at `arrival`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage::{Class, Timestamp, WaitingOptions, WaitingQueue};
    /// let ms = |n: u64| Timestamp::from_millis(n);
    /// let mut q = WaitingQueue::new(WaitingOptions::without_aging(3))?;
    /// q.insert(7, "a", Class::LOW, ms(0), ms(0))?;
    /// // An id already queued is refused and changes nothing.
    /// assert!(q.insert(7, "b", Class::HIGH, ms(1), ms(1)).is_err());
    /// assert_eq!(q.get(7), Some(&"a"));
    /// # Ok::<(), triage::WaitingError>(())
    /// ```
    pub fn insert(
        &mut self,
        id: u64,
        item: T,
        class: Class,
        arrival: Timestamp,
        now: Timestamp,
    ) -> Result<(), WaitingError> {
        self.add(id, item, class, arrival, now, false)
    }

    /// Queues a request that was queued before (preempted, or skipped by the caller this
    /// iteration) at its original `arrival`: it goes back ahead of every later arrival of
    /// its class, where it was.
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage::{Class, Timestamp, WaitingOptions, WaitingQueue};
    /// let ms = |n: u64| Timestamp::from_millis(n);
    /// let mut q = WaitingQueue::new(WaitingOptions::without_aging(3))?;
    /// q.insert(1, "first", Class::LOW, ms(0), ms(0))?;
    /// q.insert(2, "second", Class::LOW, ms(5), ms(5))?;
    /// let (id, item) = q.pop(ms(6)).unwrap();
    /// // Skipped this iteration: back at its arrival, ahead of the later one.
    /// q.requeue(id, item, Class::LOW, ms(0), ms(6))?;
    /// assert_eq!(q.pop(ms(7)), Some((1, "first")));
    /// # Ok::<(), triage::WaitingError>(())
    /// ```
    pub fn requeue(
        &mut self,
        id: u64,
        item: T,
        class: Class,
        arrival: Timestamp,
        now: Timestamp,
    ) -> Result<(), WaitingError> {
        self.add(id, item, class, arrival, now, true)
    }

    /// The next request at `now`, without taking it.
    pub fn peek(&mut self, now: Timestamp) -> Option<(u64, &T)> {
        self.advance(now);
        let key = match self.peeked {
            Some(cand) => cand.key,
            None => {
                let cand = self.queue.pop_candidate(
                    &mut self.slab,
                    self.now,
                    self.max_wait,
                    0,
                    &mut |_, _| false,
                )?;
                self.queue.restore(&mut self.slab, cand);
                self.peeked = Some(cand);
                cand.key
            }
        };
        let slot = self.slots[key as usize].as_ref()?;
        Some((slot.id, &slot.item))
    }

    /// Takes the next request at `now`: the oldest overdue one if any, else the head of the
    /// most urgent non-empty class.
    pub fn pop(&mut self, now: Timestamp) -> Option<(u64, T)> {
        self.advance(now);
        if let Some(cand) = self.peeked {
            self.queue.remove(&mut self.slab, cand.key);
            return Some(self.forget(cand.key));
        }
        let cand =
            self.queue
                .pop_candidate(&mut self.slab, self.now, self.max_wait, 0, &mut |_, _| {
                    false
                })?;
        Some(self.forget(cand.key))
    }

    /// Takes the queued request `id` out; `None` (and nothing changes) if it is not queued.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let key = *self.ids.get(&id)?;
        self.queue.remove(&mut self.slab, key);
        Some(self.forget(key).1)
    }

    /// Takes every queued request of `ids` out (ids not queued are ignored) and hands
    /// back their items, in queue-storage order. Faster than one [`WaitingQueue::remove`]
    /// per id for large batches: the requests are visited in the order they were stored,
    /// which follows arrival, so neighbouring removals share their buckets' memory.
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage::{Class, Timestamp, WaitingOptions, WaitingQueue};
    /// let ms = |n: u64| Timestamp::from_millis(n);
    /// let mut q = WaitingQueue::new(WaitingOptions::without_aging(3))?;
    /// for id in 0..4 {
    ///     q.insert(id, id * 10, Class::MEDIUM, ms(id), ms(id))?;
    /// }
    /// // Unknown ids (9) are skipped; the removed come back in storage order.
    /// let removed = q.remove_many([3, 9, 1]);
    /// assert_eq!(removed, vec![(1, 10), (3, 30)]);
    /// assert_eq!(q.len(), 2);
    /// # Ok::<(), triage::WaitingError>(())
    /// ```
    pub fn remove_many(&mut self, ids: impl IntoIterator<Item = u64>) -> Vec<(u64, T)> {
        let mut keys: Vec<u32> = ids
            .into_iter()
            .filter_map(|id| self.ids.get(&id).copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                self.queue.remove(&mut self.slab, key);
                self.forget(key)
            })
            .collect()
    }

    /// The effective class of the queued request `id` at `now` (its base class, or a more
    /// urgent one it aged into).
    pub fn effective_class(&mut self, id: u64, now: Timestamp) -> Option<Class> {
        self.advance(now);
        let e = &self.slab[*self.ids.get(&id)?];
        Some(
            self.queue
                .effective_class(e.spec.class, e.arrival, self.now),
        )
    }

    /// Every queued request in the order [`WaitingQueue::pop`] would take them at `now`.
    pub fn iter_at(&mut self, now: Timestamp) -> impl Iterator<Item = (u64, &T)> + '_ {
        self.advance(now);
        let mut keys = self.queue.keys_in_order(&mut self.slab);
        if self.options.max_wait.is_some() {
            // Overdue requests come first, oldest first, whatever their class.
            let (now, max_wait, slab) = (self.now, self.max_wait, &self.slab);
            let (mut overdue, rest): (Vec<u32>, Vec<u32>) = keys
                .into_iter()
                .partition(|&k| now.saturating_since(slab[k].arrival) >= max_wait);
            overdue.sort_by_key(|&k| slab[k].order_key());
            overdue.extend(rest);
            keys = overdue;
        }
        let slots = &self.slots;
        keys.into_iter()
            .filter_map(move |k| slots[k as usize].as_ref().map(|s| (s.id, &s.item)))
    }

    /// Empties the queue, handing back every request in [`WaitingQueue::iter_at`] order.
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage::{Class, Timestamp, WaitingOptions, WaitingQueue};
    /// let ms = |n: u64| Timestamp::from_millis(n);
    /// let mut q = WaitingQueue::new(WaitingOptions::without_aging(3))?;
    /// q.insert(1, "low", Class::LOW, ms(0), ms(0))?;
    /// q.insert(2, "high", Class::HIGH, ms(1), ms(1))?;
    /// // Everything, in the order `pop` would give it.
    /// assert_eq!(q.drain_at(ms(2)), vec![(2, "high"), (1, "low")]);
    /// assert!(q.is_empty());
    /// # Ok::<(), triage::WaitingError>(())
    /// ```
    pub fn drain_at(&mut self, now: Timestamp) -> Vec<(u64, T)> {
        let ids: Vec<u64> = self.iter_at(now).map(|(id, _)| id).collect();
        ids.into_iter()
            .filter_map(|id| self.remove(id).map(|item| (id, item)))
            .collect()
    }

    /// Checks the structure's invariants (tests): O(n).
    #[doc(hidden)]
    pub fn check(&self) -> Result<(), String> {
        self.queue.check(&self.slab)?;
        if self.ids.len() != self.queue.len() || self.slab.len() != self.queue.len() {
            return Err(format!(
                "{} ids, {} slab entries, {} queued",
                self.ids.len(),
                self.slab.len(),
                self.queue.len()
            ));
        }
        let tied: usize = self
            .ties
            .values()
            .map(|t| match t {
                Tie::One(_) => 1,
                Tie::Many(v) => v.len(),
            })
            .sum();
        if tied != self.queue.len() {
            return Err(format!("{tied} tied entries, {} queued", self.queue.len()));
        }
        Ok(())
    }

    /// Moves time to `now` (never back): promotes the buckets that aged, and keeps the
    /// peeked request only if it is still the next one. Without a promotion the class
    /// heads stay; an overdue peeked request stays the oldest overdue (whatever turns
    /// overdue later arrived after it); one not overdue stays next unless something has
    /// turned overdue meanwhile.
    fn advance(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
            let promoted = self
                .queue
                .promote(&mut self.slab, now, &mut [0; MAX_CLASSES]);
            let stale = self.peeked.is_some_and(|p| {
                promoted > 0
                    || (!p.overdue
                        && self
                            .queue
                            .oldest_past(&mut self.slab, now, self.max_wait)
                            .is_some())
            });
            if stale {
                self.peeked = None;
            }
        }
    }

    fn add(
        &mut self,
        id: u64,
        item: T,
        class: Class,
        arrival: Timestamp,
        now: Timestamp,
        again: bool,
    ) -> Result<(), WaitingError> {
        if class.index() >= self.options.classes {
            return Err(WaitingError::UnknownClass {
                class,
                classes: self.options.classes,
            });
        }
        if self.ids.contains_key(&id) {
            return Err(WaitingError::Duplicate { id });
        }
        self.advance(now);
        self.peeked = None;
        let key = self.slab.insert(Entry::new(
            crate::ingress::table::Entry::detached(),
            RequestSpec::new(MID_LABEL, class, 0, 0).into(),
            arrival,
        ));
        self.slab[key].tenant = 0; // the one lane
        let k = key as usize;
        if k >= self.slots.len() {
            self.slots.resize_with(k + 1, || None);
        }
        self.slots[k] = Some(Slot { id, item });
        self.ids.insert(id, key);
        let label = self.tie_label(key, arrival);
        self.slab[key].spec.id = RequestId(label);
        self.enqueue(key, again);
        Ok(())
    }

    fn enqueue(&mut self, key: u32, again: bool) {
        if again {
            self.queue.insert_again(&mut self.slab, key, self.now);
        } else {
            self.queue.insert_new(&mut self.slab, key, self.now);
        }
    }

    /// `(item, id)` order of two slab keys.
    fn cmp_keys(&self, a: u32, b: u32) -> Ordering {
        let (sa, sb) = (
            self.slots[a as usize].as_ref().expect("live slot"),
            self.slots[b as usize].as_ref().expect("live slot"),
        );
        sa.item.cmp(&sb.item).then(sa.id.cmp(&sb.id))
    }

    /// Records `key` among the requests that arrived at `arrival` and returns the label that
    /// places it among them (the wait queue orders equal arrivals by label). Relabels the
    /// others, re-queueing them in place, when no label is left between its neighbours.
    fn tie_label(&mut self, key: u32, arrival: Timestamp) -> u64 {
        let mut members = match self.ties.entry(arrival.0) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Tie::One(key));
                return MID_LABEL;
            }
            std::collections::hash_map::Entry::Occupied(o) => match o.remove() {
                Tie::One(other) => vec![other],
                Tie::Many(v) => v,
            },
        };
        let pos = members.partition_point(|&m| self.cmp_keys(m, key) == Ordering::Less);
        let lo = if pos == 0 {
            0
        } else {
            self.slab[members[pos - 1]].spec.id.0
        };
        let hi = members
            .get(pos)
            .map_or(u64::MAX, |&m| self.slab[m].spec.id.0);
        members.insert(pos, key);
        let label = if hi - lo >= 2 {
            lo + (hi - lo) / 2
        } else {
            // No room: spread every label of the group evenly and re-queue the others.
            let step = u64::MAX / (members.len() as u64 + 1);
            let mut mine = 0;
            for (i, &m) in members.iter().enumerate() {
                let l = step * (i as u64 + 1);
                if m == key {
                    mine = l;
                } else if self.slab[m].spec.id.0 != l {
                    let again = self.slab[m].late;
                    self.queue.remove(&mut self.slab, m);
                    self.slab[m].spec.id = RequestId(l);
                    self.enqueue(m, again);
                }
            }
            mine
        };
        self.ties.insert(arrival.0, Tie::Many(members));
        label
    }

    /// Drops every trace of `key` (already unlinked from the wait queue).
    fn forget(&mut self, key: u32) -> (u64, T) {
        self.peeked = None;
        let arrival = self.slab[key].arrival.0;
        // One probe in the usual case (the only request of its arrival time).
        if let Some(Tie::Many(mut v)) = self.ties.remove(&arrival) {
            v.retain(|&m| m != key);
            let rest = if v.len() == 1 {
                Tie::One(v[0])
            } else {
                Tie::Many(v)
            };
            self.ties.insert(arrival, rest);
        }
        self.slab.remove(key);
        let slot = self.slots[key as usize].take().expect("live slot");
        self.ids.remove(&slot.id);
        (slot.id, slot.item)
    }
}

impl<T> fmt::Debug for WaitingQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitingQueue")
            .field("len", &self.queue.len())
            .field("options", &self.options)
            .field("now", &self.now)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    fn ids<T: Ord>(q: &mut WaitingQueue<T>, now: Timestamp) -> Vec<u64> {
        q.iter_at(now).map(|(id, _)| id).collect()
    }

    #[test]
    fn class_then_arrival_then_item_then_id() {
        let mut q = WaitingQueue::new(WaitingOptions::without_aging(3)).unwrap();
        q.insert(1, "b", Class::LOW, ms(5), ms(0)).unwrap();
        q.insert(2, "z", Class::HIGH, ms(7), ms(0)).unwrap();
        q.insert(3, "a", Class::HIGH, ms(7), ms(0)).unwrap();
        q.insert(4, "a", Class::HIGH, ms(6), ms(0)).unwrap();
        q.insert(5, "a", Class::HIGH, ms(7), ms(0)).unwrap();
        assert_eq!(ids(&mut q, ms(0)), [4, 3, 5, 2, 1]);
        let mut popped = Vec::new();
        while let Some((id, _)) = q.pop(ms(10_000_000)) {
            popped.push(id);
            q.check().unwrap();
        }
        assert_eq!(popped, [4, 3, 5, 2, 1]);
    }

    #[test]
    fn many_equal_arrivals_relabel_and_keep_order() {
        // Inserting always at the front of one arrival exhausts the label gap (64 halvings)
        // and forces relabelling; the order must stay (item, id).
        let mut q = WaitingQueue::new(WaitingOptions::without_aging(1)).unwrap();
        for i in 0..200u64 {
            q.insert(i, u64::MAX - i, Class::HIGH, ms(1), ms(0))
                .unwrap();
        }
        q.check().unwrap();
        let order = ids(&mut q, ms(0));
        assert_eq!(order, (0..200).rev().collect::<Vec<_>>());
        assert_eq!(q.remove(100), Some(u64::MAX - 100));
        assert_eq!(q.pop(ms(0)), Some((199, u64::MAX - 199)));
        q.check().unwrap();
    }

    #[test]
    fn requeue_keeps_place_and_remove_is_exact() {
        let mut q = WaitingQueue::new(WaitingOptions::without_aging(2)).unwrap();
        for i in 0..5 {
            q.insert(i, (), Class::from_index(1), ms(i), ms(i)).unwrap();
        }
        let (first, ()) = q.pop(ms(10)).unwrap();
        assert_eq!(first, 0);
        q.requeue(0, (), Class::from_index(1), ms(0), ms(10))
            .unwrap();
        assert_eq!(ids(&mut q, ms(10)), [0, 1, 2, 3, 4]);
        assert_eq!(
            q.insert(3, (), Class::HIGH, ms(0), ms(10)),
            Err(WaitingError::Duplicate { id: 3 })
        );
        assert_eq!(q.remove(3), Some(()));
        assert_eq!(q.remove(3), None);
        assert_eq!(q.len(), 4);
        q.check().unwrap();
    }

    #[test]
    fn remove_many_ignores_unknown_and_duplicate_ids() {
        let mut q = WaitingQueue::new(WaitingOptions::without_aging(2)).unwrap();
        for i in 0..10 {
            q.insert(i, i * 10, Class::from_index((i % 2) as u8), ms(i), ms(0))
                .unwrap();
        }
        let mut gone = q.remove_many([7, 3, 3, 42, 0]);
        gone.sort();
        assert_eq!(gone, [(0, 0), (3, 30), (7, 70)]);
        assert_eq!(ids(&mut q, ms(0)), [2, 4, 6, 8, 1, 5, 9]);
        q.check().unwrap();
    }

    #[test]
    fn aging_and_max_wait() {
        let mut q = WaitingQueue::new(WaitingOptions {
            classes: 3,
            bucket_width: Duration::from_millis(10),
            promote_after: vec![
                None,
                Some(Duration::from_millis(200)),
                Some(Duration::from_millis(100)),
            ],
            max_wait: Some(Duration::from_millis(500)),
        })
        .unwrap();
        q.insert(1, (), Class::LOW, ms(0), ms(0)).unwrap();
        q.insert(2, (), Class::MEDIUM, ms(50), ms(50)).unwrap();
        q.insert(3, (), Class::HIGH, ms(400), ms(400)).unwrap();
        // At 400 ms: LOW (arrived 0) aged to MEDIUM at 110 ms and to HIGH at 210 ms.
        assert_eq!(q.effective_class(1, ms(400)), Some(Class::HIGH));
        assert_eq!(ids(&mut q, ms(400)), [1, 2, 3]);
        // Time never goes backwards.
        assert_eq!(ids(&mut q, ms(0)), [1, 2, 3]);
        let mut q2 = WaitingQueue::new(WaitingOptions {
            classes: 2,
            bucket_width: Duration::from_millis(10),
            promote_after: vec![None, None],
            max_wait: Some(Duration::from_millis(500)),
        })
        .unwrap();
        q2.insert(1, (), Class::from_index(1), ms(0), ms(0))
            .unwrap();
        q2.insert(2, (), Class::HIGH, ms(10), ms(10)).unwrap();
        assert_eq!(ids(&mut q2, ms(499)), [2, 1]);
        // Overdue goes first.
        assert_eq!(ids(&mut q2, ms(500)), [1, 2]);
        assert_eq!(q2.peek(ms(500)).map(|(id, _)| id), Some(1));
        assert_eq!(q2.drain_at(ms(500)), [(1, ()), (2, ())]);
    }

    #[test]
    fn a_peek_is_not_reused_once_time_changed_the_answer() {
        let options = |promote: Option<u64>| WaitingOptions {
            classes: 2,
            bucket_width: Duration::from_millis(10),
            promote_after: vec![None, promote.map(Duration::from_millis)],
            max_wait: Some(Duration::from_millis(500)),
        };
        // An older request turns overdue between the peek and the pop.
        let mut q = WaitingQueue::new(options(None)).unwrap();
        q.insert(1, (), Class::from_index(1), ms(0), ms(0)).unwrap();
        q.insert(2, (), Class::HIGH, ms(10), ms(10)).unwrap();
        assert_eq!(q.peek(ms(499)).map(|(id, _)| id), Some(2));
        assert_eq!(q.pop(ms(500)).map(|(id, _)| id), Some(1));
        // A promotion moves an older request into the peeked one's class.
        let mut q = WaitingQueue::new(options(Some(100))).unwrap();
        q.insert(1, (), Class::from_index(1), ms(0), ms(0)).unwrap();
        q.insert(2, (), Class::HIGH, ms(10), ms(10)).unwrap();
        assert_eq!(q.peek(ms(100)).map(|(id, _)| id), Some(2));
        assert_eq!(q.pop(ms(110)).map(|(id, _)| id), Some(1));
        // Time moving on without either keeps the peeked request next.
        assert_eq!(q.peek(ms(120)).map(|(id, _)| id), Some(2));
        assert_eq!(q.pop(ms(400)).map(|(id, _)| id), Some(2));
    }

    /// The contract, computed naively: overdue requests first by (arrival, item, id), then
    /// by (effective class, arrival, item, id), the effective class from the ladder.
    fn model_order(
        o: &WaitingOptions,
        model: &[(u64, u8, Class, Timestamp)],
        now: Timestamp,
    ) -> Vec<u64> {
        let w = o.bucket_width.as_nanos() as u64;
        let eff = |base: Class, arrival: Timestamp| {
            let end = (arrival.0 / w + 1) * w;
            let mut c = base.index();
            while c > 0 {
                match o.promote_after[c] {
                    Some(t) if now.0 >= end + t.as_nanos() as u64 => c -= 1,
                    _ => break,
                }
            }
            c
        };
        let mut keyed: Vec<_> = model
            .iter()
            .map(|&(id, item, class, arrival)| {
                let overdue = o
                    .max_wait
                    .is_some_and(|m| now.saturating_since(arrival) >= m);
                let c = if overdue { 0 } else { 1 + eff(class, arrival) };
                ((c, arrival, item, id), id)
            })
            .collect();
        keyed.sort();
        keyed.into_iter().map(|(_, id)| id).collect()
    }

    #[test]
    fn random_operations_follow_the_contract() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let ladder = |promote_after: [Option<u64>; 3]| WaitingOptions {
            classes: 3,
            bucket_width: Duration::from_millis(10),
            promote_after: promote_after
                .iter()
                .map(|t| t.map(Duration::from_millis))
                .collect(),
            max_wait: Some(Duration::from_millis(500)),
        };
        // A full ladder, and one where class 1 is never promoted (so only max wait lets
        // its requests past class 0).
        let options = [
            ladder([None, Some(300), Some(100)]),
            ladder([None, None, Some(100)]),
        ];
        for case in 0..60 {
            let o = &options[case % 2];
            let mut q = WaitingQueue::new(o.clone()).unwrap();
            let mut model: Vec<(u64, u8, Class, Timestamp)> = Vec::new();
            let mut out: Vec<(u64, u8, Class, Timestamp)> = Vec::new();
            let mut now = 0u64;
            for next_id in 0..300u64 {
                now += rnd(30);
                let t = ms(now);
                match rnd(10) {
                    0..=3 => {
                        // Arrivals at most 40 ms in the past, often equal.
                        let arrival = ms(now.saturating_sub(rnd(3) * 20));
                        let (item, class) = (rnd(3) as u8, Class::from_index(rnd(3) as u8));
                        q.insert(next_id, item, class, arrival, t).unwrap();
                        model.push((next_id, item, class, arrival));
                    }
                    4 if !out.is_empty() => {
                        let r = out.swap_remove(rnd(out.len() as u64) as usize);
                        q.requeue(r.0, r.1, r.2, r.3, t).unwrap();
                        model.push(r);
                    }
                    5 | 6 => {
                        let expect = model_order(o, &model, t).first().copied();
                        let got = q.pop(t);
                        assert_eq!(got.map(|(id, _)| id), expect);
                        if let Some((id, _)) = got {
                            let i = model.iter().position(|m| m.0 == id).unwrap();
                            out.push(model.swap_remove(i));
                        }
                    }
                    7 => {
                        let id = rnd(next_id + 1);
                        let i = model.iter().position(|m| m.0 == id);
                        assert_eq!(q.remove(id).is_some(), i.is_some());
                        if let Some(i) = i {
                            model.swap_remove(i);
                        }
                    }
                    8 => {
                        let ids: Vec<u64> = (0..rnd(5)).map(|_| rnd(next_id + 1)).collect();
                        q.remove_many(ids.iter().copied());
                        model.retain(|m| !ids.contains(&m.0));
                    }
                    _ => {
                        let expect = model_order(o, &model, t).first().copied();
                        assert_eq!(q.peek(t).map(|(id, _)| id), expect);
                        assert_eq!(q.peek(t).map(|(id, _)| id), expect);
                        if rnd(2) == 0 {
                            // vLLM's pattern: peek, then pop, often with the clock moved
                            // on (across a promotion or a max-wait boundary at times).
                            now += rnd(3) * rnd(30);
                            let t = ms(now);
                            let expect = model_order(o, &model, t).first().copied();
                            assert_eq!(q.pop(t).map(|(id, _)| id), expect);
                            if let Some(id) = expect {
                                let i = model.iter().position(|m| m.0 == id).unwrap();
                                out.push(model.swap_remove(i));
                            }
                        }
                    }
                }
                // The clock may have moved on inside a peek-then-pop.
                let t = ms(now);
                assert_eq!(ids(&mut q, t), model_order(o, &model, t));
                q.check().unwrap();
            }
        }
    }

    #[test]
    fn options_are_checked() {
        let bad = WaitingOptions {
            classes: 2,
            bucket_width: Duration::from_millis(1),
            promote_after: vec![Some(Duration::from_millis(1)), None],
            max_wait: None,
        };
        assert!(matches!(
            WaitingQueue::<()>::new(bad),
            Err(WaitingError::Options(m)) if m.contains("promote_after[0]")
        ));
        let mut q = WaitingQueue::new(WaitingOptions::without_aging(2)).unwrap();
        assert_eq!(
            q.insert(1, (), Class::from_index(2), ms(0), ms(0)),
            Err(WaitingError::UnknownClass {
                class: Class::from_index(2),
                classes: 2
            })
        );
        assert!(
            WaitingQueue::<()>::new(WaitingOptions::from_config(&SchedulerConfig::default()))
                .is_ok()
        );
    }
}
