#!/usr/bin/env bash
# Time-bounded protocol fuzzing (the cargo-fuzz stand-in; no nightly needed): reruns
# core/tests/protocol_fuzz.rs with a large case count and a fresh seed until SECONDS are up.
# Usage: core/fuzz.sh [SECONDS]   (default 60). Exits non-zero on the first failing round;
# the failing seed is printed, and rerunning with PROPTEST_RNG_SEED=<seed> reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
cases=${FUZZ_ROUND_CASES:-20000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

# Optimized test build: several times the cases per second of a debug build. The binary is
# run directly, so the deadline's timeout reaches the test process itself, not only cargo.
bin=$(cargo test --release -p token-server-core --test protocol_fuzz --no-run 2>&1 |
  sed -n 's/.*Executable .*(\(.*protocol_fuzz-[0-9a-f]*\)).*/\1/p' | tail -1)
bin=$(realpath "$bin")
[[ -x $bin ]] || { echo "FAIL: cannot find the protocol_fuzz test binary" >&2; exit 1; }

deadline=$((SECONDS + seconds))
rounds=0
# From core/, as cargo test runs it: failing cases then land in
# core/tests/protocol_fuzz.proptest-regressions and are replayed first by every later run.
cd core
while ((SECONDS < deadline)); do
  seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
  rounds=$((rounds + 1))
  echo "== fuzz round $rounds: PROPTEST_RNG_SEED=$seed, up to $cases cases, $((deadline - SECONDS))s left"
  # The round is cut off at the deadline (timeout exit 124 is not a failure).
  status=0
  PROPTEST_RNG_SEED=$seed PROTOCOL_FUZZ_CASES=$cases \
    timeout $((deadline - SECONDS + 1)) "$bin" --nocapture --quiet || status=$?
  if ((status == 124)); then
    echo "== round $rounds cut off at the deadline"
    break
  elif ((status != 0)); then
    echo "FAIL: protocol fuzz round $rounds failed; reproduce with:" >&2
    echo "  PROPTEST_RNG_SEED=$seed PROTOCOL_FUZZ_CASES=$cases cargo test --release -p token-server-core --test protocol_fuzz" >&2
    exit 1
  fi
done
echo "== protocol fuzz: $rounds rounds in ${seconds}s, no failure"
