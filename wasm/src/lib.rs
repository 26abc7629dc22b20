//! JS facade of the token server: the core store and REST protocol as a WebAssembly package.
//!
//! Everything here only converts between JS values and the core's types; the store, the
//! merge rule and every HTTP answer live in `token_server_core`, so this host answers
//! exactly like the native one. Time comes from a JS function (default `Date.now`), which
//! lets JS tests drive expiry; randomness from `crypto.getRandomValues` through the core.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::ops::RangeInclusive;
use std::time::Duration;

use js_sys::{Array, Function, JsString, Object, Reflect, Uint8Array, JSON};
use serde::Serialize;
use serde_json::{Map, Value};
use token_server_core::auth::ApiKeys;
use token_server_core::config::{
    check_session_lifetimes, DEFAULT_PURGE_INTERVAL, DEFAULT_TOKEN_LIFETIME,
    MAX_SESSION_LIFETIME_RANGE, PURGE_INTERVAL_RANGE, ROTATION_GRACE_RANGE, TOKEN_LIFETIME_RANGE,
};
use token_server_core::duration::{check_range, parse_duration_in};
use token_server_core::protocol::routed::{Change, Route};
use token_server_core::protocol::{Body, Reply, Request, Service};
use token_server_core::session::SessionRules;
use token_server_core::snapshot::{read_session_line, session_line, ReadChecks, StoredSession};
use token_server_core::{
    Clock, DumpEntry, ManualClock, Meta, MetaError, MetaLimits, Monotonic, OsRandom, PurgeReport,
    Rotated, SessionId, StoreError, Timestamp, Token, TokenStore as Store, SESSION_ID_BYTES,
    TOKEN_LEN,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/** Metadata bound to a token: any plain JSON object. */
export type Meta = { [key: string]: unknown };
/** A token lifetime: milliseconds, or a duration such as "2h" or "1h30min" (30min to 96h). */
export type Lifetime = number | string;
/** Milliseconds since the Unix epoch, e.g. `Date.now`. */
export type ClockFn = () => number;
/**
 * Session rules, all off when absent (as on the native command line):
 * rotationGrace: an exchanged token answers its successor again for this long (1s to 5min);
 * revokeOnReuse: an exchanged token presented outside its grace ends its session;
 * maxSessionLifetime: a session ends this long after its login (30min to 400d, and not
 * shorter than the token lifetime). Durations are milliseconds or strings such as "30s".
 */
export interface SessionOptions {
  rotationGrace?: number | string;
  revokeOnReuse?: boolean;
  maxSessionLifetime?: number | string;
  /**
   * TokenService only, for tests: the service runs on a manual clock, starting at the
   * clock's time, that only the /test-clock endpoints move.
   */
  testClock?: boolean;
}
/** Gets each line the core logs, e.g. "INFO test clock: 3 expired tokens dropped, 0 remaining". */
export type LogSink = (line: string) => void;
export type RotateResult =
  | { ok: true; token: string; meta: Meta }
  | { ok: false; error: "InvalidToken" };
export interface PurgeResult { purged: number; remaining: number }
export interface DumpEntry { expires: number; expiresAt: string; meta: Meta }
export interface HttpReply {
  status: number;
  contentType: string | null;
  body: string;
  allow: string | null;
  wwwAuthenticate: string | null;
}
/**
 * Where a request goes when each session lives apart (a Durable Object): answered at once,
 * to a new session's home (`login`, a fresh session id in hex), or to the home of the
 * session its token names (`session`, hex).
 */
export type SessionRoute =
  | { reply: HttpReply }
  | { login: string }
  | { session: string };
/**
 * A session home's answer: the reply, and what to store: `record` a state-file line to
 * put, `null` to delete, absent to leave as it is; `liveUntil` (ms) when the stored record
 * stops mattering.
 */
export interface SessionReply extends HttpReply {
  record?: string | null;
  liveUntil?: number;
}
/** A key set as loaded: how many keys, and each key's fingerprint (never the key). */
export interface ApiKeysInfo { count: number; fingerprints: string[] }
"#;

/// Shows Rust panics as readable JS exceptions with the panic message, not "unreachable".
#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

thread_local! {
    /// Where the core's log lines go; see [`log_to`]. A wasm module runs on one thread.
    static LOG_SINK: RefCell<Option<Function>> = const { RefCell::new(None) };
}

/// The core's `log` lines (test clock moves, the dump, warnings), handed to a JS function.
struct JsLog;

impl log::Log for JsLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {}", record.level(), record.args());
        LOG_SINK.with(|sink| {
            if let Some(sink) = sink.borrow().as_ref() {
                // A sink that throws loses its line; it must not fail the request.
                let _ = sink.call1(&JsValue::UNDEFINED, &JsValue::from_str(&line));
            }
        });
    }

    fn flush(&self) {}
}

static JS_LOG: JsLog = JsLog;

/// Sends what the core logs at info level and above to `sink`, one line a call
/// (`"LEVEL message"`), as the native server logs it: the `HEAD /dump` lines, test clock
/// purges, warnings such as a revocation on reuse. Never a token. Hosts call it once at
/// start; a later call replaces the sink.
#[wasm_bindgen(js_name = logTo)]
pub fn log_to(#[wasm_bindgen(unchecked_param_type = "LogSink")] sink: Function) {
    LOG_SINK.with(|slot| *slot.borrow_mut() = Some(sink));
    // Fails only when already set, by an earlier call: the logger is the same.
    let _ = log::set_logger(&JS_LOG);
    log::set_max_level(log::LevelFilter::Info);
}

/// Why a call from JS was refused; becomes the message of the JS `Error` thrown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FacadeError {
    /// An argument has the wrong type or value; says which and what was expected.
    BadArgument(String),
    /// The JS clock threw or did not return a usable time.
    Clock(String),
    /// The store could not issue a token (no randomness).
    Store(String),
}

impl fmt::Display for FacadeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FacadeError::BadArgument(reason) => f.write_str(reason),
            FacadeError::Clock(reason) => write!(f, "the clock failed: {reason}"),
            FacadeError::Store(reason) => write!(f, "the store failed: {reason}"),
        }
    }
}

impl std::error::Error for FacadeError {}

/// The one place errors become JS `Error`s, so every throw carries a message.
fn js_error(err: FacadeError) -> JsError {
    JsError::new(&err.to_string())
}

/// Where the current time comes from: a JS function, or `Date.now()` when none is given;
/// or, with `testClock`, a manual clock that only `/test-clock` moves.
///
/// The core's `Clock` cannot fail, but a JS clock can throw. So the facade reads the JS
/// clock first, refusing the call on failure before any token changes, into `clock`, a
/// `ManualClock` the store then reads. In test mode nothing sets it but the protocol's
/// `/test-clock` endpoints, which hold a clone of it.
struct JsClock {
    function: Option<ClockFunction>,
    clock: ManualClock,
    /// Whether `/test-clock` owns the time: then `tick` leaves the clock alone.
    test_mode: bool,
}

