#!/usr/bin/env bash
# Installs the edge runtimes the wasm host is tested in (Deno, Bun, workerd) from the npm
# registry at pinned versions into a cache folder, and prints where their binaries are.
#
#   bash wasm/runtimes.sh            # installs what is missing; prints NAME=PATH lines
#   eval "$(bash wasm/runtimes.sh)"  # sets DENO, BUN, WORKERD for the calling shell
#
# The cache folder is $TOKEN_SERVER_RUNTIMES, default ~/.cache/token-server-runtimes.
#
# The `deno`, `bun` and `workerd` packages fetch or link their binary in a postinstall step
# (some from GitHub, which a CI box that reaches only npm cannot do), so this installs the
# per-platform packages they depend on, which carry the binary itself, with scripts off.
set -euo pipefail

# Pinned so a test run means the same thing tomorrow; bump together with the README table.
DENO_VERSION=2.9.6
BUN_VERSION=1.4.5
WORKERD_VERSION=1.20261117.1

cache=${TOKEN_SERVER_RUNTIMES:-${XDG_CACHE_HOME:-$HOME/.cache}/token-server-runtimes}

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64)
    deno_pkg=@deno/linux-x64-glibc
    # The plain build needs AVX2; the baseline build runs on any x86-64.
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
      bun_pkg=@oven/bun-linux-x64
    else
      bun_pkg=@oven/bun-linux-x64-baseline
    fi
    workerd_pkg=@cloudflare/workerd-linux-64
    ;;
  Linux-aarch64)
    deno_pkg=@deno/linux-arm64-glibc
    bun_pkg=@oven/bun-linux-aarch64
    workerd_pkg=@cloudflare/workerd-linux-arm64
    ;;
  Darwin-arm64)
    deno_pkg=@deno/darwin-arm64
    bun_pkg=@oven/bun-darwin-aarch64
    workerd_pkg=@cloudflare/workerd-darwin-arm64
    ;;
  Darwin-x86_64)
    deno_pkg=@deno/darwin-x64
    bun_pkg=@oven/bun-darwin-x64
    workerd_pkg=@cloudflare/workerd-darwin-64
    ;;
  *)
    echo "no pinned edge runtimes for $(uname -s)-$(uname -m)" >&2
    exit 1
    ;;
esac

# One folder per version set, so a bump never mixes with an older install.
prefix=$cache/deno-$DENO_VERSION.bun-$BUN_VERSION.workerd-$WORKERD_VERSION
modules=$prefix/node_modules
deno_bin=$modules/$deno_pkg/deno
bun_bin=$modules/$bun_pkg/bin/bun
workerd_bin=$modules/$workerd_pkg/bin/workerd

if [ ! -x "$deno_bin" ] || [ ! -x "$bun_bin" ] || [ ! -x "$workerd_bin" ]; then
  mkdir -p "$prefix"
  echo "installing $deno_pkg@$DENO_VERSION $bun_pkg@$BUN_VERSION $workerd_pkg@$WORKERD_VERSION into $prefix" >&2
  # --force: the platform packages declare os/cpu fields; they match here, but npm may
  # still refuse them as optional dependencies installed directly on some versions.
  npm install --prefix "$prefix" --no-save --no-audit --no-fund --ignore-scripts \
    "$deno_pkg@$DENO_VERSION" "$bun_pkg@$BUN_VERSION" "$workerd_pkg@$WORKERD_VERSION" >&2
fi

for bin in "$deno_bin" "$bun_bin" "$workerd_bin"; do
  if [ ! -x "$bin" ]; then
    echo "expected a runtime binary at $bin; the package layout changed?" >&2
    exit 1
  fi
done

echo "DENO=$deno_bin"
echo "BUN=$bun_bin"
echo "WORKERD=$workerd_bin"
