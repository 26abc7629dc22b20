#!/usr/bin/env bash
# Runs the wasm host's tests: the wasm-bindgen-test tests in Node, then a smoke test of
# the edge hosts (wasm/edge/*.test.mjs) over a freshly built wasm/pkg.
#
#   bash wasm/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=wasm/tools.sh
source wasm/tools.sh
ensure_wasm_tools

echo "== wasm-bindgen-test tests in Node"
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test -p token-server-wasm --target wasm32-unknown-unknown

echo "== edge hosts over the built package"
bash wasm/build.sh
node --test wasm/edge/*.test.mjs
