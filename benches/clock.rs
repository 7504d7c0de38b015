//! The arrival stamp's cost: `MonotonicClock::now` (what every submit reads) against
//! `Instant::now` (what it would cost without the time-stamp counter) and a bare `rdtsc`
//! where there is one, in one run. Part of the bound on submit's cost
//! (`docs/benchmarks.md`).

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Instant;
use triage::{Clock, MonotonicClock};

fn clock(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    let monotonic = MonotonicClock::new();
    g.bench_function("monotonic_clock", |b| b.iter(|| black_box(monotonic.now())));
    g.bench_function("instant", |b| b.iter(|| black_box(Instant::now())));
    #[cfg(target_arch = "x86_64")]
    g.bench_function("rdtsc", |b| {
        b.iter(|| {
            // SAFETY: `rdtsc` reads the time-stamp counter; it touches no memory.
            #[allow(unused_unsafe)]
            black_box(unsafe { core::arch::x86_64::_rdtsc() })
        })
    });
    g.finish();
}

criterion_group!(benches, clock);
criterion_main!(benches);
