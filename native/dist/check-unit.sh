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
