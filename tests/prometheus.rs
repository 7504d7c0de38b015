//! The exposition a Prometheus scrape sees after a scripted run: every documented family,
//! with its labels and the values the run implies.

mod common;
use common::*;
use metrics_exporter_prometheus::PrometheusBuilder;
use triage::*;

/// The value of the sample line of `name` whose labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (head, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let (n, rest) = head.split_once('{').unwrap_or((head, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn exposition_has_every_family_with_labels_and_values() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        triage::telemetry::describe();
        // The ladder: the script starts HIGH 1 after it missed its TTFT bound, which
        // deadline order would relegate (its families: the next test).
        let mut cfg = no_aging();
        cfg.order = QueueOrder::Ladder;
        cfg.queue_timeout_ms = Some(70_000);
        let mut h = Harness::new(cfg);
        // HIGH 1 waits past its 500 ms TTFT bound while nothing may run.
        h.submit(1, Class::HIGH, 16, 4);
        for id in 10..14 {
            h.submit(id, Class::LOW, 16, 4);
        }
        assert!(h
            .api
            .submit(RequestSpec::new(99, Class::LOW, 0, 1))
            .is_err()); // invalid
        h.step(budget(0, 4096, 7000));
        h.advance(ms(600));
        h.api.cancel(h.handle(13)).unwrap();
        // Two start: HIGH 1 and LOW 10.
        let d = h.step(budget(2, 4096, 7000));
        assert_eq!(ids(&d.admitted), vec![1, 10]);
        for a in &d.admitted {
            h.prefill(a);
        }
        h.finish(RequestId(1));
        // LOW 11 and 12 time out at 70 s.
        h.advance(ms(70_000));
        let d = h.step(budget(1, 4096, 7000));
        assert_eq!(d.rejected.len(), 2);
        // One reload refused: it would remove LOW, which still runs request 10.
        let mut two = no_aging();
        two.order = QueueOrder::Ladder;
        two.classes.remove(2);
        two.slo.classes.remove(2);
        h.sched.reload(two).unwrap();
        let d = h.step(budget(1, 4096, 7000));
        assert!(matches!(
            d.reload,
            Some(Err(ReloadError::StrandsRequests { .. }))
        ));
    });
    let text = handle.render();
    for name in triage::telemetry::ALL_NAMES {
        assert!(text.contains(name), "family {name} missing from:\n{text}");
    }
    let v = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(v("vllm:num_requests_waiting", &[]), 0.0);
    assert_eq!(v("vllm:num_requests_running", &[]), 1.0);
    assert_eq!(v("triage_queue_depth", &[("class", "LOW")]), 0.0);
    assert_eq!(v("triage_running_requests", &[("class", "LOW")]), 1.0);
    assert_eq!(v("triage_admitted_total", &[("class", "HIGH")]), 1.0);
    assert_eq!(v("triage_admitted_total", &[("class", "LOW")]), 1.0);
    assert_eq!(v("triage_cancelled_total", &[("class", "LOW")]), 1.0);
    assert_eq!(v("triage_timed_out_total", &[("class", "LOW")]), 2.0);
    assert_eq!(
        v(
            "triage_refused_total",
            &[("class", "LOW"), ("reason", "invalid")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "triage_slo_violations_total",
            &[("class", "HIGH"), ("kind", "ttft")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "triage_slo_bound_seconds",
            &[("class", "HIGH"), ("target", "ttft")]
        ),
        0.5
    );
    assert_eq!(
        v("triage_config_reloads_total", &[("result", "refused")]),
        1.0
    );
    assert!(text.contains("triage_step_duration_seconds"), "{text}");
    assert!(text.contains("triage_queue_wait_seconds"), "{text}");
    let compliance = sample(
        &text,
        "triage_slo_compliance_ratio",
        &[
            ("class", "HIGH"),
            ("window", "cumulative"),
            ("target", "ttft"),
        ],
    );
    assert_eq!(
        compliance,
        Some(0.0),
        "HIGH's only first token came at 600 ms:\n{text}"
    );
}

/// Deadline order's families, from a scripted run: HIGH 1 relegated, MEDIUM 3 shed (its
/// class's rule), HIGH 1 and LOW 4 started past a 3 s max wait.
#[test]
fn deadline_order_families_count_relegated_shed_and_max_wait_missed() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        let mut cfg = no_aging();
        cfg.order = QueueOrder::Deadline;
        cfg.classes[0].on_late = LateRule::Keep; // the default serves HIGH's late requests
        cfg.classes[1].on_late = LateRule::Shed;
        cfg.max_wait_ms = 3_000;
        let mut h = Harness::new(cfg);
        h.submit(1, Class::HIGH, 16, 4);
        h.submit(3, Class::MEDIUM, 16, 4);
        h.submit(4, Class::LOW, 16, 4);
        h.advance(ms(600));
        h.submit(2, Class::HIGH, 16, 4);
        // HIGH 1 is 100 ms past its deadline: relegated; HIGH 2 starts.
        let d = h.step(budget(1, 4096, 7000));
        assert_eq!(ids(&d.admitted), vec![2]);
        h.prefill(&d.admitted[0]);
        h.finish(RequestId(2));
        // At 2.5 s MEDIUM 3 (2 s bound) is shed; LOW 4 does not fit (no seat).
        h.clock.set(Timestamp::from_millis(2_500));
        let d = h.step(budget(0, 4096, 7000));
        assert_eq!(d.rejected.len(), 1);
        // At 3.5 s both are past max wait; the overdue credit (3 steps × 2% of 4096
        // tokens) covers their 16-token prompts: they start on it, oldest first.
        h.clock.set(Timestamp::from_millis(3_500));
        let d = h.step(budget(2, 4096, 7000));
        assert_eq!(ids(&d.admitted), vec![1, 4]);
        assert!(d.admitted.iter().all(|a| a.overdue));
    });
    let text = handle.render();
    let v = |name: &str, class: &str| sample(&text, name, &[("class", class)]);
    assert_eq!(v(triage::telemetry::RELEGATED, "HIGH"), Some(1.0), "{text}");
    assert_eq!(v(triage::telemetry::SHED, "MEDIUM"), Some(1.0), "{text}");
    assert_eq!(
        v(triage::telemetry::MAX_WAIT_MISSED, "HIGH"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v(triage::telemetry::MAX_WAIT_MISSED, "LOW"),
        Some(1.0),
        "{text}"
    );
    for (name, class) in [
        (triage::telemetry::RELEGATED, "MEDIUM"),
        (triage::telemetry::RELEGATED, "LOW"),
        (triage::telemetry::SHED, "HIGH"),
        (triage::telemetry::SHED, "LOW"),
        (triage::telemetry::MAX_WAIT_MISSED, "MEDIUM"),
    ] {
        assert_eq!(
            v(name, class).unwrap_or(0.0),
            0.0,
            "{name} {class}:\n{text}"
        );
    }
}

