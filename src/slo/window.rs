//! Latency histograms over sliding windows: log-linear histograms (3 significant digits,
//! values in microseconds; [`super::histogram`]) in a ring of sub-windows rotated by the
//! injected time, plus one cumulative histogram.
//!
//! A window of span `W` with `k` sub-windows keeps `k` histograms, one per slice of
//! `W / k`, and a running total of the live slices. Samples are recorded once into a
//! pending histogram, which is added to every window's current slice and total (and to the
//! cumulative histogram) before a window rotates or is read; when time enters a new slice,
//! the slice that falls out is subtracted from the total and cleared. A query reads the
//! total, so it costs one pass over its buckets and never merges slices. The window
//! therefore counts every sample younger than `W * (k - 1) / k` and none older than `W`.
//!
//! Memory: each histogram auto-resizes to the largest value it has seen, about 4 KiB (per
//! sub-window, 32-bit counts) or 8 KiB (cumulative, 64-bit counts) for each power of two of
//! microseconds covered; a histogram whose samples reach one minute holds about 17 of them.

use super::histogram::{Count, Histogram};

/// Largest value recorded (7 days in µs); larger ones are clamped.
pub(crate) const MAX_VALUE_US: u64 = 7 * 24 * 3600 * 1_000_000;

/// What a query reads off a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stats {
    /// Samples.
    pub count: u64,
    /// The value at the asked quantile, in µs (`None` with no samples).
    pub at_quantile: Option<u64>,
    /// Samples at most the asked bound (to within the histogram's precision).
    pub at_most_bound: u64,
}

fn stats<C: Count>(h: &Histogram<C>, quantile: f64, bound_us: Option<u64>) -> Stats {
    let count = h.len();
    if count == 0 {
        return Stats {
            count,
            at_quantile: None,
            at_most_bound: 0,
        };
    }
    Stats {
        count,
        at_quantile: Some(h.value_at_quantile(quantile)),
        at_most_bound: bound_us.map_or(0, |b| h.count_at_most(b)),
    }
}

/// One sliding window.
#[derive(Debug, Clone)]
struct Ring {
    slice_ns: u64,
    /// Slice index (`time / slice_ns`) of the newest slice. The ring holds slices
    /// `newest - k + 1 ..= newest`, slice `e` at `slices[e % k]`.
    newest: u64,
    /// Where the newest slice ends (`(newest + 1) * slice_ns`): times before it need no
    /// rotation, so the common case is one comparison.
    newest_end_ns: u64,
    slices: Vec<Histogram<u32>>,
    total: Histogram<u32>,
}

impl Ring {
    fn new(span_ns: u64, k: u32) -> Self {
        let slice_ns = (span_ns / u64::from(k)).max(1);
        Self {
            slice_ns,
            newest: 0,
            newest_end_ns: slice_ns,
            slices: (0..k).map(|_| Histogram::new()).collect(),
            total: Histogram::new(),
        }
    }

    /// Moves the ring to `now_ns`, dropping the slices that fell out of the window. A time
    /// earlier than the newest slice changes nothing.
    fn advance(&mut self, now_ns: u64) {
        if now_ns < self.newest_end_ns {
            return;
        }
        let e = now_ns / self.slice_ns;
        let k = self.slices.len() as u64;
        if e - self.newest >= k {
            for s in &mut self.slices {
                if !s.is_empty() {
                    s.reset();
                }
            }
            if !self.total.is_empty() {
                self.total.reset();
            }
        } else {
            let mut rebuild = false;
            for epoch in self.newest + 1..=e {
                let s = &mut self.slices[(epoch % k) as usize];
                if !s.is_empty() {
                    rebuild |= self.total.subtract(&*s).is_err();
                    s.reset();
                }
            }
            if rebuild {
                // Only reachable if 32-bit counts saturated: recount from the live slices.
                self.total.reset();
                for s in &self.slices {
                    // The total has grown to every value any slice holds.
                    self.total.add(s);
                }
            }
        }
        self.newest = e;
        self.newest_end_ns = e.saturating_add(1).saturating_mul(self.slice_ns);
    }

