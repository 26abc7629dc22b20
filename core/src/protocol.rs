//! The REST protocol, host-independent: a request's method, path, content type and body in,
//! a status, content type and body out.
//!
//! The native (warp) host and the wasm host both call [`Service::handle`], so the answers
//! of the two cannot drift apart. Every status the service can answer is chosen here.

use std::borrow::Cow;
use std::fmt;
use std::sync::{PoisonError, RwLock};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{ApiKeys, AuthError};
use crate::clock::{Clock, ManualClock, Timestamp};
use crate::config::MAX_BODY_BYTES;
use crate::meta::{Meta, MetaError};
use crate::random::TokenSource;
use crate::store::{DumpEntry, Rotated, StoreError, TokenStore};
use crate::throttle::{Throttle, DEFAULT_LOG_INTERVAL};
use crate::token::Token;

mod health;
mod outcome;

pub use health::Readiness;
use health::{Probe, ReadinessFlag};
pub use outcome::{Endpoint, Event, Rotation};

/// Log target of the `HEAD /dump` lines, so operators can enable exactly them.
pub const DUMP_LOG_TARGET: &str = "token_server::dump";

/// `text/plain` as every plain answer is sent.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// `application/json` as every JSON answer is sent.
pub const APPLICATION_JSON: &str = "application/json";

/// The request body as the host received it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// The whole body.
    Complete(&'a [u8]),
    /// The host stopped reading because the body is larger than
    /// [`Service::max_body_bytes`]; it is answered with 413 in its turn.
    TooLarge,
}

/// One HTTP request, as much of it as the protocol looks at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method, e.g. `PUT`.
    pub method: &'a str,
    /// The path without query string, e.g. `/token`.
    pub path: &'a str,
    /// The `Content-Type` header, if any (`None` also when it is not valid text).
    pub content_type: Option<&'a str>,
    /// The `Authorization` header, if any (`None` also when it is not valid text); checked
    /// when the service has API keys.
    pub authorization: Option<&'a str>,
    /// The body.
    pub body: Body<'a>,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` of the body; `None` for an empty body.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: String,
    /// The `Allow` header, sent with 405.
    pub allow: Option<&'static str>,
    /// The endpoint addressed, set by [`Service::handle`] from the method and path; for
    /// the host's metrics, never sent.
    pub endpoint: Endpoint,
    /// What answering did, for the host's metrics; never sent.
    pub event: Event,
    /// The `WWW-Authenticate` header, sent with 401.
    pub www_authenticate: Option<&'static str>,
}

impl Reply {
    fn text(status: u16, body: String, event: Event) -> Reply {
        Reply {
            status,
            content_type: Some(TEXT_PLAIN),
            body,
            allow: None,
            endpoint: Endpoint::Other,
            event,
            www_authenticate: None,
        }
    }

    fn json(body: String, event: Event) -> Reply {
        Reply {
            status: 200,
            content_type: Some(APPLICATION_JSON),
            body,
            allow: None,
            endpoint: Endpoint::Other,
            event,
            www_authenticate: None,
        }
    }

    fn empty(status: u16, event: Event) -> Reply {
        Reply {
            status,
            content_type: None,
            body: String::new(),
            allow: None,
            endpoint: Endpoint::Other,
            event,
            www_authenticate: None,
        }
    }
}

