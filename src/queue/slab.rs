//! The scheduler thread's storage for every request it holds, waiting or running: a slab
//! of entries addressed by a dense `u32` key. The scheduler keys an entry by its request
//! table slot (`insert_at`), so a [`crate::RequestHandle`] finds its entry without a map;
//! the standalone queue lets the slab pick keys from its free list (`insert`). Entries
//! carry the intrusive links of the wait-queue lists, so moving a request between lists
//! allocates nothing.
//!
//! An entry holds what a waiting request needs (96 bytes); what only a request that has
//! run needs is in its [`Run`], a record the slab makes at its first admission and keeps
//! until it ends, in a pool reused as requests end. A deep queue is nearly all requests
//! that never ran, so this keeps its cost per request to the entry.

use crate::class::Class;
use crate::ingress::table;
use crate::request::RequestHandle;
use crate::request::Spec;
use crate::time::Timestamp;
#[cfg(feature = "slo")]
use crate::{
    request::RequestId,
    slo::{HeldRequest, HeldSlot, HeldStates, SloSlot, SloTokens},
};

/// The null key (end of a list).
pub(crate) const NIL: u32 = u32::MAX;

/// The tenant slot of an entry not (yet) given one: never queued with it.
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Where an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In a wait-queue list (of the bucket its arrival falls in).
    Waiting,
    /// Unlinked from the wait queue while the current step considers it.
    InHand,
    /// Running on the engine.
    Running,
}

/// One request held by the scheduler.
pub(crate) struct Entry {
    /// Ownership of the request's table slot (freed when the request ends).
    pub(crate) token: table::Entry,
    /// As submitted; `spec.class` is the base class, updated by reprioritize.
    pub(crate) spec: Spec,
    /// When it first arrived (kept across preemptions and class changes).
    pub(crate) arrival: Timestamp,
    /// The time the wait queue orders and buckets it by: its deadline in deadline order,
    /// its arrival in the ladder order and once relegated.
    pub(crate) due: Timestamp,
    /// Its deadline (deadline order): the latest first token if `first_token_due`, else the
    /// latest start.
    pub(crate) deadline: Timestamp,
    /// Whether `deadline` bounds the first token (a TTFT target) rather than the start.
    pub(crate) first_token_due: bool,
    /// Relegated: it could not meet its deadline and waits after every request that can.
    pub(crate) relegated: bool,
    pub(crate) place: Place,
    /// The previous entry of its wait-queue list, or [`NIL`] (valid while `Waiting`).
    pub(crate) prev: u32,
    /// The next entry of its wait-queue list, or [`NIL`] (valid while `Waiting`).
    pub(crate) next: u32,
    /// A hint, not a link: the entry linked [`list::AHEAD`](super::list::AHEAD) places
    /// after this one at its list's tail, or [`NIL`]. Taking this entry off its list's head
    /// prefetches that one (see `List::unlink`). Left stale when either moves: a stale key
    /// only prefetches a line the step does not use.
    pub(crate) ahead: u32,
    /// Queued in its bucket's run of re-queued requests (see `queue::bucket::RUNS`).
    pub(crate) late: bool,
    /// Waiting in its tier's vector of a step's arrivals, in no lane yet (see
    /// `Tiers::append_new`).
    pub(crate) pending: bool,
    /// Its [`Run`] in the slab's run records ([`Slab::run`]) once it was first admitted,
    /// kept until it ends (preempted, it waits with it); [`NIL`] before.
    pub(crate) run: u32,
    /// The tenant's slot (`crate::fair::tenants`); 0 with fairness off, [`NO_SLOT`]
    /// until the scheduler assigns it.
    pub(crate) tenant: u32,
    /// Its SLO tracking state, kept here so that the tracker's events for it need no
    /// look-up by id: untracked until the scheduler queues it with the tracker, and
    /// whenever tracking is off. Its output-token times are in its run record
    /// ([`Run::slo_tokens`]), since only a request that ran has any. Absent without the
    /// `slo` feature.
    #[cfg(feature = "slo")]
    pub(crate) slo: SloSlot,
}

impl Entry {
    #[inline]
    pub(crate) fn new(token: table::Entry, spec: Spec, arrival: Timestamp) -> Self {
        Self {
            token,
            spec,
            arrival,
            due: arrival,
            deadline: arrival,
            first_token_due: false,
            relegated: false,
            place: Place::InHand,
            prev: NIL,
            next: NIL,
            ahead: NIL,
            late: false,
            pending: false,
            run: NIL,
            tenant: NO_SLOT,
            #[cfg(feature = "slo")]
            slo: SloSlot::default(),
        }
    }

