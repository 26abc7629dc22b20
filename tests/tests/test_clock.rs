//! `--test-clock` over real HTTP: a test moves the server's time and every time-dependent
//! behaviour follows it.

use std::time::Duration;

use serde_json::{json, Value};
use token_server_tests::{skip_on, token_in, Host, Server};

/// 2030-01-01T00:00:00Z: far from the real time, so nothing here can pass by accident on
/// the wall clock.
const Y2030: &str = "2030-01-01T00:00:00Z";

fn move_clock(server: &Server, path: &str, body: Value) -> String {
    let response = server.json("POST", path, &body);
    assert_eq!(response.status, 200, "{path} {body}: {response:?}");
    assert_eq!(response.header("content-type"), Some("application/json"));
    response.json()["now"]
        .as_str()
        .unwrap_or_else(|| panic!("no now in {response:?}"))
        .to_string()
}

fn advance(server: &Server, by: &str) -> String {
    move_clock(server, "/test-clock/advance", json!({ "by": by }))
}

#[test]
fn the_clock_reads_moves_and_only_moves_forward() {
    let server = Server::start(&["--test-clock"]);
    let now = server.request("GET", "/test-clock", None, b"");
    assert_eq!(now.status, 200, "{now:?}");
    let start = now.json()["now"].as_str().unwrap().to_string();
    // It starts at the real time (this year or later) and stands still.
    assert!(start.as_str() >= "2026-" && start.ends_with('Z'), "{start}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        server.request("GET", "/test-clock", None, b"").json()["now"],
        json!(start)
    );
    assert_eq!(
        move_clock(&server, "/test-clock/set", json!({ "to": Y2030 })),
        "2030-01-01T00:00:00.000Z"
    );
    assert_eq!(advance(&server, "1h30min"), "2030-01-01T01:30:00.000Z");
    assert_eq!(advance(&server, "29d"), "2030-01-30T01:30:00.000Z");
    let backwards = server.json(
        "POST",
        "/test-clock/set",
        &json!({ "to": "2030-01-01T00:00:00Z" }),
    );
    assert_eq!(backwards.status, 422, "{backwards:?}");
    assert!(backwards.body.contains("forward"), "{backwards:?}");
    assert_eq!(
        server.request("GET", "/test-clock", None, b"").json()["now"],
        json!("2030-01-30T01:30:00.000Z")
    );
}

#[test]
fn a_token_expires_exactly_at_its_lifetime_and_a_rotation_renews_it() {
    let server = Server::start(&["--test-clock", "--token-lifetime", "2h"]);
    let first = server.login(json!({"user": "clocked"}));
    advance(&server, "1h59min59s999ms");
    // Valid a millisecond before its lifetime; the new token gets a full one.
    let second = token_in(&server.rotate(&first, None));
    advance(&server, "1h59min59s999ms");
    let third = token_in(&server.rotate(&second, Some(json!({"year": 2030}))));
    advance(&server, "2h");
    assert_eq!(server.rotate(&third, None), json!({"Err": "InvalidToken"}));
}

#[test]
fn an_advance_purges_at_once() {
    let server = Server::start(&["--test-clock", "--token-lifetime", "30min"]);
    let tokens: Vec<String> = (0..3).map(|_| server.login(json!({}))).collect();
    advance(&server, "30min");
    let host = Host::under_test();
    if host == Host::WorkerdDo {
        skip_on(
            host,
            "an_advance_purges_at_once (the log line)",
            "each Durable Object drops its own session when next asked (or by an alarm on the real clock); the Worker holds none to purge",
        );
        for token in &tokens {
            assert_eq!(server.rotate(token, None), json!({"Err": "InvalidToken"}));
        }
        return;
    }
    server.wait_for_log("3 expired tokens dropped", Duration::from_secs(5));
}

#[test]
fn the_dump_shows_expiries_on_the_test_clock() {
    let host = Host::under_test();
    if host == Host::WorkerdDo {
        skip_on(
            host,
            "the_dump_shows_expiries_on_the_test_clock",
            "each session is in its own Durable Object; no object can list them all for /dump",
        );
        return;
    }
    let server = Server::start_with_env(
        &["--test-clock", "--dump", "--token-lifetime", "2h"],
        &[("RUST_LOG", "token_server=info")],
    );
    move_clock(&server, "/test-clock/set", json!({ "to": Y2030 }));
    server.login(json!({"user": "dumped-in-2030"}));
    assert_eq!(server.request("HEAD", "/dump", None, b"").status, 202);
    let line = server.wait_for_log("dumped-in-2030", Duration::from_secs(5));
    assert!(line.contains("expires=2030-01-01T02:00:00.000Z"), "{line}");
}