impl JsClock {
    fn new(clock: JsValue, test_mode: bool) -> Result<Self, FacadeError> {
        let function = if clock.is_undefined() || clock.is_null() {
            None
        } else {
            let function = clock.dyn_into::<Function>().map_err(|_| {
                FacadeError::BadArgument(
                    "clock must be a function returning milliseconds since the epoch".into(),
                )
            })?;
            Some(function.unchecked_into::<ClockFunction>())
        };
        let clock = JsClock {
            function,
            clock: ManualClock::default(),
            test_mode: false,
        };
        // Read once now so a broken clock is reported by the constructor, not later; a
        // test clock starts at this time.
        clock.tick()?;
        Ok(JsClock { test_mode, ..clock })
    }

    /// Reads the JS clock into the clock the store sees (not in test mode).
    fn tick(&self) -> Result<(), FacadeError> {
        if self.test_mode {
            return Ok(());
        }
        let millis = match &self.function {
            None => js_sys::Date::now(),
            Some(function) => {
                let millis = function
                    .call_for_millis(&JsValue::UNDEFINED)
                    .map_err(|err| FacadeError::Clock(describe(&err)))?;
                // The number JS made of the answer: NaN for "noon" or undefined, 0 for null
                // or false. Anything but a plausible time is read again as the value it is,
                // to refuse what is not a number and say what came back (a broken clock is
                // called twice).
                if millis > 0.0 && millis <= MAX_SAFE_INTEGER {
                    millis
                } else {
                    exact_millis(function)?
                }
            }
        };
        // Also refuses NaN and infinities; timestamps past 2^53 are not exact in JS anyway.
        if !(0.0..=MAX_SAFE_INTEGER).contains(&millis) {
            return Err(FacadeError::Clock(format!(
                "it returned {millis}, not milliseconds since the epoch"
            )));
        }
        // Truncation is intended: a clock such as performance.timeOrigin + now() has
        // sub-millisecond digits the store does not use.
        self.clock.set(Timestamp(millis as u64));
        Ok(())
    }
}

#[wasm_bindgen]
extern "C" {
    /// A host's clock function, typed so the store can read a number straight out of it.
    #[wasm_bindgen(extends = Function)]
    type ClockFunction;

    /// `clock.call(thisArg)`, the answer converted to a number as JS converts values. Read
    /// on every operation: a number crosses the boundary as it is, where a JS value costs
    /// a slot in the module's value table and a second call out to read it (~160 of ~210 ns
    /// in Node).
    #[wasm_bindgen(method, catch, js_name = call)]
    fn call_for_millis(this: &ClockFunction, this_arg: &JsValue) -> Result<f64, JsValue>;
}

/// What `function` answers, refused unless it is a number.
fn exact_millis(function: &ClockFunction) -> Result<f64, FacadeError> {
    let value = function
        .call0(&JsValue::UNDEFINED)
        .map_err(|err| FacadeError::Clock(describe(&err)))?;
    value.as_f64().ok_or_else(|| {
        FacadeError::Clock(format!(
            "it returned {} instead of a number",
            describe(&value)
        ))
    })
}

/// `Number.MAX_SAFE_INTEGER`: the largest integer a JS number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A short description of a JS value for an error message.
fn describe(value: &JsValue) -> String {
    if value.dyn_ref::<js_sys::Error>().is_some() {
        // Through Reflect.get: a getter may throw (see `try_is_array`).
        return Reflect::get(value, &JsValue::from_str("message"))
            .ok()
            .and_then(|message| message.as_string())
            .unwrap_or_else(|| "an error".into());
    }
    if let Some(text) = value.as_string() {
        return format!("the string {text:?}");
    }
    if value.is_null() {
        return "null".into();
    }
    if try_is_array(value).unwrap_or(false) {
        return "an array".into();
    }
    value
        .js_typeof()
        .as_string()
        .unwrap_or_else(|| "a value".into())
}

/// The lifetime argument: milliseconds or a duration string, in the CLI's range; the
/// CLI's default when absent.
fn lifetime_from(value: &JsValue) -> Result<Duration, FacadeError> {
    duration_from(
        value,
        "lifetime",
        &TOKEN_LIFETIME_RANGE,
        DEFAULT_TOKEN_LIFETIME,
    )
}

/// A duration argument as the CLI takes it (a string such as "90s"), or whole
/// milliseconds, checked against `range`; `default` when absent.
fn duration_from(
    value: &JsValue,
    name: &str,
    range: &RangeInclusive<Duration>,
    default: Duration,
) -> Result<Duration, FacadeError> {
    if value.is_undefined() || value.is_null() {
        return Ok(default);
    }
    if let Some(text) = value.as_string() {
        return parse_duration_in(&text, range)
            .map_err(|err| FacadeError::BadArgument(format!("{name} {err}")));
    }
    if let Some(millis) = value.as_f64() {
        if !(0.0..=MAX_SAFE_INTEGER).contains(&millis) || millis.fract() != 0.0 {
            return Err(FacadeError::BadArgument(format!(
                "{name} {millis} is not a whole number of milliseconds"
            )));
        }
        let millis = millis as u64;
        return check_range(&format!("{millis}ms"), Duration::from_millis(millis), range)
            .map_err(|err| FacadeError::BadArgument(format!("{name} {err}")));
    }
    Err(FacadeError::BadArgument(format!(
        "{name} must be milliseconds or a duration such as \"2h\", not {}",
        describe(value)
    )))
}

/// The purge interval a host should use, in milliseconds: `value` is a duration such as
/// "1min" or milliseconds, in the CLI's range (1s to 90min); the CLI's default (1min) when
/// absent. Lets JS hosts take `--purge-interval` exactly as the native CLI does.
#[wasm_bindgen(js_name = purgeIntervalMillis)]
pub fn purge_interval_millis(
    #[wasm_bindgen(unchecked_optional_param_type = "number | string")] value: JsValue,
) -> Result<f64, JsError> {
    let interval = duration_from(
        &value,
        "purge interval",
        &PURGE_INTERVAL_RANGE,
        DEFAULT_PURGE_INTERVAL,
    )
    .map_err(js_error)?;
    // At most 90min, so exact as a JS number.
    Ok(interval.as_millis() as f64)
}

