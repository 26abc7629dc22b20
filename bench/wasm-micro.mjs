//! Wasm micro-benchmarks (issue 4, target 5): ns per create, rotate, remove and purged
//! token through the wasm build in Node, the same figures core-micro prints natively.
//!
//! Also the JSON-text paths (createJson, rotateJson), JSON.stringify and JSON.parse on the
//! JS side counted in: what a host holding JSON (an HTTP body) pays. bench/run.sh sets the
//! create and rotate figures beside core-micro's of the same run.
//!
//! Usage: node bench/wasm-micro.mjs [ops]   (run by bench/run.sh when wasm/pkg exists)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { TokenStore } = require('../wasm/pkg/token_server_wasm.js');

const ops = Number(process.argv[2] ?? 200000);
const meta = { name: 'bench user', year: 2026, period: 11 };
const HOUR_MS = 3600 * 1000;
let fakeNowMs = 1_700_000_000_000;
const store = new TokenStore('2h', () => fakeNowMs);

function time(name, fn) {
  const started = process.hrtime.bigint();
  fn();
  const ns = Number(process.hrtime.bigint() - started) / ops;
  console.log(`wasm ${name}`.padEnd(45) + ns.toFixed(1).padStart(12) + ' ns/op');
  // A machine-readable line for bench/run.sh.
  console.log(`FIGURE wasm_${name.replace(/[^a-z]+/g, '_').replace(/_$/, '')}_ns ${ns.toFixed(1)}`);
}

// Warm-up: every path below runs WARM_UP_OPS times on a store of its own first, untimed.
// V8 runs a function's first calls in its baseline tiers (Liftoff for wasm, Ignition and
// Sparkplug for JS) and swaps in TurboFan's code later, in the background; without this the
// first figures partly time compilation, which the natively compiled core-micro does not.
const WARM_UP_OPS = Math.min(ops, 50000);
{
  const warm = new TokenStore('2h', () => fakeNowMs);
  for (let i = 0; i < WARM_UP_OPS; i++) {
    const created = warm.create(meta);
    const rotated = warm.rotate(warm.rotate(created).token, { year: 2027 });
    warm.remove(rotated.token);
    const json = JSON.parse(warm.rotateJson(warm.createJson(JSON.stringify(meta))));
    warm.remove(json.token);
  }
  warm.purge();
  warm.free();
}

let tokens = new Array(ops);
time('create', () => {
  for (let i = 0; i < ops; i++) tokens[i] = store.create(meta);
});
time('rotate', () => {
  for (let i = 0; i < ops; i++) {
    const rotated = store.rotate(tokens[i]);
    if (!rotated.ok) throw new Error('rotation failed');
    tokens[i] = rotated.token;
  }
});
time('rotate_merge', () => {
  for (let i = 0; i < ops; i++) {
    const rotated = store.rotate(tokens[i], { year: 2027 });
    if (!rotated.ok) throw new Error('rotation failed');
    tokens[i] = rotated.token;
  }
});
time('remove', () => {
  for (let i = 0; i < ops; i++) {
    if (!store.remove(tokens[i])) throw new Error('remove failed');
  }
});

// The JSON-text paths, on a store of their own.
const jsonStore = new TokenStore('2h', () => fakeNowMs);
tokens = new Array(ops);
time('create json', () => {
  for (let i = 0; i < ops; i++) tokens[i] = jsonStore.createJson(JSON.stringify(meta));
});
// The same with the text held, as a host holds a request body: no JSON.stringify per
// login. Set beside core-micro's create from text (issue 12's like-for-like line).
const metaText = JSON.stringify(meta);
const heldStore = new TokenStore('2h', () => fakeNowMs);
time('create json text held', () => {
  for (let i = 0; i < ops; i++) heldStore.createJson(metaText);
});
heldStore.free();
time('rotate json', () => {
  for (let i = 0; i < ops; i++) {
    const rotated = JSON.parse(jsonStore.rotateJson(tokens[i]));
    if (!rotated.ok) throw new Error('rotation failed');
    tokens[i] = rotated.token;
  }
});
// The same with the answer kept as the text it is, as a host that passes it on (an HTTP
// body) does: the next token is read at its fixed place, `{"ok":true,"token":"` being 20
// characters, rather than by JSON.parse. Set beside core-micro's rotate, whose answer is
// the token and the metadata's text too (issue 12's like-for-like line).
const ROTATED_TOKEN_AT = '{"ok":true,"token":"'.length;
time('rotate json text out', () => {
  for (let i = 0; i < ops; i++) {
    const text = jsonStore.rotateJson(tokens[i]);
    if (text.charCodeAt(6) !== 116 /* the t of true */) throw new Error('rotation failed');
    tokens[i] = text.slice(ROTATED_TOKEN_AT, ROTATED_TOKEN_AT + 32);
  }
});
tokens = null;
for (let i = 0; i < ops; i++) store.create(meta);
fakeNowMs += 2 * HOUR_MS;
time('purge (per expired token)', () => {
  const report = store.purge();
  if (report.purged !== ops || report.remaining !== 0) {
    throw new Error(`purge dropped ${report.purged} of ${ops}`);
  }
});
