//! The pieces triage's tests, benches, stress run and property model share, so that each
//! exists once (dev-only: nothing shipped depends on this crate).
//!
//! * [`FakeEngine`] carries out a [`triage::Decision`] as an engine would: it runs each
//!   prefill chunk and decode token the step scheduled, holds KV blocks, reports progress
//!   and finishes requests at their output goal, and checks what the decision asks of it
//!   (a victim was running, an admitted request was not).
//! * [`steady`] is the steady-depth workload of the step benches: a scheduler filled to a
//!   depth on a manual clock that admits a batch per step and is refilled by as many.
//! * [`Rng`] is the one seeded generator (the simulator's SplitMix64).

mod engine;
pub mod steady;

pub use engine::{Carried, FakeEngine, Goal, Run};
pub use triage_sim::rng::SplitMix64 as Rng;
