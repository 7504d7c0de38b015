//! `Submitter::submit` throughput with 1, 2, 4 and 8 producer threads.
//!
//! Each producer submits its share of the iterations (ids disjoint, classes one third
//! each) into a scheduler on the monotonic clock (`Scheduler::new`, default shard count)
//! that no engine thread drains: the measurement is the API side alone. The time is the
//! wall time from releasing the producers to the last one finishing, so the reported time
//! per element is the inverse of the aggregate throughput. Nothing drains, and a class
//! holds at most its `queue_capacity` (waiting plus submitted since the last step), so the
//! iterations run in chunks of 64k submits, each into a fresh scheduler built untimed.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use triage::{Class, RequestSpec, Scheduler};
use triage_testkit::steady;

const CHUNK: u64 = 1 << 16;

fn run_chunk(producers: u64, n: u64) -> Duration {
    // Every class has room for the whole chunk.
    let (sched, api) = Scheduler::new(steady::config(CHUNK as usize)).expect("valid config");
    let per = n.div_ceil(producers);
    let barrier = Barrier::new(producers as usize + 1);
    let elapsed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..producers)
            .map(|p| {
                let api = api.clone();
                let barrier = &barrier;
                s.spawn(move || {
                    let lo = p * per;
                    let hi = (lo + per).min(n);
                    barrier.wait();
                    for id in lo..hi {
                        let class = Class::from_index((id % 3) as u8);
                        api.submit(RequestSpec::new(id, class, 100, 100))
                            .expect("submit refused");
                    }
                })
            })
            .collect();
        barrier.wait();
        let t = Instant::now();
        for h in handles {
            h.join().expect("producer panicked");
        }
        t.elapsed()
    });
    drop(sched);
    elapsed
}

fn submit(c: &mut Criterion) {
    let mut g = c.benchmark_group("submit");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for producers in [1u64, 2, 4, 8] {
        g.bench_with_input(
            BenchmarkId::new("producers", producers),
            &producers,
            |b, &p| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(CHUNK);
                        total += run_chunk(p, n);
                        left -= n;
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, submit);
criterion_main!(benches);
