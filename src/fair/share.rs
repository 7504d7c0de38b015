//! The virtual token counters and, per class, the order of the backlogged tenants by
//! counter. Owned by the wait queue, which tells it when a tenant's lane in a class becomes
//! non-empty ([`FairShare::join`]) or empty ([`FairShare::leave`]) and asks it for the next
//! tenant ([`FairShare::pick`]). The scheduler charges service ([`FairShare::charge`]).
//!
//! Every operation is O(log backlogged tenants) and independent of the requests queued.
//! The per-class order is an indexed 4-ary min-heap: a charge moves one tenant down in
//! place (a BTreeSet's remove and insert cost several times more, and a step charges once
//! per admission).

use crate::class::MAX_CLASSES;

/// Not in the heap.
const ABSENT: u32 = u32::MAX;

/// The heap key of `(counter, slot)`: ordered as the pair is, in one integer, so a sift
/// compares with one wide comparison instead of a branch per field.
fn pack(counter: u64, slot: u32) -> u128 {
    (u128::from(counter) << 32) | u128::from(slot)
}

/// The `(counter, slot)` of a heap key.
fn unpack(k: u128) -> (u64, u32) {
    ((k >> 32) as u64, k as u32)
}

/// Children per node of the heap. Four rather than two: a charged tenant sinks through
/// half as many levels (about 5 at 1,000 tenants), and a node's children are 64
/// contiguous bytes.
const ARITY: usize = 4;

/// A 4-ary min-heap of `(counter, slot)` with each slot's position, so a slot's key can
/// change in place.
#[derive(Default)]
struct Order {
    /// The heap of [`pack`]ed keys: `heap[i] <= heap[ARITY*i+1 ..= ARITY*i+ARITY]`.
    heap: Vec<u128>,
    /// `pos[slot]`: the index of `slot` in `heap`, or [`ABSENT`]. Slots past the end are
    /// absent.
    pos: Vec<u32>,
}

impl Order {
    fn first(&self) -> Option<(u64, u32)> {
        self.heap.first().map(|&k| unpack(k))
    }

    /// `slot`'s index in the heap, if present.
    fn at(&self, slot: u32) -> Option<usize> {
        let p = *self.pos.get(slot as usize)?;
        (p != ABSENT).then_some(p as usize)
    }

    /// The key at heap index `i`.
    fn key_at(&self, i: usize) -> u64 {
        unpack(self.heap[i]).0
    }

    fn contains(&self, slot: u32) -> bool {
        self.at(slot).is_some()
    }

    fn set_pos(&mut self, i: usize) {
        let slot = self.heap[i] as u32 as usize;
        self.pos[slot] = i as u32;
    }

    /// Moves `heap[i]` up to its place.
    fn up(&mut self, i: usize) {
        let item = self.heap[i];
        self.climb(item, i, 0);
    }

    /// Places `item` from the hole at `i` upward, no higher than `top`: parents that sort
    /// after it move down into the hole, and it is written once, where the climb stops.
    fn climb(&mut self, item: u128, mut i: usize, top: usize) {
        while i > top {
            let parent = (i - 1) / ARITY;
            if self.heap[parent] <= item {
                break;
            }
            self.heap[i] = self.heap[parent];
            self.set_pos(i);
            i = parent;
        }
        self.heap[i] = item;
        self.set_pos(i);
    }

