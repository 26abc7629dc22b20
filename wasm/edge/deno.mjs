// Deno host of token-server: the ES-module wasm build (wasm/pkg-web) served by `deno serve`.
//
//   bash wasm/build.sh    # once, builds wasm/pkg-web
//   deno serve --allow-read=wasm/pkg-web --host 127.0.0.1 --port N wasm/edge/deno.mjs \
//     [--token-lifetime D] [--purge-interval D] [--dump]
//
// API keys (TOKEN_SERVER_API_KEYS or TOKEN_SERVER_API_KEYS_FILE, see flags.mjs) need
// --allow-env=TOKEN_SERVER_API_KEYS,TOKEN_SERVER_API_KEYS_FILE (without it no key is read,
// and the host logs a warning saying so) and --allow-read for the file; flags read from
// TOKEN_SERVER_<FLAG> variables need --allow-env for those too.
//
// `deno serve` owns the address (its --host, --port) and graceful shutdown on SIGTERM;
// the service's own flags follow the file name. Flags come from flags.mjs and every
// answer from handler.mjs, shared with the other hosts.
import * as wasm from "../pkg-web/token_server_wasm.js";
import { failed, respond, startPurgeTimer } from "./handler.mjs";
import { startHost } from "./flags.mjs";

const COMMAND = "deno serve [--host H] [--port N] wasm/edge/deno.mjs";
// In-flight requests get this long to finish after SIGTERM (as on the Node host and the
// native --shutdown-timeout default); deno serve's own shutdown waits for every open
// connection with no limit, so a client stalling mid-upload would keep the process up.
const SHUTDOWN_GRACE_MS = 10_000;
const log = (line) => console.error(line);

function fail(message, usage = "") {
  console.error(`error: ${message}\n${usage}`);
  Deno.exit(2);
}

function help(usage) {
  console.log(usage);
  Deno.exit(0);
}

function start() {
  try {
    const wasmFile = new URL("../pkg-web/token_server_wasm_bg.wasm", import.meta.url);
    wasm.initSync({ module: Deno.readFileSync(wasmFile) });
  } catch (err) {
    fail(`cannot load wasm/pkg-web (run bash wasm/build.sh first): ${err.message}`);
  }
  if (Deno.args.some((arg) => arg === "--port" || arg === "-p" || arg.startsWith("--port="))) {
    fail("--port is deno serve's: put it before the file name");
  }
  const { service, purgeMs, onSighup } = startHost({
    command: COMMAND,
    wasm,
    args: Deno.args,
    log,
    fail,
    help,
    port: false,
  });
  Deno.addSignalListener("SIGHUP", onSighup);
  const purgeTimer = startPurgeTimer(service, purgeMs, log);
  for (const signal of ["SIGTERM", "SIGINT"]) {
    // deno serve stops accepting and lets in-flight requests finish; once the timer is
    // gone nothing else keeps the process alive, and it exits 0.
    Deno.addSignalListener(signal, () => {
      log(`${signal}: shutting down`);
      clearInterval(purgeTimer);
      // Unref'd: it cuts only a drain still running then, never keeps the process alive.
      Deno.unrefTimer(setTimeout(() => Deno.exit(0), SHUTDOWN_GRACE_MS));
    });
  }
  return service;
}

const service = start();

export default {
  fetch: (request) => respond(service, request).catch((err) => failed(err, log)),
};
