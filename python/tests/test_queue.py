"""TriageRequestQueue without vLLM: vLLM's RequestQueue semantics against a reference
model written from vLLM's documented behaviour, aging and max wait under an injected
clock, and the out-of-range rule."""

from __future__ import annotations

import logging
import math
import os
import random
import signal

import pytest
from conftest import FakeRequest, one_class_per_priority, toml_config

import triage
from triage.vllm import TriageRequestQueue


class ReferencePriorityQueue:
    """vLLM's priority order, by a sort: (priority, arrival_time, request_id, id())."""

    def __init__(self):
        self.items = []

    @staticmethod
    def key(r):
        return (r.priority, r.arrival_time, r.request_id, id(r))

    def order(self):
        return sorted(self.items, key=self.key)

    def add(self, r):
        self.items.append(r)

    def pop(self):
        if not self.items:
            raise IndexError("empty")
        r = self.order()[0]
        self.items.remove(r)
        return r

    def peek(self):
        if not self.items:
            raise IndexError("empty")
        return self.order()[0]

    def remove(self, r):
        self.items.remove(r)  # ValueError when absent

    def remove_many(self, rs):
        gone = set(map(id, rs))
        self.items = [r for r in self.items if id(r) not in gone]


PRIORITIES = [-2, 0, 1, 3, 7, 50, 99, 100]
#: More distinct priorities than a configuration has classes (8 at most), some outside
#: every default range, one past 64 bits: the vLLM-exact mode orders them all as vLLM does.
MANY_PRIORITIES = [-(2**40), -3, -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 200, 2**63 - 1]


def random_request(rng, n, priorities=PRIORITIES):
    # Few arrival values and short ids, so equal arrivals (and equal ids) are common.
    return FakeRequest(
        request_id=rng.choice("abc") + str(rng.randrange(3)),
        priority=rng.choice(priorities),
        arrival_time=rng.choice([0.5, 1.0, 1.0, 2.0, 1e9 + 0.25, 1.0000000001]),
    )


@pytest.mark.parametrize("seed", range(20))
def test_aging_off_matches_priority_reference(seed):
    run_against_reference(
        random.Random(seed), TriageRequestQueue(one_class_per_priority(PRIORITIES), aging=False)
    )


@pytest.mark.parametrize("seed", range(20))
def test_the_exact_mode_matches_vllm_for_any_integer_priorities(seed):
    # The default configuration (3 classes) with 17 distinct priorities: the order does not
    # depend on the classes.
    run_against_reference(
        random.Random(seed), TriageRequestQueue(aging=False), MANY_PRIORITIES
    )


def run_against_reference(rng, q, priorities=PRIORITIES):
    """400 random operations on `q` and on the reference; every answer, length and the
    whole order compared after each."""
    ref = ReferencePriorityQueue()
    popped = []
    for step in range(400):
        op = rng.random()
        if op < 0.4:
            r = random_request(rng, step, priorities)
            q.add_request(r)
            ref.add(r)
        elif op < 0.55:
            outcome = []
            for target in (q.pop_request, ref.pop):
                try:
                    outcome.append(target())
                except IndexError:
                    outcome.append(IndexError)
            assert outcome[0] is outcome[1]
            if outcome[0] is not IndexError:
                popped.append(outcome[0])
        elif op < 0.65 and popped:
            r = popped.pop(rng.randrange(len(popped)))
            q.prepend_request(r)
            ref.add(r)
        elif op < 0.7 and popped:
            k = rng.randrange(1, len(popped) + 1)
            batch, popped = popped[:k], popped[k:]
            q.prepend_requests(batch)
            for r in batch:
                ref.add(r)
        elif op < 0.8 and ref.items:
            r = rng.choice(ref.items)
            q.remove_request(r)
            ref.remove(r)
            with pytest.raises(triage.NotQueued):
                q.remove_request(r)
        elif op < 0.88:
            pool = ref.items + popped + [random_request(rng, step, priorities)]
            rs = rng.sample(pool, min(len(pool), rng.randrange(4)))
            q.remove_requests(rs)
            ref.remove_many(rs)
            popped = [r for r in popped if all(r is not x for x in rs)]
        else:
            try:
                assert q.peek_request() is ref.peek()
            except IndexError:
                assert not ref.items
        assert len(q) == len(ref.items) and bool(q) == bool(ref.items)
        order = ref.order()
        assert list(q) == order
        if order:
            assert q[0] is order[0] and q[-1] is order[-1]


