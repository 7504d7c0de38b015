//! Fairness between tenants inside a class (the virtual token counter), with injected time:
//! weighted shares, a heavy tenant's effect on light ones, late arrivals, and how fairness
//! composes with max wait, aging, the tenant limit and reloads.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use triage::*;
use triage_testkit::{FakeEngine, Goal, Rng};

/// The test kit's engine, running every decision to the letter (prefill chunks as
/// scheduled, one token per decode step, finish at `max_new`), with each tenant's service
/// measured on its own (prompt tokens at first start, output tokens as sampled),
/// independently of the scheduler's counters.
struct Engine {
    h: Harness,
    engine: FakeEngine,
    /// The tenant of every request submitted and not ended.
    reqs: HashMap<u64, u64>,
    /// Requests that have started at least once.
    started: HashSet<u64>,
    /// The configured token weights (prompt, output).
    token_weights: (f64, f64),
    /// Weighted tokens served per tenant: prompt tokens × the prompt token weight, output
    /// tokens × the output token weight.
    served: HashMap<u64, f64>,
    /// (tenant, queue wait) of every first admission.
    waits: Vec<(u64, Duration)>,
    /// Tenants of the admissions, in order.
    order: Vec<u64>,
    next_id: u64,
    tick: Duration,
}

impl Engine {
    fn new(config: SchedulerConfig) -> Self {
        let f = &config.fairness;
        Self {
            token_weights: (f.prompt_token_weight, f.output_token_weight),
            h: Harness::new(config),
            engine: FakeEngine::new(u32::MAX, 16, Goal::MaxNew),
            reqs: HashMap::new(),
            started: HashSet::new(),
            served: HashMap::new(),
            waits: Vec::new(),
            order: Vec::new(),
            next_id: 0,
            tick: ms(10),
        }
    }

    fn submit(&mut self, tenant: u64, class: Class, prompt: u32, max_new: u32) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let handle = self
            .h
            .api
            .submit(RequestSpec::new(id, class, prompt, max_new).with_tenant(TenantId(tenant)))
            .expect("submit accepted");
        self.h.handles.insert(RequestId(id), handle);
        self.reqs.insert(id, tenant);
        id
    }

    /// One iteration: step, run what it decided, advance the clock.
    fn run_tick(&mut self, b: Budget) -> Decision {
        let d = self.h.step(b);
        for a in &d.admitted {
            let tenant = self.reqs[&a.id.0];
            if self.started.insert(a.id.0) {
                *self.served.entry(tenant).or_default() +=
                    self.token_weights.0 * f64::from(a.prefill_target);
                self.waits.push((tenant, a.waited));
                self.order.push(tenant);
            }
        }
        let now = self.h.clock.now();
        let carried = self.engine.carry_out(&mut self.h.sched, &d, now);
        assert_eq!(self.engine.problems(), &[] as &[String]);
        for &(id, out) in &carried.output {
            *self.served.entry(self.reqs[&id.0]).or_default() +=
                self.token_weights.1 * f64::from(out);
        }
        for (id, _) in carried.ended {
            self.reqs.remove(&id.0);
        }
        self.h.advance(self.tick);
        d
    }

    fn served(&self, tenant: u64) -> f64 {
        self.served.get(&tenant).copied().unwrap_or(0.0)
    }

    fn p99_wait(&self, tenant: u64) -> Duration {
        let mut w: Vec<Duration> = self
            .waits
            .iter()
            .filter(|(t, _)| *t == tenant)
            .map(|&(_, w)| w)
            .collect();
        assert!(!w.is_empty(), "tenant {tenant} was never admitted");
        w.sort();
        w[(w.len() * 99).div_ceil(100) - 1]
    }
}

fn fair_config(weights: &[(u64, f64)]) -> SchedulerConfig {
    let mut c = no_aging();
    c.fairness.enabled = true;
    c.fairness.tenants = weights
        .iter()
        .map(|&(id, weight)| TenantWeight { id, weight })
        .collect();
    c
}

