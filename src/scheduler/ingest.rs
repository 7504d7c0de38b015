//! Taking work from the API threads: drain every ingress queue into the wait queue, then
//! act on the notices of cancels and class changes; and time out requests that waited too
//! long.

use super::fairness::TenantLimit;
use super::Scheduler;
use crate::class::Class;
use crate::counters::Outcome;
use crate::decision::{Decision, RejectReason};
use crate::ingress::table::{CANCEL_QUEUED, CANCEL_RUNNING};
use crate::ingress::Drained;
use crate::queue::slab::{Entry, Place, NO_SLOT};

use crate::time::Timestamp;

/// How many drained requests ahead a lane's back is loaded: far enough for the load to
/// land before the request is queued, near enough that it is still cached then.
const PREFETCH_DISTANCE: usize = 8;

impl Scheduler {
    /// Drains the ingress queues, then applies notices. Queues first, so a notice about a
    /// request submitted before this step finds it held; a notice about one still in
    /// ingress (its push mid-link) is skipped, and the drain that later takes it reads its
    /// slot's latest state instead.
    ///
    /// A step takes at most its class's count plus its capacity as they stood when the
    /// step began (`ClassCount::drain_limit`: at least everything in ingress then), and
    /// reads the notice queue's length once: API threads that keep pushing cannot hold the
    /// step forever. The drained requests are
    /// sorted by arrival first, so they join the queue at its tail instead of each one
    /// scanning back past the other shards' arrivals of the same moments. A batch whose
    /// arrivals already rise within each class (one shard, or shards that took turns) is
    /// not sorted: classes queue apart, so only the order within a class matters.
    pub(super) fn ingest(&mut self, now: Timestamp, out: &mut Decision) {
        let shared = crate::sync::Arc::clone(&self.shared);
        let mut batch = std::mem::take(&mut self.batch);
        let counts = shared.limits.counts();
        let limit = std::array::from_fn(|c| counts[c].drain_limit());
        self.drain.drain(&shared.table, limit, &mut batch);
        if !arrivals_in_order_per_class(&shared.table, &batch) {
            batch.sort_unstable_by_key(|e| {
                let p = shared.table.payload(e);
                (p.arrival, p.spec.id.0)
            });
        }
        // With fairness on, each request goes to its tenant's lane, a cache miss apiece with
        // many tenants: look the lanes up first and load them ahead (see `look_ahead`).
        let mut ahead = std::mem::take(&mut self.ahead);
        self.look_ahead(&batch, &mut ahead);
        for (i, drained) in batch.drain(..).enumerate() {
            if let Some(&(c, slot)) = ahead.get(i + PREFETCH_DISTANCE) {
                self.wait.prefetch_arrival(c, slot);
            }
            let hint = ahead.get(i).map_or(NO_SLOT, |&(_, slot)| slot);
            self.take_new(drained, hint, TenantLimit::Apply, now, out);
        }
        self.ahead = ahead;
        self.batch = batch;
        for _ in 0..shared.notices.len() {
            let Some(h) = shared.notices.pop() else { break };
            if self.slab.by_handle(h).is_none() {
                continue; // still in ingress, or already ended
            }
            let key = h.index();
            let (phase, requested) = shared.table.take_notice(&self.slab[key].token);
            let id = self.slab[key].spec.id;
            match phase {
                CANCEL_QUEUED => {
                    self.wait.remove(&mut self.slab, key);
                    out.cancelled.push(id);
                    tracing::debug!(id = id.0, "cancelled while waiting");
                    self.end(key, Outcome::Cancelled, now);
                }
                CANCEL_RUNNING => {
                    // Compacted out of `running` when the ingest is done.
                    self.running_ended += 1;
                    out.aborted.push(id);
                    tracing::debug!(id = id.0, "cancelled while running: abort");
                    self.end(key, Outcome::Cancelled, now);
                }
                _ => {
                    if let Some(class) = requested {
                        let class = self.clamp_class(class);
                        self.change_class(key, class, now);
                    }
                }
            }
        }
    }

    /// Takes one request from ingress: queues it, or ends it if cancelled in flight (or
    /// refused for the tenant limit, if `limit` applies it). `hint` is its tenant's slot if
    /// known (see [`Scheduler::assign_tenant`]), else `NO_SLOT`.
    pub(super) fn take_new(
        &mut self,
        token: Drained,
        hint: u32,
        limit: TenantLimit,
        now: Timestamp,
        out: &mut Decision,
    ) {
        let payload = self.shared.table.payload(&token);
        let mut spec = payload.spec;
        let arrival = payload.arrival;
        if payload.epoch != self.epoch {
            spec.class = self.current_class(payload.epoch, spec.class);
        }
        out.summary.drained += 1;
        self.drained += 1;
        self.counters.per_class[spec.class.index()].drained += 1;
        // Clears a notice set while it was in ingress (a later change notifies again).
        let (phase, requested) = self.shared.table.take_notice(&token);
        let key = token.handle().index();
        if phase == CANCEL_QUEUED {
            self.slab.insert_at(key, Entry::new(token, spec, arrival));
            out.cancelled.push(spec.id);
            self.end(key, Outcome::Cancelled, now);
            return;
        }
        if let Some(class) = requested {
            let class = self.clamp_class(class);
            self.count_reprioritize(spec.class, class);
            spec.class = class;
        }
        // Deadline (and, with fairness off, tenant lane 0) set before the entry is stored:
        // each later `self.slab[key]` would look the entry up again.
        let mut entry = Entry::new(token, spec, arrival);
        super::deadline::set_deadline(&self.config, &self.pace, &mut entry);
        let fair = self.config.fairness.enabled;
        if !fair {
            entry.tenant = 0;
        }
        self.slab.insert_at(key, entry);
        if fair && !self.assign_tenant(key, hint, limit, now, out) {
            return;
        }
        let class = self.wait.append_new(&mut self.slab, key, now);
        self.count_aged_on_arrival(spec.class, class);
        #[cfg(feature = "slo")]
        self.slo.queue(key, &mut self.slab.tracked(key), spec.class);
    }

