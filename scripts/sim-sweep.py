#!/usr/bin/env python3
"""The simulator sweep behind deadline order's rules and defaults (docs/design.md).

Runs `triage simulate --json` over traces, cost profiles, loads, class mixes and seeds
(31 points, five of them with HIGH alone overloading the engine),
comparing `triage` with `fcfs` and `vllm-priority` at every point, and checks at each:

  total    triage's share within SLO >= the best peer's
  high     triage's HIGH share >= vllm-priority's HIGH - 0.5 point
  goodput  triage's output tokens/s of requests within SLO >= the best peer's

It prints one line per point, then the sum of triage's totals over the points and the
worst HIGH TTFT p99. Usage:

  cargo build --release -p triage-cli
  python3 scripts/sim-sweep.py [--config FILE] [--bin target/release/triage] [--jobs 2]

Exit status 1 if any check fails. About 30 s on 2 cores.
"""

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

MIX_DEFAULT = "0.3,0.7,0.0"
MIX_A = "0.2,0.4,0.4"
MIX_B = "0.15,0.35,0.5"
MIX_HIGH = "0.8,0.2,0.0"
MIX_EVEN = "0.5,0.5,0.0"

# (trace, model, class mix, seed, loads)
POINTS = [
    ("azure-mixed", "llama2-7b-a100", MIX_DEFAULT, 42, "0.15,0.3,0.5,0.7,1.0"),
    ("azure-conv", "llama2-7b-a100", MIX_A, 42, "0.5,0.8,1.0,1.2"),
    ("azure-conv", "llama2-7b-a100", MIX_B, 42, "0.5,0.8,1.0,1.2"),
    ("azure-mixed", "llama3-8b-a100", MIX_DEFAULT, 42, "0.3,0.7,1.5"),
    ("azure-mixed", "llama2-7b-h100", MIX_DEFAULT, 42, "0.5,1.5,3.0"),
    ("azure-conv", "llama2-7b-a100", MIX_A, 7, "0.8,1.2"),
    ("azure-conv", "llama2-7b-a100", MIX_A, 1234, "0.8,1.2"),
    ("azure-mixed", "llama2-7b-a100", MIX_B, 42, "0.5,1.0,1.5"),
    # HIGH-heavy mixes: HIGH alone overloads the engine.
    ("azure-conv", "llama2-7b-a100", MIX_HIGH, 42, "0.8,1.2,2.0"),
    ("azure-conv", "llama2-7b-a100", MIX_EVEN, 42, "1.2,2.0"),
]


def run(bin_path, config, trace, model, mix, seed, loads):
    cmd = [
        bin_path, "simulate", "--json", "--no-output", "--trace", trace, "--model", model,
        "--class-mix", mix, "--seed", str(seed), "--loads", loads,
        "--policies", "fcfs,vllm-priority,triage",
    ]
    if config:
        cmd += ["--config", config]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["runs"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/triage")
    ap.add_argument("--config")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda p: (p, run(args.bin, args.config, *p)), POINTS))
    failed, total_sum, n, worst_p99 = 0, 0.0, 0, 0.0
    print(f"{'trace':12} {'model':15} {'mix':14} {'seed':>4} {'load':>5} "
          f"{'triage':>7} {'best':>7} {'HIGH':>6} {'vllmH':>6} {'H p99':>8} {'gput':>6} {'best':>6}  checks")
    for (trace, model, mix, seed, _), runs in results:
        by = {}
        for r in runs:
            by.setdefault(r["load"], {})[r["policy"]] = r
        for load, p in sorted(by.items()):
            t, v, f = p["triage"], p["vllm-priority"], p["fcfs"]
            best = max(v["slo_attainment"], f["slo_attainment"])
            best_gp = max(v["goodput_tok_s"], f["goodput_tok_s"])
            high = next((c for c in t["classes"] if c["name"] == "HIGH"), None)
            vhigh = next((c for c in v["classes"] if c["name"] == "HIGH"), None)
            bad = []
            if t["slo_attainment"] < best:
                bad.append("total")
            if high and vhigh and high["slo_attainment"] < vhigh["slo_attainment"] - 0.005:
                bad.append("high")
            if t["goodput_tok_s"] < best_gp:
                bad.append("goodput")
            failed += bool(bad)
            total_sum += 100 * t["slo_attainment"]
            n += 1
            hp99 = high["ttft_p99_s"] if high else 0.0
            worst_p99 = max(worst_p99, hp99)
            print(f"{trace:12} {model:15} {mix:14} {seed:>4} {load:>5} "
                  f"{100 * t['slo_attainment']:6.1f}% {100 * best:6.1f}% "
                  f"{100 * high['slo_attainment'] if high else 0:5.1f}% "
                  f"{100 * vhigh['slo_attainment'] if vhigh else 0:5.1f}% {hp99:7.2f}s "
                  f"{t['goodput_tok_s']:6.0f} {best_gp:6.0f}  {' '.join(bad) or 'ok'}")
    print(f"points {n}, sum of triage's totals {total_sum:.1f} (mean {total_sum / n:.1f} %), "
          f"worst HIGH TTFT p99 {worst_p99:.2f} s, failing points {failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
