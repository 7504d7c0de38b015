//! One bucket of a lane: the waiting requests of one tenant, in one class, that arrived in
//! one arrival-time bucket, as sorted runs (see [`RUNS`]). Most buckets hold one run, so
//! the first is kept inline and the full set of runs is allocated only when a second run
//! appears: with many tenants there is about one bucket per request, and a small bucket
//! keeps each lane's deque in few cache lines.

use super::list::List;
use super::slab::Slab;
use crate::class::MAX_CLASSES;

/// Runs per bucket: one per base class for requests queued as they arrive, and one per
/// base class for requests queued again later (preempted, reprioritized). Re-queued requests
/// carry old arrivals; keeping them apart keeps their sorted insertion short, instead of a
/// scan back through a long run of newer arrivals.
pub(super) const RUNS: usize = 2 * MAX_CLASSES;

/// The run an entry belongs to in its bucket.
pub(super) fn run_of(e: &super::slab::Entry) -> usize {
    e.spec.class.index() + if e.late { MAX_CLASSES } else { 0 }
}

/// A bucket's runs.
enum Runs {
    /// One run, with its index; every other run is empty. An empty run here may take any
    /// index.
    One(u8, List),
    /// Every run, by index.
    Many(Box<[List; RUNS]>),
}

/// The bucket.
pub(super) struct Bucket {
    runs: Runs,
    /// Entries in all runs (never 0 while the bucket is in its lane).
    pub(super) len: u32,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            runs: Runs::One(0, List::EMPTY),
            len: 0,
        }
    }
}

impl Bucket {
    /// Run `r`, if it holds anything.
    pub(super) fn run(&self, r: usize) -> Option<&List> {
        let list = match &self.runs {
            Runs::One(i, l) if usize::from(*i) == r => l,
            Runs::One(..) => return None,
            Runs::Many(m) => &m[r],
        };
        (!list.is_empty()).then_some(list)
    }

    /// Run `r`, to change; the runs spill out of line if another run holds entries.
    pub(super) fn run_mut(&mut self, r: usize) -> &mut List {
        if let Runs::One(i, l) = &self.runs {
            if usize::from(*i) != r && !l.is_empty() {
                let mut many = Box::new([List::EMPTY; RUNS]);
                many[usize::from(*i)] = *l;
                self.runs = Runs::Many(many);
            }
        }
        match &mut self.runs {
            Runs::One(i, l) => {
                *i = r as u8;
                l
            }
            Runs::Many(m) => &mut m[r],
        }
    }

    /// Every run that may hold entries, with its index.
    pub(super) fn runs(&self) -> impl Iterator<Item = (usize, &List)> {
        let (one, many) = match &self.runs {
            Runs::One(i, l) => (Some((usize::from(*i), l)), None),
            Runs::Many(m) => (None, Some(m.iter().enumerate())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// The oldest request of the bucket and the run it heads.
    pub(super) fn head(&self, slab: &Slab) -> Option<(u32, usize)> {
        // One run (most buckets): its head, without reading the entry (a cache miss with
        // many tenants, where consecutive heads belong to different lanes).
        if let Runs::One(i, l) = &self.runs {
            return (!l.is_empty()).then_some((l.head, usize::from(*i)));
        }
        self.runs()
            .filter(|(_, r)| !r.is_empty())
            .min_by_key(|(_, r)| slab[r.head].order_key())
            .map(|(i, r)| (r.head, i))
    }

    /// Moves every entry of `other` (the same bucket, from another class) into this one.
    pub(super) fn absorb(&mut self, slab: &mut Slab, other: Bucket) {
        self.len += other.len;
        for (r, list) in other.runs() {
            if !list.is_empty() {
                self.run_mut(r).absorb(slab, *list);
            }
        }
    }
}