@pytest.mark.parametrize("policy,aging", [("fcfs", False), ("priority", True), ("priority", False)])
def test_queues_index_like_a_deque(policy, aging):
    q = TriageRequestQueue(policy=policy, aging=aging, clock=lambda: 10.0)
    rs = [FakeRequest(f"r{i}", i % 3, 1.0 + i) for i in range(5)]
    for r in rs:
        q.add_request(r)
    order = list(q)
    assert [q[i] for i in range(5)] == order and [q[i - 5] for i in range(5)] == order
    assert q[0] is q.peek_request()
    for bad in (5, -6):
        with pytest.raises(IndexError, match="out of range"):
            q[bad]


def test_equal_arrivals_tie_break_by_request_id():
    q = TriageRequestQueue(one_class_per_priority([0]), aging=False)
    rs = [FakeRequest(rid, 0, 5.0) for rid in ["m", "b", "z", "a", "q"]]
    for r in rs:
        q.add_request(r)
    assert [r.request_id for r in q] == ["a", "b", "m", "q", "z"]
    assert [q.pop_request().request_id for _ in range(5)] == ["a", "b", "m", "q", "z"]
    with pytest.raises(triage.QueueEmpty):
        q.pop_request()
    with pytest.raises(triage.QueueEmpty):
        q.peek_request()


def test_many_equal_arrivals_stay_sorted():
    # Each new request sorts first among 300 equal arrivals: the label space between
    # neighbours runs out and the queue relabels.
    q = TriageRequestQueue(one_class_per_priority([0]), aging=False)
    rs = [FakeRequest(f"{1000 - i:04d}", 0, 1.0) for i in range(300)]
    for r in rs:
        q.add_request(r)
    assert list(q) == sorted(rs, key=lambda r: r.request_id)


def test_prepend_keeps_place_and_fcfs_matches_deque():
    q = TriageRequestQueue(aging=False)
    a, b, c = FakeRequest("a", 5, 1.0), FakeRequest("b", 5, 2.0), FakeRequest("c", 5, 3.0)
    for r in (a, b, c):
        q.add_request(r)
    first = q.pop_request()
    q.prepend_request(first)
    assert list(q) == [a, b, c]

    from collections import deque

    f = TriageRequestQueue(policy="fcfs")
    d = deque()
    for r in (c, a, b):
        f.add_request(r)
        d.append(r)
    x = f.pop_request()
    assert x is d.popleft()
    f.prepend_request(x)
    d.appendleft(x)
    x, y = f.pop_request(), f.pop_request()
    d.popleft(), d.popleft()
    f.prepend_requests([x, y])
    d.extendleft([x, y])
    assert list(f) == list(d) == [a, c, b]
    f.remove_requests([c, FakeRequest("zz", 0, 0.0)])
    d.remove(c)
    assert list(f) == list(d)


def test_aging_with_injected_clock(aging_config):
    # HIGH [0,0]; MEDIUM [1,9] promoted after 400 ms; LOW [10,100] after 200 ms; 10 ms
    # buckets: a request leaves its class once its bucket's end is that old.
    now = [100.0]
    q = TriageRequestQueue(aging_config, clock=lambda: now[0])
    low = FakeRequest("low", 50, 100.0)
    q.add_request(low)
    now[0] = 100.1
    medium = FakeRequest("medium", 5, 100.1)
    q.add_request(medium)
    assert list(q) == [medium, low]
    assert q.effective_class(low) == "LOW"
    now[0] = 100.3  # low: MEDIUM since 100.21, and older than medium
    assert q.effective_class(low) == "MEDIUM"
    assert list(q) == [low, medium]
    high = FakeRequest("high", 0, 100.3)
    q.add_request(high)
    assert q.peek_request() is high
    now[0] = 100.45  # low: HIGH since 100.41; medium still MEDIUM until 100.51
    assert list(q) == [low, high, medium]
    now[0] = 100.6  # all HIGH: by arrival
    assert list(q) == [low, medium, high]
    assert q.pop_request() is low
    # Aging off: strict priority order whatever the time.
    off = TriageRequestQueue(aging_config, aging=False, clock=lambda: 1e12)
    off.add_request(low)
    off.add_request(high)
    assert list(off) == [high, low]


def test_max_wait_with_injected_clock():
    cfg = triage.Config.from_toml(
        toml_config([("HIGH", (0, 0), None), ("LOW", (1, 9), None)], max_wait_ms=1000)
    )
    now = [0.0]
    q = TriageRequestQueue(cfg, clock=lambda: now[0])
    low, high = FakeRequest("low", 5, 0.0), FakeRequest("high", 0, 0.5)
    q.add_request(low)
    q.add_request(high)
    now[0] = 0.999
    assert list(q) == [high, low]
    now[0] = 1.0  # low waited max_wait: overdue, before everything
    assert list(q) == [low, high]
    assert q.pop_request() is low


