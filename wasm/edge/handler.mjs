// Request handling shared by every edge host (Node, Bun, Deno, Cloudflare Workers): a
// request becomes one call of the core's TokenService.handle, its reply a response.
//
// Runtime-agnostic on purpose: no `node:` import, no Deno or Bun global, and nothing runs
// at import time, so workerd (which refuses randomness and clocks at module scope) can
// load it. Each host file only starts a server and moves bytes; every answer (status,
// Content-Type, Allow, WWW-Authenticate, body) comes from the core protocol, the same code
// the native server runs, API key check included.

/**
 * Accumulates a request body up to `limit` bytes and says when it went past it, so a
 * host stops reading there instead of buffering an upload of any size.
 */
export class BodyCap {
  constructor(limit) {
    this.limit = limit;
    this.size = 0;
    this.chunks = [];
  }

  /** Adds a chunk; false once the body is over the limit (the chunks are then dropped). */
  add(chunk) {
    if (this.over) return false;
    this.size += chunk.byteLength;
    if (this.over) {
      this.chunks = [];
      return false;
    }
    this.chunks.push(chunk);
    return true;
  }

  get over() {
    return this.size > this.limit;
  }

  /** The whole body, or null if it was over the limit. */
  bytes() {
    if (this.over) return null;
    if (this.chunks.length === 1) return new Uint8Array(this.chunks[0]);
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, at);
      at += chunk.byteLength;
    }
    return out;
  }
}

/** Whether a Content-Length header already says the body is over `limit`. */
export function declaredOver(contentLength, limit) {
  if (contentLength === null || contentLength === undefined) return false;
  const declared = Number(contentLength);
  return Number.isFinite(declared) && declared > limit;
}

/**
 * Reads a web `ReadableStream` body up to `limit` bytes: the bytes, or null once past the
 * limit, having cancelled the stream so the rest is never read.
 */
export async function readCapped(stream, limit) {
  const cap = new BodyCap(limit);
  if (stream === null || stream === undefined) return cap.bytes();
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return cap.bytes();
    if (!cap.add(value)) {
      // The client may still be sending; the answer is 413 whatever follows.
      await reader.cancel("body over the limit").catch(() => {});
      return null;
    }
  }
}

/** The protocol routes on the path alone; a query string is not part of the API. */
export function pathOf(target) {
  const path = (target ?? "/").split("?", 1)[0];
  if (path.startsWith("/")) return path;
  // A web Request carries an absolute URL (so may a Node request-target); anything else,
  // such as "*", goes to the protocol as is, which answers 404.
  try {
    return new URL(path).pathname;
  } catch {
    return path;
  }
}

/**
 * Answers one request: `body` is the whole body (Uint8Array) or null when it was over the
 * service's limit; `authorization` the Authorization header or null. Returns the core's
 * reply. What the core logs (the `HEAD /dump` lines, a test clock's purge, warnings)
 * reaches the host's log through `logTo` (see `loadedWith`).
 */
export function answer(service, { method, path, contentType, authorization = null, body }) {
  return body === null
    ? service.handleOversized(method, path, contentType, authorization)
    : service.handle(method, path, contentType, body, authorization);
}

/**
 * Routes the core's log lines to `log` ("INFO dump of 2 live tokens", "WARN ..."), so every
 * host logs what the native one does; returns `wasm` for chaining. Call once at start.
 */
export function loadedWith(wasm, log) {
  wasm.logTo((line) => log(line));
  return wasm;
}

/** A reply as a web Response. */
export function toResponse(reply) {
  const headers = new Headers();
  if (reply.contentType !== null) headers.set("content-type", reply.contentType);
  if (reply.allow !== null) headers.set("allow", reply.allow);
  if (reply.wwwAuthenticate !== null) headers.set("www-authenticate", reply.wwwAuthenticate);
  return new Response(reply.body === "" ? null : reply.body, { status: reply.status, headers });
}

/** The answer when the host itself failed (a broken clock); never leave a client hanging. */
export const INTERNAL_ERROR = Object.freeze({
  status: 500,
  contentType: "text/plain; charset=utf-8",
  body: "internal error",
  allow: null,
  wwwAuthenticate: null,
});

/** `N keys (fingerprints a1b2c3d4, …)`, as the native host logs a key set. */
export function describeKeys({ count, fingerprints }) {
  return `${count} keys (fingerprints ${fingerprints.join(", ")})`;
}

/**
 * A header value as the native server hands it to the protocol: null when absent, and
 * null when it holds a byte outside visible ASCII and tab (obs-text, which hosts decode
 * as latin1), as http's `HeaderValue::to_str` refuses it there. Otherwise the same
 * request got another answer here (200 for a Content-Type the native server answers 415).
 */
export function headerText(value) {
  if (value === null || value === undefined) return null;
  return /[^\t\x20-\x7e]/.test(value) ? null : value;
}

/**
 * The parts of a web Request the protocol reads: `{ method, path, contentType,
 * authorization, body }`, the body read up to `limit` bytes, or null past it (the rest is
 * cancelled unread).
 */
