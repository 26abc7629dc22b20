//! The protocol for a host that keeps each session in a home of its own (a Cloudflare
//! Durable Object): a request is first routed by the session its token names
//! ([`Service::route_session`]), then answered by that session's home from its one record
//! ([`Service::answer_session`]), with the same decoding ([`Service::decode`]), the same
//! rules ([`TokenStore::decide_exchange`](crate::TokenStore::decide_exchange)) and the
//! same replies ([`Service::encode`]) as every other store.
//!
//! The [`Service`] here only lends its settings (rules, limits, clock, randomness, `/dump`,
//! `/test-clock`); its own store stays empty. Records travel as state-file lines
//! ([`crate::snapshot::session_line`]), so a home keeps exactly what a state file would.
//!
//! ```
//! use std::time::Duration;
//! use token_server_core::protocol::routed::{Change, Route};
//! use token_server_core::protocol::{Body, Request, Service};
//! use token_server_core::{ManualClock, SeededRandom, TokenStore};
//!
//! let store = TokenStore::new(Duration::from_secs(3600), ManualClock::new(0), SeededRandom::new(3));
//! let service = Service::new(store);
//! let login = Request {
//!     method: "POST",
//!     path: "/token",
//!     content_type: Some("application/json"),
//!     authorization: None,
//!     body: Body::Complete(br#"{"meta":{"user":"ann"}}"#),
//! };
//! assert_eq!(service.route_session(&login), Route::NewSession);
//! // The host picks a fresh id, finds that session's home, and the home answers.
//! let id = service.fresh_session_id().unwrap();
//! let (change, reply) = service.answer_session(id, None, &login);
//! assert_eq!(reply.status, 200);
//! assert!(matches!(change, Change::Put(_)));
//! ```

use crate::clock::Clock;
use crate::random::{RandomError, TokenSource};
use crate::session::SessionRecord;
use crate::store::{Decision, StoreError};
use crate::token::{Presented, SessionId, Token};

use super::{Command, Decoded, Done, Reply, RequestError, Service};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answered without any session: a probe, a refusal (bad body, wrong method, ...),
    /// `/dump`, `/test-clock`, or a token that cannot name a session.
    Answered(Reply),
    /// A well-formed login: to the home of a new session
    /// ([`Service::fresh_session_id`]).
    NewSession,
    /// A rotation or logout presenting a token of this session: to its home.
    Session(SessionId),
}

/// What answering did to the session's record, for its home to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing to write.
    Unchanged,
    /// Write this record (a new session, or one that changed).
    Put(SessionRecord),
    /// The session is over (ended, expired or revoked): delete the record.
    Removed,
}

impl<C: Clock, R: TokenSource> Service<C, R> {
    /// Decides where `request` goes, refusing what [`handle`](Service::handle) would
    /// refuse before touching a session, with the same reply.
    pub fn route_session(&self, request: &super::Request<'_>) -> Route {
        // The same decoding as every other host's: the API key rule, the body checks and
        // the metadata limits all apply before a request reaches any session.
        match self.decode(request) {
            Decoded::Answered(reply) => Route::Answered(reply),
            Decoded::Run(Command::Login(_)) => Route::NewSession,
            Decoded::Run(Command::Rotate { token, .. } | Command::Logout { token }) => {
                match Presented::parse(&token) {
                    Some(presented) => Route::Session(presented.id),
                    // A token that names no session: the store answers it without one.
                    None => Route::Answered(self.handle(request)),
                }
            }
            // `/dump` and the readiness check need no session either.
            Decoded::Run(command) => {
                Route::Answered(self.encode(request, self.run_in_memory(command)))
            }
        }
    }

    /// A fresh session id for a login's new home.
    pub fn fresh_session_id(&self) -> Result<SessionId, RandomError> {
        self.store().fresh_id()
    }

    /// Answers `request`, routed to session `id` (by [`route_session`]), from that
    /// session's `record` (`None`: it has none), at the service clock's time.
    ///
    /// A login finding a live record under its fresh id (a 64-bit collision) is refused
    /// with 503, so the client retries and the live session is untouched.
    ///
    /// [`route_session`]: Service::route_session
    pub fn answer_session(
        &self,
        id: SessionId,
        record: Option<SessionRecord>,
        request: &super::Request<'_>,
    ) -> (Change, Reply) {
        match self.decode(request) {
            Decoded::Answered(reply) => (Change::Unchanged, reply),
            Decoded::Run(command) => match self.apply(id, record, command) {
                Ok((change, done)) => (change, self.encode(request, done)),
                Err(refused) => {
                    let mut reply = refused.reply();
                    reply.endpoint = super::Endpoint::of(request.method, request.path);
                    (Change::Unchanged, reply)
                }
            },
        }
    }

