//! Every answer of the REST protocol, checked without a socket.

use super::*;
use crate::clock::ManualClock;
use crate::meta::MetaLimits;
use crate::random::SeededRandom;
use serde_json::json;
use std::time::Duration;

const LIFETIME: Duration = Duration::from_secs(30 * 60);

fn service() -> (ManualClock, Service<ManualClock, SeededRandom>) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(11));
    (clock, Service::new(store))
}

fn call(
    service: &Service<ManualClock, SeededRandom>,
    method: &str,
    path: &str,
    body: &str,
) -> Reply {
    service.handle(&Request {
        method,
        path,
        content_type: Some("application/json"),
        authorization: None,
        body: Body::Complete(body.as_bytes()),
    })
}

fn login(service: &Service<ManualClock, SeededRandom>, meta: Value) -> String {
    let reply = call(
        service,
        "POST",
        "/token",
        &json!({ "meta": meta }).to_string(),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type, Some(TEXT_PLAIN));
    reply.body
}

fn put(service: &Service<ManualClock, SeededRandom>, body: Value) -> Value {
    let reply = call(service, "PUT", "/token", &body.to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.content_type, Some(APPLICATION_JSON));
    serde_json::from_str(&reply.body).unwrap()
}

#[test]
fn the_seed_flow_works_end_to_end() {
    let (_clock, service) = service();
    let token = login(&service, json!({"name": "My user", "year": 2022}));

    let first = put(&service, json!({ "token": token }));
    assert_eq!(
        first["Ok"]["meta"],
        json!({"name": "My user", "year": 2022})
    );
    let second_token = first["Ok"]["token"].as_str().unwrap().to_string();
    assert_ne!(second_token, token);

    let second = put(
        &service,
        json!({ "token": second_token, "meta": {"period": 11, "year": 2023} }),
    );
    assert_eq!(
        second["Ok"]["meta"],
        json!({"name": "My user", "year": 2023, "period": 11})
    );

    assert_eq!(
        put(&service, json!({ "token": token })),
        json!({"Err": "InvalidToken"})
    );

    let third = second["Ok"]["token"].as_str().unwrap();
    let removed = call(
        &service,
        "DELETE",
        "/token",
        &json!({ "token": third }).to_string(),
    );
    assert_eq!((removed.status, removed.body.as_str()), (202, ""));
    assert_eq!(
        put(&service, json!({ "token": third })),
        json!({"Err": "InvalidToken"})
    );
}

#[test]
fn put_with_null_meta_is_a_plain_rotation() {
    let (_clock, service) = service();
    let token = login(&service, json!({"a": 1}));
    let answer = put(&service, json!({ "token": token, "meta": null }));
    assert_eq!(answer["Ok"]["meta"], json!({"a": 1}));
}

#[test]
fn expired_tokens_are_refused_over_the_protocol() {
    let (clock, service) = service();
    let token = login(&service, json!({}));
    clock.advance(LIFETIME);
    assert_eq!(
        put(&service, json!({ "token": token })),
        json!({"Err": "InvalidToken"})
    );
}