export async function readRequest(request, limit) {
  let body;
  if (declaredOver(request.headers.get("content-length"), limit)) {
    body = null;
    await request.body?.cancel().catch(() => {});
  } else {
    body = await readCapped(request.body, limit);
  }
  return {
    method: request.method,
    path: pathOf(request.url),
    contentType: headerText(request.headers.get("content-type")),
    authorization: headerText(request.headers.get("authorization")),
    body,
  };
}

/** Answers a web Request with `service`: the fetch handler of Bun, Deno and Workers. */
export async function respond(service, request) {
  return toResponse(answer(service, await readRequest(request, service.maxBodyBytes)));
}

/** Logs `err` and answers 500, for a host's catch-all. */
export function failed(err, log) {
  log(`request failed: ${err?.message ?? err}`);
  return toResponse(INTERNAL_ERROR);
}

/**
 * Drops expired tokens every `intervalMs`; for hosts with long-lived timers. Logs like the
 * native host, only when something was dropped (there are no log levels here).
 */
export function startPurgeTimer(service, intervalMs, log) {
  return setInterval(() => {
    try {
      const { purged, remaining } = service.purge();
      if (purged > 0) log(`purge: ${purged} expired tokens dropped, ${remaining} remaining`);
    } catch (err) {
      log(`purge failed: ${err.message}`);
    }
  }, intervalMs);
}

/**
 * The session rules and test clock of a Worker from its environment (bindings are strings,
 * absent ones undefined): ROTATION_GRACE ("30s"), REVOKE_ON_REUSE ("true"),
 * MAX_SESSION_LIFETIME ("30d"), TEST_CLOCK ("true"; for tests only). The core checks the
 * ranges as for the native flags.
 */
export function optionsFromEnv(env, wasm) {
  const options = {
    revokeOnReuse: env.REVOKE_ON_REUSE === "true",
    testClock: env.TEST_CLOCK === "true",
  };
  options.rotationGrace = wasm.rotationGraceMillis(env.ROTATION_GRACE || undefined);
  options.maxSessionLifetime = wasm.maxSessionLifetimeMillis(env.MAX_SESSION_LIFETIME || undefined);
  return options;
}

/**
 * A Worker's service from its environment: TOKEN_LIFETIME, DUMP, the session rules and
 * test clock of `optionsFromEnv`, and the keys of the TOKEN_SERVER_API_KEYS secret.
 * `clock` undefined: the wall clock. A bad setting or key secret throws before any
 * service exists, so every request fails (500, logged naming the line) rather than being
 * served without what was asked for.
 */
export function serviceFromEnv(wasm, env, clock, log) {
  const options = optionsFromEnv(env, wasm);
  const service = new wasm.TokenService(env.TOKEN_LIFETIME, clock, env.DUMP === "true", options);
  if (options.testClock) log(TEST_CLOCK_WARNING);
  // workerd passes an unset fromEnvironment binding as null.
  const keysText = env.TOKEN_SERVER_API_KEYS ?? "";
  if (keysText !== "") {
    log(`api keys from TOKEN_SERVER_API_KEYS: ${describeKeys(service.setApiKeys(keysText))}`);
  }
  return service;
}

/** The line a host logs at start when `--test-clock` (or TEST_CLOCK) is on. */
export const TEST_CLOCK_WARNING =
  "WARN --test-clock is on: time moves only through /test-clock; for tests only, never in production";

/**
 * A Workers-style `{ fetch, scheduled }` over one store per isolate, created on the first
 * request: workerd refuses `crypto.getRandomValues` (and freezes the clock) at module scope.
 *
 * `load()` returns the wasm package's exports (TokenService, logTo, purgeIntervalMillis,
 * rotationGraceMillis, maxSessionLifetimeMillis), initialising the module if needed.
 * Settings come from the Worker's environment: TOKEN_LIFETIME ("2h"), PURGE_INTERVAL
 * ("1min"; Workers have no long-lived timers, so a request purges when this much time
 * passed since the last purge, and a cron trigger may call `scheduled`), DUMP ("true"
 * enables HEAD /dump), and the session rules and test clock of `optionsFromEnv`. `clock`
 * is for tests. TOKEN_SERVER_API_KEYS (a secret holding a key file's text) makes
 * every request need one of its keys.
 */
export function createWorker(load, { clock, log = (line) => console.log(line) } = {}) {
  let state = null;
  const now = () => (clock ?? Date.now)();

  function stateFor(env = {}) {
    if (state === null) {
      const wasm = loadedWith(load(), log);
      const service = serviceFromEnv(wasm, env, clock, log);
      state = { service, purgeMs: wasm.purgeIntervalMillis(env.PURGE_INTERVAL), lastPurge: now() };
    }
    return state;
  }

  function purgeIfDue(current) {
    if (now() - current.lastPurge >= current.purgeMs) {
      current.lastPurge = now();
      current.service.purge();
    }
  }

  return {
    async fetch(request, env) {
      try {
        const current = stateFor(env);
        purgeIfDue(current);
        return await respond(current.service, request);
      } catch (err) {
        return failed(err, log);
      }
    },
    /** For a cron trigger: drops expired tokens. */
    scheduled(_event, env) {
      const current = stateFor(env);
      current.lastPurge = now();
      current.service.purge();
    },
    /** The store, once a request created it (for tests). */
    get service() {
      return state?.service ?? null;
    },
  };
}
