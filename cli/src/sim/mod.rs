//! The engine simulator: cost model, traces, engine loop, policies and reports.
//!
//! Data flow: [`trace`] readers produce raw rows, [`workload`] turns them into a
//! classed, time-scaled arrival stream of [`policy::SimRequest`]s, [`engine`]
//! replays that stream against one [`policy::Policy`] using a [`cost::CostModel`]
//! for iteration times, and [`metrics`] / [`report`] / [`plot`] summarise the
//! per-request outcomes.

pub mod budget;
pub mod class;
pub mod cost;
pub mod engine;
pub mod fit;
pub mod metrics;
pub mod model;
pub mod percentile;
pub mod plot;
pub mod policy;
pub mod policy_fcfs;
pub mod policy_triage;
pub mod policy_vllm_priority;
pub mod profile;
pub mod report;
pub mod rng;
pub mod trace;
pub mod vllm_like;
pub mod workload;
