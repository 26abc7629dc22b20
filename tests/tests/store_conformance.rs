//! One suite of store behaviours, run against every store with the same assertions: the
//! in-memory store (through `Service::handle`), Redis and Redis Cluster (through
//! `RedisStore::handle`, the protocol's decode and encode around the Redis store). So the
//! stores cannot drift apart; and with the same seeded randomness, the same requests get
//! byte-identical replies from the in-memory store and from Redis.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use token_server::redis_store::{RedisConfig, RedisStore, RedisTarget};
use token_server_core::protocol::{Body, Command, Done, Reply, Request, Service};
use token_server_core::session::SessionRules;
use token_server_core::{ManualClock, MetaLimits, SeededRandom, TokenStore};
use token_server_tests::{redis_available, RedisCluster, RedisServer};

/// Which store a suite runs against.
#[derive(Clone)]
enum Backend {
    Memory,
    Redis(RedisTarget),
}

/// One store under test, with the protocol in front of it and a clock moved by hand.
struct Harness {
    service: Arc<Service<ManualClock, SeededRandom>>,
    clock: ManualClock,
    redis: Option<Arc<RedisStore>>,
    runtime: Arc<tokio::runtime::Runtime>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

impl Harness {
    fn new(backend: &Backend, rules: SessionRules, seed: u64) -> Harness {
        Harness::new_at(backend, rules, seed, now_ms())
    }

    /// A harness whose clock starts at `start` (ms since the epoch): near the real time,
    /// as Redis expires keys on its own clock (PEXPIREAT).
    fn new_at(backend: &Backend, rules: SessionRules, seed: u64, start: u64) -> Harness {
        static PREFIXES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let clock = ManualClock::new(start);
        let store = TokenStore::new(rules.token_lifetime, clock.clone(), SeededRandom::new(seed))
            .with_rules(rules);
        let service = Arc::new(Service::new(store).with_dump(true));
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        );
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis(target) => {
                let config = RedisConfig {
                    target: target.clone(),
                    prefix: format!(
                        "conformance-{}-{}:",
                        std::process::id(),
                        PREFIXES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ),
                    timeout: Duration::from_secs(5),
                };
                Some(Arc::new(
                    runtime.block_on(RedisStore::connect(&config)).unwrap(),
                ))
            }
        };
        Harness {
            service,
            clock,
            redis,
            runtime,
        }
    }

    fn request(&self, method: &str, body: &str) -> Reply {
        let request = Request {
            method,
            path: "/token",
            content_type: Some("application/json"),
            authorization: None,
            body: Body::Complete(body.as_bytes()),
        };
        match &self.redis {
            None => self.service.handle(&request),
            Some(redis) => self.runtime.block_on(redis.handle(&self.service, &request)),
        }
    }

    fn login(&self, meta: Value) -> String {
        let reply = self.request("POST", &json!({ "meta": meta }).to_string());
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.body
    }

    fn rotate(&self, token: &str, meta: Option<Value>) -> Reply {
        let body = match meta {
            Some(meta) => json!({ "token": token, "meta": meta }),
            None => json!({ "token": token }),
        };
        self.request("PUT", &body.to_string())
    }

    /// The successor token of a rotation answered 200, else `None`.
    fn next(&self, token: &str) -> Option<String> {
        let reply = self.rotate(token, None);
        let value: Value = serde_json::from_str(&reply.body).ok()?;
        value["Ok"]["token"].as_str().map(str::to_string)
    }

    fn logout(&self, token: &str) {
        let reply = self.request("DELETE", &json!({ "token": token }).to_string());
        assert_eq!(reply.status, 202);
    }

    /// Every live session's metadata, as `HEAD /dump` lists them.
    fn dump(&self) -> Vec<String> {
        let entries = match &self.redis {
            None => self.service.store().dump(),
            Some(redis) => match self
                .runtime
                .block_on(redis.run(self.service.store(), Command::Dump))
            {
                Ok(Done::Dumped(entries)) => entries,
                other => panic!("dump gave {other:?}"),
            },
        };
        let mut metas: Vec<String> = entries.iter().map(|e| e.meta.to_string()).collect();
        metas.sort();
        metas
    }
}

