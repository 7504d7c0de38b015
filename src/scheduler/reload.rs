//! Live configuration reload, applied at a step boundary: the new configuration is checked
//! against what the scheduler holds, then classes are re-keyed by name, the wait queue is
//! rebuilt under the new thresholds (every waiting request keeps its arrival, so its place),
//! and the new limits are published to the API threads in one atomic swap.

use super::Scheduler;
use crate::class::MAX_CLASSES;
use crate::config::SchedulerConfig;
use crate::counters::ClassCounters;
use crate::decision::ReloadReport;
use crate::error::{ConfigError, ReloadError};
use crate::ingress::SubmitLimits;
use crate::queue::slab::Place;
use crate::queue::Tiers;
use crate::sync::{lock, Arc, AtomicBool, Mutex, Ordering};
use crate::time::Timestamp;
use std::time::Duration;

/// The mailbox between [`ConfigHandle`]s (any thread) and the scheduler.
#[derive(Default)]
pub(crate) struct Pending {
    /// Set when `config` holds a proposal the scheduler has not taken yet.
    flag: AtomicBool,
    config: Mutex<Option<SchedulerConfig>>,
    last: Mutex<Option<Result<ReloadReport, ReloadError>>>,
}

/// A handle for proposing a new configuration from any thread (a file watcher, an admin
/// endpoint). The scheduler applies the latest proposal at its next step boundary; the
/// step's [`crate::Decision::reload`] and [`ConfigHandle::last_result`] say how it went.
#[derive(Clone)]
pub struct ConfigHandle {
    pub(crate) pending: Arc<Pending>,
}

impl ConfigHandle {
    /// Proposes `config`. Static validation happens now (an invalid config is refused here
    /// and changes nothing); checks against the scheduler's state (classes still holding
    /// requests, shards, the id index) happen when it is applied. A later proposal replaces an
    /// earlier one not yet applied.
    pub fn propose(&self, config: SchedulerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        *lock(&self.pending.config) = Some(config);
        // Relaxed: the mutex orders the config, not the flag. A `take` that reads this
        // store cannot have locked before the lock above (that unlock happens before this
        // store, and a read never sees a store that happens after it), so it finds this
        // config or a later one.
        self.pending.flag.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The outcome of the last reload the scheduler applied or refused, if any.
    pub fn last_result(&self) -> Option<Result<ReloadReport, ReloadError>> {
        lock(&self.pending.last).clone()
    }
}

impl std::fmt::Debug for ConfigHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigHandle").finish_non_exhaustive()
    }
}

impl Pending {
    /// Takes the pending proposal, if any. One failing compare-exchange per step when there
    /// is none.
    fn take(&self) -> Option<SchedulerConfig> {
        // Relaxed: see the store in `propose`; the lock below orders the config. A
        // compare-exchange rather than `swap`: loom mis-orders a `swap` that reads the old
        // value (tokio-rs/loom#254), and this one is modelled.
        if self
            .flag
            .compare_exchange(true, false, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            lock(&self.config).take()
        } else {
            None
        }
    }
}

impl Scheduler {
    /// A handle other threads can propose configurations through.
    pub fn config_handle(&self) -> ConfigHandle {
        ConfigHandle {
            pending: Arc::clone(&self.pending),
        }
    }

    /// Proposes a new configuration from the engine thread; applied at the next step
    /// boundary, like [`ConfigHandle::propose`].
    pub fn reload(&mut self, config: SchedulerConfig) -> Result<(), ConfigError> {
        self.config_handle().propose(config)
    }

    /// Applies a pending proposal, if any. Called by the step after ingest, so every
    /// request pushed before now is already queued under the old numbering.
    pub(super) fn apply_pending_reload(
        &mut self,
        now: Timestamp,
    ) -> Option<Result<ReloadReport, ReloadError>> {
        let config = self.pending.take()?;
        let result = self.try_reload(config, now);
        match &result {
            Ok(r) => {
                tracing::info!(epoch = r.epoch, added = ?r.classes_added, removed = ?r.classes_removed, requeued = r.requeued, "configuration reloaded")
            }
            Err(e) => {
                tracing::warn!(error = %e, "configuration reload refused; the old configuration stays in force")
            }
        }
        match &result {
            Ok(_) => self.reloads.0 += 1,
            Err(_) => self.reloads.1 += 1,
        }
        #[cfg(feature = "metrics")]
        crate::telemetry::record_reload(result.is_ok());
        *lock(&self.pending.last) = Some(result.clone());
        Some(result)
    }

