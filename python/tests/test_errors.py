"""Every error the package raises is a TriageError subclass naming what is wrong; where
Python or vLLM code expects a built-in exception the class is also that built-in. Each
documented error path (docs/python.md, "Errors") is checked here for its exact class."""

from __future__ import annotations

import math

import pytest
from conftest import FakeRequest

import triage
from triage.vllm import TriageRequestQueue

BUDGET = dict(max_num_seqs=8, max_batched_tokens=4096, free_blocks=7000)

# (class name, the built-in it also is, or None)
HIERARCHY = [
    ("ConfigError", None),
    ("ClassError", None),
    ("SubmitError", None),
    ("ControlError", None),
    ("ProgressError", None),
    ("BudgetError", None),
    ("ArgumentError", ValueError),
    ("ArgumentTypeError", TypeError),
    ("QueueEmpty", IndexError),
    ("NotQueued", ValueError),
    ("AlreadyQueued", ValueError),
]


def test_the_hierarchy():
    assert issubclass(triage.TriageError, Exception)
    for name, builtin in HIERARCHY:
        assert name in triage.__all__, name
        cls = getattr(triage, name)
        assert issubclass(cls, triage.TriageError), cls
        if builtin is not None:
            assert issubclass(cls, builtin), cls
        assert cls.__name__ == name and cls.__module__ == "triage._triage" and cls.__doc__, cls
    # Picklable by name (multiprocessing, logging handlers).
    import pickle

    for cls in (triage.QueueEmpty, triage.ConfigError):
        e = pickle.loads(pickle.dumps(cls("x")))
        assert type(e) is cls and e.args == ("x",)


def raises(exc, fn, /, *args, match=None, **kwargs):
    """Calls fn, checks it raises exactly `exc` (a TriageError) and returns the message."""
    with pytest.raises(triage.TriageError) as info:
        fn(*args, **kwargs)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    if match is not None:
        assert match in message, message
    return message


@pytest.fixture
def sched():
    return triage.Scheduler(clock=triage.ManualClock())


# The three plain ValueErrors of issue 15, and the ones like them.


def test_slo_report_of_a_window_not_configured(sched):
    m = raises(triage.ArgumentError, sched.slo_report, "2m", match='window "2m" is not configured')
    assert '"1m", "5m", "1h", "cumulative"' in m
    raises(triage.ArgumentError, sched.slo_report, "forever", match="window")
    raises(triage.ArgumentTypeError, sched.slo_report, 60, match="window must be a str, not int")


def test_on_finished_with_an_unknown_reason(sched):
    h = sched.submit(1, 10, 2, cls="high")
    sched.step(**BUDGET)
    raises(triage.ArgumentError, sched.on_finished, h, "done", match='reason "done": expected "stop"')
    assert sched.running == 1, "nothing changed"
    raises(triage.ArgumentTypeError, sched.on_finished, h, 3, match="reason must be a str")
    assert sched.on_finished(h) == "finished"


def test_cls_and_priority_both_or_neither(sched):
    raises(triage.ArgumentError, sched.submit, 1, 10, 5, cls="high", priority=0, match="not both")
    raises(triage.ArgumentError, sched.submit, 1, 10, 5, match="give cls")
    assert sched.metrics()["conservation"]["submitted"] == 0
    h = sched.submit(1, 10, 5, cls="low")
    raises(triage.ArgumentError, sched.reprioritize, h, "high", priority=0, match="not both")
    raises(triage.ArgumentError, sched.reprioritize, h, match="give cls")
    sched.step(**BUDGET)
    classes = sched.metrics()["classes"]
    assert all(c["reprioritized_in"] == 0 for c in classes.values()), "nothing changed"
    assert classes["LOW"]["admitted"] == 1


# Numbers and types.


