"""The scheduler bindings: request handles and the id index, order, aging and max wait
under injected time, cancel, reprioritize, progress callbacks, metrics, SLO report,
configuration and errors."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
from conftest import toml_config

import triage

BUDGET = dict(max_num_seqs=256, max_batched_tokens=100_000, free_blocks=7000)


def admitted_ids(decision):
    return [a.id for a in decision.admitted]


def scheduled_work(decision):
    """``(id, tokens)`` of each running request's work in the decision."""
    return [(w.id, w.tokens) for w in decision.scheduled]


ID_INDEX = triage.Config.from_toml("id_index = true\n")


def test_import_needs_no_vllm():
    import sys

    import triage.vllm  # noqa: F401

    assert "vllm" not in sys.modules or sys.modules["vllm"] is not None


# Request handles and the id index.


def test_submit_returns_a_hashable_handle():
    s = triage.Scheduler(clock=triage.ManualClock())
    h1 = s.submit(1, 10, 5, cls="high")
    h2 = s.submitter().submit(2, 10, 5, cls="low")
    assert type(h1) is triage.RequestHandle and type(h2) is triage.RequestHandle
    assert h1 == h1 and h1 != h2 and len({h1, h2, h1}) == 2
    assert h1 != (h1.index, h1.generation) and h1 != 1, "equal only to a handle"
    assert repr(h1) == f"RequestHandle(index={h1.index}, generation={h1.generation})"
    assert str(h1) == f"request handle {h1.index}.{h1.generation}"
    # Immutable: a copy is the handle itself; it cannot be changed, made, or pickled.
    assert copy.copy(h1) is h1 and copy.deepcopy([h1])[0] is h1
    with pytest.raises(AttributeError):
        h1.index = 7
    with pytest.raises(TypeError):
        triage.RequestHandle()
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(h1)
    # The engine keys its own state by handle: decisions carry the same handles.
    state = {h1: "one", h2: "two"}
    d = s.step(**BUDGET)
    assert [state[a.handle] for a in d.admitted] == ["one", "two"]


def test_admitted_carries_the_handle_and_the_arrival():
    clock = triage.ManualClock(1_000)
    s = triage.Scheduler(clock=clock)
    h = s.submit(1, 10, 5, cls="high")
    clock.advance_ms(3)
    [a] = s.step(**BUDGET).admitted
    assert a.handle == h and a.arrival_ns == 1_000 and a.waited_ns == 3_000_000
    assert s.first_token_at(h) is None
    clock.advance_ms(2)
    s.on_progress(h, 10, 1)
    assert s.first_token_at(h) == 5_001_000
    [w] = s.step(**BUDGET).scheduled
    assert (w.id, w.handle, w.tokens, w.prefill) == (1, h, 1, False)
    assert repr(w) == f"Scheduled(id=1, handle={h!r}, tokens=1, prefill=False)"
    s.on_progress(h, 1, 1)
    assert s.on_finished(h) == "finished"
    assert s.first_token_at(h) is None, "a stale handle names no request"


def test_a_handle_goes_stale_when_its_request_ends():
    s = triage.Scheduler(clock=triage.ManualClock())
    h = s.submit(1, 10, 1, cls="high")
    s.step(**BUDGET)
    s.on_progress(h, 10, 1)
    s.on_finished(h)
    stale = f"{h} names no request the scheduler holds"
    with pytest.raises(triage.ControlError, match=stale):
        s.cancel(h)
    with pytest.raises(triage.ControlError, match=stale):
        s.reprioritize(h, "low")
    with pytest.raises(triage.ProgressError, match=f"{h} names no running request"):
        s.on_progress(h, 0, 1)
    # The slot is reused with another generation: the old handle never reaches the new
    # request.
    h_new = s.submit(2, 10, 1, cls="high")
    assert h_new != h
    with pytest.raises(triage.ControlError):
        s.cancel(h)
    assert s.cancel(h_new) == "waiting"


