//! The wait queue: every waiting request, grouped by effective class and, inside a class,
//! by arrival-time bucket. Owned by the scheduler thread; no synchronisation.
//!
//! # Aging without scanning
//!
//! A request's effective class is a pure function of its base class and its age:
//! `eff = min(base, ladder(age))`, where class `c` is left once a request's age passes
//! `promote_after[c]` (thresholds grow with urgency, so the ladder is monotone). All
//! requests that arrived in the same bucket (`arrival / width`) and share a base class
//! therefore move together. A class holds its buckets in index order; each bucket holds
//! sorted intrusive lists (*runs*): two per base class, for requests queued on arrival and
//! queued again (see `bucket::RUNS`). A step promotes by moving the oldest buckets of each
//! class whose end has aged past the class threshold to the class above, bucket by bucket:
//! runs are relinked, no request is visited, and the cost is O(classes + buckets moved ×
//! lanes holding each). Moving bottom-up lets a bucket cross several
//! classes in one step when its age warrants.
//!
//! # Order
//!
//! Inside a class the next request is the oldest bucket's oldest run head: FIFO by
//! (arrival, id) across runs. A request is promoted no earlier than its threshold and at
//! most one bucket width (plus one step) after it.
//!
//! # Arrivals pending
//!
//! With fairness off, the requests a step drains are noted in their tier's pending vector
//! ([`class_queue::Pending`]) instead of being linked: the step takes most of them back at
//! once, and taking one from the vector's front (while the vector is in order and its front
//! comes before the lanes' head) is an index bump. [`Tiers::flush`] links the rest when the
//! step ends, and before anything walks the lanes or looks a pending request up in them, so
//! the order is the lanes' order.
//!
//! # Tenants
//!
//! Inside a class, requests are held in one *lane* per tenant (see [`crate::fair`]), each
//! lane with its own buckets; with fairness off every request is in lane 0 and the order is
//! the FIFO above. With fairness on, the next request of a class is the head of the lane
//! of the backlogged tenant with the least service ([`FairShare::pick`]). A class also
//! indexes which lanes hold each bucket, so promotion moves a bucket lane by lane
//! (O(tenants in the bucket), no request visited). The class's oldest request, which max
//! wait and the queue timeout look at, is the oldest of the lanes' heads: while a step asks
//! for it, the class keeps those heads in a heap by order key (fed each new head), so an
//! admission past max wait costs O(log tenants), not a read of every lane.

mod bucket;
mod check;
mod class_queue;
pub(crate) mod list;
pub(crate) mod slab;
mod width;

use crate::class::{Class, MAX_CLASSES};
use crate::fair::share::FairShare;
use crate::time::Timestamp;
use bucket::{run_of, Bucket};
use check::contains;
use class_queue::{ClassQueue, Lane};
use list::List;
use slab::{Place, Slab, NIL};
use std::time::Duration;
use width::Width;

/// The wait queue the scheduler keeps (the standalone one for engines with their own loop
/// is `crate::WaitingQueue`, built on this).
///
/// Its *tiers* are the classes, most urgent first, and then, in deadline order, one tier per
/// class for relegated requests (those that can no longer meet their deadline): tier `c`
/// holds class `c`'s requests that can still meet theirs, tier `live + c` its relegated
/// ones, by arrival. A class's relegated tier is picked after every live tier, or, for a
/// class set by [`Tiers::relegate_within`], right after its own live tier (see `pick`).
pub(crate) struct Tiers {
    classes: Vec<ClassQueue>,
    /// The number of classes: tiers below it are live, the rest relegated.
    live: usize,
    /// Deadline order: live tiers are ordered and bucketed by deadline.
    by_deadline: bool,
    /// Per tier, the most any request queued in it was due after its arrival, in ns: 0
    /// for a tier queued by arrival; in a live tier of deadline order, its class's longest
    /// deadline (a request's own TTFT target may make it longer, `max_wait` at most).
    /// Never lowered, so it bounds every request the tier holds (see
    /// [`Tiers::arrival_bound`]).
    leads: [u64; 2 * MAX_CLASSES],
    /// At most the arrival (ns) of every waiting request: lowered as requests are queued
    /// (to their bucket's start less their tier's [`Tiers::leads`]), set to the least
    /// such bound over the tiers' first buckets whenever [`Tiers::oldest_past`] reads
    /// them. While `now - age` is below it, nobody has waited `age` and `oldest_past`
    /// answers at once: it runs for every candidate a step takes, and reading every tier
    /// each time was a tenth of a step.
    arrival_floor: u64,
    /// Bucket width (at least 1 ns).
    width: Width,
    /// `promote_after[c]`: age in ns at which class `c` is left; `None` = never.
    promote_after: Vec<Option<u64>>,
    /// Waiting requests by base class.
    by_base: [usize; MAX_CLASSES],
    len: usize,
    /// Fairness between tenants; `None` when off (every entry is in lane 0).
    fair: Option<FairShare>,
    /// Whether some class may keep its `oldest_heads` (see [`Tiers::oldest_past`]), so
    /// that the common answer, nobody overdue, visits no class to drop them.
    oldest_heads_kept: bool,
    /// Every tier once, in the order deadline order picks from them: each live tier,
    /// followed at once by its class's relegated tier if the class relegates within itself,
    /// then the other relegated tiers by class.
    pick: Vec<u8>,
}