/// Why a request was refused. Each maps to exactly one status in [`RequestError::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// No such endpoint.
    NotFound,
    /// The endpoint exists but not with this method; carries the methods it has.
    MethodNotAllowed { allow: &'static str },
    /// The body is not declared as `application/json`.
    UnsupportedMediaType,
    /// The body is larger than the limit (in bytes).
    PayloadTooLarge { limit: usize },
    /// The body is not JSON.
    MalformedJson(String),
    /// The body ends before its JSON does (a client or proxy cut it short).
    IncompleteJson,
    /// The body is JSON, but not an object (an array, a string, a number, …).
    NotAnObject,
    /// The body is JSON, but not of the shape the endpoint takes.
    WrongShape(String),
    /// The body holds a number beyond the range of a 64-bit float (e.g. `1e400`): valid
    /// JSON, but not a value the service can keep.
    NumberOutOfRange,
    /// The metadata exceeds a limit (depth, key count or size); says which.
    MetaLimit(MetaError),
    /// The store holds its maximum number of tokens.
    StoreFull,
    /// The token could not be made; the client may retry.
    Unavailable,
    /// A field of a well-formed body holds a value the endpoint cannot use (a duration or
    /// a date that does not parse); says which and why.
    InvalidValue(String),
    /// `/test-clock/set` to an instant before the clock's time `now`.
    ClockBackwards { now: Timestamp },
    /// The host cannot serve sessions yet (its state is still loading).
    NotReady(Readiness),
    /// The session store (Redis) did not answer within its timeout; nothing changed.
    StoreUnavailable,
    /// The service has API keys and the request carries none of them.
    Unauthorized(AuthError),
}

impl RequestError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::NotFound => 404,
            RequestError::MethodNotAllowed { .. } => 405,
            RequestError::UnsupportedMediaType => 415,
            RequestError::PayloadTooLarge { .. } => 413,
            RequestError::MalformedJson(_) | RequestError::IncompleteJson => 400,
            RequestError::NotAnObject
            | RequestError::WrongShape(_)
            | RequestError::NumberOutOfRange
            | RequestError::MetaLimit(_)
            | RequestError::InvalidValue(_)
            | RequestError::ClockBackwards { .. } => 422,
            RequestError::StoreFull
            | RequestError::Unavailable
            | RequestError::NotReady(_)
            | RequestError::StoreUnavailable => 503,
            RequestError::Unauthorized(_) => 401,
        }
    }

    /// The answer a client gets: the status and a one-sentence explanation.
    pub fn reply(&self) -> Reply {
        let status = self.status();
        let mut reply = Reply::text(status, self.to_string(), Event::Refused(status));
        match self {
            RequestError::MethodNotAllowed { allow } => reply.allow = Some(allow),
            RequestError::Unauthorized(err) => reply.www_authenticate = Some(www_authenticate(err)),
            _ => {}
        }
        reply
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotFound => {
                f.write_str("no such endpoint; try POST, PUT or DELETE /token")
            }
            RequestError::MethodNotAllowed { allow } => {
                write!(f, "method not allowed here; allowed: {allow}")
            }
            RequestError::UnsupportedMediaType => {
                f.write_str("the request body must be sent with Content-Type: application/json")
            }
            RequestError::PayloadTooLarge { limit } => {
                write!(
                    f,
                    "the request body is larger than the limit of {limit} bytes"
                )
            }
            RequestError::MalformedJson(reason) => {
                write!(f, "the request body is not valid JSON: {reason}")
            }
            RequestError::IncompleteJson => {
                f.write_str("the request body is incomplete: it ends before its JSON does")
            }
            RequestError::NotAnObject => f.write_str("the request body must be a JSON object"),
            RequestError::NumberOutOfRange => f.write_str(
                "the request body holds a number beyond the range of a 64-bit float (about 1.8e308)",
            ),
            RequestError::WrongShape(reason) => {
                write!(f, "the request body has the wrong shape: {reason}")
            }
            RequestError::MetaLimit(err) => err.fmt(f),
            RequestError::StoreFull => f.write_str("token store is full"),
            RequestError::Unavailable => f.write_str("no token could be made right now; try again"),
            RequestError::InvalidValue(reason) => {
                write!(f, "the request body has a bad value: {reason}")
            }
            RequestError::ClockBackwards { now } => {
                write!(f, "the test clock only moves forward; it is already {now}")
            }
            RequestError::NotReady(readiness) => readiness.fmt(f),
            RequestError::StoreUnavailable => f.write_str("session store unavailable"),
            RequestError::Unauthorized(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for RequestError {}

#[derive(Deserialize)]
struct CreateBody {
    meta: Map<String, Value>,
}

#[derive(Deserialize)]
struct RotateBody<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    #[serde(default)]
    meta: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct RemoveBody<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
}

/// The answer to a rotation of a token that does not work, exactly as the seed wrote it.
pub const INVALID_TOKEN_BODY: &str = r#"{"Err":"InvalidToken"}"#;

/// What a request asks of the session store, decoded by [`Service::decode`]; a store runs
/// it and [`Service::encode`] turns the result into the reply. The in-memory store runs it
/// in [`Service::handle`]; an async store (Redis) runs it between the two. A token is
/// borrowed from the request body when it can be (an escaped one is not), so a request
/// costs no allocation for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    /// `POST /token`: begin a session bound to this metadata (checked against the limits).
    Login(Meta),
    /// `PUT /token`: exchange `token`, merging `update` into the session's metadata.
    Rotate {
        /// The token presented, as sent (the store parses it).
        token: Cow<'a, str>,
        /// The update, if any.
        update: Option<Map<String, Value>>,
    },
    /// `DELETE /token`: end the session of `token`.
    Logout {
        /// The token presented, as sent.
        token: Cow<'a, str>,
    },
    /// `HEAD /dump`: list every live session's expiry and metadata.
    Dump,
    /// `GET`/`HEAD` of `/readyz` or `/healthz` while the host is ready: whether the store
    /// answers (the in-memory store always does).
    CheckReady,
}