def test_out_of_range_priorities_clamp_or_raise(aging_config):
    # Classes (aging on): a priority maps to a class by the configured ranges.
    q = TriageRequestQueue(aging_config)
    # Ranges: HIGH [0,0], MEDIUM [1,9], LOW [10,100].
    assert q.class_for_priority(-5) == 0
    assert q.class_for_priority(101) == 2
    assert q.class_for_priority(10**12) == 2
    strict = TriageRequestQueue(aging_config, out_of_range="error")
    with pytest.raises(triage.ClassError, match="priority -5 is in no class's range"):
        strict.add_request(FakeRequest("x", -5, 1.0))
    assert len(strict) == 0
    gap = triage.Config.from_toml(
        'max_wait_ms = 100\n[[classes]]\nname = "A"\nvllm_priority = [0, 0]\n'
        '[[classes]]\nname = "B"\nvllm_priority = [10, 10]\n[[slo.classes]]\n[[slo.classes]]\n'
    )
    g = TriageRequestQueue(gap, aging=False)
    assert [g.class_for_priority(p) for p in (4, 5, 6)] == [0, 0, 1]


def test_misuse_is_reported():
    q = TriageRequestQueue(aging=False)
    r = FakeRequest("a", 0, 1.0)
    q.add_request(r)
    with pytest.raises(triage.AlreadyQueued, match="already in this queue"):
        q.add_request(r)
    assert r in q and len(q) == 1
    with pytest.raises(triage.ArgumentError, match="policy"):
        TriageRequestQueue(policy="sjf")
    with pytest.raises(triage.ArgumentTypeError, match="must be a vLLM Request"):
        q.add_request(object())
    # remove_requests accepts any iterable, including a set and a generator.
    q.remove_requests({r})
    q.remove_requests(x for x in [r])
    assert not q


def test_vllm_plugin_entry_point_checks_the_config(tmp_path, monkeypatch):
    from importlib.metadata import entry_points

    import triage.vllm as tv

    eps = [ep for ep in entry_points(group="vllm.general_plugins") if ep.name == "triage"]
    assert [ep.value for ep in eps] == ["triage.vllm:register"]
    assert eps[0].load() is tv.register
    monkeypatch.delenv("TRIAGE_CONFIG", raising=False)
    tv.register()  # default configuration
    bad = tmp_path / "bad.toml"
    bad.write_text("bucket_width_ms = 0\n")
    monkeypatch.setenv("TRIAGE_CONFIG", str(bad))
    with pytest.raises(triage.ConfigError, match="bucket_width_ms"):
        tv.register()
    monkeypatch.setenv("TRIAGE_AGING", "off")
    assert tv.aging_from_env() is False


def test_nan_inf_and_huge_arrivals_no_longer_jump_the_queue():
    # Issue 15's reproduction: NaN, +inf and 1e300 sorted before a request of 10 s (the
    # seconds-to-nanoseconds conversion wrapped to the smallest time).
    q = TriageRequestQueue(aging=False, clock=lambda: 20.0)
    early = FakeRequest("early", 0, 10.0)
    q.add_request(early)
    bad = [FakeRequest(str(t), 0, t) for t in (math.nan, math.inf, 1e300)]
    for r in bad:
        q.add_request(r)
    assert q.pop_request() is early
    # All at the clock's 20 s, so by request_id: "1e+300", "inf", "nan".
    assert list(q) == sorted(bad, key=lambda r: r.request_id)


BAD_ARRIVALS = [math.nan, math.inf, -math.inf, 1e300, -1.0, 10**400, 18_446_744_073.709_553]