def test_a_preempted_request_keeps_its_handle():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    h = s.submit(1, 10, 5, cls="low")
    s.step(**dict(BUDGET, max_num_seqs=1))
    s.on_progress(h, 10, 1)
    clock.advance_ms(5)
    d = s.step(**dict(BUDGET, max_num_seqs=0))  # no seat left: preempted
    assert [(p.id, p.reason) for p in d.preempted] == [(1, "over_budget")]
    with pytest.raises(triage.ProgressError, match="names no running request"):
        s.on_progress(h, 1, 1)  # waiting again
    assert s.first_token_at(h) == 0, "still held, with its first token"
    clock.advance_ms(5)
    [a] = s.step(**dict(BUDGET, max_num_seqs=1)).admitted
    assert a.resumed and a.handle == h and a.arrival_ns == 0
    s.on_progress(h, a.prefill_tokens, 1)
    assert s.on_finished(h) == "finished"


def test_lookup_by_id_needs_the_id_index():
    s = triage.Scheduler(clock=triage.ManualClock())
    assert s.config.id_index is False and triage.Config().id_index is False
    h = s.submit(1, 10, 5, cls="high")
    with pytest.raises(triage.ControlError, match="set `id_index = true`"):
        s.lookup(1)
    # Without the index, ids are the engine's business: a second request with id 1 is
    # taken, with a handle of its own.
    h_again = s.submitter().submit(1, 10, 5, cls="high")
    assert h_again != h
    d = s.step(**BUDGET)
    assert admitted_ids(d) == [1, 1] and [a.handle for a in d.admitted] == [h, h_again]
    # A reload cannot switch the index on: the configuration in force stays.
    s.reload(ID_INDEX)
    s.step(**BUDGET)
    assert s.config.id_index is False
    with pytest.raises(triage.ControlError, match="set `id_index = true`"):
        s.lookup(1)

    s = triage.Scheduler(ID_INDEX, clock=triage.ManualClock())
    assert ID_INDEX.id_index is True and s.config.id_index is True
    sub = s.submitter()
    h = sub.submit(7, 10, 1, cls="low")
    assert sub.lookup(7) == s.lookup(7) == h, "found while in ingress"
    with pytest.raises(triage.SubmitError, match="duplicate request id req#7"):
        sub.submit(7, 10, 1, cls="high")
    s.step(**BUDGET)
    assert s.lookup(7) == h, "found while running"
    s.on_progress(s.lookup(7), 10, 1)
    s.on_finished(s.lookup(7))
    with pytest.raises(triage.ControlError, match="req#7 is not held by the scheduler"):
        s.lookup(7)
    # The id is free again, for a new request with a new handle.
    h7 = sub.submit(7, 10, 1, cls="low")
    assert h7 != h and s.lookup(7) == h7
    m = s.metrics()["conservation"]
    assert (m["submitted"], m["refused"], m["finished"], m["in_ingress"]) == (3, 1, 1, 1)


def test_a_burst_up_to_queue_capacity_is_taken_and_the_next_refused():
    cfg = triage.Config.from_toml(
        '[[classes]]\nname = "ONLY"\nvllm_priority = [0, 100]\nqueue_capacity = 4\n'
        "[[slo.classes]]\n"
    )
    s = triage.Scheduler(cfg, clock=triage.ManualClock())
    handles = [s.submit(i, 10, 1, cls="ONLY") for i in range(4)]
    with pytest.raises(triage.SubmitError, match=r"queue full for class ONLY \(capacity 4\)"):
        s.submit(4, 10, 1, cls="ONLY")
    # Two start; two wait: the class has room for two more, and not three.
    d = s.step(**dict(BUDGET, max_num_seqs=2))
    assert [a.handle for a in d.admitted] == handles[:2]
    handles += [s.submit(i, 10, 1, cls="ONLY") for i in (5, 6)]
    with pytest.raises(triage.SubmitError, match="queue full"):
        s.submit(7, 10, 1, cls="ONLY")
    # Nothing accepted is lost: every one starts, in order.
    started = [a.handle for a in d.admitted]
    started += [a.handle for a in s.step(**dict(BUDGET, max_num_seqs=6)).admitted]
    assert started == handles
    c = s.metrics()["conservation"]
    assert (c["submitted"], c["refused"], c["running"]) == (8, 2, 6)
    assert s.metrics()["balanced"] is True


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
    h2 = s.submit(2, 10, 5, cls="medium")
    # One slot per step: at 100 ms MEDIUM goes first.
    one = dict(BUDGET, max_num_seqs=1)
    d = s.step(**one)
    assert admitted_ids(d) == [2]
    s.on_finished(h2)
    s.submit(3, 10, 5, cls="medium")
    clock.advance_ms(300)  # request 1 is now 305 ms old: past LOW's 200 ms threshold
    s.submit(4, 10, 5, cls="medium")
    d = s.step(**one)
    assert admitted_ids(d) == [1]
    assert d.admitted[0].cls == "LOW" and d.admitted[0].effective_cls == "MEDIUM"
    assert d.admitted[0].waited_ns == 305_000_000
    assert d.admitted[0].max_new_tokens == 5


