//! SLO tracking and metrics, through the scheduler with injected time: percentiles and
//! compliance against an exact nearest-rank computation on the same samples, violations
//! reported the moment they happen (while still queued), a full violation channel that
//! drops and counts, windows that forget, and the metric families emitted through the
//! `metrics` facade.
//!
//! Every test drives a real [`Scheduler`] as a scripted engine would: it submits at the
//! clock's time, admits with a step that has room, reports tokens with `on_progress`, and
//! lets steps with no room stand for the iterations in between.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use triage::telemetry::{self, ClassStep, RefuseReason, StepMetrics, StepReport};
use triage::*;
use triage_testkit::Rng;

fn ms(v: u64) -> Timestamp {
    Timestamp::from_millis(v)
}

fn us(v: u64) -> Timestamp {
    Timestamp(v * 1_000)
}

/// Prompt tokens of every scripted request (one prefill chunk, one KV block).
const PROMPT: u32 = 16;
/// KV blocks of the scripted engine: room for every request the tests run at once.
const BLOCKS: u32 = 1_000_000;

/// A scheduler driven by a script, in time order.
struct Script {
    sched: Scheduler,
    api: Submitter,
    clock: ManualClock,
    handles: HashMap<u64, RequestHandle>,
}

impl Script {
    fn new() -> Self {
        Self::with_config(SchedulerConfig::default())
    }

    fn with_config(mut config: SchedulerConfig) -> Self {
        config.engine.total_blocks = BLOCKS;
        // Preemption only where a test asks for it (a step that allows no sequence).
        config.preemption.enabled = false;
        let clock = ManualClock::new(Timestamp::ZERO);
        let (sched, api) = Scheduler::with_clock(config, clock.clone()).unwrap();
        Self {
            sched,
            api,
            clock,
            handles: HashMap::new(),
        }
    }

    fn at(&self, t: Timestamp) {
        self.clock
            .try_set(t)
            .expect("the script runs in time order");
    }

    fn handle(&self, id: u64) -> RequestHandle {
        self.handles[&id]
    }

    /// `spec` arrives at `t`; nothing runs yet.
    fn arrive_spec(&mut self, spec: RequestSpec, t: Timestamp) {
        self.at(t);
        let id = spec.id.0;
        let h = self.api.submit(spec).unwrap();
        self.handles.insert(id, h);
    }

    /// Request `id` arrives in `class` at `t`; nothing runs yet.
    fn arrive(&mut self, id: u64, class: Class, t: Timestamp) {
        self.arrive_spec(RequestSpec::new(id, class, PROMPT, 1_000), t);
    }

    /// A step at `t` allowing `seqs` running sequences.
    fn step_with(&mut self, t: Timestamp, seqs: u32) -> Decision {
        self.at(t);
        // Generous: each scripted request holds a handful of blocks at most.
        let held = self.sched.running() as u32 * 64;
        let budget = Budget {
            max_num_seqs: seqs,
            max_batched_tokens: 1 << 30,
            free_blocks: BLOCKS - held,
        };
        self.sched.step(t, &budget).unwrap()
    }

    /// A step at `t` that admits every waiting request.
    fn admit(&mut self, t: Timestamp) -> Decision {
        self.step_with(t, 1 << 20)
    }

    /// A step at `t` that admits and preempts nothing: it reports the deadlines passed.
    fn tick(&mut self, t: Timestamp) -> Decision {
        let running = self.sched.running() as u32;
        self.step_with(t, running)
    }

    /// The running request `id` computed its prompt and sampled its first token at `t`.
    fn first_token(&mut self, id: u64, t: Timestamp) {
        self.at(t);
        self.sched
            .on_progress(self.handle(id), t, PROMPT, 1)
            .unwrap();
    }

    /// The running request `id` decoded `n` more tokens at `t`.
    fn tokens(&mut self, id: u64, t: Timestamp, n: u32) {
        self.at(t);
        self.sched.on_progress(self.handle(id), t, n, n).unwrap();
    }

    /// The running request `id` finished at `t`.
    fn finish(&mut self, id: u64, t: Timestamp) {
        self.at(t);
        let outcome = self
            .sched
            .on_finished(self.handle(id), t, FinishReason::Stop)
            .unwrap();
        assert_eq!(outcome, Outcome::Finished);
    }

    /// The client cancels request `id` at `t`; the step at `t` applies it.
    fn cancel(&mut self, id: u64, t: Timestamp) -> Decision {
        self.at(t);
        self.api.cancel(self.handle(id)).unwrap();
        self.tick(t)
    }

    /// Request `id` arrives at `arrival`, is admitted at `admitted` and has its first token
    /// at `first`.
    fn start(&mut self, id: u64, class: Class, times: [Timestamp; 3]) {
        let [arrival, admitted, first] = times;
        self.arrive(id, class, arrival);
        let d = self.admit(admitted);
        assert!(d.admitted.iter().any(|a| a.id == RequestId(id)));
        self.first_token(id, first);
    }

    fn slo(&self) -> &SloTracker {
        self.sched.slo()
    }
}

/// Roughly log-uniform in [lo, hi) microseconds.
fn latency_us(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (a + (b - a) * rng.next_f64()).exp() as u64
}

