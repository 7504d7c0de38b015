#!/usr/bin/env bash
# vLLM's own scheduler unit tests, by hand (not in CI), offline, no GPU: runs
# tests/v1/core/test_scheduler.py and tests/v1/core/test_priority_preemption_bug.py of
# vLLM 0.33.0's source distribution against the vLLM installed in a virtualenv, four
# times: stock; with vLLM's waiting queues swapped for triage.vllm.TriageRequestQueue in
# the vLLM-exact mode (python/vllm_tests/triage_swap.py, a pytest plugin); and with the
# schedulers the tests build replaced by triage's drop-ins, TriageSyncScheduler and
# TriageAsyncScheduler (TRIAGE_SWAP_SCHEDULERS=1, TRIAGE_AGING=0); and with the
# whole-policy classes TriagePolicySyncScheduler and TriagePolicyAsyncScheduler
# (TRIAGE_SWAP_SCHEDULERS=policy); and prints what failed in each (RUNS picks runs).
#
#   scripts/vllm-tests.sh [WORK]        # default WORK=/var/tmp/triage-vllm-tests
#   VENV=/path/to/venv BUILD=0 TIMEOUT=1800 scripts/vllm-tests.sh /tmp/w
#   RUNS='stock policy' scripts/vllm-tests.sh
#
# VENV (default /var/tmp/vllm-venv) must already hold vllm==0.33.0, torch, pytest and
# maturin, e.g. from `VENV=/var/tmp/vllm-venv scripts/vllm-check.sh`; nothing of vLLM's is
# installed here. BUILD=0 skips building the bindings into VENV (`maturin develop
# --release`, needed for the swap run to test this tree). Re-runnable: the sdist is
# downloaded (from pip's index, checked against its sha256) and unpacked into WORK only
# if missing; the model stand-ins are rewritten each time.
#
# What makes the tests run here (python/vllm_tests/):
# - the unpacked tree's vllm/ is renamed vllm_src_pkg/, so the tests import the
#   installed vllm (vllm_offline.py refuses to run otherwise);
# - vLLM's tests/conftest.py needs its whole test stack (tblib, HF runners...): it is
#   skipped (--noconftest) and vllm_offline.py gives the few fixtures these tests use;
# - no Hugging Face access: models/ holds config.json (and for LLaVA, tokenizer and
#   processor stand-ins) of the models the tests name, laid out by make_hf_cache.py as a
#   hub cache in WORK, used with HF_HUB_OFFLINE=1 (the "Could not retrieve safetensors
#   metadata" errors in the log are expected: there are no weights);
# - the CUDA wheel finds no platform without a GPU: VLLM_TARGET_DEVICE=cpu.
# Known stock failure here: test_async_scheduling_pp_allows_rescheduling_with_output_
# placeholders (vLLM refuses async scheduling with pipeline parallelism on the V1 model
# runner, which it picks when Triton has no GPU backend; VLLM_USE_V2_MODEL_RUNNER=1 in
# the environment makes it pass).
#
# Output in WORK: {stock,triage}.log (pytest -rA), {stock,triage}.xml (junit) and
# {stock,triage}-results.txt (one line per test: outcome, id, and a failure's first line).
# Exit status: 0 if every run completed and neither swap fails a test that stock passes,
# 1 if one does, 2 if a run did not complete (pytest error, timeout).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
VENV=${VENV:-/var/tmp/vllm-venv}
WORK=$(mkdir -p "${1:-/var/tmp/triage-vllm-tests}" && cd "${1:-/var/tmp/triage-vllm-tests}" && pwd)
TIMEOUT=${TIMEOUT:-1800}
py="$VENV/bin/python"
helpers="$repo/python/vllm_tests"
version=0.33.0
sdist_sha256=f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112
tests=(tests/v1/core/test_scheduler.py tests/v1/core/test_priority_preemption_bug.py)

echo "== vLLM in $VENV"
"$py" -c "import importlib.metadata as m; v = m.version('vllm'); print('vllm', v); assert v == '$version', 'need vllm==$version'"

