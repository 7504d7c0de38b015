//! A log-linear latency histogram with three significant decimal digits: the layout of an
//! HDR histogram (Gil Tene's HdrHistogram) at that precision, reduced to what the SLO
//! windows need — record, add, subtract, quantile, count at or below a bound — so that a
//! record is an index computation and two additions.
//!
//! # Layout
//!
//! Values below 2,048 have a counter each. Above, each power of two `[2^(10+b), 2^(11+b))`
//! (`b ≥ 1`) is split into 1,024 counters of width `2^b`: a counter's width is at most
//! 1/1,024 of the values it holds, so any value is known to within 0.1 % (three
//! significant digits). Counter `i` of the flat array:
//!
//! * `b = 0`: `i = v` for `v < 2,048`;
//! * `b ≥ 1`: `i = 1,024 · b + (v >> b)`, where `v >> b` lies in `[1,024, 2,048)`.
//!
//! This is the counter an HDR histogram with 3 significant digits and a lowest value of 1
//! uses, so quantiles and counts agree with one (a unit test checks it against the
//! `hdrhistogram` crate).
//!
//! # Memory
//!
//! The counters grow to the largest value recorded: 1,024 counters for each power of two
//! covered (4 KiB with 32-bit counts, 8 KiB with 64-bit), nothing for values never seen.

/// Counters per power of two above the first 2,048 values.
const HALF: usize = 1 << 10;

/// A counter's type: 32 bits for the windows' slices, 64 for the cumulative histogram.
/// Additions saturate.
pub(crate) trait Count: Copy + Default + Into<u64> {
    /// `self + n`, saturating.
    fn plus(self, n: Self) -> Self;
    /// `n`, saturating to this type.
    fn from_u64(n: u64) -> Self;
    /// The largest count.
    const MAX: u64;
    /// `self + n`, for a caller that knows it does not pass [`Count::MAX`]. Unlike
    /// [`Count::plus`] it has no branch, so loops of it vectorise.
    fn plus_in_range(self, n: u64) -> Self;
    /// `self - n`, wrapping below zero (branch-free, as [`Count::plus_in_range`]).
    fn minus_wrapping(self, n: Self) -> Self;
}

impl Count for u32 {
    fn plus(self, n: Self) -> Self {
        self.saturating_add(n)
    }
    fn from_u64(n: u64) -> Self {
        u32::try_from(n).unwrap_or(u32::MAX)
    }
    const MAX: u64 = u32::MAX as u64;
    fn plus_in_range(self, n: u64) -> Self {
        self.wrapping_add(n as u32)
    }
    fn minus_wrapping(self, n: Self) -> Self {
        self.wrapping_sub(n)
    }
}

impl Count for u64 {
    fn plus(self, n: Self) -> Self {
        self.saturating_add(n)
    }
    fn from_u64(n: u64) -> Self {
        n
    }
    const MAX: u64 = u64::MAX;
    fn plus_in_range(self, n: u64) -> Self {
        self.wrapping_add(n)
    }
    fn minus_wrapping(self, n: Self) -> Self {
        self.wrapping_sub(n)
    }
}

/// The counter of value `v` (module docs).
fn index_of(v: u64) -> usize {
    // `b`: how many doublings `v` lies above the first 2,048 values (0 below them).
    let b = (u64::BITS - (v | (2 * HALF as u64 - 1)).leading_zeros()) - 11;
    b as usize * HALF + (v >> b) as usize
}

/// The smallest value counter `i` holds.
fn lowest_of(i: usize) -> u64 {
    if i < 2 * HALF {
        return i as u64;
    }
    let b = i / HALF - 1;
    ((i - b * HALF) as u64) << b
}

/// The largest value counter `i` holds.
fn highest_of(i: usize) -> u64 {
    if i < 2 * HALF {
        return i as u64;
    }
    let b = i / HALF - 1;
    lowest_of(i) + ((1u64 << b) - 1)
}

/// The histogram.
#[derive(Clone, Debug, Default)]
pub(crate) struct Histogram<C: Count> {
    /// `counts[i]`: samples in counter `i`; grown to the largest counter recorded.
    counts: Vec<C>,
    /// Samples in all counters (saturating).
    total: u64,
}

impl<C: Count> Histogram<C> {
    /// An empty histogram; allocates nothing until the first record.
    pub(crate) fn new() -> Self {
        Self {
            counts: Vec::new(),
            total: 0,
        }
    }