    /// Moves `heap[i]` down to its place. A charged tenant usually sinks to the bottom (its
    /// counter jumps past the others'), so this is the hot loop of a charge, and it sinks
    /// bottom-up (Floyd): the hole left at `i` first moves down to a leaf along the least
    /// children, without comparing the item at each level, then the item climbs
    /// back from there to the first parent not after it (usually none). Keys are distinct
    /// (slots are), so the heap ends exactly as with the usual sift.
    fn down(&mut self, start: usize) {
        let n = self.heap.len();
        let item = self.heap[start];
        let mut i = start;
        loop {
            let first = ARITY * i + 1;
            if first >= n {
                break;
            }
            let child = if first + ARITY <= n {
                // All four children: a tournament, two pairs then their winners.
                let h = &self.heap[first..first + ARITY];
                let a = usize::from(h[1] < h[0]);
                let b = 2 + usize::from(h[3] < h[2]);
                first + if h[b] < h[a] { b } else { a }
            } else {
                (first + 1..n).fold(
                    first,
                    |m, j| if self.heap[j] < self.heap[m] { j } else { m },
                )
            };
            self.heap[i] = self.heap[child];
            self.set_pos(i);
            i = child;
        }
        self.climb(item, i, start);
    }

    /// Adds `slot` (absent) with `key`.
    fn insert(&mut self, key: u64, slot: u32) {
        let s = slot as usize;
        if self.pos.len() <= s {
            self.pos.resize(s + 1, ABSENT);
        }
        debug_assert_eq!(self.pos[s], ABSENT);
        self.heap.push(pack(key, slot));
        self.up(self.heap.len() - 1);
    }

    /// Removes `slot`; whether it was there.
    fn remove(&mut self, slot: u32) -> bool {
        let Some(i) = self.at(slot) else {
            return false;
        };
        self.pos[slot as usize] = ABSENT;
        let last = self.heap.pop().expect("a present slot is in the heap");
        if i < self.heap.len() {
            self.heap[i] = last;
            self.down(i);
            self.up(self.pos[unpack(last).1 as usize] as usize);
        }
        true
    }

    /// Raises the key at heap index `i` (slot `slot`'s, from [`Order::at`]) to `key`.
    fn raise_at(&mut self, i: usize, slot: u32, key: u64) {
        debug_assert!(key >= self.key_at(i) && unpack(self.heap[i]).1 == slot);
        self.heap[i] = pack(key, slot);
        self.down(i);
    }
}

/// Service is counted in thousandths of a weighted token, so fractional weights keep their
/// precision in integer counters.
pub(crate) const SCALE: f64 = 1000.0;

/// The service of `tokens` tokens at `token_weight` for a tenant of weight `tenant_weight`,
/// in counter units (saturating).
pub(crate) fn service(tokens: u64, token_weight: f64, tenant_weight: f64) -> u64 {
    // `as` saturates: an absurd product ends at u64::MAX instead of wrapping.
    (tokens as f64 * token_weight * SCALE / tenant_weight).round() as u64
}

/// Counters and backlogged sets.
#[derive(Default)]
pub(crate) struct FairShare {
    /// `counters[slot][c]`: the weighted service tenant `slot` received in class `c`,
    /// raised by the lift. A slot past the end has received none.
    counters: Vec<[u64; MAX_CLASSES]>,
    /// `backlogged[c]` holds `(counters[slot][c], slot)` for exactly the tenants with a
    /// request waiting in class `c`; its least element is the class's next tenant.
    backlogged: [Order; MAX_CLASSES],
    /// `last[c]`: the tenant picked last in class `c` and its counter there (kept current
    /// while it is charged). The lift for a tenant joining a class where none is backlogged.
    last: [(u32, u64); MAX_CLASSES],
}

impl FairShare {
    /// Tenant `slot`'s counter in class `c`.
    pub(crate) fn counter(&self, c: usize, slot: u32) -> u64 {
        self.counters.get(slot as usize).map_or(0, |k| k[c])
    }

    fn counter_mut(&mut self, c: usize, slot: u32) -> &mut u64 {
        let i = slot as usize;
        if i >= self.counters.len() {
            self.counters.resize(i + 1, [0; MAX_CLASSES]);
        }
        &mut self.counters[i][c]
    }

