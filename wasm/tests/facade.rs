//! The JS facade as JS sees it, run in Node by wasm-bindgen-test-runner.
//!
//! Only meaningful on wasm32: natively there is no JS engine behind `JsValue`.
#![cfg(target_arch = "wasm32")]

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use js_sys::{Array, Function, Reflect, Uint8Array, JSON};
use token_server_core::protocol::{Body, Request, Service};
use token_server_core::{ManualClock, SeededRandom, TokenStore as CoreStore, TOKEN_LEN};
use token_server_wasm::{TokenService, TokenStore};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::wasm_bindgen_test;

const START: f64 = 1_667_653_449_250.0;
const HALF_HOUR: f64 = 1_800_000.0;

/// A JS clock function whose time the test sets.
struct FakeClock {
    now: Rc<Cell<f64>>,
    function: Closure<dyn Fn() -> f64>,
}

impl FakeClock {
    fn at(millis: f64) -> FakeClock {
        let now = Rc::new(Cell::new(millis));
        let read = now.clone();
        let function = Closure::<dyn Fn() -> f64>::new(move || read.get());
        FakeClock { now, function }
    }

    fn js(&self) -> JsValue {
        self.function.as_ref().clone()
    }

    fn set(&self, millis: f64) {
        self.now.set(millis);
    }
}

fn obj(json: &str) -> JsValue {
    JSON::parse(json).expect("test JSON parses")
}

fn json(value: &JsValue) -> String {
    JSON::stringify(value)
        .expect("value stringifies")
        .as_string()
        .expect("stringify gives a string")
}

fn get(value: &JsValue, key: &str) -> JsValue {
    Reflect::get(value, &JsValue::from_str(key)).expect("property readable")
}

/// The message of the JS `Error` a call threw; fails the test if it was anything else.
fn message(err: JsError) -> String {
    let value = JsValue::from(err);
    let error = value
        .dyn_into::<js_sys::Error>()
        .expect("a JS Error was thrown");
    String::from(error.message())
}

fn store_at(lifetime: &str, clock: &FakeClock) -> TokenStore {
    TokenStore::new(lifetime.into(), clock.js(), JsValue::UNDEFINED).expect("store builds")
}

fn rotated_token(result: &JsValue) -> String {
    assert_eq!(
        get(result, "ok"),
        JsValue::TRUE,
        "rotation failed: {}",
        json(result)
    );
    get(result, "token").as_string().expect("token is a string")
}

