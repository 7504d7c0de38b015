"""Load generator of scripts/serve-load.sh (not run in CI).

Many concurrent streamed clients at mixed priorities, Poisson arrivals at --rate for
--duration seconds, then a wait for every request in flight. Each request gets exactly one
outcome: `ok` (tokens and [DONE]), an HTTP status (429, 503, ...), `stream_error` (an error
line inside the stream), or `lost` (the connection failed or the stream ended without
[DONE]). Prints per-class figures (TTFT as this client sees it: it includes the HTTP
round trip and this process's own delays) and writes them as JSON; exits 1 if a request
was lost. serve-load.sh checks HIGH's TTFT p99 as the scheduler measured it.

Needs httpx (the openai package's HTTP client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time

import httpx

CLASSES = {"HIGH": 0, "MEDIUM": 5, "LOW": 50}
HIGH_TTFT_TARGET_S = 0.5


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


async def one(client, url, cls, rng, results):
    body = {
        "prompt": [rng.randrange(1, 32000) for _ in range(rng.randint(100, 1500))],
        "max_tokens": rng.randint(32, 256),
        "stream": True,
        "priority": CLASSES[cls],
    }
    t0 = time.monotonic()
    rec = {"class": cls, "outcome": None, "ttft": None, "tokens": 0, "sent_at": t0}
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                rec["outcome"] = str(r.status_code)
            else:
                done = False
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        rec["outcome"] = "stream_error"
                        continue
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        if rec["ttft"] is None:
                            rec["ttft"] = time.monotonic() - t0
                        rec["tokens"] += 1
                if rec["outcome"] is None:
                    rec["outcome"] = "ok" if done else "lost"
    except Exception as e:  # noqa: BLE001 - any failure is a lost request, counted
        rec["outcome"] = "lost"
        rec["error"] = repr(e)
    results.append(rec)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second offered")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--high", type=float, default=0.15, help="HIGH's share of the offered load")
    ap.add_argument("--medium", type=float, default=0.35)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    timeout = httpx.Timeout(connect=10, read=300, write=10, pool=None)
    results: list[dict] = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        url = a.url.rstrip("/") + "/v1/completions"
        tasks = []
        start = time.monotonic()
        t = 0.0
        while True:
            t += rng.expovariate(a.rate)
            if t > a.duration:
                break
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            u = rng.random()
            cls = "HIGH" if u < a.high else ("MEDIUM" if u < a.high + a.medium else "LOW")
            tasks.append(asyncio.create_task(one(client, url, cls, random.Random(rng.random()), results)))
        sent_s = time.monotonic() - start
        await asyncio.gather(*tasks)
        total_s = time.monotonic() - start
    summary = {"sent": len(tasks), "answered": len(results), "send_s": sent_s, "total_s": total_s,
               "offered_per_s": len(tasks) / sent_s, "classes": {}}
    ok_total = 0
    for cls in CLASSES:
        rs = [r for r in results if r["class"] == cls]
        outcomes: dict[str, int] = {}
        for r in rs:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        ttfts = [r["ttft"] for r in rs if r["outcome"] == "ok" and r["ttft"] is not None]
        ok_total += outcomes.get("ok", 0)
        summary["classes"][cls] = {
            "sent": len(rs),
            "outcomes": outcomes,
            "ttft_p50_ms": None if not ttfts else 1e3 * pct(ttfts, 0.5),
            "ttft_p99_ms": None if not ttfts else 1e3 * pct(ttfts, 0.99),
            "ttft_within_500ms": None if not ttfts else sum(t <= 0.5 for t in ttfts) / len(ttfts),
            "tokens": sum(r["tokens"] for r in rs),
        }
    summary["completed_per_s"] = ok_total / total_s
    # Every request, by send time (s since the first), for a look at when the misses were.
    summary["requests"] = sorted(
        ({**r, "sent_at": r["sent_at"] - start} for r in results), key=lambda r: r["sent_at"])
    summary["lost"] = sum(1 for r in results if r["outcome"] == "lost")
    print(f"sent {summary['sent']} in {sent_s:.1f} s ({summary['offered_per_s']:.1f}/s offered); "
          f"all answered after {total_s:.1f} s; completed {summary['completed_per_s']:.1f}/s; lost {summary['lost']}")
    for cls, c in summary["classes"].items():
        p50 = "-" if c["ttft_p50_ms"] is None else f"{c['ttft_p50_ms']:.0f}"
        p99 = "-" if c["ttft_p99_ms"] is None else f"{c['ttft_p99_ms']:.0f}"
        within = "-" if c["ttft_within_500ms"] is None else f"{100 * c['ttft_within_500ms']:.1f} %"
        print(f"  {cls:6} sent {c['sent']:5}  TTFT p50 {p50:>6} ms  p99 {p99:>6} ms  "
              f"within 500 ms {within:>7}  outcomes {c['outcomes']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)
    failed = False
    if summary["lost"] or summary["answered"] != summary["sent"]:
        print("FAIL: requests lost", file=sys.stderr)
        failed = True
    high = summary["classes"]["HIGH"]["ttft_p99_ms"]
    if high is not None and high > 1e3 * HIGH_TTFT_TARGET_S:
        print(f"note: HIGH TTFT p99 seen by this client {high:.0f} ms, above {1e3 * HIGH_TTFT_TARGET_S:.0f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
