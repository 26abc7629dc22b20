//! API keys over real HTTP: `--api-keys FILE` on the native host,
//! `TOKEN_SERVER_API_KEYS_FILE` on the Node, Bun and Deno hosts, the `TOKEN_SERVER_API_KEYS`
//! binding in workerd; refusals, several keys, rotation by SIGHUP under load, a bad file,
//! and the warning for an unprotected non-loopback bind.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use token_server_tests::{
    server_command, skip_on, try_request_with_headers, Host, Response, Server, TempDir,
};

const KEY_A: &str = "alpha-0123456789abcdefghijklmnopqrstuv";
const KEY_B: &str = "bravo-0123456789abcdefghijklmnopqrstuv";
/// A valid key of another deployment (another server's key file).
const KEY_OTHER: &str = "other-deployment-0123456789abcdefghijk";

const WARNING: &str = "anyone who can reach this port can mint tokens";

/// A folder of its own for one test's key files.
fn temp_dir(name: &str) -> TempDir {
    TempDir::new("ts-api-keys", name)
}

/// Starts the server under test with the key file at `path`, as each host takes it.
fn start_with_keys(path: &str, args: &[&str]) -> Server {
    match Host::under_test() {
        Host::Native => {
            let mut all = vec!["--api-keys", path];
            all.extend_from_slice(args);
            Server::start(&all)
        }
        Host::Edge | Host::Bun | Host::Deno => {
            Server::start_with_env(args, &[("TOKEN_SERVER_API_KEYS_FILE", path)])
        }
        // A Worker has no files: the keys are a secret binding holding the text.
        Host::Workerd | Host::WorkerdDo => {
            let text = std::fs::read_to_string(path).expect("read the key file");
            Server::start_with_env(args, &[("TOKEN_SERVER_API_KEYS", &text)])
        }
    }
}

fn send(server: &Server, method: &str, body: &serde_json::Value, key: Option<&str>) -> Response {
    let authorization = key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(authorization) = &authorization {
        headers.push(("Authorization", authorization));
    }
    try_request_with_headers(
        server.addr,
        method,
        "/token",
        &headers,
        body.to_string().as_bytes(),
    )
    .expect("an HTTP answer")
}

fn login(server: &Server, key: Option<&str>) -> Response {
    send(server, "POST", &json!({"meta": {"user": "admin"}}), key)
}

fn assert_refused(response: &Response, context: &str) {
    assert_eq!(response.status, 401, "{context}: {response:?}");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{context}: {response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/plain")),
        "{context}: {response:?}"
    );
    assert!(!response.body.is_empty(), "{context}: a sentence says why");
}

