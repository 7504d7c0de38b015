#!/usr/bin/env bash
# The vLLM checks, by hand (not in CI): makes a throwaway virtualenv, installs vllm==0.33.0
# (about 9 GB with torch and the CUDA libraries; minutes), builds the bindings into it,
# and runs the whole pytest suite there -- the conformance tests against vLLM's own
# PriorityRequestQueue / FCFSRequestQueue and the whole-policy scheduler tests
# (tests/test_vllm_policy.py) must run, not skip -- then the benchmark against vLLM's
# PriorityRequestQueue, then vLLM's own scheduler tests stock, with triage's queues, with
# triage's queue-only scheduler classes and with the whole-policy ones
# (scripts/vllm-tests.sh, its work files in $VENV/vllm-tests). No GPU is needed.
#
#   scripts/vllm-check.sh                  # fresh virtualenv, removed afterwards
#   VENV=/var/tmp/vllm-venv scripts/vllm-check.sh   # keep and reuse one
set -euo pipefail
cd "$(dirname "$0")/.."
keep=${VENV:+1}
VENV=${VENV:-$(mktemp -d /tmp/triage-vllm-check.XXXXXX)}
[ -n "$keep" ] || trap 'rm -rf "$VENV"' EXIT
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "vllm==0.33.0" "maturin==1.16.0" "pytest==9.2.0"
(cd python && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --release)
echo "== pytest (conformance tests required)"
(cd python && TRIAGE_REQUIRE_VLLM=1 "$VENV/bin/python" -m pytest -q tests)
echo "== benchmark: TriageRequestQueue vs vLLM's PriorityRequestQueue"
(cd python && "$VENV/bin/python" bench/bench_vllm_queue.py)
echo "== vLLM's scheduler tests: stock, with triage's queues, schedulers and whole policy"
BUILD=0 VENV="$VENV" scripts/vllm-tests.sh "$VENV/vllm-tests"
