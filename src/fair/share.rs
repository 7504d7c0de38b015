//! The virtual token counters and, per class, the order of the backlogged tenants by
//! counter. Owned by the wait queue, which tells it when a tenant's lane in a class becomes
//! non-empty ([`FairShare::join`]) or empty ([`FairShare::leave`]) and asks it for the next
//! tenant ([`FairShare::pick`]). The scheduler charges service ([`FairShare::charge`]).
//!
//! Every operation is O(log backlogged tenants) and independent of the requests queued.
//! The per-class order is an indexed 4-ary min-heap: a charge moves one tenant down in
//! place (a BTreeSet's remove and insert cost several times more, and a step charges once
//! per admission).

use crate::class::MAX_TIERS;

/// Not in the heap.
const ABSENT: u32 = u32::MAX;

/// The low bits of a heap key that hold the slot: every slot is below
/// [`super::MAX_TENANTS_LIMIT`] (2^20).
const SLOT_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// The largest counter, relative to [`Order::base`], that a key holds: 2^44 - 1 thousandths,
/// 17.6 billion weighted tokens. A tenant further above the base is held at this value.
const REL_MAX: u64 = u64::MAX >> SLOT_BITS;
/// The base moves up once the least relative counter reaches this, half the key's range.
const REBASE_AT: u64 = 1 << 43;

/// The slot a heap key holds.
fn slot_of(k: u64) -> u32 {
    (k & SLOT_MASK) as u32
}

/// The counter, relative to the base (clamped at [`REL_MAX`]), a heap key holds.
fn rel_of(k: u64) -> u64 {
    k >> SLOT_BITS
}

/// Children per node of the heap. Four rather than two: a charged tenant sinks through
/// half as many levels (about 5 at 1,000 tenants), and a node's children are 32
/// contiguous bytes.
const ARITY: usize = 4;

/// A 4-ary min-heap of backlogged tenants by `(counter, slot)`, with each slot's position,
/// so a slot's key can change in place.
///
/// A key is one `u64`: the counter relative to [`Order::base`] above the slot, so a sift
/// moves and compares single words (with a `u128` of the absolute counter and the slot, a
/// step's admissions at 1,000 tenants took about 8% longer). Keys order as
/// `(counter, slot)` exactly while the backlogged counters span less than [`REL_MAX`]; a
/// tenant served that much more than the least served one (17.6 billion weighted tokens, reachable only with extreme
/// weights) is held at `REL_MAX`, behind every other tenant, and such tenants go by slot
/// among themselves until the span shrinks. Methods take absolute counters and the class's
/// `counters` (indexed by slot) to rebuild keys when the base moves.
#[derive(Default)]
struct Order {
    /// The heap of keys: `heap[i] <= heap[ARITY*i+1 ..= ARITY*i+ARITY]`.
    heap: Vec<u64>,
    /// `pos[slot]`: the index of `slot` in `heap`, or [`ABSENT`]. Slots past the end are
    /// absent.
    pos: Vec<u32>,
    /// What keys count from: at most every counter in the heap, and within [`REBASE_AT`] of
    /// the least after every change.
    base: u64,
}

impl Order {
    /// The key of `counter` (at least `base`) for `slot`.
    fn key(&self, counter: u64, slot: u32) -> u64 {
        debug_assert!(counter >= self.base && u64::from(slot) <= SLOT_MASK);
        (counter.saturating_sub(self.base).min(REL_MAX) << SLOT_BITS) | u64::from(slot)
    }

    /// The least `(counter, slot)`.
    fn first(&self) -> Option<(u64, u32)> {
        // The root is never held at REL_MAX: it is within REBASE_AT of the base.
        self.heap
            .first()
            .map(|&k| (self.base + rel_of(k), slot_of(k)))
    }

    /// `slot`'s index in the heap, if present.
    fn at(&self, slot: u32) -> Option<usize> {
        let p = *self.pos.get(slot as usize)?;
        (p != ABSENT).then_some(p as usize)
    }

    fn contains(&self, slot: u32) -> bool {
        self.at(slot).is_some()
    }

    fn set_pos(&mut self, i: usize) {
        let slot = slot_of(self.heap[i]) as usize;
        self.pos[slot] = i as u32;
    }

    /// Moves `heap[i]` up to its place.
    fn up(&mut self, i: usize) {
        let item = self.heap[i];
        self.climb(item, i, 0);
    }