/// What a store did with a [`Command`], for [`Service::encode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// A session began; its first token.
    LoggedIn(Token),
    /// A token was exchanged (or replayed inside its grace).
    Rotated(Rotated),
    /// A logout was carried out (whether or not a session ended).
    LoggedOut,
    /// The live sessions, earliest expiry first.
    Dumped(Vec<DumpEntry>),
    /// The store answers.
    Ready,
}

/// The outcome of [`Service::decode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    /// Answered without the store: a refusal, a probe, the test clock.
    Answered(Reply),
    /// The store must run this; then [`Service::encode`] its result.
    Run(Command<'a>),
}

/// The REST service over a [`TokenStore`].
pub struct Service<C, R> {
    store: TokenStore<C, R>,
    dump_enabled: bool,
    max_body_bytes: usize,
    /// The clock `/test-clock` moves; `None` (those paths answer 404) unless the host
    /// runs the store on it for tests.
    test_clock: Option<ManualClock>,
    /// Rate limit of the "store is full" warning: a flood of refused logins would
    /// otherwise write one line each (400,000 lines in 5 s were seen).
    full_warning: Throttle,
    /// Rate limit of the "cannot issue a token" error, which a failing randomness source
    /// would repeat for every request.
    unavailable_error: Throttle,
    /// Set by the host while it runs; read on every request.
    readiness: ReadinessFlag,
    /// The API keys a request must carry one of; `None`: no check. A std `RwLock` so the
    /// host can swap the set while serving (SIGHUP): readers only share it for a hash and
    /// a few comparisons, and it works unchanged on wasm32.
    api_keys: RwLock<Option<ApiKeys>>,
    /// Refused API keys are logged, but a client retrying in a loop must not flood the log.
    refusal_log: Throttle,
}

impl<C: Clock, R: TokenSource> Service<C, R> {
    /// A service over `store`, with `HEAD /dump` off and the default body limit.
    pub fn new(store: TokenStore<C, R>) -> Self {
        Service {
            store,
            dump_enabled: false,
            max_body_bytes: MAX_BODY_BYTES,
            test_clock: None,
            full_warning: Throttle::default(),
            unavailable_error: Throttle::default(),
            readiness: ReadinessFlag::new(Readiness::Ready),
            api_keys: RwLock::new(None),
            refusal_log: Throttle::new(DEFAULT_LOG_INTERVAL),
        }
    }

    /// Requires one of `keys` (`Authorization: Bearer <key>`) on every path but the
    /// open ones (health probes, `/test-clock`); others get 401.
    pub fn with_api_keys(self, keys: ApiKeys) -> Self {
        self.replace_api_keys(keys);
        self
    }

    /// Swaps the API key set while serving (a reload); requests already being checked
    /// finish with the old set, every later one sees the new set.
    pub fn replace_api_keys(&self, keys: ApiKeys) {
        let mut current = self
            .api_keys
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = current.replace(keys);
        drop(current);
        drop(old);
    }