#[test]
fn bad_bodies_get_the_usual_answers() {
    let server = Server::start(&["--test-clock"]);
    let json = Some("application/json");
    /// method, path, content type, body, expected status
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16);
    let cases: &[Case] = &[
        ("POST", "/test-clock/advance", json, b"{\"by\":", 400),
        ("POST", "/test-clock/advance", json, b"not json", 400),
        ("POST", "/test-clock/advance", None, br#"{"by":"1h"}"#, 415),
        (
            "POST",
            "/test-clock/advance",
            json,
            br#"{"by":"soon"}"#,
            422,
        ),
        ("POST", "/test-clock/advance", json, br#"{"by":3600}"#, 422),
        ("POST", "/test-clock/advance", json, br#"{}"#, 422),
        (
            "POST",
            "/test-clock/set",
            json,
            br#"{"to":"tomorrow"}"#,
            422,
        ),
        (
            "POST",
            "/test-clock/set",
            json,
            br#"{"to":"2020-01-01T00:00:00Z"}"#,
            422,
        ),
        ("PUT", "/test-clock", json, b"{}", 405),
        ("GET", "/test-clock/advance", None, b"", 405),
    ];
    for (method, path, content_type, body, status) in cases {
        let response = server.request(method, path, *content_type, body);
        assert_eq!(
            response.status,
            *status,
            "{method} {path} {}: {response:?}",
            String::from_utf8_lossy(body)
        );
        assert!(response.body.len() > 10, "{response:?}");
    }
    // Nothing above moved the clock forward by a year.
    let now = server.request("GET", "/test-clock", None, b"").json()["now"].clone();
    assert!(now.as_str().is_some_and(|now| now < "2030-"), "{now}");
}

#[test]
fn without_the_flag_the_paths_are_unknown() {
    let server = Server::start(&[]);
    let unknown = server.request("GET", "/no-such-path", None, b"");
    assert_eq!(unknown.status, 404);
    for (method, path, body) in [
        ("GET", "/test-clock", &b""[..]),
        ("POST", "/test-clock/advance", &br#"{"by":"2h"}"#[..]),
        (
            "POST",
            "/test-clock/set",
            &br#"{"to":"2030-01-01T00:00:00Z"}"#[..],
        ),
    ] {
        let response = server.request(method, path, Some("application/json"), body);
        assert_eq!(response.status, 404, "{method} {path}: {response:?}");
        assert_eq!(response.body, unknown.body);
    }
    let token = server.login(json!({}));
    assert!(server.rotate(&token, None).get("Ok").is_some());
}

/// Start-up and state file: native-only behaviours (the edge host has no state file).
mod native {
    use super::*;

    fn native_only() -> bool {
        let host = Host::under_test();
        if host != Host::Native {
            eprintln!("skipped on the {host:?} host: a native-only behaviour");
        }
        host == Host::Native
    }

    #[test]
    fn start_up_warns_that_it_is_for_tests_only() {
        // Every host warns: a Worker when its first request builds the service.
        let server = Server::start(&["--test-clock"]);
        let line = server.wait_for_log("--test-clock", Duration::from_secs(5));
        assert!(
            line.contains("WARN") && line.contains("tests only"),
            "{line}"
        );
    }

    #[test]
    fn the_state_file_holds_expiries_on_the_test_clock() {
        if !native_only() {
            return;
        }
        let folder = std::env::temp_dir().join(format!("token-server-tc-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("state");
        let state = path.to_str().unwrap();
        let server = Server::start(&["--test-clock", "--state-file", state, "-t", "2h"]);
        move_clock(&server, "/test-clock/set", json!({ "to": Y2030 }));
        server.login(json!({"user": "saved-in-2030"}));
        assert_eq!(server.terminate().code(), Some(0));
        let text = std::fs::read_to_string(&path).unwrap();
        // 2030-01-01T02:00:00Z in milliseconds since the epoch.
        assert!(text.contains(" 1893463200000 "), "{text}");
        let _ = std::fs::remove_dir_all(&folder);
    }
}

#[test]
fn a_session_rotated_every_1h59min_ends_at_its_max_session_lifetime() {
    let server = Server::start(&[
        "--test-clock",
        "--token-lifetime",
        "2h",
        "--max-session-lifetime",
        "8h",
    ]);
    let mut token = server.login(json!({"user": "long-lived"}));
    // At 1h59min, 3h58min, 5h57min and 7h56min: each rotation inside its token's lifetime.
    for _ in 0..4 {
        advance(&server, "1h59min");
        token = token_in(&server.rotate(&token, None));
    }
    // The last token's own lifetime would run to 9h56min; the session's end caps it at 8h.
    advance(&server, "3min59s999ms");
    token = token_in(&server.rotate(&token, None));
    advance(&server, "1ms");
    assert_eq!(server.rotate(&token, None), json!({"Err": "InvalidToken"}));
}

#[test]
fn a_replay_after_the_rotation_grace_is_refused() {
    let server = Server::start(&["--test-clock", "--rotation-grace", "30s"]);
    let first = server.login(json!({}));
    let second = token_in(&server.rotate(&first, None));
    advance(&server, "29s999ms");
    // Inside the grace: the same successor again.
    assert_eq!(token_in(&server.rotate(&first, None)), second);
    advance(&server, "1ms");
    assert_eq!(server.rotate(&first, None), json!({"Err": "InvalidToken"}));
    // Without --revoke-on-reuse the session itself lives on.
    assert!(server.rotate(&second, None).get("Ok").is_some());
}
