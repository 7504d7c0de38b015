//! One tier's requests: a lane per tenant, each with its buckets in index order
//! ([`Lane`]), the index of which lanes hold each bucket ([`BucketLanes`]), and the tier
//! itself ([`ClassQueue`]). The wait queue (`super`) holds one per tier and moves requests
//! between them; nothing here knows about tiers, deadlines or aging.

use super::bucket::Bucket;
use super::slab::{Slab, NIL};
use crate::time::Timestamp;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// A lane head as [`OldestHeads`] holds it: its order key, its lane, its key.
type HeadAt = Reverse<((Timestamp, u64), u32, u32)>;

/// The lanes' heads of one class by order key, so that the class's oldest request (which
/// max wait and the queue timeout ask for once per admission while requests are overdue)
/// is found without reading every lane: with a lane per tenant, taking the minimum over
/// the lanes read a thousand lanes per admission with 1,000 tenants.
///
/// Kept only while asked for (fairness on, and a step found the class's oldest old enough
/// to look at); built from [`ClassQueue::heads`] then, and fed every new head while live.
/// Entries whose lane has another head by now (or whose request's order key changed) are
/// stale: dropped when they reach the top, or all at once when they outnumber the lanes.
#[derive(Default)]
pub(super) struct OldestHeads {
    /// Whether the heap is kept (else empty).
    live: bool,
    heap: BinaryHeap<HeadAt>,
}

/// The position of key `b` in `d` (sorted by key, strictly increasing), or where it would
/// go. `ends` are the first and last keys (`None` when `d` is empty), which a caller may
/// keep copies of. Arrivals make the newest bucket and admissions take the oldest, so both
/// ends are tried before a binary search.
pub(super) fn find_sorted<V>(
    d: &VecDeque<(u64, V)>,
    b: u64,
    ends: Option<(u64, u64)>,
) -> Result<usize, usize> {
    let Some((first, last)) = ends else {
        return Err(0);
    };
    let n = d.len();
    if b == last {
        Ok(n - 1)
    } else if b > last {
        Err(n)
    } else if b == first {
        Ok(0)
    } else if b < first {
        Err(0)
    } else {
        d.binary_search_by_key(&b, |&(k, _)| k)
    }
}

/// One tenant's requests in one class: its buckets in index order, oldest first.
///
/// A sorted deque rather than a map: buckets are made at the back (new arrivals) and
/// leave from the front (admission, promotion), so both ends are O(1) and a look-up is a
/// binary search over contiguous memory; only a re-queued request of an old bucket the lane
/// no longer holds inserts in the middle. Buckets are held inline: an emptied lane keeps
/// its deque's room, so a tenant's next bucket allocates nothing.
///
/// The indices of the first and last buckets are copied into the lane itself: with many
/// tenants each drained or admitted request is in another lane, and a look-up that read
/// the deque's back to learn the request was not there cost a cache miss per request.
#[derive(Default)]
pub(super) struct Lane {
    /// The buckets, strictly increasing by index. Changed only through [`Lane::insert_at`]
    /// and [`Lane::remove_at`], which keep `first` and `last`.
    pub(super) buckets: VecDeque<(u64, Bucket)>,
    /// Entries in all buckets.
    pub(super) len: usize,
    /// The index of the first bucket (meaningless when there is none).
    pub(super) first: u64,
    /// The index of the last bucket (meaningless when there is none).
    pub(super) last: u64,
}

impl Lane {
    pub(super) fn head(&self, slab: &Slab) -> Option<u32> {
        self.buckets
            .front()
            .and_then(|(_, b)| b.head(slab))
            .map(|(k, _)| k)
    }

    pub(super) fn find(&self, b: u64) -> Result<usize, usize> {
        // The ends come from the lane's copies of their indices.
        let ends = (!self.buckets.is_empty()).then_some((self.first, self.last));
        find_sorted(&self.buckets, b, ends)
    }

