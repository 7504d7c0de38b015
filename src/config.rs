//! The scheduler's tunables, with production defaults and validation. Serde-ready so a TOML
//! file can carry it; every rule lives in [`SchedulerConfig::validate`].

use crate::class::{ladder_break, ClassSet, LadderBreak, MAX_CLASSES};
use crate::error::{err, ConfigError};
use crate::fair::FairnessConfig;
use crate::slo::SloConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One priority class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Name used in API metadata, metrics labels and logs. Unique, case-insensitively.
    pub name: String,
    /// Inclusive range of vLLM `priority` values (lower = more urgent) mapped to this class.
    pub vllm_priority: [i64; 2],
    /// Age (since arrival) at which a waiting request of this class moves up one class.
    /// `None` for the top class, or to never promote out of this class.
    #[serde(default)]
    pub promote_after_ms: Option<u64>,
    /// Accepted from configurations written for bounded ingress rings: still validated (a
    /// power of two from [`ClassConfig::MIN_RING_CAPACITY`] to
    /// [`ClassConfig::MAX_RING_CAPACITY`]) and otherwise unused. Ingress queues are
    /// unbounded; `queue_capacity` is what bounds a class.
    #[serde(default = "default_ring_capacity")]
    pub ring_capacity: usize,
    /// Most requests of this class waiting or submitted since the last step, at once;
    /// submits past it get `QueueFull`. A burst of up to this many submits between two
    /// steps is always accepted (when none are waiting). Below 4,096 it is exact (never one
    /// more); from 4,096 on each API thread counts its submits locally and publishes them
    /// 16 at a time, so a class may take up to 16 more per submitting thread.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// What deadline order does with a waiting request of this class that can no longer
    /// meet its deadline (ignored by the ladder order).
    #[serde(default)]
    pub on_late: LateRule,
}

/// What happens to a waiting request that can no longer meet its deadline
/// ([`QueueOrder::Deadline`]).
///
/// A [`ClassConfig`] read from a file without `on_late` gets [`LateRule::Keep`];
/// [`SchedulerConfig::default`] gives its top class (HIGH) [`LateRule::Serve`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LateRule {
    /// Relegated: it is served after every request that can still meet its deadline, by
    /// class, then arrival. Best for the share of requests within SLO under overload; the
    /// relegated ones wait until the overload passes (or past `max_wait_ms`, on the
    /// overdue share).
    #[default]
    Keep,
    /// Shed: it ends at once with the outcome [`crate::Outcome::Shed`].
    Shed,
    /// Relegated within its class: it is served after its own class's requests that can
    /// still meet their deadlines, before any less urgent class, by arrival; it stays
    /// urgent (the budget share, preemption of lower classes) and keeps its class among
    /// victims. The class is latency-critical: when the cheapest victims would not make
    /// room for one of its requests, it preempts the lower-class requests that do, fewest
    /// KV blocks to spare first (see `docs/design.md`). Bounds the class's time to first
    /// token under overload as long as the class alone does not overload the engine, at
    /// some cost to lower classes; meant for a small interactive class.
    Serve,
}

/// How the wait queue orders requests across classes and over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueOrder {
    /// Every waiting request has a deadline (its arrival plus its class's or its own target);
    /// requests that can still meet theirs go first, by class, then deadline; the others are
    /// relegated or shed by their class's [`LateRule`]. See [`DeadlineConfig`].
    #[default]
    Deadline,
    /// The aging ladder: by effective class, then arrival; a request moves up a class as
    /// its age passes `promote_after_ms`, and one past `max_wait_ms` goes first.
    Ladder,
}