    /// Places `item` from the hole at `i` upward, no higher than `top`: parents that sort
    /// after it move down into the hole, and it is written once, where the climb stops.
    fn climb(&mut self, item: u64, mut i: usize, top: usize) {
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

    /// Adds `slot` (absent) at `counter`.
    fn insert(&mut self, counter: u64, slot: u32, counters: &[u64]) {
        let s = slot as usize;
        if self.pos.len() <= s {
            self.pos.resize(s + 1, ABSENT);
        }
        debug_assert_eq!(self.pos[s], ABSENT);
        if self.heap.is_empty() || counter < self.base {
            // Only a tenant put back unstarted can rejoin below the base, and only after
            // the base moved up within the step that took its request.
            self.base = counter;
            self.rebuild(counters);
        }
        self.heap.push(self.key(counter, slot));
        // No settle: the root is now the new key (at the base, after a rebuild) or was
        // already there, so the least counter did not move away from the base.
        self.up(self.heap.len() - 1);
    }

    /// Removes `slot`; whether it was there.
    fn remove(&mut self, slot: u32, counters: &[u64]) -> bool {
        let Some(i) = self.at(slot) else {
            return false;
        };
        self.pos[slot as usize] = ABSENT;
        let last = self.heap.pop().expect("a present slot is in the heap");
        if i < self.heap.len() {
            self.heap[i] = last;
            self.down(i);
            self.up(self.pos[slot_of(last) as usize] as usize);
        }
        self.settle(counters);
        true
    }

    /// Raises the counter of the tenant at heap index `i` (slot `slot`'s, from
    /// [`Order::at`]) to `counter`.
    fn raise_at(&mut self, i: usize, slot: u32, counter: u64, counters: &[u64]) {
        debug_assert_eq!(slot_of(self.heap[i]), slot);
        self.heap[i] = self.key(counter, slot);
        self.down(i);
        self.settle(counters);
    }

    /// Moves the base up to the least counter once that is [`REBASE_AT`] above it (the
    /// root's key may be clamped, so the least is read from `counters`).
    #[inline]
    fn settle(&mut self, counters: &[u64]) {
        if self.base_behind() {
            self.rebase(counters);
        }
    }

    /// Whether the least counter is [`REBASE_AT`] or more above the base.
    fn base_behind(&self) -> bool {
        self.heap.first().is_some_and(|&k| rel_of(k) >= REBASE_AT)
    }

    /// [`Order::settle`]'s move, out of line: it runs once per 8.8 billion weighted tokens.
    #[cold]
    #[inline(never)]
    fn rebase(&mut self, counters: &[u64]) {
        self.base = self
            .heap
            .iter()
            .map(|&k| counters[slot_of(k) as usize])
            .min()
            .expect("the heap is not empty");
        self.rebuild(counters);
    }

    /// Checks the heap against `counters`: every key is its slot's counter's, in heap
    /// order, with its position recorded, and the base is close behind the least.
    fn check(&self, counters: &[u64]) -> Result<(), String> {
        for (i, &k) in self.heap.iter().enumerate() {
            let s = slot_of(k);
            let v = counters.get(s as usize).copied().unwrap_or(0);
            if v < self.base || k != self.key(v, s) {
                return Err(format!("tenant {s} is not ordered at its counter"));
            }
            if self.pos[s as usize] as usize != i || (i > 0 && self.heap[(i - 1) / ARITY] > k) {
                return Err(format!("heap broken at tenant {s}"));
            }
        }
        if self.base_behind() {
            return Err("base left behind the least counter".into());
        }
        Ok(())
    }

    /// Recomputes every key from `counters` after the base moved (tenants held at
    /// [`REL_MAX`] may now have exact keys, so the heap is rebuilt, bottom-up). O(tenants);
    /// once per 8.8 billion weighted tokens served to the least served tenant.
    fn rebuild(&mut self, counters: &[u64]) {
        for i in 0..self.heap.len() {
            let slot = slot_of(self.heap[i]);
            self.heap[i] = self.key(counters[slot as usize], slot);
        }
        for i in (0..self.heap.len()).rev() {
            self.down(i);
        }
        for i in 0..self.heap.len() {
            self.set_pos(i);
        }
    }
}

/// Service is counted in thousandths of a weighted token, so fractional weights keep their
/// precision in integer counters.
pub(crate) const SCALE: f64 = 1000.0;

/// The service of `tokens` tokens at `token_weight` for a tenant of weight `tenant_weight`,
/// in counter units (saturating).
pub(crate) fn service(tokens: u64, token_weight: f64, tenant_weight: f64) -> u64 {
    let x = tokens as f64 * token_weight * SCALE / tenant_weight;
    // `x.round() as u64`, without the call to libm's `round` that x86_64's baseline
    // instruction set needs (a charge per admission made it a visible share of a step).
    // Truncate, then add one if the part cut off is a half or more: below 2^52 both the
    // truncated value and the difference are exact, and above it `x` is whole. `as`
    // saturates, so an absurd product ends at u64::MAX, and NaN at 0, as with `round`.
    let t = x as u64;
    if x - t as f64 >= 0.5 {
        t.saturating_add(1)
    } else {
        t
    }
}

/// Counters and backlogged sets, per wait-queue tier (a class, or a class's relegated
/// requests: each is its own fairness domain, charged for what was admitted from it).
#[derive(Default)]
pub(crate) struct FairShare {
    /// `counters[c][slot]`: the weighted service tenant `slot` received in class `c`,
    /// raised by the lift. A slot past the end has received none. By class, then slot: a
    /// class's counters are dense (eight to a cache line), so with many tenants the ones a
    /// step joins and charges share lines instead of each being a miss.
    counters: [Vec<u64>; MAX_TIERS],
    /// `backlogged[c]` holds `(counters[c][slot], slot)` for exactly the tenants with a
    /// request waiting in class `c`; its least element is the class's next tenant.
    backlogged: [Order; MAX_TIERS],
    /// `last[c]`: the tenant picked last in class `c` and its counter there (kept current
    /// while it is charged). The lift for a tenant joining a class where none is backlogged.
    last: [(u32, u64); MAX_TIERS],
}

impl FairShare {
    /// Tenant `slot`'s counter in class `c`.
    pub(crate) fn counter(&self, c: usize, slot: u32) -> u64 {
        self.counters[c].get(slot as usize).copied().unwrap_or(0)
    }

