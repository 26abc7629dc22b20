// Command-line flags of the edge hosts that run as a process (Node, Bun, Deno). There is no
// parser here: the wasm package's parseFlags reads the arguments with the core's flag table
// (core/src/flags.rs), the native CLI's names, short forms, ranges and messages, and
// flagHelp writes the usage lines from the same table. A flag not on the command line comes
// from its TOKEN_SERVER_<FLAG> variable, as on the native host. This file only turns the
// values into a TokenService, says which flags the process hosts support, and holds the
// start-up the process hosts share.
import fs from "node:fs";
import process from "node:process";
import { describeKeys, loadedWith } from "./handler.mjs";

/** Environment variables of the API keys: a key file's text, or the file's path. */
export const API_KEYS_ENV = "TOKEN_SERVER_API_KEYS";
export const API_KEYS_FILE_ENV = "TOKEN_SERVER_API_KEYS_FILE";

export const HOST = "127.0.0.1";

/** The native flags a process host takes (long names of the core's table). */
export const EDGE_FLAGS = [
  "port",
  "token-lifetime",
  "purge-interval",
  "dump",
  "rotation-grace",
  "revoke-on-reuse",
  "max-session-lifetime",
  "test-clock",
];

/** The flags of a host; `port: false` for a host whose runtime owns the address (deno serve). */
function flagsOf({ port = true } = {}) {
  return port ? EDGE_FLAGS : EDGE_FLAGS.filter((name) => name !== "port");
}

/**
 * The help text; `command` is how this host is started, `wasm` the loaded package
 * ({ flagHelp }). `port: false` for a host whose runtime owns the address.
 */
export function usage(command, wasm, options = {}) {
  return `usage: ${command} [options]
${wasm.flagHelp(flagsOf(options), true)}  -h, --help                     Print this help message
environment:
  ${API_KEYS_ENV}       API keys, one per line (a key file's text); every request
                              then needs Authorization: Bearer <key> with one of them
  ${API_KEYS_FILE_ENV}  the same from a file, reread on SIGHUP`;
}

/** A flag the user got wrong: the host prints the message and the usage, and exits 2. */
export class UsageError extends Error {}

/**
 * Parses `args` into `{ help, port, service, purgeMs, dump }`, building the service from
 * `wasm` ({ parseFlags, TokenService }). Throws UsageError naming the flag; `warn` gets a
 * line for a risky but valid combination. `options.port: false` leaves --port out.
 */
export function parseFlags(args, wasm, warn = (line) => console.error(line), options = {}) {
  let parsed;
  let unreadable = null;
  const env = (name) => {
    try {
      return process.env[name];
    } catch (err) {
      // Deno without --allow-env for this variable: the flag keeps its default.
      unreadable ??= err.message;
      return undefined;
    }
  };
  try {
    parsed = wasm.parseFlags(args, flagsOf(options), env);
  } catch (err) {
    throw new UsageError(err.message);
  }
  if (unreadable !== null) {
    warn(`warning: cannot read TOKEN_SERVER_* variables (${unreadable}): flags come from the command line only; deno needs --allow-env`);
  }
  if (parsed.help) return { help: true };
  if (parsed.version) throw new UsageError("-V/--version: this host has no version of its own");
  const values = parsed.values;
  const sessionOptions = {
    revokeOnReuse: values["revoke-on-reuse"],
    rotationGrace: values["rotation-grace"],
    maxSessionLifetime: values["max-session-lifetime"],
    testClock: values["test-clock"],
  };
  let service;
  try {
    // The performance clock is monotonic and starts at timeOrigin (the wall clock at
    // start): expiry never jumps with the wall clock, as on the native host.
    const now = () => performance.timeOrigin + performance.now();
    service = new wasm.TokenService(values["token-lifetime"], now, values.dump, sessionOptions);
  } catch (err) {
    // The one cross-flag rule (--max-session-lifetime vs --token-lifetime) names both flags.
    throw new UsageError(err.message);
  }
  if (sessionOptions.testClock) {
    warn(
      "WARN --test-clock is on: time stands still unless POST /test-clock/advance or /test-clock/set moves it; for tests only, never in production",
    );
  }
  if (sessionOptions.revokeOnReuse && sessionOptions.rotationGrace === undefined) {
    warn(
      "warning: --revoke-on-reuse without --rotation-grace: two parallel requests with one token will end its session",
    );
  }
  return {
    help: false,
    port: values.port,
    service,
    purgeMs: values["purge-interval"],
    dump: values.dump,
  };
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

/** Prints `error: message` and the usage on stderr and exits 2, as the native CLI does. */
export function exitWithError(message, usage = "") {
  process.stderr.write(`error: ${message}\n${usage}\n`);
  process.exit(2);
}

/** Prints the usage on stdout and exits 0 (-h, --help). */
export function exitWithHelp(usage) {
  process.stdout.write(`${usage}\n`);
  process.exit(0);
}

/**
 * The start-up every process host shares: its usage text, its flags (command line, then
 * TOKEN_SERVER_* variables), its service and its API keys. On a usage error calls
 * `fail(message, usage)`, for -h `help(usage)` (by default {@link exitWithError} and {@link exitWithHelp},
 * through node:process, which Node and Bun have); neither returns. Otherwise returns
 * `{ port, service, purgeMs, dump, reloadKeys, onSighup }`, `reloadKeys` a function for
 * SIGHUP when the keys come from a file, `onSighup` what a host listens to SIGHUP with:
 * `reloadKeys`, or a log line saying there is nothing to reload. Hosts always listen, as
 * the native server does: SIGHUP's default action ends the process, sessions and all.
 */
export function startHost({
  command,
  wasm,
  args,
  log,
  fail = exitWithError,
  help = exitWithHelp,
  port = true,
}) {
  const text = usage(command, wasm, { port });
  let flags;
  let reloadKeys = null;
  try {
    flags = parseFlags(args, loadedWith(wasm, log), log, { port });
    if (!flags.help) reloadKeys = apiKeysFromEnv(flags.service, log);
  } catch (err) {
    if (err instanceof UsageError) fail(err.message, text);
    throw err;
  }
  if (flags.help) help(text);
  const onSighup =
    reloadKeys ?? (() => log("SIGHUP: nothing to reload (no TOKEN_SERVER_API_KEYS_FILE)"));
  return { ...flags, reloadKeys, onSighup };
}