@pytest.mark.parametrize("order", ["ladder", "deadline"])
def test_max_wait_goes_first(order):
    cfg = triage.Config.from_toml(
        toml_config(
            [("HIGH", (0, 0), None), ("MEDIUM", (1, 9), 400), ("LOW", (10, 100), 200)],
            max_wait_ms=1000,
            order=order,
        )
    )
    clock = triage.ManualClock()
    s = triage.Scheduler(cfg, clock=clock)
    s.submit(1, 10, 5, cls="low")
    clock.advance_ms(1000)
    s.submit(2, 10, 5, cls="high")
    # Ladder: an overdue request goes first. Deadline: it goes first while the overdue
    # credit (2% of 100,000 tokens per step) covers its prefill.
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    assert admitted_ids(d) == [1] and d.admitted[0].overdue
    # Deadline order counts each start past max wait (a promise it keeps only while the
    # engine can); the ladder always keeps it.
    assert s.metrics()["classes"]["LOW"]["overdue"] == (1 if order == "deadline" else 0)


def test_explicit_now_ns_and_time_going_backwards():
    s = triage.Scheduler(clock=triage.ManualClock(1_000))
    s.step(**BUDGET, now_ns=5_000)
    with pytest.raises(triage.BudgetError, match="earlier than the previous step"):
        s.step(**BUDGET, now_ns=4_000)


def test_cancel_waiting_and_running():
    s = triage.Scheduler(ID_INDEX, clock=triage.ManualClock())
    h1 = s.submit(1, 10, 5, cls="high")
    assert admitted_ids(s.step(**BUDGET)) == [1]
    s.submit(2, 10, 5, cls="high")
    assert s.cancel(h1) == "running"
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    assert d.aborted == [1]
    s.submit(3, 10, 5, cls="low")
    h4 = s.submit(4, 10, 5, cls="low")
    s.step(**dict(BUDGET, max_num_seqs=1))  # drains 3 and 4; 2 runs
    assert s.cancel(h4) == "waiting"
    with pytest.raises(triage.ControlError, match="already cancelled"):
        s.cancel(h4)
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    assert d.cancelled == [4]
    # Request 4 has ended: its handle is stale.
    with pytest.raises(triage.ControlError, match="names no request the scheduler holds"):
        s.cancel(h4)
    # By id, through the id index: an id no held request has.
    with pytest.raises(triage.ControlError, match="req#999 is not held"):
        s.cancel(s.lookup(999))
    with pytest.raises(triage.ControlError, match="req#4 is not held"):
        s.lookup(4)
    assert s.cancel(s.lookup(3)) == "waiting"


def test_reprioritize_keeps_arrival():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    h1 = s.submit(1, 10, 5, cls="low")
    clock.advance_ms(1)
    s.submit(2, 10, 5, cls="high")
    s.reprioritize(h1, "high")
    d = s.step(**BUDGET)
    assert admitted_ids(d) == [1, 2]