/// The queue orders fairness is checked under. Fairness orders tenants inside one wait-queue
/// tier; in deadline order a class has two tiers, its live requests and its relegated ones
/// (those that can no longer meet their deadline), each with its own fair counters. A
/// relegation moves a request from one to the other, so the bounds below hold inside each
/// tier, not across a relegation: each setting keeps the whole run in one tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    /// The aging ladder.
    Ladder,
    /// Deadline order with MEDIUM's TTFT target taken away: a MEDIUM deadline is then
    /// `max_wait` (60 s) after arrival, past the end of every run here, so no request is
    /// relegated and all are served from the live tier.
    DeadlineLive,
    /// Deadline order, default targets, the first step 2 s after the submits: past
    /// MEDIUM's 2 s TTFT bound, so the first step relegates every request and the whole run
    /// is served from MEDIUM's relegated tier.
    DeadlineRelegated,
}

impl Setting {
    const ALL: [Setting; 3] = [
        Setting::Ladder,
        Setting::DeadlineLive,
        Setting::DeadlineRelegated,
    ];

    fn apply(self, mut c: SchedulerConfig) -> SchedulerConfig {
        match self {
            Setting::Ladder => c.order = QueueOrder::Ladder,
            Setting::DeadlineLive => {
                c.order = QueueOrder::Deadline;
                c.slo.classes[1].ttft = None;
            }
            Setting::DeadlineRelegated => c.order = QueueOrder::Deadline,
        }
        c
    }

    /// Before the first step, with every request submitted: moves the clock past MEDIUM's
    /// TTFT bound for [`Setting::DeadlineRelegated`].
    fn before_first_step(self, e: &mut Engine) {
        if self == Setting::DeadlineRelegated {
            e.h.advance(ms(2_000));
        }
    }

    /// After the first step: checks the run is in the tier the setting names.
    fn check_first_step(self, e: &Engine, waiting: usize) {
        let relegated = e.h.sched.relegated_in(Class::MEDIUM);
        if self == Setting::DeadlineRelegated {
            assert_eq!(
                relegated, waiting,
                "{self:?}: every waiting request relegated"
            );
            assert!(waiting > 0);
        } else {
            assert_eq!(relegated, 0, "{self:?}");
        }
    }
}

fn big_budget(seqs: u32) -> Budget {
    budget(seqs, 4096, 7000)
}

/// Prompt 100, 10 output tokens: 100 + 2 × 10 = 120 weighted tokens per request.
const REQ_SERVICE: f64 = 120.0;

#[test]
fn weights_one_and_two_get_service_one_to_two_within_one_request() {
    for setting in Setting::ALL {
        for seqs in [1, 4] {
            let mut e = Engine::new(setting.apply(fair_config(&[(1, 1.0), (2, 2.0)])));
            for _ in 0..150 {
                e.submit(1, Class::MEDIUM, 100, 10);
                e.submit(2, Class::MEDIUM, 100, 10);
            }
            setting.before_first_step(&mut e);
            let mut worst: f64 = 0.0;
            // 200 starts, about 67 and 133: both stay backlogged throughout.
            while e.order.len() < 200 {
                let first = e.order.is_empty();
                e.run_tick(big_budget(seqs));
                if first {
                    setting.check_first_step(&e, e.h.sched.waiting());
                }
                let gap = (e.served(1) / 1.0 - e.served(2) / 2.0).abs();
                worst = worst.max(gap);
            }
            let (a, b) = (e.served(1), e.served(2));
            assert!(
                worst <= REQ_SERVICE,
                "{setting:?}, seqs {seqs}: normalised service drifted {worst} apart (more than one request's {REQ_SERVICE})"
            );
            let ratio = b / a;
            assert!(
                (1.8..=2.2).contains(&ratio),
                "{setting:?}, seqs {seqs}: served {a} and {b}, ratio {ratio}"
            );
        }
    }
}

/// The issue's reproduction: tenants 1 and 2 each queue 10 requests (prompt 4, 20 output
/// tokens), two seats, one output token per step. With every weight at 100,000 a charge was
/// rounded to thousandths of a token after dividing by the weight, so nothing cost
/// anything, the counters never moved, ties went to the lowest slot, and tenant 1's ten
/// requests all started before tenant 2's first. Weights are relative: at any magnitude
/// the admissions alternate, as with weight 1.
#[test]
fn equal_weights_alternate_admissions_at_any_magnitude() {
    for default_weight in ["1", "100000", "1e-300", "1e300"] {
        let text = format!("[fairness]\nenabled = true\ndefault_weight = {default_weight}\n");
        let cfg = SchedulerConfig::from_toml_str(&text).expect("accepted");
        let mut e = Engine::new(cfg);
        for tenant in [1, 2] {
            for _ in 0..10 {
                e.submit(tenant, Class::MEDIUM, 4, 20);
            }
        }
        for _ in 0..1_000 {
            if e.order.len() == 20 {
                break;
            }
            e.run_tick(budget(2, 8192, 7000));
        }
        let got: String = e.order.iter().map(|t| t.to_string()).collect();
        assert_eq!(got, "12".repeat(10), "default_weight {default_weight}");
    }
}

