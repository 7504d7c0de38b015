//! `step_into` at 1k, 10k, 100k and 1M queued requests, 256 admissions per step, in the
//! default (deadline) order, and at 100k and 1M in the ladder order (aging on).
//!
//! The queue is filled once per size with arrivals spread over the last 1.25 × LOW's
//! promotion threshold (classes one third each), so in the ladder order buckets cross the
//! aging thresholds as the clock moves (see `triage_testkit::steady::config_in` for deadline
//! order). Each
//! measured iteration is one `step_into` on a [`triage::ManualClock`] that advances 10 ms
//! per step: it drains the 256 requests submitted since the previous step, promotes aged
//! buckets or judges deadlines, and admits 256 (budget: 256 seqs, 2048 tokens, 8-token
//! prompts). Untimed, between steps,
//! the engine reports the 256 admitted requests finished and API calls submit 256 new ones
//! (one third per class), so the queue stays at its target and every step starts with no
//! running requests.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

mod common;

use common::timed_batch_step;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use triage_testkit::steady::{self, SteadyDepth, BATCH};

/// Fills a scheduler with `n` queued requests under `cfg`, spread round robin over
/// `tenants` tenants (0: no tenant), and measures `step_into` as described at the top of
/// the file, under benchmark id `id`.
fn bench_steps(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    cfg: triage::SchedulerConfig,
    n: usize,
    tenants: u64,
) {
    let mut b = SteadyDepth::filled(cfg, n, tenants);
    g.bench_function(id, |bch| {
        bch.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += timed_batch_step(&mut b);
            }
            total
        })
    });
    // The last 256 submits are still in ingress, drained by the next step (none if a
    // filter skipped this benchmark).
    let waiting = b.sched.waiting();
    assert!(
        waiting == n || waiting + BATCH as usize == n,
        "{waiting} waiting"
    );
    assert!(b.sched.conservation().is_balanced());
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g
}

fn step(c: &mut Criterion) {
    let mut g = group(c, "step_batch256");
    for &n in &[1_000usize, 10_000, 100_000, 1_000_000] {
        bench_steps(
            &mut g,
            BenchmarkId::from_parameter(n),
            steady::config(n),
            n,
            0,
        );
    }
    g.finish();
    let mut g = group(c, "step_batch256_ladder");
    for &n in &[100_000usize, 1_000_000] {
        bench_steps(
            &mut g,
            BenchmarkId::from_parameter(n),
            steady::config_in(triage::QueueOrder::Ladder, n),
            n,
            0,
        );
    }
    g.finish();
}

/// The same step at 100k queued with SLO tracking on (the default) and off: the cost of
/// the tracker and its per-request state.
fn tracking(c: &mut Criterion) {
    let mut g = group(c, "step_slo_tracking_100k");
    for on in [true, false] {
        let mut cfg = steady::config(100_000);
        cfg.slo.enabled = on;
        let id = BenchmarkId::from_parameter(if on { "on" } else { "off" });
        bench_steps(&mut g, id, cfg, 100_000, 0);
    }
    g.finish();
}

/// The same step at 100k queued from 1,000 tenants, with fairness between tenants on and
/// off: the cost of per-tenant lanes and the virtual token counters.
fn fairness(c: &mut Criterion) {
    let mut g = group(c, "step_fairness_1000_tenants_100k");
    for on in [true, false] {
        let cfg = steady::fairness_config(on, 1_000);
        let id = BenchmarkId::from_parameter(if on { "on" } else { "off" });
        bench_steps(&mut g, id, cfg, 100_000, 1_000);
    }
    g.finish();
}

criterion_group!(benches, step, tracking, fairness);
criterion_main!(benches);