    /// Tenant `slot` now has a request waiting in class `c` and had none: it is lifted to
    /// the smallest counter backlogged there (so idle time is not banked) and joins the
    /// order.
    pub(crate) fn join(&mut self, c: usize, slot: u32) {
        let floor = self.backlogged[c]
            .first()
            .map_or(self.last[c].1, |(v, _)| v);
        let k = self.counter_mut(c, slot);
        *k = (*k).max(floor);
        let v = *k;
        debug_assert!(
            !self.backlogged[c].contains(slot),
            "tenant {slot} joined class {c} twice"
        );
        self.backlogged[c].insert(v, slot);
    }

    /// Tenant `slot` has a request waiting in class `c` again because a request taken for
    /// this step went back unstarted (backfill, a spared timeout): it rejoins at its own
    /// counter, with no lift, since it never stopped being backlogged in the queue's eyes.
    pub(crate) fn rejoin(&mut self, c: usize, slot: u32) {
        debug_assert!(
            !self.backlogged[c].contains(slot),
            "tenant {slot} rejoined class {c} twice"
        );
        let v = self.counter(c, slot);
        self.backlogged[c].insert(v, slot);
    }

    /// Tenant `slot` has no request waiting in class `c` any more.
    pub(crate) fn leave(&mut self, c: usize, slot: u32) {
        let was = self.backlogged[c].remove(slot);
        debug_assert!(was, "tenant {slot} left class {c} without joining");
    }

    /// The backlogged tenant of class `c` with the least service (ties: lowest slot).
    #[cfg(test)]
    pub(crate) fn next(&self, c: usize) -> Option<u32> {
        self.backlogged[c].first().map(|(_, s)| s)
    }

    /// Serves class `c`'s next tenant (the backlogged one with the least service, ties to
    /// the lowest slot) and records it as the last served there. Its counter comes from
    /// the heap's root, which holds it (an invariant [`FairShare::check`] checks), rather
    /// than from `counters`: with many tenants that row was a cache miss per admission.
    pub(crate) fn pick(&mut self, c: usize) -> Option<u32> {
        let (v, slot) = self.backlogged[c].first()?;
        debug_assert_eq!(v, self.counter(c, slot));
        self.last[c] = (slot, v);
        Some(slot)
    }

    /// Adds `amount` of service to tenant `slot` in class `c`, moving it in the order if it
    /// is backlogged there.
    pub(crate) fn charge(&mut self, c: usize, slot: u32, amount: u64) {
        if amount == 0 {
            return;
        }
        // A backlogged tenant's heap key is its counter: read it there (the heap is small
        // and hot) so the counters row is only written, not loaded first.
        let at = self.backlogged[c].at(slot);
        let old = at.map_or_else(|| self.counter(c, slot), |i| self.backlogged[c].key_at(i));
        debug_assert_eq!(old, self.counter(c, slot));
        let new = old.saturating_add(amount);
        *self.counter_mut(c, slot) = new;
        if let Some(i) = at {
            self.backlogged[c].raise_at(i, slot, new);
        }
        if self.last[c].0 == slot {
            self.last[c].1 = new;
        }
    }

    /// Starts slot `slot` afresh for a new tenant (its previous tenant is gone).
    pub(crate) fn forget(&mut self, slot: u32) {
        if let Some(k) = self.counters.get_mut(slot as usize) {
            debug_assert!((0..MAX_CLASSES).all(|c| !self.backlogged[c].contains(slot)));
            *k = [0; MAX_CLASSES];
        }
    }