/// Weights and token weights at the edges of what validation accepts, and beyond.
#[test]
fn weights_spread_too_far_apart_are_refused_with_a_located_error() {
    let refused = |text: &str| SchedulerConfig::from_toml_str(text).unwrap_err();
    let e =
        refused("[fairness]\ndefault_weight = 1\n\n[[fairness.tenants]]\nid = 1\nweight = 2e6\n");
    assert_eq!(e.field, "fairness.tenants[0].weight");
    assert_eq!(e.location, Some((6, 1)));
    assert!(e.expected.contains("fairness.default_weight = 1"), "{e}");
    let e = refused(
        "[[fairness.tenants]]\nid = 1\nweight = 5\n[[fairness.tenants]]\nid = 2\nweight = 4e-6\n",
    );
    assert_eq!(e.field, "fairness.tenants[1].weight");
    assert_eq!(e.location, Some((6, 1)));
    assert!(e.expected.contains("fairness.tenants[0].weight = 5"), "{e}");
    let e = refused("[fairness]\nprompt_token_weight = 1\noutput_token_weight = 0.00001\n");
    assert_eq!(e.field, "fairness.output_token_weight");
    assert_eq!(e.location, Some((3, 1)));
    let e = refused("[fairness]\nprompt_token_weight = 1e-5\n");
    assert_eq!(e.field, "fairness.prompt_token_weight");
    assert!(e.expected.contains("output_token_weight (2)"), "{e}");
    // The widest spreads accepted, at any magnitude, and a zero token weight.
    for text in [
        "[fairness]\ndefault_weight = 1e-300\n[[fairness.tenants]]\nid = 1\nweight = 1e-294\n",
        "[fairness]\nprompt_token_weight = 1e250\noutput_token_weight = 1e254\n",
        "[fairness]\nprompt_token_weight = 0\noutput_token_weight = 1e-9\n",
        "[fairness]\ndefault_weight = 1e5\n",
    ] {
        assert!(SchedulerConfig::from_toml_str(text).is_ok(), "{text}");
    }
}

/// Service of two tenants in one class, each backlogged throughout, measured by the test
/// engine on its own (prompt tokens at first start, output tokens as sampled, times their
/// token weights, over the tenant's weight).
///
/// The bound is triage's form of Sheng et al.'s Theorem 4.3 (OSDI'24; derived in
/// `docs/design.md`, "How far apart two tenants can get"). While a class's admissions
/// follow the fair order (none overdue, no candidate put back, no running request moved
/// into the class), every tenant f backlogged in it has `C_f − m ≤ U_f`, `C_f` its counter
/// and `m` the least backlogged one, with
///
/// ```text
/// U_f = (w_p·P + w_q·N·Q) / w_f + 2δ
/// ```
///
/// `w_p`, `w_q` the token weights, `w_f` the tenant's weight, `P` the longest prompt, `Q`
/// the most output tokens of a request, `N` the most requests of one tenant running at
/// once (here the seats), and `δ` the heap's resolution (a sixteenth of the cheapest token:
/// `least nonzero token weight / (16 · greatest tenant weight)`). Both counters start
/// equal and nothing is lifted while both stay backlogged, so the normalised service gap
/// `D = S_1/w_1 − S_2/w_2` (over the run so far) is the counters' difference: it stays in
/// `[−U_2, U_1]` at every step, and over any interval `[t1, t2]` it moves by at most
/// `U_1 + U_2` (the paper's `2U` when the weights are equal).
struct Gap {
    /// `(U_f, U_g)`.
    bounds: (f64, f64),
    /// The least and greatest `D` seen.
    range: (f64, f64),
}

impl Gap {
    fn check(&mut self, d: f64, what: &str) {
        let (uf, ug) = self.bounds;
        self.range = (self.range.0.min(d), self.range.1.max(d));
        // Cost rounding (2^-31 of a cost per token) and f64 sums: a relative 1e-9.
        let slack = 1e-9 * (uf + ug) * 10.0;
        assert!(
            d <= uf + slack && -d <= ug + slack,
            "{what}: normalised gap {d} outside [-{ug}, {uf}]"
        );
        let moved = self.range.1 - self.range.0;
        assert!(
            moved <= uf + ug + slack,
            "{what}: the gap moved by {moved} over an interval, more than {}",
            uf + ug
        );
    }
}