if [ "${BUILD:-1}" != 0 ]; then
  echo "== building the bindings into $VENV"
  (cd python && VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" maturin develop --release -q)
fi

src="$WORK/vllm-$version"
if [ ! -d "$src/tests" ]; then
  echo "== vLLM $version sdist"
  tarball="$WORK/vllm-$version.tar.gz"
  if [ ! -f "$tarball" ]; then
    # The sdist's address from the simple index pip uses ($PIP_INDEX_URL, pip's
    # configuration, or pip's default), not `pip download`: that would build it.
    url=$("$py" - "$version" <<'EOF'
import os, re, subprocess, sys, urllib.parse, urllib.request
from pip._internal.models.index import PyPI

version = sys.argv[1]
index = os.environ.get("PIP_INDEX_URL") or subprocess.run(
    [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
    capture_output=True, text=True,
).stdout.strip() or PyPI.simple_url
page = index.rstrip("/") + "/vllm/"
html = urllib.request.urlopen(page, timeout=60).read().decode()
for href in re.findall(r'href="([^"]+)"', html):
    if urllib.parse.urlsplit(href).path.endswith(f"/vllm-{version}.tar.gz"):
        print(urllib.parse.urljoin(page, href).split("#")[0])
        break
else:
    sys.exit(f"no vllm-{version}.tar.gz at {page}")
EOF
)
    curl -fsSL --retry 3 -o "$tarball.part" "$url"
    echo "$sdist_sha256  $tarball.part" | sha256sum -c --quiet
    mv "$tarball.part" "$tarball"
  fi
  rm -rf "$src"
  tar -xzf "$tarball" -C "$WORK"
fi
# The tests must import the installed vllm, not this tree's (pytest puts the tree's
# root, the first folder up without __init__.py, on sys.path).
if [ -d "$src/vllm" ]; then
  rm -rf "$src/vllm_src_pkg"
  mv "$src/vllm" "$src/vllm_src_pkg"
fi

echo "== model stand-ins (config and tokenizer files, no weights) in $WORK/hf-cache"
"$py" "$helpers/make_hf_cache.py" "$WORK/hf-cache/hub"

export VLLM_TARGET_DEVICE=cpu HF_HOME="$WORK/hf-cache" HF_HUB_CACHE="$WORK/hf-cache/hub"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export PYTHONPATH="$helpers${PYTHONPATH:+:$PYTHONPATH}"

# run NAME [pytest args]: runs the two files, writes WORK/NAME.{log,xml} and
# WORK/NAME-results.txt, prints the failures and the counts; returns pytest's status.
run() {
  local name=$1 rc=0
  shift
  rm -f "$WORK/$name.xml" "$WORK/$name-results.txt"
  echo "== $name: pytest ${tests[*]} $* (log: $WORK/$name.log)"
  (cd "$src" && timeout "$TIMEOUT" "$py" -m pytest -q -p no:cacheprovider --noconftest \
    -p vllm_offline "$@" -rA --junitxml="$WORK/$name.xml" "${tests[@]}") \
    >"$WORK/$name.log" 2>&1 || rc=$?
  if [ -s "$WORK/$name.xml" ] && [ "$rc" -le 1 ]; then
    "$py" "$helpers/junit_summary.py" "$WORK/$name.xml" "$WORK/$name-results.txt"
  else
    echo "$name: pytest exited $rc (124: timeout after ${TIMEOUT}s); tail of the log:"
    tail -20 "$WORK/$name.log"
  fi
  return "$rc"
}

# RUNS: which runs, of stock, triage (queues), schedulers (queue-only scheduler classes)
# and policy (the whole-policy scheduler classes); default all four. Stock is the
# reference: a run other than stock is compared only if stock ran (now or before).
RUNS=${RUNS:-stock triage schedulers policy}
want() { [[ " $RUNS " == *" $1 "* ]]; }
declare -A rc=()
if want stock; then rc[stock]=0; run stock || rc[stock]=$?; fi
if want triage; then
  rc[triage]=0; run triage -p triage_swap || rc[triage]=$?
  grep -h '^triage_swap:' "$WORK/triage.log" || true
fi
if want schedulers; then
  rc[schedulers]=0
  TRIAGE_SWAP_SCHEDULERS=1 TRIAGE_AGING=0 run schedulers -p triage_swap || rc[schedulers]=$?
  grep -h '^triage_swap:' "$WORK/schedulers.log" || true
fi
if want policy; then
  rc[policy]=0
  TRIAGE_SWAP_SCHEDULERS=policy TRIAGE_AGING=0 run policy -p triage_swap || rc[policy]=$?
  grep -h '^triage_swap:' "$WORK/policy.log" || true
fi
for name in "${!rc[@]}"; do [ "${rc[$name]}" -le 1 ] || exit 2; done
[ -s "$WORK/stock-results.txt" ] || { echo "no stock results in $WORK to compare with"; exit 2; }
failed() { awk '$1 == "FAILED" || $1 == "ERROR" {print $2}' "$1" | sort; }
echo "== summary"
for name in stock triage schedulers policy; do
  [ -s "$WORK/$name-results.txt" ] && want "$name" && printf '%-11s %s\n' "$name:" "$(tail -1 "$WORK/$name-results.txt")"
done
# The whole-policy run may fail the tests listed in python/vllm_tests/policy-expected.txt
# (tests asserting vLLM's own policy where triage's differs; docs/python.md says why).
expected="$helpers/policy-expected.txt"
status=0
for name in triage schedulers policy; do
  want "$name" || continue
  only=$(comm -13 <(failed "$WORK/stock-results.txt") <(failed "$WORK/$name-results.txt"))
  if [ "$name" = policy ] && [ -f "$expected" ]; then
    allowed=$(grep -v '^#' "$expected" | awk 'NF {print $1}' | sort)
    differ=$(comm -12 <(echo "$only") <(echo "$allowed") | grep . || true)
    only=$(comm -23 <(echo "$only") <(echo "$allowed") | grep . || true)
    [ -n "$differ" ] && echo "policy: $(echo "$differ" | wc -l) test(s) differ as documented (policy-expected.txt)"
  fi
  if [ -n "$only" ]; then
    echo "failing in the $name run only:"
    echo "$only"
    status=1
  fi
done
[ "$status" = 0 ] && echo "no test fails with triage's queues or schedulers that passes with vLLM's, but those documented"
exit "$status"
