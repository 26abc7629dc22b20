// Smoke tests of the edge hosts over the built wasm/pkg: node --test wasm/edge/*.test.mjs
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import worker, { createHandler } from "./worker.mjs";

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
    assert.match(stderr(), /dump of 1 live tokens\nexpires=\S+Z meta=\{"n":1\}/);
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

test("worker fetch handler answers like the server, driven by a fake clock", async () => {
  let now = 1_000_000;
  const { fetch: handle } = createHandler({ lifetime: "30min", clock: () => now });
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
  assert.equal(typeof worker.fetch, "function");
});