#[test]
fn tenant_families_appear_only_when_asked_for_with_their_values() {
    for tenant_metrics in [true, false] {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            let mut cfg = no_aging();
            cfg.fairness.enabled = true;
            cfg.fairness.tenant_metrics = tenant_metrics;
            cfg.fairness.max_tenants = 2;
            let mut h = Harness::new(cfg);
            let spec = |id, t| RequestSpec::new(id, Class::MEDIUM, 16, 4).with_tenant(TenantId(t));
            h.api.submit(spec(1, 7)).unwrap();
            h.api.submit(spec(2, 7)).unwrap();
            h.api.submit(spec(3, 8)).unwrap();
            h.api.submit(spec(4, 9)).unwrap(); // a third tenant: refused when drained
            let d = h.step(budget(1, 4096, 7000));
            assert_eq!(d.admitted.len(), 1);
            assert_eq!(d.rejected.len(), 1);
            h.prefill(&d.admitted[0]); // 16 prompt tokens charged at admission, 1 output
            let text = handle.render();
            let tokens = |kind| {
                sample(
                    &text,
                    "triage_tenant_tokens_total",
                    &[("class", "MEDIUM"), ("tenant", "7"), ("kind", kind)],
                )
            };
            let waiting = |t| {
                sample(
                    &text,
                    "triage_tenant_waiting",
                    &[("class", "MEDIUM"), ("tenant", t)],
                )
            };
            assert_eq!(
                sample(
                    &text,
                    "triage_refused_total",
                    &[("class", "MEDIUM"), ("reason", "tenant_limit")]
                ),
                Some(1.0)
            );
            if tenant_metrics {
                assert_eq!(
                    d.admitted[0].id,
                    RequestId(1),
                    "tenants tie: the first slot"
                );
                assert_eq!(tokens("prompt"), Some(16.0), "{text}");
                assert_eq!(tokens("output"), Some(1.0), "{text}");
                assert_eq!(waiting("7"), Some(1.0), "{text}");
                assert_eq!(waiting("8"), Some(1.0), "{text}");
            } else {
                assert!(!text.contains("triage_tenant_"), "{text}");
            }
        });
    }
}

/// A tenant slot freed and given to another tenant reports that tenant's service under
/// its own label: the counters the scheduler keeps per slot start afresh with the slot.
#[test]
fn a_reused_tenant_slot_counts_for_its_new_tenant() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    ::metrics::with_local_recorder(&recorder, || {
        let mut cfg = no_aging();
        cfg.fairness.enabled = true;
        cfg.fairness.tenant_metrics = true;
        cfg.fairness.max_tenants = 1;
        let mut h = Harness::new(cfg);
        let spec =
            |id, t, prompt| RequestSpec::new(id, Class::MEDIUM, prompt, 4).with_tenant(TenantId(t));
        let prompt_tokens = |text: &str, t| {
            sample(
                text,
                "triage_tenant_tokens_total",
                &[("class", "MEDIUM"), ("tenant", t), ("kind", "prompt")],
            )
        };
        h.api.submit(spec(1, 7, 16)).unwrap();
        let d = h.step(budget(1, 4096, 7000));
        h.finish(d.admitted[0].id); // tenant 7 holds nothing now: its slot is freed
        h.api.submit(spec(2, 8, 40)).unwrap(); // one tenant at most: 8 gets that slot
        let d = h.step(budget(1, 4096, 7000));
        assert_eq!(d.admitted[0].id, RequestId(2));
        let text = handle.render();
        assert_eq!(prompt_tokens(&text, "7"), Some(16.0), "{text}");
        assert_eq!(prompt_tokens(&text, "8"), Some(40.0), "{text}");
    });
}

/// The library's metric module is `telemetry`: under `use triage::*` the name `metrics`
/// is still the `metrics` crate an engine records its own metrics with.
mod glob_import {
    use triage::*;

    #[test]
    fn the_metrics_crate_stays_in_scope_under_a_glob_import() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("engine_own_total").increment(1);
            telemetry::describe();
        });
        let text = handle.render();
        assert!(text.contains("engine_own_total 1"), "{text}");
        assert_eq!(telemetry::QUEUE_DEPTH, "triage_queue_depth");
        assert_eq!(Class::HIGH.index(), 0);
    }
}
