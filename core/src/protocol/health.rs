//! Health probes for load balancers and orchestrators: `/livez` (the process answers),
//! `/readyz` (it can serve sessions now) and `/healthz` (the same as `/readyz`).
//!
//! Readiness is a flag the host sets ([`Service::set_readiness`](super::Service::set_readiness)):
//! only the host knows when its state file has loaded or a stop signal arrived.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{Reply, RequestError};
use crate::protocol::outcome::Event;

/// Whether the service can serve sessions. It only moves forward, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// The host is still loading its state: only probes are answered; every other request
    /// gets 503, since a token not loaded yet would look invalid and log its user out.
    Loading,
    /// Serving.
    Ready,
    /// A stop was asked for: requests are still served while in-flight ones finish, but
    /// `/readyz` says 503 so load balancers send new clients elsewhere.
    Draining,
}

impl Readiness {
    fn from_u8(value: u8) -> Readiness {
        match value {
            0 => Readiness::Loading,
            1 => Readiness::Ready,
            _ => Readiness::Draining,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Readiness::Loading => 0,
            Readiness::Ready => 1,
            Readiness::Draining => 2,
        }
    }
}

impl fmt::Display for Readiness {
    /// The sentence `/readyz` answers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Readiness::Loading => "not ready: the state file is still loading; try again shortly",
            Readiness::Ready => "ready",
            Readiness::Draining => "not ready: shutting down, finishing the requests in flight",
        })
    }
}

/// [`Readiness`] shared between the host, which sets it, and the request workers, which
/// read it on every request: one relaxed atomic load, no lock.
#[derive(Debug)]
pub(super) struct ReadinessFlag(AtomicU8);

impl ReadinessFlag {
    pub(super) fn new(readiness: Readiness) -> Self {
        ReadinessFlag(AtomicU8::new(readiness.as_u8()))
    }

    pub(super) fn get(&self) -> Readiness {
        Readiness::from_u8(self.0.load(Ordering::Relaxed))
    }

    /// Moves forward to `readiness`; an earlier state than the current one is ignored, so
    /// a load that ends after a stop began cannot make a draining service ready again.
    pub(super) fn advance(&self, readiness: Readiness) {
        self.0.fetch_max(readiness.as_u8(), Ordering::Relaxed);
    }
}

/// One of the probe endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// `/livez`: 200 whenever the process answers at all.
    Live,
    /// `/readyz` and `/healthz`: 200 only when [`Readiness::Ready`].
    Ready,
}

impl Probe {
    pub(super) fn of(path: &str) -> Option<Probe> {
        match path {
            "/livez" => Some(Probe::Live),
            "/readyz" | "/healthz" => Some(Probe::Ready),
            _ => None,
        }
    }

