"""triage's whole policy inside vLLM 0.33.0's scheduler (``TriagePolicySyncScheduler`` and
``TriagePolicyAsyncScheduler``), driven at the scheduler level as vLLM's own tests drive
theirs (``tests/v1/core/utils.py``'s ``create_scheduler``: a ``VllmConfig`` for
facebook/opt-125m, a KV cache of ``num_blocks`` blocks, and a model runner faked by
hand-made ``ModelRunnerOutput``s).

Runs only where vLLM is importable (``scripts/vllm-check.sh``); skipped with the reason
otherwise (CI has no vLLM). The model is the config.json in ``python/vllm_tests/models``
(no weights, no tokenizer, no network).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import skip_without_vllm

# The model is a local config.json: never ask the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No model runs here: the CPU platform, so that a machine without a GPU can build configs.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")

try:
    import torch
    from vllm.config import (
        CacheConfig,
        ModelConfig,
        ParallelConfig,
        SchedulerConfig,
        VllmConfig,
    )
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.single_type_kv_cache_manager import register_all_kvcache_specs
    from vllm.v1.engine import FinishReason
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request, RequestStatus
    from vllm.v1.structured_output import StructuredOutputManager

    from triage.vllm import (
        GateQueue,
        TriagePolicyAsyncScheduler,
        TriagePolicyScheduler,
        TriagePolicySyncScheduler,
    )
except Exception as exc:  # not installed, or fails to import on this machine
    skip_without_vllm(exc)

MODEL = Path(__file__).resolve().parents[1] / "vllm_tests" / "models" / "facebook" / "opt-125m"
BLOCK = 16
EOS = 50118  # never sampled below
#: A TTFT target (ms) within the default deadline.urgent_slack_ms (300): urgent at once.
URGENT = {"triage_ttft_ms": 250}


def make_scheduler(cls, *, num_blocks: int, max_num_seqs: int = 16,
                   max_num_batched_tokens: int = 4096, async_scheduling: bool = False,
                   policy: str = "priority", prefix_caching: bool = False):
    """A vLLM scheduler of class ``cls``, as vLLM's ``create_scheduler`` builds one."""
    model_config = ModelConfig(model=str(MODEL), dtype="float16", seed=42,
                               skip_tokenizer_init=True, max_model_len=2048)
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=2048,
        enable_chunked_prefill=True,
        async_scheduling=async_scheduling,
        is_encoder_decoder=False,
        watermark=0.0,
        policy=policy,
    )
    cache_config = CacheConfig(block_size=BLOCK, gpu_memory_utilization=0.9,
                               cache_dtype="auto", enable_prefix_caching=prefix_caching)
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config,
                             cache_config=cache_config, parallel_config=ParallelConfig())
    # vLLM turns async scheduling off on a CPU platform; the flag is what
    # TriagePolicyScheduler reads to pick its kind.
    vllm_config.scheduler_config.async_scheduling = async_scheduling
    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=1, head_size=1,
                             dtype=torch.float32)
    kv_cache_config = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                                    kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    cache_config.num_gpu_blocks = num_blocks
    register_all_kvcache_specs(vllm_config)
    return cls(vllm_config=vllm_config, kv_cache_config=kv_cache_config, block_size=BLOCK,
               log_stats=True, structured_output_manager=StructuredOutputManager(vllm_config))


def make_request(rid: str, *, priority: int, prompt: int, max_tokens: int,
                 extra_args: dict | None = None) -> Request:
    params = SamplingParams(ignore_eos=True, max_tokens=max_tokens, extra_args=extra_args)
    params.update_from_generation_config({}, EOS)
    return Request(request_id=rid, prompt_token_ids=[hash(rid) % 1000] * prompt,
                   sampling_params=params, pooling_params=None, priority=priority)


def run_step(scheduler) -> tuple:
    """One engine iteration: schedule, then a model output with one sampled token for
    every request whose prefill is complete."""
    out = scheduler.schedule()
    req_ids = list(out.num_scheduled_tokens)
    sampled = []
    for rid in req_ids:
        r = scheduler.requests[rid]
        done_prefill = r.num_computed_tokens >= r.num_tokens
        sampled.append([7] if done_prefill else [])
    mro = ModelRunnerOutput(req_ids=req_ids,
                            req_id_to_index={r: i for i, r in enumerate(req_ids)},
                            sampled_token_ids=sampled, logprobs=None,
                            prompt_logprobs_dict={}, pooler_output=[])
    outputs = scheduler.update_from_output(out, mro)
    return out, outputs


