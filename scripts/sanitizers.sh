#!/usr/bin/env bash
# Undefined behaviour and data races, on a nightly toolchain:
#   * Miri: the library's unit tests of the unsafe and atomic code (request table, ingress
#     queue, capacity counter)
#     and a few small integration tests through the public API (ingress, cancel racing a
#     step, hand-off).
#   * ThreadSanitizer: the concurrency soak (tests/soak.rs), std rebuilt with TSan.
# Installs nothing unless SANITIZERS_INSTALL=1 (then: rustup toolchain install nightly
# --profile minimal --component miri,rust-src). Without a nightly with Miri it says so and
# exits 0. SANITIZERS picks the parts (default "miri miri-api miri-soak tsan"): `miri` (the
# unit tests of the request table, ingress queue and capacity counter; what CI runs),
# `miri-api` (small integration tests through the public API, ~17 min), `miri-soak` (the soak,
# 300 API ops), `tsan`. MIRI_TARGET_DIR / TSAN_TARGET_DIR move the build directories (e.g. out of
# a fresh CI clone, so the dependencies are not rebuilt on every run).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${SANITIZERS:-miri miri-api miri-soak tsan}"
if [ "${SANITIZERS_INSTALL:-0}" = 1 ]; then
  rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
  echo "sanitizers: no nightly toolchain with Miri here; skipped"
  echo "  (install: rustup toolchain install nightly --profile minimal --component miri,rust-src)"
  exit 0
fi
target="$(rustc -vV | sed -n 's/^host: //p')"
if [[ " $what " == *" miri "* ]]; then
  echo "== miri: $(cargo +nightly miri --version)"
  export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
  start=$(date +%s)
  export CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-target/miri}"
  # The unsafe and atomic code only: the request table, the ingress queue, the capacity
  # counter (the SLO and config unit tests are plain safe code and take minutes under Miri).
  cargo +nightly miri test -p triage --lib -- ingress::
  echo "miri: done in $(( $(date +%s) - start )) s"
fi
if [[ " $what " == *" miri-api "* ]]; then
  # Small public-API tests: submit/drain through the ingress queues, cancel/reprioritize notices,
  # cancel racing admission, close racing submits (a thread), hand-off. About 17 minutes:
  # every scheduler builds its SLO histograms, which Miri interprets slowly.
  echo "== miri-api: $(cargo +nightly miri --version)"
  export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
  start=$(date +%s)
  export CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-target/miri}"
  cargo +nightly miri test -p triage --test control
  cargo +nightly miri test -p triage --test shutdown -- \
    close_refuses_new_work_and_drain_hands_off_everything_waiting \
    api_calls_fail_instead_of_hanging_when_the_engine_thread_panics \
    dropping_the_scheduler_closes_ingress
  echo "miri: done in $(( $(date +%s) - start )) s"
fi
if [[ " $what " == *" miri-soak "* ]]; then
  echo "== miri: soak (300 API operations, 2 API threads)"
  start=$(date +%s)
  CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-target/miri}" TRIAGE_SOAK_OPS=300 TRIAGE_SOAK_MS=60000 \
    TRIAGE_SOAK_THREADS=2 cargo +nightly miri test -p triage --test soak -- --nocapture
  echo "miri-soak: done in $(( $(date +%s) - start )) s"
fi
if [[ " $what " == *" tsan "* ]]; then
  echo "== tsan: soak under ThreadSanitizer"
  start=$(date +%s)
  RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" TSAN_OPTIONS="halt_on_error=1" \
    CARGO_TARGET_DIR="${TSAN_TARGET_DIR:-target/tsan}" TRIAGE_SOAK_MS="${TRIAGE_SOAK_MS:-5000}" \
    cargo +nightly test -Zbuild-std --target "$target" -p triage --test soak -- --nocapture
  RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" TSAN_OPTIONS="halt_on_error=1" \
    CARGO_TARGET_DIR="${TSAN_TARGET_DIR:-target/tsan}" \
    cargo +nightly test -Zbuild-std --target "$target" -p triage --test concurrency --test shutdown
  echo "tsan: done in $(( $(date +%s) - start )) s"
fi