    /// The order inside a class: `due` (deadline, or arrival), then id for equal times.
    pub(crate) fn order_key(&self) -> (Timestamp, u64) {
        (self.due, self.spec.id.0)
    }

    /// The request's handle.
    pub(crate) fn handle(&self) -> RequestHandle {
        self.token.handle()
    }
}

/// What a request holds once it was first admitted, kept apart from its [`Entry`] so that a
/// request that never ran (nearly all of a deep queue) carries none of it: the slab keeps
/// one per request admitted at least once and not yet ended (the running ones and the
/// preempted ones waiting again), in a pool reused as requests end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// Output tokens generated so far, kept across preemptions.
    pub(crate) generated: u32,
    /// Tokens to prefill in the current run: the prompt plus, after a preemption by
    /// recompute, the output generated before it.
    pub(crate) prefill_target: u32,
    /// Tokens whose KV the engine holds for the current run (0 while preempted).
    pub(crate) kv_tokens: u32,
    /// KV blocks the scheduler has granted the current run (0 while preempted).
    pub(crate) blocks: u32,
    /// Effective class when the current run started (ranks it as a preemption victim).
    pub(crate) run_class: Class,
    /// The wait-queue tier the current run was admitted from (its fair counters).
    pub(crate) run_tier: u8,
    /// When it was last given work (a decode token's delay is measured from here).
    pub(crate) last_work: Timestamp,
    /// When the current run started.
    pub(crate) started: Timestamp,
    /// When the first output token was reported.
    pub(crate) first_token: Option<Timestamp>,
    /// The latest event time seen for this request (at least its arrival or its first
    /// admission's step time, whichever is earlier).
    pub(crate) last_event: Timestamp,
    /// How many times it was preempted.
    pub(crate) preemptions: u32,
    /// The step that started the current run (the scheduler's wrapping `u32` step count:
    /// only compared for equality with the current step).
    pub(crate) run_step: u32,
    /// Tokens scheduled for it in step `planned_step`.
    pub(crate) planned: u32,
    /// The step `planned` belongs to.
    pub(crate) planned_step: u32,
    /// Its output-token times for the SLO tracker (see [`SloTokens`]; meaningful once its
    /// entry's `slo` has a first token). Absent without the `slo` feature.
    #[cfg(feature = "slo")]
    pub(crate) slo_tokens: SloTokens,
}

impl Run {
    /// The state of a request that has never run: what its record starts as at its first
    /// admission, and what the slab answers for it before ([`Slab::run_state`]).
    fn fresh(e: &Entry) -> Self {
        Self {
            generated: 0,
            prefill_target: e.spec.prompt_tokens,
            kv_tokens: 0,
            blocks: 0,
            run_class: e.spec.class,
            run_tier: e.spec.class.index() as u8,
            last_work: e.arrival,
            started: e.arrival,
            first_token: None,
            last_event: e.arrival,
            preemptions: 0,
            run_step: 0,
            planned: 0,
            planned_step: 0,
            #[cfg(feature = "slo")]
            slo_tokens: SloTokens::default(),
        }
    }

    /// Whether the current run still has prompt tokens to prefill.
    pub(crate) fn prefilling(&self) -> bool {
        self.kv_tokens < self.prefill_target
    }
}

/// Entries per chunk of the slab (a power of two).
const CHUNK: usize = 1024;

/// An empty chunk, made on the heap (it is 88 KiB: never on the stack).
fn new_chunk() -> Box<[Option<Entry>; CHUNK]> {
    let chunk: Box<[Option<Entry>]> = (0..CHUNK).map(|_| None).collect();
    chunk
        .try_into()
        .unwrap_or_else(|_| unreachable!("CHUNK entries"))
}

/// The slab: fixed-size chunks, so growing never copies entries and never leaves more than
/// one chunk of spare room (a doubling `Vec` can leave half its capacity unused).
#[derive(Default)]
pub(crate) struct Slab {
    /// Arrays of exactly [`CHUNK`] entries: an index within a chunk needs no bounds check.
    chunks: Vec<Box<[Option<Entry>; CHUNK]>>,
    /// The request table the scheduler keys this slab by (`insert_at`), so that
    /// [`Slab::prefetch`] also loads the request's slot there: admitting a request CASes
    /// its slot's state word, a cache miss at depth otherwise. `None` for the standalone
    /// queue's slab.
    table: Option<crate::sync::Arc<table::Table<crate::ingress::Payload>>>,
    /// Slots ever handed out; slots below this are live or on the free list.
    used: u32,
    free: Vec<u32>,
    len: usize,
    /// The [`Run`] records: `runs[i]` belongs to the live entry whose `run` is `i`, unless
    /// `i` is in `free_runs`.
    runs: Vec<Run>,
    /// Indices of `runs` no entry holds.
    free_runs: Vec<u32>,
}