/// Nearest rank: the smallest sample with at least `q * n` samples at or below it (the
/// rank computed as HdrHistogram does, `ceil(q * n)` in f64, at least 1).
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `measured` equals `exact` to the histogram's precision: 3 significant digits, reported
/// as the highest value equivalent to the exact one.
fn assert_within_precision(measured: Duration, exact_us: u64, what: &str) {
    let m = measured.as_micros() as u64;
    assert!(
        m >= exact_us && m - exact_us <= exact_us / 1000,
        "{what}: measured {m} us, exact {exact_us} us"
    );
}

/// Runs HIGH requests one after another with the given TTFTs (µs): each arrives 1 ms
/// after the one before finished, is admitted at half its TTFT, and finishes 8 ms after
/// its first token with 4 tokens 2 ms apart. Returns the end-to-end latencies (µs) and
/// the time the last one finished.
fn run_requests(s: &mut Script, ttfts_us: &[u64]) -> (Vec<u64>, Timestamp) {
    let mut e2es = Vec::new();
    let mut t = ms(0);
    for (i, &ttft) in ttfts_us.iter().enumerate() {
        let id = i as u64;
        let arrival = Timestamp(t.0 + 1_000_000);
        let first = Timestamp(arrival.0 + ttft * 1_000);
        let admitted = Timestamp(arrival.0 + ttft * 1_000 / 2);
        s.start(id, Class::HIGH, [arrival, admitted, first]);
        for k in 1..=4u64 {
            s.tokens(id, Timestamp(first.0 + k * 2_000_000), 1);
        }
        let end = Timestamp(first.0 + 8_000_000);
        s.finish(id, end);
        e2es.push((end.0 - arrival.0) / 1_000);
        t = end;
    }
    (e2es, t)
}

#[test]
fn percentiles_and_compliance_equal_exact_nearest_rank() {
    for seed in [1u64, 7, 42, 1234] {
        let mut rng = Rng::new(seed);
        let n = 500 + (seed as usize * 37) % 700;
        let ttfts: Vec<u64> = (0..n)
            .map(|_| latency_us(&mut rng, 50, 3_000_000))
            .collect();
        let mut s = Script::new();
        let (e2es, now) = run_requests(&mut s, &ttfts);
        let mut sorted = ttfts.clone();
        sorted.sort_unstable();
        let mut e2e_sorted = e2es.clone();
        e2e_sorted.sort_unstable();
        let bound_us = 500_000;
        let exact_met = sorted.iter().filter(|&&v| v <= bound_us).count();
        // Samples so close above the bound that the histogram cannot tell them from it.
        let band = sorted
            .iter()
            .filter(|&&v| v > bound_us && v <= bound_us + bound_us / 1000)
            .count();
        let slo = s.slo();
        // The windows that still hold every sample: a sliding window counts a sample
        // while it is younger than 5/6 of its span.
        let holds_all = |w: &SloWindow| match *w {
            SloWindow::Cumulative => true,
            SloWindow::Sliding(span_s) => now.0 < span_s * 1_000_000_000 * 5 / 6,
        };
        let windows: Vec<SloWindow> = slo.windows().into_iter().filter(holds_all).collect();
        assert!(
            windows.len() >= 2,
            "{windows:?}: the 1 h window and cumulative"
        );
        for window in windows {
            let c = slo.compliance(Class::HIGH, window, now).unwrap();
            let t = c.ttft.expect("HIGH has a TTFT target");
            assert_eq!(t.samples, n as u64, "{window}");
            assert_eq!(t.bound, Duration::from_millis(500));
            assert_eq!(t.quantile, 0.99);
            assert_within_precision(t.measured.unwrap(), nearest_rank(&sorted, 0.99), "p99 ttft");
            let met = (t.fraction_met.unwrap() * n as f64).round() as usize;
            assert!(
                met >= exact_met && met <= exact_met + band,
                "{window}: met {met}, exact {exact_met}, band {band}"
            );
            assert!(c.tpot.is_none() && c.e2e.is_none());
            for q in [0.0001, 0.25, 0.5, 0.9, 0.95, 0.999, 1.0] {
                let p = slo
                    .percentile(Class::HIGH, SloMetric::Ttft, window, q, now)
                    .unwrap();
                assert_within_precision(p, nearest_rank(&sorted, q), "ttft");
                let p = slo
                    .percentile(Class::HIGH, SloMetric::EndToEnd, window, q, now)
                    .unwrap();
                assert_within_precision(p, nearest_rank(&e2e_sorted, q), "e2e");
            }
            // Every TPOT sample is exactly 2 ms; every queue wait is half the TTFT.
            assert_eq!(
                slo.samples(Class::HIGH, SloMetric::Tpot, window, now),
                4 * n as u64
            );
            assert_within_precision(
                slo.percentile(Class::HIGH, SloMetric::Tpot, window, 0.99, now)
                    .unwrap(),
                2_000,
                "tpot",
            );
            let waits: Vec<u64> = {
                let mut w: Vec<u64> = ttfts.iter().map(|t| t * 1_000 / 2 / 1_000).collect();
                w.sort_unstable();
                w
            };
            assert_within_precision(
                slo.percentile(Class::HIGH, SloMetric::QueueWait, window, 0.5, now)
                    .unwrap(),
                nearest_rank(&waits, 0.5),
                "queue wait",
            );
        }
        // Each TTFT over the bound was reported once, at its first token.
        let over = sorted.iter().filter(|&&v| v > bound_us).count() as u64;
        assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), over);
        assert_eq!(slo.tracked(), 0);
    }
}

