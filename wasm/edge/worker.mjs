// Workers-style host of token-server: `export default { fetch }` over the wasm build's
// TokenService, for runtimes that hand a handler a web `Request` and want a `Response`.
//
// It loads wasm/pkg (the nodejs glue from bash wasm/build.sh), so as is it runs in Node 20,
// e.g. under a test or a fetch-style server. For a runtime without `require` (Cloudflare
// Workers, Deno Deploy), build the glue with `wasm-bindgen --target web` instead and replace
// `loadTokenService` with `import init, { TokenService } from "../pkg/token_server_wasm.js"`
// plus `await init(wasmModule)`; the handler below stays the same.
//
// State lives in one isolate: each isolate has its own store, so route a client to one
// instance (or accept that tokens are per-instance).
import { createRequire } from "node:module";

function loadTokenService() {
  return createRequire(import.meta.url)("../pkg/token_server_wasm.js").TokenService;
}

/**
 * A Workers-style handler over a fresh store. `lifetime` as for TokenService (ms or "2h"),
 * `clock` a `() => number` for tests, `purgeIntervalMs` how often requests may trigger a
 * purge (Workers have no long-lived timers).
 */
export function createHandler({ lifetime, clock, dump = false, purgeIntervalMs = 60_000 } = {}) {
  const TokenService = loadTokenService();
  const service = new TokenService(lifetime, clock, dump);
  const now = clock ?? Date.now;
  let lastPurge = now();

  function purgeIfDue() {
    if (now() - lastPurge >= purgeIntervalMs) {
      lastPurge = now();
      service.purge();
    }
  }

  async function fetch(request) {
    purgeIfDue();
    const url = new URL(request.url);
    const contentType = request.headers.get("content-type");
    const declared = Number(request.headers.get("content-length"));
    let reply;
    if (Number.isFinite(declared) && declared > service.maxBodyBytes) {
      reply = service.handleOversized(request.method, url.pathname, contentType);
    } else {
      // Without a declared length the body is read whole; the protocol still answers 413.
      const body = new Uint8Array(await request.arrayBuffer());
      reply = service.handle(request.method, url.pathname, contentType, body);
    }
    const headers = new Headers();
    if (reply.contentType !== null) headers.set("content-type", reply.contentType);
    if (reply.allow !== null) headers.set("allow", reply.allow);
    return new Response(reply.body === "" ? null : reply.body, { status: reply.status, headers });
  }

  /** For a cron trigger: drops expired tokens. */
  function scheduled() {
    lastPurge = now();
    service.purge();
  }

  return { fetch, scheduled, service };
}

const handler = createHandler();

export default { fetch: handler.fetch, scheduled: handler.scheduled };
