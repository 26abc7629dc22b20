// Node host of token-server: the wasm build's TokenService behind Node's own `http`
// module, so the service runs wherever Node does, with no native binary and no npm install.
//
//   bash wasm/build.sh    # once, builds wasm/pkg
//   node wasm/edge/server.mjs [--port N] [--token-lifetime D] [--purge-interval D] [--dump]
//                             [--rotation-grace D] [--revoke-on-reuse] [--max-session-lifetime D]
//                             [--test-clock]
//
// Flags come from flags.mjs and every answer from handler.mjs, shared with the Bun, Deno
// and Workers hosts; this file only moves bytes between Node's http module and them.
import http from "node:http";
import { createRequire } from "node:module";

import {
  BodyCap,
  INTERNAL_ERROR,
  answer,
  declaredOver,
  headerText,
  pathOf,
  startPurgeTimer,
} from "./handler.mjs";
import { HOST, exitWithError, startHost } from "./flags.mjs";

// In-flight requests get this long to finish after SIGTERM before connections are cut.
const SHUTDOWN_GRACE_MS = 10_000;

const log = (line) => process.stderr.write(`${line}\n`);

function loadPackage() {
  try {
    // The nodejs glue wasm-bindgen emits is CommonJS.
    return createRequire(import.meta.url)("../pkg/token_server_wasm.js");
  } catch (err) {
    exitWithError(`cannot load wasm/pkg (run bash wasm/build.sh first): ${err.message}`);
  }
}

/**
 * Reads the body up to `limit` bytes. Resolves to the bytes, or to null once the body is
 * over the limit: the rest is discarded unread into memory, never buffered.
 */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    if (declaredOver(req.headers["content-length"], limit)) {
      req.resume();
      resolve(null);
      return;
    }
    const cap = new BodyCap(limit);
    req.on("data", (chunk) => {
      if (!cap.add(chunk)) resolve(null);
    });
    req.on("end", () => resolve(cap.bytes()));
    req.on("error", reject);
  });
}

function send(res, reply) {
  const headers = { "content-length": Buffer.byteLength(reply.body) };
  if (reply.contentType !== null) headers["content-type"] = reply.contentType;
  if (reply.allow !== null) headers.allow = reply.allow;
  if (reply.wwwAuthenticate !== null) headers["www-authenticate"] = reply.wwwAuthenticate;
  res.writeHead(reply.status, headers);
  res.end(reply.body);
}

async function serve(service, req, res) {
  const body = await readBody(req, service.maxBodyBytes);
  const request = {
    method: req.method,
    path: pathOf(req.url),
    contentType: headerText(req.headers["content-type"]),
    authorization: headerText(req.headers.authorization),
    body,
  };
  // The client may still be sending; closing is cheaper than draining a huge upload.
  if (body === null) res.shouldKeepAlive = false;
  send(res, answer(service, request));
}

function main() {
  const { port, service, purgeMs, onSighup } = startHost({
    command: "node wasm/edge/server.mjs",
    wasm: loadPackage(),
    args: process.argv.slice(2),
    log,
  });
  process.on("SIGHUP", onSighup);

  const server = http.createServer((req, res) => {
    serve(service, req, res).catch((err) => {
      // Only a broken clock or a dropped connection gets here.
      log(`request failed: ${err.message}`);
      if (!res.headersSent) send(res, INTERNAL_ERROR);
    });
  });
  const purgeTimer = startPurgeTimer(service, purgeMs, log);

  let stopping = false;
  const shutdown = (signal) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down`);
    clearInterval(purgeTimer);
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS).unref();
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));

  server.on("error", (err) => {
    log(`error: cannot listen on ${HOST}:${port}: ${err.message}`);
    process.exit(1);
  });
  server.listen(port, HOST, () => log(`listening on ${HOST}:${server.address().port}`));
}

main();