    /// Applied and refused reloads so far.
    pub fn reload_counts(&self) -> (u64, u64) {
        self.reloads
    }

    /// The configuration epoch in force.
    pub fn config_epoch(&self) -> u32 {
        self.epoch
    }

    fn try_reload(
        &mut self,
        config: SchedulerConfig,
        now: Timestamp,
    ) -> Result<ReloadReport, ReloadError> {
        config.validate().map_err(ReloadError::Invalid)?;
        let shards = config.resolved_shards();
        if shards != self.shared.shards.len() {
            return Err(ReloadError::NeedsRestart {
                field: "shards".into(),
                current: self.shared.shards.len().to_string(),
                requested: shards.to_string(),
            });
        }
        // Old class index -> new class index, by name.
        let new_names = config.class_set();
        let map: Vec<Option<usize>> = self
            .classes
            .iter()
            .map(|c| {
                new_names
                    .parse_name(self.classes.name(c))
                    .ok()
                    .map(|n| n.index())
            })
            .collect();
        for (old, new) in map.iter().enumerate() {
            if new.is_some() {
                continue;
            }
            let waiting = self.wait.base_len(old);
            let running = self
                .running
                .iter()
                .filter(|&&k| {
                    self.slab[k].spec.class.index() == old
                        || self.slab.run(k).run_class.index() == old
                })
                .count();
            if waiting + running > 0 {
                return Err(ReloadError::StrandsRequests {
                    class: self
                        .classes
                        .name(crate::Class::from_index(old as u8))
                        .to_string(),
                    waiting,
                    running,
                });
            }
        }
        if config.id_index != self.shared.index.is_some() {
            return Err(ReloadError::NeedsRestart {
                field: "id_index".into(),
                current: self.shared.index.is_some().to_string(),
                requested: config.id_index.to_string(),
            });
        }
        // Accepted: from here on nothing can fail.
        let n_new = config.classes.len();
        let mut step_map = [0u8; MAX_CLASSES];
        for (old, slot) in step_map.iter_mut().enumerate().take(self.classes.len()) {
            // A class removed while a request for it was still in flight (submitted under
            // the old limits, drained after the swap) goes to the next surviving less
            // urgent class, or the least urgent one.
            let target = (old..map.len()).find_map(|j| map[j]).unwrap_or(n_new - 1);
            *slot = target as u8;
        }
        let report = ReloadReport {
            epoch: self.epoch + 1,
            classes_added: new_names
                .iter()
                .filter(|c| self.classes.parse_name(new_names.name(*c)).is_err())
                .map(|c| new_names.name(c).to_string())
                .collect(),
            classes_removed: self
                .classes
                .iter()
                .filter(|c| map[c.index()].is_none())
                .map(|c| self.classes.name(c).to_string())
                .collect(),
            requeued: self.wait.len(),
        };

        // Re-key every held request and rebuild the queue in its old order.
        let waiting = self.wait.keys_in_order(&mut self.slab);
        let remap = |c: crate::Class| crate::Class::from_index(step_map[c.index()]);
        let tiers = config.classes.len();
        for &k in &self.running {
            let run = self.slab.run_mut(k);
            run.run_class = remap(run.run_class);
            let run_class = run.run_class;
            let e = &mut self.slab[k];
            e.spec.class = remap(e.spec.class);
            // Its deadline and queue time under the new targets and order, for when it is
            // preempted and queued again; a relegated one stays relegated in deadline order.
            let relegated = e.relegated && config.order == crate::config::QueueOrder::Deadline;
            super::deadline::set_deadline(&config, &self.pace, e);
            if relegated {
                e.relegated = true;
                e.due = e.arrival;
            }
            let run_tier = if e.relegated {
                (tiers + e.spec.class.index()) as u8
            } else {
                run_class.index() as u8
            };
            self.slab.run_mut(k).run_tier = run_tier;
        }
        let mut wait = new_wait_queue(&config);
        self.reassign_tenants(&config.fairness);
        for k in waiting {
            self.slab[k].place = Place::InHand;
            self.slab[k].spec.class = remap(self.slab[k].spec.class);
            // Its deadline under the new targets and order (it is judged again).
            super::deadline::set_deadline(&config, &self.pace, &mut self.slab[k]);
            // In order within each class, so each lands at the tail of its run. A
            // re-queued request loses its `late` mark here: the mark only picks which
            // sorted run holds it (to keep insertions short), never its place in order.
            wait.insert_new(&mut self.slab, k, now);
        }
        self.wait = wait;
        let mut per_class = [ClassCounters::default(); MAX_CLASSES];
        for (old, counters) in self
            .counters
            .per_class
            .iter()
            .enumerate()
            .take(self.classes.len())
        {
            match map[old] {
                Some(new) => per_class[new] = *counters,
                None => self.counters.retired.absorb(counters),
            }
        }
        self.counters.per_class = per_class;

        self.epoch_maps.push(step_map);
        self.epoch += 1;
        let slo_changed = config.slo != self.config.slo || new_names != self.classes;
        self.classes = new_names;
        self.max_wait = config.max_wait();
        self.queue_timeout = config.queue_timeout_ms.map(Duration::from_millis);
        self.config = config;
        if slo_changed {
            #[cfg(feature = "slo")]
            self.restart_slo_tracking();
            #[cfg(feature = "metrics")]
            self.restart_metrics();
        }
        // Publish last: every class position has its ingress queues from the start, the
        // capacities are the new ones, and API threads that load these limits check against
        // the new classes from now on.
        crate::ingress::set_capacities(self.shared.limits.counts(), &self.config);
        self.shared
            .limits
            .store(std::sync::Arc::new(SubmitLimits::new(
                &self.config,
                self.epoch,
            )));
        Ok(report)
    }

