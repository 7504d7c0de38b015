"""triage in vLLM 0.33.0: a drop-in waiting queue and scheduler.

``TriageRequestQueue`` implements every method of vLLM's ``RequestQueue``
(``vllm/v1/core/sched/request_queue.py``) with vLLM's semantics, on triage's wait queue
(Rust), holding the Python request objects:

* ``policy="priority"`` (vLLM ``--scheduling-policy priority``). With ``aging=False``,
  the vLLM-exact mode, the order is exactly vLLM's ``PriorityRequestQueue`` --
  ``(priority, arrival_time, request_id)``, then ``id()`` -- for any integer priorities,
  whatever the configuration's classes. With ``aging=True`` (the default) vLLM's integer
  ``request.priority`` maps to a triage class through the configuration's
  ``vllm_priority`` ranges and the order is triage's contract: waiting
  requests move up a class as they age (by whole arrival buckets, ``promote_after_ms``),
  and a request older than ``max_wait_ms`` goes before every other: the order of
  ``triage.Scheduler`` with ``order = "ladder"``. The queue keeps it whatever the
  configuration's ``order``; deadline order (the scheduler's default), ``on_late`` and
  ``[deadline]`` apply to ``triage.Scheduler`` only.
  ``prepend_request`` (a preempted or skipped request) keeps its original arrival, so its
  place, exactly as vLLM's ``add_request`` would put it.
* ``policy="fcfs"``: exactly vLLM's ``FCFSRequestQueue`` (append, prepend at the front,
  ``prepend_requests`` as ``deque.extendleft``); priorities and aging do not apply.

Both index as vLLM's code and tests index its queues: ``queue[i]`` is the ``i``-th request
of the order ``pop_request`` would give (negative from the end; O(n)).

Out-of-range values, with ``out_of_range="clamp"`` (the default: raising inside vLLM's
engine core would stop the engine):

* with aging on, a priority outside every configured range maps to the class of the
  nearest range (the more urgent one on a tie);
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

``TriageScheduler`` is vLLM's scheduler with both waiting queues (``waiting`` and
``kv_holding_waiting``) replaced by ``TriageRequestQueue``: built as its synchronous
``Scheduler`` or, on an engine with ``--async-scheduling``, as its ``AsyncScheduler``
(``TriageSyncScheduler`` and ``TriageAsyncScheduler`` are the two kinds by name)::

    TRIAGE_CONFIG=triage.toml vllm serve MODEL --scheduling-policy priority \\
        --scheduler-cls triage.vllm.TriageScheduler

``TriagePolicyScheduler`` (and its two kinds by name, ``TriagePolicySyncScheduler`` and
``TriagePolicyAsyncScheduler``) goes further: triage's ``Scheduler`` decides admission,
preemption and shedding, and vLLM does the mechanics (``triage/_vllm_policy.py``;
``docs/python.md``, "The whole policy in vLLM")::

    TRIAGE_CONFIG=triage.toml vllm serve MODEL \\
        --scheduler-cls triage.vllm.TriagePolicyScheduler

Environment: ``TRIAGE_CONFIG`` (a TOML path; default configuration otherwise; re-read
when the file changes or the engine process gets ``SIGHUP``, see ``ConfigWatch``) and
``TRIAGE_AGING`` (``0`` for vLLM's exact priority order, default ``1``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, Optional

from ._triage import Config, VllmQueue

__all__ = [
    "ConfigWatch",
    "GateQueue",
    "TriagePolicyAsyncScheduler",
    "TriagePolicyScheduler",
    "TriagePolicySyncScheduler",
    "TriageAsyncScheduler",
    "TriageRequestQueue",
    "TriageScheduler",
    "TriageSyncScheduler",
    "config_from_env",
    "register",
]

logger = logging.getLogger("triage.vllm")

#: vLLM's version this module is written against and tested with.
VLLM_VERSION = "0.33.0"


def config_from_env() -> Config:
    """The configuration at ``$TRIAGE_CONFIG`` (a TOML file), or the default one.

    Raises ``triage.ConfigError`` naming the field, what is allowed, and where.
    """
    path = os.environ.get("TRIAGE_CONFIG")
    return Config.from_path(path) if path else Config()


class ConfigWatch:
    """Watches a configuration file: :meth:`poll` re-reads it when its modification time
    changed since the last read, or after the process got ``SIGHUP`` (installed when built
    in the main thread; elsewhere only the modification time is watched). A file that no
    longer loads is logged with its located error, and the configuration in force stays.

    Args:
        path: the TOML file.
        every: the least time between two looks at the file, in seconds (``poll`` is called
            once per engine iteration).
        hangup: whether to reload on ``SIGHUP`` (the previous Python handler, if any, still
            runs).
    """

    def __init__(self, path: str, *, every: float = 1.0, hangup: bool = True) -> None:
        self.path = path
        self.every = every
        self._seen = self._mtime()
        self._looked = time.monotonic()
        self._hup = False
        self._previous: Any = None
        if hangup and hasattr(signal, "SIGHUP"):
            try:
                self._previous = signal.signal(signal.SIGHUP, self._on_hup)
            except ValueError:  # not the main thread: the file's time only
                logger.info("triage: %s is watched by its modification time only", path)

    def _mtime(self) -> Optional[int]:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._hup = True
        if callable(self._previous):
            self._previous(signum, frame)

    def poll(self) -> Optional[Config]:
        """The re-read configuration if the file changed or ``SIGHUP`` came since the last
        read and it loads; ``None`` otherwise."""
        now = time.monotonic()
        if not self._hup and now - self._looked < self.every:
            return None
        self._looked = now
        mtime = self._mtime()
        if not self._hup and (mtime is None or mtime == self._seen):
            return None
        self._hup = False
        self._seen = mtime
        try:
            config = Config.from_path(self.path)
        except Exception as exc:  # triage.ConfigError, or the file vanished
            logger.error("triage: %s: %s; the configuration in force is unchanged", self.path, exc)
            return None
        logger.info("triage: %s re-read (classes %s)", self.path, config.class_names)
        return config


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
    O(n log n); ``queue[i]`` O(n). In the vLLM-exact mode (``aging=False``) every add,
    pop and removal is O(log n). See ``docs/python.md``.
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
    from vllm.v1.core.sched.scheduler import Scheduler as _Scheduler

    _VLLM_IMPORT_ERROR: Optional[BaseException] = None
except Exception as exc:  # ImportError, or a vLLM that fails to import on this machine
    _AsyncScheduler = None
    _VLLM_IMPORT_ERROR = exc


if _AsyncScheduler is not None:
    # isinstance(queue, RequestQueue) holds for vLLM's own checks.
    _RequestQueue.register(TriageRequestQueue)

    def _replace_queues(scheduler: Any) -> None:
        """Replaces ``waiting`` and ``kv_holding_waiting`` of a freshly built vLLM
        scheduler by ``TriageRequestQueue`` (``$TRIAGE_CONFIG``, ``$TRIAGE_AGING``)."""
        config = config_from_env()
        aging = aging_from_env()
        if scheduler.policy == _SchedulingPolicy.PRIORITY:
            policy = "priority"
        elif scheduler.policy == _SchedulingPolicy.FCFS:
            policy = "fcfs"
            logger.warning(
                "triage: --scheduling-policy fcfs keeps vLLM's FCFS order; use "
                "--scheduling-policy priority for triage's classes and aging"
            )
        else:  # a policy this module does not know (a vLLM other than 0.33.0)
            logger.warning(
                "triage: scheduling policy %s is not supported; vLLM's queues kept",
                scheduler.policy,
            )
            return
        for name in ("waiting", "kv_holding_waiting"):
            old = getattr(scheduler, name, None)
            if old is None:  # not in this vLLM version
                continue
            queue = TriageRequestQueue(config, policy=policy, aging=aging)
            for request in old:  # empty at start; kept if not
                queue.add_request(request)
            setattr(scheduler, name, queue)
        logger.info(
            "triage: waiting queues replaced (policy=%s, %s, scheduler %s)",
            policy,
            f"aging with classes {config.class_names}" if aging else "vLLM-exact order",
            type(scheduler).__name__,
        )

    class _TriageQueues:
        """Mixin: the vLLM scheduler it precedes, with triage's waiting queues, and
        ``$TRIAGE_CONFIG`` reloaded when it changes or on ``SIGHUP`` (see
        :class:`ConfigWatch`), at the start of a ``schedule()``."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _replace_queues(self)
            path = os.environ.get("TRIAGE_CONFIG")
            self._triage_watch = ConfigWatch(path) if path else None

        def _triage_reload(self) -> None:
            """Takes a changed ``$TRIAGE_CONFIG`` into both queues."""
            config = self._triage_watch.poll() if self._triage_watch else None
            if config is None:
                return
            for name in ("waiting", "kv_holding_waiting"):
                queue = getattr(self, name, None)
                if isinstance(queue, TriageRequestQueue):
                    queue.reconfigure(config)

        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            self._triage_reload()
            return super().schedule(*args, **kwargs)

    class TriageSyncScheduler(_TriageQueues, _Scheduler):  # type: ignore[misc, valid-type]
        """vLLM's synchronous ``Scheduler`` (its default) with triage's queue for
        ``waiting`` and ``kv_holding_waiting``."""

    class TriageAsyncScheduler(_TriageQueues, _AsyncScheduler):  # type: ignore[misc, valid-type]
        """vLLM's ``AsyncScheduler`` (``--async-scheduling``) with triage's queue for
        ``waiting`` and ``kv_holding_waiting``."""

    def _async_scheduling(args: tuple, kwargs: dict) -> bool:
        vllm_config = kwargs.get("vllm_config", args[0] if args else None)
        scheduler_config = getattr(vllm_config, "scheduler_config", None)
        return bool(getattr(scheduler_config, "async_scheduling", False))

    class TriageScheduler(TriageSyncScheduler):  # type: ignore[misc, valid-type]
        """The one name for ``--scheduler-cls``: built as vLLM's synchronous ``Scheduler``
        or, when the engine runs ``--async-scheduling``, as its ``AsyncScheduler``, each
        with triage's queue for ``waiting`` and ``kv_holding_waiting``. Select it with
        ``--scheduler-cls triage.vllm.TriageScheduler`` (and ``--scheduling-policy
        priority`` for triage's order; with ``fcfs`` the queues keep vLLM's FCFS order).
        """

        def __new__(cls, *args: Any, **kwargs: Any) -> "TriageScheduler":
            if cls is TriageScheduler and _async_scheduling(args, kwargs):
                return super().__new__(_TriageSchedulerAsync)
            return super().__new__(cls)

    class _TriageSchedulerAsync(TriageScheduler, _AsyncScheduler):  # type: ignore[misc, valid-type]
        """``TriageScheduler`` on an engine with async scheduling (MRO: the queues mixin,
        then ``AsyncScheduler``, then ``Scheduler``)."""

    # triage's whole policy (admission, preemption, shedding), vLLM's mechanics.
    from ._vllm_policy import (  # noqa: E402
        GateQueue,
        TriagePolicyAsyncScheduler,
        TriagePolicyScheduler,
        TriagePolicySyncScheduler,
    )

else:

    def __getattr__(name: str) -> Any:
        if name in (
            "TriageScheduler",
            "TriageSyncScheduler",
            "TriageAsyncScheduler",
            "TriagePolicyScheduler",
            "TriagePolicySyncScheduler",
            "TriagePolicyAsyncScheduler",
            "GateQueue",
        ):
            raise ImportError(
                f"triage.vllm.{name} needs vLLM {VLLM_VERSION} "
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
        "--scheduler-cls triage.vllm.TriageScheduler --scheduling-policy priority "
        "(triage's order) or --scheduler-cls triage.vllm.TriagePolicyScheduler "
        "(triage's whole policy)",
        config.class_names,
    )
