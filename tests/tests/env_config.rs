//! Black-box tests of configuration from `TOKEN_SERVER_*` variables on the real binary:
//! a variable sets its flag, a flag on the command line wins, a bad variable exits 2
//! naming itself and its range, and `--help` names every variable.

use std::time::Duration;

use serde_json::json;
use token_server_core::flags::FLAGS;
use token_server_tests::{native_command, run_to_exit, Server, RUN_TIMEOUT};

/// Whether the native binary is under test: variables are the native CLI's; the edge
/// hosts take flags only.
fn native_only() -> bool {
    token_server_tests::native_only("TOKEN_SERVER_* variables are read by the native binary")
}

/// Runs the binary to its exit with `args` and exactly `env` among the flags' variables
/// (on port 0 unless `env` says otherwise); one that is still running after
/// [`RUN_TIMEOUT`], i.e. that started serving, is killed and reported as status -1.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = native_command(args);
    for spec in FLAGS {
        command.env_remove(spec.env);
    }
    command
        .env("TOKEN_SERVER_PORT", "0")
        .envs(env.iter().copied());
    let exited = run_to_exit(&mut command, RUN_TIMEOUT);
    (exited.code, exited.stdout, exited.stderr)
}

#[test]
fn variables_switch_on_what_their_flags_do() {
    if !native_only() {
        return;
    }
    let plain = Server::start(&[]);
    assert_eq!(plain.request("HEAD", "/dump", None, b"").status, 404);
    assert_eq!(plain.request("GET", "/test-clock", None, b"").status, 404);
    drop(plain);
    let server = Server::start_with_env(
        &[],
        &[
            ("TOKEN_SERVER_DUMP", "1"),
            ("TOKEN_SERVER_TEST_CLOCK", "true"),
            ("TOKEN_SERVER_LOG_FORMAT", "json"),
        ],
    );
    assert_eq!(server.request("HEAD", "/dump", None, b"").status, 202);
    assert_eq!(server.request("GET", "/test-clock", None, b"").status, 200);
    let line = server.wait_for_log("listening on", Duration::from_secs(10));
    assert!(line.starts_with('{'), "not a JSON line: {line}");
}

#[test]
fn the_token_lifetime_comes_from_its_variable_unless_the_flag_is_given() {
    if !native_only() {
        return;
    }
    let env = [
        ("TOKEN_SERVER_TEST_CLOCK", "1"),
        ("TOKEN_SERVER_TOKEN_LIFETIME", "30min"),
    ];
    let advance = |server: &Server, by: &str| {
        let moved = server.json("POST", "/test-clock/advance", &json!({ "by": by }));
        assert_eq!(moved.status, 200, "{moved:?}");
    };
    // The variable alone: a token dies after 30min.
    let from_env = Server::start_with_env(&[], &env);
    let token = from_env.login(json!({ "user": "ann" }));
    advance(&from_env, "31min");
    assert_eq!(
        from_env.rotate(&token, None),
        json!({ "Err": "InvalidToken" })
    );
    drop(from_env);
    // The flag wins: 1h, so the same wait leaves the token valid.
    let flag_wins = Server::start_with_env(&["--token-lifetime", "1h"], &env);
    let token = flag_wins.login(json!({ "user": "ann" }));
    advance(&flag_wins, "31min");
    let answer = flag_wins.rotate(&token, None);
    assert!(answer["Ok"]["token"].is_string(), "{answer}");
}

#[test]
fn a_flag_on_the_command_line_wins_even_over_a_bad_variable() {
    if !native_only() {
        return;
    }
    // The harness passes --port 0; the variable would be refused if it were read.
    let server = Server::start_with_env(&[], &[("TOKEN_SERVER_PORT", "not-a-port")]);
    assert_eq!(server.request("GET", "/livez", None, b"").status, 200);
}

