// Bun host of token-server: the ES-module wasm build (wasm/pkg-web) behind Bun.serve.
//
//   bash wasm/build.sh    # once, builds wasm/pkg-web
//   bun wasm/edge/bun.mjs [--port N] [--token-lifetime D] [--purge-interval D] [--dump]
//
// Flags come from flags.mjs and every answer from handler.mjs, shared with the other hosts.
import * as wasm from "../pkg-web/token_server_wasm.js";
import { failed, respond, startPurgeTimer } from "./handler.mjs";
import { HOST, exitWithError, startHost } from "./flags.mjs";

const log = (line) => process.stderr.write(`${line}\n`);

async function main() {
  const wasmFile = new URL("../pkg-web/token_server_wasm_bg.wasm", import.meta.url);
  try {
    wasm.initSync({ module: await Bun.file(wasmFile).arrayBuffer() });
  } catch (err) {
    exitWithError(`cannot load wasm/pkg-web (run bash wasm/build.sh first): ${err.message}`);
  }
  const { port, service, purgeMs, onSighup } = startHost({
    command: "bun wasm/edge/bun.mjs",
    wasm,
    args: Bun.argv.slice(2),
    log,
  });
  process.on("SIGHUP", onSighup);

  let server;
  try {
    server = Bun.serve({
      hostname: HOST,
      port,
      fetch: (request) => respond(service, request).catch((err) => failed(err, log)),
    });
  } catch (err) {
    log(`error: cannot listen on ${HOST}:${port}: ${err.message}`);
    process.exit(1);
  }
  const purgeTimer = startPurgeTimer(service, purgeMs, log);

  let stopping = false;
  const shutdown = async (signal) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: shutting down`);
    clearInterval(purgeTimer);
    // stop() stops accepting and resolves once in-flight requests are answered.
    await server.stop();
    process.exit(0);
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  log(`listening on ${HOST}:${server.port}`);
}

await main();