/// Parses a host's command line (`argv` without the program) with the core's flag table,
/// for the flags named in `names` (long names, e.g. `["port", "token-lifetime"]`): the same
/// syntax, ranges and messages as the native CLI, so no JS parser of its own exists.
/// Returns `{ help: true }` for `-h`/`--help`, `{ version: true }` for `-V`, else
/// `{ values }`: each flag by long name, durations in milliseconds, switches as booleans,
/// unset ones absent. Throws an `Error` whose message names the flag and what it allows.
///
/// `env`, when given, is a function from a variable name (`TOKEN_SERVER_PORT`) to its
/// value or `undefined`: a flag not on the command line is then read from its variable,
/// as the native CLI does (a bad value's message names the variable).
#[wasm_bindgen(js_name = parseFlags)]
pub fn parse_flags(
    argv: Vec<String>,
    names: Vec<String>,
    env: Option<Function>,
) -> Result<JsValue, JsError> {
    use token_server_core::flags::{self, FlagValue, Parsed};
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let specs = flags::only(&names);
    let lookup = |name: &str| -> Option<std::ffi::OsString> {
        let value = env
            .as_ref()?
            .call1(&JsValue::NULL, &JsValue::from_str(name))
            .ok()?;
        value.as_string().map(Into::into)
    };
    let parsed =
        flags::parse(&specs, argv, &lookup).map_err(|err| JsError::new(&err.to_string()))?;
    let answer = Object::new();
    let set = |object: &Object, key: &str, value: JsValue| {
        Reflect::set(object, &JsValue::from_str(key), &value)
            .map(|_| ())
            .map_err(|_| JsError::new("cannot build the flags object"))
    };
    let values = match parsed {
        Parsed::Help => {
            set(&answer, "help", JsValue::TRUE)?;
            return Ok(answer.into());
        }
        Parsed::Version => {
            set(&answer, "version", JsValue::TRUE)?;
            return Ok(answer.into());
        }
        Parsed::Values(values) => values,
    };
    let object = Object::new();
    for (spec, value) in values.iter() {
        let value = match value {
            None => continue,
            Some(FlagValue::Switch(on)) => JsValue::from_bool(*on),
            // Every range ends far below 2^53 ms, so exact as a JS number.
            Some(FlagValue::Duration(duration)) => JsValue::from_f64(duration.as_millis() as f64),
            Some(FlagValue::Bytes(count) | FlagValue::Count(count)) => {
                JsValue::from_f64(*count as f64)
            }
            Some(FlagValue::Port(port)) => JsValue::from_f64(f64::from(*port)),
            Some(FlagValue::Address(address)) => JsValue::from_str(&address.to_string()),
            Some(FlagValue::Path(path)) => JsValue::from_str(&path.to_string_lossy()),
            Some(FlagValue::Text(text)) => JsValue::from_str(text),
            Some(FlagValue::Choice(choice)) => JsValue::from_str(choice),
        };
        set(&object, spec.long, value)?;
    }
    set(&answer, "values", object.into())?;
    Ok(answer.into())
}

/// The options part of a host's usage text for the flags named in `names`: the native
/// `--help` entries (range, default) from the same table, naming each flag's variable when
/// `with_env` (a host that passes `env` to [`parse_flags`]).
#[wasm_bindgen(js_name = flagHelp)]
pub fn flag_help(names: Vec<String>, with_env: Option<bool>) -> String {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let flags = token_server_core::flags::only(&names);
    if with_env.unwrap_or(false) {
        token_server_core::flags::help(&flags)
    } else {
        token_server_core::flags::help_without_env(&flags)
    }
}

/// `--rotation-grace` as the native CLI takes it: milliseconds, or `undefined` when absent
/// (no grace); throws naming the range (1s to 5min) otherwise. For JS hosts' own flags.
#[wasm_bindgen(js_name = rotationGraceMillis)]
pub fn rotation_grace_millis(
    #[wasm_bindgen(unchecked_optional_param_type = "number | string")] value: JsValue,
) -> Result<Option<f64>, JsError> {
    let grace =
        optional_duration(&value, "rotation grace", &ROTATION_GRACE_RANGE).map_err(js_error)?;
    // At most 5min, so exact as a JS number.
    Ok(grace.map(|grace| grace.as_millis() as f64))
}

/// `--max-session-lifetime` as the native CLI takes it: milliseconds, or `undefined` when
/// absent (no limit); throws naming the range (30min to 400d) otherwise.
#[wasm_bindgen(js_name = maxSessionLifetimeMillis)]
pub fn max_session_lifetime_millis(
    #[wasm_bindgen(unchecked_optional_param_type = "number | string")] value: JsValue,
) -> Result<Option<f64>, JsError> {
    let max = optional_duration(&value, "max session lifetime", &MAX_SESSION_LIFETIME_RANGE)
        .map_err(js_error)?;
    // At most 400d (3.5e10 ms), so exact as a JS number.
    Ok(max.map(|max| max.as_millis() as f64))
}

/// A duration argument that is off when absent.
fn optional_duration(
    value: &JsValue,
    name: &str,
    range: &RangeInclusive<Duration>,
) -> Result<Option<Duration>, FacadeError> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    duration_from(value, name, range, *range.start()).map(Some)
}

/// The session rules for tokens of `lifetime` from a `SessionOptions` object (absent:
/// the seed's rules).
fn rules_from(options: &JsValue, lifetime: Duration) -> Result<SessionRules, FacadeError> {
    let mut rules = SessionRules::new(lifetime);
    if options.is_undefined() || options.is_null() {
        return Ok(rules);
    }
    let is_array = try_is_array(options).map_err(|err| {
        FacadeError::BadArgument(format!("options cannot be read: {}", describe(&err)))
    })?;
    if !options.is_object() || is_array {
        return Err(FacadeError::BadArgument(format!(
            "options must be an object such as {{rotationGrace: \"30s\"}}, not {}",
            describe(options)
        )));
    }
    let field = |name: &str| {
        js_sys::Reflect::get(options, &JsValue::from_str(name)).map_err(|err| {
            FacadeError::BadArgument(format!("options.{name} cannot be read: {}", describe(&err)))
        })
    };
    rules.rotation_grace = optional_duration(
        &field("rotationGrace")?,
        "rotationGrace",
        &ROTATION_GRACE_RANGE,
    )?;
    rules.revoke_on_reuse = flag_from(&field("revokeOnReuse")?, "revokeOnReuse")?;
    rules.max_session_lifetime = optional_duration(
        &field("maxSessionLifetime")?,
        "maxSessionLifetime",
        &MAX_SESSION_LIFETIME_RANGE,
    )?;
    check_session_lifetimes(rules.max_session_lifetime, lifetime)
        .map_err(|err| FacadeError::BadArgument(err.to_string()))?;
    Ok(rules)
}

/// `options.testClock`: whether the service runs on a manual clock moved over
/// `/test-clock` (for tests only; off when absent).
fn test_clock_from(options: &JsValue) -> Result<bool, FacadeError> {
    if !options.is_object() {
        // `rules_from` has refused anything but an object or nothing.
        return Ok(false);
    }
    let value = Reflect::get(options, &JsValue::from_str("testClock")).map_err(|err| {
        FacadeError::BadArgument(format!(
            "options.testClock cannot be read: {}",
            describe(&err)
        ))
    })?;
    flag_from(&value, "testClock")
}

