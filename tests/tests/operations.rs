//! What an operator relies on, over real HTTP: health probes through start, service and
//! stop; the Prometheus metrics after a known sequence of requests; JSON log lines.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use token_server_tests::{token_in, Server};

/// Whether the host under test is the native binary; says so on stderr when a native-only
/// test (state file, drain, metrics, log format) is skipped for another host.
fn native_only() -> bool {
    token_server_tests::native_only("a native-only behaviour")
}

/// A fresh folder for this test's files.
fn scratch(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!(
        "token-server-operations-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).unwrap();
    folder
}

#[test]
fn probes_answer_200_without_body_or_content_type() {
    let server = Server::start(&[]);
    for path in ["/livez", "/readyz", "/healthz"] {
        let got = server.request("GET", path, None, b"");
        assert_eq!(got.status, 200, "GET {path}: {got:?}");
        assert_eq!(
            server.request("HEAD", path, None, b"").status,
            200,
            "HEAD {path}"
        );
        let posted = server.request("POST", path, None, b"");
        assert_eq!(posted.status, 405, "POST {path}");
        assert_eq!(posted.header("allow"), Some("GET, HEAD"));
    }
    // Probing changes nothing a client sees.
    let token = server.login(json!({"u": 1}));
    assert!(server.rotate(&token, None)["Ok"]["token"].is_string());
}

/// A state file holding 500 sessions, written by a server that stopped gracefully, and
/// those sessions' tokens.
fn saved_sessions(folder: &std::path::Path) -> (Vec<u8>, Vec<String>) {
    let saved = folder.join("saved");
    let first = Server::start(&["--state-file", saved.to_str().unwrap()]);
    let tokens: Vec<String> = (0..500).map(|i| first.login(json!({ "n": i }))).collect();
    assert_eq!(first.terminate().code(), Some(0));
    (std::fs::read(&saved).unwrap(), tokens)
}

/// A FIFO at `path`: a state file whose load lasts exactly until the test has written it,
/// so the server is loading for as long as the test needs, on any machine.
fn fifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
}

/// Writes `contents` into the FIFO at `path` and closes it, which ends the load.
fn feed(path: &std::path::Path, contents: &[u8]) {
    let mut writer = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    writer.write_all(contents).unwrap();
}

#[test]
fn probes_answer_while_the_state_file_loads() {
    if !native_only() {
        return;
    }
    let folder = scratch("loading");
    let (contents, tokens) = saved_sessions(&folder);
    let state = folder.join("state");
    fifo(&state);
    let server = Server::start_listening(&["--state-file", state.to_str().unwrap()], &[]);
    let readyz = server.request("GET", "/readyz", None, b"");
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(readyz.body.contains("still loading"), "{readyz:?}");
    assert_eq!(server.request("GET", "/healthz", None, b"").status, 503);
    assert_eq!(server.request("GET", "/livez", None, b"").status, 200);
    // Not InvalidToken for a session that is not loaded yet: the client may retry.
    let early = server.json("PUT", "/token", &json!({ "token": tokens[0] }));
    assert_eq!(early.status, 503, "{early:?}");

    feed(&state, &contents);
    server.wait_until_ready(Duration::from_secs(30));
    server.wait_for_log("loaded 500 live tokens", Duration::from_secs(5));
    for token in &tokens {
        assert!(server.rotate(token, None)["Ok"]["token"].is_string());
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn a_stop_during_the_load_still_saves_every_session() {
    if !native_only() {
        return;
    }
    let folder = scratch("stop-loading");
    let (contents, tokens) = saved_sessions(&folder);
    let state = folder.join("state");
    fifo(&state);
    let server = Server::start_listening(&["--state-file", state.to_str().unwrap()], &[]);
    assert_eq!(server.request("GET", "/readyz", None, b"").status, 503);
    server.send_sigterm();
    server.wait_for_log("shutting down", Duration::from_secs(5));
    feed(&state, &contents);
    server.wait_for_log("saved 500 live tokens", Duration::from_secs(30));
    let log = server.log();
    assert_eq!(server.wait_for_exit().code(), Some(0));
    // Never ready once the stop began, and systemd never hears READY after STOPPING.
    assert!(!log.contains("ready: serving sessions"), "{log}");

    let restarted = Server::start(&["--state-file", state.to_str().unwrap()]);
    for token in &tokens {
        assert!(restarted.rotate(token, None)["Ok"]["token"].is_string());
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn readyz_says_503_while_draining_after_sigterm() {
    if !native_only() {
        return;
    }
    let server = Server::start(&[]);
    let token = server.login(json!({"user": "slow"}));
    // A request whose body arrives in two parts holds the server in its drain.
    let body = json!({ "token": token }).to_string();
    let (first_half, second_half) = body.as_bytes().split_at(body.len() / 2);
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        slow,
        "PUT /token HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    slow.write_all(first_half).unwrap();
    slow.flush().unwrap();
    // Wait until the server counts it in flight (the scrape counts itself too), so the
    // stop cannot come before the server has seen the request, however slow the machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while in_flight(&server) < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.send_sigterm();
    server.wait_for_log("shutting down", Duration::from_secs(5));

    let readyz = server.request("GET", "/readyz", None, b"");
    assert_eq!(readyz.status, 503, "{readyz:?}");
    assert!(readyz.body.contains("shutting down"), "{readyz:?}");
    assert_eq!(server.request("GET", "/healthz", None, b"").status, 503);
    assert_eq!(server.request("GET", "/livez", None, b"").status, 200);
    // Sessions are still served while draining: a client already sent here is not lost.
    let late = server.login(json!({"user": "late"}));
    assert!(server.rotate(&late, None)["Ok"]["token"].is_string());

    slow.write_all(second_half).unwrap();
    let mut response = Vec::new();
    let _ = slow.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""user":"slow""#), "{response}");
    assert_eq!(server.wait_for_exit().code(), Some(0));
}

/// `token_server_requests_in_flight` as the server reports it now.
fn in_flight(server: &Server) -> f64 {
    let scrape = server.request("GET", "/metrics", None, b"");
    samples(&scrape.body)["token_server_requests_in_flight"]
}

/// The samples of a Prometheus text exposition: `name{labels}` to value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                value => value
                    .parse()
                    .unwrap_or_else(|_| panic!("not a value: {line:?}")),
            };
            (name.to_string(), value)
        })
        .collect()
}

