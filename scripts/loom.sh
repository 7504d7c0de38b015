#!/usr/bin/env bash
# Runs every loom model (loom_tests/) under `--cfg loom`, in its own target directory so the
# normal build is not invalidated. LOOM_MAX_PREEMPTIONS bounds the search: default 2 for a
# quick run by hand; CI (.ci/run) runs 3, the bound the mutation check uses; 4 explores
# deeper and takes longer.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
echo "loom: LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS"
for model in loom_ingress loom_lockfree; do
  start=$(date +%s%N)
  cargo test --release -p triage --test "$model" -- --test-threads=1
  end=$(date +%s%N)
  echo "loom: $model took $(( (end - start) / 1000000 )) ms (build included)"
done