    /// Samples recorded.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// Whether no sample is recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Records `n` samples of `value`, growing the counters to it.
    #[inline]
    pub(crate) fn record_n(&mut self, value: u64, n: C) {
        let i = index_of(value);
        if i >= self.counts.len() {
            self.grow(i + 1);
        }
        self.counts[i] = self.counts[i].plus(n);
        self.total = self.total.saturating_add(n.into());
    }

    #[cold]
    fn grow(&mut self, len: usize) {
        self.counts.resize(len, C::default());
    }

    /// Forgets every sample, keeping the counters' room.
    pub(crate) fn reset(&mut self) {
        self.counts.fill(C::default());
        self.total = 0;
    }

    /// Adds every sample of `other` (its counters may be of another width), growing to its
    /// largest counter.
    pub(crate) fn add<D: Count>(&mut self, other: &Histogram<D>) {
        if other.is_empty() {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.grow(other.counts.len());
        }
        if self.total.saturating_add(other.total) < C::MAX {
            // No counter can reach the largest count (none exceeds the total): plain adds,
            // which vectorise. A histogram grows to about 18,000 counters once a sample of
            // a minute is in it, and the windows add theirs a dozen times per rotation.
            for (c, &o) in self.counts.iter_mut().zip(&other.counts) {
                *c = c.plus_in_range(o.into());
            }
        } else {
            for (c, &o) in self.counts.iter_mut().zip(&other.counts) {
                *c = c.plus(C::from_u64(o.into()));
            }
        }
        self.total = self.total.saturating_add(other.total);
    }

    /// Takes away every sample of `other`, which must have been added before. `Err` if some
    /// counter of `other` exceeds this one's (only after a counter saturated); the counts
    /// are then wrong and the caller rebuilds them.
    pub(crate) fn subtract(&mut self, other: &Histogram<C>) -> Result<(), ()> {
        if other.counts.len() > self.counts.len() {
            return Err(());
        }
        // Branch-free, so it vectorises (see `add`); a counter that would go below zero
        // wraps, and the caller rebuilds the counts anyway.
        let mut exact = true;
        for (c, &o) in self.counts.iter_mut().zip(&other.counts) {
            exact &= o.into() <= (*c).into();
            *c = c.minus_wrapping(o);
        }
        self.total = self.total.saturating_sub(other.total);
        if exact {
            Ok(())
        } else {
            Err(())
        }
    }

    /// The value at `quantile`: the highest value of the first counter at which at least
    /// `quantile` of the samples are counted (for quantile 0, the lowest value of the first
    /// sample's counter); 0 when empty. A quantile above 1 is taken as 1.
    pub(crate) fn value_at_quantile(&self, quantile: f64) -> u64 {
        let quantile = quantile.min(1.0);
        // At least the first sample; a fractional rank rounds up.
        let rank = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        // Whole blocks whose samples stay below the rank are summed (a sum vectorises),
        // then the block that reaches it is walked counter by counter.
        const BLOCK: usize = 64;
        for (b, block) in self.counts.chunks(BLOCK).enumerate() {
            let sum = sum_of(block, self.total);
            if seen.saturating_add(sum) < rank {
                seen = seen.saturating_add(sum);
                continue;
            }
            for (j, &c) in block.iter().enumerate() {
                seen = seen.saturating_add(c.into());
                if seen >= rank {
                    let i = b * BLOCK + j;
                    return if quantile == 0.0 {
                        lowest_of(i)
                    } else {
                        highest_of(i)
                    };
                }
            }
        }
        0
    }

    /// Samples whose counter is at or below `bound`'s (so within the precision of `bound`).
    pub(crate) fn count_at_most(&self, bound: u64) -> u64 {
        let last = index_of(bound).min(self.counts.len().saturating_sub(1));
        sum_of(self.counts.get(..=last).unwrap_or_default(), self.total)
    }
}

