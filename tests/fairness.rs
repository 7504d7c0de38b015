//! Fairness between tenants inside a class (the virtual token counter), with injected time:
//! weighted shares, a heavy tenant's effect on light ones, late arrivals, and how fairness
//! composes with max wait, aging, the tenant limit and reloads.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::Duration;
use triage::*;

/// One request as the test engine runs it.
struct Req {
    tenant: u64,
    prompt: u32,
    max_new: u32,
    target: u32,
    kv: u32,
    generated: u32,
    started_once: bool,
}

/// An engine that runs every decision to the letter: prefill chunks as scheduled, one
/// token per decode step, finish at `max_new`. It measures each tenant's service on its
/// own (prompt tokens at first start, output tokens as sampled), independently of the
/// scheduler's counters.
struct Engine {
    h: Harness,
    reqs: HashMap<u64, Req>,
    /// Weighted tokens served per tenant: prompt × 1 + output × 2 (the default weights).
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
        Self {
            h: Harness::new(config),
            reqs: HashMap::new(),
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
        self.h
            .api
            .submit(RequestSpec::new(id, class, prompt, max_new).with_tenant(TenantId(tenant)))
            .expect("submit accepted");
        self.reqs.insert(
            id,
            Req {
                tenant,
                prompt,
                max_new,
                target: prompt,
                kv: 0,
                generated: 0,
                started_once: false,
            },
        );
        id
    }

    fn progress(&mut self, id: u64, computed: u32) {
        let r = self.reqs.get_mut(&id).expect("known request");
        r.kv += computed;
        let out = u32::from(r.kv >= r.target);
        r.generated += out;
        *self.served.entry(r.tenant).or_default() += 2.0 * f64::from(out);
        let now = self.h.clock.now();
        self.h
            .sched
            .on_progress(RequestId(id), now, computed, out)
            .expect("progress accepted");
        if r.generated == r.max_new {
            self.reqs.remove(&id);
            self.h
                .sched
                .on_finished(RequestId(id), now, FinishReason::Length)
                .expect("finish accepted");
        }
    }

