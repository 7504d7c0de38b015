//! `triage-bench`: the benchmark harnesses of the `triage` scheduler on the wall clock,
//! run through the `triage` command (`triage-cli`), which parses their arguments.
//!
//! - [`stress`]: the scheduler at a large queue depth under live API traffic, every
//!   invariant checked (`triage stress`), with [`config_watch`] for its `--config` file
//!   and [`heap_counter`] for bytes per queued request;
//! - [`bench_compare`]: the same workloads through triage and the [`baselines`] a user
//!   would otherwise write, as ratios (`triage bench-compare`; its contended workload is
//!   [`contended`]);
//! - [`slo_overhead`]: the step's CPU time with SLO tracking on over off
//!   (`triage slo-overhead`).
//!
//! The crate-private `filled` module meters the testkit's steady-depth workload
//! (`triage_testkit::steady`) for the last two: a scheduler filled to a depth on a manual
//! clock, then stepped batch by batch. [`timing`] holds the latency summaries they all
//! report; `triage stress` runs its requests on the testkit's `FakeEngine`.
//!
//! [`counting_allocator::CountingAllocator`] is the global allocator that feeds
//! [`heap_counter`]; a binary that wants bytes per request measured declares it as its
//! `#[global_allocator]` and calls [`heap_counter::mark_installed`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allocator_state;
pub mod baselines;
pub mod bench_compare;
pub mod config_watch;
pub mod contended;
// The one module with `unsafe`: `GlobalAlloc` is an unsafe trait.
#[allow(unsafe_code)]
pub mod counting_allocator;
pub(crate) mod filled;
pub mod heap_counter;
pub mod slo_overhead;
pub mod stress;
pub mod timing;
