//! The `/test-clock` endpoints: with a test clock, an integration test in any language moves
//! the service's time over HTTP instead of waiting hours for an expiry.
//!
//! Only a [`Service`] built [`with_test_clock`](Service::with_test_clock) answers them; any
//! other answers 404, as for every unknown path.

use std::borrow::Cow;

use serde::Deserialize;

use super::{Event, Reply, RequestError, Service};
use crate::clock::{Clock, ManualClock, Timestamp};
use crate::duration::parse_duration;
use crate::random::TokenSource;

/// 9999-12-31T23:59:59.999Z: a four-digit year is all RFC 3339 has.
const LAST_RFC3339_INSTANT: Timestamp = Timestamp(253_402_300_799_999);

/// `POST /test-clock/advance` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody<'a> {
    /// A duration in the CLI's syntax, e.g. `"90min"`; borrowed unless it holds an escape.
    #[serde(borrow)]
    by: Cow<'a, str>,
}

/// `POST /test-clock/set` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody<'a> {
    /// An RFC 3339 date-time, not earlier than the clock's time; borrowed unless it holds
    /// an escape.
    #[serde(borrow)]
    to: Cow<'a, str>,
}

impl<C: Clock, R: TokenSource> Service<C, R> {
    /// `GET /test-clock`: the time the service runs on.
    pub(super) fn test_clock_now(&self, clock: &ManualClock) -> Reply {
        now_reply(clock.now())
    }

    /// `POST /test-clock/advance`: moves the clock forward, then purges at once so the
    /// store holds what it would after that much real time.
    pub(super) fn test_clock_advance(
        &self,
        clock: &ManualClock,
        body: &[u8],
    ) -> Result<Reply, RequestError> {
        let AdvanceBody { by } = self.parse(body)?;
        let by = parse_duration(&by)
            .map_err(|err| RequestError::InvalidValue(format!("\"by\": {err}")))?;
        // Past year 9999 the clock's time has no RFC 3339 form, which every answer and
        // the state file need.
        if clock.now().saturating_add(by) > LAST_RFC3339_INSTANT {
            return Err(RequestError::InvalidValue(format!(
                "\"by\": it moves the clock past {LAST_RFC3339_INSTANT}, the last instant RFC 3339 can write"
            )));
        }
        clock.advance(by);
        Ok(self.after_move(clock))
    }

    /// `POST /test-clock/set`: sets the clock to a later instant (or the same one), then
    /// purges. Time never runs backwards: what expired stays expired.
    pub(super) fn test_clock_set(
        &self,
        clock: &ManualClock,
        body: &[u8],
    ) -> Result<Reply, RequestError> {
        let SetBody { to } = self.parse(body)?;
        let to = Timestamp::parse_rfc3339(&to)
            .map_err(|err| RequestError::InvalidValue(format!("\"to\": {err}")))?;
        // A date of year 9999 west of UTC is an instant of year 10000.
        if to > LAST_RFC3339_INSTANT {
            return Err(RequestError::InvalidValue(format!(
                "\"to\": it is past {LAST_RFC3339_INSTANT}, the last instant RFC 3339 can write"
            )));
        }
        clock
            .set_forward(to)
            .map_err(|now| RequestError::ClockBackwards { now })?;
        Ok(self.after_move(clock))
    }

    fn after_move(&self, clock: &ManualClock) -> Reply {
        let report = self.store().purge();
        if report.purged > 0 {
            log::info!(
                "test clock: {} expired tokens dropped, {} remaining",
                report.purged,
                report.remaining
            );
        }
        now_reply(clock.now())
    }
}