@pytest.mark.parametrize("arg", ["id", "prompt_tokens", "max_new_tokens", "tenant"])
def test_token_counts_and_ids_out_of_range(sched, arg):
    args = dict(id=1, prompt_tokens=10, max_new_tokens=5, tenant=None)
    for bad in (-1, 2**64, -(2**200)):
        kwargs = dict(args, **{arg: bad})
        m = raises(
            triage.ArgumentError,
            sched.submit,
            kwargs.pop("id"),
            kwargs.pop("prompt_tokens"),
            kwargs.pop("max_new_tokens"),
            cls="high",
            **kwargs,
            match=f"{arg} must be an int from 0 to ",
        )
        assert len(m) < 200, "a huge int is cut short in the message"
    for bad in ("10", 1.5, True, None if arg != "tenant" else "x"):
        kwargs = dict(args, **{arg: bad})
        raises(
            triage.ArgumentTypeError,
            sched.submit,
            kwargs.pop("id"),
            kwargs.pop("prompt_tokens"),
            kwargs.pop("max_new_tokens"),
            cls="high",
            **kwargs,
            match=f"{arg} must be an int, not",
        )
    assert sched.metrics()["conservation"]["submitted"] == 0


def test_ttft_ms_out_of_range_and_of_the_wrong_type(sched):
    for submit in (sched.submit, sched.submitter().submit):
        for bad in (-1, 2**32, 2**64, -(2**200)):
            m = raises(
                triage.ArgumentError,
                submit, 1, 10, 5, cls="high", ttft_ms=bad,
                match="ttft_ms must be an int from 1 to 604800000 (milliseconds; 7 days), got ",
            )
            assert len(m) < 200, "a huge int is cut short in the message"
        for bad in ("100", 1.5, True, False, [100], object()):
            raises(triage.ArgumentTypeError, submit, 1, 10, 5, cls="high", ttft_ms=bad, match="ttft_ms must be an int, not ")
    assert sched.metrics()["conservation"]["submitted"] == 0, "refused before the library"
    # An int that fits the library's u32 but is outside 1..=MAX_TTFT_MS: the library
    # refuses the request at submit, as it does a zero prompt, and counts it as refused.
    assert triage.MAX_TTFT_MS == 7 * 24 * 3600 * 1000
    for i, bad in enumerate((0, triage.MAX_TTFT_MS + 1, 2**32 - 1)):
        raises(triage.SubmitError, sched.submit, 10 + i, 10, 5, cls="high", ttft_ms=bad, match=f"req#{10 + i}: ttft_ms must be 1 to 604800000 milliseconds, not {bad}")
    c = sched.metrics()["conservation"]
    assert c["submitted"] == 3 and c["refused"] == 3
    # The bounds themselves, and None (the class's target), are accepted.
    sched.submit(20, 10, 5, cls="high", ttft_ms=1)
    sched.submit(21, 10, 5, cls="high", ttft_ms=triage.MAX_TTFT_MS)
    sched.submit(22, 10, 5, cls="high", ttft_ms=None)
    assert sched.metrics()["conservation"]["in_ingress"] == 3


def test_relegated_in_takes_a_class(sched):
    raises(triage.ClassError, sched.relegated_in, "urgent", match='cls: unknown class "urgent"')
    raises(triage.ClassError, sched.relegated_in, 3, match="cls: unknown class index 3")
    raises(triage.ArgumentTypeError, sched.relegated_in, True, match="cls must be a class name (str) or index (int), not bool")
    raises(triage.ArgumentTypeError, sched.relegated_in, None, match="not NoneType")
    assert sched.relegated_in("high") == sched.relegated_in(2) == 0


def test_a_prompt_of_2_to_the_32_used_to_be_an_overflow_error(sched):
    # Before: OverflowError "out of range integral type conversion attempted", unnamed.
    raises(triage.ArgumentError, sched.submit, 1, 2**32, 5, cls="high", match="prompt_tokens must be an int from 0 to 4294967295, got 4294967296")


