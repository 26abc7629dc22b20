// Protocol fuzzing without cargo-fuzz: hostile requests into Service::handle; no panic, only documented statuses, refusals change nothing.
//
// Cases per run: PROTOCOL_FUZZ_CASES (default 2000); `core/fuzz.sh SECONDS` loops it with
// fresh seeds for a bounded time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::{Map, Value};
use token_server_core::protocol::{Body, Request, Service};
use token_server_core::{ManualClock, MetaLimits, SeededRandom, TokenStore};

/// Every status the protocol documents.
const STATUSES: [u16; 9] = [200, 202, 400, 404, 405, 413, 415, 422, 503];
/// Small, so 413 shows up with complete bodies too.
const MAX_BODY: usize = 512;
/// Small, so 503 (full) shows up, in the cases that cap the store. Only half do: on a
/// full store every create is refused before it can change anything, so a request that
/// leaked a token when refused would go unnoticed there.
const MAX_TOKENS: usize = 2;
/// How often each of `STATUSES` was answered over the whole run.
static SEEN: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

/// Stands for the live sentinel token inside generated bodies (plain text, so JSON
/// serialization leaves it intact for splicing).
const SENTINEL: &str = "@@SENTINEL@@";

#[derive(Debug, Clone)]
enum FuzzBody {
    Bytes(Vec<u8>),
    TooLarge,
}

#[derive(Debug, Clone)]
struct FuzzRequest {
    method: String,
    path: String,
    content_type: Option<String>,
    body: FuzzBody,
}

/// Wraps bodies in an array or makes them bare values: serde would read a struct from
/// `[{"meta":{}}]` or `["token"]` if the protocol let it.
fn non_object_json() -> impl Strategy<Value = String> {
    prop_oneof![
        shaped_json().prop_map(|body| format!("[{body}]")),
        create_json().prop_map(|body| format!(" [{body}] ")),
        "[A-Za-z0-9_-]{22}".prop_map(|token| format!(r#"["{token}"]"#)),
        json_value().prop_map(|value| value.to_string()),
    ]
}

fn one_of(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::select(items).prop_map(str::to_string)
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => one_of(&["POST", "PUT", "DELETE", "HEAD", "GET", "PATCH", "OPTIONS", "post", "Put", ""]),
        1 => "[A-Z]{0,8}",
        1 => "\\PC{0,8}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => one_of(&["/token", "/dump", "/", "", "/token/", "/TOKEN", "//token", "/token?x=1", "token", "/token\0"]),
        1 => "/[a-z/]{0,12}",
        1 => "\\PC{0,16}",
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        6 => one_of(&[
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            " application/json ;",
            "application/jsonx",
            "application/json-patch+json",
            "text/plain",
            "",
            ";application/json",
        ]).prop_map(Some),
        1 => "\\PC{0,24}".prop_map(Some),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        one_of(&["", "\0", "\u{202e}", "\u{feff}", "\\", "\"", SENTINEL]).prop_map(Value::from),
    ]
}

/// Arbitrary JSON values, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-e]{1,2}|\\PC{0,6}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A token field: mostly strings (random, near-valid, the sentinel), sometimes not a string.
fn token_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(Value::from(SENTINEL)),
        3 => "[A-Za-z0-9_-]{22}".prop_map(Value::from),
        2 => "\\PC{0,30}".prop_map(Value::from),
        1 => json_value(),
    ]
}

/// Objects shaped like the endpoints' bodies, with random values and stray keys.
fn shaped_json() -> impl Strategy<Value = String> {
    (
        proptest::option::of(token_value()),
        proptest::option::of(prop_oneof![
            3 => json_value().prop_map(|v| {
                let mut map = Map::new();
                map.insert("k".into(), v);
                Value::Object(map)
            }),
            1 => json_value(),
        ]),
        proptest::collection::btree_map("[a-z]{1,6}", json_value(), 0..2),
    )
        .prop_map(|(token, meta, extra)| {
            let mut body: Map<String, Value> = extra.into_iter().collect();
            if let Some(token) = token {
                body.insert("token".into(), token);
            }
            if let Some(meta) = meta {
                body.insert("meta".into(), meta);
            }
            Value::Object(body).to_string()
        })
}

