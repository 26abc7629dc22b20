// Smoke tests of the edge hosts over the built wasm/pkg: node --test wasm/edge/*.test.mjs
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { createWorker } from "./handler.mjs";

// worker.mjs itself imports the .wasm as a module, which only Workers runtimes do; it is
// createWorker over the web build, tested here over the Node build and in workerd by the
// black-box suite (TOKEN_SERVER_HOST=workerd).
const wasm = createRequire(import.meta.url)("../pkg/token_server_wasm.js");

const SERVER = fileURLToPath(new URL("./server.mjs", import.meta.url));
const JSON_HEADERS = { "content-type": "application/json" };

/** Starts server.mjs on a free port; resolves once it says where it listens. */
async function startServer(args = []) {
  const child = spawn(process.execPath, [SERVER, "--port", "0", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  const address = await new Promise((resolve, reject) => {
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      const match = /listening on (\d+\.\d+\.\d+\.\d+:\d+)/.exec(stderr);
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`server exited ${code}: ${stderr}`)));
  });
  return { child, base: `http://${address}`, stderr: () => stderr };
}

async function stop(child) {
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const [code] = await exited;
  return code;
}

test("server.mjs serves the REST API and exits 0 on SIGTERM", async () => {
  const { child, base } = await startServer();
  try {
    const created = await fetch(`${base}/token`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({ meta: { name: "My user" } }),
    });
    assert.equal(created.status, 200);
    assert.equal(created.headers.get("content-type"), "text/plain; charset=utf-8");
    const token = await created.text();

    const rotated = await fetch(`${base}/token`, {
      method: "PUT",
      headers: JSON_HEADERS,
      body: JSON.stringify({ token, meta: { year: 2022 } }),
    });
    assert.equal(rotated.headers.get("content-type"), "application/json");
    const { Ok } = await rotated.json();
    assert.deepEqual(Ok.meta, { name: "My user", year: 2022 });

    const again = await fetch(`${base}/token`, {
      method: "PUT",
      headers: JSON_HEADERS,
      body: JSON.stringify({ token }),
    });
    assert.equal(await again.text(), '{"Err":"InvalidToken"}');

    const removed = await fetch(`${base}/token`, {
      method: "DELETE",
      headers: JSON_HEADERS,
      body: JSON.stringify({ token: Ok.token }),
    });
    assert.equal(removed.status, 202);
    assert.equal(removed.headers.get("content-type"), null);
    assert.equal(await removed.text(), "");

    const wrong = await fetch(`${base}/token`);
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get("allow"), "POST, PUT, DELETE");

    const huge = await fetch(`${base}/token`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({ meta: { x: "a".repeat(70_000) } }),
    });
    assert.equal(huge.status, 413);
    assert.match(await huge.text(), /larger than the limit of 65536 bytes/);

    const dump = await fetch(`${base}/dump`, { method: "HEAD" });
    assert.equal(dump.status, 404, "dump is off without --dump");
  } finally {
    assert.equal(await stop(child), 0);
  }
});

