// Command-line flags of the edge hosts that run as a process (Node, Bun, Deno): parsed here
// once for all of them, with the native CLI's names and short forms, so scripts can switch
// hosts unchanged. Ranges and duration syntax belong to the core: values are handed to the
// wasm package's TokenService and purgeIntervalMillis, which check them as the native CLI does.
//
// Uses `node:util`'s parseArgs, which Node, Bun and Deno all provide.
import fs from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";

import { describeKeys } from "./handler.mjs";

/** Environment variables of the API keys: a key file's text, or the file's path. */
export const API_KEYS_ENV = "TOKEN_SERVER_API_KEYS";
export const API_KEYS_FILE_ENV = "TOKEN_SERVER_API_KEYS_FILE";

export const HOST = "127.0.0.1";
export const DEFAULT_PORT = 3666;

/**
 * The help text; `command` is how this host is started. `port: false` for a host whose
 * runtime owns the address (deno serve).
 */
export function usage(command, { port = true } = {}) {
  const portLine = port
    ? `\n  -p, --port N             port on 127.0.0.1, 0 for a free one (default ${DEFAULT_PORT})`
    : "";
  return `usage: ${command} [options]${portLine}
  -t, --token-lifetime D   token lifetime, between 30min and 96h (default 2h)
  -P, --purge-interval D   how often expired tokens are dropped, between 1s and 90min (default 1min)
      --dump               enable HEAD /dump, which logs live tokens' expiry and metadata
      --rotation-grace D   an exchanged token answers its successor again for D, between 1s and 5min (default off)
      --revoke-on-reuse    an exchanged token presented outside its grace ends its session (default off)
      --max-session-lifetime D
                           a session ends D after its login, between 30min and 400d and not
                           shorter than --token-lifetime (default none)
  -h, --help               this text
environment:
  ${API_KEYS_ENV}       API keys, one per line (a key file's text); every request
                              then needs Authorization: Bearer <key> with one of them
  ${API_KEYS_FILE_ENV}  the same from a file, reread on SIGHUP`;
}

/** A flag the user got wrong: the host prints the message and the usage, and exits 2. */
export class UsageError extends Error {}

function parsePort(text) {
  if (text === undefined) return DEFAULT_PORT;
  // Digits only: Number("") and Number("0x10") would be accepted otherwise.
  if (!/^\d+$/.test(text) || Number(text) > 65535) {
    throw new UsageError(
      `--port '${text}' is not a port number (0 to 65535; 0 picks a free port)`,
    );
  }
  return Number(text);
}

/**
 * Parses `args` into `{ help, port, service, purgeMs, dump }`, building the service from
 * `wasm` ({ TokenService, purgeIntervalMillis, rotationGraceMillis, maxSessionLifetimeMillis }).
 * Throws UsageError naming the flag; `warn` gets a line for a risky but valid combination.
 */
export function parseFlags(args, wasm, warn = (line) => console.error(line)) {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
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
    throw new UsageError(err.message);
  }
  if (values.help) return { help: true };
  const port = parsePort(values.port);
  let service;
  let purgeMs;
  // The session rules, read by the core with the native flags' ranges.
  const options = { revokeOnReuse: values["revoke-on-reuse"] };
  try {
    options.rotationGrace = wasm.rotationGraceMillis(values["rotation-grace"]);
  } catch (err) {
    throw new UsageError(`--rotation-grace: ${err.message}`);
  }
  try {
    options.maxSessionLifetime = wasm.maxSessionLifetimeMillis(values["max-session-lifetime"]);
  } catch (err) {
    throw new UsageError(`--max-session-lifetime: ${err.message}`);
  }
  try {
    // The performance clock is monotonic and starts at timeOrigin (the wall clock at
    // start): expiry never jumps with the wall clock, as on the native host.
    const now = () => performance.timeOrigin + performance.now();
    service = new wasm.TokenService(values["token-lifetime"], now, values.dump, options);
  } catch (err) {
    // The one cross-flag rule names both flags itself.
    throw new UsageError(err.message.startsWith("--") ? err.message : `--token-lifetime: ${err.message}`);
  }
  if (options.revokeOnReuse && options.rotationGrace === undefined) {
    warn(
      "warning: --revoke-on-reuse without --rotation-grace: two parallel requests with one token will end its session",
    );
  }
  try {
    purgeMs = wasm.purgeIntervalMillis(values["purge-interval"]);
  } catch (err) {
    throw new UsageError(`--purge-interval: ${err.message}`);
  }
  return { help: false, port, service, purgeMs, dump: values.dump };
}

/**
 * Sets `service`'s API keys from the environment, if there are any; the core parses them.
 * Returns a function that rereads the key file (for SIGHUP) when they came from
 * TOKEN_SERVER_API_KEYS_FILE, else null. Throws UsageError (exit 2) naming the variable,
 * the file and the line of a bad key set.
 */
export function apiKeysFromEnv(service, log) {
  let inline;
  let file;
  try {
    inline = process.env[API_KEYS_ENV];
    file = process.env[API_KEYS_FILE_ENV];
  } catch (err) {
    // Deno without --allow-env: existing deployments keep starting (keys are opt-in), but
    // the log says no key was looked for.
    log(
      `warning: cannot read ${API_KEYS_ENV} (${err.message}): no API keys, anyone who can reach this port can mint tokens; deno needs --allow-env=${API_KEYS_ENV},${API_KEYS_FILE_ENV}`,
    );
    return null;
  }
  if (inline !== undefined && file !== undefined) {
    throw new UsageError(`set ${API_KEYS_ENV} or ${API_KEYS_FILE_ENV}, not both`);
  }
  if (inline !== undefined) {
    try {
      log(`api keys from ${API_KEYS_ENV}: ${describeKeys(service.setApiKeys(inline))}`);
    } catch (err) {
      throw new UsageError(`${API_KEYS_ENV}: ${err.message}`);
    }
    return null;
  }
  if (file === undefined) return null;
  try {
    log(`api keys from ${file}: ${describeKeys(service.setApiKeys(fs.readFileSync(file, "utf8")))}`);
  } catch (err) {
    throw new UsageError(`${API_KEYS_FILE_ENV}: ${file}: ${err.message}`);
  }
  return () => {
    // A file that fails to load leaves the keys in force.
    try {
      log(`api keys reloaded: ${describeKeys(service.setApiKeys(fs.readFileSync(file, "utf8")))}`);
    } catch (err) {
      log(`api keys not reloaded, the previous keys stay in force: ${file}: ${err.message}`);
    }
  };
}