    fn counter_mut(&mut self, c: usize, slot: u32) -> &mut u64 {
        let (i, counters) = (slot as usize, &mut self.counters[c]);
        if i >= counters.len() {
            counters.resize(i + 1, 0);
        }
        &mut counters[i]
    }

    /// Starts loading tenant `slot`'s counter in class `c` (see [`crate::prefetch`]).
    pub(crate) fn prefetch(&self, c: usize, slot: u32) {
        if let Some(k) = self.counters[c].get(slot as usize) {
            crate::prefetch::prefetch(k);
        }
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
        self.backlogged[c].insert(v, slot, &self.counters[c]);
    }

    /// Tenant `slot` has a request waiting in class `c` again because a request taken for
    /// this step went back unstarted (backfill, a spared timeout): it rejoins at its own
    /// counter, with no lift, since it never stopped being backlogged in the queue's eyes.
    pub(crate) fn rejoin(&mut self, c: usize, slot: u32) {
        debug_assert!(
            !self.backlogged[c].contains(slot),
            "tenant {slot} rejoined class {c} twice"
        );
        let v = *self.counter_mut(c, slot);
        self.backlogged[c].insert(v, slot, &self.counters[c]);
    }

    /// Tenant `slot` has no request waiting in class `c` any more.
    pub(crate) fn leave(&mut self, c: usize, slot: u32) {
        let was = self.backlogged[c].remove(slot, &self.counters[c]);
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

    /// The backlogged tenant of class `c` most likely to be picked after the next one: the
    /// least of the root's children (the root, once charged, usually sinks below it).
    /// `None` with fewer than [`crate::prefetch::MIN_TENANTS`] backlogged, for whom it is
    /// not worth asking.
    pub(crate) fn runner_up(&self, c: usize) -> Option<u32> {
        let heap = &self.backlogged[c].heap;
        if heap.len() < crate::prefetch::MIN_TENANTS {
            return None;
        }
        let least = heap.get(1..heap.len().min(1 + ARITY))?.iter().min()?;
        Some(slot_of(*least))
    }

    /// Adds `amount` of service to tenant `slot` in class `c`, moving it in the order if it
    /// is backlogged there.
    pub(crate) fn charge(&mut self, c: usize, slot: u32, amount: u64) {
        if amount == 0 {
            return;
        }
        let k = self.counter_mut(c, slot);
        let new = k.saturating_add(amount);
        *k = new;
        if let Some(i) = self.backlogged[c].at(slot) {
            self.backlogged[c].raise_at(i, slot, new, &self.counters[c]);
        }
        if self.last[c].0 == slot {
            self.last[c].1 = new;
        }
    }

    /// Starts slot `slot` afresh for a new tenant (its previous tenant is gone).
    pub(crate) fn forget(&mut self, slot: u32) {
        debug_assert!((0..MAX_TIERS).all(|c| !self.backlogged[c].contains(slot)));
        for counters in &mut self.counters {
            if let Some(k) = counters.get_mut(slot as usize) {
                *k = 0;
            }
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
        order
            .check(&self.counters[c])
            .map_err(|e| format!("class {c}: {e}"))?;
        if let Some(&k) = order.heap.iter().find(|&&k| !is_backlogged(slot_of(k))) {
            return Err(format!(
                "class {c}: tenant {} is ordered but not backlogged",
                slot_of(k)
            ));
        }
        let n = (0..slots).filter(|&s| is_backlogged(s)).count();
        if n != order.heap.len() {
            return Err(format!(
                "class {c}: {n} tenants backlogged but {} ordered",
                order.heap.len()
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
        // Against a BTreeSet of (counter, slot), over a deterministic pseudo-random sequence.
        // Most raises are small, so ties are common; one in eight is 2^40 to 2^47, so the
        // base keeps moving up and counters spread past REL_MAX (where keys are clamped, and
        // the least must still be exact).
        let mut heap = Order::default();
        let mut set = std::collections::BTreeSet::new();
        let mut counters = [0u64; 64];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let (mut rebases, mut clamped) = (0, 0);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let slot = (x % 64) as u32;
            let s = slot as usize;
            let step = if (x >> 40) % 8 == 0 {
                1 << (40 + (x >> 44) % 8)
            } else {
                (x >> 20) % 5
            };
            let base = heap.base;
            match (x >> 8) % 3 {
                0 if !heap.contains(slot) => {
                    counters[s] += step;
                    heap.insert(counters[s], slot, &counters);
                    set.insert((counters[s], slot));
                }
                1 => {
                    assert_eq!(
                        heap.remove(slot, &counters),
                        set.remove(&(counters[s], slot))
                    );
                }
                _ => {
                    let k = counters[s] + step;
                    let present = set.remove(&(counters[s], slot));
                    counters[s] = k;
                    if present {
                        set.insert((k, slot));
                    }
                    if let Some(i) = heap.at(slot) {
                        heap.raise_at(i, slot, k, &counters);
                    }
                }
            }
            rebases += usize::from(heap.base > base);
            clamped += heap.heap.iter().filter(|&&k| rel_of(k) == REL_MAX).count();
            heap.check(&counters).unwrap();
            assert_eq!(heap.first(), set.first().copied());
            assert_eq!(heap.heap.len(), set.len());
        }
        assert!(
            rebases > 10 && clamped > 100,
            "{rebases} rebases, {clamped} clamped"
        );
    }

    #[test]
    fn service_divides_by_the_tenant_weight_and_saturates() {
        assert_eq!(service(10, 1.0, 1.0), 10_000);
        assert_eq!(service(10, 2.0, 4.0), 5_000);
        assert_eq!(service(u64::MAX, 2.0, 1e-9), u64::MAX);
        // Rounds as `f64::round` does, halves up, across magnitudes.
        for (tokens, tw, w) in [(1, 0.0005, 1.0), (1, 0.0004999, 1.0), (7, 1.0, 3.0)] {
            let x = tokens as f64 * tw * SCALE / w;
            assert_eq!(service(tokens, tw, w), x.round() as u64, "{x}");
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (tokens, tw, w) = (
                x % 100_000,
                (x >> 20) as f64 / 1e6 % 50.0,
                0.01 + (x >> 40) as f64 / 1e5,
            );
            let exact = (tokens as f64 * tw * SCALE / w).round() as u64;
            assert_eq!(service(tokens, tw, w), exact, "{tokens} {tw} {w}");
        }
    }
}