/// Metadata from a plain JS object; arrays, null, class instances and primitives are
/// refused because the seed's metadata is a JSON object. Nested values are checked against
/// `limits` while they are read, so a deep or cyclic object is a `BadArgument` rather
/// than a wasm stack overflow (which would break every later call into the module).
fn map_from(
    value: JsValue,
    what: &str,
    limits: &MetaLimits,
) -> Result<Map<String, Value>, FacadeError> {
    let refuse = |value: &JsValue| {
        FacadeError::BadArgument(format!(
            "{what} must be a plain object, not {}",
            describe(value)
        ))
    };
    let unreadable = |err: JsValue| {
        FacadeError::BadArgument(format!("{what} cannot be read: {}", describe(&err)))
    };
    if !value.is_object() || try_is_array(&value).map_err(unreadable)? {
        return Err(refuse(&value));
    }
    if !is_plain_object(&value).map_err(unreadable)? {
        return Err(FacadeError::BadArgument(format!(
            "{what} must be a plain object, not an instance of a class"
        )));
    }
    match JsonReader::new(what, limits).read(value)? {
        Value::Object(map) => Ok(map),
        // The root was checked to be a plain object above, and the reader keeps that shape.
        _ => Err(refuse(&JsValue::NULL)),
    }
}

/// Whether `value` is a plain object: its prototype is Object.prototype (or null). A Date,
/// Map or typed array would otherwise be turned into something the caller did not mean.
/// Errs with what a Proxy's trap threw.
fn is_plain_object(value: &JsValue) -> Result<bool, JsValue> {
    let prototype = try_prototype_of(value)?;
    Ok(prototype.is_null() || try_prototype_of(&prototype)?.is_null())
}

#[wasm_bindgen]
extern "C" {
    // What the walk asks of a caller's value, each able to throw (a Proxy's trap, a revoked
    // Proxy): `catch` turns the throw into an `Err`. An import without it lets the
    // exception unwind through the module, which skips restoring its stack pointer; after
    // enough of them every call into the module fails ("memory access out of bounds").
    /// `Array.isArray(value)`.
    #[wasm_bindgen(catch, js_namespace = Array, js_name = isArray)]
    fn try_is_array(value: &JsValue) -> Result<bool, JsValue>;

    /// `Object.keys(value)`.
    #[wasm_bindgen(catch, js_namespace = Object, js_name = keys)]
    fn try_object_keys(value: &JsValue) -> Result<Array, JsValue>;

    /// `Object.getPrototypeOf(value)`.
    #[wasm_bindgen(catch, js_namespace = Object, js_name = getPrototypeOf)]
    fn try_prototype_of(value: &JsValue) -> Result<JsValue, JsValue>;
}

/// Reads a JS value into JSON with an explicit stack instead of recursion, so no input can
/// overflow the wasm stack, checking `MetaLimits` (depth, total keys) and cycles as it goes.
///
/// Why not `serde_wasm_bindgen::from_value` on the whole value: it recurses once per level
/// and has no depth limit, and a stack overflow inside wasm leaves the module's stack
/// pointer where it was, so every later call on any store fails with "memory access out
/// of bounds". serde-wasm-bindgen still converts the leaves (numbers, strings, ...), which
/// cannot nest. Properties are read with `Reflect.get`, which turns a throwing getter into
/// an error here instead of an exception unwinding through the module.
struct JsonReader<'a> {
    what: &'a str,
    limits: &'a MetaLimits,
    /// Keys seen so far in all objects, as `MetaLimits` counts them.
    keys: usize,
    /// Array elements seen so far in all arrays. Each takes at least one byte of the
    /// compact JSON text of its own (the `[` or `,` before it), so past `max_bytes` of them
    /// the metadata is too large: refused before a sparse `length` of 2^32 - 1 (or arrays
    /// sharing one array, 2^30 elements in 30 levels) is allocated or read.
    elements: usize,
}

/// A container being read: its JS source (also the cycle check's ancestor list), what was
/// read of it so far, and where the next child comes from.
struct Frame {
    source: JsValue,
    /// How many children it has, read once (an array's `length` may be a Proxy's trap).
    len: u32,
    next: u32,
    partial: Partial,
}

enum Partial {
    Object {
        keys: Array,
        map: Map<String, Value>,
    },
    Array(Vec<Value>),
}

impl<'a> JsonReader<'a> {
    fn new(what: &'a str, limits: &'a MetaLimits) -> Self {
        JsonReader {
            what,
            limits,
            keys: 0,
            elements: 0,
        }
    }

    fn bad(&self, reason: impl fmt::Display) -> FacadeError {
        FacadeError::BadArgument(format!("{} {reason}", self.what))
    }

    fn read(mut self, root: JsValue) -> Result<Value, FacadeError> {
        let mut stack = vec![self.open(root, 1, &[])?];
        loop {
            let Some(frame) = stack.last_mut() else {
                return Err(self.bad("is empty"));
            };
            if frame.next < frame.len {
                let index = frame.next;
                frame.next += 1;
                let child = match &frame.partial {
                    Partial::Object { keys, .. } => Reflect::get(&frame.source, &keys.get(index)),
                    Partial::Array(_) => Reflect::get_u32(&frame.source, index),
                }
                .map_err(|err| {
                    self.bad(format_args!(
                        "has a property that threw: {}",
                        describe(&err)
                    ))
                })?;
                if is_container(&child) {
                    let depth = stack.len() + 1;
                    let frame = self.open(child, depth, &stack)?;
                    stack.push(frame);
                } else {
                    let value = self.leaf(child)?;
                    if let Some(frame) = stack.last_mut() {
                        frame.insert(index, value).map_err(|why| self.bad(why))?;
                    }
                }
                continue;
            }
            let Some(done) = stack.pop() else {
                return Err(self.bad("is empty"));
            };
            let value = done.finish();
            match stack.last_mut() {
                // The child just read is the one before the parent's `next`.
                Some(parent) => parent
                    .insert(parent.next - 1, value)
                    .map_err(|why| self.bad(why))?,
                None => return Ok(value),
            }
        }
    }

    /// Starts reading a container at `depth` (the root object is level 1).
    fn open(
        &mut self,
        source: JsValue,
        depth: usize,
        ancestors: &[Frame],
    ) -> Result<Frame, FacadeError> {
        if ancestors.iter().any(|frame| frame.source == source) {
            return Err(self.bad("contains itself (a cycle); it must be a JSON-like tree"));
        }
        if depth > self.limits.max_depth {
            return Err(self.bad_meta(MetaError::TooDeep {
                limit: self.limits.max_depth,
            }));
        }
        let unreadable =
            |err: JsValue| self.bad(format_args!("cannot be read: {}", describe(&err)));
        if try_is_array(&source).map_err(unreadable)? {
            // A real array's length is a whole number below 2^32; a Proxy's trap may
            // answer anything, and what is not such a number reads as no elements.
            let len = Reflect::get(&source, &JsValue::from_str("length"))
                .map_err(unreadable)?
                .as_f64()
                .filter(|len| (0.0..=f64::from(u32::MAX)).contains(len))
                .map_or(0, |len| len as u32);
            self.elements = self.elements.saturating_add(len as usize);
            if self.elements > self.limits.max_bytes {
                return Err(self.bad_meta(MetaError::TooLarge {
                    limit: self.limits.max_bytes,
                }));
            }
            return Ok(Frame {
                source,
                len,
                next: 0,
                partial: Partial::Array(Vec::with_capacity(len as usize)),
            });
        }
        if !is_plain_object(&source).map_err(unreadable)? {
            return Err(self.bad(
                "must hold only JSON values: it holds an instance of a class (Date, Map, ...)",
            ));
        }
        let keys = try_object_keys(&source).map_err(unreadable)?;
        let len = keys.length();
        self.keys += len as usize;
        if self.keys > self.limits.max_keys {
            return Err(self.bad_meta(MetaError::TooManyKeys {
                limit: self.limits.max_keys,
            }));
        }
        Ok(Frame {
            source,
            len,
            next: 0,
            partial: Partial::Object {
                keys,
                map: Map::new(),
            },
        })
    }