    /// The window's total as of `now_ns` with `pending` (samples of the newest slice)
    /// added, without changing the ring: the live slices summed afresh. `None` when the
    /// stored total already is that (nothing pending, no rotation due).
    fn total_as_of(&self, now_ns: u64, pending: &Histogram<u32>) -> Option<Histogram<u32>> {
        if now_ns < self.newest_end_ns && pending.is_empty() {
            return None;
        }
        let k = self.slices.len() as u64;
        let e = (now_ns / self.slice_ns).max(self.newest);
        // Live at `now_ns`: slices e - k + 1 ..= e; the ring holds newest - k + 1 ..= newest.
        let first = (e + 1)
            .saturating_sub(k)
            .max((self.newest + 1).saturating_sub(k));
        let mut h = Histogram::<u32>::new();
        for epoch in first..=self.newest {
            // Grows to the slice's largest value; counts saturate.
            h.add(&self.slices[(epoch % k) as usize]);
        }
        if first <= self.newest {
            // The pending samples belong to the newest slice, live with it.
            h.add(pending);
        }
        Some(h)
    }

    /// Adds `pending` (samples of the newest slice) to the newest slice and the total.
    fn add_to_newest(&mut self, pending: &Histogram<u32>) {
        let k = self.slices.len() as u64;
        // Both grow to `pending`'s largest value; counts saturate.
        self.slices[(self.newest % k) as usize].add(pending);
        self.total.add(pending);
    }
}

/// One latency distribution over every configured sliding window plus cumulative.
///
/// A sample is recorded once, into `pending`; pending samples are added to every window's
/// newest slice and to the cumulative histogram (a pass over `pending`'s buckets) before
/// any window rotates and before any query. So the cost per sample is one histogram
/// record whatever the number of windows, and the passes happen at most once per
/// sub-window of the shortest window plus once per query.
#[derive(Debug, Clone)]
pub(crate) struct Windowed {
    rings: Vec<Ring>,
    cumulative: Histogram<u64>,
    /// Samples not yet in the rings or the cumulative histogram. They all belong to every
    /// ring's newest slice.
    pending: Histogram<u32>,
    /// The earliest end of any ring's newest slice: a sample at or after it flushes
    /// `pending` and rotates the rings first.
    rotate_at_ns: u64,
}

impl Windowed {
    /// Windows of `spans_s` seconds, each in `sub_windows` slices.
    pub(crate) fn new(spans_s: &[u64], sub_windows: u32) -> Self {
        let rings: Vec<Ring> = spans_s
            .iter()
            .map(|&s| Ring::new(s.saturating_mul(1_000_000_000), sub_windows))
            .collect();
        Self {
            rotate_at_ns: rings
                .iter()
                .map(|r| r.newest_end_ns)
                .min()
                .unwrap_or(u64::MAX),
            rings,
            cumulative: Histogram::new(),
            pending: Histogram::new(),
        }
    }

    /// Records `n` samples of `value_us` µs at time `now_ns`. A time earlier than the
    /// newest sub-window counts in the newest sub-window.
    ///
    /// Inlined into the tracker's events, with the rotation (once per sub-window) out of
    /// line: called apart, the rotation's register saves were most of a record's cost.
    #[inline]
    pub(crate) fn record(&mut self, now_ns: u64, value_us: u64, n: u64) {
        if n == 0 {
            return;
        }
        if now_ns >= self.rotate_at_ns {
            self.rotate(now_ns);
        }
        // `record_n` grows the histogram to the value; counts saturate.
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        self.pending.record_n(value_us.min(MAX_VALUE_US), n32);
    }

    /// Flushes the pending samples and rotates to `now_ns`: [`Windowed::record`]'s rare
    /// path.
    #[cold]
    #[inline(never)]
    fn rotate(&mut self, now_ns: u64) {
        self.flush();
        self.advance(now_ns);
    }