    /// Runs `command` on session `id`'s one `record` with the store's rules, as
    /// [`TokenStore::decide_exchange`] and [`TokenStore::decide_end`] decide for every
    /// store. `Err` only for a login whose fresh id is taken.
    fn apply(
        &self,
        id: SessionId,
        record: Option<SessionRecord>,
        command: Command<'_>,
    ) -> Result<(Change, Result<Done, StoreError>), RequestError> {
        let store = self.store();
        let rules = store.rules();
        let now = store.clock().now();
        let presented_here = |token: &str| Presented::parse(token).filter(|p| p.id == id);
        match command {
            Command::Login(meta) => {
                // A record past its end is no session: the login takes its place.
                if record.is_some_and(|record| now < record.live_until(rules)) {
                    return Err(RequestError::Unavailable);
                }
                Ok(match store.fresh_secret() {
                    Ok(secret) => (
                        Change::Put(SessionRecord::new(&secret, now, meta, rules)),
                        Ok(Done::LoggedIn(Token::new(id, &secret))),
                    ),
                    Err(err) => (Change::Unchanged, Err(StoreError::Random(err))),
                })
            }
            Command::Rotate { token, update } => {
                let (Some(record), Some(presented)) = (record, presented_here(&token)) else {
                    return Ok((Change::Unchanged, Err(StoreError::InvalidToken)));
                };
                // Drawn first: a failing randomness source must not cost the session.
                let fresh = match store.fresh_secret() {
                    Ok(fresh) => fresh,
                    Err(err) => return Ok((Change::Unchanged, Err(StoreError::Random(err)))),
                };
                let decision = store.decide_exchange(&presented, record, update, fresh);
                Ok((change_of(&decision), decision.answer.map(Done::Rotated)))
            }
            Command::Logout { token } => {
                let (Some(record), Some(presented)) = (record, presented_here(&token)) else {
                    return Ok((Change::Unchanged, Ok(Done::LoggedOut)));
                };
                let decision = store.decide_end(&presented, record);
                Ok((change_of(&decision), Ok(Done::LoggedOut)))
            }
            command => Ok((Change::Unchanged, self.run_in_memory(command))),
        }
    }
}