def finished_reasons(outputs) -> dict:
    got = {}
    for eco in outputs.values():
        for o in eco.outputs:
            if o.finish_reason is not None:
                got[o.request_id] = (o.finish_reason, o.stop_reason)
    return got


def run_until_finished(sched, n: int, *, steps: int) -> tuple:
    """Steps ``sched`` until ``n`` requests finished (at most ``steps`` steps). Returns, by
    request id: the first step it ran, the first step it was preempted, the first step it
    ran after that, and its finish (``finished_reasons``)."""
    first_run: dict[str, int] = {}
    preempted_at: dict[str, int] = {}
    resumed_at: dict[str, int] = {}
    finished: dict = {}
    for step in range(steps):
        out, outputs = run_step(sched)
        for rid in out.preempted_req_ids:
            preempted_at.setdefault(rid, step)
        for rid in out.num_scheduled_tokens:
            first_run.setdefault(rid, step)
            if rid in preempted_at and preempted_at[rid] < step:
                resumed_at.setdefault(rid, step)
        finished.update(finished_reasons(outputs))
        if len(finished) == n:
            break
    return first_run, preempted_at, resumed_at, finished


@pytest.mark.parametrize("cls", [TriagePolicySyncScheduler, TriagePolicyAsyncScheduler])
def test_high_preempts_low_and_low_resumes_in_place(cls) -> None:
    # 8 LOW requests of 64 prompt tokens (4 blocks) + 48 output tokens fill the running
    # set (max_num_seqs 8) and then a cache of 48 blocks; two HIGH ones arrive, then two
    # later LOW ones.
    sched = make_scheduler(cls, num_blocks=48, max_num_seqs=8)
    assert isinstance(sched.waiting, GateQueue)
    low = [make_request(f"low{i}", priority=50, prompt=64, max_tokens=48) for i in range(8)]
    for r in low:
        sched.add_request(r)
    started: list[str] = []
    for _ in range(3):
        out, _ = run_step(sched)
        started += [n.req_id for n in out.scheduled_new_reqs]
    assert started == [r.request_id for r in low], "LOW burst starts in arrival order"
    assert len(sched.running) == 8

    # HIGH with a TTFT target of 250 ms (vllm_xargs): closer than deadline.urgent_slack_ms
    # (300 ms), so urgent at once, and an urgent request may preempt lower classes.
    high = [make_request(f"high{i}", priority=0, prompt=64, max_tokens=8, extra_args=URGENT)
            for i in range(2)]
    for r in high:
        sched.add_request(r)
    late_low = [make_request(f"late{i}", priority=50, prompt=64, max_tokens=8) for i in range(2)]
    for r in late_low:
        sched.add_request(r)

    first_run, preempted_at, resumed_at, finished = run_until_finished(sched, 12, steps=400)
    preempted = set(preempted_at)

    # HIGH preempted LOW: LOW requests were preempted, both HIGH started before any later
    # LOW request, and before the preempted LOW requests came back.
    assert preempted, "HIGH preempted nothing"
    assert preempted <= {r.request_id for r in low}
    later = min(first_run[r.request_id] for r in late_low)
    assert max(first_run[r.request_id] for r in high) < later, (first_run, preempted_at)
    assert min(preempted_at.values()) <= max(first_run[r.request_id] for r in high)
    # The preempted LOW requests resumed in place: before the LOW requests that arrived
    # after them.
    assert set(resumed_at) == preempted
    assert all(step <= later for step in resumed_at.values()), (resumed_at, first_run)
    counters = sched.triage_metrics()["classes"]
    assert counters["LOW"]["preempted"] >= len(preempted)
    assert counters["HIGH"]["preempted"] == 0
    # Every request finished, with its whole output (nothing lost), once.
    assert set(finished) == {r.request_id for r in (*low, *high, *late_low)}
    assert all(reason == FinishReason.LENGTH for reason, _ in finished.values())
    for r in (*low, *high, *late_low):
        assert r.num_output_tokens == r.max_tokens
    m = sched.triage_metrics()
    assert m["balanced"] and m["conservation"]["finished"] == 12
    assert sched.triage_progress_errors == 0