/// A scripted event, ordered after its time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Request `.0` arrives and is admitted.
    Arrive(u64),
    /// Request `.0` has its first token.
    First(u64),
}

#[test]
fn compliance_fraction_is_exact_away_from_the_bound() {
    // MEDIUM: p95 TTFT <= 2 s. 100 requests arriving 1 ms apart: 93 at 1.5 s, 7 at 2.5 s.
    let mut s = Script::new();
    let mut events: Vec<(u64, Ev)> = Vec::new();
    for i in 0..100u64 {
        let ttft = if i % 15 == 0 { 2_500 } else { 1_500 };
        events.push((i, Ev::Arrive(i)));
        events.push((i + ttft, Ev::First(i)));
    }
    events.sort();
    for (t, e) in events {
        match e {
            Ev::Arrive(i) => {
                s.arrive(i, Class::MEDIUM, ms(t));
                s.admit(ms(t));
            }
            Ev::First(i) => s.first_token(i, ms(t)),
        }
    }
    let slo = s.slo();
    let c = slo
        .compliance(Class::MEDIUM, SloWindow::Sliding(60), ms(5_000))
        .unwrap();
    let t = c.ttft.unwrap();
    assert_eq!(t.samples, 100);
    assert_eq!(t.fraction_met, Some(0.93));
    // The 95th sample (nearest rank) is one of the slow ones.
    assert_within_precision(t.measured.unwrap(), 2_500_000, "p95");
    assert_eq!(t.is_met(), Some(false));
    // The 7 slow ones were each reported once, at their first token.
    assert_eq!(slo.violations_total(Class::MEDIUM, ViolationKind::Ttft), 7);
    // An empty class and an unknown window.
    let low = slo
        .compliance(Class::LOW, SloWindow::Sliding(60), ms(5_000))
        .unwrap();
    let e2e = low.e2e.unwrap();
    assert_eq!(
        (e2e.samples, e2e.measured, e2e.fraction_met),
        (0, None, None)
    );
    assert!(slo
        .compliance(Class::HIGH, SloWindow::Sliding(61), ms(5_000))
        .is_none());
    assert!(slo
        .compliance(Class::from_index(5), SloWindow::Cumulative, ms(5_000))
        .is_none());
}

#[test]
fn a_queued_request_past_its_ttft_bound_is_reported_while_queued_and_once() {
    let mut s = Script::new();
    let rx = s.sched.subscribe_violations(16);
    s.arrive(1, Class::HIGH, ms(0));
    // Request 2's own 300 ms TTFT target puts it first in line (deadline 400 ms, before
    // request 1's 500 ms): the one sequence the step at 200 ms allows is request 2's.
    s.arrive_spec(
        RequestSpec::new(2, Class::HIGH, PROMPT, 100).with_ttft_ms(300),
        ms(100),
    );
    let d = s.step_with(ms(200), 1);
    assert_eq!(d.admitted.len(), 1);
    assert_eq!(d.admitted[0].id, RequestId(2));
    s.first_token(2, ms(300));
    s.tick(ms(500)); // exactly at the bound: not a miss
    assert!(rx.try_recv().is_err());
    s.tick(us(500_001));
    let v = rx
        .try_recv()
        .expect("reported at the first step past the bound");
    assert_eq!(
        v,
        Violation {
            id: RequestId(1),
            class: Class::HIGH,
            kind: ViolationKind::Ttft,
            bound: Duration::from_millis(500),
            observed: Duration::from_micros(500_001),
            while_queued: true,
            at: us(500_001),
        }
    );
    assert!(rx.try_recv().is_err());
    // Later steps, the admission and the first token do not report it again.
    s.tick(ms(900));
    s.step_with(ms(1_000), 2);
    s.tick(ms(1_100));
    s.first_token(1, ms(1_200));
    s.tokens(1, ms(1_300), 3);
    s.finish(1, ms(1_400));
    s.tick(ms(5_000));
    assert!(rx.try_recv().is_err());
    let slo = s.slo();
    assert_eq!(slo.violations_total(Class::HIGH, ViolationKind::Ttft), 1);
    // It still counts as a TTFT sample over the bound.
    let c = slo
        .compliance(Class::HIGH, SloWindow::Sliding(60), ms(5_000))
        .unwrap();
    assert_eq!(c.ttft.unwrap().samples, 2);
    assert_eq!(c.ttft.unwrap().fraction_met, Some(0.5));
}

