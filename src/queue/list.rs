//! An intrusive doubly-linked list of slab entries, kept sorted by each entry's FIFO key
//! (arrival, id). Push, pop and unlink are O(1); sorted insertion scans from the tail, which
//! is O(1) for in-order arrivals and O(requests of the same bucket that arrived later)
//! otherwise.

use super::slab::{Slab, NIL};

/// How many places ahead of the head a list prefetches: an entry linked at the tail is
/// noted in the entry this many places before it (`Entry::ahead`), and taking that one off
/// the head prefetches it. Following `next` alone, the entry after the head is known only
/// once the head has arrived, so a prefetch could run one entry ahead and every entry of a
/// cold list (a deep queue's oldest) was a cache miss the step waited for.
pub(crate) const AHEAD: usize = 4;

/// Head and tail keys, and the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: u32,
}

impl Default for List {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl List {
    pub(crate) const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts `key` at its sorted place, scanning back from the tail.
    pub(crate) fn insert_sorted(&mut self, slab: &mut Slab, key: u32) {
        let order = slab[key].order_key();
        let mut after = self.tail;
        while after != NIL && slab[after].order_key() > order {
            after = slab[after].prev;
        }
        self.link_after(slab, after, key);
    }

    /// Inserts `key` at the front. The caller guarantees it sorts before the current head.
    pub(crate) fn push_front(&mut self, slab: &mut Slab, key: u32) {
        debug_assert!(self.head == NIL || slab[key].order_key() <= slab[self.head].order_key());
        self.link_after(slab, NIL, key);
    }

    /// Links `key` after `after` (`NIL` = at the front).
    fn link_after(&mut self, slab: &mut Slab, after: u32, key: u32) {
        let next = if after == NIL {
            self.head
        } else {
            slab[after].next
        };
        slab[key].prev = after;
        slab[key].next = next;
        if after == NIL {
            self.head = key;
        } else {
            slab[after].next = key;
        }
        if next == NIL {
            self.tail = key;
            note_ahead(slab, after, key);
        } else {
            slab[next].prev = key;
        }
        self.len += 1;
    }

    /// Removes `key`, which must be in this list.
    ///
    /// Taking the head (how a step takes requests, in order) starts loading the entry
    /// [`AHEAD`] places behind it (its `ahead` hint) and the new head: the step is likely
    /// to take them, and each would otherwise be a cache miss at 100k requests queued.
    /// Without a hint, the entry after the new head.
    pub(crate) fn unlink(&mut self, slab: &mut Slab, key: u32) {
        let (prev, next, ahead) = (slab[key].prev, slab[key].next, slab[key].ahead);
        if prev == NIL {
            self.head = next;
        } else {
            slab[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            slab[next].prev = prev;
            if prev == NIL {
                slab.prefetch(next);
                if ahead == NIL {
                    slab.prefetch(slab[next].next);
                } else {
                    slab.prefetch(ahead);
                }
            }
        }
        slab[key].prev = NIL;
        slab[key].next = NIL;
        self.len -= 1;
    }

    /// Moves every entry of `other` into this list, keeping the order. O(1) when all of
    /// `other` sorts after this list (the usual case); a full merge otherwise.
    pub(crate) fn absorb(&mut self, slab: &mut Slab, other: List) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = other;
            return;
        }
        if slab[self.tail].order_key() <= slab[other.head].order_key() {
            slab[self.tail].next = other.head;
            slab[other.head].prev = self.tail;
            self.tail = other.tail;
            self.len += other.len;
            return;
        }
        let mut key = other.head;
        while key != NIL {
            let next = slab[key].next;
            self.insert_sorted(slab, key);
            key = next;
        }
    }

    /// Keys from head to tail.
    pub(crate) fn keys<'a>(&self, slab: &'a Slab) -> impl Iterator<Item = u32> + 'a {
        let mut key = self.head;
        std::iter::from_fn(move || {
            if key == NIL {
                None
            } else {
                let k = key;
                key = slab[k].next;
                Some(k)
            }
        })
    }
}

/// Notes `key`, just linked at a list's tail after `after`, as the `ahead` hint of the entry
/// [`AHEAD`] places before it, if the list is that long. Walks back through the entries
/// linked last, which are still in cache.
fn note_ahead(slab: &mut Slab, after: u32, key: u32) {
    let mut p = after;
    for _ in 1..AHEAD {
        if p == NIL {
            return;
        }
        p = slab[p].prev;
    }
    if p != NIL {
        slab[p].ahead = key;
    }
}