#[test]
fn bad_variables_exit_2_naming_the_variable_and_its_range() {
    if !native_only() {
        return;
    }
    let cases: &[(&str, &str, &[&str])] = &[
        ("TOKEN_SERVER_PURGE_INTERVAL", "0s", &["1s to 90min"]),
        ("TOKEN_SERVER_TOKEN_LIFETIME", "2hours", &["30min to 96h"]),
        ("TOKEN_SERVER_PORT", "70000", &["0 to 65535"]),
        ("TOKEN_SERVER_MAX_TOKENS", "0", &["1 to 1000000000"]),
        ("TOKEN_SERVER_MAX_BODY", "64kb", &["1024 to 16777216"]),
        ("TOKEN_SERVER_DUMP", "maybe", &["true", "false"]),
        ("TOKEN_SERVER_LOG_FORMAT", "xml", &["text or json"]),
        ("TOKEN_SERVER_ROTATION_GRACE", "6min", &["1s to 5min"]),
    ];
    for (variable, value, needles) in cases {
        let (code, stdout, stderr) = run(&[], &[(variable, value)]);
        assert_eq!(code, 2, "{variable}={value}: {stderr}");
        assert!(stdout.is_empty(), "{variable}={value}: {stdout}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("token-server: {variable}: '{value}'")),
            "{variable}={value}: {stderr}"
        );
        for needle in *needles {
            assert!(
                first.contains(needle),
                "{variable}={value} lacks {needle:?}: {first}"
            );
        }
        assert!(
            !stderr.contains("listening on"),
            "{variable}={value} started"
        );
    }
    // The cross-flag rule holds across the two sources.
    let (code, _, stderr) = run(
        &["--token-lifetime", "3h"],
        &[("TOKEN_SERVER_MAX_SESSION_LIFETIME", "2h")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr
            .contains("--max-session-lifetime (2h) must not be shorter than --token-lifetime (3h)"),
        "{stderr}"
    );
}

/// The values the native host checks itself (Redis URLs, the key file) and the flags that
/// cannot go together name the variable when the value came from one: an operator with
/// only an environment file (the systemd unit) has no `--redis` to look for.
#[test]
fn host_checked_variables_and_conflicts_name_the_variable() {
    if !native_only() {
        return;
    }
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("TOKEN_SERVER_REDIS", "http://127.0.0.1:6379")],
            "token-server: TOKEN_SERVER_REDIS: 'http://127.0.0.1:6379' is not allowed",
        ),
        (
            &[(
                "TOKEN_SERVER_REDIS_CLUSTER",
                "redis://127.0.0.1:7000,http://127.0.0.1:7001",
            )],
            "token-server: TOKEN_SERVER_REDIS_CLUSTER: 'http://127.0.0.1:7001' is not allowed",
        ),
        (
            &[(
                "TOKEN_SERVER_API_KEYS_FILE",
                "/nonexistent/token-server-keys",
            )],
            "token-server: TOKEN_SERVER_API_KEYS_FILE: /nonexistent/token-server-keys",
        ),
        (
            &[("TOKEN_SERVER_REDIS_PREFIX", "app:")],
            "token-server: TOKEN_SERVER_REDIS_PREFIX: only applies with --redis",
        ),
        // What the shipped systemd unit meets when the environment file adds Redis: the
        // unit itself sets TOKEN_SERVER_STATE_FILE.
        (
            &[
                ("TOKEN_SERVER_STATE_FILE", "/var/lib/token-server/state"),
                ("TOKEN_SERVER_REDIS", "redis://127.0.0.1:6379/0"),
            ],
            "token-server: TOKEN_SERVER_STATE_FILE: cannot be used with --redis",
        ),
    ];
    for (env, expected) in cases {
        let (code, _, stderr) = run(&[], env);
        assert_eq!(code, 2, "{env:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with(expected), "{env:?}: {first}");
    }
    // The same values as flags still name the flags.
    let (code, _, stderr) = run(&["--redis", "http://127.0.0.1:6379"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.starts_with("token-server: --redis: 'http://127.0.0.1:6379' is not allowed"),
        "{stderr}"
    );
}

#[test]
fn help_names_every_variable() {
    if !native_only() {
        return;
    }
    let (code, stdout, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(!FLAGS.is_empty());
    for spec in FLAGS {
        assert!(
            stdout.contains(&format!("[env: {}]", spec.env)),
            "--help lacks {}:\n{stdout}",
            spec.env
        );
    }
}