    /// Checks that class `c`'s order holds exactly the tenants `is_backlogged` names, at
    /// their current counters.
    pub(crate) fn check(
        &self,
        c: usize,
        mut is_backlogged: impl FnMut(u32) -> bool,
        slots: u32,
    ) -> Result<(), String> {
        let order = &self.backlogged[c];
        for (i, &k) in order.heap.iter().enumerate() {
            let (v, s) = unpack(k);
            if v != self.counter(c, s) || !is_backlogged(s) {
                return Err(format!(
                    "class {c}: tenant {s} is ordered but not backlogged"
                ));
            }
            if order.pos[s as usize] as usize != i || (i > 0 && order.heap[(i - 1) / ARITY] > k) {
                return Err(format!("class {c}: heap broken at tenant {s}"));
            }
        }
        let n = (0..slots).filter(|&s| is_backlogged(s)).count();
        if n != self.backlogged[c].heap.len() {
            return Err(format!(
                "class {c}: {n} tenants backlogged but {} ordered",
                self.backlogged[c].heap.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_served_backlogged_tenant_goes_next() {
        let mut f = FairShare::default();
        f.join(0, 1);
        f.join(0, 2);
        f.charge(0, 1, 500);
        assert_eq!(f.next(0), Some(2));
        f.charge(0, 2, 600);
        assert_eq!(f.next(0), Some(1));
        f.leave(0, 1);
        assert_eq!(f.next(0), Some(2));
        f.leave(0, 2);
        assert_eq!(f.next(0), None);
    }

    #[test]
    fn a_returning_tenant_is_lifted_to_the_backlogged_minimum() {
        let mut f = FairShare::default();
        f.join(1, 1);
        f.charge(1, 1, 10_000);
        f.join(1, 2); // lifted to tenant 1's 10_000: no credit for having been away
        assert_eq!(f.counter(1, 2), 10_000);
        // A tenant that was served more than the minimum keeps its own counter.
        f.charge(1, 2, 5_000);
        f.leave(1, 2);
        f.join(1, 2);
        assert_eq!(f.counter(1, 2), 15_000);
    }

    #[test]
    fn a_tenant_put_back_unstarted_rejoins_without_a_lift() {
        let mut f = FairShare::default();
        f.join(0, 1);
        f.join(0, 2);
        f.charge(0, 2, 9_000);
        f.leave(0, 1); // its request was taken for a step and did not fit
        f.rejoin(0, 1);
        assert_eq!(f.counter(0, 1), 0, "kept its own counter");
        f.leave(0, 1);
        f.join(0, 1); // a new arrival after being idle is lifted
        assert_eq!(f.counter(0, 1), 9_000);
    }

    #[test]
    fn with_nobody_backlogged_the_lift_is_the_last_served_tenant() {
        let mut f = FairShare::default();
        f.join(0, 3);
        assert_eq!(f.pick(0), Some(3));
        f.leave(0, 3);
        f.charge(0, 3, 7_000); // charged after being picked (its prompt at admission)
        f.join(0, 4);
        assert_eq!(f.counter(0, 4), 7_000);
        // Classes are independent.
        f.join(2, 5);
        assert_eq!(f.counter(2, 5), 0);
    }

    #[test]
    fn the_heap_orders_like_a_sorted_set_under_random_changes() {
        // Against a BTreeSet of (key, slot), over a deterministic pseudo-random sequence.
        let mut heap = Order::default();
        let mut set = std::collections::BTreeSet::new();
        let mut keys = [0u64; 64];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 64) as u32;
            let s = slot as usize;
            match (x >> 8) % 3 {
                0 if !heap.contains(slot) => {
                    keys[s] += (x >> 20) % 5;
                    heap.insert(keys[s], slot);
                    set.insert((keys[s], slot));
                }
                1 => {
                    assert_eq!(heap.remove(slot), set.remove(&(keys[s], slot)));
                }
                _ => {
                    let k = keys[s] + (x >> 24) % 7;
                    if set.remove(&(keys[s], slot)) {
                        set.insert((k, slot));
                    }
                    if let Some(i) = heap.at(slot) {
                        heap.raise_at(i, slot, k);
                    }
                    keys[s] = k;
                }
            }
            assert_eq!(heap.first(), set.first().copied());
            assert_eq!(heap.heap.len(), set.len());
        }
    }

    #[test]
    fn service_divides_by_the_tenant_weight_and_saturates() {
        assert_eq!(service(10, 1.0, 1.0), 10_000);
        assert_eq!(service(10, 2.0, 4.0), 5_000);
        assert_eq!(service(u64::MAX, 2.0, 1e-9), u64::MAX);
    }
}
