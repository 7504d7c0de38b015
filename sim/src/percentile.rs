//! Exact percentiles by the nearest-rank method.

/// Nearest-rank percentile of `sorted` (ascending): the value at rank
/// `ceil(p/100 * n)` (1-based), clamped to `[1, n]`. `None` when empty.
///
/// Nearest-rank always returns an observed sample (no interpolation), so p99 of
/// 100 samples is the 99th smallest and p100 is the maximum.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Sort a sample vector ascending (total order on `f64`, NaN last).
pub fn sort_samples(v: &mut [f64]) {
    v.sort_by(|a, b| a.total_cmp(b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_examples() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&v, 50.0), Some(50.0));
        assert_eq!(nearest_rank(&v, 99.0), Some(99.0));
        assert_eq!(nearest_rank(&v, 100.0), Some(100.0));
        assert_eq!(nearest_rank(&v, 0.0), Some(1.0));
        let w = [3.0, 1.0, 2.0];
        let mut s = w.to_vec();
        sort_samples(&mut s);
        assert_eq!(nearest_rank(&s, 50.0), Some(2.0));
        assert_eq!(nearest_rank(&[], 50.0), None);
    }
}
