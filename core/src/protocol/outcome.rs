//! What a request did, as the protocol decided it, so a host can count requests for its
//! metrics without reading a body or repeating a rule.
//!
//! Every [`Reply`](super::Reply) carries its [`Endpoint`] and [`Event`]. Neither holds a
//! token or metadata: they only say which door was knocked on and what came of it.

/// Which endpoint a request was addressed to, by method and path.
///
/// The discriminants run from 0 in [`Endpoint::ALL`] order, so a host may keep one counter
/// per endpoint in an array indexed by `endpoint as usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /token`.
    Login,
    /// `PUT /token`.
    Rotate,
    /// `DELETE /token`.
    Logout,
    /// `/dump`, any method.
    Dump,
    /// `/livez`, `/readyz` or `/healthz`, any method.
    Probe,
    /// Anything else: an unknown path, or `/token` with another method.
    Other,
}

impl Endpoint {
    /// Every endpoint, in discriminant order.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::Login,
        Endpoint::Rotate,
        Endpoint::Logout,
        Endpoint::Dump,
        Endpoint::Probe,
        Endpoint::Other,
    ];

    /// The endpoint `method` and `path` address.
    ///
    /// ```
    /// use token_server_core::protocol::Endpoint;
    /// assert_eq!(Endpoint::of("PUT", "/token"), Endpoint::Rotate);
    /// assert_eq!(Endpoint::of("GET", "/readyz"), Endpoint::Probe);
    /// assert_eq!(Endpoint::of("PATCH", "/token"), Endpoint::Other);
    /// ```
    pub fn of(method: &str, path: &str) -> Endpoint {
        match (path, method) {
            ("/token", "POST") => Endpoint::Login,
            ("/token", "PUT") => Endpoint::Rotate,
            ("/token", "DELETE") => Endpoint::Logout,
            ("/dump", _) => Endpoint::Dump,
            (path, _) if super::health::Probe::of(path).is_some() => Endpoint::Probe,
            _ => Endpoint::Other,
        }
    }

    /// A short name for a metric label, e.g. `rotate`.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Login => "login",
            Endpoint::Rotate => "rotate",
            Endpoint::Logout => "logout",
            Endpoint::Dump => "dump",
            Endpoint::Probe => "probe",
            Endpoint::Other => "other",
        }
    }
}

/// How a rotation (`PUT /token` with a well-formed body) ended.
///
/// Discriminants run from 0 in [`Rotation::ALL`] order, for array-indexed counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rotation {
    /// A new token was issued.
    Ok,
    /// `{"Err":"InvalidToken"}`: unknown, used, removed or expired.
    Invalid,
    /// A replay inside `--rotation-grace`: the successor issued before was answered again.
    Grace,
    /// `{"Err":"InvalidToken"}` for an old token outside its grace, which ended its
    /// session (`--revoke-on-reuse`).
    Revoked,
}

impl Rotation {
    /// Every outcome, in discriminant order.
    pub const ALL: [Rotation; 4] = [
        Rotation::Ok,
        Rotation::Invalid,
        Rotation::Grace,
        Rotation::Revoked,
    ];

    /// A short name for a metric label, e.g. `invalid`.
    pub fn label(self) -> &'static str {
        match self {
            Rotation::Ok => "ok",
            Rotation::Invalid => "invalid",
            Rotation::Grace => "grace",
            Rotation::Revoked => "revoked",
        }
    }
}

/// What answering a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A login issued a token.
    LoggedIn,
    /// A rotation was answered (200), successfully or not.
    Rotated(Rotation),
    /// A logout was accepted (202), whether or not the token was live.
    LoggedOut,
    /// The dump was logged.
    Dumped,
    /// A health probe was answered, ready (200) or not (503).
    Probed,
    /// `/test-clock` was read or moved (only with a test clock).
    TestClock,
    /// The request was refused with this status and changed nothing.
    Refused(u16),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::protocol::{Body, Request, Service};
    use crate::random::SeededRandom;
    use crate::store::TokenStore;

    #[test]
    fn discriminants_follow_the_all_lists() {
        for (index, endpoint) in Endpoint::ALL.into_iter().enumerate() {
            assert_eq!(endpoint as usize, index);
        }
        for (index, rotation) in Rotation::ALL.into_iter().enumerate() {
            assert_eq!(rotation as usize, index);
        }
    }

    #[test]
    fn every_reply_reports_its_endpoint_and_what_happened() {
        let store = TokenStore::new(
            Duration::from_secs(3600),
            ManualClock::new(1_000),
            SeededRandom::new(9),
        );
        let service = Service::new(store).with_dump(true);
        let call = |method: &str, path: &str, body: &str| {
            let reply = service.handle(&Request {
                method,
                path,
                content_type: Some("application/json"),
                authorization: None,
                body: Body::Complete(body.as_bytes()),
            });
            (reply.endpoint, reply.event, reply.body)
        };
        let (endpoint, event, token) = call("POST", "/token", r#"{"meta":{"u":1}}"#);
        assert_eq!((endpoint, event), (Endpoint::Login, Event::LoggedIn));
        let rotate = format!(r#"{{"token":"{token}"}}"#);
        let (endpoint, event, _) = call("PUT", "/token", &rotate);
        assert_eq!(
            (endpoint, event),
            (Endpoint::Rotate, Event::Rotated(Rotation::Ok))
        );
        let (_, event, _) = call("PUT", "/token", &rotate);
        assert_eq!(event, Event::Rotated(Rotation::Invalid));
        let (endpoint, event, _) = call("DELETE", "/token", &rotate);
        assert_eq!((endpoint, event), (Endpoint::Logout, Event::LoggedOut));
        let (endpoint, event, _) = call("HEAD", "/dump", "");
        assert_eq!((endpoint, event), (Endpoint::Dump, Event::Dumped));
        let (endpoint, event, _) = call("PUT", "/token", "{not json");
        assert_eq!((endpoint, event), (Endpoint::Rotate, Event::Refused(400)));
        let (endpoint, event, _) = call("PATCH", "/token", "");
        assert_eq!((endpoint, event), (Endpoint::Other, Event::Refused(405)));
        let (endpoint, event, _) = call("GET", "/nowhere", "");
        assert_eq!((endpoint, event), (Endpoint::Other, Event::Refused(404)));
    }
}
