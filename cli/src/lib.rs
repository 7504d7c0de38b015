//! `triage-cli`: the command-line tool of the `triage` scheduler.
//!
//! Its main job is [`simulate`], the front-end of [`triage_sim`], a deterministic
//! discrete-event simulator of one GPU serving engine that replays real request
//! traces through several scheduling policies side by side and reports per-class
//! latency and SLO attainment (the progress bar is drawn here, from the simulator's
//! progress callback).
//! The binary (`triage`) is a thin [`clap`] front-end over [`simulate`], [`tenants`]
//! (fairness between tenants, off and on), [`stress`], [`bench_compare`] and
//! [`slo_overhead`]. The crate-private `filled` module is the one scheduler harness the
//! last two step: filled to a depth on a manual clock, then stepped batch by batch.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alloc_count;
pub mod baselines;
pub mod bench_compare;
pub mod config_watch;
pub mod contended;
pub(crate) mod filled;
pub mod simulate;
pub mod slo_overhead;
pub mod stress;
pub mod tenants;
pub mod timing;
