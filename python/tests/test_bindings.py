"""The scheduler bindings: order, aging and max wait under injected time, cancel,
reprioritize, progress callbacks, metrics, SLO report, configuration and errors."""

from __future__ import annotations

import threading

import pytest

import triage

BUDGET = dict(max_num_seqs=256, max_batched_tokens=100_000, free_blocks=7000)


def admitted_ids(decision):
    return [a.id for a in decision.admitted]


def test_import_needs_no_vllm():
    import sys

    import triage.vllm  # noqa: F401

    assert "vllm" not in sys.modules or sys.modules["vllm"] is not None


def test_class_order_then_fifo():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    for i, cls in enumerate(["low", "medium", "high", "low", "high"]):
        s.submit(i, 10, 5, cls=cls)
        clock.advance_ms(1)
    d = s.step(**BUDGET)
    assert admitted_ids(d) == [2, 4, 1, 0, 3]
    assert [a.cls for a in d.admitted] == ["HIGH", "HIGH", "MEDIUM", "LOW", "LOW"]
    assert d.waiting == 0 and d.running == 5


def test_vllm_priority_and_class_index():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    s.submit(1, 10, 5, priority=50)  # LOW
    s.submit(2, 10, 5, cls=1)  # MEDIUM by index
    s.submit(3, 10, 5, priority=0)  # HIGH
    assert admitted_ids(s.step(**BUDGET)) == [3, 2, 1]
    with pytest.raises(triage.ClassError, match="priority -1 is in no class's range"):
        s.submit(4, 10, 5, priority=-1)
    with pytest.raises(triage.ArgumentError, match="not both"):
        s.submit(5, 10, 5, cls="high", priority=0)


def test_aging_moves_low_past_newer_medium(aging_config):
    clock = triage.ManualClock()
    s = triage.Scheduler(aging_config, clock=clock)
    s.submit(1, 10, 5, cls="low")
    clock.advance_ms(5)
    s.submit(2, 10, 5, cls="medium")
    # One slot per step: at 100 ms MEDIUM goes first.
    one = dict(BUDGET, max_num_seqs=1)
    d = s.step(**one)
    assert admitted_ids(d) == [2]
    s.on_finished(2)
    s.submit(3, 10, 5, cls="medium")
    clock.advance_ms(300)  # request 1 is now 305 ms old: past LOW's 200 ms threshold
    s.submit(4, 10, 5, cls="medium")
    d = s.step(**one)
    assert admitted_ids(d) == [1]
    assert d.admitted[0].cls == "LOW" and d.admitted[0].effective_cls == "MEDIUM"
    assert d.admitted[0].waited_ns == 305_000_000


def test_max_wait_goes_first(aging_config):
    clock = triage.ManualClock()
    s = triage.Scheduler(aging_config, clock=clock)
    s.submit(1, 10, 5, cls="low")
    clock.advance_ms(1000)
    s.submit(2, 10, 5, cls="high")
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    assert admitted_ids(d) == [1] and d.admitted[0].overdue


def test_explicit_now_ns_and_time_going_backwards():
    s = triage.Scheduler(clock=triage.ManualClock(1_000))
    s.step(**BUDGET, now_ns=5_000)
    with pytest.raises(triage.BudgetError, match="earlier than the previous step"):
        s.step(**BUDGET, now_ns=4_000)


def test_cancel_waiting_and_running():
    s = triage.Scheduler(clock=triage.ManualClock())
    s.submit(1, 10, 5, cls="high")
    assert admitted_ids(s.step(**BUDGET)) == [1]
    s.submit(2, 10, 5, cls="high")
    assert s.cancel(1) == "running"
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    assert d.aborted == [1]
    s.submit(3, 10, 5, cls="low")
    s.submit(4, 10, 5, cls="low")
    s.step(**dict(BUDGET, max_num_seqs=1))  # drains 3 and 4; 2 runs
    assert s.cancel(4) == "waiting"
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    assert d.cancelled == [4]
    with pytest.raises(triage.ControlError):
        s.cancel(4)
    with pytest.raises(triage.ControlError):
        s.cancel(999)


def test_reprioritize_keeps_arrival():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    s.submit(1, 10, 5, cls="low")
    clock.advance_ms(1)
    s.submit(2, 10, 5, cls="high")
    s.reprioritize(1, "high")
    d = s.step(**BUDGET)
    assert admitted_ids(d) == [1, 2]


def test_progress_finish_and_errors():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    s.submit(1, 32, 2, cls="high")
    d = s.step(**BUDGET)
    assert d.admitted[0].prefill_tokens == 32
    clock.advance_ms(20)
    s.on_progress(1, 32, 1)
    with pytest.raises(triage.ProgressError, match="req#1"):
        s.on_progress(1, 0, 5)  # past max_new_tokens
    d = s.step(**BUDGET)
    assert d.scheduled == [(1, 1)]
    s.on_progress(1, 1, 1)
    assert s.on_finished(1, "length") == "finished"
    with pytest.raises(triage.ProgressError):
        s.on_finished(1)
    with pytest.raises(triage.ArgumentError, match="expected \"stop\""):
        s.on_finished(1, "bored")
    with pytest.raises(triage.BudgetError, match="free KV blocks"):
        s.step(1, 1, 10**9)