@pytest.mark.parametrize("cls", [TriagePolicySyncScheduler, TriagePolicyAsyncScheduler])
def test_preempted_low_resumes_before_later_low(cls) -> None:
    # Two LOW requests hold both sequence slots; an urgent HIGH request preempts one. The
    # preempted LOW request is queued again at its original place: it restarts before a
    # LOW request that arrived after it, as soon as the HIGH one is done.
    sched = make_scheduler(cls, num_blocks=100, max_num_seqs=2)
    a = make_request("lowA", priority=50, prompt=64, max_tokens=30)
    b = make_request("lowB", priority=50, prompt=64, max_tokens=30)
    for r in (a, b):
        sched.add_request(r)
    run_step(sched)
    run_step(sched)
    assert {r.request_id for r in sched.running} == {"lowA", "lowB"}
    h = make_request("high", priority=0, prompt=96, max_tokens=4, extra_args=URGENT)
    sched.add_request(h)
    later = make_request("lowC", priority=50, prompt=64, max_tokens=4)
    sched.add_request(later)
    first_run, preempted_at, resumed_at, finished = run_until_finished(sched, 4, steps=300)
    assert len(preempted_at) == 1 and set(preempted_at) <= {"lowA", "lowB"}, preempted_at
    assert preempted_at == {"lowB": 0} or preempted_at == {"lowA": 0}, preempted_at
    assert first_run["high"] == 0 and first_run["high"] < first_run["lowC"], first_run
    assert set(resumed_at) == set(preempted_at)
    assert all(step < first_run["lowC"] for step in resumed_at.values()), (resumed_at, first_run)
    assert set(finished) == {"lowA", "lowB", "high", "lowC"}
    assert sched.triage_metrics()["balanced"]


def test_shed_request_finishes_with_a_reason() -> None:
    # A HIGH request whose own TTFT target (vllm_xargs triage_ttft_ms) cannot be met while
    # the engine is full is shed when its class says so; the client sees ABORT and a
    # stop_reason naming triage's reason.
    import tempfile

    toml = """
[[classes]]
name = "HIGH"
vllm_priority = [0, 0]
on_late = "shed"
[[classes]]
name = "LOW"
vllm_priority = [1, 100]
[preemption]
enabled = false
[slo]
enabled = false
[[slo.classes]]
[[slo.classes]]
"""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(toml)
    old = os.environ.get("TRIAGE_CONFIG")
    os.environ["TRIAGE_CONFIG"] = f.name
    try:
        sched = make_scheduler(TriagePolicySyncScheduler, num_blocks=8, max_num_seqs=2)
    finally:
        if old is None:
            del os.environ["TRIAGE_CONFIG"]
        else:
            os.environ["TRIAGE_CONFIG"] = old
        os.unlink(f.name)
    for i in range(2):
        sched.add_request(make_request(f"low{i}", priority=5, prompt=32, max_tokens=200))
    run_step(sched)
    late = make_request("high", priority=0, prompt=32, max_tokens=4,
                        extra_args={"triage_class": "HIGH", "triage_ttft_ms": 1})
    sched.add_request(late)
    import time

    time.sleep(0.01)
    got: dict = {}
    for _ in range(5):
        _, outputs = run_step(sched)
        got.update(finished_reasons(outputs))
        if "high" in got:
            break
    reason, stop = got["high"]
    assert reason == FinishReason.ABORT
    assert isinstance(stop, str) and stop.startswith("triage: shed"), stop
    assert "high" not in sched.requests
    m = sched.triage_metrics()
    assert m["classes"]["HIGH"]["shed"] == 1 and m["balanced"]


def test_abort_is_cancelled_in_triage() -> None:
    sched = make_scheduler(TriagePolicySyncScheduler, num_blocks=40, max_num_seqs=1)
    a = make_request("a", priority=0, prompt=16, max_tokens=50)
    b = make_request("b", priority=0, prompt=16, max_tokens=50)
    sched.add_request(a)
    sched.add_request(b)
    run_step(sched)
    sched.finish_requests(["a", "b"], RequestStatus.FINISHED_ABORTED)  # running, waiting
    run_step(sched)
    m = sched.triage_metrics()
    assert m["conservation"]["cancelled"] == 2 and m["balanced"], m
    assert m["running"] == 0 and m["waiting"] == 0


