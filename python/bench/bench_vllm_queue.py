"""TriageRequestQueue against vLLM 0.33.0's PriorityRequestQueue, in one process, on the
same vLLM Request objects, at 100k queued:

* push+pop: 1,000 times add_request(new) then pop_request(), the queue staying at 100k;
* push+peek+pop: the same with a peek_request() before each pop, as vLLM's scheduler
  loop does (for information; no target);
* removal: one remove_requests() call with 1,000 queued requests (an abort burst).

Rounds alternate between the queues; each figure is the median over the rounds, and
each ratio the median of the per-round ratios vLLM / triage. triage
runs in the vLLM-exact mode (aging off), and with aging on (default thresholds).

Usage: python bench/bench_vllm_queue.py [--queued 100000] [--batch 1000] [--rounds 7]
Exits 0 with a message when vLLM is not importable (scripts/vllm-check.sh makes an
environment where it is).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time

try:
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.sched.request_queue import PriorityRequestQueue
    from vllm.v1.request import Request
except Exception as exc:
    print(
        f"vLLM is not importable ({type(exc).__name__}: {exc}); nothing to compare against. "
        "Run scripts/vllm-check.sh for an environment with vllm==0.33.0."
    )
    sys.exit(0)

import triage
from triage.vllm import TriageRequestQueue



def exact_config(priorities: list) -> "triage.Config":
    """One class per priority (the vLLM-exact mode orders by priority whatever the
    classes; kept so the two triage lines differ only in aging)."""
    return triage.Config.from_toml(
        "max_wait_ms = 60000\n"
        + "".join(f'[[classes]]\nname = "P{p}"\nvllm_priority = [{p}, {p}]\n' for p in priorities)
        + "[slo]\nenabled = false\n"
        + "[[slo.classes]]\n" * len(priorities)
    )

TARGETS = {"push+pop": 3.0, "remove_requests": 100.0}


def make_requests(n: int, rng: random.Random, t0: float, start: int, priorities: list) -> list:
    params = SamplingParams(max_tokens=16)
    return [
        Request(
            request_id=f"req-{start + i}",
            prompt_token_ids=[1, 2, 3],
            sampling_params=params,
            pooling_params=None,
            arrival_time=t0 + (start + i) * 1e-4,
            priority=rng.choice(priorities),
        )
        for i in range(n)
    ]


def timed(fn) -> float:
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def push_pop(queue, batch) -> float:
    def run():
        add, pop = queue.add_request, queue.pop_request
        for r in batch:
            add(r)
            pop()

    return timed(run)


def push_peek_pop(queue, batch) -> float:
    """vLLM's scheduler loop peeks at a request before it pops it."""

    def run():
        add, peek, pop = queue.add_request, queue.peek_request, queue.pop_request
        for r in batch:
            add(r)
            peek()
            pop()

    return timed(run)


def removal(queue, batch) -> float:
    """Times one remove_requests call with the batch's requests still in `queue`, then
    puts them back (untimed) so the depth stays the same."""
    queued = set(map(id, queue))
    present = [r for r in batch if id(r) in queued]
    elapsed = timed(lambda: queue.remove_requests(present))
    for r in present:
        queue.add_request(r)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queued", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--priorities",
        type=int,
        default=8,
        help="distinct priorities 0..N-1 drawn uniformly (1 to 8; one triage class each)",
    )
    args = ap.parse_args()

    rng = random.Random(args.seed)
    # Arrivals end about now, as in a live engine: with aging on nobody is overdue yet.
    t0 = time.time() - args.queued * 1e-4
    priorities = list(range(args.priorities))
    base = make_requests(args.queued, rng, t0, 0, priorities)
    fresh = [
        make_requests(args.batch, rng, t0, args.queued + k * args.batch, priorities)
        for k in range(args.rounds)
    ]
    fresh2 = [
        make_requests(args.batch, rng, t0, args.queued * 2 + k * args.batch, priorities)
        for k in range(args.rounds)
    ]
    removal_batches = [rng.sample(base, args.batch) for _ in range(args.rounds)]
    # Requests popped in the push+pop rounds are not queued any more: each removal takes
    # the requests of its batch still in that queue (the same ones for vLLM and the
    # exact-order triage queue, which pop alike; a few differ for the aging-on queue).

    contenders = [
        ("vLLM PriorityRequestQueue", PriorityRequestQueue),
        (
            "triage, aging off (exact vLLM order)",
            lambda: TriageRequestQueue(exact_config(priorities), aging=False),
        ),
        ("triage, aging on (default config)", lambda: TriageRequestQueue(triage.Config())),
    ]
    # Rounds alternate between the queues, so that load from other processes on the
    # machine falls on all of them alike; each figure is the median over the rounds.
    queues = [make() for _, make in contenders]
    for q in queues:
        for r in base:
            q.add_request(r)
    pp = [[] for _ in queues]
    rm = [[] for _ in queues]
    for k in range(args.rounds):
        for i, q in enumerate(queues):
            pp[i].append(push_pop(q, fresh[k]))
    ppp = [[] for _ in queues]
    for k in range(args.rounds):
        for i, q in enumerate(queues):
            ppp[i].append(push_peek_pop(q, fresh2[k]))
    for k in range(args.rounds):
        for i, q in enumerate(queues):
            rm[i].append(removal(q, removal_batches[k]))
    per = args.batch
    print(
        f"{args.queued:,} queued, priorities 0..{args.priorities - 1}; push+pop = {per:,} x (add_request + pop_request); "
        f"removal = remove_requests of {per:,}; median of {args.rounds} rounds"
    )
    print(
        f"{'queue':40} {'push+pop us/pair':>17} {'push+peek+pop us':>17} "
        f"{'remove_requests ms':>19}"
    )
    for i, (name, _) in enumerate(contenders):
        print(
            f"{name:40} {statistics.median(pp[i]) / per * 1e6:17.2f} "
            f"{statistics.median(ppp[i]) / per * 1e6:17.2f} "
            f"{statistics.median(rm[i]) * 1e3:19.3f}"
        )
    print()
    # Ratios per round (the two queues ran back to back), then their median.
    for i, (name, _) in enumerate(contenders[1:], start=1):
        r_pp = statistics.median(v / t for v, t in zip(pp[0], pp[i]))
        r_rm = statistics.median(v / t for v, t in zip(rm[0], rm[i]))
        r_ppp = statistics.median(v / t for v, t in zip(ppp[0], ppp[i]))
        print(
            f"{name}: push+pop {r_pp:.1f}x faster (target {TARGETS['push+pop']:.0f}x: "
            f"{'met' if r_pp >= TARGETS['push+pop'] else 'NOT met'}), "
            f"remove_requests {r_rm:.0f}x faster (target {TARGETS['remove_requests']:.0f}x: "
            f"{'met' if r_rm >= TARGETS['remove_requests'] else 'NOT met'}); "
            f"push+peek+pop {r_ppp:.1f}x faster"
        )


if __name__ == "__main__":
    main()
