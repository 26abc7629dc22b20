//! The protocol's API key rule: which requests need a key, what a refusal looks like, and
//! that swapping the key set takes effect at once.

use std::time::Duration;

use token_server_core::auth::ApiKeys;
use token_server_core::protocol::{Body, Reply, Request, Service};
use token_server_core::{ManualClock, SeededRandom, TokenStore, TOKEN_LEN};

const KEY_A: &str = "alpha-0123456789abcdefghijklmnopqrstuv";
const KEY_B: &str = "bravo-0123456789abcdefghijklmnopqrstuv";

type TestService = Service<ManualClock, SeededRandom>;

fn service(keys: &str) -> TestService {
    let store = TokenStore::new(
        Duration::from_secs(3600),
        ManualClock::new(1_700_000_000_000),
        SeededRandom::new(5),
    );
    Service::new(store)
        .with_dump(true)
        .with_api_keys(ApiKeys::parse(keys).unwrap())
}

fn call(
    service: &TestService,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Reply {
    service.handle(&Request {
        method,
        path,
        content_type: Some("application/json"),
        authorization,
        body: Body::Complete(body.as_bytes()),
    })
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

#[test]
fn without_keys_nothing_is_asked() {
    let store = TokenStore::new(
        Duration::from_secs(3600),
        ManualClock::new(0),
        SeededRandom::new(5),
    );
    let service = Service::new(store);
    assert!(!service.requires_api_key());
    let reply = call(&service, "POST", "/token", None, r#"{"meta":{}}"#);
    assert_eq!(reply.status, 200);
}

#[test]
fn a_request_without_a_valid_key_gets_401_and_changes_nothing() {
    let service = service(&format!("{KEY_A}\n{KEY_B}\n"));
    assert!(service.requires_api_key());
    let token = call(
        &service,
        "POST",
        "/token",
        Some(&bearer(KEY_A)),
        r#"{"meta":{"user":"u"}}"#,
    )
    .body;
    assert_eq!(token.len(), TOKEN_LEN);

    let rotate = format!(r#"{{"token":"{token}"}}"#);
    let wrong = bearer("charlie-0123456789abcdefghijklmnopqrstuv");
    for authorization in [None, Some(wrong.as_str()), Some("Basic dXNlcjpwYXNz")] {
        for (method, path, body) in [
            ("POST", "/token", r#"{"meta":{}}"#),
            ("PUT", "/token", rotate.as_str()),
            ("DELETE", "/token", rotate.as_str()),
            ("HEAD", "/dump", ""),
            ("GET", "/token", ""),
            ("GET", "/metrics", ""),
            ("GET", "/no-such-path", ""),
        ] {
            let reply = call(&service, method, path, authorization, body);
            let context = format!("{method} {path} {authorization:?}");
            assert_eq!(reply.status, 401, "{context}: {}", reply.body);
            assert_eq!(reply.content_type, Some("text/plain; charset=utf-8"));
            assert!(!reply.body.is_empty(), "{context}");
            let challenge = reply.www_authenticate.unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{context}: {challenge}");
        }
    }
    assert_eq!(service.store().len(), 1, "no refused login made a token");
    // The token survived the refused PUT and DELETE; each key works.
    let rotated = call(&service, "PUT", "/token", Some(&bearer(KEY_B)), &rotate);
    assert!(rotated.body.starts_with(r#"{"Ok":"#), "{}", rotated.body);
}

#[test]
fn a_wrong_key_is_told_apart_from_a_missing_one() {
    let service = service(KEY_A);
    let missing = call(&service, "POST", "/token", None, r#"{"meta":{}}"#);
    assert_eq!(
        missing.www_authenticate,
        Some(r#"Bearer realm="token-server""#)
    );
    assert!(
        missing.body.contains("Authorization: Bearer"),
        "{}",
        missing.body
    );
    let wrong = call(
        &service,
        "POST",
        "/token",
        Some(&bearer(KEY_B)),
        r#"{"meta":{}}"#,
    );
    assert_eq!(
        wrong.www_authenticate,
        Some(r#"Bearer realm="token-server", error="invalid_token""#)
    );
    assert_eq!(wrong.body, "the API key is not valid");
    assert!(!wrong.body.contains(KEY_B));
}

#[test]
fn health_probes_and_the_test_clock_stay_open() {
    let service = service(KEY_A);
    for path in [
        "/livez",
        "/readyz",
        "/healthz",
        "/test-clock",
        "/test-clock/advance",
    ] {
        let reply = call(&service, "GET", path, None, "");
        assert_ne!(reply.status, 401, "{path}");
    }
    // A look-alike is not open.
    let reply = call(&service, "GET", "/test-clockwork", None, "");
    assert_eq!(reply.status, 401);
}

#[test]
fn replacing_the_keys_takes_effect_on_the_next_request() {
    let service = service(KEY_A);
    let login = |key: &str| {
        call(
            &service,
            "POST",
            "/token",
            Some(&bearer(key)),
            r#"{"meta":{}}"#,
        )
    };
    assert_eq!(login(KEY_A).status, 200);
    assert_eq!(login(KEY_B).status, 401);
    service.replace_api_keys(ApiKeys::parse(KEY_B).unwrap());
    assert_eq!(login(KEY_A).status, 401);
    assert_eq!(login(KEY_B).status, 200);
}
