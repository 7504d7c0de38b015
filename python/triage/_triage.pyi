"""Type stubs of the extension module ``triage._triage`` (the Rust bindings).

Every method raises ArgumentTypeError for an argument of the wrong type (including a bool
where an int or a class is expected) and ArgumentError for one out of range (an int outside
its Rust type: token counts and ids are unsigned; times are 0 to 2**64 - 1 ns), naming the
argument (a request id where a RequestHandle belongs is an ArgumentTypeError); the other
errors each method raises are in its docstring."""

import os
from typing import Any, Callable, Iterable, Iterator, Optional, Union

class TriageError(Exception):
    """Base class of every error triage raises."""

class ConfigError(TriageError):
    """A configuration breaks a rule; the message names the field, what is allowed, and
    where (line and column for a file)."""

class ClassError(TriageError):
    """A class name, index or vLLM priority maps to no configured class."""

class SubmitError(TriageError):
    """submit refused the request (queue full, duplicate id, zero tokens, a ttft_ms of 0 or
    past MAX_TTFT_MS, too long for the context or the KV cache, closed)."""

class ControlError(TriageError):
    """cancel, reprioritize or lookup found no request to act on: a stale handle (its
    request ended), a request already cancelled (cancel), an id no held request has, or
    lookup without id_index = true."""

class ProgressError(TriageError):
    """on_progress or on_finished was refused (the handle names no running request,
    overrun, time went backwards)."""

class BudgetError(TriageError):
    """step was refused (more free blocks than the engine has, or time went backwards)."""

class ArgumentError(TriageError, ValueError):
    """An argument is out of range or not one of the allowed values; the message names it
    (a negative token count, an unknown reason or SLO window, both cls and priority, a time
    past the largest Timestamp, a ManualClock set backwards)."""

class ArgumentTypeError(TriageError, TypeError):
    """An argument has the wrong type; the message names it (a str for an int, a bool for
    an int or a class, an int where a RequestHandle belongs, an object that is not a vLLM
    Request)."""

class QueueEmpty(TriageError, IndexError):
    """pop_request or peek_request on an empty queue (an IndexError, as vLLM's queues
    raise)."""

class NotQueued(TriageError, ValueError):
    """remove_request of a request that is not in the queue (a ValueError, as vLLM's queues
    raise)."""

class AlreadyQueued(TriageError, ValueError):
    """add_request or prepend_request of a request already in the queue."""

ClassLike = Union[str, int]

MAX_TTFT_MS: int
"""The longest per-request TTFT target submit accepts (ttft_ms): 604800000, 7 days."""

class Config:
    """A validated scheduler configuration (the TOML file's contents)."""

    def __init__(self) -> None:
        """The default configuration: HIGH [0,0], MEDIUM [1,9], LOW [10,100]."""
    @staticmethod
    def from_path(path: Union[str, "os.PathLike[str]"]) -> "Config":
        """Loads and validates a TOML file; raises ConfigError."""
    @staticmethod
    def from_toml(text: str) -> "Config":
        """Parses and validates TOML text; raises ConfigError."""
    @property
    def class_names(self) -> list[str]:
        """Class names, most urgent first."""
    @property
    def priority_ranges(self) -> list[tuple[int, int]]:
        """Each class's inclusive vLLM priority range, by class index."""
    @property
    def promote_after_ms(self) -> list[Optional[int]]:
        """Each class's aging threshold in ms (None: never promoted out of it)."""
    @property
    def max_wait_ms(self) -> int:
        """Age in ms past which a waiting request is overdue."""
    @property
    def bucket_width_ms(self) -> int:
        """Width of the arrival buckets that age together, in ms."""
    @property
    def id_index(self) -> bool:
        """Whether the scheduler keeps an index of held requests by id (TOML
        id_index = true): lookup(id) works, and a submit whose id is already held is
        refused. Off by default: ids are then the engine's business (duplicates are
        accepted) and requests are named by their handles only."""
    @property
    def order(self) -> str:
        """How the scheduler orders waiting requests: "deadline" (the default) or "ladder"
        (aging by promote_after_ms, overdue requests first)."""
    @property
    def on_late(self) -> list[str]:
        """Each class's rule for a waiting request that can no longer meet its deadline, by
        class index: "keep" (relegated) or "shed" (ended, outcome "shed"). Deadline order
        only."""
    @property
    def deadline(self) -> dict[str, Union[int, float]]:
        """The [deadline] table (a copy): urgent_slack_ms, max_decode_delay_ms,
        relaxed_slack_ms, relaxed_chunk_tokens, overdue_share (a float),
        initial_iteration_ms."""
    @property
    def engine(self) -> dict[str, Union[int, float]]:
        """The [engine] table (a copy): block_size, total_blocks, max_model_len, watermark
        (a float)."""
    def with_engine(
        self,
        *,
        block_size: Optional[int] = None,
        total_blocks: Optional[int] = None,
        max_model_len: Optional[int] = None,
        watermark: Optional[float] = None,
    ) -> "Config":
        """A validated copy with the [engine] limits given replaced; raises ConfigError
        naming the field if the result breaks a rule."""
    def class_for_priority(self, priority: int) -> int:
        """The class index whose range holds vLLM's priority; raises ClassError if none."""