    /// Whether requests need an API key.
    pub fn requires_api_key(&self) -> bool {
        self.api_keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Turns on the `/test-clock` endpoints, which move `clock`. The store must read its
    /// time from `clock` (or a clone of it): the service cannot check that.
    ///
    /// ```
    /// use std::time::Duration;
    /// use token_server_core::protocol::{Body, Request, Service};
    /// use token_server_core::{ManualClock, SeededRandom, TokenStore};
    ///
    /// let clock = ManualClock::new(0);
    /// let store = TokenStore::new(Duration::from_secs(1800), clock.clone(), SeededRandom::new(1));
    /// let service = Service::new(store).with_test_clock(clock);
    /// let reply = service.handle(&Request {
    ///     method: "POST",
    ///     path: "/test-clock/advance",
    ///     content_type: Some("application/json"),
    ///     authorization: None,
    ///     body: Body::Complete(br#"{"by":"1h30min"}"#),
    /// });
    /// assert_eq!(reply.body, r#"{"now":"1970-01-01T01:30:00.000Z"}"#);
    /// ```
    pub fn with_test_clock(mut self, clock: ManualClock) -> Self {
        self.test_clock = Some(clock);
        self
    }

    /// Whether the `/test-clock` endpoints are on.
    pub fn test_clock_enabled(&self) -> bool {
        self.test_clock.is_some()
    }

    /// Starts the service in `readiness` rather than ready, e.g. [`Readiness::Loading`]
    /// for a host that answers probes while it loads its state.
    pub fn with_readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = ReadinessFlag::new(readiness);
        self
    }

    /// Whether the service can serve sessions now, as the probes report it.
    pub fn readiness(&self) -> Readiness {
        self.readiness.get()
    }

    /// Sets what the probes report: the host's state loaded ([`Readiness::Ready`]), or a
    /// stop asked for ([`Readiness::Draining`]). Takes effect for the next request.
    /// Readiness only moves forward (loading, ready, draining): an earlier state than the
    /// current one is ignored, so a load ending after a stop began leaves it draining.
    pub fn set_readiness(&self, readiness: Readiness) {
        self.readiness.advance(readiness);
    }

    /// Turns `HEAD /dump` on or off (off: it answers 404).
    pub fn with_dump(mut self, enabled: bool) -> Self {
        self.dump_enabled = enabled;
        self
    }

    /// Sets the largest body accepted, in bytes (413 above it).
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Whether `HEAD /dump` is on.
    pub fn dump_enabled(&self) -> bool {
        self.dump_enabled
    }

    /// The largest body accepted, in bytes.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The store behind the service, for the host's purge loop.
    pub fn store(&self) -> &TokenStore<C, R> {
        &self.store
    }

    /// Answers one request. Never panics; a refused request changes no token.
    ///
    /// ```
    /// use std::time::Duration;
    /// use token_server_core::protocol::{Body, Request, Service};
    /// use token_server_core::{ManualClock, SeededRandom, TokenStore};
    ///
    /// let store = TokenStore::new(Duration::from_secs(7200), ManualClock::new(0), SeededRandom::new(1));
    /// let service = Service::new(store);
    /// let reply = service.handle(&Request {
    ///     method: "POST",
    ///     path: "/token",
    ///     content_type: Some("application/json"),
    ///     authorization: None,
    ///     body: Body::Complete(br#"{"meta":{"name":"My user"}}"#),
    /// });
    /// assert_eq!(reply.status, 200);
    /// assert_eq!(reply.body.len(), 32);
    /// ```
    pub fn handle(&self, request: &Request<'_>) -> Reply {
        match self.decode(request) {
            Decoded::Answered(reply) => reply,
            Decoded::Run(command) => {
                let done = self.run_in_memory(command);
                self.encode(request, done)
            }
        }
    }