@pytest.mark.parametrize("aging", [True, False])
def test_arrival_times_a_timestamp_cannot_hold_queue_at_the_current_time(aging, caplog):
    # NaN, +inf and 1e300 used to wrap to the smallest timestamp and jump ahead of a
    # request that arrived at 10 s. Clamped, they queue as if they arrived now (100 s),
    # behind it, with aging on or off.
    now = [100.0]
    q = TriageRequestQueue(aging=aging, clock=lambda: now[0])
    early = FakeRequest("early", 0, 10.0)
    q.add_request(early)
    bad = [FakeRequest(f"bad{i}", 0, t) for i, t in enumerate(BAD_ARRIVALS)]
    with caplog.at_level(logging.WARNING, logger="triage.vllm"):
        for r in bad:
            q.add_request(r)
    late = FakeRequest("late", 0, 150.0)
    q.add_request(late)
    assert list(q) == [early, *bad, late]
    assert q.clamped_arrivals == len(BAD_ARRIVALS) == 7
    assert q.clamped_priorities == 0
    # Logged the 1st, 2nd and 4th time, naming the request and the value.
    logged = [r.getMessage() for r in caplog.records if r.name == "triage.vllm"]
    assert len(logged) == 3 and all(r.levelno == logging.WARNING for r in caplog.records)
    assert "request 'bad0': arrival_time nan is not finite seconds from 0 to 18446744073.709551615" in logged[0]
    assert "queued at the queue's current time, 100" in logged[0] and "(1 so far" in logged[0]
    assert "request 'bad1': arrival_time inf" in logged[1] and "(2 so far" in logged[1]
    assert "request 'bad3': arrival_time 1e+300" in logged[2] and "(4 so far" in logged[2]
    # A preempted request put back is clamped (and counted) again, at the time it is back.
    assert q.pop_request() is early
    second = q.pop_request()
    assert second is bad[0]
    now[0] = 200.0
    q.prepend_request(second)
    assert q.clamped_arrivals == 8
    assert list(q)[-1] is second


def test_arrival_time_limit_is_the_timestamp_limit():
    q = TriageRequestQueue(aging=False, clock=lambda: 5.0, out_of_range="error")
    top = FakeRequest("top", 0, 18_446_744_073.709_55)  # the largest float that fits
    zero = FakeRequest("zero", 0, 0.0)
    q.add_request(top)
    q.add_request(zero)
    assert list(q) == [zero, top] and q.clamped_arrivals == 0


def test_arrival_times_out_of_range_raise_with_out_of_range_error():
    q = TriageRequestQueue(aging=False, clock=lambda: 5.0, out_of_range="error")
    for t in BAD_ARRIVALS:
        with pytest.raises(triage.ArgumentError, match="request.arrival_time must be finite seconds from 0 to 18446744073.709551615") as e:
            q.add_request(FakeRequest("x", 0, t))
        assert type(e.value) is triage.ArgumentError
    assert len(q) == 0 and q.clamped_arrivals == 0


def test_a_refused_add_counts_no_clamp():
    q = TriageRequestQueue(clock=lambda: 5.0)
    r = FakeRequest("r", -7, math.nan)
    q.add_request(r)
    assert (q.clamped_arrivals, q.clamped_priorities) == (1, 1)
    with pytest.raises(triage.AlreadyQueued):
        q.add_request(r)
    assert (q.clamped_arrivals, q.clamped_priorities) == (1, 1)


def test_out_of_range_priorities_are_counted_and_logged(aging_config, caplog):
    q = TriageRequestQueue(aging_config, clock=lambda: 1.0)
    with caplog.at_level(logging.WARNING, logger="triage.vllm"):
        q.add_request(FakeRequest("in", 5, 1.0))
        q.add_request(FakeRequest("neg", -5, 1.0))
        q.add_request(FakeRequest("big", 2**70, 1.0))  # beyond 64 bits: LOW, the nearest
    assert q.clamped_priorities == 2 and q.clamped_arrivals == 0
    assert [q.effective_class(r) for r in q] == ["HIGH", "MEDIUM", "LOW"]
    logged = [r.getMessage() for r in caplog.records if r.name == "triage.vllm"]
    assert len(logged) == 2
    assert "request 'neg': priority -5 is in no class's range; queued as HIGH (the nearest range)" in logged[0]
    assert f"request 'big': priority {2**70} is in no class's range; queued as LOW" in logged[1]
    # class_for_priority only answers; it counts nothing.
    assert q.class_for_priority(-5) == 0 and q.clamped_priorities == 2


def test_a_failure_to_log_a_clamp_does_not_fail_the_add(monkeypatch):
    # The request is queued before the warning is logged: a logging error must not make
    # the add look failed (inside vLLM it would also stop the engine). It goes to
    # sys.unraisablehook, as Python does with errors it cannot raise.
    import sys

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))

    def boom(record):
        raise RuntimeError("broken log filter")

    logger = logging.getLogger("triage.vllm")
    logger.addFilter(boom)
    try:
        q = TriageRequestQueue(aging=False, clock=lambda: 1.0)
        r = FakeRequest("r", 0, math.nan)
        q.add_request(r)
    finally:
        logger.removeFilter(boom)
    assert r in q and q.clamped_arrivals == 1
    assert len(seen) == 1 and str(seen[0]) == "broken log filter"