def test_class_indexes_out_of_range_and_bools(sched):
    for bad in (-1, 3, 300, 2**100):
        raises(triage.ClassError, sched.submit, 1, 10, 5, cls=bad, match=f"cls: unknown class index {bad}; configured classes are 0..3")
    raises(triage.ClassError, sched.submit, 1, 10, 5, cls="urgent", match="cls: unknown class \"urgent\"")
    # bool is an int subclass: cls=True used to be taken as MEDIUM.
    raises(triage.ArgumentTypeError, sched.submit, 1, 10, 5, cls=True, match="cls must be a class name (str) or index (int), not bool")
    raises(triage.ArgumentTypeError, sched.submit, 1, 10, 5, cls=1.0, match="not float")
    raises(triage.ArgumentTypeError, sched.submit, 1, 10, 5, priority=False, match="priority must be an int, not bool")
    raises(triage.ArgumentTypeError, sched.submit, 1, 10, 5, priority="0", match="priority must be an int, not str")
    raises(triage.ClassError, sched.submit, 1, 10, 5, priority=-1, match="priority -1 is in no class's range")
    raises(triage.ClassError, sched.submit, 1, 10, 5, priority=2**70, match=f"priority {2**70} is in no class's range")
    raises(triage.ClassError, sched.waiting_in, "urgent")
    raises(triage.ArgumentTypeError, sched.waiting_in, None)
    assert sched.metrics()["conservation"]["submitted"] == 0
    sched.submit(1, 10, 5, cls=1)
    assert sched.waiting_in(1) == sched.waiting_in("medium") == 0  # not drained yet


def test_times_out_of_range_are_refused_naming_the_argument(sched):
    for bad in (-1, 2**64, 10**30):
        raises(triage.ArgumentError, sched.step, **BUDGET, now_ns=bad, match="now_ns must be an int from 0 to 18446744073709551615 (ns; a Timestamp holds about 584.5 years)")
    for bad in (math.nan, math.inf, 1e300, 5.0):
        raises(triage.ArgumentTypeError, sched.step, **BUDGET, now_ns=bad, match="now_ns must be an int, not float")
    raises(triage.ArgumentError, sched.step, -1, 10, 10, match="max_num_seqs")
    h = sched.submit(1, 10, 5, cls="high")
    raises(triage.ArgumentError, sched.on_progress, h, -1, 0, match="computed")
    raises(triage.ArgumentError, sched.slo_report, now_ns=-5, match="now_ns")
    raises(triage.ArgumentError, triage.ManualClock, -1, match="start_ns")
    raises(triage.ArgumentError, triage.ManualClock().advance_ms, 2**64, match="ms must be")
    raises(triage.ArgumentTypeError, triage.ManualClock().advance_ns, 1.5, match="ns must be an int")


def test_manual_clock_refuses_to_go_backwards():
    clock = triage.ManualClock(100)
    clock.set_ns(100)
    clock.set_ns(250)
    m = raises(triage.ArgumentError, clock.set_ns, 99, match="t: time 99ns is earlier than the clock's 250ns")
    assert "never goes backwards" in m
    assert clock.now_ns() == 250, "unchanged"
    # A scheduler sharing the clock sees only forward time.
    s = triage.Scheduler(clock=clock)
    assert s.step(**BUDGET).now_ns == 250


def test_wrong_objects_for_config_and_clock():
    raises(triage.ArgumentTypeError, triage.Scheduler, "triage.toml", match="config must be a triage.Config, not str")
    raises(triage.ArgumentTypeError, triage.Scheduler, None, 5, match="clock must be a triage.ManualClock, not int")
    raises(triage.ArgumentTypeError, triage.Scheduler().reload, {}, match="config must be a triage.Config, not dict")
    raises(triage.ArgumentTypeError, triage.Config.from_toml, b"x = 1", match="text must be a str, not bytes")
    raises(triage.ArgumentTypeError, triage.Config.from_path, 3, match="path must be a str or os.PathLike")
    raises(triage.ConfigError, triage.Config.from_path, "/nonexistent/triage.toml")
    raises(triage.ArgumentTypeError, triage.Config().class_for_priority, "0")
    raises(triage.ClassError, triage.Config().class_for_priority, 101, match="priority 101 is in no class's range")


