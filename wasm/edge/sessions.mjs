// Sessions in Durable Objects: a Worker routes each request to the Durable Object of the
// session its token names (a login to a new one), and that object answers from its one
// session record, kept in its transactional storage as a state-file line.
//
// Every decision is the core's: the Worker asks TokenService.route where a request goes
// (or gets the whole reply, for anything no session is involved in), the object asks
// TokenService.answerSession for the reply and the record to keep. This file only moves
// bytes between them, and, like handler.mjs, runs nothing at import time.
//
// Why idFromName(session id) and not newUniqueId(): a token carries an 8-byte session id
// (its first 8 bytes), and idFromName derives the object's id from it, so routing needs no
// lookup; a newUniqueId id (32 bytes) would need a shared map from session to object, one
// more round trip and one more thing to keep consistent. The session id need not be
// secret: the token's 16-byte secret is what the object checks.
import {
  failed,
  loadedWith,
  optionsFromEnv,
  readRequest,
  serviceFromEnv,
  toResponse,
} from "./handler.mjs";

/** The storage key of the session record (a state-file line) in its object. */
const RECORD_KEY = "session";
/** The storage key of the time (ms) after which the record is of no use. */
const LIVE_UNTIL_KEY = "liveUntil";

/** Headers the Worker hands the object: what the client asked, and the Worker's time. */
const SESSION_HEADER = "x-token-server-session";
const NOW_HEADER = "x-token-server-now";
const METHOD_HEADER = "x-token-server-method";
const PATH_HEADER = "x-token-server-path";

/**
 * The Worker in front: `{ fetch }` over a SESSIONS Durable Object namespace binding.
 * Settings from the environment as for createWorker (TOKEN_LIFETIME, DUMP, the session
 * rules, TEST_CLOCK); the objects read the same. With TEST_CLOCK the Worker's clock is
 * the one /test-clock moves, and each request carries its time to the object.
 */
export function createSessionWorker(load, { log = (line) => console.log(line) } = {}) {
  let service = null;

  function serviceFor(env) {
    if (service === null) {
      // The Worker checks the keys for every session's home.
      service = serviceFromEnv(loadedWith(load(), log), env, undefined, log);
    }
    return service;
  }

  async function route(request, env) {
    const current = serviceFor(env);
    const { method, path, contentType, authorization, body } = await readRequest(
      request,
      current.maxBodyBytes,
    );
    if (body === null) {
      return toResponse(current.handleOversized(method, path, contentType, authorization));
    }
    const decided = current.route(method, path, contentType, body, authorization);
    if (decided.reply) return toResponse(decided.reply);
    const session = decided.login ?? decided.session;
    const stub = env.SESSIONS.get(env.SESSIONS.idFromName(session));
    const headers = {
      [SESSION_HEADER]: session,
      [NOW_HEADER]: String(current.nowMillis()),
      [METHOD_HEADER]: method,
      [PATH_HEADER]: path,
    };
    if (contentType !== null) headers["content-type"] = contentType;
    // Always POST to the object: the client's method travels in a header, so a DELETE
    // body is never at the mercy of a fetch implementation.
    return stub.fetch("https://session.internal/", { method: "POST", headers, body });
  }

  return {
    async fetch(request, env) {
      try {
        return await route(request, env);
      } catch (err) {
        return failed(err, log);
      }
    },
  };
}

/**
 * The Durable Object class holding one session: its record under RECORD_KEY in
 * `state.storage`, answered one request at a time (blockConcurrencyWhile), so 32
 * concurrent exchanges of one token are decided one after the other, as under the native
 * store's shard lock. An alarm at the record's end deletes it, so an abandoned session
 * leaves nothing behind.
 */
export function createSessionObject(load, { log = (line) => console.log(line) } = {}) {
  return class SessionObject {
    constructor(state, env) {
      this.state = state;
      this.env = env;
      /** The Worker's time for the request being answered (ms). */
      this.now = 0;
      this.service = null;
    }

    serviceFor() {
      if (this.service === null) {
        const wasm = loadedWith(load(), log);
        // The object never owns a test clock: the Worker's time arrives with each request.
        const options = { ...optionsFromEnv(this.env, wasm), testClock: false };
        this.service = new wasm.TokenService(this.env.TOKEN_LIFETIME, () => this.now, false, options);
      }
      return this.service;
    }

    async fetch(request) {
      try {
        const session = request.headers.get(SESSION_HEADER);
        const now = Number(request.headers.get(NOW_HEADER));
        const method = request.headers.get(METHOD_HEADER);
        const path = request.headers.get(PATH_HEADER);
        const contentType = request.headers.get("content-type");
        const body = new Uint8Array(await request.arrayBuffer());
        const service = this.serviceFor();
        return await this.state.blockConcurrencyWhile(async () => {
          const storage = this.state.storage;
          const record = (await storage.get(RECORD_KEY)) ?? null;
          this.now = now;
          const reply = service.answerSession(session, record, method, path, contentType, body);
          if (reply.record === null) {
            await storage.deleteAll();
            await storage.deleteAlarm();
          } else if (typeof reply.record === "string") {
            await storage.put({ [RECORD_KEY]: reply.record, [LIVE_UNTIL_KEY]: reply.liveUntil });
            await storage.setAlarm(reply.liveUntil);
          }
          return toResponse(reply);
        });
      } catch (err) {
        return failed(err, log);
      }
    }

    /** The record's end passed (unless a later exchange moved it): forget the session. */
    async alarm() {
      const liveUntil = await this.state.storage.get(LIVE_UNTIL_KEY);
      if (liveUntil !== undefined && Date.now() < liveUntil) {
        await this.state.storage.setAlarm(liveUntil);
        return;
      }
      await this.state.storage.deleteAll();
    }
  };
}