/// A well-formed create body with random metadata, so the store fills up (503) now and then.
fn create_json() -> impl Strategy<Value = String> {
    proptest::collection::btree_map("[a-z]{1,3}", json_value(), 0..4).prop_map(|meta| {
        let mut body = Map::new();
        body.insert("meta".into(), Value::Object(meta.into_iter().collect()));
        Value::Object(body).to_string()
    })
}

/// Concatenated JSON-ish fragments: mostly broken, sometimes accidentally valid.
fn json_fragments() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        one_of(&[
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "\"token\"",
            "\"meta\"",
            "\"Ok\"",
            "null",
            "true",
            "1e999",
            "-0",
            "01",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"\\uDFFF\"",
            "\"\\x\"",
            " ",
            "\n",
            "\"",
            "{\"meta\":",
            "{\"token\":",
            "\"a\"",
            "1",
            "NaN",
            "\u{feff}",
        ]),
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

/// Nesting far past serde_json's recursion limit or the metadata depth limit.
fn deep_json() -> impl Strategy<Value = String> {
    (1usize..3000, any::<bool>()).prop_map(|(depth, meta)| {
        if meta {
            format!(
                "{{\"meta\":{}1{}}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            )
        } else {
            format!("{}{}", "[".repeat(depth), "]".repeat(depth / 2))
        }
    })
}

fn body() -> impl Strategy<Value = FuzzBody> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(FuzzBody::Bytes),
        3 => json_fragments().prop_map(|s| FuzzBody::Bytes(s.into_bytes())),
        6 => shaped_json().prop_map(|s| FuzzBody::Bytes(s.into_bytes())),
        3 => create_json().prop_map(|s| FuzzBody::Bytes(s.into_bytes())),
        1 => deep_json().prop_map(|s| FuzzBody::Bytes(s.into_bytes())),
        1 => non_object_json().prop_map(|s| FuzzBody::Bytes(s.into_bytes())),
        1 => Just(FuzzBody::TooLarge),
    ]
}

/// Mostly a real endpoint with a JSON content type, so bodies get parsed; otherwise anything.
fn request() -> impl Strategy<Value = FuzzRequest> {
    let endpoint = proptest::sample::select(
        &[
            ("POST", "/token"),
            ("PUT", "/token"),
            ("DELETE", "/token"),
            ("HEAD", "/dump"),
        ][..],
    )
    .prop_map(|(m, p)| (m.to_string(), p.to_string()));
    let json_type = prop_oneof![
        4 => Just(Some("application/json".to_string())),
        1 => content_type(),
    ];
    prop_oneof![
        3 => (endpoint, json_type, body()),
        1 => ((method(), path()), content_type(), body()),
    ]
    .prop_map(|((method, path), content_type, body)| FuzzRequest {
        method,
        path,
        content_type,
        body,
    })
}

fn create_sentinel(service: &Service<ManualClock, SeededRandom>) -> Option<String> {
    let reply = service.handle(&Request {
        method: "POST",
        path: "/token",
        content_type: Some("application/json"),
        authorization: None,
        body: Body::Complete(br#"{"meta":{"sentinel":true}}"#),
    });
    (reply.status == 200).then_some(reply.body)
}

/// Whether `body` (as sent) named `token` in its top-level "token" field, the way the
/// service reads it.
fn names_token(body: &[u8], token: &str) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("token").and_then(Value::as_str).map(|t| t == token))
        .unwrap_or(false)
}

