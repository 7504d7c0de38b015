"""Conformance with vLLM 0.33.0: the same random operation sequences go to
TriageRequestQueue and to vLLM's own PriorityRequestQueue / FCFSRequestQueue, with vLLM's
own Request objects, and every result is compared (returned objects by identity,
exceptions by the built-in class vLLM raises, length, truthiness, and the full iteration
order after every operation).

Runs only where vLLM is importable (``scripts/vllm-check.sh`` makes such an environment);
skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import random

import pytest
from conftest import one_class_per_priority, skip_without_vllm

try:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.sched.request_queue import (
        FCFSRequestQueue,
        PriorityRequestQueue,
        RequestQueue,
        SchedulingPolicy,
    )
    from vllm.v1.request import Request
except Exception as exc:  # not installed, or fails to import on this machine
    skip_without_vllm(exc, " to run the conformance tests against vllm==0.33.0")

import triage
from triage.vllm import TriageRequestQueue

# Eight priorities, each with a class of its own: the configuration under which triage's
# order with aging off is exactly vLLM's.
PRIORITIES = [-3, -1, 0, 1, 2, 5, 10, 100]
CONFIG = one_class_per_priority(PRIORITIES)
_SAMPLING = SamplingParams(max_tokens=4)


def make_request(rng: random.Random, n: int) -> Request:
    # Few arrival values and short request ids: equal arrivals, and equal (arrival,
    # request_id) pairs, are common, so every tie-break is exercised.
    return Request(
        request_id=rng.choice("xyz") + str(rng.randrange(4)),
        prompt_token_ids=[1, 2, 3],
        sampling_params=_SAMPLING,
        pooling_params=None,
        arrival_time=rng.choice([1.0, 1.0, 2.5, 1_700_000_000.125, 1_700_000_000.1250002]),
        priority=rng.choice(PRIORITIES),
    )


def call(fn, *args):
    """fn's result, or the built-in exception class it raised. vLLM raises IndexError and
    ValueError; triage raises classes that are both those and TriageErrors (QueueEmpty,
    NotQueued, AlreadyQueued), so the built-in is what is compared."""
    try:
        return fn(*args)
    except IndexError as e:
        assert type(e) is IndexError or isinstance(e, triage.QueueEmpty), repr(e)
        return IndexError
    except ValueError as e:
        assert type(e) is ValueError or isinstance(e, (triage.NotQueued, triage.AlreadyQueued)), repr(e)
        return ValueError


def run(seed: int, ours: RequestQueue, theirs: RequestQueue, n_ops: int = 600) -> None:
    rng = random.Random(seed)
    queued: list[Request] = []  # what vLLM's queue holds (order irrelevant)
    popped: list[Request] = []  # requests out of the queue that may come back
    for step in range(n_ops):
        op = rng.random()
        if op < 0.35:
            r = make_request(rng, step)
            assert call(ours.add_request, r) == call(theirs.add_request, r)
            queued.append(r)
        elif op < 0.5:
            a, b = call(ours.pop_request), call(theirs.pop_request)
            assert a is b, f"step {step}: pop {a!r} vs vLLM {b!r}"
            if b is not IndexError:
                queued.remove(b)
                popped.append(b)
        elif op < 0.58:
            a, b = call(ours.peek_request), call(theirs.peek_request)
            assert a is b, f"step {step}: peek {a!r} vs vLLM {b!r}"
        elif op < 0.66 and popped:
            r = popped.pop(rng.randrange(len(popped)))
            assert call(ours.prepend_request, r) == call(theirs.prepend_request, r)
            queued.append(r)
        elif op < 0.72 and popped:
            k = rng.randrange(1, len(popped) + 1)
            batch, popped = popped[:k], popped[k:]
            assert call(ours.prepend_requests, list(batch)) == call(
                theirs.prepend_requests, list(batch)
            )
            queued.extend(batch)
        elif op < 0.8:
            # Present, or absent (both raise ValueError).
            pool = queued + popped[:1]
            if pool:
                r = rng.choice(pool)
                a, b = call(ours.remove_request, r), call(theirs.remove_request, r)
                assert a == b, f"step {step}: remove_request {a!r} vs vLLM {b!r}"
                if r in queued:
                    queued.remove(r)
        elif op < 0.9:
            pool = queued + popped + [make_request(rng, step)]
            rs = rng.sample(pool, min(len(pool), rng.randrange(5)))
            as_set = rng.random() < 0.5
            ours.remove_requests(set(rs) if as_set else list(rs))
            theirs.remove_requests(set(rs) if as_set else list(rs))
            queued = [r for r in queued if all(r is not x for x in rs)]
            popped = [r for r in popped if all(r is not x for x in rs)]
        assert len(ours) == len(theirs) == len(queued)
        assert bool(ours) == bool(theirs)
        ours_order, theirs_order = list(ours), list(theirs)
        assert len(ours_order) == len(theirs_order)
        assert all(a is b for a, b in zip(ours_order, theirs_order)), (
            f"step {step}: order differs:\n  triage {ours_order}\n  vLLM   {theirs_order}"
        )


@pytest.mark.parametrize("seed", range(30))
def test_priority_queue_conformance(seed):
    run(seed, TriageRequestQueue(CONFIG, policy="priority", aging=False), PriorityRequestQueue())


@pytest.mark.parametrize("seed", range(30))
def test_fcfs_queue_conformance(seed):
    run(seed, TriageRequestQueue(CONFIG, policy="fcfs"), FCFSRequestQueue())


def test_is_a_vllm_request_queue():
    assert isinstance(TriageRequestQueue(CONFIG, aging=False), RequestQueue)


@pytest.mark.parametrize("async_scheduling", [False, True])
def test_scheduler_class_is_the_engines_kind_and_replaces_both_queues(
    monkeypatch, async_scheduling
):
    from types import SimpleNamespace

    import triage.vllm as tv
    from vllm.utils.import_utils import resolve_obj_by_qualname
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    cls = resolve_obj_by_qualname("triage.vllm.TriageScheduler")

    # Building a real scheduler needs a model configuration; stand in for vLLM's
    # __init__ with what the queue replacement relies on: the policy and the two queues.
    def fake_init(self, *args, **kwargs):
        self.policy = SchedulingPolicy.PRIORITY
        self.waiting = PriorityRequestQueue()
        self.kv_holding_waiting = PriorityRequestQueue()

    monkeypatch.setattr(Scheduler, "__init__", fake_init)
    monkeypatch.setattr(AsyncScheduler, "__init__", fake_init)
    monkeypatch.setenv("TRIAGE_AGING", "0")
    vllm_config = SimpleNamespace(
        scheduler_config=SimpleNamespace(async_scheduling=async_scheduling)
    )
    explicit = tv.TriageAsyncScheduler if async_scheduling else tv.TriageSyncScheduler
    for s in (cls(vllm_config), cls(vllm_config=vllm_config), explicit(vllm_config)):
        assert isinstance(s, Scheduler)
        assert isinstance(s, AsyncScheduler) == async_scheduling
        assert isinstance(s.waiting, TriageRequestQueue) and s.waiting.policy == "priority"
        assert isinstance(s.kv_holding_waiting, TriageRequestQueue)
        assert s.waiting is not s.kv_holding_waiting and not s.waiting.aging
    assert isinstance(cls(vllm_config), cls)


def test_the_scheduler_reloads_triage_config_when_it_changes(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from conftest import FakeRequest, toml_config
    from vllm.v1.core.sched.scheduler import Scheduler

    path = tmp_path / "triage.toml"
    path.write_text(toml_config([("A", (0, 4), None), ("B", (5, 9), 300)]))

    def fake_init(self, *args, **kwargs):
        self.policy = SchedulingPolicy.PRIORITY
        self.waiting = PriorityRequestQueue()
        self.kv_holding_waiting = PriorityRequestQueue()

    monkeypatch.setattr(Scheduler, "__init__", fake_init)
    monkeypatch.setenv("TRIAGE_CONFIG", str(path))
    monkeypatch.delenv("TRIAGE_AGING", raising=False)
    config = SimpleNamespace(scheduler_config=SimpleNamespace(async_scheduling=False))
    from vllm.utils.import_utils import resolve_obj_by_qualname

    s = resolve_obj_by_qualname("triage.vllm.TriageScheduler")(config)
    s._triage_watch.every = 0.0
    import time

    r = FakeRequest("r", 5, time.time())  # just arrived: not aged into A
    s.waiting.add_request(r)
    assert s.waiting.effective_class(r) == "B"
    path.write_text(toml_config([("X", (0, 9), None)]))
    os.utime(path, ns=(1, 10**18))
    s._triage_reload()  # what each schedule() does first
    assert s.waiting.effective_class(r) == "X" and s.kv_holding_waiting.policy == "priority"
