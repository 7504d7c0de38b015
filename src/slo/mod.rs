//! SLO tracking (contract point 10, `docs/contract.md`): per class targets for time to first
//! token, time per output token and end to end ([`SloConfig`]); a tracker fed by the
//! scheduler's lifecycle events that keeps HDR histograms over sliding windows and reports
//! each missed target the moment it is missed ([`SloTracker`], [`Violation`]); and
//! compliance per class and window ([`ClassCompliance`]).

mod compliance;
mod requests;
mod targets;
mod tracker;
mod violation;
mod window;

pub use compliance::{
    ClassCompliance, ParseSloWindowError, SloMetric, SloWindow, TargetCompliance,
};
pub use targets::{ClassSlo, SloConfig, SloTarget};
pub use tracker::SloTracker;
pub use violation::{Violation, ViolationKind};

pub(crate) use requests::SloSlot;
pub(crate) use tracker::{HeldRequest, HeldStates};
