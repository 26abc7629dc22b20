# workerd config of the Worker with sessions in Durable Objects (worker-do.mjs), their
# storage on disk, so sessions survive a restart of workerd.
#
#   bash wasm/build.sh    # once, builds wasm/pkg-web
#   mkdir -p /var/lib/token-server-sessions
#   workerd serve wasm/edge/workerd-do.capnp --socket-addr http=127.0.0.1:8080 \
#     --directory-path session-storage=/var/lib/token-server-sessions
#
# Settings from the environment of workerd, as for workerd.capnp: TOKEN_LIFETIME, DUMP,
# ROTATION_GRACE, REVOKE_ON_REUSE, MAX_SESSION_LIFETIME, TEST_CLOCK. (No PURGE_INTERVAL:
# each object deletes its record by an alarm at the session's end.)
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "token-server", worker = .tokenServer),
    # Where the objects' SQLite files live; --directory-path overrides the path.
    (name = "session-storage", disk = (path = "/tmp/token-server-sessions", writable = true)),
  ],
  sockets = [(name = "http", address = "127.0.0.1:3666", http = (), service = "token-server")],
);

const tokenServer :Workerd.Worker = (
  # Module names mirror the files' paths under wasm/, so the relative imports resolve.
  modules = [
    (name = "edge/worker-do.mjs", esModule = embed "worker-do.mjs"),
    (name = "edge/sessions.mjs", esModule = embed "sessions.mjs"),
    (name = "edge/handler.mjs", esModule = embed "handler.mjs"),
    (name = "pkg-web/token_server_wasm.js", esModule = embed "../pkg-web/token_server_wasm.js"),
    (name = "pkg-web/token_server_wasm_bg.wasm", wasm = embed "../pkg-web/token_server_wasm_bg.wasm"),
  ],
  compatibilityDate = "2025-01-01",
  durableObjectNamespaces = [
    (className = "SessionObject", uniqueKey = "token-server-sessions"),
  ],
  durableObjectStorage = (localDisk = "session-storage"),
  bindings = [
    (name = "SESSIONS", durableObjectNamespace = "SessionObject"),
    (name = "TOKEN_LIFETIME", fromEnvironment = "TOKEN_LIFETIME"),
    (name = "DUMP", fromEnvironment = "DUMP"),
    (name = "ROTATION_GRACE", fromEnvironment = "ROTATION_GRACE"),
    (name = "REVOKE_ON_REUSE", fromEnvironment = "REVOKE_ON_REUSE"),
    (name = "MAX_SESSION_LIFETIME", fromEnvironment = "MAX_SESSION_LIFETIME"),
    (name = "TEST_CLOCK", fromEnvironment = "TEST_CLOCK"),
    (name = "TOKEN_SERVER_API_KEYS", fromEnvironment = "TOKEN_SERVER_API_KEYS"),
  ],
);