/// A request taken off the queue for the current step to consider.
///
/// Eight bytes, so that `Option<Candidate>` is too (the niche is in [`Taken`]) and comes
/// back from a call in a register: returned through memory, it was read back wider than
/// it had been written, a stalled load for every candidate a step takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub(crate) key: u32,
    /// The class it was queued in (its base class if relegated).
    pub(crate) class: Class,
    /// The tier it was queued in (see [`Tiers`]).
    pub(crate) tier: u8,
    /// Waited past `max_wait`.
    pub(crate) overdue: bool,
    /// How it was taken.
    pub(crate) taken: Taken,
}

/// How [`Tiers::pop_candidate`] took a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Next in queue order.
    InOrder,
    /// Deadline order: next in queue order, and it can no longer meet its deadline.
    Late,
    /// Deadline order: ahead of class order on the overdue credit.
    OnCredit,
}

impl Candidate {
    /// Deadline order: it can no longer meet its deadline (see [`Tiers::pop_candidate`]).
    pub(crate) fn late(&self) -> bool {
        self.taken == Taken::Late
    }

    /// Deadline order: taken ahead of class order on the overdue credit.
    pub(crate) fn on_credit(&self) -> bool {
        self.taken == Taken::OnCredit
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Tiers {
    /// An empty queue; `fair` turns on fairness between tenants, `deadline` deadline order
    /// (entries are queued by their `due` time and may be relegated).
    pub(crate) fn new(
        classes: usize,
        width: Duration,
        promote_after: Vec<Option<Duration>>,
        fair: bool,
        deadline: bool,
    ) -> Self {
        Self {
            classes: (0..2 * classes).map(|_| ClassQueue::default()).collect(),
            live: classes,
            by_deadline: deadline,
            leads: [0; 2 * MAX_CLASSES],
            arrival_floor: u64::MAX,
            width: Width::new(nanos(width)),
            promote_after: promote_after.into_iter().map(|d| d.map(nanos)).collect(),
            by_base: [0; MAX_CLASSES],
            len: 0,
            fair: fair.then(FairShare::default),
            oldest_heads_kept: false,
            pick: (0..2 * classes as u8).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Deadline order: the classes (by index, `within[c]`) whose relegated requests are
    /// picked right after their own live ones, before any less urgent class; the others'
    /// after every live tier.
    pub(crate) fn relegate_within(&mut self, within: &[bool]) {
        let live = self.live as u8;
        let mut pick = Vec::with_capacity(2 * self.live);
        for c in 0..live {
            pick.push(c);
            if within.get(usize::from(c)).copied().unwrap_or(false) {
                pick.push(live + c);
            }
        }
        for c in 0..live {
            if !pick.contains(&(live + c)) {
                pick.push(live + c);
            }
        }
        self.pick = pick;
    }

    /// Requests waiting in effective class `c`, relegated ones included.
    pub(crate) fn class_len(&self, c: usize) -> usize {
        self.classes[c].len + self.classes[self.live + c].len
    }

    /// Relegated requests of class `c` waiting.
    pub(crate) fn relegated_len(&self, c: usize) -> usize {
        self.classes[self.live + c].len
    }

    /// Requests waiting whose base class is `c`.
    pub(crate) fn base_len(&self, c: usize) -> usize {
        self.by_base[c]
    }

    /// Requests of tenant `slot` waiting in effective class `c`.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))] // for the per-tenant metrics
    pub(crate) fn lane_len(&self, c: usize, slot: u32) -> usize {
        self.classes[c]
            .lanes
            .get(slot as usize)
            .map_or(0, |l| l.len)
    }

    /// Lane `slot` of class `c`, if made.
    fn lane(&self, c: usize, slot: u32) -> Option<&Lane> {
        self.classes.get(c)?.lanes.get(slot as usize)
    }

    /// Starts loading lane `slot` of class `c` and the tenant's counter there: a request of
    /// that tenant is about to be queued in that class (see `Scheduler::look_ahead`).
    /// Nothing for a lane not made (a tenant not held: `slot` is `NO_SLOT`).
    pub(crate) fn prefetch_lane(&self, c: usize, slot: u32) {
        if let Some(lane) = self.lane(c, slot) {
            crate::prefetch::prefetch(lane);
            if let Some(f) = &self.fair {
                f.prefetch(c, slot);
            }
        }
    }

    /// Starts loading the back of lane `slot` of class `c`, where the bucket of a request
    /// about to be queued goes. Reads the lane, so comes a little after
    /// [`Tiers::prefetch_lane`].
    pub(crate) fn prefetch_arrival(&self, c: usize, slot: u32) {
        if let Some(lane) = self.lane(c, slot) {
            // The next free place of the deque's ring: just past its second part if it
            // wraps, else past its first (or, when that ends the buffer, the buffer's
            // start, which this misses: a hint only).
            let (a, b) = lane.buckets.as_slices();
            let back = if b.is_empty() {
                a.as_ptr_range().end
            } else {
                b.as_ptr_range().end
            };
            crate::prefetch::prefetch(back);
        }
    }

    /// After a fair pick in class `c`: starts loading what the next pick will most likely
    /// read, the runner-up tenant `next`'s head entry and its lane's first two buckets (one
    /// emptied by taking its head, the next read to find the lane's new head). With many
    /// tenants each pick is another tenant's state, all cache misses; loaded while the
    /// scheduler admits the current pick, they are in cache when the next pick comes.
    fn prefetch_runner_up(&self, slab: &Slab, c: usize, next: u32) {
        let cq = &self.classes[c];
        slab.prefetch(cq.heads[next as usize]);
        let front = cq.lanes[next as usize].buckets.as_slices().0.as_ptr();
        crate::prefetch::prefetch(front);
        crate::prefetch::prefetch(front.wrapping_add(1));
    }

    /// The fair counters, when fairness is on.
    pub(crate) fn fair(&self) -> Option<&FairShare> {
        self.fair.as_ref()
    }

    /// The fair counters, when fairness is on.
    pub(crate) fn fair_mut(&mut self) -> Option<&mut FairShare> {
        self.fair.as_mut()
    }

    fn bucket_of(&self, due: Timestamp) -> u64 {
        self.width.bucket(due.0)
    }

    /// The class of tier `tier`'s requests.
    fn class_of_tier(&self, tier: usize) -> Class {
        // Not `tier % live`: a division, in every insert and candidate.
        let c = if tier >= self.live {
            tier - self.live
        } else {
            tier
        };
        Class::from_index(c as u8)
    }

    /// A bound at most the arrival of every request in bucket `b` of tier `c`: the bucket
    /// holds requests due from its start on, none due more than the tier's
    /// [`Tiers::leads`] after its arrival.
    fn arrival_bound(&self, c: usize, b: u64) -> u64 {
        b.saturating_mul(self.width.ns())
            .saturating_sub(self.leads[c])
    }

    /// Refreshes the copy of lane `slot`'s head in class `c` (fairness on), after a change
    /// to the lane's first bucket.
    fn sync_head(&mut self, slab: &Slab, c: usize, slot: u32) {
        if self.fair.is_some() {
            let cq = &mut self.classes[c];
            let head = cq.lanes[slot as usize].head(slab).unwrap_or(NIL);
            cq.set_head(slab, slot, head);
        }
    }

    /// [`Tiers::sync_head`] if bucket `b` is lane `slot`'s first.
    fn sync_head_if_first(&mut self, slab: &Slab, c: usize, slot: u32, b: u64) {
        if self.fair.is_some() && self.classes[c].lanes[slot as usize].first == b {
            self.sync_head(slab, c, slot);
        }
    }

    /// Whether bucket `b` has aged out of class `c` at `now`: its end is older than the
    /// threshold.
    fn aged_out(&self, b: u64, c: usize, now: Timestamp) -> bool {
        match self.promote_after.get(c).copied().flatten() {
            Some(t) if c > 0 => {
                let end = b.saturating_add(1).saturating_mul(self.width.ns());
                now.0 >= end.saturating_add(t)
            }
            _ => false,
        }
    }

    /// The class a request of base class `base` that arrived at `arrival` is in at `now`.
    pub(crate) fn effective_class(&self, base: Class, arrival: Timestamp, now: Timestamp) -> Class {
        self.effective_class_in(base, self.bucket_of(arrival), now)
    }

    /// [`Tiers::effective_class`] of a request in bucket `b`.
    fn effective_class_in(&self, base: Class, b: u64, now: Timestamp) -> Class {
        let mut c = base.index();
        while self.aged_out(b, c, now) {
            c -= 1;
        }
        Class::from_index(c as u8)
    }

    /// The tier an entry in bucket `b` (its `due`'s) goes to at `now`: its effective class
    /// (after aging), or its class's relegated tier.
    fn tier_of(&self, e: &slab::Entry, b: u64, now: Timestamp) -> usize {
        if e.relegated {
            self.live + e.spec.class.index()
        } else {
            self.effective_class_in(e.spec.class, b, now).index()
        }
    }

    /// Queues the entry at its place by tier, then `due` (deadline or arrival). Returns its
    /// effective class.
    fn insert(&mut self, slab: &mut Slab, key: u32, now: Timestamp) -> Class {
        // One division for the bucket, shared with the aging test.
        let b = self.bucket_of(slab[key].due);
        let tier = self.tier_of(&slab[key], b, now);
        self.link(slab, key, tier, b);
        self.note_added(slab, key, tier, b, false);
        self.class_of_tier(tier)
    }

    /// Links the entry into its run of bucket `b` of its tenant's lane in `tier`.
    fn link(&mut self, slab: &mut Slab, key: u32, tier: usize, b: u64) {
        let (run, slot) = (run_of(&slab[key]), slab[key].tenant);
        let bucket = self.classes[tier].bucket_mut(slot, b);
        bucket.run_mut(run).insert_sorted(slab, key);
        bucket.len += 1;
        self.sync_head_if_first(slab, tier, slot, b);
    }

    /// Queues a newly drained entry, as [`Tiers::insert_new`] does; with fairness off it
    /// is only noted in its tier's [`class_queue::Pending`], and linked into its lane by
    /// [`Tiers::flush`] unless a step takes it first. Returns its effective class.
    pub(crate) fn append_new(&mut self, slab: &mut Slab, key: u32, now: Timestamp) -> Class {
        if self.fair.is_some() {
            return self.insert_new(slab, key, now);
        }
        // The entry is looked up once: every `slab[key]` checks the key's chunk and entry.
        let e = &mut slab[key];
        e.late = false;
        let b = self.bucket_of(e.due);
        let tier = self.tier_of(e, b, now);
        let order = e.order_key();
        let pending = &mut self.classes[tier].pending;
        // The last key is never a taken one: taking the last clears the keys.
        if let Some(&last) = pending.keys.last() {
            pending.unordered |= slab[last].order_key() >= order;
        }
        pending.keys.push(key);
        let e = &mut slab[key];
        e.pending = true;
        self.count_queued(e, tier, b);
        self.class_of_tier(tier)
    }

    /// Links every pending entry (see [`Tiers::append_new`]) into its lane. Run before
    /// anything walks the lanes (promotion, the oldest-request search, listing) or looks a
    /// pending request up in them (its removal), and by the scheduler when a step is done:
    /// between steps nothing is pending. Linking another request into a tier, or removing
    /// one that is linked, needs no flush: [`Tiers::next_in`] weighs the lanes' head
    /// against the pending front.
    pub(crate) fn flush(&mut self, slab: &mut Slab) {
        for tier in 0..self.classes.len() {
            if self.classes[tier].pending.is_empty() {
                continue;
            }
            let mut pending = std::mem::take(&mut self.classes[tier].pending);
            self.link_pending(slab, tier, &pending.keys[pending.taken..]);
            pending.clear();
            self.classes[tier].pending = pending;
        }
    }

    /// Links `keys`, pending entries of `tier`, into their buckets of lane 0 (pending
    /// entries exist with fairness off only). Arrivals of a step mostly share a bucket: it
    /// is looked up once for each stretch of keys in it, and each key is then a sorted
    /// insertion at its run's tail. They were counted when they came, but in no lane.
    fn link_pending(&mut self, slab: &mut Slab, tier: usize, keys: &[u32]) {
        debug_assert!(self.fair.is_none());
        let width = self.width.ns();
        let cq = &mut self.classes[tier];
        let mut i = 0;
        while let Some(&first) = keys.get(i) {
            let b = self.width.bucket(slab[first].due.0);
            // Bucket `b` holds dues from `start` on, fewer than `width` past it.
            let start = b * width;
            let bucket = cq.bucket_mut(0, b);
            let before = i;
            while let Some(&key) = keys.get(i) {
                let e = &mut slab[key];
                if e.due.0 < start || e.due.0 - start >= width {
                    break;
                }
                debug_assert_eq!(e.tenant, 0, "fairness off: lane 0");
                e.pending = false;
                let run = run_of(e);
                bucket.run_mut(run).insert_sorted(slab, key);
                bucket.len += 1;
                i += 1;
            }
            cq.lanes[0].len += i - before;
        }
    }

    /// Moves a live candidate taken by [`Tiers::pop_candidate`] to its class's
    /// relegated tier, queued by arrival.
    pub(crate) fn relegate(&mut self, slab: &mut Slab, key: u32, now: Timestamp) {
        let e = &mut slab[key];
        debug_assert_eq!(e.place, Place::InHand);
        e.relegated = true;
        e.due = e.arrival;
        self.insert(slab, key, now);
    }

    /// Queues an entry that was queued before (preempted, or moved to another class) at its
    /// original arrival, in its bucket's run of re-queued requests.
    pub(crate) fn insert_again(&mut self, slab: &mut Slab, key: u32, now: Timestamp) -> Class {
        slab[key].late = true;
        self.insert(slab, key, now)
    }

    /// Queues a newly arrived entry.
    pub(crate) fn insert_new(&mut self, slab: &mut Slab, key: u32, now: Timestamp) -> Class {
        slab[key].late = false;
        self.insert(slab, key, now)
    }

    /// Puts back a candidate taken by [`Tiers::pop_candidate`] in this step, at the
    /// front of its run (or, if an earlier request joined the run since it was taken — a
    /// request relegated in the same step — at its sorted place). Candidates must be
    /// restored in reverse order of taking.
    pub(crate) fn restore(&mut self, slab: &mut Slab, cand: Candidate) {
        let (run, due, slot) = (
            run_of(&slab[cand.key]),
            slab[cand.key].due,
            slab[cand.key].tenant,
        );
        let b = self.bucket_of(due);
        let tier = usize::from(cand.tier);
        let bucket = self.classes[tier].bucket_mut(slot, b);
        let list = bucket.run_mut(run);
        if list.head != NIL && slab[list.head].order_key() < slab[cand.key].order_key() {
            list.insert_sorted(slab, cand.key);
        } else {
            list.push_front(slab, cand.key);
        }
        bucket.len += 1;
        self.sync_head_if_first(slab, tier, slot, b);
        self.note_added(slab, cand.key, tier, b, true);
    }

    /// Counts an entry just linked into bucket `b` of `tier` (and its tenant's lane), and
    /// lowers the arrival floor to it. A lane that was empty joins the fair order: lifted (a
    /// new arrival, a promotion, a re-queue) or, for a candidate `restored` unstarted in the
    /// step that took it, at its own counter.
    fn note_added(&mut self, slab: &mut Slab, key: u32, tier: usize, b: u64, restored: bool) {
        self.count_queued(&mut slab[key], tier, b);
        self.note_in_lane(tier, slab[key].tenant, restored);
    }

    /// Counts an entry queued in bucket `b` of `tier` (linked or pending) in the tier's and
    /// the queue's lengths, lowers the arrival floor to it and marks it waiting.
    fn count_queued(&mut self, e: &mut slab::Entry, tier: usize, b: u64) {
        let lead = e.due.0.saturating_sub(e.arrival.0);
        self.leads[tier] = self.leads[tier].max(lead);
        let bound = self.arrival_bound(tier, b);
        self.arrival_floor = self.arrival_floor.min(bound);
        self.classes[tier].len += 1;
        self.by_base[e.spec.class.index()] += 1;
        self.len += 1;
        e.place = Place::Waiting;
    }

    /// Counts an entry just linked into lane `slot` of `tier`; see [`Tiers::note_added`].
    fn note_in_lane(&mut self, tier: usize, slot: u32, restored: bool) {
        let lane = &mut self.classes[tier].lanes[slot as usize];
        lane.len += 1;
        if lane.len == 1 {
            if let Some(f) = &mut self.fair {
                if restored {
                    f.rejoin(tier, slot);
                } else {
                    f.join(tier, slot);
                }
            }
        }
    }

    /// Takes a waiting entry out of the queue (cancel, reprioritize, timeout).
    pub(crate) fn remove(&mut self, slab: &mut Slab, key: u32) {
        if slab[key].pending {
            // In no lane yet: linked first, with the rest of the step's arrivals.
            self.flush(slab);
        }
        assert_eq!(
            slab[key].place,
            Place::Waiting,
            "remove of an entry that is not waiting"
        );
        let b = self.bucket_of(slab[key].due);
        let base = slab[key].spec.class.index();
        let (run, slot) = (run_of(&slab[key]), slab[key].tenant as usize);
        // The run for (tenant, bucket, base, late) lives in exactly one tier: the class's
        // relegated tier, or a class at or above `base`.
        let tiers = if slab[key].relegated {
            self.live + base..=self.live + base
        } else {
            0..=base
        };
        let class = tiers
            .rev()
            .find(|&c| {
                self.classes[c]
                    .lanes
                    .get(slot)
                    .and_then(|l| l.get(b))
                    .is_some_and(|bk| bk.run(run).is_some())
            })
            .expect("a waiting entry is in its bucket's run");
        debug_assert!(contains(
            self.classes[class].lanes[slot]
                .get(b)
                .and_then(|bk| bk.run(run))
                .expect("found"),
            slab,
            key
        ));
        self.unlink_from(slab, key, class, b, run);
    }

    fn unlink_from(&mut self, slab: &mut Slab, key: u32, class: usize, b: u64, run: usize) {
        let slot = slab[key].tenant;
        let cq = &mut self.classes[class];
        let lane = &mut cq.lanes[slot as usize];
        let i = lane.find(b).expect("bucket exists");
        let bucket = &mut lane.buckets[i].1;
        bucket.run_mut(run).unlink(slab, key);
        bucket.len -= 1;
        if bucket.len == 0 {
            lane.remove_at(i);
            cq.unindex(b);
        }
        if i == 0 {
            self.sync_head(slab, class, slot);
        }
        let cq = &mut self.classes[class];
        let lane = &mut cq.lanes[slot as usize];
        lane.len -= 1;
        if lane.len == 0 {
            if let Some(f) = &mut self.fair {
                f.leave(class, slot);
            }
        }
        self.count_taken(&mut slab[key], class);
    }

    /// Takes an entry of `tier` off the tier's and the queue's lengths and marks it in hand:
    /// the reverse of [`Tiers::count_queued`].
    fn count_taken(&mut self, e: &mut slab::Entry, tier: usize) {
        self.classes[tier].len -= 1;
        self.by_base[e.spec.class.index()] -= 1;
        self.len -= 1;
        e.place = Place::InHand;
    }

    /// Takes the waiting entry `key` of tier `class` off the queue. It must head its lane,
    /// as every candidate does (a lane's head, or the oldest of the lanes' heads): its
    /// bucket is then the lane's first, whose index the lane keeps, and the division that
    /// finds a bucket from a time is not needed.
    fn take(&mut self, slab: &mut Slab, key: u32, class: usize) {
        let e = &slab[key];
        let (run, slot) = (run_of(e), e.tenant);
        let b = self.classes[class].lanes[slot as usize].first;
        debug_assert_eq!(b, self.bucket_of(e.due), "a candidate heads its lane");
        self.unlink_from(slab, key, class, b, run);
    }

    /// The next request of class `c` when none is overdue: its oldest, or with fairness on
    /// the oldest of its least-served backlogged tenant.
    fn next_of(&mut self, slab: &Slab, c: usize) -> Option<u32> {
        let Some(f) = &mut self.fair else {
            return self.classes[c].lanes.first()?.head(slab);
        };
        let head = self.classes[c].heads[f.pick(c)? as usize];
        debug_assert_ne!(head, NIL, "a backlogged lane has a head");
        if let Some(next) = f.runner_up(c) {
            self.prefetch_runner_up(slab, c, next);
        }
        Some(head)
    }

    /// The next request of tier `t` when none is overdue, and whether it is pending: the
    /// earlier by order key of its first pending request (while its pending requests are
    /// in order) and the head of its lanes ([`Tiers::next_of`]). A tie, or pending
    /// requests out of order, are left to the lanes: they are linked first.
    fn next_in(&mut self, slab: &mut Slab, t: usize) -> Option<(u32, bool)> {
        let pending = &self.classes[t].pending;
        if !pending.is_empty() {
            let front = pending.keys[pending.taken];
            if !pending.unordered {
                let Some(head) = self.next_of(slab, t) else {
                    return Some((front, true));
                };
                match slab[front].order_key().cmp(&slab[head].order_key()) {
                    std::cmp::Ordering::Less => return Some((front, true)),
                    std::cmp::Ordering::Greater => return Some((head, false)),
                    std::cmp::Ordering::Equal => {}
                }
            }
            self.flush(slab);
        }
        self.next_of(slab, t).map(|k| (k, false))
    }

    /// Takes `key`, the first pending request of tier `t` ([`Tiers::next_in`]), off the
    /// queue.
    fn take_pending(&mut self, slab: &mut Slab, key: u32, t: usize) {
        let cq = &mut self.classes[t];
        debug_assert_eq!(cq.pending.keys[cq.pending.taken], key);
        cq.pending.taken += 1;
        if cq.pending.is_empty() {
            cq.pending.clear();
        }
        let e = &mut slab[key];
        e.pending = false;
        self.count_taken(e, t);
    }

    /// Takes `key` from tier `t`: the pending request [`Tiers::next_in`] named, or a linked
    /// one.
    fn take_from(&mut self, slab: &mut Slab, key: u32, t: usize, pending: bool) {
        if pending {
            self.take_pending(slab, key, t);
        } else {
            self.take(slab, key, t);
        }
    }

    /// Whether tier `t` holds nothing, linked or pending.
    fn tier_is_empty(&self, t: usize) -> bool {
        self.classes[t].buckets.is_empty() && self.classes[t].pending.is_empty()
    }

    /// Takes the next request to consider.
    ///
    /// In the ladder order: the oldest overdue request of any class if there is one, else
    /// the next request of the most urgent non-empty class.
    ///
    /// In deadline order: the oldest request waiting past `max_wait` if `overdue_credit`
    /// covers its prefill; else the next request of the most urgent live tier, unless
    /// `late` judges that it can no longer meet its deadline: then it is returned taken
    /// [`Taken::Late`], for the caller to relegate ([`Tiers::relegate`]) or end;
    /// else the next relegated request, by class.
    ///
    /// Inlined, with `late` a type of its own (not `dyn`): the step takes a candidate per
    /// request it admits, and returned through memory the candidate was read back wider
    /// than it had just been written (a stall per candidate).
    #[inline]
    pub(crate) fn pop_candidate(
        &mut self,
        slab: &mut Slab,
        now: Timestamp,
        max_wait: Duration,
        overdue_credit: u64,
        late: &mut impl FnMut(&Slab, u32) -> bool,
    ) -> Option<Candidate> {
        if !self.by_deadline {
            let (class, key, overdue) = match self.oldest_past(slab, now, max_wait) {
                Some((c, k)) => (c, k, true),
                None => {
                    let c = (0..self.classes.len()).find(|&c| !self.tier_is_empty(c))?;
                    let (key, pending) = self.next_in(slab, c)?;
                    self.take_from(slab, key, c, pending);
                    return Some(self.candidate(key, c, false, false));
                }
            };
            self.take(slab, key, class);
            return Some(self.candidate(key, class, overdue, false));
        }
        if let Some((tier, key)) = self.oldest_past(slab, now, max_wait) {
            if u64::from(slab.run_state(key).prefill_target) <= overdue_credit {
                self.take(slab, key, tier);
                let mut cand = self.candidate(key, tier, true, false);
                cand.taken = Taken::OnCredit;
                return Some(cand);
            }
        }
        let tier = self
            .pick
            .iter()
            .map(|&t| usize::from(t))
            .find(|&t| !self.tier_is_empty(t))?;
        let (key, pending) = self.next_in(slab, tier)?;
        let is_late = tier < self.live && late(slab, key);
        self.take_from(slab, key, tier, pending);
        // In ns: `now.saturating_since(arrival) >= max_wait` without making a Duration.
        let waited = now.0.saturating_sub(slab[key].arrival.0);
        let overdue = u128::from(waited) >= max_wait.as_nanos();
        Some(self.candidate(key, tier, overdue, is_late))
    }

    fn candidate(&self, key: u32, tier: usize, overdue: bool, late: bool) -> Candidate {
        Candidate {
            key,
            class: self.class_of_tier(tier),
            tier: tier as u8,
            overdue,
            taken: if late { Taken::Late } else { Taken::InOrder },
        }
    }

    /// The oldest request of any class that has waited at least `age` at `now`, and its
    /// class. Nothing is read while `now - age` is below the arrival floor (see
    /// [`Tiers::arrival_floor`]); else a tier's lanes are read only if its first bucket
    /// began early enough for a request in it to qualify: `age` ago or more in a tier queued
    /// by arrival; in a live tier of deadline order, where a request is due at most the
    /// tier's lead ([`Tiers::leads`]) after it arrived, `age - lead` ago or more.
    ///
    /// The common answer, nobody that old and no heads' heap to drop, is inlined: every
    /// candidate a step takes asks.
    #[inline]
    pub(crate) fn oldest_past(
        &mut self,
        slab: &mut Slab,
        now: Timestamp,
        age: Duration,
    ) -> Option<(usize, u32)> {
        let age_ns = nanos(age);
        if now.0 < self.arrival_floor.saturating_add(age_ns) && !self.oldest_heads_kept {
            return None;
        }
        self.oldest_past_read(slab, now, age, age_ns)
    }

    /// [`Tiers::oldest_past`] past its inlined check: reads the tiers' first buckets.
    #[inline(never)]
    fn oldest_past_read(
        &mut self,
        slab: &mut Slab,
        now: Timestamp,
        age: Duration,
        age_ns: u64,
    ) -> Option<(usize, u32)> {
        if now.0 < self.arrival_floor.saturating_add(age_ns) {
            if std::mem::take(&mut self.oldest_heads_kept) {
                for cq in &mut self.classes {
                    cq.drop_oldest_heads();
                }
            }
            return None;
        }
        // The lanes are read below.
        self.flush(slab);
        let slab = &*slab;
        let mut floor = u64::MAX;
        let mut qualify = [false; 2 * MAX_CLASSES];
        for (c, q) in qualify.iter_mut().enumerate().take(self.classes.len()) {
            if let Some(&(b, _)) = self.classes[c].buckets.front() {
                let bound = self.arrival_bound(c, b);
                floor = floor.min(bound);
                *q = now.0 >= bound.saturating_add(age_ns);
            }
            if !*q {
                self.classes[c].drop_oldest_heads();
            }
        }
        self.arrival_floor = floor;
        let fair = self.fair.is_some();
        // A class asked below builds its heads' heap (fairness on) and keeps it.
        self.oldest_heads_kept |= fair && qualify.contains(&true);
        self.classes
            .iter_mut()
            .enumerate()
            .filter(|&(c, _)| qualify[c])
            .filter_map(|(c, cq)| cq.oldest(slab, fair).map(|k| (c, k)))
            .filter(|&(_, k)| now.saturating_since(slab[k].arrival) >= age)
            // By arrival: in deadline order `order_key` is the deadline.
            .min_by_key(|&(_, k)| (slab[k].arrival, slab[k].spec.id.0))
    }

    /// Takes the oldest request that has waited at least `timeout`, if any.
    pub(crate) fn pop_expired(
        &mut self,
        slab: &mut Slab,
        now: Timestamp,
        timeout: Duration,
    ) -> Option<Candidate> {
        let (tier, key) = self.oldest_past(slab, now, timeout)?;
        self.take(slab, key, tier);
        Some(self.candidate(key, tier, true, false))
    }

    /// Moves every bucket whose age passed its class's threshold up one class (or more),
    /// lane by lane: each tenant keeps its requests and, with fairness on, becomes
    /// backlogged in the class above. Adds the number of requests promoted out of each
    /// class to `promoted`.
    pub(crate) fn promote(&mut self, slab: &mut Slab, now: Timestamp, promoted: &mut [u64]) -> u64 {
        self.flush(slab);
        let mut total = 0;
        for c in (1..self.live).rev() {
            while let Some(&(b, _)) = self.classes[c].buckets.front() {
                if !self.aged_out(b, c, now) {
                    break;
                }
                let (_, lanes) = self.classes[c].pop_oldest().expect("first bucket exists");
                // The class above now holds these requests too.
                self.leads[c - 1] = self.leads[c - 1].max(self.leads[c]);
                for &slot in &lanes.slots {
                    let (below, above) = self.classes.split_at_mut(c);
                    let (from, to) = (&mut above[0], &mut below[c - 1]);
                    let lane = &mut from.lanes[slot as usize];
                    let Some(bucket) = lane.remove(b) else {
                        continue; // a stale or repeated slot (see `BucketLanes`)
                    };
                    let moved = bucket.len as usize;
                    lane.len -= moved;
                    let emptied = lane.len == 0;
                    from.len -= moved;
                    let s = slot as usize;
                    let joined = to.lanes.get(s).is_none_or(|l| l.len == 0);
                    // Moved in whole if the lane above lacks the bucket, else merged.
                    let mut bucket = Some(bucket);
                    let i = to.entry(slot, b, || bucket.take().expect("moved once"));
                    if let Some(bucket) = bucket {
                        to.lanes[s].buckets[i].1.absorb(slab, bucket);
                    }
                    to.lanes[s].len += moved;
                    to.len += moved;
                    self.sync_head(slab, c, slot);
                    if i == 0 {
                        self.sync_head(slab, c - 1, slot);
                    }
                    if let Some(f) = &mut self.fair {
                        if emptied {
                            f.leave(c, slot);
                        }
                        if joined {
                            f.join(c - 1, slot);
                        }
                    }
                    promoted[c] += moved as u64;
                    total += moved as u64;
                }
                self.classes[c].recycle(lanes.slots);
            }
        }
        total
    }

    /// Every waiting key, most urgent class first, oldest first inside a class.
    pub(crate) fn keys_in_order(&mut self, slab: &mut Slab) -> Vec<u32> {
        self.flush(slab);
        let slab = &*slab;
        let mut out = Vec::with_capacity(self.len);
        for cq in &self.classes {
            for (b, lanes) in cq.buckets.iter().filter(|(_, l)| l.live > 0) {
                let mut slots = lanes.slots.clone();
                slots.sort_unstable();
                slots.dedup();
                let mut keys: Vec<u32> = slots
                    .iter()
                    .filter_map(|&s| cq.lanes[s as usize].get(*b)) // stale slots skip
                    .flat_map(Bucket::runs)
                    .flat_map(|(_, r)| r.keys(slab))
                    .collect();
                keys.sort_by_key(|&k| slab[k].order_key());
                out.extend(keys);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingress::table;
    use crate::RequestSpec;

    fn entry(slab: &mut Slab, id: u64, arrival_ms: u64) -> u32 {
        let spec = RequestSpec::new(id, Class::LOW, 8, 1);
        let mut e = slab::Entry::new(
            table::Entry::detached(),
            spec.into(),
            Timestamp::from_millis(arrival_ms),
        );
        e.tenant = 0;
        slab.insert(e)
    }

    /// A step takes a candidate per request it admits: returned in a register, not memory.
    #[test]
    fn an_optional_candidate_fits_a_register() {
        assert_eq!(std::mem::size_of::<Option<Candidate>>(), 8);
    }

    /// A candidate put back after an older request joined its run in the same step (a
    /// request relegated meanwhile) goes back at its sorted place, not at the front.
    #[test]
    fn a_restored_candidate_keeps_the_run_sorted() {
        let mut slab = Slab::default();
        let mut q = Tiers::new(3, Duration::from_millis(1000), vec![None; 3], false, true);
        let newer = entry(&mut slab, 2, 500);
        slab[newer].relegated = true;
        q.insert_new(&mut slab, newer, Timestamp::ZERO);
        let cand = q
            .pop_candidate(&mut slab, Timestamp::ZERO, Duration::MAX, 0, &mut |_, _| {
                false
            })
            .expect("the relegated request");
        assert_eq!(cand.key, newer);
        // An older request of the class is relegated into the same bucket meanwhile.
        let older = entry(&mut slab, 1, 100);
        q.relegate(&mut slab, older, Timestamp::ZERO);
        q.restore(&mut slab, cand);
        q.check(&slab).expect("the run stays sorted");
        assert_eq!(q.keys_in_order(&mut slab), vec![older, newer]);
    }

    const MS: u64 = 1_000_000;

    /// Queues request `id` of class `class` that arrived at `arrival_ms`, due at `due_ms`
    /// (its deadline, or its arrival once `relegated`).
    fn queue(
        q: &mut Tiers,
        slab: &mut Slab,
        id: u64,
        class: u8,
        (arrival_ms, due_ms): (u64, u64),
        relegated: bool,
    ) -> u32 {
        let spec = RequestSpec::new(id, Class::from_index(class), 8, 8);
        let mut e = slab::Entry::new(
            table::Entry::detached(),
            spec.into(),
            Timestamp(arrival_ms * MS),
        );
        e.due = Timestamp(due_ms * MS);
        e.deadline = e.due;
        e.relegated = relegated;
        e.tenant = 0;
        let key = slab.insert(e);
        q.insert_new(slab, key, Timestamp(due_ms * MS));
        q.check(slab).expect("queue invariants");
        key
    }

    #[test]
    fn oldest_past_sees_every_request_the_arrival_floor_lets_it_skip_the_rest() {
        // Deadline order, max wait 60 s: live tiers by deadline, relegated ones by arrival.
        let max_wait = Duration::from_secs(60);
        let mut q = Tiers::new(3, Duration::from_millis(10), vec![None; 3], false, true);
        let mut slab = Slab::default();
        let at = |ms: u64| Timestamp(ms * MS);
        // A live HIGH request that arrived at 200 s, due at 200.5 s: HIGH's lead is 0.5 s,
        // and until 260 s nobody can have waited 60 s (the floor is 200 s): no tier is
        // read.
        let fresh = queue(&mut q, &mut slab, 1, 0, (200_000, 200_500), false);
        assert_eq!(q.oldest_past(&mut slab, at(200_200), max_wait), None);
        // A relegated LOW request that arrived at 10 s lowers the floor, and is found.
        let old = queue(&mut q, &mut slab, 2, 2, (10_000, 10_000), true);
        assert_eq!(
            q.oldest_past(&mut slab, at(200_200), max_wait),
            Some((5, old))
        );
        q.take(&mut slab, old, 5);
        assert_eq!(q.oldest_past(&mut slab, at(200_200), max_wait), None);
        // A live MEDIUM request whose deadline passed long ago: found in its live tier once
        // it has waited 60 s.
        let late = queue(&mut q, &mut slab, 3, 1, (100_000, 102_000), false);
        assert_eq!(
            q.oldest_past(&mut slab, at(200_200), max_wait),
            Some((1, late))
        );
        assert_eq!(q.oldest_past(&mut slab, at(159_999), max_wait), None);
        assert_eq!(
            q.oldest_past(&mut slab, at(160_000), max_wait),
            Some((1, late))
        );
        q.take(&mut slab, late, 1);
        assert_eq!(q.oldest_past(&mut slab, at(259_999), max_wait), None);
        assert_eq!(
            q.oldest_past(&mut slab, at(260_000), max_wait),
            Some((0, fresh))
        );
        q.check(&slab).expect("queue invariants");
    }

    /// Requests appended as a step's arrivals ([`Tiers::append_new`]) come off the queue
    /// in exactly the order they would had they been linked at once, whether their order
    /// rises or not, whether the lanes hold earlier or later ones, and after a removal of
    /// a linked or a pending one; a flush leaves the queue checked.
    #[test]
    fn pending_arrivals_come_off_in_the_lanes_order() {
        // (id, class, due ms); the first is linked before the rest arrive.
        let cases: [&[(u64, u8, u64)]; 3] = [
            &[
                (1, 0, 150),
                (2, 0, 100),
                (3, 0, 200),
                (4, 1, 50),
                (5, 0, 300),
            ],
            &[(1, 0, 150), (2, 0, 300), (3, 0, 200), (4, 0, 100)],
            &[(1, 1, 10), (2, 0, 100), (3, 0, 100), (4, 0, 90)],
        ];
        for (n, case) in cases.iter().enumerate() {
            let order = |pending: bool, remove: Option<u64>| {
                let mut q = Tiers::new(3, Duration::from_millis(10), vec![None; 3], false, true);
                let mut slab = Slab::default();
                let mut keys = Vec::new();
                for (i, &(id, class, due)) in case.iter().enumerate() {
                    let spec = RequestSpec::new(id, Class::from_index(class), 8, 8);
                    let mut e =
                        slab::Entry::new(table::Entry::detached(), spec.into(), Timestamp(0));
                    e.due = Timestamp(due * MS);
                    e.tenant = 0;
                    let key = slab.insert(e);
                    if pending && i > 0 {
                        q.append_new(&mut slab, key, Timestamp(0));
                    } else {
                        q.insert_new(&mut slab, key, Timestamp(0));
                    }
                    keys.push((id, key));
                }
                if let Some(id) = remove {
                    let key = keys.iter().find(|k| k.0 == id).expect("queued").1;
                    q.remove(&mut slab, key);
                }
                let mut out = Vec::new();
                while let Some(c) =
                    q.pop_candidate(&mut slab, Timestamp(0), Duration::MAX, 0, &mut |_, _| false)
                {
                    out.push(slab[c.key].spec.id.0);
                }
                q.flush(&mut slab);
                q.check(&slab).expect("queue invariants");
                assert_eq!(q.len(), 0);
                out
            };
            // Nothing removed, the linked request removed (the rest stay pending), a
            // pending one removed (all are linked first).
            for remove in [None, Some(1), Some(3)] {
                assert_eq!(order(true, remove), order(false, remove), "case {n}");
            }
        }
    }
}
