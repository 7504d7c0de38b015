//! The SLO tracker: fed by the scheduler's lifecycle events on the engine thread, it keeps
//! per class latency histograms over sliding windows and reports each missed target the
//! moment it is missed.
//!
//! Each request's state lives with the request, in its slab entry's [`SloSlot`] (and, once
//! it has run, its run record's [`SloTokens`]): the tracker keeps no map by id, so an
//! event costs no look-up. The scheduler is its only
//! feed; a user reads it through [`crate::Scheduler::slo`].

use super::compliance::{ClassCompliance, SloMetric, SloWindow, TargetCompliance};
use super::deadlines::{Deadline, DeadlineQueue, SlotRef};
use super::requests::{SloSlot, SloTokens, Started, StateMut, Tag, Tokens};
use super::targets::{ClassSlo, SloConfig, SloTarget};
use super::violation::{Reporter, Violation, ViolationKind};
use super::window::Windowed;
use crate::class::{Class, ClassSet};
use crate::error::ConfigError;
use crate::request::RequestId;
use crate::time::Timestamp;
use crossbeam_channel::Receiver;
use std::time::Duration;

/// A request whose holder keeps its [`SloSlot`]: the scheduler's slab entry.
pub(crate) trait HeldSlot {
    /// Its id (what violations name).
    fn id(&self) -> RequestId;
    /// Its arrival; never changes while it is held.
    fn arrival(&self) -> Timestamp;
    /// Its SLO state but the token times.
    fn slot(&mut self) -> &mut SloSlot;
}

/// A request whose holder keeps its whole SLO state: the scheduler's slab entry with its
/// run record.
pub(crate) trait HeldRequest: HeldSlot {
    /// Its slot, and its token times once it has run (`None` while it never ran: it has
    /// no token yet).
    fn state(&mut self) -> (&mut SloSlot, Option<&mut SloTokens>);
}

/// Storage of held requests by key: the scheduler's slab.
pub(crate) trait HeldStates {
    /// What it holds (deadline checks read only the slot).
    type Request: HeldSlot;
    /// The request at `key`; `None` if no request is there.
    fn held(&mut self, key: u32) -> Option<&mut Self::Request>;
}

/// Finds the request a deadline names, if it is still tracked: a tracked slot whose key's
/// generation is the deadline's.
struct Held<'a, S> {
    states: &'a mut S,
    /// [`SloTracker::live`].
    live: &'a [u32],
}