    /// A limit error worded exactly as the core words it over HTTP.
    fn bad_meta(&self, err: MetaError) -> FacadeError {
        FacadeError::BadArgument(err.to_string())
    }

    /// A value that cannot nest: serde-wasm-bindgen converts it without recursing.
    fn leaf(&self, value: JsValue) -> Result<Value, FacadeError> {
        if value.is_function() {
            // Refused here: serde-wasm-bindgen's message would read the function's `name`,
            // which a revoked Proxy of a function throws on.
            return Err(self.bad("is not JSON-like: it holds a function"));
        }
        if let Some(text) = value.as_string() {
            return well_formed(text, &value)
                .map(Value::String)
                .ok_or_else(|| self.bad(LONE_SURROGATE));
        }
        serde_wasm_bindgen::from_value(value)
            .map_err(|err| self.bad(format_args!("is not JSON-like: {err}")))
    }
}

/// Why a string is refused: JSON.stringify writes a lone surrogate as an escape that
/// createJson and the HTTP API refuse, and converting it would make it U+FFFD silently.
const LONE_SURROGATE: &str = "holds a string that is not valid UTF-16 (a lone surrogate)";

/// `text`, the conversion of the JS string `source`, unless `source` is not well-formed
/// UTF-16: the conversion replaces each lone surrogate with U+FFFD, so only a `text`
/// holding U+FFFD needs the (slower, per code unit) check of the original.
fn well_formed(text: String, source: &JsValue) -> Option<String> {
    if text.contains('\u{fffd}') && !source.unchecked_ref::<JsString>().is_valid_utf16() {
        return None;
    }
    Some(text)
}

impl Frame {
    /// Stores the child read at `index`; `Err` for a key that is not well-formed UTF-16.
    fn insert(&mut self, index: u32, value: Value) -> Result<(), &'static str> {
        match &mut self.partial {
            Partial::Object { keys, map } => {
                let key = keys.get(index);
                if let Some(text) = key.as_string() {
                    map.insert(well_formed(text, &key).ok_or(LONE_SURROGATE)?, value);
                }
            }
            Partial::Array(items) => items.push(value),
        }
        Ok(())
    }

    fn finish(self) -> Value {
        match self.partial {
            Partial::Object { map, .. } => Value::Object(map),
            Partial::Array(items) => Value::Array(items),
        }
    }
}

/// Objects and arrays: what can nest. Functions are not (`is_object` is false for them),
/// so serde-wasm-bindgen refuses them as leaves.
fn is_container(value: &JsValue) -> bool {
    value.is_object()
}

fn flag_from(value: &JsValue, what: &str) -> Result<bool, FacadeError> {
    if value.is_undefined() || value.is_null() {
        return Ok(false);
    }
    value.as_bool().ok_or_else(|| {
        FacadeError::BadArgument(format!("{what} must be a boolean, not {}", describe(value)))
    })
}

fn token_from(value: &JsValue) -> Result<String, FacadeError> {
    value.as_string().ok_or_else(|| {
        FacadeError::BadArgument(format!("token must be a string, not {}", describe(value)))
    })
}

fn text_from(value: &JsValue, what: &str) -> Result<String, FacadeError> {
    value.as_string().ok_or_else(|| {
        FacadeError::BadArgument(format!("{what} must be a string, not {}", describe(value)))
    })
}

/// Plain objects (not `Map`s) and `null` for `None`, as JSON would give them.
fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, FacadeError> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|err| FacadeError::Store(format!("cannot convert the result to JS: {err}")))
}

fn store_error(err: StoreError) -> FacadeError {
    FacadeError::Store(err.to_string())
}

#[derive(Serialize)]
struct PurgeOut {
    purged: usize,
    remaining: usize,
}

impl From<PurgeReport> for PurgeOut {
    fn from(report: PurgeReport) -> Self {
        PurgeOut {
            purged: report.purged,
            remaining: report.remaining,
        }
    }
}

/// The `DumpEntry[]` of `entries` as JS values, through JSON text for the reasons of
/// [`json_to_js`]'s callers: the metadata is JSON already.
fn dump_to_js(entries: Vec<DumpEntry>) -> Result<JsValue, FacadeError> {
    let mut out = String::from("[");
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        // The RFC 3339 text is digits, '-', ':', '.', 'T' and 'Z': nothing to escape. A
        // String's fmt::Write cannot fail.
        let _ = write!(
            out,
            r#"{{"expires":{},"expiresAt":"{}","meta":{}}}"#,
            entry.expires.as_millis(),
            entry.expires.to_rfc3339(),
            entry.meta.as_json()
        );
    }
    out.push(']');
    json_to_js(&out)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReplyOut<'a> {
    status: u16,
    content_type: Option<&'a str>,
    body: &'a str,
    allow: Option<&'a str>,
    www_authenticate: Option<&'a str>,
}

#[derive(Serialize)]
struct ApiKeysOut {
    count: usize,
    fingerprints: Vec<String>,
}

/// The store's clock: the JS clock, kept from going back, so a `Date.now()` stepped back
/// (NTP, a VM resume) revives no expired token.
type StoreClock = Monotonic<ManualClock>;

type CoreStore = Store<StoreClock, OsRandom>;

/// A store of one-time tokens bound to metadata.
#[wasm_bindgen(js_name = TokenStore)]
pub struct TokenStore {
    clock: JsClock,
    store: CoreStore,
}