    /// The first half of [`Service::handle`]: the request checked and parsed into what it
    /// asks of the store, or answered outright (refusals, probes, the test clock). Every
    /// protocol rule is applied here or in [`Service::encode`], so a host with an async
    /// store answers exactly as [`Service::handle`] does.
    pub fn decode<'a>(&self, request: &Request<'a>) -> Decoded<'a> {
        let readiness = self.readiness();
        let decoded = match Probe::of(request.path) {
            Some(Probe::Ready)
                if readiness == Readiness::Ready && matches!(request.method, "GET" | "HEAD") =>
            {
                Ok(Decoded::Run(Command::CheckReady))
            }
            Some(probe) => Ok(Decoded::Answered(probe.answer(request.method, readiness))),
            None => match self.authorize(request.path, request.method, request.authorization) {
                Err(refused) => Ok(Decoded::Answered(refused)),
                Ok(()) if readiness == Readiness::Loading => Err(RequestError::NotReady(readiness)),
                Ok(()) => self.route(request),
            },
        };
        match decoded {
            Ok(Decoded::Answered(mut reply)) => {
                reply.endpoint = Endpoint::of(request.method, request.path);
                Decoded::Answered(reply)
            }
            Ok(run) => run,
            Err(err) => {
                let mut reply = err.reply();
                reply.endpoint = Endpoint::of(request.method, request.path);
                Decoded::Answered(reply)
            }
        }
    }

    /// The second half of [`Service::handle`]: the reply to `request`, whose command a
    /// store ran with result `done`.
    pub fn encode(&self, request: &Request<'_>, done: Result<Done, StoreError>) -> Reply {
        let mut reply = match done {
            Ok(Done::LoggedIn(token)) => Reply::text(200, token.into_string(), Event::LoggedIn),
            Ok(Done::Rotated(rotated)) => rotated_reply(rotated),
            Ok(Done::LoggedOut) => Reply::empty(202, Event::LoggedOut),
            Ok(Done::Dumped(entries)) => dump_reply(&entries),
            Ok(Done::Ready) => Probe::Ready.answer(request.method, Readiness::Ready),
            Err(StoreError::Unavailable) if Probe::of(request.path).is_some() => {
                let sentence = "not ready: session store unavailable".to_string();
                Reply::text(503, sentence, Event::Probed)
            }
            Err(err) => self.store_refusal(err),
        };
        reply.endpoint = Endpoint::of(request.method, request.path);
        reply
    }

    /// The answer to a store operation that failed with `err`.
    fn store_refusal(&self, err: StoreError) -> Reply {
        match err {
            StoreError::InvalidToken => Reply::json(
                INVALID_TOKEN_BODY.to_string(),
                Event::Rotated(Rotation::Invalid),
            ),
            StoreError::Revoked => {
                // Either a thief or the real user holds a stale copy; the operator should
                // know, but the token itself stays out of the log.
                log::warn!(
                    "an old token was presented outside its rotation grace: its session is ended (--revoke-on-reuse)"
                );
                Reply::json(
                    INVALID_TOKEN_BODY.to_string(),
                    Event::Rotated(Rotation::Revoked),
                )
            }
            err => self.store_error(err).reply(),
        }
    }

    /// Whether a request to `path` may go on: `Err` holds the 401 to send when the service
    /// has API keys, the path is not open and `authorization` (the `Authorization` header)
    /// carries none of them. [`Service::decode`] checks it; a host that answers a path of
    /// its own (such as `/metrics`) checks it first, so one rule guards every endpoint.
    /// Checked before routing, so a caller without a key learns nothing about the
    /// endpoints, and a refused request changes nothing.
    pub fn authorize(
        &self,
        path: &str,
        method: &str,
        authorization: Option<&str>,
    ) -> Result<(), Reply> {
        if is_open_path(path) {
            return Ok(());
        }
        let keys = self.api_keys.read().unwrap_or_else(PoisonError::into_inner);
        let Some(keys) = keys.as_ref() else {
            return Ok(());
        };
        keys.check(authorization).map_err(|err| {
            if let Some(suppressed) = self.refusal_log.check(self.store.clock().now()) {
                let presented = match err {
                    AuthError::UnknownKey(fingerprint) => format!("unknown key {fingerprint}"),
                    AuthError::Missing => "no Authorization header".to_string(),
                    AuthError::NotBearer => "no Bearer key".to_string(),
                };
                // Debug-quoted: method and path are the client's, and must not forge log lines.
                log::warn!(
                    "refused {method:?} {path:?}: {presented} ({suppressed} more refusals since the last report)"
                );
            }
            RequestError::Unauthorized(err).reply()
        })
    }

    /// Runs `command` on the in-memory store.
    fn run_in_memory(&self, command: Command<'_>) -> Result<Done, StoreError> {
        match command {
            Command::Login(meta) => self.store.create(meta).map(Done::LoggedIn),
            Command::Rotate { token, update } => {
                self.store.rotate(&token, update).map(Done::Rotated)
            }
            Command::Logout { token } => {
                self.store.remove(&token);
                Ok(Done::LoggedOut)
            }
            Command::Dump => Ok(Done::Dumped(self.store.dump())),
            Command::CheckReady => Ok(Done::Ready),
        }
    }

    fn route<'a>(&self, request: &Request<'a>) -> Result<Decoded<'a>, RequestError> {
        let command = match (request.path, request.method) {
            ("/token", "POST") => self.create(self.json_body(request)?)?,
            ("/token", "PUT") => self.rotate(self.json_body(request)?)?,
            ("/token", "DELETE") => self.remove(self.json_body(request)?)?,
            ("/token", _) => {
                return Err(RequestError::MethodNotAllowed {
                    allow: "POST, PUT, DELETE",
                })
            }
            ("/dump", _) if !self.dump_enabled => return Err(RequestError::NotFound),
            ("/dump", "HEAD") => Command::Dump,
            ("/dump", _) => return Err(RequestError::MethodNotAllowed { allow: "HEAD" }),
            (path, method) if path.starts_with("/test-clock") => {
                return self
                    .route_test_clock(request, path, method)
                    .map(Decoded::Answered)
            }
            _ => return Err(RequestError::NotFound),
        };
        Ok(Decoded::Run(command))
    }

    fn route_test_clock(
        &self,
        request: &Request<'_>,
        path: &str,
        method: &str,
    ) -> Result<Reply, RequestError> {
        let Some(clock) = &self.test_clock else {
            return Err(RequestError::NotFound);
        };
        match (path, method) {
            ("/test-clock", "GET") => Ok(self.test_clock_now(clock)),
            ("/test-clock", _) => Err(RequestError::MethodNotAllowed { allow: "GET" }),
            ("/test-clock/advance", "POST") => {
                self.test_clock_advance(clock, self.json_body(request)?)
            }
            ("/test-clock/set", "POST") => self.test_clock_set(clock, self.json_body(request)?),
            ("/test-clock/advance" | "/test-clock/set", _) => {
                Err(RequestError::MethodNotAllowed { allow: "POST" })
            }
            _ => Err(RequestError::NotFound),
        }
    }

    /// The body of a JSON endpoint, after the checks every such endpoint shares.
    fn json_body<'a>(&self, request: &Request<'a>) -> Result<&'a [u8], RequestError> {
        if !request.content_type.is_some_and(is_json_media_type) {
            return Err(RequestError::UnsupportedMediaType);
        }
        match request.body {
            Body::Complete(body) if body.len() <= self.max_body_bytes => Ok(body),
            _ => Err(RequestError::PayloadTooLarge {
                limit: self.max_body_bytes,
            }),
        }
    }

    /// `body` read as the endpoint's shape `T`.
    fn parse<'a, T: Deserialize<'a>>(&self, body: &'a [u8]) -> Result<T, RequestError> {
        json::parse(body, self.store.meta_limits().max_depth)
    }

    fn create(&self, body: &[u8]) -> Result<Command<'static>, RequestError> {
        let CreateBody { meta } = self.parse(body)?;
        let meta = Meta::from_map_within(&meta, &self.store.meta_limits())
            .map_err(RequestError::MetaLimit)?;
        Ok(Command::Login(meta))
    }

    fn rotate<'a>(&self, body: &'a [u8]) -> Result<Command<'a>, RequestError> {
        if let Some(token) = json::bare_token(body) {
            return Ok(Command::Rotate {
                token: Cow::Borrowed(token),
                update: None,
            });
        }
        let RotateBody { token, meta } = self.parse(body)?;
        Ok(Command::Rotate {
            token,
            update: meta,
        })
    }

    fn remove<'a>(&self, body: &'a [u8]) -> Result<Command<'a>, RequestError> {
        if let Some(token) = json::bare_token(body) {
            return Ok(Command::Logout {
                token: Cow::Borrowed(token),
            });
        }
        let RemoveBody { token } = self.parse(body)?;
        Ok(Command::Logout { token })
    }

    /// The refusal for a store failure other than an invalid token, logged for the
    /// operator: the first of a run at once, then at most one line per interval with the
    /// count of those held back (time from the store's clock).
    fn store_error(&self, err: StoreError) -> RequestError {
        match err {
            StoreError::MetaLimit(err) => RequestError::MetaLimit(err),
            StoreError::Full => {
                if let Some(held_back) = self.full_warning.check(self.store.clock().now()) {
                    log::warn!(
                        "token store is full: refusing new tokens (raise --max-tokens?){}",
                        since_last(held_back)
                    );
                }
                RequestError::StoreFull
            }
            StoreError::Unavailable => RequestError::StoreUnavailable,
            StoreError::InvalidToken | StoreError::Revoked | StoreError::Random(_) => {
                if let Some(held_back) = self.unavailable_error.check(self.store.clock().now()) {
                    log::error!("cannot issue a token: {err}{}", since_last(held_back));
                }
                RequestError::Unavailable
            }
        }
    }
}