impl<S: HeldStates> Held<'_, S> {
    /// The request `r` names and its state; `None` if it ended.
    fn find(&mut self, r: SlotRef) -> Option<(RequestId, StateMut<'_>)> {
        // The generation first: most expired deadlines belong to requests that already
        // ended, and this skips them without loading their (cold) entries.
        if self.live.get(r.key() as usize) != Some(&r.gen()) {
            return None;
        }
        let req = self.states.held(r.key())?;
        let (id, arrival) = (req.id(), req.arrival());
        let slot = req.slot();
        slot.view(arrival).map(|s| (id, s))
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
    /// the class has no TTFT target. Deadlines of ended or moved requests stay until they
    /// expire and are skipped then.
    ttft_deadlines: DeadlineQueue<SlotRef>,
    /// As `ttft_deadlines`, for the end-to-end bound (a moved request's deadline is
    /// pushed if it has no end-to-end miss reported).
    e2e_deadlines: DeadlineQueue<SlotRef>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `now - earlier` in ns, 0 if `earlier` is later: what `now.saturating_since(earlier)`
/// holds, without making a `Duration` (the hooks run for every request).
fn ns_since(now: Timestamp, earlier: Timestamp) -> u64 {
    now.0.saturating_sub(earlier.0)
}

/// `micros(Duration::from_nanos(ns))`: whole µs.
fn micros_of_ns(ns: u64) -> u64 {
    ns / 1_000
}

/// When `t`'s bound passes for a request that arrived at `arrival`:
/// `arrival.saturating_add(t.bound())`, in ns without making a `Duration` (a deadline is
/// pushed for every request queued and compared for every one that expires).
fn deadline_of(arrival: Timestamp, t: SloTarget) -> Timestamp {
    Timestamp(
        arrival
            .0
            .saturating_add(t.bound_ms.saturating_mul(1_000_000)),
    )
}

/// Whether a latency of `ns` is over `t`'s bound (`Duration::from_nanos(ns) > t.bound()`).
fn over(t: SloTarget, ns: u64) -> bool {
    u128::from(ns) > u128::from(t.bound_ms) * 1_000_000
}

/// Tracks SLOs per class from the scheduler's lifecycle events. Owned by the engine thread
/// (plain data, no locks) and fed only by the [`crate::Scheduler`], at the times its
/// `step` and callbacks are given, so it is exact under an injected clock. Read it with
/// [`crate::Scheduler::slo`]; subscribe to violations with
/// [`crate::Scheduler::subscribe_violations`].
///
/// Violations are reported the moment they are known: each step reports requests still
/// without a first token past their TTFT bound (while queued, too) and requests still
/// unfinished past their end-to-end bound, popping only expired deadlines; the first token
/// and the finish report the misses they observe; a cancel or a time-out reports a bound
/// already passed. A request is reported at most once per kind.
///
/// ```
/// use std::time::Duration;
/// use triage::{Budget, Class, ManualClock, RequestSpec, Scheduler, SchedulerConfig,
///              SloMetric, SloWindow, Timestamp, ViolationKind};
///
/// let clock = ManualClock::new(Timestamp::ZERO);
/// let (mut scheduler, api) = Scheduler::with_clock(SchedulerConfig::default(), clock.clone())?;
/// let reports = scheduler.subscribe_violations(64);
/// let budget = Budget { max_num_seqs: 0, max_batched_tokens: 512, free_blocks: 1_000 };
/// api.submit(RequestSpec::new(1, Class::HIGH, 100, 8))?;
/// scheduler.step(Timestamp::from_millis(400), &budget)?; // nothing may run
/// assert!(reports.try_recv().is_err()); // within HIGH's 500 ms TTFT bound
/// scheduler.step(Timestamp::from_millis(501), &budget)?;
/// let v = reports.try_recv()?; // still queued past it: reported now
/// assert_eq!((v.kind, v.while_queued), (ViolationKind::Ttft, true));
/// assert_eq!(v.observed, Duration::from_millis(501));
/// assert_eq!(scheduler.slo().violations_total(Class::HIGH, ViolationKind::Ttft), 1);
/// let now = Timestamp::from_millis(501);
/// assert_eq!(scheduler.slo().samples(Class::HIGH, SloMetric::Ttft, SloWindow::Cumulative, now), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SloTracker {
    /// The configuration, validated for the class count at construction.
    config: SloConfig,
    /// One per class of `config.classes`, same index.
    classes: Vec<ClassState>,
    /// Requests queued with [`SloTracker::queue`] and not yet ended (0 while tracking is
    /// off).
    held: usize,
    /// The generation the next [`SloTracker::queue`] gives its slot (wrapping).
    next_gen: u32,
    /// `live[key]`: the generation of the request tracked at slab key `key` (a wrapping
    /// count of `queue` calls); after it ends, a generation not yet issued, which no
    /// deadline carries. Keys past the end track nothing. A deadline applies while its
    /// key's generation is the one it carries. Kept here rather than in each [`SloSlot`],
    /// in 4 bytes per key, so that an expired deadline of a request that already ended
    /// (most of them, when requests start within their TTFT bound) is skipped without
    /// loading its slab entry, a cache miss each at depth.
    live: Vec<u32>,
    /// Where violations go; counts every report ever made.
    reporter: Reporter,
}

