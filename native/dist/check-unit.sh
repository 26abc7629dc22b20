#!/usr/bin/env bash
# Checks the systemd unit: `systemd-analyze verify` finds no error, and
# `systemd-analyze security --offline=yes` rates its exposure at most 2.0.
# Installs Debian's systemd package for the tool when it is missing (as root in CI).
#
#   bash native/dist/check-unit.sh [TOKEN_SERVER_BINARY]
#
# verify insists that ExecStart's program exists, so the unit is checked with its
# /usr/local/bin path replaced by a built binary (default target/debug/token-server,
# built if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

MAX_EXPOSURE=2.0
UNIT=${TOKEN_SERVER_UNIT:-native/dist/token-server.service}

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== installing Debian's systemd package for systemd-analyze"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

BIN=${1:-target/debug/token-server}
if [ ! -x "$BIN" ]; then
  cargo build --quiet -p token-server --bin token-server
fi
BIN=$(realpath "$BIN")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sed "s#/usr/local/bin/token-server#$BIN#" "$UNIT" >"$WORK/token-server.service"
grep -Eq "^ExecStart=$BIN( |\$)" "$WORK/token-server.service" || {
  echo "FAIL: ExecStart does not start /usr/local/bin/token-server"; exit 1; }

# The comments above and README tell operators to set TOKEN_SERVER_BIND to an address of
# the machine: binding one fails (EADDRNOTAVAIL) until the network has configured it, and
# five quick restarts leave the unit failed for good. So the unit waits for the network
# to be online, not just for network.target.
grep -q '^Wants=network-online.target$' "$UNIT" && grep -q '^After=network-online.target$' "$UNIT" || {
  echo "FAIL: the unit does not wait for network-online.target (a --bind address may not exist yet)"; exit 1; }

echo "== systemd-analyze verify"
# --man=no: the unit names no man page, and CI images have no man database.
if ! systemd-analyze verify --man=no "$WORK/token-server.service" 2>"$WORK/verify.err"; then
  cat "$WORK/verify.err"; echo "FAIL: systemd-analyze verify"; exit 1
fi
# verify exits 0 on some problems it only warns about; a unit with any remark fails here.
if [ -s "$WORK/verify.err" ]; then
  cat "$WORK/verify.err"; echo "FAIL: systemd-analyze verify has remarks"; exit 1
fi
echo "ok"

# exposure UNIT_FILE: the overall exposure systemd-analyze gives it, empty if none.
exposure() {
  systemd-analyze security --offline=yes --no-pager "$1" 2>&1 \
    | grep -o 'Overall exposure level for [^:]*: [0-9.]*' | awk '{ print $NF }' || true
}
above_max() { awk -v e="$1" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e > max) }'; }

echo "== systemd-analyze security --offline=yes"
EXPOSURE=$(exposure "$WORK/token-server.service")
if [ -z "$EXPOSURE" ]; then
  systemd-analyze security --offline=yes --no-pager "$WORK/token-server.service" || true
  echo "FAIL: no exposure level in the report"; exit 1
fi
systemd-analyze security --offline=yes --no-pager "$WORK/token-server.service" | grep '✗' || true
if above_max "$EXPOSURE"; then
  echo "FAIL: exposure $EXPOSURE is above $MAX_EXPOSURE"; exit 1
fi
echo "exposure $EXPOSURE (at most $MAX_EXPOSURE): ok"

# The check itself must be able to fail: the same unit without its hardening has to
# rate above the limit.
mkdir -p "$WORK/bare"
grep -E '^(\[|Type=|ExecStart=|Description=|WantedBy=)' "$WORK/token-server.service" \
  >"$WORK/bare/token-server.service"
BARE=$(exposure "$WORK/bare/token-server.service")
if [ -z "$BARE" ] || ! above_max "$BARE"; then
  echo "FAIL: the unhardened unit rates '${BARE}', not above $MAX_EXPOSURE: the check cannot fail"
  exit 1
fi
echo "the same unit unhardened rates $BARE: the check tells them apart"

# The system-call filter must allow every call the server makes, or a call fails with
# EPERM under the unit (SystemCallErrorNumber=) and nothing says so: run the binary under
# strace through logins, a rotation, a scrape, snapshots and a stop, and check each call
# it made against the filter the unit's SystemCallFilter= lines build.
if ! command -v strace >/dev/null 2>&1; then
  echo "== installing Debian's strace package"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends strace >/dev/null
fi
# calls GROUP_OR_CALL...: the system calls they name, groups resolved recursively.
calls() {
  local item
  for item in "$@"; do
    case $item in
      @*) systemd-analyze syscall-filter "$item" | grep -v '^ *#' | tr -d ' ' | grep -v '^$' \
            | grep -vx -- "$item" | while read -r inner; do calls "$inner"; done ;;
      *) echo "$item" ;;
    esac
  done
}
: >"$WORK/allowed"
first=1
while read -r line; do
  value=${line#SystemCallFilter=}
  if [ "${value#\~}" != "$value" ]; then
    # shellcheck disable=SC2086 # the groups are words
    calls ${value#\~} | sort -u >"$WORK/removed"
    sort -u "$WORK/allowed" | comm -23 - "$WORK/removed" >"$WORK/kept"
    mv "$WORK/kept" "$WORK/allowed"
  else
    [ "$first" = 1 ] && : >"$WORK/allowed"
    # shellcheck disable=SC2086
    calls $value >>"$WORK/allowed"
  fi
  first=0
done < <(grep '^SystemCallFilter=' "$WORK/token-server.service")
sort -u -o "$WORK/allowed" "$WORK/allowed"

echo "== system calls of a run against SystemCallFilter="
mkdir -p "$WORK/run"
strace -f -qq -o "$WORK/run/trace" "$BIN" --port 0 --state-file "$WORK/run/state" \
  --snapshot-interval 1s 2>"$WORK/run/log" &
TRACED=$!
# shellcheck source=tests/listening.sh
source tests/listening.sh
ADDR=$(listening_address "$WORK/run/log") ||
  { cat "$WORK/run/log"; echo "FAIL: the traced server did not start"; exit 1; }
TOKEN=$(curl -sf -H 'Content-Type: application/json' -d '{"meta":{"u":1}}' "http://$ADDR/token")
curl -sf -X PUT -H 'Content-Type: application/json' -d "{\"token\":\"$TOKEN\"}" \
  "http://$ADDR/token" >/dev/null
curl -sf "http://$ADDR/metrics" >/dev/null
curl -sf "http://$ADDR/readyz" >/dev/null
# The first periodic snapshot (1s) writes the state file from its own thread.
for _ in $(seq 1 100); do
  [ -e "$WORK/run/state" ] && break
  sleep 0.1
done
[ -e "$WORK/run/state" ] || { cat "$WORK/run/log"; echo "FAIL: no snapshot was written"; exit 1; }
SERVER_PID=$(pgrep -P "$TRACED" || true)
kill -TERM "${SERVER_PID:-$TRACED}"
wait "$TRACED" || true
# "1234  name(args..." and "1234  <... name resumed>": the call's name.
sed -nE 's/^[0-9]+ +(<\.\.\. )?([a-z0-9_]+)[( ].*/\2/p' "$WORK/run/trace" | sort -u >"$WORK/used"
DENIED=$(comm -23 "$WORK/used" "$WORK/allowed")
if [ -n "$DENIED" ]; then
  echo "FAIL: the server calls what the unit's filter refuses (EPERM): $DENIED"
  exit 1
fi
echo "ok: $(wc -l <"$WORK/used") distinct calls, all allowed"
