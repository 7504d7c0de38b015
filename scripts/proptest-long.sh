#!/usr/bin/env bash
# The long run of the model-based property tests (tests/model.rs): 100,000 cases by default
# (PROPTEST_CASES overrides), in release mode, printing the case count and the time taken.
# A failure is shrunk and its seed saved in tests/model.proptest-regressions, which every
# later run replays first; turn it into an explicit test in tests/regressions.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${PROPTEST_CASES:-100000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -p triage --tests --quiet
start=$(date +%s%N)
cargo test --release -p triage --test model -- --nocapture scheduler_matches_the_contract_model
end=$(date +%s%N)
echo "proptest-long: $PROPTEST_CASES cases in $(( (end - start) / 1000000 )) ms"