def test_library_errors_keep_their_classes():
    sched = triage.Scheduler(triage.Config.from_toml("id_index = true\n"), clock=triage.ManualClock())
    h = sched.submit(1, 10, 5, cls="high")
    raises(triage.SubmitError, sched.submit, 1, 10, 5, cls="high", match="duplicate request id req#1")
    raises(triage.SubmitError, sched.submit, 2, 0, 5, cls="high", match="prompt")
    raises(triage.ControlError, sched.lookup, 999, match="req#999 is not held")
    raises(triage.ControlError, triage.Scheduler().lookup, 1, match="id_index = true")
    raises(triage.ProgressError, sched.on_progress, h, 1, 1, match="names no running request")
    assert sched.cancel(h) == "waiting"
    raises(triage.ControlError, sched.cancel, h, match="already cancelled")
    sched.step(**BUDGET)
    raises(triage.ControlError, sched.cancel, h, match="names no request the scheduler holds")
    raises(triage.ControlError, sched.reprioritize, h, "low", match="names no request")
    raises(triage.BudgetError, sched.step, 1, 1, 10**9, match="free KV blocks")
    raises(triage.ConfigError, triage.Config.from_toml, "bucket_width_ms = 0\n", match="bucket_width_ms")


# The vLLM queue.


def test_queue_errors_are_triage_errors_and_vllm_builtins():
    q = TriageRequestQueue(aging=False)
    for op in (q.pop_request, q.peek_request):
        raises(triage.QueueEmpty, op, match="the queue is empty")
        with pytest.raises(IndexError):  # what vLLM's scheduler catches
            op()
    r = FakeRequest("a", 0, 1.0)
    raises(triage.NotQueued, q.remove_request, r, match="request 'a' is not in the queue")
    q.add_request(r)
    raises(triage.AlreadyQueued, q.add_request, r, match="request 'a' is already in this queue")
    raises(triage.AlreadyQueued, q.prepend_request, r)
    assert len(q) == 1
    raises(triage.ArgumentTypeError, q.add_request, object(), match="request must be a vLLM Request")
    raises(triage.ArgumentTypeError, q.add_request, FakeRequest("b", "0", 1.0), match="request.priority must be an int, not str")
    raises(triage.ArgumentTypeError, q.add_request, FakeRequest("b", 0, "now"), match="request.arrival_time must be a float (seconds), not str")
    raises(triage.ArgumentTypeError, q.remove_requests, 5, match="requests must be an iterable")
    raises(triage.ArgumentTypeError, q.prepend_requests, None, match="requests must be an iterable")
    raises(triage.ArgumentTypeError, q.class_for_priority, 0.5)
    assert len(q) == 1


def test_queue_constructor_arguments():
    raises(triage.ArgumentError, TriageRequestQueue, policy="sjf", match='policy "sjf": expected "priority" or "fcfs"')
    raises(triage.ArgumentError, TriageRequestQueue, out_of_range="ignore", match='out_of_range "ignore": expected "clamp" or "error"')
    raises(triage.ArgumentTypeError, TriageRequestQueue, aging=1, match="aging must be a bool, not int")
    raises(triage.ArgumentTypeError, TriageRequestQueue, clock=1.0, match="clock must be a callable")
    raises(triage.ArgumentTypeError, TriageRequestQueue, "config", match="config must be a triage.Config")
    q = TriageRequestQueue(clock=lambda: math.nan)
    raises(triage.ArgumentError, q.add_request, FakeRequest("a", 0, 1.0), match="clock() returned nan")
    assert len(q) == 0


# Whatever is passed, what is raised is a TriageError.

BAD_VALUES = [None, -1, 2**64, 2**200, 1.5, math.nan, "x", b"x", True, object(), [1], {}]


def test_handles_are_required_where_a_request_is_named(sched):
    # A request id where a handle belongs: the message says how to get a handle.
    h = sched.submit(1, 10, 2, cls="high")
    for call, args in [
        (sched.cancel, ()),
        (sched.submitter().cancel, ()),
        (sched.reprioritize, ("low",)),
        (sched.submitter().reprioritize, ("low",)),
        (sched.on_progress, (10, 1)),
        (sched.on_finished, ()),
        (sched.first_token_at, ()),
    ]:
        raises(triage.ArgumentTypeError, call, 1, *args, match="handle must be a triage.RequestHandle (returned by submit; lookup(id) finds one with id_index = true), not int")
        raises(triage.ArgumentTypeError, call, (h.index, h.generation), *args, match="not tuple")
    assert sched.cancel(h) == "waiting", "nothing changed"