    /// A class requested by `reprioritize` is checked against the classes of the moment;
    /// a reload that shrank the class list since is absorbed by the least urgent class.
    pub(super) fn clamp_class(&self, class: Class) -> Class {
        Class::from_index(class.index().min(self.classes.len() - 1) as u8)
    }

    /// Counts a request queued straight into `class`, above its base class `base`, because it
    /// had aged past thresholds before a step took it: promoted out of each class it skipped.
    fn count_aged_on_arrival(&mut self, base: Class, class: Class) {
        for c in class.index() + 1..=base.index() {
            self.counters.per_class[c].promoted += 1;
            #[cfg(feature = "metrics")]
            {
                self.step_counts[c].promoted += 1;
            }
            self.promoted_on_arrival += 1;
        }
    }

    fn count_reprioritize(&mut self, from: Class, to: Class) {
        if from != to {
            self.counters.per_class[from.index()].reprioritized_out += 1;
            self.counters.per_class[to.index()].reprioritized_in += 1;
        }
    }

    /// Applies a class change to a held entry: a waiting one is re-queued at its original
    /// arrival in the new class; a running one is re-ranked for victim choice.
    pub(super) fn change_class(&mut self, key: u32, class: Class, now: Timestamp) {
        let from = self.slab[key].spec.class;
        self.count_reprioritize(from, class);
        #[cfg(feature = "slo")]
        self.slo.reclassified(key, &mut self.slab[key], class);
        tracing::debug!(
            id = self.slab[key].spec.id.0,
            from = from.index(),
            to = class.index(),
            "reprioritized"
        );
        match self.slab[key].place {
            Place::Waiting => {
                self.wait.remove(&mut self.slab, key);
                self.slab[key].spec.class = class;
                self.set_deadline(key);
                let effective = self.wait.insert_again(&mut self.slab, key, now);
                self.count_aged_on_arrival(class, effective);
            }
            Place::Running => {
                let live = self.classes.len();
                let (e, run) = self.slab.entry_and_run(key);
                e.spec.class = class;
                run.run_class = class;
                // Its service is charged in its new class (or that class's relegated tier).
                run.run_tier = (class.index() + if e.relegated { live } else { 0 }) as u8;
            }
            Place::InHand => unreachable!("no entry is in hand between steps"),
        }
    }

    /// Ends every waiting request that waited past `queue_timeout` (oldest first).
    pub(super) fn expire(&mut self, now: Timestamp, out: &mut Decision) {
        let Some(timeout) = self.queue_timeout else {
            return;
        };
        // A preempted request has been served already: it is not timed out (that would
        // throw its output away); it is set aside and put back in place afterwards.
        let mut spared = std::mem::take(&mut self.skipped);
        while let Some(cand) = self.wait.pop_expired(&mut self.slab, now, timeout) {
            let key = cand.key;
            if self.slab.run_state(key).preemptions > 0 {
                spared.push(cand);
                continue;
            }
            let e = &self.slab[key];
            let (id, class, waited) = (e.spec.id, e.spec.class, now.saturating_since(e.arrival));
            let reason = RejectReason::TimedOut { waited };
            if self.end_rejected(key, Outcome::TimedOut, reason, now, out) {
                tracing::debug!(
                    id = id.0,
                    class = class.index(),
                    waited_ms = waited.as_millis() as u64,
                    "timed out waiting"
                );
            }
        }
        while let Some(cand) = spared.pop() {
            self.wait.restore(&mut self.slab, cand);
        }
        self.skipped = spared;
    }
}

/// Whether the arrivals of each submit-time class rise through `batch` (ties allowed).
fn arrivals_in_order_per_class(
    table: &crate::ingress::table::Table<crate::ingress::Payload>,
    batch: &[Drained],
) -> bool {
    let mut last = [Timestamp::ZERO; crate::class::MAX_CLASSES];
    batch.iter().all(|e| {
        let p = table.payload(e);
        let last = &mut last[p.spec.class.index()];
        let rising = p.arrival >= *last;
        *last = p.arrival;
        rising
    })
}
