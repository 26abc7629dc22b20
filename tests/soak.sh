#!/usr/bin/env bash
# Soak test: the release server under a steady mixed create/rotate/delete load on loopback,
# checking for 5xx, failed rotations of live tokens and RSS growth (tests/soak.py).
# Usage: tests/soak.sh [SECONDS]   (default 300). SOAK_RATE (req/s, default 800) and
# SOAK_THREADS (default 4) tune the load. Exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p token-server --bin token-server
bin=$CARGO_TARGET_DIR/release/token-server

log=$(mktemp)
RUST_LOG=${RUST_LOG:-token_server=info} "$bin" -p 0 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT

port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
  [[ -n $port ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "FAIL: server exited" >&2; exit 1; }
  sleep 0.1
done
[[ -n $port ]] || { cat "$log" >&2; echo "FAIL: server did not report its port" >&2; exit 1; }
echo "== soak: server pid $pid on 127.0.0.1:$port for ${seconds}s"

status=0
python3 tests/soak.py --port "$port" --pid "$pid" --seconds "$seconds" \
  --rate "${SOAK_RATE:-800}" --threads "${SOAK_THREADS:-4}" || status=$?
if ! kill -0 "$pid" 2>/dev/null; then
  echo "FAIL: the server died during the soak" >&2
  status=1
fi
if grep -qiE 'panick|ERROR' "$log"; then
  grep -iE 'panick|ERROR' "$log" | head >&2
  echo "FAIL: the server logged errors" >&2
  status=1
fi
((status == 0)) && echo "== soak passed" || echo "== soak FAILED" >&2
exit "$status"