fn rotated_reply(rotated: Rotated) -> Reply {
    let meta = rotated.meta.as_json();
    let token = rotated.token.as_str();
    let mut out = String::with_capacity(32 + token.len() + meta.len());
    // Both parts are JSON already: the token is base64url, the meta a serialized object,
    // so the envelope is assembled without a serializer.
    out.push_str(r#"{"Ok":{"token":""#);
    out.push_str(token);
    out.push_str(r#"","meta":"#);
    out.push_str(meta);
    out.push_str("}}");
    let outcome = if rotated.replayed {
        Rotation::Grace
    } else {
        Rotation::Ok
    };
    Reply::json(out, Event::Rotated(outcome))
}

fn dump_reply(entries: &[DumpEntry]) -> Reply {
    log::info!(target: DUMP_LOG_TARGET, "dump of {} live tokens", entries.len());
    for entry in entries {
        log::info!(target: DUMP_LOG_TARGET, "expires={} meta={}", entry.expires, entry.meta);
    }
    Reply::empty(202, Event::Dumped)
}

/// The tail of a rate-limited log line: how many like it were held back since the last.
fn since_last(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!("; {held_back} more since the last such line")
    }
}

/// Paths answered without an API key: the health probes, which orchestrators call without
/// credentials, and the test clock, which exists only on a test server. Every other path,
/// unknown ones included, needs a key, so an endpoint added later is protected by default.
fn is_open_path(path: &str) -> bool {
    matches!(path, "/livez" | "/readyz" | "/healthz" | "/test-clock")
        || path.starts_with("/test-clock/")
}

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3): `invalid_token` when a key was
/// presented and is wrong, no error code when none was presented.
fn www_authenticate(err: &AuthError) -> &'static str {
    match err {
        AuthError::Missing | AuthError::NotBearer => r#"Bearer realm="token-server""#,
        AuthError::UnknownKey(_) => r#"Bearer realm="token-server", error="invalid_token""#,
    }
}

/// Whether a `Content-Type` value names JSON: `application/json`, any case, parameters
/// such as `; charset=utf-8` allowed.
fn is_json_media_type(content_type: &str) -> bool {
    // What nearly every client sends, checked before the general split and trim (which
    // cost more than the rest of the request's checks together).
    if content_type == "application/json" {
        return true;
    }
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

mod json;
pub mod routed;
mod test_clock;

#[cfg(test)]
mod tests;
