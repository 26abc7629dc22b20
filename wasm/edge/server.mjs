// Edge host of token-server: the wasm build's TokenService behind Node's own `http`
// module, so the service runs wherever Node does, with no native binary and no npm install.
//
//   bash wasm/build.sh    # once, builds wasm/pkg
//   node wasm/edge/server.mjs [--port N] [--token-lifetime D] [--purge-interval D] [--dump]
//                             [--rotation-grace D] [--revoke-on-reuse] [--max-session-lifetime D]
//
// Every answer (status, Content-Type, Allow, body) comes from the core protocol, the same
// code the native server runs; this file only moves bytes and runs the purge timer.
import http from "node:http";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";

// The nodejs glue wasm-bindgen emits is CommonJS.
const require = createRequire(import.meta.url);

const USAGE = `usage: node wasm/edge/server.mjs [options]
  -p, --port N             port on 127.0.0.1, 0 for a free one (default 3666)
  -t, --token-lifetime D   token lifetime, between 30min and 96h (default 2h)
  -P, --purge-interval D   how often expired tokens are dropped, between 1s and 90min (default 1min)
      --dump               enable HEAD /dump, which logs live tokens' expiry and metadata
      --rotation-grace D   an exchanged token answers its successor again for D, between 1s and 5min (default off)
      --revoke-on-reuse    an exchanged token presented outside its grace ends its session (default off)
      --max-session-lifetime D
                           a session ends D after its login, between 30min and 400d and not
                           shorter than --token-lifetime (default none)
  -h, --help               this text`;
const HOST = "127.0.0.1";
const DEFAULT_PORT = 3666;
// In-flight requests get this long to finish after SIGTERM before connections are cut.
const SHUTDOWN_GRACE_MS = 10_000;

function fail(message) {
  process.stderr.write(`error: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function loadPackage() {
  try {
    return require("../pkg/token_server_wasm.js");
  } catch (err) {
    fail(`cannot load wasm/pkg (run bash wasm/build.sh first): ${err.message}`);
  }
}

function parsePort(text) {
  if (text === undefined) return DEFAULT_PORT;
  // Digits only: Number("") and Number("0x10") would be accepted otherwise.
  if (!/^\d+$/.test(text) || Number(text) > 65535) {
    fail(`--port '${text}' is not a port number (0 to 65535; 0 picks a free port)`);
  }
  return Number(text);
}

function parseCli({
  TokenService,
  purgeIntervalMillis,
  rotationGraceMillis,
  maxSessionLifetimeMillis,
}) {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        // The native CLI's short forms too, so scripts can switch hosts unchanged.
        port: { type: "string", short: "p" },
        "token-lifetime": { type: "string", short: "t" },
        "purge-interval": { type: "string", short: "P" },
        dump: { type: "boolean", default: false },
        "rotation-grace": { type: "string" },
        "revoke-on-reuse": { type: "boolean", default: false },
        "max-session-lifetime": { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
    }));
  } catch (err) {
    fail(err.message);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const port = parsePort(values.port);
  // Durations are parsed and range-checked by the core, exactly as the native CLI does.
  let service;
  let purgeMs;
  const options = { revokeOnReuse: values["revoke-on-reuse"] };
  try {
    options.rotationGrace = rotationGraceMillis(values["rotation-grace"]);
  } catch (err) {
    fail(`--rotation-grace: ${err.message}`);
  }
  try {
    options.maxSessionLifetime = maxSessionLifetimeMillis(values["max-session-lifetime"]);
  } catch (err) {
    fail(`--max-session-lifetime: ${err.message}`);
  }
  try {
    service = new TokenService(values["token-lifetime"], undefined, values.dump, options);
  } catch (err) {
    // The one cross-flag rule names both flags itself.
    fail(err.message.startsWith("--") ? err.message : `--token-lifetime: ${err.message}`);
  }
  if (options.revokeOnReuse && options.rotationGrace === undefined) {
    process.stderr.write(
      "warning: --revoke-on-reuse without --rotation-grace: two parallel requests with one token will end its session\n",
    );
  }
  try {
    purgeMs = purgeIntervalMillis(values["purge-interval"]);
  } catch (err) {
    fail(`--purge-interval: ${err.message}`);
  }
  return { port, service, purgeMs, dump: values.dump };
}

/**
 * Reads the body up to `limit` bytes. Resolves to the bytes, or to null once the body is
 * over the limit: the rest is discarded unread into memory, never buffered.
 */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      resolve(null);
      return;
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      if (size > limit) return;
      size += chunk.length;
      if (size > limit) {
        chunks.length = 0;
        resolve(null);
      } else {
        chunks.push(chunk);
      }
    });
    req.on("end", () => resolve(size > limit ? null : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function send(res, reply) {
  const headers = { "content-length": Buffer.byteLength(reply.body) };
  if (reply.contentType !== null) headers["content-type"] = reply.contentType;
  if (reply.allow !== null) headers.allow = reply.allow;
  res.writeHead(reply.status, headers);
  res.end(reply.body);
}

function logDump(service) {
  const entries = service.dump();
  process.stderr.write(`dump of ${entries.length} live tokens\n`);
  for (const entry of entries) {
    process.stderr.write(`expires=${entry.expiresAt} meta=${JSON.stringify(entry.meta)}\n`);
  }
}

async function answer(service, req, res) {
  // The protocol routes on the path alone; a query string is not part of the API.
  const path = (req.url ?? "/").split("?", 1)[0];
  const contentType = req.headers["content-type"] ?? null;
  const body = await readBody(req, service.maxBodyBytes);
  let reply;
  if (body === null) {
    reply = service.handleOversized(req.method, path, contentType);
    // The client may still be sending; closing is cheaper than draining a huge upload.
    res.shouldKeepAlive = false;
  } else {
    reply = service.handle(req.method, path, contentType, body);
  }
  if (reply.status === 202 && req.method === "HEAD" && path === "/dump") logDump(service);
  send(res, reply);
}

function main() {
  const { port, service, purgeMs } = parseCli(loadPackage());

  const server = http.createServer((req, res) => {
    answer(service, req, res).catch((err) => {
      // Only a broken clock or a dropped connection gets here; never leave a client hanging.
      process.stderr.write(`request failed: ${err.message}\n`);
      if (!res.headersSent) {
        send(res, {
          status: 500,
          contentType: "text/plain; charset=utf-8",
          body: "internal error",
          allow: null,
        });
      }
    });
  });

  const purgeTimer = setInterval(() => {
    try {
      const { purged, remaining } = service.purge();
      // The native host's wording; only when something happened, as there are no log levels.
      if (purged > 0) {
        process.stderr.write(`purge: ${purged} expired tokens dropped, ${remaining} remaining\n`);
      }
    } catch (err) {
      process.stderr.write(`purge failed: ${err.message}\n`);
    }
  }, purgeMs);

  let stopping = false;
  const shutdown = (signal) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`${signal}: shutting down\n`);
    clearInterval(purgeTimer);
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS).unref();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  server.on("error", (err) => {
    process.stderr.write(`error: cannot listen on ${HOST}:${port}: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(port, HOST, () => {
    process.stderr.write(`listening on ${HOST}:${server.address().port}\n`);
  });
}

main();
