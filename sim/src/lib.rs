//! `triage-sim`: a deterministic discrete-event simulator of one GPU serving engine.
//!
//! Cost model, traces, engine loop, policies and reports; it replays real request
//! traces through several scheduling policies (the `triage` library among them) and
//! reports per-class latency and SLO attainment. The `triage` command-line tool
//! (`triage simulate`, `triage tenants`) is a front-end over it.
//!
//! Data flow: [`trace`] readers produce raw rows, [`workload`] turns them into a
//! classed, time-scaled arrival stream of [`policies::SimRequest`]s, [`engine`]
//! replays that stream against one [`policies::Policy`] using a [`cost::CostModel`]
//! for iteration times, and [`metrics`] / [`report`] / [`plot`] summarise the
//! per-request outcomes. Long replays report progress through the callback
//! [`engine::run`] takes ([`engine::Progress`]); the crate itself prints nothing.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
pub mod class;
pub mod cost;
pub mod engine;
pub mod fit;
pub mod metrics;
pub mod model;
pub mod percentile;
pub mod plot;
pub mod policies;
pub mod profile;
pub mod report;
pub mod rng;
pub mod run;
pub mod tenants;
pub mod trace;
pub mod workload;
