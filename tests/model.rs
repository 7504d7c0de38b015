//! Model-based property tests: random sequences of every public operation, run against the
//! real [`Scheduler`] (with a [`ManualClock`]) and a small reference model of the contract
//! (`../shared/DESIGN.md` §3). The test plays the engine: it carries out every [`Decision`]
//! (prefill chunks, decode tokens, preemptions, aborts) on its own copy of the running
//! requests and reports `on_progress` / `on_finished` the way an engine would, passing
//! `free_blocks = total - blocks it holds` (less a random amount it keeps for itself).
//!
//! After every operation it checks:
//! * the conservation law, `check_invariants()`, and every counter against the model;
//! * each call's answer (accepted, or the exact typed error) against the model, and that a
//!   refused call changed nothing;
//! * no request is admitted unless waiting, preempted unless running, or started twice;
//! * budgets: sequences, tokens, KV blocks (admissions, decode growth, watermark);
//! * order: a step's admissions are a subsequence of the queue order the contract defines
//!   (overdue first oldest first, then effective class, then FIFO by arrival), skipping at
//!   most `backfill_lookahead` requests and never an overdue one. With no lookahead that is
//!   exactly a prefix: FIFO inside a class, preempted requests ahead of later arrivals.
//!   Requests come from 1 to 5 tenants (one of them the requests with no tenant) with
//!   random weights at magnitudes from 10^-300 to 10^300. With fairness off, or one tenant
//!   waiting, that order is exact. With fairness on and several tenants waiting, the model
//!   does not predict which tenant goes next, so it checks what the contract fixes: overdue
//!   requests first, oldest first, never skipped; class order; FIFO inside each tenant and
//!   class; at most `backfill_lookahead` skipped. And the fair choice itself, from the
//!   counters (`Scheduler::tenant_service`), when there is no lookahead: after a step, a
//!   tenant admitted in a class is ahead of any tenant still waiting there by at most what
//!   it was charged since its last pick (and the heap's resolution);
//! * liveness: every leading request of that order that fits, together with all running
//!   work, in this step's budget (a conservative "capacity allowed it") is admitted in this
//!   step, so no overdue request waits past `max_wait` plus one step when it could run
//!   (with several tenants: the overdue ones, then each class whose waiting requests all
//!   fit);
//! * tenants: with fairness on, the tenants held and those with a counter are exactly the
//!   tenants with a request waiting or running;
//! * preemption: victims are running, of a class at least `min_class_gap` below the request
//!   they made room for (which was admitted), lowest class and most recently started
//!   first, at most `max_victims_per_step`; nothing when preemption is off;
//! * aging: each admission's effective class, and `waiting_in(class)`, match the ladder
//!   `eff = min(base, ladder(bucket end age))`;
//! * at the end, once the engine has run everything, every submitted request has exactly
//!   one terminal outcome and the counters say the same.
//!
//! `PROPTEST_CASES` sets the number of cases (64 by default; `scripts/proptest-long.sh`
//! runs 100,000).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use triage::*;

/// The random part of a configuration.
#[derive(Clone, Debug)]
struct Cfg {
    /// Aging thresholds for MEDIUM and LOW (ms), or none.
    aging: Option<(u64, u64)>,
    max_wait_ms: u64,
    bucket_width_ms: u64,
    queue_timeout_extra_ms: Option<u64>,
    ring_capacity: usize,
    queue_capacity: usize,
    preempt: bool,
    gap: u8,
    victims: usize,
    lookahead: usize,
    chunked: bool,
    block_size: u32,
    total_blocks: u32,
    max_model_len: u32,
    watermark_pct: u32,
    /// Fairness between tenants on. With one tenant the order must be exactly the model's
    /// FIFO-by-class order through the lane machinery.
    fair: bool,
    /// The tenants and their weights.
    tenancy: Tenancy,
}

/// The tenants requests come from, and the `[fairness]` weights.
#[derive(Clone, Debug)]
struct Tenancy {
    /// How many tenants submit (1 to 5): tenant 0 is the requests with no tenant (weight
    /// `default_weight`), tenant `k > 0` is `TenantId(k)`; tenants 1 to 3 are listed with
    /// `listed[k - 1]`, tenant 4 is not (`default_weight`).
    tenants: u8,
    listed: [f64; 3],
    default_weight: f64,
    prompt_weight: f64,
    output_weight: f64,
}

impl Tenancy {
    /// One tenant, default weights.
    fn one() -> Self {
        let f = FairnessConfig::default();
        Self {
            tenants: 1,
            listed: [1.0; 3],
            default_weight: f.default_weight,
            prompt_weight: f.prompt_token_weight,
            output_weight: f.output_token_weight,
        }
    }

    fn id(k: u8) -> Option<TenantId> {
        (k > 0).then_some(TenantId(u64::from(k)))
    }

    fn weight(&self, k: u8) -> f64 {
        match k {
            1..=3 => self.listed[usize::from(k) - 1],
            _ => self.default_weight,
        }
    }

    /// The heap's resolution as service: a sixteenth of the cheapest token (the least
    /// nonzero token weight over the greatest tenant weight).
    fn delta(&self) -> f64 {
        let least = [self.prompt_weight, self.output_weight]
            .into_iter()
            .filter(|&w| w > 0.0)
            .fold(f64::INFINITY, f64::min);
        let greatest = self
            .listed
            .iter()
            .fold(self.default_weight, |a, &b| a.max(b));
        least / (16.0 * greatest)
    }
}

impl Cfg {
    fn config(&self) -> SchedulerConfig {
        // The ladder order: its order is exact, so this model predicts every admission.
        let mut c = SchedulerConfig {
            shards: 1,
            order: QueueOrder::Ladder,
            ..SchedulerConfig::default()
        };
        match self.aging {
            Some((medium, low)) => {
                c.classes[1].promote_after_ms = Some(medium);
                c.classes[2].promote_after_ms = Some(low);
            }
            None => {
                c.classes[1].promote_after_ms = None;
                c.classes[2].promote_after_ms = None;
            }
        }
        for class in &mut c.classes {
            class.ring_capacity = self.ring_capacity;
            class.queue_capacity = self.queue_capacity;
        }
        c.max_wait_ms = self.max_wait_ms;
        c.bucket_width_ms = self.bucket_width_ms;
        c.queue_timeout_ms = self.queue_timeout_extra_ms.map(|x| self.max_wait_ms + x);
        c.preemption.enabled = self.preempt;
        c.preemption.min_class_gap = self.gap;
        c.preemption.max_victims_per_step = self.victims;
        c.backfill_lookahead = self.lookahead;
        c.chunked_prefill = self.chunked;
        c.engine.block_size = self.block_size;
        c.engine.total_blocks = self.total_blocks;
        c.engine.max_model_len = self.max_model_len;
        c.engine.watermark = f64::from(self.watermark_pct) / 100.0;
        c.fairness.enabled = self.fair;
        let t = &self.tenancy;
        c.fairness.default_weight = t.default_weight;
        c.fairness.tenants = (1..=3u8)
            .map(|k| TenantWeight {
                id: u64::from(k),
                weight: t.weight(k),
            })
            .collect();
        c.fairness.prompt_token_weight = t.prompt_weight;
        c.fairness.output_token_weight = t.output_weight;
        c
    }
}

/// One operation of a client, the engine or the operator.
#[derive(Clone, Debug)]
enum Op {
    /// `class` 3 is unknown (three classes). The request's tenant is `tenant` modulo the
    /// case's tenants.
    Submit {
        id: u64,
        class: u8,
        prompt: u32,
        max_new: u32,
        tenant: u8,
    },
    /// `n` valid submits of one class in a row (ids from `first` up, in the pool): fills
    /// small rings and queues between two steps.
    Burst {
        first: u64,
        class: u8,
        n: u8,
    },
    Cancel {
        id: u64,
    },
    Reprio {
        id: u64,
        class: u8,
    },
    /// Advance the clock, then step with these budgets; the engine keeps `hold_back` of its
    /// free blocks for itself.
    Step {
        advance_ms: u64,
        seqs: u32,
        tokens: u32,
        hold_back: u32,
    },
    Advance {
        ms: u64,
    },
    /// The engine finishes the `pick`-th running request (Stop, Length or Error).
    Finish {
        pick: usize,
        reason: u8,
    },
    /// An impossible engine callback: must be refused and change nothing.
    BadProgress {
        id: u64,
        kind: u8,
    },
    /// Propose a live reload: `flip` a variant of the tunables the oracle reads (aging
    /// thresholds, max wait, queue timeout, lookahead, chunked prefill, preemption), or go
    /// back to the generated config. Applied by the next step.
    Reload {
        flip: bool,
    },
    /// A step with an impossible budget or time: refused, nothing changed.
    BadStep {
        kind: u8,
        extra: u32,
    },
    Close,
    Drain,
}