    /// Starts SLO tracking afresh under the configuration in force (windows restart; the
    /// requests held are registered again so their latencies still count).
    #[cfg(feature = "slo")]
    fn restart_slo_tracking(&mut self) {
        self.slo = crate::slo::SloTracker::new(self.config.slo.clone(), &self.classes)
            .expect("a validated configuration builds its tracker");
        let keys: Vec<u32> = self.slab.iter().map(|(k, _)| k).collect();
        for key in keys {
            let run = self.slab.run_state(key);
            let mut t = self.slab.tracked(key);
            // The slot's state belonged to the tracker just replaced.
            t.entry.slo = crate::slo::SloSlot::default();
            let class = t.entry.spec.class;
            self.slo.queue(key, &mut t, class);
            if t.entry.place == Place::Running || run.first_token.is_some() {
                self.slo.admitted(&mut t, run.started);
            }
            if let Some(first) = run.first_token {
                self.slo.first_token(&mut t, first);
            }
        }
    }

    /// Re-registers the metric families for the classes and SLO targets in force.
    #[cfg(feature = "metrics")]
    fn restart_metrics(&mut self) {
        self.metrics = crate::telemetry::StepMetrics::new(&self.classes, Some(&self.config.slo));
        self.step_counts = Default::default();
    }

    /// The class index `class` of epoch `epoch` has in the epoch in force.
    pub(super) fn current_class(&self, epoch: u32, class: crate::Class) -> crate::Class {
        let mut c = class.index().min(MAX_CLASSES - 1);
        for map in &self.epoch_maps[epoch as usize..] {
            c = map[c] as usize;
        }
        crate::Class::from_index(c.min(self.classes.len() - 1) as u8)
    }
}

/// The wait queue a configuration asks for.
pub(super) fn new_wait_queue(config: &SchedulerConfig) -> Tiers {
    let by_deadline = config.order == crate::config::QueueOrder::Deadline;
    // Deadline order does not age requests up classes: urgency grows with the deadline.
    let promote_after = if by_deadline {
        vec![None; config.classes.len()]
    } else {
        config.promote_after()
    };
    let mut tiers = Tiers::new(
        config.classes.len(),
        config.bucket_width(),
        promote_after,
        config.fairness.enabled,
        by_deadline,
    );
    // A class that serves its late requests relegates them within itself.
    let within: Vec<bool> = config
        .classes
        .iter()
        .map(|c| c.on_late == crate::config::LateRule::Serve)
        .collect();
    tiers.relegate_within(&within);
    tiers
}
