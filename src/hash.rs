//! The hasher of the engine thread's and the index's maps of integer keys (request ids,
//! tenant ids): one multiply by a large odd constant per `u64` (Fibonacci hashing), much
//! cheaper than SipHash. Keys are engine-assigned ids or bounded in number (tenants), so
//! resistance to chosen collisions is not needed.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// 2^64 / golden ratio: an odd multiplier that spreads its input over the high bits.
pub(crate) const FIB: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mixes `bytes` into the hash state `h` (the fallback for keys that are not one `u64`).
pub(crate) fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIB);
    }
    h
}

/// The hasher: [`FIB`] times each `u64` written, with the high half folded into the low
/// one at the end. The table takes a bucket from the low bits, and the low bits of a
/// product depend only on the low bits of its input: without the fold, ids that are all
/// multiples of 16 (or addresses) would share a sixteenth of the buckets.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = mix_bytes(self.0, bytes);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(FIB);
    }
    // An enum's discriminant is hashed as an `isize`, which the default `write_isize`
    // passes on here (an `Option<TenantId>` key writes one before its id): one multiply,
    // not the byte loop of `write`.
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` with [`IdHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
