// Hostile Authorization headers into a Service with API keys: only the configured key, in a
// well-formed Bearer header, gets past a protected path; everything else is 401 and changes
// nothing; nothing panics.
//
// Cases per run: PROTOCOL_FUZZ_CASES (default 2000), as for protocol_fuzz.rs.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use token_server_core::auth::ApiKeys;
use token_server_core::protocol::{Body, Request, Service};
use token_server_core::{ManualClock, SeededRandom, TokenStore};

const KEY: &str = "fuzz-key-0123456789abcdefghijklmnopqrstuv";
const OTHER_KEY: &str = "fuzz-other-0123456789abcdefghijklmnopqrs";

/// A header and whether it must be accepted.
#[derive(Debug, Clone)]
struct Header {
    value: Option<String>,
    valid: bool,
}

fn structured() -> impl Strategy<Value = Header> {
    let scheme = proptest::sample::select(&[
        "Bearer", "bearer", "BEARER", "bEARER", "Basic", "Token", "Bearer:", "Bearer,", "",
    ]);
    let separator = proptest::sample::select(&[" ", "  ", "\t", " \t ", ""]);
    let key =
        proptest::sample::select(&[0usize, 1, 2, 3, 4, 5]).prop_map(|variant| match variant {
            0 => (KEY.to_string(), true),
            1 => (KEY[..KEY.len() - 1].to_string(), false),
            2 => (format!("{KEY}x"), false),
            3 => (KEY.to_uppercase(), false),
            4 => (OTHER_KEY.to_string(), false),
            _ => (String::new(), false),
        });
    let padding = proptest::sample::select(&["", " ", "\t"]);
    (padding.clone(), scheme, separator, key, padding).prop_map(
        |(before, scheme, separator, (key, key_valid), after)| Header {
            value: Some(format!("{before}{scheme}{separator}{key}{after}")),
            valid: key_valid && scheme.eq_ignore_ascii_case("bearer") && !separator.is_empty(),
        },
    )
}

fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        6 => structured(),
        2 => "\\PC{0,80}".prop_map(|value| Header { value: Some(value), valid: false }),
        1 => Just(Header { value: None, valid: false }),
    ]
}

fn path() -> impl Strategy<Value = (&'static str, bool)> {
    // (path, open without a key)
    proptest::sample::select(&[
        ("/token", false),
        ("/dump", false),
        ("/metrics", false),
        ("/", false),
        ("/livez", true),
        ("/healthz", true),
        ("/test-clock", true),
    ])
}

#[test]
fn only_the_configured_key_in_a_bearer_header_passes() {
    let cases = std::env::var("PROTOCOL_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let store = TokenStore::new(
        Duration::from_secs(1800),
        ManualClock::new(0),
        SeededRandom::new(3),
    );
    let keys = ApiKeys::parse(&format!("{KEY}\n{OTHER_KEY}x\n")).expect("fuzz keys parse");
    let service = Service::new(store).with_dump(true).with_api_keys(keys);
    let result = runner.run(&(header(), path()), |(header, (path, open))| {
        let before = service.store().dump();
        let reply = service.handle(&Request {
            method: "POST",
            path,
            content_type: Some("application/json"),
            authorization: header.value.as_deref(),
            body: Body::Complete(br#"{"meta":{}}"#),
        });
        if open || header.valid {
            prop_assert_ne!(reply.status, 401, "{:?} on {}", header, path);
            if path == "/token" {
                prop_assert_eq!(reply.status, 200, "{:?}", header);
            }
        } else {
            prop_assert_eq!(reply.status, 401, "{:?} on {}", header, path);
            prop_assert!(reply.www_authenticate.is_some());
            prop_assert_eq!(
                service.store().dump(),
                before,
                "a refusal changed the store"
            );
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}
