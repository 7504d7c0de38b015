//! SLOs (contract point 10, `docs/contract.md`). Always: per class targets for time to
//! first token, time per output token and end to end ([`SloConfig`]), which also give
//! deadline order its deadlines. With the `slo` feature (on by default): a tracker fed by
//! the scheduler's lifecycle events that keeps histograms (HDR layout) over sliding
//! windows and reports each missed target the moment it is missed ([`SloTracker`],
//! [`Violation`]), and compliance per class and window ([`ClassCompliance`]). Without it
//! none of that is compiled: the scheduler keeps no per-request SLO state and no
//! histograms.

#[cfg(feature = "slo")]
mod compliance;
#[cfg(feature = "slo")]
mod deadlines;
#[cfg(feature = "slo")]
mod histogram;
#[cfg(feature = "slo")]
mod requests;
mod targets;
#[cfg(feature = "slo")]
mod tracker;
#[cfg(feature = "slo")]
mod violation;
#[cfg(feature = "slo")]
mod window;

#[cfg(feature = "slo")]
pub use compliance::{
    ClassCompliance, ParseSloWindowError, SloMetric, SloWindow, TargetCompliance,
};
pub use targets::{ClassSlo, SloConfig, SloTarget};
#[cfg(feature = "slo")]
pub use tracker::SloTracker;
#[cfg(feature = "slo")]
pub use violation::{Violation, ViolationKind};

#[cfg(feature = "slo")]
pub(crate) use requests::{SloSlot, SloTokens};
#[cfg(feature = "slo")]
pub(crate) use tracker::{HeldRequest, HeldSlot, HeldStates};
