//! SLO targets per class and the tracker's configuration, serde-ready with production
//! defaults and validation.

use crate::class::MAX_CLASSES;
use crate::error::err;
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest latency bound a target may have: 7 days.
const MAX_BOUND_MS: u64 = 7 * 24 * 3600 * 1000;
/// The longest sliding window: 1 day.
const MAX_WINDOW_S: u64 = 24 * 3600;
/// The most sliding windows.
const MAX_WINDOWS: usize = 8;

/// One latency target: `quantile` of the samples must be at most `bound_ms`
/// (e.g. p99 TTFT <= 500 ms is `{ bound_ms: 500, quantile: 0.99 }`). Each request is also
/// checked against `bound_ms` on its own, and reported as a violation when it misses it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloTarget {
    /// The latency bound, in milliseconds (1 to 604,800,000, i.e. 7 days).
    pub bound_ms: u64,
    /// The quantile that must meet the bound, strictly between 0 and 1 (0.99 for p99).
    pub quantile: f64,
}

impl SloTarget {
    /// A target of `quantile` at most `bound_ms` milliseconds.
    pub const fn new(bound_ms: u64, quantile: f64) -> Self {
        Self { bound_ms, quantile }
    }

    /// The bound as a duration.
    pub fn bound(&self) -> Duration {
        Duration::from_millis(self.bound_ms)
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if !(self.quantile > 0.0 && self.quantile < 1.0) {
            return Err(err(
                format!("{field}.quantile"),
                "a number strictly between 0 and 1 (0.99 for p99)",
                self.quantile,
            ));
        }
        if self.bound_ms == 0 || self.bound_ms > MAX_BOUND_MS {
            return Err(err(
                format!("{field}.bound_ms"),
                format!("1 to {MAX_BOUND_MS} milliseconds"),
                self.bound_ms,
            ));
        }
        Ok(())
    }
}

/// The targets of one class. A target left out (`None`) is not tracked for violations or
/// compliance; its latencies are still recorded in the histograms.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClassSlo {
    /// Time to first token: arrival to the first output token.
    pub ttft: Option<SloTarget>,
    /// Time per output token: the gap between consecutive output tokens. A request's
    /// violation check uses its mean gap at finish.
    pub tpot: Option<SloTarget>,
    /// End to end: arrival to finish.
    pub e2e: Option<SloTarget>,
}

impl ClassSlo {
    /// HIGH's default: p99 TTFT <= 500 ms.
    pub const fn high() -> Self {
        Self {
            ttft: Some(SloTarget::new(500, 0.99)),
            tpot: None,
            e2e: None,
        }
    }

    /// MEDIUM's default: p95 TTFT <= 2 s.
    pub const fn medium() -> Self {
        Self {
            ttft: Some(SloTarget::new(2_000, 0.95)),
            tpot: None,
            e2e: None,
        }
    }

    /// LOW's default (best effort): p99 end to end <= 60 s.
    pub const fn low() -> Self {
        Self {
            ttft: None,
            tpot: None,
            e2e: Some(SloTarget::new(60_000, 0.99)),
        }
    }

    /// The default targets of class `index` out of `classes`: the first class gets
    /// [`ClassSlo::high`], the last (when there are at least two) [`ClassSlo::low`], and
    /// every class in between [`ClassSlo::medium`]. With the default three classes that is
    /// HIGH, MEDIUM, LOW.
    pub fn default_for(index: usize, classes: usize) -> Self {
        if index == 0 {
            Self::high()
        } else if index + 1 >= classes {
            Self::low()
        } else {
            Self::medium()
        }
    }

    /// The default targets of the default class named `name` (compared as class names
    /// are, ignoring ASCII case): [`ClassSlo::high`] for `HIGH`, [`ClassSlo::medium`] for
    /// `MEDIUM`, [`ClassSlo::low`] for `LOW`, and no targets for any other name. What a
    /// TOML file without `[[slo.classes]]` gives each of its classes.
    ///
    /// ```
    /// use triage::ClassSlo;
    /// assert_eq!(ClassSlo::default_named("high"), ClassSlo::high());
    /// assert_eq!(ClassSlo::default_named("batch"), ClassSlo::default());
    /// ```
    pub fn default_named(name: &str) -> Self {
        let name = name.trim();
        if name.eq_ignore_ascii_case("HIGH") {
            Self::high()
        } else if name.eq_ignore_ascii_case("MEDIUM") {
            Self::medium()
        } else if name.eq_ignore_ascii_case("LOW") {
            Self::low()
        } else {
            Self::default()
        }
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        for (name, t) in [
            ("ttft", &self.ttft),
            ("tpot", &self.tpot),
            ("e2e", &self.e2e),
        ] {
            if let Some(t) = t {
                t.validate(&format!("{field}.{name}"))?;
            }
        }
        Ok(())
    }
}

/// The SLO tracker's configuration: targets per class (index = class index) and the
/// sliding windows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SloConfig {
    /// Whether the scheduler tracks SLOs at all (off: no histograms, no violation reports,
    /// no per-request state; the step does none of that work).
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Targets per class, most urgent first; one entry per scheduler class.
    pub classes: Vec<ClassSlo>,
    /// Sliding windows, in seconds, strictly increasing (1 to 86,400 s each, at most 8
    /// windows). Cumulative statistics are always kept as well.
    pub windows_s: Vec<u64>,
    /// Sub-windows per sliding window (2 to 60). A window of span `W` with `k` sub-windows
    /// counts every sample younger than `W * (k - 1) / k` and none older than `W`.
    pub sub_windows: u32,
}