    /// Puts bucket `bk` of index `b` at position `i` (from [`Lane::find`]'s `Err`).
    pub(super) fn insert_at(&mut self, i: usize, b: u64, bk: Bucket) {
        let n = self.buckets.len();
        if i == n {
            self.buckets.push_back((b, bk));
            self.last = b;
        } else {
            self.buckets.insert(i, (b, bk));
        }
        if i == 0 {
            self.first = b;
        }
        if n == 0 {
            self.last = b;
        }
    }

    /// Takes out the bucket at position `i`.
    pub(super) fn remove_at(&mut self, i: usize) -> Bucket {
        let (_, bk) = if i == 0 {
            self.buckets.pop_front()
        } else {
            self.buckets.remove(i)
        }
        .expect("a bucket at i");
        // Read only the end that changed: the other may be a cache miss away.
        if i == 0 {
            if let Some(&(f, _)) = self.buckets.front() {
                self.first = f;
            }
        }
        if i == self.buckets.len() {
            if let Some(&(l, _)) = self.buckets.back() {
                self.last = l;
            }
        }
        bk
    }

    pub(super) fn get(&self, b: u64) -> Option<&Bucket> {
        self.find(b).ok().map(|i| &self.buckets[i].1)
    }

    pub(super) fn remove(&mut self, b: u64) -> Option<Bucket> {
        let i = self.find(b).ok()?;
        Some(self.remove_at(i))
    }
}

/// The lanes of one class that hold one bucket.
///
/// Kept lazily, so that a lane leaving a bucket (an admission, with many tenants about one
/// per request) costs a decrement instead of a search: `slots` names every lane holding
/// the bucket at least once, and may also name lanes that left it since (or name one
/// twice). Readers check each lane for the bucket and skip the rest.
///
/// An entry whose lanes all left it (`live` 0) is *dead*: it stays in the class's index
/// until it reaches an end of it or dead entries outnumber live ones (see
/// [`ClassQueue::buckets`]), and holds no slots.
#[derive(Default)]
pub(super) struct BucketLanes {
    /// How many lanes hold the bucket (0: dead).
    pub(super) live: u32,
    /// A superset of those lanes' slots; empty when dead.
    pub(super) slots: Vec<u32>,
}

impl BucketLanes {
    /// Drops stale and repeated slots once they outnumber the live ones, so the list stays
    /// within a constant factor of `live`.
    pub(super) fn compact(&mut self, lanes: &[Lane], b: u64) {
        if self.slots.len() > 2 * self.live as usize + 8 {
            self.slots.sort_unstable();
            self.slots.dedup();
            self.slots
                .retain(|&s| lanes.get(s as usize).is_some_and(|l| l.get(b).is_some()));
        }
    }
}

/// One effective class.
#[derive(Default)]
pub(super) struct ClassQueue {
    /// `lanes[slot]`: this class's requests of tenant `slot` (lane 0 only, with fairness
    /// off). Grown on demand; an empty lane holds no bucket.
    pub(super) lanes: Vec<Lane>,
    /// Every bucket index some lane of this class holds, with those lanes, sorted by index
    /// (strictly increasing). A deque rather than a map: with many tenants a bucket is
    /// entered and left about once per request, new buckets are made at the back and old
    /// ones leave at the front, so both ends are O(1). A bucket emptied in the middle stays
    /// as a dead entry (see [`BucketLanes`]); the first and last entries are never dead,
    /// and dead entries are at most `live entries + 8` (else they are swept out), so the
    /// deque stays within a constant factor of the live buckets.
    pub(super) buckets: VecDeque<(u64, BucketLanes)>,
    /// Dead entries in `buckets`.
    pub(super) dead: usize,
    /// Emptied `BucketLanes::slots` vectors, kept for the next bucket: with many tenants a
    /// bucket's list grows to the number of tenants, and regrowing it from nothing for
    /// every bucket was a measurable share of a drain.
    pub(super) spare: Vec<Vec<u32>>,
    /// Entries in all lanes.
    pub(super) len: usize,
    /// `heads[slot]`: the head of lane `slot` ([`Lane::head`]), or [`NIL`] when it is
    /// empty; kept with fairness on only (see [`super::Tiers::sync_head`]). A dense copy beside
    /// the lanes: with many tenants a fair pick is a different lane each time, and reading
    /// its head through the lane cost two dependent cache misses (the lane, then its front
    /// bucket) before the entry itself could be loaded.
    pub(super) heads: Vec<u32>,
    /// The heads by order key, while max wait or the queue timeout look for the class's
    /// oldest request (fairness on only).
    pub(super) oldest_heads: OldestHeads,
    /// Requests drained in this step and not yet linked into a lane (fairness off only;
    /// see [`Pending`]).
    pub(super) pending: Pending,
}