#[test]
fn only_a_configured_key_gets_in_and_a_refusal_changes_nothing() {
    let dir = temp_dir("refusals");
    let keys = dir.write(
        "keys",
        &format!("# web app\n{KEY_A}\n\n# admin tool\n{KEY_B}\n"),
    );
    let server = start_with_keys(&keys, &[]);
    let other_keys = dir.write("other", &format!("{KEY_OTHER}\n"));
    let other = start_with_keys(&other_keys, &[]);
    assert_eq!(login(&other, Some(KEY_OTHER)).status, 200);

    assert_refused(&login(&server, None), "no key");
    assert_refused(
        &login(&server, Some("wrong-0123456789abcdefghijklmnopqrstuv")),
        "a wrong key",
    );
    assert_refused(&login(&server, Some(KEY_OTHER)), "another deployment's key");

    // Each of the two keys works, for every method.
    let token = login(&server, Some(KEY_A));
    assert_eq!(token.status, 200, "{token:?}");
    let token = token.body;
    let rotate = json!({ "token": token });
    assert_refused(&send(&server, "PUT", &rotate, None), "PUT without a key");
    assert_refused(&send(&server, "DELETE", &rotate, Some(KEY_OTHER)), "DELETE");
    // The refused PUT and DELETE left the token valid.
    let rotated = send(&server, "PUT", &rotate, Some(KEY_B));
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let next = rotated.json()["Ok"]["token"]
        .as_str()
        .expect("a rotated token")
        .to_string();
    let deleted = send(&server, "DELETE", &json!({ "token": next }), Some(KEY_A));
    assert_eq!(deleted.status, 202, "{deleted:?}");

    // The health probes need no key (they answer 404 until they exist, never 401).
    for path in ["/livez", "/readyz", "/healthz"] {
        let probe = try_request_with_headers(server.addr, "GET", path, &[], b"").expect("answer");
        assert_ne!(probe.status, 401, "{path} must stay open: {probe:?}");
    }
    // The native host's own /metrics is guarded by the same rule.
    if Host::under_test() == Host::Native {
        let bearer = format!("Bearer {KEY_A}");
        let scrape = |headers: &[(&str, &str)]| {
            try_request_with_headers(server.addr, "GET", "/metrics", headers, b"").expect("answer")
        };
        assert_refused(&scrape(&[]), "/metrics without a key");
        assert_eq!(scrape(&[("Authorization", &bearer)]).status, 200);
    }
    // The native host logs the first refusal (then at most one line per 10 s).
    if Host::under_test() == Host::Native {
        server.wait_for_log(
            r#"refused "POST" "/token": no Authorization header"#,
            Duration::from_secs(20),
        );
    }
    // Logs name keys by fingerprint only.
    for key in [KEY_A, KEY_B, KEY_OTHER] {
        assert!(
            !server.log().contains(key),
            "a key was logged:\n{}",
            server.log()
        );
    }
}

#[test]
fn sighup_swaps_the_key_set_without_dropping_a_request() {
    let host = Host::under_test();
    if matches!(host, Host::Workerd | Host::WorkerdDo) {
        let why = "a Worker's keys are a secret binding, changed by redeploying";
        return skip_on(host, "sighup_swaps_the_key_set", why);
    }
    let dir = temp_dir("sighup");
    let keys = dir.write("keys", &format!("{KEY_A}\n"));
    let server = Arc::new(start_with_keys(&keys, &[]));
    assert_eq!(login(&server, Some(KEY_A)).status, 200);
    assert_refused(&login(&server, Some(KEY_B)), "KEY_B before the reload");

    // A client logs in with both keys in a loop while the keys are swapped: every request
    // must get an answer, 200 or 401, never a connection error or another status.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut answers = 0;
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for key in [KEY_A, KEY_B] {
                    let authorization = format!("Bearer {key}");
                    let headers = [
                        ("Content-Type", "application/json"),
                        ("Authorization", authorization.as_str()),
                    ];
                    match try_request_with_headers(
                        server.addr,
                        "POST",
                        "/token",
                        &headers,
                        br#"{"meta":{}}"#,
                    ) {
                        Ok(response) if matches!(response.status, 200 | 401) => answers += 1,
                        Ok(response) => failures.push(format!("{response:?}")),
                        Err(err) => failures.push(err.to_string()),
                    }
                }
            }
            (answers, failures)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    dir.write("keys", &format!("# KEY_A retired\n{KEY_B}\n"));
    server.send_signal("HUP");
    let line = server.wait_for_log("api keys reloaded", Duration::from_secs(20));
    assert!(line.contains("1 keys"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = client.join().expect("the client thread");
    assert!(failures.is_empty(), "dropped or odd answers: {failures:?}");
    assert!(answers > 2, "the client loop ran ({answers} answers)");

    assert_refused(&login(&server, Some(KEY_A)), "the retired key");
    assert_eq!(login(&server, Some(KEY_B)).status, 200);
    assert!(server.log().contains("fingerprints"), "{}", server.log());
    assert!(!server.log().contains(KEY_B), "a key was logged");
}

#[test]
fn a_reload_that_fails_keeps_the_keys_in_force() {
    let host = Host::under_test();
    if matches!(host, Host::Workerd | Host::WorkerdDo) {
        let why = "a Worker's keys are a secret binding, changed by redeploying";
        return skip_on(host, "a_reload_that_fails", why);
    }
    let dir = temp_dir("bad-reload");
    let keys = dir.write("keys", &format!("{KEY_A}\n"));
    let server = start_with_keys(&keys, &[]);
    dir.write("keys", &format!("{KEY_B}\ntoo-short-to-be-a-key\n"));
    server.send_signal("HUP");
    let line = server.wait_for_log("api keys not reloaded", Duration::from_secs(20));
    assert!(line.contains("line 2"), "{line}");
    assert_eq!(login(&server, Some(KEY_A)).status, 200);
    assert_refused(&login(&server, Some(KEY_B)), "a key of the refused file");
    assert!(!server.log().contains("too-short"), "{}", server.log());
}

#[test]
fn a_bad_key_file_stops_the_start_with_status_2_naming_the_line() {
    let dir = temp_dir("bad-file");
    let keys = dir.write("keys", &format!("# ops\n{KEY_A}\nshort\n"));
    let path = keys.as_str();
    let host = Host::under_test();
    let mut command = match host {
        Host::Native => server_command(host, &["--port", "0", "--api-keys", path]),
        Host::Workerd | Host::WorkerdDo => {
            let why =
                "a Worker cannot refuse to start; a bad key secret answers 500 (edge.test.mjs)";
            return skip_on(host, "a_bad_key_file_stops_the_start", why);
        }
        Host::Edge | Host::Bun | Host::Deno => {
            let mut command = server_command(host, &["--port", "0"]);
            command.env("TOKEN_SERVER_API_KEYS_FILE", path);
            command
        }
    };
    let output = command.output().expect("run the server");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(path), "names the file: {stderr}");
    assert!(stderr.contains("line 3"), "names the line: {stderr}");
    assert!(!stderr.contains(KEY_A), "never echoes a key: {stderr}");
}

