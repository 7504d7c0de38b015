//! Cancel and reprioritize at 100k queued.
//!
//! A scheduler on a manual clock holds 100,000 waiting requests (classes one third each).
//! Four measurements, each over batches of 256 distinct waiting requests picked at random:
//!
//! * `cancel_call` / `reprioritize_call`: the API-thread call alone, by the handle the
//!   submit returned (a CAS on the request's slot, a notice push);
//! * `cancel_applied` / `reprioritize_applied`: the step (zero budget, so it admits nothing)
//!   that applies 256 such notices, reported per notice.
//!
//! Untimed between batches: the other half of the pair, and replacements for cancelled
//! requests so the queue stays at 100,000.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::{Duration, Instant};
use triage::{Class, RequestHandle};
use triage_testkit::steady::{self, mixed_class, SteadyDepth, FILL_CHUNK, ZERO};
use triage_testkit::Rng;

const QUEUED: usize = 100_000;
const BATCH: usize = 256;

struct State {
    b: SteadyDepth,
    /// Waiting requests' handles and their current class.
    ids: Vec<(RequestHandle, u8)>,
    rng: Rng,
}

impl State {
    fn new() -> Self {
        let mut cfg = steady::config(QUEUED);
        cfg.preemption.enabled = false;
        let mut b = SteadyDepth::new(cfg);
        let handles = b.fill(QUEUED, Duration::from_secs(5), FILL_CHUNK, mixed_class);
        let ids = (0..QUEUED as u64)
            .zip(handles)
            .map(|(i, h)| (h, mixed_class(i).index() as u8))
            .collect();
        Self {
            b,
            ids,
            rng: Rng::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn pick(&mut self) -> usize {
        (self.rng.next_u64() % self.ids.len() as u64) as usize
    }

    /// Cancels 256 random waiting requests; returns the time of the calls.
    fn cancel_batch(&mut self) -> Duration {
        let victims: Vec<RequestHandle> = (0..BATCH)
            .map(|_| {
                let i = self.pick();
                self.ids.swap_remove(i).0
            })
            .collect();
        let t = Instant::now();
        for &h in &victims {
            self.b.api.cancel(h).expect("cancel of a waiting request");
        }
        t.elapsed()
    }

    /// Moves 256 distinct random waiting requests to another class; returns the time of
    /// the calls.
    fn reprioritize_batch(&mut self) -> Duration {
        let mut picks = [(0usize, Class::HIGH); BATCH];
        let n = self.ids.len();
        let start = self.pick();
        for (j, p) in picks.iter_mut().enumerate() {
            // Consecutive slots from a random start: distinct within the batch.
            let i = (start + j) % n;
            let to = (self.ids[i].1 + 1) % 3;
            self.ids[i].1 = to;
            *p = (i, Class::from_index(to));
        }
        let t = Instant::now();
        for &(i, class) in &picks {
            self.b
                .api
                .reprioritize(self.ids[i].0, class)
                .expect("reprioritize of a waiting request");
        }
        t.elapsed()
    }

    /// The step that applies pending notices; returns its time.
    fn timed_step(&mut self) -> Duration {
        self.b.clock.advance(Duration::from_millis(1));
        let t = Instant::now();
        self.b.step(&ZERO);
        t.elapsed()
    }

    /// Submits replacements for cancelled requests and drains them (untimed).
    fn refill(&mut self) {
        while self.ids.len() < QUEUED {
            let class = mixed_class(self.b.next_id);
            let h = self.b.submit(class);
            self.ids.push((h, class.index() as u8));
        }
        self.b.step(&ZERO);
        assert_eq!(self.b.sched.waiting(), QUEUED);
    }
}

fn per_batches(iters: u64, mut batch: impl FnMut() -> Duration) -> Duration {
    let batches = iters.div_ceil(BATCH as u64).max(1);
    let mut total = Duration::ZERO;
    for _ in 0..batches {
        total += batch();
    }
    // Each batch is BATCH operations; scale to the iterations asked.
    total.mul_f64(iters as f64 / (batches * BATCH as u64) as f64)
}

fn control(c: &mut Criterion) {
    let mut st = State::new();
    let mut g = c.benchmark_group("control_100k_queued");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::from_parameter("cancel_call"), |bch| {
        bch.iter_custom(|iters| {
            per_batches(iters, || {
                let d = st.cancel_batch();
                st.timed_step();
                st.refill();
                d
            })
        })
    });
    g.bench_function(BenchmarkId::from_parameter("cancel_applied"), |bch| {
        bch.iter_custom(|iters| {
            per_batches(iters, || {
                st.cancel_batch();
                let d = st.timed_step();
                assert_eq!(st.b.d.cancelled.len(), BATCH);
                st.refill();
                d
            })
        })
    });
    g.bench_function(BenchmarkId::from_parameter("reprioritize_call"), |bch| {
        bch.iter_custom(|iters| {
            per_batches(iters, || {
                let d = st.reprioritize_batch();
                st.timed_step();
                d
            })
        })
    });
    g.bench_function(BenchmarkId::from_parameter("reprioritize_applied"), |bch| {
        bch.iter_custom(|iters| {
            per_batches(iters, || {
                st.reprioritize_batch();
                st.timed_step()
            })
        })
    });
    g.finish();
    assert!(st.b.sched.check_invariants().is_ok());
    assert!(st.b.sched.conservation().is_balanced());
}

criterion_group!(benches, control);
criterion_main!(benches);