/// The requests a step drained into one tier, in the order they came, before they are
/// linked into its lane: most are admitted by the same step, and one taken from here
/// costs an index bump instead of a bucket look-up, a sorted insertion and an unlink.
///
/// Counted in the tier's (and the queue's) lengths from the moment they come, but in no
/// lane or bucket; `Tiers::flush` links them before anything reads the lanes. A request is
/// taken from here only while the tier's lanes are empty and these are in order.
#[derive(Default)]
pub(super) struct Pending {
    /// Keys in the order they came; those before `taken` were taken off.
    pub(super) keys: Vec<u32>,
    /// How many of `keys` were taken off the front.
    pub(super) taken: usize,
    /// Whether some key came with an order key at or below the one before it: ties and
    /// falls are ordered by the lanes (runs and buckets), so such a tier is linked before
    /// anything is taken from it.
    pub(super) unordered: bool,
}

impl Pending {
    /// Whether no request is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.taken == self.keys.len()
    }

    /// Forgets every key (taken or linked), keeping the room.
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.taken = 0;
        self.unordered = false;
    }
}

impl ClassQueue {
    /// The oldest request of the class: with fairness off (`fair` false: one lane) its
    /// head; with a lane per tenant the oldest of the lanes' heads, from [`OldestHeads`]
    /// (built on the first call, O(lanes); then amortized O(log lanes) per call and per
    /// head change).
    pub(super) fn oldest(&mut self, slab: &Slab, fair: bool) -> Option<u32> {
        if !fair {
            return self.lanes.first()?.head(slab);
        }
        if !self.oldest_heads.live {
            self.build_oldest_heads(slab);
        }
        let heads = &self.heads;
        let heap = &mut self.oldest_heads.heap;
        while let Some(&Reverse((order, slot, key))) = heap.peek() {
            if heads[slot as usize] == key && slab[key].order_key() == order {
                return Some(key);
            }
            heap.pop();
        }
        None
    }

    /// Makes [`ClassQueue::oldest_heads`] live, holding every lane's head.
    fn build_oldest_heads(&mut self, slab: &Slab) {
        let heap = &mut self.oldest_heads.heap;
        heap.clear();
        heap.extend(
            self.heads
                .iter()
                .enumerate()
                .filter(|&(_, &k)| k != NIL)
                .map(|(slot, &k)| Reverse((slab[k].order_key(), slot as u32, k))),
        );
        self.oldest_heads.live = true;
    }

    /// Stops keeping [`ClassQueue::oldest_heads`] (nobody asks for the oldest now).
    pub(super) fn drop_oldest_heads(&mut self) {
        if self.oldest_heads.live {
            self.oldest_heads.live = false;
            self.oldest_heads.heap.clear();
        }
    }

    /// For the invariant checks: lane `slot`'s head if [`ClassQueue::oldest_heads`] is live
    /// and lacks it (with its current order key).
    pub(super) fn oldest_heads_miss(&self, slab: &Slab, slot: usize) -> Option<u32> {
        let head = *self.heads.get(slot)?;
        if !self.oldest_heads.live || head == NIL {
            return None;
        }
        let want = Reverse((slab[head].order_key(), slot as u32, head));
        (!self.oldest_heads.heap.iter().any(|e| *e == want)).then_some(head)
    }

    /// Lane `slot`'s head is now `head` ([`NIL`]: empty): records it in
    /// [`ClassQueue::heads`] and, while live, in [`ClassQueue::oldest_heads`].
    pub(super) fn set_head(&mut self, slab: &Slab, slot: u32, head: u32) {
        self.heads[slot as usize] = head;
        if self.oldest_heads.live && head != NIL {
            if self.oldest_heads.heap.len() > 2 * self.heads.len() + 64 {
                // Mostly stale: start again from the heads as they are.
                self.build_oldest_heads(slab);
            } else {
                let order = slab[head].order_key();
                self.oldest_heads.heap.push(Reverse((order, slot, head)));
            }
        }
    }

