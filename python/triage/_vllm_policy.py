"""triage's whole policy inside vLLM 0.33.0: ``TriagePolicyScheduler`` and its two kinds.

Imported by :mod:`triage.vllm` when vLLM is importable; see ``docs/python.md`` ("The whole
policy in vLLM") for what it does and what differs from vLLM. In short: triage's Rust
``Scheduler`` decides which waiting requests start (admission order, deadline order with
relegation and shedding, timeouts) and which running requests are preempted for waiting
work; vLLM's ``Scheduler`` / ``AsyncScheduler`` does the mechanics (KV allocation, prefix
caching, chunked prefill and the token count of each chunk, ``SchedulerOutput``, async
output placeholders, aborts), and reports its progress back to triage.

The link is a *gate* on vLLM's waiting queue (:class:`GateQueue`): every waiting request
is in it (``len``, iteration and ``in`` see them all), but vLLM's scheduling loop can take
only those triage has admitted (``bool``, ``peek_request`` and ``pop_request`` see the
admitted ones, in triage's order).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator, Optional

from ._triage import Config, MAX_TTFT_MS, ProgressError, Scheduler, SubmitError

from vllm.v1.core.sched.async_scheduler import AsyncScheduler as _AsyncScheduler
from vllm.v1.core.sched.request_queue import RequestQueue as _RequestQueue
from vllm.v1.core.sched.scheduler import Scheduler as _Scheduler
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.request import Request, RequestStatus

logger = logging.getLogger("triage.vllm")

#: ``sampling_params.extra_args`` keys (the OpenAI body's ``vllm_xargs``).
CLASS_ARG = "triage_class"
TTFT_ARG = "triage_ttft_ms"

#: The prefix of the ``stop_reason`` string of a request triage ended (shed, timed out,
#: refused); the request finishes with vLLM's ``FinishReason.ABORT``.
STOP_REASON_PREFIX = "triage:"

#: The token budget given to triage's step: no limit in practice. The tokens of each
#: iteration are vLLM's to count (its chunking, prefix-cache hits, encoder budget and
#: ``long_prefill_token_threshold`` make its chunks smaller than triage would plan);
#: vLLM's ``max_num_scheduled_tokens`` bounds what it schedules, and a request triage
#: admitted beyond it starts at the next step, first.
TOKEN_BUDGET = 2**31 - 1

#: How many waiting requests (oldest first) are looked up in the prefix cache per step to
#: count the KV blocks a hit saves.
PREFIX_LOOKUPS = 8


class _Track:
    """What the policy scheduler keeps per request it submitted to triage."""

    __slots__ = ("id", "handle", "cls", "prompt", "max_new", "ttft_ms", "running", "kv",
                 "gen", "target", "arrival_ns", "first_seen", "started")

    def __init__(self, id: int, handle: Any, cls: str, prompt: int, max_new: int,
                 ttft_ms: Optional[int]) -> None:
        self.id = id
        self.handle = handle
        self.cls = cls
        self.prompt = prompt
        self.max_new = max_new
        self.ttft_ms = ttft_ms
        #: triage counts it as running (admitted, not preempted or ended); in vLLM it
        #: runs or waits at the front of the queue (a start vLLM could not make yet).
        self.running = False
        #: tokens reported to triage as computed in this run, and output in all.
        self.kv = 0
        self.gen = 0
        #: the prefill target of the current run (triage's ``Admitted.prefill_target``).
        self.target = prompt
        self.arrival_ns = 0
        self.first_seen = False
        self.started = False


class GateQueue:
    """vLLM's waiting queue under triage's admission: holds every waiting request; vLLM's
    scheduling loop sees only the ones triage admitted.

    * ``len``, iteration and ``in``: every waiting request (admitted ones first, in
      triage's order, then the others by ``rank``, or in the order they came).
    * ``peek_request``, ``pop_request``: the admitted ones only, in triage's order.
    * ``bool``: whether any request waits; inside vLLM's ``schedule()`` (between
      :meth:`gate` calls), whether an admitted one waits, which ends vLLM's waiting loop
      when none is left.
    * ``add_request`` / ``prepend_request``: a request triage counts as running (vLLM
      preempted it itself, or skipped it) is admitted again at once, at the front;
      any other waits for triage.
    """

    def __init__(self, is_admitted: Callable[[Request], bool],
                 rank: Optional[Callable[[Request], Any]] = None) -> None:
        self._is_admitted = is_admitted
        self._rank = rank
        self._open: list[Request] = []  # admitted, in triage's order
        self._closed: dict[int, Request] = {}  # id() -> request, insertion order
        self._gated = False

    def gate(self, on: bool) -> None:
        """Inside vLLM's ``schedule()``: ``bool`` counts admitted requests only."""
        self._gated = on

    # -- triage's side ---------------------------------------------------------------
    def open(self, request: Request) -> bool:
        """Lets vLLM take ``request`` (triage admitted it): after the admitted ones.
        Returns whether it was waiting here."""
        if self._closed.pop(id(request), None) is None:
            return any(r is request for r in self._open)
        self._open.append(request)
        return True

    def close(self, request: Request) -> None:
        """Takes ``request`` out of vLLM's reach again (triage preempted it)."""
        for i, r in enumerate(self._open):
            if r is request:
                del self._open[i]
                self._closed[id(request)] = request
                return

    def closed(self) -> Iterable[Request]:
        """The waiting requests triage has not admitted, by arrival here."""
        return self._closed.values()

    @property
    def num_admitted(self) -> int:
        return len(self._open)

    # -- vLLM's RequestQueue ---------------------------------------------------------
    def add_request(self, request: Request) -> None:
        if self._is_admitted(request):
            self._open.append(request)
        else:
            self._closed[id(request)] = request

    def prepend_request(self, request: Request) -> None:
        if self._is_admitted(request):
            self._open.insert(0, request)
        else:
            self._closed[id(request)] = request

    def prepend_requests(self, requests: Any) -> None:
        # As vLLM's FCFS queue (``deque.extendleft``): each in turn goes to the front, so
        # they end up in front in reverse order (vLLM's scheduler hands its skipped
        # requests over reversed for that).
        for request in list(requests):
            self.prepend_request(request)

    def peek_request(self) -> Request:
        if not self._open:
            raise IndexError("no request admitted by triage is waiting")
        return self._open[0]

    def pop_request(self) -> Request:
        if not self._open:
            raise IndexError("no request admitted by triage is waiting")
        return self._open.pop(0)

    def remove_request(self, request: Request) -> None:
        if self._closed.pop(id(request), None) is not None:
            return
        for i, r in enumerate(self._open):
            if r is request:
                del self._open[i]
                return
        raise ValueError(f"request {request.request_id} is not waiting")

    def remove_requests(self, requests: Iterable[Request]) -> None:
        gone = {id(r) for r in requests}
        for key in gone:
            self._closed.pop(key, None)
        if any(id(r) in gone for r in self._open):
            self._open = [r for r in self._open if id(r) not in gone]

    def __bool__(self) -> bool:
        return bool(self._open) or (not self._gated and bool(self._closed))

    def __len__(self) -> int:
        return len(self._open) + len(self._closed)

    def __iter__(self) -> Iterator[Request]:
        closed = list(self._closed.values())
        if self._rank is not None:
            closed.sort(key=self._rank)
        return iter([*self._open, *closed])

    def __contains__(self, request: object) -> bool:
        return id(request) in self._closed or any(r is request for r in self._open)

    def __getitem__(self, i: int) -> Request:
        return list(self)[i]

    def __repr__(self) -> str:
        return f"GateQueue(admitted={len(self._open)}, waiting={len(self)})"