/// Tenants 1 and 2 of weights `wa` and `wb` queue `(na, nb)` MEDIUM requests of 1 to
/// `prompt` tokens and 1 to `max_new` outputs (seeded); the engine runs `seats` at a time
/// (under `setting`). Steps
/// while both stay backlogged, checking [`Gap`] after every step; returns the engine and
/// the gap's range.
fn two_backlogged(
    setting: Setting,
    cfg: SchedulerConfig,
    (wa, wb): (f64, f64),
    (na, nb): (usize, usize),
    (prompt, max_new, seats): (u32, u32, u32),
    what: &str,
) -> (Engine, Gap) {
    let f = &cfg.fairness;
    let (wp, wq) = (f.prompt_token_weight, f.output_token_weight);
    let least_token = [wp, wq]
        .into_iter()
        .filter(|&w| w > 0.0)
        .fold(f64::INFINITY, f64::min);
    let greatest = f
        .tenants
        .iter()
        .map(|t| t.weight)
        .fold(f.default_weight, f64::max);
    let delta = least_token / (16.0 * greatest);
    let u = |w: f64| (wp * f64::from(prompt) + wq * f64::from(seats * max_new)) / w + 2.0 * delta;
    let mut gap = Gap {
        bounds: (u(wa), u(wb)),
        range: (0.0, 0.0),
    };
    let mut e = Engine::new(setting.apply(cfg));
    let mut queued = [na, nb];
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for i in 0..na.max(nb) {
        for (t, &n) in queued.iter().enumerate() {
            if i < n {
                let r = rng.next_u64();
                let (p, q) = (1 + r as u32 % prompt, 1 + (r >> 32) as u32 % max_new);
                e.submit(t as u64 + 1, Class::MEDIUM, p, q);
            }
        }
    }
    setting.before_first_step(&mut e);
    // A tenant with more than `seats` waiting cannot empty its lane in one step.
    while queued.iter().all(|&n| n > seats as usize) {
        let before = e.order.len();
        e.run_tick(budget(seats, 8192, 7000));
        if before == 0 {
            setting.check_first_step(&e, e.h.sched.waiting());
        }
        for &t in &e.order[before..] {
            queued[t as usize - 1] -= 1;
        }
        gap.check(e.served(1) / wa - e.served(2) / wb, what);
    }
    (e, gap)
}

/// Weights 1 : 3 at the bottom, the middle and the top of the accepted spread of weights
/// and at extreme magnitudes, with output-heavy traffic (as the issue's: short prompts,
/// up to 40 output tokens at twice a prompt token's weight) and prompt-heavy traffic, and
/// with the token weights spread as far as accepted: service splits 1 : 3 and the gap
/// between the two tenants stays within the bound at every step.
#[test]
fn weights_one_to_three_get_service_one_to_three_at_every_accepted_scale() {
    // (what, default weight, tenant 1's weight, token weights)
    let cases = [
        ("bottom of the spread", 1e6, 1.0, (1.0, 2.0)),
        ("middle", 1.0, 1.0, (1.0, 2.0)),
        ("top of the spread", 1.0, 1e6 / 3.0, (1.0, 2.0)),
        ("the issue's magnitude", 1e5, 1e5, (1.0, 2.0)),
        ("tiny magnitude", 1e-300, 1e-300, (1e-300, 2e-300)),
        ("huge magnitude", 1e300, 1e300 / 3.0, (1e300, 2e300)),
        (
            "the issue's tiny output weight",
            1.0,
            1e6 / 3.0,
            (1.0, 4e-4),
        ),
        ("dearest token accepted", 1e6, 1.0, (1e-4, 1.0)),
    ];
    let mut widest: f64 = 0.0;
    for (setting, (what, default_weight, w1, (wp, wq))) in Setting::ALL
        .into_iter()
        .flat_map(|s| cases.iter().map(move |&c| (s, c)))
    {
        for (traffic, prompt, max_new) in [("output-heavy", 8, 40), ("prompt-heavy", 200, 10)] {
            let what = format!("{setting:?}, {what}, {traffic}");
            let w2 = 3.0 * w1;
            let mut cfg = fair_config(&[(1, w1), (2, w2)]);
            cfg.fairness.default_weight = default_weight;
            (
                cfg.fairness.prompt_token_weight,
                cfg.fairness.output_token_weight,
            ) = (wp, wq);
            cfg.validate().expect("accepted");
            let (e, gap) = two_backlogged(
                setting,
                cfg,
                (w1, w2),
                (80, 230),
                (prompt, max_new, 4),
                &what,
            );
            let (s1, s2) = (e.served(1), e.served(2));
            let ratio = s2 / s1;
            assert!(
                (2.85..=3.15).contains(&ratio),
                "{what}: served {s1} and {s2}, ratio {ratio}"
            );
            assert!(e.order.len() > 250, "{what}: {} admissions", e.order.len());
            widest = widest.max((gap.range.1 - gap.range.0) / (gap.bounds.0 + gap.bounds.1));
        }
    }
    // The traffic is uneven enough for the gap to move (the bound is not vacuous).
    assert!(widest > 0.1, "the gap moved at most {widest} of its bound");
}

