//! Push cost of the standalone lock-free ingress (`triage::lockfree`: table reserve +
//! intrusive MPSC push) against its baselines, in one run:
//!
//! * `uncontended/*`: one thread; `lockfree` vs `crossbeam_queue::SegQueue::push` of the
//!   same 32-byte payload (issue 17 target: ≤ 2×).
//! * `producers/*/P`: P threads (2, 4, 8) pushing at once; `lockfree` (all into one queue,
//!   one free stack per thread) and `lockfree_sharded` (thread t into queue t, the
//!   per-(shard, class) layout the ingress will use) vs a `Mutex<BinaryHeap>` push (target:
//!   ≥ 2× faster). Wall time from releasing the producers to the last one finishing, so
//!   time per element is inverse throughput.
//!
//! Iterations run in rounds of `ROUND` pushes; between rounds, untimed, the queue is drained
//! (and, for the table, the slots freed and returned in one batch), so every round starts
//! from the same state and the table's free-stack path is the one measured after the first
//! round. Compare ratios within one run only.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam_queue::SegQueue;
use std::collections::BinaryHeap;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use triage::lockfree::{queue, Consumer, FreeBatch, Pop, Producer, Table};

const ROUND: u64 = 1 << 14;

/// About the size of a request's spec + arrival + epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Payload([u64; 4]);

fn payload(i: u64) -> Payload {
    Payload([i, i ^ 0x5555, 100, 200])
}

struct Lockfree {
    table: Arc<Table<Payload>>,
    producers: Vec<Producer<Payload>>,
    consumers: Vec<Consumer<Payload>>,
}

impl Lockfree {
    /// A table with `shards` free stacks and `queues` queues over it.
    fn new(shards: usize, queues: usize) -> Self {
        let table = Arc::new(Table::new(ROUND as u32, shards));
        let (producers, consumers) = (0..queues).map(|_| queue(Arc::clone(&table))).unzip();
        Self {
            table,
            producers,
            consumers,
        }
    }

    fn push(&self, shard: usize, i: u64) {
        let r = self
            .table
            .reserve(shard, payload(i))
            .expect("room for a round");
        self.producers[shard % self.producers.len()]
            .push(r)
            .expect("open");
    }

    /// Untimed: drain and free everything, returning the slots in one batch per shard.
    fn reset(&mut self, shards: usize) {
        let mut batch = FreeBatch::new();
        let mut n = 0usize;
        let per_shard = (ROUND as usize / shards).max(1);
        for consumer in &mut self.consumers {
            loop {
                match consumer.pop() {
                    Pop::Item(e) => {
                        std::hint::black_box(self.table.payload(&e));
                        self.table.free(&mut batch, e);
                        n += 1;
                        if n % per_shard == 0 {
                            self.table.release(n / per_shard, &mut batch);
                        }
                    }
                    Pop::Empty => break,
                    Pop::Busy => std::thread::yield_now(),
                }
            }
        }
        self.table.release(0, &mut batch);
    }
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("uncontended");
    g.throughput(Throughput::Elements(1));
    g.bench_function("lockfree", |b| {
        let mut q = Lockfree::new(1, 1);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(ROUND);
                let start = Instant::now();
                for i in 0..n {
                    q.push(0, i);
                }
                total += start.elapsed();
                q.reset(1);
                left -= n;
            }
            total
        });
    });
    g.bench_function("segqueue", |b| {
        let q = SegQueue::new();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(ROUND);
                let start = Instant::now();
                for i in 0..n {
                    q.push(payload(i));
                }
                total += start.elapsed();
                while let Some(v) = q.pop() {
                    std::hint::black_box(v);
                }
                left -= n;
            }
            total
        });
    });
    g.finish();
}

/// Runs `push(thread, i)` for `n` items split over `p` threads; wall time of the pushes.
fn timed_threads(p: usize, n: u64, push: &(dyn Fn(usize, u64) + Sync)) -> Duration {
    let per = n.div_ceil(p as u64);
    let barrier = Barrier::new(p + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..p)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let lo = t as u64 * per;
                    for i in lo..(lo + per).min(n) {
                        push(t, i);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().expect("producer");
        }
        start.elapsed()
    })
}

fn producers(c: &mut Criterion) {
    let mut g = c.benchmark_group("producers");
    g.throughput(Throughput::Elements(1));
    for p in [2usize, 4, 8] {
        for (name, queues) in [("lockfree", 1), ("lockfree_sharded", p)] {
            g.bench_with_input(BenchmarkId::new(name, p), &p, |b, &p| {
                let mut q = Lockfree::new(p, queues);
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(ROUND);
                        total += timed_threads(p, n, &|t, i| q.push(t, i));
                        q.reset(p);
                        left -= n;
                    }
                    total
                });
            });
        }
        g.bench_with_input(BenchmarkId::new("mutex_heap", p), &p, |b, &p| {
            let heap = Mutex::new(BinaryHeap::with_capacity(ROUND as usize));
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(ROUND);
                    total += timed_threads(p, n, &|_, i| {
                        heap.lock().expect("not poisoned").push(payload(i))
                    });
                    heap.lock().expect("not poisoned").clear();
                    left -= n;
                }
                total
            });
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = uncontended, producers
}
criterion_main!(benches);
