"""pytest plugin: vLLM's scheduler with triage's waiting queues.

    PYTHONPATH=python/vllm_tests python -m pytest -p triage_swap <vLLM's tests>

vLLM 0.33.0 makes its waiting queues in one place: ``Scheduler.__init__``
(``vllm/v1/core/sched/scheduler.py``) calls ``create_request_queue(self.policy)`` for
both ``self.waiting`` and ``self.kv_holding_waiting``; ``create_request_queue`` is
defined in ``vllm/v1/core/sched/request_queue.py`` and imported by name into
``scheduler.py``. Nothing else in vLLM builds a ``RequestQueue`` (``AsyncScheduler`` and
the diffusion scheduler inherit that ``__init__``). This plugin replaces the function in
both modules, when pytest loads it, so every scheduler the tests create gets
``triage.vllm.TriageRequestQueue(config, policy=..., aging=False)``: the vLLM-exact
mode (see the module docs of ``triage/vllm.py``), with ``config`` from
``$TRIAGE_CONFIG``, or triage's default configuration when unset.

With ``TRIAGE_SWAP_SCHEDULERS=1`` the plugin also makes the schedulers the tests build
triage's drop-ins: in every ``tests.v1.core`` module loaded (the helper
``tests/v1/core/utils.py``, whose ``create_scheduler`` picks ``AsyncScheduler`` or
``Scheduler`` by ``async_scheduling``, and the test files), the names ``Scheduler`` and
``AsyncScheduler`` are pointed at ``TriageSyncScheduler`` and ``TriageAsyncScheduler``.

With ``TRIAGE_SWAP_SCHEDULERS=policy`` they are pointed at triage's whole-policy
schedulers instead, ``TriagePolicySyncScheduler`` and ``TriagePolicyAsyncScheduler``
(triage decides admission and preemption; vLLM does the mechanics).

The terminal summary counts the queues made per policy, so a run shows that the swap
was in effect.
"""

import os
import sys
from collections import Counter

import pytest

_made: Counter = Counter()


def _install() -> None:
    import vllm.v1.core.sched.request_queue as rq
    import vllm.v1.core.sched.scheduler as sched
    from triage.vllm import TriageRequestQueue, config_from_env

    config = config_from_env()

    def create_request_queue(policy):
        """triage's queue for ``policy``, in place of vLLM's."""
        if policy == rq.SchedulingPolicy.PRIORITY:
            name = "priority"
        elif policy == rq.SchedulingPolicy.FCFS:
            name = "fcfs"
        else:  # as vLLM's create_request_queue
            raise ValueError(f"Unknown scheduling policy: {policy}")
        _made[name] += 1
        return TriageRequestQueue(config, policy=name, aging=False)

    create_request_queue.__wrapped__ = rq.create_request_queue  # the original
    rq.create_request_queue = create_request_queue
    sched.create_request_queue = create_request_queue


def _swap_schedulers(policy: bool) -> None:
    """Points the names ``Scheduler`` and ``AsyncScheduler`` of vLLM's core test modules
    (the test helper and the test files, which build schedulers themselves too) at
    triage's drop-ins: the queue-only ones, or with ``policy`` the whole-policy ones."""
    if policy:
        from triage.vllm import TriagePolicyAsyncScheduler as TriageAsyncScheduler
        from triage.vllm import TriagePolicySyncScheduler as TriageSyncScheduler
    else:
        from triage.vllm import TriageAsyncScheduler, TriageSyncScheduler
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    for name, module in list(sys.modules.items()):
        if not name.startswith("tests.v1.core") or module is None:
            continue
        for attr, vllm_cls, ours in (
            ("Scheduler", Scheduler, TriageSyncScheduler),
            ("AsyncScheduler", AsyncScheduler, TriageAsyncScheduler),
        ):
            if getattr(module, attr, None) is vllm_cls:
                setattr(module, attr, ours)
                _made[f"{attr} names swapped"] += 1


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    _install()


def pytest_collection_finish(session):
    # After collection: the test modules have imported tests.v1.core.utils by then.
    mode = os.environ.get("TRIAGE_SWAP_SCHEDULERS")
    if mode in ("1", "policy"):
        _swap_schedulers(policy=mode == "policy")


def pytest_report_header(config):
    import triage

    return f"triage_swap: vLLM's waiting queues are triage.vllm.TriageRequestQueue (triage from {triage.__file__})"


def pytest_terminal_summary(terminalreporter):
    mode = os.environ.get("TRIAGE_SWAP_SCHEDULERS")
    if mode:
        terminalreporter.write_line(f"triage_swap: TRIAGE_SWAP_SCHEDULERS={mode}")
    made = ", ".join(f"{n} {p}" for p, n in sorted(_made.items())) or "none"
    terminalreporter.write_line(f"triage_swap: TriageRequestQueue instances made: {made}")