    /// The answer to `method` on this probe. Neither a body nor a content type is looked
    /// at: probes are sent by tools that send neither.
    pub(super) fn answer(self, method: &str, readiness: Readiness) -> Reply {
        if method != "GET" && method != "HEAD" {
            return RequestError::MethodNotAllowed { allow: "GET, HEAD" }.reply();
        }
        let (status, sentence) = match (self, readiness) {
            (Probe::Live, _) => (200, "live".to_string()),
            (Probe::Ready, Readiness::Ready) => (200, readiness.to_string()),
            (Probe::Ready, _) => (503, readiness.to_string()),
        };
        Reply::text(status, sentence, Event::Probed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::protocol::{Body, Endpoint, Request, Rotation, Service};
    use crate::random::SeededRandom;
    use crate::store::TokenStore;

    type TestService = Service<ManualClock, SeededRandom>;

    fn service() -> TestService {
        let store = TokenStore::new(
            Duration::from_secs(3600),
            ManualClock::new(1_000),
            SeededRandom::new(5),
        );
        Service::new(store)
    }

    /// A request as a probe tool sends it: no content type, no body.
    fn bare(service: &TestService, method: &str, path: &str) -> Reply {
        service.handle(&Request {
            method,
            path,
            content_type: None,
            authorization: None,
            body: Body::Complete(b""),
        })
    }

    fn json(service: &TestService, method: &str, body: &str) -> Reply {
        service.handle(&Request {
            method,
            path: "/token",
            content_type: Some("application/json"),
            authorization: None,
            body: Body::Complete(body.as_bytes()),
        })
    }

    #[test]
    fn a_new_service_is_ready_and_every_probe_says_so() {
        let service = service();
        assert_eq!(service.readiness(), Readiness::Ready);
        for path in ["/livez", "/readyz", "/healthz"] {
            for method in ["GET", "HEAD"] {
                let reply = bare(&service, method, path);
                assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
                assert_eq!(reply.content_type, Some(crate::protocol::TEXT_PLAIN));
                assert_eq!(
                    (reply.endpoint, reply.event),
                    (Endpoint::Probe, Event::Probed)
                );
            }
        }
        assert_eq!(bare(&service, "GET", "/readyz").body, "ready");
    }

    #[test]
    fn while_loading_only_probes_answer_and_readyz_says_why() {
        let service = service().with_readiness(Readiness::Loading);
        assert_eq!(bare(&service, "GET", "/livez").status, 200);
        for path in ["/readyz", "/healthz"] {
            let reply = bare(&service, "GET", path);
            assert_eq!(reply.status, 503, "{path}");
            assert!(
                reply.body.contains("state file is still loading"),
                "{}",
                reply.body
            );
            assert_eq!(reply.event, Event::Probed);
        }
        // A token not loaded yet would look invalid: refuse rather than answer InvalidToken.
        let login = json(&service, "POST", r#"{"meta":{}}"#);
        assert_eq!(login.status, 503);
        assert!(login.body.contains("still loading"), "{}", login.body);
        assert_eq!(
            (login.endpoint, login.event),
            (Endpoint::Login, Event::Refused(503))
        );
        let rotate = json(&service, "PUT", r#"{"token":"AAAAAAAAAAAAAAAAAAAAAA"}"#);
        assert_eq!(rotate.status, 503);

        service.set_readiness(Readiness::Ready);
        assert_eq!(bare(&service, "GET", "/readyz").status, 200);
        assert_eq!(json(&service, "POST", r#"{"meta":{}}"#).status, 200);
    }

    #[test]
    fn readiness_never_goes_back() {
        let service = service().with_readiness(Readiness::Loading);
        service.set_readiness(Readiness::Draining);
        // A load that finishes after the stop began must not make the service ready.
        service.set_readiness(Readiness::Ready);
        assert_eq!(service.readiness(), Readiness::Draining);
        assert_eq!(bare(&service, "GET", "/readyz").status, 503);
        service.set_readiness(Readiness::Loading);
        assert_eq!(service.readiness(), Readiness::Draining);
    }

    #[test]
    fn while_draining_readyz_is_503_but_sessions_are_still_served() {
        let service = service();
        let token = json(&service, "POST", r#"{"meta":{"u":1}}"#).body;
        service.set_readiness(Readiness::Draining);
        assert_eq!(bare(&service, "GET", "/livez").status, 200);
        let ready = bare(&service, "GET", "/healthz");
        assert_eq!(ready.status, 503);
        assert!(ready.body.contains("shutting down"), "{}", ready.body);
        let rotated = json(&service, "PUT", &format!(r#"{{"token":"{token}"}}"#));
        assert_eq!(rotated.status, 200);
        assert_eq!(rotated.event, Event::Rotated(Rotation::Ok));
    }

    #[test]
    fn probes_take_get_and_head_only_and_ignore_any_body() {
        let service = service();
        let posted = service.handle(&Request {
            method: "POST",
            path: "/readyz",
            content_type: Some("application/json"),
            authorization: None,
            body: Body::Complete(b"{}"),
        });
        assert_eq!(posted.status, 405);
        assert_eq!(posted.allow, Some("GET, HEAD"));
        assert_eq!(posted.event, Event::Refused(405));
        let with_body = service.handle(&Request {
            method: "GET",
            path: "/livez",
            content_type: Some("text/html"),
            authorization: None,
            body: Body::TooLarge,
        });
        assert_eq!(with_body.status, 200);
        assert_eq!(bare(&service, "GET", "/readyz/extra").status, 404);
    }
}