    /// One iteration: step, run what it decided, advance the clock.
    fn run_tick(&mut self, b: Budget) -> Decision {
        let d = self.h.step(b);
        for p in &d.preempted {
            let r = self.reqs.get_mut(&p.id.0).expect("known");
            r.target = r.prompt + r.generated;
            r.kv = 0;
        }
        for a in &d.admitted {
            let r = self.reqs.get_mut(&a.id.0).expect("known");
            if !r.started_once {
                r.started_once = true;
                *self.served.entry(r.tenant).or_default() += f64::from(r.prompt);
                self.waits.push((r.tenant, a.waited));
                self.order.push(r.tenant);
            }
            r.target = a.prefill_target;
        }
        for (id, tokens) in work(&d) {
            self.progress(id.0, tokens);
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

fn big_budget(seqs: u32) -> Budget {
    budget(seqs, 4096, 7000)
}

/// Prompt 100, 10 output tokens: 100 + 2 × 10 = 120 weighted tokens per request.
const REQ_SERVICE: f64 = 120.0;

#[test]
fn weights_one_and_two_get_service_one_to_two_within_one_request() {
    for seqs in [1, 4] {
        let mut e = Engine::new(fair_config(&[(1, 1.0), (2, 2.0)]));
        for _ in 0..150 {
            e.submit(1, Class::MEDIUM, 100, 10);
            e.submit(2, Class::MEDIUM, 100, 10);
        }
        let mut worst: f64 = 0.0;
        // 200 starts, about 67 and 133: both stay backlogged throughout.
        while e.order.len() < 200 {
            e.run_tick(big_budget(seqs));
            let gap = (e.served(1) / 1.0 - e.served(2) / 2.0).abs();
            worst = worst.max(gap);
        }
        let (a, b) = (e.served(1), e.served(2));
        assert!(
            worst <= REQ_SERVICE,
            "seqs {seqs}: normalised service drifted {worst} apart (more than one request's {REQ_SERVICE})"
        );
        let ratio = b / a;
        assert!(
            (1.8..=2.2).contains(&ratio),
            "seqs {seqs}: served {a} and {b}, ratio {ratio}"
        );
    }
}

/// Every 200 ms the heavy tenant sends 10 requests and each of three light tenants one;
/// the engine serves 8 at a time, 200 ms each (40 per second against 65 offered).
fn heavy_and_light(fairness: bool, with_heavy: bool) -> Engine {
    let mut cfg = fair_config(&[]);
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

#[test]
fn a_tenant_sending_ten_times_more_does_not_raise_a_light_tenants_p99_wait() {
    // One request's running time: 1 prefill tick + 19 decode ticks of 10 ms.
    let bound = ms(200);
    let alone = heavy_and_light(true, false);
    let fair = heavy_and_light(true, true);
    let fifo = heavy_and_light(false, true);
    for light in 2..=4 {
        let (base, with_heavy, unfair) = (
            alone.p99_wait(light),
            fair.p99_wait(light),
            fifo.p99_wait(light),
        );
        assert!(
            with_heavy <= base + bound,
            "tenant {light}: p99 wait {with_heavy:?} with the heavy tenant, {base:?} without: more than {bound:?} worse"
        );
        // The test has teeth: without fairness the heavy tenant's backlog is in front.
        assert!(
            unfair > with_heavy + ms(2_000),
            "tenant {light}: FIFO p99 {unfair:?} vs fair {with_heavy:?}"
        );
    }
}

#[test]
fn a_late_tenant_is_neither_starved_nor_given_a_burst() {
    let mut e = Engine::new(fair_config(&[]));
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
/// less served. Returns the first two admissions' (tenant, overdue).
fn overdue_scenario(max_wait_ms: u64) -> Vec<(u64, bool)> {
    let mut cfg = fair_config(&[(1, 0.1)]);
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
    e.reqs.remove(&c);
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
            for r in &d.rejected {
                e.reqs.remove(&r.id.0);
            }
        }
    }
    while !e.reqs.is_empty() {
        let d = e.run_tick(big_budget(16));
        for r in &d.rejected {
            e.reqs.remove(&r.id.0);
        }
    }
    let c = e.h.sched.conservation();
    assert!(c.is_balanced(), "{c}");
    assert_eq!(c.finished + c.refused, c.submitted);
}

/// Random traffic from 100 tenants of four weights (enough for the scheduler to look
/// ahead), through aging, max wait, preemption for KV blocks, backfill, cancels and class
/// changes: the scheduler's invariants (among them every lane against the copy of its
/// head, and every class's tenant heap against the counters) hold after every step
/// (`Harness::step` checks them), and everything ends.
#[test]
fn random_traffic_from_many_tenants_keeps_every_invariant() {
    const TENANTS: u64 = 100;
    let mut c = SchedulerConfig::default();
    c.classes[1].promote_after_ms = Some(120);
    c.classes[2].promote_after_ms = Some(60);
    c.max_wait_ms = 300;
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
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let (mut preempted, mut cancelled, mut max_waiting, mut max_tenants) = (0, 0, 0, 0);
    for _ in 0..1_500 {
        let r = xorshift(&mut seed);
        for _ in 0..r % 6 {
            let s = xorshift(&mut seed);
            let class = Class::from_index((s % 3) as u8);
            e.submit(
                (s >> 8) % TENANTS,
                class,
                1 + (s >> 16) as u32 % 200,
                1 + (s >> 32) as u32 % 20,
            );
        }
        if e.next_id > 0 && (r >> 8) % 7 == 0 {
            let _ = e.h.api.cancel(RequestId((r >> 16) % e.next_id));
        }
        if e.next_id > 0 && (r >> 12) % 7 == 0 {
            let class = Class::from_index(((r >> 40) % 3) as u8);
            let _ =
                e.h.api
                    .reprioritize(RequestId((r >> 20) % e.next_id), class);
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
        "{preempted} preempted, {cancelled} cancelled, at most {max_waiting} waiting from \
         {max_tenants} tenants"
    );
    let mut guard = 0;
    while e.h.sched.waiting() + e.h.sched.running() > 0 {
        e.run_tick(big_budget(64));
        guard += 1;
        assert!(guard < 10_000, "the queue never drained");
    }
    let c = e.h.sched.conservation();
    assert_eq!((c.in_ingress, c.waiting, c.running), (0, 0, 0), "{c}");
}