#[wasm_bindgen(js_class = TokenStore)]
impl TokenStore {
    /// A store whose tokens live for `lifetime` (milliseconds or e.g. "2h"; 30min to 96h;
    /// default 2h), reading time from `clock` (default `Date.now`), with the session rules
    /// of `options` (default: all off).
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_optional_param_type = "Lifetime")] lifetime: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "ClockFn")] clock: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "SessionOptions")] options: JsValue,
    ) -> Result<TokenStore, JsError> {
        let lifetime = lifetime_from(&lifetime).map_err(js_error)?;
        let rules = rules_from(&options, lifetime).map_err(js_error)?;
        let clock = JsClock::new(clock, false).map_err(js_error)?;
        let store =
            Store::new(lifetime, Monotonic::new(clock.clock.clone()), OsRandom).with_rules(rules);
        Ok(TokenStore { clock, store })
    }

    /// Issues a token bound to `meta`.
    pub fn create(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Meta")] meta: JsValue,
    ) -> Result<JsString, JsError> {
        // Read within the same bounds the REST protocol enforces on a login: the walk
        // checks depth, keys and cycles before converting, the serialization the size.
        let limits = self.store.meta_limits();
        let meta = map_from(meta, "meta", &limits).map_err(js_error)?;
        let meta = Meta::from_map_within(&meta, &limits)
            .map_err(|err| js_error(FacadeError::BadArgument(err.to_string())))?;
        self.clock.tick().map_err(js_error)?;
        let token = self
            .store
            .create(meta)
            .map_err(|err| js_error(store_error(err)))?;
        Ok(token_to_js(&token))
    }

    /// Consumes `token` for a new one, merging `meta` in (top-level keys replace).
    /// A token that does not work is an `{ok: false}` value, not an exception.
    #[wasm_bindgen(unchecked_return_type = "RotateResult")]
    pub fn rotate(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "Meta | null")] meta: JsValue,
    ) -> Result<JsValue, JsError> {
        self.rotate_inner(token, meta).map_err(js_error)
    }

    /// Removes `token`; returns whether it was a live token.
    pub fn remove(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] token: JsValue,
    ) -> Result<bool, JsError> {
        let token = token_from(&token).map_err(js_error)?;
        self.clock.tick().map_err(js_error)?;
        Ok(self.store.remove(&token))
    }

    /// Drops expired tokens.
    #[wasm_bindgen(unchecked_return_type = "PurgeResult")]
    pub fn purge(&self) -> Result<JsValue, JsError> {
        self.clock.tick().map_err(js_error)?;
        to_js(&PurgeOut::from(self.store.purge())).map_err(js_error)
    }

    /// Tokens held, including expired ones not purged yet.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> usize {
        self.store.len()
    }

    /// Every live token's expiry and metadata, earliest first; never the tokens.
    #[wasm_bindgen(unchecked_return_type = "DumpEntry[]")]
    pub fn dump(&self) -> Result<JsValue, JsError> {
        self.clock.tick().map_err(js_error)?;
        dump_to_js(self.store.dump()).map_err(js_error)
    }
}

/// The JSON-text paths: for a host that holds JSON already (a request body) or can make it
/// with `JSON.stringify`, which V8 does far faster than the object walk of `create`, and
/// with one string crossing the JS boundary each way instead of a property access per key.
#[wasm_bindgen(js_class = TokenStore)]
impl TokenStore {
    /// `create` with `meta` as JSON text of an object, e.g. `JSON.stringify(meta)`.
    #[wasm_bindgen(js_name = createJson)]
    pub fn create_json(&self, meta: &str) -> Result<JsString, JsError> {
        let limits = self.store.meta_limits();
        // A flat object becomes Meta without a map (a third of createJson in the module);
        // anything else is parsed into one, which also words the errors.
        let meta = match Meta::from_flat_json(meta, &limits) {
            Some(meta) => meta.map_err(|err| FacadeError::BadArgument(err.to_string())),
            None => json_object(meta, "meta").and_then(|map| {
                Meta::from_map_within(&map, &limits)
                    .map_err(|err| FacadeError::BadArgument(err.to_string()))
            }),
        }
        .map_err(js_error)?;
        self.clock.tick().map_err(js_error)?;
        let token = self
            .store
            .create(meta)
            .map_err(|err| js_error(store_error(err)))?;
        Ok(token_to_js(&token))
    }

    /// `rotate` with the update as JSON text of an object (or null/absent for none),
    /// answering `RotateResult` as JSON text: `JSON.parse` it, or pass it on as it is.
    #[wasm_bindgen(js_name = rotateJson)]
    pub fn rotate_json(&self, token: &str, update: Option<String>) -> Result<String, JsError> {
        let update = update
            .map(|text| json_object(&text, "meta"))
            .transpose()
            .map_err(js_error)?;
        self.clock.tick().map_err(js_error)?;
        rotate_answer(self.store.rotate(token, update)).map_err(js_error)
    }
}

#[wasm_bindgen]
extern "C" {
    /// `String.fromCharCode` with one argument per character of a token. A `String`
    /// returned to JS is decoded from the module's memory with a `TextDecoder` (~300 ns in
    /// Node for 32 bytes, most of it the call); 32 numbers passed to this builtin make the
    /// same string in ~100 ns.
    #[wasm_bindgen(js_namespace = String, js_name = fromCharCode)]
    #[allow(clippy::too_many_arguments)]
    fn string_from_32_char_codes(
        c0: u16,
        c1: u16,
        c2: u16,
        c3: u16,
        c4: u16,
        c5: u16,
        c6: u16,
        c7: u16,
        c8: u16,
        c9: u16,
        c10: u16,
        c11: u16,
        c12: u16,
        c13: u16,
        c14: u16,
        c15: u16,
        c16: u16,
        c17: u16,
        c18: u16,
        c19: u16,
        c20: u16,
        c21: u16,
        c22: u16,
        c23: u16,
        c24: u16,
        c25: u16,
        c26: u16,
        c27: u16,
        c28: u16,
        c29: u16,
        c30: u16,
        c31: u16,
    ) -> JsString;
}

/// A token as a JS string: its 32 base64url characters through `String.fromCharCode`.
fn token_to_js(token: &Token) -> JsString {
    let Ok(bytes) = <&[u8; TOKEN_LEN]>::try_from(token.as_str().as_bytes()) else {
        // Every issued token has TOKEN_LEN characters; any other text goes the usual way.
        return JsString::from(token.as_str());
    };
    let c = bytes.map(u16::from);
    string_from_32_char_codes(
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12], c[13],
        c[14], c[15], c[16], c[17], c[18], c[19], c[20], c[21], c[22], c[23], c[24], c[25], c[26],
        c[27], c[28], c[29], c[30], c[31],
    )
}

/// JSON text of an object, as serde_json reads it (its recursion limit keeps a deep
/// nesting from overflowing the wasm stack).
fn json_object(text: &str, what: &str) -> Result<Map<String, Value>, FacadeError> {
    serde_json::from_str(text).map_err(|err| {
        FacadeError::BadArgument(format!("{what} must be JSON text of an object: {err}"))
    })
}