_RequestQueue.register(GateQueue)


class _Metrics:
    """triage's figures in vLLM's Prometheus registry (``prometheus_client``'s default
    ``REGISTRY``, which vLLM's ``/metrics`` serves; in multiprocess mode through
    ``PROMETHEUS_MULTIPROC_DIR``). One set per process, labelled by class."""

    _lock = threading.Lock()
    _made: Optional["_Metrics"] = None

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        cls = ["class"]
        self.waiting = Gauge("triage_queue_depth", "Requests waiting in triage, by class",
                             cls, multiprocess_mode="livesum")
        self.running = Gauge("triage_running", "Requests triage counts as running, by class",
                             cls, multiprocess_mode="livesum")
        self.counters = {
            key: Counter(f"triage_{name}", doc, cls)
            for key, name, doc in (
                ("submitted", "submitted", "Requests submitted to triage"),
                ("refused", "refused", "Requests triage refused at submit"),
                ("admitted", "admitted", "Admissions (resumes after preemption included)"),
                ("preempted", "preempted", "Preemptions of running requests"),
                ("shed", "shed", "Requests shed by deadline order"),
                ("timed_out", "timed_out", "Requests timed out waiting"),
                ("relegated", "relegated", "Requests relegated by deadline order"),
                ("finished", "finished", "Requests finished by the engine"),
                ("cancelled", "cancelled", "Requests cancelled (aborted by the client)"),
            )
        }
        self.slo_violations = Counter(
            "triage_slo_violations", "First tokens later than the request's TTFT target",
            ["class", "target"])

    @classmethod
    def get(cls) -> Optional["_Metrics"]:
        with cls._lock:
            if cls._made is None:
                try:
                    cls._made = _Metrics()
                except Exception as exc:  # prometheus_client missing, or names taken
                    logger.warning("triage: metrics not registered: %r", exc)
                    return None
            return cls._made