def test_a_client_names_the_class_through_vllm_xargs(aging_config, caplog):
    """vLLM's OpenAI server puts a body's ``vllm_xargs`` in ``sampling_params.extra_args``:
    ``triage_class`` there names the class, before the priority's range does."""
    from types import SimpleNamespace

    def req(rid, priority, xargs):
        r = FakeRequest(rid, priority, 1.0)
        r.sampling_params = SimpleNamespace(extra_args=xargs)
        return r

    q = TriageRequestQueue(aging_config, clock=lambda: 1.0)
    named = req("named", 50, {"triage_class": "HIGH", "other": 1})  # LOW by its priority
    plain = req("plain", 0, None)  # HIGH by its priority, earlier id
    no_key = req("no-key", 5, {"other": 1})  # MEDIUM
    with caplog.at_level(logging.WARNING, logger="triage.vllm"):
        bad = req("bad", 5, {"triage_class": "URGENT"})  # not a class: the priority decides
        for r in (named, plain, no_key, bad):
            q.add_request(r)
    assert [q.effective_class(r) for r in (named, plain, no_key, bad)] == [
        "HIGH", "HIGH", "MEDIUM", "MEDIUM"
    ]
    assert [r.request_id for r in q] == ["named", "plain", "bad", "no-key"]
    assert q.clamped_classes == 1 and q.clamped_priorities == 0
    assert any("vllm_xargs triage_class 'URGENT' is not a class" in r.getMessage() for r in caplog.records)
    strict = TriageRequestQueue(aging_config, out_of_range="error")
    with pytest.raises(triage.ClassError, match="triage_class 'URGENT' is not a class; classes: HIGH, MEDIUM, LOW"):
        strict.add_request(req("bad2", 5, {"triage_class": "URGENT"}))
    assert len(strict) == 0
    # The vLLM-exact mode orders by priority alone: the name changes nothing there.
    exact = TriageRequestQueue(aging_config, aging=False)
    exact.add_request(req("named", 50, {"triage_class": "HIGH"}))
    exact.add_request(req("plain", 7, None))
    assert [r.request_id for r in exact] == ["plain", "named"]


def test_reconfigure_requeues_every_request_under_the_new_classes(aging_config):
    q = TriageRequestQueue(aging_config, clock=lambda: 1.0, out_of_range="error")
    rs = [FakeRequest(f"r{p}", p, 1.0 + p / 100) for p in (0, 5, 50)]
    for r in rs:
        q.add_request(r)
    assert [q.effective_class(r) for r in rs] == ["HIGH", "MEDIUM", "LOW"]
    # Two classes now; 50 is in no range any more: clamped, not lost, even under "error".
    two = triage.Config.from_toml(
        toml_config([("FAST", (0, 5), None), ("SLOW", (6, 10), 300)], max_wait_ms=1000)
    )
    q.reconfigure(two)
    assert len(q) == 3 and all(r in q for r in rs)
    assert [q.effective_class(r) for r in rs] == ["FAST", "FAST", "SLOW"]
    assert list(q) == rs  # r0 and r5 in FAST by arrival, then r50
    assert q.clamped_priorities == 1
    with pytest.raises(triage.ClassError):  # the rule is back for new requests
        q.add_request(FakeRequest("late", 99, 2.0))


def test_config_watch_rereads_a_changed_file_and_keeps_the_old_on_errors(tmp_path, caplog):
    from triage.vllm import ConfigWatch

    path = tmp_path / "triage.toml"
    path.write_text(toml_config([("A", (0, 0), None), ("B", (1, 9), 300)]))
    watch = ConfigWatch(str(path), every=0.0, hangup=False)
    assert watch.poll() is None  # unchanged since it was built
    path.write_text(toml_config([("X", (0, 9), None)]))
    os.utime(path, ns=(1, 10**18))  # a modification time that differs for sure
    config = watch.poll()
    assert config is not None and config.class_names == ["X"]
    assert watch.poll() is None
    with caplog.at_level(logging.ERROR, logger="triage.vllm"):
        path.write_text("max_wait_ms = -1\n")
        os.utime(path, ns=(1, 2 * 10**18))
        assert watch.poll() is None
    assert any("max_wait_ms" in r.getMessage() and "unchanged" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_config_watch_rereads_on_sighup(tmp_path):
    from triage.vllm import ConfigWatch

    path = tmp_path / "triage.toml"
    path.write_text(toml_config([("A", (0, 9), None)]))
    watch = ConfigWatch(str(path), every=3600.0)
    try:
        assert watch.poll() is None
        os.kill(os.getpid(), signal.SIGHUP)  # handled in this (the main) thread
        config = watch.poll()  # the signal skips the wait and the modification time
        assert config is not None and config.class_names == ["A"]
        assert watch.poll() is None
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