/// Weights are relative: the same random traffic from six tenants of different weights,
/// through aging, max wait, backfill and preemption, is admitted in exactly the same order
/// when every tenant weight, or both token weights, are multiplied by one factor (powers of
/// two, so the scaled weights keep their exact ratios).
#[test]
fn scaling_every_weight_changes_no_decision() {
    let run = |tenant_scale: f64, token_scale: f64| {
        let mut c = fair_config(&[]);
        c.classes[2].promote_after_ms = Some(300);
        c.classes[1].promote_after_ms = Some(600);
        c.max_wait_ms = 900;
        c.fairness.default_weight = 1.5 * tenant_scale;
        c.fairness.tenants = [0.25, 1.0, 3.0, 7.5, 100.0]
            .iter()
            .enumerate()
            .map(|(i, &w)| TenantWeight {
                id: i as u64,
                weight: w * tenant_scale,
            })
            .collect();
        c.fairness.prompt_token_weight *= token_scale;
        c.fairness.output_token_weight *= token_scale;
        let mut e = Engine::new(c);
        let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
        let mut admitted = Vec::new();
        for _ in 0..600 {
            let r = rng.next_u64();
            for _ in 0..r % 4 {
                let s = rng.next_u64();
                e.submit(
                    (s >> 8) % 6,
                    Class::from_index((s % 3) as u8),
                    1 + (s >> 16) as u32 % 300,
                    1 + (s >> 32) as u32 % 30,
                );
            }
            let d = e.run_tick(budget(
                1 + (r >> 8) as u32 % 8,
                512,
                60 + (r >> 16) as u32 % 60,
            ));
            admitted.extend(ids(&d.admitted));
        }
        admitted
    };
    let base = run(1.0, 1.0);
    assert!(base.len() > 400, "{} admissions", base.len());
    for (k, j) in [(-1000, 0), (990, 0), (0, -1000), (900, -900)] {
        let got = run(2f64.powi(k), 2f64.powi(j));
        assert!(
            got == base,
            "tenant weights × 2^{k}, token weights × 2^{j}: another order"
        );
    }
}

/// Every 200 ms the heavy tenant sends 10 requests and each of three light tenants one;
/// the engine serves 8 at a time, 200 ms each (40 per second against 65 offered).
fn heavy_and_light(setting: Setting, fairness: bool, with_heavy: bool) -> Engine {
    let mut cfg = setting.apply(fair_config(&[]));
    cfg.fairness.enabled = fairness;
    let mut e = Engine::new(cfg);
    for t in 0..1500u64 {
        if t % 20 == 0 {
            if with_heavy {
                for _ in 0..10 {
                    e.submit(1, Class::MEDIUM, 200, 20);
                }
            }
            for light in 2..=4 {
                e.submit(light, Class::MEDIUM, 200, 20);
            }
        }
        e.run_tick(big_budget(8));
    }
    e
}

