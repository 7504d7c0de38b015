//! The virtual token counters and, per class, the order of the backlogged tenants by
//! counter. Owned by the wait queue, which tells it when a tenant's lane in a class becomes
//! non-empty ([`FairShare::join`]) or empty ([`FairShare::leave`]) and asks it for the next
//! tenant ([`FairShare::pick`]). The scheduler charges service ([`FairShare::charge`]), in
//! counter units that [`Pricing`] defines.
//!
//! Every operation is O(log backlogged tenants) and independent of the requests queued.
//! The per-class order is an indexed 4-ary min-heap: a charge moves one tenant down in
//! place (a BTreeSet's remove and insert cost several times more, and a step charges once
//! per admission).

use super::FairnessConfig;
use crate::class::MAX_TIERS;

/// Not in the heap.
const ABSENT: u32 = u32::MAX;

/// The low bits of a heap key that hold the slot: every slot is below
/// [`super::MAX_TENANTS_LIMIT`] (2^20).
const SLOT_BITS: u32 = 20;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// A heap key counts service in sixteenths of the cheapest token (2^26 counter units, see
/// [`FRAC_BITS`]): keys must fit the 44 bits above the slot, and counters hold 2^30 units
/// per cheapest token. Tenants within a sixteenth of each other share a key and go by slot.
const KEY_SHIFT: u32 = FRAC_BITS - 4;
/// The largest counter, relative to [`Order::base`], that a key holds: 2^44 - 1 sixteenths,
/// 1.1 trillion of the cheapest tokens. A tenant further above the base is held at this
/// value.
const REL_MAX: u64 = u64::MAX >> SLOT_BITS;
/// The base moves up once the least relative counter reaches this, half the key's range.
const REBASE_AT: u64 = 1 << 43;

/// The slot a heap key holds.
fn slot_of(k: u64) -> u32 {
    (k & SLOT_MASK) as u32
}

/// The counter a heap key holds: relative to the base, in sixteenths of the cheapest token,
/// clamped at [`REL_MAX`].
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
/// A key is one `u64`: the counter relative to [`Order::base`], in sixteenths of the
/// cheapest token ([`KEY_SHIFT`]), above the slot, so a sift moves and compares single
/// words (with a `u128` of the absolute counter and the slot, a step's admissions at 1,000
/// tenants took about 8% longer). Keys order as `(counter, slot)` up to that resolution
/// while the backlogged counters span less than [`REL_MAX`] sixteenths; a tenant served
/// that much more than the least served one (1.1 trillion of the cheapest tokens) is held
/// at `REL_MAX`, behind every other tenant, and such tenants go by slot among themselves
/// until the span shrinks. The least key is never held: once it would be, the base moves
/// up to the least counter ([`Order::settle`]), so the tenant picked is always the least
/// served. Methods take absolute counters and the class's `counters` (indexed by slot) to
/// rebuild keys when the base moves.
#[derive(Default)]
struct Order {
    /// The heap of keys: `heap[i] <= heap[ARITY*i+1 ..= ARITY*i+ARITY]`.
    heap: Vec<u64>,
    /// `pos[slot]`: the index of `slot` in `heap`, or [`ABSENT`]. Slots past the end are
    /// absent.
    pos: Vec<u32>,
    /// What keys count from: at most every counter in the heap, and within [`REBASE_AT`]
    /// sixteenths of the least after every change.
    base: u128,
}

impl Order {
    /// The key of `counter` (at least `base`) for `slot`.
    fn key(&self, counter: u128, slot: u32) -> u64 {
        debug_assert!(counter >= self.base && u64::from(slot) <= SLOT_MASK);
        let rel = (counter.saturating_sub(self.base) >> KEY_SHIFT).min(u128::from(REL_MAX));
        ((rel as u64) << SLOT_BITS) | u64::from(slot)
    }

