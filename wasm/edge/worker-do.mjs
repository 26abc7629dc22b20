// Cloudflare Worker host of token-server with every session in a Durable Object of its
// own (sessions.mjs), over the ES-module build in wasm/pkg-web. Sessions survive restarts
// and scale out with the objects; see workerd-do.capnp (local) and wrangler.toml (deploy).
//
// Bindings: SESSIONS (the Durable Object namespace of class SessionObject), and the
// settings of worker.mjs: TOKEN_LIFETIME, DUMP, ROTATION_GRACE, REVOKE_ON_REUSE,
// MAX_SESSION_LIFETIME, TEST_CLOCK.
import wasmModule from "../pkg-web/token_server_wasm_bg.wasm";
import * as wasm from "../pkg-web/token_server_wasm.js";
import { createSessionObject, createSessionWorker } from "./sessions.mjs";

let loaded = false;
function load() {
  if (!loaded) {
    wasm.initSync({ module: wasmModule });
    loaded = true;
  }
  return wasm;
}

export const SessionObject = createSessionObject(load);
export default createSessionWorker(load);
