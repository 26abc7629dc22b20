#!/usr/bin/env bash
# Runs every test of the project: unit, doc and black-box HTTP tests against every host
# (native, and the wasm build in Node, Bun, Deno, workerd, and workerd with sessions in
# Durable Objects), the wasm-bindgen tests in Node, and the wasm32 build check of the core.
# Installs the toolchain pieces it needs on a fresh machine (wasm32 target,
# wasm-bindgen-cli) and the edge runtimes from npm (wasm/runtimes.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

# The Redis store's tests start their own redis-server processes (and a cluster made with
# redis-cli); CI runs as root on a fresh Debian machine.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server (Debian package) for the Redis store's tests"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server
fi

echo "== core builds for wasm32-unknown-unknown"
cargo build -p token-server-core --target wasm32-unknown-unknown

echo "== unit, doc and black-box tests (native host)"
# cargo test builds a package's binary only for that package's own tests; the black-box
# suite lives in another package, so build the binary it starts first.
cargo build -p token-server --bin token-server
cargo test --workspace

echo "== black-box HTTP tests against the native host with its sessions in Redis (--redis)"
TOKEN_SERVER_STORE=redis cargo test -p token-server-tests --test http --test operations --test test_clock -- --nocapture

echo "== wasm host: wasm-bindgen-test in Node, package build, edge smoke tests"
bash wasm/test.sh

echo "== edge runtimes from npm at pinned versions (wasm/runtimes.sh)"
runtimes=$(bash wasm/runtimes.sh)
eval "$runtimes"
export BUN DENO WORKERD

# --nocapture so a host that skips a test says which and why in this log.
for host in edge bun deno workerd workerd-do; do
  echo "== black-box HTTP tests against the $host host"
  TOKEN_SERVER_HOST=$host cargo test -p token-server-tests --test http --test operations --test test_clock --test api_keys -- --nocapture
done

echo "== systemd unit: systemd-analyze verify, and security exposure at most 2.0"
bash native/dist/check-unit.sh

echo "== OpenAPI: schemathesis against the native server (docs/openapi.json)"
bash tests/openapi.sh