/// What a decision does to the session's stored record.
fn change_of<T>(decision: &Decision<T>) -> Change {
    match &decision.next {
        None => Change::Removed,
        Some(_) if !decision.changes() => Change::Unchanged,
        Some(record) => Change::Put(record.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::*;
    use crate::clock::ManualClock;
    use crate::protocol::{Body, Event, Request};
    use crate::random::SeededRandom;
    use crate::session::SessionRules;
    use crate::store::TokenStore;

    fn service(grace: bool) -> (Service<ManualClock, SeededRandom>, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let mut rules = SessionRules::new(Duration::from_secs(1800));
        if grace {
            rules.rotation_grace = Some(Duration::from_secs(10));
        }
        let store = TokenStore::new(
            Duration::from_secs(1800),
            clock.clone(),
            SeededRandom::new(4),
        )
        .with_rules(rules);
        (Service::new(store), clock)
    }

    fn request<'a>(method: &'a str, body: &'a str) -> Request<'a> {
        Request {
            method,
            path: "/token",
            content_type: Some("application/json"),
            authorization: None,
            body: Body::Complete(body.as_bytes()),
        }
    }

    #[test]
    fn with_api_keys_no_request_without_a_key_reaches_a_session() {
        let key = "route-key-0123456789abcdefghijklmnopqrstuvwxyz";
        let (service, _clock) = service(false);
        let service = service.with_api_keys(crate::auth::ApiKeys::parse(key).unwrap());
        for (method, body) in [
            ("POST", r#"{"meta":{}}"#),
            ("PUT", r#"{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#),
            ("DELETE", r#"{"token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#),
        ] {
            match service.route_session(&request(method, body)) {
                Route::Answered(reply) => assert_eq!(reply.status, 401, "{method}"),
                _ => panic!("{method} without a key was routed to a session"),
            }
            let bearer = format!("Bearer {key}");
            let keyed = Request {
                authorization: Some(&bearer),
                ..request(method, body)
            };
            assert!(
                !matches!(service.route_session(&keyed), Route::Answered(ref reply) if reply.status == 401),
                "{method} with the key was refused"
            );
        }
    }

    /// One session's home: its record, kept as the state-file line a Durable Object stores.
    struct Home {
        id: SessionId,
        record: Option<SessionRecord>,
    }

    impl Home {
        fn answer(
            &mut self,
            service: &Service<ManualClock, SeededRandom>,
            request: &Request<'_>,
        ) -> Reply {
            let (change, reply) = service.answer_session(self.id, self.record.clone(), request);
            match change {
                Change::Unchanged => {}
                Change::Put(record) => self.record = Some(record),
                Change::Removed => self.record = None,
            }
            reply
        }
    }

    fn login(service: &Service<ManualClock, SeededRandom>, meta: Value) -> (Home, String) {
        let body = json!({ "meta": meta }).to_string();
        assert_eq!(
            service.route_session(&request("POST", &body)),
            Route::NewSession
        );
        let mut home = Home {
            id: service.fresh_session_id().unwrap(),
            record: None,
        };
        let reply = home.answer(service, &request("POST", &body));
        assert_eq!(reply.status, 200, "{}", reply.body);
        (home, reply.body)
    }

    fn rotate_body(token: &str) -> String {
        json!({ "token": token }).to_string()
    }

    #[test]
    fn a_session_rotates_in_its_home_with_the_replies_of_handle() {
        let (service, clock) = service(false);
        let (mut home, a) = login(&service, json!({"user": "ann"}));
        assert_eq!(
            service.route_session(&request("PUT", &rotate_body(&a))),
            Route::Session(home.id)
        );
        let body = json!({ "token": a, "meta": {"tab": 2} }).to_string();
        let reply = home.answer(&service, &request("PUT", &body));
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(answer["Ok"]["meta"], json!({"user": "ann", "tab": 2}));
        let b = answer["Ok"]["token"].as_str().unwrap().to_string();
        // One-time use: the same reply as handle's for a used token.
        let again = home.answer(&service, &request("PUT", &rotate_body(&a)));
        assert_eq!(again.body, super::super::INVALID_TOKEN_BODY);
        assert_eq!(again.event, Event::Rotated(super::super::Rotation::Invalid));
        // Expiry, on the service's clock.
        clock.advance(Duration::from_secs(1800));
        let expired = home.answer(&service, &request("PUT", &rotate_body(&b)));
        assert_eq!(expired.body, super::super::INVALID_TOKEN_BODY);
        assert!(
            home.record.is_none(),
            "an expired session's record is removed"
        );
    }

    #[test]
    fn a_token_of_another_session_or_none_changes_nothing() {
        let (service, _) = service(false);
        let (mut home, _) = login(&service, json!({}));
        let (_, other) = login(&service, json!({}));
        let before = home.record.clone();
        let reply = home.answer(&service, &request("PUT", &rotate_body(&other)));
        assert_eq!(reply.body, super::super::INVALID_TOKEN_BODY);
        assert_eq!(home.record, before);
        let garbage = request("PUT", r#"{"token":"garbage"}"#);
        assert!(
            matches!(service.route_session(&garbage), Route::Answered(reply) if reply.body == super::super::INVALID_TOKEN_BODY)
        );
        let refused = service.route_session(&request("PUT", "{not json"));
        assert!(matches!(refused, Route::Answered(reply) if reply.status == 400));
        assert!(matches!(
            service.route_session(&request("GET", "")),
            Route::Answered(reply) if reply.status == 405
        ));
    }

    #[test]
    fn a_replay_in_grace_answers_the_same_successor_and_delete_ends_the_session() {
        let (service, _) = service(true);
        let (mut home, a) = login(&service, json!({}));
        let first = home
            .answer(&service, &request("PUT", &rotate_body(&a)))
            .body;
        let replay = home
            .answer(&service, &request("PUT", &rotate_body(&a)))
            .body;
        assert_eq!(first, replay);
        let deleted = home.answer(&service, &request("DELETE", &rotate_body(&a)));
        assert_eq!(deleted.status, 202);
        assert!(home.record.is_none());
    }

    #[test]
    fn a_login_onto_a_live_record_is_refused_and_keeps_it() {
        let (service, _) = service(false);
        let (mut home, a) = login(&service, json!({}));
        let reply = home.answer(&service, &request("POST", r#"{"meta":{}}"#));
        assert_eq!(reply.status, 503);
        let rotated = home.answer(&service, &request("PUT", &rotate_body(&a)));
        assert!(rotated.body.starts_with(r#"{"Ok""#), "{}", rotated.body);
    }

    #[test]
    fn records_survive_the_state_file_line() {
        use crate::snapshot::{read_session_line, session_line, ReadChecks, StoredSession};
        let (service, clock) = service(true);
        let (mut home, a) = login(&service, json!({"user": "ann"}));
        home.answer(&service, &request("PUT", &rotate_body(&a)));
        let mut stored = StoredSession {
            id: home.id,
            record: home.record.clone().unwrap(),
        };
        // The version is for a compare-and-set between one read and write, never stored.
        stored.record.version = 0;
        let line = session_line(&stored);
        assert!(!line.contains('\n'));
        let checks = ReadChecks {
            now: clock.now(),
            meta_limits: service.store().meta_limits(),
        };
        assert_eq!(read_session_line(&line, &checks).unwrap(), stored);
        assert!(read_session_line("not a line", &checks).is_err());
    }
}
