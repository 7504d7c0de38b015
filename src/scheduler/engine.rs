//! The engine's callbacks into the scheduler (progress, finish) and the hand-off of waiting
//! requests at shutdown.

use super::fairness::TenantLimit;
use super::Scheduler;
use crate::counters::{FinishReason, Outcome};
use crate::error::ProgressError;
use crate::queue::slab::{Entry, Place, Run};
use crate::request::HandOff;
use crate::request::RequestHandle;
use crate::time::Timestamp;

impl Scheduler {
    /// The entry and run of the running request `h` names, if a report about it at `now`
    /// is in order.
    fn running_entry(
        &self,
        h: RequestHandle,
        now: Timestamp,
    ) -> Result<(&Entry, &Run), ProgressError> {
        let e = self
            .slab
            .by_handle(h)
            .filter(|e| e.place == Place::Running)
            .ok_or(ProgressError::NotRunning(h))?;
        let run = self.slab.run(h.index());
        if now < run.last_event {
            return Err(ProgressError::TimeWentBackwards(e.spec.id));
        }
        Ok((e, run))
    }

    /// The slab key of the running request `h` names ([`Scheduler::running_entry`]).
    fn running_key(&self, h: RequestHandle, now: Timestamp) -> Result<u32, ProgressError> {
        self.running_entry(h, now).map(|_| h.index())
    }

    /// Reports one iteration's work on a running request: `computed` tokens ran through the
    /// model (a prefill chunk, or the one decode token) and `new_output` tokens were
    /// sampled. The first output token sets the request's time to first token; the KV the
    /// scheduler accounts for it grows with `computed`.
    ///
    /// Refused, with nothing changed, if the request is not running, if more prompt is
    /// reported than remained, or if output comes before the prefill is done or past
    /// `max_new_tokens`.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// api.submit(RequestSpec::new(1, Class::HIGH, 100, 2)).unwrap();
    /// let a = sched.step(clock.now(), &room).unwrap().admitted[0];
    /// // The iteration computed the whole prompt and sampled the first token.
    /// sched.on_progress(a.handle, clock.now(), a.prefill_tokens, 1).unwrap();
    /// assert_eq!(sched.first_token_at(a.handle), Some(clock.now()));
    /// // Output past max_new_tokens is refused, and changes nothing.
    /// assert!(matches!(sched.on_progress(a.handle, clock.now(), 1, 2), Err(ProgressError::OutputOverrun { .. })));
    /// ```
    pub fn on_progress(
        &mut self,
        handle: RequestHandle,
        now: Timestamp,
        computed: u32,
        new_output: u32,
    ) -> Result<(), ProgressError> {
        let key = self.running_key(handle, now)?;
        let block_size = self.config.engine.block_size;
        let (e, run) = self.slab.entry_and_run(key);
        let id = e.spec.id;
        let kv = u64::from(run.kv_tokens) + u64::from(computed);
        let generated = u64::from(run.generated) + u64::from(new_output);
        // KV can hold at most the prompt plus the output sampled so far.
        let held_max = u64::from(e.spec.prompt_tokens) + generated;
        if kv > held_max {
            return Err(ProgressError::PrefillOverrun {
                id,
                reported: computed,
                remaining: u32::try_from(held_max.saturating_sub(u64::from(run.kv_tokens)))
                    .unwrap_or(u32::MAX),
            });
        }
        if generated > u64::from(e.spec.max_new_tokens)
            || (new_output > 0 && kv < u64::from(run.prefill_target))
        {
            return Err(ProgressError::OutputOverrun {
                id,
                generated,
                max_new_tokens: e.spec.max_new_tokens,
            });
        }
        run.kv_tokens = kv as u32; // <= prompt + max_new <= max_model_len (u32)
        run.generated = generated as u32;
        run.last_event = now;
        if new_output > 0 && run.first_token.is_none() {
            run.first_token = Some(now);
        }
        // The engine may have grown the KV further than this scheduler planned. Compared
        // first: a decode step reports every running request, and the blocks rarely grow.
        if u64::from(run.kv_tokens) > u64::from(run.blocks) * u64::from(block_size) {
            run.blocks = run.kv_tokens.div_ceil(block_size);
        }
        #[cfg(feature = "slo")]
        if new_output > 0 {
            let mut tracked = crate::queue::slab::Tracked {
                entry: e,
                run: Some(run),
            };
            self.slo.tokens(&mut tracked, now, new_output);
        }
        self.charge(key, super::fairness::Tokens::Output, new_output);
        Ok(())
    }