fn run_case(
    requests: &[FuzzRequest],
    dump: bool,
    seed: u64,
    tight_limits: bool,
    capped: bool,
) -> Result<(), TestCaseError> {
    let mut store = TokenStore::new(
        Duration::from_secs(1800),
        ManualClock::new(0),
        SeededRandom::new(seed),
    );
    if capped {
        store = store.with_max_tokens(MAX_TOKENS);
    }
    if tight_limits {
        store = store.with_meta_limits(MetaLimits {
            max_depth: 3,
            max_keys: 5,
            max_bytes: 64,
        });
    }
    let service = Service::new(store)
        .with_dump(dump)
        .with_max_body_bytes(MAX_BODY);
    let mut sentinel = create_sentinel(&service);
    prop_assert!(sentinel.is_some(), "an empty store must issue a token");

    for (step, fuzz) in requests.iter().enumerate() {
        let bytes = match &fuzz.body {
            FuzzBody::Bytes(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                if text.contains(SENTINEL) {
                    // Splice the live token in where the generator asked for it.
                    let live = sentinel.as_deref().unwrap_or("no-live-sentinel");
                    Some(text.replace(SENTINEL, live).into_bytes())
                } else {
                    Some(bytes.clone())
                }
            }
            FuzzBody::TooLarge => None,
        };
        let request = Request {
            method: &fuzz.method,
            path: &fuzz.path,
            content_type: fuzz.content_type.as_deref(),
            authorization: None,
            body: match &bytes {
                Some(bytes) => Body::Complete(bytes),
                None => Body::TooLarge,
            },
        };
        let len_before = service.store().len();
        let dump_before = service.store().dump();
        let reply = service.handle(&request);

        prop_assert!(
            STATUSES.contains(&reply.status),
            "step {}: undocumented status {} for {:?}",
            step,
            reply.status,
            request
        );
        if let Some(i) = STATUSES.iter().position(|&s| s == reply.status) {
            SEEN[i].fetch_add(1, Ordering::Relaxed);
        }
        if reply.status == 405 {
            prop_assert!(reply.allow.is_some(), "405 without Allow: {:?}", request);
        }
        if reply.status < 300 && fuzz.path == "/token" {
            // serde reads structs from arrays too; the protocol must not.
            let accepted = bytes
                .as_deref()
                .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok());
            prop_assert!(
                accepted.as_ref().is_some_and(Value::is_object),
                "step {}: accepted a body that is not a JSON object: {:?}",
                step,
                request
            );
        }
        if reply.status >= 400 {
            prop_assert_eq!(
                service.store().len(),
                len_before,
                "step {}: refused {} changed the store: {:?}",
                step,
                reply.status,
                request
            );
            prop_assert_eq!(
                service.store().dump(),
                dump_before,
                "step {}: refused {} changed a token: {:?}",
                step,
                reply.status,
                request
            );
            continue;
        }
        // An accepted PUT or DELETE naming the sentinel legitimately consumes it.
        let consumed = matches!(fuzz.method.as_str(), "PUT" | "DELETE")
            && fuzz.path == "/token"
            && match (&bytes, &sentinel) {
                (Some(bytes), Some(live)) => names_token(bytes, live),
                _ => false,
            };
        if consumed {
            sentinel = if fuzz.method == "PUT" {
                let answer: Value = serde_json::from_str(&reply.body)
                    .map_err(|e| TestCaseError::fail(format!("PUT answer not JSON: {e}")))?;
                let next = answer["Ok"]["token"].as_str().map(str::to_string);
                prop_assert!(
                    next.is_some(),
                    "step {}: live sentinel refused: {}",
                    step,
                    reply.body
                );
                next
            } else {
                create_sentinel(&service)
            };
        }
    }

    if let Some(live) = sentinel {
        let rotated = service.store().rotate(&live, None);
        prop_assert!(
            rotated.is_ok(),
            "the sentinel no longer rotates: {:?}",
            rotated
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROTOCOL_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn hostile_requests_get_documented_answers_and_change_nothing_when_refused() {
    // Config::default() reads the PROPTEST_* variables (e.g. PROPTEST_RNG_SEED) first.
    // Failing cases are saved next to this file (tests run from core/) and replayed first
    // on later runs.
    let config = Config {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/protocol_fuzz.proptest-regressions",
        ))),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (
        proptest::collection::vec(request(), 1..10),
        any::<bool>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    );
    let result = runner.run(&strategy, |(requests, dump, seed, tight, capped)| {
        run_case(&requests, dump, seed, tight, capped)
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let seen: Vec<(u16, u64)> = STATUSES
        .iter()
        .zip(&SEEN)
        .map(|(&status, count)| (status, count.load(Ordering::Relaxed)))
        .collect();
    eprintln!("protocol fuzz: {} cases, statuses seen: {seen:?}", cases());
    // Guards the generators: a run long enough must reach every refusal, not only 404s.
    if cases() >= 1000 {
        for (status, count) in seen {
            assert_reached(status, count);
        }
    }
}

fn assert_reached(status: u16, count: u64) {
    assert!(
        count > 0,
        "no request got a {status}: the generators no longer reach it"
    );
}
