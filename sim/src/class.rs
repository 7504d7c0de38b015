//! Priority classes of the simulator and their SLO targets.
//!
//! A class is a plain `u8`: `0 = HIGH`, `1 = MEDIUM`, `2 = LOW` (lower is more
//! urgent, as in vLLM's `priority` field).

use serde::Serialize;

/// Most urgent class (interactive chat).
pub const HIGH: u8 = 0;
/// Default interactive class.
pub const MEDIUM: u8 = 1;
/// Batch class (code completion jobs in the default workload).
pub const LOW: u8 = 2;
/// Number of classes.
pub const NUM_CLASSES: usize = 3;

/// Display name of a class (`HIGH`, `MEDIUM`, `LOW`, else `C<n>`).
pub fn name(class: u8) -> String {
    match class {
        HIGH => "HIGH".to_string(),
        MEDIUM => "MEDIUM".to_string(),
        LOW => "LOW".to_string(),
        c => format!("C{c}"),
    }
}

/// Which latency a class's SLO constrains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SloKind {
    /// Time to first token.
    Ttft,
    /// Arrival to last token.
    EndToEnd,
}

/// One class's SLO: `kind` must be at most `target_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SloTarget {
    /// The constrained latency.
    pub kind: SloKind,
    /// Target in seconds.
    pub target_s: f64,
}

impl SloTarget {
    /// Human-readable form, e.g. `TTFT<=0.5s`.
    pub fn describe(&self) -> String {
        let k = match self.kind {
            SloKind::Ttft => "TTFT",
            SloKind::EndToEnd => "E2E",
        };
        format!("{k}<={}s", self.target_s)
    }
}

/// Default SLO targets: HIGH TTFT <= 500 ms, MEDIUM TTFT <= 2 s, LOW end-to-end <= 60 s.
pub fn default_slos() -> [SloTarget; NUM_CLASSES] {
    [
        SloTarget {
            kind: SloKind::Ttft,
            target_s: 0.5,
        },
        SloTarget {
            kind: SloKind::Ttft,
            target_s: 2.0,
        },
        SloTarget {
            kind: SloKind::EndToEnd,
            target_s: 60.0,
        },
    ]
}
