// Cloudflare Worker host of token-server (module syntax), over the ES-module build in
// wasm/pkg-web (bash wasm/build.sh). Runs in workerd as is; wrangler bundles the same file.
//
// One store per isolate, in memory, created on the first request (workerd refuses
// randomness at module scope): route a client to one instance, or accept that tokens are
// per instance. Settings from the environment: TOKEN_LIFETIME, PURGE_INTERVAL, DUMP, ROTATION_GRACE,
// REVOKE_ON_REUSE, MAX_SESSION_LIFETIME, TEST_CLOCK, and the
// secret TOKEN_SERVER_API_KEYS (see createWorker in handler.mjs).
import wasmModule from "../pkg-web/token_server_wasm_bg.wasm";
import * as wasm from "../pkg-web/token_server_wasm.js";
import { createWorker } from "./handler.mjs";

export default createWorker(() => {
  wasm.initSync({ module: wasmModule });
  return wasm;
});