fn enabled_default() -> bool {
    true
}

impl Default for SloConfig {
    /// The defaults for the three default classes.
    fn default() -> Self {
        Self::for_classes(3)
    }
}

impl SloConfig {
    /// Every window queries accept: the sliding windows, shortest first, then cumulative.
    #[cfg(feature = "slo")]
    pub fn windows(&self) -> Vec<crate::slo::SloWindow> {
        self.windows_s
            .iter()
            .map(|&s| crate::slo::SloWindow::Sliding(s))
            .chain(std::iter::once(crate::slo::SloWindow::Cumulative))
            .collect()
    }

    /// The default targets for `classes` classes (see [`ClassSlo::default_for`]), windows
    /// of 1 min, 5 min and 1 h, 6 sub-windows each.
    ///
    /// ```
    /// let cfg = triage::SloConfig::for_classes(3);
    /// assert_eq!(cfg.classes[0].ttft.unwrap().bound_ms, 500);
    /// assert_eq!(cfg.classes[1].ttft.unwrap().quantile, 0.95);
    /// assert_eq!(cfg.classes[2].e2e.unwrap().bound_ms, 60_000);
    /// assert_eq!(cfg.windows_s, vec![60, 300, 3600]);
    /// assert!(cfg.validate().is_ok());
    /// ```
    pub fn for_classes(classes: usize) -> Self {
        Self {
            enabled: true,
            classes: (0..classes)
                .map(|i| ClassSlo::default_for(i, classes))
                .collect(),
            windows_s: vec![60, 300, 3600],
            sub_windows: 6,
        }
    }

    /// Checks every rule; the first broken one is returned.
    ///
    /// ```
    /// let mut cfg = triage::SloConfig::default();
    /// cfg.classes[0].ttft.as_mut().unwrap().quantile = 1.0;
    /// let e = cfg.validate().unwrap_err();
    /// assert_eq!(e.field, "slo.classes[0].ttft.quantile");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.classes.len();
        if n == 0 || n > MAX_CLASSES {
            return Err(err("slo.classes", format!("1 to {MAX_CLASSES} classes"), n));
        }
        for (i, c) in self.classes.iter().enumerate() {
            c.validate(&format!("slo.classes[{i}]"))?;
        }
        if self.windows_s.len() > MAX_WINDOWS {
            return Err(err(
                "slo.windows_s",
                format!("at most {MAX_WINDOWS} windows"),
                self.windows_s.len(),
            ));
        }
        for (i, &w) in self.windows_s.iter().enumerate() {
            if w == 0 || w > MAX_WINDOW_S {
                return Err(err(
                    format!("slo.windows_s[{i}]"),
                    format!("1 to {MAX_WINDOW_S} seconds"),
                    w,
                ));
            }
            if i > 0 && w <= self.windows_s[i - 1] {
                return Err(err(
                    format!("slo.windows_s[{i}]"),
                    format!(
                        "more than the window before it (windows_s[{}] = {})",
                        i - 1,
                        self.windows_s[i - 1]
                    ),
                    w,
                ));
            }
        }
        if !(2..=60).contains(&self.sub_windows) {
            return Err(err("slo.sub_windows", "2 to 60", self.sub_windows));
        }
        Ok(())
    }

    /// Checks the rules and that there is one entry per scheduler class.
    pub fn validate_for(&self, classes: usize) -> Result<(), ConfigError> {
        self.validate()?;
        if self.classes.len() != classes {
            return Err(err(
                "slo.classes",
                format!(
                    "{classes} entries, one per scheduler class (or none: each class then \
                     gets the default targets of the default class of its name)"
                ),
                self.classes.len(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_per_class_count() {
        assert_eq!(SloConfig::for_classes(1).classes, vec![ClassSlo::high()]);
        assert_eq!(
            SloConfig::for_classes(2).classes,
            vec![ClassSlo::high(), ClassSlo::low()]
        );
        assert_eq!(
            SloConfig::for_classes(5).classes,
            vec![
                ClassSlo::high(),
                ClassSlo::medium(),
                ClassSlo::medium(),
                ClassSlo::medium(),
                ClassSlo::low()
            ]
        );
        for n in 1..=MAX_CLASSES {
            assert!(SloConfig::for_classes(n).validate_for(n).is_ok());
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        let check = |f: &dyn Fn(&mut SloConfig), field: &str| {
            let mut c = SloConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
        };
        check(
            &|c| c.classes[0].ttft.as_mut().unwrap().quantile = 0.0,
            "slo.classes[0].ttft.quantile",
        );
        check(
            &|c| c.classes[1].ttft.as_mut().unwrap().quantile = f64::NAN,
            "slo.classes[1].ttft.quantile",
        );
        check(
            &|c| c.classes[2].e2e.as_mut().unwrap().bound_ms = 0,
            "slo.classes[2].e2e.bound_ms",
        );
        check(
            &|c| c.classes[2].tpot = Some(SloTarget::new(50, 1.5)),
            "slo.classes[2].tpot.quantile",
        );
        check(&|c| c.classes.clear(), "slo.classes");
        check(&|c| c.windows_s = vec![60, 60], "slo.windows_s[1]");
        check(&|c| c.windows_s = vec![0], "slo.windows_s[0]");
        check(&|c| c.sub_windows = 1, "slo.sub_windows");
        let e = SloConfig::default().validate_for(4).unwrap_err();
        assert_eq!(e.field, "slo.classes");
    }
}