    /// The least `(counter, slot)`, the counter rounded down to its key's sixteenth (less
    /// than 2^[`KEY_SHIFT`] units below the exact one).
    fn first(&self) -> Option<(u128, u32)> {
        // The root is never held at REL_MAX: it is within REBASE_AT of the base.
        self.heap
            .first()
            .map(|&k| (self.base + (u128::from(rel_of(k)) << KEY_SHIFT), slot_of(k)))
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
    fn insert(&mut self, counter: u128, slot: u32, counters: &[u128]) {
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
    fn remove(&mut self, slot: u32, counters: &[u128]) -> bool {
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
    fn raise_at(&mut self, i: usize, slot: u32, counter: u128, counters: &[u128]) {
        debug_assert_eq!(slot_of(self.heap[i]), slot);
        self.heap[i] = self.key(counter, slot);
        self.down(i);
        self.settle(counters);
    }

    /// Moves the base up to the least counter once that is [`REBASE_AT`] above it (the
    /// root's key may be clamped, so the least is read from `counters`).
    #[inline]
    fn settle(&mut self, counters: &[u128]) {
        if self.base_behind() {
            self.rebase(counters);
        }
    }

    /// Whether the least counter is [`REBASE_AT`] or more above the base.
    fn base_behind(&self) -> bool {
        self.heap.first().is_some_and(|&k| rel_of(k) >= REBASE_AT)
    }

    /// [`Order::settle`]'s move, out of line: it runs once the least counter has moved 550
    /// billion of the cheapest tokens.
    #[cold]
    #[inline(never)]
    fn rebase(&mut self, counters: &[u128]) {
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
    fn check(&self, counters: &[u128]) -> Result<(), String> {
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
    /// once per 550 billion of the cheapest tokens the least served tenant moves.
    fn rebuild(&mut self, counters: &[u128]) {
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

/// Counter units per token of the cheapest kind for the tenant of greatest weight: 2^30.
/// Each tenant's cost per token is a whole number of units, so a counter adds charges
/// exactly and rounding never accumulates; only the cost itself is rounded, once, to within
/// 2^-31 of itself.
pub(crate) const FRAC_BITS: u32 = 30;

/// How tokens become counter units. Weights are relative: multiplying every tenant weight,
/// or both token weights, by one factor changes no decision. So the units are scaled to the
/// configuration: the cheapest token (the least nonzero token weight, for the tenant of
/// greatest weight) costs exactly 2^[`FRAC_BITS`] units, whatever the weights' magnitude.
/// The dearest costs at most [`super::MAX_WEIGHT_RATIO`] × [`super::MAX_TOKEN_WEIGHT_RATIO`]
/// (10^10) times that, under 2^64 units (validation bounds the two ratios).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pricing {
    /// The prompt and output token weights over the least nonzero one, times 2^FRAC_BITS.
    tokens: [f64; 2],
    /// The greatest tenant weight (`default_weight` or a listed one).
    top: f64,
    /// Service (tokens × token weight / tenant weight) per counter unit.
    unit: f64,
}

impl Pricing {
    /// The units of `config` (validated).
    pub(crate) fn new(config: &FairnessConfig) -> Self {
        let (p, o) = (config.prompt_token_weight, config.output_token_weight);
        let least = [p, o]
            .into_iter()
            .filter(|&w| w > 0.0)
            .fold(f64::INFINITY, f64::min);
        // Validation refuses two zero token weights; a unit weight keeps this total.
        let least = if least.is_finite() { least } else { 1.0 };
        let top = config
            .tenants
            .iter()
            .map(|t| t.weight)
            .fold(config.default_weight, f64::max);
        let scale = (1u64 << FRAC_BITS) as f64;
        Pricing {
            tokens: [p / least * scale, o / least * scale],
            top,
            unit: least / top / scale,
        }
    }

    /// The cost of one prompt token and of one output token, in units, for a tenant of
    /// weight `weight`.
    pub(crate) fn costs(&self, weight: f64) -> [u64; 2] {
        let r = self.top / weight;
        // `as` saturates: only a weight outside the validated range could get there.
        self.tokens.map(|t| (t * r).round() as u64)
    }

    /// `units` of a counter as service: tokens × token weight / tenant weight.
    pub(crate) fn service(&self, units: u128) -> f64 {
        units as f64 * self.unit
    }
}

/// Counters and backlogged sets, per wait-queue tier (a class, or a class's relegated
/// requests: each is its own fairness domain, charged for what was admitted from it).
#[derive(Default)]
pub(crate) struct FairShare {
    /// `counters[c][slot]`: the weighted service tenant `slot` received in tier `c`, in
    /// [`Pricing`]'s units, raised by the lift. A slot past the end has received none. By
    /// tier, then slot: a tier's counters are dense (four to a cache line), so with many
    /// tenants the ones a step joins and charges share lines instead of each being a miss.
    /// `u128`: at most 2^64 units a token, they hold 2^64 tokens at the dearest rate.
    counters: [Vec<u128>; MAX_TIERS],
    /// `backlogged[c]` holds `(counters[c][slot], slot)` for exactly the tenants with a
    /// request waiting in class `c`; its least element is the class's next tenant.
    backlogged: [Order; MAX_TIERS],
    /// `last[c]`: the tenant picked last in class `c` and its counter there (kept current
    /// while it is charged). The lift for a tenant joining a class where none is backlogged.
    last: [(u32, u128); MAX_TIERS],
}

impl FairShare {
    /// Tenant `slot`'s counter in class `c`.
    pub(crate) fn counter(&self, c: usize, slot: u32) -> u128 {
        self.counters[c].get(slot as usize).copied().unwrap_or(0)
    }

    fn counter_mut(&mut self, c: usize, slot: u32) -> &mut u128 {
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
    /// the smallest counter backlogged there (so idle time is not banked; to within a
    /// sixteenth of the cheapest token, as the heap's root holds it) and joins the order.
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
    /// the heap's root, which holds it to a sixteenth of the cheapest token (an invariant
    /// [`FairShare::check`] checks), rather than from `counters`: with many tenants that
    /// row was a cache miss per admission.
    pub(crate) fn pick(&mut self, c: usize) -> Option<u32> {
        let (v, slot) = self.backlogged[c].first()?;
        debug_assert!(v <= self.counter(c, slot) && self.counter(c, slot) - v < 1 << KEY_SHIFT);
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

    /// Adds `amount` units of service to tenant `slot` in class `c`, moving it in the order
    /// if it is backlogged there.
    pub(crate) fn charge(&mut self, c: usize, slot: u32, amount: u128) {
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

    /// One cheapest token, in units.
    const TOK: u128 = 1 << FRAC_BITS;

    #[test]
    fn the_least_served_backlogged_tenant_goes_next() {
        let mut f = FairShare::default();
        f.join(0, 1);
        f.join(0, 2);
        f.charge(0, 1, 500 * TOK);
        assert_eq!(f.next(0), Some(2));
        f.charge(0, 2, 600 * TOK);
        assert_eq!(f.next(0), Some(1));
        f.leave(0, 1);
        assert_eq!(f.next(0), Some(2));
        f.leave(0, 2);
        assert_eq!(f.next(0), None);
    }

    #[test]
    fn keys_tell_tenants_apart_to_a_sixteenth_of_the_cheapest_token() {
        let mut f = FairShare::default();
        f.join(0, 1);
        f.join(0, 2);
        // Less than a sixteenth apart: one key, so the lower slot goes first.
        f.charge(0, 1, TOK / 32);
        assert_eq!(f.next(0), Some(1));
        // A sixteenth apart: the less served goes first.
        f.charge(0, 1, TOK / 32);
        assert_eq!(f.next(0), Some(2));
        // A joining tenant is lifted to the least counter as the heap holds it: rounded
        // down to its sixteenth, so at most that much below tenant 2's.
        f.leave(0, 1);
        f.charge(0, 2, TOK + 5);
        f.join(0, 3);
        let (two, three) = (f.counter(0, 2), f.counter(0, 3));
        assert!(three < two && two - three < TOK / 16, "{two} {three}");
        assert_eq!(f.next(0), Some(2), "one key again: the lower slot");
        f.check(0, |s| s == 2 || s == 3, 4).unwrap();
    }

    #[test]
    fn a_returning_tenant_is_lifted_to_the_backlogged_minimum() {
        let mut f = FairShare::default();
        f.join(1, 1);
        f.charge(1, 1, 10 * TOK);
        f.join(1, 2); // lifted to tenant 1's counter: no credit for having been away
        assert_eq!(f.counter(1, 2), 10 * TOK);
        // A tenant that was served more than the minimum keeps its own counter.
        f.charge(1, 2, 5 * TOK);
        f.leave(1, 2);
        f.join(1, 2);
        assert_eq!(f.counter(1, 2), 15 * TOK);
    }

    #[test]
    fn a_tenant_put_back_unstarted_rejoins_without_a_lift() {
        let mut f = FairShare::default();
        f.join(0, 1);
        f.join(0, 2);
        f.charge(0, 2, 9 * TOK);
        f.leave(0, 1); // its request was taken for a step and did not fit
        f.rejoin(0, 1);
        assert_eq!(f.counter(0, 1), 0, "kept its own counter");
        f.leave(0, 1);
        f.join(0, 1); // a new arrival after being idle is lifted
        assert_eq!(f.counter(0, 1), 9 * TOK);
    }

    #[test]
    fn with_nobody_backlogged_the_lift_is_the_last_served_tenant() {
        let mut f = FairShare::default();
        f.join(0, 3);
        assert_eq!(f.pick(0), Some(3));
        f.leave(0, 3);
        f.charge(0, 3, 7 * TOK + 3); // charged after being picked (its prompt at admission)
        f.join(0, 4);
        assert_eq!(f.counter(0, 4), 7 * TOK + 3);
        // Classes are independent.
        f.join(2, 5);
        assert_eq!(f.counter(2, 5), 0);
    }

    #[test]
    fn the_heap_orders_like_a_sorted_set_under_random_changes() {
        // Against a BTreeSet of (counter, slot), over a deterministic pseudo-random sequence.
        // Counters move in whole sixteenths (the keys' resolution, so the order is exact).
        // Most raises are small, so ties are common; one in eight is 2^40 to 2^47
        // sixteenths, so the base keeps moving up and counters spread past REL_MAX (where
        // keys are clamped, and the least must still be exact).
        let mut heap = Order::default();
        let mut set = std::collections::BTreeSet::new();
        let mut counters = [0u128; 64];
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
                u128::from((x >> 20) % 5)
            } << KEY_SHIFT;
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

    fn pricing(prompt: f64, output: f64, default: f64, weights: &[f64]) -> Pricing {
        Pricing::new(&FairnessConfig {
            prompt_token_weight: prompt,
            output_token_weight: output,
            default_weight: default,
            tenants: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| crate::TenantWeight {
                    id: i as u64,
                    weight,
                })
                .collect(),
            ..FairnessConfig::default()
        })
    }

    #[test]
    fn the_cheapest_token_costs_exactly_one_unit_and_costs_follow_the_weights() {
        let p = pricing(1.0, 2.0, 1.0, &[3.0]);
        let t = TOK as u64;
        assert_eq!(p.costs(3.0), [t, 2 * t]);
        assert_eq!(p.costs(1.0), [3 * t, 6 * t]);
        // 3 / 1.7 is not whole: rounded once, to within 2^-31 of the exact cost.
        let [c, _] = p.costs(1.7);
        let exact = 3.0 / 1.7 * TOK as f64;
        assert!((c as f64 - exact).abs() <= 0.5, "{c} {exact}");
        // Service comes back in weighted tokens over the weight.
        assert_eq!(p.service(u128::from(3 * t) * 10), 10.0);
        assert!((p.service(u128::from(2 * t) * 10) - 20.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn costs_do_not_depend_on_the_weights_magnitude() {
        // The scale (every tenant 100,000, where a decode token used to cost 0)
        // and a tiny output weight cost what their ratios say, as at weight 1.
        let t = TOK as u64;
        assert_eq!(pricing(1.0, 2.0, 1e5, &[]).costs(1e5), [t, 2 * t]);
        assert_eq!(pricing(1.0, 4e-4, 1.0, &[]).costs(1.0), [2500 * t, t]);
        // Every weight scaled by a power of two: exactly the same costs.
        let base = pricing(1.0, 2.0, 1.0, &[3.0, 0.25, 7.5]);
        for k in [-1000, -20, 20, 990] {
            let s = 2f64.powi(k);
            let scaled = pricing(s, 2.0 * s, s, &[3.0 * s, 0.25 * s, 7.5 * s]);
            for w in [1.0, 3.0, 0.25, 7.5] {
                assert_eq!(scaled.costs(w * s), base.costs(w), "2^{k}, weight {w}");
            }
        }
        // The widest spread validation accepts still fits a u64 cost, exactly enough.
        let p = pricing(1e-4, 1.0, 1.0, &[1e6]);
        let [_, dearest] = p.costs(1.0);
        let exact = 1e10 * TOK as f64;
        assert!(dearest < u64::MAX && (dearest as f64 - exact).abs() <= exact * 1e-15);
    }
}