/// The samples in `counts`, counters of a histogram of `total` samples.
fn sum_of<C: Count>(counts: &[C], total: u64) -> u64 {
    if total < u64::MAX {
        // The total did not saturate, so no partial sum can pass it: plain adds, which
        // vectorise.
        counts.iter().fold(0u64, |t, &c| t.wrapping_add(c.into()))
    } else {
        counts.iter().fold(0u64, |t, &c| t.saturating_add(c.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_counter_that_holds_it_within_a_thousandth() {
        let mut v = 0u64;
        while v < u64::MAX / 8 {
            let i = index_of(v);
            assert!(
                lowest_of(i) <= v && v <= highest_of(i),
                "{v} not in counter {i}"
            );
            assert!(highest_of(i) - lowest_of(i) <= v / 1024, "{v}: too wide");
            // Neighbouring counters touch: the layout has no gap and no overlap.
            assert_eq!(index_of(highest_of(i) + 1), i + 1);
            v = v * 5 / 4 + 1;
        }
    }

    #[test]
    fn quantiles_and_counts_of_a_known_set() {
        let mut h = Histogram::<u32>::new();
        assert_eq!(
            (h.len(), h.value_at_quantile(0.5), h.count_at_most(10)),
            (0, 0, 0)
        );
        for v in 1..=100u64 {
            h.record_n(v, 1);
        }
        h.record_n(1_000_000, 3);
        assert_eq!(h.len(), 103);
        assert_eq!(h.value_at_quantile(0.5), 52);
        assert_eq!(h.value_at_quantile(0.0), 1);
        // The largest counter's highest value: 1,000,000 to within a thousandth.
        let max = h.value_at_quantile(1.0);
        assert!((1_000_000..1_001_000).contains(&max), "{max}");
        assert_eq!(h.count_at_most(100), 100);
        assert_eq!(h.count_at_most(u64::MAX), 103);
        let mut sum = Histogram::<u64>::new();
        sum.add(&h);
        sum.add(&h);
        assert_eq!((sum.len(), sum.count_at_most(50)), (206, 100));
        let mut t = h.clone();
        t.add(&h);
        assert_eq!(t.subtract(&h), Ok(()));
        assert_eq!((t.len(), t.count_at_most(100)), (103, 100));
        t.reset();
        assert!(t.is_empty() && t.count_at_most(u64::MAX) == 0);
        // Taking away more than was added is reported.
        let mut small = Histogram::<u32>::new();
        small.record_n(5, 1);
        assert_eq!(small.subtract(&h), Err(()));
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut h = Histogram::<u32>::new();
        h.record_n(7, u32::MAX);
        h.record_n(7, 5);
        assert_eq!(h.count_at_most(7), u64::from(u32::MAX));
        assert_eq!(h.len(), u64::from(u32::MAX) + 5);
    }

    #[test]
    fn adds_saturate_once_the_totals_could_pass_the_largest_count() {
        let mut big = Histogram::<u32>::new();
        big.record_n(7, u32::MAX - 1);
        big.record_n(5_000, 1);
        let mut h = Histogram::<u32>::new();
        h.record_n(7, 3);
        h.record_n(5_000, 2);
        // Below the largest count: plain adds.
        let mut sum = Histogram::<u32>::new();
        sum.add(&h);
        sum.add(&h);
        assert_eq!((sum.count_at_most(7), sum.len()), (6, 10));
        // Past it: the counter of 7 saturates, the others add up.
        sum.add(&big);
        assert_eq!(sum.count_at_most(7), u64::from(u32::MAX));
        assert_eq!(sum.count_at_most(5_000), u64::from(u32::MAX) + 5);
        // Taking away more than a counter holds is reported.
        let mut once = Histogram::<u32>::new();
        once.add(&h);
        assert_eq!(once.subtract(&h), Ok(()));
        assert_eq!(once.subtract(&h), Err(()));
        // 64-bit counters take it all.
        let mut wide = Histogram::<u64>::new();
        wide.add(&big);
        wide.add(&big);
        assert_eq!(wide.count_at_most(7), 2 * u64::from(u32::MAX - 1));
    }

    /// The same answers as the `hdrhistogram` crate at three significant digits, on a
    /// seeded spread of latencies from microseconds to days.
    #[test]
    fn agrees_with_an_hdr_histogram() {
        let mut ours = Histogram::<u64>::new();
        let mut hdr = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Log-uniform over about 2^0 .. 2^40.
            let v = (x >> 24) >> (x % 40);
            let n = 1 + x % 3;
            ours.record_n(v, n);
            hdr.record_n(v, n).unwrap();
        }
        assert_eq!(ours.len(), hdr.len());
        for q in [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 1.5] {
            assert_eq!(ours.value_at_quantile(q), hdr.value_at_quantile(q), "q {q}");
        }
        let mut b = 1u64;
        while b < 1 << 42 {
            assert_eq!(ours.count_at_most(b), hdr.count_between(0, b), "bound {b}");
            b = b * 3 / 2 + 1;
        }
    }
}