def _surface():
    """(name, callable, valid positional args, valid keyword args) for every public call."""
    clock = triage.ManualClock()
    s = triage.Scheduler(triage.Config.from_toml("id_index = true\n"), clock=clock)
    h = s.submit(1, 10, 2, cls="high")
    s.step(**BUDGET)
    sub = s.submitter()
    waiting = sub.submit(2, 10, 2, cls="low")
    q = TriageRequestQueue(aging=True, clock=lambda: 5.0)
    cfg = triage.Config()
    return [
        ("Config.from_toml", triage.Config.from_toml, ["max_wait_ms = 90000"], {}),
        ("Config.from_path", triage.Config.from_path, ["/nonexistent"], {}),
        ("Config.class_for_priority", cfg.class_for_priority, [0], {}),
        ("Config.with_engine", cfg.with_engine, [], {"block_size": 16, "total_blocks": 100, "max_model_len": 2048, "watermark": 0.0}),
        ("ManualClock", triage.ManualClock, [5], {}),
        ("ManualClock.set_ns", clock.set_ns, [clock.now_ns()], {}),
        ("ManualClock.advance_ms", clock.advance_ms, [0], {}),
        ("ManualClock.advance_ns", clock.advance_ns, [0], {}),
        ("Scheduler", triage.Scheduler, [cfg, clock], {}),
        ("submit", sub.submit, [100, 10, 2], {"cls": "low", "tenant": 3, "ttft_ms": 500}),
        ("submit(priority)", s.submit, [101, 10, 2], {"priority": 50, "ttft_ms": 500}),
        ("cancel", sub.cancel, [waiting], {}),
        ("reprioritize", sub.reprioritize, [h, "low"], {}),
        ("reprioritize(priority)", s.reprioritize, [h], {"priority": 0}),
        ("lookup", sub.lookup, [1], {}),
        ("Scheduler.lookup", s.lookup, [1], {}),
        ("step", s.step, [8, 4096, 7000], {"now_ns": None}),
        ("on_progress", s.on_progress, [h, 10, 1], {}),
        ("on_finished", s.on_finished, [h, "stop"], {}),
        ("first_token_at", s.first_token_at, [h], {}),
        ("waiting_in", s.waiting_in, ["high"], {}),
        ("relegated_in", s.relegated_in, ["high"], {}),
        ("tenant_service", s.tenant_service, [None, "high"], {}),
        ("slo_report", s.slo_report, ["1m"], {}),
        ("reload", s.reload, [cfg], {}),
        ("TriageRequestQueue", TriageRequestQueue, [cfg], {"policy": "fcfs", "aging": False, "clock": None, "out_of_range": "error"}),
        ("add_request", q.add_request, [FakeRequest("x", 0, 1.0)], {}),
        ("prepend_request", q.prepend_request, [FakeRequest("y", 0, 1.0)], {}),
        ("prepend_requests", q.prepend_requests, [[FakeRequest("z", 0, 1.0)]], {}),
        ("remove_request", q.remove_request, [FakeRequest("w", 0, 1.0)], {}),
        ("remove_requests", q.remove_requests, [[]], {}),
        ("class_for_priority", q.class_for_priority, [0], {}),
        ("effective_class", q.effective_class, [FakeRequest("v", 0, 1.0)], {}),
    ]


def test_any_bad_argument_raises_a_triage_error():
    checked = 0
    for name, fn, args, kwargs in _surface():
        slots = [("arg", i) for i in range(len(args))] + [("kw", k) for k in kwargs]
        for kind, key in slots:
            for bad in BAD_VALUES:
                a, kw = list(args), dict(kwargs)
                if kind == "arg":
                    a[key] = bad
                else:
                    kw[key] = bad
                try:
                    fn(*a, **kw)
                except triage.TriageError:
                    pass
                except Exception as e:  # noqa: BLE001 - the point of the test
                    pytest.fail(f"{name} with {kind} {key} = {bad!r} raised {type(e).__name__}: {e}")
                checked += 1
    assert checked > 300