impl SloTracker {
    /// A tracker for `classes` with `config`'s targets (one entry per class) and windows.
    pub(crate) fn new(config: SloConfig, classes: &ClassSet) -> Result<Self, ConfigError> {
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
            held: 0,
            next_gen: 0,
            live: Vec::new(),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SloConfig {
        &self.config
    }

    /// Every window queries accept: the sliding windows, shortest first, then cumulative.
    pub fn windows(&self) -> Vec<SloWindow> {
        self.config.windows()
    }

    /// A new bounded channel that receives every violation reported from now on. A full
    /// channel never blocks the tracker: the report is dropped for that subscriber and
    /// counted ([`SloTracker::violations_dropped`]). Dropping the receiver unsubscribes
    /// (at the next report). Clones of the receiver share one queue.
    pub(crate) fn subscribe(&mut self, capacity: usize) -> Receiver<Violation> {
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
        self.held
    }

    /// Starts tracking `req`, held in the scheduler's slab at `key`, in `class`, from its
    /// arrival. With tracking off or an unknown class the slot is left untracked, and
    /// every later event for it does nothing.
    pub(crate) fn queue(&mut self, key: u32, req: &mut impl HeldRequest, class: Class) {
        let arrival = req.arrival();
        let slot = req.slot();
        if slot.untrack() {
            // Not expected (the scheduler queues a slot once), but keeps the count right.
            self.held = self.held.saturating_sub(1);
        }
        if !self.config.enabled {
            return;
        }
        let Some(cs) = self.classes.get_mut(class.index()) else {
            return;
        };
        let gen = self.next_gen;
        self.next_gen = gen.wrapping_add(1);
        *slot = SloSlot::start(class, arrival);
        let k = key as usize;
        if k >= self.live.len() {
            self.live.resize(k + 1, 0);
        }
        self.live[k] = gen;
        self.held += 1;
        push_deadlines(cs, SlotRef::new(key, gen), arrival, true, true);
    }

    /// The request started running. Its first admission records its queue wait; a
    /// re-admission after preemption records nothing.
    pub(crate) fn admitted(&mut self, req: &mut impl HeldSlot, now: Timestamp) {
        let arrival = req.arrival();
        // In place: one admission per request started, so no round trip through `Started`.
        let Some(class) = req.slot().admit() else {
            return;
        };
        if let Some(cs) = self.classes.get_mut(class.index()) {
            let wait = micros_of_ns(ns_since(now, arrival));
            cs.hists[SloMetric::QueueWait.index()].record(now.0, wait, 1);
        }
    }

    /// The request produced its first output token. Records TTFT and reports a TTFT miss
    /// not reported yet. A second call is ignored.
    pub(crate) fn first_token(&mut self, req: &mut impl HeldRequest, now: Timestamp) {
        let (id, arrival) = (req.id(), req.arrival());
        let (slot, tokens) = req.state();
        // One token, if it has none yet: the same change as the first of `tokens`.
        if !slot.has_first_token() && slot.tokens(tokens, now, 1) == Tokens::First {
            let tag = slot.tag_mut();
            first_token_sampled(&mut self.classes, &mut self.reporter, id, tag, arrival, now);
        }
    }

    /// The request produced `n` more output tokens at `now`: records `n` TPOT samples of
    /// (gap since its previous token) / `n`. If it had no first token yet, the first of
    /// these is its first token (as [`SloTracker::first_token`]) and the others are
    /// counted with no gap measured.
    pub(crate) fn tokens(&mut self, req: &mut impl HeldRequest, now: Timestamp, n: u32) {
        if n == 0 {
            return;
        }
        // In place, without a round trip through `Started`: every output token reported
        // comes here.
        let (id, arrival) = (req.id(), req.arrival());
        let (slot, tokens) = req.state();
        let gap_ns = match slot.tokens(tokens, now, n) {
            Tokens::Untracked => return,
            Tokens::First => {
                let tag = slot.tag_mut();
                first_token_sampled(&mut self.classes, &mut self.reporter, id, tag, arrival, now);
                return;
            }
            Tokens::Later { gap_ns } => gap_ns,
        };
        // One token (a decode step's): the gap itself. `Duration / n` rounds each part
        // apart, so more are divided as it does.
        let per_token = if n == 1 {
            micros_of_ns(gap_ns)
        } else {
            micros(Duration::from_nanos(gap_ns) / n)
        };
        if let Some(cs) = self.classes.get_mut(slot.tag_mut().class().index()) {
            cs.hists[SloMetric::Tpot.index()].record(now.0, per_token, u64::from(n));
        }
    }

    /// The request was preempted and is waiting again. Its later reports say
    /// `while_queued` until it is admitted again.
    pub(crate) fn preempted(&mut self, req: &mut impl HeldSlot) {
        // A request never admitted is waiting already; setting it again changes nothing.
        req.slot().set_waiting();
    }

    /// The request held at `key` changed class (reprioritized). Its targets are now
    /// `class`'s, measured from its original arrival; samples recorded from now on go to
    /// `class`. A deadline the new class's bound has already passed is reported at the
    /// next tick.
    pub(crate) fn reclassified(&mut self, key: u32, req: &mut impl HeldSlot, class: Class) {
        let arrival = req.arrival();
        let (Some(st), Some(&gen)) = (req.slot().view(arrival), self.live.get(key as usize)) else {
            return;
        };
        on_reclassified(&mut self.classes, SlotRef::new(key, gen), st, class);
    }

    /// The request held at `key` ended. If `finished` (the engine finished it): records
    /// end to end, reports an end-to-end miss and a TPOT miss (mean gap between its output
    /// tokens over the bound) not reported yet, and a TTFT miss if it never produced a
    /// token. Otherwise (cancelled, timed out, shed): reports a TTFT or end-to-end bound
    /// it had already passed and no tick had reported yet. Leaves its slot untracked.
    pub(crate) fn ended(
        &mut self,
        key: u32,
        req: &mut impl HeldRequest,
        now: Timestamp,
        finished: bool,
    ) {
        let (id, arrival) = (req.id(), req.arrival());
        let (slot, tokens) = req.state();
        let Some(mut st) = slot.load(tokens.as_deref(), arrival) else {
            return;
        };
        if let Some(g) = self.live.get_mut(key as usize) {
            // Issued to no request yet (the next `queue`, at any key, takes it): no
            // deadline of this key carries it, so all of them skip.
            *g = self.next_gen;
        }
        slot.untrack();
        self.held = self.held.saturating_sub(1);
        if finished {
            on_finished(&mut self.classes, &mut self.reporter, id, &mut st, now);
        } else {
            on_ended_early(&self.classes, &mut self.reporter, id, &mut st, now);
        }
    }

    /// Reports every request whose TTFT bound passed before `now` without a first token,
    /// and every one whose end-to-end bound passed before `now` unfinished; `states` finds
    /// their slots by key. Called once per step. Costs O(classes + deadlines that
    /// expired): it never scans the queued requests.
    pub(crate) fn tick(&mut self, now: Timestamp, states: &mut impl HeldStates) {
        if !self.config.enabled {
            return;
        }
        let mut found = Held {
            states,
            live: &self.live,
        };
        expire(&mut self.classes, &mut self.reporter, &mut found, now);
    }

    /// How `class` fares against its targets over `window` as of `now`; `None` if the
    /// class or the window is not configured. Costs one pass over each target's histogram
    /// buckets (a few thousand counters), and while samples are pending or the window is
    /// due to rotate (no [`SloTracker::sync`] to `now` since), a sum of its sub-windows
    /// first: call it at most every second or so, not per step.
    pub fn compliance(
        &self,
        class: Class,
        window: SloWindow,
        now: Timestamp,
    ) -> Option<ClassCompliance> {
        let w = self.window_index(window)?;
        let cs = self.classes.get(class.index())?;
        let slo = cs.slo.clone();
        let one = |metric: SloMetric, target: Option<SloTarget>| {
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
        &self,
        class: Class,
        metric: SloMetric,
        window: SloWindow,
        quantile: f64,
        now: Timestamp,
    ) -> Option<Duration> {
        let w = self.window_index(window)?;
        let cs = self.classes.get(class.index())?;
        let s = cs.hists[metric.index()].stats(w, now.0, quantile, None)?;
        s.at_quantile.map(Duration::from_micros)
    }

    /// Samples of `metric` for `class` over `window` as of `now` (0 if no such class or
    /// window).
    pub fn samples(
        &self,
        class: Class,
        metric: SloMetric,
        window: SloWindow,
        now: Timestamp,
    ) -> u64 {
        let Some(w) = self.window_index(window) else {
            return 0;
        };
        self.classes
            .get(class.index())
            .and_then(|cs| cs.hists[metric.index()].stats(w, now.0, 0.5, None))
            .map_or(0, |s| s.count)
    }

    /// Folds the samples recorded so far into every window and rotates the windows to
    /// `now`, so that the queries as of `now` ([`SloTracker::compliance`],
    /// [`SloTracker::percentile`], [`SloTracker::samples`]) read stored totals instead of
    /// summing sub-windows. Optional; the scheduler does it before it publishes
    /// compliance.
    pub fn sync(&mut self, now: Timestamp) {
        for cs in &mut self.classes {
            for h in &mut cs.hists {
                h.sync(now.0);
            }
        }
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

/// Pushes `who`'s TTFT deadline (if `ttft`) and end-to-end deadline (if `e2e`) into `cs`,
/// for the targets the class has.
fn push_deadlines(cs: &mut ClassState, who: SlotRef, arrival: Timestamp, ttft: bool, e2e: bool) {
    let targets = [
        (cs.slo.ttft, &mut cs.ttft_deadlines, ttft),
        (cs.slo.e2e, &mut cs.e2e_deadlines, e2e),
    ];
    for (target, q, wanted) in targets {
        if let (Some(t), true) = (target, wanted) {
            q.push(Deadline {
                at: deadline_of(arrival, t),
                who,
            });
        }
    }
}

/// The first output token, at `now`, of a request (`id`, `tag`) that arrived at `arrival`
/// and is no longer waiting: records TTFT in its class and reports a miss.
fn first_token_sampled(
    classes: &mut [ClassState],
    reporter: &mut Reporter,
    id: RequestId,
    tag: &mut Tag,
    arrival: Timestamp,
    now: Timestamp,
) {
    let ttft = ns_since(now, arrival);
    let Some(cs) = classes.get_mut(tag.class().index()) else {
        return;
    };
    cs.hists[SloMetric::Ttft.index()].record(now.0, micros_of_ns(ttft), 1);
    if let Some(t) = cs.slo.ttft {
        if over(t, ttft) {
            let miss = Miss::new(ViolationKind::Ttft, t, Duration::from_nanos(ttft), now);
            report(reporter, id, tag, false, miss);
        }
    }
}

/// `st` finished: records end to end and reports the misses it shows.
fn on_finished(
    classes: &mut [ClassState],
    reporter: &mut Reporter,
    id: RequestId,
    st: &mut Started,
    now: Timestamp,
) {
    let e2e = ns_since(now, st.arrival);
    let Some(cs) = classes.get_mut(st.tag.class().index()) else {
        return;
    };
    cs.hists[SloMetric::EndToEnd.index()].record(now.0, micros_of_ns(e2e), 1);
    if let Some(t) = cs.slo.e2e {
        if over(t, e2e) {
            let miss = Miss::new(ViolationKind::EndToEnd, t, Duration::from_nanos(e2e), now);
            report(reporter, id, &mut st.tag, false, miss);
        }
    }
    if let (Some(t), Some(first)) = (cs.slo.tpot, st.first_token) {
        if let Some(mean) = ns_since(st.last_token, first).checked_div(st.later_tokens) {
            if over(t, mean) {
                let miss = Miss::new(ViolationKind::Tpot, t, Duration::from_nanos(mean), now);
                report(reporter, id, &mut st.tag, false, miss);
            }
        }
    }
    if let (Some(t), None) = (cs.slo.ttft, st.first_token) {
        if over(t, e2e) {
            let miss = Miss::new(ViolationKind::Ttft, t, Duration::from_nanos(e2e), now);
            report(reporter, id, &mut st.tag, false, miss);
        }
    }
}

/// `st` was cancelled or timed out: reports a TTFT or end-to-end bound already passed.
fn on_ended_early(
    classes: &[ClassState],
    reporter: &mut Reporter,
    id: RequestId,
    st: &mut Started,
    now: Timestamp,
) {
    let elapsed = now.saturating_since(st.arrival);
    let Some(cs) = classes.get(st.tag.class().index()) else {
        return;
    };
    if let (Some(t), None) = (cs.slo.ttft, st.first_token) {
        if elapsed > t.bound() {
            let miss = Miss::new(ViolationKind::Ttft, t, elapsed, now);
            report(reporter, id, &mut st.tag, st.waiting, miss);
        }
    }
    if let Some(t) = cs.slo.e2e {
        if elapsed > t.bound() {
            let miss = Miss::new(ViolationKind::EndToEnd, t, elapsed, now);
            report(reporter, id, &mut st.tag, st.waiting, miss);
        }
    }
}

/// Moves `st` (named `who` in deadlines) to `class` and pushes the deadlines of the new
/// class it can still miss. An unknown class or the same class changes nothing.
fn on_reclassified(classes: &mut [ClassState], who: SlotRef, st: StateMut<'_>, class: Class) {
    if st.tag.class() == class {
        return;
    }
    let Some(cs) = classes.get_mut(class.index()) else {
        return;
    };
    st.tag.set_class(class);
    let ttft = !st.has_first_token && !st.tag.reported(ViolationKind::Ttft);
    let e2e = !st.tag.reported(ViolationKind::EndToEnd);
    push_deadlines(cs, who, st.arrival, ttft, e2e);
}

/// Pops every deadline that expired before `now` and reports the requests `found` still
/// holds that missed it.
fn expire<S: HeldStates>(
    classes: &mut [ClassState],
    reporter: &mut Reporter,
    found: &mut Held<'_, S>,
    now: Timestamp,
) {
    for (ci, cs) in classes.iter_mut().enumerate() {
        let class = Class::from_index(ci as u8);
        let (ttft_t, e2e_t) = (cs.slo.ttft, cs.slo.e2e);
        let (ttft_q, e2e_q) = (&mut cs.ttft_deadlines, &mut cs.e2e_deadlines);
        // TTFT first, then end-to-end, as the reports have always come.
        for (target, q, kind) in [
            (ttft_t, ttft_q, ViolationKind::Ttft),
            (e2e_t, e2e_q, ViolationKind::EndToEnd),
        ] {
            let Some(t) = target else {
                continue;
            };
            while let Some(d) = q.pop_expired(now) {
                let Some((id, st)) = found.find(d.who) else {
                    continue;
                };
                let current = deadline_of(st.arrival, t) == d.at;
                // A TTFT deadline counts only while no token came; end-to-end until the end.
                let pending = kind != ViolationKind::Ttft || !st.has_first_token;
                if current && st.tag.class() == class && pending {
                    let elapsed = now.saturating_since(st.arrival);
                    if elapsed > t.bound() {
                        let miss = Miss::new(kind, t, elapsed, now);
                        report(reporter, id, st.tag, st.waiting, miss);
                    }
                }
            }
        }
    }
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

    /// A held request, standing in for the scheduler's slab entry and run record.
    struct Req {
        id: RequestId,
        arrival: Timestamp,
        slot: SloSlot,
        tokens: SloTokens,
    }

    impl HeldSlot for Req {
        fn id(&self) -> RequestId {
            self.id
        }
        fn arrival(&self) -> Timestamp {
            self.arrival
        }
        fn slot(&mut self) -> &mut SloSlot {
            &mut self.slot
        }
    }

    impl HeldRequest for Req {
        fn state(&mut self) -> (&mut SloSlot, Option<&mut SloTokens>) {
            (&mut self.slot, Some(&mut self.tokens))
        }
    }

    /// Requests by key with reuse, standing in for the scheduler's slab.
    #[derive(Default)]
    struct Slots(Vec<Option<Req>>);

    impl HeldStates for Slots {
        type Request = Req;
        fn held(&mut self, key: u32) -> Option<&mut Req> {
            self.0.get_mut(key as usize)?.as_mut()
        }
    }

    impl Slots {
        /// The lowest free key, now holding request `id` that arrived at `arrival`.
        fn insert(&mut self, id: RequestId, arrival: Timestamp) -> u32 {
            let key = match self.0.iter().position(Option::is_none) {
                Some(k) => k,
                None => {
                    self.0.push(None);
                    self.0.len() - 1
                }
            };
            let slot = SloSlot::default();
            let tokens = SloTokens::default();
            self.0[key] = Some(Req {
                id,
                arrival,
                slot,
                tokens,
            });
            key as u32
        }

        fn req(&mut self, key: u32) -> &mut Req {
            self.0[key as usize].as_mut().unwrap()
        }

        fn take(&mut self, key: u32) -> Req {
            self.0[key as usize].take().unwrap()
        }

        /// Inserts request `id` and queues it with `slo` in `class`; returns its key.
        fn queue(
            &mut self,
            slo: &mut SloTracker,
            id: u64,
            class: Class,
            arrival: Timestamp,
        ) -> u32 {
            let k = self.insert(RequestId(id), arrival);
            slo.queue(k, self.req(k), class);
            k
        }
    }

    #[test]
    fn out_of_order_arrivals_are_reported_by_deadline() {
        let (mut slo, mut slots) = (tracker(), Slots::default());
        let rx = slo.subscribe(8);
        // Drained out of arrival order (two shards): 2 arrived before 1.
        slots.queue(&mut slo, 1, Class::HIGH, ms(100));
        slots.queue(&mut slo, 2, Class::HIGH, ms(0));
        slots.queue(&mut slo, 3, Class::HIGH, ms(50));
        slo.tick(ms(501), &mut slots);
        assert_eq!(rx.try_recv().unwrap().id, RequestId(2));
        assert!(rx.try_recv().is_err());
        slo.tick(ms(551), &mut slots);
        assert_eq!(rx.try_recv().unwrap().id, RequestId(3));
        slo.tick(ms(601), &mut slots);
        assert_eq!(rx.try_recv().unwrap().id, RequestId(1));
    }

    #[test]
    fn deadline_queue_pops_in_deadline_then_push_order() {
        let mut q = DeadlineQueue::<u32>::default();
        // In order, then out of order (late), with ties on both sides.
        for (at, who) in [
            (10, 0),
            (20, 1),
            (30, 2),
            (15, 3),
            (20, 4),
            (5, 5),
            (15, 6),
            (30, 7),
        ] {
            q.push(Deadline {
                at: Timestamp(at),
                who,
            });
        }
        assert_eq!(q.len(), 8);
        assert!(q.pop_expired(Timestamp(5)).is_none(), "nothing before 5");
        let mut popped = Vec::new();
        while let Some(d) = q.pop_expired(Timestamp(100)) {
            popped.push((d.at.0, d.who));
        }
        assert_eq!(
            popped,
            [
                (5, 5),
                (10, 0),
                (15, 3),
                (15, 6),
                (20, 1),
                (20, 4),
                (30, 2),
                (30, 7)
            ]
        );
    }

    #[test]
    fn tick_pops_only_expired_deadlines() {
        let (mut slo, mut slots) = (tracker(), Slots::default());
        let keys: Vec<u32> = (0..1_000)
            .map(|i| slots.queue(&mut slo, i, Class::HIGH, ms(i)))
            .collect();
        let pending = |slo: &SloTracker| slo.classes[0].ttft_deadlines.len();
        slo.tick(ms(500), &mut slots);
        assert_eq!(pending(&slo), 1_000);
        // Deadlines 500..=509 ms have passed at 509.5 ms: exactly those are popped.
        slo.tick(Timestamp(509_500_000), &mut slots);
        assert_eq!(pending(&slo), 990);
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 10);
        // Requests that ended leave their deadlines behind; ticks skip them.
        for (i, &k) in keys.iter().enumerate().skip(10) {
            slo.first_token(slots.req(k), ms(i as u64 + 100));
        }
        slo.tick(ms(10_000), &mut slots);
        assert_eq!(pending(&slo), 0);
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 10);
    }

    #[test]
    fn untracked_slots_and_unknown_classes_are_ignored() {
        let (mut slo, mut slots) = (tracker(), Slots::default());
        // Never queued: every event leaves it untracked and reports nothing.
        let k = slots.insert(RequestId(1), ms(0));
        slo.admitted(slots.req(k), ms(1));
        slo.first_token(slots.req(k), ms(1));
        slo.tokens(slots.req(k), ms(1), 3);
        slo.reclassified(k, slots.req(k), Class::LOW);
        slo.ended(k, &mut slots.take(k), ms(100_000), true);
        // A class the tracker does not have is not tracked; moving a tracked request to one
        // changes nothing.
        let k2 = slots.queue(&mut slo, 2, Class::from_index(7), ms(0));
        assert!(!slots.req(k2).slot.is_tracked());
        let k3 = slots.queue(&mut slo, 3, Class::LOW, ms(0));
        slo.reclassified(k3, slots.req(k3), Class::from_index(7));
        assert_eq!(slo.tracked(), 1);
        slo.tick(ms(100_000), &mut slots);
        assert_eq!(slo.violations_total(Class::LOW, ViolationKind::EndToEnd), 1);
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 0);
    }

    #[test]
    fn a_reused_slot_ignores_its_previous_requests_deadlines() {
        let (mut slo, mut slots) = (tracker(), Slots::default());
        let rx = slo.subscribe(8);
        let k = slots.queue(&mut slo, 1, Class::HIGH, ms(0));
        slo.admitted(slots.req(k), ms(10));
        slo.tokens(slots.req(k), ms(20), 1);
        let mut req = slots.take(k);
        slo.ended(k, &mut req, ms(30), true);
        assert!(!req.slot.is_tracked());
        // The key is reused by a request of the same class that arrived later.
        assert_eq!(slots.queue(&mut slo, 2, Class::HIGH, ms(100)), k);
        assert_eq!(slo.tracked(), 1);
        slo.tick(ms(501), &mut slots);
        assert!(
            rx.try_recv().is_err(),
            "request 1's deadline is not request 2's"
        );
        slo.tick(ms(601), &mut slots);
        let v = rx.try_recv().unwrap();
        assert_eq!((v.id, v.while_queued, v.at), (RequestId(2), true, ms(601)));
        // Reported once: its end reports no second TTFT miss.
        slo.ended(k, &mut slots.take(k), ms(700), false);
        assert!(rx.try_recv().is_err());
        assert_eq!(slo.tracked(), 0);
    }

    #[test]
    fn with_tracking_off_slots_stay_untracked() {
        let cfg = SloConfig {
            enabled: false,
            ..SloConfig::default()
        };
        let mut slo = SloTracker::new(cfg, &SchedulerConfig::default().class_set()).unwrap();
        let mut slots = Slots::default();
        let k = slots.queue(&mut slo, 1, Class::HIGH, ms(0));
        assert!(!slots.req(k).slot.is_tracked());
        assert_eq!(slo.tracked(), 0);
        slo.tick(ms(10_000), &mut slots);
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 0);
    }