class ManualClock:
    """A clock that moves only when told to (nanoseconds), shared with the scheduler it is
    given to."""

    def __init__(self, start_ns: int = 0) -> None: ...
    def now_ns(self) -> int:
        """The current time in ns."""
    def set_ns(self, t: int) -> None:
        """Sets the time; raises ArgumentError if t is earlier than the current time (the
        clock never goes backwards)."""
    def advance_ms(self, ms: int) -> None:
        """Moves the time forward by ms milliseconds (saturating at the largest time)."""
    def advance_ns(self, ns: int) -> None:
        """Moves the time forward by ns nanoseconds (saturating at the largest time)."""

class RequestHandle:
    """A request's name while the scheduler holds it: returned by submit and lookup, and
    carried by Admitted.handle and Scheduled.handle. Immutable and hashable (use it as a
    dict key); equal handles have the same slot and generation (from one
    scheduler: they name the same request). It goes stale when its request ends
    (finished, cancelled, timed out, shed, refused when drained, evicted): calls with it
    then raise ControlError or ProgressError, and a later request never answers to it.
    A preempted request keeps its handle. It means something only to the scheduler that
    issued it. Not constructible from Python; copy.copy returns it; not picklable."""

    @property
    def index(self) -> int:
        """The slot index (small and dense: slots are reused as requests end)."""
    @property
    def generation(self) -> int:
        """The slot's generation when the handle was issued."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __repr__(self) -> str:
        """RequestHandle(index=3, generation=0)"""
    def __str__(self) -> str:
        """request handle 3.0 (as the error messages name it)"""

class Submitter:
    """The API threads' side of a scheduler; safe to share between threads and usable
    while the engine thread is inside Scheduler.step."""

    def submit(
        self,
        id: int,
        prompt_tokens: int,
        max_new_tokens: int,
        *,
        cls: Optional[ClassLike] = None,
        priority: Optional[int] = None,
        tenant: Optional[int] = None,
        ttft_ms: Optional[int] = None,
    ) -> RequestHandle:
        """Submits a request (class by name or index as cls, or vLLM's integer priority);
        returns its handle (its arrival is Admitted.arrival_ns). ttft_ms: the request's own time-to-first-token
        target in ms (1 to MAX_TTFT_MS) instead of its class's; in deadline order its
        deadline is its arrival plus this (the ladder ignores it). Raises SubmitError if
        refused (ttft_ms 0 or past MAX_TTFT_MS included), ClassError for a class or
        priority that maps to no class, ArgumentError for both or neither of cls and
        priority or a ttft_ms outside 0 to 2**32 - 1. With id_index = true, an id already
        held is refused (SubmitError); without it, ids are not checked."""
    def cancel(self, handle: RequestHandle) -> str:
        """Cancels a request; returns "waiting" or "running" (where it was). Raises
        ControlError if the handle is stale or the request already cancelled."""
    def reprioritize(
        self,
        handle: RequestHandle,
        cls: Optional[ClassLike] = None,
        *,
        priority: Optional[int] = None,
    ) -> None:
        """Moves a request to another class at the next step, keeping its arrival. Raises
        ControlError if the handle is stale."""
    def lookup(self, id: int) -> RequestHandle:
        """The handle of the held request (submitted and not ended) with this id. Needs
        id_index = true; raises ControlError without it or if no held request has it."""
    def close(self) -> None:
        """Closes ingress: later submits raise SubmitError."""
    @property
    def class_names(self) -> list[str]: ...

class Admitted:
    """A request that starts (or resumes) in this iteration."""

    id: int
    # The handle submit returned (a resumed request keeps it): for on_progress/on_finished.
    handle: RequestHandle
    # When it was submitted, in ns on the scheduler's clock.
    arrival_ns: int
    cls: str
    effective_cls: str
    prefill_tokens: int
    prefill_target: int
    blocks: int
    # As submitted; a resumed request counts what it generated before its preemption.
    max_new_tokens: int
    waited_ns: int
    overdue: bool
    resumed: bool
    # Deadline order: it could no longer meet its deadline and starts because nothing that
    # can meet one is waiting.
    relegated: bool

class Scheduled:
    """Work for a request already running: its next prefill chunk, or one decode token."""

    id: int
    handle: RequestHandle
    tokens: int
    # A prefill chunk: report computed=tokens, and one output token only if it completes
    # the prefill. Else one decode token: computed=1, new_output=1.
    prefill: bool

class Preempted:
    """A running request preempted in this iteration (free its KV; it is queued again and
    keeps its handle)."""

    id: int
    cls: str
    freed_blocks: int
    reason: str  # "for_waiting" | "over_budget" | "kv_exhausted"
    by: Optional[int]

class Decision:
    """What one step decided."""

    now_ns: int
    admitted: list[Admitted]
    scheduled: list[Scheduled]
    preempted: list[Preempted]
    aborted: list[int]
    cancelled: list[int]
    timed_out: list[tuple[int, str, int]]  # (id, class name, waited_ns)
    # (id, class name, waited_ns, late_by_ns): shed by deadline order (on_late = "shed")
    shed: list[tuple[int, str, int, int]]
    # (id, class name, tenant): refused when drained, one tenant past fairness.max_tenants
    tenant_limited: list[tuple[int, str, int | None]]
    total_tokens: int
    waiting: int
    running: int
    stopped_by: Optional[str]  # "seqs" | "tokens" | "kv_blocks"

class Scheduler:
    """The engine thread's scheduler: step once per iteration, then report progress."""

    def __init__(self, config: Optional[Config] = None, clock: Optional[ManualClock] = None) -> None: ...
    def submitter(self) -> Submitter:
        """The Submitter for API threads."""
    def submit(
        self,
        id: int,
        prompt_tokens: int,
        max_new_tokens: int,
        *,
        cls: Optional[ClassLike] = None,
        priority: Optional[int] = None,
        tenant: Optional[int] = None,
        ttft_ms: Optional[int] = None,
    ) -> RequestHandle: ...
    def cancel(self, handle: RequestHandle) -> str: ...
    def reprioritize(
        self,
        handle: RequestHandle,
        cls: Optional[ClassLike] = None,
        *,
        priority: Optional[int] = None,
    ) -> None: ...
    def lookup(self, id: int) -> RequestHandle: ...
    def step(
        self,
        max_num_seqs: int,
        max_batched_tokens: int,
        free_blocks: int,
        now_ns: Optional[int] = None,
    ) -> Decision:
        """Decides the next iteration (GIL released). Raises BudgetError."""
    def on_progress(
        self,
        handle: RequestHandle,
        computed: int,
        new_output: int,
        now_ns: Optional[int] = None,
    ) -> None:
        """Reports one iteration's work on a running request. Raises ProgressError if the
        handle names no running request, or on an overrun."""
    def on_finished(
        self, handle: RequestHandle, reason: str = "stop", now_ns: Optional[int] = None
    ) -> str:
        """Reports a finished request ("stop" | "length" | "error"); returns "finished" or
        "cancelled"; the handle is stale afterwards. Raises ProgressError, or
        ArgumentError for another reason."""
    def first_token_at(self, handle: RequestHandle) -> Optional[int]:
        """When the request produced its first token, in ns (the now of the on_progress
        that reported it); None before that or if the handle is stale."""
    @property
    def waiting(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def class_names(self) -> list[str]: ...
    @property
    def config(self) -> Config: ...
    def waiting_in(self, cls: ClassLike) -> int:
        """Requests waiting in class cls (effective class after aging), relegated ones
        included."""
    def relegated_in(self, cls: ClassLike) -> int:
        """Relegated requests of base class cls waiting now (deadline order: they could no
        longer meet their deadline and wait after every request that can)."""
    def iteration_estimate_ns(self) -> int:
        """The engine's mean iteration time in ns as measured from the times of
        consecutive steps that gave it work (deadline.initial_iteration_ms until then);
        deadline order estimates first-token and run times from it."""
    @property
    def tenants_held(self) -> int:
        """Tenants with a request waiting or running while fairness is on (0 with it off)."""
    def tenant_service(self, tenant: Optional[int], cls: ClassLike) -> Optional[float]:
        """The service counted for tenant (None: requests without a tenant) in class cls:
        weighted tokens over the tenant's weight. None while fairness is off or the tenant
        holds no request."""
    def metrics(self) -> dict[str, Any]:
        """{"waiting", "running", "conservation": {...}, "balanced", "classes": {...}};
        every key is listed in docs/python.md."""
    def slo_report(self, window: str = "cumulative", now_ns: Optional[int] = None) -> dict[str, dict[str, dict[str, Any]]]:
        """{class: {"ttft"|"tpot"|"e2e": {bound_ms, quantile, measured_ms, fraction_met,
        samples, met}}} over "cumulative" or a configured window ("1m", "5m", "1h").
        Raises ArgumentError for a window that does not parse or is not configured."""
    def reload(self, config: Config) -> None:
        """Proposes a configuration, applied at the next step boundary."""

class VllmQueue:
    """The ordered queue behind triage.vllm.TriageRequestQueue."""

    def __init__(
        self,
        config: Optional[Config] = None,
        *,
        policy: str = "priority",
        aging: bool = True,
        clock: Optional[Callable[[], float]] = None,
        out_of_range: str = "clamp",
    ) -> None: ...
    def add_request(self, request: Any) -> None:
        """Raises AlreadyQueued if queued, ArgumentTypeError if not a request."""
    def pop_request(self) -> Any:
        """Raises QueueEmpty (an IndexError) if empty."""
    def peek_request(self) -> Any:
        """Raises QueueEmpty (an IndexError) if empty."""
    def prepend_request(self, request: Any) -> None: ...
    def prepend_requests(self, requests: Iterable[Any]) -> None: ...
    def remove_request(self, request: Any) -> None:
        """Raises NotQueued (a ValueError) if the request is not queued."""
    def remove_requests(self, requests: Iterable[Any]) -> None: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __contains__(self, request: Any) -> bool: ...
    def __getitem__(self, index: int) -> Any: ...
    def reconfigure(self, config: Config) -> None:
        """Takes config from now on; every queued request is queued again under it, keeping
        its arrival (a reload loses none: what no longer fits a range is clamped)."""
    def class_for_priority(self, priority: int) -> int: ...
    def effective_class(self, request: Any) -> Optional[str]: ...
    @property
    def policy(self) -> str: ...
    @property
    def aging(self) -> bool: ...
    @property
    def clamped_priorities(self) -> int:
        """Adds and prepends whose priority was in no class's range (mapped to the nearest;
        out_of_range="clamp")."""
    @property
    def clamped_arrivals(self) -> int:
        """Adds and prepends whose arrival_time was non-finite, negative or past the largest
        Timestamp (queued at the current time instead; out_of_range="clamp")."""
    @property
    def clamped_classes(self) -> int:
        """Adds and prepends whose vllm_xargs triage_class was not a configured class (the
        priority decided instead; out_of_range="clamp")."""