def test_progress_finish_and_errors():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    h = s.submit(1, 32, 2, cls="high")
    d = s.step(**BUDGET)
    assert d.admitted[0].prefill_tokens == 32 and d.admitted[0].handle == h
    clock.advance_ms(20)
    s.on_progress(h, 32, 1)
    with pytest.raises(triage.ProgressError, match="req#1"):
        s.on_progress(h, 0, 5)  # past max_new_tokens
    d = s.step(**BUDGET)
    assert scheduled_work(d) == [(1, 1)]
    assert d.scheduled[0].handle == h and d.scheduled[0].prefill is False
    s.on_progress(h, 1, 1)
    assert s.on_finished(h, "length") == "finished"
    with pytest.raises(triage.ProgressError, match=f"{h} names no running request"):
        s.on_finished(h)
    with pytest.raises(triage.ArgumentError, match="expected \"stop\""):
        s.on_finished(h, "bored")
    with pytest.raises(triage.BudgetError, match="free KV blocks"):
        s.step(1, 1, 10**9)


def test_submit_errors_are_typed():
    s = triage.Scheduler(ID_INDEX, clock=triage.ManualClock())
    s.submit(1, 10, 5, cls="high")
    with pytest.raises(triage.SubmitError, match="duplicate request id req#1"):
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
    handles = [s.submit(i, 10, 1, cls="medium") for i in range(5)]
    d = s.step(**dict(BUDGET, max_num_seqs=2))
    assert [a.handle for a in d.admitted] == handles[:2]
    s.on_progress(handles[0], 10, 1)
    s.on_finished(handles[0])
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
    h = s.submit(1, 10, 2, cls="high")
    s.step(**BUDGET)
    clock.advance_ms(800)  # first token after 800 ms: misses HIGH's 500 ms TTFT bound
    s.on_progress(h, 10, 1)
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

    def engine_step():
        # One iteration of an engine: each request started runs its one-token prompt and
        # samples its one output token.
        nonlocal started
        d = s.step(**wide)
        for a in d.admitted:
            s.on_progress(a.handle, 1, 1)
            s.on_finished(a.handle)
        started += len(d.admitted)

    while any(t.is_alive() for t in threads):
        engine_step()
    for t in threads:
        t.join()
    # Deadline order gives relaxed prefills (LOW, its deadline far away) 512 prompt tokens
    # per iteration in all, so the last LOW requests may start over the next steps.
    for _ in range(10):
        engine_step()
    assert started == n_threads * per
    assert s.waiting == 0
    m = s.metrics()
    assert m["balanced"] and m["conservation"]["finished"] == n_threads * per


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
            s.on_progress(a.handle, 10, 1)
            s.on_finished(a.handle)
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
        s.on_progress(a.handle, 10, 1)
    # Prompt weight 1, output weight 2: 10 + 2 = 12 tokens each, over the tenant's weight.
    assert s.tenant_service(1, "medium") == pytest.approx(12.0)
    assert s.tenant_service(2, 1) == pytest.approx(6.0)
    assert s.tenant_service(None, "MEDIUM") == pytest.approx(12.0)
    assert s.tenant_service(1, "high") == pytest.approx(0.0)
    assert s.tenant_service(9, "medium") is None
    for a in d.admitted:
        s.on_finished(a.handle)
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


# Deadline order (the default): per-request targets, relegation and shedding.

SHED_MEDIUM = (
    '[[classes]]\nname = "HIGH"\nvllm_priority = [0, 0]\n'
    '[[classes]]\nname = "MEDIUM"\nvllm_priority = [1, 9]\non_late = "shed"\n'
    '[[classes]]\nname = "LOW"\nvllm_priority = [10, 100]\n'
)


def _first_of_two_mediums(ttft_ms, config=None):
    """The request one seat starts: MEDIUM 1 at 0 ms, then MEDIUM 2 at 1 ms with ttft_ms."""
    clock = triage.ManualClock()
    s = triage.Scheduler(config, clock=clock)
    s.submit(1, 10, 5, cls="medium")  # deadline: arrival + 2 s (MEDIUM's TTFT bound)
    clock.advance_ms(1)
    s.submit(2, 10, 5, cls="medium", ttft_ms=ttft_ms)
    return admitted_ids(s.step(**dict(BUDGET, max_num_seqs=1)))