impl Slab {
    pub(crate) fn insert(&mut self, entry: Entry) -> u32 {
        self.len += 1;
        let key = match self.free.pop() {
            Some(key) => key,
            None => {
                let key = self.used;
                self.used = key
                    .checked_add(1)
                    .expect("more than u32::MAX requests held");
                if key as usize / CHUNK == self.chunks.len() {
                    self.chunks.push(new_chunk());
                }
                key
            }
        };
        *self.slot(key) = Some(entry);
        key
    }

    /// Inserts `entry` at `key` (its request table slot), which must be vacant; keys so
    /// placed never go through the free list. Inlined, so that the caller builds the entry
    /// in its slot (a call takes it by copy, and the copy read back wide what had just been
    /// stored field by field: a stall per request drained).
    #[inline]
    pub(crate) fn insert_at(&mut self, key: u32, entry: Entry) {
        let chunk = key as usize / CHUNK;
        while self.chunks.len() <= chunk {
            self.chunks.push(new_chunk());
        }
        let slot = self.slot(key);
        assert!(slot.is_none(), "slab key {key} is already held");
        *slot = Some(entry);
        self.len += 1;
    }

    /// Drops entry `key` where it lies (nothing else of it is copied) and gives back the
    /// token of its table slot.
    pub(crate) fn remove_in_place(&mut self, key: u32) -> table::Entry {
        let entry = self
            .slot(key)
            .as_mut()
            .expect("slab key refers to a live entry");
        let token = std::mem::replace(&mut entry.token, table::Entry::detached());
        let run = entry.run;
        *self.slot(key) = None;
        self.free_run(run);
        self.len -= 1;
        token
    }

    /// A slab keyed by the slots of `table` (see [`Slab::prefetch`]).
    pub(crate) fn keyed_by(table: crate::sync::Arc<table::Table<crate::ingress::Payload>>) -> Self {
        Self {
            table: Some(table),
            ..Self::default()
        }
    }

    /// Starts loading entry `key`, about to be read (see [`crate::prefetch`]), and its
    /// request table slot if the slab is keyed by one; nothing for a key past the slab.
    pub(crate) fn prefetch(&self, key: u32) {
        let slot = self.chunks.get(key as usize / CHUNK);
        if let Some(e) = slot.and_then(|c| c.get(key as usize % CHUNK)) {
            crate::prefetch::prefetch(e);
            if let Some(t) = &self.table {
                t.prefetch(key);
            }
        }
    }

    fn slot(&mut self, key: u32) -> &mut Option<Entry> {
        &mut self.chunks[key as usize / CHUNK][key as usize % CHUNK]
    }

    pub(crate) fn remove(&mut self, key: u32) -> Entry {
        let entry = self
            .slot(key)
            .take()
            .expect("slab key refers to a live entry");
        self.free.push(key);
        self.free_run(entry.run);
        self.len -= 1;
        entry
    }

    /// Gives back run record `run` of an entry that ended ([`NIL`]: none).
    fn free_run(&mut self, run: u32) {
        if run != NIL {
            self.free_runs.push(run);
        }
    }

    /// The run record of entry `key`, which was admitted at least once (running, or
    /// preempted and waiting again).
    pub(crate) fn run(&self, key: u32) -> &Run {
        let run = self[key].run;
        &self.runs[run as usize]
    }

    /// [`Slab::run`], to change.
    pub(crate) fn run_mut(&mut self, key: u32) -> &mut Run {
        let run = self[key].run;
        &mut self.runs[run as usize]
    }

    /// Entry `key` and its run record (it was admitted at least once).
    pub(crate) fn entry_and_run(&mut self, key: u32) -> (&mut Entry, &mut Run) {
        let e = self.chunks[key as usize / CHUNK][key as usize % CHUNK]
            .as_mut()
            .expect("slab key refers to a live entry");
        let run = &mut self.runs[e.run as usize];
        (e, run)
    }

    /// The run state of entry `key`: its record if it was admitted, else what a request
    /// that never ran has ([`Run::fresh`]).
    pub(crate) fn run_state(&self, key: u32) -> Run {
        let e = &self[key];
        match e.run {
            NIL => Run::fresh(e),
            run => self.runs[run as usize],
        }
    }

