#!/usr/bin/env bash
# bench/instructions.sh [SECONDS]: user-space instructions per rotation of the trivial warp
# handler and of token-server (with and without metrics), counted by callgrind.
#
# Throughput on a small shared machine swings by 2x from run to run; an instruction count
# does not, so this is the figure to compare when working on target 1 (rotation against the
# trivial handler). It is a diagnostic beside bench/run.sh, not a target: it leaves out the
# kernel's share (the same for both servers: one recvfrom and one writev per rotation) and
# cache misses, and under valgrind SHA-256 runs in software rather than on the CPU's SHA
# instructions (about 6,500 instructions per rotation more than natively; printed apart).
# Installs valgrind and wrk if missing; builds in release.
set -euo pipefail
SECONDS_MEASURED=${1:-5}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$CARGO_TARGET_DIR/release"
for tool in valgrind:valgrind wrk:wrk; do
  command -v "${tool%%:*}" >/dev/null 2>&1 && continue
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${tool#*:}" >/dev/null
done
cargo build --release --quiet -p token-server-bench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# count NAME ARGS...: instructions per PUT over SECONDS_MEASURED s of wrk rotations, after
# a warm-up; callgrind counts only between its zero and dump commands.
count() {
  local name=$1; shift
  valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$! port=""
  for _ in $(seq 1 600); do
    port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/$name.err" | head -1 | sed 's/.*://' || true)
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "$name did not start" >&2; cat "$WORK/$name.err" >&2; kill "$pid"; exit 1; }
  wrk -t1 -c16 -d2s -s bench/lua/rotate.lua "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  local result puts file total sha
  result=$(wrk -t1 -c16 -d"${SECONDS_MEASURED}"s -s bench/lua/rotate.lua "http://127.0.0.1:$port/" | grep '^RESULT')
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  puts=$(grep -o 'puts=[0-9]*' <<<"$result" | cut -d= -f2)
  file=$(ls -S "$WORK/$name".*.1 | head -1)
  total=$(callgrind_annotate "$file" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  sha=$(callgrind_annotate --inclusive=yes "$file" | awk '/sha256::compress256/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')
  printf '%-34s %8d instructions/rotation  (SHA-256 in software: %d; %d rotations)\n' \
    "$name" $((total / puts)) $(( ${sha:-0} / puts )) "$puts"
  echo "$((total / puts)) $(( ${sha:-0} / puts ))" >"$WORK/$name.count"
}

count "trivial warp handler" "$BIN/trivial-server"
count "token-server" "$BIN/bench-server"
count "token-server counting metrics" "$BIN/bench-server" --metrics
read -r trivial _ <"$WORK/trivial warp handler.count"
read -r served sha <"$WORK/token-server.count"
awk -v t="$trivial" -v s="$served" -v h="$sha" 'BEGIN {
  printf "token-server / trivial: %.2fx the instructions (%.2fx with SHA-256 counted at ~500 as natively)\n", s / t, (s - h + 500) / t
}'