def test_a_request_s_own_ttft_target_orders_it_by_its_deadline():
    assert triage.Config().order == "deadline"
    assert _first_of_two_mediums(None) == [1]
    # Its deadline is 1 ms + 100 ms, before the earlier request's 2 s.
    assert _first_of_two_mediums(100) == [2]
    # The ladder orders by class and arrival only: the target does not move it.
    ladder = triage.Config.from_toml('order = "ladder"\n')
    assert _first_of_two_mediums(100, ladder) == [1]


def test_the_submitter_takes_ttft_ms_too():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    sub = s.submitter()
    sub.submit(1, 10, 5, cls="medium")
    clock.advance_ms(1)
    # 7 days, but no deadline is later than arrival + max_wait_ms (60 s): after 1's 2 s.
    sub.submit(2, 10, 5, cls="medium", ttft_ms=triage.MAX_TTFT_MS)
    sub.submit(3, 10, 5, cls="medium", ttft_ms=500)
    # 1 ms: its first token cannot come in time (the estimated prefill is longer), so it
    # is relegated behind every request that can still meet its deadline.
    sub.submit(4, 10, 5, cls="medium", ttft_ms=1)
    d = s.step(**BUDGET)
    assert admitted_ids(d) == [3, 1, 2, 4]
    assert [a.relegated for a in d.admitted] == [False, False, False, True]


def test_late_requests_are_shed_or_relegated_by_their_class_rule():
    clock = triage.ManualClock()
    s = triage.Scheduler(triage.Config.from_toml(SHED_MEDIUM), clock=clock)
    s.submit(1, 10, 5, cls="high")  # TTFT 500 ms, on_late = "keep"
    h2 = s.submit(2, 10, 5, cls="medium")  # TTFT 2 s, on_late = "shed"
    clock.advance_ms(3000)  # both past their deadlines when the step first sees them
    d = s.step(**BUDGET)
    [(shed_id, shed_cls, waited_ns, late_by_ns)] = d.shed
    assert (shed_id, shed_cls, waited_ns) == (2, "MEDIUM", 3_000_000_000)
    # 1 s past its deadline, plus its estimated prefill: when its first token would come.
    assert late_by_ns > 1_000_000_000
    assert d.timed_out == [] and d.tenant_limited == []
    # The relegated one still starts: nothing that can meet its deadline is waiting.
    assert admitted_ids(d) == [1] and d.admitted[0].relegated
    m = s.metrics()
    assert m["balanced"] is True
    assert m["conservation"]["shed"] == 1 and m["conservation"]["waiting"] == 0
    assert m["classes"]["MEDIUM"]["shed"] == 1 and m["classes"]["MEDIUM"]["relegated"] == 0
    assert m["classes"]["HIGH"]["relegated"] == 1 and m["classes"]["HIGH"]["shed"] == 0
    with pytest.raises(triage.ControlError, match="names no request the scheduler holds"):
        s.cancel(h2)  # it has ended: its handle is stale


# Every class relegates its late requests (a class without `on_late` keeps).
KEEP_ALL = (
    '[[classes]]\nname = "HIGH"\nvllm_priority = [0, 0]\n'
    '[[classes]]\nname = "MEDIUM"\nvllm_priority = [1, 9]\n'
    '[[classes]]\nname = "LOW"\nvllm_priority = [10, 100]\n'
)


def test_a_relegated_request_waits_behind_those_that_can_meet_their_deadline():
    clock = triage.ManualClock()
    s = triage.Scheduler(triage.Config.from_toml(KEEP_ALL), clock=clock)
    s.submit(1, 10, 5, cls="high")
    clock.advance_ms(3000)  # six times HIGH's 500 ms TTFT bound
    h2 = s.submit(2, 10, 5, cls="low")
    one = dict(BUDGET, max_num_seqs=1)
    d = s.step(**one)
    assert admitted_ids(d) == [2] and not d.admitted[0].relegated
    assert s.relegated_in("high") == 1 and s.relegated_in(0) == 1
    assert s.relegated_in("low") == 0
    assert s.waiting_in("high") == 1, "waiting_in counts the relegated ones too"
    s.on_progress(h2, 10, 1)
    s.on_finished(h2)
    d = s.step(**one)
    assert admitted_ids(d) == [1] and d.admitted[0].relegated
    assert s.relegated_in("high") == 0
    assert s.metrics()["classes"]["HIGH"]["relegated"] == 1