#[test]
fn ttft_misses_reported_at_first_token_running_preempted_and_reclassified() {
    let mut s = Script::new();
    let rx = s.sched.subscribe_violations(16);
    // Admitted in time, first token in time.
    s.start(1, Class::HIGH, [ms(0), ms(10), ms(450)]);
    s.tick(ms(460));
    s.finish(1, ms(470));
    // Running (admitted, no token yet) past its bound: reported at the step, not while
    // queued.
    s.arrive(2, Class::HIGH, ms(1_000));
    s.admit(ms(1_100));
    s.tick(ms(1_600));
    let v = rx.try_recv().unwrap();
    assert_eq!((v.id, v.while_queued), (RequestId(2), false));
    s.first_token(2, ms(1_700)); // already reported
    s.finish(2, ms(1_700));
    assert!(rx.try_recv().is_err());
    // Admitted, preempted before its first token (a step allowing no sequence), past its
    // bound while waiting again.
    s.arrive(3, Class::HIGH, ms(2_000));
    s.admit(ms(2_100));
    let d = s.step_with(ms(2_200), 0);
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].id, RequestId(3));
    s.tick(ms(2_600));
    let v = rx.try_recv().unwrap();
    assert_eq!((v.id, v.while_queued), (RequestId(3), true));
    // A MEDIUM request (2 s bound) reprioritized to HIGH at 1 s: reported at the step that
    // applies it, against HIGH's 500 ms bound...
    s.arrive(4, Class::MEDIUM, ms(3_000));
    s.tick(ms(3_900));
    s.api.reprioritize(s.handle(4), Class::HIGH).unwrap();
    s.tick(ms(4_000));
    let v = rx.try_recv().unwrap();
    assert_eq!(
        (v.id, v.class, v.bound, v.observed),
        (
            RequestId(4),
            Class::HIGH,
            Duration::from_millis(500),
            Duration::from_millis(1_000)
        )
    );
    // ...and not again when MEDIUM's own deadline passes.
    s.tick(ms(6_000));
    assert!(rx.try_recv().is_err());
    // A first token after the bound, with no step in between, is reported at first token.
    s.arrive(5, Class::HIGH, ms(7_000));
    s.admit(ms(7_000));
    s.first_token(5, ms(7_600));
    let v = rx.try_recv().unwrap();
    assert_eq!(
        (v.id, v.while_queued, v.at),
        (RequestId(5), false, ms(7_600))
    );
    assert!(rx.try_recv().is_err());
    assert_eq!(
        s.slo().violations_total(Class::HIGH, ViolationKind::Ttft),
        4
    );
}

#[test]
fn end_to_end_and_tpot_misses() {
    let mut config = SchedulerConfig::default();
    config.slo.classes[2].tpot = Some(SloTarget::new(50, 0.9));
    config.queue_timeout_ms = Some(70_000);
    let mut s = Script::with_config(config);
    let rx = s.sched.subscribe_violations(16);
    // LOW: e2e 60 s. Running past it: reported at the step while running, once.
    s.start(1, Class::LOW, [ms(0), ms(1_000), ms(2_000)]);
    s.tick(ms(60_000));
    assert!(rx.try_recv().is_err());
    s.tick(ms(61_000));
    let v = rx.try_recv().unwrap();
    assert_eq!(
        (v.kind, v.while_queued, v.observed),
        (ViolationKind::EndToEnd, false, Duration::from_secs(61))
    );
    // 10 tokens over 60 s after the first: mean 6 s > 50 ms, reported at finish.
    s.tokens(1, ms(62_000), 10);
    s.finish(1, ms(62_500));
    let v = rx.try_recv().unwrap();
    assert_eq!(
        (v.kind, v.observed, v.bound),
        (
            ViolationKind::Tpot,
            Duration::from_millis(6_000),
            Duration::from_millis(50)
        )
    );
    assert!(rx.try_recv().is_err(), "e2e is not reported twice");
    // A finish past the bound with no step in between is reported at finish.
    s.start(2, Class::LOW, [ms(100_000), ms(100_000), ms(100_500)]);
    s.tokens(2, ms(100_520), 1);
    s.tokens(2, ms(100_540), 1);
    s.finish(2, ms(170_000));
    let v = rx.try_recv().unwrap();
    assert_eq!((v.id, v.kind), (RequestId(2), ViolationKind::EndToEnd));
    assert!(rx.try_recv().is_err(), "mean 20 ms TPOT is within 50 ms");
    // Queued past the bound, then timed out: reported while queued at the step.
    s.arrive(3, Class::LOW, ms(200_000));
    s.tick(ms(260_001));
    let v = rx.try_recv().unwrap();
    assert_eq!((v.id, v.while_queued), (RequestId(3), true));
    let d = s.tick(ms(270_001));
    assert_eq!(d.rejected.len(), 1, "timed out after 70 s in the queue");
    assert_eq!(d.rejected[0].id, RequestId(3));
    assert!(rx.try_recv().is_err());
    // Cancelled past its bound with no step since it passed: reported at the cancel.
    s.arrive(4, Class::LOW, ms(300_000));
    s.tick(ms(300_000));
    s.cancel(4, ms(361_000));
    let v = rx.try_recv().unwrap();
    assert_eq!((v.id, v.while_queued), (RequestId(4), true));
    // Cancelled in time: nothing, and a later step finds nothing either.
    s.arrive(5, Class::LOW, ms(400_000));
    s.cancel(5, ms(401_000));
    s.tick(ms(500_000));
    assert!(rx.try_recv().is_err());
    let slo = s.slo();
    assert_eq!(slo.tracked(), 0);
    assert_eq!(slo.violations_total(Class::LOW, ViolationKind::EndToEnd), 4);
    assert_eq!(slo.violations_total(Class::LOW, ViolationKind::Tpot), 1);
    assert!(s.sched.conservation().is_balanced());
}

#[test]
fn a_reused_id_and_slot_is_a_new_request() {
    let mut s = Script::new();
    let rx = s.sched.subscribe_violations(4);
    s.start(9, Class::HIGH, [ms(0), ms(0), ms(100)]);
    s.finish(9, ms(200));
    // Same id again, later (and the slot the first one freed): the first one's deadline
    // (500 ms) must not report it.
    s.arrive(9, Class::HIGH, ms(300));
    s.tick(ms(600));
    assert!(rx.try_recv().is_err());
    s.tick(ms(801));
    assert_eq!(rx.try_recv().unwrap().observed, Duration::from_millis(501));
}

