// Deno host of token-server: the ES-module wasm build (wasm/pkg-web) served by `deno serve`.
//
//   bash wasm/build.sh    # once, builds wasm/pkg-web
//   deno serve --allow-read=wasm/pkg-web --host 127.0.0.1 --port N wasm/edge/deno.mjs \
//     [--token-lifetime D] [--purge-interval D] [--dump]
//
// API keys (TOKEN_SERVER_API_KEYS or TOKEN_SERVER_API_KEYS_FILE, see flags.mjs) need
// --allow-env=TOKEN_SERVER_API_KEYS,TOKEN_SERVER_API_KEYS_FILE (without it no key is read,
// and the host logs a warning saying so) and --allow-read for the file.
//
// `deno serve` owns the address (its --host, --port) and graceful shutdown on SIGTERM;
// the service's own flags follow the file name. Flags come from flags.mjs and every
// answer from handler.mjs, shared with the other hosts.
import * as wasm from "../pkg-web/token_server_wasm.js";
import { failed, loadedWith, respond, startPurgeTimer } from "./handler.mjs";
import { UsageError, apiKeysFromEnv, parseFlags, usage } from "./flags.mjs";

const COMMAND = "deno serve [--host H] [--port N] wasm/edge/deno.mjs";
// Written from the core's flag table once the package is loaded.
let USAGE = "";
const log = (line) => console.error(line);

function fail(message) {
  console.error(`error: ${message}\n${USAGE}`);
  Deno.exit(2);
}

function start() {
  try {
    const wasmFile = new URL("../pkg-web/token_server_wasm_bg.wasm", import.meta.url);
    wasm.initSync({ module: Deno.readFileSync(wasmFile) });
    USAGE = usage(COMMAND, wasm, { port: false });
  } catch (err) {
    fail(`cannot load wasm/pkg-web (run bash wasm/build.sh first): ${err.message}`);
  }
  if (Deno.args.some((arg) => arg === "--port" || arg === "-p" || arg.startsWith("--port="))) {
    fail("--port is deno serve's: put it before the file name");
  }
  let flags;
  let reloadKeys;
  try {
    flags = parseFlags(Deno.args, loadedWith(wasm, log), log, { port: false });
    if (!flags.help) reloadKeys = apiKeysFromEnv(flags.service, log);
  } catch (err) {
    if (err instanceof UsageError) fail(err.message);
    throw err;
  }
  if (flags.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const { service, purgeMs } = flags;
  if (reloadKeys) Deno.addSignalListener("SIGHUP", reloadKeys);
  const purgeTimer = startPurgeTimer(service, purgeMs, log);
  for (const signal of ["SIGTERM", "SIGINT"]) {
    // deno serve stops accepting and lets in-flight requests finish; once the timer is
    // gone nothing else keeps the process alive, and it exits 0.
    Deno.addSignalListener(signal, () => {
      log(`${signal}: shutting down`);
      clearInterval(purgeTimer);
    });
  }
  return service;
}

const service = start();

export default {
  fetch: (request) => respond(service, request).catch((err) => failed(err, log)),
};
