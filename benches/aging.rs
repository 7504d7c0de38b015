//! The cost of aging per step as the queue grows: it must stay flat.
//!
//! The scheduler runs in the ladder order (`QueueOrder::Ladder`), the one that ages by
//! buckets; in the default deadline order nothing is promoted. The queue holds `n` LOW requests in 1000 arrival buckets (10 ms apart over 10 s, so
//! `n / 1000` requests per bucket). Each measured step moves `now` forward by one bucket
//! width past the LOW→MEDIUM threshold (`promote_after_ms` of LOW in the default config),
//! so **exactly one bucket of `n / 1000`
//! requests is promoted per step** whatever `n` is; the budget admits nothing (preemption
//! off), so the step is promotion plus the fixed cost of an empty drain. `no_crossing` is
//! the same step at a `now` that moves no bucket, for reference.
//!
//! A filled queue supports 1000 promoting steps before every bucket is MEDIUM; then it is
//! refilled, untimed. Criterion plans its iteration counts from the warm-up's wall time,
//! refills included, so the large sizes run fewer iterations rather than longer.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::{Duration, Instant};
use triage::{Class, QueueOrder, Timestamp};
use triage_testkit::steady::{self, SteadyDepth, ZERO};

const BUCKETS: u64 = 1000;
const WIDTH_MS: u64 = 10;

struct Aging {
    b: SteadyDepth,
    /// LOW's promotion threshold, ms.
    low_after: u64,
    /// Next bucket to cross.
    next: u64,
}

fn build(n: usize) -> Aging {
    let mut cfg = steady::config_in(QueueOrder::Ladder, n);
    cfg.preemption.enabled = false;
    assert_eq!(cfg.bucket_width_ms, WIDTH_MS);
    let low_after = cfg.classes[Class::LOW.index()]
        .promote_after_ms
        .expect("LOW ages");
    // Every bucket is filled before the first one can cross.
    assert!(low_after >= BUCKETS * WIDTH_MS);
    let mut b = SteadyDepth::new(cfg);
    let per = n as u64 / BUCKETS;
    for k in 0..BUCKETS {
        b.clock.set(Timestamp::from_millis(k * WIDTH_MS));
        for _ in 0..per {
            b.submit(Class::LOW);
        }
        b.step(&ZERO);
    }
    assert_eq!(b.sched.waiting() as u64, per * BUCKETS);
    // Bucket k ends at (k + 1) × 10 ms and leaves LOW once it is `low_after` older.
    b.clock.set(Timestamp::from_millis(low_after));
    b.step(&ZERO);
    assert_eq!(b.d.summary.promoted, 0);
    Aging {
        b,
        low_after,
        next: 0,
    }
}

fn aging(c: &mut Criterion) {
    let mut g = c.benchmark_group("aging_step");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for &n in &[1_000usize, 10_000, 100_000, 1_000_000] {
        let per = n as u64 / BUCKETS;
        let mut st = build(n);
        g.bench_with_input(BenchmarkId::new("one_bucket_crosses", n), &n, |bch, _| {
            bch.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if st.next == BUCKETS {
                        st = build(n); // untimed refill once every bucket has crossed
                    }
                    let now = Timestamp::from_millis(st.low_after + (st.next + 1) * WIDTH_MS);
                    st.b.clock.set(now);
                    let t = Instant::now();
                    st.b.step(&ZERO);
                    total += t.elapsed();
                    assert_eq!(st.b.d.summary.promoted, per, "one bucket per step");
                    st.next += 1;
                }
                total
            })
        });
        g.bench_with_input(BenchmarkId::new("no_crossing", n), &n, |bch, _| {
            bch.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    st.b.step(&ZERO);
                }
                t.elapsed()
            })
        });
        assert!(st.b.sched.check_invariants().is_ok());
    }
    g.finish();
}

criterion_group!(benches, aging);
criterion_main!(benches);