/// The tunables of deadline order ([`QueueOrder::Deadline`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadlineConfig {
    /// A request with less slack than this (time to its deadline, less its estimated
    /// prefill) is urgent: it may preempt running requests of lower classes and claim the
    /// budget share below.
    pub urgent_slack_ms: u64,
    /// Budget share: while an urgent request's prefill needs the iteration's tokens, the
    /// decode tokens of running requests of lower classes are withheld, each for at most
    /// this long since its last token (never longer than its class's TPOT target). 0 turns
    /// the share off.
    pub max_decode_delay_ms: u64,
    /// A request whose deadline is further away than this, or that is relegated, is
    /// *relaxed*: its prefill shares `relaxed_chunk_tokens` per iteration with the other
    /// relaxed ones, so that an urgent arrival never waits long behind a large batch
    /// prefill.
    pub relaxed_slack_ms: u64,
    /// Prompt tokens per iteration for all relaxed prefills together (0: no limit).
    pub relaxed_chunk_tokens: u32,
    /// The share of each iteration's token budget that requests waiting past `max_wait_ms`
    /// may take ahead of class order (0 to 1). It keeps everyone moving under any overload
    /// while bounding what that costs the requests that can still meet their deadlines.
    pub overdue_share: f64,
    /// The engine's iteration time assumed until the scheduler has measured it from the
    /// times of consecutive steps.
    pub initial_iteration_ms: u64,
}

impl DeadlineConfig {
    pub(crate) fn urgent_slack(&self) -> Duration {
        Duration::from_millis(self.urgent_slack_ms)
    }

    pub(crate) fn max_decode_delay(&self) -> Duration {
        Duration::from_millis(self.max_decode_delay_ms)
    }

    pub(crate) fn relaxed_slack(&self) -> Duration {
        Duration::from_millis(self.relaxed_slack_ms)
    }
}

impl Default for DeadlineConfig {
    fn default() -> Self {
        Self {
            urgent_slack_ms: 300,
            max_decode_delay_ms: 300,
            relaxed_slack_ms: 20_000,
            relaxed_chunk_tokens: 512,
            overdue_share: 0.02,
            initial_iteration_ms: 50,
        }
    }
}

impl ClassConfig {
    /// The smallest `ring_capacity` (2). A one-slot ring cannot tell a slot holding the
    /// value pushed at position `p` from one free for position `p + 1`, so it would
    /// overwrite accepted requests (see `src/ingress/ring.rs`).
    pub const MIN_RING_CAPACITY: usize = 2;
    /// The largest `ring_capacity` (2^20).
    pub const MAX_RING_CAPACITY: usize = 1 << 20;
}

fn default_ring_capacity() -> usize {
    1024
}

fn default_queue_capacity() -> usize {
    262_144
}

/// When and how the scheduler preempts running requests for waiting ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreemptionConfig {
    /// Whether a waiting request may preempt running ones of lower class.
    pub enabled: bool,
    /// How many classes below the waiting request a victim must be (1 = any lower class).
    pub min_class_gap: u8,
    /// Most victims preempted for waiting requests in one step.
    pub max_victims_per_step: usize,
}

impl Default for PreemptionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_class_gap: 1,
            max_victims_per_step: 2,
        }
    }
}

/// Constants of the engine the scheduler serves: what no request may exceed.
///
/// ```
/// use triage::*;
/// let mut config = SchedulerConfig::default();
/// config.engine = EngineLimits { total_blocks: 1000, block_size: 16, ..EngineLimits::default() };
/// let (_sched, api) = Scheduler::new(config).unwrap();
/// // 20,000 tokens need 1,250 blocks of 16: more than the engine has, refused at submit.
/// let e = api.submit(RequestSpec::new(1, Class::LOW, 16_000, 4_000)).unwrap_err();
/// assert!(matches!(e, SubmitError::NeverFits { .. } | SubmitError::ExceedsContext { .. }));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineLimits {
    /// Tokens per KV-cache block.
    pub block_size: u32,
    /// KV-cache blocks the engine has in all.
    pub total_blocks: u32,
    /// The model's context length (prompt plus output).
    pub max_model_len: u32,
    /// Fraction of all blocks kept free when admitting new requests (vLLM's watermark).
    pub watermark: f64,
}

impl Default for EngineLimits {
    fn default() -> Self {
        // Llama-2-7B fp16 on one 80 GB A100 at 90% memory utilisation.
        Self {
            block_size: 16,
            total_blocks: 7450,
            max_model_len: 4096,
            watermark: 0.01,
        }
    }
}

impl EngineLimits {
    /// Blocks held back from admissions.
    pub fn watermark_blocks(&self) -> u32 {
        (f64::from(self.total_blocks) * self.watermark).ceil() as u32
    }