#[test]
fn metrics_count_a_known_sequence_of_requests() {
    if !native_only() {
        return;
    }
    let folder = scratch("metrics");
    let state = folder.join("state");
    let server = Server::start_with_env(
        &[
            "--state-file",
            state.to_str().unwrap(),
            "--snapshot-interval",
            "1s",
        ],
        &[("RUST_LOG", "token_server=debug")],
    );
    let secret_meta = "metadata-that-must-not-appear";
    let first = server.login(json!({ "name": secret_meta }));
    let second = server.login(json!({ "name": secret_meta }));
    let rotated = server.rotate(&first, None);
    let third = token_in(&rotated);
    assert_eq!(server.rotate(&first, None), json!({"Err": "InvalidToken"}));
    assert_eq!(
        server
            .json("DELETE", "/token", &json!({ "token": second }))
            .status,
        202
    );
    let json = Some("application/json");
    assert_eq!(server.request("PUT", "/token", json, b"{oops").status, 400);
    assert_eq!(server.request("GET", "/nowhere", None, b"").status, 404);
    assert_eq!(server.request("PATCH", "/token", json, b"{}").status, 405);
    assert_eq!(server.request("POST", "/token", None, b"{}").status, 415);
    assert_eq!(server.request("POST", "/token", json, b"{}").status, 422);
    assert_eq!(server.request("GET", "/readyz", None, b"").status, 200);
    server.wait_for_log("snapshot: ", Duration::from_secs(20));

    let response = server.request("GET", "/metrics", None, b"");
    assert_eq!(response.status, 200, "{response:?}");
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = &response.body;
    for secret in [secret_meta, first.as_str(), second.as_str(), third.as_str()] {
        assert!(!text.contains(secret), "a metric carries {secret:?}");
    }
    let first_scrape = samples(text);
    let value = |name: &str| -> f64 {
        *first_scrape
            .get(name)
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    };
    assert_eq!(value("token_server_logins_total"), 2.0);
    assert_eq!(value(r#"token_server_rotations_total{outcome="ok"}"#), 1.0);
    assert_eq!(
        value(r#"token_server_rotations_total{outcome="invalid"}"#),
        1.0
    );
    assert_eq!(value("token_server_logouts_total"), 1.0);
    assert_eq!(value("token_server_expired_total"), 0.0);
    assert_eq!(value("token_server_sessions"), 1.0);
    for (status, count) in [
        (400, 1.0),
        (404, 1.0),
        (405, 1.0),
        (413, 0.0),
        (415, 1.0),
        (422, 1.0),
        (503, 0.0),
    ] {
        let name = format!(r#"token_server_refusals_total{{status="{status}"}}"#);
        assert_eq!(value(&name), count, "{name}");
    }
    let duration = "token_server_request_duration_seconds";
    // Two logins, the 415 and the 422 were all POST /token.
    assert_eq!(
        value(&format!(r#"{duration}_count{{endpoint="login"}}"#)),
        4.0
    );
    // Two rotations and the 400.
    assert_eq!(
        value(&format!(r#"{duration}_count{{endpoint="rotate"}}"#)),
        3.0
    );
    assert_eq!(
        value(&format!(
            r#"{duration}_bucket{{endpoint="rotate",le="+Inf"}}"#
        )),
        3.0
    );
    assert!(value(&format!(r#"{duration}_sum{{endpoint="rotate"}}"#)) > 0.0);
    assert_eq!(
        value(&format!(r#"{duration}_count{{endpoint="logout"}}"#)),
        1.0
    );
    assert!(value(&format!(r#"{duration}_count{{endpoint="probe"}}"#)) >= 1.0);
    let version = format!(
        r#"token_server_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&version), 1.0);
    assert!(value("token_server_snapshot_duration_seconds_count") >= 1.0);
    let written = value("token_server_snapshot_last_success_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        written > now - 600.0 && written <= now + 1.0,
        "{written} vs {now}"
    );

    // A second scrape sees the first one.
    let again = samples(&server.request("GET", "/metrics", None, b"").body);
    assert_eq!(
        again[&format!(r#"{duration}_count{{endpoint="metrics"}}"#)],
        1.0
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    if !native_only() {
        return;
    }
    let server = Server::start_with_env(
        &["--log-format", "json"],
        &[("RUST_LOG", "token_server=debug")],
    );
    let token = server.login(json!({"quote": "\"\n"}));
    server.rotate(&token, None);
    server.send_sigterm();
    server.wait_for_log("\"stopped\"", Duration::from_secs(10));
    let log = server.log();
    assert_eq!(server.wait_for_exit().code(), Some(0));
    let mut messages = Vec::new();
    for line in log.lines() {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not a JSON line ({err}): {line:?}"));
        let object = object.as_object().expect("a JSON object");
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["level", "message", "target", "time"], "{line}");
        let time = object["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T",
            "not RFC 3339 UTC: {time}"
        );
        assert!(object["target"]
            .as_str()
            .unwrap()
            .starts_with("token_server"));
        messages.push((
            object["level"].as_str().unwrap().to_string(),
            object["message"].as_str().unwrap().to_string(),
        ));
    }
    assert!(
        messages
            .iter()
            .any(|(level, message)| level == "INFO" && message.starts_with("listening on ")),
        "{log}"
    );
    // Debug lines too: one per request.
    assert!(
        messages
            .iter()
            .any(|(level, message)| level == "DEBUG" && message.starts_with("PUT /token 200")),
        "{log}"
    );
}

/// The line a shipper needs most, why the server refused to start, is JSON too, and
/// reaches the log whatever `RUST_LOG` hides.
#[test]
fn log_format_json_writes_a_refused_start_as_json_too() {
    if !native_only() {
        return;
    }
    let folder = scratch("json-refusal");
    let state = folder.join("state");
    std::fs::write(&state, "not a state file\n").unwrap();
    for rust_log in ["token_server=info", "off"] {
        let mut command = token_server_tests::native_command(&[
            "--port",
            "0",
            "--log-format",
            "json",
            "--state-file",
            state.to_str().unwrap(),
        ]);
        command.env("RUST_LOG", rust_log);
        let exited = token_server_tests::run_to_exit(&mut command, token_server_tests::RUN_TIMEOUT);
        assert_eq!(exited.code, 1, "{}", exited.stderr);
        let mut refusal = None;
        for line in exited.stderr.lines() {
            let object: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|err| {
                panic!("RUST_LOG={rust_log}: not a JSON line ({err}): {line:?}")
            });
            if object["level"] == "ERROR" {
                refusal = object["message"].as_str().map(str::to_owned);
            }
        }
        let refusal = refusal
            .unwrap_or_else(|| panic!("RUST_LOG={rust_log}: no ERROR line in {:?}", exited.stderr));
        assert!(refusal.contains(state.to_str().unwrap()), "{refusal}");
        assert!(refusal.contains("Refusing to start"), "{refusal}");
    }
    let _ = std::fs::remove_dir_all(&folder);
}

#[test]
fn systemd_hears_ready_once_serving_and_stopping_at_sigterm() {
    if !native_only() {
        return;
    }
    use std::os::unix::net::UnixDatagram;
    let folder = scratch("notify");
    let socket_path = folder.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let receive = || {
        let mut buffer = [0u8; 512];
        let size = socket
            .recv(&mut buffer)
            .expect("a notification from the server");
        String::from_utf8_lossy(&buffer[..size]).into_owned()
    };
    let state = folder.join("state");
    let server = Server::start_listening(
        &["--state-file", state.to_str().unwrap()],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = receive();
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    // Told only once it serves: the probe agrees at that moment.
    assert_eq!(server.request("GET", "/readyz", None, b"").status, 200);
    server.send_sigterm();
    let stopping = receive();
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping:?}"
    );
    assert_eq!(server.wait_for_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&folder);
}
