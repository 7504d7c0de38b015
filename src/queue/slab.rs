//! The scheduler thread's storage for every request it holds, waiting or running: a slab
//! of entries addressed by a dense `u32` key. The scheduler keys an entry by its request
//! table slot (`insert_at`), so a [`crate::RequestHandle`] finds its entry without a map;
//! the standalone queue lets the slab pick keys from its free list (`insert`). Entries
//! carry the intrusive links of the wait-queue lists, so moving a request between lists
//! allocates nothing.

use crate::class::Class;
use crate::ingress::table;
use crate::request::RequestHandle;
use crate::request::RequestSpec;
use crate::time::Timestamp;
#[cfg(feature = "slo")]
use crate::{
    request::RequestId,
    slo::{HeldRequest, HeldStates, SloSlot},
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
    pub(crate) spec: RequestSpec,
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
    /// Intrusive list links (valid while `Waiting`).
    pub(crate) prev: u32,
    pub(crate) next: u32,
    /// Output tokens generated so far, kept across preemptions.
    pub(crate) generated: u32,
    /// Tokens to prefill in the current run: the prompt plus, after a preemption by
    /// recompute, the output generated before it.
    pub(crate) prefill_target: u32,
    /// Tokens whose KV the engine holds for the current run.
    pub(crate) kv_tokens: u32,
    /// KV blocks the scheduler has granted the current run.
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
    /// The latest event time seen for this request.
    pub(crate) last_event: Timestamp,
    /// How many times it was preempted.
    pub(crate) preemptions: u32,
    /// Queued in its bucket's run of re-queued requests (see `queue::bucket::RUNS`).
    pub(crate) late: bool,
    /// The step that started the current run (the scheduler's wrapping `u32` step count:
    /// only compared for equality with the current step).
    pub(crate) run_step: u32,
    /// Tokens scheduled for it in step `planned_step`.
    pub(crate) planned: u32,
    /// The step `planned` belongs to.
    pub(crate) planned_step: u32,
    /// The tenant's slot (`crate::fair::tenants`); 0 with fairness off, [`NO_SLOT`]
    /// until the scheduler assigns it.
    pub(crate) tenant: u32,
    /// Its SLO tracking state, kept here so that the tracker's events for it need no
    /// look-up by id: untracked until the scheduler queues it with the tracker, and
    /// whenever tracking is off. Absent without the `slo` feature.
    #[cfg(feature = "slo")]
    pub(crate) slo: SloSlot,
}

impl Entry {
    pub(crate) fn new(token: table::Entry, spec: RequestSpec, arrival: Timestamp) -> Self {
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
            generated: 0,
            prefill_target: spec.prompt_tokens,
            kv_tokens: 0,
            blocks: 0,
            run_class: spec.class,
            run_tier: spec.class.index() as u8,
            last_work: arrival,
            started: arrival,
            first_token: None,
            last_event: arrival,
            preemptions: 0,
            late: false,
            run_step: 0,
            planned: 0,
            planned_step: 0,
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

    /// Whether the current run still has prompt tokens to prefill.
    pub(crate) fn prefilling(&self) -> bool {
        self.kv_tokens < self.prefill_target
    }
}

/// Entries per chunk of the slab (a power of two).
const CHUNK: usize = 1024;

/// The slab: fixed-size chunks, so growing never copies entries and never leaves more than
/// one chunk of spare room (a doubling `Vec` can leave half its capacity unused).
#[derive(Default)]
pub(crate) struct Slab {
    chunks: Vec<Box<[Option<Entry>]>>,
    /// The request table the scheduler keys this slab by (`insert_at`), so that
    /// [`Slab::prefetch`] also loads the request's slot there: admitting a request CASes
    /// its slot's state word, a cache miss at depth otherwise. `None` for the standalone
    /// queue's slab.
    table: Option<crate::sync::Arc<table::Table<crate::ingress::Payload>>>,
    /// Slots ever handed out; slots below this are live or on the free list.
    used: u32,
    free: Vec<u32>,
    len: usize,
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
                    self.chunks.push((0..CHUNK).map(|_| None).collect());
                }
                key
            }
        };
        *self.slot(key) = Some(entry);
        key
    }

    /// Inserts `entry` at `key` (its request table slot), which must be vacant; keys so
    /// placed never go through the free list.
    pub(crate) fn insert_at(&mut self, key: u32, entry: Entry) {
        let chunk = key as usize / CHUNK;
        while self.chunks.len() <= chunk {
            self.chunks.push((0..CHUNK).map(|_| None).collect());
        }
        let slot = self.slot(key);
        assert!(slot.is_none(), "slab key {key} is already held");
        *slot = Some(entry);
        self.len += 1;
    }

    /// Drops entry `key` where it lies (nothing else of it is copied) and gives back the
    /// token of its table slot.
    pub(crate) fn remove_in_place(&mut self, key: u32) -> table::Entry {
        let entry = self.slot(key);
        let token = std::mem::replace(
            &mut entry
                .as_mut()
                .expect("slab key refers to a live entry")
                .token,
            table::Entry::detached(),
        );
        *entry = None;
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
        self.len -= 1;
        entry
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

#[cfg(feature = "slo")]
impl HeldRequest for Entry {
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