#[test]
fn delete_of_an_unknown_token_is_accepted() {
    let (_clock, service) = service();
    let reply = call(&service, "DELETE", "/token", r#"{"token":"nope"}"#);
    assert_eq!(reply.status, 202);
}

#[test]
fn every_error_has_its_status_and_a_plain_sentence() {
    let (_clock, service) = service();
    let cases: &[(&str, &str, Option<&str>, &str, u16)] = &[
        ("GET", "/token", Some("application/json"), "{}", 405),
        ("PATCH", "/token", Some("application/json"), "{}", 405),
        ("GET", "/", None, "", 404),
        (
            "POST",
            "/tokens",
            Some("application/json"),
            r#"{"meta":{}}"#,
            404,
        ),
        (
            "POST",
            "/token/",
            Some("application/json"),
            r#"{"meta":{}}"#,
            404,
        ),
        ("HEAD", "/dump", None, "", 404),
        ("POST", "/token", None, r#"{"meta":{}}"#, 415),
        ("POST", "/token", Some("text/plain"), r#"{"meta":{}}"#, 415),
        (
            "PUT",
            "/token",
            Some("application/jsonx"),
            r#"{"token":"x"}"#,
            415,
        ),
        ("POST", "/token", Some("application/json"), "", 400),
        ("POST", "/token", Some("application/json"), "{meta:}", 400),
        (
            "POST",
            "/token",
            Some("application/json"),
            r#"{"meta":{}"#,
            400,
        ),
        ("POST", "/token", Some("application/json"), "\u{0}", 400),
        (
            "POST",
            "/token",
            Some("application/json"),
            r#"[{"meta":{}}]"#,
            422,
        ),
        ("POST", "/token", Some("application/json"), r#""x""#, 422),
        ("PUT", "/token", Some("application/json"), "3", 422),
        (
            "POST",
            "/token",
            Some("application/json"),
            r#"{"meta":{"n":1e400}}"#,
            422,
        ),
        ("POST", "/token", Some("application/json"), "{}", 422),
        ("POST", "/token", Some("application/json"), "[]", 422),
        (
            "POST",
            "/token",
            Some("application/json"),
            r#"{"meta":[1]}"#,
            422,
        ),
        (
            "POST",
            "/token",
            Some("application/json"),
            r#"{"meta":"x"}"#,
            422,
        ),
        (
            "POST",
            "/token",
            Some("application/json"),
            r#"{"meta":null}"#,
            422,
        ),
        (
            "PUT",
            "/token",
            Some("application/json"),
            r#"{"meta":{}}"#,
            422,
        ),
        (
            "PUT",
            "/token",
            Some("application/json"),
            r#"{"token":5}"#,
            422,
        ),
        (
            "PUT",
            "/token",
            Some("application/json"),
            r#"{"token":"x","meta":3}"#,
            422,
        ),
        ("DELETE", "/token", Some("application/json"), r#"{}"#, 422),
    ];
    for &(method, path, content_type, body, status) in cases {
        let reply = service.handle(&Request {
            method,
            path,
            content_type,
            authorization: None,
            body: Body::Complete(body.as_bytes()),
        });
        assert_eq!(
            reply.status, status,
            "{method} {path} {content_type:?} {body:?}: {}",
            reply.body
        );
        assert_eq!(reply.content_type, Some(TEXT_PLAIN));
        assert!(!reply.body.is_empty());
    }
    assert_eq!(
        service.store().len(),
        0,
        "no refused request may create a token"
    );
}

#[test]
fn method_not_allowed_names_the_allowed_methods() {
    let (_clock, service) = service();
    let reply = call(&service, "GET", "/token", "");
    assert_eq!(reply.allow, Some("POST, PUT, DELETE"));
}

#[test]
fn content_type_parameters_and_case_are_accepted() {
    let (_clock, service) = service();
    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;x=y",
    ] {
        let reply = service.handle(&Request {
            method: "POST",
            path: "/token",
            content_type: Some(content_type),
            authorization: None,
            body: Body::Complete(br#"{"meta":{}}"#),
        });
        assert_eq!(reply.status, 200, "{content_type}");
    }
}

#[test]
fn oversized_bodies_are_refused_with_413() {
    let (_clock, service) = service();
    let token = login(&service, json!({"keep": 1}));
    let padding = "x".repeat(MAX_BODY_BYTES);
    let body = json!({ "token": token, "meta": {"pad": padding} }).to_string();
    assert_eq!(call(&service, "PUT", "/token", &body).status, 413);
    let too_large = service.handle(&Request {
        method: "PUT",
        path: "/token",
        content_type: Some("application/json"),
        authorization: None,
        body: Body::TooLarge,
    });
    assert_eq!(too_large.status, 413);
    // The token presented in the refused request is untouched.
    assert_eq!(
        put(&service, json!({ "token": token }))["Ok"]["meta"],
        json!({"keep": 1})
    );
}

#[test]
fn a_body_of_exactly_the_limit_is_accepted() {
    let (_clock, service) = service();
    let skeleton = json!({"meta": {"pad": ""}}).to_string();
    let padding = "x".repeat(MAX_BODY_BYTES - skeleton.len());
    let body = json!({"meta": {"pad": padding}}).to_string();
    assert_eq!(body.len(), MAX_BODY_BYTES);
    assert_eq!(call(&service, "POST", "/token", &body).status, 200);
}

#[test]
fn refused_requests_leave_tokens_working() {
    let (_clock, service) = service();
    let token = login(&service, json!({"user": "ann"}));
    for body in [
        format!(r#"{{"token":"{token}","meta":[1]}}"#),
        format!(r#"{{"token":"{token}","meta":{{"a":1}}"#),
        format!(r#"{{"token":"{token}","meta":"x"}}"#),
    ] {
        let reply = call(&service, "PUT", "/token", &body);
        assert!(reply.status >= 400, "{body}");
    }
    let reply = service.handle(&Request {
        method: "PUT",
        path: "/token",
        content_type: Some("text/plain"),
        authorization: None,
        body: Body::Complete(json!({ "token": token }).to_string().as_bytes()),
    });
    assert_eq!(reply.status, 415);
    assert_eq!(
        put(&service, json!({ "token": token }))["Ok"]["meta"],
        json!({"user": "ann"})
    );
}

#[test]
fn dump_answers_202_when_enabled_and_405_for_other_methods() {
    let (_clock, service) = service();
    let service = service.with_dump(true);
    login(&service, json!({}));
    let reply = service.handle(&Request {
        method: "HEAD",
        path: "/dump",
        content_type: None,
        authorization: None,
        body: Body::Complete(b""),
    });
    assert_eq!((reply.status, reply.body.as_str()), (202, ""));
    let reply = call(&service, "GET", "/dump", "");
    assert_eq!((reply.status, reply.allow), (405, Some("HEAD")));
}

#[test]
fn escaped_token_strings_are_understood() {
    let (_clock, service) = service();
    let token = login(&service, json!({}));
    // The same token with its first character written as a JSON unicode escape.
    let first = token.chars().next().unwrap();
    let escaped = format!("\\u{:04x}{}", first as u32, &token[1..]);
    let reply = call(
        &service,
        "PUT",
        "/token",
        &format!(r#"{{"token":"{escaped}"}}"#),
    );
    let answer: Value = serde_json::from_str(&reply.body).unwrap();
    assert!(answer["Ok"].is_object(), "{answer}");
}

#[test]
fn metadata_limits_answer_422_naming_the_limit() {
    let (_clock, service) = service();
    // 33 levels of objects: one past the limit.
    let mut deep = json!(1);
    for _ in 0..33 {
        deep = json!({ "d": deep });
    }
    let reply = call(
        &service,
        "POST",
        "/token",
        &json!({ "meta": deep }).to_string(),
    );
    assert_eq!(reply.status, 422);
    assert!(reply.body.contains("32 levels"), "{}", reply.body);

    let wide: Map<String, Value> = (0..1001).map(|i| (format!("k{i}"), json!(i))).collect();
    let reply = call(
        &service,
        "POST",
        "/token",
        &json!({ "meta": wide }).to_string(),
    );
    assert_eq!(reply.status, 422);
    assert!(reply.body.contains("1000 keys"), "{}", reply.body);
    assert_eq!(service.store().len(), 0);

    let half: Map<String, Value> = (0..600).map(|i| (format!("a{i}"), json!(i))).collect();
    let token = login(&service, Value::Object(half));
    let more: Map<String, Value> = (0..600).map(|i| (format!("b{i}"), json!(i))).collect();
    let body = json!({ "token": token, "meta": more }).to_string();
    let reply = call(&service, "PUT", "/token", &body);
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert!(reply.body.contains("1000 keys"), "{}", reply.body);
    // The token presented in the refused update still works.
    assert!(put(&service, json!({ "token": token }))["Ok"].is_object());
}

#[test]
fn a_full_store_answers_503_and_keeps_its_tokens() {
    let clock = ManualClock::new(0);
    let store = TokenStore::new(LIFETIME, clock, SeededRandom::new(1)).with_max_tokens(1);
    let service = Service::new(store);
    let token = login(&service, json!({"kept": true}));
    let reply = call(&service, "POST", "/token", r#"{"meta":{}}"#);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "token store is full");
    assert_eq!(
        put(&service, json!({ "token": token }))["Ok"]["meta"],
        json!({"kept": true})
    );
}

#[test]
fn the_body_limit_is_configurable() {
    let (_clock, service) = service();
    let service = service.with_max_body_bytes(16);
    assert_eq!(
        call(&service, "POST", "/token", r#"{"meta":{"a":1}}"#).status,
        200
    );
    assert_eq!(
        call(&service, "POST", "/token", r#"{"meta":{"ab":1}}"#).status,
        413
    );
}

#[test]
fn bodies_that_are_json_but_not_objects_answer_422() {
    let (_clock, service) = service();
    for body in [
        r#"[{"meta":{}}]"#,
        r#"["tok"]"#,
        r#""x""#,
        "3",
        " null",
        "true",
        "[]",
    ] {
        for method in ["POST", "PUT", "DELETE"] {
            let reply = call(&service, method, "/token", body);
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (422, "the request body must be a JSON object"),
                "{method} {body}"
            );
        }
    }
    assert_eq!(service.store().len(), 0, "an array body must not log in");
    // Broken JSON that does not start an object is still 400, not 422.
    assert_eq!(call(&service, "POST", "/token", "[1,").status, 400);
    assert_eq!(call(&service, "POST", "/token", "nul").status, 400);
}

#[test]
fn a_body_that_ends_early_answers_400_saying_it_is_incomplete() {
    let (_clock, service) = service();
    let token = login(&service, json!({"kept": 1}));
    for body in [
        r#"{"meta":{"a":1"#.to_string(),
        r#"{"meta":"#.to_string(),
        r#"{"meta":{"a":"unterminated"#.to_string(),
        format!(r#"{{"token":"{token}","meta":{{"b":2}}"#),
        "[{".to_string(),
    ] {
        let reply = call(&service, "POST", "/token", &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert!(reply.body.contains("incomplete"), "{body}: {}", reply.body);
        assert!(!reply.body.contains("EOF"), "{body}: {}", reply.body);
    }
    let reply = call(&service, "POST", "/token", "  ");
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("empty"), "{}", reply.body);
    assert_eq!(
        put(&service, json!({ "token": token }))["Ok"]["meta"],
        json!({"kept": 1})
    );
}

#[test]
fn metadata_past_the_parser_depth_answers_422_naming_the_limit() {
    let (_clock, service) = service();
    let service = service.with_max_body_bytes(1024 * 1024);
    let token = login(&service, json!({"kept": 1}));
    for levels in [40, 127, 130, 1000, 100_000] {
        let deep = format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels));
        for body in [
            format!(r#"{{"meta":{deep}}}"#),
            format!(r#"{{"token":"{token}","meta":{deep}}}"#),
        ] {
            let method = if body.contains("token") {
                "PUT"
            } else {
                "POST"
            };
            let reply = call(&service, method, "/token", &body);
            assert_eq!(reply.status, 422, "{levels} levels: {}", reply.body);
            assert!(reply.body.contains("32 levels"), "{}", reply.body);
        }
        // Arrays too.
        let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        let reply = call(
            &service,
            "POST",
            "/token",
            &format!(r#"{{"meta":{{"a":{deep}}}}}"#),
        );
        assert_eq!(
            reply.status, 422,
            "{levels} levels of arrays: {}",
            reply.body
        );
    }
    // A broken body that is not deep stays 400.
    let reply = call(&service, "POST", "/token", r#"{"meta":{"a":1,}}"#);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(service.store().len(), 1);
    assert_eq!(
        put(&service, json!({ "token": token }))["Ok"]["meta"],
        json!({"kept": 1})
    );
}

#[test]
fn numbers_beyond_f64_answer_422_and_small_ones_round_to_zero() {
    let (_clock, service) = service();
    let token = login(&service, json!({"kept": 1}));
    let big_integer = "9".repeat(400);
    for number in ["1e400", "-1e400", "1E309", big_integer.as_str()] {
        for body in [
            format!(r#"{{"meta":{{"n":{number}}}}}"#),
            format!(r#"{{"token":"{token}","meta":{{"n":[{number}]}}}}"#),
        ] {
            let method = if body.contains("token") {
                "PUT"
            } else {
                "POST"
            };
            let reply = call(&service, method, "/token", &body);
            assert_eq!(reply.status, 422, "{body}: {}", reply.body);
            assert!(reply.body.contains("64-bit float"), "{}", reply.body);
        }
    }
    // Underflow is no error in JSON parsers: it is zero.
    let tiny = login(&service, json!({}));
    let answer = put(
        &service,
        serde_json::from_str(&format!(r#"{{"token":"{tiny}","meta":{{"n":1e-400}}}}"#)).unwrap(),
    );
    assert_eq!(answer["Ok"]["meta"], json!({"n": 0.0}));
    assert_eq!(
        put(&service, json!({ "token": token }))["Ok"]["meta"],
        json!({"kept": 1})
    );
}

#[test]
fn metadata_over_the_byte_limit_answers_422_naming_it_at_login_and_after_a_merge() {
    let store = TokenStore::new(LIFETIME, ManualClock::new(0), SeededRandom::new(3))
        .with_meta_limits(MetaLimits {
            max_bytes: 100,
            ..MetaLimits::default()
        });
    let service = Service::new(store);
    // {"pad":"…"} is 10 bytes around the padding.
    let reply = call(
        &service,
        "POST",
        "/token",
        &json!({"meta": {"pad": "x".repeat(91)}}).to_string(),
    );
    assert_eq!(reply.status, 422);
    assert!(reply.body.contains("limit of 100 bytes"), "{}", reply.body);
    assert_eq!(service.store().len(), 0);
    let token = login(&service, json!({"pad": "x".repeat(90)}));
    // Each update is small; their merged result is what is bounded.
    let mut token = token;
    let mut refused = None;
    for i in 0..20 {
        let body = json!({ "token": token, "meta": { format!("k{i}"): "yyyyyyyy" } });
        let reply = call(&service, "PUT", "/token", &body.to_string());
        if reply.status == 422 {
            refused = Some(reply.body);
            break;
        }
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        token = answer["Ok"]["token"].as_str().unwrap().to_string();
    }
    let refused = refused.expect("growing metadata past the limit must be refused");
    assert!(refused.contains("limit of 100 bytes"), "{refused}");
    // The token presented with the refused update still works, its metadata unchanged.
    let answer = put(&service, json!({ "token": token }));
    assert_eq!(answer["Ok"]["meta"]["pad"], json!("x".repeat(90)));
}

#[test]
fn the_default_metadata_byte_limit_is_64_kib() {
    let (_clock, service) = service();
    let service = service.with_max_body_bytes(1024 * 1024);
    let exactly = json!({"meta": {"pad": "x".repeat(64 * 1024 - 10)}}).to_string();
    assert_eq!(call(&service, "POST", "/token", &exactly).status, 200);
    let over = json!({"meta": {"pad": "x".repeat(64 * 1024 - 9)}}).to_string();
    let reply = call(&service, "POST", "/token", &over);
    assert_eq!(reply.status, 422);
    assert!(
        reply.body.contains("limit of 65536 bytes"),
        "{}",
        reply.body
    );
}

/// Log lines of the current thread, captured by a logger installed once per test binary;
/// tests on other threads do not mix in.
mod captured_log {
    use std::cell::RefCell;
    use std::sync::Once;

    thread_local! {
        static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    }

    struct ThreadLogger;

    impl log::Log for ThreadLogger {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }

        fn log(&self, record: &log::Record<'_>) {
            let line = format!("{} {}", record.level(), record.args());
            LINES.with(|lines| lines.borrow_mut().push(line));
        }

        fn flush(&self) {}
    }

    /// Starts capturing on this thread, dropping what was captured before.
    pub fn start() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&ThreadLogger).expect("no other logger in the core's tests");
            log::set_max_level(log::LevelFilter::Trace);
        });
        LINES.with(|lines| lines.borrow_mut().clear());
    }

    /// The lines captured on this thread that contain `needle`.
    pub fn lines_with(needle: &str) -> Vec<String> {
        LINES.with(|lines| {
            lines
                .borrow()
                .iter()
                .filter(|line| line.contains(needle))
                .cloned()
                .collect()
        })
    }
}

#[test]
fn a_flood_of_refused_logins_on_a_full_store_logs_a_handful_of_lines() {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(4)).with_max_tokens(1);
    let service = Service::new(store);
    login(&service, json!({}));
    captured_log::start();
    // 30,000 refused logins over 30 s of store time: one a millisecond.
    for _ in 0..30_000 {
        let reply = call(&service, "POST", "/token", r#"{"meta":{}}"#);
        assert_eq!(reply.status, 503);
        clock.advance(Duration::from_millis(1));
    }
    let lines = captured_log::lines_with("token store is full");
    // The first at once, then one per 10 s of store time, each counting the rest.
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with("WARN "), "{lines:#?}");
    assert!(!lines[0].contains("more since"), "{lines:#?}");
    assert!(
        lines[1].contains("; 9999 more since the last such line"),
        "{lines:#?}"
    );
    assert!(
        lines[2].contains("; 9999 more since the last such line"),
        "{lines:#?}"
    );
}

#[test]
fn json_media_types_are_recognised_in_any_case_and_with_parameters() {
    for json in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        " application/json ;charset=UTF-8",
    ] {
        assert!(super::is_json_media_type(json), "{json:?}");
    }
    for other in [
        "application/jsonx",
        "text/plain",
        "application/json-seq",
        "",
    ] {
        assert!(!super::is_json_media_type(other), "{other:?}");
    }
}