fn rules(grace: Option<u64>, revoke: bool, max_session: Option<u64>) -> SessionRules {
    SessionRules {
        rotation_grace: grace.map(Duration::from_secs),
        revoke_on_reuse: revoke,
        max_session_lifetime: max_session.map(Duration::from_secs),
        ..SessionRules::new(Duration::from_secs(1800))
    }
}

fn ok(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{reply:?}");
    let value: Value = serde_json::from_str(&reply.body).unwrap();
    assert!(value["Ok"].is_object(), "not Ok: {}", reply.body);
    value["Ok"].clone()
}

fn invalid(reply: &Reply) {
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"Err":"InvalidToken"}"#)
    );
}

/// Every behaviour, against `backend`.
fn conformance(backend: Backend) {
    // One-time rotation, key-by-key merge.
    let h = Harness::new(&backend, rules(None, false, None), 1);
    let a = h.login(json!({"user": "ann", "year": 2022}));
    let b = ok(&h.rotate(&a, Some(json!({"year": 2023, "x": [1]}))));
    assert_eq!(b["meta"], json!({"user": "ann", "year": 2023, "x": [1]}));
    invalid(&h.rotate(&a, None));
    let b = b["token"].as_str().unwrap().to_string();
    let c = ok(&h.rotate(&b, None));
    assert_eq!(c["meta"]["year"], 2023);
    invalid(&h.rotate("not a token", None));
    invalid(&h.rotate("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", None));

    // Metadata limits: refused with 422, the token presented still works.
    let limited = {
        let mut h = Harness::new(&backend, rules(None, false, None), 2);
        let store = TokenStore::new(
            Duration::from_secs(1800),
            h.clock.clone(),
            SeededRandom::new(2),
        )
        .with_meta_limits(MetaLimits {
            max_bytes: 1024,
            ..MetaLimits::default()
        });
        h.service = Arc::new(Service::new(store));
        h
    };
    let t = limited.login(json!({"a": 1}));
    let refused = limited.rotate(&t, Some(json!({"big": "x".repeat(2000)})));
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(ok(&limited.rotate(&t, None))["meta"], json!({"a": 1}));

    // DELETE ends the session; an unknown token is accepted too.
    let t = h.login(json!({"n": 1}));
    h.logout(&t);
    invalid(&h.rotate(&t, None));
    h.logout(&t);

    // Expiry after the token lifetime, from the last exchange.
    let t = h.login(json!({}));
    h.clock.advance(Duration::from_secs(1799));
    let t = h.next(&t).expect("alive at 29:59");
    h.clock.advance(Duration::from_secs(1800));
    invalid(&h.rotate(&t, None));

    // Grace: the same successor for replays, the update applied; over after the grace.
    let g = Harness::new(&backend, rules(Some(10), false, None), 3);
    let a = g.login(json!({"k": 0}));
    let b = ok(&g.rotate(&a, None));
    let again = ok(&g.rotate(&a, Some(json!({"k": 1}))));
    assert_eq!(again["token"], b["token"]);
    assert_eq!(again["meta"], json!({"k": 1}));
    g.clock.advance(Duration::from_secs(10));
    invalid(&g.rotate(&a, None));
    let b = b["token"].as_str().unwrap();
    assert!(g.next(b).is_some(), "the successor works after the grace");

    // Revocation on reuse: an old token outside its grace ends the session.
    let r = Harness::new(&backend, rules(Some(5), true, None), 4);
    let a = r.login(json!({}));
    let b = r.next(&a).unwrap();
    r.clock.advance(Duration::from_secs(6));
    invalid(&r.rotate(&a, None));
    invalid(&r.rotate(&b, None));
    // A made-up token revokes nothing.
    let live = r.login(json!({}));
    invalid(&r.rotate("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", None));
    assert!(r.next(&live).is_some());

    // Absolute session lifetime, however often it rotates.
    let m = Harness::new(&backend, rules(None, false, Some(3600)), 5);
    let mut t = m.login(json!({}));
    for _ in 0..3 {
        m.clock.advance(Duration::from_secs(1000));
        t = m.next(&t).expect("inside the session's lifetime");
    }
    m.clock.advance(Duration::from_secs(601));
    invalid(&m.rotate(&t, None));

    // The dump lists live sessions only, never a token.
    let d = Harness::new(&backend, rules(None, false, None), 6);
    let gone = d.login(json!({"who": "gone"}));
    d.login(json!({"who": "kept"}));
    d.logout(&gone);
    assert_eq!(d.dump(), vec![r#"{"who":"kept"}"#.to_string()]);

    // Racing rotations of one token: exactly one winner.
    let race = Arc::new(Harness::new(&backend, rules(None, false, None), 7));
    let token = race.login(json!({}));
    let winners: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let (race, token) = (race.clone(), token.clone());
                scope.spawn(move || usize::from(race.next(&token).is_some()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(winners, 1);
}

/// The same requests through the in-memory store and through `backend`, both on the
/// same seed and clock: every reply identical, byte for byte.
fn same_replies_as_memory(backend: Backend) {
    let start = now_ms();
    let memory = Harness::new_at(
        &Backend::Memory,
        rules(Some(10), true, Some(7200)),
        42,
        start,
    );
    let other = Harness::new_at(&backend, rules(Some(10), true, Some(7200)), 42, start);
    let script: Vec<(&str, String)> = vec![("POST", json!({"meta": {"a": 1}}).to_string())];
    let mut replies = Vec::new();
    for harness in [&memory, &other] {
        let mut log = Vec::new();
        let first = harness.request(script[0].0, &script[0].1);
        let a = first.body.clone();
        log.push(first);
        let b = harness.rotate(&a, Some(json!({"b": 2})));
        let b_token = serde_json::from_str::<Value>(&b.body).unwrap()["Ok"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        log.push(b);
        log.push(harness.rotate(&a, Some(json!({"c": 3}))));
        log.push(harness.rotate(&a, Some(json!({"deep": {"x": [1, 2]}, "a": null}))));
        log.push(harness.request("PUT", r#"{"token":"short"}"#));
        log.push(harness.request("PUT", r#"{"meta":{}}"#));
        log.push(harness.request("POST", r#"{"meta":[]}"#));
        harness.clock.advance(Duration::from_secs(11));
        log.push(harness.rotate(&b_token, None));
        log.push(harness.rotate(&a, None));
        log.push(harness.rotate(&b_token, None));
        log.push(harness.request("DELETE", &json!({"token": b_token}).to_string()));
        replies.push(log);
    }
    assert_eq!(replies[0], replies[1]);
}

fn skip_without_redis(test: &str) -> bool {
    if redis_available() {
        return false;
    }
    eprintln!("skipped {test}: redis-server is not installed (tests/run-all.sh installs it)");
    true
}

#[test]
fn the_in_memory_store_conforms() {
    conformance(Backend::Memory);
}

#[test]
fn redis_conforms_and_answers_as_the_in_memory_store() {
    if skip_without_redis("redis_conforms_and_answers_as_the_in_memory_store") {
        return;
    }
    let redis = RedisServer::start();
    conformance(Backend::Redis(RedisTarget::Single(redis.url())));
    same_replies_as_memory(Backend::Redis(RedisTarget::Single(redis.url())));
}

#[test]
fn redis_cluster_conforms_and_answers_as_the_in_memory_store() {
    if skip_without_redis("redis_cluster_conforms_and_answers_as_the_in_memory_store") {
        return;
    }
    let cluster = RedisCluster::start();
    let urls: Vec<String> = cluster.urls().split(',').map(str::to_string).collect();
    conformance(Backend::Redis(RedisTarget::Cluster(urls.clone())));
    same_replies_as_memory(Backend::Redis(RedisTarget::Cluster(urls)));
    // Sessions spread over the nodes' slots, and each is one key.
    let keys = cluster.everything();
    assert!(keys.iter().all(|(key, _)| key.starts_with("conformance-")));
}