fn now_reply(now: Timestamp) -> Reply {
    // An RFC 3339 text has no character JSON would escape.
    Reply::json(format!(r#"{{"now":"{now}"}}"#), Event::TestClock)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::super::{Body, Request};
    use super::*;
    use crate::random::SeededRandom;
    use crate::store::TokenStore;

    const START: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    const LIFETIME: Duration = Duration::from_secs(30 * 60);

    #[test]
    fn the_clock_does_not_advance_past_the_last_rfc3339_instant() {
        let service = service(true);
        let far = call(
            &service,
            "POST",
            "/test-clock/advance",
            r#"{"by":"3000000d"}"#,
        );
        assert_eq!(far.status, 422, "{}", far.body);
        assert!(
            far.body.contains("9999-12-31T23:59:59.999Z"),
            "{}",
            far.body
        );
        let now = call(&service, "GET", "/test-clock", "");
        assert_eq!(now.body, r#"{"now":"2026-01-01T00:00:00.000Z"}"#);
        // Up to the last instant is fine: 2026-01-01 plus 2,912,442 days is 9999-12-31.
        let last = call(
            &service,
            "POST",
            "/test-clock/advance",
            r#"{"by":"2912442d86399999ms"}"#,
        );
        assert_eq!(last.body, r#"{"now":"9999-12-31T23:59:59.999Z"}"#);
    }

    fn service(test_clock: bool) -> Service<ManualClock, SeededRandom> {
        let clock = ManualClock::new(START);
        let store = TokenStore::new(LIFETIME, clock.clone(), SeededRandom::new(5));
        let service = Service::new(store);
        if test_clock {
            service.with_test_clock(clock)
        } else {
            service
        }
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

    fn now_of(reply: &Reply) -> String {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let value: Value = serde_json::from_str(&reply.body).unwrap();
        value["now"].as_str().unwrap().to_string()
    }

    #[test]
    fn reads_advances_and_sets_the_time() {
        let service = service(true);
        assert_eq!(
            now_of(&call(&service, "GET", "/test-clock", "")),
            "2026-01-01T00:00:00.000Z"
        );
        let advanced = call(
            &service,
            "POST",
            "/test-clock/advance",
            r#"{"by":"1h30min"}"#,
        );
        assert_eq!(now_of(&advanced), "2026-01-01T01:30:00.000Z");
        let set = call(
            &service,
            "POST",
            "/test-clock/set",
            r#"{"to":"2026-01-29T03:30:00+02:00"}"#,
        );
        assert_eq!(now_of(&set), "2026-01-29T01:30:00.000Z");
        assert_eq!(
            now_of(&call(&service, "GET", "/test-clock", "")),
            "2026-01-29T01:30:00.000Z"
        );
        // Setting the time it already is moves nothing and is no error.
        let same = call(
            &service,
            "POST",
            "/test-clock/set",
            r#"{"to":"2026-01-29T01:30:00Z"}"#,
        );
        assert_eq!(now_of(&same), "2026-01-29T01:30:00.000Z");
    }

    #[test]
    fn a_token_expires_exactly_at_its_lifetime_on_the_test_clock() {
        let service = service(true);
        let token = call(&service, "POST", "/token", r#"{"meta":{"u":1}}"#).body;
        call(
            &service,
            "POST",
            "/test-clock/advance",
            r#"{"by":"29min59s999ms"}"#,
        );
        let rotated = call(
            &service,
            "PUT",
            "/token",
            &json!({ "token": token }).to_string(),
        );
        let rotated: Value = serde_json::from_str(&rotated.body).unwrap();
        let next = rotated["Ok"]["token"].as_str().unwrap().to_string();
        // The new token has a full lifetime from now: valid 1ms before, dead at it.
        call(
            &service,
            "POST",
            "/test-clock/advance",
            r#"{"by":"29min59s999ms"}"#,
        );
        assert_eq!(service.store().len(), 1);
        call(&service, "POST", "/test-clock/advance", r#"{"by":"1ms"}"#);
        // The advance purged it at once.
        assert_eq!(service.store().len(), 0);
        let dead = call(
            &service,
            "PUT",
            "/token",
            &json!({ "token": next }).to_string(),
        );
        assert_eq!(dead.body, r#"{"Err":"InvalidToken"}"#);
    }

    /// An offset west of UTC moves a date on the last day of year 9999 into year 10000,
    /// which `/test-clock/advance` refuses to reach: `/test-clock/set` must too.
    #[test]
    fn the_clock_is_not_set_past_the_last_rfc3339_instant() {
        let service = service(true);
        let far = call(
            &service,
            "POST",
            "/test-clock/set",
            r#"{"to":"9999-12-31T23:59:59.999-00:01"}"#,
        );
        assert_eq!(far.status, 422, "{}", far.body);
        assert!(
            far.body.contains("9999-12-31T23:59:59.999Z"),
            "{}",
            far.body
        );
        let now = call(&service, "GET", "/test-clock", "");
        assert_eq!(now.body, r#"{"now":"2026-01-01T00:00:00.000Z"}"#);
        let last = call(
            &service,
            "POST",
            "/test-clock/set",
            r#"{"to":"9999-12-31T23:59:59.999Z"}"#,
        );
        assert_eq!(last.body, r#"{"now":"9999-12-31T23:59:59.999Z"}"#);
    }

    /// A JSON string may spell any character as an escape: .NET's default encoder sends
    /// `+` as `\u002B`, many encoders `/` as `\/`. The value is what counts, not its
    /// spelling.
    #[test]
    fn escaped_strings_read_as_their_value() {
        let service = service(true);
        let advanced = call(
            &service,
            "POST",
            "/test-clock/advance",
            r#"{"by":"1h\u0033\u0030min"}"#,
        );
        assert_eq!(now_of(&advanced), "2026-01-01T01:30:00.000Z");
        let set = call(
            &service,
            "POST",
            "/test-clock/set",
            r#"{"to":"2026-01-29T03:30:00\u002B02:00"}"#,
        );
        assert_eq!(now_of(&set), "2026-01-29T01:30:00.000Z");
    }

    #[test]
    fn bad_bodies_and_backward_moves_are_refused_and_move_nothing() {
        let service = service(true);
        let cases: &[(&str, &str, u16)] = &[
            ("/test-clock/advance", r#"{"by":"soon"}"#, 422),
            ("/test-clock/advance", r#"{"by":"90"}"#, 422),
            ("/test-clock/advance", r#"{"by":90}"#, 422),
            ("/test-clock/advance", r#"{}"#, 422),
            ("/test-clock/advance", r#"{"by":"1h","extra":1}"#, 422),
            ("/test-clock/advance", r#"["1h"]"#, 422),
            ("/test-clock/advance", r#"{"by":"1h""#, 400),
            ("/test-clock/set", r#"{"to":"yesterday"}"#, 422),
            (
                "/test-clock/set",
                r#"{"to":"2025-12-31T23:59:59.999Z"}"#,
                422,
            ),
            (
                "/test-clock/set",
                r#"{"to":"2026-01-01T01:00:00+02:00"}"#,
                422,
            ),
            ("/test-clock/set", r#"not json"#, 400),
        ];
        for (path, body, status) in cases {
            let reply = call(&service, "POST", path, body);
            assert_eq!(reply.status, *status, "{path} {body}: {}", reply.body);
            assert!(reply.body.len() > 10, "{reply:?}");
        }
        let backwards = call(
            &service,
            "POST",
            "/test-clock/set",
            r#"{"to":"2025-01-01T00:00:00Z"}"#,
        );
        assert!(
            backwards.body.contains("only moves forward"),
            "{backwards:?}"
        );
        let unsupported = service.handle(&Request {
            method: "POST",
            path: "/test-clock/advance",
            content_type: Some("text/plain"),
            authorization: None,
            body: Body::Complete(br#"{"by":"1h"}"#),
        });
        assert_eq!(unsupported.status, 415);
        assert_eq!(call(&service, "DELETE", "/test-clock", "").status, 405);
        assert_eq!(call(&service, "GET", "/test-clock/advance", "").status, 405);
        assert_eq!(call(&service, "GET", "/test-clock/other", "").status, 404);
        assert_eq!(
            now_of(&call(&service, "GET", "/test-clock", "")),
            "2026-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn without_a_test_clock_the_paths_are_unknown() {
        let service = service(false);
        let unknown = call(&service, "GET", "/no-such-path", "");
        for (method, path, body) in [
            ("GET", "/test-clock", ""),
            ("POST", "/test-clock/advance", r#"{"by":"1h"}"#),
            (
                "POST",
                "/test-clock/set",
                r#"{"to":"2027-01-01T00:00:00Z"}"#,
            ),
            ("DELETE", "/test-clock", ""),
        ] {
            assert_eq!(
                call(&service, method, path, body),
                unknown,
                "{method} {path}"
            );
        }
        assert_eq!(service.store().clock().now(), Timestamp(START));
    }
}