def test_submit_errors_are_typed():
    s = triage.Scheduler(clock=triage.ManualClock())
    s.submit(1, 10, 5, cls="high")
    with pytest.raises(triage.SubmitError, match="prompt"):
        s.submit(2, 0, 5, cls="high")
    with pytest.raises(triage.ClassError, match="known classes: HIGH, MEDIUM, LOW"):
        s.submit(3, 10, 5, cls="urgent")
    sub = s.submitter()
    sub.close()
    with pytest.raises(triage.SubmitError):
        sub.submit(4, 10, 5, cls="high")
    assert issubclass(triage.SubmitError, triage.TriageError)


def test_metrics_snapshot_and_conservation():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    for i in range(5):
        s.submit(i, 10, 1, cls="medium")
    s.step(**dict(BUDGET, max_num_seqs=2))
    s.on_progress(0, 10, 1)
    s.on_finished(0)
    m = s.metrics()
    assert m["balanced"] is True
    assert m["conservation"]["submitted"] == 5 and m["conservation"]["finished"] == 1
    assert m["waiting"] == 3 and m["running"] == 1
    assert m["classes"]["MEDIUM"]["admitted"] == 2
    assert m["classes"]["HIGH"]["submitted"] == 0
    assert s.waiting_in("medium") == 3


def test_slo_report_with_injected_time():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    s.submit(1, 10, 2, cls="high")
    s.step(**BUDGET)
    clock.advance_ms(800)  # first token after 800 ms: misses HIGH's 500 ms TTFT bound
    s.on_progress(1, 10, 1)
    report = s.slo_report("cumulative")
    ttft = report["HIGH"]["ttft"]
    assert ttft["samples"] == 1 and ttft["met"] is False
    assert ttft["bound_ms"] == 500.0 and 799.0 <= ttft["measured_ms"] <= 801.0
    assert report["MEDIUM"]["ttft"]["samples"] == 0
    assert "e2e" in report["LOW"] and "ttft" not in report["LOW"]
    assert s.slo_report("1m")["HIGH"]["ttft"]["samples"] == 1
    with pytest.raises(triage.ArgumentError, match="not configured"):
        s.slo_report("7m")
    with pytest.raises(triage.ArgumentError, match="expected"):
        s.slo_report("forever")


def test_config_from_path_and_located_errors(tmp_path):
    good = tmp_path / "triage.toml"
    good.write_text('max_wait_ms = 5000\n[[classes]]\nname = "ONLY"\nvllm_priority = [0, 10]\n'
                    "[[slo.classes]]\n")
    cfg = triage.Config.from_path(str(good))
    assert cfg.class_names == ["ONLY"] and cfg.max_wait_ms == 5000
    assert cfg.class_for_priority(7) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("max_wait_ms = 90000\nbucket_width_ms = 0\n")
    with pytest.raises(triage.ConfigError, match="bucket_width_ms") as e:
        triage.Config.from_path(str(bad))
    assert "line 2" in str(e.value)
    with pytest.raises(triage.ConfigError, match="max_wiat_ms"):
        triage.Config.from_toml("max_wiat_ms = 1\n")
    with pytest.raises(triage.ConfigError):
        triage.Config.from_path(str(tmp_path / "missing.toml"))


def test_reload_applies_at_next_step(aging_config):
    s = triage.Scheduler(clock=triage.ManualClock())
    s.reload(aging_config)
    s.step(**BUDGET)
    assert s.config.max_wait_ms == 1000


