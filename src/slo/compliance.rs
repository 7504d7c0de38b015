//! What a caller asks the tracker and what it answers: the latencies it records
//! ([`SloMetric`]), the windows it answers over ([`SloWindow`]) and a class's compliance
//! with its targets ([`ClassCompliance`]).

use super::violation::ViolationKind;
use crate::class::Class;
use std::fmt;
use std::time::Duration;

/// A latency the tracker records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SloMetric {
    /// Arrival to first admission (a preempted request's later admissions do not count).
    QueueWait,
    /// Arrival to first output token.
    Ttft,
    /// Gap between consecutive output tokens: a report of `n` tokens after a gap `g`
    /// records `n` samples of `g / n`.
    Tpot,
    /// Arrival to finish (finished requests only).
    EndToEnd,
}

impl SloMetric {
    /// Every metric, in index order.
    pub const ALL: [SloMetric; 4] = [
        SloMetric::QueueWait,
        SloMetric::Ttft,
        SloMetric::Tpot,
        SloMetric::EndToEnd,
    ];

    /// A stable lower-case name: `queue_wait`, `ttft`, `tpot`, `e2e`.
    pub fn as_str(self) -> &'static str {
        match self {
            SloMetric::QueueWait => "queue_wait",
            SloMetric::Ttft => "ttft",
            SloMetric::Tpot => "tpot",
            SloMetric::EndToEnd => "e2e",
        }
    }

    /// A dense index, in declaration order.
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Which samples a query covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SloWindow {
    /// The sliding window of this many seconds (one of [`crate::SloConfig::windows_s`]).
    Sliding(u64),
    /// Every sample since the tracker was created.
    Cumulative,
}

impl SloWindow {
    /// A stable label for metrics: `1m`, `5m`, `1h`, `90s`, ... or `cumulative`.
    pub fn label(self) -> String {
        match self {
            SloWindow::Cumulative => "cumulative".to_string(),
            SloWindow::Sliding(s) if s % 3600 == 0 => format!("{}h", s / 3600),
            SloWindow::Sliding(s) if s % 60 == 0 => format!("{}m", s / 60),
            SloWindow::Sliding(s) => format!("{s}s"),
        }
    }
}

impl fmt::Display for SloWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Parses what [`SloWindow::label`] writes, so labels round-trip: `cumulative`, or a whole
/// number of seconds, minutes or hours (`90s`, `5m`, `1h`); a bare number is seconds
/// (`90`). Surrounding spaces are ignored; nothing else is (no case folding, no spaces
/// inside, no fractions).
///
/// ```
/// use triage::SloWindow;
/// assert_eq!("5m".parse::<SloWindow>().unwrap(), SloWindow::Sliding(300));
/// assert_eq!("90".parse::<SloWindow>().unwrap(), SloWindow::Sliding(90));
/// assert_eq!(" cumulative ".parse::<SloWindow>().unwrap(), SloWindow::Cumulative);
/// let w = SloWindow::Sliding(3600);
/// assert_eq!(w.to_string().parse::<SloWindow>().unwrap(), w);
/// let err = "forever".parse::<SloWindow>().unwrap_err();
/// assert_eq!(err.input, "forever");
/// assert!(err.to_string().contains("\"cumulative\""));
/// ```
impl std::str::FromStr for SloWindow {
    type Err = ParseSloWindowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let w = s.trim();
        if w == "cumulative" {
            return Ok(SloWindow::Cumulative);
        }
        let (num, unit_s) = match w.as_bytes().last() {
            Some(b's') => (&w[..w.len() - 1], 1),
            Some(b'm') => (&w[..w.len() - 1], 60),
            Some(b'h') => (&w[..w.len() - 1], 3600),
            _ => (w, 1),
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_s))
            .map(SloWindow::Sliding)
            .ok_or_else(|| ParseSloWindowError {
                input: w.to_string(),
            })
    }
}

/// A string that names no [`SloWindow`] (see its `FromStr` for the accepted spellings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSloWindowError {
    /// The string given, without surrounding spaces.
    pub input: String,
}

impl fmt::Display for ParseSloWindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "window {:?}: expected \"cumulative\" or a duration such as \"60s\", \"5m\", \"1h\"",
            self.input
        )
    }
}

impl std::error::Error for ParseSloWindowError {}

/// How one target fares over one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TargetCompliance {
    /// The target's bound.
    pub bound: Duration,
    /// The target's quantile (0.99 for p99).
    pub quantile: f64,
    /// The measured latency at `quantile` (nearest rank, to the histogram's precision of
    /// 3 significant digits); `None` with no samples.
    pub measured: Option<Duration>,
    /// Fraction of samples at most `bound` (samples within the histogram's precision of
    /// the bound count as meeting it); `None` with no samples.
    pub fraction_met: Option<f64>,
    /// Samples in the window.
    pub samples: u64,
}

impl TargetCompliance {
    /// Whether the target is met (`measured <= bound`); `None` with no samples.
    pub fn is_met(&self) -> Option<bool> {
        self.measured.map(|m| m <= self.bound)
    }
}

/// How one class fares against its targets over one window. A target the class does not
/// have is `None`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassCompliance {
    /// The class.
    pub class: Class,
    /// The window.
    pub window: SloWindow,
    /// Time to first token.
    pub ttft: Option<TargetCompliance>,
    /// Time per output token (over all inter-token gaps in the window).
    pub tpot: Option<TargetCompliance>,
    /// End to end.
    pub e2e: Option<TargetCompliance>,
}

impl ClassCompliance {
    /// The compliance of the target that `kind` names.
    pub fn target(&self, kind: ViolationKind) -> Option<&TargetCompliance> {
        match kind {
            ViolationKind::Ttft => self.ttft.as_ref(),
            ViolationKind::Tpot => self.tpot.as_ref(),
            ViolationKind::EndToEnd => self.e2e.as_ref(),
        }
    }
}