/// Under the ladder and deadline order with every request live (a sustained overload
/// relegates requests, which moves them to another fairness domain: see [`Setting`]).
#[test]
fn a_tenant_sending_ten_times_more_does_not_raise_a_light_tenants_p99_wait() {
    // One request's running time: 1 prefill tick + 19 decode ticks of 10 ms.
    let bound = ms(200);
    for setting in [Setting::Ladder, Setting::DeadlineLive] {
        let alone = heavy_and_light(setting, true, false);
        let fair = heavy_and_light(setting, true, true);
        let fifo = heavy_and_light(setting, false, true);
        for light in 2..=4 {
            let (base, with_heavy, unfair) = (
                alone.p99_wait(light),
                fair.p99_wait(light),
                fifo.p99_wait(light),
            );
            assert!(
                with_heavy <= base + bound,
                "{setting:?}, tenant {light}: p99 wait {with_heavy:?} with the heavy tenant, {base:?} without: more than {bound:?} worse"
            );
            // The test has teeth: without fairness the heavy tenant's backlog is in front.
            assert!(
                unfair > with_heavy + ms(2_000),
                "{setting:?}, tenant {light}: FIFO p99 {unfair:?} vs fair {with_heavy:?}"
            );
        }
    }
}

/// Under the ladder and deadline order with every request live. (With MEDIUM's TTFT target
/// in deadline order, A's backlog is relegated by the time B comes back, and B's live
/// requests rightly all go first: see `tests/deadline.rs`.)
#[test]
fn a_late_tenant_is_neither_starved_nor_given_a_burst() {
    for setting in [Setting::Ladder, Setting::DeadlineLive] {
        a_late_tenant(setting);
    }
}

fn a_late_tenant(setting: Setting) {
    let mut e = Engine::new(setting.apply(fair_config(&[])));
    // B is served a little at the start, then goes idle while A is served for a long time.
    e.submit(2, Class::MEDIUM, 100, 10);
    for _ in 0..300 {
        e.submit(1, Class::MEDIUM, 100, 10);
    }
    for _ in 0..300 {
        e.run_tick(big_budget(1));
    }
    let before = e.order.len();
    assert!(before > 20, "A ran alone for a while ({before} admissions)");
    assert_eq!(e.order.iter().filter(|&&t| t == 2).count(), 1);
    // B comes back with a backlog of its own.
    for _ in 0..50 {
        e.submit(2, Class::MEDIUM, 100, 10);
    }
    while e.order.len() < before + 20 {
        e.run_tick(big_budget(1));
    }
    let after = &e.order[before..before + 20];
    let b = after.iter().filter(|&&t| t == 2).count();
    assert!(
        after[..2].contains(&2),
        "B waited more than one turn: {after:?}"
    );
    assert!(
        (9..=11).contains(&b),
        "B got {b} of the next 20 starts (a burst or starvation): {after:?}"
    );
    // Counters agree: B was lifted to A's level, not left at its old low one.
    let (sa, sb) = (
        e.h.sched
            .tenant_service(Some(TenantId(1)), Class::MEDIUM)
            .unwrap(),
        e.h.sched
            .tenant_service(Some(TenantId(2)), Class::MEDIUM)
            .unwrap(),
    );
    assert!((sa - sb).abs() <= REQ_SERVICE, "A {sa}, B {sb}");
}

/// A, whose weight makes it expensive, has an old request waiting; B's is newer and B is
/// less served. Returns the first two admissions' (tenant, overdue). The ladder's rule
/// that every overdue request goes first (deadline order lets them ahead only on the
/// overdue credit: `tests/deadline.rs`).
fn overdue_scenario(max_wait_ms: u64) -> Vec<(u64, bool)> {
    let mut cfg = fair_config(&[(1, 0.1)]);
    cfg.order = QueueOrder::Ladder;
    cfg.max_wait_ms = max_wait_ms;
    let mut e = Engine::new(cfg);
    let a1 = e.submit(1, Class::MEDIUM, 100, 400);
    e.submit(1, Class::MEDIUM, 100, 10);
    let d = e.run_tick(big_budget(1));
    assert_eq!(ids(&d.admitted), vec![a1]);
    e.h.advance(ms(500));
    e.submit(2, Class::MEDIUM, 100, 10);
    let mut out = Vec::new();
    while out.len() < 2 {
        let d = e.run_tick(big_budget(1));
        for a in &d.admitted {
            out.push((e.order[e.order.len() - d.admitted.len()], a.overdue));
        }
    }
    out
}

#[test]
fn an_overdue_request_goes_before_the_fair_choice() {
    // A1 runs 4 s; by then A2 (arrived at 0) and B1 (at 0.5 s) are both past a 1 s max
    // wait, and A2, the older, goes first although B is the less served tenant.
    assert_eq!(overdue_scenario(1_000), vec![(1, true), (2, true)]);
    // With a long max wait the fair choice stands: B first.
    assert_eq!(overdue_scenario(60_000), vec![(2, false), (1, false)]);
}

