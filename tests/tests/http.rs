//! The service's whole contract checked over real HTTP against a running server.

use std::time::Duration;

use serde_json::json;
use token_server_tests::{Host, Server};

#[test]
fn login_rotate_replay_delete_flow() {
    let server = Server::start(&[]);
    let token = server.login(json!({"name": "My user", "year": 2022, "period": 11}));
    assert_eq!(token.len(), 22);
    assert!(token
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));

    let first = server.rotate(&token, None);
    assert_eq!(
        first["Ok"]["meta"],
        json!({"name": "My user", "year": 2022, "period": 11})
    );
    let second_token = first["Ok"]["token"].as_str().unwrap().to_string();
    assert_ne!(second_token, token);

    let second = server.rotate(&second_token, Some(json!({"year": 2023, "unit": "sales"})));
    assert_eq!(
        second["Ok"]["meta"],
        json!({"name": "My user", "year": 2023, "period": 11, "unit": "sales"})
    );
    let third_token = second["Ok"]["token"].as_str().unwrap().to_string();

    assert_eq!(server.rotate(&token, None), json!({"Err": "InvalidToken"}));
    assert_eq!(
        server.rotate(&second_token, None),
        json!({"Err": "InvalidToken"})
    );

    let deleted = server.json("DELETE", "/token", &json!({ "token": third_token }));
    assert_eq!(deleted.status, 202);
    assert_eq!(deleted.body, "");
    assert_eq!(
        server.rotate(&third_token, None),
        json!({"Err": "InvalidToken"})
    );
    let again = server.json("DELETE", "/token", &json!({ "token": third_token }));
    assert_eq!(
        again.status, 202,
        "deleting an unknown token is accepted too"
    );
}

