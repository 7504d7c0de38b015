//! Fairness on / off at 100k queued from 1,000 tenants (or `TENANTS`), interleaved in one
//! process.
//!
//! `cargo bench -p triage --bench fairness_ratio [-- STEPS [WARMUP [TENANTS [MAX_WAIT_MS]]]]`
//!
//! Criterion measures the two configurations one after the other, and on a shared machine
//! their ratio swings with whatever else runs meanwhile. Here two schedulers are filled
//! with the same workload as `step_fairness_1000_tenants_100k` (benches/step.rs: 100k
//! requests from 1,000 tenants round robin, 256 admissions per step, 8-token prompts) and
//! stepped alternately, one step each in turn, so both see the same machine; the ratio of
//! their median (and mean) step times is printed.
//!
//! Before timing, both run `WARMUP` untimed steps (default 1,000; 0 measures from the
//! fill). The fill is not the steady state: it stamps arrivals in chunks of 4,096, so a
//! tenant's lane holds about 1.4 requests per bucket, where the steady state (256 arrivals
//! per 10 ms step) holds one, and for the first few hundred steps lanes are still growing
//! their bucket deques. Both figures are worth knowing; `docs/benchmarks.md` gives both.
//!
//! `TENANTS` (default 1,000) spreads the same requests over that many tenants: the ratio
//! grows with the tenants a step touches (`docs/benchmarks.md` has 1 to 1,000).
//!
//! `MAX_WAIT_MS` (default: the configuration's 60 s) sets `max_wait_ms`. The queue holds
//! about 4 s of arrivals, so with a lower value every step finds requests past their max
//! wait and gives them the overdue share: that path looks up the oldest request of a class
//! each time it admits one.

mod common;

use common::timed_batch_step;
use std::time::Duration;
use triage_testkit::steady::{self, SteadyDepth};

fn filled(on: bool, tenants: u64, max_wait_ms: Option<u64>) -> SteadyDepth {
    let mut config = steady::fairness_config(on, tenants);
    if let Some(ms) = max_wait_ms {
        config.max_wait_ms = ms;
        // The configuration wants max wait above every promotion threshold (which only
        // the ladder order uses): scale them below it, keeping their order.
        let top = config
            .classes
            .iter()
            .filter_map(|c| c.promote_after_ms)
            .max();
        if let Some(top) = top.filter(|&t| t >= ms) {
            for c in &mut config.classes {
                c.promote_after_ms = c.promote_after_ms.map(|p| p * (ms - 1) / top);
            }
        }
    }
    SteadyDepth::filled(config, 100_000, tenants)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn mean(v: &[Duration]) -> Duration {
    v.iter().sum::<Duration>() / v.len() as u32
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are the step and warm-up counts.
    let mut numbers = std::env::args().filter_map(|a| a.parse::<usize>().ok());
    let steps = numbers.next().unwrap_or(2_000);
    let warmup = numbers.next().unwrap_or(1_000);
    let tenants = numbers.next().unwrap_or(1_000).max(1) as u64;
    let max_wait_ms = numbers.next().map(|ms| ms as u64);
    let (mut on, mut off) = (
        filled(true, tenants, max_wait_ms),
        filled(false, tenants, max_wait_ms),
    );
    for _ in 0..warmup {
        timed_batch_step(&mut on);
        timed_batch_step(&mut off);
    }
    let (mut t_on, mut t_off) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        t_on.push(timed_batch_step(&mut on));
        t_off.push(timed_batch_step(&mut off));
    }
    assert!(on.sched.conservation().is_balanced() && off.sched.conservation().is_balanced());
    let (m_on, m_off) = (mean(&t_on), mean(&t_off));
    let (p_on, p_off) = (median(&mut t_on), median(&mut t_off));
    println!("fairness on : median {p_on:?}, mean {m_on:?} per step ({steps} steps after {warmup} untimed, {tenants} tenants)");
    println!("fairness off: median {p_off:?}, mean {m_off:?} per step");
    if let Some(ms) = max_wait_ms {
        println!("max_wait_ms = {ms}");
    }
    println!(
        "on / off: median {:.2}x, mean {:.2}x",
        p_on.as_secs_f64() / p_off.as_secs_f64(),
        m_on.as_secs_f64() / m_off.as_secs_f64()
    );
}
