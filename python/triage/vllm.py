"""triage in vLLM 0.33.0: a drop-in waiting queue and scheduler.

``TriageRequestQueue`` implements every method of vLLM's ``RequestQueue``
(``vllm/v1/core/sched/request_queue.py``) with vLLM's semantics, on triage's wait queue
(Rust), holding the Python request objects:

* ``policy="priority"`` (vLLM ``--scheduling-policy priority``): vLLM's integer
  ``request.priority`` maps to a triage class through the configuration's
  ``vllm_priority`` ranges. With ``aging=False`` the order is exactly vLLM's
  ``PriorityRequestQueue`` -- ``(priority, arrival_time, request_id)`` -- **provided each
  priority value in use has a class of its own** (a range ``[p, p]``; at most 8 classes):
  inside one class triage is FIFO by ``(arrival_time, request_id)`` and does not look at
  the priority. With ``aging=True`` (the default) the order is triage's contract: waiting
  requests move up a class as they age (by whole arrival buckets, ``promote_after_ms``),
  and a request older than ``max_wait_ms`` goes before every other: the order of
  ``triage.Scheduler`` with ``order = "ladder"``. The queue keeps it whatever the
  configuration's ``order``; deadline order (the scheduler's default), ``on_late`` and
  ``[deadline]`` apply to ``triage.Scheduler`` only.
  ``prepend_request`` (a preempted or skipped request) keeps its original arrival, so its
  place, exactly as vLLM's ``add_request`` would put it.
* ``policy="fcfs"``: exactly vLLM's ``FCFSRequestQueue`` (append, prepend at the front,
  ``prepend_requests`` as ``deque.extendleft``); priorities and aging do not apply.

Out-of-range values, with ``out_of_range="clamp"`` (the default: raising inside vLLM's
engine core would stop the engine):

* a priority outside every configured range maps to the class of the nearest range (the
  more urgent one on a tie);
* an ``arrival_time`` that a triage ``Timestamp`` cannot hold (NaN, infinite, negative, or
  past 18,446,744,073.7 s, about the year 2554) is replaced by the queue's current time
  (its clock's, whatever the aging), so it queues as if it had just arrived.

Each clamp is counted (``clamped_priorities``, ``clamped_arrivals``: one per add or prepend
that clamped) and logged on the ``triage.vllm`` logger at warning level, the 1st, 2nd, 4th,
8th, ... time. With ``out_of_range="error"`` they raise instead: ``triage.ClassError`` for
the priority, ``triage.ArgumentError`` naming ``request.arrival_time``.

Errors are ``triage.TriageError`` subclasses that are also the built-ins vLLM's queues
raise: ``QueueEmpty`` (an ``IndexError``) on an empty pop or peek, ``NotQueued`` (a
``ValueError``) when removing a request that is not queued. Differences from vLLM, all on
misuse: adding a request that is already queued raises ``AlreadyQueued`` (a
``ValueError``; vLLM's heap would hold it twice); requests are identified by identity, as
vLLM's (which define no ``__eq__``) are in its sets.

``TriageScheduler`` is vLLM's ``AsyncScheduler`` with both waiting queues (``waiting``
and ``kv_holding_waiting``) replaced by ``TriageRequestQueue``::

    TRIAGE_CONFIG=triage.toml vllm serve MODEL --scheduling-policy priority \\
        --scheduler-cls triage.vllm.TriageScheduler

Environment: ``TRIAGE_CONFIG`` (a TOML path; default configuration otherwise) and
``TRIAGE_AGING`` (``0`` for vLLM's exact priority order, default ``1``).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional

from ._triage import Config, VllmQueue

__all__ = ["TriageRequestQueue", "TriageScheduler", "config_from_env", "register"]

logger = logging.getLogger("triage.vllm")

#: vLLM's version this module is written against and tested with.
VLLM_VERSION = "0.33.0"


def config_from_env() -> Config:
    """The configuration at ``$TRIAGE_CONFIG`` (a TOML file), or the default one.

    Raises ``triage.ConfigError`` naming the field, what is allowed, and where.
    """
    path = os.environ.get("TRIAGE_CONFIG")
    return Config.from_path(path) if path else Config()


def aging_from_env() -> bool:
    """``$TRIAGE_AGING``: ``0``/``false``/``off`` turns aging and max wait off."""
    return os.environ.get("TRIAGE_AGING", "1").strip().lower() not in ("0", "false", "off", "no")


class TriageRequestQueue(VllmQueue):
    """vLLM's ``RequestQueue`` on triage's wait queue.

    Args:
        config: class ranges, aging thresholds and max wait (``triage.Config``); default
            ``Config()``.
        policy: ``"priority"`` or ``"fcfs"``, as vLLM's ``--scheduling-policy``.
        aging: ``False`` for vLLM's exact priority order (see the module docs).
        clock: a callable returning the time in seconds on ``arrival_time``'s clock
            (default: the wall clock, as vLLM's ``time.time()``). Tests inject time here.
        out_of_range: ``"clamp"`` or ``"error"`` for priorities in no class's range and
            arrival times a ``Timestamp`` cannot hold (see the module docs).

    Costs at n queued, C classes: ``add_request``, ``prepend_request`` O(log n) (plus the
    requests of the same arrival bucket that sort after it); ``remove_request``
    O(log n + C); ``pop_request``, ``peek_request`` O(C² + log n); ``remove_requests``
    O(k (log n + C)) for k requests given (vLLM's is O(n) plus a re-heapify); iteration
    O(n log n). See ``docs/python.md``.
    """

    def __init__(
        self,
        config: Optional[Config] = None,
        *,
        policy: str = "priority",
        aging: bool = True,
        clock: Optional[Callable[[], float]] = None,
        out_of_range: str = "clamp",
    ) -> None:
        # The Rust type is built in __new__ with the same arguments.
        pass

    def __repr__(self) -> str:
        return f"TriageRequestQueue(policy={self.policy!r}, aging={self.aging}, len={len(self)})"


try:  # vLLM is optional.
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler as _AsyncScheduler
    from vllm.v1.core.sched.request_queue import RequestQueue as _RequestQueue
    from vllm.v1.core.sched.request_queue import SchedulingPolicy as _SchedulingPolicy

    _VLLM_IMPORT_ERROR: Optional[BaseException] = None
except Exception as exc:  # ImportError, or a vLLM that fails to import on this machine
    _AsyncScheduler = None
    _VLLM_IMPORT_ERROR = exc


if _AsyncScheduler is not None:
    # isinstance(queue, RequestQueue) holds for vLLM's own checks.
    _RequestQueue.register(TriageRequestQueue)

    class TriageScheduler(_AsyncScheduler):  # type: ignore[misc, valid-type]
        """vLLM's ``AsyncScheduler`` with triage's queue for ``waiting`` and
        ``kv_holding_waiting``. Select it with
        ``--scheduler-cls triage.vllm.TriageScheduler`` (and
        ``--scheduling-policy priority`` for triage's classes; with ``fcfs`` the queues
        keep vLLM's FCFS order).
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            config = config_from_env()
            aging = aging_from_env()
            if self.policy == _SchedulingPolicy.PRIORITY:
                policy = "priority"
            elif self.policy == _SchedulingPolicy.FCFS:
                policy = "fcfs"
                logger.warning(
                    "triage: --scheduling-policy fcfs keeps vLLM's FCFS order; use "
                    "--scheduling-policy priority for triage's classes and aging"
                )
            else:  # a policy this module does not know (a vLLM other than 0.33.0)
                logger.warning(
                    "triage: scheduling policy %s is not supported; vLLM's queues kept",
                    self.policy,
                )
                return
            for name in ("waiting", "kv_holding_waiting"):
                old = getattr(self, name, None)
                if old is None:  # not in this vLLM version
                    continue
                queue = TriageRequestQueue(config, policy=policy, aging=aging)
                for request in old:  # empty at start; kept if not
                    queue.add_request(request)
                setattr(self, name, queue)
            logger.info(
                "triage: waiting queues replaced (policy=%s, aging=%s, classes=%s)",
                policy,
                aging,
                config.class_names,
            )

else:

    def __getattr__(name: str) -> Any:
        if name == "TriageScheduler":
            raise ImportError(
                f"triage.vllm.TriageScheduler needs vLLM {VLLM_VERSION} "
                f"(pip install vllm=={VLLM_VERSION}); importing it failed: "
                f"{_VLLM_IMPORT_ERROR!r}"
            ) from _VLLM_IMPORT_ERROR
        raise AttributeError(f"module 'triage.vllm' has no attribute {name!r}")


def register() -> None:
    """The ``vllm.general_plugins`` entry point: checks ``$TRIAGE_CONFIG`` at start-up so
    a bad file fails at once with its located error, and logs how to select triage. It
    changes nothing in vLLM by itself.
    """
    config = config_from_env()
    logger.info(
        "triage plugin loaded (classes %s); select it with "
        "--scheduler-cls triage.vllm.TriageScheduler --scheduling-policy priority",
        config.class_names,
    )