    /// Adds the pending samples to every ring's newest slice and to the cumulative
    /// histogram.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for r in &mut self.rings {
            r.add_to_newest(&self.pending);
        }
        self.cumulative.add(&self.pending);
        self.pending.reset();
    }

    /// Rotates every ring to `now_ns` (after a flush).
    fn advance(&mut self, now_ns: u64) {
        debug_assert!(self.pending.is_empty());
        let mut next = u64::MAX;
        for r in &mut self.rings {
            r.advance(now_ns);
            next = next.min(r.newest_end_ns);
        }
        self.rotate_at_ns = next;
    }

    /// Adds the pending samples and rotates to `now_ns`, so that queries as of `now_ns`
    /// read the stored totals. Queries are right without it, but each then sums its
    /// window's slices afresh while samples are pending or a rotation is due.
    pub(crate) fn sync(&mut self, now_ns: u64) {
        self.flush();
        if now_ns >= self.rotate_at_ns {
            self.advance(now_ns);
        }
    }

    /// Statistics of window `window` (an index into the spans, `None` for cumulative) as
    /// of `now_ns`. `None` if there is no such window. Reads the stored totals after a
    /// [`Windowed::sync`] to `now_ns`; else builds the answer aside and changes nothing.
    pub(crate) fn stats(
        &self,
        window: Option<usize>,
        now_ns: u64,
        quantile: f64,
        bound_us: Option<u64>,
    ) -> Option<Stats> {
        match window {
            None if self.pending.is_empty() => Some(stats(&self.cumulative, quantile, bound_us)),
            None => {
                let mut h = self.cumulative.clone();
                h.add(&self.pending);
                Some(stats(&h, quantile, bound_us))
            }
            Some(i) => {
                let r = self.rings.get(i)?;
                Some(match r.total_as_of(now_ns, &self.pending) {
                    None => stats(&r.total, quantile, bound_us),
                    Some(h) => stats(&h, quantile, bound_us),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn samples_leave_the_window_after_its_span() {
        // 60 s window in 6 slices of 10 s.
        let mut w = Windowed::new(&[60], 6);
        w.record(5 * S, 1_000, 1); // slice 0
        w.record(15 * S, 2_000, 3); // slice 1
        let count = |w: &Windowed, t| w.stats(Some(0), t, 0.5, None).unwrap().count;
        assert_eq!(count(&w, 15 * S), 4);
        assert_eq!(count(&w, 59 * S), 4);
        // At 60 s slice 0 (0..10 s) falls out: its sample is 55 s old, within W*(k-1)/k.
        assert_eq!(count(&w, 60 * S), 3);
        assert_eq!(count(&w, 69 * S), 3);
        assert_eq!(count(&w, 70 * S), 0);
        // Cumulative keeps everything.
        assert_eq!(w.stats(None, 70 * S, 0.5, None).unwrap().count, 4);
        // Unknown window.
        assert!(w.stats(Some(1), 70 * S, 0.5, None).is_none());
    }

    #[test]
    fn a_query_without_sync_answers_as_one_after_it_and_changes_nothing() {
        // Two windows (60 s and 300 s in 6 slices) and cumulative; samples every 7 s, and
        // at each time every window queried read-only, then synced and queried again.
        let mut w = Windowed::new(&[60, 300], 6);
        for t in 0..120u64 {
            let now = t * 7 * S + 3;
            w.record(now, t % 17 * 1_000 + 5, 1 + t % 3);
            for at in [now, now + 9 * S, now + 61 * S, now + 400 * S] {
                for win in [Some(0), Some(1), None] {
                    let before = w.stats(win, at, 0.9, Some(8_000));
                    let mut synced = w.clone();
                    synced.sync(at);
                    assert_eq!(before, synced.stats(win, at, 0.9, Some(8_000)), "t {t}");
                }
            }
        }
        assert!(w.stats(Some(2), 0, 0.5, None).is_none());
    }

    #[test]
    fn a_long_gap_clears_every_slice() {
        let mut w = Windowed::new(&[60, 300], 6);
        for t in 0..100 {
            w.record(t * S, t * 1000, 1);
        }
        assert_eq!(w.stats(Some(1), 100 * S, 0.5, None).unwrap().count, 100);
        w.record(10_000 * S, 7, 2);
        for i in 0..2 {
            let s = w.stats(Some(i), 10_000 * S, 0.5, Some(10)).unwrap();
            assert_eq!((s.count, s.at_most_bound, s.at_quantile), (2, 2, Some(7)));
        }
    }

    #[test]
    fn large_values_grow_the_histograms() {
        let mut w = Windowed::new(&[60], 6);
        w.record(S, 2_500_000, 1);
        w.record(S, 100, 1);
        w.record(S, MAX_VALUE_US + 5, 1);
        for win in [Some(0), None] {
            let s = w.stats(win, S, 0.5, Some(3_000_000)).unwrap();
            assert_eq!((s.count, s.at_most_bound), (3, 2));
            let p50 = s.at_quantile.unwrap();
            assert!((2_500_000..2_502_500).contains(&p50), "{p50}");
            let max = w.stats(win, S, 1.0, None).unwrap().at_quantile.unwrap();
            assert!((MAX_VALUE_US..MAX_VALUE_US + MAX_VALUE_US / 1000).contains(&max));
        }
    }

    #[test]
    fn time_going_back_records_into_the_newest_slice() {
        let mut w = Windowed::new(&[60], 6);
        w.record(30 * S, 10, 1);
        w.record(5 * S, 10, 1);
        assert_eq!(w.stats(Some(0), 30 * S, 0.5, None).unwrap().count, 2);
        assert_eq!(w.stats(Some(0), 80 * S, 0.5, None).unwrap().count, 2);
        assert_eq!(w.stats(Some(0), 90 * S, 0.5, None).unwrap().count, 0);
    }
}
