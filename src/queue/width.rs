//! The bucket width, and the division by it that finds a time's bucket: by a reciprocal
//! multiplication (a multiply, a multiply-back and at most two corrections) instead of a
//! 64-bit `div`, whose latency was a tenth of queueing each request a step drains.

/// A bucket width in ns, at least 1, with its reciprocal.
#[derive(Clone, Copy, Debug)]
pub(super) struct Width {
    /// The width, in ns.
    ns: u64,
    /// `floor((2^64 - 1) / ns)`: `t * inv / 2^64` is `t / ns` or at most 2 below it (the
    /// reciprocal is short of `2^64 / ns` by less than 1 + 1/ns, times `t / 2^64 < 1`).
    inv: u64,
}

impl Width {
    /// `ns`, raised to 1.
    pub(super) fn new(ns: u64) -> Self {
        let ns = ns.max(1);
        Self {
            ns,
            inv: u64::MAX / ns,
        }
    }

    /// The width, in ns.
    pub(super) fn ns(self) -> u64 {
        self.ns
    }

    /// `t / ns`: the bucket of time `t` (ns).
    #[inline]
    pub(super) fn bucket(self, t: u64) -> u64 {
        let mut q = ((u128::from(t) * u128::from(self.inv)) >> 64) as u64;
        // `q <= t / ns`, so `q * ns <= t` does not overflow.
        let mut r = t - q * self.ns;
        while r >= self.ns {
            q += 1;
            r -= self.ns;
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_quotient() {
        let widths = [
            1,
            2,
            3,
            7,
            10,
            1_000,
            999_983,
            10_000_000,
            60_000_000_000,
            u64::MAX,
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for &w in &widths {
            let width = Width::new(w);
            let check = |t: u64| assert_eq!(width.bucket(t), t / w, "{t} / {w}");
            for t in [0, 1, w - 1, w, w.saturating_add(1), u64::MAX - 1, u64::MAX] {
                check(t);
            }
            for _ in 0..100_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                check(x);
                check(x >> (x % 64));
                // Just below and at multiples of the width.
                let m = (x % (u64::MAX / w).max(1)) * w;
                check(m);
                check(m.saturating_sub(1));
            }
        }
    }

    #[test]
    fn a_zero_width_is_one() {
        assert_eq!(Width::new(0).ns(), 1);
        assert_eq!(Width::new(0).bucket(12_345), 12_345);
    }
}
