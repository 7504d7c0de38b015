#!/usr/bin/env bash
# Line coverage of the library (src/ only) by the whole test suite, with cargo-llvm-cov.
# Installs cargo-llvm-cov and llvm-tools-preview if they are missing. Prints the per-file
# table and the total; `--html` also writes target/coverage/llvm-cov/html/index.html. A failing
# test does not stop the report (it is still a failure: run the tests for that).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup component list --installed 2>/dev/null | grep -q '^llvm-tools'; then
  rustup component add llvm-tools-preview
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
  cargo install cargo-llvm-cov --locked
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/coverage}"
export PROPTEST_CASES="${PROPTEST_CASES:-256}"
# Everything that is not the library's own source is left out of the figure.
ignore='(^|/)(tests|cli|benches|examples|loom_tests)/|/\.cargo/|/rustc/'
cargo llvm-cov --quiet --ignore-run-fail -p triage --ignore-filename-regex "$ignore" "$@" 2>&1 | tee /tmp/triage-coverage.txt
echo "coverage: library (src/) line coverage: $(awk '/^TOTAL/ {print $10}' /tmp/triage-coverage.txt)"