#[wasm_bindgen_test]
fn create_rotate_remove_round_trip() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let first = String::from(store.create(obj(r#"{"name":"My user"}"#)).unwrap());
    assert_eq!(first.len(), TOKEN_LEN);
    assert_eq!(store.size(), 1);

    let result = store
        .rotate(first.clone().into(), JsValue::UNDEFINED)
        .unwrap();
    let second = rotated_token(&result);
    assert_ne!(second, first);
    assert_eq!(json(&get(&result, "meta")), r#"{"name":"My user"}"#);

    // One use only: the old token is now a value saying so, not an exception.
    let again = store.rotate(first.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(json(&again), r#"{"ok":false,"error":"InvalidToken"}"#);

    assert!(store.remove(second.clone().into()).unwrap());
    assert!(!store.remove(second.clone().into()).unwrap());
    assert_eq!(store.size(), 0);
    let gone = store.rotate(second.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(get(&gone, "ok"), JsValue::FALSE);
}

#[wasm_bindgen_test]
fn tokens_expire_exactly_at_the_lifetime() {
    let clock = FakeClock::at(START);
    let store = store_at("30min", &clock);
    let early = store.create(obj("{}")).unwrap();
    let exact = store.create(obj("{}")).unwrap();
    let late = store.create(obj("{}")).unwrap();

    clock.set(START + HALF_HOUR - 1.0);
    let result = store.rotate(early.into(), JsValue::UNDEFINED).unwrap();
    rotated_token(&result);

    clock.set(START + HALF_HOUR);
    let result = store.rotate(exact.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(
        get(&result, "ok"),
        JsValue::FALSE,
        "alive at its expiry instant"
    );

    clock.set(START + HALF_HOUR + 1.0);
    let result = store
        .rotate(late.clone().into(), JsValue::UNDEFINED)
        .unwrap();
    assert_eq!(
        get(&result, "ok"),
        JsValue::FALSE,
        "alive after its lifetime"
    );
    assert!(!store.remove(late.into()).unwrap());
}

#[wasm_bindgen_test]
fn rotation_restarts_the_lifetime() {
    let clock = FakeClock::at(START);
    let store =
        TokenStore::new(JsValue::from_f64(HALF_HOUR), clock.js(), JsValue::UNDEFINED).unwrap();
    let token = store.create(obj("{}")).unwrap();
    clock.set(START + HALF_HOUR - 1.0);
    let token = rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
    clock.set(START + 2.0 * HALF_HOUR - 2.0);
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
}

#[wasm_bindgen_test]
fn purge_drops_only_expired_tokens() {
    let clock = FakeClock::at(START);
    let store = store_at("30min", &clock);
    for _ in 0..3 {
        store.create(obj("{}")).unwrap();
    }
    clock.set(START + 10.0 * 60_000.0);
    let survivor = store.create(obj(r#"{"keep":true}"#)).unwrap();

    clock.set(START + HALF_HOUR - 1.0);
    assert_eq!(
        json(&store.purge().unwrap()),
        r#"{"purged":0,"remaining":4}"#
    );
    clock.set(START + HALF_HOUR);
    assert_eq!(
        json(&store.purge().unwrap()),
        r#"{"purged":3,"remaining":1}"#
    );
    assert_eq!(store.size(), 1);
    rotated_token(&store.rotate(survivor.into(), JsValue::UNDEFINED).unwrap());
}

#[wasm_bindgen_test]
fn rotation_merges_top_level_keys() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let token = store
        .create(obj(
            r#"{"name":"My user","year":2022,"deep":{"a":1,"b":2}}"#,
        ))
        .unwrap();
    let result = store
        .rotate(
            token.into(),
            obj(r#"{"year":2023,"deep":{"a":9},"period":11}"#),
        )
        .unwrap();
    assert_eq!(
        json(&get(&result, "meta")),
        r#"{"deep":{"a":9},"name":"My user","period":11,"year":2023}"#
    );
    // No update, or null, keeps the metadata as it is.
    let token = rotated_token(&result);
    let result = store.rotate(token.into(), JsValue::NULL).unwrap();
    assert_eq!(
        get(&get(&result, "meta"), "year"),
        JsValue::from_f64(2023.0)
    );
}

#[wasm_bindgen_test]
fn dump_shows_expiry_and_meta_but_never_tokens() {
    let clock = FakeClock::at(0.0);
    let store = store_at("1h", &clock);
    let token = String::from(store.create(obj(r#"{"n":1}"#)).unwrap());
    clock.set(250.0);
    store.create(obj(r#"{"n":2}"#)).unwrap();
    let dump = store.dump().unwrap();
    assert_eq!(
        json(&dump),
        r#"[{"expires":3600000,"expiresAt":"1970-01-01T01:00:00.000Z","meta":{"n":1}},{"expires":3600250,"expiresAt":"1970-01-01T01:00:00.250Z","meta":{"n":2}}]"#
    );
    assert!(!json(&dump).contains(&token));
}

/// Metadata the store accepts comes back to JS as `JSON.parse` reads it: an integer past
/// 2^53 rounded, as any JSON client rounds it. Before, `rotate` threw on it after the
/// rotation had happened, so the caller lost the session; `dump` threw too.
#[wasm_bindgen_test]
fn an_integer_past_2_53_in_metadata_rotates_and_dumps() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let text = r#"{"id":12345678901234567890,"n":1}"#;
    let token = String::from(store.create_json(text).unwrap());
    let result = store.rotate(token.into(), JsValue::UNDEFINED).unwrap();
    let next = rotated_token(&result);
    let meta = get(&result, "meta");
    assert_eq!(json(&meta), json(&obj(text)));
    assert_eq!(get(&meta, "id"), JsValue::from_f64(12345678901234567890.0));
    let dump = store.dump().unwrap();
    assert_eq!(
        json(&get(&Array::from(&dump).get(0), "meta")),
        json(&obj(text))
    );
    // The successor still works.
    rotated_token(&store.rotate(next.into(), JsValue::UNDEFINED).unwrap());
}

/// A metadata key named `__proto__` comes back as an own key, as `JSON.parse` reads it.
/// Before, `rotate` and `dump` made its value the prototype of the metadata they
/// answered: `meta.admin` read `true` from `{"__proto__":{"admin":true}}`.
#[wasm_bindgen_test]
fn a_proto_key_in_metadata_stays_a_key() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    // Keys in order: nested metadata is stored with its keys sorted.
    let text = r#"{"__proto__":{"admin":true},"n":1}"#;
    let token = String::from(store.create_json(text).unwrap());
    let result = store.rotate(token.into(), JsValue::UNDEFINED).unwrap();
    let dump = store.dump().unwrap();
    for meta in [
        get(&result, "meta"),
        get(&Array::from(&dump).get(0), "meta"),
    ] {
        assert_eq!(json(&meta), json(&obj(text)));
        assert_eq!(get(&meta, "admin"), JsValue::UNDEFINED);
        let prototype = js_sys::Object::get_prototype_of(&meta);
        assert_eq!(
            JsValue::from(js_sys::Object::get_prototype_of(&prototype)),
            JsValue::NULL,
            "the metadata's prototype is not Object.prototype"
        );
        let own = js_sys::Object::keys(meta.unchecked_ref::<js_sys::Object>());
        assert_eq!(json(&own), r#"["__proto__","n"]"#);
    }
}

#[wasm_bindgen_test]
fn a_clock_stepping_back_revives_no_expired_token() {
    let clock = FakeClock::at(START);
    let store = store_at("30min", &clock);
    let expired = store.create(obj("{}")).unwrap();
    clock.set(START + HALF_HOUR + 1.0);
    let live = store.create(obj(r#"{"live":true}"#)).unwrap();
    clock.set(START - HALF_HOUR); // the JS clock stepped back an hour
    let result = store.rotate(expired.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(get(&result, "ok"), JsValue::FALSE, "revived by a step back");
    let result = store.rotate(live.into(), JsValue::UNDEFINED).unwrap();
    rotated_token(&result);
}

#[wasm_bindgen_test]
fn metadata_over_the_default_byte_cap_is_refused() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let large = format!(r#"{{"pad":"{}"}}"#, "x".repeat(64 * 1024));
    let err = store
        .create(obj(&large))
        .expect_err("64 KiB of padding accepted");
    assert!(message(err).contains("65536 bytes"));
    // The JSON text path too, whether the object is flat or not.
    for text in [
        large.clone(),
        format!(r#"{{"pad":["{}"]}}"#, "x".repeat(64 * 1024)),
    ] {
        let err = store.create_json(&text).expect_err("64 KiB accepted");
        assert!(message(err).contains("65536 bytes"));
    }
    assert_eq!(store.size(), 0);
}

#[wasm_bindgen_test]
fn flat_and_nested_json_text_is_stored_as_the_object_path_stores_it() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    // Flat objects (the common case) take a shortcut; the rest is parsed into a map.
    for text in [
        r#"{"year":2026, "name":"My user","period":11,"name":"last wins","ok":true,"no":null}"#,
        r#"{"nested":{"b":1,"a":[2,{"y":1,"x":0}]},"z":"\u00e9\n","n":1.5e3,"m":-0}"#,
        "{}",
    ] {
        let by_text = String::from(store.create_json(text).unwrap());
        let by_object = String::from(store.create(obj(text)).unwrap());
        let answers = [by_text, by_object].map(|token| {
            let rotated = obj(&store.rotate_json(&token, None).unwrap());
            json(&get(&rotated, "meta"))
        });
        assert_eq!(answers[0], answers[1], "{text}");
    }
    let token = String::from(store.create_json(r#"{"b":2,"a":1,"b":3}"#).unwrap());
    let answer = store.rotate_json(&token, None).unwrap();
    assert!(answer.ends_with(r#""meta":{"a":1,"b":3}}"#), "{answer}");
}

#[wasm_bindgen_test]
fn metadata_past_the_limits_is_refused_like_over_http() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let deep = format!("{}1{}", r#"{"d":"#.repeat(33), "}".repeat(33));
    let err = store.create(obj(&deep)).expect_err("33 levels accepted");
    assert!(message(err).contains("32 levels"));
    assert_eq!(store.size(), 0);
    let ok = format!("{}1{}", r#"{"d":"#.repeat(32), "}".repeat(32));
    assert!(store.create(obj(&ok)).is_ok());
}

#[wasm_bindgen_test]
fn bad_arguments_throw_errors_that_say_what_is_wrong() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let date = js_sys::Date::new_0();
    for meta in [
        Array::new().into(),
        JsValue::NULL,
        JsValue::UNDEFINED,
        JsValue::from_f64(42.0),
        JsValue::from_str("{}"),
        date.into(),
    ] {
        let err = store.create(meta.clone()).expect_err("bad meta accepted");
        assert!(
            message(err).starts_with("meta must be a plain object"),
            "for {meta:?}"
        );
    }
    let token = store.create(obj("{}")).unwrap();
    let err = store
        .rotate(token.clone().into(), Array::new().into())
        .unwrap_err();
    assert!(message(err).contains("meta must be a plain object, not an array"));
    // A refused rotation does not consume the token.
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());

    let err = store
        .rotate(JsValue::from_f64(7.0), JsValue::UNDEFINED)
        .unwrap_err();
    assert_eq!(message(err), "token must be a string, not number");
    let err = store.remove(JsValue::NULL).unwrap_err();
    assert_eq!(message(err), "token must be a string, not null");
    assert_eq!(store.size(), 1);
}

#[wasm_bindgen_test]
fn lifetimes_outside_the_cli_range_are_refused() {
    let clock = FakeClock::at(START);
    let refused = |lifetime: JsValue| {
        message(
            TokenStore::new(lifetime, clock.js(), JsValue::UNDEFINED)
                .err()
                .expect("lifetime accepted"),
        )
    };
    assert_eq!(
        refused("29min".into()),
        "lifetime '29min' is out of range: allowed is 30min to 96h"
    );
    assert_eq!(
        refused(JsValue::from_f64(96.0 * 3_600_000.0 + 1.0)),
        "lifetime '345600001ms' is out of range: allowed is 30min to 96h"
    );
    assert!(refused("2 h".into()).contains("is not a duration"));
    assert!(refused(JsValue::from_f64(1.5)).contains("whole number of milliseconds"));
    assert!(refused(JsValue::TRUE).contains("lifetime must be milliseconds or a duration"));
    // Both ends are allowed, as on the CLI; absent means the CLI default.
    assert!(TokenStore::new("30min".into(), clock.js(), JsValue::UNDEFINED).is_ok());
    assert!(TokenStore::new("96h".into(), clock.js(), JsValue::UNDEFINED).is_ok());
    assert!(TokenStore::new(JsValue::UNDEFINED, JsValue::UNDEFINED, JsValue::UNDEFINED).is_ok());
}

#[wasm_bindgen_test]
fn a_broken_clock_is_an_error_not_a_wrong_time() {
    let err = TokenStore::new("2h".into(), JsValue::from_f64(5.0), JsValue::UNDEFINED)
        .err()
        .unwrap();
    assert!(message(err).starts_with("clock must be a function"));
    let text = Function::new_no_args("return 'noon';");
    let err = TokenStore::new("2h".into(), text.into(), JsValue::UNDEFINED)
        .err()
        .unwrap();
    assert_eq!(
        message(err),
        "the clock failed: it returned the string \"noon\" instead of a number"
    );
    // JS would make 0 of null and false, NaN of undefined: still not a time.
    for (body, what) in [
        ("return null;", "null"),
        ("return false;", "boolean"),
        ("return undefined;", "undefined"),
    ] {
        let clock = Function::new_no_args(body);
        let err = TokenStore::new("2h".into(), clock.into(), JsValue::UNDEFINED)
            .err()
            .unwrap();
        assert_eq!(
            message(err),
            format!("the clock failed: it returned {what} instead of a number")
        );
    }
    let throws = Function::new_no_args("throw new Error('no time');");
    let err = TokenStore::new("2h".into(), throws.into(), JsValue::UNDEFINED)
        .err()
        .unwrap();
    assert_eq!(message(err), "the clock failed: no time");

    // A clock that starts failing later refuses the call and leaves the token alone.
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let token = store.create(obj("{}")).unwrap();
    clock.set(f64::NAN);
    let err = store
        .rotate(token.clone().into(), JsValue::UNDEFINED)
        .unwrap_err();
    assert!(message(err).starts_with("the clock failed"));
    clock.set(START + 1.0);
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
}

fn handle(service: &TokenService, method: &str, path: &str, body: &str) -> JsValue {
    service
        .handle(
            method.into(),
            path.into(),
            "application/json".into(),
            body.into(),
            JsValue::UNDEFINED,
        )
        .unwrap()
}

#[wasm_bindgen_test]
fn service_speaks_the_rest_protocol() {
    let clock = FakeClock::at(START);
    let service =
        TokenService::new("2h".into(), clock.js(), JsValue::FALSE, JsValue::UNDEFINED).unwrap();
    let created = handle(&service, "POST", "/token", r#"{"meta":{"name":"My user"}}"#);
    assert_eq!(get(&created, "status"), JsValue::from_f64(200.0));
    assert_eq!(
        get(&created, "contentType"),
        JsValue::from_str("text/plain; charset=utf-8")
    );
    assert_eq!(get(&created, "allow"), JsValue::NULL);
    let token = get(&created, "body").as_string().unwrap();
    assert_eq!(token.len(), TOKEN_LEN);

    // Bytes work like text.
    let bytes = Uint8Array::from(format!(r#"{{"token":"{token}","meta":{{"y":1}}}}"#).as_bytes());
    let rotated = service
        .handle(
            "PUT".into(),
            "/token".into(),
            "application/json".into(),
            bytes.into(),
            JsValue::UNDEFINED,
        )
        .unwrap();
    assert_eq!(
        get(&rotated, "contentType"),
        JsValue::from_str("application/json")
    );
    let body = get(&rotated, "body").as_string().unwrap();
    assert!(body.starts_with(r#"{"Ok":{"token":""#), "{body}");
    assert!(
        body.ends_with(r#"","meta":{"name":"My user","y":1}}}"#),
        "{body}"
    );

    let old = handle(
        &service,
        "PUT",
        "/token",
        &format!(r#"{{"token":"{token}"}}"#),
    );
    assert_eq!(
        get(&old, "body"),
        JsValue::from_str(r#"{"Err":"InvalidToken"}"#)
    );

    let removed = handle(
        &service,
        "DELETE",
        "/token",
        &format!(r#"{{"token":"{token}"}}"#),
    );
    assert_eq!(
        json(&removed),
        r#"{"status":202,"contentType":null,"body":"","allow":null,"wwwAuthenticate":null}"#
    );

    let oversized = service
        .handle_oversized(
            "POST".into(),
            "/token".into(),
            "application/json".into(),
            JsValue::UNDEFINED,
        )
        .unwrap();
    assert_eq!(get(&oversized, "status"), JsValue::from_f64(413.0));
    assert_eq!(service.size(), 1);
    assert_eq!(service.max_body_bytes(), 64 * 1024);
}

#[wasm_bindgen_test]
fn service_refusals_match_the_core_protocol_exactly() {
    let clock = FakeClock::at(START);
    let service =
        TokenService::new("2h".into(), clock.js(), JsValue::TRUE, JsValue::UNDEFINED).unwrap();
    let core = Service::new(CoreStore::new(
        Duration::from_secs(7200),
        ManualClock::new(0),
        SeededRandom::new(1),
    ))
    .with_dump(true);
    let big = format!(r#"{{"meta":{{"x":"{}"}}}}"#, "a".repeat(64 * 1024));
    let cases: [(&str, &str, Option<&str>, &str); 9] = [
        ("GET", "/token", Some("application/json"), "{}"),
        ("GET", "/", None, ""),
        ("GET", "/dump", None, ""),
        ("HEAD", "/dump", None, ""),
        ("POST", "/token", Some("text/plain"), "{}"),
        ("POST", "/token", Some("application/json"), "{"),
        ("POST", "/token", Some("application/json"), r#"{"meta":[]}"#),
        (
            "PUT",
            "/token",
            Some("Application/JSON; charset=utf-8"),
            r#"{"token":"x"}"#,
        ),
        ("POST", "/token", Some("application/json"), &big),
    ];
    for (method, path, content_type, body) in cases {
        let expected = core.handle(&Request {
            method,
            path,
            content_type,
            authorization: None,
            body: Body::Complete(body.as_bytes()),
        });
        let reply = service
            .handle(
                method.into(),
                path.into(),
                content_type.map_or(JsValue::NULL, JsValue::from_str),
                body.into(),
                JsValue::NULL,
            )
            .unwrap();
        let context = format!("{method} {path} {content_type:?}");
        assert_eq!(
            get(&reply, "status"),
            JsValue::from(expected.status),
            "{context}"
        );
        assert_eq!(
            get(&reply, "body"),
            JsValue::from_str(&expected.body),
            "{context}"
        );
        assert_eq!(
            get(&reply, "contentType").as_string().as_deref(),
            expected.content_type,
            "{context}"
        );
        assert_eq!(
            get(&reply, "allow").as_string().as_deref(),
            expected.allow,
            "{context}"
        );
    }
    let err = service
        .handle(
            JsValue::from_f64(1.0),
            "/".into(),
            JsValue::NULL,
            JsValue::NULL,
            JsValue::NULL,
        )
        .unwrap_err();
    assert_eq!(message(err), "method must be a string, not number");
}

/// `{"d": {"d": ... 1}}` `levels` deep, built in JS without recursion.
fn nested_object(levels: usize) -> JsValue {
    let mut value = JsValue::from_f64(1.0);
    for _ in 0..levels {
        let outer = js_sys::Object::new();
        Reflect::set(&outer, &"d".into(), &value).expect("set a property");
        value = outer.into();
    }
    value
}

/// After a refused argument, the store (and the module) still issue and rotate tokens.
fn assert_still_usable(store: &TokenStore, clock: &FakeClock) {
    let token = store
        .create(obj(r#"{"after":"refusal"}"#))
        .expect("store still creates");
    let rotated = store.rotate(token.into(), obj(r#"{"n":2}"#)).unwrap();
    assert_eq!(json(&get(&rotated, "meta")), r#"{"after":"refusal","n":2}"#);
    rotated_token(&rotated);
    let other = store_at("2h", clock);
    assert!(other.create(obj("{}")).is_ok(), "a new store works too");
    let service = TokenService::new(
        JsValue::UNDEFINED,
        clock.js(),
        JsValue::FALSE,
        JsValue::UNDEFINED,
    )
    .unwrap();
    let reply = handle(&service, "POST", "/token", r#"{"meta":{}}"#);
    assert_eq!(get(&reply, "status"), JsValue::from_f64(200.0));
}

#[wasm_bindgen_test]
fn ten_thousand_levels_deep_is_an_error_and_the_module_stays_usable() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let err = store
        .create(nested_object(10_000))
        .expect_err("deep meta accepted");
    assert_eq!(
        message(err),
        "metadata is nested deeper than the limit of 32 levels"
    );
    let token = store.create(obj("{}")).unwrap();
    let err = store
        .rotate(token.clone().into(), nested_object(10_000))
        .expect_err("deep update accepted");
    assert!(message(err).contains("32 levels"));
    // Deep arrays are levels too, as in the core's check.
    let mut array: JsValue = Array::new().into();
    for _ in 0..10_000 {
        array = Array::of1(&array).into();
    }
    let holder = js_sys::Object::new();
    Reflect::set(&holder, &"a".into(), &array).unwrap();
    let err = store
        .create(holder.into())
        .expect_err("deep array accepted");
    assert!(message(err).contains("32 levels"));
    // The refused rotation left the token in place.
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
    assert_still_usable(&store, &clock);
    // Exactly at the limit is still fine: the root is level 1.
    assert!(store.create(nested_object(31)).is_ok());
}

#[wasm_bindgen_test]
fn a_cyclic_object_is_an_error_and_the_module_stays_usable() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let cyclic = obj(r#"{"name":"loop","inner":{"list":[1,2]}}"#);
    let inner = get(&cyclic, "inner");
    Reflect::set(&inner, &"back".into(), &cyclic).unwrap();
    let err = store
        .create(cyclic.clone())
        .expect_err("cyclic meta accepted");
    assert_eq!(
        message(err),
        "meta contains itself (a cycle); it must be a JSON-like tree"
    );
    // A cycle through an array, and an object holding itself directly.
    let list = get(&inner, "list").unchecked_into::<Array>();
    Reflect::delete_property(inner.unchecked_ref::<js_sys::Object>(), &"back".into()).unwrap();
    list.push(&list);
    let err = store
        .create(cyclic)
        .expect_err("cycle via an array accepted");
    assert!(message(err).contains("a cycle"));
    let selfish = js_sys::Object::new();
    Reflect::set(&selfish, &"me".into(), &selfish).unwrap();
    let token = store.create(obj("{}")).unwrap();
    let err = store
        .rotate(token.into(), selfish.into())
        .expect_err("cyclic update accepted");
    assert!(message(err).contains("a cycle"));
    assert_still_usable(&store, &clock);

    // The same object twice, side by side, is no cycle: JSON.stringify writes it twice.
    let shared = obj(r#"{"x":1}"#);
    let twice = js_sys::Object::new();
    Reflect::set(&twice, &"a".into(), &shared).unwrap();
    Reflect::set(&twice, &"b".into(), &shared).unwrap();
    let token = store.create(twice.into()).unwrap();
    let rotated = store.rotate(token.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(json(&get(&rotated, "meta")), r#"{"a":{"x":1},"b":{"x":1}}"#);
}

#[wasm_bindgen_test]
fn nested_values_that_are_not_json_are_errors_that_leave_the_store_usable() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    let with_date = obj("{}");
    Reflect::set(&with_date, &"when".into(), &js_sys::Date::new_0()).unwrap();
    let err = store.create(with_date).expect_err("nested Date accepted");
    assert!(message(err).contains("instance of a class"));

    // {get trap() { throw new Error("boom") }}, enumerable like a literal's getter.
    let getter = obj(r#"{"enumerable":true}"#);
    Reflect::set(
        &getter,
        &"get".into(),
        &Function::new_no_args("throw new Error('boom')"),
    )
    .unwrap();
    let holder = obj("{}");
    Reflect::define_property(
        holder.unchecked_ref::<js_sys::Object>(),
        &"trap".into(),
        getter.unchecked_ref::<js_sys::Object>(),
    )
    .unwrap();
    let err = store
        .create(holder)
        .expect_err("a throwing getter accepted");
    assert_eq!(message(err), "meta has a property that threw: boom");

    let wide = js_sys::Object::new();
    for i in 0..1001 {
        Reflect::set(&wide, &format!("k{i}").into(), &JsValue::from_f64(1.0)).unwrap();
    }
    let err = store.create(wide.into()).expect_err("1001 keys accepted");
    assert_eq!(
        message(err),
        "metadata has more than the limit of 1000 keys in total"
    );
    assert_still_usable(&store, &clock);
}

#[wasm_bindgen_test]
fn session_options_give_grace_revocation_and_an_absolute_end() {
    let clock = FakeClock::at(START);
    let options = obj(r#"{"rotationGrace":"10s","revokeOnReuse":true,"maxSessionLifetime":"1h"}"#);
    let store = TokenStore::new("30min".into(), clock.js(), options).unwrap();
    let a = store.create(obj("{}")).unwrap();
    let b = rotated_token(&store.rotate(a.clone().into(), JsValue::UNDEFINED).unwrap());
    clock.set(START + 9_999.0);
    let replay = store.rotate(a.clone().into(), obj(r#"{"tab":2}"#)).unwrap();
    assert_eq!(
        rotated_token(&replay),
        b,
        "a replay in grace answers the same successor"
    );
    assert_eq!(json(&get(&replay, "meta")), r#"{"tab":2}"#);
    clock.set(START + 10_000.0);
    let reused = store.rotate(a.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(get(&reused, "ok"), JsValue::FALSE);
    let ended = store.rotate(b.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(get(&ended, "ok"), JsValue::FALSE, "reuse ended the session");
    assert_eq!(store.size(), 0);
}

#[wasm_bindgen_test]
fn session_options_are_checked_like_the_command_line() {
    let clock = FakeClock::at(START);
    let refused = |options: &str| {
        message(
            TokenStore::new("2h".into(), clock.js(), obj(options))
                .err()
                .expect("refused"),
        )
    };
    assert!(refused(r#"{"rotationGrace":"999ms"}"#).contains("1s to 5min"));
    assert!(refused(r#"{"maxSessionLifetime":"401d"}"#).contains("30min to 400d"));
    assert_eq!(
        refused(r#"{"maxSessionLifetime":"1h"}"#),
        "--max-session-lifetime (1h) must not be shorter than --token-lifetime (2h)"
    );
    assert!(refused(r#"{"revokeOnReuse":"yes"}"#).contains("boolean"));
    assert!(
        TokenService::new("2h".into(), clock.js(), JsValue::FALSE, obj("[]")).is_err(),
        "an array is not an options object"
    );
    assert_eq!(
        token_server_wasm::rotation_grace_millis("30s".into()).unwrap(),
        Some(30_000.0)
    );
    assert_eq!(
        token_server_wasm::rotation_grace_millis(JsValue::UNDEFINED).unwrap(),
        None
    );
    assert!(token_server_wasm::max_session_lifetime_millis("10min".into()).is_err());
}

#[wasm_bindgen_test]
fn the_json_text_paths_answer_like_the_object_paths() {
    let clock = FakeClock::at(START);
    let store = store_at("30min", &clock);
    let token = String::from(store.create_json(r#"{"user":"ann"}"#).unwrap());
    assert_eq!(token.len(), TOKEN_LEN);
    let rotated = obj(&store
        .rotate_json(&token, Some(r#"{"tab":2}"#.into()))
        .unwrap());
    assert_eq!(json(&get(&rotated, "meta")), r#"{"tab":2,"user":"ann"}"#);
    let next = rotated_token(&rotated);
    assert_eq!(
        store.rotate_json(&token, None).unwrap(),
        r#"{"ok":false,"error":"InvalidToken"}"#
    );
    // Not an object, not JSON, past the limits: errors, and the session is untouched.
    for bad in ["[1]", "{", "\"x\""] {
        let err = store.create_json(bad).expect_err("bad meta accepted");
        assert!(message(err).starts_with("meta must be JSON text of an object"));
    }
    let deep = format!("{}1{}", r#"{"a":"#.repeat(40), "}".repeat(40));
    let err = store.rotate_json(&next, Some(deep)).unwrap_err();
    assert!(
        message(err).contains("nested deeper"),
        "deep update accepted"
    );
    clock.set(START + HALF_HOUR - 1.0);
    assert!(store
        .rotate_json(&next, None)
        .unwrap()
        .starts_with(r#"{"ok":true"#));
}

#[wasm_bindgen_test]
fn a_session_home_answers_from_its_record_what_the_service_would() {
    let clock = FakeClock::at(START);
    let options = obj(r#"{"rotationGrace":"10s"}"#);
    let service = TokenService::new("2h".into(), clock.js(), JsValue::FALSE, options).unwrap();
    let login = r#"{"meta":{"user":"ann"}}"#;
    let route = |method: &str, body: &str| {
        service
            .route(
                method.into(),
                "/token".into(),
                "application/json".into(),
                body.into(),
                JsValue::UNDEFINED,
            )
            .unwrap()
    };
    let id = get(&route("POST", login), "login")
        .as_string()
        .expect("a login route");
    let answer = |record: &JsValue, method: &str, body: &str| {
        service
            .answer_session(
                id.clone().into(),
                record.clone(),
                method.into(),
                "/token".into(),
                "application/json".into(),
                body.into(),
            )
            .unwrap()
    };
    let created = answer(&JsValue::NULL, "POST", login);
    assert_eq!(get(&created, "status"), JsValue::from_f64(200.0));
    let record = get(&created, "record");
    assert!(record.as_string().is_some_and(|line| line.starts_with(&id)));
    let token = get(&created, "body").as_string().unwrap();
    let put = format!(r#"{{"token":"{token}"}}"#);
    assert_eq!(
        get(&route("PUT", &put), "session").as_string(),
        Some(id.clone())
    );
    let rotated = answer(&record, "PUT", &put);
    let body = get(&rotated, "body").as_string().unwrap();
    assert!(body.starts_with(r#"{"Ok":{"token":""#), "{body}");
    // The replay in grace, from the new record: the same successor, nothing to store.
    let record = get(&rotated, "record");
    let replay = answer(&record, "PUT", &put);
    assert_eq!(get(&replay, "body").as_string().unwrap(), body);
    assert!(get(&replay, "record").is_undefined());
    // A refusal is answered before any session: the same reply handle gives.
    let refused = get(&route("PUT", "{"), "reply");
    assert_eq!(get(&refused, "status"), JsValue::from_f64(400.0));
    // DELETE ends it: the record is to be deleted.
    let ended = answer(&record, "DELETE", &put);
    assert_eq!(get(&ended, "status"), JsValue::from_f64(202.0));
    assert!(get(&ended, "record").is_null());
}

#[wasm_bindgen_test]
fn api_keys_are_parsed_and_checked_by_the_core() {
    const KEY_A: &str = "alpha-0123456789abcdefghijklmnopqrstuv";
    const KEY_B: &str = "bravo-0123456789abcdefghijklmnopqrstuv";
    let service = TokenService::new(
        "2h".into(),
        JsValue::UNDEFINED,
        JsValue::FALSE,
        JsValue::UNDEFINED,
    )
    .unwrap();
    let login = |authorization: Option<&str>| {
        service
            .handle(
                "POST".into(),
                "/token".into(),
                "application/json".into(),
                r#"{"meta":{}}"#.into(),
                authorization.map_or(JsValue::UNDEFINED, JsValue::from_str),
            )
            .unwrap()
    };
    assert_eq!(get(&login(None), "status"), JsValue::from_f64(200.0));

    let info = service
        .set_api_keys(format!("# keys\n{KEY_A}\n").into())
        .unwrap();
    assert_eq!(get(&info, "count"), JsValue::from_f64(1.0));
    let missing = login(None);
    assert_eq!(get(&missing, "status"), JsValue::from_f64(401.0));
    assert!(get(&missing, "wwwAuthenticate")
        .as_string()
        .unwrap()
        .starts_with("Bearer"));
    assert_eq!(
        get(&login(Some(&format!("Bearer {KEY_B}"))), "status"),
        JsValue::from_f64(401.0)
    );
    assert_eq!(
        get(&login(Some(&format!("bearer {KEY_A}"))), "status"),
        JsValue::from_f64(200.0)
    );
    assert_eq!(service.size(), 2, "a refused login made no token");

    // A bad text names its line and keeps the keys in force.
    let err = service
        .set_api_keys(format!("{KEY_B}\n\ntoo-short\n").into())
        .unwrap_err();
    assert_eq!(
        message(err),
        "line 3: the key has 9 characters; at least 32 are required"
    );
    assert_eq!(
        get(&login(Some(&format!("Bearer {KEY_A}"))), "status"),
        JsValue::from_f64(200.0)
    );
}

/// Calls `f` with `crypto.getRandomValues` counted, and returns how often it was called.
fn count_random_calls(f: impl FnOnce()) -> u32 {
    let crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto")).expect("crypto");
    let name = JsValue::from_str("getRandomValues");
    let original: Function = Reflect::get(&crypto, &name)
        .expect("getRandomValues")
        .unchecked_into();
    let calls = Rc::new(Cell::new(0u32));
    let wrapper = {
        let (calls, original, crypto) = (calls.clone(), original.clone(), crypto.clone());
        Closure::<dyn Fn(JsValue) -> JsValue>::new(move |buffer: JsValue| {
            calls.set(calls.get() + 1);
            original.call1(&crypto, &buffer).expect("getRandomValues")
        })
    };
    Reflect::set(&crypto, &name, wrapper.as_ref()).expect("wrap getRandomValues");
    f();
    // An own property shadowed the prototype's method; removing it restores the original.
    Reflect::delete_property(crypto.unchecked_ref::<js_sys::Object>(), &name)
        .expect("unwrap getRandomValues");
    calls.get()
}

#[wasm_bindgen_test]
fn token_bytes_come_from_crypto_a_block_at_a_time() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    // 300 logins draw 7,200 bytes (a 16-byte secret and an 8-byte session id each): the
    // rest of the 4 KiB block in use (left by earlier tests), then one or two fresh blocks.
    // Each call out to JS costs about 6 µs in Node, so 512-byte blocks (14 calls here)
    // cost ~250 ns a token.
    let calls = count_random_calls(|| {
        let tokens: Vec<String> = (0..300)
            .map(|_| String::from(store.create_json(r#"{"n":1}"#).unwrap()))
            .collect();
        let mut unique = tokens.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tokens.len(), "every token differs");
    });
    assert!(
        (1..=2).contains(&calls),
        "{calls} calls of crypto.getRandomValues for 300 tokens"
    );
}

#[wasm_bindgen_test]
fn the_clock_is_read_once_per_operation() {
    let calls = Rc::new(Cell::new(0u32));
    let counter = calls.clone();
    let clock = Closure::<dyn Fn() -> f64>::new(move || {
        counter.set(counter.get() + 1);
        START
    });
    let store = TokenStore::new("2h".into(), clock.as_ref().clone(), JsValue::UNDEFINED)
        .expect("store builds");
    assert_eq!(calls.get(), 1, "the constructor reads the clock once");
    let token = String::from(store.create_json(r#"{"n":1}"#).unwrap());
    let rotated = obj(&store.rotate_json(&token, None).unwrap());
    store
        .rotate(get(&rotated, "token"), JsValue::UNDEFINED)
        .unwrap();
    assert_eq!(calls.get(), 4, "one read per create and rotation");
}

/// `{"a": array}` with `array.length` set to `length`: a sparse array, no elements stored.
fn holding_sparse_array(length: f64) -> JsValue {
    let array = Array::new();
    Reflect::set(&array, &"length".into(), &JsValue::from_f64(length)).unwrap();
    let holder = js_sys::Object::new();
    Reflect::set(&holder, &"a".into(), &array).unwrap();
    holder.into()
}

#[wasm_bindgen_test]
fn a_huge_sparse_array_is_refused_before_it_is_read() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    // `[]` with a length set: JSON.stringify would write `length` nulls, so it is over the
    // byte cap; the walk must say so from the length, not allocate or read that many.
    for length in [4_294_967_295.0, 100_000_000.0, 65_536.0] {
        let err = store
            .create(holding_sparse_array(length))
            .expect_err("a huge array accepted");
        assert_eq!(
            message(err),
            "metadata is larger than the limit of 65536 bytes (as compact JSON)",
            "length {length}"
        );
    }
    let token = store.create(obj("{}")).unwrap();
    let err = store
        .rotate(token.clone().into(), holding_sparse_array(4_294_967_295.0))
        .expect_err("a huge array in an update accepted");
    assert!(message(err).contains("larger than the limit"));
    // The refused update left the token in place.
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
    // A small sparse array reads as JSON.stringify writes it.
    let token = store.create(holding_sparse_array(3.0)).unwrap();
    let rotated = store.rotate(token.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(json(&get(&rotated, "meta")), r#"{"a":[null,null,null]}"#);
    assert_still_usable(&store, &clock);
}

/// A Proxy of `target` whose `trap` throws `Error(trap)`.
fn proxy_throwing_in(target: JsValue, trap: &str) -> JsValue {
    let handler = js_sys::Object::new();
    let body = format!("throw new Error('{trap}')");
    Reflect::set(&handler, &trap.into(), &Function::new_no_args(&body)).unwrap();
    js_sys::Proxy::new(&target, &handler).into()
}

fn revoked_proxy() -> JsValue {
    revoked_proxy_of(js_sys::Object::new().into())
}

fn revoked_proxy_of(target: JsValue) -> JsValue {
    let pair = js_sys::Proxy::revocable(&target, &js_sys::Object::new());
    let revoke: Function = get(&pair, "revoke").unchecked_into();
    revoke.call0(&JsValue::UNDEFINED).unwrap();
    get(&pair, "proxy")
}

fn holding(value: &JsValue) -> JsValue {
    let holder = js_sys::Object::new();
    Reflect::set(&holder, &"p".into(), value).unwrap();
    holder.into()
}

#[wasm_bindgen_test]
fn proxies_whose_traps_throw_are_errors_and_the_module_stays_usable() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    // A revoked Proxy (an Immer draft after its produce() returned) throws on every
    // operation, as do the traps of these. Each throw used to unwind through the module
    // without restoring its stack pointer: after about 1,500 such calls every call into
    // the module failed with "memory access out of bounds".
    let cases = [
        ("revoked, as the metadata", revoked_proxy()),
        ("revoked, nested", holding(&revoked_proxy())),
        (
            "ownKeys",
            holding(&proxy_throwing_in(js_sys::Object::new().into(), "ownKeys")),
        ),
        (
            "getPrototypeOf",
            holding(&proxy_throwing_in(
                js_sys::Object::new().into(),
                "getPrototypeOf",
            )),
        ),
        (
            "revoked, of a function",
            holding(&revoked_proxy_of(Function::new_no_args("").into())),
        ),
        (
            "get of an array's length",
            holding(&proxy_throwing_in(Array::new().into(), "get")),
        ),
    ];
    for (what, meta) in &cases {
        for _ in 0..2_000 {
            let err = store
                .create(meta.clone())
                .expect_err("a throwing proxy accepted");
            let text = message(err);
            assert!(text.starts_with("meta "), "{what}: {text}");
        }
    }
    let token = store.create(obj("{}")).unwrap();
    let err = store
        .rotate(token.clone().into(), revoked_proxy())
        .expect_err("a revoked proxy as an update accepted");
    assert!(message(err).contains("revoked"));
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
    assert_still_usable(&store, &clock);

    // A Proxy that forwards (Vue's reactive(), MobX) is read like its target.
    let forwarding = js_sys::Proxy::new(&obj(r#"{"x":[1,{"y":2}]}"#), &js_sys::Object::new());
    let token = store.create(forwarding.into()).unwrap();
    let rotated = store.rotate(token.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(json(&get(&rotated, "meta")), r#"{"x":[1,{"y":2}]}"#);
}

#[wasm_bindgen_test]
fn strings_with_lone_surrogates_are_refused_as_the_json_paths_refuse_them() {
    let clock = FakeClock::at(START);
    let store = store_at("2h", &clock);
    // Built by JS's parser from escapes: a Rust &str cannot hold a lone surrogate.
    let value = obj(r#"{"a":"\ud800x"}"#);
    let keys = obj(r#"{"\ud800":1,"\udc00":2}"#);
    let nested = obj(r#"{"a":[{"\udfff":true}]}"#);
    for meta in [&value, &keys, &nested] {
        // JSON.stringify writes the lone surrogate as an escape, which createJson (and the
        // HTTP API) refuse; the object path used to store U+FFFD instead, silently, and
        // the two keys above as one.
        let text = JSON::stringify(meta).unwrap().as_string().unwrap();
        assert!(store.create_json(&text).is_err());
        let err = store
            .create(meta.clone())
            .expect_err("a lone surrogate accepted");
        assert_eq!(
            message(err),
            "meta holds a string that is not valid UTF-16 (a lone surrogate)"
        );
    }
    let token = store.create(obj("{}")).unwrap();
    let err = store
        .rotate(token.clone().into(), value)
        .expect_err("a lone surrogate in an update accepted");
    assert!(message(err).contains("lone surrogate"));
    rotated_token(&store.rotate(token.into(), JsValue::UNDEFINED).unwrap());
    // U+FFFD itself and surrogate pairs are text like any other.
    let token = store
        .create(obj(r#"{"\ufffd":"\ud83d\ude00\ufffd"}"#))
        .unwrap();
    let rotated = store.rotate(token.into(), JsValue::UNDEFINED).unwrap();
    assert_eq!(
        json(&get(&rotated, "meta")),
        "{\"\u{fffd}\":\"\u{1f600}\u{fffd}\"}"
    );
    assert_still_usable(&store, &clock);
}