#[test]
fn a_full_violation_channel_drops_and_counts_without_blocking() {
    let mut s = Script::new();
    let slow = s.sched.subscribe_violations(2);
    let fast = s.sched.subscribe_violations(100);
    for i in 0..5 {
        s.arrive(i, Class::HIGH, ms(0));
    }
    s.tick(ms(1_000)); // would block forever if a full channel blocked
    assert_eq!(
        s.slo().violations_total(Class::HIGH, ViolationKind::Ttft),
        5
    );
    assert_eq!(s.slo().violations_dropped(), 3);
    assert_eq!(slow.try_iter().count(), 2);
    assert_eq!(fast.try_iter().count(), 5);
    // A dropped receiver unsubscribes at the next report; nothing more is dropped for it.
    drop(slow);
    s.arrive(10, Class::HIGH, ms(2_000));
    s.tick(ms(3_000));
    assert_eq!(s.slo().subscribers(), 1);
    assert_eq!(s.slo().violations_dropped(), 3);
    assert_eq!(fast.try_iter().count(), 1);
    // With no subscriber at all, reports are still logged and counted.
    drop(fast);
    s.arrive(11, Class::HIGH, ms(4_000));
    s.tick(ms(5_000));
    assert_eq!(s.slo().subscribers(), 0);
    assert_eq!(
        s.slo().violations_total(Class::HIGH, ViolationKind::Ttft),
        7
    );
}

#[test]
fn a_consumer_on_another_thread_receives_reports() {
    let mut s = Script::new();
    let rx = s.sched.subscribe_violations(1024);
    let consumer = std::thread::spawn(move || rx.iter().count());
    for i in 0..100 {
        s.arrive(i, Class::HIGH, ms(i));
    }
    s.tick(ms(10_000));
    drop(s); // the scheduler, and with it the channel's sender
    assert_eq!(consumer.join().unwrap(), 100);
}

#[test]
fn windows_forget_samples_older_than_their_span() {
    let mut s = Script::new();
    // One HIGH request with a 600 ms TTFT (a miss) at t = 1 s, then a good one much later.
    s.start(1, Class::HIGH, [ms(400), ms(400), ms(1_000)]);
    s.finish(1, ms(1_000));
    let count = |s: &Script, w, t| s.slo().samples(Class::HIGH, SloMetric::Ttft, w, ms(t));
    let (m1, m5, h1) = (
        SloWindow::Sliding(60),
        SloWindow::Sliding(300),
        SloWindow::Sliding(3600),
    );
    // 6 sub-windows: a sample is counted while younger than 5/6 of the span, and never
    // once older than the span.
    assert_eq!(count(&s, m1, 50_999), 1);
    assert_eq!(count(&s, m1, 61_000), 0);
    assert_eq!(count(&s, m5, 61_000), 1);
    assert_eq!(count(&s, m5, 250_999), 1);
    assert_eq!(count(&s, m5, 301_000), 0);
    assert_eq!(count(&s, h1, 301_000), 1);
    assert_eq!(count(&s, h1, 3_001_000), 1);
    assert_eq!(count(&s, h1, 3_601_000), 0);
    assert_eq!(count(&s, SloWindow::Cumulative, 3_601_000), 1);
    // Compliance follows: the old miss no longer weighs on the 1 min window.
    s.start(
        2,
        Class::HIGH,
        [ms(3_700_000), ms(3_700_000), ms(3_700_100)],
    );
    let c = s
        .slo()
        .compliance(Class::HIGH, m1, ms(3_700_100))
        .unwrap()
        .ttft
        .unwrap();
    assert_eq!((c.samples, c.fraction_met), (1, Some(1.0)));
    let c = s
        .slo()
        .compliance(Class::HIGH, SloWindow::Cumulative, ms(3_700_100))
        .unwrap()
        .ttft
        .unwrap();
    assert_eq!((c.samples, c.fraction_met), (2, Some(0.5)));
}

#[test]
fn a_sample_is_never_counted_past_its_window() {
    // Samples every 700 ms over 10 minutes; at each query time, the 1 min window holds
    // exactly the samples younger than 60 s, give or take the oldest sub-window.
    let mut s = Script::new();
    let mut times = Vec::new();
    for i in 0..900u64 {
        let t = i * 700;
        s.start(i, Class::HIGH, [ms(t), ms(t), ms(t + 10)]);
        s.finish(i, ms(t + 10));
        times.push(t + 10);
        let now = t + 10;
        let n = s.slo().samples(
            Class::HIGH,
            SloMetric::Ttft,
            SloWindow::Sliding(60),
            ms(now),
        );
        let younger_than_span = times.iter().filter(|&&s| now - s < 60_000).count() as u64;
        let younger_than_five_sixths = times.iter().filter(|&&s| now - s < 50_000).count() as u64;
        assert!(
            n <= younger_than_span && n >= younger_than_five_sixths,
            "at {now} ms: {n} not in [{younger_than_five_sixths}, {younger_than_span}]"
        );
    }
}