def test_class_and_ttft_from_vllm_xargs() -> None:
    sched = make_scheduler(TriagePolicySyncScheduler, num_blocks=40)
    r = make_request("x", priority=50, prompt=16, max_tokens=4,
                     extra_args={"triage_class": "high", "triage_ttft_ms": 300})
    sched.add_request(r)
    t = sched._triage_tracks["x"]
    assert (t.cls, t.ttft_ms) == ("HIGH", 300)
    bad = make_request("y", priority=50, prompt=16, max_tokens=4,
                       extra_args={"triage_class": "NOPE", "triage_ttft_ms": 0})
    sched.add_request(bad)
    t = sched._triage_tracks["y"]
    assert (t.cls, t.ttft_ms) == ("LOW", None)


def test_one_name_picks_the_kind() -> None:
    s = make_scheduler(TriagePolicyScheduler, num_blocks=10, async_scheduling=True)
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    assert isinstance(s, AsyncScheduler) and isinstance(s, TriagePolicyScheduler)
    s = make_scheduler(TriagePolicyScheduler, num_blocks=10)
    assert not isinstance(s, AsyncScheduler)


def test_metrics_in_prometheus_registry() -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("triage_admitted_total", **{"class": "HIGH"})
    submitted = value("triage_submitted_total", **{"class": "HIGH"})
    sched = make_scheduler(TriagePolicySyncScheduler, num_blocks=40, max_num_seqs=1)
    for i in range(3):
        sched.add_request(make_request(f"m{i}", priority=0, prompt=16, max_tokens=2))
    run_step(sched)
    assert value("triage_admitted_total", **{"class": "HIGH"}) == before + 1
    assert value("triage_submitted_total", **{"class": "HIGH"}) == submitted + 3
    assert value("triage_queue_depth", **{"class": "HIGH"}) == 2
    assert value("triage_running", **{"class": "HIGH"}) == 1


def test_config_reload_keeps_vllm_engine_limits(tmp_path) -> None:
    path = tmp_path / "triage.toml"
    path.write_text('order = "deadline"\n')
    old = os.environ.get("TRIAGE_CONFIG")
    os.environ["TRIAGE_CONFIG"] = str(path)
    try:
        sched = make_scheduler(TriagePolicySyncScheduler, num_blocks=40)
    finally:
        if old is None:
            del os.environ["TRIAGE_CONFIG"]
        else:
            os.environ["TRIAGE_CONFIG"] = old
    assert sched.triage_scheduler.config.order == "deadline"
    sched._triage_watch.every = 0.0  # look at the file at every schedule()
    path.write_text('order = "ladder"\n')
    os.utime(path, ns=(1, 1))  # a modification time surely different from the first
    sched.add_request(make_request("r", priority=0, prompt=16, max_tokens=2))
    run_step(sched)  # the reload is proposed here, applied at the next step
    run_step(sched)
    config = sched.triage_scheduler.config
    assert config.order == "ladder"
    assert config.engine["total_blocks"] == 40 and config.engine["block_size"] == BLOCK


def test_free_blocks_count_what_a_prefix_hit_saves() -> None:
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash

    init_none_hash(sha256)
    hasher = get_request_block_hasher(BLOCK, sha256)

    def req(rid: str, max_tokens: int) -> Request:
        params = SamplingParams(ignore_eos=True, max_tokens=max_tokens)
        params.update_from_generation_config({}, EOS)
        return Request(request_id=rid, prompt_token_ids=[3] * 64, sampling_params=params,
                       pooling_params=None, block_hasher=hasher)

    sched = make_scheduler(TriagePolicySyncScheduler, num_blocks=40, prefix_caching=True)
    sched.add_request(req("first", 20))
    run_step(sched)
    assert "first" in {r.request_id for r in sched.running}
    pool = sched.kv_cache_manager.block_pool.get_num_free_blocks()
    assert sched._triage_free_blocks() == pool, "nothing waits: no saving"
    # The same 64-token prompt: 3 full blocks hit (the last token is always computed),
    # held by the running request: 3 blocks that need not be free.
    sched.add_request(req("second", 2))
    assert sched._triage_free_blocks() == pool + 3
    for _ in range(30):
        run_step(sched)
    assert not sched.requests
    # Both finished: their blocks are cached but free; a hit on them saves nothing.
    sched.add_request(req("third", 2))
    assert sched._triage_free_blocks() == sched.kv_cache_manager.block_pool.get_num_free_blocks()
