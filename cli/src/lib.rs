//! `triage-cli`: the command-line tool of the `triage` scheduler.
//!
//! Its main job is [`simulate`], the front-end of [`triage_sim`], a deterministic
//! discrete-event simulator of one GPU serving engine that replays real request
//! traces through several scheduling policies side by side and reports per-class
//! latency and SLO attainment (the progress bar is drawn here, from the simulator's
//! progress callback).
//! The binary (`triage`) is a thin [`clap`] front-end over [`simulate`], [`tenants`]
//! (fairness between tenants, off and on) and the benchmark harnesses of
//! [`triage_bench`] (`stress`, `bench-compare`, `slo-overhead`).
//! The subcommands' arguments are the binary's (`src/main.rs`, `src/commands/`); this
//! library holds what the integration tests call directly.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod simulate;
pub mod tenants;