test("server.mjs logs the dump with --dump and refuses bad options", async () => {
  const { child, base, stderr } = await startServer(["--dump", "--token-lifetime", "30min"]);
  try {
    await fetch(`${base}/token`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: '{"meta":{"n":1}}',
    });
    const dump = await fetch(`${base}/dump`, { method: "HEAD" });
    assert.equal(dump.status, 202);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.match(stderr(), /INFO dump of 1 live tokens\nINFO expires=\S+Z meta=\{"n":1\}/);
  } finally {
    assert.equal(await stop(child), 0);
  }

  const bad = spawn(process.execPath, [SERVER, "--token-lifetime", "29min"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let text = "";
  bad.stderr.on("data", (chunk) => (text += chunk));
  const [code] = await once(bad, "exit");
  assert.equal(code, 2);
  assert.match(text, /out of range: allowed is 30min to 96h/);
});

/** A Worker over the Node build, with a fake clock; logs into `lines`. */
function testWorker({ clock, env = {} } = {}) {
  const lines = [];
  const worker = createWorker(() => wasm, { clock, log: (line) => lines.push(line) });
  const handle = (request) => worker.fetch(request, env);
  return { worker, handle, lines };
}

test("worker fetch handler answers like the server, driven by a fake clock", async () => {
  let now = 1_000_000;
  const { worker, handle } = testWorker({ clock: () => now, env: { TOKEN_LIFETIME: "30min" } });
  assert.equal(worker.service, null, "no store before the first request");
  const post = (path, body) =>
    handle(new Request(`http://edge${path}`, { method: "POST", headers: JSON_HEADERS, body }));
  const put = (body) =>
    handle(new Request("http://edge/token", { method: "PUT", headers: JSON_HEADERS, body }));

  const created = await post("/token", '{"meta":{"a":1}}');
  assert.equal(created.status, 200);
  const token = await created.text();
  now += 30 * 60_000;
  const expired = await put(JSON.stringify({ token }));
  assert.equal(await expired.text(), '{"Err":"InvalidToken"}');

  const missing = await post("/nothing", "{}");
  assert.equal(missing.status, 404);
});

/**
 * A body of `total` bytes in `chunk`-byte pieces with no declared length (as a chunked
 * upload arrives), recording how much of it was pulled and whether it was cancelled.
 */
function meteredBody(total, chunk) {
  const seen = { pulled: 0, cancelled: false };
  const piece = new TextEncoder().encode(" ".repeat(chunk));
  const stream = new ReadableStream({
    pull(controller) {
      if (seen.pulled >= total) {
        controller.close();
        return;
      }
      seen.pulled += piece.byteLength;
      controller.enqueue(piece);
    },
    cancel() {
      seen.cancelled = true;
    },
  });
  return { stream, seen };
}

test("worker answers 413 to a chunked body past the limit without reading the rest", async () => {
  const { handle } = testWorker();
  const limit = new wasm.TokenService().maxBodyBytes;
  const chunk = 16 * 1024;
  const { stream, seen } = meteredBody(256 * 1024 * 1024, chunk);
  const request = new Request("http://edge/token", {
    method: "POST",
    headers: JSON_HEADERS,
    body: stream,
    duplex: "half",
  });
  assert.equal(request.headers.get("content-length"), null);
  const reply = await handle(request);
  assert.equal(reply.status, 413);
  assert.match(await reply.text(), /larger than the limit of 65536 bytes/);
  assert.ok(seen.cancelled, "the body stream was cancelled");
  // One chunk past the limit, and at most what the stream queued ahead of the reader.
  assert.ok(seen.pulled <= limit + 2 * chunk, `read ${seen.pulled} bytes of the body`);

  // A chunked body within the limit is read whole and answered.
  const meta = JSON.stringify({ meta: { pad: "x".repeat(limit - 100) } });
  const pieces = new TextEncoder().encode(meta);
  let at = 0;
  const small = new ReadableStream({
    pull(controller) {
      if (at >= pieces.length) return controller.close();
      controller.enqueue(pieces.slice(at, at + 1000));
      at += 1000;
    },
  });
  const ok = await handle(
    new Request("http://edge/token", {
      method: "POST",
      headers: JSON_HEADERS,
      body: small,
      duplex: "half",
    }),
  );
  assert.equal(ok.status, 200, await ok.clone().text());
});

test("worker logs the dump with DUMP=true and purges when the interval passed", async () => {
  let now = 5_000_000;
  const { worker, handle, lines } = testWorker({
    clock: () => now,
    env: { TOKEN_LIFETIME: "30min", PURGE_INTERVAL: "1s", DUMP: "true" },
  });
  const login = () =>
    handle(
      new Request("http://edge/token", {
        method: "POST",
        headers: JSON_HEADERS,
        body: '{"meta":{"n":1}}',
      }),
    );
  assert.equal((await login()).status, 200);
  const dump = await handle(new Request("http://edge/dump", { method: "HEAD" }));
  assert.equal(dump.status, 202);
  // The core's own log lines, reaching the Worker's log through logTo.
  assert.equal(lines[0], "INFO dump of 1 live tokens");
  assert.match(lines[1], /^INFO expires=\S+Z meta=\{"n":1\}$/);
  now += 30 * 60_000;
  // The next request finds the interval passed and purges the expired token first.
  assert.equal((await login()).status, 200);
  assert.equal(worker.service.size, 1);
});

test("worker takes the session rules and the test clock from its environment", async () => {
  const { handle, lines } = testWorker({
    env: { ROTATION_GRACE: "30s", REVOKE_ON_REUSE: "true", TEST_CLOCK: "true" },
  });
  const send = (method, path, body) =>
    handle(new Request(`http://edge${path}`, { method, headers: JSON_HEADERS, body }));
  const a = await (await send("POST", "/token", '{"meta":{}}')).text();
  assert.match(lines.join("\n"), /WARN --test-clock is on.*for tests only/);
  const b = JSON.parse(await (await send("PUT", "/token", JSON.stringify({ token: a }))).text());
  // Inside the grace the same successor comes back.
  const replay = JSON.parse(await (await send("PUT", "/token", JSON.stringify({ token: a }))).text());
  assert.equal(replay.Ok.token, b.Ok.token);
  const moved = await send("POST", "/test-clock/advance", '{"by":"31s"}');
  assert.equal(moved.status, 200);
  // Past it, the reuse ends the session (revoke on reuse), and the core says so.
  await send("PUT", "/token", JSON.stringify({ token: a }));
  const after = await (await send("PUT", "/token", JSON.stringify({ token: b.Ok.token }))).text();
  assert.equal(after, '{"Err":"InvalidToken"}');
  assert.match(lines.join("\n"), /WARN an old token was presented outside its rotation grace/);
});

test("the process hosts' flags are parsed by the core's flag table", () => {
  const names = ["port", "token-lifetime", "dump", "rotation-grace"];
  const parsed = wasm.parseFlags(["-t", "8h", "--dump"], names);
  assert.deepEqual(parsed.values, { port: 3666, "token-lifetime": 8 * 3600 * 1000, dump: true });
  assert.deepEqual(wasm.parseFlags(["-h"], names), { help: true });
  assert.throws(
    () => wasm.parseFlags(["--rotation-grace", "6min"], names),
    /^Error: --rotation-grace: '6min' is out of range: allowed is 1s to 5min$/,
  );
  assert.throws(() => wasm.parseFlags(["-p", "70000"], names), /-p\/--port: '70000' is not a port/);
  // A native flag this host does not take is refused, not ignored.
  assert.throws(() => wasm.parseFlags(["--state-file", "x"], names), /--state-file/);
  const help = wasm.flagHelp(names);
  assert.match(help, /-t, --token-lifetime DURATION\s+How long a token remains valid, between 30min and 96h\s+\(default: 2h\)/);
  assert.doesNotMatch(help, /state-file|TOKEN_SERVER_/);
});

test("the process hosts read a flag missing from the command line from its TOKEN_SERVER_ variable", () => {
  const names = ["port", "token-lifetime", "dump"];
  const env = { TOKEN_SERVER_TOKEN_LIFETIME: "8h", TOKEN_SERVER_DUMP: "1", TOKEN_SERVER_PORT: "4000" };
  const lookup = (name) => env[name];
  assert.deepEqual(wasm.parseFlags([], names, lookup).values, {
    port: 4000,
    "token-lifetime": 8 * 3600 * 1000,
    dump: true,
  });
  // The command line wins over the variable.
  assert.equal(wasm.parseFlags(["-p", "5000"], names, lookup).values.port, 5000);
  // A bad value names the variable and the range.
  assert.throws(
    () => wasm.parseFlags([], names, (name) => (name === "TOKEN_SERVER_TOKEN_LIFETIME" ? "1min" : undefined)),
    /TOKEN_SERVER_TOKEN_LIFETIME: '1min' is out of range: allowed is 30min to 96h/,
  );
  // Without a lookup nothing is read (the Worker hosts have bindings instead).
  assert.equal(wasm.parseFlags([], names).values.port, 3666);
  assert.match(wasm.flagHelp(names, true), /TOKEN_SERVER_TOKEN_LIFETIME/);
});

test("worker checks the TOKEN_SERVER_API_KEYS secret through the core", async () => {
  const key = "edge-key-0123456789abcdefghijklmnopqrstuv";
  const { worker, handle, lines } = testWorker({
    env: { TOKEN_SERVER_API_KEYS: `# edge\n${key}\n` },
  });
  const login = (authorization) =>
    handle(
      new Request("http://edge.test/token", {
        method: "POST",
        headers: authorization ? { ...JSON_HEADERS, authorization } : JSON_HEADERS,
        body: JSON.stringify({ meta: { name: "My user" } }),
      }),
    );
  const refused = await login(null);
  assert.equal(refused.status, 401);
  assert.match(refused.headers.get("www-authenticate"), /^Bearer/);
  assert.equal((await login(`Bearer ${key.replace("edge", "gone")}`)).status, 401);
  assert.equal(worker.service.size, 0);
  assert.equal((await login(`Bearer ${key}`)).status, 200);
  assert.match(lines.join("\n"), /api keys from TOKEN_SERVER_API_KEYS: 1 keys \(fingerprints [0-9a-f]{8}\)/);
  assert.ok(!lines.join("\n").includes(key), "a key was logged");

  // A bad secret fails closed: 500 on every request, logged naming the line.
  const bad = testWorker({ env: { TOKEN_SERVER_API_KEYS: "short\n" } });
  const answer = await bad.handle(new Request("http://edge.test/livez"));
  assert.equal(answer.status, 500);
  assert.match(bad.lines.join("\n"), /line 1: .*at least 32/);
});

/** Sends `head` (latin1: one byte per character) and `body` over a raw socket; the status. */
async function rawStatus(base, head, body) {
  const { hostname, port } = new URL(base);
  const net = await import("node:net");
  const socket = net.connect(Number(port), hostname);
  await once(socket, "connect");
  socket.write(Buffer.from(`${head}Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`, "latin1"));
  socket.end(body);
  let answer = "";
  socket.setEncoding("latin1");
  for await (const chunk of socket) answer += chunk;
  return Number(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1]);
}

