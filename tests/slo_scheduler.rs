//! SLO tracking and metrics as the scheduler feeds them: violations reported while queued,
//! compliance equal to an exact computation, and the metric families a router scrapes.

mod common;
use common::*;
use triage::*;

#[test]
fn a_queued_request_past_its_ttft_bound_is_reported_while_queued_once() {
    let mut h = Harness::new(no_aging());
    let rx = h.sched.subscribe_violations(16);
    h.submit(1, Class::HIGH, 16, 4); // HIGH: p99 TTFT <= 500 ms
    h.step(budget(0, 4096, 7000)); // nothing may start
    h.advance(ms(499));
    h.step(budget(0, 4096, 7000));
    assert!(rx.try_recv().is_err(), "not before the bound");
    h.advance(ms(2));
    h.step(budget(0, 4096, 7000));
    let v = rx
        .try_recv()
        .expect("reported at the first step past the bound");
    assert_eq!(
        (v.id, v.class, v.kind),
        (RequestId(1), Class::HIGH, ViolationKind::Ttft)
    );
    assert!(v.while_queued);
    assert_eq!(v.bound, ms(500));
    assert!(v.observed >= ms(500));
    assert_eq!(h.sched.waiting(), 1, "still queued when reported");
    // Admission and first token later do not report it again.
    h.advance(ms(100));
    let d = h.step(budget(1, 4096, 7000));
    h.prefill(&d.admitted[0]);
    h.step(budget(1, 4096, 7000));
    assert!(rx.try_recv().is_err());
    assert_eq!(
        h.sched
            .slo()
            .violations_total(Class::HIGH, ViolationKind::Ttft),
        1
    );
}

#[test]
fn compliance_equals_an_exact_computation_on_the_same_samples() {
    let mut h = Harness::new(no_aging());
    // 100 HIGH requests with TTFTs 10, 20, ..., 1000 ms: admitted at once, first token
    // reported after their TTFT.
    let mut ttfts = Vec::new();
    for i in 0..100u64 {
        h.submit(i, Class::HIGH, 16, 4);
        let d = h.step(budget(1, 4096, 7000));
        let a = d.admitted[0];
        let ttft = ms(10 * (i + 1));
        h.advance(ttft);
        h.sched.on_progress(a.handle, h.clock.now(), 16, 1).unwrap();
        h.finish(a.id);
        ttfts.push(ttft);
    }
    let now = h.clock.now();
    let c = h
        .sched
        .slo()
        .compliance(Class::HIGH, SloWindow::Cumulative, now)
        .unwrap();
    let t = c.ttft.unwrap();
    let met = ttfts.iter().filter(|&&d| d <= ms(500)).count() as f64 / 100.0;
    assert_eq!(t.samples, 100);
    assert_eq!(t.fraction_met, Some(met));
    // p99 by nearest rank: the 99th of 100 sorted samples.
    ttfts.sort();
    let exact = ttfts[98];
    let measured = t.measured.unwrap();
    assert!(
        measured >= exact && measured.as_secs_f64() <= exact.as_secs_f64() * 1.001,
        "{measured:?} vs {exact:?}"
    );
}

#[test]
fn scheduler_emits_the_metric_families_routers_scrape() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    ::metrics::with_local_recorder(&recorder, || {
        let mut h = Harness::new(no_aging());
        for id in 0..5 {
            h.submit(id, Class::LOW, 16, 4);
        }
        h.submit(9, Class::HIGH, 16, 4);
        assert!(h
            .api
            .submit(RequestSpec::new(10, Class::LOW, 0, 4))
            .is_err());
        let d = h.step(budget(2, 4096, 1000));
        assert_eq!(d.admitted.len(), 2);
    });
    let snap: Vec<_> = snapshotter.snapshot().into_vec();
    let find_all = |name: &str, labels: &[(&str, &str)]| {
        snap.iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && labels.iter().all(|(lk, lv)| {
                        k.key().labels().any(|l| l.key() == *lk && l.value() == *lv)
                    })
            })
            .map(|(_, _, _, v)| format!("{v:?}"))
            .unwrap_or_else(|| panic!("{name} {labels:?} not emitted"))
    };
    let find = |name: &str, label: Option<(&str, &str)>| find_all(name, label.as_slice());
    assert_eq!(find("vllm:num_requests_waiting", None), "Gauge(4.0)");
    assert_eq!(find("vllm:num_requests_running", None), "Gauge(2.0)");
    assert!(find("vllm:kv_cache_usage_perc", None).starts_with("Gauge"));
    assert_eq!(
        find("triage_queue_depth", Some(("class", "LOW"))),
        "Gauge(4.0)"
    );
    assert_eq!(
        find("triage_admitted_total", Some(("class", "HIGH"))),
        "Counter(1)"
    );
    assert_eq!(
        find_all(
            "triage_refused_total",
            &[("class", "LOW"), ("reason", "invalid")]
        ),
        "Counter(1)"
    );
    assert!(find("triage_step_duration_seconds", None).starts_with("Histogram"));
}

#[test]
fn tracking_can_be_turned_off() {
    let mut cfg = no_aging();
    cfg.slo.enabled = false;
    let mut h = Harness::new(cfg);
    let rx = h.sched.subscribe_violations(4);
    h.submit(1, Class::HIGH, 16, 4);
    h.step(budget(0, 4096, 7000));
    h.advance(ms(1_000));
    h.step(budget(0, 4096, 7000));
    assert!(rx.try_recv().is_err());
    assert_eq!(h.sched.slo().tracked(), 0);
}
