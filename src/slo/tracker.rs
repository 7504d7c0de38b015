//! The SLO tracker: fed by the scheduler's lifecycle events on the engine thread, it keeps
//! per class latency histograms over sliding windows and reports each missed target the
//! moment it is missed.

use super::requests::{Requests, Tag};
use super::targets::{ClassSlo, SloConfig, SloTarget};
use super::violation::{Reporter, Violation, ViolationKind};
use super::window::Windowed;
use crate::class::{Class, ClassSet};
use crate::error::ConfigError;
use crate::request::RequestId;
use crate::time::Timestamp;
use crossbeam_channel::Receiver;
use std::collections::VecDeque;
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

    fn index(self) -> usize {
        self as usize
    }
}

/// Which samples a query covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SloWindow {
    /// The sliding window of this many seconds (one of [`SloConfig::windows_s`]).
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

/// A deadline to check at `tick`: the request misses its target if still pending after
/// `at`. 16 bytes: one is pushed per request queued, into a ring that is cold by then.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    /// When the bound passes: the request's arrival plus its class's bound.
    at: Timestamp,
    /// The request. The deadline is its current request's if that one is in the queue's
    /// class and its arrival plus the class's bound is `at`; otherwise the request ended
    /// or moved and the deadline is skipped. (A later request under the same id, same
    /// class and same arrival has this very deadline too, so checking it is the same.)
    id: RequestId,
}

/// Deadlines sorted by `at`. Deadlines of one class are arrival plus a constant, so nearly
/// every push is at the back; a push out of order (arrivals drained out of order, a
/// reclassified request) is a binary search and an insert near its place.
#[derive(Debug, Default)]
struct DeadlineQueue(VecDeque<Deadline>);

impl DeadlineQueue {
    fn push(&mut self, d: Deadline) {
        if self.0.back().is_none_or(|b| b.at <= d.at) {
            self.0.push_back(d);
        } else {
            let i = self.0.partition_point(|x| x.at <= d.at);
            self.0.insert(i, d);
        }
    }

    /// The front deadline if it is before `now`, removed.
    fn pop_expired(&mut self, now: Timestamp) -> Option<Deadline> {
        if self.0.front().is_some_and(|d| d.at < now) {
            self.0.pop_front()
        } else {
            None
        }
    }
}

/// Per class state.
#[derive(Debug)]
struct ClassState {
    /// The class's targets.
    slo: ClassSlo,
    /// `[metric]` histograms, indexed by [`SloMetric::index`].
    hists: [Windowed; 4],
    /// One deadline per request queued in the class, and per request moved into it with
    /// no first token and no TTFT miss reported, at arrival plus the TTFT bound; empty if
    /// the class has no TTFT target. Deadlines of ended or moved requests stay until
    /// they expire and are skipped then.
    ttft_deadlines: DeadlineQueue,
    /// As `ttft_deadlines`, for the end-to-end bound (a moved request's deadline is
    /// pushed if it has no end-to-end miss reported).
    e2e_deadlines: DeadlineQueue,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Tracks SLOs per class from the scheduler's lifecycle events. Owned by the engine thread:
/// plain data, no locks; every method takes the current time, so it is exact under an
/// injected clock.
///
/// Events for a request id the tracker does not hold (never queued, or already ended) are
/// ignored, so the tracker never fails the engine.
///
/// Violations are reported the moment they are known: [`SloTracker::tick`] (once per step)
/// reports requests still without a first token past their TTFT bound (while queued, too)
/// and requests still unfinished past their end-to-end bound, popping only expired
/// deadlines; [`SloTracker::first_token`] and [`SloTracker::finished`] report the misses
/// they observe; [`SloTracker::cancelled`] and [`SloTracker::timed_out`] report a bound
/// already passed. A request is reported at most once per kind.
///
/// ```
/// use std::time::Duration;
/// use triage::{Class, RequestId, SchedulerConfig, SloConfig, SloTracker, Timestamp, ViolationKind};
///
/// let classes = SchedulerConfig::default().class_set();
/// let mut slo = SloTracker::new(SloConfig::default(), &classes)?;
/// let reports = slo.subscribe(64);
/// slo.queued(RequestId(1), Class::HIGH, Timestamp::from_millis(0));
/// slo.tick(Timestamp::from_millis(400));
/// assert!(reports.try_recv().is_err()); // within HIGH's 500 ms TTFT bound
/// slo.tick(Timestamp::from_millis(501));
/// let v = reports.try_recv()?; // still queued past it: reported now
/// assert_eq!((v.kind, v.while_queued), (ViolationKind::Ttft, true));
/// assert_eq!(v.observed, Duration::from_millis(501));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SloTracker {
    /// The configuration, validated for the class count at construction.
    config: SloConfig,
    /// One per class of `config.classes`, same index.
    classes: Vec<ClassState>,
    /// Every request queued and not yet ended (empty while tracking is off).
    requests: Requests,
    /// Where violations go; counts every report ever made.
    reporter: Reporter,
}