#[test]
fn config_parses_from_toml_and_rejects_bad_values() {
    let cfg: SloConfig = toml::from_str(
        r#"
        windows_s = [30, 600]
        sub_windows = 10

        [[classes]]
        ttft = { bound_ms = 250, quantile = 0.9 }

        [[classes]]
        tpot = { bound_ms = 80, quantile = 0.99 }
        e2e = { bound_ms = 30000, quantile = 0.5 }
        "#,
    )
    .unwrap();
    assert_eq!(
        cfg,
        SloConfig {
            enabled: true,
            classes: vec![
                ClassSlo {
                    ttft: Some(SloTarget::new(250, 0.9)),
                    ..ClassSlo::default()
                },
                ClassSlo {
                    ttft: None,
                    tpot: Some(SloTarget::new(80, 0.99)),
                    e2e: Some(SloTarget::new(30_000, 0.5)),
                },
            ],
            windows_s: vec![30, 600],
            sub_windows: 10,
        }
    );
    assert!(cfg.validate_for(2).is_ok());
    // Missing fields take the defaults; unknown ones are refused.
    assert_eq!(
        toml::from_str::<SloConfig>("").unwrap(),
        SloConfig::default()
    );
    assert!(toml::from_str::<SloConfig>("window_s = [60]").is_err());
    assert!(toml::from_str::<SloConfig>("[[classes]]\nttft = { bound_ms = 1, q = 0.5 }").is_err());

    // A scheduler refuses a bad SLO configuration, naming the field.
    let with_slo = |slo: SloConfig| {
        Scheduler::new(SchedulerConfig {
            slo,
            ..SchedulerConfig::default()
        })
        .map(|_| ())
        .unwrap_err()
    };
    let mut cfg = SloConfig::default();
    cfg.classes[0].ttft = Some(SloTarget::new(0, 0.99));
    assert_eq!(with_slo(cfg).field, "slo.classes[0].ttft.bound_ms");
    assert_eq!(with_slo(SloConfig::for_classes(2)).field, "slo.classes");
}

/// Metric families by `(name, sorted labels)`, with their values.
type Families = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Every `(name, labels)` a snapshot holds, labels sorted, with its value as f64 (counters
/// and gauges) or sample count (histograms).
fn snapshot_map(snapshotter: &metrics_util::debugging::Snapshotter) -> Families {
    use metrics_util::debugging::DebugValue;
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(ck, _unit, _desc, value)| {
            let key = ck.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            labels.sort();
            let v = match value {
                DebugValue::Counter(c) => c as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(h) => h.len() as f64,
            };
            ((key.name().to_string(), labels), v)
        })
        .collect()
}

/// The value of family `name` with labels `l` in `snap`; panics, listing what is there, if
/// it is missing.
fn value(snap: &Families, name: &str, l: &[(&str, &str)]) -> f64 {
    *snap
        .get(&(name.to_string(), labels(l)))
        .unwrap_or_else(|| panic!("{name} {l:?} missing; have {:#?}", snap.keys()))
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn step_report_families_carry_their_values() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let classes = SchedulerConfig::default().class_set();
    ::metrics::with_local_recorder(&recorder, || {
        telemetry::describe();
        let m = StepMetrics::new(&classes, None);
        m.queue_wait(Class::HIGH, Duration::from_millis(100));
        let mut per_class = [ClassStep::default(); 3];
        per_class[0] = ClassStep {
            waiting: 1,
            running: 1,
            admitted: 1,
            ..ClassStep::default()
        };
        per_class[2] = ClassStep {
            waiting: 5,
            running: 2,
            preempted: 1,
            promoted: 3,
            timed_out: 1,
            cancelled: 2,
            ..ClassStep::default()
        };
        per_class[2].refused[RefuseReason::QueueFull.index()] = 4;
        m.publish(&StepReport {
            classes: &per_class,
            step_duration: Duration::from_micros(250),
            kv_free_blocks: 750,
            kv_total_blocks: 1000,
        });
        telemetry::record_refused(
            "MEDIUM",
            RefuseReason::of(&SubmitError::ZeroPromptTokens(RequestId(3))),
        );
        telemetry::record_reload(false);
    });
    let snap = snapshot_map(&snapshotter);
    let get = |name: &str, l: &[(&str, &str)]| value(&snap, name, l);
    // Per class families, every class labelled.
    for class in ["HIGH", "MEDIUM", "LOW"] {
        for name in [
            telemetry::QUEUE_DEPTH,
            telemetry::RUNNING,
            telemetry::QUEUE_WAIT,
            telemetry::ADMITTED,
            telemetry::PREEMPTED,
            telemetry::PROMOTED,
            telemetry::TIMED_OUT,
            telemetry::CANCELLED,
        ] {
            get(name, &[("class", class)]);
        }
        for r in RefuseReason::ALL {
            get(
                telemetry::REFUSED,
                &[("class", class), ("reason", r.as_str())],
            );
        }
    }
    assert_eq!(get(telemetry::QUEUE_DEPTH, &[("class", "LOW")]), 5.0);
    assert_eq!(get(telemetry::RUNNING, &[("class", "LOW")]), 2.0);
    assert_eq!(get(telemetry::ADMITTED, &[("class", "HIGH")]), 1.0);
    assert_eq!(get(telemetry::PREEMPTED, &[("class", "LOW")]), 1.0);
    assert_eq!(get(telemetry::PROMOTED, &[("class", "LOW")]), 3.0);
    assert_eq!(get(telemetry::TIMED_OUT, &[("class", "LOW")]), 1.0);
    assert_eq!(get(telemetry::CANCELLED, &[("class", "LOW")]), 2.0);
    assert_eq!(get(telemetry::QUEUE_WAIT, &[("class", "HIGH")]), 1.0);
    assert_eq!(
        get(
            telemetry::REFUSED,
            &[("class", "LOW"), ("reason", "queue_full")]
        ),
        4.0
    );
    assert_eq!(
        get(
            telemetry::REFUSED,
            &[("class", "MEDIUM"), ("reason", "invalid")]
        ),
        1.0
    );
    assert_eq!(get(telemetry::STEP_DURATION, &[]), 1.0);
    // The three names routers scrape, unlabelled.
    assert_eq!(get(telemetry::VLLM_WAITING, &[]), 6.0);
    assert_eq!(get(telemetry::VLLM_RUNNING, &[]), 3.0);
    assert_eq!(get(telemetry::VLLM_KV_USAGE, &[]), 0.25);
}

