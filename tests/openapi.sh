#!/usr/bin/env bash
# Runs schemathesis against the native server on loopback, driven by docs/openapi.json:
# generated requests (valid and invalid) to every operation, each answer checked against
# the document's statuses, content types and schemas. Zero failures or it exits non-zero.
#
#   bash tests/openapi.sh [MAX_EXAMPLES]   (default 50 per operation; a few minutes at most)
#
# schemathesis comes from PyPI at a pinned version, in a virtual environment under the
# cache folder, so neither the system Python nor the work tree is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
MAX_EXAMPLES=${1:-50}
VENV=${TOKEN_SERVER_SCHEMATHESIS_VENV:-$HOME/.cache/token-server-schemathesis}

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "== installing schemathesis $SCHEMATHESIS_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build --quiet -p token-server --bin token-server
WORK=$(mktemp -d)
# --test-clock and --dump: the document describes those endpoints, so they are served.
target/debug/token-server --port 0 --test-clock --dump 2>"$WORK/server.log" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
# shellcheck source=tests/listening.sh
source tests/listening.sh
ADDR=$(listening_address "$WORK/server.log") ||
  { cat "$WORK/server.log"; echo "FAIL: the server did not start"; exit 1; }

echo "== schemathesis $SCHEMATHESIS_VERSION against http://$ADDR ($MAX_EXAMPLES examples per operation)"
# Which checks run, and why two are off and one is relaxed: tests/schemathesis.toml.
# Run from the temporary folder, where its caches (.hypothesis, .schemathesis) go too.
ROOT=$(pwd)
cd "$WORK"
"$VENV/bin/st" --config-file "$ROOT/tests/schemathesis.toml" run "$ROOT/docs/openapi.json" \
  --url "http://$ADDR" \
  --max-examples "$MAX_EXAMPLES" \
  --seed 1 \
  --no-color \
  --request-timeout 10
