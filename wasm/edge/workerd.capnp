# workerd config of the Cloudflare Worker host (worker.mjs) over the ES-module build.
#
#   bash wasm/build.sh    # once, builds wasm/pkg-web
#   workerd serve wasm/edge/workerd.capnp --socket-addr http=127.0.0.1:8080
#
# Settings from the environment of workerd: TOKEN_LIFETIME (e.g. 2h), PURGE_INTERVAL
# (e.g. 1min), DUMP (true enables HEAD /dump, logged on stdout), ROTATION_GRACE (e.g. 30s),
# REVOKE_ON_REUSE (true), MAX_SESSION_LIFETIME (e.g. 30d), TEST_CLOCK (true: for tests
# only), TOKEN_SERVER_API_KEYS (a key file's text: every request then needs one of its
# keys; in wrangler, a secret). Tokens live in the memory of the one isolate: a restart loses them.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "token-server", worker = .tokenServer)],
  sockets = [(name = "http", address = "127.0.0.1:3666", http = (), service = "token-server")],
);

const tokenServer :Workerd.Worker = (
  # Module names mirror the files' paths under wasm/, so the relative imports resolve.
  modules = [
    (name = "edge/worker.mjs", esModule = embed "worker.mjs"),
    (name = "edge/handler.mjs", esModule = embed "handler.mjs"),
    (name = "pkg-web/token_server_wasm.js", esModule = embed "../pkg-web/token_server_wasm.js"),
    (name = "pkg-web/token_server_wasm_bg.wasm", wasm = embed "../pkg-web/token_server_wasm_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  bindings = [
    (name = "TOKEN_LIFETIME", fromEnvironment = "TOKEN_LIFETIME"),
    (name = "PURGE_INTERVAL", fromEnvironment = "PURGE_INTERVAL"),
    (name = "DUMP", fromEnvironment = "DUMP"),
    (name = "ROTATION_GRACE", fromEnvironment = "ROTATION_GRACE"),
    (name = "REVOKE_ON_REUSE", fromEnvironment = "REVOKE_ON_REUSE"),
    (name = "MAX_SESSION_LIFETIME", fromEnvironment = "MAX_SESSION_LIFETIME"),
    (name = "TEST_CLOCK", fromEnvironment = "TEST_CLOCK"),
    (name = "TOKEN_SERVER_API_KEYS", fromEnvironment = "TOKEN_SERVER_API_KEYS"),
  ],
);