def test_submitters_on_threads_while_the_engine_steps():
    s = triage.Scheduler(clock=triage.ManualClock())
    sub = s.submitter()
    n_threads, per = 4, 500

    def api(t):
        for i in range(per):
            sub.submit(t * per + i, 1, 1, cls=["high", "medium", "low"][i % 3])

    threads = [threading.Thread(target=api, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    wide = dict(BUDGET, max_num_seqs=100_000)
    started = 0
    while any(t.is_alive() for t in threads):
        started += len(s.step(**wide).admitted)
    for t in threads:
        t.join()
    started += len(s.step(**wide).admitted)
    assert started == n_threads * per
    assert s.metrics()["balanced"]


def test_fairness_between_tenants_and_the_tenant_limit():
    cfg = triage.Config.from_toml(
        "[fairness]\nenabled = true\nmax_tenants = 2\n"
        "[[fairness.tenants]]\nid = 2\nweight = 1.0\n"
    )
    clock = triage.ManualClock()
    s = triage.Scheduler(cfg, clock=clock)
    # Tenant 1 sends five requests before tenant 2 sends two; one seat per step.
    for i in range(5):
        s.submit(i, 10, 1, cls="medium", tenant=1)
    s.submit(10, 10, 1, cls="medium", tenant=2)
    s.submit(11, 10, 1, cls="medium", tenant=2)
    s.submit(20, 10, 1, cls="medium", tenant=3)  # a third tenant: refused when drained
    order = []
    refused = []
    for _ in range(7):
        d = s.step(max_num_seqs=1, max_batched_tokens=100_000, free_blocks=7000)
        refused += d.tenant_limited
        for a in d.admitted:
            order.append(a.id)
            s.on_progress(a.id, 10, 1)
            s.on_finished(a.id)
        clock.advance_ms(10)
    assert refused == [(20, "MEDIUM", 3)]
    # Served alternately while both are backlogged, not all of tenant 1 first.
    assert order[:4] == [0, 10, 1, 11], order
    assert sorted(order) == [0, 1, 2, 3, 4, 10, 11]


def test_fairness_counters_are_visible():
    cfg = triage.Config.from_toml(
        "[fairness]\nenabled = true\n[[fairness.tenants]]\nid = 2\nweight = 2.0\n"
    )
    clock = triage.ManualClock()
    s = triage.Scheduler(cfg, clock=clock)
    assert s.tenants_held == 0
    assert s.tenant_service(1, "medium") is None  # holds nothing yet
    s.submit(1, 10, 4, cls="medium", tenant=1)
    s.submit(2, 10, 4, cls="medium", tenant=2)
    s.submit(3, 10, 4, cls="medium")  # no tenant: the shared tenant of its own
    d = s.step(**BUDGET)
    assert s.tenants_held == 3
    for a in d.admitted:
        s.on_progress(a.id, 10, 1)
    # Prompt weight 1, output weight 2: 10 + 2 = 12 tokens each, over the tenant's weight.
    assert s.tenant_service(1, "medium") == pytest.approx(12.0)
    assert s.tenant_service(2, 1) == pytest.approx(6.0)
    assert s.tenant_service(None, "MEDIUM") == pytest.approx(12.0)
    assert s.tenant_service(1, "high") == pytest.approx(0.0)
    assert s.tenant_service(9, "medium") is None
    for a in d.admitted:
        s.on_finished(a.id)
    s.step(**BUDGET)
    assert s.tenants_held == 0
    with pytest.raises(triage.ClassError):
        s.tenant_service(1, "urgent")
    with pytest.raises(triage.ArgumentError, match="tenant must be an int from 0"):
        s.tenant_service(-1, "medium")
    # Fairness off: nothing is tracked.
    off = triage.Scheduler(clock=triage.ManualClock())
    off.submit(1, 10, 4, cls="medium", tenant=1)
    off.step(**BUDGET)
    assert off.tenants_held == 0 and off.tenant_service(1, "medium") is None


def test_two_classes_without_slo_entries_get_the_targets_of_their_names():
    # Used to fail: "expected 2 entries, one per scheduler class, found 3".
    cfg = triage.Config.from_toml(
        '[[classes]]\nname = "high"\nvllm_priority = [0, 0]\n'
        '[[classes]]\nname = "batch"\nvllm_priority = [1, 9]\npromote_after_ms = 1000\n'
    )
    s = triage.Scheduler(cfg, clock=triage.ManualClock())
    report = s.slo_report()
    assert report["high"]["ttft"]["bound_ms"] == 500.0 and report["high"]["ttft"]["quantile"] == 0.99
    assert report["batch"] == {}
    with pytest.raises(triage.ConfigError, match=r"line 7, column 1: .*`slo.classes`: expected 2 entries"):
        triage.Config.from_toml(
            '[[classes]]\nname = "A"\nvllm_priority = [0, 0]\n'
            '[[classes]]\nname = "B"\nvllm_priority = [1, 1]\n'
            + "[[slo.classes]]\n" * 3
        )


def _documented_keys(section: str) -> set:
    """The keys the table under `section` in docs/python.md lists (first column)."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parents[2] / "docs" / "python.md").read_text()
    body = doc.split(section, 1)[1].split("\n#", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\| `([a-z_\[\]\.]+)` \|", body, re.M)}


def test_metrics_keys_are_the_documented_ones():
    s = triage.Scheduler(clock=triage.ManualClock())
    m = s.metrics()
    keys = set(m)
    keys |= {f"conservation.{k}" for k in m["conservation"]}
    keys |= {f"classes[name].{k}" for k in m["classes"]["HIGH"]}
    assert set(m["classes"]) == {"HIGH", "MEDIUM", "LOW"}
    assert all(set(c) == set(m["classes"]["HIGH"]) for c in m["classes"].values())
    assert _documented_keys("### Keys of `metrics()`") == keys
