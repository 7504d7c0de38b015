"""triage: the priority request scheduler for LLM serving engines, from Python.

The scheduler itself is Rust (the ``triage`` crate); this package binds it:

* :class:`Scheduler` / :class:`Submitter` -- the full scheduler for a Python engine loop:
  ``submit``, ``cancel`` and ``reprioritize`` from any thread (through a ``Submitter``),
  ``step`` once per iteration on the engine thread (the GIL is released while it runs),
  ``on_progress`` / ``on_finished`` callbacks, ``metrics()`` and ``slo_report()``.
* :class:`RequestHandle` -- what ``submit`` returns and ``cancel``, ``reprioritize``,
  ``on_progress``, ``on_finished`` and ``first_token_at`` take (also on each decision's
  ``Admitted`` and ``Scheduled``): immutable and hashable. ``lookup(id)`` finds a held
  request's handle by id when the configuration sets ``id_index = true``.
* :class:`Config` -- a validated configuration, ``Config.from_path("triage.toml")``.
* :class:`ManualClock` -- injected time for tests and simulators.
* :mod:`triage.vllm` -- ``TriageRequestQueue`` and ``TriageScheduler`` (triage's order),
  and ``TriagePolicyScheduler`` (triage's whole policy), for vLLM 0.33.0 (vLLM is
  optional: importing ``triage`` never needs it).

Every error is a :class:`TriageError` subclass whose message names what is wrong (the
argument, field or request); see ``docs/python.md`` for the hierarchy. Where Python or
vLLM code expects a built-in exception, the class is also that built-in:
:class:`ArgumentError` is a ``ValueError``, :class:`ArgumentTypeError` a ``TypeError``,
:class:`QueueEmpty` an ``IndexError``, and :class:`NotQueued` and :class:`AlreadyQueued`
are ``ValueError`` too.
"""

from ._triage import (
    Admitted,
    AlreadyQueued,
    ArgumentError,
    ArgumentTypeError,
    BudgetError,
    ClassError,
    Config,
    ConfigError,
    ControlError,
    Decision,
    MAX_TTFT_MS,
    ManualClock,
    NotQueued,
    Preempted,
    ProgressError,
    QueueEmpty,
    RequestHandle,
    Scheduled,
    Scheduler,
    SubmitError,
    Submitter,
    TriageError,
)

__all__ = [
    "Admitted",
    "AlreadyQueued",
    "ArgumentError",
    "ArgumentTypeError",
    "BudgetError",
    "ClassError",
    "Config",
    "ConfigError",
    "ControlError",
    "Decision",
    "MAX_TTFT_MS",
    "ManualClock",
    "NotQueued",
    "Preempted",
    "ProgressError",
    "QueueEmpty",
    "RequestHandle",
    "Scheduled",
    "Scheduler",
    "SubmitError",
    "Submitter",
    "TriageError",
]