    /// Entry `key`'s run record, made at its first admission; the same record (kept across
    /// preemptions) at later ones.
    pub(crate) fn begin_run(&mut self, key: u32) -> &mut Run {
        let e = self.chunks[key as usize / CHUNK][key as usize % CHUNK]
            .as_mut()
            .expect("slab key refers to a live entry");
        if e.run == NIL {
            let fresh = Run::fresh(e);
            e.run = match self.free_runs.pop() {
                Some(run) => {
                    self.runs[run as usize] = fresh;
                    run
                }
                None => {
                    self.runs.push(fresh);
                    u32::try_from(self.runs.len() - 1).expect("fewer runs than u32::MAX")
                }
            };
        }
        &mut self.runs[e.run as usize]
    }

    /// Run records held: requests admitted at least once and not yet ended.
    pub(crate) fn runs_held(&self) -> usize {
        self.runs.len() - self.free_runs.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry `h` names, if it is held: the entry at `h`'s slot whose handle is `h`
    /// (the generation tells the request from a newer one in the same slot). For entries
    /// placed by `insert_at`.
    pub(crate) fn by_handle(&self, h: RequestHandle) -> Option<&Entry> {
        self.get(h.index()).filter(|e| e.handle() == h)
    }

    /// Entry `key`, if it is live.
    pub(crate) fn get(&self, key: u32) -> Option<&Entry> {
        self.chunks
            .get(key as usize / CHUNK)
            .and_then(|c| c[key as usize % CHUNK].as_ref())
    }

    /// Keys and entries of every live entry, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .enumerate()
            .filter_map(|(k, e)| e.as_ref().map(|e| (k as u32, e)))
    }
}

/// An entry with its run record, if it has one: what the SLO tracker's events read and
/// change ([`Slab::tracked`]).
#[cfg(feature = "slo")]
pub(crate) struct Tracked<'a> {
    /// The entry.
    pub(crate) entry: &'a mut Entry,
    /// Its run record; `None` while it was never admitted.
    pub(crate) run: Option<&'a mut Run>,
}

#[cfg(feature = "slo")]
impl Slab {
    /// Entry `key` and its run record, for the SLO tracker.
    pub(crate) fn tracked(&mut self, key: u32) -> Tracked<'_> {
        let entry = self.chunks[key as usize / CHUNK][key as usize % CHUNK]
            .as_mut()
            .expect("slab key refers to a live entry");
        let run = match entry.run {
            NIL => None,
            run => Some(&mut self.runs[run as usize]),
        };
        Tracked { entry, run }
    }
}

#[cfg(feature = "slo")]
impl HeldSlot for Tracked<'_> {
    fn id(&self) -> RequestId {
        self.entry.spec.id
    }

    fn arrival(&self) -> Timestamp {
        self.entry.arrival
    }

    fn slot(&mut self) -> &mut SloSlot {
        &mut self.entry.slo
    }
}

#[cfg(feature = "slo")]
impl HeldRequest for Tracked<'_> {
    fn state(&mut self) -> (&mut SloSlot, Option<&mut SloTokens>) {
        (
            &mut self.entry.slo,
            self.run.as_deref_mut().map(|r| &mut r.slo_tokens),
        )
    }
}

#[cfg(feature = "slo")]
impl HeldSlot for Entry {
    fn id(&self) -> RequestId {
        self.spec.id
    }

    fn arrival(&self) -> Timestamp {
        self.arrival
    }

    fn slot(&mut self) -> &mut SloSlot {
        &mut self.slo
    }
}

#[cfg(feature = "slo")]
impl HeldStates for Slab {
    type Request = Entry;

    fn held(&mut self, key: u32) -> Option<&mut Entry> {
        self.chunks
            .get_mut(key as usize / CHUNK)?
            .get_mut(key as usize % CHUNK)?
            .as_mut()
    }
}

impl std::ops::Index<u32> for Slab {
    type Output = Entry;
    fn index(&self, key: u32) -> &Entry {
        self.chunks[key as usize / CHUNK][key as usize % CHUNK]
            .as_ref()
            .expect("slab key refers to a live entry")
    }
}

impl std::ops::IndexMut<u32> for Slab {
    fn index_mut(&mut self, key: u32) -> &mut Entry {
        self.slot(key)
            .as_mut()
            .expect("slab key refers to a live entry")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_small() {
        // One per queued request: what a deep queue costs (with the request table's
        // 64-byte slot). A request's run state is in its `Run`, made when it first runs.
        assert_eq!(std::mem::size_of::<Spec>(), 32);
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 96);
    }
}