    /// The bucket `b` of lane `slot`, made (and indexed) if absent.
    pub(super) fn bucket_mut(&mut self, slot: u32, b: u64) -> &mut Bucket {
        let i = self.entry(slot, b, Bucket::default);
        &mut self.lanes[slot as usize].buckets[i].1
    }

    /// The position of bucket `b` in lane `slot` (the lane made if need be), the bucket
    /// made by `make` and indexed if absent.
    pub(super) fn entry(&mut self, slot: u32, b: u64, make: impl FnOnce() -> Bucket) -> usize {
        let s = slot as usize;
        if self.lanes.len() <= s {
            self.lanes.resize_with(s + 1, Lane::default);
            self.heads.resize(s + 1, NIL);
        }
        match self.lanes[s].find(b) {
            Ok(i) => i,
            Err(i) => {
                self.lanes[s].insert_at(i, b, make());
                self.index(slot, b);
                i
            }
        }
    }

    /// The position of bucket `b` in the index (live or dead), or where it would go.
    pub(super) fn find_bucket(&self, b: u64) -> Result<usize, usize> {
        let ends = self.buckets.front().zip(self.buckets.back());
        find_sorted(&self.buckets, b, ends.map(|(f, l)| (f.0, l.0)))
    }

    /// Forgets that one lane holds bucket `b` (it emptied or moved).
    pub(super) fn unindex(&mut self, b: u64) {
        let Ok(i) = self.find_bucket(b) else {
            return;
        };
        let entry = &mut self.buckets[i].1;
        entry.live -= 1;
        if entry.live == 0 {
            let slots = std::mem::take(&mut entry.slots);
            self.recycle(slots);
            self.dead += 1;
            self.trim();
        }
    }

    /// Drops dead entries from both ends of the index, and sweeps all of them out once they
    /// outnumber the live ones.
    pub(super) fn trim(&mut self) {
        while self.buckets.front().is_some_and(|(_, l)| l.live == 0) {
            self.buckets.pop_front();
            self.dead -= 1;
        }
        while self.buckets.back().is_some_and(|(_, l)| l.live == 0) {
            self.buckets.pop_back();
            self.dead -= 1;
        }
        if self.dead > self.buckets.len() - self.dead + 8 {
            self.buckets.retain(|(_, l)| l.live > 0);
            self.dead = 0;
        }
    }

    /// Keeps an emptied slot list for the next bucket (a few, so memory stays bounded).
    pub(super) fn recycle(&mut self, mut slots: Vec<u32>) {
        if self.spare.len() < 8 && slots.capacity() > 0 {
            slots.clear();
            self.spare.push(slots);
        }
    }

    /// Records that lane `slot` now holds bucket `b`.
    pub(super) fn index(&mut self, slot: u32, b: u64) {
        let i = match self.find_bucket(b) {
            Ok(i) => {
                if self.buckets[i].1.live == 0 {
                    self.dead -= 1;
                    self.buckets[i].1.slots = self.spare.pop().unwrap_or_default();
                }
                i
            }
            Err(i) => {
                let entry = BucketLanes {
                    live: 0,
                    slots: self.spare.pop().unwrap_or_default(),
                };
                if i == self.buckets.len() {
                    self.buckets.push_back((b, entry));
                } else {
                    self.buckets.insert(i, (b, entry));
                }
                i
            }
        };
        let (lanes, entry) = (&self.lanes, &mut self.buckets[i].1);
        entry.live += 1;
        entry.slots.push(slot);
        entry.compact(lanes, b);
    }

    /// Takes the oldest bucket's entry out of the index (promotion moves all its lanes).
    pub(super) fn pop_oldest(&mut self) -> Option<(u64, BucketLanes)> {
        let first = self.buckets.pop_front()?;
        self.trim();
        Some(first)
    }
}