def _clamp_class(config: Config, priority: int) -> int:
    """The class index of vLLM's ``priority``: the range holding it, else the nearest
    (the more urgent on a tie)."""
    best, best_gap = 0, None
    for i, (lo, hi) in enumerate(config.priority_ranges):
        gap = 0 if lo <= priority <= hi else min(abs(priority - lo), abs(priority - hi))
        if gap == 0:
            return i
        if best_gap is None or gap < best_gap:
            best, best_gap = i, gap
    return best


class _TriagePolicy:
    """Mixin: the vLLM scheduler it precedes, with triage's whole policy (see the module
    docs). Configuration: ``$TRIAGE_CONFIG`` (reloaded on change or ``SIGHUP``), with the
    ``[engine]`` limits replaced by vLLM's own (block size, KV blocks, ``max_model_len``,
    no watermark)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from .vllm import ConfigWatch, config_from_env

        self._triage_config = self._triage_engine_config(config_from_env())
        self._triage = Scheduler(self._triage_config)
        self._triage_tracks: dict[str, _Track] = {}
        self._triage_by_id: dict[int, Request] = {}
        self._triage_next_id = 0
        self._triage_new: list[tuple[Request, _Track]] = []
        self._triage_outputs: dict[int, list[EngineCoreOutput]] = defaultdict(list)
        #: on_progress / on_finished calls triage refused (logged; should stay 0).
        self.triage_progress_errors = 0
        old = self.waiting
        self.waiting = GateQueue(self._triage_admitted, self._triage_rank)
        for request in old:  # empty at start
            self.waiting.add_request(request)
        self._triage_slo = self._triage_slo_bounds()
        self._triage_metrics = _Metrics.get()
        self._triage_last: dict[tuple[str, str], int] = {}
        path = os.environ.get("TRIAGE_CONFIG")
        self._triage_watch = ConfigWatch(path) if path else None
        logger.info(
            "triage: whole policy in %s (classes %s, order %s, %d KV blocks of %d tokens)",
            type(self).__name__, self._triage_config.class_names, self._triage_config.order,
            self._triage_config.engine["total_blocks"], self._triage_config.engine["block_size"],
        )

    # -- configuration ---------------------------------------------------------------
    def _triage_engine_config(self, config: Config) -> Config:
        return config.with_engine(
            block_size=int(self.block_size),
            total_blocks=max(1, int(self.kv_cache_config.num_blocks)),
            max_model_len=max(1, int(self.max_model_len)),
            watermark=0.0,
        )

    def _triage_slo_bounds(self) -> dict[str, float]:
        """Each class's TTFT bound in ms (classes without one are left out)."""
        try:
            report = self._triage.slo_report()
        except Exception:
            return {}
        return {c: t["ttft"]["bound_ms"] for c, t in report.items() if "ttft" in t}

    def _triage_reload(self) -> None:
        config = self._triage_watch.poll() if self._triage_watch else None
        if config is None:
            return
        try:
            config = self._triage_engine_config(config)
            self._triage.reload(config)
        except Exception as exc:  # triage.ConfigError
            logger.error("triage: reload refused: %s; the configuration in force stays", exc)
            return
        self._triage_config = config
        self._triage_slo = self._triage_slo_bounds()

    # -- requests in -----------------------------------------------------------------
    def _triage_admitted(self, request: Request) -> bool:
        """Whether vLLM may take ``request`` from the gate: triage counts it as running,
        or triage does not know it (a request that did not come through
        ``add_request``; vLLM's own order applies to it)."""
        t = self._triage_tracks.get(request.request_id)
        return t is None or t.running

    def _triage_rank(self, request: Request) -> tuple:
        """Where a waiting request not admitted yet is listed: by class, then arrival
        (triage's ladder order without aging; deadline order may start them otherwise)."""
        t = self._triage_tracks.get(request.request_id)
        if t is None:
            return (-1, 0.0, 0)
        names = self._triage_config.class_names
        cls = names.index(t.cls) if t.cls in names else len(names)
        return (cls, self._arrival(request), t.id)

    def _triage_class(self, request: Request) -> str:
        names = self._triage_config.class_names
        extra = getattr(request.sampling_params, "extra_args", None) or {}
        name = extra.get(CLASS_ARG)
        if isinstance(name, str):
            for n in names:
                if n.lower() == name.lower():
                    return n
            logger.warning("triage: request %s: %s=%r is not a class (%s); its priority "
                           "decides", request.request_id, CLASS_ARG, name, names)
        return names[_clamp_class(self._triage_config, int(request.priority))]

    @staticmethod
    def _triage_ttft(request: Request) -> Optional[int]:
        extra = getattr(request.sampling_params, "extra_args", None) or {}
        v = extra.get(TTFT_ARG)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1 <= v <= MAX_TTFT_MS:
            logger.warning("triage: request %s: %s=%r is not 1 to %d ms; its class's target "
                           "applies", request.request_id, TTFT_ARG, v, MAX_TTFT_MS)
            return None
        return int(v)

    def add_request(self, request: Request) -> None:
        if getattr(self, "_triage", None) is None:  # built without __init__ (a test)
            return super().add_request(request)
        if request.request_id not in self.requests:
            # Tracked now (so that vLLM's enqueue finds it waiting for triage), submitted
            # at the next schedule(), with the others that came since, by arrival_time.
            t = self._triage_track(request)
            self._triage_tracks[request.request_id] = t
            self._triage_new.append((request, t))
        super().add_request(request)

    def _triage_track(self, request: Request) -> _Track:
        engine = self._triage_config.engine
        cap = min(engine["max_model_len"], engine["total_blocks"] * engine["block_size"])
        # triage needs room for one output token: a prompt of the whole context (a pooling
        # request at max_model_len) is counted one token short.
        prompt = max(1, min(int(request.num_prompt_tokens), cap - 1))
        max_new = max(1, min(int(request.max_tokens), cap - prompt))
        return _Track(-1, None, self._triage_class(request), prompt, max_new,
                      self._triage_ttft(request))

    @staticmethod
    def _arrival(request: Request) -> float:
        a = getattr(request, "arrival_time", None)
        return a if isinstance(a, (int, float)) and a == a else float("inf")

    def _triage_submit_new(self) -> None:
        """Submits the requests added since the last step, by ``arrival_time`` (then in
        the order they came), so that triage's arrival order is vLLM's. A request triage
        refuses ends in vLLM (``"triage: refused (...)"``). One that vLLM moved out of the
        waiting queue meanwhile (to ``kv_holding_waiting``) is left to vLLM."""
        new, self._triage_new = self._triage_new, []
        new = [(r, t) for r, t in new if self._triage_tracks.get(r.request_id) is t]
        new.sort(key=lambda rt: self._arrival(rt[0]))
        for request, t in new:
            if request not in self.waiting:
                # Moved to kv_holding_waiting (it holds KV blocks: a connector's load)
                # before triage saw it: vLLM's own, as that queue is.
                del self._triage_tracks[request.request_id]
                continue
            rid = self._triage_next_id
            self._triage_next_id += 1
            try:
                t.handle = self._triage.submit(rid, t.prompt, t.max_new, cls=t.cls,
                                               ttft_ms=t.ttft_ms)
            except SubmitError as exc:
                logger.warning("triage: request %s refused: %s", request.request_id, exc)
                del self._triage_tracks[request.request_id]
                self._triage_end_in_vllm(request, f"refused ({exc})")
                continue
            t.id = rid
            self._triage_by_id[rid] = request

    # -- the step --------------------------------------------------------------------
    def _triage_free_blocks(self) -> int:
        """Free KV blocks as vLLM's block pool counts them, plus the blocks a prefix-cache
        hit saves (hits on blocks that running requests hold, in the first KV cache group)
        for the first ``PREFIX_LOOKUPS`` waiting requests triage has not admitted, at most
        the cache's total."""
        kv = self.kv_cache_manager
        free = int(kv.block_pool.get_num_free_blocks())
        if getattr(kv, "enable_caching", False):
            saved = 0
            for i, request in enumerate(self.waiting.closed()):
                if i >= PREFIX_LOOKUPS:
                    break
                if request.num_computed_tokens:
                    continue
                try:
                    blocks, *_ = kv.get_computed_blocks(request)
                    groups = blocks.blocks
                except Exception:  # a manager this adapter does not know
                    break
                # A hit on a block a running request holds saves a free block; a hit on a
                # cached block in the free pool takes that block as a new one would.
                saved += sum(1 for b in (groups[0] if groups else ()) if b.ref_cnt > 0)
            free += saved
        return min(free, int(self._triage_config.engine["total_blocks"]))

    def _triage_step(self) -> None:
        self._triage_submit_new()
        d = self._triage.step(
            int(self.max_num_running_reqs), TOKEN_BUDGET, self._triage_free_blocks()
        )
        now = time.monotonic()
        for p in d.preempted:
            request, t = self._triage_held(p.id)
            if t is None:
                continue
            t.running = False
            t.kv = 0
            if request.status == RequestStatus.RUNNING and request in self.running:
                self.running.remove(request)
                self._preempt_request(request, now)
            else:  # admitted by triage, not started by vLLM yet (or preempted by it)
                self.waiting.close(request)
        for rid in (*d.aborted, *d.cancelled):
            self._triage_by_id.pop(rid, None)  # ended in vLLM already (see _free_request)
        for rid, cls, waited_ns in d.timed_out:
            self._triage_end(rid, f"timed_out (class {cls}, waited {waited_ns / 1e6:.0f} ms)")
        for rid, cls, waited_ns, late_ns in d.shed:
            self._triage_end(rid, f"shed (class {cls}, waited {waited_ns / 1e6:.0f} ms, "
                                  f"late by {late_ns / 1e6:.0f} ms)")
        for rid, cls, tenant in d.tenant_limited:
            self._triage_end(rid, f"tenant_limited (class {cls}, tenant {tenant})")
        for a in d.admitted:
            request, t = self._triage_held(a.id)
            if t is None:
                continue
            t.running = True
            t.kv = 0
            t.target = a.prefill_target
            t.arrival_ns = a.arrival_ns
            if not self.waiting.open(request):
                logger.warning("triage: admitted request %s is not waiting in vLLM (%s)",
                               request.request_id, request.status)

    def _triage_held(self, rid: int) -> tuple:
        """The vLLM request triage's id ``rid`` names and its track; ``(request, None)``
        or ``(None, None)`` if vLLM no longer holds it."""
        request = self._triage_by_id.get(rid)
        if request is None:
            return None, None
        return request, self._triage_tracks.get(request.request_id)

    def _triage_end(self, rid: int, why: str) -> None:
        """Ends in vLLM a waiting request triage ended (its outcome is recorded there)."""
        request = self._triage_by_id.pop(rid, None)
        if request is None:
            return
        self._triage_tracks.pop(request.request_id, None)
        self._triage_end_in_vllm(request, why)

    def _triage_end_in_vllm(self, request: Request, why: str) -> None:
        """Finishes ``request`` with ``FinishReason.ABORT`` and the stop reason
        ``"triage: <why>"``; the client gets it with the next outputs."""
        request.stop_reason = f"{STOP_REASON_PREFIX} {why}"
        for r in self.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED):
            self._triage_outputs[r.client_index].append(
                EngineCoreOutput(
                    request_id=r.request_id,
                    new_token_ids=[],
                    finish_reason=r.get_finished_reason(),
                    stop_reason=r.stop_reason,
                    events=r.take_events(),
                    trace_headers=r.trace_headers,
                )
            )

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_triage", None) is None:  # built without __init__ (a test)
            return super().schedule(*args, **kwargs)
        self._triage_reload()
        self._triage_step()
        self.waiting.gate(True)
        try:
            out = super().schedule(*args, **kwargs)
        finally:
            self.waiting.gate(False)
        self._triage_publish()
        return out

    # -- progress back ---------------------------------------------------------------
    def _triage_report(self, t: _Track, request: Request) -> None:
        """Reports to triage what vLLM computed and sampled for ``request`` since the
        last report, in the terms triage accepts (never more KV than prompt plus output,
        output only once the run's prefill target is computed)."""
        if not t.running:
            return
        gen = max(t.gen, min(int(request.num_output_tokens), t.max_new))
        computed = max(0, int(request.num_computed_tokens))
        kv = min(computed, t.prompt + gen)
        if kv < t.target:
            gen = t.gen
            kv = min(computed, t.prompt + gen)
        kv = max(kv, t.kv)
        d_kv, d_out = kv - t.kv, gen - t.gen
        if d_kv == 0 and d_out == 0:
            return
        try:
            self._triage.on_progress(t.handle, d_kv, d_out)
        except ProgressError as exc:
            self.triage_progress_errors += 1
            logger.warning("triage: progress of %s refused: %s", request.request_id, exc)
            return
        t.kv, t.gen = kv, gen
        if d_out and not t.first_seen:
            t.first_seen = True
            self._triage_check_ttft(t)

    def _triage_check_ttft(self, t: _Track) -> None:
        bound = t.ttft_ms if t.ttft_ms is not None else self._triage_slo.get(t.cls)
        first = self._triage.first_token_at(t.handle)
        if bound is None or first is None or self._triage_metrics is None:
            return
        arrival = t.arrival_ns
        if first - arrival > bound * 1e6:
            self._triage_metrics.slo_violations.labels(t.cls, "ttft").inc()

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        if getattr(self, "_triage", None) is None:  # built without __init__ (a test)
            return outputs
        for req_id in scheduler_output.num_scheduled_tokens:
            t = self._triage_tracks.get(req_id)
            request = self.requests.get(req_id)
            if t is not None and request is not None:
                self._triage_report(t, request)
        if self._triage_outputs:
            for client, outs in self._triage_outputs.items():
                eco = outputs.get(client)
                if eco is None:
                    outputs[client] = EngineCoreOutputs(outputs=outs)
                else:
                    eco.outputs.extend(outs)
            self._triage_outputs = defaultdict(list)
        return outputs

    def _free_request(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        tracks = getattr(self, "_triage_tracks", None)
        t = tracks.pop(request.request_id, None) if tracks is not None else None
        if t is not None:
            self._triage_finished(t, request)
        return super()._free_request(request, *args, **kwargs)

    def _triage_finished(self, t: _Track, request: Request) -> None:
        """vLLM ended ``request``: its one outcome in triage."""
        if t.handle is None:  # not submitted yet: triage never had it
            return
        status = request.status
        try:
            if t.running and status != RequestStatus.FINISHED_ABORTED:
                self._triage_report(t, request)
                reason = {
                    RequestStatus.FINISHED_LENGTH_CAPPED: "length",
                    RequestStatus.FINISHED_IGNORED: "length",
                    RequestStatus.FINISHED_ERROR: "error",
                }.get(status, "stop")
                self._triage.on_finished(t.handle, reason)
                self._triage_by_id.pop(t.id, None)
            else:
                # Aborted by the client, or ended while waiting in triage: cancelled.
                # The next step lists it (aborted or cancelled) and forgets it.
                self._triage.cancel(t.handle)
        except Exception as exc:  # ProgressError / ControlError: should not happen
            self.triage_progress_errors += 1
            logger.warning("triage: end of %s refused: %s", request.request_id, exc)
            self._triage_by_id.pop(t.id, None)

    # -- metrics ---------------------------------------------------------------------
    def _triage_publish(self) -> None:
        m = self._triage_metrics
        if m is None:
            return
        snap = self._triage.metrics()
        for cls, c in snap["classes"].items():
            m.waiting.labels(cls).set(c["waiting"])
            m.running.labels(cls).set(c["running"])
            for key, counter in m.counters.items():
                value = c[key]
                last = self._triage_last.get((cls, key), 0)
                if value > last:
                    counter.labels(cls).inc(value - last)
                self._triage_last[(cls, key)] = value

    def triage_metrics(self) -> dict:
        """triage's counters (``triage.Scheduler.metrics()``)."""
        return self._triage.metrics()

    @property
    def triage_scheduler(self) -> Scheduler:
        """The triage ``Scheduler`` that decides (for inspection; the engine thread's)."""
        return self._triage


class TriagePolicySyncScheduler(_TriagePolicy, _Scheduler):  # type: ignore[misc]
    """vLLM's synchronous ``Scheduler`` with triage's whole policy."""


class TriagePolicyAsyncScheduler(_TriagePolicy, _AsyncScheduler):  # type: ignore[misc]
    """vLLM's ``AsyncScheduler`` (``--async-scheduling``) with triage's whole policy."""


def _async_scheduling(args: tuple, kwargs: dict) -> bool:
    vllm_config = kwargs.get("vllm_config", args[0] if args else None)
    scheduler_config = getattr(vllm_config, "scheduler_config", None)
    return bool(getattr(scheduler_config, "async_scheduling", False))


class TriagePolicyScheduler(TriagePolicySyncScheduler):  # type: ignore[misc]
    """The one name for ``--scheduler-cls``: triage's whole policy on vLLM's synchronous
    ``Scheduler``, or on its ``AsyncScheduler`` when the engine runs
    ``--async-scheduling`` (chosen when vLLM builds it)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "TriagePolicyScheduler":
        if cls is TriagePolicyScheduler and _async_scheduling(args, kwargs):
            return super().__new__(_TriagePolicySchedulerAsync)
        return super().__new__(cls)


class _TriagePolicySchedulerAsync(TriagePolicyScheduler, _AsyncScheduler):  # type: ignore[misc]
    """``TriagePolicyScheduler`` on an engine with async scheduling."""