impl SloTracker {
    /// A tracker for `classes` with `config`'s targets (one entry per class) and windows.
    pub fn new(config: SloConfig, classes: &ClassSet) -> Result<Self, ConfigError> {
        config.validate_for(classes.len())?;
        let class_states = config
            .classes
            .iter()
            .map(|slo| ClassState {
                slo: slo.clone(),
                hists: std::array::from_fn(|_| {
                    Windowed::new(&config.windows_s, config.sub_windows)
                }),
                ttft_deadlines: DeadlineQueue::default(),
                e2e_deadlines: DeadlineQueue::default(),
            })
            .collect();
        Ok(Self {
            reporter: Reporter::new(
                classes
                    .iter()
                    .map(|c| classes.name(c).to_string())
                    .collect(),
            ),
            classes: class_states,
            requests: Requests::default(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SloConfig {
        &self.config
    }

    /// Every window queries accept: the sliding windows, shortest first, then cumulative.
    pub fn windows(&self) -> Vec<SloWindow> {
        self.config
            .windows_s
            .iter()
            .map(|&s| SloWindow::Sliding(s))
            .chain(std::iter::once(SloWindow::Cumulative))
            .collect()
    }

    /// A new bounded channel that receives every violation reported from now on. A full
    /// channel never blocks the tracker: the report is dropped for that subscriber and
    /// counted ([`SloTracker::violations_dropped`]). Dropping the receiver unsubscribes
    /// (at the next report). Clones of the receiver share one queue.
    pub fn subscribe(&mut self, capacity: usize) -> Receiver<Violation> {
        self.reporter.subscribe(capacity)
    }

    /// How many subscribers are connected (as of the last report).
    pub fn subscribers(&self) -> usize {
        self.reporter.subscribers()
    }

    /// Violations of `kind` reported for `class` so far.
    pub fn violations_total(&self, class: Class, kind: ViolationKind) -> u64 {
        self.reporter.count(class, kind)
    }

    /// Reports dropped because a subscriber's channel was full, so far.
    pub fn violations_dropped(&self) -> u64 {
        self.reporter.dropped()
    }

    /// Requests the tracker holds (queued, running or preempted).
    pub fn tracked(&self) -> usize {
        self.requests.len()
    }

    /// A request entered the scheduler's queue with class `class` at `arrival`. Queuing an
    /// id the tracker already holds starts a new request under that id. An unknown class
    /// is ignored.
    pub fn queued(&mut self, id: RequestId, class: Class, arrival: Timestamp) {
        if !self.config.enabled {
            return;
        }
        let Some(cs) = self.classes.get_mut(class.index()) else {
            return;
        };
        self.requests.queue(id, class, arrival);
        if let Some(t) = cs.slo.ttft {
            cs.ttft_deadlines.push(Deadline {
                at: arrival.saturating_add(t.bound()),
                id,
            });
        }
        if let Some(t) = cs.slo.e2e {
            cs.e2e_deadlines.push(Deadline {
                at: arrival.saturating_add(t.bound()),
                id,
            });
        }
    }

    /// The request started running. Its first admission records its queue wait; a
    /// re-admission after preemption records nothing.
    pub fn admitted(&mut self, id: RequestId, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        let Some(st) = self.requests.start(id) else {
            return;
        };
        st.waiting = false;
        if !st.admitted_once {
            st.admitted_once = true;
            let wait = now.saturating_since(st.arrival);
            self.classes[st.tag.class().index()].hists[SloMetric::QueueWait.index()].record(
                now.0,
                micros(wait),
                1,
            );
        }
    }

    /// The request produced its first output token. Records TTFT and reports a TTFT miss
    /// not reported yet. A second call is ignored.
    pub fn first_token(&mut self, id: RequestId, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        let Some(st) = self.requests.start(id) else {
            return;
        };
        if st.first_token.is_some() {
            return;
        }
        st.first_token = Some(now);
        st.last_token = now;
        st.waiting = false;
        let ttft = now.saturating_since(st.arrival);
        let cs = &mut self.classes[st.tag.class().index()];
        cs.hists[SloMetric::Ttft.index()].record(now.0, micros(ttft), 1);
        if let Some(t) = cs.slo.ttft {
            if ttft > t.bound() {
                let miss = Miss::new(ViolationKind::Ttft, t, ttft, now);
                report(&mut self.reporter, id, &mut st.tag, st.waiting, miss);
            }
        }
    }

    /// The request produced `n` more output tokens at `now`: records `n` TPOT samples of
    /// (gap since its previous token) / `n`. If it had no first token yet, the first of
    /// these is its first token (as [`SloTracker::first_token`]) and the others are
    /// counted with no gap measured.
    pub fn tokens(&mut self, id: RequestId, now: Timestamp, n: u32) {
        if !self.config.enabled {
            return;
        }
        if n == 0 {
            return;
        }
        let Some(st) = self.requests.start(id) else {
            return;
        };
        if st.first_token.is_some() {
            st.waiting = false;
            let gap = now.saturating_since(st.last_token);
            st.last_token = st.last_token.max(now);
            st.later_tokens += u64::from(n);
            let per_token = gap / n;
            self.classes[st.tag.class().index()].hists[SloMetric::Tpot.index()].record(
                now.0,
                micros(per_token),
                u64::from(n),
            );
            return;
        }
        self.first_token(id, now);
        if let Some(st) = self.requests.started_mut(id) {
            st.later_tokens += u64::from(n - 1);
        }
    }

    /// The engine finished the request. Records end to end, reports an end-to-end miss
    /// and a TPOT miss (mean gap between its output tokens over the bound) not reported yet,
    /// and a TTFT miss if it never produced a token, and forgets it.
    pub fn finished(&mut self, id: RequestId, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        let Some(mut st) = self.requests.remove(id) else {
            return;
        };
        let e2e = now.saturating_since(st.arrival);
        let cs = &mut self.classes[st.tag.class().index()];
        cs.hists[SloMetric::EndToEnd.index()].record(now.0, micros(e2e), 1);
        let r = &mut self.reporter;
        if let Some(t) = cs.slo.e2e {
            if e2e > t.bound() {
                let miss = Miss::new(ViolationKind::EndToEnd, t, e2e, now);
                report(r, id, &mut st.tag, false, miss);
            }
        }
        if let (Some(t), Some(first)) = (cs.slo.tpot, st.first_token) {
            let span = st.last_token.saturating_since(first);
            if let Some(mean) = nanos(span).checked_div(st.later_tokens) {
                let mean = Duration::from_nanos(mean);
                if mean > t.bound() {
                    let miss = Miss::new(ViolationKind::Tpot, t, mean, now);
                    report(r, id, &mut st.tag, false, miss);
                }
            }
        }
        if let (Some(t), None) = (cs.slo.ttft, st.first_token) {
            if e2e > t.bound() {
                let miss = Miss::new(ViolationKind::Ttft, t, e2e, now);
                report(r, id, &mut st.tag, false, miss);
            }
        }
    }

    /// The request was preempted and is waiting again. Its later reports say
    /// `while_queued` until it is admitted again.
    pub fn preempted(&mut self, id: RequestId, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        // Nothing is measured at a preemption; `now` keeps the event API uniform.
        let _ = now;
        // A request never admitted (not started) is waiting already.
        if let Some(st) = self.requests.started_mut(id) {
            st.waiting = true;
        }
    }

    /// The client cancelled the request: reports a TTFT or end-to-end bound it had
    /// already passed (and that no tick had reported yet), and forgets it.
    pub fn cancelled(&mut self, id: RequestId, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        self.ended_early(id, now);
    }

    /// The request timed out in the queue: as [`SloTracker::cancelled`].
    pub fn timed_out(&mut self, id: RequestId, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        self.ended_early(id, now);
    }

    fn ended_early(&mut self, id: RequestId, now: Timestamp) {
        let Some(mut st) = self.requests.remove(id) else {
            return;
        };
        let elapsed = now.saturating_since(st.arrival);
        let slo = &self.classes[st.tag.class().index()].slo;
        if let (Some(t), None) = (slo.ttft, st.first_token) {
            if elapsed > t.bound() {
                let miss = Miss::new(ViolationKind::Ttft, t, elapsed, now);
                report(&mut self.reporter, id, &mut st.tag, st.waiting, miss);
            }
        }
        if let Some(t) = slo.e2e {
            if elapsed > t.bound() {
                let miss = Miss::new(ViolationKind::EndToEnd, t, elapsed, now);
                report(&mut self.reporter, id, &mut st.tag, st.waiting, miss);
            }
        }
    }

    /// The request's class changed (reprioritised). Its targets are now `class`'s,
    /// measured from its original arrival; samples recorded from now on go to `class`. A
    /// deadline the new class's bound has already passed is reported at the next tick.
    pub fn reclassified(&mut self, id: RequestId, class: Class) {
        if !self.config.enabled {
            return;
        }
        let Some(st) = self.requests.get_mut(id) else {
            return;
        };
        if st.tag.class() == class {
            return;
        }
        let Some(cs) = self.classes.get_mut(class.index()) else {
            return;
        };
        st.tag.set_class(class);
        let arrival = st.arrival;
        let d = |t: SloTarget| Deadline {
            at: arrival.saturating_add(t.bound()),
            id,
        };
        if let Some(t) = cs.slo.ttft {
            if !st.has_first_token && !st.tag.reported(ViolationKind::Ttft) {
                cs.ttft_deadlines.push(d(t));
            }
        }
        if let Some(t) = cs.slo.e2e {
            if !st.tag.reported(ViolationKind::EndToEnd) {
                cs.e2e_deadlines.push(d(t));
            }
        }
    }

    /// Reports every request whose TTFT bound passed before `now` without a first token,
    /// and every one whose end-to-end bound passed before `now` unfinished. Call once per
    /// step. Costs O(classes + deadlines that expired): it never scans the queued requests.
    pub fn tick(&mut self, now: Timestamp) {
        if !self.config.enabled {
            return;
        }
        for (ci, cs) in self.classes.iter_mut().enumerate() {
            let class = Class::from_index(ci as u8);
            if let Some(t) = cs.slo.ttft {
                while let Some(d) = cs.ttft_deadlines.pop_expired(now) {
                    let Some(st) = self.requests.get_mut(d.id) else {
                        continue;
                    };
                    let current = st.arrival.saturating_add(t.bound()) == d.at;
                    if current && st.tag.class() == class && !st.has_first_token {
                        let elapsed = now.saturating_since(st.arrival);
                        if elapsed > t.bound() {
                            let miss = Miss::new(ViolationKind::Ttft, t, elapsed, now);
                            report(&mut self.reporter, d.id, st.tag, st.waiting, miss);
                        }
                    }
                }
            }
            if let Some(t) = cs.slo.e2e {
                while let Some(d) = cs.e2e_deadlines.pop_expired(now) {
                    let Some(st) = self.requests.get_mut(d.id) else {
                        continue;
                    };
                    let current = st.arrival.saturating_add(t.bound()) == d.at;
                    if current && st.tag.class() == class {
                        let elapsed = now.saturating_since(st.arrival);
                        if elapsed > t.bound() {
                            let miss = Miss::new(ViolationKind::EndToEnd, t, elapsed, now);
                            report(&mut self.reporter, d.id, st.tag, st.waiting, miss);
                        }
                    }
                }
            }
        }
    }

    /// How `class` fares against its targets over `window` as of `now`; `None` if the
    /// class or the window is not configured. Costs one pass over each target's histogram
    /// buckets (a few thousand counters): call it at most every second or so, not per
    /// step.
    pub fn compliance(
        &mut self,
        class: Class,
        window: SloWindow,
        now: Timestamp,
    ) -> Option<ClassCompliance> {
        let w = self.window_index(window)?;
        let cs = self.classes.get_mut(class.index())?;
        let slo = cs.slo.clone();
        let mut one = |metric: SloMetric, target: Option<SloTarget>| {
            target.and_then(|t| {
                let s = cs.hists[metric.index()].stats(
                    w,
                    now.0,
                    t.quantile,
                    Some(micros(t.bound())),
                )?;
                Some(TargetCompliance {
                    bound: t.bound(),
                    quantile: t.quantile,
                    measured: s.at_quantile.map(Duration::from_micros),
                    fraction_met: (s.count > 0).then(|| s.at_most_bound as f64 / s.count as f64),
                    samples: s.count,
                })
            })
        };
        Some(ClassCompliance {
            class,
            window,
            ttft: one(SloMetric::Ttft, slo.ttft),
            tpot: one(SloMetric::Tpot, slo.tpot),
            e2e: one(SloMetric::EndToEnd, slo.e2e),
        })
    }

    /// The latency at `quantile` (nearest rank, 3 significant digits) of `metric` for
    /// `class` over `window` as of `now`; `None` with no samples or no such class or window.
    pub fn percentile(
        &mut self,
        class: Class,
        metric: SloMetric,
        window: SloWindow,
        quantile: f64,
        now: Timestamp,
    ) -> Option<Duration> {
        let w = self.window_index(window)?;
        let cs = self.classes.get_mut(class.index())?;
        let s = cs.hists[metric.index()].stats(w, now.0, quantile, None)?;
        s.at_quantile.map(Duration::from_micros)
    }

    /// Samples of `metric` for `class` over `window` as of `now` (0 if no such class or
    /// window).
    pub fn samples(
        &mut self,
        class: Class,
        metric: SloMetric,
        window: SloWindow,
        now: Timestamp,
    ) -> u64 {
        let Some(w) = self.window_index(window) else {
            return 0;
        };
        self.classes
            .get_mut(class.index())
            .and_then(|cs| cs.hists[metric.index()].stats(w, now.0, 0.5, None))
            .map_or(0, |s| s.count)
    }

    /// `Some(None)` for cumulative, `Some(Some(i))` for the `i`th sliding window, `None`
    /// for a window not configured.
    fn window_index(&self, window: SloWindow) -> Option<Option<usize>> {
        match window {
            SloWindow::Cumulative => Some(None),
            SloWindow::Sliding(s) => self.config.windows_s.iter().position(|&w| w == s).map(Some),
        }
    }
}

/// One missed target, as observed.
#[derive(Clone, Copy, Debug)]
struct Miss {
    /// Which target.
    kind: ViolationKind,
    /// The target missed.
    target: SloTarget,
    /// The latency observed (so far, or final; for TPOT the mean gap).
    observed: Duration,
    /// When it was observed.
    now: Timestamp,
}

impl Miss {
    fn new(kind: ViolationKind, target: SloTarget, observed: Duration, now: Timestamp) -> Self {
        Self {
            kind,
            target,
            observed,
            now,
        }
    }
}

/// Reports `miss` for request `id` (whose state has `tag` and `waiting`) unless a miss of
/// that kind was already reported for it.
fn report(reporter: &mut Reporter, id: RequestId, tag: &mut Tag, waiting: bool, miss: Miss) {
    if tag.reported(miss.kind) {
        return;
    }
    tag.set_reported(miss.kind);
    reporter.emit(Violation {
        id,
        class: tag.class(),
        kind: miss.kind,
        bound: miss.target.bound(),
        observed: miss.observed,
        while_queued: waiting,
        at: miss.now,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;

    fn tracker() -> SloTracker {
        SloTracker::new(
            SloConfig::default(),
            &SchedulerConfig::default().class_set(),
        )
        .unwrap()
    }

    fn ms(v: u64) -> Timestamp {
        Timestamp::from_millis(v)
    }

    #[test]
    fn out_of_order_arrivals_are_reported_by_deadline() {
        let mut slo = tracker();
        let rx = slo.subscribe(8);
        // Drained out of arrival order (two shards): 2 arrived before 1.
        slo.queued(RequestId(1), Class::HIGH, ms(100));
        slo.queued(RequestId(2), Class::HIGH, ms(0));
        slo.queued(RequestId(3), Class::HIGH, ms(50));
        slo.tick(ms(501));
        assert_eq!(rx.try_recv().unwrap().id, RequestId(2));
        assert!(rx.try_recv().is_err());
        slo.tick(ms(551));
        assert_eq!(rx.try_recv().unwrap().id, RequestId(3));
        slo.tick(ms(601));
        assert_eq!(rx.try_recv().unwrap().id, RequestId(1));
    }

    #[test]
    fn tick_pops_only_expired_deadlines() {
        let mut slo = tracker();
        for i in 0..1_000 {
            slo.queued(RequestId(i), Class::HIGH, ms(i));
        }
        let pending = |slo: &SloTracker| slo.classes[0].ttft_deadlines.0.len();
        slo.tick(ms(500));
        assert_eq!(pending(&slo), 1_000);
        // Deadlines 500..=509 ms have passed at 509.5 ms: exactly those are popped.
        slo.tick(Timestamp(509_500_000));
        assert_eq!(pending(&slo), 990);
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 10);
        // Requests that ended leave their deadlines behind; ticks skip them.
        for i in 10..1_000 {
            slo.first_token(RequestId(i), ms(i + 100));
        }
        slo.tick(ms(10_000));
        assert_eq!(pending(&slo), 0);
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 10);
    }

    #[test]
    fn unknown_ids_and_classes_are_ignored() {
        let mut slo = tracker();
        slo.admitted(RequestId(1), ms(1));
        slo.first_token(RequestId(1), ms(1));
        slo.tokens(RequestId(1), ms(1), 3);
        slo.finished(RequestId(1), ms(1));
        slo.cancelled(RequestId(1), ms(1));
        slo.reclassified(RequestId(1), Class::LOW);
        slo.queued(RequestId(2), Class::from_index(7), ms(0));
        slo.queued(RequestId(3), Class::LOW, ms(0));
        slo.reclassified(RequestId(3), Class::from_index(7));
        assert_eq!(slo.tracked(), 1);
        slo.tick(ms(100_000));
        assert_eq!(slo.violations_total(Class::LOW, ViolationKind::EndToEnd), 1);
    }

    #[test]
    fn window_labels() {
        assert_eq!(SloWindow::Sliding(60).label(), "1m");
        assert_eq!(SloWindow::Sliding(300).label(), "5m");
        assert_eq!(SloWindow::Sliding(3600).label(), "1h");
        assert_eq!(SloWindow::Sliding(90).label(), "90s");
        assert_eq!(SloWindow::Cumulative.to_string(), "cumulative");
    }
}