    /// Reports that a running request finished. Its outcome is `finished`, unless the
    /// client's cancel had already been acknowledged, in which case it is `cancelled`.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// api.submit(RequestSpec::new(1, Class::HIGH, 100, 1)).unwrap();
    /// let a = sched.step(clock.now(), &room).unwrap().admitted[0];
    /// sched.on_progress(a.handle, clock.now(), a.prefill_tokens, 1).unwrap();
    /// assert_eq!(sched.on_finished(a.handle, clock.now(), FinishReason::Stop), Ok(Outcome::Finished));
    /// // The request ended: its handle is stale.
    /// assert_eq!(sched.on_finished(a.handle, clock.now(), FinishReason::Stop), Err(ProgressError::NotRunning(a.handle)));
    /// assert_eq!(sched.running(), 0);
    /// assert!(sched.conservation().is_balanced());
    /// ```
    pub fn on_finished(
        &mut self,
        handle: RequestHandle,
        now: Timestamp,
        reason: FinishReason,
    ) -> Result<Outcome, ProgressError> {
        let (e, run) = self.running_entry(handle, now)?;
        let (id, class, generated) = (e.spec.id, e.spec.class.index(), run.generated);
        let key = handle.index();
        self.pace.finished(class, generated);
        // Left in `running` until the next step compacts it: O(1) here.
        self.running_ended += 1;
        let outcome = self.end(key, Outcome::Finished, now);
        tracing::debug!(id = id.0, class, reason = ?reason, outcome = ?outcome, "finished");
        Ok(outcome)
    }

    /// The first-token time recorded for a held request, if it has one.
    pub fn first_token_at(&self, handle: RequestHandle) -> Option<Timestamp> {
        self.slab
            .by_handle(handle)
            .and_then(|_| self.slab.run_state(handle.index()).first_token)
    }

    /// Closes ingress and hands back every waiting request, most urgent class first and
    /// oldest first, with its class and original arrival, for another replica to queue
    /// (rolling restart). Their outcome here is `evicted`. Running requests stay; the
    /// engine finishes them and reports as usual.
    ///
    /// Submits racing the close either land before it (and are returned here) or fail with
    /// `Closed`: the close bit is in the same word a push links its slot with. Requests
    /// still in ingress are handed off even past `fairness.max_tenants` (the limit bounds
    /// the tenants this replica serves; it serves none of these).
    ///
    /// When it returns, ingress is empty and stays so: [`Scheduler::check_invariants`]
    /// checks it.
    ///
    /// ```
    /// use triage::*;
    /// let clock = ManualClock::new(Timestamp::ZERO);
    /// let (mut sched, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone()).unwrap();
    /// let room = Budget { max_num_seqs: 8, max_batched_tokens: 2048, free_blocks: 1000 };
    /// api.submit(RequestSpec::new(1, Class::LOW, 100, 1)).unwrap();
    /// api.submit(RequestSpec::new(2, Class::HIGH, 100, 1)).unwrap();
    /// let handed = sched.drain_waiting(clock.now());
    /// let ids: Vec<u64> = handed.iter().map(|h| h.spec.id.0).collect();
    /// assert_eq!(ids, vec![2, 1]); // most urgent first
    /// assert!(api.submit(RequestSpec::new(3, Class::LOW, 1, 1)).is_err()); // closed
    /// ```
    pub fn drain_waiting(&mut self, now: Timestamp) -> Vec<HandOff> {
        self.shared.close(false);
        // Closed, each ring's tail is final: take every position claimed before the close.
        // A producer that claimed one may not have published it yet; it is a few
        // instructions from doing so and never blocks, so `pop_closed` waits for it (and
        // only for that). `check_invariants` then finds every ring empty.
        // What `take_new` reports goes to a scratch decision no one reads: cancels (their
        // clients were answered) and nothing else, because the tenant limit is lifted: a
        // request refused here would be neither handed off nor reported.
        let mut scratch = crate::Decision::default();
        let shared = crate::sync::Arc::clone(&self.shared);
        let mut batch = std::mem::take(&mut self.batch);
        self.drain.drain_closed(&shared.table, &mut batch);
        for drained in batch.drain(..) {
            let hint = crate::queue::slab::NO_SLOT;
            self.take_new(drained, hint, TenantLimit::Lift, now, &mut scratch);
        }
        self.batch = batch;
        debug_assert!(scratch.rejected.is_empty());
        self.handed_off = true;
        // Notices are left for the next step: a cancel of a running request must reach the
        // engine as `aborted` in a decision, not vanish here. A waiting request whose
        // cancel won is ended as cancelled below instead of handed off, and one whose class
        // change was acknowledged is handed off in its new class.
        // Age the queue first, so the hand-off order is the order a step would serve.
        let mut promoted = [0u64; crate::class::MAX_CLASSES];
        self.wait.promote(&mut self.slab, now, &mut promoted);
        for (c, n) in promoted.iter().enumerate() {
            self.counters.per_class[c].promoted += n;
        }
        // Acknowledged class changes not yet applied by a step are applied now, so they
        // decide both the hand-off's class and its order.
        for key in self.wait.keys_in_order(&mut self.slab) {
            let (_, requested) = shared.table.take_notice(&self.slab[key].token);
            if let Some(class) = requested {
                let class = self.clamp_class(class);
                self.change_class(key, class, now);
            }
        }
        let keys = self.wait.keys_in_order(&mut self.slab);
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            self.wait.remove(&mut self.slab, key);
            let e = &self.slab[key];
            let hand = HandOff {
                spec: e.spec.unpack(),
                arrival: e.arrival,
                generated_tokens: self.slab.run_state(key).generated,
            };
            if self.end(key, Outcome::Evicted, now) == Outcome::Evicted {
                out.push(hand);
            }
        }
        self.settle_ingress();
        tracing::info!(
            handed_off = out.len(),
            "drained waiting requests for hand-off"
        );
        out
    }
}