/// 1 to 5 tenants (a single one in a third of the cases), with tenant weights spread over
/// up to 10^5.9 at a magnitude from 10^-296 to 10^296 (so within the accepted 10^6, at
/// every scale), and token weights spread over up to 10^3.9 near it (the prompt weight 0
/// in one case in eight); and whether to turn fairness on if there are several tenants
/// (so three in four such cases have it on).
fn tenancy_strategy() -> impl Strategy<Value = (Tenancy, bool)> {
    (
        any::<bool>(),
        prop_oneof![1 => Just(1u8), 2 => 2u8..=5],
        prop::sample::select(vec![-296i32, -3, 0, 5, 296]),
        prop::array::uniform4(0.0f64..5.9),
        (
            prop::sample::select(vec![-6i32, 0, 6]),
            0.0f64..3.9,
            0.0f64..3.9,
            0u8..8,
        ),
    )
        .prop_map(|(fair, tenants, e, x, (d, y, z, zero))| {
            let w = |x: f64| 10f64.powf(f64::from(e) + x);
            let t = |y: f64| 10f64.powf(f64::from(e + d) + y);
            let tenancy = Tenancy {
                tenants,
                listed: [w(x[0]), w(x[1]), w(x[2])],
                default_weight: w(x[3]),
                prompt_weight: if zero == 0 { 0.0 } else { t(y) },
                output_weight: t(z),
            };
            (tenancy, fair && tenants > 1)
        })
}