#[test]
fn a_scheduler_emits_every_family_and_its_slo_figures() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || {
        telemetry::describe();
        // Built under the recorder: its handles register with it.
        let mut s = Script::new();
        // Two HIGH requests; the one sequence allowed goes to one of them, which has its
        // first token at 200 ms; the other misses its TTFT bound while queued.
        s.arrive(1, Class::HIGH, ms(0));
        s.arrive(2, Class::HIGH, ms(0));
        s.tick(ms(0));
        let d = s.step_with(ms(100), 1);
        assert_eq!(d.admitted.len(), 1);
        s.first_token(d.admitted[0].id.0, ms(200));
        s.tick(ms(600));
        // Compliance is published at the first step, then at most once every
        // `DEFAULT_COMPLIANCE_INTERVAL` (10 s) of injected time.
        s.tick(Timestamp::from_duration(
            telemetry::DEFAULT_COMPLIANCE_INTERVAL,
        ));
        telemetry::record_refused(
            "MEDIUM",
            RefuseReason::of(&SubmitError::ZeroPromptTokens(RequestId(3))),
        );
        telemetry::record_reload(false);
    });
    let snap = snapshot_map(&snapshotter);
    let get = |name: &str, l: &[(&str, &str)]| value(&snap, name, l);
    // Every family is there.
    for name in telemetry::ALL_NAMES {
        assert!(
            snap.keys().any(|(n, _)| n == name),
            "family {name} not emitted"
        );
    }
    for class in ["HIGH", "MEDIUM", "LOW"] {
        for kind in ["ttft", "tpot", "e2e"] {
            get(
                telemetry::SLO_VIOLATIONS,
                &[("class", class), ("kind", kind)],
            );
        }
    }
    assert_eq!(get(telemetry::QUEUE_DEPTH, &[("class", "HIGH")]), 1.0);
    assert_eq!(get(telemetry::RUNNING, &[("class", "HIGH")]), 1.0);
    assert_eq!(get(telemetry::ADMITTED, &[("class", "HIGH")]), 1.0);
    assert_eq!(get(telemetry::QUEUE_WAIT, &[("class", "HIGH")]), 1.0);
    assert_eq!(
        get(
            telemetry::SLO_VIOLATIONS,
            &[("class", "HIGH"), ("kind", "ttft")]
        ),
        1.0
    );
    assert_eq!(get(telemetry::SLO_REPORTS_DROPPED, &[]), 0.0);
    assert_eq!(get(telemetry::STEP_DURATION, &[]), 4.0, "one per step");
    assert_eq!(get(telemetry::VLLM_WAITING, &[]), 1.0);
    assert_eq!(get(telemetry::VLLM_RUNNING, &[]), 1.0);
    // Compliance per window and target, for the targets each class has.
    for window in ["1m", "5m", "1h", "cumulative"] {
        let l = [("class", "HIGH"), ("window", window), ("target", "ttft")];
        assert_eq!(get(telemetry::SLO_COMPLIANCE, &l), 1.0); // one sample, 200 ms
        let measured = get(telemetry::SLO_MEASURED, &l);
        assert!((measured - 0.2).abs() < 0.2 * 1e-3, "{measured}");
        let l = [("class", "MEDIUM"), ("window", window), ("target", "ttft")];
        assert!(
            get(telemetry::SLO_COMPLIANCE, &l).is_nan(),
            "no samples yet"
        );
        let l = [("class", "LOW"), ("window", window), ("target", "e2e")];
        get(telemetry::SLO_COMPLIANCE, &l);
    }
    assert_eq!(
        get(
            telemetry::SLO_BOUND,
            &[("class", "MEDIUM"), ("target", "ttft")]
        ),
        2.0
    );
    assert!(!snap.keys().any(|(n, l)| n == telemetry::SLO_COMPLIANCE
        && l.contains(&("target".to_string(), "tpot".to_string()))));
}

#[test]
fn every_metric_is_documented() {
    let doc = include_str!("../docs/metrics.md");
    for name in telemetry::ALL_NAMES
        .into_iter()
        .chain(telemetry::TENANT_NAMES)
    {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} not in docs/metrics.md"
        );
    }
}