#[test]
fn class_order_comes_before_fairness() {
    let mut e = Engine::new(fair_config(&[]));
    // The heavy tenant has been served; its HIGH request still goes before anything LOW.
    for _ in 0..5 {
        e.submit(1, Class::LOW, 100, 10);
    }
    for _ in 0..20 {
        e.run_tick(big_budget(1));
    }
    e.submit(2, Class::LOW, 100, 10);
    let high = e.submit(1, Class::HIGH, 100, 10);
    let d = loop {
        let d = e.run_tick(big_budget(1));
        if !d.admitted.is_empty() {
            break d;
        }
    };
    assert_eq!(ids(&d.admitted), vec![high]);
}

#[test]
fn a_promoted_bucket_keeps_its_tenants_and_they_share_the_class_above() {
    let mut cfg = fair_config(&[]);
    cfg.order = QueueOrder::Ladder; // aging is the ladder's
    cfg.classes[2].promote_after_ms = Some(1_000); // LOW -> MEDIUM after 1 s
    cfg.classes[1].promote_after_ms = None;
    let mut e = Engine::new(cfg);
    for _ in 0..6 {
        e.submit(1, Class::LOW, 100, 10);
    }
    for _ in 0..2 {
        e.submit(2, Class::LOW, 100, 10);
    }
    // Keep MEDIUM busy with tenant 3 until the LOW bucket has aged into MEDIUM.
    e.h.advance(ms(1_100));
    let mut effective = Vec::new();
    let mut starts = Vec::new();
    while starts.len() < 4 {
        let d = e.run_tick(big_budget(1));
        for a in &d.admitted {
            effective.push(a.effective_class);
            starts.push(e.order[e.order.len() - 1]);
        }
    }
    assert!(
        effective.iter().all(|&c| c == Class::MEDIUM),
        "{effective:?}"
    );
    // Fair inside the class they were promoted to: tenant 2 is not behind all of tenant 1.
    assert!(starts[..2].contains(&2), "{starts:?}");
    assert_eq!(starts.iter().filter(|&&t| t == 2).count(), 2, "{starts:?}");
}

#[test]
fn one_tenant_past_the_limit_is_refused_with_a_typed_reason_and_counted() {
    let mut cfg = fair_config(&[]);
    cfg.fairness.max_tenants = 2;
    let mut e = Engine::new(cfg);
    let a = e.submit(1, Class::MEDIUM, 100, 2);
    e.submit(2, Class::MEDIUM, 100, 2);
    let c = e.submit(3, Class::MEDIUM, 100, 2);
    let d = e.run_tick(big_budget(8));
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].id, RequestId(c));
    assert_eq!(
        d.rejected[0].reason,
        RejectReason::TenantLimit {
            tenant: Some(TenantId(3)),
            max_tenants: 2
        }
    );
    assert_eq!(e.h.sched.tenants_held(), 2);
    assert_eq!(e.h.sched.conservation().refused, 1);
    // Once tenant 1's request is done, a third tenant fits.
    while e.reqs.contains_key(&a) {
        e.run_tick(big_budget(8));
    }
    assert!(e.h.sched.tenants_held() <= 1);
    let late = e.submit(3, Class::MEDIUM, 100, 2);
    let d = e.run_tick(big_budget(8));
    assert!(d.rejected.is_empty());
    assert_eq!(ids(&d.admitted), vec![late]);
}

#[test]
fn fairness_off_is_fifo_whatever_the_tenants() {
    let mut e = Engine::new(no_aging());
    let mut expect = Vec::new();
    for i in 0..10 {
        expect.push(e.submit(if i < 7 { 1 } else { 2 }, Class::MEDIUM, 100, 1));
        e.h.advance(ms(1));
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        got.extend(ids(&e.run_tick(big_budget(1)).admitted));
    }
    assert_eq!(got, expect);
}

#[test]
fn reloads_that_turn_fairness_on_and_off_lose_nothing() {
    let mut e = Engine::new(no_aging());
    let mut on = no_aging();
    on.fairness.enabled = true;
    on.fairness.max_tenants = 3; // below the 5 tenants held: they stay, new ones wait
    for round in 0..12u64 {
        for i in 0..20u64 {
            e.submit(i % 5, Class::from_index((i % 3) as u8), 50, 3);
        }
        let cfg = if round % 2 == 0 {
            on.clone()
        } else {
            no_aging()
        };
        e.h.sched.reload(cfg).expect("valid");
        for _ in 0..5 {
            let d = e.run_tick(big_budget(4));
            assert!(matches!(d.reload, None | Some(Ok(_))), "{:?}", d.reload);
        }
    }
    while !e.reqs.is_empty() {
        e.run_tick(big_budget(16));
    }
    let c = e.h.sched.conservation();
    assert!(c.is_balanced(), "{c}");
    assert_eq!(c.finished + c.refused, c.submitted);
}