    /// Blocks needed to hold `tokens` tokens of context.
    ///
    /// ```
    /// let engine = triage::EngineLimits { block_size: 16, ..Default::default() };
    /// assert_eq!((engine.blocks_for(0), engine.blocks_for(16), engine.blocks_for(17)), (0, 1, 2));
    /// ```
    #[inline]
    pub fn blocks_for(&self, tokens: u64) -> u64 {
        let size = u64::from(self.block_size);
        if size.is_power_of_two() {
            // The usual case (vLLM's block sizes are powers of two, 16 by default): a shift
            // and a mask, where a division is about 15 cycles on the step's path (once per
            // admission, once per running request's tokens).
            (tokens >> size.trailing_zeros()) + u64::from(tokens & (size - 1) != 0)
        } else {
            tokens.div_ceil(size)
        }
    }
}

/// Every tunable of the scheduler. Start from the defaults and change what differs, in
/// code or from TOML ([`SchedulerConfig::from_toml_str`]); [`SchedulerConfig::validate`]
/// names the first rule a configuration breaks.
///
/// ```
/// use triage::*;
/// let mut config = SchedulerConfig::default();
/// assert_eq!(config.classes.len(), 3); // HIGH, MEDIUM, LOW
/// config.max_wait_ms = 90_000; // above every promote_after_ms (40 s)
/// config.classes[2].queue_capacity = 10_000;
/// assert!(config.validate().is_ok());
/// config.classes[2].queue_capacity = 0;
/// assert_eq!(config.validate().unwrap_err().field, "classes[2].queue_capacity");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// The classes, most urgent first (1 to 8).
    pub classes: Vec<ClassConfig>,
    /// How waiting requests are ordered: by deadline (default) or by the aging ladder.
    pub order: QueueOrder,
    /// The tunables of deadline order.
    pub deadline: DeadlineConfig,
    /// Width of the arrival-time buckets that age together.
    pub bucket_width_ms: u64,
    /// A request waiting longer than this is overdue: it goes before everything else and
    /// nothing may be backfilled past it.
    pub max_wait_ms: u64,
    /// If set, a request still waiting after this long is refused as timed out.
    pub queue_timeout_ms: Option<u64>,
    /// Ingress shards; 0 picks the number of CPUs rounded up to a power of two.
    pub shards: usize,
    /// Preemption of running requests.
    pub preemption: PreemptionConfig,
    /// How many waiting requests that do not fit may be skipped to find ones that do.
    pub backfill_lookahead: usize,
    /// Whether a request may start with part of its prompt when the token budget is short.
    pub chunked_prefill: bool,
    /// The engine's fixed limits.
    pub engine: EngineLimits,
    /// SLO targets per class (one entry per class) and the tracker's windows.
    pub slo: SloConfig,
    /// Fairness between tenants inside each class (off by default).
    pub fairness: FairnessConfig,
    /// Keep an index of held requests by the engine's id (off by default): enables
    /// [`crate::Submitter::lookup`] and refuses a submit whose id is already held
    /// (`DuplicateId`). It costs a lock and a map insert per submit; without it requests
    /// are named only by the [`crate::RequestHandle`] that `submit` returns, and ids are
    /// the engine's business.
    pub id_index: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        let class = |name: &str, lo, hi, promote: Option<u64>, on_late| ClassConfig {
            name: name.to_string(),
            vllm_priority: [lo, hi],
            promote_after_ms: promote,
            ring_capacity: default_ring_capacity(),
            queue_capacity: default_queue_capacity(),
            on_late,
        };
        Self {
            // Ages form a ladder: any request 20 s old is at least MEDIUM, any request 40 s
            // old is HIGH, and at 60 s (LOW's end-to-end bound) it is overdue. Rungs well
            // above the interactive TTFT targets (0.5 s, 2 s) keep aging from spending
            // HIGH's latency on short bursts of batch work, while a sustained overload still
            // cannot starve anyone past a minute. `triage simulate` shows the trade-off.
            // HIGH's late requests wait behind live HIGH only (its TTFT tail stays bounded
            // under overload); the others' behind every live request, which keeps the most
            // requests within SLO (`docs/design.md`, "Deadline order").
            classes: vec![
                class("HIGH", 0, 0, None, LateRule::Serve),
                class("MEDIUM", 1, 9, Some(40_000), LateRule::Keep),
                class("LOW", 10, 100, Some(20_000), LateRule::Keep),
            ],
            order: QueueOrder::Deadline,
            deadline: DeadlineConfig::default(),
            bucket_width_ms: 10,
            max_wait_ms: 60_000,
            queue_timeout_ms: None,
            shards: 0,
            preemption: PreemptionConfig::default(),
            backfill_lookahead: 8,
            chunked_prefill: true,
            engine: EngineLimits::default(),
            slo: SloConfig::for_classes(3),
            fairness: FairnessConfig::default(),
            id_index: false,
        }
    }
}