def test_by_default_a_late_high_request_waits_behind_high_only():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)  # HIGH's on_late is "serve"
    s.submit(1, 10, 5, cls="high")
    clock.advance_ms(3000)  # six times HIGH's 500 ms TTFT bound
    s.submit(2, 10, 5, cls="low")
    d = s.step(**dict(BUDGET, max_num_seqs=1))
    # Relegated within HIGH: ahead of the live LOW request.
    assert admitted_ids(d) == [1] and d.admitted[0].relegated
    assert s.relegated_in("high") == 0
    assert s.metrics()["classes"]["HIGH"]["relegated"] == 1


def test_iteration_estimate_starts_at_the_configured_value_and_follows_the_engine():
    clock = triage.ManualClock()
    s = triage.Scheduler(clock=clock)
    assert s.iteration_estimate_ns() == 50_000_000  # deadline.initial_iteration_ms
    cfg = triage.Config.from_toml("[deadline]\ninitial_iteration_ms = 20\n")
    assert triage.Scheduler(cfg, clock=clock).iteration_estimate_ns() == 20_000_000
    h = s.submit(1, 10, 50, cls="high")
    assert admitted_ids(s.step(**BUDGET)) == [1]
    s.on_progress(h, 10, 1)
    for _ in range(5):  # iterations of 10 ms, each giving the request a token
        clock.advance_ms(10)
        assert scheduled_work(s.step(**BUDGET)) == [(1, 1)]
        s.on_progress(h, 1, 1)
    assert 10_000_000 < s.iteration_estimate_ns() < 50_000_000


def test_config_exposes_the_order_and_the_deadline_settings():
    default = triage.Config()
    assert default.order == "deadline"
    assert default.on_late == ["serve", "keep", "keep"]
    assert set(default.deadline) == {
        "urgent_slack_ms",
        "max_decode_delay_ms",
        "relaxed_slack_ms",
        "relaxed_chunk_tokens",
        "overdue_share",
        "initial_iteration_ms",
    }
    cfg = triage.Config.from_toml(
        'order = "ladder"\n'
        "[deadline]\nurgent_slack_ms = 120\nmax_decode_delay_ms = 0\nrelaxed_slack_ms = 9000\n"
        "relaxed_chunk_tokens = 64\noverdue_share = 0.25\ninitial_iteration_ms = 7\n"
        + SHED_MEDIUM
    )
    assert cfg.order == "ladder"
    assert cfg.on_late == ["keep", "shed", "keep"]
    assert cfg.deadline == {
        "urgent_slack_ms": 120,
        "max_decode_delay_ms": 0,
        "relaxed_slack_ms": 9000,
        "relaxed_chunk_tokens": 64,
        "overdue_share": 0.25,
        "initial_iteration_ms": 7,
    }
    with pytest.raises(triage.ConfigError, match="order"):
        triage.Config.from_toml('order = "edf"\n')


def test_config_with_engine_replaces_the_engine_limits():
    base = triage.Config()
    assert base.engine == {"block_size": 16, "total_blocks": 7450, "max_model_len": 4096, "watermark": 0.01}
    c = base.with_engine(block_size=32, total_blocks=100, max_model_len=2048, watermark=0.0)
    assert c.engine == {"block_size": 32, "total_blocks": 100, "max_model_len": 2048, "watermark": 0.0}
    assert base.engine["total_blocks"] == 7450, "a copy: the original is unchanged"
    assert c.class_names == base.class_names
    assert base.with_engine(total_blocks=5).engine["block_size"] == 16, "the others kept"
    # The scheduler takes them: a request longer than the KV cache is refused.
    s = triage.Scheduler(c.with_engine(total_blocks=4))
    with pytest.raises(triage.SubmitError):
        s.submit(1, 200, 1, cls="low")
    with pytest.raises(triage.ConfigError, match="engine.block_size"):
        base.with_engine(block_size=0)
    with pytest.raises(triage.ConfigError, match="engine.watermark"):
        base.with_engine(watermark=0.5)
    with pytest.raises(triage.ArgumentTypeError):
        base.with_engine(watermark="0.1")