    #[test]
    fn window_labels() {
        assert_eq!(SloWindow::Sliding(60).label(), "1m");
        assert_eq!(SloWindow::Sliding(300).label(), "5m");
        assert_eq!(SloWindow::Sliding(3600).label(), "1h");
        assert_eq!(SloWindow::Sliding(90).label(), "90s");
        assert_eq!(SloWindow::Cumulative.to_string(), "cumulative");
    }

    #[test]
    fn window_parses_its_labels_and_nothing_else() {
        let parse = |s: &str| s.parse::<SloWindow>();
        for w in [
            SloWindow::Cumulative,
            SloWindow::Sliding(1),
            SloWindow::Sliding(60),
            SloWindow::Sliding(90),
            SloWindow::Sliding(300),
            SloWindow::Sliding(3600),
            SloWindow::Sliding(5400),
        ] {
            assert_eq!(parse(&w.label()), Ok(w), "{w}");
        }
        assert_eq!(parse("90"), Ok(SloWindow::Sliding(90)));
        assert_eq!(parse("120s"), Ok(SloWindow::Sliding(120)));
        assert_eq!(parse(" 1h\n"), Ok(SloWindow::Sliding(3600)));
        for bad in [
            "",
            "s",
            "m",
            "forever",
            "Cumulative",
            "1 m",
            "1.5m",
            "-1m",
            "5d",
            "1M",
            "5124095576030432h", // fits in u64, its seconds do not
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.input, bad.trim());
            assert_eq!(
                err.to_string(),
                format!(
                    "window {:?}: expected \"cumulative\" or a duration such as \"60s\", \"5m\", \"1h\"",
                    bad.trim()
                )
            );
        }
    }
}