// The native server reads a header value with a byte outside visible ASCII (obs-text)
// as absent (http's HeaderValue::to_str); the hosts got it decoded as latin1 and answered
// otherwise: 200 where native says 415, an unknown key where native says none was sent.
test("the hosts read a header value with a non-ASCII byte as absent, as the native server does", async () => {
  const contentType = "application/json; charset=\u00e9";
  const { child, base } = await startServer();
  try {
    const status = await rawStatus(
      base,
      `POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: ${contentType}\r\n`,
      '{"meta":{}}',
    );
    assert.equal(status, 415);
  } finally {
    await stop(child);
  }

  const { handle } = testWorker();
  const post = (headers) =>
    handle(new Request("http://edge/token", { method: "POST", headers, body: '{"meta":{}}' }));
  assert.equal((await post({ "content-type": contentType })).status, 415);
  assert.equal((await post(JSON_HEADERS)).status, 200);

  const key = "k".repeat(40);
  const keyed = testWorker({ env: { TOKEN_SERVER_API_KEYS: `${key}\n` } });
  const refused = await keyed.handle(
    new Request("http://edge/token", {
      method: "POST",
      headers: { ...JSON_HEADERS, authorization: `Bearer ${key}\u00e9` },
      body: '{"meta":{}}',
    }),
  );
  assert.equal(refused.status, 401);
  assert.equal(refused.headers.get("www-authenticate"), 'Bearer realm="token-server"');
});
