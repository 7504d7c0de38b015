//! The opt-in id index (`id_index = true`): which requests the scheduler holds, by the
//! engine's id, so API threads can refuse a duplicate and find a request's handle by id.
//!
//! A fixed array of mutex-guarded hash maps, picked by a hash of the id. Critical sections
//! are a single insert, lookup or remove (no allocation beyond the map's own growth, no
//! user code). Off by default: the hot path names requests by handle and takes no lock.

use crate::hash::{FastMap, FIB};
use crate::ingress::table::RequestHandle;
use crate::request::RequestId;
use crate::sync::{lock, Mutex};
use crossbeam_utils::CachePadded;

/// One lock-guarded part of the index.
type IndexShard = CachePadded<Mutex<FastMap<RequestId, RequestHandle>>>;

pub(crate) struct IdIndex {
    /// `shards.len()` is a power of two; id `i` lives in `shards[hash(i) >> shift]`.
    shards: Box<[IndexShard]>,
    shift: u32,
}

impl IdIndex {
    pub(crate) fn new(shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        Self {
            shards: (0..n)
                .map(|_| CachePadded::new(Mutex::new(FastMap::default())))
                .collect(),
            shift: 64 - n.trailing_zeros(),
        }
    }

    fn shard(&self, id: RequestId) -> &Mutex<FastMap<RequestId, RequestHandle>> {
        let h = id.0.wrapping_mul(FIB);
        // `checked_shr`: with one shard the shift is 64, which plain `>>` rejects.
        let i = h.checked_shr(self.shift).unwrap_or(0) as usize;
        &self.shards[i]
    }

    /// Maps `id` to `handle` unless the id is already held. Returns whether it was inserted.
    pub(crate) fn insert(&self, id: RequestId, handle: RequestHandle) -> bool {
        let mut map = lock(self.shard(id));
        match map.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(handle);
                true
            }
        }
    }

    pub(crate) fn get(&self, id: RequestId) -> Option<RequestHandle> {
        lock(self.shard(id)).get(&id).copied()
    }

    /// Removes `id` if it still maps to `handle` (and not to a newer request reusing it).
    pub(crate) fn remove(&self, id: RequestId, handle: RequestHandle) {
        let mut map = lock(self.shard(id));
        if map.get(&id) == Some(&handle) {
            map.remove(&id);
        }
    }
}