/// Random traffic from 100 tenants of four weights (enough for the scheduler to look
/// ahead), through aging (the ladder) or relegation (deadline order), max wait, preemption
/// for KV blocks, backfill, cancels and class changes: the scheduler's invariants (among
/// them every lane against the copy of its head, and every tier's tenant heap against the
/// counters) hold after every step (`Harness::step` checks them), and everything ends.
#[test]
fn random_traffic_from_many_tenants_keeps_every_invariant() {
    for order in [QueueOrder::Ladder, QueueOrder::Deadline] {
        random_traffic_from_many_tenants(order);
    }
}

fn random_traffic_from_many_tenants(order: QueueOrder) {
    const TENANTS: u64 = 100;
    let mut c = SchedulerConfig {
        order,
        ..SchedulerConfig::default()
    };
    c.classes[1].promote_after_ms = Some(120);
    c.classes[2].promote_after_ms = Some(60);
    c.max_wait_ms = 300;
    // Every class relegates (the default serves HIGH's late requests, which would keep
    // HIGH's backlog ahead of everyone and leave the relegated tiers unexercised).
    for class in &mut c.classes {
        class.on_late = LateRule::Keep;
    }
    c.fairness.enabled = true;
    c.fairness.tenants = (0..TENANTS)
        .step_by(3)
        .map(|id| TenantWeight {
            id,
            weight: 1.0 + (id % 4) as f64,
        })
        .collect();
    let mut e = Engine::new(c);
    e.tick = ms(5);
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let (mut preempted, mut cancelled, mut max_waiting, mut max_tenants) = (0, 0, 0, 0);
    for _ in 0..1_500 {
        let r = rng.next_u64();
        for _ in 0..r % 6 {
            let s = rng.next_u64();
            let class = Class::from_index((s % 3) as u8);
            e.submit(
                (s >> 8) % TENANTS,
                class,
                1 + (s >> 16) as u32 % 200,
                1 + (s >> 32) as u32 % 20,
            );
        }
        if e.next_id > 0 && (r >> 8) % 7 == 0 {
            let _ = e.h.api.cancel(e.h.handle((r >> 16) % e.next_id));
        }
        if e.next_id > 0 && (r >> 12) % 7 == 0 {
            let class = Class::from_index(((r >> 40) % 3) as u8);
            let _ =
                e.h.api
                    .reprioritize(e.h.handle((r >> 20) % e.next_id), class);
        }
        let seqs = 1 + (r >> 24) as u32 % 16;
        let tokens = 64 + (r >> 32) as u32 % 1024;
        let d = e.run_tick(budget(seqs, tokens, 40 + (r >> 48) as u32 % 100));
        preempted += d.preempted.len();
        cancelled += d.cancelled.len();
        max_waiting = max_waiting.max(e.h.sched.waiting());
        max_tenants = max_tenants.max(e.h.sched.tenants_held());
    }
    // The run went where it was meant to: a deep queue from most tenants, preemptions,
    // cancels while queued.
    assert!(
        preempted > 10 && cancelled > 10 && max_waiting > 200 && max_tenants > 80,
        "{order:?}: {preempted} preempted, {cancelled} cancelled, at most {max_waiting} \
         waiting from {max_tenants} tenants"
    );
    if order == QueueOrder::Deadline {
        let relegated: u64 = (0..3)
            .map(|c| e.h.sched.class_counters(Class::from_index(c)).relegated)
            .sum();
        // Relegated tiers' lanes and tenant heaps were exercised too.
        assert!(relegated > 100, "only {relegated} relegated");
    }
    let mut guard = 0;
    while e.h.sched.waiting() + e.h.sched.running() > 0 {
        e.run_tick(big_budget(64));
        guard += 1;
        assert!(guard < 10_000, "the queue never drained");
    }
    let c = e.h.sched.conservation();
    assert_eq!((c.in_ingress, c.waiting, c.running), (0, 0, 0), "{c}");
}