#[test]
fn answers_carry_the_documented_content_types() {
    let server = Server::start(&[]);
    let created = server.json("POST", "/token", &json!({"meta": {}}));
    assert_eq!(created.status, 200);
    assert!(created
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let rotated = server.json("PUT", "/token", &json!({ "token": created.body }));
    assert_eq!(rotated.header("content-type"), Some("application/json"));
    let invalid = server.json("PUT", "/token", &json!({ "token": created.body }));
    assert_eq!(invalid.header("content-type"), Some("application/json"));
    assert_eq!(invalid.body, r#"{"Err":"InvalidToken"}"#);
}

#[test]
fn every_bad_request_gets_its_status_and_a_sentence() {
    let server = Server::start(&[]);
    let json = Some("application/json");
    let oversized = format!(r#"{{"meta":{{"pad":"{}"}}}}"#, "x".repeat(70 * 1024));
    /// method, path, content type, body, expected status
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16);
    let cases: Vec<Case> = vec![
        ("POST", "/token", json, b"not json", 400),
        ("POST", "/token", json, b"", 400),
        ("PUT", "/token", json, b"{\"token\":", 400),
        ("POST", "/token", json, b"\xff\xfe", 400),
        ("POST", "/token", None, br#"{"meta":{}}"#, 415),
        ("POST", "/token", Some("text/plain"), br#"{"meta":{}}"#, 415),
        (
            "PUT",
            "/token",
            Some("application/x-www-form-urlencoded"),
            b"token=x",
            415,
        ),
        ("POST", "/token", json, b"{}", 422),
        ("POST", "/token", json, br#"{"meta":[1,2]}"#, 422),
        ("POST", "/token", json, br#"{"meta":"x"}"#, 422),
        ("POST", "/token", json, b"[]", 422),
        ("PUT", "/token", json, br#"{"meta":{}}"#, 422),
        ("PUT", "/token", json, br#"{"token":42}"#, 422),
        ("PUT", "/token", json, br#"{"token":"x","meta":7}"#, 422),
        ("DELETE", "/token", json, br#"{"token":null}"#, 422),
        ("GET", "/token", None, b"", 405),
        ("PATCH", "/token", json, b"{}", 405),
        ("GET", "/", None, b"", 404),
        ("POST", "/token/extra", json, br#"{"meta":{}}"#, 404),
        ("HEAD", "/dump", None, b"", 404),
        ("POST", "/token", json, oversized.as_bytes(), 413),
    ];
    for (method, path, content_type, body, status) in cases {
        let response = server.request(method, path, content_type, body);
        assert_eq!(
            response.status,
            status,
            "{method} {path} {content_type:?} {:?}: {response:?}",
            String::from_utf8_lossy(&body[..body.len().min(40)])
        );
        if method != "HEAD" {
            assert!(
                response
                    .header("content-type")
                    .unwrap_or("")
                    .starts_with("text/plain"),
                "{response:?}"
            );
            assert!(response.body.len() > 10, "{response:?}");
        }
    }
    let not_allowed = server.request("GET", "/token", None, b"");
    assert_eq!(not_allowed.header("allow"), Some("POST, PUT, DELETE"));
}

#[test]
fn a_token_survives_a_barrage_of_bad_requests() {
    let server = Server::start(&[]);
    let token = server.login(json!({"user": "ann"}));
    let bad_bodies = [
        format!(r#"{{"token":"{token}","meta":[1]}}"#),
        format!(r#"{{"token":"{token}","meta":"x"}}"#),
        format!(r#"{{"token":"{token}","meta":{{"a":1}}"#),
        format!(
            r#"{{"token":"{token}","meta":{{"pad":"{}"}}}}"#,
            "y".repeat(70_000)
        ),
        format!(r#"{{"tokens":"{token}"}}"#),
    ];
    for body in &bad_bodies {
        let response = server.request("PUT", "/token", Some("application/json"), body.as_bytes());
        assert!(response.status >= 400, "{response:?}");
    }
    for content_type in [None, Some("text/plain")] {
        let body = json!({ "token": token }).to_string();
        let response = server.request("PUT", "/token", content_type, body.as_bytes());
        assert_eq!(response.status, 415);
        let response = server.request("DELETE", "/token", content_type, body.as_bytes());
        assert_eq!(response.status, 415);
    }
    for method in ["GET", "POST", "PATCH", "OPTIONS"] {
        let body = json!({ "token": token }).to_string();
        let response = server.request(method, "/token", Some("application/json"), body.as_bytes());
        assert_ne!(response.status, 200, "{method}: {response:?}");
    }
    // Random garbage bodies.
    let mut seed: u64 = 0x1234_5678;
    for _ in 0..50 {
        let body: Vec<u8> = (0..64)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        let response = server.request("PUT", "/token", Some("application/json"), &body);
        assert!(
            response.status == 400 || response.status == 422,
            "{response:?}"
        );
    }
    assert_eq!(
        server.rotate(&token, None)["Ok"]["meta"],
        json!({"user": "ann"})
    );
}

#[test]
fn thirty_two_clients_rotating_one_token_get_exactly_one_ok() {
    let server = Server::start(&[]);
    let token = server.login(json!({"n": 1}));
    let barrier = std::sync::Barrier::new(32);
    let answers: Vec<serde_json::Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    server.rotate(&token, None)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let oks = answers.iter().filter(|a| a.get("Ok").is_some()).count();
    let invalid = answers
        .iter()
        .filter(|a| **a == json!({"Err": "InvalidToken"}))
        .count();
    assert_eq!((oks, invalid), (1, 31), "{answers:?}");
}

#[test]
fn dump_logs_expiry_and_meta_but_never_a_token() {
    let server = Server::start_with_env(&["--dump"], &[("RUST_LOG", "token_server=debug")]);
    let token = server.login(json!({"user": "dumped-user"}));
    let rotated = server.rotate(&token, None);
    let live = rotated["Ok"]["token"].as_str().unwrap().to_string();
    let response = server.request("HEAD", "/dump", None, b"");
    assert_eq!(response.status, 202);
    let line = server.wait_for_log("dumped-user", Duration::from_secs(5));
    assert!(line.contains(r#"{"user":"dumped-user"}"#), "{line}");
    // RFC 3339 UTC expiry, e.g. expires=2026-11-29T06:49:40.201Z
    let expiry = line.split("expires=").nth(1).unwrap_or("");
    assert!(
        expiry.len() > 20 && expiry.as_bytes()[4] == b'-' && expiry.contains('T'),
        "{line}"
    );
    let log = server.log();
    assert!(!log.contains(&token), "the log leaks a used token:\n{log}");
    assert!(!log.contains(&live), "the log leaks a live token:\n{log}");
}

#[test]
fn no_log_line_at_trace_level_contains_a_token() {
    let server = Server::start_with_env(&["--dump"], &[("RUST_LOG", "trace")]);
    let mut tokens = vec![server.login(json!({"user": "traced"}))];
    let first = server.rotate(&tokens[0], None);
    tokens.push(first["Ok"]["token"].as_str().unwrap().to_string());
    let second = server.rotate(&tokens[1], Some(json!({"year": 2026})));
    tokens.push(second["Ok"]["token"].as_str().unwrap().to_string());
    server.rotate(&tokens[0], None);
    server.request("HEAD", "/dump", None, b"");
    server.json("DELETE", "/token", &json!({ "token": tokens[2] }));
    let bad = format!(r#"{{"token":"{}","meta":[1]}}"#, tokens[2]);
    server.request("PUT", "/token", Some("application/json"), bad.as_bytes());
    server.wait_for_log("traced", Duration::from_secs(5));
    // Let the last requests' log lines arrive.
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log();
    // The native host logs every request at debug; the edge host logs only the dump.
    if Host::under_test() == Host::Native {
        assert!(log.lines().count() > 5, "expected a verbose log:\n{log}");
    }
    for token in &tokens {
        assert!(
            !log.contains(token.as_str()),
            "token {token} in the log:\n{log}"
        );
    }
}

#[test]
fn sigterm_stops_the_server_with_status_zero() {
    let server = Server::start(&[]);
    server.login(json!({}));
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    use std::io::{Read, Write};
    let server = Server::start(&[]);
    let token = server.login(json!({"user": "in flight"}));
    let body = json!({ "token": token }).to_string();
    let (first_half, second_half) = body.as_bytes().split_at(body.len() / 2);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "PUT /token HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(first_half).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.send_sigterm();
    server.wait_for_log("shutting down", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    stream.write_all(second_half).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""user":"in flight""#), "{response}");
    assert_eq!(server.wait_for_exit().code(), Some(0));
}

#[test]
fn metadata_past_the_limits_is_refused_with_422_naming_the_limit() {
    let server = Server::start(&[]);
    let mut deep = json!("bottom");
    for _ in 0..33 {
        deep = json!({ "d": deep });
    }
    let response = server.json("POST", "/token", &json!({ "meta": deep }));
    assert_eq!(response.status, 422);
    assert!(response.body.contains("32 levels"), "{response:?}");
    let wide: serde_json::Map<String, serde_json::Value> =
        (0..1001).map(|i| (format!("k{i}"), json!(i))).collect();
    let response = server.json("POST", "/token", &json!({ "meta": wide }));
    assert_eq!(response.status, 422);
    assert!(response.body.contains("1000 keys"), "{response:?}");
}

#[test]
fn the_default_address_is_loopback() {
    let server = Server::start(&[]);
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
}

/// Command-line behaviour belongs to the native binary; the edge host has its own.
mod cli {
    use super::*;
    use std::process::{Command, Stdio};
    use token_server_tests::native_binary;

    fn run(args: &[&str]) -> (i32, String, String) {
        let output = Command::new(native_binary())
            .args(args)
            .env("RUST_LOG", "token_server=info")
            .stdin(Stdio::null())
            .output()
            .expect("run token-server");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Whether the host under test is the native binary; says so on stderr when a
    /// native-only test (CLI, state file, limit flags) is skipped for another host.
    fn native_only() -> bool {
        let host = Host::under_test();
        if host != Host::Native {
            eprintln!("skipped on the {host:?} host: a native-only behaviour");
        }
        host == Host::Native
    }

    #[test]
    fn bad_values_exit_2_with_a_message_naming_flag_and_range() {
        if !native_only() {
            return;
        }
        let cases: &[(&[&str], &[&str])] = &[
            (&["-P", "0s"], &["--purge-interval", "1s to 90min"]),
            (
                &["--purge-interval", "2h"],
                &["--purge-interval", "1s to 90min"],
            ),
            (&["-t", "29min"], &["--token-lifetime", "30min to 96h"]),
            (
                &["--token-lifetime", "soon"],
                &["--token-lifetime", "30min to 96h"],
            ),
            (&["-p", "http"], &["--port", "0 to 65535"]),
            (&["-p", "65536"], &["--port", "0 to 65535"]),
            (&["--bind", "everywhere"], &["--bind"]),
            (&["--no-such-flag"], &["--no-such-flag"]),
            (&["-t"], &["--token-lifetime", "30min to 96h"]),
        ];
        for (args, needles) in cases {
            let (code, stdout, stderr) = run(args);
            assert_eq!(code, 2, "{args:?}: {stderr}");
            let first = stderr.lines().next().unwrap_or("");
            for needle in *needles {
                assert!(
                    first.contains(needle),
                    "{args:?}: {first:?} lacks {needle:?}"
                );
            }
            assert!(
                !stderr.contains("listening on"),
                "{args:?} started a server"
            );
            assert!(stdout.is_empty());
        }
    }

    #[test]
    fn help_lists_every_flag() {
        if !native_only() {
            return;
        }
        let (code, stdout, _) = run(&["--help"]);
        assert_eq!(code, 0);
        for flag in [
            "--help",
            "--dump",
            "--port",
            "--purge-interval",
            "--token-lifetime",
            "--version",
            "--bind",
            "3666",
            "1s and 90min",
            "30min and 96h",
        ] {
            assert!(stdout.contains(flag), "--help lacks {flag}:\n{stdout}");
        }
        let (code, short, _) = run(&["-h"]);
        assert_eq!((code, short), (0, stdout));
        let (code, version, _) = run(&["-V"]);
        assert_eq!(code, 0);
        assert!(version.starts_with("token-server "), "{version}");
    }

    #[test]
    fn the_purge_loop_runs_at_the_purge_interval_and_reports() {
        if !native_only() {
            return;
        }
        let server = Server::start_with_env(&["-P", "1s"], &[("RUST_LOG", "token_server=debug")]);
        server.login(json!({}));
        server.login(json!({}));
        let line = server.wait_for_log("remaining", Duration::from_secs(5));
        assert!(
            line.contains("purge: 0 expired tokens dropped, 2 remaining"),
            "{line}"
        );
    }

    #[test]
    fn max_tokens_refuses_logins_with_503_and_a_warning() {
        if !native_only() {
            return;
        }
        let server = Server::start(&["--max-tokens", "2"]);
        let first = server.login(json!({"n": 1}));
        server.login(json!({"n": 2}));
        let refused = server.json("POST", "/token", &json!({"meta": {"n": 3}}));
        assert_eq!(
            (refused.status, refused.body.as_str()),
            (503, "token store is full")
        );
        server.wait_for_log("token store is full", Duration::from_secs(5));
        assert!(server.rotate(&first, None)["Ok"].is_object());
    }

    #[test]
    fn max_body_sets_the_413_limit() {
        if !native_only() {
            return;
        }
        let server = Server::start(&["--max-body", "1KiB"]);
        let pad = "x".repeat(1100);
        let response = server.json("POST", "/token", &json!({"meta": {"pad": pad}}));
        assert_eq!(response.status, 413);
        assert!(response.body.contains("1024 bytes"), "{response:?}");
        server.login(json!({"pad": "x".repeat(900)}));
    }

    fn state_path(name: &str) -> std::path::PathBuf {
        let folder =
            std::env::temp_dir().join(format!("token-server-state-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    /// Creates `count` tokens over `threads` connections; returns (token, meta) pairs.
    fn create_many(server: &Server, count: usize) -> Vec<(String, serde_json::Value)> {
        let threads = 4;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        (t..count)
                            .step_by(threads)
                            .map(|i| {
                                let meta = json!({"user": format!("user {i}"), "n": i});
                                (server.login(meta.clone()), meta)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
    }

    fn all_rotate_with_their_meta(server: &Server, tokens: &[(String, serde_json::Value)]) {
        let threads = 4;
        std::thread::scope(|scope| {
            for t in 0..threads {
                scope.spawn(move || {
                    for (token, meta) in tokens.iter().skip(t).step_by(threads) {
                        let answer = server.rotate(token, None);
                        assert_eq!(&answer["Ok"]["meta"], meta, "{answer}");
                    }
                });
            }
        });
    }

    #[test]
    fn ten_thousand_sessions_survive_a_graceful_restart() {
        if !native_only() {
            return;
        }
        let path = state_path("graceful");
        let state = path.to_str().unwrap();
        let server = Server::start(&["--state-file", state]);
        let tokens = create_many(&server, 10_000);
        assert_eq!(server.terminate().code(), Some(0));
        let contents = std::fs::read_to_string(&path).unwrap();
        for (token, _) in tokens.iter().take(100) {
            assert!(
                !contents.contains(token.as_str()),
                "the state file holds a token"
            );
        }
        let restarted = Server::start(&["--state-file", state]);
        restarted.wait_for_log("loaded 10000 live tokens", Duration::from_secs(5));
        all_rotate_with_their_meta(&restarted, &tokens);
    }

    #[test]
    fn a_crash_loses_nothing_from_the_last_snapshot() {
        if !native_only() {
            return;
        }
        let path = state_path("crash");
        let state = path.to_str().unwrap();
        let server = Server::start_with_env(
            &["--state-file", state, "--snapshot-interval", "1s"],
            &[("RUST_LOG", "token_server=debug")],
        );
        let tokens = create_many(&server, 200);
        server.wait_for_log("snapshot: 200 tokens written", Duration::from_secs(10));
        drop(server); // SIGKILL: no shutdown snapshot
        let restarted = Server::start(&["--state-file", state]);
        all_rotate_with_their_meta(&restarted, &tokens);
    }

    #[test]
    fn a_truncated_state_file_is_refused_with_a_clear_message() {
        if !native_only() {
            return;
        }
        let path = state_path("truncated");
        let state = path.to_str().unwrap();
        let server = Server::start(&["--state-file", state]);
        create_many(&server, 50);
        assert_eq!(server.terminate().code(), Some(0));
        let contents = std::fs::read(&path).unwrap();
        std::fs::write(&path, &contents[..contents.len() / 2]).unwrap();
        let (code, _stdout, stderr) = run(&["--port", "0", "--state-file", state]);
        assert_ne!(code, 0);
        assert!(stderr.contains(state), "{stderr}");
        assert!(stderr.contains("Refusing to start"), "{stderr}");
        // It listens (probes answer while it loads) but never serves a session.
        assert!(!stderr.contains("ready: serving sessions"), "{stderr}");
    }

    #[test]
    fn dump_warns_when_the_log_level_hides_it() {
        if !native_only() {
            return;
        }
        let server = Server::start_with_env(
            &["--dump"],
            &[("RUST_LOG", "warn,token_server::server=info")],
        );
        server.wait_for_log("--dump is on", Duration::from_secs(5));
    }
}