#[test]
fn binding_beyond_loopback_without_keys_warns_who_can_mint_tokens() {
    let host = Host::under_test();
    if host != Host::Native {
        let why = "the edge hosts listen on 127.0.0.1 only (no --bind)";
        return skip_on(host, "binding_beyond_loopback_warns", why);
    }
    // 0.0.0.0 on a free port is reachable on this machine's interfaces only as long as the
    // test runs; the test itself connects over loopback.
    let open = Server::start(&["--bind", "0.0.0.0"]);
    let line = open.wait_for_log(WARNING, Duration::from_secs(20));
    assert!(line.contains("--api-keys"), "says how to fix it: {line}");
    assert_eq!(login(&open, None).status, 200, "a warning, not a refusal");

    let dir = temp_dir("bind");
    let keys = dir.write("keys", &format!("{KEY_A}\n"));
    let protected = start_with_keys(&keys, &["--bind", "0.0.0.0"]);
    let loopback = Server::start(&[]);
    for server in [&protected, &loopback] {
        // "listening on" is logged after the warning would be.
        assert!(!server.log().contains(WARNING), "{}", server.log());
    }
}

/// `systemctl reload` (the unit's `ExecReload=kill -HUP`) on a server with nothing to
/// reload: SIGHUP's default action would end the process, sessions and all. The same on
/// the Node, Bun and Deno hosts, which died of it without a key file.
#[test]
fn a_sighup_without_keys_or_tls_leaves_the_server_serving() {
    let host = Host::under_test();
    if matches!(host, Host::Workerd | Host::WorkerdDo) {
        let why = "a Worker sees no signals; workerd's own SIGHUP is its business";
        return skip_on(host, "a_sighup_without_keys_or_tls", why);
    }
    let server = Server::start(&[]);
    let token = server.login(json!({"user": "alice"}));
    server.send_signal("HUP");
    // A process killed by the signal is gone well within this.
    std::thread::sleep(Duration::from_millis(500));
    let answer = try_request_with_headers(
        server.addr,
        "PUT",
        "/token",
        &[("Content-Type", "application/json")],
        json!({ "token": token }).to_string().as_bytes(),
    );
    assert!(
        answer.as_ref().is_ok_and(|response| response.status == 200),
        "after SIGHUP: {answer:?}\n{}",
        server.log()
    );
}