mod window_model {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Failures saved next to this file (proptest's default looks for a lib.rs above an
        // integration test and warns).
        #![proptest_config(ProptestConfig {
            cases: 24,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

        /// Samples at increasing times; at each query the 1 min window (6 sub-windows of
        /// 10 s) holds exactly the samples whose 10 s slice is one of the last 6, and its
        /// percentiles and compliance match nearest rank on exactly those samples.
        #[test]
        fn the_sliding_window_matches_a_model(
            steps in prop::collection::vec((0u64..20_000, 0u64..3_000_000, any::<bool>()), 1..80),
            q in 0.01f64..1.0,
        ) {
            // Request i arrives (and is admitted) at t_i - ttft_i and has its first token
            // at t_i; the script runs every event in time order.
            let mut times = Vec::new();
            let mut t_ms = 5_000u64;
            for &(dt, ttft_us, _) in &steps {
                t_ms += dt;
                times.push((t_ms, ttft_us));
            }
            // (time ns, 0 for an arrival or 1, request, 0 for its first token or 1 for
            // the query after it): at equal times arrivals first, then in request order.
            let mut events: Vec<(u64, u8, usize, u8)> = Vec::new();
            for (i, &(t, ttft_us)) in times.iter().enumerate() {
                events.push((t * 1_000_000 - ttft_us * 1_000, 0, i, 0));
                events.push((t * 1_000_000, 1, i, 0));
                events.push((t * 1_000_000, 1, i, 1));
            }
            events.sort_unstable();
            let mut s = Script::new();
            let mut samples: Vec<(u64, u64)> = Vec::new(); // (time ms, ttft us)
            for (at, kind, i, query) in events {
                let (t_ms, ttft_us) = times[i];
                let (id, now) = (i as u64, Timestamp(at));
                match (kind, query) {
                    (0, _) => {
                        s.arrive(id, Class::HIGH, now);
                        s.admit(now);
                        continue;
                    }
                    (_, 0) => {
                        s.first_token(id, now);
                        s.finish(id, now);
                        samples.push((t_ms, ttft_us));
                        continue;
                    }
                    _ if !steps[i].2 => continue,
                    _ => {}
                }
                let slo = s.slo();
                let slice = |t: u64| t / 10_000;
                let mut live: Vec<u64> = samples
                    .iter()
                    .filter(|(t, _)| slice(*t) + 6 > slice(t_ms))
                    .map(|&(_, v)| v)
                    .collect();
                live.sort_unstable();
                let w = SloWindow::Sliding(60);
                let c = slo.compliance(Class::HIGH, w, now).unwrap().ttft.unwrap();
                prop_assert_eq!(c.samples, live.len() as u64);
                let p = slo.percentile(Class::HIGH, SloMetric::Ttft, w, q, now).unwrap();
                let exact = nearest_rank(&live, q);
                let m = p.as_micros() as u64;
                prop_assert!(m >= exact && m - exact <= exact / 1000, "{} vs {}", m, exact);
                let exact_met = live.iter().filter(|&&v| v <= 500_000).count();
                let band = live.iter().filter(|&&v| v > 500_000 && v <= 500_500).count();
                let met = (c.fraction_met.unwrap() * live.len() as f64).round() as usize;
                prop_assert!(met >= exact_met && met <= exact_met + band);
                let all = slo.samples(Class::HIGH, SloMetric::Ttft, SloWindow::Cumulative, now);
                prop_assert_eq!(all, samples.len() as u64);
            }
        }
    }
}

/// A reload that changes the SLO section restarts tracking, and the requests held are
/// registered again: a running request with a first token counts its TTFT (once) and its
/// queue wait in the new windows, and its next tokens are TPOT samples from that first
/// token, not a second first token.
#[test]
fn a_slo_reload_registers_a_running_request_with_its_first_token_once() {
    let mut s = Script::new();
    s.arrive(1, Class::HIGH, ms(0));
    s.admit(ms(10));
    s.first_token(1, ms(120));
    s.tokens(1, ms(130), 1);
    let mut config = s.sched.config().clone();
    config.slo.windows_s = vec![60, 600];
    s.sched.config_handle().propose(config).unwrap();
    let d = s.tick(ms(140));
    assert!(matches!(d.reload, Some(Ok(_))), "{:?}", d.reload);
    let slo = s.sched.slo();
    let now = ms(140);
    let samples = |m| slo.samples(Class::HIGH, m, SloWindow::Cumulative, now);
    assert_eq!(samples(SloMetric::Ttft), 1);
    assert_eq!(samples(SloMetric::QueueWait), 1);
    assert_eq!(
        samples(SloMetric::Tpot),
        0,
        "the token before the reload is not re-counted"
    );
    let ttft = slo.percentile(
        Class::HIGH,
        SloMetric::Ttft,
        SloWindow::Cumulative,
        1.0,
        now,
    );
    assert_within_precision(ttft.unwrap(), 120_000, "ttft");
    // The next token is 30 ms after the first token the new tracker knows.
    s.tokens(1, ms(150), 1);
    let slo = s.sched.slo();
    let now = ms(150);
    let samples = |m| slo.samples(Class::HIGH, m, SloWindow::Cumulative, now);
    assert_eq!((samples(SloMetric::Ttft), samples(SloMetric::Tpot)), (1, 1));
    let tpot = slo.percentile(
        Class::HIGH,
        SloMetric::Tpot,
        SloWindow::Cumulative,
        1.0,
        now,
    );
    assert_within_precision(tpot.unwrap(), 30_000, "tpot");
    s.finish(1, ms(200));
    let samples = s.sched.slo().samples(
        Class::HIGH,
        SloMetric::EndToEnd,
        SloWindow::Cumulative,
        ms(200),
    );
    assert_eq!(samples, 1);
}