/// A rotation's `RotateResult` as JSON text. Built by hand: both parts are JSON already,
/// the token base64url and the metadata an object. A revocation reads like any token that
/// does not work: the caller cannot be told more than an HTTP client is.
fn rotate_answer(result: Result<Rotated, StoreError>) -> Result<String, FacadeError> {
    match result {
        Ok(Rotated { token, meta, .. }) => {
            let mut out = String::with_capacity(32 + TOKEN_LEN + meta.as_json().len());
            out.push_str(r#"{"ok":true,"token":""#);
            out.push_str(token.as_str());
            out.push_str(r#"","meta":"#);
            out.push_str(meta.as_json());
            out.push('}');
            Ok(out)
        }
        Err(StoreError::InvalidToken | StoreError::Revoked) => {
            Ok(r#"{"ok":false,"error":"InvalidToken"}"#.to_string())
        }
        Err(err) => Err(store_error(err)),
    }
}

/// JS values of JSON text the facade wrote, by `JSON.parse`.
fn json_to_js(text: &str) -> Result<JsValue, FacadeError> {
    JSON::parse(text).map_err(|err| {
        FacadeError::Store(format!(
            "cannot convert the result to JS: {}",
            describe(&err)
        ))
    })
}

impl TokenStore {
    fn rotate_inner(&self, token: JsValue, meta: JsValue) -> Result<JsValue, FacadeError> {
        let token = token_from(&token)?;
        let update = if meta.is_undefined() || meta.is_null() {
            None
        } else {
            Some(map_from(meta, "meta", &self.store.meta_limits())?)
        };
        self.clock.tick()?;
        // JSON.parse of the answer's text rather than a conversion of the metadata's map:
        // metadata the store holds comes back as every JSON client reads it (an integer
        // past 2^53 rounded, not refused after the rotation happened; `__proto__` an own
        // key, not the object's prototype), and one call makes the whole object.
        json_to_js(&rotate_answer(self.store.rotate(&token, update))?)
    }
}

/// The REST service: answers HTTP requests exactly as the native server does.
#[wasm_bindgen(js_name = TokenService)]
pub struct TokenService {
    clock: JsClock,
    service: Service<StoreClock, OsRandom>,
}

#[wasm_bindgen(js_class = TokenService)]
impl TokenService {
    /// A service whose tokens live for `lifetime` (as for `TokenStore`), reading time from
    /// `clock`, with `HEAD /dump` on when `dump` is true and the session rules of
    /// `options` (as for `TokenStore`).
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_optional_param_type = "Lifetime")] lifetime: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "ClockFn")] clock: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "boolean")] dump: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "SessionOptions")] options: JsValue,
    ) -> Result<TokenService, JsError> {
        let dump = flag_from(&dump, "dump").map_err(js_error)?;
        let lifetime = lifetime_from(&lifetime).map_err(js_error)?;
        let rules = rules_from(&options, lifetime).map_err(js_error)?;
        let test_clock = test_clock_from(&options).map_err(js_error)?;
        let clock = JsClock::new(clock, test_clock).map_err(js_error)?;
        let store =
            Store::new(lifetime, Monotonic::new(clock.clock.clone()), OsRandom).with_rules(rules);
        let mut service = Service::new(store).with_dump(dump);
        if test_clock {
            service = service.with_test_clock(clock.clock.clone());
        }
        Ok(TokenService { clock, service })
    }

    /// Answers one request. `body` is the whole body as text or bytes (absent: empty);
    /// a body over `maxBodyBytes` is answered 413. `authorization` is the request's
    /// `Authorization` header, checked once API keys are set (`setApiKeys`).
    #[wasm_bindgen(unchecked_return_type = "HttpReply")]
    pub fn handle(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] method: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] path: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] content_type: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | Uint8Array | null")] body: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] authorization: JsValue,
    ) -> Result<JsValue, JsError> {
        let bytes = body_from(&body).map_err(js_error)?;
        self.answer(
            method,
            path,
            content_type,
            authorization,
            Body::Complete(&bytes),
        )
        .map_err(js_error)
    }

    /// Requires one of the keys in `text` (a key file's text: one key per line, blank
    /// lines and `#` comments ignored, each at least 32 characters) on every request but
    /// the health probes. Replaces any keys set before; a text that does not parse throws
    /// an `Error` naming the line and leaves the current keys in force.
    #[wasm_bindgen(js_name = setApiKeys, unchecked_return_type = "ApiKeysInfo")]
    pub fn set_api_keys(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] text: JsValue,
    ) -> Result<JsValue, JsError> {
        let text = text_from(&text, "API key text").map_err(js_error)?;
        let keys = ApiKeys::parse(&text)
            .map_err(|err| js_error(FacadeError::BadArgument(err.to_string())))?;
        let out = ApiKeysOut {
            count: keys.len(),
            fingerprints: keys
                .fingerprints()
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        self.service.replace_api_keys(keys);
        to_js(&out).map_err(js_error)
    }

    /// Answers a request whose body the host stopped reading past `maxBodyBytes`, so a
    /// huge upload is refused (413) without being buffered.
    #[wasm_bindgen(js_name = handleOversized, unchecked_return_type = "HttpReply")]
    pub fn handle_oversized(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] method: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] path: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] content_type: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] authorization: JsValue,
    ) -> Result<JsValue, JsError> {
        self.answer(method, path, content_type, authorization, Body::TooLarge)
            .map_err(js_error)
    }

    /// The largest body accepted, in bytes (64 KiB).
    #[wasm_bindgen(getter, js_name = maxBodyBytes)]
    pub fn max_body_bytes(&self) -> usize {
        self.service.max_body_bytes()
    }

    /// Drops expired tokens; for the host's purge timer.
    #[wasm_bindgen(unchecked_return_type = "PurgeResult")]
    pub fn purge(&self) -> Result<JsValue, JsError> {
        self.clock.tick().map_err(js_error)?;
        to_js(&PurgeOut::from(self.service.store().purge())).map_err(js_error)
    }

    /// Tokens held, including expired ones not purged yet.
    #[wasm_bindgen(getter)]
    pub fn size(&self) -> usize {
        self.service.store().len()
    }

    /// Every live token's expiry and metadata, for the host to log on `HEAD /dump`.
    #[wasm_bindgen(unchecked_return_type = "DumpEntry[]")]
    pub fn dump(&self) -> Result<JsValue, JsError> {
        self.clock.tick().map_err(js_error)?;
        dump_to_js(self.service.store().dump()).map_err(js_error)
    }
}

/// The Durable Object flavour of the protocol: a Worker routes, a session's home answers.
#[wasm_bindgen(js_class = TokenService)]
impl TokenService {
    /// Where a request goes when each session lives in a home of its own (see
    /// `SessionRoute`): the reply for anything no session is involved in, a fresh session
    /// id for a login, or the id of the session a token names.
    #[wasm_bindgen(unchecked_return_type = "SessionRoute")]
    pub fn route(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] method: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] path: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] content_type: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | Uint8Array | null")] body: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] authorization: JsValue,
    ) -> Result<JsValue, JsError> {
        self.route_inner(method, path, content_type, body, authorization)
            .map_err(js_error)
    }

    /// Answers a request routed to session `sessionId` (hex) from its stored `record` (a
    /// state-file line, or null for none), at this service's clock (see `SessionReply`).
    #[wasm_bindgen(js_name = answerSession, unchecked_return_type = "SessionReply")]
    pub fn answer_session(
        &self,
        #[wasm_bindgen(js_name = sessionId, unchecked_param_type = "string")] session_id: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string | null")] record: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] method: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] path: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] content_type: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | Uint8Array | null")] body: JsValue,
    ) -> Result<JsValue, JsError> {
        self.answer_session_inner(session_id, record, method, path, content_type, body)
            .map_err(js_error)
    }

    /// The service clock's time in milliseconds (the test clock's with `testClock`): what
    /// a Worker hands a session's home as "now".
    #[wasm_bindgen(js_name = nowMillis)]
    pub fn now_millis(&self) -> Result<f64, JsError> {
        self.clock.tick().map_err(js_error)?;
        Ok(self.service.store().clock().now().as_millis() as f64)
    }
}

