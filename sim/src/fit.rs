//! Small least-squares fitting tools used by the cost model.
//!
//! Everything here is deterministic plain `f64` arithmetic: a dense solver with
//! partial pivoting, relative-error weighted least squares, and a piecewise-linear
//! function whose knot values are fitted by least squares on a hat-function basis.

use serde::Serialize;

/// Solve `a x = b` (square, dense) by Gaussian elimination with partial pivoting.
/// Returns `None` when the matrix is (numerically) singular.
pub fn solve_dense(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, bottom) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (off, row) in bottom.iter_mut().enumerate() {
            let f = row[col] / pivot_row[col];
            if f != 0.0 {
                for (r, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *r -= f * p;
                }
                b[col + 1 + off] -= f * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Least squares on *relative* error: minimise `sum(((f(x_i) . c - y_i) / y_i)^2)`
/// where `features[i]` is the feature vector of sample `i` and `ys[i] > 0`.
pub fn relative_lsq(features: &[Vec<f64>], ys: &[f64]) -> Option<Vec<f64>> {
    let n = features.first()?.len();
    let mut ata = vec![vec![0.0; n]; n];
    let mut atb = vec![0.0; n];
    for (f, &y) in features.iter().zip(ys) {
        let w = 1.0 / (y * y);
        for i in 0..n {
            atb[i] += w * f[i] * y;
            for j in 0..n {
                ata[i][j] += w * f[i] * f[j];
            }
        }
    }
    solve_dense(ata, atb)
}

/// A continuous piecewise-linear function given by knot positions and values.
/// Below the first knot it is constant; beyond the last it extends the last segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PiecewiseLinear {
    /// Strictly increasing knot positions.
    pub knots: Vec<f64>,
    /// Function value at each knot.
    pub values: Vec<f64>,
}

impl PiecewiseLinear {
    /// Evaluate at `x`.
    pub fn eval(&self, x: f64) -> f64 {
        let k = &self.knots;
        let v = &self.values;
        if k.len() == 1 || x <= k[0] {
            return v[0];
        }
        // Index of the segment [k[j], k[j+1]] containing x (or the last one).
        let j = match k.binary_search_by(|p| p.total_cmp(&x)) {
            Ok(i) => return v[i],
            Err(i) => (i - 1).min(k.len() - 2),
        };
        let t = (x - k[j]) / (k[j + 1] - k[j]);
        v[j] + t * (v[j + 1] - v[j])
    }

    /// Hat-basis weights of `x`: `(index, weight)` pairs summing to 1.
    fn basis(knots: &[f64], x: f64) -> Vec<(usize, f64)> {
        if knots.len() == 1 || x <= knots[0] {
            return vec![(0, 1.0)];
        }
        let j = match knots.binary_search_by(|p| p.total_cmp(&x)) {
            Ok(i) => return vec![(i, 1.0)],
            Err(i) => (i - 1).min(knots.len() - 2),
        };
        let t = (x - knots[j]) / (knots[j + 1] - knots[j]);
        vec![(j, 1.0 - t), (j + 1, t)]
    }

    /// Fit knot values to `(x, y)` samples (y > 0) minimising squared relative error.
    /// Every knot interval must contain samples for the system to be well posed.
    pub fn fit(knots: Vec<f64>, samples: &[(f64, f64)]) -> Option<Self> {
        let features: Vec<Vec<f64>> = samples
            .iter()
            .map(|&(x, _)| {
                let mut f = vec![0.0; knots.len()];
                for (i, w) in Self::basis(&knots, x) {
                    f[i] = w;
                }
                f
            })
            .collect();
        let ys: Vec<f64> = samples.iter().map(|s| s.1).collect();
        let values = relative_lsq(&features, &ys)?;
        Some(Self { knots, values })
    }
}

/// Knots at every power of two from 1 up to the first power of two >= `max_x`.
pub fn power_of_two_knots(max_x: f64) -> Vec<f64> {
    let mut k = vec![1.0];
    while *k.last().unwrap_or(&1.0) < max_x {
        let next = k[k.len() - 1] * 2.0;
        k.push(next);
    }
    k
}

/// Relative-error statistics of a fit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FitError {
    /// Number of samples.
    pub n: usize,
    /// Largest `|pred - y| / y`.
    pub max_rel: f64,
    /// Mean `|pred - y| / y`.
    pub mean_rel: f64,
    /// `x` of the sample with the largest relative error.
    pub worst_x: f64,
}

/// Relative errors of `f` over `samples`.
pub fn fit_error(samples: &[(f64, f64)], f: impl Fn(f64) -> f64) -> FitError {
    let mut max_rel = 0.0;
    let mut sum = 0.0;
    let mut worst_x = f64::NAN;
    for &(x, y) in samples {
        let e = ((f(x) - y) / y).abs();
        sum += e;
        if e > max_rel || worst_x.is_nan() {
            max_rel = e;
            worst_x = x;
        }
    }
    FitError {
        n: samples.len(),
        max_rel,
        mean_rel: sum / samples.len().max(1) as f64,
        worst_x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_small_system() {
        let x = solve_dense(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
    }

    #[test]
    fn piecewise_linear_recovers_exact_function() {
        let f = |x: f64| {
            if x < 64.0 {
                10.0
            } else {
                10.0 + (x - 64.0) * 0.05
            }
        };
        let samples: Vec<(f64, f64)> = (1..=512).map(|i| (f64::from(i), f(f64::from(i)))).collect();
        let pl = PiecewiseLinear::fit(power_of_two_knots(512.0), &samples).unwrap();
        let e = fit_error(&samples, |x| pl.eval(x));
        assert!(e.max_rel < 1e-9, "{e:?}");
        assert!((pl.eval(1024.0) - f(1024.0)).abs() < 1e-6);
    }
}
