//! The id index: which requests the scheduler holds, by id, so API threads can refuse a
//! duplicate and find a request to cancel or reprioritize.
//!
//! A fixed array of mutex-guarded hash maps, picked by a hash of the id. Critical sections
//! are a single insert, lookup or remove (no allocation beyond the map's own growth, no
//! user code), so neither an API thread nor the scheduler thread waits long on one. The
//! ring path takes no lock; this is the one place a lock is taken, as the design allows.

use crate::hash::{FastMap, FIB};
use crate::request::RequestId;
use crate::sync::{lock, Arc, Mutex};
use crate::ticket::Ticket;
use crossbeam_utils::CachePadded;

/// A `HashMap` keyed by request id with [`crate::hash::IdHasher`].
pub(crate) type IdMap<V> = FastMap<RequestId, V>;

/// One lock-guarded part of the index.
type IndexShard = CachePadded<Mutex<IdMap<Arc<Ticket>>>>;

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
                .map(|_| CachePadded::new(Mutex::new(IdMap::default())))
                .collect(),
            shift: 64 - n.trailing_zeros(),
        }
    }

    fn shard(&self, id: RequestId) -> &Mutex<IdMap<Arc<Ticket>>> {
        let h = id.0.wrapping_mul(FIB);
        // `checked_shr`: with one shard the shift is 64, which plain `>>` rejects.
        let i = h.checked_shr(self.shift).unwrap_or(0) as usize;
        &self.shards[i]
    }

    /// Inserts the ticket unless its id is already held. Returns whether it was inserted.
    pub(crate) fn insert(&self, ticket: &Arc<Ticket>) -> bool {
        let mut map = lock(self.shard(ticket.id));
        match map.entry(ticket.id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Arc::clone(ticket));
                true
            }
        }
    }

    pub(crate) fn get(&self, id: RequestId) -> Option<Arc<Ticket>> {
        lock(self.shard(id)).get(&id).cloned()
    }

    /// Removes `ticket` if the id still maps to it (and not to a newer request reusing it).
    pub(crate) fn remove(&self, ticket: &Arc<Ticket>) {
        let mut map = lock(self.shard(ticket.id));
        if map.get(&ticket.id).is_some_and(|t| Arc::ptr_eq(t, ticket)) {
            map.remove(&ticket.id);
        }
    }
}