/// A reply as the `HttpReply` JS object, with the session fields when given.
fn reply_to_js(reply: &Reply) -> Result<Object, FacadeError> {
    let object: Object = to_js(&ReplyOut {
        status: reply.status,
        content_type: reply.content_type,
        body: &reply.body,
        allow: reply.allow,
        www_authenticate: reply.www_authenticate,
    })?
    .unchecked_into();
    Ok(object)
}

fn set(object: &Object, key: &str, value: &JsValue) -> Result<(), FacadeError> {
    Reflect::set(object, &JsValue::from_str(key), value)
        .map(|_| ())
        .map_err(|err| FacadeError::Store(format!("cannot set {key}: {}", describe(&err))))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn session_id_from(value: &JsValue) -> Result<SessionId, FacadeError> {
    let text = text_from(value, "sessionId")?;
    let bad = || {
        FacadeError::BadArgument(format!(
            "sessionId must be {} hex digits, not {text:?}",
            2 * SESSION_ID_BYTES
        ))
    };
    if text.len() != 2 * SESSION_ID_BYTES || !text.is_ascii() {
        return Err(bad());
    }
    let mut id = [0u8; SESSION_ID_BYTES];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(SessionId(id))
}

impl TokenService {
    fn request_parts(
        method: JsValue,
        path: JsValue,
        content_type: JsValue,
    ) -> Result<(String, String, Option<String>), FacadeError> {
        let method = text_from(&method, "method")?;
        let path = text_from(&path, "path")?;
        let content_type = if content_type.is_undefined() || content_type.is_null() {
            None
        } else {
            Some(text_from(&content_type, "contentType")?)
        };
        Ok((method, path, content_type))
    }

    fn route_inner(
        &self,
        method: JsValue,
        path: JsValue,
        content_type: JsValue,
        body: JsValue,
        authorization: JsValue,
    ) -> Result<JsValue, FacadeError> {
        let bytes = body_from(&body)?;
        let (method, path, content_type) = Self::request_parts(method, path, content_type)?;
        self.clock.tick()?;
        let authorization = optional_text_from(&authorization, "authorization")?;
        let request = Request {
            method: &method,
            path: &path,
            content_type: content_type.as_deref(),
            authorization: authorization.as_deref(),
            body: Body::Complete(&bytes),
        };
        let out = Object::new();
        match self.service.route_session(&request) {
            Route::Answered(reply) => set(&out, "reply", reply_to_js(&reply)?.as_ref())?,
            Route::NewSession => {
                let id = self
                    .service
                    .fresh_session_id()
                    .map_err(|err| FacadeError::Store(err.to_string()))?;
                set(&out, "login", &JsValue::from_str(&hex(&id.0)))?;
            }
            Route::Session(id) => set(&out, "session", &JsValue::from_str(&hex(&id.0)))?,
        }
        Ok(out.into())
    }

    fn answer_session_inner(
        &self,
        session_id: JsValue,
        record: JsValue,
        method: JsValue,
        path: JsValue,
        content_type: JsValue,
        body: JsValue,
    ) -> Result<JsValue, FacadeError> {
        let id = session_id_from(&session_id)?;
        let bytes = body_from(&body)?;
        let (method, path, content_type) = Self::request_parts(method, path, content_type)?;
        self.clock.tick()?;
        let store = self.service.store();
        let record = if record.is_undefined() || record.is_null() {
            None
        } else {
            let line = text_from(&record, "record")?;
            let checks = ReadChecks {
                now: store.clock().now(),
                meta_limits: store.meta_limits(),
            };
            let stored = read_session_line(&line, &checks)
                .map_err(|err| FacadeError::BadArgument(format!("record: {err}")))?;
            if stored.id != id {
                return Err(FacadeError::BadArgument(
                    "record: it belongs to another session".into(),
                ));
            }
            Some(stored.record)
        };
        let request = Request {
            method: &method,
            path: &path,
            content_type: content_type.as_deref(),
            // The Worker in front checked the API key when it routed the request here.
            authorization: None,
            body: Body::Complete(&bytes),
        };
        let (change, reply) = self.service.answer_session(id, record, &request);
        let out = reply_to_js(&reply)?;
        match change {
            Change::Unchanged => {}
            Change::Removed => set(&out, "record", &JsValue::NULL)?,
            Change::Put(record) => {
                let live_until = record.live_until(store.rules());
                let line = session_line(&StoredSession { id, record });
                set(&out, "record", &JsValue::from_str(&line))?;
                set(
                    &out,
                    "liveUntil",
                    &JsValue::from_f64(live_until.as_millis() as f64),
                )?;
            }
        }
        Ok(out.into())
    }

    fn answer(
        &self,
        method: JsValue,
        path: JsValue,
        content_type: JsValue,
        authorization: JsValue,
        body: Body<'_>,
    ) -> Result<JsValue, FacadeError> {
        let method = text_from(&method, "method")?;
        let path = text_from(&path, "path")?;
        let content_type = optional_text_from(&content_type, "contentType")?;
        let authorization = optional_text_from(&authorization, "authorization")?;
        self.clock.tick()?;
        let reply = self.service.handle(&Request {
            method: &method,
            path: &path,
            content_type: content_type.as_deref(),
            authorization: authorization.as_deref(),
            body,
        });
        reply_to_js(&reply).map(JsValue::from)
    }
}

/// A string argument JS may leave out (`undefined`) or pass as `null`.
fn optional_text_from(value: &JsValue, what: &str) -> Result<Option<String>, FacadeError> {
    if value.is_undefined() || value.is_null() {
        Ok(None)
    } else {
        text_from(value, what).map(Some)
    }
}

fn body_from(body: &JsValue) -> Result<Vec<u8>, FacadeError> {
    if body.is_undefined() || body.is_null() {
        return Ok(Vec::new());
    }
    if let Some(text) = body.as_string() {
        return Ok(text.into_bytes());
    }
    if let Some(bytes) = body.dyn_ref::<Uint8Array>() {
        return Ok(bytes.to_vec());
    }
    Err(FacadeError::BadArgument(format!(
        "body must be a string or a Uint8Array, not {}",
        describe(body)
    )))
}
