#!/usr/bin/env bash
# Runs a cargo-fuzz target of fuzz/ (a crate outside the workspace, built with nightly).
# Not part of CI. See docs/testing.md.
#
#   scripts/fuzz.sh [TARGET] [libFuzzer options...]
#
# TARGET defaults to api_sequences (the only one). Without options it runs for
# FUZZ_SECONDS (default 600) with a 10 s per-input timeout (an input that hangs, e.g. a
# hand-off that never returns, is reported). FUZZ_SANITIZER is `none` (the default:
# debug assertions and overflow checks only, about 4x the executions of ASan here) or
# `address`. The corpus grows in fuzz/corpus/TARGET and failures land in
# fuzz/artifacts/TARGET (both git-ignored); replay one with
#   (cd fuzz && cargo +nightly fuzz run -s none TARGET artifacts/TARGET/crash-...)
# and print it readably with `cargo +nightly fuzz fmt TARGET artifacts/TARGET/crash-...`.
#
# Installs what is missing: the nightly toolchain (rustup) and cargo-fuzz (cargo install).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target="${1:-api_sequences}"
shift || true
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
opts=("$@")
if [ ${#opts[@]} -eq 0 ]; then
  opts=(-max_total_time="${FUZZ_SECONDS:-600}" -timeout=10)
fi
mkdir -p "corpus/$target"
echo "fuzz: $target, sanitizer ${FUZZ_SANITIZER:-none}, options ${opts[*]}"
start=$(date +%s)
cargo +nightly fuzz run -s "${FUZZ_SANITIZER:-none}" "$target" "corpus/$target" -- "${opts[@]}"
echo "fuzz: $target ran $(( $(date +%s) - start )) s (build included), no failure"