/// The longest duration a deadline tunable may be: 7 days, like an SLO bound.
const MAX_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;

impl SchedulerConfig {
    /// Checks every rule; the first broken one is returned.
    ///
    /// ```
    /// let mut cfg = triage::SchedulerConfig::default();
    /// assert!(cfg.validate().is_ok());
    /// cfg.max_wait_ms = 1_000; // below the aging thresholds
    /// let e = cfg.validate().unwrap_err();
    /// assert_eq!(e.field, "max_wait_ms");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.classes.len();
        if n == 0 || n > MAX_CLASSES {
            return Err(err("classes", format!("1 to {MAX_CLASSES} classes"), n));
        }
        let thresholds: Vec<Option<u64>> =
            self.classes.iter().map(|c| c.promote_after_ms).collect();
        for (i, c) in self.classes.iter().enumerate() {
            let f = |name: &str| format!("classes[{i}].{name}");
            if c.name.trim().is_empty() {
                return Err(err(f("name"), "a non-empty name", format!("{:?}", c.name)));
            }
            if let Some(j) = self.classes[..i]
                .iter()
                .position(|o| o.name.eq_ignore_ascii_case(&c.name))
            {
                return Err(err(
                    f("name"),
                    format!(
                        "a name unique among classes (classes[{j}] is {:?})",
                        self.classes[j].name
                    ),
                    format!("{:?}", c.name),
                ));
            }
            let [lo, hi] = c.vllm_priority;
            if lo > hi {
                return Err(err(
                    f("vllm_priority"),
                    "[low, high] with low <= high",
                    format!("[{lo}, {hi}]"),
                ));
            }
            if let Some(j) = self.classes[..i].iter().position(|o| {
                let [olo, ohi] = o.vllm_priority;
                lo <= ohi && olo <= hi
            }) {
                return Err(err(
                    f("vllm_priority"),
                    format!("a range disjoint from classes[{j}].vllm_priority"),
                    format!("[{lo}, {hi}]"),
                ));
            }
            match ladder_break(&thresholds, i) {
                Some(LadderBreak::TopClassPromotes) => {
                    return Err(err(
                        f("promote_after_ms"),
                        "none: the top class has nowhere to go",
                        format!("{:?}", c.promote_after_ms),
                    ))
                }
                Some(LadderBreak::Zero) => {
                    return Err(err(f("promote_after_ms"), "at least 1 ms", 0))
                }
                Some(LadderBreak::NotGrowing { above: j, at }) => {
                    return Err(err(
                        f("promote_after_ms"),
                        format!(
                            "less than classes[{j}].promote_after_ms ({at}): thresholds grow \
                             with urgency"
                        ),
                        thresholds[i].unwrap_or(0),
                    ))
                }
                None => {}
            }
            if let Some(t) = c.promote_after_ms {
                if t >= self.max_wait_ms {
                    return Err(err(
                        "max_wait_ms",
                        format!("more than every promote_after_ms (classes[{i}] has {t})"),
                        self.max_wait_ms,
                    ));
                }
            }
            let rings = ClassConfig::MIN_RING_CAPACITY..=ClassConfig::MAX_RING_CAPACITY;
            if !c.ring_capacity.is_power_of_two() || !rings.contains(&c.ring_capacity) {
                return Err(err(
                    f("ring_capacity"),
                    format!("a power of two from {} to {}", rings.start(), rings.end()),
                    c.ring_capacity,
                ));
            }
            if c.queue_capacity == 0 {
                return Err(err(f("queue_capacity"), "at least 1", 0));
            }
        }
        if self.bucket_width_ms == 0 || self.bucket_width_ms > 60_000 {
            return Err(err("bucket_width_ms", "1 to 60000", self.bucket_width_ms));
        }
        if self.max_wait_ms == 0 {
            return Err(err("max_wait_ms", "at least 1", 0));
        }
        if let Some(t) = self.queue_timeout_ms {
            if t <= self.max_wait_ms {
                return Err(err(
                    "queue_timeout_ms",
                    format!("more than max_wait_ms ({})", self.max_wait_ms),
                    t,
                ));
            }
        }
        if self.shards > 1024 {
            return Err(err("shards", "0 (auto) to 1024", self.shards));
        }
        let p = &self.preemption;
        if p.min_class_gap == 0 {
            return Err(err("preemption.min_class_gap", "at least 1", 0));
        }
        if p.max_victims_per_step == 0 && p.enabled {
            return Err(err(
                "preemption.max_victims_per_step",
                "at least 1 when preemption is enabled",
                0,
            ));
        }
        let e = &self.engine;
        if !(1..=4096).contains(&e.block_size) {
            return Err(err("engine.block_size", "1 to 4096", e.block_size));
        }
        if e.total_blocks == 0 {
            return Err(err("engine.total_blocks", "at least 1", 0));
        }
        if e.max_model_len == 0 {
            return Err(err("engine.max_model_len", "at least 1", 0));
        }
        if !(0.0..0.5).contains(&e.watermark) {
            return Err(err(
                "engine.watermark",
                "a fraction in [0, 0.5)",
                e.watermark,
            ));
        }
        let d = &self.deadline;
        if !(0.0..=1.0).contains(&d.overdue_share) {
            return Err(err(
                "deadline.overdue_share",
                "a fraction from 0 to 1",
                d.overdue_share,
            ));
        }
        for (name, v) in [
            ("deadline.urgent_slack_ms", d.urgent_slack_ms),
            ("deadline.max_decode_delay_ms", d.max_decode_delay_ms),
            ("deadline.relaxed_slack_ms", d.relaxed_slack_ms),
        ] {
            if v > MAX_DEADLINE_MS {
                return Err(err(name, format!("0 to {MAX_DEADLINE_MS}"), v));
            }
        }
        if d.initial_iteration_ms == 0 || d.initial_iteration_ms > 60_000 {
            return Err(err(
                "deadline.initial_iteration_ms",
                "1 to 60000",
                d.initial_iteration_ms,
            ));
        }
        self.fairness.validate()?;
        self.slo.validate_for(n)
    }

    /// The classes as the scheduler uses them.
    pub fn class_set(&self) -> ClassSet {
        ClassSet::new(
            self.classes.iter().map(|c| c.name.clone()).collect(),
            self.classes
                .iter()
                .map(|c| (c.vllm_priority[0], c.vllm_priority[1]))
                .collect(),
        )
    }

    /// The number of ingress shards this config resolves to.
    pub fn resolved_shards(&self) -> usize {
        let n = if self.shards == 0 {
            std::thread::available_parallelism().map_or(4, |n| n.get())
        } else {
            self.shards
        };
        n.clamp(1, 1024).next_power_of_two()
    }

    pub(crate) fn bucket_width(&self) -> Duration {
        Duration::from_millis(self.bucket_width_ms)
    }

    /// Each class's aging threshold, in class order.
    pub(crate) fn promote_after(&self) -> Vec<Option<Duration>> {
        self.classes
            .iter()
            .map(|c| c.promote_after_ms.map(Duration::from_millis))
            .collect()
    }

    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::EngineLimits;

    #[test]
    fn blocks_for_rounds_up_for_every_block_size() {
        for block_size in [1, 2, 3, 7, 16, 32, 48, 128, 1 << 31, u32::MAX] {
            let engine = EngineLimits {
                block_size,
                ..EngineLimits::default()
            };
            let size = u64::from(block_size);
            for tokens in [0, 1, 15, 16, 17, 1000, size - 1, size, size + 1, u64::MAX] {
                assert_eq!(
                    engine.blocks_for(tokens),
                    tokens.div_ceil(size),
                    "{tokens} tokens in blocks of {block_size}"
                );
            }
        }
    }
}
