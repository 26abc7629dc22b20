#!/usr/bin/env bash
# Builds the JS packages of the wasm host:
#   wasm/pkg/      the .wasm, its Node glue (CommonJS token_server_wasm.js), TypeScript
#                  types (.d.ts) and a package.json: for Node and test harnesses;
#   wasm/pkg-web/  the same .wasm with ES-module glue (wasm-bindgen --target web), which
#                  Deno, Bun and workerd load unchanged: call initSync({ module }) or
#                  await init() once, then use the classes.
#
#   bash wasm/build.sh
#
# Installs what it lacks: the wasm32 target, and wasm-bindgen-cli at exactly the
# wasm-bindgen version in Cargo.lock (the CLI refuses a .wasm made by another version).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir=${CARGO_TARGET_DIR:-$root/target}

# shellcheck source=wasm/tools.sh
source "$root/wasm/tools.sh"
ensure_wasm_tools

cargo build --release --target wasm32-unknown-unknown -p token-server-wasm
wasm_file=$target_dir/wasm32-unknown-unknown/release/token_server_wasm.wasm
rm -rf "$root/wasm/pkg" "$root/wasm/pkg-web"
wasm-bindgen --target nodejs --out-dir "$root/wasm/pkg" "$wasm_file"
wasm-bindgen --target web --out-dir "$root/wasm/pkg-web" "$wasm_file"

# wasm-bindgen writes no package.json for --target nodejs; the glue is CommonJS.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
cat > "$root/wasm/pkg/package.json" <<JSON
{
  "name": "token-server-wasm",
  "version": "$version",
  "description": "One-time token store and REST protocol of token-server, as WebAssembly",
  "license": "MIT OR Apache-2.0",
  "main": "token_server_wasm.js",
  "types": "token_server_wasm.d.ts",
  "files": ["token_server_wasm.js", "token_server_wasm_bg.wasm", "token_server_wasm.d.ts", "token_server_wasm_bg.wasm.d.ts"]
}
JSON
# ES modules, so Node too reads the web glue as what it is.
cat > "$root/wasm/pkg-web/package.json" <<JSON
{
  "name": "token-server-wasm-web",
  "version": "$version",
  "description": "One-time token store and REST protocol of token-server, as WebAssembly with ES-module glue",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "module": "token_server_wasm.js",
  "types": "token_server_wasm.d.ts",
  "files": ["token_server_wasm.js", "token_server_wasm_bg.wasm", "token_server_wasm.d.ts", "token_server_wasm_bg.wasm.d.ts"]
}
JSON
echo "built $root/wasm/pkg and $root/wasm/pkg-web" >&2