fn cfg_strategy() -> impl Strategy<Value = Cfg> {
    let aging = prop_oneof![
        1 => Just(None),
        1 => (10u64..80, 5u64..60).prop_map(|(low, extra)| Some((low + extra, low))),
    ];
    (
        aging,
        (10u64..250, 1u64..25, prop::option::of(1u64..200)),
        (
            // The smallest ring the configuration accepts, so full rings are common.
            prop::sample::select(vec![ClassConfig::MIN_RING_CAPACITY, 8, 1024, 1024]),
            prop::sample::select(vec![3usize, 16, 100_000, 100_000]),
        ),
        (any::<bool>(), 1u8..3, 1usize..4),
        prop_oneof![1 => Just(0usize), 1 => 1usize..4],
        (any::<bool>(), any::<bool>()),
        (
            prop::sample::select(vec![1u32, 4, 16, 16]),
            8u32..200,
            64u32..512,
            prop::sample::select(vec![0u32, 0, 5, 20]),
        ),
        tenancy_strategy(),
    )
        .prop_map(
            |(
                aging,
                (wait, bucket_width_ms, queue_timeout_extra_ms),
                (ring_capacity, queue_capacity),
                (preempt, gap, victims),
                lookahead,
                (chunked, fair),
                (block_size, total_blocks, max_model_len, watermark_pct),
                (tenancy, fair_tenants),
            )| {
                // max_wait must exceed every aging threshold.
                let max_wait_ms = match aging {
                    Some((medium, _)) => medium + wait,
                    None => wait,
                };
                Cfg {
                    aging,
                    max_wait_ms,
                    bucket_width_ms,
                    queue_timeout_extra_ms,
                    ring_capacity,
                    queue_capacity,
                    preempt,
                    gap,
                    victims,
                    lookahead,
                    chunked,
                    block_size,
                    total_blocks,
                    max_model_len,
                    watermark_pct,
                    fair: fair || fair_tenants,
                    tenancy,
                }
            },
        )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let id = 0u64..40;
    let prompt = prop_oneof![
        12 => 1u32..200,
        1 => Just(0u32),
        1 => 200u32..2000,
        1 => Just(u32::MAX),
    ];
    let max_new = prop_oneof![12 => 1u32..24, 1 => Just(0u32), 1 => Just(u32::MAX)];
    prop_oneof![
        60 => (id.clone(), prop_oneof![10 => 0u8..3, 1 => 3u8..=255], prompt, max_new, 0u8..5)
            .prop_map(|(id, class, prompt, max_new, tenant)| Op::Submit {
                id,
                class,
                prompt,
                max_new,
                tenant
            }),
        6 => (id.clone(), 0u8..3, 2u8..6).prop_map(|(first, class, n)| Op::Burst { first, class, n }),
        15 => id.clone().prop_map(|id| Op::Cancel { id }),
        15 => (id.clone(), prop_oneof![10 => 0u8..3, 1 => 3u8..=255])
            .prop_map(|(id, class)| Op::Reprio { id, class }),
        50 => (
            prop_oneof![3 => 0u64..20, 1 => 20u64..400],
            prop_oneof![1 => 0u32..3, 3 => 1u32..10, 1 => Just(1000u32)],
            prop_oneof![1 => 0u32..4, 3 => 1u32..700, 1 => Just(1u32 << 20)],
            prop_oneof![3 => Just(0u32), 1 => 0u32..50],
        )
            .prop_map(|(advance_ms, seqs, tokens, hold_back)| Op::Step {
                advance_ms,
                seqs,
                tokens,
                hold_back
            }),
        15 => prop_oneof![3 => 0u64..30, 1 => 30u64..500].prop_map(|ms| Op::Advance { ms }),
        15 => (0usize..8, 0u8..3).prop_map(|(pick, reason)| Op::Finish { pick, reason }),
        8 => (id.clone(), 0u8..4).prop_map(|(id, kind)| Op::BadProgress { id, kind }),
        4 => (0u8..2, any::<u32>()).prop_map(|(kind, extra)| Op::BadStep { kind, extra }),
        1 => Just(Op::Close),
        1 => Just(Op::Drain),
        3 => any::<bool>().prop_map(|flip| Op::Reload { flip }),
    ]
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

type R = Result<(), String>;

/// A waiting request's place in the queue order: `(0, 0, arrival, id)` if overdue, else
/// `(1, effective class, arrival, id)`.
type Key = (u8, u8, Timestamp, u64);

/// The engine's copy of a running request.
#[derive(Clone, Debug)]
struct Run {
    kv: u32,
    target: u32,
    blocks: u32,
    run_class: Class,
    start_seq: u64,
}

#[derive(Clone, Debug)]
struct Req {
    serial: usize,
    class: Class,
    /// Its tenant ([`Tenancy`]).
    tenant: u8,
    /// The ring it was pushed into (its class at submit), while in the ring.
    in_ring: Option<usize>,
    arrival: Timestamp,
    prompt: u32,
    max_new: u32,
    generated: u32,
    run: Option<Run>,
    cancel: Option<CancelOutcome>,
    preempted: bool,
    first_token: Option<Timestamp>,
    last_event: Timestamp,
}

impl Req {
    fn waiting(&self) -> bool {
        self.run.is_none()
    }
}

/// The reference model plus the real scheduler it is checked against.
struct World {
    cfg: SchedulerConfig,
    /// The generated config, to reload back to.
    base: SchedulerConfig,
    /// A proposed reload the next step applies.
    pending: Option<SchedulerConfig>,
    sched: Scheduler,
    api: Submitter,
    clock: ManualClock,
    held: HashMap<u64, Req>,
    /// Terminal outcome of each accepted submit, by serial.
    outcomes: Vec<Option<Outcome>>,
    expect: Conservation,
    published: [usize; 3],
    ring_len: [usize; 3],
    closed: bool,
    last_step: Timestamp,
    next_start: u64,
    steps: u64,
    tenancy: Tenancy,
    /// Pairs of tenants the fair choice was checked on.
    fair_checks: u64,
}

/// Another valid config with the same classes, engine and capacities: lookahead, chunked
/// prefill and preemption toggled, aging thresholds, max wait and queue timeout moved.
fn variant(c: &SchedulerConfig) -> SchedulerConfig {
    let mut v = c.clone();
    v.backfill_lookahead = (c.backfill_lookahead + 1) % 3;
    v.chunked_prefill = !c.chunked_prefill;
    v.preemption.enabled = !c.preemption.enabled;
    v.preemption.max_victims_per_step = c.preemption.max_victims_per_step.max(1);
    for class in &mut v.classes {
        class.promote_after_ms = class.promote_after_ms.map(|t| t + 3);
    }
    v.max_wait_ms = c.max_wait_ms + 7;
    v.queue_timeout_ms = c.queue_timeout_ms.map(|t| t + 7);
    v.fairness.enabled = !c.fairness.enabled;
    v
}

fn blocks_for(cfg: &SchedulerConfig, tokens: u64) -> u32 {
    u32::try_from(cfg.engine.blocks_for(tokens)).unwrap()
}

impl World {
    fn new(cfg: &Cfg) -> Self {
        let config = cfg.config();
        config.validate().expect("generated config is valid");
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(config.clone(), clock.clone()).unwrap();
        Self {
            base: config.clone(),
            pending: None,
            cfg: config,
            sched,
            api,
            clock,
            held: HashMap::new(),
            outcomes: Vec::new(),
            expect: Conservation::default(),
            published: [0; 3],
            ring_len: [0; 3],
            closed: false,
            last_step: Timestamp::ZERO,
            next_start: 0,
            steps: 0,
            tenancy: cfg.tenancy.clone(),
            fair_checks: 0,
        }
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn held_blocks(&self) -> u32 {
        self.held
            .values()
            .filter_map(|r| r.run.as_ref().map(|r| r.blocks))
            .sum()
    }

    fn running_ids(&self) -> Vec<u64> {
        let mut v: Vec<(u64, u64)> = self
            .held
            .iter()
            .filter_map(|(&id, r)| r.run.as_ref().map(|x| (x.start_seq, id)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// The effective class of a waiting request at `now`: the ladder of DESIGN §3.3, by the
    /// end of its arrival bucket.
    fn eff(&self, base: Class, arrival: Timestamp, now: Timestamp) -> Class {
        let width = self.cfg.bucket_width_ms * 1_000_000;
        let end = (arrival.0 / width + 1) * width;
        let mut c = base.index();
        while c > 0 {
            match self.cfg.classes[c].promote_after_ms {
                Some(t) if now.0 >= end + t * 1_000_000 => c -= 1,
                _ => break,
            }
        }
        Class::from_index(c as u8)
    }

    fn end(&mut self, id: u64, outcome: Outcome) -> R {
        let r = self.held.remove(&id).expect("held");
        check!(
            self.outcomes[r.serial].is_none(),
            "req#{id} ended twice: {:?} then {outcome:?}",
            self.outcomes[r.serial]
        );
        self.outcomes[r.serial] = Some(outcome);
        match outcome {
            Outcome::Finished => self.expect.finished += 1,
            Outcome::Cancelled => self.expect.cancelled += 1,
            Outcome::TimedOut => self.expect.timed_out += 1,
            Outcome::Evicted => self.expect.evicted += 1,
            Outcome::Refused | Outcome::Shed => unreachable!(),
        }
        Ok(())
    }

    /// Every check that holds between any two operations.
    fn verify(&self) -> R {
        let c = self.sched.conservation();
        check!(c.is_balanced(), "unbalanced: {c}");
        self.sched.check_invariants()?;
        let mut e = self.expect;
        e.in_ingress = self.held.values().filter(|r| r.in_ring.is_some()).count() as u64;
        e.waiting = self
            .held
            .values()
            .filter(|r| r.waiting() && r.in_ring.is_none())
            .count() as u64;
        e.running = self.held.values().filter(|r| r.run.is_some()).count() as u64;
        check!(c == e, "counters\n  got      {c}\n  expected {e}");
        check!(self.sched.waiting() as u64 == e.waiting, "waiting()");
        check!(self.sched.running() as u64 == e.running, "running()");
        check!(
            self.held_blocks() <= self.cfg.engine.total_blocks,
            "engine holds {} blocks of {}",
            self.held_blocks(),
            self.cfg.engine.total_blocks
        );
        for (&id, r) in &self.held {
            check!(
                self.sched.first_token_at(RequestId(id)) == r.first_token,
                "first token of req#{id}"
            );
        }
        // Tenants: with fairness on, exactly those with a request drained and not ended are
        // held, each with a counter in every class; with it off, none.
        let on = self.cfg.fairness.enabled;
        let held: HashSet<u8> = self
            .held
            .values()
            .filter(|r| r.in_ring.is_none())
            .map(|r| r.tenant)
            .collect();
        check!(
            self.sched.tenants_held() == if on { held.len() } else { 0 },
            "{} tenants held, model {held:?} (fairness {on})",
            self.sched.tenants_held()
        );
        for k in 0..5 {
            for c in 0..3 {
                let service = self
                    .sched
                    .tenant_service(Tenancy::id(k), Class::from_index(c));
                check!(
                    service.is_some() == (on && held.contains(&k))
                        && service.is_none_or(|s| s.is_finite() && s >= 0.0),
                    "tenant {k} class {c}: service {service:?}, held {held:?} (fairness {on})"
                );
            }
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> R {
        match *op {
            Op::Submit {
                id,
                class,
                prompt,
                max_new,
                tenant,
            } => self.submit(id, class, prompt, max_new, tenant % self.tenancy.tenants),
            Op::Burst { first, class, n } => {
                for id in (first..first + u64::from(n)).map(|id| id % 40) {
                    self.submit(id, class, 8, 2, 0)?;
                    self.verify()?;
                }
                Ok(())
            }
            Op::Cancel { id } => self.cancel(id),
            Op::Reprio { id, class } => self.reprio(id, class),
            Op::Step {
                advance_ms,
                seqs,
                tokens,
                hold_back,
            } => {
                self.clock.advance(Duration::from_millis(advance_ms));
                let free =
                    (self.cfg.engine.total_blocks - self.held_blocks()).saturating_sub(hold_back);
                self.step(Budget {
                    max_num_seqs: seqs,
                    max_batched_tokens: tokens,
                    free_blocks: free,
                })
            }
            Op::Advance { ms } => {
                self.clock.advance(Duration::from_millis(ms));
                Ok(())
            }
            Op::Finish { pick, reason } => self.finish(pick, reason),
            Op::BadProgress { id, kind } => self.bad_progress(id, kind),
            Op::BadStep { kind, extra } => self.bad_step(kind, extra),
            Op::Close => {
                self.api.close();
                self.closed = true;
                check!(self.api.is_closed(), "closed");
                Ok(())
            }
            Op::Drain => self.drain(),
            Op::Reload { flip } => {
                let new = if flip {
                    variant(&self.cfg)
                } else {
                    self.base.clone()
                };
                self.sched
                    .reload(new.clone())
                    .map_err(|e| format!("valid reload refused: {e}"))?;
                self.pending = Some(new);
                Ok(())
            }
        }?;
        self.verify()
    }

    fn submit(&mut self, id: u64, class: u8, prompt: u32, max_new: u32, tenant: u8) -> R {
        let mut spec = RequestSpec::new(id, Class::from_index(class), prompt, max_new);
        if let Some(t) = Tenancy::id(tenant) {
            spec = spec.with_tenant(t);
        }
        let before = self.sched.conservation();
        let got = self.api.submit(spec);
        self.expect.submitted += 1;
        let e = &self.cfg.engine;
        let tokens = u64::from(prompt) + u64::from(max_new);
        let max_blocks = e.total_blocks - e.watermark_blocks();
        let rid = RequestId(id);
        let c = usize::from(class);
        let name = |c: usize| self.cfg.classes[c].name.clone();
        let want: Result<(), SubmitError> = if c >= 3 {
            Err(SubmitError::Class(ClassError::UnknownIndex {
                index: class,
                classes: 3,
            }))
        } else if prompt == 0 {
            Err(SubmitError::ZeroPromptTokens(rid))
        } else if max_new == 0 {
            Err(SubmitError::ZeroMaxNewTokens(rid))
        } else if tokens > u64::from(e.max_model_len) {
            Err(SubmitError::ExceedsContext {
                id: rid,
                tokens,
                max_model_len: e.max_model_len,
            })
        } else if e.blocks_for(tokens) > u64::from(max_blocks) {
            Err(SubmitError::NeverFits {
                id: rid,
                blocks_needed: e.blocks_for(tokens),
                blocks_available: max_blocks,
            })
        } else if self.closed {
            Err(SubmitError::Closed)
        } else if self.published[c] >= self.cfg.classes[c].queue_capacity {
            Err(SubmitError::QueueFull {
                class: name(c),
                capacity: self.cfg.classes[c].queue_capacity,
            })
        } else if self.held.contains_key(&id) {
            Err(SubmitError::DuplicateId(rid))
        } else if self.ring_len[c] >= self.cfg.classes[c].ring_capacity {
            stats::add(16, 1);
            Err(SubmitError::QueueFull {
                class: name(c),
                capacity: self.cfg.classes[c].ring_capacity,
            })
        } else {
            Ok(())
        };
        match (&want, &got) {
            (Ok(()), Ok(arrival)) => {
                check!(*arrival == self.now(), "arrival stamp {arrival}");
                self.ring_len[c] += 1;
                self.outcomes.push(None);
                self.held.insert(
                    id,
                    Req {
                        serial: self.outcomes.len() - 1,
                        class: spec.class,
                        tenant,
                        in_ring: Some(c),
                        arrival: *arrival,
                        prompt,
                        max_new,
                        generated: 0,
                        run: None,
                        cancel: None,
                        preempted: false,
                        first_token: None,
                        last_event: *arrival,
                    },
                );
            }
            (Err(w), Err(g)) => {
                check!(w == g, "submit {spec:?}: expected {w:?}, got {g:?}");
                self.expect.refused += 1;
                stats::add(13, 1);
                let after = self.sched.conservation();
                check!(
                    after.submitted == before.submitted + 1
                        && after.refused == before.refused + 1
                        && Conservation {
                            submitted: before.submitted,
                            refused: before.refused,
                            ..after
                        } == before,
                    "a refused submit changed more than its count: {before} -> {after}"
                );
            }
            _ => return Err(format!("submit {spec:?}: expected {want:?}, got {got:?}")),
        }
        Ok(())
    }

    fn cancel(&mut self, id: u64) -> R {
        let before = self.sched.conservation();
        let got = self.api.cancel(RequestId(id));
        let want = match self.held.get(&id) {
            None => Err(ControlError::NotFound(RequestId(id))),
            Some(r) if r.cancel.is_some() => Err(ControlError::AlreadyCancelled(RequestId(id))),
            Some(r) if r.run.is_some() => Ok(CancelOutcome::WasRunning),
            Some(_) => Ok(CancelOutcome::WasWaiting),
        };
        check!(
            got == want,
            "cancel req#{id}: expected {want:?}, got {got:?}"
        );
        if let Ok(o) = got {
            self.held.get_mut(&id).unwrap().cancel = Some(o);
        }
        check!(
            self.sched.conservation() == before,
            "cancel changed the counters"
        );
        Ok(())
    }

    fn reprio(&mut self, id: u64, class: u8) -> R {
        let before = self.sched.conservation();
        let got = self
            .api
            .reprioritize(RequestId(id), Class::from_index(class));
        let want = if class >= 3 {
            Err(ControlError::Class(ClassError::UnknownIndex {
                index: class,
                classes: 3,
            }))
        } else {
            match self.held.get(&id) {
                None => Err(ControlError::NotFound(RequestId(id))),
                Some(r) if r.cancel.is_some() => Err(ControlError::AlreadyCancelled(RequestId(id))),
                Some(_) => Ok(()),
            }
        };
        check!(
            got == want,
            "reprioritize req#{id}: expected {want:?}, got {got:?}"
        );
        if got.is_ok() {
            let r = self.held.get_mut(&id).unwrap();
            r.class = Class::from_index(class);
            if let Some(run) = &mut r.run {
                run.run_class = r.class;
            }
        }
        check!(
            self.sched.conservation() == before,
            "reprioritize changed the counters"
        );
        Ok(())
    }

    fn finish(&mut self, pick: usize, reason: u8) -> R {
        let running = self.running_ids();
        if running.is_empty() {
            return Ok(());
        }
        let id = running[pick % running.len()];
        let reason = [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::Error,
        ][reason as usize % 3];
        let got = self.sched.on_finished(RequestId(id), self.now(), reason);
        let want = if self.held[&id].cancel.is_some() {
            Outcome::Cancelled
        } else {
            Outcome::Finished
        };
        check!(
            got == Ok(want),
            "finish req#{id}: expected {want:?}, got {got:?}"
        );
        self.end(id, want)
    }

    fn unchanged<T: std::fmt::Debug>(
        &self,
        what: &str,
        before: (Conservation, usize, usize),
        got: T,
    ) -> R {
        let after = (
            self.sched.conservation(),
            self.sched.waiting(),
            self.sched.running(),
        );
        check!(
            after == before,
            "{what} -> {got:?} changed state: {before:?} -> {after:?}"
        );
        Ok(())
    }

    fn snapshot(&self) -> (Conservation, usize, usize) {
        (
            self.sched.conservation(),
            self.sched.waiting(),
            self.sched.running(),
        )
    }

    fn bad_progress(&mut self, id: u64, kind: u8) -> R {
        let before = self.snapshot();
        let now = self.now();
        let rid = RequestId(id);
        let running = self.held.get(&id).and_then(|r| r.run.clone());
        let Some(run) = running else {
            let got = self.sched.on_progress(rid, now, 1, u32::from(kind % 2));
            check!(
                got == Err(ProgressError::NotRunning(rid)),
                "progress of idle req#{id}: {got:?}"
            );
            let got = self.sched.on_finished(rid, now, FinishReason::Stop);
            check!(
                got == Err(ProgressError::NotRunning(rid)),
                "finish of idle req#{id}: {got:?}"
            );
            return self.unchanged("callbacks on a request that is not running", before, ());
        };
        let r = &self.held[&id];
        let held_max = r.prompt + r.generated;
        match kind {
            0 => {
                let computed = held_max - run.kv + 1;
                let got = self.sched.on_progress(rid, now, computed, 0);
                check!(
                    got == Err(ProgressError::PrefillOverrun {
                        id: rid,
                        reported: computed,
                        remaining: held_max - run.kv
                    }),
                    "prefill overrun of req#{id}: {got:?}"
                );
            }
            1 if run.kv < run.target && r.generated < r.max_new => {
                let got = self.sched.on_progress(rid, now, 0, 1);
                check!(
                    got == Err(ProgressError::OutputOverrun {
                        id: rid,
                        generated: u64::from(r.generated) + 1,
                        max_new_tokens: r.max_new
                    }),
                    "output before prefill of req#{id}: {got:?}"
                );
            }
            2 => {
                let extra = r.max_new - r.generated + 1;
                let got = self.sched.on_progress(rid, now, 0, extra);
                check!(
                    got == Err(ProgressError::OutputOverrun {
                        id: rid,
                        generated: u64::from(r.generated) + u64::from(extra),
                        max_new_tokens: r.max_new
                    }),
                    "output past max_new_tokens of req#{id}: {got:?}"
                );
            }
            3 if r.last_event.0 > 0 => {
                let got = self
                    .sched
                    .on_progress(rid, Timestamp(r.last_event.0 - 1), 0, 0);
                check!(
                    got == Err(ProgressError::TimeWentBackwards(rid)),
                    "progress back in time of req#{id}: {got:?}"
                );
                let got =
                    self.sched
                        .on_finished(rid, Timestamp(r.last_event.0 - 1), FinishReason::Stop);
                check!(
                    got == Err(ProgressError::TimeWentBackwards(rid)),
                    "finish back in time of req#{id}: {got:?}"
                );
            }
            _ => {}
        }
        self.unchanged("bad progress", before, kind)
    }

    fn bad_step(&mut self, kind: u8, extra: u32) -> R {
        let before = self.snapshot();
        let total = self.cfg.engine.total_blocks;
        if kind == 0 {
            let free = total.saturating_add(1 + extra % 1000);
            let b = Budget {
                max_num_seqs: 8,
                max_batched_tokens: 512,
                free_blocks: free,
            };
            let got = self.sched.step(self.now(), &b);
            check!(
                got == Err(BudgetError::FreeBlocksExceedTotal { free, total }),
                "oversized budget: {got:?}"
            );
            self.unchanged("oversized budget", before, ())
        } else if self.last_step.0 > 0 {
            let back = Timestamp(self.last_step.0 - 1 - u64::from(extra) % self.last_step.0);
            let b = Budget {
                max_num_seqs: 8,
                max_batched_tokens: 512,
                free_blocks: 0,
            };
            let got = self.sched.step(back, &b);
            check!(
                got == Err(BudgetError::TimeWentBackwards {
                    now: back.0,
                    previous: self.last_step.0
                }),
                "step back in time: {got:?}"
            );
            self.unchanged("step back in time", before, ())
        } else {
            Ok(())
        }
    }

    fn drain(&mut self) -> R {
        let now = self.now();
        let handed = self.sched.drain_waiting(now);
        self.closed = true;
        self.published = [0; 3];
        self.ring_len = [0; 3];
        // Cancelled waiting requests end as cancelled; the rest are handed off.
        let mut expected: Vec<(Class, Timestamp, u64)> = Vec::new();
        let ids: Vec<u64> = self.held.keys().copied().collect();
        for id in ids {
            let r = &self.held[&id];
            if !r.waiting() {
                continue;
            }
            if r.cancel.is_some() {
                self.end(id, Outcome::Cancelled)?;
            } else {
                expected.push((self.eff(r.class, r.arrival, now), r.arrival, id));
            }
        }
        expected.sort();
        let got: Vec<u64> = handed.iter().map(|h| h.spec.id.0).collect();
        let want: Vec<u64> = expected.iter().map(|e| e.2).collect();
        check!(
            got == want,
            "hand-off order (most urgent effective class, then oldest): got {got:?}, expected {want:?}"
        );
        for h in &handed {
            let id = h.spec.id.0;
            let r = &self.held[&id];
            check!(
                h.spec.class == r.class
                    && h.spec.prompt_tokens == r.prompt
                    && h.spec.max_new_tokens == r.max_new
                    && h.arrival == r.arrival
                    && h.generated_tokens == r.generated,
                "hand-off of req#{id}: {h:?} vs model {r:?}"
            );
            stats::add(12, 1);
            self.end(id, Outcome::Evicted)?;
        }
        let got = self.api.submit(RequestSpec::new(999, Class::HIGH, 1, 1));
        self.expect.submitted += 1;
        self.expect.refused += 1;
        check!(
            got == Err(SubmitError::Closed),
            "submit after hand-off: {got:?}"
        );
        Ok(())
    }

    fn step(&mut self, b: Budget) -> R {
        let now = self.now();
        // A pending reload takes effect in this step, before expiry and admission.
        let reloading = self.pending.is_some();
        if let Some(c) = self.pending.take() {
            self.cfg = c;
        }
        let cfg = self.cfg.clone();
        let eng = &cfg.engine;
        let watermark = eng.watermark_blocks();
        let max_wait = Duration::from_millis(cfg.max_wait_ms);

        // What ingest and expiry must do.
        let mut want_cancelled = HashSet::new();
        let mut want_aborted = HashSet::new();
        let mut want_timed_out = HashSet::new();
        let mut drained = 0u32;
        for (&id, r) in &self.held {
            if r.in_ring.is_some() {
                drained += 1;
            }
            match r.cancel {
                Some(_) if r.waiting() => {
                    want_cancelled.insert(id);
                }
                Some(_) => {
                    want_aborted.insert(id);
                }
                None => {
                    // A preempted request has been served already: the timeout spares it.
                    if let (true, false, Some(t)) = (r.waiting(), r.preempted, cfg.queue_timeout_ms)
                    {
                        if now.saturating_since(r.arrival) >= Duration::from_millis(t) {
                            want_timed_out.insert(id);
                        }
                    }
                }
            }
        }
        // The queue order at admission time (DESIGN §3.2–3.4): overdue first, oldest first;
        // then by effective class, FIFO by (arrival, id).
        let mut order: Vec<(Key, u64)> = self
            .held
            .iter()
            .filter(|(id, r)| r.waiting() && r.cancel.is_none() && !want_timed_out.contains(*id))
            .map(|(&id, r)| {
                let overdue = now.saturating_since(r.arrival) >= max_wait;
                let key = if overdue {
                    (0, 0, r.arrival, id)
                } else {
                    (
                        1,
                        self.eff(r.class, r.arrival, now).index() as u8,
                        r.arrival,
                        id,
                    )
                };
                (key, id)
            })
            .collect();
        order.sort();
        // Running at plan time, their work if every one of them gets it, and its growth.
        let plan_running: Vec<u64> = self
            .running_ids()
            .into_iter()
            .filter(|id| !want_aborted.contains(id))
            .collect();
        let (mut run_tokens, mut run_growth) = (0u64, 0u64);
        for id in &plan_running {
            let run = self.held[id].run.as_ref().unwrap();
            let work = if run.kv < run.target {
                run.target - run.kv
            } else {
                1
            };
            run_tokens += u64::from(work);
            run_growth += u64::from(
                blocks_for(&cfg, u64::from(run.kv) + u64::from(work)).saturating_sub(run.blocks),
            );
        }

        let d = self
            .sched
            .step(now, &b)
            .map_err(|e| format!("valid budget {b:?} refused: {e}"))?;
        check!(
            d.reload.as_ref().map(|r| r.is_ok()) == reloading.then_some(true),
            "reload outcome {:?}, expected {}",
            d.reload,
            if reloading { "applied" } else { "none" }
        );
        check!(
            self.sched.config() == &self.cfg,
            "config in force differs from the model's"
        );
        self.steps += 1;
        self.last_step = now;
        stats::add(0, 1);
        stats::add(1, d.admitted.len() as u64);
        stats::add(2, d.admitted.iter().filter(|a| a.resumed).count() as u64);
        stats::add(3, d.admitted.iter().filter(|a| a.overdue).count() as u64);
        stats::add(
            4,
            d.admitted
                .iter()
                .filter(|a| a.effective_class != a.class)
                .count() as u64,
        );
        stats::add(9, d.rejected.len() as u64);
        stats::add(10, d.cancelled.len() as u64);
        stats::add(11, d.aborted.len() as u64);

        // Ingest and expiry.
        let set = |v: &[RequestId]| -> HashSet<u64> { v.iter().map(|i| i.0).collect() };
        check!(
            set(&d.cancelled) == want_cancelled && d.cancelled.len() == want_cancelled.len(),
            "cancelled {:?}, expected {want_cancelled:?}",
            d.cancelled
        );
        check!(
            set(&d.aborted) == want_aborted && d.aborted.len() == want_aborted.len(),
            "aborted {:?}, expected {want_aborted:?}",
            d.aborted
        );
        let timed: HashSet<u64> = d.rejected.iter().map(|r| r.id.0).collect();
        check!(
            timed == want_timed_out && d.rejected.len() == want_timed_out.len(),
            "timed out {:?}, expected {want_timed_out:?}",
            d.rejected
        );
        for rj in &d.rejected {
            let r = &self.held[&rj.id.0];
            check!(
                rj.class == r.class
                    && rj.reason
                        == (RejectReason::TimedOut {
                            waited: now.saturating_since(r.arrival)
                        }),
                "rejection {rj:?}"
            );
        }
        check!(
            d.summary.drained == drained,
            "drained {} of {drained}",
            d.summary.drained
        );

        // Admissions: who, with what, in which order.
        let admitted: Vec<u64> = d.admitted.iter().map(|a| a.id.0).collect();
        let admitted_set: HashSet<u64> = admitted.iter().copied().collect();
        check!(
            admitted_set.len() == admitted.len(),
            "admitted twice in one step: {admitted:?}"
        );
        for a in &d.admitted {
            let id = a.id.0;
            let Some(r) = self.held.get(&id) else {
                return Err(format!("admitted unknown req#{id}"));
            };
            check!(
                r.waiting(),
                "req#{id} admitted while running (started twice)"
            );
            check!(
                r.cancel.is_none() && !want_timed_out.contains(&id),
                "req#{id} admitted though cancelled or timed out"
            );
            let target = r.prompt + r.generated;
            let waited = now.saturating_since(r.arrival);
            let want = Admitted {
                id: a.id,
                class: r.class,
                effective_class: if waited >= max_wait {
                    a.effective_class
                } else {
                    self.eff(r.class, r.arrival, now)
                },
                prefill_tokens: a.prefill_tokens,
                prefill_target: target,
                blocks: blocks_for(&cfg, u64::from(target)),
                waited,
                overdue: waited >= max_wait,
                resumed: r.preempted,
                relegated: false,
            };
            check!(*a == want, "admission {a:?}, expected {want:?}");
            check!(
                a.effective_class == self.eff(r.class, r.arrival, now),
                "admission {a:?}: effective class should be {:?}",
                self.eff(r.class, r.arrival, now)
            );
            check!(
                a.prefill_tokens >= 1
                    && a.prefill_tokens <= target
                    && (cfg.chunked_prefill || a.prefill_tokens == target),
                "prefill chunk {a:?}"
            );
        }
        // With fairness on and several tenants waiting, the order inside a class depends on
        // the counters: the model checks what the contract fixes (`check_fair_order`).
        let waiting_tenants: HashSet<u8> =
            order.iter().map(|&(_, id)| self.held[&id].tenant).collect();
        let exact = !cfg.fairness.enabled || waiting_tenants.len() <= 1;
        stats::add(14, u64::from(!exact));
        if exact {
            self.check_exact_order(
                &cfg,
                &b,
                &order,
                &admitted,
                &plan_running,
                run_tokens,
                run_growth,
            )?;
        } else {
            self.check_fair_order(
                &cfg,
                &b,
                &order,
                &admitted,
                &plan_running,
                run_tokens,
                run_growth,
            )?;
        }
        // What the fair choice is checked against once the step's tokens are reported.
        let fair_check = (cfg.fairness.enabled && cfg.backfill_lookahead == 0).then(|| {
            let admissions: Vec<(u8, Class, bool, bool, u32)> = d
                .admitted
                .iter()
                .map(|a| {
                    let r = &self.held[&a.id.0];
                    (r.tenant, a.effective_class, a.overdue, a.resumed, r.prompt)
                })
                .collect();
            let preempted: HashSet<u8> = d
                .preempted
                .iter()
                .map(|p| self.held[&p.id.0].tenant)
                .collect();
            (admissions, preempted)
        });

        // Preemptions.
        let preempted: HashSet<u64> = d.preempted.iter().map(|p| p.id.0).collect();
        check!(
            preempted.len() == d.preempted.len(),
            "preempted twice: {:?}",
            d.preempted
        );
        let rank = |id: u64| {
            let run = self.held[&id].run.as_ref().unwrap();
            (run.run_class, run.start_seq)
        };
        let mut for_waiting = 0;
        for p in &d.preempted {
            let id = p.id.0;
            check!(
                plan_running.contains(&id),
                "preempted req#{id} was not running (or was aborted): {p:?}"
            );
            let run = self.held[&id].run.as_ref().unwrap();
            check!(p.class == run.run_class, "victim class {p:?} vs {run:?}");
            check!(
                p.freed_blocks >= run.blocks,
                "victim frees {p:?} vs {run:?}"
            );
            let eligible = match p.reason {
                PreemptReason::ForWaiting { by, by_class, .. } => {
                    for_waiting += 1;
                    stats::add(7, 1);
                    check!(cfg.preemption.enabled, "preemption is off: {p:?}");
                    let Some(a) = d.admitted.iter().find(|a| a.id == by) else {
                        return Err(format!("{p:?} made room for a request not admitted"));
                    };
                    check!(a.effective_class == by_class, "{p:?} vs {a:?}");
                    let min = by_class.index() + usize::from(cfg.preemption.min_class_gap);
                    check!(p.class.index() >= min, "class gap not kept: {p:?}");
                    Some(min)
                }
                PreemptReason::OverBudget { short } => {
                    check!(
                        short == Short::Seqs && plan_running.len() > b.max_num_seqs as usize,
                        "{p:?} with {} running and max_num_seqs {}",
                        plan_running.len(),
                        b.max_num_seqs
                    );
                    None
                }
                PreemptReason::KvExhausted { needed_by } => {
                    stats::add(8, 1);
                    check!(
                        plan_running.contains(&needed_by.0),
                        "{p:?}: needed by a request that was not running"
                    );
                    None
                }
            };
            for &other in &plan_running {
                if preempted.contains(&other) {
                    continue;
                }
                let o = rank(other);
                if eligible.is_none_or(|m| o.0.index() >= m) {
                    check!(
                        o < rank(id),
                        "victim req#{id} {:?} chosen over req#{other} {o:?} (lowest class, newest first)",
                        rank(id)
                    );
                }
            }
        }
        check!(
            for_waiting <= cfg.preemption.max_victims_per_step,
            "{for_waiting} victims > max_victims_per_step"
        );

        // Running work.
        let mut scheduled_ids = HashSet::new();
        let mut last_seq = None;
        let mut growth = 0u32;
        for s in &d.scheduled {
            let id = s.id.0;
            check!(scheduled_ids.insert(id), "scheduled twice: {s:?}");
            check!(
                plan_running.contains(&id) && !preempted.contains(&id),
                "scheduled req#{id} is not running"
            );
            let run = self.held[&id].run.as_ref().unwrap();
            check!(
                last_seq < Some(run.start_seq),
                "scheduled work is not oldest run first"
            );
            last_seq = Some(run.start_seq);
            if run.kv < run.target {
                check!(
                    s.tokens >= 1 && s.tokens <= run.target - run.kv,
                    "prefill chunk {s:?} of {run:?}"
                );
            } else {
                check!(s.tokens == 1, "decode of more than one token: {s:?}");
            }
            growth += blocks_for(&cfg, u64::from(run.kv + s.tokens)).saturating_sub(run.blocks);
        }

        // Budgets.
        check!(
            d.total_tokens() <= b.max_batched_tokens,
            "{} tokens > budget {}",
            d.total_tokens(),
            b.max_batched_tokens
        );
        check!(d.summary.tokens == d.total_tokens(), "summary tokens");
        let running_after = plan_running.len() - preempted.len() + admitted.len();
        check!(
            running_after <= b.max_num_seqs as usize,
            "{running_after} running > max_num_seqs {}",
            b.max_num_seqs
        );
        let reserved: u32 = d.admitted.iter().map(|a| a.blocks).sum::<u32>() + growth;
        let freed: u32 = d.preempted.iter().map(|p| p.freed_blocks).sum();
        check!(
            reserved <= b.free_blocks + freed,
            "reserved {reserved} blocks > free {} + freed {freed}",
            b.free_blocks
        );
        check!(
            d.admitted.is_empty() || b.free_blocks + freed - reserved >= watermark,
            "admissions ate into the watermark: free {} + freed {freed} - reserved {reserved} < {watermark}",
            b.free_blocks
        );

        // Carry out the decision as the engine, and update the model.
        for id in want_cancelled.iter().chain(want_aborted.iter()) {
            self.end(*id, Outcome::Cancelled)?;
        }
        for id in &want_timed_out {
            self.end(*id, Outcome::TimedOut)?;
        }
        for r in self.held.values_mut() {
            r.in_ring = None;
        }
        self.ring_len = [0; 3];
        for p in &d.preempted {
            let r = self.held.get_mut(&p.id.0).unwrap();
            r.run = None;
            r.preempted = true;
        }
        for a in &d.admitted {
            let start_seq = self.next_start;
            self.next_start += 1;
            let r = self.held.get_mut(&a.id.0).unwrap();
            r.run = Some(Run {
                kv: 0,
                target: a.prefill_target,
                blocks: a.blocks,
                run_class: a.effective_class,
                start_seq,
            });
        }
        let work: Vec<(u64, u32)> = d
            .scheduled
            .iter()
            .map(|s| (s.id.0, s.tokens))
            .chain(d.admitted.iter().map(|a| (a.id.0, a.prefill_tokens)))
            .collect();
        let mut outputs: HashMap<(u8, Class), u32> = HashMap::new();
        for (id, tokens) in work {
            let r = self.held.get_mut(&id).unwrap();
            let run = r.run.as_mut().unwrap();
            run.blocks = run.blocks.max(blocks_for(&cfg, u64::from(run.kv + tokens)));
            run.kv += tokens;
            let out = u32::from(run.kv >= run.target);
            let got = self.sched.on_progress(RequestId(id), now, tokens, out);
            check!(
                got.is_ok(),
                "progress of req#{id} ({tokens}, {out}): {got:?}"
            );
            r.generated += out;
            *outputs.entry((r.tenant, run.run_class)).or_default() += out;
            r.last_event = now;
            if out > 0 && r.first_token.is_none() {
                r.first_token = Some(now);
            }
            if r.generated == r.max_new {
                let got = self
                    .sched
                    .on_finished(RequestId(id), now, FinishReason::Length);
                check!(got == Ok(Outcome::Finished), "finish of req#{id}: {got:?}");
                self.end(id, Outcome::Finished)?;
            }
        }
        // Published waiting depth per base class, and waiting per effective class.
        let mut by_base = [0usize; 3];
        let mut by_eff = [0usize; 3];
        for r in self.held.values().filter(|r| r.waiting()) {
            by_base[r.class.index()] += 1;
            by_eff[self.eff(r.class, r.arrival, now).index()] += 1;
        }
        self.published = by_base;
        for c in 0..3 {
            let class = Class::from_index(c as u8);
            check!(
                self.sched.waiting_in(class) == by_eff[c],
                "waiting_in({c}) = {}, model {by_eff:?}",
                self.sched.waiting_in(class)
            );
        }
        check!(
            d.summary.waiting == by_base.iter().sum::<usize>()
                && d.summary.running == running_after,
            "summary {:?}",
            d.summary
        );
        if let Some((admissions, preempted)) = fair_check {
            self.check_fair_choice(&admissions, &preempted, &outputs)?;
        }
        Ok(())
    }

    /// The admissions against the exact queue order (fairness off, or one tenant waiting):
    /// a subsequence of it, at most `lookahead` skipped, never an overdue one; and every
    /// leading request that fits beside all running work starts now, in its place.
    #[allow(clippy::too_many_arguments)]
    fn check_exact_order(
        &self,
        cfg: &SchedulerConfig,
        b: &Budget,
        order: &[(Key, u64)],
        admitted: &[u64],
        plan_running: &[u64],
        run_tokens: u64,
        run_growth: u64,
    ) -> R {
        let watermark = cfg.engine.watermark_blocks();
        // Subsequence of the queue order; at most `lookahead` skipped; never an overdue one.
        let mut pos = 0;
        let mut skipped = 0usize;
        for &id in admitted {
            loop {
                check!(
                    pos < order.len(),
                    "admissions {admitted:?} are out of queue order {:?}",
                    order.iter().map(|o| o.1).collect::<Vec<_>>()
                );
                let (key, oid) = order[pos];
                pos += 1;
                if oid == id {
                    break;
                }
                check!(
                    key.0 != 0,
                    "req#{id} admitted past overdue req#{oid} (queue {:?}, admitted {admitted:?})",
                    order.iter().map(|o| o.1).collect::<Vec<_>>()
                );
                skipped += 1;
                check!(
                    skipped <= cfg.backfill_lookahead,
                    "admissions {admitted:?} skip {skipped} > lookahead {} of queue {:?}",
                    cfg.backfill_lookahead,
                    order.iter().map(|o| o.1).collect::<Vec<_>>()
                );
            }
        }
        stats::add(5, u64::from(skipped > 0));
        // Liveness: the leading requests that fit beside all running work must start now.
        {
            let (mut seqs, mut tokens, mut blocks) = (
                plan_running.len() as u64,
                run_tokens,
                run_growth + u64::from(watermark),
            );
            for (i, &(_, id)) in order.iter().enumerate() {
                let r = &self.held[&id];
                let target = u64::from(r.prompt + r.generated);
                seqs += 1;
                tokens += target;
                blocks += cfg.engine.blocks_for(target);
                if seqs > u64::from(b.max_num_seqs)
                    || tokens > u64::from(b.max_batched_tokens)
                    || blocks > u64::from(b.free_blocks)
                {
                    break;
                }
                stats::add(6, 1);
                check!(
                        admitted.get(i) == Some(&id),
                        "req#{id} fits ({b:?}, running {plan_running:?}, queue {:?}) but was not admitted in place {i}: {admitted:?}",
                        order.iter().map(|o| o.1).collect::<Vec<_>>()
                    );
            }
        }
        Ok(())
    }

    /// The admissions against what the contract fixes when fairness decides between several
    /// waiting tenants: every request that must start before an admitted one (an older
    /// overdue request; a request of a more urgent class; an older request of the same
    /// tenant and class) started earlier in the step or was skipped, never an overdue one,
    /// and at most `lookahead` were skipped. Liveness: the overdue requests that fit start
    /// first, in their exact order, then each class whose waiting requests all fit starts
    /// whole (in some fair order).
    #[allow(clippy::too_many_arguments)]
    fn check_fair_order(
        &self,
        cfg: &SchedulerConfig,
        b: &Budget,
        order: &[(Key, u64)],
        admitted: &[u64],
        plan_running: &[u64],
        run_tokens: u64,
        run_growth: u64,
    ) -> R {
        let tenant = |id: u64| self.held[&id].tenant;
        let precedes = |e: &(Key, u64), r: &(Key, u64)| {
            let (ke, kr) = (e.0, r.0);
            if ke.0 == 0 || kr.0 == 0 {
                return ke < kr;
            }
            ke.1 < kr.1 || (ke.1 == kr.1 && tenant(e.1) == tenant(r.1) && ke < kr)
        };
        let place: HashMap<u64, usize> = admitted
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
        let ids = || order.iter().map(|o| o.1).collect::<Vec<_>>();
        let mut skipped = HashSet::new();
        for (j, &id) in admitted.iter().enumerate() {
            let Some(r) = order.iter().find(|o| o.1 == id) else {
                return Err(format!(
                    "req#{id} admitted but not in the queue {:?}",
                    ids()
                ));
            };
            for e in order.iter().filter(|e| e.1 != id && precedes(e, r)) {
                match place.get(&e.1) {
                    Some(&i) => check!(
                        i < j,
                        "req#{} must start before req#{id} but started after it: {admitted:?} of queue {:?}",
                        e.1,
                        ids()
                    ),
                    None => {
                        check!(
                            e.0 .0 != 0,
                            "req#{id} admitted past overdue req#{} (queue {:?}, admitted {admitted:?})",
                            e.1,
                            ids()
                        );
                        skipped.insert(e.1);
                    }
                }
            }
        }
        check!(
            skipped.len() <= cfg.backfill_lookahead,
            "admissions {admitted:?} skip {skipped:?}, more than lookahead {} of queue {:?}",
            cfg.backfill_lookahead,
            ids()
        );
        stats::add(5, u64::from(!skipped.is_empty()));
        // Liveness.
        let watermark = cfg.engine.watermark_blocks();
        let (mut seqs, mut tokens, mut blocks) = (
            plan_running.len() as u64,
            run_tokens,
            run_growth + u64::from(watermark),
        );
        let mut add = |id: u64| {
            let r = &self.held[&id];
            let target = u64::from(r.prompt + r.generated);
            seqs += 1;
            tokens += target;
            blocks += cfg.engine.blocks_for(target);
            seqs <= u64::from(b.max_num_seqs)
                && tokens <= u64::from(b.max_batched_tokens)
                && blocks <= u64::from(b.free_blocks)
        };
        let mut at = 0;
        while at < order.len() && order[at].0 .0 == 0 {
            let id = order[at].1;
            if !add(id) {
                return Ok(());
            }
            stats::add(6, 1);
            check!(
                admitted.get(at) == Some(&id),
                "overdue req#{id} fits ({b:?}, running {plan_running:?}, queue {:?}) but was not admitted in place {at}: {admitted:?}",
                ids()
            );
            at += 1;
        }
        while at < order.len() {
            let class = order[at].0 .1;
            let group: HashSet<u64> = order[at..]
                .iter()
                .take_while(|o| o.0 .1 == class)
                .map(|o| o.1)
                .collect();
            if !group.iter().all(|&id| add(id)) {
                return Ok(());
            }
            stats::add(6, group.len() as u64);
            let got: HashSet<u64> = admitted
                .iter()
                .skip(at)
                .take(group.len())
                .copied()
                .collect();
            check!(
                got == group,
                "class {class}'s waiting requests {group:?} all fit ({b:?}, running {plan_running:?}) but places {at}.. hold {admitted:?}"
            );
            at += group.len();
        }
        Ok(())
    }

    /// The fair choice, from the counters after a step with no lookahead (so its
    /// admissions were the fair order's first candidates): when a tenant t was picked in a
    /// class (not overdue), its counter was within the heap's resolution δ of the least
    /// of the tenants waiting there. So a tenant u still waiting in the class after the
    /// step, that was waiting there through it (none of its requests preempted and put
    /// back with a lift), trails t by at most what t was charged since its last pick
    /// there: the prompts it started from then on, and the output tokens its requests
    /// in the class reported in this step, over its weight. Checked in every class, for
    /// every such pair, on the counters `Scheduler::tenant_service` reads.
    fn check_fair_choice(
        &mut self,
        admissions: &[(u8, Class, bool, bool, u32)],
        preempted: &HashSet<u8>,
        outputs: &HashMap<(u8, Class), u32>,
    ) -> R {
        let now = self.now();
        let t = &self.tenancy;
        let service = |k: u8, c: Class| self.sched.tenant_service(Tenancy::id(k), c);
        for c in (0..3).map(Class::from_index) {
            let waiting: HashSet<u8> = self
                .held
                .values()
                .filter(|r| r.waiting() && !preempted.contains(&r.tenant))
                .filter(|r| self.eff(r.class, r.arrival, now) == c)
                .map(|r| r.tenant)
                .collect();
            for picked in 0..t.tenants {
                let mine =
                    |&&(k, class, ..): &&(u8, Class, bool, bool, u32)| k == picked && class == c;
                let Some(last) = admissions.iter().rposition(|a| mine(&a) && !a.2) else {
                    continue;
                };
                let prompts: u32 = admissions[last..]
                    .iter()
                    .filter(|a| mine(a) && !a.3)
                    .map(|a| a.4)
                    .sum();
                let out = outputs.get(&(picked, c)).copied().unwrap_or(0);
                let charged = (t.prompt_weight * f64::from(prompts)
                    + t.output_weight * f64::from(out))
                    / t.weight(picked);
                let Some(ct) = service(picked, c) else {
                    // Its requests all ended in the step: nothing to compare.
                    continue;
                };
                for &u in waiting.iter().filter(|&&u| u != picked) {
                    let cu = service(u, c).ok_or(format!("tenant {u} waits but has no counter"))?;
                    let slack = 2.0 * t.delta() + 1e-9 * (ct.abs() + cu.abs() + charged);
                    stats::add(15, 1);
                    self.fair_checks += 1;
                    let ahead = ct - cu;
                    check!(
                        (ahead - charged).total_cmp(&slack).is_le(),
                        "class {c:?}: tenant {picked} (counter {ct}) was picked, charged {charged} since, yet is {ahead} ahead of tenant {u} (counter {cu}) still waiting"
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs the engine until nothing is held, then checks that every accepted request has
    /// exactly one outcome and the counters agree.
    fn finish_up(&mut self) -> R {
        for _ in 0..20_000 {
            if self.held.is_empty() {
                break;
            }
            self.clock.advance(Duration::from_millis(1));
            let free = self.cfg.engine.total_blocks - self.held_blocks();
            self.step(Budget {
                max_num_seqs: 64,
                max_batched_tokens: 1 << 16,
                free_blocks: free,
            })?;
            self.verify()?;
        }
        check!(
            self.held.is_empty(),
            "requests never finished: {:?}",
            self.held.keys()
        );
        for (serial, o) in self.outcomes.iter().enumerate() {
            check!(o.is_some(), "submission #{serial} has no outcome");
        }
        let c = self.sched.conservation();
        check!(
            c.submitted == c.ended() && c.in_ingress == 0 && c.waiting == 0 && c.running == 0,
            "not all ended: {c}"
        );
        Ok(())
    }
}

/// Runs one case: the operations, then the engine until everything has ended.
fn run(cfg: &Cfg, ops: &[Op]) -> Result<World, String> {
    let mut w = World::new(cfg);
    w.verify()?;
    for (i, op) in ops.iter().enumerate() {
        w.apply(op).map_err(|e| format!("op {i} {op:?}: {e}"))?;
    }
    w.finish_up().map_err(|e| format!("finish-up: {e}"))?;
    Ok(w)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

/// What the cases exercised, to show the oracle is not vacuous.
mod stats {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub(crate) static NAMES: [&str; 17] = [
        "steps",
        "admitted",
        "resumed",
        "overdue",
        "aged",
        "backfilled",
        "live-checked",
        "preempt-for-waiting",
        "preempt-kv",
        "timed-out",
        "cancelled",
        "aborted",
        "handed-off",
        "refused",
        "fair-steps",
        "fair-picks-checked",
        "ring-full",
    ];
    pub(crate) static COUNTS: [AtomicU64; 17] = [const { AtomicU64::new(0) }; 17];
    pub(crate) fn add(i: usize, n: u64) {
        COUNTS[i].fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn report() -> String {
        NAMES
            .iter()
            .zip(COUNTS.iter())
            .map(|(n, c)| format!("{n} {}", c.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where failing cases' seeds are saved, and replayed from before any new case:
/// `tests/model.proptest-regressions`, next to this file. (proptest's default,
/// `SourceParallel`, looks above the source for a `lib.rs` or `main.rs`, finds none for an
/// integration test, and falls back to this with a warning on every run.)
fn persistence() -> Box<dyn proptest::test_runner::FailurePersistence> {
    Box::new(proptest::test_runner::FileFailurePersistence::WithSource(
        "proptest-regressions",
    ))
}

/// The saved seeds are found and every line of the checked-in file parses, so each run
/// replays them: fails if the persistence path or the file's format goes wrong.
#[test]
fn saved_failures_are_replayed() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/model.proptest-regressions"
    );
    let text = std::fs::read_to_string(path).expect("the regressions file is checked in");
    let saved = text.lines().filter(|l| l.starts_with("cc ")).count();
    assert!(saved > 0, "{path} holds no seeds");
    let loaded = persistence().load_persisted_failures2(Some(file!()));
    assert_eq!(loaded.len(), saved, "seeds loaded from {path}");
}

#[test]
fn scheduler_matches_the_contract_model() {
    use proptest::test_runner::{Config, TestRunner};
    let cases = cases();
    let mut runner = TestRunner::new(Config {
        cases,
        max_shrink_iters: 20_000,
        source_file: Some(file!()),
        failure_persistence: Some(persistence()),
        ..Config::default()
    });
    let start = std::time::Instant::now();
    let strategy = (cfg_strategy(), prop::collection::vec(op_strategy(), 1..120));
    let ran = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&strategy, |(cfg, ops)| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run(&cfg, &ops).map(drop).map_err(TestCaseError::fail)
    });
    eprintln!(
        "model: {cases} cases asked, {} run (shrinking included) in {:.1} s; {}",
        ran.into_inner(),
        start.elapsed().as_secs_f64(),
        stats::report()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Sanity: the model accepts a plain scripted run (guards the oracle itself).
#[test]
fn model_accepts_a_scripted_run() {
    let cfg = Cfg {
        aging: Some((60, 30)),
        max_wait_ms: 100,
        bucket_width_ms: 5,
        queue_timeout_extra_ms: None,
        ring_capacity: 1024,
        queue_capacity: 100_000,
        preempt: true,
        gap: 1,
        victims: 4,
        lookahead: 0,
        chunked: true,
        block_size: 4,
        total_blocks: 64,
        max_model_len: 256,
        watermark_pct: 5,
        fair: false,
        tenancy: Tenancy::one(),
    };
    let mut ops = Vec::new();
    for id in 0..10 {
        ops.push(Op::Submit {
            id,
            class: (id % 3) as u8,
            prompt: 20 + id as u32,
            max_new: 5,
            tenant: 0,
        });
        ops.push(Op::Step {
            advance_ms: 7,
            seqs: 3,
            tokens: 64,
            hold_back: 0,
        });
    }
    ops.push(Op::Cancel { id: 9 });
    ops.push(Op::Reprio { id: 8, class: 0 });
    run(&cfg, &ops).unwrap();
}

/// Sanity: the model accepts a scripted run with fairness between three tenants of weights
/// 1, 3 and 10^6 (at a magnitude of 10^-200), one seat at a time and no lookahead, so the
/// fair choice is checked after every step.
#[test]
fn model_accepts_a_scripted_run_with_several_tenants() {
    let m = 1e-200;
    let cfg = Cfg {
        aging: None,
        max_wait_ms: 100_000,
        bucket_width_ms: 5,
        queue_timeout_extra_ms: None,
        ring_capacity: 1024,
        queue_capacity: 100_000,
        preempt: true,
        gap: 1,
        victims: 4,
        lookahead: 0,
        chunked: true,
        block_size: 4,
        total_blocks: 64,
        max_model_len: 256,
        watermark_pct: 5,
        fair: true,
        tenancy: Tenancy {
            tenants: 3,
            listed: [3.0 * m, 1e6 * m, m],
            default_weight: m,
            prompt_weight: m,
            output_weight: 2.0 * m,
        },
    };
    let mut ops = Vec::new();
    for id in 0..18 {
        ops.push(Op::Submit {
            id,
            class: 1,
            prompt: 5 + (id as u32 * 7) % 20,
            max_new: 1 + (id as u32 * 5) % 7,
            tenant: (id % 3) as u8,
        });
    }
    for _ in 0..30 {
        ops.push(Op::Step {
            advance_ms: 1,
            seqs: 2,
            tokens: 64,
            hold_back: 0,
        });
    }
    let checked = run(&cfg, &ops).unwrap().fair_checks;
    assert!(checked > 10, "the fair choice was checked {checked} times");
}
